//! An app node: a fixed pool of request workers (like PHP-FPM) in front of the routes, a
//! bounded database connection pool, and the clients of the cache and the payment provider.
//!
//! Errors become responses the way Laravel's exception handler makes them: a domain rejection
//! is a 4xx from the service; a database error that is not retried (or still fails after
//! `DB::transaction`'s attempts) is a 500; a lost connection, a full pool or a timeout is a
//! 503. Every response carries the database error code when there is one, so checks can tell
//! a deadlock that reached a client from other failures.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::rand::Rng;
use serde_json::json;
use shopsim_sim::db::client::{
    ClientError, DbClientConfig, DbConn, DbPool, QueryListener, TransactionIsolation,
};
use shopsim_sim::db::{Engine, QueryResult, Value};
use shopsim_sim::net;

use crate::bugs::Bugs;
use crate::config::ShopConfig;
use crate::http::{HttpRequest, HttpResponse};
use crate::{cache, cart, catalog, order_lock, payment, schema};

/// The port app nodes serve on.
pub const PORT: u16 = 80;

/// What every request handler needs.
#[derive(Clone)]
pub struct App {
    /// The database engine family (for the SQL dialect).
    pub engine: Engine,
    /// The connection pool of this node (to the primary).
    pub pool: DbPool,
    /// The pool to the read replica, if the deployment has one.
    pub replica_pool: Option<DbPool>,
    /// This request wrote (or may write): its reads go to the primary, so it reads its own
    /// writes (Laravel's `sticky` connection option).
    pub sticky: bool,
    /// Planted bugs.
    pub bugs: Bugs,
    /// The shop's settings.
    pub config: Arc<ShopConfig>,
    /// The cache node.
    pub cache: SocketAddr,
    /// The payment provider.
    pub provider: SocketAddr,
}

/// A handler's error: the database client's, turned into a 500 or 503 at the top.
pub type AppResult<T> = Result<T, ClientError>;

/// What the statements of one request (or queue job) did, heard through the pools' query
/// listener: how many there were, and whose rows they read or wrote (the database's row
/// audit on `tenant_id`).
#[derive(Debug, Default)]
pub struct StatementAudit {
    /// Statements issued, failed ones included.
    pub queries: u32,
    /// Tenants whose rows the statements touched.
    pub row_tenants: BTreeSet<i64>,
    /// The first statement that touched a row of another tenant, with that tenant.
    pub foreign_statement: Option<(i64, String)>,
}

impl StatementAudit {
    fn hear(&mut self, tenant: i64, sql: &str, result: &Result<QueryResult, ClientError>) {
        self.queries += 1;
        let Ok(result) = result else {
            return;
        };
        for owner in result.row_owners.iter().filter_map(Value::as_int) {
            self.row_tenants.insert(owner);
            if owner != tenant && self.foreign_statement.is_none() {
                self.foreign_statement = Some((owner, sql.to_string()));
            }
        }
    }

    /// Copies the audit into `response`'s debug fields.
    pub fn annotate(&self, response: &mut HttpResponse) {
        response.queries = Some(self.queries);
        response.row_tenants = self.row_tenants.iter().copied().collect();
        response.foreign_statement = self.foreign_statement.clone();
    }
}

impl App {
    /// A new app context (inside the node that uses it), whose database connections carry
    /// the node's `name` as their `application_name`.
    pub fn new(config: Arc<ShopConfig>, addrs: &crate::shop::Addrs, name: &str) -> App {
        // Laravel's connection: `DB::transaction` retries by the configured version's rule, and
        // a statement outside a transaction whose connection was lost is run once more on a
        // new one (`tryAgainIfCausedByLostConnection`).
        // The isolation level the app's transactions set for themselves, if configured.
        let isolation = (!config.isolation_level.is_empty()).then(|| TransactionIsolation {
            sql: format!("set transaction isolation level {}", config.isolation_level),
            before_begin: config.profile().engine() == Engine::InnoDb,
        });
        let client = |addr| DbClientConfig {
            pool_size: config.db_pool_per_app as usize,
            acquire_timeout_ms: config.db_acquire_timeout_ms,
            laravel: config.laravel,
            retry_lost_connection_outside_transaction: true,
            transaction_isolation: isolation.clone(),
            application_name: Some(name.to_string()),
            ..DbClientConfig::new(addr)
        };
        let pool = DbPool::new(client(addrs.db));
        let replica_pool = addrs.replica.map(|addr| DbPool::new(client(addr)));
        App {
            engine: config.profile().engine(),
            pool,
            replica_pool,
            sticky: false,
            bugs: config.bugs(),
            config,
            cache: addrs.cache,
            provider: addrs.provider,
        }
    }

