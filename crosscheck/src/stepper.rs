//! The deterministic stepping protocol (PostgreSQL's isolation tester, DT2): one real
//! connection per session, one step at a time in the given order, and a step is over only when
//! every statement still in flight is either finished or, as the server itself reports,
//! waiting for a lock. Never a fixed sleep.
//!
//! - Blocked: PostgreSQL reports a backend in `pg_locks` with `granted = false` (set by the
//!   releasing backend, so a granted waiter never shows as waiting). MariaDB reports its live
//!   `Innodb_row_lock_current_waits` counter: when it counts every statement in flight, all of
//!   them wait; the observation is confirmed once more before the step ends, because the
//!   counter drops only when the woken waiter runs.
//! - Deadlock timers: PostgreSQL checks for a deadlock `deadlock_timeout` after a wait began and
//!   the waiter whose check finds the cycle is the victim. Sessions run with
//!   `deadlock_timeout = 1ms` and `log_lock_waits`, and a step that leaves a statement waiting
//!   ends only after that statement's check has run: the server tells its client
//!   (`client_min_messages = log`: "process N still waiting for ..."). So the check of a wait
//!   always runs in the step that began it, the statement that closes a cycle is the victim,
//!   and the order of steps decides, as in the conformance runner (1 s steps, 300 ms timeout).
//!   A transcript also says which waits the simulated run checked at all: one that ended
//!   before its `deadlock_timeout` was never checked, so its statement runs with
//!   `deadlock_timeout = 1h` ([`Steering::pg_deadlock_check`]) and a cycle that only it could
//!   find stays, as it did in the simulated run, until something else breaks it.
//!   InnoDB detects deadlocks at once when a wait begins.
//! - Lock wait and statement timeouts are real time. The protocol keeps the conformance
//!   runner's clock (every SQL step lasts 1 s, `SLEEP d` lasts d): a timeout whose deadline on
//!   that clock falls inside the current step is waited for (the real timer fires; the wait is
//!   bounded), one that falls later is not. The session's timeouts are read from the `SET`
//!   statements it sent.
//! - A blocked statement that finishes during a later step is recorded as `BLOCK->X@sN`, a
//!   statement sent to a session that is still blocked waits behind it (`QUEUED X`). Queued
//!   statements are sent one at a time once the step has settled, the lowest step first, each
//!   settled before the next: when one commit wakes several sessions, the script decides whose
//!   queued statements run first (the conformance runner does the same), not whose answer
//!   happened to arrive first.
//! - `DISCONNECT` closes the connection. The server may keep the backend (a backend waiting
//!   for a lock does not notice its client left); such a backend is followed until it ends,
//!   because its locks still decide other sessions' waits.
//! - `CRASH` (transcripts) ends every session as a crash does: blocked backends first, those
//!   nobody waits behind first, so no waiting statement runs because its blocker went away.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use shopsim_sim::db::conformance::{render_final, setup_tables, Outcome};
use shopsim_sim::db::{Isolation, Profile};
use tokio::sync::mpsc;

use crate::server::EngineKind;
use crate::session::{lost_code, Control, RealResult, RealSession, CONNECT_DEADLINE};

mod settle;
mod setup;

pub use setup::{default_setup, serial_columns};
use setup::{inline_indexes, maria_types};

/// The conformance runner's step length (its `BLOCK_AFTER`).
const STEP: Duration = Duration::from_secs(1);
/// The deadlock timeout of the conformance runner's PostgreSQL: inside the step that waits.
const PG_DEADLOCK_TIMEOUT_VIRTUAL: Duration = Duration::from_millis(300);
/// The simulated InnoDB lock wait timeout of the conformance runner (MariaDB's default).
const INNODB_LOCK_WAIT_TIMEOUT: Duration = Duration::from_secs(50);
/// How long a step may take before the harness gives up on it.
const STEP_LIMIT: Duration = Duration::from_secs(30);

/// How virtual time passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The conformance format's clock: each SQL step 1 s, `SLEEP d` d; timers fire on it.
    Conformance,
    /// Transcripts: no time passes between steps; PostgreSQL's deadlock check of every wait
    /// runs in the step that began it; lock wait timeouts never fire.
    Steps,
}

/// The protocol could not go on: the server died, or it answered something the harness
/// cannot use. Names the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// 1-based step, 0 for setup.
    pub step: usize,
    /// What happened.
    pub message: String,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.step == 0 {
            write!(f, "setup: {}", self.message)
        } else {
            write!(f, "step {}: {}", self.step, self.message)
        }
    }
}

impl std::error::Error for StepError {}

/// A session's timers, as its `SET` statements left them.
#[derive(Debug, Clone, Default)]
struct Timers {
    /// Lock wait timeout; `None` waits forever.
    lock: Option<Duration>,
    /// Statement timeout; `None` never.
    statement: Option<Duration>,
    /// PostgreSQL deadlock timeout set by the script; `None`: the protocol's own.
    deadlock: Option<Duration>,
}

