//! The database client: a bounded connection pool and pooled connections, the only way model
//! code reaches the database.
//!
//! Goal: behave like a PHP worker's PDO connection under Laravel. A pool of at most
//! `pool_size` connections per app node; `acquire` queues in FIFO order and gives up after
//! `acquire_timeout_ms`. A connection opens lazily, a broken one is discarded and reopened on
//! next use, and one returned while still inside a transaction is closed, so the server rolls
//! it back at once and releases its row locks. [`DbConn::transaction`] retries on deadlock and
//! serialization failures like `DB::transaction($fn, $attempts)`.
//!
//! Key invariant: a statement never hangs and never reports a failure it cannot be sure of.
//! A reply that does not arrive within `statement_timeout_ms`, or a connection that closes
//! while a statement that may have committed is in flight, yields an error marked
//! `ambiguous: true`; any error marked `ambiguous: false` means the statement had no effect
//! (beyond rolling back the open transaction).
//!
//! The surface is small on purpose (`execute`, `begin`, `commit`, `rollback`, `transaction`),
//! so the same calls could run against a real PostgreSQL or MariaDB.
//!
//! ```
//! use std::{net::SocketAddr, time::Duration};
//! use madsim::runtime::Runtime;
//! use shopsim_sim::db::client::{DbClientConfig, DbPool};
//! use shopsim_sim::db::server::{serve, DbNodeState, DbServerConfig, PORT_DEFAULT};
//! use shopsim_sim::db::{DbConfig, Profile, Value};
//!
//! let rt = Runtime::with_seed_and_config(7, madsim::Config::default());
//! // The database outlives its node: committed data survives crashes and is read after the run.
//! let state = DbNodeState::new(Profile::PgRc, DbConfig::default());
//! state.with_database(|db| {
//!     let session = db.connect();
//!     let create = "CREATE TABLE test (id INT PRIMARY KEY, value INT NOT NULL)";
//!     db.execute(session, create, &[], Duration::ZERO);
//!     let insert = "INSERT INTO test (id, value) VALUES ($1, $2)";
//!     db.execute(session, insert, &[Value::Int(1), Value::Int(0)], Duration::ZERO);
//!     db.disconnect(session);
//! });
//! let serve_state = state.clone();
//! rt.create_node()
//!     .name("db")
//!     .ip("10.0.0.1".parse().unwrap())
//!     .init(move || serve(serve_state.clone(), DbServerConfig::default()))
//!     .build();
//! let app = rt.create_node().name("app").ip("10.0.1.1".parse().unwrap()).build();
//! let request = app.spawn(async {
//!     madsim::time::sleep(Duration::from_millis(10)).await;
//!     let addr = SocketAddr::new("10.0.0.1".parse().unwrap(), PORT_DEFAULT);
//!     let pool = DbPool::new(DbClientConfig { pool_size: 4, ..DbClientConfig::new(addr) });
//!     // Like `DB::transaction(fn () => ..., 3)`: retried on deadlock or serialization failure.
//!     pool.transaction(3, |conn| {
//!         Box::pin(async move {
//!             let sql = "SELECT value FROM test WHERE id = $1 FOR UPDATE";
//!             conn.execute(sql, &[Value::Int(1)]).await?;
//!             let sql = "UPDATE test SET value = value + 1 WHERE id = $1";
//!             conn.execute(sql, &[Value::Int(1)]).await?;
//!             Ok(())
//!         })
//!     })
//!     .await
//! });
//! rt.block_on(request).unwrap().unwrap();
//! assert_eq!(state.table_rows("test").unwrap(), vec![vec![Value::Int(1), Value::Int(1)]]);
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use madsim::net::{Endpoint, Receiver, Sender};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::server::{statement_kind, Hello, Reply, Request, StatementKind};
use super::{DbError, QueryResult, Value};
use crate::steering::{self, Point, Site};

