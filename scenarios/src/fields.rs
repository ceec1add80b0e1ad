//! Every setting of a scenario file, with its unit, accepted values and meaning: the one table
//! that [`crate::Scenario::validate`] checks and `shopsim scenario --template` prints, so the
//! template and the validator cannot drift apart (a test parses the template back and checks
//! that every field the scenario serializes is listed here).
//!
//! The upper bounds keep the largest allowed run inside the memory budget of 256 MiB (measured
//! with `/usr/bin/time -v shopsim run --file <largest.toml> --seed 0`, see README "Bounds") and
//! its arithmetic far from overflow: every duration is at most [`DAY_MS`], so sums of a few of
//! them fit in `u64` milliseconds and microseconds. Relations between fields (a minimum not
//! above its maximum, faults that can happen before the quiet period, a time limit the
//! workload can finish in) are checked in [`relations`].

use shopsim_sim::db::client::LaravelVersion;
use shopsim_sim::db::Profile;
use shopsim_sim::fault::{FaultFamily, FaultPlan};
use shopsim_sim::input::{Field, InputError, Kind};

use crate::Scenario;

/// One day of virtual time, ms: the upper bound of every duration setting.
pub const DAY_MS: u64 = 86_400_000;
/// The longest workload, ms of virtual time (one hour).
pub const DURATION_MS_MAX: u64 = 3_600_000;
/// The longest time limit of a run, ms of virtual time (four hours).
pub const TIME_LIMIT_MS_MAX: u64 = 4 * 3_600_000;
/// The most tenants.
pub const TENANTS_MAX: u64 = 100;
/// The most products in the whole catalog (tenants × products per tenant): about 4 KiB each
/// in the primary and the replica together.
pub const PRODUCTS_MAX: u64 = 10_000;
/// The most client nodes: shoppers + payers + catalog readers + admins (lockable orders ×
/// (mutations per order + 1)) + adversaries + the probes that run after the faults heal (one
/// checkout, one reader, one lock per lockable order). Client addresses are `10.1.x.y`, so
/// 64,000 at most could exist.
pub const CLIENTS_MAX: u64 = 1_000;
/// The most HTTP requests a workload plans: each becomes a history entry with its response
/// and the statements it ran, about 12 KiB for a checkout step (measured).
pub const REQUESTS_MAX: u64 = 6_000;
/// The most products all catalog page responses of a run hold (catalog readers × reads per
/// reader × page size): about 1.5 KiB each in the history (measured).
pub const PAGE_ENTRIES_MAX: u64 = 30_000;
/// The size bounds of a scenario: [`Bounds::FILE`] for every scenario a user gives (file,
/// built-in, artifact, shrink step), which keep a run inside the memory budget;
/// [`Bounds::SCALING`] only for the scaling series `shopsim bench --scaling` builds itself,
/// whose largest points (10,000 shoppers) are there to measure how cost grows past them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The most client nodes ([`CLIENTS_MAX`] for files).
    pub clients_max: u64,
    /// The most planned requests ([`REQUESTS_MAX`] for files).
    pub requests_max: u64,
}

impl Bounds {
    /// The bounds of every scenario a user gives.
    pub const FILE: Bounds = Bounds {
        clients_max: CLIENTS_MAX,
        requests_max: REQUESTS_MAX,
    };
    /// The bounds of the scaling series: 10,000 shoppers and their probes, about 60,000
    /// requests (some hundreds of MiB of history, reported by the bench as its peak memory).
    pub const SCALING: Bounds = Bounds {
        clients_max: 11_000,
        requests_max: 66_000,
    };

    /// [`FIELDS`] with these bounds: every field bounded by [`CLIENTS_MAX`] or
    /// [`REQUESTS_MAX`] takes the bound's own value instead.
    pub fn fields(&self) -> Vec<Field> {
        FIELDS
            .iter()
            .map(|field| {
                let kind = match field.kind {
                    Kind::Int { min, max } => Kind::Int {
                        min,
                        max: self.raised(max),
                    },
                    Kind::OptionalInt { min, max } => Kind::OptionalInt {
                        min,
                        max: self.raised(max),
                    },
                    other => other,
                };
                Field { kind, ..*field }
            })
            .collect()
    }

    fn raised(&self, max: u64) -> u64 {
        match max {
            CLIENTS_MAX => self.clients_max,
            REQUESTS_MAX => self.requests_max,
            other => other,
        }
    }
}