#[derive(Debug)]
struct InFlight {
    step: usize,
    queued: bool,
    statement: String,
    /// Virtual time the statement was sent.
    sent_v: Duration,
    /// PostgreSQL: a wait of this statement is checked for a deadlock in its step (the
    /// settle waits for the check's notice).
    deadlock_check: bool,
    /// The current lock wait: server's start (PostgreSQL), virtual start, real start.
    wait: Option<(Option<f64>, Duration, Instant)>,
}

struct Session {
    real: RealSession,
    in_flight: Option<InFlight>,
    queued: VecDeque<usize>,
    timers: Timers,
    /// Its backend is stopped (SIGSTOP) for the current step: see [`Stepper::step_steered`].
    frozen: bool,
    /// It set a variable no reset takes back (a PostgreSQL custom setting stays defined as
    /// a placeholder after `DISCARD ALL`, a MariaDB user variable keeps its value), so it is
    /// not reused for a later script: the next one would see it.
    keeps_variables: bool,
    /// Its `deadlock_timeout` may be `1h` ([`Steering::pg_deadlock_check`]): `SET` is
    /// transactional, so a later `1ms` may have been rolled back. Only a statement sent with
    /// its own setting then counts on a check.
    deadlock_timeout_long: bool,
}

/// Whether `statement` sets a session variable that outlives a reset: `SET app.x = ...`,
/// `SET LOCAL app.x`, `SET @x = ...`, `set_config(...)`, `@x := ...`.
fn sets_session_variable(statement: &str) -> bool {
    let lower = statement.trim().to_ascii_lowercase();
    if lower.contains("set_config(") || lower.contains(":=") {
        return true;
    }
    let Some(rest) = lower.strip_prefix("set ") else {
        return false;
    };
    let rest = rest.trim_start();
    let rest = rest
        .strip_prefix("local ")
        .or_else(|| rest.strip_prefix("session "))
        .unwrap_or(rest)
        .trim_start();
    let name = rest
        .split(|c: char| c.is_whitespace() || c == '=')
        .next()
        .unwrap_or("");
    name.contains('.') || name.starts_with('@')
}

/// How a step is steered on the real engine, beyond the order of the steps (transcripts:
/// what the simulated run decided by timing, made to happen the same way).
#[derive(Debug, Clone, Default)]
pub struct Steering {
    /// Waiting sessions whose backends are held back while the step settles
    /// ([`Stepper::step_steered`]).
    pub hold: Vec<String>,
    /// PostgreSQL, a statement that waits: whether its deadlock check runs (in the step that
    /// began the wait: `deadlock_timeout = 1ms`) or never (`1h`). A simulated run checks
    /// `deadlock_timeout` after a wait began in virtual time, so a wait that ended sooner was
    /// never checked, and a cycle nobody checked was not found. `None` keeps the session's
    /// setting.
    pub pg_deadlock_check: Option<bool>,
}

/// The `SET` that makes a PostgreSQL wait's deadlock check run in its step, or never.
fn pg_deadlock_timeout(check: bool) -> String {
    let timeout = if check { "1ms" } else { "1h" };
    format!("set deadlock_timeout = '{timeout}'")
}

/// One script being stepped on a real server.
pub struct Stepper {
    kind: EngineKind,
    profile: Profile,
    clock: Clock,
    port: u16,
    pool: Pool,
    schema: String,
    setup: Vec<String>,
    sessions: BTreeMap<String, Session>,
    /// Answers that arrived while a reused session was being reset.
    stash: VecDeque<(usize, RealResult)>,
    /// Backends of closed sessions that the server still runs.
    zombies: Vec<i64>,
    steps: Vec<(String, String)>,
    /// Per step: [`Steering::pg_deadlock_check`] (a queued statement is sent later).
    deadlock_checks: Vec<Option<bool>>,
    /// Per step: its token and its answer.
    outcomes: Vec<Option<(String, RealResult)>>,
    current: usize,
    now_v: Duration,
}

/// The connections of one server that outlive a script: the control connection and idle
/// sessions, reused by the next script (a connection costs a PostgreSQL backend fork).
pub struct Pool {
    control: Control,
    /// MariaDB: a connection whose open read view holds purge back while a script runs.
    purge_guard: Option<Control>,
    idle: Vec<RealSession>,
    answers_tx: mpsc::UnboundedSender<(usize, RealResult)>,
    answers: mpsc::UnboundedReceiver<(usize, RealResult)>,
    next_key: usize,
}

impl Pool {
    /// Connects the control connection to the server at `port`.
    pub async fn connect(kind: EngineKind, port: u16) -> Result<Pool, StepError> {
        let control =
            match tokio::time::timeout(CONNECT_DEADLINE, Control::connect(kind, port)).await {
                Ok(Ok(control)) => control,
                Ok(Err(e)) => {
                    return Err(StepError {
                        step: 0,
                        message: e.to_string(),
                    })
                }
                Err(_) => {
                    return Err(StepError {
                        step: 0,
                        message: format!(
                            "the control connection did not connect in {} s",
                            CONNECT_DEADLINE.as_secs()
                        ),
                    })
                }
            };
        let (answers_tx, answers) = mpsc::unbounded_channel();
        Ok(Pool {
            control,
            purge_guard: None,
            idle: Vec::new(),
            answers_tx,
            answers,
            next_key: 0,
        })
    }