/// Client settings of one pool. Times are virtual.
#[derive(Debug, Clone, PartialEq)]
pub struct DbClientConfig {
    /// Address of the database node.
    pub addr: SocketAddr,
    /// Most connections this pool holds open at once.
    pub pool_size: usize,
    /// How long `acquire` waits for a free connection before [`ClientError::PoolTimeout`].
    pub acquire_timeout_ms: u64,
    /// How long opening a connection may take before it counts as failed.
    pub connect_timeout_ms: u64,
    /// How long a statement may take, lock waits included, before the client gives up on the
    /// connection with an ambiguous [`ClientError::Timeout`]. Generous by default: the server's
    /// lock wait timeouts should fire first.
    pub statement_timeout_ms: u64,
    /// Laravel's `tryAgainIfCausedByLostConnection`: a statement outside a transaction whose
    /// connection was lost is run once more on a new connection, and the caller sees only the
    /// second outcome. Faithful to Laravel, and a source of double writes when the first run
    /// had committed. Off by default so that lost replies stay visible as ambiguous errors.
    pub retry_lost_connection_outside_transaction: bool,
    /// The client's name, sent with every statement like PostgreSQL's `application_name`
    /// (`app-2`, `worker`): a transcript names the sessions by it. The engine never reads it.
    pub application_name: Option<String>,
    /// Whose rule [`DbConn::transaction`] retries by.
    pub laravel: LaravelVersion,
    /// The isolation level every [`DbConn::transaction`] sets for itself, as code that runs
    /// `SET TRANSACTION ISOLATION LEVEL ...` around `DB::transaction` does; `None` keeps the
    /// server's default.
    pub transaction_isolation: Option<TransactionIsolation>,
}

/// How a transaction sets its isolation level: the statement, and whether it goes before
/// `BEGIN` (MariaDB: it applies to the next transaction) or right after it (PostgreSQL: the
/// transaction's first statement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionIsolation {
    /// `SET TRANSACTION ISOLATION LEVEL READ COMMITTED`.
    pub sql: String,
    /// Sent before `BEGIN` rather than after it.
    pub before_begin: bool,
}

impl DbClientConfig {
    /// Defaults for a pool talking to `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        DbClientConfig {
            addr,
            pool_size: 10,
            acquire_timeout_ms: 5_000,
            // Long enough for madsim's own buggified network hiccups (up to 5 s per step).
            connect_timeout_ms: 30_000,
            statement_timeout_ms: 120_000,
            retry_lost_connection_outside_transaction: false,
            laravel: LaravelVersion::default(),
            transaction_isolation: None,
            application_name: None,
        }
    }
}

/// Why a statement did not return a result.
#[derive(Debug, Clone)]
pub enum ClientError {
    /// The database answered with an error; the statement's effects are as the error says.
    Db(DbError),
    /// The connection broke: refused, reset, or the node crashed. `ambiguous` is true if the
    /// statement in flight may have committed (a COMMIT, or a write outside a transaction).
    ConnectionLost {
        /// True if the statement may have taken effect.
        ambiguous: bool,
    },
    /// No connection became free within `acquire_timeout_ms`.
    PoolTimeout,
    /// No reply within `statement_timeout_ms`; the connection was closed.
    Timeout {
        /// True if the statement may have taken effect.
        ambiguous: bool,
    },
}

impl ClientError {
    /// True if the statement may have taken effect although no result arrived.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            ClientError::ConnectionLost { ambiguous } | ClientError::Timeout { ambiguous } => {
                *ambiguous
            }
            ClientError::Db(_) | ClientError::PoolTimeout => false,
        }
    }

    /// The database error, if the database answered.
    pub fn db_error(&self) -> Option<&DbError> {
        match self {
            ClientError::Db(error) => Some(error),
            _ => None,
        }
    }

    /// True for the errors `DB::transaction($callback, $attempts)` of Laravel `version` retries
    /// (see [`LaravelVersion::caused_by_concurrency_error`]); a lost connection, a pool or
    /// statement timeout never are.
    pub fn is_concurrency_error(&self, version: LaravelVersion) -> bool {
        match self {
            ClientError::Db(error) => version.caused_by_concurrency_error(error),
            _ => false,
        }
    }
}

