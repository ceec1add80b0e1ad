//! The shop as a system under test: the deployment (one node per process), the seeded catalog,
//! the workload of shoppers, payers and admins, and the final state the audits judge.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shopsim_sim::check::{
    Checker, LatencySla, Liveness, NoRpcInTransaction, Progress, ProgressGoal,
};
use shopsim_sim::db::server::{self as db_server, DbNodeState};
use shopsim_sim::db::{Database, DbConfig, Value};
use shopsim_sim::runner::{LocalBoxFuture, NodeRole, SimConfig, System, World};

use crate::config::ShopConfig;
use crate::provider::{Capture, ProviderLedger, SharedLedger};
use crate::workload::{self, client_node, IdBoard, SharedBoard};
use crate::{app, audit, cache, provider, queue, schema};

/// Categories each tenant's catalog has.
pub const CATEGORIES_PER_TENANT: usize = 3;

/// Where the services listen.
#[derive(Debug, Clone)]
pub struct Addrs {
    /// The primary database.
    pub db: SocketAddr,
    /// The cache.
    pub cache: SocketAddr,
    /// The payment provider.
    pub provider: SocketAddr,
    /// The app nodes.
    pub apps: Vec<SocketAddr>,
    /// The read replica, if the deployment has one.
    pub replica: Option<SocketAddr>,
}

impl Addrs {
    /// The databases listen on `db_port` (`[shop.db] port`), the other services on theirs.
    fn new(app_nodes: u32, replica: bool, db_port: u16) -> Addrs {
        let ip = |s: String| -> IpAddr { s.parse().expect("valid ip") };
        Addrs {
            db: SocketAddr::new(ip("10.0.0.10".into()), db_port),
            cache: SocketAddr::new(ip("10.0.0.11".into()), cache::PORT),
            provider: SocketAddr::new(ip("10.0.0.12".into()), provider::PORT),
            apps: (0..app_nodes)
                .map(|i| SocketAddr::new(ip(format!("10.0.1.{}", i + 1)), app::PORT))
                .collect(),
            replica: replica.then(|| SocketAddr::new(ip("10.0.0.13".into()), db_port)),
        }
    }
}

/// The name of the app node at `index` of [`Addrs::apps`]: `app-1`, `app-2`, ...
pub fn app_name(index: usize) -> String {
    format!("app-{}", index + 1)
}

/// The committed tables after a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShopState {
    /// Table name -> (columns, rows in primary key order).
    pub tables: BTreeMap<String, (Vec<String>, Vec<Vec<Value>>)>,
    /// Stock each product started with, by product id.
    pub initial_stock: BTreeMap<i64, i64>,
    /// Deadlocks the database detected.
    pub deadlocks: u64,
    /// Commits in the database's commit log, and its hash (so the trace hash covers the
    /// order of every commit, not only the final tables).
    pub commit_log: (usize, u64),
    /// Every capture the payment provider made, from its own records.
    pub captures: Vec<Capture>,
    /// Webhook deliveries the provider had not had acknowledged when the run ended.
    pub webhooks_unacknowledged: u64,
    /// Whether the queue and the provider's deliveries settled before `settle_ms_max`.
    pub settled: bool,
    /// The committed changes of the tables whose history checks replay ([`HISTORY_TABLES`]),
    /// in commit order with their commit times. Not hashed again: the commit log's hash
    /// covers them.
    #[serde(skip)]
    pub row_history: BTreeMap<String, Vec<RowChange>>,
}

/// How long after a commit the replica looks at the primary's log, ms: with its largest lag,
/// the staleness bound of the catalog.
pub const REPLICA_POLL_MS: u64 = 5;

/// The tables whose every committed change [`ShopState::row_history`] keeps.
pub const HISTORY_TABLES: [&str; 6] = [
    "products",
    "reservations",
    "payments",
    "jobs",
    "carts",
    "orders",
];

/// One committed change of a row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowChange {
    /// When it committed, µs of virtual time (0 for the seed data).
    pub at_us: u64,
    /// Its commit's position in the commit log.
    pub commit: usize,
    /// The row's id (its primary key).
    pub id: i64,
    /// The row as committed (in the table's column order), or `None` if deleted.
    pub row: Option<Vec<Value>>,
}

impl ShopState {
    /// The position of `column` in `table`'s rows.
    pub fn column(&self, table: &str, column: &str) -> Option<usize> {
        self.tables.get(table)?.0.iter().position(|c| c == column)
    }