    /// Runs one statement on the control connection.
    pub async fn run(&mut self, sql: &str) -> RealResult {
        self.control.run(sql).await
    }

    /// MariaDB: opens a read view on a connection of its own, which keeps InnoDB's purge from
    /// removing the records that the script's transactions delete until
    /// [`Pool::release_purge`]. Purge runs in the background a few milliseconds after a
    /// commit, so without this whether a later locking read finds (and locks) a
    /// delete-marked record depends on the server's timing; the simulated database purges
    /// only after many writes to a table, never within a short script.
    async fn hold_purge(&mut self, port: u16) -> Result<(), String> {
        if self.purge_guard.is_none() {
            let guard = Control::connect(EngineKind::MariaDb, port)
                .await
                .map_err(|e| format!("the purge guard connection: {e}"))?;
            self.purge_guard = Some(guard);
        }
        let guard = self.purge_guard.as_mut().expect("connected");
        for statement in [
            "set session transaction isolation level repeatable read",
            "start transaction with consistent snapshot",
        ] {
            if let RealResult::Err { code, message } = guard.run(statement).await {
                self.purge_guard = None;
                return Err(format!("the purge guard's `{statement}`: {code} {message}"));
            }
        }
        Ok(())
    }

    /// Ends the read view of [`Pool::hold_purge`], if one is open: purge may run again.
    async fn release_purge(&mut self) {
        if let Some(guard) = self.purge_guard.as_mut() {
            if let RealResult::Err { .. } = guard.run("commit").await {
                // A connection that cannot commit is dropped (its view with it).
                self.purge_guard = None;
            }
        }
    }
}

/// The statements a conformance `BEGIN` stands for: the engine's own start of a transaction at
/// the profile's isolation level.
pub fn begin_statements(profile: Profile) -> Vec<String> {
    let level = profile.isolation().sql();
    if profile.is_postgres() {
        vec![
            "BEGIN".to_string(),
            format!("SET TRANSACTION ISOLATION LEVEL {level}"),
        ]
    } else {
        vec![
            format!("SET SESSION TRANSACTION ISOLATION LEVEL {level}"),
            "BEGIN".to_string(),
        ]
    }
}

/// The shared-lock clause `{share}` stands for.
pub fn share_clause(profile: Profile) -> &'static str {
    if profile.is_postgres() {
        "FOR SHARE"
    } else {
        "LOCK IN SHARE MODE"
    }
}

fn pg_level(isolation: Isolation) -> &'static str {
    match isolation {
        Isolation::ReadUncommitted => "read uncommitted",
        Isolation::ReadCommitted => "read committed",
        Isolation::RepeatableRead => "repeatable read",
        Isolation::Serializable => "serializable",
    }
}

/// Parses a duration setting: PostgreSQL `'200ms'`, `'2s'`, `0` (ms), MariaDB seconds.
fn parse_setting_duration(value: &str, unit_ms: u64) -> Option<Duration> {
    let value = value.trim().trim_matches('\'').trim_matches('"').trim();
    let digits: String = value.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits.parse().ok()?;
    let factor = match value[digits.len()..].trim() {
        "" => unit_ms,
        "ms" => 1,
        "s" => 1000,
        "min" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(factor)?))
}

impl Timers {
    /// Applies a successful `SET` of a timeout.
    fn apply(&mut self, kind: EngineKind, statement: &str) {
        let lower = statement.trim().to_ascii_lowercase();
        let Some(rest) = lower.strip_prefix("set ") else {
            return;
        };
        let rest = rest
            .trim_start_matches("session ")
            .trim_start_matches("local ")
            .trim();
        let Some((name, value)) = rest
            .split_once('=')
            .or_else(|| rest.split_once(" to "))
            .map(|(n, v)| (n.trim(), v.trim()))
        else {
            return;
        };
        let forever = |d: Duration| (!d.is_zero()).then_some(d);
        match (kind, name) {
            (EngineKind::Postgres, "lock_timeout") => {
                if let Some(d) = parse_setting_duration(value, 1) {
                    self.lock = forever(d);
                }
            }
            (EngineKind::Postgres, "statement_timeout") => {
                if let Some(d) = parse_setting_duration(value, 1) {
                    self.statement = forever(d);
                }
            }
            (EngineKind::Postgres, "deadlock_timeout") => {
                self.deadlock = parse_setting_duration(value, 1);
            }
            (EngineKind::MariaDb, "innodb_lock_wait_timeout") => {
                if let Some(d) = parse_setting_duration(value, 1000) {
                    self.lock = Some(d);
                }
            }
            _ => {}
        }
    }
}