/// The Laravel version whose transaction retry rule the pool mirrors: which database errors
/// `DB::transaction($callback, $attempts)` treats as concurrency errors and retries
/// (`Illuminate\Database\DetectsConcurrencyErrors::causedByConcurrencyError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LaravelVersion {
    /// laravel/framework v11.56.0 (the last 11.x): a `PDOException` whose code (the SQLSTATE)
    /// is `40001`, or a message containing one of nine phrases, among them `Deadlock found
    /// when trying to get lock` (MariaDB 1213), `deadlock detected` (PostgreSQL 40P01) and
    /// `Lock wait timeout exceeded; try restarting transaction` (MariaDB 1205). MariaDB's
    /// `1020 Record has changed since last read in table` (SQLSTATE HY000, raised under
    /// `innodb_snapshot_isolation=ON`) is not among them, so it is not retried.
    #[default]
    #[serde(rename = "11.56")]
    V11_56,
    /// laravel/framework v12.29.0, the first release with pull request #56945 ("Handle
    /// MariaDB innodb_snapshot_isolation=ON"): the same rule, plus the message `Record has
    /// changed since last read in table`.
    #[serde(rename = "12.29")]
    V12_29,
}

/// The message phrases of laravel/framework v11.56.0's `causedByConcurrencyError`, in its
/// order (SQLite's, SQL Server's and Galera's phrases included: the rule is the framework's,
/// whatever engine is behind it).
const LARAVEL_11_CONCURRENCY_MESSAGES: [&str; 9] = [
    "Deadlock found when trying to get lock",
    "deadlock detected",
    "The database file is locked",
    "database is locked",
    "database table is locked",
    "A table in the database is locked",
    "has been chosen as the deadlock victim",
    "Lock wait timeout exceeded; try restarting transaction",
    "WSREP detected deadlock/conflict and aborted the transaction. Try restarting the transaction",
];

/// The phrase laravel/framework v12.29.0 added.
const LARAVEL_12_29_RECORD_CHANGED: &str = "Record has changed since last read in table";

impl LaravelVersion {
    /// Every version, oldest first.
    pub const ALL: [LaravelVersion; 2] = [LaravelVersion::V11_56, LaravelVersion::V12_29];

    /// `causedByConcurrencyError($e)` for the exception PDO raises on `error`.
    pub fn caused_by_concurrency_error(self, error: &DbError) -> bool {
        if sqlstate(error) == "40001" {
            return true;
        }
        let message = error.message();
        LARAVEL_11_CONCURRENCY_MESSAGES
            .iter()
            .any(|phrase| message.contains(phrase))
            || (self == LaravelVersion::V12_29 && message.contains(LARAVEL_12_29_RECORD_CHANGED))
    }

    /// The version's name (`11.56`).
    pub fn name(self) -> &'static str {
        match self {
            LaravelVersion::V11_56 => "11.56",
            LaravelVersion::V12_29 => "12.29",
        }
    }
}

/// The SQLSTATE PDO reports as the exception's code: PostgreSQL's own code, or for a MariaDB
/// error number the SQLSTATE the server sends with it. Only `40001` decides anything here:
/// MariaDB sends it with `1213` (a deadlock); `1205` and `1020` come with `HY000`.
fn sqlstate(error: &DbError) -> &str {
    let code = error.code();
    if !code.bytes().all(|b| b.is_ascii_digit()) || code.len() == 5 {
        return code;
    }
    match code {
        "1213" => "40001",
        "1062" | "1048" => "23000",
        "1040" => "08004",
        "1146" => "42S02",
        "1050" => "42S01",
        _ => "HY000",
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Db(error) => write!(f, "{error}"),
            ClientError::ConnectionLost { ambiguous: true } => {
                write!(
                    f,
                    "connection lost while the statement may have committed (outcome unknown)"
                )
            }
            ClientError::ConnectionLost { ambiguous: false } => {
                write!(f, "connection lost (statement not applied)")
            }
            ClientError::PoolTimeout => {
                write!(f, "timed out waiting for a free database connection")
            }
            ClientError::Timeout { ambiguous: true } => {
                write!(f, "statement timed out (outcome unknown)")
            }
            ClientError::Timeout { ambiguous: false } => {
                write!(f, "statement timed out (statement not applied)")
            }
        }
    }
}

