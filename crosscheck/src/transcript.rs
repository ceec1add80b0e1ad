//! Transcripts of simulated runs as a source: every statement the database node executed, in
//! the order it executed and finished them, replayed on the real engine with the stepping
//! protocol after the run's schema and rows are created there, and compared outcome by outcome.
//!
//! What makes a long transcript comparable:
//! - Statements a blocked session could not have sent never appear: a connection sends its
//!   next statement only after the previous one finished, so the transcript holds each
//!   session's statements in order, and the comparison stops at the first difference (after
//!   it, the two databases are in different states and later statements were chosen by the
//!   application from simulated answers).
//! - Engine-generated values: the setup loads the rows with their ids and moves each
//!   PostgreSQL sequence past them, so the real engine generates the same ids as long as both
//!   agree on when ids are consumed; MariaDB's last insert id is part of the compared outcome.
//! - Timing-decided outcomes: the simulated server fires timers (PostgreSQL's deadlock check
//!   after `deadlock_timeout`, lock wait timeouts) in virtual time, the stepping protocol at
//!   its own points. Those differences are the named classes of [`crate::classes`], accepted
//!   exactly when the transcript shows the timer.

use std::collections::BTreeMap;

use shopsim_sim::db::conformance::{error_token, token, Script};
use shopsim_sim::db::server::transcript::{FinishCause, Transcript, TranscriptEvent};
use shopsim_sim::db::{DbError, Profile, QueryResult, SessionId, Value};

use crate::classes::{self, Nondeterminism};
use crate::compare::Divergence;
use crate::server::EngineKind;
use crate::session::{lost_code, RealResult};
use crate::stepper::Clock;
use crate::{Engines, RunError};

/// A transcript turned into steps, with the simulated outcome of every step.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The profile.
    pub profile: Profile,
    /// Schema and rows in the engine's dialect.
    pub setup: Vec<String>,
    /// (session, statement with its parameters inlined).
    pub steps: Vec<(String, String)>,
    /// The simulated outcome token of each step.
    pub simulated: Vec<String>,
    /// The simulated last insert id of each step (MariaDB inserts).
    pub simulated_ids: Vec<Option<i64>>,
    /// Timers that ended statements in the simulated run: (step, session, token), the step
    /// being the last one before the timer fired.
    pub timers: Vec<(usize, String, String)>,
    /// Per step: the steps whose statements were waiting when it was sent.
    pub waiting_at: Vec<Vec<usize>>,
}

/// A SQL literal for a bound parameter.
pub fn literal(kind: EngineKind, value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_string(),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Text(s) => {
            let mut out = String::from("'");
            for c in s.chars() {
                match c {
                    '\'' => out.push_str("''"),
                    // MariaDB reads backslash escapes in literals by default.
                    '\\' if kind == EngineKind::MariaDb => out.push_str("\\\\"),
                    c => out.push(c),
                }
            }
            out.push('\'');
            out
        }
    }
}

