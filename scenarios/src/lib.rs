//! shopsim-scenarios: the scenarios as data (one TOML file each under `data/`) and their
//! registry. A scenario names a workload, a deployment, the faults and the database profiles;
//! [`Scenario::system`] turns it into the shop system and the runner's configuration.

use serde::{Deserialize, Serialize};
use shopsim_model::config::{ProgressConfig, ShopConfig};
use shopsim_model::shop::Shop;
use shopsim_sim::db::Profile;
use shopsim_sim::fault::FaultPlan;
use shopsim_sim::input::InputError;
use shopsim_sim::runner::SimConfig;
use shopsim_sim::steering::SteeringPlan;

pub mod fields;

const BUILTIN: [(&str, &str); 12] = [
    (
        "checkout-concurrency",
        include_str!("../data/checkout-concurrency.toml"),
    ),
    (
        "inventory-race",
        include_str!("../data/inventory-race.toml"),
    ),
    (
        "payment-confirmation",
        include_str!("../data/payment-confirmation.toml"),
    ),
    ("payment-race", include_str!("../data/payment-race.toml")),
    (
        "order-lock-race",
        include_str!("../data/order-lock-race.toml"),
    ),
    ("catalog-reads", include_str!("../data/catalog-reads.toml")),
    (
        "multi-tenant-mixed",
        include_str!("../data/multi-tenant-mixed.toml"),
    ),
    ("expiry-race", include_str!("../data/expiry-race.toml")),
    (
        "adversarial-tenants",
        include_str!("../data/adversarial-tenants.toml"),
    ),
    ("payment-heavy", include_str!("../data/payment-heavy.toml")),
    (
        "tenants-writing",
        include_str!("../data/tenants-writing.toml"),
    ),
    (
        "reservation-expiry",
        include_str!("../data/reservation-expiry.toml"),
    ),
];

/// Each planted bug with the scenario that must find it and the check that names it.
pub const PLANTED_BUGS: [(&str, &str, &str); 18] = [
    ("inventory-race", "oversell_check_then_act", "no_oversell"),
    (
        "checkout-concurrency",
        "double_order_on_convert",
        "one_order_per_cart",
    ),
    (
        "payment-race",
        "payment_check_then_act",
        "payment_exactly_once",
    ),
    (
        "order-lock-race",
        "order_lock_check_without_row_lock",
        "locked_order_immutable",
    ),
    ("expiry-race", "deadlock_not_retried", "deadlocks_handled"),
    (
        "catalog-reads",
        "cache_key_without_tenant",
        "no_cross_tenant",
    ),
    ("catalog-reads", "n_plus_one_product_list", "no_n_plus_one"),
    ("inventory-race", "stock_check_from_replica", "no_oversell"),
    (
        "catalog-reads",
        "tenant_context_left_on_connection",
        "no_cross_tenant",
    ),
    (
        "catalog-reads",
        "page_total_without_tenant_scope",
        "no_cross_tenant",
    ),
    (
        "payment-confirmation",
        "receipt_job_writes_ledger",
        "payment_exactly_once",
    ),
    (
        "payment-confirmation",
        "provider_call_in_transaction",
        "no_rpc_in_transaction",
    ),
    (
        "tenants-writing",
        "catalog_version_bumped_before_commit",
        "catalog_fresh",
    ),
    (
        "payment-heavy",
        "idempotency_claimed_before_work",
        "captured_payments_succeed",
    ),
    (
        "payment-heavy",
        "payment_order_read_from_replica",
        "read_your_writes",
    ),
    (
        "adversarial-tenants",
        "order_lookup_without_tenant",
        "no_cross_tenant",
    ),
    (
        "expiry-race",
        "expiry_releases_without_recheck",
        "no_oversell",
    ),
    (
        "checkout-concurrency",
        "add_item_without_cart_lock",
        "order_matches_cart",
    ),
];

