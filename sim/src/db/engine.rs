//! The engine: sessions, transactions and statement execution over [`storage`], [`lock`] and
//! [`ssi`], a synchronous state machine driven by the server node (or the conformance runner).
//!
//! A statement either finishes ([`Exec::Done`]) or blocks on a lock ([`Exec::Blocked`]). A
//! blocked statement keeps the locks it took and its statement snapshot, but its partial writes
//! are undone; when its lock is granted it runs again from the start. With the locks and the
//! snapshot kept, the re-run takes the same path as continuing would, and the engine needs no
//! resumable cursors. Results of statements that finish later are collected by
//! [`Database::take_completions`].
//!
//! Time is passed in (`now`, virtual time since the node started); the engine reads no clock.
//! Deadlines (lock wait timeouts, PostgreSQL's deadlock check after `deadlock_timeout`,
//! `statement_timeout`) fire in [`Database::advance`].
//!
//! Key invariants: every uncommitted row version belongs to an open transaction that holds
//! that row's exclusive lock; a session has at most one statement in flight; a transaction
//! waits for at most one lock.
//!
//! [`storage`]: super::storage
//! [`lock`]: super::lock
//! [`ssi`]: super::ssi

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::lock::{Grant, LockManager, LockMode, LockTarget};
use super::profile::{errors, DbConfig, Engine, Isolation, Profile};
use super::sql::{
    self, AggFn, BinOp, ColumnType, Expr, InsertValue, LockWaitPolicy, Plan, PlanCache, SelectItem,
    Stmt,
};
use super::ssi::{ReadKey, Ssi};
use super::storage::{
    CommitRecord, CommitSeq, IndexDef, Key, Pending, Row, RowVersions, RowWrite, Table, TxId,
    Version,
};
use super::value::{DbError, QueryResult, Value};

/// A client session (one connection).
pub type SessionId = u64;

/// The outcome of [`Database::execute`].
#[derive(Debug, Clone, PartialEq)]
pub enum Exec {
    /// The statement finished.
    Done(Result<QueryResult, DbError>),
    /// The statement waits for a lock; its result comes from [`Database::take_completions`].
    Blocked,
}

/// Counters of one database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbStats {
    /// Rows the last executed statement examined or wrote (drives its cost in virtual time).
    pub rows_touched: u64,
    /// Statements executed, including re-runs after lock waits.
    pub statements: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Transactions rolled back (by the client or by an error).
    pub rollbacks: u64,
    /// Statements that had to wait for a lock.
    pub lock_waits: u64,
    /// Deadlock victims.
    pub deadlocks: u64,
    /// Lock wait and statement timeouts.
    pub lock_timeouts: u64,
    /// Serialization failures (`40001`, `1020`).
    pub serialization_failures: u64,
}

#[derive(Debug, Clone)]
struct Undo {
    table: String,
    key: Key,
    previous: Option<Pending>,
}

#[derive(Debug, Clone)]
struct Tx {
    id: TxId,
    isolation: Isolation,
    /// Opened with BEGIN (else one autocommit statement).
    explicit: bool,
    /// The transaction snapshot (PostgreSQL RR/SER) or read view (InnoDB RR/SER).
    snapshot: Option<CommitSeq>,
    undo: Vec<Undo>,
    savepoints: Vec<(String, usize)>,
    /// PostgreSQL: an error happened; only ROLLBACK (TO SAVEPOINT) is accepted.
    aborted: bool,
    /// A query ran in this transaction (the isolation level can no longer change).
    queried: bool,
    /// Session settings to restore at the end of the transaction (`SET LOCAL`).
    saved_settings: Option<Settings>,
}

#[derive(Debug, Clone, PartialEq)]
struct Settings {
    pg_lock_timeout_ms: u64,
    pg_deadlock_timeout_ms: u64,
    pg_statement_timeout_ms: u64,
    innodb_lock_wait_timeout_s: u64,
    custom: BTreeMap<String, Value>,
}

#[derive(Debug, Clone)]
struct Blocked {
    plan: Arc<Plan>,
    params: Vec<Value>,
    mark: usize,
    statement_snapshot: Option<CommitSeq>,
    statement_started: Duration,
    lock_deadline: Option<Duration>,
    deadlock_check_at: Option<Duration>,
    statement_deadline: Option<Duration>,
    /// The table of the row lock waited for.
    table: String,
}

#[derive(Debug, Clone)]
struct Session {
    tx: Option<Tx>,
    isolation: Isolation,
    next_isolation: Option<Isolation>,
    settings: Settings,
    blocked: Option<Blocked>,
}

/// Why a statement did not finish.
enum Fail {
    Error(DbError),
    /// Queued for a lock on a row of this table.
    Wait(String),
}

impl From<DbError> for Fail {
    fn from(e: DbError) -> Self {
        Fail::Error(e)
    }
}

type Step<T> = Result<T, Fail>;

/// Where a statement resumes after a lock wait.
#[derive(Debug, Clone, Copy)]
struct Resume {
    mark: usize,
    statement_snapshot: Option<CommitSeq>,
    statement_started: Duration,
}

/// A bound expression: columns resolved to positions, parameters substituted.
#[derive(Debug, Clone)]
enum BExpr {
    Col(usize),
    Val(Value),
    Not(Box<BExpr>),
    Neg(Box<BExpr>),
    Bin(Box<BExpr>, BinOp, Box<BExpr>),
    IsNull(Box<BExpr>, bool),
    In(Box<BExpr>, Vec<BExpr>, bool),
}

/// How rows are found: which index positions are visited, in index order.
#[derive(Debug, Clone)]
enum Access {
    /// Primary key lookups.
    Keys(Vec<Key>),
    /// Equality on all columns of a secondary index.
    Index { index: usize, values: Vec<Key> },
    /// The whole table in primary key order.
    Scan,
}

/// One visited index position.
#[derive(Debug, Clone)]
enum Position {
    /// A row; `gap` is the gap before its index record that InnoDB's next-key lock covers
    /// (`None` for a unique lookup that found the row: InnoDB locks only the record then).
    Row { key: Key, gap: Option<LockTarget> },
    /// A gap with no row (a lookup that found nothing, or the end of a range).
    Gap(LockTarget),
}

/// The simulated SQL database.
#[derive(Debug)]
pub struct Database {
    profile: Profile,
    engine: Engine,
    config: DbConfig,
    tables: BTreeMap<String, Table>,
    sessions: BTreeMap<SessionId, Session>,
    tx_session: BTreeMap<TxId, SessionId>,
    locks: LockManager,
    ssi: Ssi,
    plans: PlanCache,
    last_commit: CommitSeq,
    next_tx: TxId,
    next_session: SessionId,
    log: Vec<CommitRecord>,
    completions: Vec<(SessionId, Result<QueryResult, DbError>)>,
    woken: VecDeque<TxId>,
    now: Duration,
    stats: DbStats,
}

impl Database {
    /// An empty database behaving like `profile`.
    pub fn new(profile: Profile, config: DbConfig) -> Database {
        assert!(config.validate().is_ok(), "{:?}", config.validate());
        Database {
            profile,
            engine: profile.engine(),
            config,
            tables: BTreeMap::new(),
            sessions: BTreeMap::new(),
            tx_session: BTreeMap::new(),
            locks: LockManager::default(),
            ssi: Ssi::default(),
            plans: PlanCache::default(),
            last_commit: 0,
            next_tx: 1,
            next_session: 1,
            log: Vec::new(),
            completions: Vec::new(),
            woken: VecDeque::new(),
            now: Duration::ZERO,
            stats: DbStats::default(),
        }
    }