impl std::error::Error for ClientError {}

impl From<DbError> for ClientError {
    fn from(error: DbError) -> Self {
        ClientError::Db(error)
    }
}

/// An open connection to the server.
struct Transport {
    tx: Sender,
    rx: Receiver,
}

struct PoolShared {
    config: DbClientConfig,
    /// `config.application_name`, shared by every statement instead of copied.
    application: Option<Arc<str>>,
    state: Mutex<PoolState>,
}

struct PoolState {
    /// Connections not held by anyone: open transports ready for reuse.
    idle: Vec<Transport>,
    /// Slots not held by anyone (idle transports count as free slots too).
    slots_free: usize,
    /// Acquirers waiting for a slot, first come first served. A slot is handed over directly,
    /// with its open transport if there is one.
    waiters: VecDeque<oneshot::Sender<Option<Transport>>>,
}

/// Called after every statement a connection ran, with the statement's text and outcome, as
/// Laravel's `DB::listen` is: to count a request's queries, or to see whose rows they touched
/// ([`QueryResult::row_owners`]).
pub type QueryListener = Arc<dyn Fn(&str, &Result<QueryResult, ClientError>) + Send + Sync>;

/// A bounded pool of connections to one database node. Cheap to clone; clones share the pool.
/// Create it inside the node that uses it: connections belong to that node and die with it.
#[derive(Clone)]
pub struct DbPool {
    shared: Arc<PoolShared>,
    /// Told of every statement run on connections taken through this handle.
    listener: Option<QueryListener>,
    /// Sent with every statement run on connections taken through this handle.
    tag: Option<u64>,
}

impl DbPool {
    /// A pool with no connections open yet.
    pub fn new(config: DbClientConfig) -> Self {
        assert!(config.pool_size > 0);
        assert!(config.statement_timeout_ms > 0);
        let slots_free = config.pool_size;
        let application = config.application_name.as_deref().map(Arc::from);
        DbPool {
            shared: Arc::new(PoolShared {
                config,
                application,
                state: Mutex::new(PoolState {
                    idle: Vec::new(),
                    slots_free,
                    waiters: VecDeque::new(),
                }),
            }),
            listener: None,
            tag: None,
        }
    }

    /// A handle on the same pool whose connections tell `listener` of every statement they
    /// run (replacing any listener this handle had). Other handles are not affected, so a
    /// request can listen to its own statements only.
    pub fn with_listener(&self, listener: QueryListener) -> DbPool {
        DbPool {
            shared: self.shared.clone(),
            listener: Some(listener),
            tag: self.tag,
        }
    }

