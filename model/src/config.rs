//! The shop's settings: deployment sizes, catalog, workload, costs and planted bugs. A scenario
//! file's `[shop]` table is this struct; every field has a unit in its name and a default.

use serde::{Deserialize, Serialize};
use shopsim_sim::db::client::LaravelVersion;
use shopsim_sim::db::server::DbServerConfig;
use shopsim_sim::db::Profile;
use shopsim_sim::input::{check_probability, InputError};

use crate::bugs::Bugs;

/// Progress goal: orders placed.
pub const PROGRESS_ORDERS_PLACED: &str = "orders placed";
/// Progress goal: payments succeeded.
pub const PROGRESS_PAYMENTS_SUCCEEDED: &str = "payments succeeded";
/// Progress goal: catalog reads answered.
pub const PROGRESS_READS_ANSWERED: &str = "catalog reads answered";
/// Progress goal: financial orders locked.
pub const PROGRESS_ORDERS_LOCKED: &str = "financial orders locked";

/// The isolation levels `shop.isolation_level` may name (`SET TRANSACTION ISOLATION LEVEL
/// ...`); empty keeps the database profile's default.
pub const ISOLATION_LEVELS: [&str; 5] = [
    "",
    "read uncommitted",
    "read committed",
    "repeatable read",
    "serializable",
];