    /// The profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Opens a session.
    pub fn connect(&mut self) -> SessionId {
        let id = self.next_session;
        self.next_session += 1;
        let settings = Settings {
            pg_lock_timeout_ms: self.config.pg_lock_timeout_ms,
            pg_deadlock_timeout_ms: self.config.pg_deadlock_timeout_ms,
            pg_statement_timeout_ms: self.config.pg_statement_timeout_ms,
            innodb_lock_wait_timeout_s: self.config.innodb_lock_wait_timeout_s,
            custom: BTreeMap::new(),
        };
        self.sessions.insert(
            id,
            Session {
                tx: None,
                isolation: self.profile.isolation(),
                next_isolation: None,
                settings,
                blocked: None,
            },
        );
        id
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Whether `session` is inside an explicit transaction (after BEGIN, until it ends).
    pub fn in_transaction(&self, session: SessionId) -> bool {
        self.sessions
            .get(&session)
            .and_then(|s| s.tx.as_ref())
            .is_some_and(|tx| tx.explicit)
    }

    /// Whether `session` has a statement waiting for a lock.
    pub fn is_blocked(&self, session: SessionId) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| s.blocked.is_some())
    }

    /// The table whose row lock `session` waits for, if it is blocked.
    pub fn blocked_on(&self, session: SessionId) -> Option<&str> {
        self.sessions
            .get(&session)
            .and_then(|s| s.blocked.as_ref())
            .map(|b| b.table.as_str())
    }

    /// Counters.
    pub fn stats(&self) -> DbStats {
        self.stats.clone()
    }

    /// Every commit so far, in order.
    pub fn commit_log(&self) -> &[CommitRecord] {
        &self.log
    }

    /// Results of blocked statements that finished since the last call, in finishing order.
    pub fn take_completions(&mut self) -> Vec<(SessionId, Result<QueryResult, DbError>)> {
        std::mem::take(&mut self.completions)
    }

    /// The committed rows of `table`, in primary key order.
    pub fn table_rows(&self, table: &str) -> Result<Vec<Vec<Value>>, DbError> {
        let t = self
            .tables
            .get(table)
            .ok_or_else(|| errors::no_such_table(self.engine, table))?;
        Ok(t.rows
            .values()
            .filter_map(|rv| rv.latest_committed().and_then(|v| v.data.clone()))
            .collect())
    }

    /// The column names of `table`.
    pub fn table_columns(&self, table: &str) -> Option<Vec<String>> {
        self.tables
            .get(table)
            .map(|t| t.columns.iter().map(|c| c.name.clone()).collect())
    }

    /// The earliest pending deadline (lock wait timeout, deadlock check, statement timeout).
    pub fn next_deadline(&self) -> Option<Duration> {
        self.sessions
            .values()
            .filter_map(|s| s.blocked.as_ref())
            .flat_map(|b| [b.lock_deadline, b.deadlock_check_at, b.statement_deadline])
            .flatten()
            .min()
    }

    /// Fires every deadline at or before `now`, in time order.
    pub fn advance(&mut self, now: Duration) {
        assert!(now >= self.now, "time never goes back");
        loop {
            let next = self
                .sessions
                .iter()
                .filter_map(|(&id, s)| s.blocked.as_ref().map(|b| (id, b)))
                .flat_map(|(id, b)| {
                    [
                        b.statement_deadline.map(|d| (d, 0u8, id)),
                        b.lock_deadline.map(|d| (d, 1u8, id)),
                        b.deadlock_check_at.map(|d| (d, 2u8, id)),
                    ]
                })
                .flatten()
                .filter(|&(d, _, _)| d <= now)
                .min();
            let Some((deadline, kind, session)) = next else {
                break;
            };
            self.now = self.now.max(deadline);
            match kind {
                0 => {
                    self.stats.lock_timeouts += 1;
                    self.fail_blocked(session, errors::statement_timeout());
                }
                1 => {
                    self.stats.lock_timeouts += 1;
                    let engine = self.engine;
                    self.fail_blocked(session, errors::lock_timeout(engine));
                }
                _ => {
                    let tx = self.session_tx(session);
                    if self.locks.find_cycle(tx).is_some() {
                        self.stats.deadlocks += 1;
                        let engine = self.engine;
                        self.fail_blocked(session, errors::deadlock(engine));
                    } else if let Some(b) = self
                        .sessions
                        .get_mut(&session)
                        .and_then(|s| s.blocked.as_mut())
                    {
                        // PostgreSQL checks once per wait; a later cycle is found by a later
                        // waiter's timer.
                        b.deadlock_check_at = None;
                    }
                }
            }
            self.drain_wakeups();
        }
        self.now = now;
    }

    /// Closes `session`: a blocked statement is abandoned, the open transaction rolls back and
    /// its locks are released.
    pub fn disconnect(&mut self, session: SessionId) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        s.blocked = None;
        if let Some(tx) = s.tx.as_ref().map(|t| t.id) {
            self.locks.cancel_wait(tx);
            self.rollback_tx(session);
        }
        self.sessions.remove(&session);
        self.completions.retain(|(s, _)| *s != session);
        self.drain_wakeups();
        assert!(!self.sessions.contains_key(&session));
    }

    /// The server crashed: every session and uncommitted version is gone, committed data stays.
    pub fn crash(&mut self) {
        self.sessions.clear();
        self.tx_session.clear();
        self.locks.clear();
        self.ssi.clear();
        self.completions.clear();
        self.woken.clear();
        for table in self.tables.values_mut() {
            table.rows.retain(|_, rv| {
                rv.pending = None;
                !rv.committed.is_empty()
            });
        }
    }

    /// Applies a commit of another database (a replica following its primary).
    pub fn apply_commit_record(&mut self, record: &CommitRecord) {
        if let Some(ddl) = &record.ddl {
            let plan = self
                .plans
                .get(self.engine, ddl)
                .expect("a logged schema statement parses");
            self.ddl(&plan.stmt, ddl)
                .expect("a logged schema statement applies");
            return;
        }
        self.last_commit += 1;
        let seq = self.last_commit;
        for write in &record.writes {
            let table = self
                .tables
                .get_mut(&write.table)
                .expect("a replica has the primary's schema");
            if let Some(row) = &write.row {
                table.index_row(&write.key, row);
            }
            let rv = table.rows.entry(write.key.clone()).or_default();
            rv.committed.push(Version {
                seq,
                tx: 0,
                data: write.row.clone(),
            });
            rv.prune(seq);
        }
        self.log.push(CommitRecord {
            seq,
            ddl: None,
            writes: record.writes.clone(),
        });
    }

    /// Executes one statement of `session` at virtual time `now`.
    pub fn execute(
        &mut self,
        session: SessionId,
        text: &str,
        params: &[Value],
        now: Duration,
    ) -> Exec {
        assert!(now >= self.now, "time never goes back");
        self.now = now;
        self.stats.rows_touched = 0;
        let Some(s) = self.sessions.get(&session) else {
            return Exec::Done(Err(DbError::new("08003", "connection does not exist")));
        };
        assert!(s.blocked.is_none(), "one statement at a time per session");
        let plan = match self.plans.get(self.engine, text) {
            Ok(plan) => plan,
            Err(e) => {
                self.fail_outside_statement(session, &e);
                return Exec::Done(Err(e));
            }
        };
        if params.len() != plan.param_count {
            let e = errors::bind_count(self.engine, params.len(), plan.param_count);
            self.fail_outside_statement(session, &e);
            return Exec::Done(Err(e));
        }
        if matches!(plan.stmt, Stmt::CreateTable(_) | Stmt::CreateIndex(_)) {
            let result = self.schema(session, text, &plan);
            if let Err(e) = &result {
                self.fail_outside_statement(session, e);
            }
            return Exec::Done(result);
        }
        let done = self.run(session, plan, params.to_vec(), None);
        self.drain_wakeups();
        match done {
            Some(result) => Exec::Done(result),
            None => {
                // Blocked, unless a deadlock resolution or wake-up already finished it.
                if let Some(i) = self.completions.iter().position(|(s, _)| *s == session) {
                    Exec::Done(self.completions.remove(i).1)
                } else {
                    assert!(self.is_blocked(session));
                    Exec::Blocked
                }
            }
        }
    }

    fn session_tx(&self, session: SessionId) -> TxId {
        self.sessions[&session]
            .tx
            .as_ref()
            .expect("session has a transaction")
            .id
    }

    fn tx_mut(&mut self, session: SessionId) -> &mut Tx {
        self.sessions
            .get_mut(&session)
            .and_then(|s| s.tx.as_mut())
            .expect("session has a transaction")
    }

    /// An error before the statement ran (parse, bind): PostgreSQL aborts an open
    /// transaction block; MariaDB keeps it.
    fn fail_outside_statement(&mut self, session: SessionId, _e: &DbError) {
        if self.engine == Engine::Postgres && self.in_transaction(session) {
            self.pg_abort(session);
        }
    }

    /// Runs (or re-runs) a statement. `None` if it blocked.
    fn run(
        &mut self,
        session: SessionId,
        plan: Arc<Plan>,
        params: Vec<Value>,
        resume: Option<Resume>,
    ) -> Option<Result<QueryResult, DbError>> {
        self.stats.statements += 1;
        if !plan.stmt.is_dml() {
            assert!(resume.is_none());
            return Some(self.control(session, &plan.stmt, &params));
        }
        let aborted = self.sessions[&session]
            .tx
            .as_ref()
            .is_some_and(|t| t.aborted);
        if aborted {
            return Some(Err(errors::in_failed_transaction()));
        }
        if self.sessions[&session].tx.is_none() {
            self.begin_tx(session, false);
        }
        let tx = self.session_tx(session);
        if self.ssi.is_doomed(tx) {
            let e = errors::rw_dependency();
            self.stats.serialization_failures += 1;
            let mark = self.tx_mut(session).undo.len();
            self.statement_failed(session, &e, mark);
            return Some(Err(e));
        }
        self.tx_mut(session).queried = true;
        let mark = resume.map_or_else(|| self.tx_mut(session).undo.len(), |r| r.mark);
        let statement_started = resume.map_or(self.now, |r| r.statement_started);
        let statement_snapshot = match resume {
            Some(r) => r.statement_snapshot,
            None => self.statement_snapshot(session, &plan.stmt),
        };
        let result = self.dml(session, &plan.stmt, &params, statement_snapshot);
        match result {
            Ok(result) => {
                let implicit = !self.tx_mut(session).explicit;
                if implicit {
                    if let Err(e) = self.commit_tx(session) {
                        return Some(Err(e));
                    }
                }
                Some(Ok(result))
            }
            Err(Fail::Error(e)) => {
                if e.is_serialization_failure() {
                    self.stats.serialization_failures += 1;
                }
                self.statement_failed(session, &e, mark);
                Some(Err(e))
            }
            Err(Fail::Wait(table)) => {
                self.stats.lock_waits += 1;
                let tx = self.session_tx(session);
                tracing::debug!(
                    session,
                    tx,
                    table = %table,
                    target = ?self.locks.waiting_target(tx),
                    waits_for = ?self.locks.waits_for(tx),
                    "lock wait"
                );
                self.undo_to(session, mark);
                let settings = self.sessions[&session].settings.clone();
                let now = self.now;
                let (lock_deadline, deadlock_check_at, statement_deadline) = match self.engine {
                    Engine::Postgres => (
                        (settings.pg_lock_timeout_ms > 0)
                            .then(|| now + Duration::from_millis(settings.pg_lock_timeout_ms)),
                        Some(now + Duration::from_millis(settings.pg_deadlock_timeout_ms)),
                        (settings.pg_statement_timeout_ms > 0).then(|| {
                            statement_started
                                + Duration::from_millis(settings.pg_statement_timeout_ms)
                        }),
                    ),
                    Engine::InnoDb => (
                        Some(now + Duration::from_secs(settings.innodb_lock_wait_timeout_s)),
                        None,
                        None,
                    ),
                };
                self.sessions.get_mut(&session).expect("session").blocked = Some(Blocked {
                    plan,
                    params,
                    mark,
                    statement_snapshot,
                    statement_started,
                    lock_deadline,
                    deadlock_check_at,
                    statement_deadline,
                    table,
                });
                if self.engine == Engine::InnoDb {
                    self.innodb_deadlock_check(session);
                }
                None
            }
        }
    }

    /// InnoDB detects a deadlock as soon as a wait closes a cycle, and rolls back the
    /// lightest transaction of the cycle (rows changed plus locks), the requester on a tie.
    /// Rolling back a victim that was only on the path can leave another cycle through the
    /// requester (its other blockers still wait for it), so this repeats until none is left.
    fn innodb_deadlock_check(&mut self, session: SessionId) {
        let tx = self.session_tx(session);
        loop {
            if self.locks.waiting_target(tx).is_none() {
                return;
            }
            let Some(cycle) = self.locks.find_cycle(tx) else {
                return;
            };
            tracing::debug!(tx, ?cycle, "deadlock");
            let weight = |db: &Database, t: TxId| {
                let undo = db.sessions[&db.tx_session[&t]]
                    .tx
                    .as_ref()
                    .map_or(0, |x| x.undo.len() as u64);
                db.locks.weight(t) + undo
            };
            let mut victim = tx;
            let mut victim_weight = weight(self, tx);
            for &t in cycle.iter().skip(1) {
                let w = weight(self, t);
                if w < victim_weight {
                    victim = t;
                    victim_weight = w;
                }
            }
            self.stats.deadlocks += 1;
            let victim_session = self.tx_session[&victim];
            let engine = self.engine;
            self.fail_blocked(victim_session, errors::deadlock(engine));
            if victim == tx {
                return;
            }
        }
    }

    /// Ends the blocked statement of `session` with `error`.
    fn fail_blocked(&mut self, session: SessionId, error: DbError) {
        tracing::debug!(session, code = error.code(), "blocked statement failed");
        let blocked = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.blocked.take())
            .expect("a blocked session");
        let tx = self.session_tx(session);
        let woken = self.locks.cancel_wait(tx);
        self.woken.extend(woken);
        self.statement_failed(session, &error, blocked.mark);
        self.completions.push((session, Err(error)));
    }

    /// Re-runs statements whose lock was granted, until none is left.
    fn drain_wakeups(&mut self) {
        while let Some(tx) = self.woken.pop_front() {
            let Some(&session) = self.tx_session.get(&tx) else {
                continue;
            };
            let Some(blocked) = self
                .sessions
                .get_mut(&session)
                .and_then(|s| s.blocked.take())
            else {
                continue;
            };
            tracing::debug!(session, tx, "lock granted; statement runs again");
            if self.locks.waiting_target(tx).is_some() {
                // Still queued (woken for an earlier grant): keep waiting.
                self.sessions.get_mut(&session).expect("session").blocked = Some(blocked);
                continue;
            }
            let resume = Resume {
                mark: blocked.mark,
                statement_snapshot: blocked.statement_snapshot,
                statement_started: blocked.statement_started,
            };
            if let Some(result) = self.run(
                session,
                blocked.plan.clone(),
                blocked.params.clone(),
                Some(resume),
            ) {
                self.completions.push((session, result));
            }
        }
    }

    /// The snapshot a statement reads with, taking the transaction's snapshot where the engine
    /// and isolation level take it at this statement.
    fn statement_snapshot(&mut self, session: SessionId, stmt: &Stmt) -> Option<CommitSeq> {
        let engine = self.engine;
        let last = self.last_commit;
        let tx = self.tx_mut(session);
        let isolation = tx.isolation;
        let plain_select = matches!(stmt, Stmt::Select(s) if s.lock.is_none());
        match (engine, isolation) {
            (Engine::Postgres, Isolation::ReadUncommitted | Isolation::ReadCommitted) => Some(last),
            (Engine::Postgres, _) => {
                let first = tx.snapshot.is_none();
                let snapshot = *tx.snapshot.get_or_insert(last);
                let id = tx.id;
                if first && isolation == Isolation::Serializable {
                    self.ssi.begin(id, snapshot);
                }
                Some(snapshot)
            }
            (Engine::InnoDb, Isolation::ReadUncommitted) => None,
            (Engine::InnoDb, Isolation::ReadCommitted) => plain_select.then_some(last),
            (Engine::InnoDb, _) => {
                if plain_select && !(isolation == Isolation::Serializable && tx.explicit) {
                    Some(*tx.snapshot.get_or_insert(last))
                } else {
                    None
                }
            }
        }
    }

    fn begin_tx(&mut self, session: SessionId, explicit: bool) {
        let id = self.next_tx;
        self.next_tx += 1;
        let s = self.sessions.get_mut(&session).expect("session");
        assert!(s.tx.is_none());
        let isolation = s.next_isolation.take().unwrap_or(s.isolation);
        s.tx = Some(Tx {
            id,
            isolation,
            explicit,
            snapshot: None,
            undo: Vec::new(),
            savepoints: Vec::new(),
            aborted: false,
            queried: false,
            saved_settings: None,
        });
        self.tx_session.insert(id, session);
    }

    /// Ends the transaction of `session` and restores `SET LOCAL` settings.
    fn end_tx(&mut self, session: SessionId) -> Tx {
        let s = self.sessions.get_mut(&session).expect("session");
        let tx = s.tx.take().expect("open transaction");
        if let Some(saved) = &tx.saved_settings {
            s.settings = saved.clone();
        }
        self.tx_session.remove(&tx.id);
        let woken = self.locks.release_all(tx.id);
        self.woken.extend(woken);
        tx
    }

    fn commit_tx(&mut self, session: SessionId) -> Result<(), DbError> {
        let tx = self.session_tx(session);
        if self.ssi.tracks(tx) && !self.ssi.can_commit(tx) {
            self.stats.serialization_failures += 1;
            self.rollback_tx(session);
            return Err(errors::rw_dependency());
        }
        let tx = self.end_tx(session);
        self.stats.commits += 1;
        let mut keys: BTreeSet<(String, Key)> = BTreeSet::new();
        for undo in &tx.undo {
            keys.insert((undo.table.clone(), undo.key.clone()));
        }
        let seq = self.last_commit + 1;
        let mut writes = Vec::new();
        let horizon = self.snapshot_horizon();
        for (table_name, key) in keys {
            let table = self.tables.get_mut(&table_name).expect("written table");
            let rv = table.rows.get_mut(&key).expect("written row");
            let Some(pending) = rv.pending.take() else {
                continue;
            };
            assert_eq!(pending.tx, tx.id, "only the lock holder writes a row");
            if rv.committed.is_empty() && pending.data.is_none() {
                // Inserted and deleted by this transaction: nothing to commit.
                table.rows.remove(&key);
                continue;
            }
            rv.committed.push(Version {
                seq,
                tx: tx.id,
                data: pending.data.clone(),
            });
            rv.prune(horizon.unwrap_or(seq));
            writes.push(RowWrite {
                table: table_name,
                key,
                row: pending.data,
            });
        }
        if !writes.is_empty() || self.ssi.tracks(tx.id) {
            // A read-only serializable transaction still takes a place in commit order.
            self.last_commit = seq;
        }
        if self.ssi.tracks(tx.id) {
            for doomed in self.ssi.commit(tx.id, seq) {
                self.ssi.doom(doomed);
            }
            self.ssi.cleanup();
        }
        if !writes.is_empty() {
            self.log.push(CommitRecord {
                seq,
                ddl: None,
                writes,
            });
        }
        Ok(())
    }

    /// The oldest snapshot any open transaction or blocked statement may still read at.
    fn snapshot_horizon(&self) -> Option<CommitSeq> {
        self.sessions
            .values()
            .flat_map(|s| {
                [
                    s.tx.as_ref().and_then(|t| t.snapshot),
                    s.blocked.as_ref().and_then(|b| b.statement_snapshot),
                ]
            })
            .flatten()
            .min()
    }

    fn rollback_tx(&mut self, session: SessionId) {
        self.undo_to(session, 0);
        let tx = self.end_tx(session);
        self.ssi.abort(tx.id);
        self.ssi.cleanup();
        self.stats.rollbacks += 1;
    }

    fn undo_to(&mut self, session: SessionId, mark: usize) {
        let tx = self.tx_mut(session);
        assert!(mark <= tx.undo.len());
        let undo: Vec<Undo> = tx.undo.drain(mark..).rev().collect();
        for u in undo {
            let table = self.tables.get_mut(&u.table).expect("written table");
            let rv = table.rows.get_mut(&u.key).expect("written row");
            rv.pending = u.previous;
            if rv.pending.is_none() && rv.committed.is_empty() {
                table.rows.remove(&u.key);
            }
        }
    }

    /// PostgreSQL: an error aborts the transaction block. Without a savepoint to return to,
    /// its work is undone and its locks released at once; the block then answers `25P02`
    /// until ROLLBACK.
    fn pg_abort(&mut self, session: SessionId) {
        let tx = self.tx_mut(session);
        tx.aborted = true;
        if tx.savepoints.is_empty() {
            let id = tx.id;
            self.undo_to(session, 0);
            let woken = self.locks.release_all(id);
            self.woken.extend(woken);
            self.ssi.abort(id);
        }
    }

    /// Applies the engine's rollback rule for an error of a statement that started at `mark`.
    fn statement_failed(&mut self, session: SessionId, e: &DbError, mark: usize) {
        let Some(tx) = self.sessions[&session].tx.as_ref() else {
            return;
        };
        if !tx.explicit {
            self.rollback_tx(session);
            return;
        }
        match self.engine {
            Engine::Postgres => {
                self.undo_to(session, mark);
                self.pg_abort(session);
            }
            Engine::InnoDb => {
                if e.is_deadlock() || e.code() == "1020" {
                    // InnoDB rolls back the whole transaction; the session is in autocommit
                    // mode again.
                    self.rollback_tx(session);
                } else {
                    self.undo_to(session, mark);
                }
            }
        }
    }

    // ---- control statements ----

    fn control(
        &mut self,
        session: SessionId,
        stmt: &Stmt,
        params: &[Value],
    ) -> Result<QueryResult, DbError> {
        let engine = self.engine;
        let in_tx = self.sessions[&session].tx.is_some();
        let aborted = self.sessions[&session]
            .tx
            .as_ref()
            .is_some_and(|t| t.aborted);
        let ok = Ok(QueryResult::default());
        match stmt {
            Stmt::Begin => {
                if in_tx {
                    match engine {
                        // A warning: there is already a transaction in progress.
                        Engine::Postgres => return ok,
                        // BEGIN commits the open transaction first.
                        Engine::InnoDb => self.commit_tx(session)?,
                    }
                }
                self.begin_tx(session, true);
                ok
            }
            Stmt::Commit => {
                if !in_tx {
                    return ok;
                }
                if aborted {
                    // PostgreSQL answers COMMIT of a failed block with ROLLBACK.
                    self.rollback_tx(session);
                    return ok;
                }
                self.commit_tx(session)?;
                ok
            }
            Stmt::Rollback => {
                if in_tx {
                    self.rollback_tx(session);
                }
                ok
            }
            Stmt::Savepoint(name) => {
                if !in_tx {
                    return match engine {
                        Engine::Postgres => Err(errors::no_transaction_block("SAVEPOINT")),
                        Engine::InnoDb => ok,
                    };
                }
                if aborted {
                    return Err(errors::in_failed_transaction());
                }
                let tx = self.tx_mut(session);
                if engine == Engine::InnoDb {
                    tx.savepoints.retain(|(n, _)| n != name);
                }
                let mark = tx.undo.len();
                tx.savepoints.push((name.clone(), mark));
                ok
            }
            Stmt::RollbackTo(name) | Stmt::Release(name) => {
                let rollback = matches!(stmt, Stmt::RollbackTo(_));
                let found = self.sessions[&session]
                    .tx
                    .as_ref()
                    .and_then(|tx| tx.savepoints.iter().rposition(|(n, _)| n == name));
                let Some(position) = found else {
                    if engine == Engine::Postgres && !in_tx {
                        let what = if rollback {
                            "ROLLBACK TO SAVEPOINT"
                        } else {
                            "RELEASE SAVEPOINT"
                        };
                        return Err(errors::no_transaction_block(what));
                    }
                    if aborted && !rollback {
                        return Err(errors::in_failed_transaction());
                    }
                    let e = errors::no_savepoint(engine, name);
                    if engine == Engine::Postgres && in_tx {
                        self.pg_abort(session);
                    }
                    return Err(e);
                };
                if aborted && !rollback {
                    return Err(errors::in_failed_transaction());
                }
                let mark = self.tx_mut(session).savepoints[position].1;
                if rollback {
                    self.undo_to(session, mark);
                    let tx = self.tx_mut(session);
                    tx.savepoints.truncate(position + 1);
                    tx.aborted = false;
                } else {
                    self.tx_mut(session).savepoints.truncate(position);
                }
                ok
            }
            Stmt::SetIsolation {
                level,
                session: whole_session,
            } => {
                if aborted {
                    return Err(errors::in_failed_transaction());
                }
                match engine {
                    Engine::Postgres => {
                        if let Some(tx) =
                            self.sessions.get_mut(&session).and_then(|s| s.tx.as_mut())
                        {
                            if tx.queried {
                                let e = errors::isolation_after_query(engine);
                                self.pg_abort(session);
                                return Err(e);
                            }
                            tx.isolation = *level;
                        } else if *whole_session {
                            self.sessions.get_mut(&session).expect("session").isolation = *level;
                        }
                        // Outside a transaction block PostgreSQL warns and does nothing.
                        ok
                    }
                    Engine::InnoDb => {
                        let s = self.sessions.get_mut(&session).expect("session");
                        if *whole_session {
                            s.isolation = *level;
                        } else if in_tx {
                            return Err(errors::isolation_after_query(engine));
                        } else {
                            s.next_isolation = Some(*level);
                        }
                        ok
                    }
                }
            }
            Stmt::Set { name, value, local } => {
                if aborted {
                    return Err(errors::in_failed_transaction());
                }
                let value = bind(engine, value, &[], params).and_then(|e| eval(engine, &e, &[]));
                let value = match value {
                    Ok(v) => v,
                    Err(e) => {
                        if engine == Engine::Postgres && in_tx {
                            self.pg_abort(session);
                        }
                        return Err(e);
                    }
                };
                let result = self.set(session, name, value, *local);
                if result.is_err() && engine == Engine::Postgres && in_tx {
                    self.pg_abort(session);
                }
                result.map(|()| QueryResult::default())
            }
            Stmt::CreateTable(_) | Stmt::CreateIndex(_) => {
                unreachable!("schema statements are routed in execute")
            }
            Stmt::Select(_) | Stmt::Insert(_) | Stmt::Update(_) | Stmt::Delete(_) => {
                unreachable!("DML is not a control statement")
            }
        }
    }

    fn set(
        &mut self,
        session: SessionId,
        name: &str,
        value: Value,
        local: bool,
    ) -> Result<(), DbError> {
        let engine = self.engine;
        let in_tx = self.sessions[&session].tx.is_some();
        let text = value.to_string();
        let s = self.sessions.get_mut(&session).expect("session");
        if local {
            if !in_tx {
                // PostgreSQL: SET LOCAL outside a transaction block has no effect.
                return Ok(());
            }
            let saved = s.settings.clone();
            let tx = s.tx.as_mut().expect("transaction");
            tx.saved_settings.get_or_insert(saved);
        }
        match (engine, name) {
            (Engine::Postgres, "lock_timeout" | "deadlock_timeout" | "statement_timeout") => {
                let ms = parse_pg_duration_ms(&value)
                    .ok_or_else(|| errors::invalid_setting(engine, name, &text))?;
                if name == "deadlock_timeout" && ms == 0 {
                    return Err(errors::invalid_setting(engine, name, &text));
                }
                match name {
                    "lock_timeout" => s.settings.pg_lock_timeout_ms = ms,
                    "deadlock_timeout" => s.settings.pg_deadlock_timeout_ms = ms,
                    _ => s.settings.pg_statement_timeout_ms = ms,
                }
                Ok(())
            }
            (Engine::Postgres, custom) if custom.contains('.') => {
                // Custom settings (`SET app.tenant_id = '3'`) are how tenancy packages carry
                // the tenant on a pooled connection.
                s.settings
                    .custom
                    .insert(custom.to_string(), Value::Text(text));
                Ok(())
            }
            (Engine::InnoDb, "innodb_lock_wait_timeout") => {
                let seconds = match value {
                    Value::Int(i) if (1..=1_073_741_824).contains(&i) => i as u64,
                    _ => return Err(errors::invalid_setting(engine, name, &text)),
                };
                s.settings.innodb_lock_wait_timeout_s = seconds;
                Ok(())
            }
            (Engine::InnoDb, var) if var.starts_with('@') => {
                s.settings.custom.insert(var.to_string(), value);
                Ok(())
            }
            _ => Err(errors::unknown_setting(engine, name)),
        }
    }

    /// The value of a session setting (`app.tenant_id` on PostgreSQL, `@tenant_id` on
    /// MariaDB), for checks that a pooled connection carries the right tenant.
    pub fn session_setting(&self, session: SessionId, name: &str) -> Option<Value> {
        self.sessions
            .get(&session)?
            .settings
            .custom
            .get(name)
            .cloned()
    }

    // ---- schema ----

    /// Runs a schema statement outside any transaction (setup before a run).
    fn ddl(&mut self, stmt: &Stmt, text: &str) -> Result<QueryResult, DbError> {
        let engine = self.engine;
        match stmt {
            Stmt::CreateTable(create) => {
                if self.tables.contains_key(&create.name) {
                    if create.if_not_exists {
                        return Ok(QueryResult::default());
                    }
                    return Err(errors::table_exists(engine, &create.name));
                }
                let column = |name: &str| {
                    create
                        .columns
                        .iter()
                        .position(|c| c.name == name)
                        .ok_or_else(|| errors::no_such_column(engine, name))
                };
                if create.primary_key.is_empty() {
                    return Err(errors::unsupported(engine, "a table without a primary key"));
                }
                let mut columns = create.columns.clone();
                let mut primary_key = Vec::new();
                for name in &create.primary_key {
                    let c = column(name)?;
                    columns[c].not_null = true;
                    primary_key.push(c);
                }
                let mut indexes = Vec::new();
                for (name, cols) in &create.uniques {
                    let positions = cols
                        .iter()
                        .map(|c| column(c))
                        .collect::<Result<Vec<_>, _>>()?;
                    let name = name.clone().unwrap_or_else(|| match engine {
                        Engine::Postgres => format!("{}_{}_key", create.name, cols.join("_")),
                        Engine::InnoDb => cols[0].clone(),
                    });
                    indexes.push(IndexDef {
                        name,
                        columns: positions,
                        unique: true,
                    });
                }
                for (name, cols) in &create.indexes {
                    let positions = cols
                        .iter()
                        .map(|c| column(c))
                        .collect::<Result<Vec<_>, _>>()?;
                    let name = name
                        .clone()
                        .unwrap_or_else(|| format!("{}_{}_idx", create.name, cols.join("_")));
                    indexes.push(IndexDef {
                        name,
                        columns: positions,
                        unique: false,
                    });
                }
                let table = Table::new(create.name.clone(), columns, primary_key, indexes);
                self.tables.insert(create.name.clone(), table);
            }
            Stmt::CreateIndex(create) => {
                let table = self
                    .tables
                    .get_mut(&create.table)
                    .ok_or_else(|| errors::no_such_table(engine, &create.table))?;
                let name = create.name.clone().unwrap_or_else(|| {
                    format!("{}_{}_idx", create.table, create.columns.join("_"))
                });
                if table.indexes.iter().any(|i| i.name == name) {
                    if create.if_not_exists {
                        return Ok(QueryResult::default());
                    }
                    return Err(errors::table_exists(engine, &name));
                }
                let positions = create
                    .columns
                    .iter()
                    .map(|c| {
                        table
                            .column(c)
                            .ok_or_else(|| errors::no_such_column(engine, c))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if !table.rows.is_empty() {
                    return Err(errors::unsupported(
                        engine,
                        "CREATE INDEX on a table with rows",
                    ));
                }
                table.indexes.push(IndexDef {
                    name,
                    columns: positions,
                    unique: create.unique,
                });
                table.index_entries.push(Default::default());
            }
            _ => unreachable!("not a schema statement"),
        }
        self.last_commit += 1;
        self.log.push(CommitRecord {
            seq: self.last_commit,
            ddl: Some(text.to_string()),
            writes: Vec::new(),
        });
        Ok(QueryResult::default())
    }

    // ---- DML ----

    fn dml(
        &mut self,
        session: SessionId,
        stmt: &Stmt,
        params: &[Value],
        snapshot: Option<CommitSeq>,
    ) -> Step<QueryResult> {
        let settings = self.sessions[&session].settings.custom.clone();
        STATEMENT_SETTINGS.with(|s| *s.borrow_mut() = settings);
        let result = self.dml_statement(session, stmt, params, snapshot);
        STATEMENT_SETTINGS.with(|s| s.borrow_mut().clear());
        result
    }

    fn dml_statement(
        &mut self,
        session: SessionId,
        stmt: &Stmt,
        params: &[Value],
        snapshot: Option<CommitSeq>,
    ) -> Step<QueryResult> {
        match stmt {
            Stmt::Select(select) => self.select(session, select, params, snapshot),
            Stmt::Insert(insert) => self.insert(session, insert, params, snapshot),
            Stmt::Update(update) => self.update_or_delete(
                session,
                &update.table,
                update.filter.as_ref(),
                Some(&update.sets),
                update.returning.as_ref(),
                params,
                snapshot,
            ),
            Stmt::Delete(delete) => self.update_or_delete(
                session,
                &delete.table,
                delete.filter.as_ref(),
                None,
                delete.returning.as_ref(),
                params,
                snapshot,
            ),
            _ => unreachable!("not DML"),
        }
    }

    fn table(&self, name: &str) -> Result<&Table, DbError> {
        self.tables
            .get(name)
            .ok_or_else(|| errors::no_such_table(self.engine, name))
    }

    fn select(
        &mut self,
        session: SessionId,
        select: &sql::Select,
        params: &[Value],
        snapshot: Option<CommitSeq>,
    ) -> Step<QueryResult> {
        let engine = self.engine;
        let Some(table_name) = &select.table else {
            // SELECT without FROM: one row of constants.
            let mut columns = Vec::new();
            let mut row = Vec::new();
            for item in &select.items {
                let SelectItem::Expr { expr, name } = item else {
                    return Err(errors::syntax(engine, "SELECT * without FROM").into());
                };
                if matches!(expr, Expr::Agg(..)) {
                    return Err(errors::unsupported(engine, "aggregate without FROM").into());
                }
                columns.push(name.clone());
                row.push(eval(engine, &bind(engine, expr, &[], params)?, &[])?);
            }
            return Ok(QueryResult {
                columns,
                rows: vec![row],
                ..Default::default()
            });
        };
        let table = self.table(table_name)?;
        let column_names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
        let filter = select
            .filter
            .as_ref()
            .map(|f| bind(engine, f, &column_names, params))
            .transpose()?;
        let access = choose_access(table, filter.as_ref());
        let order: Vec<(BExpr, bool)> = select
            .order_by
            .iter()
            .map(|(e, desc)| Ok((bind(engine, e, &column_names, params)?, *desc)))
            .collect::<Result<_, DbError>>()?;
        let limit = select
            .limit
            .as_ref()
            .map(|e| limit_value(engine, e, params))
            .transpose()?;
        let offset = select
            .offset
            .as_ref()
            .map(|e| limit_value(engine, e, params))
            .transpose()?
            .unwrap_or(0);
        let tx = self.tx_mut(session);
        let (tx_id, isolation, explicit) = (tx.id, tx.isolation, tx.explicit);
        // InnoDB serializable turns plain SELECTs in a transaction into shared locking reads.
        let lock = select.lock.or_else(|| {
            (engine == Engine::InnoDb && isolation == Isolation::Serializable && explicit)
                .then_some(sql::RowLockClause {
                    exclusive: false,
                    wait: LockWaitPolicy::Wait,
                })
        });
        let has_aggregate = select.items.iter().any(|i| {
            matches!(
                i,
                SelectItem::Expr {
                    expr: Expr::Agg(..),
                    ..
                }
            )
        });
        let rows: Vec<Row> = match lock {
            None => {
                let mut rows =
                    self.snapshot_read(tx_id, table_name, &access, filter.as_ref(), snapshot)?;
                sort_rows(engine, &mut rows, &order)?;
                rows
            }
            Some(clause) => {
                let mode = if clause.exclusive {
                    LockMode::Exclusive
                } else {
                    LockMode::Shared
                };
                let rows = match engine {
                    Engine::Postgres => {
                        let wanted = limit.map(|l| l + offset);
                        self.pg_locking_read(
                            session,
                            table_name,
                            &access,
                            filter.as_ref(),
                            mode,
                            clause.wait,
                            snapshot.expect("PostgreSQL statements have a snapshot"),
                            &order,
                            wanted,
                        )?
                    }
                    Engine::InnoDb => {
                        let index_ordered = order.is_empty();
                        let wanted = if index_ordered && !has_aggregate {
                            limit.map(|l| l + offset)
                        } else {
                            None
                        };
                        let rows = self.innodb_locking_read(
                            session,
                            table_name,
                            &access,
                            filter.as_ref(),
                            mode,
                            clause.wait,
                            false,
                            wanted,
                        )?;
                        let mut rows: Vec<Row> = rows.into_iter().map(|(_, r)| r).collect();
                        sort_rows(engine, &mut rows, &order)?;
                        rows.into_iter().map(|r| (Vec::new(), r)).collect()
                    }
                };
                rows.into_iter().map(|(_, r)| r).collect()
            }
        };
        let table = self.table(table_name)?;
        if has_aggregate {
            let mut result = aggregate(engine, table, &select.items, params, &rows)?;
            result.row_owners = self.row_owners(table, &rows);
            return Ok(result);
        }
        let rows: Vec<Row> = rows
            .into_iter()
            .skip(offset)
            .take(limit.unwrap_or(usize::MAX))
            .collect();
        let mut result = project(engine, table, &select.items, params, &rows)?;
        result.row_owners = self.row_owners(table, &rows);
        Ok(result)
    }

    /// The distinct owners of `rows` of `table` (see [`DbConfig::row_owner_column`]), in order.
    fn row_owners<'a>(&self, table: &Table, rows: impl IntoIterator<Item = &'a Row>) -> Vec<Value> {
        let Some(c) = self
            .config
            .row_owner_column
            .as_deref()
            .and_then(|name| table.column(name))
        else {
            return Vec::new();
        };
        let mut owners: Vec<Value> = Vec::new();
        for row in rows {
            assert!(c < row.len(), "a row has every column of its table");
            if !owners.contains(&row[c]) {
                owners.push(row[c].clone());
            }
        }
        owners.sort();
        owners
    }

    /// A non-locking read: the version each row has in `snapshot` (own writes included), or the
    /// newest version of any transaction when there is no snapshot (InnoDB read uncommitted).
    fn snapshot_read(
        &mut self,
        tx: TxId,
        table_name: &str,
        access: &Access,
        filter: Option<&BExpr>,
        snapshot: Option<CommitSeq>,
    ) -> Step<Vec<Row>> {
        let engine = self.engine;
        let serializable = self.ssi.tracks(tx);
        let table = self.table(table_name)?;
        let keys = row_keys(table, access);
        let mut out = Vec::new();
        let mut newer_writers = BTreeSet::new();
        let mut touched = 0u64;
        for key in &keys {
            let Some(rv) = table.rows.get(key) else {
                continue;
            };
            touched += 1;
            let data = match snapshot {
                Some(snapshot) => {
                    if serializable {
                        for v in rv.committed.iter().filter(|v| v.seq > snapshot) {
                            newer_writers.insert(v.tx);
                        }
                        if let Some(p) = rv.pending.as_ref().filter(|p| p.tx != tx) {
                            newer_writers.insert(p.tx);
                        }
                    }
                    visible(rv, tx, snapshot)
                }
                None => match &rv.pending {
                    Some(p) => p.data.as_ref(),
                    None => rv.latest_committed().and_then(|v| v.data.as_ref()),
                },
            };
            let Some(row) = data else {
                continue;
            };
            if matches(engine, filter, row)? {
                out.push(row.clone());
            }
        }
        self.stats.rows_touched += touched;
        if serializable {
            self.ssi_read(tx, table_name, access);
            let mut fail = Vec::new();
            for writer in newer_writers {
                fail.extend(self.ssi.add_edge(tx, writer));
            }
            self.ssi_fail(tx, fail)?;
        }
        Ok(out)
    }

    fn ssi_read(&mut self, tx: TxId, table_name: &str, access: &Access) {
        match access {
            Access::Scan => self.ssi.read_relation(tx, table_name),
            Access::Keys(keys) => {
                for key in keys {
                    self.ssi.read_key(
                        tx,
                        ReadKey {
                            table: table_name.to_string(),
                            index: None,
                            key: key.clone(),
                        },
                    );
                }
            }
            Access::Index { index, values } => {
                for v in values {
                    self.ssi.read_key(
                        tx,
                        ReadKey {
                            table: table_name.to_string(),
                            index: Some(*index),
                            key: v.clone(),
                        },
                    );
                }
            }
        }
    }

    /// Dooms the other pivots; fails this statement if `tx` itself is one.
    fn ssi_fail(&mut self, tx: TxId, pivots: Vec<TxId>) -> Step<()> {
        let mut fail = false;
        for pivot in pivots {
            if pivot == tx {
                fail = true;
            } else {
                self.ssi.doom(pivot);
            }
        }
        if fail {
            return Err(errors::rw_dependency().into());
        }
        Ok(())
    }

    /// Requests a row lock for a locking statement, applying NOWAIT / SKIP LOCKED.
    /// `Ok(false)` means skip the row.
    fn lock_row(
        &mut self,
        tx: TxId,
        table_name: &str,
        target: &LockTarget,
        mode: LockMode,
        policy: LockWaitPolicy,
    ) -> Step<bool> {
        if policy != LockWaitPolicy::Wait && self.locks.would_wait(tx, target, mode) {
            return match policy {
                LockWaitPolicy::SkipLocked => Ok(false),
                _ => Err(errors::lock_not_available(self.engine, table_name).into()),
            };
        }
        match self.locks.request(tx, target, mode) {
            Grant::Granted => Ok(true),
            Grant::Wait(_) => Err(Fail::Wait(table_name.to_string())),
        }
    }

    /// PostgreSQL's locking read (`FOR UPDATE`/`FOR SHARE`, and the row search of UPDATE and
    /// DELETE): rows that match in the statement snapshot, sorted, locked one by one; a row
    /// changed since the snapshot is re-checked on its newest version in read committed
    /// (EvalPlanQual) and fails with `40001` in repeatable read and serializable.
    #[allow(clippy::too_many_arguments)]
    fn pg_locking_read(
        &mut self,
        session: SessionId,
        table_name: &str,
        access: &Access,
        filter: Option<&BExpr>,
        mode: LockMode,
        policy: LockWaitPolicy,
        snapshot: CommitSeq,
        order: &[(BExpr, bool)],
        wanted: Option<usize>,
    ) -> Step<Vec<(Key, Row)>> {
        let engine = self.engine;
        let tx = self.session_tx(session);
        let isolation = self.tx_mut(session).isolation;
        let serializable = self.ssi.tracks(tx);
        let table = self.table(table_name)?;
        let mut candidates: Vec<(Key, Row)> = Vec::new();
        let mut newer_writers = BTreeSet::new();
        let mut touched = 0u64;
        for key in row_keys(table, access) {
            let Some(rv) = table.rows.get(&key) else {
                continue;
            };
            touched += 1;
            if serializable {
                for v in rv.committed.iter().filter(|v| v.seq > snapshot) {
                    newer_writers.insert(v.tx);
                }
                if let Some(p) = rv.pending.as_ref().filter(|p| p.tx != tx) {
                    newer_writers.insert(p.tx);
                }
            }
            if let Some(row) = visible(rv, tx, snapshot) {
                if matches(engine, filter, row)? {
                    candidates.push((key, row.clone()));
                }
            }
        }
        self.stats.rows_touched += touched;
        if serializable {
            self.ssi_read(tx, table_name, access);
            let mut fail = Vec::new();
            for writer in newer_writers {
                fail.extend(self.ssi.add_edge(tx, writer));
            }
            self.ssi_fail(tx, fail)?;
        }
        if !order.is_empty() {
            let mut keyed: Vec<(Vec<Value>, (Key, Row))> = Vec::new();
            for (key, row) in candidates {
                let sort_key = order
                    .iter()
                    .map(|(e, _)| eval(engine, e, &row))
                    .collect::<Result<Vec<_>, _>>()?;
                keyed.push((sort_key, (key, row)));
            }
            keyed.sort_by(|a, b| compare_sort_keys(engine, &a.0, &b.0, order));
            candidates = keyed.into_iter().map(|(_, kr)| kr).collect();
        }
        let mut out = Vec::new();
        for (key, row) in candidates {
            if wanted.is_some_and(|w| out.len() >= w) {
                break;
            }
            let target = LockTarget::Record {
                table: table_name.to_string(),
                key: key.clone(),
            };
            if !self.lock_row(tx, table_name, &target, mode, policy)? {
                continue;
            }
            let table = self.table(table_name)?;
            let rv = &table.rows[&key];
            let latest: Option<&Row> = match &rv.pending {
                Some(p) => {
                    assert_eq!(p.tx, tx, "a locked row has no other writer");
                    p.data.as_ref()
                }
                None => {
                    let latest = rv.latest_committed().expect("a visible row has versions");
                    if latest.seq <= snapshot {
                        out.push((key, row));
                        continue;
                    }
                    // Changed by a transaction that committed after the snapshot.
                    if isolation >= Isolation::RepeatableRead {
                        return Err(errors::concurrent_update(latest.data.is_none()).into());
                    }
                    latest.data.as_ref()
                }
            };
            let Some(latest) = latest else {
                continue;
            };
            if matches(engine, filter, latest)? {
                out.push((key, latest.clone()));
            }
        }
        Ok(out)
    }

    /// InnoDB's locking read: every row scanned is locked on its newest committed version
    /// (own writes included) before the WHERE is evaluated; repeatable read and serializable
    /// also lock the gaps before them and after the range. Read committed releases the locks of
    /// rows that do not match, and an UPDATE there first reads the newest committed version of
    /// a locked row to skip it without waiting when it does not match (semi-consistent read).
    #[allow(clippy::too_many_arguments)]
    fn innodb_locking_read(
        &mut self,
        session: SessionId,
        table_name: &str,
        access: &Access,
        filter: Option<&BExpr>,
        mode: LockMode,
        policy: LockWaitPolicy,
        semi_consistent: bool,
        wanted: Option<usize>,
    ) -> Step<Vec<(Key, Row)>> {
        let engine = self.engine;
        let tx = self.session_tx(session);
        let (isolation, read_view) = {
            let t = self.tx_mut(session);
            (t.isolation, t.snapshot)
        };
        let gaps = isolation >= Isolation::RepeatableRead;
        let snapshot_isolation =
            self.profile.innodb_snapshot_isolation() && isolation == Isolation::RepeatableRead;
        let table = self.table(table_name)?;
        let positions = positions(table, access);
        let mut out = Vec::new();
        let mut touched = 0u64;
        for position in positions {
            if wanted.is_some_and(|w| out.len() >= w) {
                break;
            }
            let (key, gap) = match position {
                Position::Gap(gap) => {
                    if gaps {
                        let granted = self.locks.request(tx, &gap, LockMode::Gap);
                        assert_eq!(granted, Grant::Granted);
                    }
                    continue;
                }
                Position::Row { key, gap } => (key, gap),
            };
            touched += 1;
            let target = LockTarget::Record {
                table: table_name.to_string(),
                key: key.clone(),
            };
            let held_before = self.locks.holds(tx, &target, mode);
            if semi_consistent && self.locks.would_wait(tx, &target, mode) {
                let table = self.table(table_name)?;
                let committed = table.rows[&key]
                    .latest_committed()
                    .and_then(|v| v.data.as_ref());
                match committed {
                    Some(row) if matches(engine, filter, row)? => {}
                    _ => continue,
                }
            }
            if let Some(gap) = gap.filter(|_| gaps) {
                let granted = self.locks.request(tx, &gap, LockMode::Gap);
                assert_eq!(granted, Grant::Granted);
            }
            if !self.lock_row(tx, table_name, &target, mode, policy)? {
                continue;
            }
            let table = self.table(table_name)?;
            let rv = &table.rows[&key];
            let row = match &rv.pending {
                Some(p) => {
                    // The lock is held, so an uncommitted version can only be our own.
                    assert_eq!(p.tx, tx);
                    p.data.as_ref()
                }
                None => {
                    let latest = rv.latest_committed();
                    if snapshot_isolation {
                        if let (Some(view), Some(latest)) = (read_view, latest) {
                            if latest.seq > view {
                                return Err(errors::record_changed(table_name).into());
                            }
                        }
                    }
                    latest.and_then(|v| v.data.as_ref())
                }
            };
            let matched = match row {
                Some(row) => matches(engine, filter, row)?,
                None => false,
            };
            if matched {
                out.push((key, row.expect("matched row").clone()));
            } else if !gaps && !held_before {
                let woken = self.locks.release(tx, &target);
                self.woken.extend(woken);
            }
        }
        self.stats.rows_touched += touched;
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn update_or_delete(
        &mut self,
        session: SessionId,
        table_name: &str,
        filter: Option<&Expr>,
        sets: Option<&Vec<(String, Expr)>>,
        returning: Option<&Vec<SelectItem>>,
        params: &[Value],
        snapshot: Option<CommitSeq>,
    ) -> Step<QueryResult> {
        let engine = self.engine;
        let table = self.table(table_name)?;
        let column_names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
        let filter = filter
            .map(|f| bind(engine, f, &column_names, params))
            .transpose()?;
        let mut assignments = Vec::new();
        if let Some(sets) = sets {
            for (column, expr) in sets {
                let c = table
                    .column(column)
                    .ok_or_else(|| errors::no_such_column(engine, column))?;
                if table.primary_key.contains(&c) {
                    return Err(errors::unsupported(engine, "updating a primary key column").into());
                }
                assignments.push((c, bind(engine, expr, &column_names, params)?));
            }
        }
        let access = choose_access(table, filter.as_ref());
        let tx = self.session_tx(session);
        let isolation = self.tx_mut(session).isolation;
        let targets = match engine {
            Engine::Postgres => self.pg_locking_read(
                session,
                table_name,
                &access,
                filter.as_ref(),
                LockMode::Exclusive,
                LockWaitPolicy::Wait,
                snapshot.expect("PostgreSQL statements have a snapshot"),
                &[],
                None,
            )?,
            Engine::InnoDb => self.innodb_locking_read(
                session,
                table_name,
                &access,
                filter.as_ref(),
                LockMode::Exclusive,
                LockWaitPolicy::Wait,
                sets.is_some() && isolation <= Isolation::ReadCommitted,
                None,
            )?,
        };
        let row_owners = self.row_owners(self.table(table_name)?, targets.iter().map(|(_, r)| r));
        let mut affected = 0u64;
        let mut returned = Vec::new();
        for (key, old) in targets {
            let new = match sets {
                None => None,
                Some(_) => {
                    let mut new = old.clone();
                    for (c, expr) in &assignments {
                        new[*c] = eval(engine, expr, &old)?;
                    }
                    let table = self.table(table_name)?;
                    for (c, _) in &assignments {
                        new[*c] = coerce(engine, table, *c, new[*c].clone())?;
                    }
                    Some(new)
                }
            };
            if let Some(new) = &new {
                if engine == Engine::InnoDb && *new == old {
                    // MariaDB counts changed rows and writes nothing for an unchanged one.
                    continue;
                }
                self.check_unique(tx, table_name, &key, new, Some(&old))?;
            }
            affected += 1;
            returned.push(new.clone().unwrap_or_else(|| old.clone()));
            self.write_row(tx, table_name, &key, Some(&old), new)?;
        }
        let mut result = match returning {
            Some(items) => project(engine, self.table(table_name)?, items, params, &returned)?,
            None => QueryResult::default(),
        };
        result.rows_affected = affected;
        result.row_owners = row_owners;
        Ok(result)
    }

    /// Unique checks for a new version of row `key`: a live duplicate fails, an uncommitted
    /// one by another transaction is waited for (then checked again).
    fn check_unique(
        &mut self,
        tx: TxId,
        table_name: &str,
        key: &Key,
        new: &Row,
        old: Option<&Row>,
    ) -> Step<Option<DbError>> {
        let engine = self.engine;
        let table = self.table(table_name)?;
        let mut wait_for: Option<Key> = None;
        let mut duplicate: Option<DbError> = None;
        // The primary key of a new row.
        if old.is_none() {
            if let Some(rv) = table.rows.get(key) {
                match &rv.pending {
                    Some(p) if p.tx != tx => wait_for = Some(key.clone()),
                    Some(p) if p.data.is_some() => {
                        duplicate = Some(errors::duplicate_key(
                            engine,
                            table_name,
                            &table.primary_key_name(),
                            &key_text(key),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        if rv.latest_committed().is_some_and(|v| v.data.is_some()) {
                            duplicate = Some(errors::duplicate_key(
                                engine,
                                table_name,
                                &table.primary_key_name(),
                                &key_text(key),
                            ));
                        }
                    }
                }
            }
        }
        if wait_for.is_none() && duplicate.is_none() {
            'indexes: for (i, index) in table.indexes.iter().enumerate() {
                if !index.unique {
                    continue;
                }
                let values = table.index_key_of(i, new);
                if values.iter().any(Value::is_null) {
                    continue;
                }
                if old.is_some_and(|o| table.index_key_of(i, o) == values) {
                    continue;
                }
                for other in table.index_lookup(i, &values) {
                    if other == *key {
                        continue;
                    }
                    // Index entries outlive rolled-back inserts.
                    let Some(rv) = table.rows.get(&other) else {
                        continue;
                    };
                    let has =
                        |row: Option<&Row>| row.is_some_and(|r| table.index_key_of(i, r) == values);
                    let committed = rv.latest_committed().and_then(|v| v.data.as_ref());
                    match &rv.pending {
                        Some(p) if p.tx != tx => {
                            if has(p.data.as_ref()) || has(committed) {
                                wait_for = Some(other);
                                break 'indexes;
                            }
                        }
                        Some(p) => {
                            if has(p.data.as_ref()) {
                                duplicate = Some(errors::duplicate_key(
                                    engine,
                                    table_name,
                                    &index.name,
                                    &key_text(&values),
                                ));
                                break 'indexes;
                            }
                        }
                        None => {
                            if has(committed) {
                                duplicate = Some(errors::duplicate_key(
                                    engine,
                                    table_name,
                                    &index.name,
                                    &key_text(&values),
                                ));
                                break 'indexes;
                            }
                        }
                    }
                }
            }
        }
        if let Some(other) = wait_for {
            // Wait for the other writer by queueing for a shared lock on its row; InnoDB keeps
            // that lock, which is what makes concurrent inserts of one key deadlock-prone.
            let target = LockTarget::Record {
                table: table_name.to_string(),
                key: other,
            };
            return match self.locks.request(tx, &target, LockMode::Shared) {
                Grant::Wait(_) => Err(Fail::Wait(table_name.to_string())),
                Grant::Granted => unreachable!("the other writer holds the row"),
            };
        }
        match duplicate {
            Some(e) => Err(e.into()),
            None => Ok(None),
        }
    }

    /// Writes a new version of row `key` (`None` deletes it) as `tx`, which holds its lock.
    fn write_row(
        &mut self,
        tx: TxId,
        table_name: &str,
        key: &Key,
        old: Option<&Row>,
        new: Option<Row>,
    ) -> Step<()> {
        let target = LockTarget::Record {
            table: table_name.to_string(),
            key: key.clone(),
        };
        assert!(
            self.locks.holds(tx, &target, LockMode::Exclusive),
            "writes hold the row lock"
        );
        let table = self.tables.get_mut(table_name).expect("table");
        let mut read_keys = vec![ReadKey {
            table: table_name.to_string(),
            index: None,
            key: key.clone(),
        }];
        for i in 0..table.indexes.len() {
            for row in old.iter().copied().chain(new.as_ref()) {
                read_keys.push(ReadKey {
                    table: table_name.to_string(),
                    index: Some(i),
                    key: table.index_key_of(i, row),
                });
            }
        }
        if let Some(row) = &new {
            table.index_row(key, row);
        }
        let rv = table.rows.entry(key.clone()).or_default();
        let previous = rv.pending.clone();
        assert!(previous.as_ref().is_none_or(|p| p.tx == tx));
        rv.pending = Some(Pending { tx, data: new });
        let session = self.tx_session[&tx];
        self.sessions
            .get_mut(&session)
            .and_then(|s| s.tx.as_mut())
            .expect("transaction")
            .undo
            .push(Undo {
                table: table_name.to_string(),
                key: key.clone(),
                previous,
            });
        self.stats.rows_touched += 1;
        if self.ssi.tracks(tx) {
            let fail = self.ssi.wrote(tx, table_name, &read_keys);
            self.ssi_fail(tx, fail)?;
        }
        Ok(())
    }

    fn insert(
        &mut self,
        session: SessionId,
        insert: &sql::Insert,
        params: &[Value],
        snapshot: Option<CommitSeq>,
    ) -> Step<QueryResult> {
        let engine = self.engine;
        let tx = self.session_tx(session);
        let isolation = self.tx_mut(session).isolation;
        let table = self.table(&insert.table)?;
        let columns: Vec<usize> = if insert.columns.is_empty() {
            (0..table.columns.len()).collect()
        } else {
            insert
                .columns
                .iter()
                .map(|c| {
                    table
                        .column(c)
                        .ok_or_else(|| errors::no_such_column(engine, c))
                })
                .collect::<Result<_, _>>()?
        };
        let mut inserted = Vec::new();
        let mut last_insert_id = None;
        for values in &insert.rows {
            if values.len() != columns.len() {
                return Err(
                    errors::syntax(engine, "INSERT has more or fewer values than columns").into(),
                );
            }
            let table = self.tables.get_mut(&insert.table).expect("table");
            let mut row: Row = table
                .columns
                .iter()
                .map(|c| c.default.clone().unwrap_or(Value::Null))
                .collect();
            let mut given = vec![false; row.len()];
            for (&c, value) in columns.iter().zip(values) {
                if let InsertValue::Expr(e) = value {
                    row[c] = eval(engine, &bind(engine, e, &[], params)?, &[])?;
                    given[c] = true;
                }
            }
            for c in 0..row.len() {
                if !table.columns[c].auto_increment {
                    continue;
                }
                let generate = !given[c] || (engine == Engine::InnoDb && row[c].is_null());
                if generate {
                    let id = table.next_auto_increment;
                    table.next_auto_increment += 1;
                    row[c] = Value::Int(id);
                    last_insert_id.get_or_insert(id);
                } else if let (Engine::InnoDb, Value::Int(id)) = (engine, &row[c]) {
                    // MariaDB moves the counter past explicit ids; PostgreSQL sequences do not.
                    table.next_auto_increment = table.next_auto_increment.max(id + 1);
                }
            }
            let table = self.table(&insert.table)?;
            for (c, value) in row.iter_mut().enumerate() {
                *value = coerce(engine, table, c, std::mem::replace(value, Value::Null))?;
            }
            let key = table.key_of(&row);
            match self.check_unique(tx, &insert.table, &key, &row, None) {
                Ok(_) => {}
                Err(Fail::Error(e)) if insert.ignore_duplicates && e.is_unique_violation() => {
                    if engine == Engine::Postgres && isolation >= Isolation::RepeatableRead {
                        // ON CONFLICT DO NOTHING may not skip a row its snapshot cannot see.
                        let table = self.table(&insert.table)?;
                        let invisible = table.rows.get(&key).is_some_and(|rv| {
                            rv.pending.is_none()
                                && visible(rv, tx, snapshot.expect("snapshot")).is_none()
                        });
                        if invisible {
                            return Err(errors::concurrent_update(false).into());
                        }
                    }
                    continue;
                }
                Err(other) => return Err(other),
            }
            if engine == Engine::InnoDb {
                self.insert_intention(tx, &insert.table, &key, &row)?;
            }
            let target = LockTarget::Record {
                table: insert.table.clone(),
                key: key.clone(),
            };
            if !self.lock_row(
                tx,
                &insert.table,
                &target,
                LockMode::Exclusive,
                LockWaitPolicy::Wait,
            )? {
                unreachable!("waiting policy never skips");
            }
            self.write_row(tx, &insert.table, &key, None, Some(row.clone()))?;
            inserted.push(row);
        }
        let mut result = match &insert.returning {
            Some(items) => project(engine, self.table(&insert.table)?, items, params, &inserted)?,
            None => QueryResult::default(),
        };
        result.rows_affected = inserted.len() as u64;
        result.last_insert_id = last_insert_id;
        result.row_owners = self.row_owners(self.table(&insert.table)?, &inserted);
        Ok(result)
    }

    /// InnoDB: an insert waits while another transaction holds a gap lock on a gap the new
    /// row falls into, in the primary key or any secondary index.
    fn insert_intention(&mut self, tx: TxId, table_name: &str, key: &Key, row: &Row) -> Step<()> {
        let table = self.table(table_name)?;
        let mut gaps = Vec::new();
        if !table.rows.contains_key(key) {
            gaps.push(LockTarget::Gap {
                table: table_name.to_string(),
                index: None,
                before: table.primary_successor(key),
            });
        }
        for i in 0..table.indexes.len() {
            let values = table.index_key_of(i, row);
            gaps.push(LockTarget::Gap {
                table: table_name.to_string(),
                index: Some(i),
                before: table
                    .index_successor(i, &values, key)
                    .map(|(v, k)| concat_key(&v, &k)),
            });
        }
        for gap in gaps {
            if let Grant::Wait(_) = self.locks.request(tx, &gap, LockMode::InsertIntention) {
                return Err(Fail::Wait(table_name.to_string()));
            }
        }
        Ok(())
    }

    /// Runs a schema statement for setup: `CREATE TABLE` / `CREATE INDEX` outside any
    /// transaction of `session`.
    fn schema(
        &mut self,
        session: SessionId,
        text: &str,
        plan: &Plan,
    ) -> Result<QueryResult, DbError> {
        if self.in_transaction(session) {
            return Err(errors::unsupported(
                self.engine,
                "schema statements inside a transaction",
            ));
        }
        self.ddl(&plan.stmt, text)
    }
}

impl Database {
    /// Executes a schema or data statement outside the network path, for setup before a run
    /// and for tests; schema statements are allowed only here and through [`Database::execute`]
    /// outside a transaction.
    pub fn execute_setup(&mut self, text: &str, params: &[Value]) -> Result<QueryResult, DbError> {
        let session = self.connect();
        let now = self.now;
        let result = match self.execute(session, text, params, now) {
            Exec::Done(r) => r,
            Exec::Blocked => Err(DbError::new("55P03", "setup statement blocked")),
        };
        self.disconnect(session);
        result
    }
}

fn concat_key(values: &Key, key: &Key) -> Key {
    values.iter().chain(key.iter()).cloned().collect()
}

fn key_text(key: &Key) -> String {
    key.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

/// The version of `rv` that `tx` sees at `snapshot`: its own uncommitted write, else the
/// newest version committed at or before the snapshot.
fn visible(rv: &RowVersions, tx: TxId, snapshot: CommitSeq) -> Option<&Row> {
    if let Some(p) = rv.pending.as_ref().filter(|p| p.tx == tx) {
        return p.data.as_ref();
    }
    rv.visible_at(snapshot).and_then(|v| v.data.as_ref())
}

fn parse_pg_duration_ms(value: &Value) -> Option<u64> {
    match value {
        Value::Int(ms) if *ms >= 0 => Some(*ms as u64),
        Value::Text(text) => {
            let text = text.trim();
            let digits: String = text.chars().take_while(|c| c.is_ascii_digit()).collect();
            let unit = text[digits.len()..].trim();
            let n: u64 = digits.parse().ok()?;
            let factor = match unit {
                "" | "ms" => 1,
                "s" => 1000,
                "min" => 60_000,
                "h" => 3_600_000,
                _ => return None,
            };
            n.checked_mul(factor)
        }
        _ => None,
    }
}

fn limit_value(engine: Engine, e: &Expr, params: &[Value]) -> Result<usize, DbError> {
    match eval(engine, &bind(engine, e, &[], params)?, &[])? {
        Value::Int(n) if n >= 0 => Ok(n as usize),
        other => Err(errors::syntax(
            engine,
            &format!("LIMIT must not be negative: {other}"),
        )),
    }
}

thread_local! {
    // The session settings of the statement being bound (`current_setting`, `@var`); set by
    // `Database::dml` for the duration of one statement, empty otherwise.
    static STATEMENT_SETTINGS: std::cell::RefCell<BTreeMap<String, Value>> = const { std::cell::RefCell::new(BTreeMap::new()) };
}

/// Resolves column names and substitutes parameters.
fn bind(engine: Engine, e: &Expr, columns: &[String], params: &[Value]) -> Result<BExpr, DbError> {
    Ok(match e {
        Expr::Column(name) => match columns.iter().position(|c| c == name) {
            Some(i) => BExpr::Col(i),
            None => return Err(errors::no_such_column(engine, name)),
        },
        Expr::Param(i) => BExpr::Val(params.get(*i).cloned().unwrap_or(Value::Null)),
        Expr::Lit(v) => BExpr::Val(v.clone()),
        Expr::Not(inner) => BExpr::Not(Box::new(bind(engine, inner, columns, params)?)),
        Expr::Neg(inner) => BExpr::Neg(Box::new(bind(engine, inner, columns, params)?)),
        Expr::Binary(l, op, r) => BExpr::Bin(
            Box::new(bind(engine, l, columns, params)?),
            *op,
            Box::new(bind(engine, r, columns, params)?),
        ),
        Expr::IsNull(inner, negated) => {
            BExpr::IsNull(Box::new(bind(engine, inner, columns, params)?), *negated)
        }
        Expr::InList(inner, list, negated) => BExpr::In(
            Box::new(bind(engine, inner, columns, params)?),
            list.iter()
                .map(|e| bind(engine, e, columns, params))
                .collect::<Result<_, _>>()?,
            *negated,
        ),
        Expr::Agg(..) => {
            return Err(DbError::new(
                "42803",
                "aggregate functions are not allowed here",
            ))
        }
        Expr::Setting(name) => BExpr::Val(
            STATEMENT_SETTINGS.with(|s| s.borrow().get(name).cloned().unwrap_or(Value::Null)),
        ),
        Expr::Cast(inner, ty) => match bind(engine, inner, columns, params)? {
            BExpr::Val(v) => BExpr::Val(cast(engine, v, *ty)?),
            _ => {
                return Err(errors::unsupported(
                    engine,
                    "casting anything but a constant, parameter or setting",
                ))
            }
        },
    })
}

/// `CAST(v AS ty)` for constant operands (settings and parameters).
fn cast(engine: Engine, v: Value, ty: ColumnType) -> Result<Value, DbError> {
    Ok(match (v, ty) {
        (Value::Null, _) => Value::Null,
        (Value::Int(i), ColumnType::Int) => Value::Int(i),
        (Value::Text(t), ColumnType::Int) => match t.trim().parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => return Err(errors::wrong_type(engine, "cast", "bigint", &t)),
        },
        (v, ColumnType::Text) => Value::Text(v.to_string()),
        (v, ty) => {
            return Err(errors::wrong_type(
                engine,
                "cast",
                ty.name(),
                &v.to_string(),
            ))
        }
    })
}

fn truthy(v: &Value) -> Option<bool> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(*b),
        Value::Int(i) => Some(*i != 0),
        Value::Text(_) => Some(false),
    }
}