    /// A handle on the same pool whose connections send `tag` with every statement they run
    /// (for example the client operation the statements serve), so a transcript can tell
    /// which operation ran which statement. Like `application_name`, the engine never reads
    /// it: a tag changes no outcome, no cost and no trace hash.
    pub fn with_tag(&self, tag: u64) -> DbPool {
        DbPool {
            shared: self.shared.clone(),
            listener: self.listener.clone(),
            tag: Some(tag),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pool's settings.
    pub fn config(&self) -> &DbClientConfig {
        &self.shared.config
    }

    /// Takes a connection, waiting in line for up to `acquire_timeout_ms`.
    pub async fn acquire(&self) -> Result<DbConn, ClientError> {
        let mut waiter_rx = {
            let mut state = self.lock();
            assert!(state.slots_free <= self.shared.config.pool_size);
            if state.slots_free > 0 && state.waiters.is_empty() {
                state.slots_free -= 1;
                let transport = state.idle.pop();
                return Ok(DbConn::new(self.clone(), transport));
            }
            let (waiter_tx, waiter_rx) = oneshot::channel();
            state.waiters.push_back(waiter_tx);
            waiter_rx
        };
        let timeout = Duration::from_millis(self.shared.config.acquire_timeout_ms);
        match madsim::time::timeout(timeout, &mut waiter_rx).await {
            Ok(Ok(transport)) => Ok(DbConn::new(self.clone(), transport)),
            Ok(Err(_)) => unreachable!("the pool holds its waiters until it hands them a slot"),
            Err(_elapsed) => {
                // A slot may have been handed over in the same instant; do not lose it.
                waiter_rx.close();
                match waiter_rx.try_recv() {
                    Ok(transport) => Ok(DbConn::new(self.clone(), transport)),
                    Err(_) => Err(ClientError::PoolTimeout),
                }
            }
        }
    }

    /// Gives a slot back, handing it to the first live waiter if there is one.
    fn release(&self, mut transport: Option<Transport>) {
        let mut state = self.lock();
        while let Some(waiter) = state.waiters.pop_front() {
            match waiter.send(transport) {
                Ok(()) => return,
                // That waiter timed out; try the next one.
                Err(returned) => transport = returned,
            }
        }
        state.slots_free += 1;
        assert!(state.slots_free <= self.shared.config.pool_size);
        if let Some(transport) = transport {
            state.idle.push(transport);
        }
    }

    /// Connections held by callers right now.
    pub fn in_use(&self) -> usize {
        self.shared.config.pool_size - self.lock().slots_free
    }

    /// One statement on a pooled connection, outside any transaction.
    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<QueryResult, ClientError> {
        self.acquire().await?.execute(sql, params).await
    }

    /// [`DbConn::transaction`] on a pooled connection.
    pub async fn transaction<T, F>(&self, attempts: u32, f: F) -> Result<T, ClientError>
    where
        F: for<'c> FnMut(
            &'c mut DbConn,
        )
            -> Pin<Box<dyn Future<Output = Result<T, ClientError>> + Send + 'c>>,
    {
        self.acquire().await?.transaction(attempts, f).await
    }
}

/// A connection taken from a [`DbPool`]; returns to the pool when dropped.
pub struct DbConn {
    pool: DbPool,
    /// None until first use, and after the connection broke.
    transport: Option<Transport>,
    /// As the server last reported it.
    in_transaction: bool,
    /// Session settings of this checkout ([`DbConn::configure`]), replayed on a reconnect.
    session: Vec<String>,
    /// The open transaction's entry in the run's [`crate::open_transactions`] registry.
    transaction_token: Option<u64>,
    /// The open transaction has read or written rows: a steering delay here holds its
    /// snapshot, reads and locks open (see [`crate::steering`]).
    transaction_saw_rows: bool,
}

/// Most session settings one checkout of a connection configures (a request sets a few).
const SESSION_SETTINGS_MAX: usize = 64;

impl DbConn {
    fn new(pool: DbPool, transport: Option<Transport>) -> Self {
        DbConn {
            pool,
            transport,
            in_transaction: false,
            session: Vec::new(),
            transaction_token: None,
            transaction_saw_rows: false,
        }
    }

    /// Records the transaction state the server reported after `sql` (or that a broken
    /// connection implies), and tells the run's registry when a transaction opens or ends.
    fn set_in_transaction(&mut self, in_transaction: bool, sql: &str) {
        self.in_transaction = in_transaction;
        match (in_transaction, self.transaction_token) {
            (true, None) => self.transaction_token = crate::open_transactions::opened(sql),
            (false, Some(token)) => {
                crate::open_transactions::closed(token);
                self.transaction_token = None;
            }
            _ => {}
        }
    }

    /// Where a steering delay point at `at` of statement `sql` sits.
    fn steering_site(&self, at: Point, sql: &str) -> Site {
        if !(self.in_transaction && self.transaction_saw_rows) {
            return Site::Outside;
        }
        match (at, statement_kind(sql)) {
            (Point::DbSend, StatementKind::Read) => Site::Inside,
            _ => Site::Deciding,
        }
    }