/// The shop's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShopConfig {
    /// Database profile (`pg_rc`, `maria_rr`, ...).
    pub db_profile: String,
    /// Tenants.
    pub tenants: u32,
    /// Products per tenant.
    pub products_per_tenant: u32,
    /// Units in stock per product.
    pub stock_per_product: i64,
    /// Price per unit, cents.
    pub price_cents: i64,
    /// App nodes.
    pub app_nodes: u32,
    /// Request workers per app node (PHP-FPM children).
    pub workers_per_app: u32,
    /// Database connections per app node.
    pub db_pool_per_app: u32,
    /// How long a request waits for a pooled connection, ms.
    pub db_acquire_timeout_ms: u64,
    /// Database connection limit.
    pub db_max_connections: usize,
    /// Shoppers running the checkout flow (create cart, add items, convert).
    pub shoppers: u32,
    /// Items per cart.
    pub items_per_cart: u32,
    /// Largest quantity per item.
    pub quantity_max: i64,
    /// Probability that a shopper sends convert twice (a double click).
    pub double_convert_probability: f64,
    /// The second click of a double click comes up to this long after the first, ms (0: at
    /// once).
    pub double_convert_gap_ms_max: u64,
    /// Probability that a shopper adds one more item, from a second browser tab, while its
    /// convert is under way (the item must end in the order or be refused).
    pub add_during_convert_probability: f64,
    /// Shoppers who also pay (checkout, then payment, webhook and return URL).
    pub payers: u32,
    /// Probability that a payer sends the payment request twice at once (a double click).
    pub pay_double_click_probability: f64,
    /// How often a payer sends the payment request again after no answer or a 5xx.
    pub payer_retries: u32,
    /// Probability that a payer leaves the provider's page without paying (and still comes
    /// back to the shop's return URL).
    pub payment_abandon_probability: f64,
    /// Think time of a shopper between the last item and the convert, ms (lower end).
    pub convert_delay_ms_min: u64,
    /// Think time before the convert, ms (upper end).
    pub convert_delay_ms_max: u64,
    /// Adversarial clients: each belongs to a tenant and sends other tenants' ids (carts,
    /// orders, payments, financial orders, products) to every endpoint.
    pub adversaries: u32,
    /// Requests each adversary sends.
    pub adversary_requests: u32,
    /// Probability that the provider delivers a webhook twice.
    pub webhook_duplicate_probability: f64,
    /// Longest delay before the provider's first webhook, ms.
    pub webhook_delay_ms_max: u64,
    /// Clients reading the catalog (product pages and details).
    pub catalog_readers: u32,
    /// Reads per catalog reader.
    pub reads_per_reader: u32,
    /// Products per catalog page.
    pub page_size: i64,
    /// Whether catalog reads go to a read replica.
    pub replica: bool,
    /// Replication lag of each commit, ms (upper end; the lower end is 1 ms).
    pub replica_lag_ms_max: u64,
    /// Financial orders that admins race to lock and mutate.
    pub lockable_orders: u32,
    /// Mutation attempts per lockable order, racing its lock.
    pub mutations_per_order: u32,
    /// Lock attempts per lockable order (admins racing each other to lock it).
    pub lockers_per_order: u32,
    /// Shoppers, payers, readers and admins start within this window, ms.
    pub arrival_window_ms: u64,
    /// Reservation lifetime, ms.
    pub reservation_ttl_ms: u64,
    /// How often the worker releases expired reservations, ms.
    pub expiry_sweep_ms: u64,
    /// How often an idle worker polls the jobs table, ms.
    pub worker_poll_ms: u64,
    /// Client request deadline, ms (no answer by then is an unknown outcome).
    pub request_timeout_ms: u64,
    /// Deadline of calls to the payment provider, ms.
    pub provider_timeout_ms: u64,
    /// Payment provider API latency, ms.
    pub provider_latency_ms_min: u64,
    /// Payment provider API latency, ms.
    pub provider_latency_ms_max: u64,
    /// How long the cache keeps idempotency keys, ms.
    pub idempotency_ttl_ms: u64,
    /// App request overhead (framework boot, serialization), µs.
    pub app_overhead_us_min: u64,
    /// App request overhead, µs.
    pub app_overhead_us_max: u64,
    /// Cache operation cost, µs (at most).
    pub cache_cost_us_max: u64,
    /// p95 latency threshold of the checkout endpoints, ms.
    pub checkout_p95_ms: f64,
    /// p95 latency threshold of reads, ms.
    pub read_p95_ms: f64,
    /// p95 latency threshold of payment creation (it waits for the provider), ms.
    pub payment_p95_ms: f64,
    /// p95 latency threshold of the return URL (it asks the provider, then confirms), ms.
    pub return_p95_ms: f64,
    /// p95 latency threshold of webhook deliveries (a confirmation), ms.
    pub webhook_p95_ms: f64,
    /// p95 latency threshold of the financial-order lock and mutations, ms.
    pub admin_p95_ms: f64,
    /// The Laravel version whose `DB::transaction` retry rule the app has (`11.56`, `12.29`).
    pub laravel: LaravelVersion,
    /// Attempts of every `DB::transaction($callback, $attempts)` of the app.
    pub transaction_attempts: u32,
    /// The isolation level every transaction of the app sets for itself (`SET TRANSACTION
    /// ISOLATION LEVEL read committed` around each `DB::transaction`: `read committed`,
    /// `repeatable read`, ...); empty keeps the database profile's default.
    pub isolation_level: String,
    /// Whether a checkout's convert locks its products in product-id order (reservations
    /// sorted by product, then id) instead of the cart's reservation order. Two converts that
    /// lock the same products in opposite orders deadlock; one global order makes that cycle
    /// impossible (the fix for the deadlocks that outlast `transaction_attempts`).
    pub lock_products_in_id_order: bool,
    /// Attempts of a queued job before it is dead-lettered into `failed_jobs` (`--tries`).
    pub job_tries: u32,
    /// Delay before a failed job is tried again, doubling per attempt, ms (`--backoff`).
    pub job_backoff_ms: u64,
    /// After the workload and the reservation expiry, the run waits at most this long for
    /// queued jobs and webhook deliveries to settle before the final state is judged, ms.
    pub settle_ms_max: u64,
    /// Share of checkout flows that ran clear of faults and must end with an order or a domain
    /// rejection (out of stock, reservations expired), in 0..=1.
    pub checkout_completion_min: f64,
    /// Share of paying flows with an order, clear of faults, whose payment must end succeeded,
    /// in 0..=1.
    pub payment_completion_min: f64,
    /// The progress a run must make: the scenario's top-level `[progress]` table, copied here
    /// by `Scenario::system` (so not a field of `[shop]`).
    #[serde(skip)]
    pub progress: ProgressConfig,
    /// Planted bugs to turn on (names from `model::bugs::NAMES`).
    pub bugs: Vec<String>,
    /// Database server costs and limits.
    pub db: DbServerConfig,
}

/// The progress a run must make to count; a field left out requires at least 1 when the
/// workload has that kind of work, 0 otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProgressConfig {
    /// Orders placed (in the final state).
    pub orders_placed_min: Option<u64>,
    /// Payments that ended succeeded (in the final state).
    pub payments_succeeded_min: Option<u64>,
    /// Catalog reads answered 200.
    pub reads_answered_min: Option<u64>,
    /// Financial orders locked (in the final state).
    pub orders_locked_min: Option<u64>,
}