fn compare(engine: Engine, a: &Value, b: &Value) -> Result<Option<std::cmp::Ordering>, DbError> {
    Ok(match (a, b) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Text(x), Value::Text(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Int(y)) if engine == Engine::InnoDb => Some((*x as i64).cmp(y)),
        (Value::Int(x), Value::Bool(y)) if engine == Engine::InnoDb => Some(x.cmp(&(*y as i64))),
        _ => {
            return Err(errors::type_mismatch(
                engine,
                &format!("{a:?} compared with {b:?}"),
            ))
        }
    })
}

fn eval(engine: Engine, e: &BExpr, row: &[Value]) -> Result<Value, DbError> {
    Ok(match e {
        BExpr::Col(i) => row[*i].clone(),
        BExpr::Val(v) => v.clone(),
        BExpr::Not(inner) => match truthy(&eval(engine, inner, row)?) {
            None => Value::Null,
            Some(b) => Value::Bool(!b),
        },
        BExpr::Neg(inner) => match eval(engine, inner, row)? {
            Value::Null => Value::Null,
            Value::Int(i) => Value::Int(i.checked_neg().ok_or_else(|| errors::overflow(engine))?),
            other => return Err(errors::type_mismatch(engine, &format!("- {other:?}"))),
        },
        BExpr::IsNull(inner, negated) => {
            Value::Bool(eval(engine, inner, row)?.is_null() != *negated)
        }
        BExpr::In(inner, list, negated) => {
            let v = eval(engine, inner, row)?;
            if v.is_null() {
                return Ok(Value::Null);
            }
            let mut saw_null = false;
            for item in list {
                let item = eval(engine, item, row)?;
                match compare(engine, &v, &item)? {
                    Some(std::cmp::Ordering::Equal) => return Ok(Value::Bool(!*negated)),
                    None => saw_null = true,
                    _ => {}
                }
            }
            if saw_null {
                Value::Null
            } else {
                Value::Bool(*negated)
            }
        }
        BExpr::Bin(l, op, r) => {
            match op {
                BinOp::And | BinOp::Or => {
                    // Three-valued logic: the dominant value (false for AND, true for OR) wins
                    // even over NULL, and the right side is not evaluated once it is known.
                    let dominant = *op == BinOp::Or;
                    let a = truthy(&eval(engine, l, row)?);
                    if a == Some(dominant) {
                        return Ok(Value::Bool(dominant));
                    }
                    let b = truthy(&eval(engine, r, row)?);
                    return Ok(match (a, b) {
                        (_, Some(x)) if x == dominant => Value::Bool(dominant),
                        (Some(_), Some(_)) => Value::Bool(!dominant),
                        _ => Value::Null,
                    });
                }
                _ => {}
            }
            let a = eval(engine, l, row)?;
            let b = eval(engine, r, row)?;
            use std::cmp::Ordering::*;
            match op {
                BinOp::Eq | BinOp::NotEq | BinOp::Lt | BinOp::LtEq | BinOp::Gt | BinOp::GtEq => {
                    match compare(engine, &a, &b)? {
                        None => Value::Null,
                        Some(o) => Value::Bool(match op {
                            BinOp::Eq => o == Equal,
                            BinOp::NotEq => o != Equal,
                            BinOp::Lt => o == Less,
                            BinOp::LtEq => o != Greater,
                            BinOp::Gt => o == Greater,
                            _ => o != Less,
                        }),
                    }
                }
                _ => {
                    let (x, y) = match (&a, &b) {
                        (Value::Null, _) | (_, Value::Null) => return Ok(Value::Null),
                        (Value::Int(x), Value::Int(y)) => (*x, *y),
                        _ => {
                            return Err(errors::type_mismatch(
                                engine,
                                &format!("{a:?} {op:?} {b:?}"),
                            ))
                        }
                    };
                    let overflow = || errors::overflow(engine);
                    let zero = |engine: Engine| -> Result<Value, DbError> {
                        match engine {
                            Engine::Postgres => Err(errors::division_by_zero()),
                            // MariaDB returns NULL (with a warning) outside strict DML.
                            Engine::InnoDb => Ok(Value::Null),
                        }
                    };
                    Value::Int(match op {
                        BinOp::Plus => x.checked_add(y).ok_or_else(overflow)?,
                        BinOp::Minus => x.checked_sub(y).ok_or_else(overflow)?,
                        BinOp::Mul => x.checked_mul(y).ok_or_else(overflow)?,
                        BinOp::Div => {
                            if y == 0 {
                                return zero(engine);
                            }
                            x.checked_div(y).ok_or_else(overflow)?
                        }
                        BinOp::Mod => {
                            if y == 0 {
                                return zero(engine);
                            }
                            x.checked_rem(y).ok_or_else(overflow)?
                        }
                        _ => unreachable!("comparison and logic handled above"),
                    })
                }
            }
        }
    })
}

