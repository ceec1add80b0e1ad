//! The database server node: puts the synchronous engine ([`Database`]) on the simulated network.
//!
//! Goal: model code talks to the database the way a PHP worker talks to PostgreSQL or MariaDB,
//! over connections that can be refused, blocked on a row lock, dropped, or cut by a crash, and
//! every statement spends virtual time, so lock waits and queues show up in latency.
//!
//! One task per connection executes that connection's statements in order. A statement the
//! engine reports as blocked parks the task on a oneshot channel; the engine's completions are
//! routed to those channels after every `execute`, `disconnect` and `advance`. A timer task
//! calls `advance` at the engine's next deadline (lock wait timeouts, deadlock checks).
//!
//! Key invariant: every engine session belongs to exactly one live connection task of the
//! current incarnation of the node, or is an orphan of it. When that task ends for any reason
//! (client gone, reply undeliverable, buggified drop) its guard disconnects the session, which
//! rolls back the open transaction and releases its row locks. If a statement of the session
//! is waiting for a lock, the session is orphaned instead, as on both real engines, which do not
//! notice a closed socket while a backend sleeps on a lock: the statement waits on with the
//! transaction's locks held, and the session ends when the statement does. A crash
//! of the node drops all tasks at once; the next start calls [`Database::crash`], so no session
//! of an earlier incarnation survives, while committed data does (it lives in [`DbNodeState`],
//! outside the node).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use madsim::net::{Endpoint, Receiver, Sender};
use madsim::rand::Rng;
use madsim::time::Instant;
use tokio::sync::{oneshot, Notify};

use super::{
    CommitRecord, Database, DbConfig, DbError, Exec, Profile, QueryResult, SessionId, Value,
};
use transcript::{FinishCause, TranscriptEvent, TranscriptHandle};

#[path = "transcript.rs"]
pub mod transcript;

/// The port a database node listens on unless configured otherwise.
pub const PORT_DEFAULT: u16 = 5432;

/// Server settings of one database node. All costs are virtual time.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbServerConfig {
    /// TCP-like port the node listens on.
    pub port: u16,
    /// Connections beyond this many get `53300` (PostgreSQL) or `1040` (MariaDB) and are closed.
    pub max_connections: usize,
    /// Cost range of a statement that only reads (SELECT, BEGIN, SET, ROLLBACK), microseconds.
    pub statement_read_cost_us_min: u64,
    /// Upper end (exclusive) of the read statement cost range, microseconds.
    pub statement_read_cost_us_max: u64,
    /// Cost range of a statement that writes (INSERT, UPDATE, DELETE), microseconds.
    pub statement_write_cost_us_min: u64,
    /// Upper end (exclusive) of the write statement cost range, microseconds.
    pub statement_write_cost_us_max: u64,
    /// Cost of a commit with a durable flush (COMMIT, or an autocommit write), microseconds.
    pub commit_cost_us_min: u64,
    /// Upper end (exclusive) of the commit cost range, microseconds.
    pub commit_cost_us_max: u64,
    /// Cost per row the statement touched (scanned or written), microseconds.
    pub row_cost_us_min: u64,
    /// Upper end (exclusive) of the per-row cost range, microseconds.
    pub row_cost_us_max: u64,
    /// Buggify: probability that a statement runs slow (an extra 10–500 ms).
    pub buggify_slow_statement_probability: f64,
    /// Buggify: probability that the connection drops after a COMMIT was applied but before the
    /// client hears of it.
    pub buggify_drop_after_commit_probability: f64,
    /// Buggify: probability that a reply is held back (an extra 1–200 ms) before it is sent.
    pub buggify_delay_reply_probability: f64,
    /// A read replica: statements that write are refused (`25006` / `1290`).
    pub read_only: bool,
}

impl Default for DbServerConfig {
    /// Defaults from DESIGN.md "Cost model": point read 0.05–0.1 ms, write 0.1–0.3 ms, commit
    /// with a durable flush 0.5–2 ms, plus a few microseconds per row touched.
    fn default() -> Self {
        DbServerConfig {
            port: PORT_DEFAULT,
            max_connections: 100,
            statement_read_cost_us_min: 50,
            statement_read_cost_us_max: 100,
            statement_write_cost_us_min: 100,
            statement_write_cost_us_max: 300,
            commit_cost_us_min: 500,
            commit_cost_us_max: 2_000,
            row_cost_us_min: 1,
            row_cost_us_max: 5,
            buggify_slow_statement_probability: 0.01,
            buggify_drop_after_commit_probability: 0.01,
            buggify_delay_reply_probability: 0.01,
            read_only: false,
        }
    }
}

