//! The shop's settings: deployment sizes, catalog, workload, costs and planted bugs. A scenario
//! file's `[shop]` table is this struct; every field has a unit in its name and a default.

use serde::{Deserialize, Serialize};
use shopsim_sim::db::server::DbServerConfig;
use shopsim_sim::db::Profile;
use shopsim_sim::input::{check_probability, InputError};

use crate::bugs::Bugs;

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
    /// Shoppers who also pay (checkout, then payment, webhook and return URL).
    pub payers: u32,
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
    /// Planted bugs to turn on (names from `model::bugs::NAMES`).
    pub bugs: Vec<String>,
    /// Database server costs and limits.
    pub db: DbServerConfig,
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
            payers: 0,
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
        for name in &self.bugs {
            bugs.enable(name)
                .map_err(|e| InputError::new("shop.bugs", name, e))?;
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
            "shop.webhook_duplicate_probability",
            self.webhook_duplicate_probability,
        )?;
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