fn matches(engine: Engine, filter: Option<&BExpr>, row: &[Value]) -> Result<bool, DbError> {
    match filter {
        None => Ok(true),
        Some(f) => Ok(truthy(&eval(engine, f, row)?) == Some(true)),
    }
}

/// Checks and converts a value for column `c`.
fn coerce(engine: Engine, table: &Table, c: usize, v: Value) -> Result<Value, DbError> {
    let column = &table.columns[c];
    match (&v, column.ty) {
        (Value::Null, _) => {
            if column.not_null {
                Err(errors::not_null(engine, &table.name, &column.name))
            } else {
                Ok(v)
            }
        }
        (Value::Int(_), ColumnType::Int)
        | (Value::Text(_), ColumnType::Text)
        | (Value::Bool(_), ColumnType::Bool) => Ok(v),
        (Value::Text(s), ColumnType::Int) => s
            .trim()
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|_| errors::wrong_type(engine, &column.name, "integer", s)),
        (Value::Int(i), ColumnType::Bool) if engine == Engine::InnoDb && (*i == 0 || *i == 1) => {
            Ok(Value::Bool(*i == 1))
        }
        (Value::Bool(b), ColumnType::Int) if engine == Engine::InnoDb => Ok(Value::Int(*b as i64)),
        (Value::Int(i), ColumnType::Text) if engine == Engine::InnoDb => {
            Ok(Value::Text(i.to_string()))
        }
        _ => Err(errors::wrong_type(
            engine,
            &column.name,
            column.ty.name(),
            &v.to_string(),
        )),
    }
}