impl DbServerConfig {
    /// Checks the relations between fields; a bad value is named with the field.
    pub fn validate(&self) -> Result<(), String> {
        let ranges = [
            (
                "statement_read_cost_us",
                self.statement_read_cost_us_min,
                self.statement_read_cost_us_max,
            ),
            (
                "statement_write_cost_us",
                self.statement_write_cost_us_min,
                self.statement_write_cost_us_max,
            ),
            (
                "commit_cost_us",
                self.commit_cost_us_min,
                self.commit_cost_us_max,
            ),
            ("row_cost_us", self.row_cost_us_min, self.row_cost_us_max),
        ];
        for (name, min, max) in ranges {
            // A zero cost would hide queueing: DESIGN.md forbids it.
            if min == 0 {
                return Err(format!("{name}_min: must be > 0, got 0"));
            }
            if min > max {
                return Err(format!(
                    "{name}_min: must be <= {name}_max ({max}), got {min}"
                ));
            }
        }
        if self.max_connections == 0 {
            return Err("max_connections: must be > 0, got 0".to_string());
        }
        let probabilities = [
            (
                "buggify_slow_statement_probability",
                self.buggify_slow_statement_probability,
            ),
            (
                "buggify_drop_after_commit_probability",
                self.buggify_drop_after_commit_probability,
            ),
            (
                "buggify_delay_reply_probability",
                self.buggify_delay_reply_probability,
            ),
        ];
        for (name, p) in probabilities {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name}: must be in 0..=1, got {p}"));
            }
        }
        Ok(())
    }
}

/// The named buggify points of the database layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbBuggify {
    /// A statement takes much longer than its cost.
    SlowStatement,
    /// The connection drops after a commit was applied, before the reply is sent.
    DropAfterCommit,
    /// A reply is held back before it is sent.
    DelayReply,
}

impl DbBuggify {
    /// The name of the point, as the fault registry knows it.
    pub fn name(self) -> &'static str {
        match self {
            DbBuggify::SlowStatement => "db.slow_statement",
            DbBuggify::DropAfterCommit => "db.drop_after_commit",
            DbBuggify::DelayReply => "db.delay_reply",
        }
    }
}

/// Whether a buggify point fires: asks the run's fault registry ([`crate::fault::buggify`]),
/// which is off unless the run's fault plan turns buggify on.
pub fn buggify(point: DbBuggify, probability: f64) -> bool {
    probability > 0.0 && crate::fault::buggify(point.name(), probability)
}

/// A delaying buggify point: the delay `draw` gives if it fires (recorded with its
/// length, so latency checks count it as a fault window).
pub fn buggify_delay(
    point: DbBuggify,
    probability: f64,
    draw: impl FnOnce() -> Duration,
) -> Option<Duration> {
    if probability > 0.0 {
        crate::fault::buggify_delay(point.name(), probability, draw)
    } else {
        None
    }
}

/// Sleeps exactly `duration` of virtual time. `madsim::time::sleep` rounds every sleep up to
/// 1 ms, which would make a 0.05 ms point read cost twenty times too much.
pub async fn sleep_precise(duration: Duration) {
    let mut sleep = pin!(madsim::time::sleep(Duration::ZERO));
    let deadline = Instant::now() + duration;
    sleep.as_mut().reset(deadline);
    sleep.await;
}

/// First message on every connection, from the server: accepted, or refused with an error.
pub(crate) struct Hello {
    pub(crate) result: Result<(), DbError>,
}

/// One statement, client to server.
pub(crate) struct Request {
    pub(crate) sql: String,
    pub(crate) params: Vec<Value>,
    /// The client's tag for the statement ([`super::client::DbPool::with_tag`]), for the
    /// transcript only.
    pub(crate) tag: Option<u64>,
    /// The client's `application_name`, for the transcript only.
    pub(crate) application: Option<Arc<str>>,
}

/// The outcome of one statement, server to client, with the session's transaction state after
/// it (the client needs it to classify a lost reply as ambiguous or not).
pub(crate) struct Reply {
    pub(crate) result: Result<QueryResult, DbError>,
    pub(crate) in_transaction: bool,
}

