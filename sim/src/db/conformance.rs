//! The conformance runner: replays isolation scripts (the format of
//! `sim/conformance/hermitage.toml`) against the engine and compares every step's outcome and
//! the final table with what real PostgreSQL and MariaDB did.
//!
//! The runner plays the measurement harness: one connection per session, steps sent in script
//! order, and a statement that has not finished 1 s of virtual time after it was sent counts
//! as blocked (`BLOCK->X@sN`: it finished with X while step N ran). A step sent to a session
//! that is still blocked waits behind it (`QUEUED X`); once its session is free and nothing
//! else is left to finish, queued steps are sent one at a time, the lowest step first (when one
//! commit wakes two sessions, the script decides whose queued statements run first, not a race
//! of their answers). PostgreSQL profiles run with
//! `deadlock_timeout = 300ms` and MariaDB with `innodb_lock_wait_timeout = 50`, as measured.
//!
//! Outcomes follow from the engine's semantics only: the runner knows nothing of particular
//! scripts.
//!
//! A script may bring its own `setup` (schema and rows) instead of the Hermitage table; its
//! `final` then lists every table the setup created (see [`render_final`]). The same tokens are
//! produced for real engines by `shopsim-crosscheck` through [`result_token`], and
//! [`ScriptFile::to_toml`] writes a file back, so measured outcomes and shrunk divergences
//! become regression data in this format.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::engine::{Database, Exec, SessionId};
use super::profile::{DbConfig, Profile};
use super::value::{DbError, QueryResult, Value};

/// How long a statement may run before the harness counts it as blocked.
pub const BLOCK_AFTER: Duration = Duration::from_secs(1);

/// A file of scripts.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptFile {
    /// The scripts, in file order.
    pub scripts: Vec<Script>,
}

/// One script: steps and the measured outcome per profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// The script's name.
    pub name: String,
    /// Statements that create and fill the tables before the first step; empty means the
    /// Hermitage table `test(id, value) = (1, 10), (2, 20)`.
    pub setup: Vec<String>,
    /// (session, statement) per step.
    pub steps: Vec<(String, String)>,
    /// Measured outcomes per profile.
    pub outcomes: BTreeMap<Profile, Outcome>,
}