    /// This app with pools whose connections report every statement to a fresh audit, for a
    /// request or job of `tenant`.
    pub fn audited(&self, tenant: i64) -> (App, Arc<Mutex<StatementAudit>>) {
        let audit: Arc<Mutex<StatementAudit>> = Arc::default();
        let sink = audit.clone();
        let listener: QueryListener = Arc::new(move |sql, result| {
            sink.lock()
                .expect("statement audit")
                .hear(tenant, sql, result);
        });
        let mut app = self.clone();
        app.pool = self.pool.with_listener(listener.clone());
        app.replica_pool = self
            .replica_pool
            .as_ref()
            .map(|pool| pool.with_listener(listener));
        (app, audit)
    }

    /// This app with pools whose statements carry `tag` (the request's id) to the database.
    pub fn tagged(mut self, tag: u64) -> App {
        self.pool = self.pool.with_tag(tag);
        self.replica_pool = self.replica_pool.map(|pool| pool.with_tag(tag));
        self
    }

    /// The statement in this engine's placeholder style.
    pub fn sql(&self, sql: &str) -> String {
        schema::dialect(self.engine, sql)
    }

    /// Virtual time now, in ms (timestamps in rows).
    pub fn now_ms(&self) -> i64 {
        shopsim_sim::trace::virtual_now().as_millis() as i64
    }

    /// Transaction attempts (Laravel's `DB::transaction($fn, 3)`).
    pub fn attempts(&self) -> u32 {
        self.bugs
            .transaction_attempts(self.config.transaction_attempts)
    }

    /// Serves one request: waits for a worker, spends the framework's overhead, routes.
    pub async fn handle(
        &self,
        workers: Arc<tokio::sync::Semaphore>,
        request: HttpRequest,
    ) -> HttpResponse {
        let _worker = workers
            .acquire_owned()
            .await
            .expect("the worker pool is never closed");
        let overhead_us = madsim::rand::thread_rng()
            .gen_range(self.config.app_overhead_us_min..=self.config.app_overhead_us_max);
        madsim::time::sleep(Duration::from_micros(overhead_us)).await;
        // Anything but a GET may write: its reads stick to the primary.
        let (mut app, audit) = self.audited(request.tenant);
        if let Some(id) = request.request_id {
            app = app.tagged(id);
        }
        app.sticky = request.method != "GET";
        let result = app.route(&request).await;
        let mut response = match result {
            Ok(response) => response,
            Err(error) => error_response(&error),
        };
        audit
            .lock()
            .expect("statement audit")
            .annotate(&mut response);
        response
    }

    async fn route(&self, request: &HttpRequest) -> AppResult<HttpResponse> {
        let parts: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        let id = |i: usize| parts.get(i).and_then(|p| p.parse::<i64>().ok());
        let body = &request.body;
        let t = request.tenant;
        match (request.method.as_str(), parts.as_slice()) {
            ("GET", ["api", "v1", "products"]) => {
                let page = body.get("page").and_then(|v| v.as_i64()).unwrap_or(1);
                let per_page = body.get("per_page").and_then(|v| v.as_i64()).unwrap_or(15);
                catalog::list(self, t, page, per_page).await
            }
            ("GET", ["api", "v1", "products", _]) => match id(3) {
                Some(product) => catalog::show(self, t, product).await,
                None => Ok(bad_request("product id is required")),
            },
            ("POST", ["api", "v1", "cart"]) => cart::create(self, t).await,
            ("POST", ["api", "v1", "cart", _, "items"]) => {
                let (Some(cart_id), Some(product), Some(quantity)) = (
                    id(3),
                    body.get("product_id").and_then(|v| v.as_i64()),
                    body.get("quantity").and_then(|v| v.as_i64()),
                ) else {
                    return Ok(bad_request("cart id, product_id and quantity are required"));
                };
                if quantity <= 0 {
                    return Ok(HttpResponse::new(
                        422,
                        json!({"error": "quantity must be positive"}),
                    ));
                }
                cart::add_item(self, t, cart_id, product, quantity).await
            }
            ("POST", ["api", "v1", "cart", _, "convert"]) => match id(3) {
                Some(cart_id) => cart::convert(self, t, cart_id).await,
                None => Ok(bad_request("cart id is required")),
            },
            ("POST", ["api", "v1", "orders", _, "payments"]) => match id(3) {
                Some(order_id) => payment::create(self, t, order_id).await,
                None => Ok(bad_request("order id is required")),
            },
            ("POST", ["api", "v1", "webhooks", "payments"]) => {
                match body.get("payment_id").and_then(|v| v.as_i64()) {
                    Some(payment_id) => payment::webhook(self, t, payment_id).await,
                    None => Ok(bad_request("payment_id is required")),
                }
            }
            ("GET", ["api", "v1", "payments", _, "return"]) => match id(3) {
                Some(payment_id) => payment::return_url(self, t, payment_id).await,
                None => Ok(bad_request("payment id is required")),
            },
            ("POST", ["api", "v1", "financial-orders", _, "lock"]) => match id(3) {
                Some(fo) => order_lock::lock(self, t, fo).await,
                None => Ok(bad_request("financial order id is required")),
            },
            ("PATCH", ["api", "v1", "financial-orders", _]) => match id(3) {
                Some(fo) => order_lock::mutate(self, t, fo, body).await,
                None => Ok(bad_request("financial order id is required")),
            },
            _ => Ok(HttpResponse::new(404, json!({"error": "no route"}))),
        }
    }