/// The most fault events the nemesis can schedule in one run (fault window / shortest
/// interval); each is two history entries. Swarm mode draws intervals of at least 50 ms, so
/// every swarm draw for the longest run stays within it.
pub const FAULT_EVENTS_MAX: u64 = 72_000;
/// The most app nodes (app addresses are `10.0.1.x`).
pub const APP_NODES_MAX: u64 = 16;
/// The most times a payer sends the payment request again.
pub const PAYER_RETRIES_MAX: u64 = 10;

fn profile_names() -> Vec<&'static str> {
    Profile::ALL.iter().map(|p| p.name()).collect()
}

fn family_names() -> Vec<&'static str> {
    FaultFamily::ALL.iter().map(|f| f.name()).collect()
}

fn bug_names() -> Vec<&'static str> {
    shopsim_model::bugs::NAMES.iter().map(|(n, _)| *n).collect()
}

fn laravel_names() -> Vec<&'static str> {
    LaravelVersion::ALL.iter().map(|v| v.name()).collect()
}

fn isolation_level_names() -> Vec<&'static str> {
    shopsim_model::config::ISOLATION_LEVELS.to_vec()
}

const fn int(min: i64, max: u64) -> Kind {
    Kind::Int { min, max }
}

const fn ms(path: &'static str, min: i64, max: u64, doc: &'static str) -> Field {
    Field {
        path,
        unit: "ms",
        kind: int(min, max),
        doc,
    }
}

const fn us(path: &'static str, min: i64, max: u64, doc: &'static str) -> Field {
    Field {
        path,
        unit: "µs",
        kind: int(min, max),
        doc,
    }
}

const fn count(path: &'static str, min: i64, max: u64, doc: &'static str) -> Field {
    Field {
        path,
        unit: "count",
        kind: int(min, max),
        doc,
    }
}

const fn optional_count(path: &'static str, max: u64, doc: &'static str) -> Field {
    Field {
        path,
        unit: "count",
        kind: Kind::OptionalInt { min: 0, max },
        doc,
    }
}

const fn share(path: &'static str, doc: &'static str) -> Field {
    Field {
        path,
        unit: "share",
        kind: Kind::PROBABILITY,
        doc,
    }
}

const fn probability(path: &'static str, doc: &'static str) -> Field {
    Field {
        path,
        unit: "probability",
        kind: Kind::PROBABILITY,
        doc,
    }
}

const fn threshold_ms(path: &'static str, doc: &'static str) -> Field {
    Field {
        path,
        unit: "ms",
        kind: Kind::Float {
            min: 0.0,
            max: DAY_MS as f64,
            min_exclusive: true,
        },
        doc,
    }
}

const fn flag(path: &'static str, doc: &'static str) -> Field {
    Field {
        path,
        unit: "",
        kind: Kind::Bool,
        doc,
    }
}