    /// The committed changes of `table` (one of [`HISTORY_TABLES`]), in commit order.
    pub fn changes(&self, table: &str) -> &[RowChange] {
        self.row_history.get(table).map_or(&[], Vec::as_slice)
    }

    /// The rows of `table` as maps from column name to value.
    pub fn rows(&self, table: &str) -> Vec<BTreeMap<&str, &Value>> {
        let Some((columns, rows)) = self.tables.get(table) else {
            return Vec::new();
        };
        rows.iter()
            .map(|r| columns.iter().map(String::as_str).zip(r.iter()).collect())
            .collect()
    }
}

/// The shop system.
#[derive(Debug, Clone)]
pub struct Shop {
    /// The scenario's name.
    pub name: String,
    /// Settings.
    pub config: Arc<ShopConfig>,
    /// The database as seeding leaves it, made by the first run and cloned by every later one.
    seeded: Arc<OnceLock<SeededDatabase>>,
}

impl Shop {
    /// A shop; `config` must be valid.
    pub fn new(name: &str, config: ShopConfig) -> Shop {
        assert!(config.validate().is_ok(), "{:?}", config.validate());
        Shop {
            name: name.to_string(),
            config: Arc::new(config),
            seeded: Arc::new(OnceLock::new()),
        }
    }
}

/// The database right after [`seed_database`], for the configuration it was seeded from.
///
/// Seeding is a pure function of the configuration: it runs setup statements only, draws
/// nothing from the seed and reads no clock. So a clone of the seeded database is the state
/// seeding would produce again, and runs that start from clones keep their trace hashes.
struct SeededDatabase {
    /// The configuration seeded from; a run with another one seeds afresh.
    config: Arc<ShopConfig>,
    /// The database after seeding.
    db: Database,
    /// The stock of each product after seeding, by product id.
    initial_stock: BTreeMap<i64, i64>,
}

impl std::fmt::Debug for SeededDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The tables are large and say nothing the configuration does not.
        f.debug_struct("SeededDatabase")
            .field("products", &self.initial_stock.len())
            .finish_non_exhaustive()
    }
}

impl SeededDatabase {
    /// Seeds a fresh database for `config`.
    fn new(config: &Arc<ShopConfig>) -> SeededDatabase {
        // A bare engine, not a node state: a node state would open a transcript of its own.
        let mut db = Database::new(config.profile(), db_engine_config());
        let initial_stock = seed_database(config, &mut db);
        SeededDatabase {
            config: config.clone(),
            db,
            initial_stock,
        }
    }

    /// Puts a clone of the seeded database into `state`, a node state fresh from
    /// [`DbNodeState::new`] with the same profile and settings.
    fn seed(&self, config: &Arc<ShopConfig>, state: &DbNodeState) -> BTreeMap<i64, i64> {
        assert!(Arc::ptr_eq(&self.config, config));
        state.with_database(|db| {
            // A fresh node has run nothing: nothing of its own is lost by the replacement.
            assert_eq!(db.commit_log().len(), 0);
            *db = self.db.clone();
        });
        self.initial_stock.clone()
    }
}

/// The history kinds of the checkout flow (the latency class "checkout").
pub const CHECKOUT_KINDS: [&str; 3] = [
    "POST /api/v1/cart",
    "POST /api/v1/cart/{id}/items",
    "POST /api/v1/cart/{id}/convert",
];

/// The history kinds of catalog reads (the latency class "reads" of the seed's SLA). The
/// return URL is not among them: it waits for the payment provider.
pub const READ_KINDS: [&str; 2] = ["GET /api/v1/products", "GET /api/v1/products/{id}"];

/// Creating a payment (it calls the provider).
pub const PAYMENT_KINDS: [&str; 1] = ["POST /api/v1/orders/{id}/payments"];

/// The customer's return from the provider's page (it asks the provider, then confirms).
pub const RETURN_KINDS: [&str; 1] = ["GET /api/v1/payments/{id}/return"];

/// The provider's webhook deliveries (a confirmation each).
pub const WEBHOOK_KINDS: [&str; 1] = ["POST /api/v1/webhooks/payments"];

/// The admins' financial-order lock and mutations.
pub const ADMIN_KINDS: [&str; 2] = [
    "POST /api/v1/financial-orders/{id}/lock",
    "PATCH /api/v1/financial-orders/{id}",
];