/// Picks the access path: primary key lookups, a secondary index with equality on all its
/// columns (unique first), or a scan.
fn choose_access(table: &Table, filter: Option<&BExpr>) -> Access {
    let mut equal: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
    let mut conjuncts = Vec::new();
    if let Some(f) = filter {
        collect_conjuncts(f, &mut conjuncts);
    }
    for c in conjuncts {
        match c {
            BExpr::Bin(l, BinOp::Eq, r) => match (l.as_ref(), r.as_ref()) {
                (BExpr::Col(i), BExpr::Val(v)) | (BExpr::Val(v), BExpr::Col(i)) if !v.is_null() => {
                    equal.insert(*i, vec![v.clone()]);
                }
                _ => {}
            },
            BExpr::In(inner, list, false) => {
                if let BExpr::Col(i) = inner.as_ref() {
                    let values: Option<Vec<Value>> = list
                        .iter()
                        .map(|e| match e {
                            BExpr::Val(v) if !v.is_null() => Some(v.clone()),
                            _ => None,
                        })
                        .collect();
                    if let Some(mut values) = values {
                        values.sort();
                        values.dedup();
                        equal.entry(*i).or_insert(values);
                    }
                }
            }
            _ => {}
        }
    }
    let product = |columns: &[usize]| -> Option<Vec<Key>> {
        let mut keys: Vec<Key> = vec![Vec::new()];
        for c in columns {
            let values = equal.get(c)?;
            let mut next = Vec::new();
            for k in &keys {
                for v in values {
                    let mut k = k.clone();
                    k.push(v.clone());
                    next.push(k);
                }
            }
            keys = next;
            if keys.len() > 1024 {
                return None;
            }
        }
        keys.sort();
        keys.dedup();
        Some(keys)
    };
    if let Some(keys) = product(&table.primary_key) {
        return Access::Keys(keys);
    }
    for unique in [true, false] {
        for (i, index) in table.indexes.iter().enumerate() {
            if index.unique != unique {
                continue;
            }
            if let Some(values) = product(&index.columns) {
                return Access::Index { index: i, values };
            }
        }
    }
    Access::Scan
}