/// The kind of a statement, for its cost. Decided from the first keyword: the engine parses
/// the statement anyway, this only picks a cost range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatementKind {
    Read,
    Write,
    Commit,
}

pub(crate) fn statement_kind(sql: &str) -> StatementKind {
    let word = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    if word.eq_ignore_ascii_case("commit") || word.eq_ignore_ascii_case("end") {
        StatementKind::Commit
    } else if ["insert", "update", "delete", "replace"]
        .iter()
        .any(|w| word.eq_ignore_ascii_case(w))
    {
        StatementKind::Write
    } else {
        StatementKind::Read
    }
}

/// The database and its server bookkeeping. Lives outside the node (in an `Arc` the test or
/// runner holds), so committed data survives a crash of the node and is readable after the run.
pub struct DbNodeState {
    inner: Mutex<DbNodeInner>,
    /// Wakes the deadline timer when a statement blocks (the next deadline may have moved).
    timer_notify: Notify,
    /// Wakes a replica following this node when the commit log grew.
    commit_notify: Notify,
    /// When each commit record was appended, µs of the run's virtual time (0 for records of
    /// the setup before the run): for checkers that judge what was committed when.
    commit_times_us: Mutex<Vec<u64>>,
}

struct DbNodeInner {
    db: Database,
    profile: Profile,
    /// Incarnation of the node; sessions of an earlier incarnation are gone.
    epoch: u64,
    /// Virtual time zero of the engine: the first start of the node. Kept across restarts so
    /// the engine's clock never runs backwards.
    origin: Option<Instant>,
    /// Connection tasks parked on a blocked statement, by session.
    waiters: BTreeMap<SessionId, oneshot::Sender<Result<QueryResult, DbError>>>,
    /// Completions that arrived before their waiter registered (kept rather than lost).
    completions_unrouted: BTreeMap<SessionId, Result<QueryResult, DbError>>,
    /// Statements executed since the state was created, for statistics.
    statement_count: u64,
    /// The transcript recorder, when the node was created inside
    /// [`transcript::record_transcripts`]; `None` costs one test per event.
    transcript: Option<TranscriptHandle>,
}

impl DbNodeState {
    /// A fresh database with the given engine profile.
    pub fn new(profile: Profile, config: DbConfig) -> Arc<Self> {
        let db = Database::new(profile, config);
        let transcript = transcript::recorder_for_new_node(profile);
        Arc::new(DbNodeState {
            inner: Mutex::new(DbNodeInner {
                db,
                profile,
                epoch: 0,
                origin: None,
                waiters: BTreeMap::new(),
                completions_unrouted: BTreeMap::new(),
                statement_count: 0,
                transcript,
            }),
            timer_notify: Notify::new(),
            commit_notify: Notify::new(),
            commit_times_us: Mutex::new(Vec::new()),
        })
    }

    /// Waits until the commit log may have grown since the last wait (a follower checks
    /// [`Self::commit_count`] after it: the wake-up can be early, never lost).
    pub async fn commit_log_grew(&self) {
        self.commit_notify.notified().await;
    }

    /// Wakes the follower if the log is longer than `count_before`.
    fn tell_follower(&self, count_before: usize, count_after: usize) {
        assert!(count_after >= count_before, "the commit log only grows");
        if count_after > count_before {
            let now_us = crate::trace::virtual_now().as_micros() as u64;
            let mut times = self
                .commit_times_us
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // Records before the first one seen here were written by the setup.
            if times.len() < count_before {
                times.resize(count_before, 0);
            }
            times.resize(count_after, now_us);
            drop(times);
            self.commit_notify.notify_one();
        }
    }

    /// When each commit record of [`Self::commit_log`] was appended, µs of the run's virtual
    /// time (0 for the setup's records).
    pub fn commit_times_us(&self) -> Vec<u64> {
        let mut times = self
            .commit_times_us
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        times.resize(self.commit_count(), 0);
        times
    }

    fn lock(&self) -> MutexGuard<'_, DbNodeInner> {
        // A panic inside the engine poisons the lock; the run is lost anyway, so surface the
        // original panic's state rather than a second one.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the database. For setup (schema, seed data) before the run and for checkers
    /// after it; during a run, go through the network.
    pub fn with_database<T>(&self, f: impl FnOnce(&mut Database) -> T) -> T {
        f(&mut self.lock().db)
    }