    /// The replica's pool, or the primary's when the deployment has no replica.
    pub fn replica_pool(&self) -> &DbPool {
        self.replica_pool.as_ref().unwrap_or(&self.pool)
    }

    /// The pool reads go to: the replica, unless there is none or this request writes.
    pub fn read_pool(&self) -> &DbPool {
        match &self.replica_pool {
            Some(replica) if !self.sticky => replica,
            _ => &self.pool,
        }
    }

    /// A pooled connection with the request's tenant as its session context (`SET
    /// app.tenant_id` / `SET @tenant_id`), set on every request because a pooled connection
    /// still carries the context of the request that used it last.
    pub async fn tenant_conn(&self, pool: &DbPool, tenant: i64) -> AppResult<DbConn> {
        let mut conn = pool.acquire().await?;
        if conn.is_fresh() || !self.bugs.tenant_context_left_on_connection {
            let set = match self.engine {
                Engine::Postgres => format!("set app.tenant_id = '{tenant}'"),
                Engine::InnoDb => format!("set @tenant_id = {tenant}"),
            };
            // Configured, not merely executed: a reconnect inside the request (Laravel's
            // retry after a lost connection) opens a session without it, and every tenant-
            // scoped statement after that would fail (PostgreSQL: 42704) or, on MariaDB, match
            // no row at all (an unset `@tenant_id` is NULL).
            conn.configure(&set).await?;
        }
        Ok(conn)
    }

    /// The cache client.
    pub fn cache(&self) -> cache::CacheClient {
        cache::CacheClient { addr: self.cache }
    }
}

fn bad_request(message: &str) -> HttpResponse {
    HttpResponse::new(400, json!({ "error": message }))
}

/// The response for an error that escaped a handler.
pub fn error_response(error: &ClientError) -> HttpResponse {
    match error {
        ClientError::Db(e) => HttpResponse::new(
            500,
            json!({ "error": "database error", "code": e.code(), "message": e.message() }),
        ),
        other => HttpResponse::new(
            503,
            json!({ "error": "database unavailable", "detail": format!("{other:?}") }),
        ),
    }
}

/// Runs one statement with `?` placeholders on `conn`.
pub async fn q(
    app_engine: Engine,
    conn: &mut DbConn,
    sql: &str,
    params: &[Value],
) -> AppResult<QueryResult> {
    conn.execute(&schema::dialect(app_engine, sql), params)
        .await
}

/// Inserts a row and returns its generated id: `RETURNING id` on PostgreSQL, the last insert
/// id on MariaDB (as Laravel's `insertGetId` does).
pub async fn insert_id(
    engine: Engine,
    conn: &mut DbConn,
    sql: &str,
    params: &[Value],
) -> AppResult<i64> {
    let (sql, returning) = match engine {
        Engine::Postgres => (format!("{sql} returning id"), true),
        Engine::InnoDb => (sql.to_string(), false),
    };
    let result = q(engine, conn, &sql, params).await?;
    let id = if returning {
        result
            .rows
            .first()
            .and_then(|r| r.first())
            .and_then(Value::as_int)
    } else {
        result.last_insert_id
    };
    Ok(id.expect("an insert into a table with an auto-increment key returns its id"))
}

/// The integer in column `i` of the first row.
pub fn int_at(result: &QueryResult, row: usize, i: usize) -> Option<i64> {
    result.rows.get(row)?.get(i)?.as_int()
}

/// The text in column `i` of the first row.
pub fn text_at(result: &QueryResult, row: usize, i: usize) -> Option<String> {
    result.rows.get(row)?.get(i)?.as_text().map(str::to_string)
}

/// Serves HTTP requests on this node until it is killed.
pub async fn serve(config: Arc<ShopConfig>, addrs: crate::shop::Addrs, name: String) {
    let app = App::new(config.clone(), &addrs, &name);
    let workers = Arc::new(tokio::sync::Semaphore::new(config.workers_per_app as usize));
    net::serve(PORT, move |request: HttpRequest| {
        let app = app.clone();
        let workers = workers.clone();
        async move { app.handle(workers, request).await }
    })
    .await
}