impl Shop {
    /// One latency class per group of endpoints, every endpoint in one: (check name, kinds,
    /// p95 threshold in ms).
    pub fn latency_classes(&self) -> Vec<(&'static str, &'static [&'static str], f64)> {
        let c = &self.config;
        vec![
            (
                "latency_sla_checkout",
                &CHECKOUT_KINDS[..],
                c.checkout_p95_ms,
            ),
            ("latency_sla_reads", &READ_KINDS[..], c.read_p95_ms),
            ("latency_sla_payment", &PAYMENT_KINDS[..], c.payment_p95_ms),
            ("latency_sla_return", &RETURN_KINDS[..], c.return_p95_ms),
            ("latency_sla_webhook", &WEBHOOK_KINDS[..], c.webhook_p95_ms),
            ("latency_sla_admin", &ADMIN_KINDS[..], c.admin_p95_ms),
        ]
    }
}

impl System for Shop {
    type State = ShopState;

    fn name(&self) -> String {
        self.name.clone()
    }

    fn run(&self, world: World) -> LocalBoxFuture<ShopState> {
        let config = self.config.clone();
        let seeded = self.seeded.clone();
        Box::pin(async move { run_shop(config, seeded, world).await })
    }

    fn windows(&self) -> &'static [shopsim_sim::coverage::Window] {
        crate::windows::ALL
    }

    /// Safety first (money, stock, tenancy, exactly-once, freshness), then what a run must
    /// achieve (completion, progress), then latency and liveness: the first that fails is the
    /// run's primary failure.
    fn checkers(&self, sim: &SimConfig) -> Vec<Box<dyn Checker<ShopState>>> {
        let mut checks = audit::all(&self.config);
        checks.push(Box::new(NoRpcInTransaction));
        checks.push(Box::new(audit::FlowsComplete::new(&self.config)));
        let goals = self
            .config
            .progress_goals()
            .into_iter()
            .filter(|(_, min)| *min > 0)
            .map(|(name, min)| ProgressGoal {
                name: name.to_string(),
                min,
            })
            .collect();
        checks.push(Box::new(Progress {
            goals,
            measure: Box::new(audit::progress_made),
        }));
        let classes = self.latency_classes();
        checks.push(Box::new(audit::EveryEndpointHasALatencyClass::new(
            &classes,
        )));
        for (name, kinds, threshold_ms) in classes {
            checks.push(Box::new(LatencySla {
                name: name.to_string(),
                kinds: kinds.iter().map(|s| s.to_string()).collect(),
                percentile: 95.0,
                threshold_ms,
            }));
        }
        checks.push(Box::new(Liveness {
            faults_end_us: sim.faults_end().as_micros() as u64,
        }));
        checks
    }

    /// Each database profile draws its own interleavings, latencies and faults from a seed,
    /// so `pg_rc` and `maria_rr` of one seed are two samples, not one run twice.
    fn runtime_seed(&self, seed: u64) -> u64 {
        let mut hasher = shopsim_sim::trace::TraceHasher::default();
        hasher.write_value(&self.config.db_profile);
        seed ^ hasher.finish()
    }
}