    /// Committed rows of `table`, for checkers after the run.
    pub fn table_rows(&self, table: &str) -> Result<Vec<Vec<Value>>, DbError> {
        self.lock().db.table_rows(table)
    }

    /// The commit log so far, in commit order.
    pub fn commit_log(&self) -> Vec<CommitRecord> {
        self.lock().db.commit_log().to_vec()
    }

    /// Number of records in the commit log.
    pub fn commit_count(&self) -> usize {
        self.lock().db.commit_log().len()
    }

    /// The commit record at `index` in commit order, if there is one yet.
    pub fn commit_record(&self, index: usize) -> Option<CommitRecord> {
        self.lock().db.commit_log().get(index).cloned()
    }

    /// The engine profile.
    pub fn profile(&self) -> Profile {
        self.lock().profile
    }

    /// Open connections of the current incarnation: its engine sessions, orphaned ones
    /// included, since a backend whose client left while it waited for a lock still counts
    /// against `max_connections`.
    pub fn connection_count(&self) -> usize {
        self.lock().db.session_count()
    }

    /// Statements executed so far, over all incarnations.
    pub fn statement_count(&self) -> u64 {
        self.lock().statement_count
    }

    /// Starts a new incarnation: forgets every session of the previous one (open transactions
    /// are lost, committed data stays) and returns the new epoch.
    fn start(&self) -> u64 {
        let mut inner = self.lock();
        inner.record_start();
        inner.db.crash();
        inner.epoch += 1;
        // Dropping the senders wakes nothing: the tasks that waited died with the node.
        inner.waiters.clear();
        inner.completions_unrouted.clear();
        inner.epoch
    }
}

impl DbNodeInner {
    fn now(&self) -> Duration {
        let origin = self.origin.expect("the node has started");
        Instant::now().duration_since(origin)
    }

    /// Hands every finished blocked statement to its parked connection task.
    /// `waker` is the session whose statement or disconnect ran just before (none for a
    /// deadline), for the transcript.
    fn route_completions(&mut self, cause: FinishCause, waker: Option<SessionId>) {
        for (session, result) in self.db.take_completions() {
            self.record(|at_us| TranscriptEvent::Finish {
                session,
                result: result.clone(),
                cause,
                at_us,
                woken_by: waker,
            });
            match self.waiters.remove(&session) {
                // The waiter may have gone (client closed); its session is disconnected next.
                Some(waiter) => drop(waiter.send(result)),
                None => {
                    let previous = self.completions_unrouted.insert(session, result);
                    assert!(
                        previous.is_none(),
                        "two completions for one blocked statement"
                    );
                }
            }
        }
    }

    /// Virtual microseconds since the first start, for transcript events.
    fn now_us(&self) -> u64 {
        self.origin
            .map_or(0, |o| micros(Instant::now().duration_since(o)))
    }

    /// Records an event if this node records a transcript.
    fn record(&self, event: impl FnOnce(u64) -> TranscriptEvent) {
        if let Some(t) = &self.transcript {
            transcript::push(t, event(self.now_us()));
        }
    }

    /// A new incarnation starts: the first records what was set up before it (schema and
    /// committed rows), a later one is a crash of every session of the previous one.
    fn record_start(&mut self) {
        let Some(t) = self.transcript.clone() else {
            return;
        };
        if self.epoch > 0 {
            self.record(|at_us| TranscriptEvent::Crash { at_us });
            return;
        }
        let ddl: Vec<String> = self
            .db
            .commit_log()
            .iter()
            .filter_map(|r| r.ddl.clone())
            .collect();
        let mut tables = Vec::new();
        for statement in &ddl {
            let Some(table) = created_table(statement) else {
                continue;
            };
            let columns = self.db.table_columns(&table).unwrap_or_default();
            let rows = self.db.table_rows(&table).unwrap_or_default();
            tables.push((table, columns, rows));
        }
        let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
        t.setup = transcript::TranscriptSetup { ddl, tables };
    }

    fn read_only(&self) -> DbError {
        if self.profile.is_postgres() {
            DbError::new(
                "25006",
                "cannot execute statement in a read-only transaction",
            )
        } else {
            DbError::new(
                "1290",
                "The MariaDB server is running with the --read-only option so it cannot execute this statement",
            )
        }
    }