/// The low-contention variants: one small scenario per planted bug, where its race is rare
/// without schedule steering (few clients, spread out in time), for `bench --detection`.
const LOW_CONTENTION: [(&str, &str); 10] = [
    (
        "lc-last-unit",
        include_str!("../data/low-contention/lc-last-unit.toml"),
    ),
    (
        "lc-double-click",
        include_str!("../data/low-contention/lc-double-click.toml"),
    ),
    (
        "lc-webhook-twice",
        include_str!("../data/low-contention/lc-webhook-twice.toml"),
    ),
    (
        "lc-lock-vs-mutate",
        include_str!("../data/low-contention/lc-lock-vs-mutate.toml"),
    ),
    (
        "lc-deadlock",
        include_str!("../data/low-contention/lc-deadlock.toml"),
    ),
    (
        "lc-two-tenants-cache",
        include_str!("../data/low-contention/lc-two-tenants-cache.toml"),
    ),
    (
        "lc-one-reader",
        include_str!("../data/low-contention/lc-one-reader.toml"),
    ),
    (
        "lc-replica-last-unit",
        include_str!("../data/low-contention/lc-replica-last-unit.toml"),
    ),
    (
        "lc-two-tenants-context",
        include_str!("../data/low-contention/lc-two-tenants-context.toml"),
    ),
    (
        "lc-two-tenants-total",
        include_str!("../data/low-contention/lc-two-tenants-total.toml"),
    ),
];

/// Each planted bug (in the order of [`PLANTED_BUGS`]) with its low-contention variant and
/// the check that names it.
pub const LOW_CONTENTION_BUGS: [(&str, &str, &str); 10] = [
    ("lc-last-unit", "oversell_check_then_act", "no_oversell"),
    (
        "lc-double-click",
        "double_order_on_convert",
        "one_order_per_cart",
    ),
    (
        "lc-webhook-twice",
        "payment_check_then_act",
        "payment_exactly_once",
    ),
    (
        "lc-lock-vs-mutate",
        "order_lock_check_without_row_lock",
        "locked_order_immutable",
    ),
    ("lc-deadlock", "deadlock_not_retried", "deadlocks_handled"),
    (
        "lc-two-tenants-cache",
        "cache_key_without_tenant",
        "no_cross_tenant",
    ),
    ("lc-one-reader", "n_plus_one_product_list", "no_n_plus_one"),
    (
        "lc-replica-last-unit",
        "stock_check_from_replica",
        "no_oversell",
    ),
    (
        "lc-two-tenants-context",
        "tenant_context_left_on_connection",
        "no_cross_tenant",
    ),
    (
        "lc-two-tenants-total",
        "page_total_without_tenant_scope",
        "no_cross_tenant",
    ),
];

/// The `[sim]` table: run length and network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimSection {
    /// How long the workload runs, ms of virtual time.
    pub duration_ms: u64,
    /// A run still going after this is a liveness failure, ms.
    pub time_limit_ms: u64,
    /// One-way network latency, µs.
    pub latency_us_min: u64,
    /// One-way network latency, µs.
    pub latency_us_max: u64,
}

impl Default for SimSection {
    fn default() -> Self {
        let d = SimConfig::default();
        SimSection {
            duration_ms: d.duration_ms,
            time_limit_ms: d.time_limit_ms,
            latency_us_min: d.latency_us_min,
            latency_us_max: d.latency_us_max,
        }
    }
}

/// A scenario file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The name (`checkout-concurrency`).
    pub name: String,
    /// One sentence: what it tests and how.
    pub why: String,
    /// Database profiles it runs under.
    #[serde(default = "default_profiles")]
    pub profiles: Vec<String>,
    /// Run length and network.
    #[serde(default)]
    pub sim: SimSection,
    /// Faults.
    #[serde(default)]
    pub faults: FaultPlan,
    /// The shop.
    #[serde(default)]
    pub shop: ShopConfig,
    /// The progress a run must make to count (orders placed, payments succeeded, reads
    /// answered, orders locked); a run short of it fails with exit code 6.
    #[serde(default)]
    pub progress: ProgressConfig,
    /// Schedule steering (off unless the file turns it on; swarm mode draws its own).
    #[serde(default, skip_serializing_if = "is_default_steering")]
    pub steering: SteeringPlan,
}

fn is_default_steering(plan: &SteeringPlan) -> bool {
    *plan == SteeringPlan::default()
}

/// A TOML syntax error: no field can be named yet, so the line is.
fn syntax_error(text: &str, e: &toml::de::Error) -> InputError {
    let line = e
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let value = e
        .span()
        .and_then(|span| text.get(span))
        .map(|v| shopsim_sim::input::cut(v, 80))
        .unwrap_or_default();
    InputError::new(
        line.map_or("file".to_string(), |l| format!("line {l}")),
        value,
        e.message().trim().to_string(),
    )
}