/// The measured outcome of a script under one profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// One token per step.
    pub steps: Vec<String>,
    /// The committed table after every session ended, as `id=>value, ...`.
    pub final_table: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    script: Vec<ScriptToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptToml {
    name: String,
    #[serde(default)]
    setup: Vec<String>,
    steps: Vec<(String, String)>,
    #[serde(default)]
    outcome: BTreeMap<String, OutcomeToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeToml {
    steps: Vec<String>,
    #[serde(rename = "final")]
    final_table: String,
}

/// A script file that cannot be used, naming the place and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConformanceError {
    /// Where: `script[2] (g1a).outcome.pg_xx` or the TOML error position.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConformanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConformanceError {}

impl ScriptFile {
    /// Parses and validates a script file.
    pub fn parse(text: &str) -> Result<ScriptFile, ConformanceError> {
        // serde's path names the field of a type error (`script[3].steps[0]`), not only a line.
        let deserializer = toml::Deserializer::parse(text).map_err(|e| ConformanceError {
            field: "file".to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let file: FileToml =
            serde_path_to_error::deserialize(deserializer).map_err(|e| ConformanceError {
                field: match e.path().to_string() {
                    p if p == "." => "file".to_string(),
                    p => p,
                },
                message: e.inner().to_string().trim().replace('\n', " "),
            })?;
        let mut scripts = Vec::new();
        for (i, s) in file.script.into_iter().enumerate() {
            let at = |field: &str| format!("script[{i}] ({}){field}", s.name);
            if s.steps.is_empty() {
                return Err(ConformanceError {
                    field: at(".steps"),
                    message: "a script needs at least one step".to_string(),
                });
            }
            for (n, (session, statement)) in s.steps.iter().enumerate() {
                let sleep = statement.trim().to_ascii_uppercase().starts_with("SLEEP");
                if session.is_empty() || (session == "-") != sleep {
                    return Err(ConformanceError {
                        field: at(&format!(".steps[{n}]")),
                        message: format!(
                            "session `{session}` with `{statement}`: use `-` exactly for SLEEP steps"
                        ),
                    });
                }
                if sleep && parse_sleep(statement).is_none() {
                    return Err(ConformanceError {
                        field: at(&format!(".steps[{n}]")),
                        message: format!("`{statement}`: expected SLEEP <seconds>"),
                    });
                }
            }
            let mut outcomes = BTreeMap::new();
            for (name, outcome) in s.outcome {
                let profile: Profile = name.parse().map_err(|e| ConformanceError {
                    field: at(&format!(".outcome.{name}")),
                    message: format!("{e}"),
                })?;
                if outcome.steps.len() != s.steps.len() {
                    return Err(ConformanceError {
                        field: at(&format!(".outcome.{name}.steps")),
                        message: format!(
                            "{} outcomes for {} steps",
                            outcome.steps.len(),
                            s.steps.len()
                        ),
                    });
                }
                outcomes.insert(
                    profile,
                    Outcome {
                        steps: outcome.steps,
                        final_table: outcome.final_table,
                    },
                );
            }
            scripts.push(Script {
                name: s.name,
                setup: s.setup,
                steps: s.steps,
                outcomes,
            });
        }
        Ok(ScriptFile { scripts })
    }
}

impl ScriptFile {
    /// The file in the format [`ScriptFile::parse`] reads, with `header` as leading comment
    /// lines (what was measured, where, when).
    pub fn to_toml(&self, header: &[String]) -> String {
        let mut out = String::new();
        for line in header {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
        for script in &self.scripts {
            out.push_str("\n[[script]]\n");
            out.push_str(&format!("name = {}\n", toml_string(&script.name)));
            if !script.setup.is_empty() {
                out.push_str("setup = [\n");
                for statement in &script.setup {
                    out.push_str(&format!("  {},\n", toml_string(statement)));
                }
                out.push_str("]\n");
            }
            out.push_str("steps = [\n");
            for (session, statement) in &script.steps {
                out.push_str(&format!(
                    "  [{}, {}],\n",
                    toml_string(session),
                    toml_string(statement)
                ));
            }
            out.push_str("]\n");
            for (profile, outcome) in &script.outcomes {
                out.push_str(&format!("[script.outcome.{profile}]\n"));
                let steps: Vec<String> = outcome.steps.iter().map(|t| toml_string(t)).collect();
                out.push_str(&format!("steps = [{}]\n", steps.join(", ")));
                out.push_str(&format!("final = {}\n", toml_string(&outcome.final_table)));
            }
        }
        out
    }
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The Hermitage setup every script without its own `setup` starts from.
pub const DEFAULT_SETUP: [&str; 2] = [
    "create table test (id int primary key, value int)",
    "insert into test (id, value) values (1, 10), (2, 20)",
];

/// The setup statements of `script`: its own, or [`DEFAULT_SETUP`].
pub fn setup_of(script: &Script) -> Vec<String> {
    if script.setup.is_empty() {
        DEFAULT_SETUP.iter().map(|s| s.to_string()).collect()
    } else {
        script.setup.clone()
    }
}

/// The tables a setup creates, in creation order.
pub fn setup_tables(setup: &[String]) -> Vec<String> {
    setup
        .iter()
        .filter_map(|statement| {
            let mut words = statement.split_whitespace();
            let create = words.next()?;
            let table = words.next()?;
            if !create.eq_ignore_ascii_case("create") || !table.eq_ignore_ascii_case("table") {
                return None;
            }
            let name = words.next()?.split('(').next()?;
            Some(name.trim_matches(|c| c == '`' || c == '"').to_string())
        })
        .collect()
}

/// The `final` token of a script: `id=>value, ...` for the Hermitage table, else every table
/// of the setup as `name[row, row]` with each row's columns joined by `:`, in primary key order
/// (`rows` gives each table's committed rows, already rendered as text).
pub fn render_final(script: &Script, rows: &dyn Fn(&str) -> Vec<Vec<String>>) -> String {
    if script.setup.is_empty() {
        return rows("test")
            .iter()
            .map(|r| format!("{}=>{}", r[0], r[1]))
            .collect::<Vec<_>>()
            .join(", ");
    }
    setup_tables(&script.setup)
        .iter()
        .map(|table| {
            let rendered: Vec<String> = rows(table).iter().map(|r| r.join(":")).collect();
            format!("{table}[{}]", rendered.join(", "))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The outcome token of a finished statement from its parts: `rows[...]` for a result set
/// (rows as given when the statement orders them, else sorted, numbers by value), `aff=N` for
/// INSERT, UPDATE and DELETE, else `ok`. Shared with the real-engine runner so that both sides
/// print the same token for the same answer.
pub fn result_token(
    statement: &str,
    result_set: bool,
    mut rows: Vec<Vec<String>>,
    rows_affected: u64,
) -> String {
    if result_set {
        if !statement.to_ascii_lowercase().contains("order by") {
            rows.sort_by(|a, b| compare_rows(a, b));
        }
        let rows: Vec<String> = rows.iter().map(|row| row.join(":")).collect();
        return format!("rows[{}]", rows.join(","));
    }
    let verb = statement
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if matches!(verb.as_str(), "insert" | "update" | "delete") {
        format!("aff={rows_affected}")
    } else {
        "ok".to_string()
    }
}

/// Row order for tokens: cell by cell, `NULL` first, integers by value, then text.
fn compare_rows(a: &[String], b: &[String]) -> std::cmp::Ordering {
    fn rank(cell: &str) -> (u8, i64, &str) {
        if cell == "NULL" {
            (0, 0, "")
        } else if let Ok(n) = cell.parse::<i64>() {
            (1, n, "")
        } else {
            (2, 0, cell)
        }
    }
    a.iter().map(|c| rank(c)).cmp(b.iter().map(|c| rank(c)))
}

fn parse_sleep(statement: &str) -> Option<Duration> {
    let seconds: f64 = statement.trim()[5..].trim().parse().ok()?;
    (0.0..=3600.0)
        .contains(&seconds)
        .then(|| Duration::from_secs_f64(seconds))
}

/// The result of one script under one profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptReport {
    /// The script.
    pub script: String,
    /// The profile.
    pub profile: Profile,
    /// The first mismatch, or `None` if every step and the final table agree.
    pub mismatch: Option<Mismatch>,
}

/// Where the engine and the measurement first disagree.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// 1-based step number, or `None` for the final table.
    pub step: Option<usize>,
    /// The step's session and statement.
    pub statement: String,
    /// The measured outcome.
    pub expected: String,
    /// The engine's outcome.
    pub actual: String,
}

impl fmt::Display for ScriptReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mismatch {
            None => write!(f, "{} {}: ok", self.script, self.profile),
            Some(m) => {
                let at = match m.step {
                    Some(n) => format!("step {n} ({})", m.statement),
                    None => "final table".to_string(),
                };
                write!(
                    f,
                    "{} {}: {at}: expected `{}`, got `{}`",
                    self.script, self.profile, m.expected, m.actual
                )
            }
        }
    }
}

/// Replays every script of `file` under each of `profiles` that the script has a measurement
/// for, in file order.
pub fn check_file(file: &ScriptFile, profiles: &[Profile]) -> Vec<ScriptReport> {
    let mut reports = Vec::new();
    for script in &file.scripts {
        for &profile in profiles {
            let Some(expected) = script.outcomes.get(&profile) else {
                continue;
            };
            let actual = run_script(script, profile);
            let mut mismatch = None;
            for (n, (want, got)) in expected.steps.iter().zip(&actual.steps).enumerate() {
                if want != got {
                    let (session, statement) = &script.steps[n];
                    mismatch = Some(Mismatch {
                        step: Some(n + 1),
                        statement: format!("{session}: {statement}"),
                        expected: want.clone(),
                        actual: got.clone(),
                    });
                    break;
                }
            }
            if mismatch.is_none() && expected.final_table != actual.final_table {
                mismatch = Some(Mismatch {
                    step: None,
                    statement: String::new(),
                    expected: expected.final_table.clone(),
                    actual: actual.final_table,
                });
            }
            reports.push(ScriptReport {
                script: script.name.clone(),
                profile,
                mismatch,
            });
        }
    }
    reports
}

/// The engine's outcome of one script.
pub fn run_script(script: &Script, profile: Profile) -> Outcome {
    let config = DbConfig {
        pg_deadlock_timeout_ms: 300,
        innodb_lock_wait_timeout_s: 50,
        ..DbConfig::default()
    };
    let mut runner = Runner {
        db: Database::new(profile, config),
        profile,
        now: Duration::ZERO,
        sessions: BTreeMap::new(),
        running: BTreeMap::new(),
        queued: BTreeMap::new(),
        outcomes: vec![None; script.steps.len()],
        current: 0,
        script,
    };
    runner.setup();
    for i in 0..script.steps.len() {
        runner.step(i);
    }
    runner.finish()
}

struct Runner<'a> {
    db: Database,
    profile: Profile,
    now: Duration,
    sessions: BTreeMap<String, SessionId>,
    /// The step each blocked session is running, and whether it had been queued.
    running: BTreeMap<String, (usize, bool)>,
    queued: BTreeMap<String, VecDeque<usize>>,
    outcomes: Vec<Option<String>>,
    /// The step being played (0-based).
    current: usize,
    script: &'a Script,
}

impl Runner<'_> {
    fn setup(&mut self) {
        for sql in setup_of(self.script) {
            let sql = sql.as_str();
            let result = self.db.execute_setup(sql, &[]);
            assert!(result.is_ok(), "setup `{sql}`: {result:?}");
        }
    }

    fn session(&mut self, name: &str) -> SessionId {
        if let Some(&id) = self.sessions.get(name) {
            return id;
        }
        let id = self.db.connect();
        self.sessions.insert(name.to_string(), id);
        id
    }

    fn step(&mut self, i: usize) {
        self.current = i;
        let (session, statement) = self.script.steps[i].clone();
        let upper = statement.trim().to_ascii_uppercase();
        if session == "-" {
            let duration = parse_sleep(&statement).expect("validated");
            self.advance_to(self.now + duration);
            self.outcomes[i] = Some("ok".to_string());
            return;
        }
        if upper == "DISCONNECT" {
            self.disconnect(&session);
            self.outcomes[i] = Some("ok".to_string());
            return;
        }
        if self.running.contains_key(&session) {
            self.queued.entry(session).or_default().push_back(i);
        } else {
            self.send(i, false);
        }
        // Give the step its second; completions meanwhile belong to this step.
        let window_end = self.now + BLOCK_AFTER;
        while self.outcomes[i].is_none() {
            match self.db.next_deadline() {
                Some(deadline) if deadline <= window_end => self.advance_to(deadline),
                _ => break,
            }
        }
        if self.outcomes[i].is_none() {
            self.advance_to(window_end);
        }
    }

    fn disconnect(&mut self, session: &str) {
        let Some(id) = self.sessions.remove(session) else {
            return;
        };
        if let Some((step, queued)) = self.running.remove(session) {
            let lost = if self.profile.is_postgres() {
                "ERR conn-closed"
            } else {
                "ERR 2013"
            };
            self.record(step, queued, lost.to_string());
        }
        self.queued.remove(session);
        self.db.disconnect(id);
        self.collect();
    }

    fn advance_to(&mut self, at: Duration) {
        self.now = self.now.max(at);
        self.db.advance(self.now);
        self.collect();
    }

    /// Sends step `i` and routes what finishes because of it.
    fn send(&mut self, i: usize, queued: bool) {
        self.send_one(i, queued);
        self.collect();
    }

    /// Sends step `i` (with the engine's own start of a transaction for `BEGIN`).
    fn send_one(&mut self, i: usize, queued: bool) {
        let (session, statement) = self.script.steps[i].clone();
        let id = self.session(&session);
        let share = if self.profile.is_postgres() {
            "FOR SHARE"
        } else {
            "LOCK IN SHARE MODE"
        };
        let statement = statement.replace("{share}", share);
        let result = if statement.trim().eq_ignore_ascii_case("BEGIN") {
            let level = self.profile.isolation().sql();
            let statements = if self.profile.is_postgres() {
                [
                    "BEGIN".to_string(),
                    format!("SET TRANSACTION ISOLATION LEVEL {level}"),
                ]
            } else {
                [
                    format!("SET SESSION TRANSACTION ISOLATION LEVEL {level}"),
                    "BEGIN".to_string(),
                ]
            };
            let mut result = Exec::Done(Ok(QueryResult::default()));
            for s in statements {
                result = self.db.execute(id, &s, &[], self.now);
                if !matches!(result, Exec::Done(Ok(_))) {
                    break;
                }
            }
            result
        } else {
            self.db.execute(id, &statement, &[], self.now)
        };
        match result {
            Exec::Done(result) => {
                let token = token(&statement, &result);
                self.record(i, queued, token);
            }
            Exec::Blocked => {
                self.running.insert(session, (i, queued));
            }
        }
    }

    fn record(&mut self, step: usize, queued: bool, token: String) {
        assert!(self.outcomes[step].is_none());
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
        self.outcomes[step] = Some(token);
    }

    /// Routes finished statements to their steps, then sends what was queued behind them one
    /// statement at a time: once nothing else finishes, the lowest queued step whose session is
    /// free goes next. The measurement harness does the same on the real engines, so which of
    /// two woken sessions runs its queued statements first is decided by the script, not by
    /// whose answer happens to arrive first.
    fn collect(&mut self) {
        loop {
            let completions = self.db.take_completions();
            if completions.is_empty() {
                // Each PostgreSQL wait's deadlock check completes before anything else is
                // sent (the real servers run with `deadlock_timeout` = 1 ms and the stepper
                // waits for the check): a wait a commit moved onto a new blocker is checked
                // before a queued statement can close a cycle through it.
                if self.profile.is_postgres() && self.db.run_pending_deadlock_checks() {
                    continue;
                }
                let Some(next) = self.next_queued() else {
                    return;
                };
                self.send_one(next, true);
                continue;
            }
            for (id, result) in completions {
                let Some(session) = self
                    .sessions
                    .iter()
                    .find(|(_, &s)| s == id)
                    .map(|(n, _)| n.clone())
                else {
                    continue;
                };
                let Some((step, queued)) = self.running.remove(&session) else {
                    continue;
                };
                let statement = self.script.steps[step].1.clone();
                self.record(step, queued, token(&statement, &result));
            }
        }
    }

    /// Takes the lowest queued step whose session has no statement running.
    fn next_queued(&mut self) -> Option<usize> {
        let (session, step) = self
            .queued
            .iter()
            .filter(|(session, _)| !self.running.contains_key(*session))
            .filter_map(|(session, q)| q.front().map(|&step| (session.clone(), step)))
            .min_by_key(|&(_, step)| step)?;
        let popped = self.queued.get_mut(&session).and_then(|q| q.pop_front());
        assert_eq!(popped, Some(step), "the step taken is the queue's head");
        Some(step)
    }

    fn finish(mut self) -> Outcome {
        let names: Vec<String> = self.sessions.keys().cloned().collect();
        for name in names {
            if let Some(id) = self.sessions.remove(&name) {
                self.db.disconnect(id);
            }
        }
        let db = &self.db;
        let rows = |table: &str| -> Vec<Vec<String>> {
            db.table_rows(table)
                .expect("the setup's tables exist")
                .iter()
                .map(|r| r.iter().map(Value::to_string).collect())
                .collect()
        };
        let final_table = render_final(self.script, &rows);
        Outcome {
            steps: self
                .outcomes
                .into_iter()
                .map(|o| o.unwrap_or_else(|| "BLOCK".to_string()))
                .collect(),
            final_table,
        }
    }
}

/// The outcome token of a finished statement.
pub fn token(statement: &str, result: &Result<QueryResult, DbError>) -> String {
    match result {
        Err(e) => error_token(e.code(), e.message()),
        Ok(r) => {
            let rows = r
                .rows
                .iter()
                .map(|row| row.iter().map(Value::to_string).collect())
                .collect();
            result_token(statement, !r.columns.is_empty(), rows, r.rows_affected)
        }
    }
}

/// The token of an error: `ERR <code>`, and `ERR 40001rw` for PostgreSQL's serialization
/// failure from read/write dependencies (SSI), which shares its SQLSTATE with the
/// concurrent-update one.
pub fn error_token(code: &str, message: &str) -> String {
    if code == "40001" && message.contains("read/write dependencies") {
        "ERR 40001rw".to_string()
    } else {
        format!("ERR {code}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file written by `to_toml` parses back to the same scripts, custom setup included,
    /// and a custom setup's `final` lists every table it created.
    #[test]
    fn written_files_parse_back() {
        let text = "[[script]]\nname = \"q\\\"uote\"\nsetup = [\"create table t0 (id int primary key, v text)\", \"insert into t0 (id, v) values (1, 'a')\"]\nsteps = [[\"T1\", \"select * from t0 where v = 'a'\"]]\n";
        let mut file = ScriptFile::parse(text).unwrap();
        let outcome = run_script(&file.scripts[0], Profile::PgRc);
        assert_eq!(outcome.steps, vec!["rows[1:a]".to_string()]);
        assert_eq!(outcome.final_table, "t0[1:a]");
        file.scripts[0].outcomes.insert(Profile::PgRc, outcome);
        let written = file.to_toml(&["measured here".to_string()]);
        assert!(written.starts_with("# measured here\n"), "{written}");
        assert_eq!(ScriptFile::parse(&written).unwrap(), file);
    }

    /// Tokens sort unordered rows numerically, and keep the order of an ORDER BY.
    #[test]
    fn tokens_sort_rows_unless_ordered() {
        let rows = vec![
            vec!["10".to_string()],
            vec!["9".to_string()],
            vec!["NULL".to_string()],
        ];
        assert_eq!(
            result_token("select v from t", true, rows.clone(), 0),
            "rows[NULL,9,10]"
        );
        assert_eq!(
            result_token("select v from t order by v desc", true, rows, 0),
            "rows[10,9,NULL]"
        );
        assert_eq!(
            result_token("update t set v = 1", false, vec![], 2),
            "aff=2"
        );
        assert_eq!(
            error_token(
                "40001",
                "could not serialize access due to read/write dependencies among transactions"
            ),
            "ERR 40001rw"
        );
    }

    #[test]
    fn bad_files_name_the_field() {
        let err = ScriptFile::parse("[[script]]\nname = \"x\"\nsteps = [[\"T1\", \"BEGIN\"]]\n[script.outcome.pg_xx]\nsteps = [\"ok\"]\nfinal = \"\"\n").unwrap_err();
        assert_eq!(err.field, "script[0] (x).outcome.pg_xx");
        let err = ScriptFile::parse("[[script]]\nname = \"x\"\nsteps = [[\"T1\", \"BEGIN\"]]\n[script.outcome.pg_rc]\nsteps = []\nfinal = \"\"\n").unwrap_err();
        assert!(err.to_string().contains("0 outcomes for 1 steps"), "{err}");
        // The path of the unknown field, not only "file".
        let err = ScriptFile::parse("[[script]]\nname = \"x\"\nstep = []\n").unwrap_err();
        assert_eq!(err.field, "script[0].step");
        assert!(err.message.contains("step"), "{err}");
    }
}