fn collect_conjuncts<'a>(e: &'a BExpr, out: &mut Vec<&'a BExpr>) {
    if let BExpr::Bin(l, BinOp::And, r) = e {
        collect_conjuncts(l, out);
        collect_conjuncts(r, out);
    } else {
        out.push(e);
    }
}

/// The keys of the rows an access path visits, in index order: [`positions`] without the
/// gaps, for reads that lock no gaps (snapshot reads, PostgreSQL's locking reads).
fn row_keys(table: &Table, access: &Access) -> Vec<Key> {
    match access {
        Access::Keys(keys) => keys
            .iter()
            .filter(|key| table.rows.contains_key(*key))
            .cloned()
            .collect(),
        Access::Scan => table.rows.keys().cloned().collect(),
        Access::Index { index, values } => values
            .iter()
            .flat_map(|v| table.index_lookup(*index, v))
            .filter(|key| table.rows.contains_key(key))
            .collect(),
    }
}

/// The index positions an access path visits, in index order, with the gaps InnoDB locks.
fn positions(table: &Table, access: &Access) -> Vec<Position> {
    let pk_gap = |before: Option<Key>| LockTarget::Gap {
        table: table.name.clone(),
        index: None,
        before,
    };
    let mut out = Vec::new();
    match access {
        Access::Keys(keys) => {
            for key in keys {
                if table.rows.contains_key(key) {
                    out.push(Position::Row {
                        key: key.clone(),
                        gap: None,
                    });
                } else {
                    out.push(Position::Gap(pk_gap(table.primary_successor(key))));
                }
            }
        }
        Access::Scan => {
            for key in table.rows.keys() {
                out.push(Position::Row {
                    key: key.clone(),
                    gap: Some(pk_gap(Some(key.clone()))),
                });
            }
            out.push(Position::Gap(pk_gap(None)));
        }
        Access::Index { index, values } => {
            let unique = table.indexes[*index].unique;
            let gap = |before: Option<Key>| LockTarget::Gap {
                table: table.name.clone(),
                index: Some(*index),
                before,
            };
            for v in values {
                // Index entries outlive rolled-back inserts; only rows that exist are visited.
                let keys: Vec<Key> = table
                    .index_lookup(*index, v)
                    .into_iter()
                    .filter(|k| table.rows.contains_key(k))
                    .collect();
                for key in &keys {
                    out.push(Position::Row {
                        key: key.clone(),
                        gap: (!unique).then(|| gap(Some(concat_key(v, key)))),
                    });
                }
                if !unique || keys.is_empty() {
                    let last = keys.last().cloned().unwrap_or_default();
                    let next = table
                        .index_successor(*index, v, &last)
                        .map(|(nv, nk)| concat_key(&nv, &nk));
                    out.push(Position::Gap(gap(next)));
                }
            }
        }
    }
    out
}