/// A type or structure error at `path` (serde's path: `shop.shoppers`, `faults.families[2]`,
/// `.` for the top level), in the words of [`fields::FIELDS`].
fn typed_error(text: &str, path: String, e: &toml::de::Error) -> InputError {
    let message = e.message().trim().to_string();
    let written = e
        .span()
        .and_then(|span| text.get(span))
        .map(|v| shopsim_sim::input::cut(v.trim(), 80))
        .unwrap_or_default();
    if let Some(missing) = quoted_after(&message, "missing field ") {
        let at = if path == "." {
            missing.clone()
        } else {
            format!("{path}.{missing}")
        };
        return InputError::new(at, "", "is required");
    }
    if let Some(unknown) = quoted_after(&message, "unknown field ") {
        let parent = path.rsplit_once('.').map_or("", |(p, _)| p);
        let siblings: Vec<&str> = fields::FIELDS
            .iter()
            .filter_map(|f| {
                let (table, key) = f.path.rsplit_once('.').unwrap_or(("", f.path));
                (table == parent).then_some(key)
            })
            .collect();
        let nearest = siblings
            .iter()
            .min_by_key(|k| edit_distance(k, &unknown))
            .map(|k| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        return InputError::new(
            path,
            unknown.clone(),
            format!("unknown field `{unknown}`{nearest}"),
        );
    }
    // `faults.families[2]` is checked as an entry of `faults.families`.
    let base = path.split('[').next().unwrap_or(&path);
    if let Some(field) = fields::field(base) {
        let expected = match field.kind {
            shopsim_sim::input::Kind::Names { choices, .. } if base != path => {
                format!("expected one of {}", choices().join(", "))
            }
            kind => format!("expected {}", kind.expected()),
        };
        // A custom message (a family listed twice) says more than the type does.
        let expected = if message.starts_with("invalid") || message.starts_with("unknown variant") {
            expected
        } else {
            format!("{expected}: {message}")
        };
        return InputError::new(path, written, expected);
    }
    let table = fields::FIELDS
        .iter()
        .any(|f| f.path.starts_with(&format!("{base}.")));
    if table && message.starts_with("invalid type") {
        return InputError::new(path, written, "expected a table");
    }
    InputError::new(
        if path == "." {
            "file".to_string()
        } else {
            path
        },
        written,
        message,
    )
}

/// `value` as a TOML literal (`100`, `0.2`, `"pg_rc"`, `["crash"]`).
fn toml_literal(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(toml_literal)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        serde_json::Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            // TOML tells floats from integers by the point.
            if x.fract() == 0.0 {
                format!("{x:.1}")
            } else {
                x.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// The first backquoted word after `prefix` in `message`.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    Some(rest.split('`').next()?.to_string())
}

fn default_profiles() -> Vec<String> {
    vec!["pg_rc".to_string(), "maria_rr".to_string()]
}

impl Scenario {
    /// Parses and validates a scenario file; errors name the field (`shop.shoppers`), what it
    /// accepts in words (the same words as the template's) and the value as written.
    pub fn from_toml(text: &str) -> Result<Scenario, InputError> {
        let deserializer = toml::Deserializer::parse(text).map_err(|e| syntax_error(text, &e))?;
        let mut scenario: Scenario = serde_path_to_error::deserialize(deserializer)
            .map_err(|e| typed_error(text, e.path().to_string(), e.inner()))?;
        // `[shop] db_profile` would be overridden by `profiles` on every run: it may only
        // restate a single profile (or stand for `profiles` when that is absent).
        let document: toml::Table = text.parse().map_err(|e| syntax_error(text, &e))?;
        let given = document
            .get("shop")
            .and_then(|shop| shop.get("db_profile"))
            .and_then(|p| p.as_str());
        if let Some(p) = given {
            let choice = fields::field("shop.db_profile").expect("listed").kind;
            choice.check("shop.db_profile", &serde_json::json!(p))?;
        }
        match (given, document.contains_key("profiles")) {
            (Some(p), false) => scenario.profiles = vec![p.to_string()],
            (Some(p), true) if scenario.profiles != [p] => {
                return Err(InputError::new(
                    "shop.db_profile",
                    p,
                    format!(
                        "expected no shop.db_profile, or the only entry of `profiles` (which is {:?}): each run takes its profile from `profiles`",
                        scenario.profiles
                    ),
                ))
            }
            _ => {}
        }
        if let Some(first) = scenario.profiles.first() {
            scenario.shop.db_profile = first.clone();
        }
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks every field against [`fields::FIELDS`] and the relations between them
    /// ([`fields::relations`]). Every way a scenario reaches the runner (a file, a built-in,
    /// an artifact's embedded scenario and configuration, a shrink step) passes here.
    pub fn validate(&self) -> Result<(), InputError> {
        self.validate_within(&fields::Bounds::FILE)
    }

    /// [`Scenario::validate`] with the size bounds `bounds` (only the bench's scaling series
    /// uses others: every scenario a user gives is checked with [`fields::Bounds::FILE`]).
    pub fn validate_within(&self, bounds: &fields::Bounds) -> Result<(), InputError> {
        let document = serde_json::to_value(self)
            .map_err(|e| InputError::new("scenario", "", format!("cannot be read: {e}")))?;
        if *bounds == fields::Bounds::FILE {
            shopsim_sim::input::check_fields(fields::FIELDS, &document)?;
        } else {
            shopsim_sim::input::check_fields(&bounds.fields(), &document)?;
        }
        if !self.profiles.contains(&self.shop.db_profile) {
            return Err(InputError::new(
                "shop.db_profile",
                &self.shop.db_profile,
                format!("expected one of profiles {:?}", self.profiles),
            ));
        }
        fields::relations_within(self, bounds)?;
        // The model's and the runner's own checks; the table above is stricter, so these
        // can only fail if the two disagree (a test keeps them in step).
        self.shop.validate()?;
        self.sim_config().validate()
    }

    /// Checks `config` (an artifact's or a shrink step's) as this scenario's `[sim]`,
    /// `[faults]` and `[steering]`: the same validation as a file, with fields named `config.*`.
    pub fn check_sim_config(&self, config: &SimConfig) -> Result<(), InputError> {
        self.with_sim_config(config).validate().map_err(|mut e| {
            if let Some(rest) = e.field.strip_prefix("sim.") {
                e.field = format!("config.{rest}");
            } else if e.field.starts_with("faults.") || e.field.starts_with("steering.") {
                e.field = format!("config.{}", e.field);
            }
            e
        })
    }

    /// This scenario with `config` as its `[sim]`, `[faults]` and `[steering]`.
    pub fn with_sim_config(&self, config: &SimConfig) -> Scenario {
        Scenario {
            sim: SimSection {
                duration_ms: config.duration_ms,
                time_limit_ms: config.time_limit_ms,
                latency_us_min: config.latency_us_min,
                latency_us_max: config.latency_us_max,
            },
            faults: config.faults.clone(),
            steering: config.steering.clone(),
            ..self.clone()
        }
    }

    /// A complete scenario file with every field, its unit, its default and its bounds, from
    /// [`fields::FIELDS`] (`shopsim scenario --template`). It parses back as a valid scenario.
    pub fn template() -> String {
        let example = Scenario {
            name: "my-scenario".to_string(),
            why: "One sentence: what this scenario tests and how.".to_string(),
            profiles: default_profiles(),
            sim: SimSection::default(),
            faults: FaultPlan::none(),
            shop: ShopConfig::default(),
            progress: ProgressConfig::default(),
            steering: SteeringPlan::off(),
        };
        let document = serde_json::to_value(&example).expect("a scenario serializes");
        let mut out = String::from(
            "# A shopsim scenario: every field with its unit, its default and its bounds.\n\
             # Every field except name and why is optional; its default is the value shown.\n\
             # Run it with `shopsim run --file FILE`; check it with `shopsim scenario --check FILE`.\n\n",
        );
        let mut section = "";
        for field in fields::FIELDS {
            let (table, key) = field.path.rsplit_once('.').unwrap_or(("", field.path));
            if table != section {
                out.push_str(&format!("\n[{table}]\n"));
                section = table;
            }
            let value = field.value_in(&document).cloned().unwrap_or_default();
            // A field left out by default (its default depends on other fields) is shown
            // with an example value, commented out.
            let (literal, shown) = match (field.kind, &value) {
                (shopsim_sim::input::Kind::OptionalInt { min, .. }, serde_json::Value::Null) => {
                    ("left out".to_string(), min.max(1).to_string())
                }
                _ => {
                    let literal = toml_literal(&value);
                    (literal.clone(), literal)
                }
            };
            let unit = if field.unit.is_empty() || field.unit == "count" {
                String::new()
            } else {
                format!(", {}", field.unit)
            };
            out.push_str(&format!(
                "# {}\n# {}{unit}; default {literal}\n",
                field.doc,
                field.kind.expected()
            ));
            // Fields that restate another one, or are left out by default, are shown, not set.
            let comment = if field.path == "shop.db_profile" || value.is_null() {
                "# "
            } else {
                ""
            };
            out.push_str(&format!("{comment}{key} = {shown}\n"));
        }
        // Steering is off unless a file turns it on, so its table is shown, not set: an
        // example of every field, checked by the same validation (`SteeringPlan::validate`).
        let example = SteeringPlan {
            enabled: true,
            change_points: vec![shopsim_sim::steering::ChangePoint::default()],
            ..SteeringPlan::off()
        };
        let steering = toml::to_string(&toml::Table::from_iter([(
            "steering".to_string(),
            toml::Value::try_from(&example).expect("a steering plan serializes"),
        )]))
        .expect("a steering plan serializes");
        out.push_str(
            "\n# Schedule steering (README, \"Schedule steering\"): delay points at statement\n\
             # boundaries, RPC send and receive and race windows; off unless `enabled`. Probabilities\n\
             # 0 to 1; jitter and stalls at most 60000 ms; budgets at most 600000 ms; change points\n\
             # quiet_ms and hold_ms_max 1..=60000, release_after_points at least 1.\n",
        );
        for line in steering.lines() {
            out.push_str(&format!("# {line}\n"));
        }
        out
    }

    /// The runner's configuration.
    pub fn sim_config(&self) -> SimConfig {
        SimConfig {
            duration_ms: self.sim.duration_ms,
            time_limit_ms: self.sim.time_limit_ms,
            latency_us_min: self.sim.latency_us_min,
            latency_us_max: self.sim.latency_us_max,
            faults: self.faults.clone(),
            steering: self.steering.clone(),
        }
    }

    /// The scenario as a TOML file (without `shop.db_profile`, which `profiles` sets).
    pub fn to_toml(&self) -> String {
        let mut document = toml::Table::try_from(self).expect("a scenario serializes");
        if let Some(toml::Value::Table(shop)) = document.get_mut("shop") {
            shop.remove("db_profile");
        }
        toml::to_string(&document).expect("a scenario serializes")
    }

    /// The profiles, parsed.
    pub fn profile_list(&self) -> Vec<Profile> {
        self.profiles
            .iter()
            .map(|p| p.parse().expect("validated"))
            .collect()
    }

    /// The shop for `profile` with extra planted `bugs`; its name is `<scenario>@<profile>`
    /// when the scenario has several profiles.
    pub fn system(&self, profile: Profile, bugs: &[String]) -> Result<Shop, InputError> {
        let mut shop = self.shop.clone();
        shop.db_profile = profile.name().to_string();
        shop.progress = self.progress.clone();
        shop.bugs.extend(bugs.iter().cloned());
        shop.validate()?;
        Ok(Shop::new(
            &format!("{}@{}", self.name, profile.name()),
            shop,
        ))
    }
}

/// Checks what a saved run (an artifact) says to replay by the same path as a scenario file:
/// its embedded scenario (or the built-in `name` if none is embedded), the profile, the
/// planted bugs and the exact configuration. Errors name the artifact's field
/// (`scenario_toml: shop.shoppers`, `config.duration_ms`, `profile`, `bugs`).
pub fn check_replay(
    name: &str,
    scenario_toml: &str,
    profile: &str,
    bugs: &[String],
    config: &SimConfig,
) -> Result<(Scenario, Profile), InputError> {
    let scenario = if scenario_toml.is_empty() {
        find(name).map_err(|e| InputError::new("scenario", name, e.to_string()))?
    } else {
        let scenario = Scenario::from_toml(scenario_toml).map_err(|mut e| {
            e.field = format!("scenario_toml: {}", e.field);
            e
        })?;
        if scenario.name != name {
            return Err(InputError::new(
                "scenario",
                name,
                format!(
                    "expected the name of the embedded scenario (`{}`)",
                    scenario.name
                ),
            ));
        }
        scenario
    };
    let profile: Profile = profile
        .parse()
        .map_err(|e: shopsim_sim::db::ProfileParseError| {
            InputError::new("profile", profile, e.to_string())
        })?;
    scenario.check_sim_config(config)?;
    let names: Vec<&str> = shopsim_model::bugs::NAMES.iter().map(|(n, _)| *n).collect();
    for (i, bug) in bugs.iter().enumerate() {
        if !names.contains(&bug.as_str()) {
            return Err(InputError::new(
                format!("bugs[{i}]"),
                shopsim_sim::input::cut(bug, 80),
                format!("expected one of {}", names.join(", ")),
            ));
        }
        if bugs[..i].contains(bug) {
            return Err(InputError::new(
                format!("bugs[{i}]"),
                bug,
                "no bug listed twice",
            ));
        }
    }
    Ok((scenario, profile))
}

/// The built-in scenarios, in a fixed order.
pub fn builtin() -> Vec<Scenario> {
    parse_all(&BUILTIN)
}

/// The low-contention variants (not among [`builtin`]: they exist to measure detection), in a
/// fixed order.
pub fn low_contention() -> Vec<Scenario> {
    parse_all(&LOW_CONTENTION)
}

fn parse_all(files: &[(&str, &str)]) -> Vec<Scenario> {
    files
        .iter()
        .map(|(name, text)| {
            let s = Scenario::from_toml(text)
                .unwrap_or_else(|e| panic!("built-in scenario {name}: {e}"));
            assert_eq!(&s.name, name);
            s
        })
        .collect()
}

/// An unknown scenario name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownScenario {
    /// The name asked for.
    pub name: String,
    /// The closest known name.
    pub nearest: String,
    /// All known names.
    pub known: Vec<String>,
}

impl std::fmt::Display for UnknownScenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown scenario `{}` (did you mean `{}`? known: {})",
            self.name,
            self.nearest,
            self.known.join(", ")
        )
    }
}