    /// True if the server reported an open transaction after the last statement.
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// True if no server session is open yet: the next statement opens a new one, with no
    /// session settings from earlier users of the pooled connection.
    pub fn is_fresh(&self) -> bool {
        self.transport.is_none()
    }

    /// Runs a session setting (`SET app.tenant_id = '7'`) that the rest of this checkout relies
    /// on, and applies it again on every new connection this checkout opens. A connection lost
    /// outside a transaction is reopened silently (idle close, `tryAgainIfCausedByLostConnection`),
    /// and a new server session would otherwise lack the setting. It is part of the
    /// connection's configuration, like the options Laravel's connector sets on each connect.
    pub async fn configure(&mut self, sql: &str) -> Result<QueryResult, ClientError> {
        assert!(
            !self.in_transaction,
            "a session setting inside a transaction: {sql}"
        );
        let result = self.execute(sql, &[]).await;
        if result.is_ok() {
            self.session.push(sql.to_string());
        }
        assert!(
            self.session.len() <= SESSION_SETTINGS_MAX,
            "settings of one checkout"
        );
        result
    }

    /// Opens a connection and waits for the server's greeting. Takes the address and timeout
    /// by value: a future that borrows the connection would not be `Send`.
    async fn connect(addr: SocketAddr, connect_timeout_ms: u64) -> Result<Transport, ClientError> {
        let refused = ClientError::ConnectionLost { ambiguous: false };
        let open = async {
            let endpoint = Endpoint::bind("0.0.0.0:0")
                .await
                .map_err(|_| refused.clone())?;
            let (tx, mut rx) = endpoint.connect1(addr).await.map_err(|_| refused.clone())?;
            let hello = rx.recv().await.map_err(|_| refused.clone())?;
            let hello = hello.downcast::<Hello>().expect("servers greet with Hello");
            hello.result.map_err(ClientError::Db)?;
            Ok(Transport { tx, rx })
        };
        match madsim::time::timeout(Duration::from_millis(connect_timeout_ms), open).await {
            Ok(result) => result,
            Err(_elapsed) => Err(refused),
        }
    }