fn compare_sort_keys(
    engine: Engine,
    a: &[Value],
    b: &[Value],
    order: &[(BExpr, bool)],
) -> std::cmp::Ordering {
    for ((x, y), (_, desc)) in a.iter().zip(b).zip(order) {
        // NULL sorts last ascending on PostgreSQL and first on MariaDB.
        let o = match (x.is_null(), y.is_null()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => match engine {
                Engine::Postgres => std::cmp::Ordering::Greater,
                Engine::InnoDb => std::cmp::Ordering::Less,
            },
            (false, true) => match engine {
                Engine::Postgres => std::cmp::Ordering::Less,
                Engine::InnoDb => std::cmp::Ordering::Greater,
            },
            _ => x.cmp(y),
        };
        let o = if *desc { o.reverse() } else { o };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    std::cmp::Ordering::Equal
}

fn sort_rows(engine: Engine, rows: &mut Vec<Row>, order: &[(BExpr, bool)]) -> Result<(), DbError> {
    if order.is_empty() {
        return Ok(());
    }
    let mut keyed = Vec::with_capacity(rows.len());
    for row in rows.drain(..) {
        let key = order
            .iter()
            .map(|(e, _)| eval(engine, e, &row))
            .collect::<Result<Vec<_>, _>>()?;
        keyed.push((key, row));
    }
    keyed.sort_by(|a, b| compare_sort_keys(engine, &a.0, &b.0, order));
    rows.extend(keyed.into_iter().map(|(_, r)| r));
    Ok(())
}

fn project(
    engine: Engine,
    table: &Table,
    items: &[SelectItem],
    params: &[Value],
    rows: &[Row],
) -> Result<QueryResult, DbError> {
    let names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    let mut columns = Vec::new();
    let mut exprs = Vec::new();
    for item in items {
        match item {
            SelectItem::Star => {
                for (i, n) in names.iter().enumerate() {
                    columns.push(n.clone());
                    exprs.push(BExpr::Col(i));
                }
            }
            SelectItem::Expr { expr, name } => {
                columns.push(name.clone());
                exprs.push(bind(engine, expr, &names, params)?);
            }
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(
            exprs
                .iter()
                .map(|e| eval(engine, e, row))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    Ok(QueryResult {
        columns,
        rows: out,
        ..Default::default()
    })
}

fn aggregate(
    engine: Engine,
    table: &Table,
    items: &[SelectItem],
    params: &[Value],
    rows: &[Row],
) -> Result<QueryResult, DbError> {
    let names: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
    let mut columns = Vec::new();
    let mut out = Vec::new();
    for item in items {
        let SelectItem::Expr { expr, name } = item else {
            return Err(errors::grouping(engine, "*"));
        };
        let Expr::Agg(func, arg) = expr else {
            let column = match expr {
                Expr::Column(c) => c.clone(),
                _ => name.clone(),
            };
            return Err(errors::grouping(engine, &column));
        };
        columns.push(name.clone());
        let arg = arg
            .as_ref()
            .map(|a| bind(engine, a, &names, params))
            .transpose()?;
        let mut values = Vec::new();
        if let Some(arg) = &arg {
            for row in rows {
                let v = eval(engine, arg, row)?;
                if !v.is_null() {
                    values.push(v);
                }
            }
        }
        out.push(match func {
            AggFn::CountStar => Value::Int(rows.len() as i64),
            AggFn::Count => Value::Int(values.len() as i64),
            AggFn::Sum => {
                if values.is_empty() {
                    Value::Null
                } else {
                    let mut sum: i64 = 0;
                    for v in &values {
                        let Value::Int(i) = v else {
                            return Err(errors::type_mismatch(engine, &format!("sum({v:?})")));
                        };
                        sum = sum
                            .checked_add(*i)
                            .ok_or_else(|| errors::overflow(engine))?;
                    }
                    Value::Int(sum)
                }
            }
            AggFn::Min => values.iter().min().cloned().unwrap_or(Value::Null),
            AggFn::Max => values.iter().max().cloned().unwrap_or(Value::Null),
        });
    }
    Ok(QueryResult {
        columns,
        rows: vec![out],
        ..Default::default()
    })
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