fn seed_database(config: &ShopConfig, db: &mut Database) -> BTreeMap<i64, i64> {
    let engine = config.profile().engine();
    let bugs = config.bugs();
    let mut initial = BTreeMap::new();
    for statement in schema::statements(engine, &bugs) {
        db.execute_setup(&statement, &[])
            .expect("the schema applies");
    }
    let insert = schema::dialect(engine, "insert into products (tenant_id, sku, name, category_id, price, stock) values (?, ?, ?, ?, ?, ?)");
    let category = schema::dialect(
        engine,
        "insert into categories (tenant_id, name) values (?, ?)",
    );
    let mut id = 0;
    for tenant in 1..=i64::from(config.tenants) {
        // Every tenant has the same category and product names, so a leak is visible only
        // through ids and tenant ids.
        let mut categories = Vec::new();
        for c in 0..CATEGORIES_PER_TENANT {
            let r = db
                .execute_setup(
                    &category,
                    &[Value::Int(tenant), Value::Text(format!("Category {c}"))],
                )
                .expect("category insert");
            categories.push(r.last_insert_id.expect("category id"));
        }
        for p in 0..config.products_per_tenant {
            let category_id = categories[p as usize % categories.len()];
            db.execute_setup(
                &insert,
                &[
                    Value::Int(tenant),
                    Value::Text(format!("SKU-{p}")),
                    Value::Text(format!("Product {p}")),
                    Value::Int(category_id),
                    Value::Int(config.price_cents),
                    Value::Int(config.stock_per_product),
                ],
            )
            .expect("products insert");
            id += 1;
            initial.insert(id, config.stock_per_product);
        }
    }
    // Financial orders for the order-lock race, each of its own order.
    let order = schema::dialect(
        engine,
        "insert into orders (tenant_id, cart_id, total, status) values (?, ?, ?, 'placed')",
    );
    let fo = schema::dialect(engine, "insert into financial_orders (tenant_id, order_id, status, total, paid) values (?, ?, 'draft', ?, 0)");
    for i in 0..i64::from(config.lockable_orders) {
        let tenant = 1 + i % i64::from(config.tenants);
        // Negative cart ids keep these orders apart from the shoppers' carts.
        let r = db
            .execute_setup(
                &order,
                &[Value::Int(tenant), Value::Int(-(i + 1)), Value::Int(10_000)],
            )
            .expect("order insert");
        let order_id = r.last_insert_id.expect("order id");
        db.execute_setup(
            &fo,
            &[Value::Int(tenant), Value::Int(order_id), Value::Int(10_000)],
        )
        .expect("financial order insert");
    }
    initial
}

/// The database settings of the primary and the replica: engine defaults, plus the row audit
/// on `tenant_id` that lets `no_cross_tenant` see every row a statement touched.
fn db_engine_config() -> DbConfig {
    DbConfig {
        row_owner_column: Some("tenant_id".to_string()),
        ..DbConfig::default()
    }
}

async fn run_shop(
    config: Arc<ShopConfig>,
    seeded: Arc<OnceLock<SeededDatabase>>,
    world: World,
) -> ShopState {
    let handle = world.handle();
    let addrs = Addrs::new(config.app_nodes, config.replica, config.db.port);
    // Seeding once per configuration, not once per run: the clone is the same state.
    let mut seeded = seeded.get_or_init(|| SeededDatabase::new(&config));
    let seeded_here;
    if !Arc::ptr_eq(&seeded.config, &config) {
        seeded_here = SeededDatabase::new(&config);
        seeded = &seeded_here;
    }
    let db_state = DbNodeState::new(config.profile(), db_engine_config());
    let initial_stock = seeded.seed(&config, &db_state);
    let db_config = db_server::DbServerConfig {
        max_connections: config.db_max_connections,
        ..config.db.clone()
    };
    let serve_state = db_state.clone();
    let db_node = handle
        .create_node()
        .name("db")
        .ip(addrs.db.ip())
        .init(move || db_server::serve(serve_state.clone(), db_config.clone()))
        .build();
    world.register(&db_node, "db", NodeRole::SERVER);
    if let Some(replica_addr) = addrs.replica {
        // The replica starts from the same data and follows the primary's commit log.
        let replica_state = DbNodeState::new(config.profile(), db_engine_config());
        seeded.seed(&config, &replica_state);
        let replica = shopsim_sim::db::replica::DbReplica::new(db_state.clone(), replica_state);
        let replica_config = shopsim_sim::db::replica::DbReplicaConfig {
            server: db_server::DbServerConfig {
                max_connections: config.db_max_connections,
                ..config.db.clone()
            },
            lag_ms_min: 1,
            lag_ms_max: config.replica_lag_ms_max.max(2),
            // The lag is drawn per commit; looking for new commits every 5 ms keeps that
            // resolution without waking the replica every millisecond.
            poll_interval_ms: REPLICA_POLL_MS,
        };
        let replica_node = handle
            .create_node()
            .name("replica")
            .ip(replica_addr.ip())
            .init(move || {
                shopsim_sim::db::replica::serve_replica(replica.clone(), replica_config.clone())
            })
            .build();
        world.register(&replica_node, "replica", NodeRole::SERVER);
    }
    let cache_cost = config.cache_cost_us_max;
    let cache_node = handle
        .create_node()
        .name("cache")
        .ip(addrs.cache.ip())
        .init(move || cache::serve(cache_cost))
        .build();
    world.register(&cache_node, "cache", NodeRole::SERVER);
    let provider_config = provider::ProviderConfig {
        apps: addrs.apps.clone(),
        latency_ms_min: config.provider_latency_ms_min,
        latency_ms_max: config.provider_latency_ms_max,
        webhook_delay_ms_max: config.webhook_delay_ms_max,
        duplicate_probability: config.webhook_duplicate_probability,
    };
    // The provider's records outlive its node: the checks judge the shop against them.
    let ledger: SharedLedger = Arc::new(std::sync::Mutex::new(ProviderLedger::default()));
    let (provider_ledger, provider_recorder) = (ledger.clone(), world.recorder());
    let provider_node = handle
        .create_node()
        .name("provider")
        .ip(addrs.provider.ip())
        .init(move || {
            provider::serve(
                provider_config.clone(),
                provider_ledger.clone(),
                provider_recorder.clone(),
            )
        })
        .build();
    // The provider is someone else's service: network faults reach it, crashes do not.
    world.register(&provider_node, "provider", NodeRole::CLIENT);
    for (i, addr) in addrs.apps.iter().enumerate() {
        let (c, a) = (config.clone(), addrs.clone());
        let name = app_name(i);
        let node = handle
            .create_node()
            .name(name.clone())
            .ip(addr.ip())
            .init({
                let name = name.clone();
                move || app::serve(c.clone(), a.clone(), name.clone())
            })
            .build();
        world.register(&node, &name, NodeRole::SERVER);
    }
    let (c, a, r) = (config.clone(), addrs.clone(), world.recorder());
    let worker = handle
        .create_node()
        .name("worker")
        .ip("10.0.2.1".parse().expect("ip"))
        .init(move || queue::run(c.clone(), a.clone(), r.clone()))
        .build();
    world.register(&worker, "worker", NodeRole::SERVER);
    // Let the servers bind before the first request.
    madsim::time::sleep(Duration::from_millis(5)).await;
    world.start_nemesis();
    run_clients(&world, &addrs, &config).await;
    settle_and_collect(&world, &config, &db_state, &ledger, initial_stock).await
}