    /// Runs one statement. On a broken connection the connection is discarded (the server
    /// rolls back the open transaction) and the next statement opens a new one. Steering
    /// delay points sit before the statement is sent and after its result arrives.
    pub async fn execute(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> Result<QueryResult, ClientError> {
        steering::point(Point::DbSend, self.steering_site(Point::DbSend, sql)).await;
        let in_transaction = self.in_transaction;
        let result = self.execute_once(sql, params).await;
        let retry = self
            .pool
            .shared
            .config
            .retry_lost_connection_outside_transaction;
        let result = match result {
            Err(ClientError::ConnectionLost { .. }) if retry && !in_transaction => {
                assert!(self.transport.is_none());
                self.execute_once(sql, params).await
            }
            result => result,
        };
        if let Some(listener) = &self.pool.listener {
            listener(sql, &result);
        }
        let saw_rows = matches!(&result, Ok(r) if !r.rows.is_empty() || r.rows_affected > 0);
        self.transaction_saw_rows = self.in_transaction && (self.transaction_saw_rows || saw_rows);
        steering::point(Point::DbResult, self.steering_site(Point::DbResult, sql)).await;
        result
    }

    async fn execute_once(
        &mut self,
        sql: &str,
        params: &[Value],
    ) -> Result<QueryResult, ClientError> {
        // A pooled connection the server closed while idle (crash, restart) is reopened
        // silently: nothing was in flight on it.
        if let Some(transport) = &self.transport {
            if transport.tx.is_closed() && !self.in_transaction {
                self.transport = None;
            }
        }
        if self.transport.is_none() {
            if self.in_transaction {
                // The transaction died with the old connection; say so, without guessing.
                self.set_in_transaction(false, sql);
                return Err(ClientError::ConnectionLost { ambiguous: false });
            }
            let config = &self.pool.shared.config;
            let (addr, connect_timeout_ms) = (config.addr, config.connect_timeout_ms);
            self.transport = Some(Self::connect(addr, connect_timeout_ms).await?);
            // A new server session: the connection's configuration is applied again first,
            // as Laravel's connector does on every (re)connect.
            for setting in self.session.clone() {
                if let Err(error) = self.send(&setting, &[]).await {
                    self.break_connection();
                    return Err(match error {
                        ClientError::Db(_) => ClientError::ConnectionLost { ambiguous: false },
                        other => other,
                    });
                }
            }
        }
        self.send(sql, params).await
    }

    /// Sends one statement on the open connection and waits for its reply.
    async fn send(&mut self, sql: &str, params: &[Value]) -> Result<QueryResult, ClientError> {
        let ambiguous = statement_may_commit(sql, self.in_transaction);
        let transport = self.transport.as_mut().expect("connected above");
        let request = Request {
            sql: sql.to_string(),
            params: params.to_vec(),
            tag: self.pool.tag,
            application: self.pool.shared.application.clone(),
        };
        if transport.tx.send(Box::new(request)).await.is_err() {
            // Never delivered: nothing ran, but an open transaction is gone.
            self.break_connection();
            return Err(ClientError::ConnectionLost { ambiguous: false });
        }
        let timeout = Duration::from_millis(self.pool.shared.config.statement_timeout_ms);
        let reply = match madsim::time::timeout(timeout, transport.rx.recv()).await {
            Ok(Ok(reply)) => *reply.downcast::<Reply>().expect("servers reply with Reply"),
            Ok(Err(_reset)) => {
                self.break_connection();
                return Err(ClientError::ConnectionLost { ambiguous });
            }
            Err(_elapsed) => {
                // Closing makes the server roll back whatever is still open.
                self.break_connection();
                return Err(ClientError::Timeout { ambiguous });
            }
        };
        self.set_in_transaction(reply.in_transaction, sql);
        assert!(self.transport.is_some());
        reply.result.map_err(ClientError::Db)
    }

    fn break_connection(&mut self) {
        self.transport = None;
        self.set_in_transaction(false, "");
    }

    /// `BEGIN`, with the pool's [`TransactionIsolation`] if it has one.
    pub async fn begin(&mut self) -> Result<(), ClientError> {
        assert!(!self.in_transaction, "nested transactions are not modelled");
        let isolation = self.pool.shared.config.transaction_isolation.clone();
        if let Some(isolation) = isolation.as_ref().filter(|i| i.before_begin) {
            self.execute(&isolation.sql, &[]).await?;
        }
        self.execute("BEGIN", &[]).await?;
        if let Some(isolation) = isolation.filter(|i| !i.before_begin) {
            self.execute(&isolation.sql, &[]).await?;
        }
        Ok(())
    }

    /// `COMMIT`.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        self.execute("COMMIT", &[]).await.map(drop)
    }

    /// `ROLLBACK`.
    pub async fn rollback(&mut self) -> Result<(), ClientError> {
        self.execute("ROLLBACK", &[]).await.map(drop)
    }

