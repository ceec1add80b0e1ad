//! A stand-in for the engine with the agreed API (temporary): one table `test(id, value)`, row
//! locks on UPDATE and SELECT .. FOR UPDATE, immediate deadlock detection, lock wait timeout.
//! Replaced by the real engine when it lands.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    pub rows_affected: u64,
    pub last_insert_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DbError {
    code: String,
    message: String,
}

impl DbError {
    pub fn new(code: &str, message: &str) -> Self {
        DbError {
            code: code.to_string(),
            message: message.to_string(),
        }
    }
    pub fn code(&self) -> &str {
        &self.code
    }
    pub fn is_deadlock(&self) -> bool {
        self.code == "40P01" || self.code == "1213"
    }
    pub fn is_serialization_failure(&self) -> bool {
        self.code == "40001"
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    PgRc,
    MariaRr,
}

impl Profile {
    pub fn is_postgres(self) -> bool {
        matches!(self, Profile::PgRc)
    }
}

#[derive(Debug, Clone)]
pub struct DbConfig {
    pub lock_wait_timeout: Duration,
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            lock_wait_timeout: Duration::from_secs(5),
        }
    }
}

pub type SessionId = u64;

pub enum Exec {
    Done(Result<QueryResult, DbError>),
    Blocked,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommitRecord {
    pub writes: Vec<(i64, i64)>,
}

#[derive(Debug, Clone, Default)]
pub struct DbStats {
    pub rows_touched: u64,
}

#[derive(Default)]
struct Session {
    in_tx: bool,
    writes: BTreeMap<i64, i64>,
    locks: Vec<i64>,
    blocked: Option<(String, Vec<Value>, i64, Duration)>,
}

pub struct Database {
    profile: Profile,
    config: DbConfig,
    rows: BTreeMap<i64, i64>,
    sessions: BTreeMap<SessionId, Session>,
    lock_owner: BTreeMap<i64, SessionId>,
    next_session: SessionId,
    completions: Vec<(SessionId, Result<QueryResult, DbError>)>,
    log: Vec<CommitRecord>,
    stats: DbStats,
}

impl Database {
    pub fn new(profile: Profile, config: DbConfig) -> Self {
        Database {
            profile,
            config,
            rows: BTreeMap::new(),
            sessions: BTreeMap::new(),
            lock_owner: BTreeMap::new(),
            next_session: 1,
            completions: vec![],
            log: vec![],
            stats: DbStats::default(),
        }
    }
    pub fn connect(&mut self) -> SessionId {
        let id = self.next_session;
        self.next_session += 1;
        self.sessions.insert(id, Session::default());
        id
    }
    fn deadlock_error(&self) -> DbError {
        if self.profile.is_postgres() {
            DbError::new("40P01", "deadlock detected")
        } else {
            DbError::new(
                "1213",
                "Deadlock found when trying to get lock; try restarting transaction",
            )
        }
    }
    fn int(params: &[Value]) -> i64 {
        match params.first() {
            Some(Value::Int(i)) => *i,
            _ => 0,
        }
    }
    pub fn execute(&mut self, s: SessionId, sql: &str, params: &[Value], now: Duration) -> Exec {
        self.stats.rows_touched = 1;
        let upper = sql.trim().to_ascii_uppercase();
        let session = self.sessions.get_mut(&s).unwrap();
        if upper == "BEGIN" {
            session.in_tx = true;
            return Exec::Done(Ok(QueryResult::default()));
        }
        if upper == "COMMIT" {
            self.finish(s, true);
            return Exec::Done(Ok(QueryResult::default()));
        }
        if upper == "ROLLBACK" {
            self.finish(s, false);
            return Exec::Done(Ok(QueryResult::default()));
        }
        if upper.starts_with("INSERT") {
            let id = Self::int(params);
            let value = match params.get(1) {
                Some(Value::Int(i)) => *i,
                _ => 0,
            };
            let autocommit = !session.in_tx;
            session.writes.insert(id, value);
            if autocommit {
                self.finish(s, true);
            }
            return Exec::Done(Ok(QueryResult {
                rows_affected: 1,
                ..Default::default()
            }));
        }
        let id = Self::int(params);
        let locking = upper.starts_with("UPDATE") || upper.contains("FOR UPDATE");
        if locking {
            match self.lock_owner.get(&id) {
                Some(&owner) if owner != s => {
                    // waits-for: owner blocked on a lock held by s?
                    let mut cur = owner;
                    for _ in 0..16 {
                        let Some((_, _, want, _)) = &self.sessions[&cur].blocked else {
                            break;
                        };
                        match self.lock_owner.get(want) {
                            Some(&next) if next == s => {
                                self.finish(s, false);
                                return Exec::Done(Err(self.deadlock_error()));
                            }
                            Some(&next) => cur = next,
                            None => break,
                        }
                    }
                    let deadline = now + self.config.lock_wait_timeout;
                    self.sessions.get_mut(&s).unwrap().blocked =
                        Some((sql.to_string(), params.to_vec(), id, deadline));
                    return Exec::Blocked;
                }
                _ => {}
            }
        }
        Exec::Done(Ok(self.run(s, &upper, id)))
    }
    fn run(&mut self, s: SessionId, upper: &str, id: i64) -> QueryResult {
        let session = self.sessions.get_mut(&s).unwrap();
        let locking = upper.starts_with("UPDATE") || upper.contains("FOR UPDATE");
        if locking && session.in_tx && !session.locks.contains(&id) {
            session.locks.push(id);
            self.lock_owner.insert(id, s);
        }
        let current = session
            .writes
            .get(&id)
            .copied()
            .or(self.rows.get(&id).copied());
        if upper.starts_with("UPDATE") {
            let Some(v) = current else {
                return QueryResult::default();
            };
            let autocommit = !session.in_tx;
            session.writes.insert(id, v + 1);
            if autocommit {
                self.finish(s, true);
            }
            QueryResult {
                rows_affected: 1,
                ..Default::default()
            }
        } else {
            QueryResult {
                columns: vec!["value".into()],
                rows: current
                    .map(|v| vec![vec![Value::Int(v)]])
                    .unwrap_or_default(),
                ..Default::default()
            }
        }
    }
    fn finish(&mut self, s: SessionId, commit: bool) {
        let session = self.sessions.get_mut(&s).unwrap();
        session.in_tx = false;
        let writes = std::mem::take(&mut session.writes);
        let locks = std::mem::take(&mut session.locks);
        if commit && !writes.is_empty() {
            self.log.push(CommitRecord {
                writes: writes.iter().map(|(k, v)| (*k, *v)).collect(),
            });
            self.rows.extend(writes);
        }
        for id in locks {
            self.lock_owner.remove(&id);
        }
        self.wake();
    }
    fn wake(&mut self) {
        let blocked: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, x)| x.blocked.is_some())
            .map(|(id, _)| *id)
            .collect();
        for s in blocked {
            let (_, _, id, _) = self.sessions[&s].blocked.clone().unwrap();
            if self.lock_owner.get(&id).is_none_or(|o| *o == s) {
                let (sql, _, id, _) = self.sessions.get_mut(&s).unwrap().blocked.take().unwrap();
                let r = self.run(s, &sql.trim().to_ascii_uppercase(), id);
                self.completions.push((s, Ok(r)));
            }
        }
    }
    pub fn take_completions(&mut self) -> Vec<(SessionId, Result<QueryResult, DbError>)> {
        std::mem::take(&mut self.completions)
    }
    pub fn next_deadline(&self) -> Option<Duration> {
        self.sessions
            .values()
            .filter_map(|s| s.blocked.as_ref().map(|b| b.3))
            .min()
    }
    pub fn advance(&mut self, now: Duration) {
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, x)| x.blocked.as_ref().is_some_and(|b| b.3 <= now))
            .map(|(id, _)| *id)
            .collect();
        for s in expired {
            self.sessions.get_mut(&s).unwrap().blocked = None;
            let e = if self.profile.is_postgres() {
                DbError::new("55P03", "canceling statement due to lock timeout")
            } else {
                DbError::new(
                    "1205",
                    "Lock wait timeout exceeded; try restarting transaction",
                )
            };
            self.completions.push((s, Err(e)));
        }
    }
    pub fn disconnect(&mut self, s: SessionId) {
        if self.sessions.contains_key(&s) {
            self.sessions.get_mut(&s).unwrap().blocked = None;
            self.finish(s, false);
            self.sessions.remove(&s);
        }
    }
    pub fn crash(&mut self) {
        self.sessions.clear();
        self.lock_owner.clear();
        self.completions.clear();
    }
    pub fn in_transaction(&self, s: SessionId) -> bool {
        self.sessions.get(&s).is_some_and(|x| x.in_tx)
    }
    pub fn apply_commit_record(&mut self, record: &CommitRecord) {
        self.rows.extend(record.writes.iter().copied());
        self.log.push(record.clone());
    }
    pub fn commit_log(&self) -> &[CommitRecord] {
        &self.log
    }
    pub fn table_rows(&self, _table: &str) -> Result<Vec<Vec<Value>>, DbError> {
        Ok(self
            .rows
            .iter()
            .map(|(k, v)| vec![Value::Int(*k), Value::Int(*v)])
            .collect())
    }
    pub fn stats(&self) -> DbStats {
        self.stats.clone()
    }
}