impl Stepper {
    /// Prepares schema `schema` on the server at `port` and runs `setup` in it. With `reuse`,
    /// the schema already holds `setup`'s tables (the same `CREATE` statements) from an
    /// earlier run: they are truncated and the setup's other statements run again (DDL is
    /// slow on InnoDB), the same starting state as new tables.
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        mut pool: Pool,
        kind: EngineKind,
        port: u16,
        profile: Profile,
        clock: Clock,
        schema: &str,
        setup: &[String],
        reuse: bool,
    ) -> Result<Stepper, StepError> {
        assert_eq!(EngineKind::of(profile), kind);
        let setup_error = |message: String| StepError { step: 0, message };
        let is_ddl = |s: &String| s.trim_start().to_ascii_lowercase().starts_with("create ");
        let prepare = match kind {
            _ if reuse => {
                // The schema holds `setup`'s tables from an earlier run of this lane: emptied
                // by TRUNCATE, which gives a fresh table (InnoDB recreates it: no
                // delete-marked records for locking reads to lock; PostgreSQL a new empty
                // file) with its identity restarted, the state of a table just created.
                let tables = setup_tables(setup);
                let mut statements = vec![match kind {
                    EngineKind::Postgres => format!("set search_path = {schema}"),
                    EngineKind::MariaDb => format!("use {schema}"),
                }];
                match kind {
                    EngineKind::Postgres if !tables.is_empty() => {
                        statements.push(format!("truncate {} restart identity", tables.join(", ")))
                    }
                    EngineKind::Postgres => {}
                    EngineKind::MariaDb => {
                        for table in &tables {
                            statements.push(format!("truncate table {table}"));
                        }
                    }
                }
                statements
            }
            EngineKind::Postgres => vec![
                format!("drop schema if exists {schema} cascade"),
                format!("create schema {schema}"),
                format!("set search_path = {schema}"),
            ],
            EngineKind::MariaDb => vec![
                format!("drop database if exists {schema}"),
                format!("create database {schema}"),
                format!("use {schema}"),
            ],
        };
        let setup: Vec<String> = match kind {
            EngineKind::MariaDb => inline_indexes(&maria_types(setup)),
            EngineKind::Postgres => setup.to_vec(),
        };
        // Rows loaded with their ids do not move a PostgreSQL sequence (the simulated
        // database's counter follows explicit ids, as InnoDB's does): move each past them, so
        // the first generated id is the same on both sides. Setup only; steps are compared.
        let mut sequences = Vec::new();
        if kind == EngineKind::Postgres {
            for table in setup_tables(&setup) {
                for column in serial_columns(&setup, &table) {
                    sequences.push(format!(
                        "select setval(pg_get_serial_sequence('{table}', '{column}'), \
                         coalesce((select max({column}) from {table}), 0) + 1, false)"
                    ));
                }
            }
        }
        // The last script's read view (if its run failed before `finish`) lets purge go.
        pool.release_purge().await;
        let setup_rest = setup.iter().filter(|s| !(reuse && is_ddl(s)));
        for statement in prepare.iter().chain(setup_rest).chain(&sequences) {
            if let RealResult::Err { code, message } = pool.control.run(statement).await {
                return Err(setup_error(format!(
                    "the engine rejected `{statement}`: {code} {message}"
                )));
            }
        }
        if kind == EngineKind::MariaDb {
            pool.hold_purge(port).await.map_err(setup_error)?;
        }
        Ok(Stepper {
            kind,
            profile,
            clock,
            port,
            pool,
            schema: schema.to_string(),
            setup,
            sessions: BTreeMap::new(),
            stash: VecDeque::new(),
            zombies: Vec::new(),
            steps: Vec::new(),
            deadlock_checks: Vec::new(),
            outcomes: Vec::new(),
            current: 0,
            now_v: Duration::ZERO,
        })
    }

    fn session_init(&self) -> Vec<String> {
        let level = self.profile.isolation();
        match self.kind {
            EngineKind::Postgres => vec![
                format!("set search_path = {}", self.schema),
                "set deadlock_timeout = '1ms'".to_string(),
                "set log_lock_waits = on".to_string(),
                "set client_min_messages = log".to_string(),
                "set lock_timeout = 0".to_string(),
                "set statement_timeout = 0".to_string(),
                format!("set default_transaction_isolation = '{}'", pg_level(level)),
            ],
            EngineKind::MariaDb => {
                let timeout = match self.clock {
                    Clock::Conformance => INNODB_LOCK_WAIT_TIMEOUT.as_secs(),
                    // Transcripts replay far faster than they ran: no real timeout may fire.
                    Clock::Steps => 100_000,
                };
                vec![
                    format!("use {}", self.schema),
                    format!("set session transaction isolation level {}", level.sql()),
                    format!("set session innodb_lock_wait_timeout = {timeout}"),
                    format!(
                        "set session innodb_snapshot_isolation = {}",
                        if self.profile.innodb_snapshot_isolation() {
                            "ON"
                        } else {
                            "OFF"
                        }
                    ),
                ]
            }
        }
    }

    async fn session(&mut self, name: &str) -> Result<&mut Session, StepError> {
        if !self.sessions.contains_key(name) {
            let init = self.session_init();
            let real = match self.reuse_idle(&init).await {
                Some(real) => real,
                None => {
                    let key = self.pool.next_key;
                    self.pool.next_key += 1;
                    let open = RealSession::open(
                        self.kind,
                        self.port,
                        key,
                        &init,
                        self.pool.answers_tx.clone(),
                    );
                    match tokio::time::timeout(CONNECT_DEADLINE, open).await {
                        Ok(Ok(real)) => real,
                        Ok(Err(e)) => return Err(self.fail(e.to_string())),
                        Err(_) => {
                            return Err(self.fail(format!(
                                "session {name} did not connect in {} s",
                                CONNECT_DEADLINE.as_secs()
                            )))
                        }
                    }
                }
            };
            let timers = Timers {
                lock: match (self.kind, self.clock) {
                    (EngineKind::MariaDb, Clock::Conformance) => Some(INNODB_LOCK_WAIT_TIMEOUT),
                    _ => None,
                },
                ..Timers::default()
            };
            self.sessions.insert(
                name.to_string(),
                Session {
                    real,
                    in_flight: None,
                    queued: VecDeque::new(),
                    timers,
                    keeps_variables: false,
                    deadlock_timeout_long: false,
                    frozen: false,
                },
            );
        }
        Ok(self.sessions.get_mut(name).expect("just inserted"))
    }

    /// An idle session of an earlier script, reset: its transaction rolled back, its
    /// settings discarded and set again. `None` if there is none (or it failed to reset).
    async fn reuse_idle(&mut self, init: &[String]) -> Option<RealSession> {
        let real = self.pool.idle.pop()?;
        let mut batch = vec!["rollback".to_string()];
        if self.kind == EngineKind::Postgres {
            batch.push("discard all".to_string());
        }
        batch.extend(init.iter().cloned());
        real.send(batch);
        loop {
            let answer = tokio::time::timeout(Duration::from_secs(10), self.pool.answers.recv())
                .await
                .ok()??;
            if answer.0 != real.key {
                self.stash.push_back(answer);
                continue;
            }
            if matches!(answer.1, RealResult::Ok(_)) {
                return Some(real);
            }
            self.zombies.push(real.backend);
            real.close();
            return None;
        }
    }

    /// Plays step `session: statement` like [`Stepper::step`], steered: its deadlock check as
    /// [`Steering::pg_deadlock_check`] says, and the backends of the waiting sessions
    /// [`Steering::hold`] stopped while the step settles, then let go and settled again.
    ///
    /// This steers a grant the real engine leaves to process scheduling: when a holder
    /// releases a row that several sessions wait for, PostgreSQL wakes them all and the one
    /// whose process runs first gets the row's new version. A replay that knows which waiters
    /// the simulated run kept waiting holds exactly those back, so the waiters it granted run
    /// first; the held ones then wake, find the row taken and wait again, as they did in the
    /// simulated run. They are let go one at a time, in the order of `hold`, so they re-queue
    /// in that order. A stopped backend that was only sleeping in a lock wait holds no
    /// server-internal lock; one that holds the row lock a granted waiter needs makes that
    /// waiter wait, and the step settles as the engine decides once it is let go.
    pub async fn step_steered(
        &mut self,
        session: &str,
        statement: &str,
        steering: &Steering,
    ) -> Result<(), StepError> {
        let hold = &steering.hold;
        let mut held = Vec::new();
        let upper = statement.trim().to_ascii_uppercase();
        let sql = !(upper == "CRASH" || upper == "DISCONNECT" || upper.starts_with("SLEEP"));
        if self.kind == EngineKind::Postgres && sql {
            for name in hold {
                if name.as_str() == session {
                    continue;
                }
                if let Some(s) = self.sessions.get_mut(name) {
                    // Only a backend confirmed asleep in a lock wait: one that runs may hold
                    // a server-internal lock (an LWLock) others need.
                    let asleep = s.in_flight.as_ref().is_some_and(|f| f.wait.is_some());
                    if asleep && !s.frozen && signal(s.real.backend, "STOP") {
                        s.frozen = true;
                        held.push(name.clone());
                    }
                }
            }
        }
        let result = self
            .play(session, statement, steering.pg_deadlock_check)
            .await;
        if held.is_empty() {
            return result;
        }
        if let Err(e) = result {
            self.thaw();
            return Err(e);
        }
        // One backend at a time, each settled (asleep in its next wait, or done) before the
        // next goes on: a woken waiter re-queues on the row's new version, and the order in
        // which they re-queue is the order the row is granted to them later. Let go all at
        // once, they would re-queue in the order their processes happen to run.
        let now = self.now_v;
        for name in held {
            let session = self.sessions.get_mut(&name).expect("held sessions exist");
            debug_assert!(
                session.frozen,
                "a held session is stopped until it is let go"
            );
            signal(session.real.backend, "CONT");
            session.frozen = false;
            if let Err(e) = self.settle(now, now).await {
                self.thaw();
                return Err(e);
            }
        }
        debug_assert!(self.sessions.values().all(|s| !s.frozen));
        Ok(())
    }

    /// Lets every stopped backend go on.
    fn thaw(&mut self) {
        for s in self.sessions.values_mut() {
            if s.frozen {
                signal(s.real.backend, "CONT");
                s.frozen = false;
            }
        }
    }

    /// Plays step `session: statement` (SQL, `DISCONNECT`, `SLEEP s`, `CRASH`).
    pub async fn step(&mut self, session: &str, statement: &str) -> Result<(), StepError> {
        self.play(session, statement, None).await
    }

    /// [`Stepper::step`] with the step's [`Steering::pg_deadlock_check`].
    async fn play(
        &mut self,
        session: &str,
        statement: &str,
        pg_deadlock_check: Option<bool>,
    ) -> Result<(), StepError> {
        let i = self.steps.len();
        self.steps
            .push((session.to_string(), statement.to_string()));
        self.deadlock_checks.push(pg_deadlock_check);
        self.outcomes.push(None);
        self.current = i;
        let upper = statement.trim().to_ascii_uppercase();
        let start = self.now_v;
        if session == "-" && upper.starts_with("SLEEP") {
            let seconds: f64 = upper[5..].trim().parse().map_err(|_| StepError {
                step: i + 1,
                message: format!("`{statement}`: expected SLEEP <seconds>"),
            })?;
            self.now_v += Duration::from_secs_f64(seconds.clamp(0.0, 3600.0));
            self.record(i, false, ok());
            return self.settle(start, self.now_v).await;
        }
        if upper == "CRASH" {
            self.crash().await?;
            self.record(i, false, ok());
            return self.settle(start, start).await;
        }
        if upper == "DISCONNECT" {
            self.disconnect(session);
            self.record(i, false, ok());
            return self.settle(start, start).await;
        }
        let busy = self.session(session).await?.in_flight.is_some();
        if busy {
            self.sessions
                .get_mut(session)
                .expect("exists")
                .queued
                .push_back(i);
        } else {
            self.send(i, false).await?;
        }
        let end = match self.clock {
            Clock::Conformance => start + STEP,
            Clock::Steps => start,
        };
        self.settle(start, end).await?;
        self.now_v = end;
        Ok(())
    }

    async fn send(&mut self, i: usize, queued: bool) -> Result<(), StepError> {
        let (name, statement) = self.steps[i].clone();
        let statement = statement.replace("{share}", share_clause(self.profile));
        let mut batch = if statement.trim().eq_ignore_ascii_case("BEGIN") {
            begin_statements(self.profile)
        } else {
            vec![statement.clone()]
        };
        let check = match self.kind {
            EngineKind::Postgres => self.deadlock_checks[i],
            EngineKind::MariaDb => None,
        };
        if let Some(check) = check {
            // In the same batch: a statement in an aborted transaction fails at the SET with
            // the 25P02 it would give itself.
            batch.insert(0, pg_deadlock_timeout(check));
        }
        let now_v = self.now_v;
        let session = self.session(&name).await?;
        assert!(session.in_flight.is_none(), "one statement at a time");
        session.keeps_variables |= sets_session_variable(&statement);
        session.deadlock_timeout_long |= check == Some(false);
        let deadlock_check = check.unwrap_or(!session.deadlock_timeout_long);
        session.in_flight = Some(InFlight {
            step: i,
            queued,
            statement,
            sent_v: now_v,
            deadlock_check,
            wait: None,
        });
        session.real.send(batch);
        Ok(())
    }

    fn record(&mut self, step: usize, queued: bool, (token, result): (String, RealResult)) {
        assert!(self.outcomes[step].is_none(), "one outcome per step");
        let token = if step == self.current {
            token
        } else {
            format!("BLOCK->{token}@s{}", self.current + 1)
        };
        let token = if queued {
            format!("QUEUED {token}")
        } else {
            token
        };
        self.outcomes[step] = Some((token, result));
    }

    fn disconnect(&mut self, name: &str) {
        let Some(session) = self.sessions.remove(name) else {
            return;
        };
        if let Some(flight) = &session.in_flight {
            let lost = RealResult::Err {
                code: lost_code(self.kind).to_string(),
                message: "the client closed the connection".to_string(),
            };
            let token = lost.token(&flight.statement);
            self.record(flight.step, flight.queued, (token, lost));
        }
        self.zombies.push(session.real.backend);
        session.real.close();
    }

    /// Ends every session as a crash: waiting backends first, each only once nobody waits
    /// behind it, then the rest.
    async fn crash(&mut self) -> Result<(), StepError> {
        let step = self.current + 1;
        let fail = |message: String| StepError { step, message };
        let backends: BTreeMap<i64, String> = self
            .sessions
            .iter()
            .map(|(n, s)| (s.real.backend, n.clone()))
            .collect();
        let mut left: Vec<i64> = backends.keys().copied().collect();
        while !left.is_empty() {
            let edges = self.pool.control.blocking(&left).await.map_err(fail)?;
            let waiting: Vec<i64> = left
                .iter()
                .copied()
                .filter(|b| edges.iter().any(|(w, _)| w == b))
                .collect();
            let pick = if waiting.is_empty() {
                left.clone()
            } else {
                // A waiter no other waiter waits behind; in a cycle, any of them.
                let leaf = waiting
                    .iter()
                    .copied()
                    .find(|b| {
                        !edges
                            .iter()
                            .any(|(w, blocker)| blocker == b && waiting.contains(w))
                    })
                    .unwrap_or(waiting[0]);
                vec![leaf]
            };
            for backend in &pick {
                self.pool.control.terminate(*backend).await.map_err(fail)?;
            }
            // Wait until they are gone before releasing anything else.
            let started = Instant::now();
            loop {
                let alive = self.pool.control.exist(&pick).await.map_err(fail)?;
                if alive.is_empty() {
                    break;
                }
                if started.elapsed() > Duration::from_secs(30) {
                    return Err(fail(format!("backends {alive:?} survived termination")));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            left.retain(|b| !pick.contains(b));
        }
        for (_, name) in backends {
            if let Some(session) = self.sessions.remove(&name) {
                if let Some(flight) = &session.in_flight {
                    let lost = RealResult::Err {
                        code: lost_code(self.kind).to_string(),
                        message: "the server crashed".to_string(),
                    };
                    let token = lost.token(&flight.statement);
                    self.record(flight.step, flight.queued, (token, lost));
                }
                session.real.close();
            }
        }
        Ok(())
    }

    /// Routes answers that arrived to their steps (what was queued behind them is sent by
    /// [`Stepper::release_queued`]).
    async fn drain(&mut self, first: Option<(usize, RealResult)>) -> Result<bool, StepError> {
        let mut any = false;
        let mut next = first;
        loop {
            let (key, result) = match next.take() {
                Some(a) => a,
                None => match self.stash.pop_front() {
                    Some(a) => a,
                    None => match self.pool.answers.try_recv() {
                        Ok(a) => a,
                        Err(_) => return Ok(any),
                    },
                },
            };
            any = true;
            let Some(name) = self
                .sessions
                .iter()
                .find(|(_, s)| s.real.key == key)
                .map(|(n, _)| n.clone())
            else {
                continue;
            };
            let kind = self.kind;
            let session = self.sessions.get_mut(&name).expect("found");
            let Some(flight) = session.in_flight.take() else {
                continue;
            };
            if let RealResult::Ok(_) = &result {
                session.timers.apply(kind, &flight.statement);
            }
            let token = result.token(&flight.statement);
            self.record(flight.step, flight.queued, (token, result));
        }
    }

    /// Sends the lowest queued step whose session is free, if there is one. Called only once
    /// everything in flight has finished or waits: queued statements go one at a time, in
    /// script order, as the simulated runner sends them, so when one commit wakes several
    /// sessions the script decides whose queued statements run first.
    async fn release_queued(&mut self) -> Result<bool, StepError> {
        let next = self
            .sessions
            .iter()
            .filter(|(_, s)| s.in_flight.is_none())
            .filter_map(|(name, s)| s.queued.front().map(|&step| (step, name.clone())))
            .min();
        let Some((step, name)) = next else {
            return Ok(false);
        };
        let session = self.sessions.get_mut(&name).expect("found");
        assert_eq!(session.queued.pop_front(), Some(step), "the queue's head");
        self.send(step, true).await?;
        Ok(true)
    }

    fn fail(&self, message: String) -> StepError {
        StepError {
            step: self.current + 1,
            message,
        }
    }

    /// A failure of `finish`, with the backends it leaves behind. It names the last step and
    /// what was being done after it, not a step the script does not have.
    fn fail_left(&self, message: String) -> (StepError, Vec<i64>) {
        let error = StepError {
            step: self.steps.len(),
            message: format!(
                "after the last step (ending the sessions, reading the final tables): {message}"
            ),
        };
        (error, self.zombies.clone())
    }

    /// Keeps of the zombie backends those the server still runs. On an error they are all
    /// kept: the caller ends them.
    async fn forget_ended_zombies(&mut self) -> Result<(), String> {
        self.zombies = self.pool.control.alive(&self.zombies).await?;
        Ok(())
    }

    /// The real answer of step `i` (0-based), once it has arrived.
    pub fn result(&self, i: usize) -> Option<&RealResult> {
        self.outcomes.get(i)?.as_ref().map(|(_, r)| r)
    }

    /// Gives the run up after a failed step: closes every connection and returns the
    /// backends that may still run (the caller ends them from a fresh connection).
    pub fn abandon(mut self) -> Vec<i64> {
        self.thaw();
        let mut backends = self.zombies;
        for (_, session) in self.sessions {
            backends.push(session.real.backend);
            session.real.close();
        }
        for idle in self.pool.idle {
            backends.push(idle.backend);
            idle.close();
        }
        backends
    }

    /// Ends the script: closes every session (open transactions roll back), waits for their
    /// backends to end, and reads the final tables. Returns the tokens and answers per step.
    pub async fn finish(
        mut self,
    ) -> Result<(Outcome, Vec<Option<RealResult>>, Pool), (StepError, Vec<i64>)> {
        self.current = self.steps.len();
        let names: Vec<String> = self.sessions.keys().cloned().collect();
        let mut pending: Vec<usize> = Vec::new();
        for name in names {
            if let Some(session) = self.sessions.remove(&name) {
                let idle = session.in_flight.is_none() && session.queued.is_empty();
                if idle && !session.keeps_variables && self.pool.idle.len() < 8 {
                    pending.push(session.real.key);
                    // Rolled back when it is reused; until then its locks are held, so roll
                    // back now: the final tables must see only committed data.
                    session.real.send(vec!["rollback".to_string()]);
                    self.pool.idle.push(session.real);
                } else {
                    self.zombies.push(session.real.backend);
                    session.real.close();
                }
            }
        }
        // The rollbacks of pooled sessions answer before the final tables are read.
        let started = Instant::now();
        while !pending.is_empty() && started.elapsed() < Duration::from_secs(30) {
            match tokio::time::timeout(Duration::from_millis(100), self.pool.answers.recv()).await {
                Ok(Some((key, _))) => pending.retain(|k| *k != key),
                Ok(None) => break,
                Err(_) => {}
            }
        }
        // Every session has ended: a backend that still waits for a lock after its client
        // left (neither engine notices a closed client while it waits) is ended too, as the
        // simulated database ends it, so it can neither commit later nor hold the schema.
        let zombies = self.zombies.clone();
        let waiting = self
            .pool
            .control
            .alive(&zombies)
            .await
            .map_err(|e| self.fail_left(e))?;
        for backend in waiting {
            self.pool
                .control
                .terminate(backend)
                .await
                .map_err(|e| self.fail_left(e))?;
        }
        let started = Instant::now();
        while !self.zombies.is_empty() {
            self.forget_ended_zombies()
                .await
                .map_err(|e| self.fail_left(e))?;
            if started.elapsed() > Duration::from_secs(60) {
                return Err(self.fail_left(format!(
                    "backends {:?} did not end after their clients closed",
                    self.zombies
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Every transaction of the script has ended: purge may catch up before the next one.
        self.pool.release_purge().await;
        let mut tables = BTreeMap::new();
        for table in setup_tables(&self.setup) {
            let mut rows = self
                .pool
                .control
                .rows(&format!("select * from {}.{table}", self.schema))
                .await
                .map_err(|e| self.fail_left(e))?;
            rows.sort_by(|a, b| crate::compare::compare_cells(a, b));
            tables.insert(table, rows);
        }
        let script = shopsim_sim::db::conformance::Script {
            name: String::new(),
            setup: if self.setup == default_setup() {
                Vec::new()
            } else {
                self.setup.clone()
            },
            steps: Vec::new(),
            outcomes: BTreeMap::new(),
        };
        let rows = |t: &str| tables.get(t).cloned().unwrap_or_default();
        let final_table = render_final(&script, &rows);
        let mut tokens = Vec::new();
        let mut results = Vec::new();
        for outcome in self.outcomes {
            match outcome {
                Some((token, result)) => {
                    tokens.push(token);
                    results.push(Some(result));
                }
                None => {
                    tokens.push("BLOCK".to_string());
                    results.push(None);
                }
            }
        }
        Ok((
            Outcome {
                steps: tokens,
                final_table,
            },
            results,
            self.pool,
        ))
    }
}

/// Sends `SIGSTOP` / `SIGCONT` to a server backend (a process of the private server, which
/// this process started); whether the signal was delivered.
fn signal(backend: i64, which: &str) -> bool {
    backend > 0
        && std::process::Command::new("kill")
            .arg(format!("-{which}"))
            .arg(backend.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn ok() -> (String, RealResult) {
    (
        "ok".to_string(),
        RealResult::Ok(crate::session::RealRows::default()),
    )
}

#[cfg(test)]
mod tests {
    use super::sets_session_variable;

    /// Before: a session that set `app.tenant_id` or `@tenant_id` went back to the pool, and
    /// the next script's session (another profile, or another script) saw the value.
    #[test]
    fn sessions_that_set_variables_are_told_apart() {
        for set in [
            "set app.tenant_id = '1'",
            "SET LOCAL app.x = 2",
            "set @tenant_id = 7",
            "select set_config('app.x', '1', false)",
            "select @x := 1",
        ] {
            assert!(sets_session_variable(set), "{set}");
        }
        for other in [
            "set lock_timeout = '200ms'",
            "set session innodb_lock_wait_timeout = 1",
            "select * from t where id = @x",
            "insert into r values (1, current_setting('app.x')::bigint)",
        ] {
            assert!(!sets_session_variable(other), "{other}");
        }
    }
}