/// Starts every client (one node each) and waits until all of them are done.
async fn run_clients(world: &World, addrs: &Addrs, config: &Arc<ShopConfig>) {
    let board: SharedBoard = Arc::new(std::sync::Mutex::new(IdBoard::default()));
    workload::publish_seed_objects(&board, config);
    let mut tasks = Vec::new();
    let client_ip = |n: usize| -> IpAddr {
        format!("10.1.{}.{}", n / 250, n % 250 + 1)
            .parse()
            .expect("ip")
    };
    let mut n = 0;
    for i in 0..(config.shoppers + config.payers) {
        let pays = i >= config.shoppers;
        let process = if pays {
            format!("payer-{}", i - config.shoppers)
        } else {
            format!("shopper-{i}")
        };
        let (node, client) = client_node(world, addrs, config, process, client_ip(n));
        n += 1;
        let (config, board) = (config.clone(), board.clone());
        tasks.push(node.spawn(async move {
            let tenant = workload::arrive(&config).await;
            let abandon = config.payment_abandon_probability;
            workload::checkout_flow(&client, &config, &board, tenant, pays, abandon).await;
        }));
    }
    for i in 0..config.catalog_readers {
        let process = format!("reader-{i}");
        let (node, client) = client_node(world, addrs, config, process, client_ip(n));
        n += 1;
        let config = config.clone();
        tasks.push(node.spawn(async move {
            let tenant = workload::arrive(&config).await;
            workload::read_flow(&client, &config, tenant).await;
        }));
    }
    for i in 0..config.lockable_orders {
        let fo_id = i64::from(i) + 1;
        let tenant = 1 + i64::from(i) % i64::from(config.tenants);
        // Admins 0..lockers lock the order; the others mutate it (admin-{i}-0 is the first
        // locker and admins lockers.. mutate, numbered from 1 in their totals).
        let lockers = config.lockers_per_order;
        for m in 0..lockers.saturating_add(config.mutations_per_order) {
            let process = format!("admin-{i}-{m}");
            let (node, client) = client_node(world, addrs, config, process, client_ip(n));
            n += 1;
            let config = config.clone();
            tasks.push(node.spawn(async move {
                workload::admin_flow(&client, &config, fo_id, tenant, m, lockers).await;
            }));
        }
    }
    // After the faults heal, the shop must still make progress (TigerBeetle's VOPR checks
    // the same in its liveness mode): one more checkout (paying, if the workload pays), one
    // more reader, and one more lock request per lockable order, each after the faults end.
    let heal = world.faults_end() + Duration::from_millis(50);
    let mut probes: Vec<(String, workload::Probe)> = Vec::new();
    if config.shoppers + config.payers > 0 {
        let name = if config.payers > 0 {
            "probe-payer"
        } else {
            "probe-shopper"
        };
        probes.push((name.to_string(), workload::Probe::Checkout));
    }
    if config.catalog_readers > 0 && config.reads_per_reader > 0 {
        probes.push(("probe-reader".to_string(), workload::Probe::Read));
    }
    for i in 0..config.lockable_orders {
        probes.push((
            format!("probe-admin-{i}"),
            workload::Probe::Lock(i64::from(i) + 1),
        ));
    }
    for (process, probe) in probes {
        let (node, client) = client_node(world, addrs, config, process, client_ip(n));
        n += 1;
        let (config, board) = (config.clone(), board.clone());
        tasks.push(node.spawn(async move {
            let now = shopsim_sim::trace::virtual_now();
            madsim::time::sleep(heal.saturating_sub(now)).await;
            workload::probe_flow(&client, &config, &board, probe).await;
        }));
    }
    for i in 0..config.adversaries {
        let process = format!("adversary-{i}");
        let (node, client) = client_node(world, addrs, config, process, client_ip(n));
        n += 1;
        let (config, board) = (config.clone(), board.clone());
        tasks.push(node.spawn(async move {
            let tenant = workload::arrive(&config).await;
            workload::adversary_flow(&client, &config, &board, tenant).await;
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Waits out the run, then long enough for every reservation to expire and be released, then
/// (at most `settle_ms_max`) until no job is queued and every webhook was acknowledged; then
/// reads the final state.
async fn settle_and_collect(
    world: &World,
    config: &ShopConfig,
    db_state: &Arc<DbNodeState>,
    ledger: &SharedLedger,
    initial_stock: BTreeMap<i64, i64>,
) -> ShopState {
    let now = shopsim_sim::trace::virtual_now();
    let end = world.duration().max(now);
    let settle =
        Duration::from_millis(config.reservation_ttl_ms + 2 * config.expiry_sweep_ms + 1_000);
    madsim::time::sleep(end - now + settle).await;
    let deadline = shopsim_sim::trace::virtual_now() + Duration::from_millis(config.settle_ms_max);
    let settled = loop {
        let jobs = db_state.table_rows("jobs").map_or(0, |rows| rows.len());
        let pending = ledger.lock().expect("provider ledger").deliveries_pending;
        if jobs == 0 && pending == 0 {
            break true;
        }
        if shopsim_sim::trace::virtual_now() >= deadline {
            break false;
        }
        madsim::time::sleep(Duration::from_millis(250)).await;
    };
    let mut tables = BTreeMap::new();
    for table in [
        "products",
        "carts",
        "reservations",
        "orders",
        "financial_orders",
        "payments",
        "ledger_transactions",
        "receipts",
        "audit_log",
        "idempotency_keys",
        "jobs",
        "failed_jobs",
    ] {
        let columns = db_state
            .with_database(|db| db.table_columns(table))
            .unwrap_or_default();
        let rows = db_state.table_rows(table).unwrap_or_default();
        tables.insert(table.to_string(), (columns, rows));
    }
    let deadlocks = db_state.with_database(|db| db.stats().deadlocks);
    let log = db_state.commit_log();
    let times = db_state.commit_times_us();
    let mut hasher = shopsim_sim::trace::TraceHasher::default();
    let mut row_history: BTreeMap<String, Vec<RowChange>> = BTreeMap::new();
    for (commit, record) in log.iter().enumerate() {
        hasher.write_value(record);
        for write in &record.writes {
            if !HISTORY_TABLES.contains(&write.table.as_str()) {
                continue;
            }
            let id = write
                .key
                .first()
                .and_then(Value::as_int)
                .expect("integer ids");
            row_history
                .entry(write.table.clone())
                .or_default()
                .push(RowChange {
                    at_us: times[commit],
                    commit,
                    id,
                    row: write.row.clone(),
                });
        }
    }
    let ledger = ledger.lock().expect("provider ledger");
    ShopState {
        tables,
        initial_stock,
        deadlocks,
        commit_log: (log.len(), hasher.finish()),
        captures: ledger.captures.clone(),
        webhooks_unacknowledged: ledger.deliveries_pending,
        settled,
        row_history,
    }
}