    /// Runs `f` inside a transaction and commits, as `DB::transaction($fn, $attempts)` of the
    /// pool's [`LaravelVersion`] does (`Illuminate\Database\Concerns\ManagesTransactions`):
    /// a connection lost at BEGIN is reopened and BEGIN sent once more
    /// (`handleBeginTransactionException`); on an error in `f` the transaction is rolled back
    /// and, if the error is a concurrency error (`causedByConcurrencyError`) and attempts are
    /// left, `f` runs again; an error at COMMIT is retried the same way, without a rollback;
    /// any other error is returned as is, and so is an error of the rollback itself (Laravel
    /// throws the rollback's exception). `attempts` counts every run of `f`. `f` builds its
    /// future from the connection:
    /// `conn.transaction(3, |c| Box::pin(async move { c.execute(..).await?; Ok(()) }))`.
    pub async fn transaction<T, F>(&mut self, attempts: u32, mut f: F) -> Result<T, ClientError>
    where
        F: for<'c> FnMut(
            &'c mut DbConn,
        )
            -> Pin<Box<dyn Future<Output = Result<T, ClientError>> + Send + 'c>>,
    {
        assert!(attempts >= 1);
        let laravel = self.pool.shared.config.laravel;
        let mut attempt = 1;
        loop {
            match self.begin().await {
                Err(ClientError::ConnectionLost { .. }) => {
                    // `causedByLostConnection`: reconnect and begin again, once.
                    assert!(self.transport.is_none() && !self.in_transaction);
                    self.begin().await?
                }
                result => result?,
            }
            let error = match f(self).await {
                Ok(value) => match self.commit().await {
                    Ok(()) => return Ok(value),
                    Err(error) => error,
                },
                Err(error) => error,
            };
            // Laravel rolls back on an error in the callback; after a failed COMMIT, or on a
            // lost connection, the server has no transaction left to roll back.
            if self.in_transaction {
                if let Err(rollback_error) = self.rollback().await {
                    maybe(rollback_error.is_ambiguous());
                    return Err(rollback_error);
                }
            }
            if error.is_concurrency_error(laravel) && attempt < attempts {
                attempt += 1;
                continue;
            }
            return Err(error);
        }
    }
}

/// Records that both outcomes are legal here.
fn maybe(_: bool) {}

impl Drop for DbConn {
    fn drop(&mut self) {
        let transport = self.transport.take();
        // Left inside a transaction: close it so the server rolls back now and releases the
        // row locks, instead of holding them while the connection idles in the pool.
        let transport = if self.in_transaction { None } else { transport };
        self.set_in_transaction(false, "");
        self.pool.release(transport);
    }
}

/// Whether a statement whose reply was lost may have committed. Inside a transaction only
/// COMMIT can; outside, any write autocommits.
fn statement_may_commit(sql: &str, in_transaction: bool) -> bool {
    match statement_kind(sql) {
        StatementKind::Commit => in_transaction,
        StatementKind::Write => !in_transaction,
        StatementKind::Read => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Laravel 11.56's rule, error by error as the simulated engines raise them.
    #[test]
    fn laravel_retries_exactly_its_concurrency_errors() {
        let v11 = LaravelVersion::V11_56;
        let v12 = LaravelVersion::V12_29;
        let retried = |code: &str, message: &str| {
            let error = DbError::new(code, message);
            (
                v11.caused_by_concurrency_error(&error),
                v12.caused_by_concurrency_error(&error),
            )
        };
        let pg_serialization = "could not serialize access due to concurrent update";
        assert_eq!(retried("40001", pg_serialization), (true, true));
        assert_eq!(retried("40P01", "deadlock detected"), (true, true));
        assert_eq!(
            retried("55P03", "canceling statement due to lock timeout"),
            (false, false)
        );
        assert_eq!(
            retried(
                "1213",
                "Deadlock found when trying to get lock; try restarting transaction"
            ),
            (true, true)
        );
        assert_eq!(
            retried(
                "1205",
                "Lock wait timeout exceeded; try restarting transaction"
            ),
            (true, true)
        );
        assert_eq!(
            retried(
                "1020",
                "Record has changed since last read in table 'products'"
            ),
            (false, true)
        );
        assert_eq!(
            retried(
                "23505",
                "duplicate key value violates unique constraint \"k\""
            ),
            (false, false)
        );
        // The code alone decides for 40001, whatever the message says.
        assert_eq!(retried("1213", "x"), (true, true));
        assert_eq!(retried("1020", "x"), (false, false));
    }

    #[test]
    fn statement_may_commit_classifies() {
        assert!(statement_may_commit("COMMIT", true));
        assert!(!statement_may_commit("commit", false));
        assert!(statement_may_commit("  update t set v = 1", false));
        assert!(!statement_may_commit("UPDATE t SET v = 1", true));
        assert!(!statement_may_commit("select 1", false));
    }
}
