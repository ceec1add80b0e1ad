//! shopsim-scenarios: the scenarios as data (one TOML file each under `data/`) and their
//! registry. A scenario names a workload, a deployment, the faults and the database profiles;
//! [`Scenario::system`] turns it into the shop system and the runner's configuration.

use serde::{Deserialize, Serialize};
use shopsim_model::config::ShopConfig;
use shopsim_model::shop::Shop;
use shopsim_sim::db::Profile;
use shopsim_sim::fault::FaultPlan;
use shopsim_sim::input::InputError;
use shopsim_sim::runner::SimConfig;
use shopsim_sim::steering::SteeringPlan;

const BUILTIN: [(&str, &str); 8] = [
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
    (
        "reservation-expiry",
        include_str!("../data/reservation-expiry.toml"),
    ),
];

/// Each planted bug with the scenario that must find it and the check that names it.
pub const PLANTED_BUGS: [(&str, &str, &str); 10] = [
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
    (
        "checkout-concurrency",
        "deadlock_not_retried",
        "deadlocks_handled",
    ),
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
    /// Schedule steering (off unless the file turns it on; swarm mode draws its own).
    #[serde(default, skip_serializing_if = "is_default_steering")]
    pub steering: SteeringPlan,
}

fn is_default_steering(plan: &SteeringPlan) -> bool {
    *plan == SteeringPlan::default()
}

fn default_profiles() -> Vec<String> {
    vec!["pg_rc".to_string(), "maria_rr".to_string()]
}

impl Scenario {
    /// Parses and validates a scenario file; errors name the field and the value.
    pub fn from_toml(text: &str) -> Result<Scenario, InputError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| {
            let message = e.message().to_string();
            let field = e
                .span()
                .map(|span| {
                    let line = text[..span.start].matches('\n').count() + 1;
                    format!("line {line}")
                })
                .unwrap_or_else(|| "file".to_string());
            let value = e.span().map(|s| text[s].to_string()).unwrap_or_default();
            InputError::new(field, value, message)
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), InputError> {
        if self.profiles.is_empty() {
            return Err(InputError::new(
                "profiles",
                "[]",
                "must name at least one database profile",
            ));
        }
        for p in &self.profiles {
            p.parse::<Profile>()
                .map_err(|e| InputError::new("profiles", p, e.to_string()))?;
        }
        self.shop.validate()?;
        self.sim_config().validate()
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

    /// The scenario as a TOML file.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a scenario serializes")
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
        shop.bugs.extend(bugs.iter().cloned());
        shop.validate()?;
        Ok(Shop::new(
            &format!("{}@{}", self.name, profile.name()),
            shop,
        ))
    }
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
        assert_eq!(builtin().len(), 8);
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

    #[test]
    fn bad_scenarios_name_field_and_value() {
        let err =
            Scenario::from_toml("name = \"x\"\nwhy = \"y\"\n[shop]\nshopers = 3\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `shopers`"), "{err}");
        assert_eq!(err.field, "line 4");
        let err = Scenario::from_toml(
            "name = \"x\"\nwhy = \"y\"\n[shop]\ndouble_convert_probability = 1.5\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "shop.double_convert_probability: must be a probability in 0..=1, got `1.5`"
        );
        let err =
            Scenario::from_toml("name = \"x\"\nwhy = \"y\"\nprofiles = [\"pg_xx\"]\n").unwrap_err();
        assert_eq!(err.field, "profiles");
        let err =
            Scenario::from_toml("name = \"x\"\nwhy = \"y\"\n[sim]\nduration_ms = 0\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "duration_ms: must be greater than 0, got `0`"
        );
        let err = find("checkout-concurency").unwrap_err();
        assert_eq!(err.nearest, "checkout-concurrency");
    }
}