/// Every setting of a scenario file, in file order: top level, `[sim]`, `[faults]`, `[shop]`,
/// `[shop.db]`, `[progress]`.
pub const FIELDS: &[Field] = &[
    Field {
        path: "name",
        unit: "",
        kind: Kind::Name { len_max: 64 },
        doc: "The scenario's name (part of artifact paths).",
    },
    Field {
        path: "why",
        unit: "",
        kind: Kind::Text { len_max: 2_000 },
        doc: "One sentence: what the scenario tests and how.",
    },
    Field {
        path: "profiles",
        unit: "",
        kind: Kind::Names {
            choices: profile_names,
            len_min: 1,
        },
        doc: "Database profiles the scenario runs under, one run each.",
    },
    ms(
        "sim.duration_ms",
        1,
        DURATION_MS_MAX,
        "How long the workload runs, virtual time.",
    ),
    ms(
        "sim.time_limit_ms",
        2,
        TIME_LIMIT_MS_MAX,
        "A run still going after this is a liveness failure; must leave room for the worst-case workload.",
    ),
    us(
        "sim.latency_us_min",
        1,
        1_000_000,
        "Shortest one-way network latency.",
    ),
    us(
        "sim.latency_us_max",
        1,
        1_000_000,
        "Longest one-way network latency (at least latency_us_min).",
    ),
    Field {
        path: "faults.families",
        unit: "",
        kind: Kind::Names {
            choices: family_names,
            len_min: 0,
        },
        doc: "Fault families that are on.",
    },
    ms(
        "faults.interval_ms_min",
        1,
        DAY_MS,
        "Shortest time between two fault events.",
    ),
    ms(
        "faults.interval_ms_max",
        1,
        DAY_MS,
        "Longest time between two fault events (at least interval_ms_min).",
    ),
    ms(
        "faults.duration_ms_max",
        1,
        DAY_MS,
        "Longest a fault lasts before its pair heals it.",
    ),
    probability(
        "faults.loss_probability",
        "Packet loss probability during a loss period.",
    ),
    ms(
        "faults.spike_latency_ms",
        0,
        60_000,
        "One-way latency during a latency spike.",
    ),
    probability(
        "faults.buggify_probability",
        "Probability that an active buggify point fires when buggify is on.",
    ),
    ms(
        "faults.quiet_period_ms",
        0,
        DAY_MS,
        "Faults stop this long before the end of the workload (less than sim.duration_ms when a scheduled family is on).",
    ),
    Field {
        path: "shop.db_profile",
        unit: "",
        kind: Kind::Choice(profile_names),
        doc: "Set by `profiles` for each run; if given it must be the only entry of `profiles`.",
    },
    count("shop.tenants", 1, TENANTS_MAX, "Tenants sharing the shop."),
    count(
        "shop.products_per_tenant",
        1,
        PRODUCTS_MAX,
        "Products per tenant (tenants × products_per_tenant at most 10000).",
    ),
    count(
        "shop.stock_per_product",
        0,
        1_000_000_000,
        "Units in stock per product.",
    ),
    Field {
        path: "shop.price_cents",
        unit: "cents",
        kind: int(0, 1_000_000_000),
        doc: "Price per unit.",
    },
    count("shop.app_nodes", 1, APP_NODES_MAX, "App nodes."),
    count(
        "shop.workers_per_app",
        1,
        256,
        "Request workers per app node (PHP-FPM children).",
    ),
    count(
        "shop.db_pool_per_app",
        1,
        256,
        "Database connections per app node.",
    ),
    ms(
        "shop.db_acquire_timeout_ms",
        1,
        DAY_MS,
        "How long a request waits for a pooled connection.",
    ),
    count(
        "shop.db_max_connections",
        1,
        10_000,
        "Database connection limit (of the primary and the replica).",
    ),
    count(
        "shop.shoppers",
        0,
        CLIENTS_MAX,
        "Shoppers running the checkout flow (create cart, add items, convert).",
    ),
    count("shop.items_per_cart", 1, 50, "Items per cart."),
    count("shop.quantity_max", 1, 1_000, "Largest quantity per item."),
    probability(
        "shop.double_convert_probability",
        "Probability that a shopper sends convert twice (a double click).",
    ),
    ms(
        "shop.double_convert_gap_ms_max",
        0,
        60_000,
        "The second click of a double click comes up to this long after the first (0: at once).",
    ),
    probability(
        "shop.add_during_convert_probability",
        "Probability that a shopper adds one more item, from a second browser tab, while its convert is under way.",
    ),
    count(
        "shop.payers",
        0,
        CLIENTS_MAX,
        "Shoppers who also pay (checkout, payment, webhook and return URL).",
    ),
    probability(
        "shop.pay_double_click_probability",
        "Probability that a payer sends the payment request twice at once (a double click).",
    ),
    count(
        "shop.payer_retries",
        0,
        PAYER_RETRIES_MAX,
        "How often a payer sends the payment request again after no answer or a 5xx (500 ms later).",
    ),
    probability(
        "shop.payment_abandon_probability",
        "Probability that a payer leaves the provider's page without paying (and still comes back to the return URL).",
    ),
    ms(
        "shop.convert_delay_ms_min",
        0,
        DAY_MS,
        "Think time of a shopper between the last item and the convert, lower end.",
    ),
    ms(
        "shop.convert_delay_ms_max",
        0,
        DAY_MS,
        "Think time before the convert, upper end (at least convert_delay_ms_min).",
    ),
    count(
        "shop.adversaries",
        0,
        CLIENTS_MAX,
        "Adversarial clients (one node each): each belongs to a tenant and sends other tenants' ids to every endpoint.",
    ),
    count(
        "shop.adversary_requests",
        0,
        REQUESTS_MAX,
        "Requests each adversary sends (after creating its own cart).",
    ),
    probability(
        "shop.webhook_duplicate_probability",
        "Probability that the provider delivers a webhook twice.",
    ),
    ms(
        "shop.webhook_delay_ms_max",
        0,
        DAY_MS,
        "Longest delay before the provider's first webhook.",
    ),
    count(
        "shop.catalog_readers",
        0,
        CLIENTS_MAX,
        "Clients reading the catalog (product pages and details).",
    ),
    count(
        "shop.reads_per_reader",
        0,
        REQUESTS_MAX,
        "Reads per catalog reader.",
    ),
    count("shop.page_size", 1, 100, "Products per catalog page."),
    flag("shop.replica", "Whether catalog reads go to a read replica."),
    ms(
        "shop.replica_lag_ms_max",
        1,
        60_000,
        "Replication lag of each commit, upper end (the lower end is 1 ms).",
    ),
    count(
        "shop.lockable_orders",
        0,
        CLIENTS_MAX,
        "Financial orders that admins race to lock and mutate.",
    ),
    count(
        "shop.mutations_per_order",
        0,
        100,
        "Mutation attempts per lockable order, racing its lock.",
    ),
    count(
        "shop.lockers_per_order",
        1,
        100,
        "Lock attempts per lockable order (admins racing each other to lock it).",
    ),
    ms(
        "shop.arrival_window_ms",
        0,
        DAY_MS,
        "Shoppers, payers and readers start within this window.",
    ),
    ms("shop.reservation_ttl_ms", 1, DAY_MS, "Reservation lifetime."),
    ms(
        "shop.expiry_sweep_ms",
        10,
        DAY_MS,
        "How often the worker releases expired reservations.",
    ),
    ms(
        "shop.worker_poll_ms",
        10,
        DAY_MS,
        "How often an idle worker polls the jobs table.",
    ),
    ms(
        "shop.request_timeout_ms",
        100,
        DAY_MS,
        "Client request deadline (no answer by then is an unknown outcome); longer than db_acquire_timeout_ms + provider_timeout_ms + app_overhead_us_max.",
    ),
    ms(
        "shop.provider_timeout_ms",
        1,
        DAY_MS,
        "Deadline of calls to the payment provider.",
    ),
    ms(
        "shop.provider_latency_ms_min",
        0,
        60_000,
        "Payment provider API latency, lower end.",
    ),
    ms(
        "shop.provider_latency_ms_max",
        0,
        60_000,
        "Payment provider API latency, upper end (at least the lower end).",
    ),
    ms(
        "shop.idempotency_ttl_ms",
        1,
        30 * DAY_MS,
        "How long the cache keeps idempotency keys.",
    ),
    us(
        "shop.app_overhead_us_min",
        1,
        10_000_000,
        "App request overhead (framework boot, serialization), lower end.",
    ),
    us(
        "shop.app_overhead_us_max",
        1,
        10_000_000,
        "App request overhead, upper end (at least the lower end).",
    ),
    us(
        "shop.cache_cost_us_max",
        0,
        1_000_000,
        "Cache operation cost, upper end (the lower end is 50 µs).",
    ),
    threshold_ms(
        "shop.checkout_p95_ms",
        "p95 latency threshold of the checkout endpoints.",
    ),
    threshold_ms("shop.read_p95_ms", "p95 latency threshold of catalog reads."),
    threshold_ms(
        "shop.payment_p95_ms",
        "p95 latency threshold of payment creation (it waits for the provider).",
    ),
    threshold_ms(
        "shop.return_p95_ms",
        "p95 latency threshold of the return URL (it asks the provider, then confirms).",
    ),
    threshold_ms(
        "shop.webhook_p95_ms",
        "p95 latency threshold of webhook deliveries.",
    ),
    threshold_ms(
        "shop.admin_p95_ms",
        "p95 latency threshold of the financial-order lock and mutations.",
    ),
    Field {
        path: "shop.laravel",
        unit: "",
        kind: Kind::Choice(laravel_names),
        doc: "The Laravel version whose DB::transaction retry rule (causedByConcurrencyError) the app has.",
    },
    count(
        "shop.transaction_attempts",
        1,
        100,
        "Attempts of every DB::transaction($callback, $attempts) of the app.",
    ),
    Field {
        path: "shop.isolation_level",
        unit: "",
        kind: Kind::Choice(isolation_level_names),
        doc: "The isolation level every transaction of the app sets for itself (SET TRANSACTION ISOLATION LEVEL around each DB::transaction); empty keeps the profile's default.",
    },
    flag(
        "shop.lock_products_in_id_order",
        "Whether convert locks the cart's products in product-id order (no deadlock between two converts) instead of reservation order.",
    ),
    count(
        "shop.job_tries",
        1,
        100,
        "Attempts of a queued job before it is dead-lettered into failed_jobs (--tries).",
    ),
    ms(
        "shop.job_backoff_ms",
        1,
        DAY_MS,
        "Delay before a failed job is tried again, doubling per attempt (--backoff).",
    ),
    ms(
        "shop.settle_ms_max",
        0,
        DAY_MS,
        "After the workload and the reservation expiry, how long the run waits at most for queued jobs and webhook deliveries to settle before the final state is judged.",
    ),
    share(
        "shop.checkout_completion_min",
        "Share of checkout flows clear of faults that must end with an order or a domain rejection (out of stock, reservations expired).",
    ),
    share(
        "shop.payment_completion_min",
        "Share of paying flows with an order, clear of faults, whose payment must end succeeded (or never captured, if the payer left).",
    ),
    Field {
        path: "shop.bugs",
        unit: "",
        kind: Kind::Names {
            choices: bug_names,
            len_min: 0,
        },
        doc: "Planted bugs to turn on (off by default).",
    },
    count(
        "shop.db.port",
        1,
        65_535,
        "Port the database listens on (and the app connects to).",
    ),
    count(
        "shop.db.max_connections",
        1,
        10_000,
        "Set by shop.db_max_connections; if given it must equal it.",
    ),
    us(
        "shop.db.statement_read_cost_us_min",
        1,
        1_000_000,
        "Cost of a statement that only reads (SELECT, BEGIN, SET, ROLLBACK), lower end.",
    ),
    us(
        "shop.db.statement_read_cost_us_max",
        1,
        1_000_000,
        "Cost of a read statement, upper end.",
    ),
    us(
        "shop.db.statement_write_cost_us_min",
        1,
        1_000_000,
        "Cost of a statement that writes (INSERT, UPDATE, DELETE), lower end.",
    ),
    us(
        "shop.db.statement_write_cost_us_max",
        1,
        1_000_000,
        "Cost of a write statement, upper end.",
    ),
    us(
        "shop.db.commit_cost_us_min",
        1,
        1_000_000,
        "Cost of a commit with a durable flush, lower end.",
    ),
    us(
        "shop.db.commit_cost_us_max",
        1,
        1_000_000,
        "Cost of a commit, upper end.",
    ),
    us(
        "shop.db.row_cost_us_min",
        1,
        1_000,
        "Cost per row a statement touched (scanned or written), lower end.",
    ),
    us(
        "shop.db.row_cost_us_max",
        1,
        1_000,
        "Cost per row, upper end.",
    ),
    probability(
        "shop.db.buggify_slow_statement_probability",
        "Buggify: a statement runs slow (an extra 10–500 ms).",
    ),
    probability(
        "shop.db.buggify_drop_after_commit_probability",
        "Buggify: the connection drops after a COMMIT was applied, before the client hears of it.",
    ),
    probability(
        "shop.db.buggify_delay_reply_probability",
        "Buggify: a reply is held back (an extra 1–200 ms).",
    ),
    flag(
        "shop.db.read_only",
        "Must be false: the primary takes writes (the replica is read-only by itself).",
    ),
    optional_count(
        "progress.orders_placed_min",
        CLIENTS_MAX,
        "Orders placed in the final state, at least (exit 6 if fewer); left out: 1 if the workload has shoppers or payers, else 0.",
    ),
    optional_count(
        "progress.payments_succeeded_min",
        CLIENTS_MAX,
        "Payments that ended succeeded, at least; left out: 1 if the workload has payers, else 0.",
    ),
    optional_count(
        "progress.reads_answered_min",
        REQUESTS_MAX,
        "Catalog reads answered 200, at least; left out: 1 if the workload has catalog reads, else 0.",
    ),
    optional_count(
        "progress.orders_locked_min",
        CLIENTS_MAX,
        "Financial orders locked in the final state, at least; left out: 1 if the workload has lockable orders, else 0.",
    ),
];

