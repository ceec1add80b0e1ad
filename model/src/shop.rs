//! The shop as a system under test: the deployment (one node per process), the seeded catalog,
//! the workload of shoppers, payers and admins, and the final state the audits judge.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use madsim::rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use shopsim_sim::check::{Checker, LatencySla, Liveness};
use shopsim_sim::db::server::{self as db_server, DbNodeState};
use shopsim_sim::db::{DbConfig, Value};
use shopsim_sim::history::{OpOutcome, Recorder};
use shopsim_sim::net::{self, RpcOutcome};
use shopsim_sim::runner::{LocalBoxFuture, NodeRole, SimConfig, System, World};

use crate::config::ShopConfig;
use crate::http::{route, HttpRequest, HttpResponse};
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
}

impl ShopState {
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
}

impl Shop {
    /// A shop; `config` must be valid.
    pub fn new(name: &str, config: ShopConfig) -> Shop {
        assert!(config.validate().is_ok(), "{:?}", config.validate());
        Shop {
            name: name.to_string(),
            config: Arc::new(config),
        }
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

impl System for Shop {
    type State = ShopState;

    fn name(&self) -> String {
        self.name.clone()
    }

    fn run(&self, world: World) -> LocalBoxFuture<ShopState> {
        let config = self.config.clone();
        Box::pin(async move { run_shop(config, world).await })
    }

    fn windows(&self) -> &'static [shopsim_sim::coverage::Window] {
        crate::windows::ALL
    }

    fn checkers(&self, sim: &SimConfig) -> Vec<Box<dyn Checker<ShopState>>> {
        let mut checks = audit::all();
        checks.push(Box::new(LatencySla {
            name: "latency_sla_checkout".to_string(),
            kinds: CHECKOUT_KINDS.iter().map(|s| s.to_string()).collect(),
            percentile: 95.0,
            threshold_ms: self.config.checkout_p95_ms,
        }));
        checks.push(Box::new(LatencySla {
            name: "latency_sla_reads".to_string(),
            kinds: READ_KINDS.iter().map(|s| s.to_string()).collect(),
            percentile: 95.0,
            threshold_ms: self.config.read_p95_ms,
        }));
        checks.push(Box::new(Liveness {
            faults_end_us: sim.faults_end().as_micros() as u64,
        }));
        checks
    }
}

fn seed_database(config: &ShopConfig, state: &DbNodeState) -> BTreeMap<i64, i64> {
    let engine = config.profile().engine();
    let bugs = config.bugs();
    let mut initial = BTreeMap::new();
    state.with_database(|db| {
        for statement in schema::statements(engine, &bugs) {
            db.execute_setup(&statement, &[]).expect("the schema applies");
        }
        let insert = schema::dialect(engine, "insert into products (tenant_id, sku, name, category_id, price, stock) values (?, ?, ?, ?, ?, ?)");
        let category = schema::dialect(engine, "insert into categories (tenant_id, name) values (?, ?)");
        let mut id = 0;
        for tenant in 1..=i64::from(config.tenants) {
            // Every tenant has the same category and product names, so a leak is visible only
            // through ids and tenant ids.
            let mut categories = Vec::new();
            for c in 0..CATEGORIES_PER_TENANT {
                let r = db.execute_setup(&category, &[Value::Int(tenant), Value::Text(format!("Category {c}"))]).expect("category insert");
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
        let order = schema::dialect(engine, "insert into orders (tenant_id, cart_id, total, status) values (?, ?, ?, 'placed')");
        let fo = schema::dialect(engine, "insert into financial_orders (tenant_id, order_id, status, total, paid) values (?, ?, 'draft', ?, 0)");
        for i in 0..i64::from(config.lockable_orders) {
            let tenant = 1 + i % i64::from(config.tenants);
            // Negative cart ids keep these orders apart from the shoppers' carts.
            let r = db.execute_setup(&order, &[Value::Int(tenant), Value::Int(-(i + 1)), Value::Int(10_000)]).expect("order insert");
            let order_id = r.last_insert_id.expect("order id");
            db.execute_setup(&fo, &[Value::Int(tenant), Value::Int(order_id), Value::Int(10_000)]).expect("financial order insert");
        }
    });
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

async fn run_shop(config: Arc<ShopConfig>, world: World) -> ShopState {
    let handle = world.handle();
    let addrs = Addrs::new(config.app_nodes, config.replica, config.db.port);
    let db_state = DbNodeState::new(config.profile(), db_engine_config());
    let initial_stock = seed_database(&config, &db_state);
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
        seed_database(&config, &replica_state);
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
            poll_interval_ms: 5,
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
    let provider_node = handle
        .create_node()
        .name("provider")
        .ip(addrs.provider.ip())
        .init(move || provider::serve(provider_config.clone()))
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

    let mut tasks = Vec::new();
    let client_ip = |n: usize| -> IpAddr {
        format!("10.1.{}.{}", n / 250, n % 250 + 1)
            .parse()
            .expect("ip")
    };
    let mut n = 0;
    let products = i64::from(config.products_per_tenant);
    for i in 0..(config.shoppers + config.payers) {
        let pays = i >= config.shoppers;
        let process = if pays {
            format!("payer-{}", i - config.shoppers)
        } else {
            format!("shopper-{i}")
        };
        let (node, client) = client_node(&world, &addrs, &config, process, client_ip(n));
        n += 1;
        let config = config.clone();
        tasks.push(node.spawn(async move {
            let tenant = arrive(&config).await;
            checkout_flow(&client, &config, tenant, products, pays).await;
        }));
    }
    for i in 0..config.catalog_readers {
        let process = format!("reader-{i}");
        let (node, client) = client_node(&world, &addrs, &config, process, client_ip(n));
        n += 1;
        let config = config.clone();
        tasks.push(node.spawn(async move {
            let tenant = arrive(&config).await;
            read_flow(&client, &config, tenant, products).await;
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
            let (node, client) = client_node(&world, &addrs, &config, process, client_ip(n));
            n += 1;
            let window = config.arrival_window_ms;
            tasks.push(node.spawn(async move {
                let start = madsim::rand::thread_rng().gen_range(0..=window);
                madsim::time::sleep(Duration::from_millis(start)).await;
                let path = format!("/api/v1/financial-orders/{fo_id}");
                if m < lockers {
                    client
                        .request("POST", &format!("{path}/lock"), tenant, json!({}))
                        .await;
                } else {
                    let mutation = i64::from(m - lockers + 1);
                    client
                        .request("PATCH", &path, tenant, json!({"total": 10_000 + mutation}))
                        .await;
                }
            }));
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    // The workload ran; wait out the run, then long enough for every reservation to expire
    // and be released, so that the final state is settled.
    let now = shopsim_sim::trace::virtual_now();
    let end = world.duration().max(now);
    let settle =
        Duration::from_millis(config.reservation_ttl_ms + 2 * config.expiry_sweep_ms + 1_000);
    madsim::time::sleep(end - now + settle).await;
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
    ] {
        let columns = db_state
            .with_database(|db| db.table_columns(table))
            .unwrap_or_default();
        let rows = db_state.table_rows(table).unwrap_or_default();
        tables.insert(table.to_string(), (columns, rows));
    }
    let deadlocks = db_state.with_database(|db| db.stats().deadlocks);
    let log = db_state.commit_log();
    let mut hasher = shopsim_sim::trace::TraceHasher::default();
    for record in &log {
        hasher.write_json(record);
    }
    ShopState {
        tables,
        initial_stock,
        deadlocks,
        commit_log: (log.len(), hasher.finish()),
    }
}

/// A client node (registered for network faults) and the HTTP client that runs on it.
fn client_node(
    world: &World,
    addrs: &Addrs,
    config: &ShopConfig,
    process: String,
    ip: IpAddr,
) -> (madsim::runtime::NodeHandle, Client) {
    let node = world
        .handle()
        .create_node()
        .name(process.clone())
        .ip(ip)
        .build();
    world.register(&node, &process, NodeRole::CLIENT);
    let client = Client::new(process, world.recorder(), addrs.apps.clone(), config);
    (node, client)
}

/// A shopper's or admin's HTTP client: picks an app node per request (the load balancer) and
/// records every request in the history.
pub struct Client {
    process: String,
    recorder: Recorder,
    apps: Vec<SocketAddr>,
    timeout: Duration,
}

impl Client {
    fn new(
        process: String,
        recorder: Recorder,
        apps: Vec<SocketAddr>,
        config: &ShopConfig,
    ) -> Client {
        Client {
            process,
            recorder,
            apps,
            timeout: Duration::from_millis(config.request_timeout_ms),
        }
    }

    /// Sends a request and records it; `None` if the outcome is unknown.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        tenant: i64,
        body: serde_json::Value,
    ) -> Option<HttpResponse> {
        let kind = route(method, path);
        // The history stays as it was (it is hashed): which app node served the request is
        // told by the transcript, whose statements carry the node's name and the request id.
        let op = self.recorder.invoke(
            &self.process,
            &kind,
            json!({"path": path, "tenant": tenant, "body": body}),
        );
        let app = self.apps[madsim::rand::thread_rng().gen_range(0..self.apps.len())];
        let request = HttpRequest {
            method: method.to_string(),
            path: path.to_string(),
            tenant,
            body,
            request_id: Some(op as u64),
        };
        match net::call::<HttpRequest, HttpResponse>(app, request, self.timeout).await {
            RpcOutcome::Reply(response) => {
                let outcome = if response.is_success() {
                    OpOutcome::Ok
                } else {
                    OpOutcome::Fail
                };
                self.recorder.complete(
                    op,
                    outcome,
                    Some(response.status),
                    json!({
                        "status": response.status,
                        "body": response.body,
                        "queries": response.queries,
                        "row_tenants": response.row_tenants,
                        "foreign_statement": response.foreign_statement,
                    }),
                );
                Some(response)
            }
            RpcOutcome::Unknown => {
                self.recorder
                    .complete(op, OpOutcome::Unknown, None, serde_json::Value::Null);
                None
            }
        }
    }
}

/// A client arrives at a random moment of the arrival window, as a customer of a random
/// tenant; returns the tenant.
async fn arrive(config: &ShopConfig) -> i64 {
    let start = madsim::rand::thread_rng().gen_range(0..=config.arrival_window_ms);
    madsim::time::sleep(Duration::from_millis(start)).await;
    madsim::rand::thread_rng().gen_range(1..=i64::from(config.tenants))
}

/// A catalog reader: product pages and product details of its tenant, with think time.
async fn read_flow(client: &Client, config: &ShopConfig, tenant: i64, products: i64) {
    let pages = (products + config.page_size - 1) / config.page_size;
    for _ in 0..config.reads_per_reader {
        if madsim::rand::thread_rng().gen_bool(0.5) {
            let page = madsim::rand::thread_rng().gen_range(1..=pages.max(1));
            client
                .request(
                    "GET",
                    "/api/v1/products",
                    tenant,
                    json!({"page": page, "per_page": config.page_size}),
                )
                .await;
        } else {
            let product =
                (tenant - 1) * products + madsim::rand::thread_rng().gen_range(1..=products);
            client
                .request(
                    "GET",
                    &format!("/api/v1/products/{product}"),
                    tenant,
                    json!({}),
                )
                .await;
        }
        let think = madsim::rand::thread_rng().gen_range(0..=20);
        madsim::time::sleep(Duration::from_millis(think)).await;
    }
}

async fn checkout_flow(
    client: &Client,
    config: &ShopConfig,
    tenant: i64,
    products: i64,
    pays: bool,
) {
    let Some(cart) = client
        .request("POST", "/api/v1/cart", tenant, json!({}))
        .await
    else {
        return;
    };
    let Some(cart_id) = cart.body.get("cart_id").and_then(|v| v.as_i64()) else {
        return;
    };
    for _ in 0..config.items_per_cart {
        // Products of a tenant have ids (tenant-1)*products+1 ..= tenant*products.
        let product = (tenant - 1) * products + madsim::rand::thread_rng().gen_range(1..=products);
        let quantity = madsim::rand::thread_rng().gen_range(1..=config.quantity_max);
        client
            .request(
                "POST",
                &format!("/api/v1/cart/{cart_id}/items"),
                tenant,
                json!({"product_id": product, "quantity": quantity}),
            )
            .await;
    }
    let convert = format!("/api/v1/cart/{cart_id}/convert");
    let double = madsim::rand::thread_rng().gen_bool(config.double_convert_probability);
    let order = if double {
        // An impatient shopper clicks again a moment later (drawn only if there is a gap, so
        // a double click at once draws what it always drew).
        let gap_ms = match config.double_convert_gap_ms_max {
            0 => 0,
            max => madsim::rand::thread_rng().gen_range(0..=max),
        };
        let second = async {
            if gap_ms > 0 {
                madsim::time::sleep(Duration::from_millis(gap_ms)).await;
            }
            client.request("POST", &convert, tenant, json!({})).await
        };
        let (a, b) = madsim::export::futures::future::join(
            client.request("POST", &convert, tenant, json!({})),
            second,
        )
        .await;
        a.or(b)
    } else {
        client.request("POST", &convert, tenant, json!({})).await
    };
    if !pays {
        return;
    }
    let Some(order_id) = order.and_then(|o| o.body.get("order_id").and_then(|v| v.as_i64())) else {
        return;
    };
    let Some(payment) = client
        .request(
            "POST",
            &format!("/api/v1/orders/{order_id}/payments"),
            tenant,
            json!({}),
        )
        .await
    else {
        return;
    };
    let Some(payment_id) = payment.body.get("payment_id").and_then(|v| v.as_i64()) else {
        return;
    };
    // The customer comes back from the provider's page, racing the webhook.
    let back = madsim::rand::thread_rng().gen_range(0..=config.webhook_delay_ms_max + 200);
    madsim::time::sleep(Duration::from_millis(back)).await;
    client
        .request(
            "GET",
            &format!("/api/v1/payments/{payment_id}/return"),
            tenant,
            json!({}),
        )
        .await;
}