    fn too_many_connections(&self) -> DbError {
        if self.profile.is_postgres() {
            DbError::new("53300", "sorry, too many clients already")
        } else {
            DbError::new("1040", "Too many connections")
        }
    }
}

/// Disconnects the session when its connection task ends, however it ends.
struct SessionGuard {
    state: Arc<DbNodeState>,
    session: SessionId,
    epoch: u64,
    node: madsim::task::NodeId,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut inner = self.state.lock();
        // A task of an earlier incarnation: its session died with the crash. A task dropped
        // because its node was killed: the crash must not let a blocked statement of another
        // session run and commit once this one's locks go; the next start forgets them all.
        if inner.epoch != self.epoch || madsim::runtime::Handle::current().is_exit(self.node) {
            return;
        }
        assert!(inner.db.has_session(self.session));
        inner.waiters.remove(&self.session);
        inner.completions_unrouted.remove(&self.session);
        let count_before = inner.db.commit_log().len();
        let session = self.session;
        inner.record(|at_us| TranscriptEvent::Disconnect { session, at_us });
        inner.db.disconnect(self.session);
        if inner.db.has_session(session) {
            // Its statement waits on, holding the transaction's locks, until it ends.
            tracing::debug!(
                ?session,
                "db client gone while blocked; the statement waits on"
            );
        } else {
            tracing::debug!(
                ?session,
                "db connection closed; open transaction rolled back"
            );
        }
        inner.route_completions(FinishCause::Woken, Some(session));
        let count_after = inner.db.commit_log().len();
        drop(inner);
        self.state.timer_notify.notify_one();
        // Statements waiting on this session's locks may have run and committed.
        self.state.tell_follower(count_before, count_after);
    }
}

/// The database server as a value: a state plus a config, run with [`DbServer::serve`].
#[derive(Clone)]
pub struct DbServer {
    /// The database that outlives the node.
    pub state: Arc<DbNodeState>,
    /// How the server behaves.
    pub config: DbServerConfig,
}

impl DbServer {
    /// Runs the server in the current node until the node is killed (see [`serve`]).
    pub fn serve(self) -> impl std::future::Future<Output = ()> {
        serve(self.state, self.config)
    }

    /// The address clients connect to, given the node's IP.
    pub fn addr(&self, ip: std::net::IpAddr) -> SocketAddr {
        SocketAddr::new(ip, self.config.port)
    }
}

/// Runs the database server in the current madsim node until the node is killed. Use it as the
/// node's init task, so a restart serves again:
/// `rt.create_node().name("db").ip(ip).init(move || serve(state.clone(), config.clone())).build()`.
///
/// The new incarnation starts (forgetting every session of the previous one) when this is
/// called, not when the future first runs: madsim calls the init closure inside `restart`, so
/// the connection tasks of the previous incarnation, which madsim drops later, already see a
/// newer epoch and cannot roll back, wake or commit anything.
pub fn serve(
    state: Arc<DbNodeState>,
    config: DbServerConfig,
) -> impl std::future::Future<Output = ()> {
    if let Err(message) = config.validate() {
        panic!("invalid DbServerConfig: {message}");
    }
    let epoch = state.start();
    if let Some(t) = &state.lock().transcript {
        t.lock().unwrap_or_else(|p| p.into_inner()).read_only = config.read_only;
    }
    serve_incarnation(state, config, epoch)
}