/// The field `path`, if the table has it.
pub fn field(path: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.path == path)
}

fn err(field: &str, value: impl std::fmt::Display, expected: impl Into<String>) -> InputError {
    InputError::new(field, value, expected)
}

/// Checks the relations between fields of a scenario whose every field is within its bounds.
pub fn relations(s: &Scenario) -> Result<(), InputError> {
    relations_within(s, &Bounds::FILE)
}

/// [`relations`] with the size bounds `bounds`.
pub fn relations_within(s: &Scenario, bounds: &Bounds) -> Result<(), InputError> {
    let shop = &s.shop;
    let sim = &s.sim;
    let faults = &s.faults;
    for (max_field, min, max) in [
        ("sim.latency_us_max", sim.latency_us_min, sim.latency_us_max),
        (
            "faults.interval_ms_max",
            faults.interval_ms_min,
            faults.interval_ms_max,
        ),
        (
            "shop.provider_latency_ms_max",
            shop.provider_latency_ms_min,
            shop.provider_latency_ms_max,
        ),
        (
            "shop.app_overhead_us_max",
            shop.app_overhead_us_min,
            shop.app_overhead_us_max,
        ),
        (
            "shop.convert_delay_ms_max",
            shop.convert_delay_ms_min,
            shop.convert_delay_ms_max,
        ),
        (
            "shop.db.statement_read_cost_us_max",
            shop.db.statement_read_cost_us_min,
            shop.db.statement_read_cost_us_max,
        ),
        (
            "shop.db.statement_write_cost_us_max",
            shop.db.statement_write_cost_us_min,
            shop.db.statement_write_cost_us_max,
        ),
        (
            "shop.db.commit_cost_us_max",
            shop.db.commit_cost_us_min,
            shop.db.commit_cost_us_max,
        ),
        (
            "shop.db.row_cost_us_max",
            shop.db.row_cost_us_min,
            shop.db.row_cost_us_max,
        ),
    ] {
        if min > max {
            let min_field = max_field.replace("_max", "_min");
            return Err(err(
                max_field,
                max,
                format!("expected at least {min_field} ({min})"),
            ));
        }
    }
    let products = u64::from(shop.tenants) * u64::from(shop.products_per_tenant);
    if products > PRODUCTS_MAX {
        return Err(err(
            "shop.products_per_tenant",
            shop.products_per_tenant,
            format!(
                "expected tenants × products_per_tenant ≤ {PRODUCTS_MAX} (tenants = {})",
                shop.tenants
            ),
        ));
    }
    let admins = u64::from(shop.lockable_orders)
        * (u64::from(shop.mutations_per_order) + u64::from(shop.lockers_per_order));
    let probes = Probes::of(shop);
    let clients = u64::from(shop.shoppers)
        + u64::from(shop.payers)
        + u64::from(shop.catalog_readers)
        + admins
        + u64::from(shop.adversaries)
        + probes.clients();
    let clients_max = bounds.clients_max;
    if clients > clients_max {
        return Err(err(
            "shop.shoppers",
            shop.shoppers,
            format!(
                "expected shoppers + payers + catalog_readers + lockable_orders × (mutations_per_order + lockers_per_order) + adversaries + probes (one checkout, one reader, one lock per lockable order) ≤ {clients_max} (the total is {clients})"
            ),
        ));
    }
    let shopper_requests = u64::from(shop.items_per_cart) + 3;
    let payer_requests = payer_requests(shop);
    let probe_checkout = match (probes.checkout, shop.payers > 0) {
        (false, _) => 0,
        (true, false) => shopper_requests,
        (true, true) => payer_requests,
    };
    let readers = u64::from(shop.catalog_readers) + u64::from(probes.reader);
    let parts = [
        (
            "shop.shoppers",
            u64::from(shop.shoppers),
            u64::from(shop.shoppers) * shopper_requests,
        ),
        (
            "shop.payers",
            u64::from(shop.payers),
            u64::from(shop.payers) * payer_requests + probe_checkout,
        ),
        (
            "shop.reads_per_reader",
            u64::from(shop.reads_per_reader),
            readers * u64::from(shop.reads_per_reader),
        ),
        (
            "shop.lockable_orders",
            u64::from(shop.lockable_orders),
            admins + u64::from(shop.lockable_orders),
        ),
        (
            "shop.adversary_requests",
            u64::from(shop.adversary_requests),
            u64::from(shop.adversaries) * (u64::from(shop.adversary_requests) + 1),
        ),
    ];
    let requests: u64 = parts.iter().map(|(_, _, n)| n).sum();
    let requests_max = bounds.requests_max;
    if requests > requests_max {
        // Blame the field that plans the most requests.
        let (field, value, _) = parts.iter().max_by_key(|(_, _, n)| *n).expect("parts");
        return Err(err(
            field,
            value,
            format!(
                "expected a workload of at most {requests_max} requests (shoppers × (items_per_cart + 3) + payers × (items_per_cart + 2 × payer_retries + 7) + catalog_readers × reads_per_reader + admins + adversaries × (adversary_requests + 1), and the probes' is {requests})"
            ),
        ));
    }
    let page_entries =
        readers * u64::from(shop.reads_per_reader) * u64::try_from(shop.page_size).unwrap_or(0);
    if page_entries > PAGE_ENTRIES_MAX {
        return Err(err(
            "shop.page_size",
            shop.page_size,
            format!(
                "expected (catalog_readers + 1 probe) × reads_per_reader × page_size ≤ {PAGE_ENTRIES_MAX} (products in all page responses), got {page_entries}"
            ),
        ));
    }
    progress_reachable(s, &probes)?;
    if shop.db.max_connections != shop.db_max_connections {
        return Err(err(
            "shop.db.max_connections",
            shop.db.max_connections,
            format!(
                "expected the value of shop.db_max_connections ({}), which sets it",
                shop.db_max_connections
            ),
        ));
    }
    if shop.db.read_only {
        return Err(err(
            "shop.db.read_only",
            true,
            "expected false: the primary takes writes (the replica is read-only by itself)",
        ));
    }
    let request_floor_ms = shop.db_acquire_timeout_ms
        + shop.provider_timeout_ms
        + shop.app_overhead_us_max.div_ceil(1_000);
    if shop.request_timeout_ms <= request_floor_ms {
        return Err(err(
            "shop.request_timeout_ms",
            shop.request_timeout_ms,
            format!(
                "expected more than db_acquire_timeout_ms + provider_timeout_ms + app_overhead_us_max ({request_floor_ms} ms), so a request that waits for a connection and the provider can still be answered"
            ),
        ));
    }
    if sim.time_limit_ms <= sim.duration_ms {
        return Err(err(
            "sim.time_limit_ms",
            sim.time_limit_ms,
            format!("expected more than sim.duration_ms ({})", sim.duration_ms),
        ));
    }
    let scheduled = faults.families.iter().any(|f| *f != FaultFamily::Buggify);
    if scheduled && faults.quiet_period_ms >= sim.duration_ms {
        return Err(err(
            "faults.quiet_period_ms",
            faults.quiet_period_ms,
            format!(
                "expected less than sim.duration_ms ({}): faults stop this long before the end, so none could happen",
                sim.duration_ms
            ),
        ));
    }
    if scheduled {
        let window = sim.duration_ms - faults.quiet_period_ms;
        let events = window / faults.interval_ms_min;
        if events > FAULT_EVENTS_MAX {
            return Err(err(
                "faults.interval_ms_min",
                faults.interval_ms_min,
                format!(
                    "expected at most {FAULT_EVENTS_MAX} fault events in the fault window of {window} ms, got up to {events}"
                ),
            ));
        }
    }
    let worst = worst_case_run_ms(s);
    if sim.time_limit_ms < worst {
        return Err(err(
            "sim.time_limit_ms",
            sim.time_limit_ms,
            format!(
                "expected at least {worst}: the workload may take that long when every request times out (arrival window, requests × request_timeout_ms, the probes after the faults, settling reservations, jobs and webhooks)"
            ),
        ));
    }
    Ok(())
}