/// `sql` with its placeholders (`$n` on PostgreSQL, `?` on MariaDB) replaced by literals.
/// Placeholders inside string literals, quoted identifiers and comments stay as they are.
pub fn inline(kind: EngineKind, sql: &str, params: &[Value]) -> String {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len() + 16);
    let mut i = 0;
    let mut next_question = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' | '`' => {
                out.push(c);
                i += 1;
                while i < chars.len() {
                    out.push(chars[i]);
                    if chars[i] == '\\' && kind == EngineKind::MariaDb && i + 1 < chars.len() {
                        out.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    if chars[i] == c {
                        i += 1;
                        break;
                    }
                    i += 1;
                }
            }
            '$' if kind == EngineKind::Postgres
                && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()) =>
            {
                let mut j = i + 1;
                let mut n = 0usize;
                while j < chars.len() && chars[j].is_ascii_digit() {
                    n = n * 10 + chars[j].to_digit(10).unwrap_or(0) as usize;
                    j += 1;
                }
                match params.get(n.wrapping_sub(1)) {
                    Some(v) => out.push_str(&literal(kind, v)),
                    None => out.extend(&chars[i..j]),
                }
                i = j;
            }
            '?' if kind == EngineKind::MariaDb => {
                match params.get(next_question) {
                    Some(v) => out.push_str(&literal(kind, v)),
                    None => out.push('?'),
                }
                next_question += 1;
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The statements that recreate a transcript's starting state on the real engine.
pub fn setup_statements(transcript: &Transcript) -> Vec<String> {
    let kind = EngineKind::of(transcript.profile);
    let mut out = transcript.setup.ddl.clone();
    for (table, columns, rows) in &transcript.setup.tables {
        for chunk in rows.chunks(200) {
            if chunk.is_empty() {
                continue;
            }
            let values: Vec<String> = chunk
                .iter()
                .map(|row| {
                    let cells: Vec<String> = row.iter().map(|v| literal(kind, v)).collect();
                    format!("({})", cells.join(", "))
                })
                .collect();
            out.push(format!(
                "insert into {table} ({}) values {}",
                columns.join(", "),
                values.join(", ")
            ));
        }
    }
    out
}

fn result_token(sql: &str, result: &Result<QueryResult, DbError>) -> String {
    match result {
        Err(e) => error_token(e.code(), e.message()),
        Ok(_) => token(sql, result),
    }
}

/// Turns a transcript into steps and the simulated outcome of each.
pub fn replay_of(transcript: &Transcript) -> Replay {
    let kind = EngineKind::of(transcript.profile);
    let mut steps: Vec<(String, String)> = Vec::new();
    let mut simulated: Vec<Option<String>> = Vec::new();
    let mut simulated_ids: Vec<Option<i64>> = Vec::new();
    let mut timers = Vec::new();
    let mut waiting_at = Vec::new();
    // Per session: its statement in flight (step index) and whether it blocked.
    let mut in_flight: BTreeMap<SessionId, (usize, bool)> = BTreeMap::new();
    let name = |s: SessionId| format!("S{s}");
    let finish = |steps: &Vec<(String, String)>,
                  simulated: &mut Vec<Option<String>>,
                  simulated_ids: &mut Vec<Option<i64>>,
                  step: usize,
                  blocked: bool,
                  tok: String,
                  id: Option<i64>| {
        let tok = if blocked {
            format!("BLOCK->{tok}@s{}", steps.len())
        } else {
            tok
        };
        simulated[step] = Some(tok);
        simulated_ids[step] = id;
    };
    for event in &transcript.events {
        match event {
            TranscriptEvent::Connect { .. } => {}
            TranscriptEvent::Execute {
                session,
                sql,
                params,
                ..
            } => {
                waiting_at.push(
                    in_flight
                        .values()
                        .filter(|(_, blocked)| *blocked)
                        .map(|(s, _)| *s)
                        .collect(),
                );
                in_flight.insert(*session, (steps.len(), false));
                steps.push((name(*session), inline(kind, sql, params)));
                simulated.push(None);
                simulated_ids.push(None);
            }
            TranscriptEvent::Block { session, .. } => {
                if let Some(flight) = in_flight.get_mut(session) {
                    flight.1 = true;
                }
            }
            TranscriptEvent::Finish {
                session,
                result,
                cause,
                ..
            } => {
                let Some((step, blocked)) = in_flight.remove(session) else {
                    continue;
                };
                let tok = result_token(&steps[step].1, result);
                if *cause == FinishCause::Deadline {
                    timers.push((steps.len(), name(*session), tok.clone()));
                }
                let id = if kind == EngineKind::MariaDb {
                    result.as_ref().ok().and_then(|r| r.last_insert_id)
                } else {
                    None
                };
                finish(
                    &steps,
                    &mut simulated,
                    &mut simulated_ids,
                    step,
                    blocked,
                    tok,
                    id,
                );
            }
            TranscriptEvent::Disconnect { session, .. } => {
                waiting_at.push(Vec::new());
                steps.push((name(*session), "DISCONNECT".to_string()));
                simulated.push(Some("ok".to_string()));
                simulated_ids.push(None);
                if let Some((step, _)) = in_flight.remove(session) {
                    let tok = format!("ERR {}", lost_code(kind));
                    finish(
                        &steps,
                        &mut simulated,
                        &mut simulated_ids,
                        step,
                        true,
                        tok,
                        None,
                    );
                }
            }
            TranscriptEvent::Crash { .. } => {
                waiting_at.push(Vec::new());
                steps.push(("-".to_string(), "CRASH".to_string()));
                simulated.push(Some("ok".to_string()));
                simulated_ids.push(None);
                let flights: Vec<(usize, bool)> =
                    std::mem::take(&mut in_flight).into_values().collect();
                for (step, _) in flights {
                    let tok = format!("ERR {}", lost_code(kind));
                    finish(
                        &steps,
                        &mut simulated,
                        &mut simulated_ids,
                        step,
                        true,
                        tok,
                        None,
                    );
                }
            }
        }
    }
    Replay {
        profile: transcript.profile,
        setup: setup_statements(transcript),
        steps,
        simulated: simulated
            .into_iter()
            .map(|t| t.unwrap_or_else(|| "BLOCK".to_string()))
            .collect(),
        simulated_ids,
        timers,
        waiting_at,
    }
}

/// What became of one transcript.
#[derive(Debug, Clone)]
pub struct TranscriptCheck {
    /// Steps compared and found identical before the first difference (all, if none).
    pub identical: usize,
    /// Steps in the transcript.
    pub steps: usize,
    /// The first difference, if any.
    pub first: Option<Divergence>,
    /// The named nondeterminism class that explains the first difference, if one does.
    pub allowed: Option<&'static Nondeterminism>,
    /// The replay (for shrinking and reporting).
    pub replay: Replay,
}

/// Replays `transcript` on the real engine and compares step by step.
pub fn check(engines: &mut Engines, transcript: &Transcript) -> Result<TranscriptCheck, RunError> {
    let replay = replay_of(transcript);
    let (real, results) =
        engines.run_steps(replay.profile, Clock::Steps, &replay.setup, &replay.steps)?;
    let mut first = None;
    let mut identical = replay.steps.len();
    for (i, (sim, real_token)) in replay.simulated.iter().zip(&real.steps).enumerate() {
        let real_id = match &results[i] {
            Some(RealResult::Ok(r)) if r.last_insert_id > 0 => Some(r.last_insert_id as i64),
            _ => None,
        };
        let sim_full = with_id(sim, replay.simulated_ids[i]);
        let real_full = with_id(
            real_token,
            real_id.filter(|_| replay.simulated_ids[i].is_some() || real_id.is_some()),
        );
        if sim_full != real_full {
            identical = i;
            first = Some(Divergence {
                profile: replay.profile,
                step: Some(i + 1),
                session: replay.steps[i].0.clone(),
                statement: replay.steps[i].1.clone(),
                simulated: sim_full,
                real: real_full,
            });
            break;
        }
    }
    if let Ok(path) = std::env::var("SHOPSIM_CROSSCHECK_DUMP") {
        // A side-by-side table of the replay, for reading a divergence in context.
        let mut text = String::new();
        for (i, (session, statement)) in replay.steps.iter().enumerate() {
            text.push_str(&format!(
                "{:>5} {session:<5} {statement}\n      sim  {}\n      real {}\n",
                i + 1,
                replay.simulated[i],
                real.steps[i]
            ));
        }
        let _ = std::fs::write(path, text);
    }
    let allowed = first
        .as_ref()
        .and_then(|d| classes::explain_transcript(d, &replay, &real.steps));
    Ok(TranscriptCheck {
        identical,
        steps: replay.steps.len(),
        first,
        allowed,
        replay,
    })
}

fn with_id(token: &str, id: Option<i64>) -> String {
    match id {
        Some(id) => format!("{token} id={id}"),
        None => token.to_string(),
    }
}

/// The first `through` steps of a replay as a conformance script (sessions renamed `T1`, …
/// in order of appearance), for shrinking and for the regression data.
pub fn script_of(replay: &Replay, name: &str, through: usize) -> Script {
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut steps = Vec::new();
    for (session, statement) in replay.steps.iter().take(through) {
        let renamed = if session == "-" {
            "-".to_string()
        } else {
            let n = names.len() + 1;
            names
                .entry(session.clone())
                .or_insert_with(|| format!("T{n}"))
                .clone()
        };
        // A crash has no conformance step: every session disconnects.
        if statement == "CRASH" {
            for t in names.values() {
                steps.push((t.clone(), "DISCONNECT".to_string()));
            }
            continue;
        }
        steps.push((renamed, statement.clone()));
    }
    Script {
        name: name.to_string(),
        setup: replay.setup.clone(),
        steps,
        outcomes: Default::default(),
    }
}