/// The built-in scenario or low-contention variant `name` (a `@profile` suffix is ignored
/// here).
pub fn find(name: &str) -> Result<Scenario, UnknownScenario> {
    let base = name.split('@').next().unwrap_or(name);
    let mut all = builtin();
    all.extend(low_contention());
    if let Some(s) = all.iter().find(|s| s.name == base) {
        return Ok(s.clone());
    }
    let known: Vec<String> = all.iter().map(|s| s.name.clone()).collect();
    let nearest = known
        .iter()
        .min_by_key(|k| edit_distance(k, base))
        .cloned()
        .unwrap_or_default();
    Err(UnknownScenario {
        name: name.to_string(),
        nearest,
        known,
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_scenarios_parse_and_validate() {
        assert_eq!(builtin().len(), 12);
        assert_eq!(low_contention().len(), LOW_CONTENTION_BUGS.len());
        // One variant per planted bug, in the same order, each findable by name.
        for ((_, bug, check), (variant, lc_bug, lc_check)) in
            PLANTED_BUGS.iter().zip(LOW_CONTENTION_BUGS.iter())
        {
            assert_eq!((bug, check), (lc_bug, lc_check));
            assert_eq!(&find(variant).unwrap().name, variant);
        }
    }

    #[test]
    fn a_steering_table_is_validated_and_reaches_the_config() {
        let text = "name = \"x\"\nwhy = \"y\"\n[steering]\nenabled = true\nstall_ms_max = 50\n";
        let scenario = Scenario::from_toml(text).unwrap();
        assert!(scenario.sim_config().steering.enabled);
        assert_eq!(scenario.sim_config().steering.stall_ms_max, 50);
        // It survives the round trip through an artifact's embedded scenario.
        assert_eq!(Scenario::from_toml(&scenario.to_toml()).unwrap(), scenario);
        let err =
            Scenario::from_toml("name = \"x\"\nwhy = \"y\"\n[steering]\nstall_probability = 2.0\n")
                .unwrap_err();
        assert_eq!(err.field, "steering.stall_probability");
        let err =
            Scenario::from_toml("name = \"x\"\nwhy = \"y\"\n[steering]\nstal = 1\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `stal`"), "{err}");
        // Off by default, and a file without the table serializes without one.
        let plain = Scenario::from_toml("name = \"x\"\nwhy = \"y\"\n").unwrap();
        assert!(!plain.sim_config().steering.enabled);
        assert!(!plain.to_toml().contains("[steering]"));
    }

    fn error(text: &str) -> String {
        Scenario::from_toml(&format!("name = \"x\"\nwhy = \"y\"\n{text}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_scenarios_name_field_and_value() {
        assert_eq!(
            error("[shop]\nshopers = 3\n"),
            "shop.shopers: unknown field `shopers` (did you mean `shoppers`?), got `shopers`"
        );
        assert_eq!(
            error("[shop]\ndouble_convert_probability = 1.5\n"),
            "shop.double_convert_probability: expected a probability from 0 to 1, got `1.5`"
        );
        assert_eq!(
            error("profiles = [\"pg_xx\"]\n"),
            "profiles[0]: expected one of pg_rc, pg_rr, pg_ser, maria_ru, maria_rc, maria_rr, maria_ser, maria_rr_si, got `pg_xx`"
        );
        assert_eq!(
            error("[sim]\nduration_ms = 0\n"),
            "sim.duration_ms: expected a whole number in 1..=3600000, got `0`"
        );
        let err = find("checkout-concurency").unwrap_err();
        assert_eq!(err.nearest, "checkout-concurrency");
    }

    /// Type errors name the field's path and what it accepts in words, not only the line
    /// (before: `line 4: invalid value: integer -1, expected u32`).
    #[test]
    fn type_errors_name_the_path_and_the_expected_kind() {
        for (text, expected) in [
            (
                "[shop]\nshoppers = -1\n",
                "shop.shoppers: expected a whole number in 0..=1000, got `-1`",
            ),
            (
                "[shop]\nshoppers = \"many\"\n",
                "shop.shoppers: expected a whole number in 0..=1000, got `\"many\"`",
            ),
            (
                "[shop]\nshoppers = 1.5\n",
                "shop.shoppers: expected a whole number in 0..=1000, got `1.5`",
            ),
            (
                "[shop.db]\nport = 70000\n",
                "shop.db.port: expected a whole number in 1..=65535, got `70000`",
            ),
            (
                "[faults]\nfamilies = [\"crash\", \"explode\"]\n",
                "faults.families[1]: expected one of crash, pause, clog, partition, loss, latency, buggify, got `\"explode\"`",
            ),
            ("shop = 3\n", "shop: expected a table, got `3`"),
            (
                "[shop]\nreplica = 1\n",
                "shop.replica: expected true or false, got `1`",
            ),
        ] {
            assert_eq!(error(text), expected, "{text}");
        }
        assert_eq!(
            Scenario::from_toml("why = \"y\"\n")
                .unwrap_err()
                .to_string(),
            "name: is required"
        );
    }

    /// Values within each field's bounds whose combination is absurd are refused, naming the
    /// field that must change.
    #[test]
    fn absurd_combinations_are_refused() {
        for (text, field) in [
            ("[shop]\ncheckout_p95_ms = nan\n", "shop.checkout_p95_ms"),
            ("[shop]\nread_p95_ms = -1.0\n", "shop.read_p95_ms"),
            ("[shop]\nprice_cents = -5\n", "shop.price_cents"),
            ("[shop]\ndb_max_connections = 0\n", "shop.db_max_connections"),
            ("[shop.db]\nport = 0\n", "shop.db.port"),
            ("[shop.db]\nmax_connections = 7\n", "shop.db.max_connections"),
            ("[shop.db]\nread_only = true\n", "shop.db.read_only"),
            (
                "[faults]\nfamilies = [\"crash\", \"crash\"]\n",
                "faults.families",
            ),
            (
                "[sim]\nduration_ms = 4000\n[faults]\nfamilies = [\"crash\"]\nquiet_period_ms = 5000\n",
                "faults.quiet_period_ms",
            ),
            (
                "profiles = [\"maria_rr\"]\n[shop]\ndb_profile = \"pg_rc\"\n",
                "shop.db_profile",
            ),
            ("profiles = [\"pg_rc\", \"pg_rc\"]\n", "profiles[1]"),
            ("profiles = []\n", "profiles"),
            ("[sim]\nlatency_us_min = 9\nlatency_us_max = 8\n", "sim.latency_us_max"),
            ("[shop]\nreservation_ttl_ms = 9223372036854775807\n", "shop.reservation_ttl_ms"),
            ("[shop]\ntenants = 2147483647\n", "shop.tenants"),
            ("[shop]\ntenants = 100\nproducts_per_tenant = 101\n", "shop.products_per_tenant"),
            ("[shop]\nshoppers = 0\ncatalog_readers = 100\nreads_per_reader = 10\npage_size = 31\n", "shop.page_size"),
            ("[shop]\nshoppers = 1300\n", "shop.shoppers"),
            ("[shop]\nshoppers = 0\ncatalog_readers = 100\nreads_per_reader = 61\npage_size = 1\n", "shop.reads_per_reader"),
            ("[shop]\napp_nodes = 300\n", "shop.app_nodes"),
            ("[shop]\nshoppers = 1500\npayers = 1500\n", "shop.shoppers"),
            ("[shop]\nrequest_timeout_ms = 100\n", "shop.request_timeout_ms"),
            ("[shop]\nreservation_ttl_ms = 900000\n", "sim.time_limit_ms"),
            ("[shop]\nbugs = [\"no_such_bug\"]\n", "shop.bugs[0]"),
            ("name = \"../etc\"\n", "line 3"),
            ("[shop]\nlockable_orders = 2\n[progress]\norders_locked_min = 3\n", "progress.orders_locked_min"),
            ("[shop]\npayers = 0\n[progress]\npayments_succeeded_min = 1\n", "progress.payments_succeeded_min"),
            ("[progress]\nreads_answered_min = -1\n", "progress.reads_answered_min"),
            ("[progress]\norders_placed_min = 12\n", "progress.orders_placed_min"),
            ("[shop]\nshoppers = 500\nadversaries = 500\n", "shop.shoppers"),
            ("[shop]\nconvert_delay_ms_min = 5\nconvert_delay_ms_max = 4\n", "shop.convert_delay_ms_max"),
            ("[shop]\nisolation_level = \"snapshot\"\n", "shop.isolation_level"),
            ("[shop]\nlaravel = \"13.0\"\n", "shop.laravel"),
            ("[shop]\npayers = 10\npayer_retries = 11\n", "shop.payer_retries"),
            ("[shop]\nadversaries = 10\nadversary_requests = 600\n", "shop.adversary_requests"),
            ("[shop]\nsettle_ms_max = 900000\n", "sim.time_limit_ms"),
        ] {
            let err = Scenario::from_toml(&format!("name = \"x\"\nwhy = \"y\"\n{text}"))
                .expect_err(text);
            assert_eq!(err.field, field, "{text}: {err}");
        }
        let err = Scenario::from_toml("name = \"../etc\"\nwhy = \"y\"\n").unwrap_err();
        assert_eq!(err.field, "name", "{err}");
        // A stated progress the workload can just reach (10 shoppers and the probe's
        // checkout) is accepted.
        let s =
            Scenario::from_toml("name = \"x\"\nwhy = \"y\"\n[progress]\norders_placed_min = 11\n")
                .unwrap();
        assert_eq!(s.progress.orders_placed_min, Some(11));
        // `db_profile` alone stands for `profiles`.
        let s =
            Scenario::from_toml("name = \"x\"\nwhy = \"y\"\n[shop]\ndb_profile = \"maria_rc\"\n")
                .unwrap();
        assert_eq!(s.profiles, ["maria_rc"]);
    }

    /// The template lists every field a scenario has (so a new field without bounds fails
    /// here), with its unit, default and bounds, and parses back as the default scenario.
    #[test]
    fn the_template_is_complete_and_valid() {
        let template = Scenario::template();
        let parsed = Scenario::from_toml(&template).unwrap_or_else(|e| panic!("{e}\n{template}"));
        assert_eq!(parsed.shop, ShopConfig::default());
        assert_eq!(parsed.faults, FaultPlan::none());
        assert_eq!(parsed.progress, ProgressConfig::default());
        let document = serde_json::to_value(&parsed).unwrap();
        let mut leaves = Vec::new();
        fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        let path = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(&path, v, out);
                    }
                }
                _ => out.push(prefix.to_string()),
            }
        }
        walk("", &document, &mut leaves);
        for leaf in &leaves {
            let field = fields::field(leaf).unwrap_or_else(|| panic!("{leaf} is not in FIELDS"));
            let key = leaf.rsplit('.').next().unwrap();
            assert!(
                template
                    .lines()
                    .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} = "))),
                "{leaf} is not in the template"
            );
            assert!(template.contains(field.doc), "{leaf}'s doc");
        }
        assert_eq!(
            leaves.len(),
            fields::FIELDS.len(),
            "FIELDS lists fields no scenario has"
        );
        assert!(
            template.contains("# a whole number in 0..=1000; default 10\nshoppers = 10\n"),
            "{template}"
        );
    }

    /// Before: `[shop.db] port` was not where the app connected (every request a 503 unless
    /// it was 5432).
    #[test]
    fn a_database_port_other_than_the_default_is_served() {
        let s = Scenario::from_toml(
            "name = \"p\"\nwhy = \"y\"\nprofiles = [\"pg_rc\"]\n[sim]\nduration_ms = 2000\n[shop]\nshoppers = 3\nreplica = true\ncatalog_readers = 2\n[shop.db]\nport = 6543\n",
        )
        .unwrap();
        let system = s.system(s.profile_list()[0], &[]).unwrap();
        let outcome = shopsim_sim::runner::run(&system, 3, &s.sim_config());
        assert!(outcome.passed(), "{:?}", outcome.fail_line());
    }

    /// Every built-in scenario is within bounds, and the worst-case run length the time
    /// limit is checked against covers what its seeds really take.
    #[test]
    fn builtin_runs_fit_their_worst_case() {
        for s in builtin() {
            let worst = fields::worst_case_run_ms(&s);
            assert!(worst < s.sim.time_limit_ms, "{}: {worst}", s.name);
            let system = s.system(s.profile_list()[0], &[]).unwrap();
            let outcome = shopsim_sim::runner::run(&system, 1, &s.sim_config());
            assert!(
                (outcome.virtual_elapsed.as_millis() as u64) <= worst,
                "{}: {:?} > {worst} ms",
                s.name,
                outcome.virtual_elapsed
            );
        }
    }
}
