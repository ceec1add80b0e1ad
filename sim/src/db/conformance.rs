//! The conformance runner: replays isolation scripts (the format of
//! `sim/conformance/hermitage.toml`) against the engine and compares every step's outcome and
//! the final table with what real PostgreSQL and MariaDB did.
//!
//! The runner plays the measurement harness: one connection per session, steps sent in script
//! order, and a statement that has not finished 1 s of virtual time after it was sent counts
//! as blocked (`BLOCK->X@sN`: it finished with X while step N ran). A step sent to a session
//! that is still blocked waits behind it (`QUEUED X`). PostgreSQL profiles run with
//! `deadlock_timeout = 300ms` and MariaDB with `innodb_lock_wait_timeout = 50`, as measured.
//!
//! Outcomes follow from the engine's semantics only: the runner knows nothing of particular
//! scripts.

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
                steps: s.steps,
                outcomes,
            });
        }
        Ok(ScriptFile { scripts })
    }
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
        for sql in [
            "create table test (id int primary key, value int)",
            "insert into test (id, value) values (1, 10), (2, 20)",
        ] {
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

    /// Sends step `i` (with the engine's own start of a transaction for `BEGIN`).
    fn send(&mut self, i: usize, queued: bool) {
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
        self.collect();
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

    /// Routes finished statements to their steps and sends what was queued behind them.
    fn collect(&mut self) {
        loop {
            let completions = self.db.take_completions();
            if completions.is_empty() {
                return;
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
                while !self.running.contains_key(&session) {
                    let Some(next) = self.queued.get_mut(&session).and_then(|q| q.pop_front())
                    else {
                        break;
                    };
                    self.send(next, true);
                }
            }
        }
    }

    fn finish(mut self) -> Outcome {
        let names: Vec<String> = self.sessions.keys().cloned().collect();
        for name in names {
            if let Some(id) = self.sessions.remove(&name) {
                self.db.disconnect(id);
            }
        }
        let rows = self.db.table_rows("test").expect("the test table exists");
        let final_table = rows
            .iter()
            .map(|r| format!("{}=>{}", r[0], r[1]))
            .collect::<Vec<_>>()
            .join(", ");
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
fn token(statement: &str, result: &Result<QueryResult, DbError>) -> String {
    match result {
        Err(e) if e.code() == "40001" && e.message().contains("read/write dependencies") => {
            "ERR 40001rw".to_string()
        }
        Err(e) => format!("ERR {}", e.code()),
        Ok(r) if !r.columns.is_empty() => {
            let mut rows = r.rows.clone();
            rows.sort_by(|a, b| a.first().cmp(&b.first()));
            let rows: Vec<String> = rows
                .iter()
                .map(|row| {
                    row.iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join(":")
                })
                .collect();
            format!("rows[{}]", rows.join(","))
        }
        Ok(r) => {
            let verb = statement
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if matches!(verb.as_str(), "insert" | "update" | "delete") {
                format!("aff={}", r.rows_affected)
            } else {
                "ok".to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