/// The probe clients a run starts once the faults heal (`model/src/shop.rs`).
struct Probes {
    /// One more checkout (paying if the workload pays), if the workload has shoppers or payers.
    checkout: bool,
    /// One more catalog reader, if the workload reads.
    reader: bool,
    /// One more lock request per lockable order.
    locks: u64,
}

impl Probes {
    fn of(shop: &shopsim_model::config::ShopConfig) -> Probes {
        Probes {
            checkout: shop.shoppers + shop.payers > 0,
            reader: shop.catalog_readers > 0 && shop.reads_per_reader > 0,
            locks: u64::from(shop.lockable_orders),
        }
    }

    /// Client nodes of the probes.
    fn clients(&self) -> u64 {
        u64::from(self.checkout) + u64::from(self.reader) + self.locks
    }
}

/// The most requests one payer sends: cart, items, convert twice (a double click), each
/// payment attempt twice (a double click), the provider's page and the return URL.
fn payer_requests(shop: &shopsim_model::config::ShopConfig) -> u64 {
    u64::from(shop.items_per_cart) + 3 + 2 * (u64::from(shop.payer_retries) + 1) + 2
}

/// The most each `[progress]` goal can reach with this workload, if every request succeeds:
/// (field, stated minimum, most, what bounds it).
fn progress_limits(
    s: &Scenario,
    probes: &Probes,
) -> [(&'static str, Option<u64>, u64, &'static str); 4] {
    let shop = &s.shop;
    let p = &s.progress;
    let reads = (u64::from(shop.catalog_readers) + u64::from(probes.reader))
        * u64::from(shop.reads_per_reader);
    let payers = u64::from(shop.payers) + u64::from(probes.checkout && shop.payers > 0);
    [
        (
            "progress.orders_placed_min",
            p.orders_placed_min,
            u64::from(shop.shoppers) + u64::from(shop.payers) + u64::from(probes.checkout),
            "shoppers + payers + 1 probe checkout",
        ),
        (
            "progress.payments_succeeded_min",
            p.payments_succeeded_min,
            payers,
            "payers + 1 probe payer",
        ),
        (
            "progress.reads_answered_min",
            p.reads_answered_min,
            reads,
            "(catalog_readers + 1 probe) × reads_per_reader",
        ),
        (
            "progress.orders_locked_min",
            p.orders_locked_min,
            u64::from(shop.lockable_orders),
            "lockable_orders",
        ),
    ]
}