impl Default for ShopConfig {
    fn default() -> Self {
        ShopConfig {
            db_profile: "pg_rc".to_string(),
            tenants: 1,
            products_per_tenant: 5,
            stock_per_product: 10,
            price_cents: 1_000,
            app_nodes: 2,
            workers_per_app: 16,
            db_pool_per_app: 10,
            db_acquire_timeout_ms: 5_000,
            db_max_connections: 100,
            shoppers: 10,
            items_per_cart: 2,
            quantity_max: 2,
            double_convert_probability: 0.2,
            double_convert_gap_ms_max: 0,
            add_during_convert_probability: 0.0,
            payers: 0,
            pay_double_click_probability: 0.0,
            payer_retries: 0,
            payment_abandon_probability: 0.0,
            convert_delay_ms_min: 0,
            convert_delay_ms_max: 0,
            adversaries: 0,
            adversary_requests: 20,
            webhook_duplicate_probability: 0.3,
            webhook_delay_ms_max: 500,
            catalog_readers: 0,
            reads_per_reader: 10,
            page_size: 10,
            replica: false,
            replica_lag_ms_max: 50,
            lockable_orders: 0,
            mutations_per_order: 3,
            lockers_per_order: 1,
            arrival_window_ms: 1_000,
            reservation_ttl_ms: 5_000,
            expiry_sweep_ms: 1_000,
            worker_poll_ms: 1_000,
            request_timeout_ms: 10_000,
            provider_timeout_ms: 3_000,
            provider_latency_ms_min: 100,
            provider_latency_ms_max: 800,
            idempotency_ttl_ms: 86_400_000,
            app_overhead_us_min: 5_000,
            app_overhead_us_max: 15_000,
            cache_cost_us_max: 200,
            checkout_p95_ms: 2_000.0,
            read_p95_ms: 500.0,
            payment_p95_ms: 3_000.0,
            return_p95_ms: 3_000.0,
            webhook_p95_ms: 2_000.0,
            admin_p95_ms: 1_000.0,
            laravel: LaravelVersion::default(),
            transaction_attempts: 3,
            isolation_level: String::new(),
            lock_products_in_id_order: false,
            job_tries: 5,
            job_backoff_ms: 1_000,
            settle_ms_max: 60_000,
            checkout_completion_min: 0.0,
            payment_completion_min: 0.0,
            progress: ProgressConfig::default(),
            bugs: Vec::new(),
            db: DbServerConfig::default(),
        }
    }
}

impl ShopConfig {
    /// The database profile (validated).
    pub fn profile(&self) -> Profile {
        self.db_profile.parse().expect("validated profile")
    }

    /// The progress goals: each stated minimum, or 1 for each kind of work the workload has.
    pub fn progress_goals(&self) -> Vec<(&'static str, u64)> {
        let p = &self.progress;
        let derived = |stated: Option<u64>, has_work: bool| stated.unwrap_or(u64::from(has_work));
        let shoppers = self.shoppers + self.payers;
        vec![
            (
                PROGRESS_ORDERS_PLACED,
                derived(p.orders_placed_min, shoppers > 0),
            ),
            (
                PROGRESS_PAYMENTS_SUCCEEDED,
                derived(p.payments_succeeded_min, self.payers > 0),
            ),
            (
                PROGRESS_READS_ANSWERED,
                derived(
                    p.reads_answered_min,
                    self.catalog_readers > 0 && self.reads_per_reader > 0,
                ),
            ),
            (
                PROGRESS_ORDERS_LOCKED,
                derived(p.orders_locked_min, self.lockable_orders > 0),
            ),
        ]
    }

    /// The planted bugs (validated).
    pub fn bugs(&self) -> Bugs {
        let mut bugs = Bugs::default();
        for name in &self.bugs {
            bugs.enable(name).expect("validated bug name");
        }
        bugs
    }

