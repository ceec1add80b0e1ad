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
//! The files, the way PostgreSQL keeps executor, access methods and lock manager apart:
//! - this file: the [`Database`] itself, its public interface and the statement entry point;
//! - `executor`: statement execution (SELECT, INSERT, UPDATE, DELETE) over the others;
//! - `access`: access paths (which index positions a statement visits, in index order);
//! - `read`: the rows a statement reads and locks on those paths (snapshot reads, PostgreSQL
//!   and InnoDB locking reads, SSI read tracking);
//! - `write`: unique checks, new row versions and InnoDB insert intentions;
//! - `predicate`: PostgreSQL's predicate locks for SSI (what a read locks, a write meets);
//! - `transaction`: begin, commit, rollback, undo, each engine's rule for what an error rolls
//!   back, and snapshots; `savepoint`: savepoints and what rolling back to one gives back;
//! - `session`: connections and session settings;
//! - `wait`: lock waits, their deadlines, deadlock detection and wake-ups;
//! - `schema`: `CREATE TABLE` / `CREATE INDEX`;
//! - `expr`: binding and evaluating expressions; `result`: sorting, projection, aggregates.
//!
//! Key invariants: every uncommitted row version belongs to an open transaction that holds
//! that row's exclusive lock; a session has at most one statement in flight; a transaction
//! waits for at most one lock.
//!
//! [`storage`]: super::storage
//! [`lock`]: super::lock
//! [`ssi`]: super::ssi

mod access;
mod executor;
mod expr;
mod predicate;
mod read;
mod result;
mod savepoint;
mod schema;
mod session;
mod transaction;
mod wait;
mod write;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::lock::{LockManager, LockTarget, QueueRule};
use super::profile::{errors, DbConfig, Engine, Profile};
use super::sql::{PlanCache, Stmt};
use super::ssi::Ssi;
use super::storage::{CommitRecord, CommitSeq, Table, TxId, Version};
use super::value::{DbError, QueryResult, Value};

use session::Session;
use transaction::Tx;

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

/// Why a statement did not finish.
enum Fail {
    Error(DbError),
    /// Queued for a lock on a row of this table.
    Wait {
        table: String,
        /// A lock that only stands for waiting (PostgreSQL's unique check waits for the
        /// inserting transaction to end, it takes no row lock): given back when granted.
        release_on_wake: Option<LockTarget>,
    },
}

impl Fail {
    /// A wait for an ordinary lock on a row of `table`, kept once granted.
    fn wait(table: &str) -> Fail {
        Fail::Wait {
            table: table.to_string(),
            release_on_wake: None,
        }
    }
}

impl From<DbError> for Fail {
    fn from(e: DbError) -> Self {
        Fail::Error(e)
    }
}

type Step<T> = Result<T, Fail>;

/// The simulated SQL database. A clone is an independent database in the same state (a
/// scenario seeds one and starts each run from a clone of it).
#[derive(Debug, Clone)]
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
    /// PostgreSQL deadlock checks that found no cycle, by waiting session, since the last
    /// [`Database::take_clear_deadlock_checks`]: a check runs once per wait, so a cycle that
    /// closes after it is found only by a later waiter's check.
    clear_deadlock_checks: Vec<SessionId>,
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
            locks: LockManager::new(match profile.engine() {
                Engine::Postgres => QueueRule::Postgres,
                Engine::InnoDb => QueueRule::InnoDb,
            }),
            ssi: Ssi::default(),
            plans: PlanCache::default(),
            last_commit: 0,
            next_tx: 1,
            next_session: 1,
            log: Vec::new(),
            completions: Vec::new(),
            woken: VecDeque::new(),
            clear_deadlock_checks: Vec::new(),
            now: Duration::ZERO,
            stats: DbStats::default(),
        }
    }

    /// The profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The sessions whose PostgreSQL deadlock check ran and found no cycle since the last
    /// call, in the order the checks ran (a check that finds one ends its statement instead).
    pub fn take_clear_deadlock_checks(&mut self) -> Vec<SessionId> {
        std::mem::take(&mut self.clear_deadlock_checks)
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
    /// An orphaned session's statement has no client to answer: its session closes here,
    /// which may let other statements run and finish in turn.
    pub fn take_completions(&mut self) -> Vec<(SessionId, Result<QueryResult, DbError>)> {
        let mut finished = Vec::new();
        loop {
            let batch = std::mem::take(&mut self.completions);
            if batch.is_empty() {
                return finished;
            }
            for (session, result) in batch {
                if self.sessions.get(&session).is_some_and(|s| s.orphaned) {
                    self.close_session(session);
                    assert!(!self.sessions.contains_key(&session));
                } else {
                    finished.push((session, result));
                }
            }
        }
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
                moved_to: None,
                new_tuple: false,
            });
            rv.prune(seq);
            table.writes_since_purge += 1;
        }
        self.log.push(CommitRecord {
            seq,
            ddl: None,
            writes: record.writes.clone(),
        });
        let written: std::collections::BTreeSet<String> =
            record.writes.iter().map(|w| w.table.clone()).collect();
        self.purge_due(&written);
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

    fn table(&self, name: &str) -> Result<&Table, DbError> {
        self.tables
            .get(name)
            .ok_or_else(|| errors::no_such_table(self.engine, name))
    }

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

#[cfg(test)]
mod tests;