/// Lowers every stated `[progress]` minimum to what the workload can reach (a shrink step
/// that takes clients away takes their share of the progress with them).
pub fn clamp_progress(s: &mut Scenario) {
    let probes = Probes::of(&s.shop);
    let [orders, payments, reads, locked] = progress_limits(s, &probes).map(|(_, _, most, _)| most);
    let p = &mut s.progress;
    for (stated, most) in [
        (&mut p.orders_placed_min, orders),
        (&mut p.payments_succeeded_min, payments),
        (&mut p.reads_answered_min, reads),
        (&mut p.orders_locked_min, locked),
    ] {
        if let Some(n) = stated {
            *n = (*n).min(most);
        }
    }
}

/// A stated `[progress]` minimum the workload cannot reach even if every request succeeds
/// would fail every seed with exit 6, blaming the system for the configuration.
fn progress_reachable(s: &Scenario, probes: &Probes) -> Result<(), InputError> {
    for (field, stated, most, what) in progress_limits(s, probes) {
        if let Some(stated) = stated.filter(|n| *n > most) {
            return Err(err(
                field,
                stated,
                format!("expected at most {most} ({what}): the workload can make no more"),
            ));
        }
    }
    Ok(())
}

/// The longest a run of this scenario can take, ms of virtual time, if every request the
/// workload sends waits for its full deadline (`model/src/shop.rs`: each client's flow, then
/// the wait until the workload's end and for reservations to expire and be swept). A time limit
/// below it would turn slow-but-healthy runs into liveness failures, blaming the system for
/// the configuration.
pub fn worst_case_run_ms(s: &Scenario) -> u64 {
    let shop = &s.shop;
    let timeout = shop.request_timeout_ms;
    let items = u64::from(shop.items_per_cart);
    // create cart, items, think, convert (a double click's second convert up to the gap
    // later)
    let shopper =
        (items + 2) * timeout + shop.convert_delay_ms_max + shop.double_convert_gap_ms_max;
    // + each payment attempt and the pause after it, the provider's page, the return after
    // the webhook delay
    let payer = shopper
        + (u64::from(shop.payer_retries) + 1) * (timeout + 500)
        + 2 * timeout
        + shop.webhook_delay_ms_max
        + 200;
    let reader = u64::from(shop.reads_per_reader) * (timeout + 20);
    let admin = 50 + timeout;
    // its own cart, then each request after up to 60 ms of think time
    let adversary = timeout + u64::from(shop.adversary_requests) * (timeout + 60);
    let mut flow = 0;
    if shop.shoppers > 0 {
        flow = flow.max(shopper);
    }
    if shop.payers > 0 {
        flow = flow.max(payer);
    }
    if shop.catalog_readers > 0 {
        flow = flow.max(reader);
    }
    if shop.lockable_orders > 0 {
        flow = flow.max(admin);
    }
    if shop.adversaries > 0 {
        flow = flow.max(adversary);
    }
    let clients_done = 5 + shop.arrival_window_ms + flow;
    // The probes start 50 ms after the faults end and run one flow each.
    let probes = Probes::of(shop);
    let mut probe_flow = 0;
    if probes.checkout {
        probe_flow = if shop.payers > 0 { payer } else { shopper };
    }
    if probes.reader {
        probe_flow = probe_flow.max(reader);
    }
    if probes.locks > 0 {
        probe_flow = probe_flow.max(timeout);
    }
    let faults_end = s.sim.duration_ms.saturating_sub(s.faults.quiet_period_ms);
    let probes_done = 5.max(faults_end + 50) + probe_flow;
    // Reservations expire and are swept, then jobs and webhooks get settle_ms_max (polled
    // every 250 ms).
    let settle =
        shop.reservation_ttl_ms + 2 * shop.expiry_sweep_ms + 1_000 + shop.settle_ms_max + 250;
    // The runner's own shutdown and rounding: a little slack.
    s.sim.duration_ms.max(clients_done).max(probes_done) + settle + 100
}

/// The `[faults]` families a scenario may list (for the template's comment).
pub fn fault_family_names() -> String {
    family_names().join(", ")
}

/// Whether the plan schedules any fault (buggify is not scheduled).
pub fn schedules_faults(plan: &FaultPlan) -> bool {
    plan.families.iter().any(|f| *f != FaultFamily::Buggify)
}