async fn serve_incarnation(state: Arc<DbNodeState>, config: DbServerConfig, epoch: u64) {
    let node = madsim::plugin::node();
    {
        // The clock starts at the first incarnation's first poll: the init closure may run
        // outside the runtime's clock (when the node is built).
        let mut inner = state.lock();
        if inner.origin.is_none() {
            inner.origin = Some(Instant::now());
            if let Some(t) = &inner.transcript {
                let run_us = micros(crate::trace::virtual_now());
                t.lock().unwrap_or_else(|p| p.into_inner()).origin_run_us = run_us;
            }
        }
    }
    tracing::debug!(
        epoch,
        "db node started; sessions of earlier incarnations are gone"
    );
    let endpoint = match Endpoint::bind(("0.0.0.0", config.port)).await {
        Ok(endpoint) => endpoint,
        Err(_) => {
            // A restart without a kill keeps the previous incarnation's sockets bound (madsim
            // resets a node's sockets on kill only); they are dead, so clear them and bind again.
            madsim::net::NetSim::current().reset_node(node);
            Endpoint::bind(("0.0.0.0", config.port))
                .await
                .expect("the database port is free after a reset")
        }
    };
    let config = Arc::new(config);
    madsim::task::spawn(serve_deadlines(state.clone()));
    loop {
        let Ok((tx, rx, _peer)) = endpoint.accept1().await else {
            return;
        };
        let accepted = {
            let mut inner = state.lock();
            if inner.db.session_count() >= config.max_connections {
                Err(inner.too_many_connections())
            } else {
                let session = inner.db.connect();
                inner.record(|at_us| TranscriptEvent::Connect { session, at_us });
                Ok(session)
            }
        };
        match accepted {
            Err(error) => {
                tracing::debug!(%error, "db connection refused");
                // Like PostgreSQL, answer the startup with the error, then close.
                let _ = tx.send(Box::new(Hello { result: Err(error) })).await;
            }
            Ok(session) => {
                let guard = SessionGuard {
                    state: state.clone(),
                    session,
                    epoch,
                    node,
                };
                madsim::task::spawn(serve_connection(guard, config.clone(), tx, rx));
            }
        }
    }
}

/// Calls `advance` at each engine deadline (lock wait timeouts, deadlock checks).
async fn serve_deadlines(state: Arc<DbNodeState>) {
    loop {
        let (deadline, origin) = {
            let inner = state.lock();
            (inner.db.next_deadline(), inner.origin.expect("started"))
        };
        match deadline {
            None => state.timer_notify.notified().await,
            Some(deadline) => {
                let mut sleep = pin!(madsim::time::sleep(Duration::ZERO));
                sleep.as_mut().reset(origin + deadline);
                let notified = pin!(state.timer_notify.notified());
                // Whichever comes first: the deadline, or a new statement that may move it.
                madsim::export::futures::future::select(sleep, notified).await;
            }
        }
        let mut inner = state.lock();
        let now = inner.now();
        let count_before = inner.db.commit_log().len();
        inner.db.advance(now);
        for session in inner.db.take_clear_deadlock_checks() {
            inner.record(|at_us| TranscriptEvent::DeadlockCheck { session, at_us });
        }
        inner.route_completions(FinishCause::Deadline, None);
        let count_after = inner.db.commit_log().len();
        drop(inner);
        state.tell_follower(count_before, count_after);
    }
}

fn draw_us(min: u64, max: u64) -> Duration {
    assert!(min > 0);
    assert!(min <= max);
    let us = if min == max {
        min
    } else {
        madsim::rand::thread_rng().gen_range(min..max)
    };
    Duration::from_micros(us)
}