    /// Checks every field, naming it and its value.
    pub fn validate(&self) -> Result<(), InputError> {
        self.db_profile.parse::<Profile>().map_err(|e| {
            InputError::new(
                "shop.db_profile",
                &self.db_profile,
                e.to_string().replace(
                    &format!("unknown database profile `{}` ", self.db_profile),
                    "must be a database profile ",
                ),
            )
        })?;
        let mut bugs = Bugs::default();
        for (i, name) in self.bugs.iter().enumerate() {
            bugs.enable(name)
                .map_err(|e| InputError::new("shop.bugs", name, e))?;
            // A repeated name says nothing new: it is a mistake (a scenario's bug given
            // again with --bug, an edited artifact), and an artifact would record it.
            if self.bugs[..i].contains(name) {
                return Err(InputError::new("shop.bugs", name, "no bug listed twice"));
            }
        }
        for (field, value) in [
            ("shop.tenants", self.tenants),
            ("shop.products_per_tenant", self.products_per_tenant),
            ("shop.app_nodes", self.app_nodes),
            ("shop.workers_per_app", self.workers_per_app),
            ("shop.db_pool_per_app", self.db_pool_per_app),
            ("shop.items_per_cart", self.items_per_cart),
        ] {
            if value == 0 {
                return Err(InputError::new(field, value, "must be at least 1"));
            }
        }
        if self.stock_per_product < 0 {
            return Err(InputError::new(
                "shop.stock_per_product",
                self.stock_per_product,
                "must not be negative",
            ));
        }
        if !(1..=100).contains(&self.page_size) {
            return Err(InputError::new(
                "shop.page_size",
                self.page_size,
                "must be in 1..=100",
            ));
        }
        if self.quantity_max < 1 {
            return Err(InputError::new(
                "shop.quantity_max",
                self.quantity_max,
                "must be at least 1",
            ));
        }
        check_probability(
            "shop.double_convert_probability",
            self.double_convert_probability,
        )?;
        check_probability(
            "shop.add_during_convert_probability",
            self.add_during_convert_probability,
        )?;
        check_probability(
            "shop.webhook_duplicate_probability",
            self.webhook_duplicate_probability,
        )?;
        for (field, p) in [
            (
                "shop.pay_double_click_probability",
                self.pay_double_click_probability,
            ),
            (
                "shop.payment_abandon_probability",
                self.payment_abandon_probability,
            ),
            ("shop.checkout_completion_min", self.checkout_completion_min),
            ("shop.payment_completion_min", self.payment_completion_min),
        ] {
            check_probability(field, p)?;
        }
        if !ISOLATION_LEVELS.contains(&self.isolation_level.as_str()) {
            return Err(InputError::new(
                "shop.isolation_level",
                &self.isolation_level,
                "must be one of read uncommitted, read committed, repeatable read, serializable (or empty)",
            ));
        }
        for (field, value) in [
            ("shop.transaction_attempts", self.transaction_attempts),
            ("shop.job_tries", self.job_tries),
        ] {
            if value == 0 {
                return Err(InputError::new(field, value, "must be at least 1"));
            }
        }
        for (field, value) in [
            ("shop.checkout_p95_ms", self.checkout_p95_ms),
            ("shop.read_p95_ms", self.read_p95_ms),
            ("shop.payment_p95_ms", self.payment_p95_ms),
            ("shop.return_p95_ms", self.return_p95_ms),
            ("shop.webhook_p95_ms", self.webhook_p95_ms),
            ("shop.admin_p95_ms", self.admin_p95_ms),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(InputError::new(
                    field,
                    value,
                    "must be a positive number of ms",
                ));
            }
        }
        for (field, min, max) in [
            (
                "shop.provider_latency_ms_max",
                self.provider_latency_ms_min,
                self.provider_latency_ms_max,
            ),
            (
                "shop.app_overhead_us_max",
                self.app_overhead_us_min,
                self.app_overhead_us_max,
            ),
            (
                "shop.convert_delay_ms_max",
                self.convert_delay_ms_min,
                self.convert_delay_ms_max,
            ),
        ] {
            if min > max {
                return Err(InputError::new(
                    field,
                    max,
                    format!("must be at least the minimum ({min})"),
                ));
            }
        }
        for (field, value) in [
            ("shop.reservation_ttl_ms", self.reservation_ttl_ms),
            ("shop.expiry_sweep_ms", self.expiry_sweep_ms),
            ("shop.worker_poll_ms", self.worker_poll_ms),
            ("shop.request_timeout_ms", self.request_timeout_ms),
            ("shop.provider_timeout_ms", self.provider_timeout_ms),
            ("shop.app_overhead_us_min", self.app_overhead_us_min),
            ("shop.replica_lag_ms_max", self.replica_lag_ms_max),
            ("shop.job_backoff_ms", self.job_backoff_ms),
        ] {
            if value == 0 {
                return Err(InputError::new(field, value, "must be greater than 0"));
            }
        }
        self.db
            .validate()
            .map_err(|message| InputError::new("shop.db", "…", message))?;
        Ok(())
    }
}