/// Executes one connection's statements in order until the client goes away.
async fn serve_connection(
    guard: SessionGuard,
    config: Arc<DbServerConfig>,
    tx: Sender,
    mut rx: Receiver,
) {
    let state = guard.state.clone();
    let session = guard.session;
    if tx.send(Box::new(Hello { result: Ok(()) })).await.is_err() {
        return;
    }
    loop {
        // The client closed the connection: the guard rolls back and releases locks.
        let Ok(message) = rx.recv().await else { return };
        let request = *message.downcast::<Request>().expect("clients send Request");

        let kind = statement_kind(&request.sql);
        if config.read_only && kind == StatementKind::Write {
            sleep_precise(draw_us(
                config.statement_read_cost_us_min,
                config.statement_read_cost_us_max,
            ))
            .await;
            let reply = {
                let inner = state.lock();
                Reply {
                    result: Err(inner.read_only()),
                    in_transaction: inner.db.in_transaction(session),
                }
            };
            if tx.send(Box::new(reply)).await.is_err() {
                return;
            }
            continue;
        }
        let in_transaction_before = state.lock().db.in_transaction(session);
        let commits = kind == StatementKind::Commit
            || (kind == StatementKind::Write && !in_transaction_before);
        // The statement runs (and a commit flushes) before its effects become visible and its
        // locks are released, so the base cost is spent first.
        let mut cost = match kind {
            StatementKind::Read | StatementKind::Commit => draw_us(
                config.statement_read_cost_us_min,
                config.statement_read_cost_us_max,
            ),
            StatementKind::Write => draw_us(
                config.statement_write_cost_us_min,
                config.statement_write_cost_us_max,
            ),
        };
        if commits {
            cost += draw_us(config.commit_cost_us_min, config.commit_cost_us_max);
        }
        if let Some(delay) = buggify_delay(
            DbBuggify::SlowStatement,
            config.buggify_slow_statement_probability,
            || draw_us(10_000, 500_000),
        ) {
            cost += delay;
        }
        sleep_precise(cost).await;

        let (exec, rows_touched) = {
            let mut inner = state.lock();
            let now = inner.now();
            inner.statement_count += 1;
            let count_before = inner.db.commit_log().len();
            inner.record(|at_us| TranscriptEvent::Execute {
                session,
                sql: request.sql.clone(),
                params: request.params.clone(),
                at_us,
                tag: request.tag,
                application: request.application.as_deref().map(str::to_string),
            });
            let exec = inner
                .db
                .execute(session, &request.sql, &request.params, now);
            match &exec {
                Exec::Done(result) => inner.record(|at_us| TranscriptEvent::Finish {
                    session,
                    result: result.clone(),
                    cause: FinishCause::Immediate,
                    at_us,
                    woken_by: None,
                }),
                Exec::Blocked => inner.record(|at_us| TranscriptEvent::Block {
                    session,
                    at_us,
                    table: inner.db.blocked_on(session).map(str::to_string),
                }),
            }
            let rows_touched = inner.db.stats().rows_touched;
            inner.route_completions(FinishCause::Woken, Some(session));
            state.tell_follower(count_before, inner.db.commit_log().len());
            let exec = match exec {
                Exec::Done(result) => Ok(result),
                Exec::Blocked => match inner.completions_unrouted.remove(&session) {
                    Some(result) => Ok(result),
                    None => {
                        // One statement at a time per connection: never two parked.
                        assert!(!inner.waiters.contains_key(&session));
                        let (waiter_tx, waiter_rx) = oneshot::channel();
                        inner.waiters.insert(session, waiter_tx);
                        Err(waiter_rx)
                    }
                },
            };
            (exec, rows_touched)
        };
        let result = match exec {
            Ok(result) => {
                sleep_precise(draw_rows_cost(&config, rows_touched)).await;
                result
            }
            Err(waiter_rx) => {
                // A new lock wait may bring the engine's next deadline forward.
                state.timer_notify.notify_one();
                let closed = pin!(tx.closed());
                match madsim::export::futures::future::select(waiter_rx, closed).await {
                    madsim::export::futures::future::Either::Left((Ok(result), _)) => result,
                    // The waiter was dropped by a restart, or the client went away while
                    // blocked: either way the guard disconnects the session.
                    _ => return,
                }
            }
        };

        let in_transaction = state.lock().db.in_transaction(session);
        // A successful COMMIT always ends the transaction; the client relies on it.
        assert!(!(kind == StatementKind::Commit && result.is_ok() && in_transaction));
        if commits
            && result.is_ok()
            && buggify(
                DbBuggify::DropAfterCommit,
                config.buggify_drop_after_commit_probability,
            )
        {
            // The commit is durable, but the client only sees the connection close.
            tracing::debug!(?session, "buggify: db connection dropped after commit");
            return;
        }
        if let Some(delay) = buggify_delay(
            DbBuggify::DelayReply,
            config.buggify_delay_reply_probability,
            || draw_us(1_000, 200_000),
        ) {
            sleep_precise(delay).await;
        }
        let reply = Reply {
            result,
            in_transaction,
        };
        if tx.send(Box::new(reply)).await.is_err() {
            return;
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The table a `CREATE TABLE` statement creates, for the transcript's setup.
fn created_table(statement: &str) -> Option<String> {
    let mut words = statement.split_whitespace();
    let create = words.next()?;
    let table = words.next()?;
    if !create.eq_ignore_ascii_case("create") || !table.eq_ignore_ascii_case("table") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("if") {
        // IF NOT EXISTS
        name = words.nth(2)?;
    }
    let name = name
        .split('(')
        .next()?
        .trim_matches(|c| c == '`' || c == '"');
    (!name.is_empty()).then(|| name.to_string())
}

fn draw_rows_cost(config: &DbServerConfig, rows_touched: u64) -> Duration {
    if rows_touched == 0 {
        return Duration::from_micros(1);
    }
    draw_us(config.row_cost_us_min, config.row_cost_us_max)
        * u32::try_from(rows_touched).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
