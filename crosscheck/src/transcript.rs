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

use shopsim_sim::db::conformance::{error_token, setup_tables, token, Script};
use shopsim_sim::db::server::transcript::{FinishCause, Transcript, TranscriptEvent};
use shopsim_sim::db::{DbError, Profile, QueryResult, SessionId, Value};

use crate::classes::{self, Nondeterminism};
use crate::compare::Divergence;
use crate::ids::{column_table, placeholder_columns, statement_table, IdMap};
use crate::lane::Lane;
use crate::server::EngineKind;
use crate::session::{lost_code, RealResult};
use crate::stepper::{Clock, Steering, StepError};
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
    /// Per step: a PostgreSQL deadlock check of its statement's wait ran in the simulated
    /// run (one that found no cycle, or one that made it the victim), also after its client
    /// left while it waited.
    pub deadlock_checked: Vec<bool>,
    /// Per step: the statement as the client sent it and its parameters (`None` for
    /// `DISCONNECT` and `CRASH`): what the replay rewrites with the real generated ids.
    pub raw: Vec<Option<(String, Vec<Value>)>>,
    /// Per step: the simulated engine's answer, if the statement finished.
    pub sim_results: Vec<Option<Result<QueryResult, DbError>>>,
    /// The tables of the schema.
    pub tables: Vec<String>,
}

/// For a PostgreSQL statement that waited in the simulated run: whether the real engine
/// checks its wait for a deadlock in the step that began it, or never, as in the simulated
/// run ([`Steering::pg_deadlock_check`]). Up to the first difference, a statement waits on the
/// real engine exactly when it did in the simulated run.
pub fn deadlock_check(replay: &Replay, i: usize) -> Option<bool> {
    let waited = replay
        .simulated
        .get(i)
        .is_some_and(|t| t.starts_with("BLOCK"));
    (replay.profile.is_postgres() && waited).then(|| replay.deadlock_checked[i])
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
    let mut deadlock_checked: Vec<bool> = Vec::new();
    // Per session whose client left while its statement waited: that statement's step.
    let mut orphaned: BTreeMap<SessionId, usize> = BTreeMap::new();
    let mut raw = Vec::new();
    let mut sim_results: Vec<Option<Result<QueryResult, DbError>>> = Vec::new();
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
                deadlock_checked.push(false);
                steps.push((name(*session), inline(kind, sql, params)));
                raw.push(Some((sql.clone(), params.clone())));
                sim_results.push(None);
                simulated.push(None);
                simulated_ids.push(None);
            }
            TranscriptEvent::Block { session, .. } => {
                if let Some(flight) = in_flight.get_mut(session) {
                    flight.1 = true;
                }
            }
            TranscriptEvent::DeadlockCheck { session, .. } => {
                let step = in_flight
                    .get(session)
                    .map(|f| f.0)
                    .or_else(|| orphaned.get(session).copied());
                if let Some(step) = step {
                    deadlock_checked[step] = true;
                }
            }
            TranscriptEvent::Finish {
                session,
                result,
                cause,
                ..
            } => {
                let deadlock = *cause == FinishCause::Deadline
                    && result.as_ref().is_err_and(|e| e.code() == "40P01");
                if let Some(step) = orphaned.remove(session) {
                    deadlock_checked[step] |= deadlock;
                }
                let Some((step, blocked)) = in_flight.remove(session) else {
                    continue;
                };
                deadlock_checked[step] |= deadlock;
                let tok = result_token(&steps[step].1, result);
                sim_results[step] = Some(result.clone());
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
                deadlock_checked.push(false);
                steps.push((name(*session), "DISCONNECT".to_string()));
                raw.push(None);
                sim_results.push(None);
                simulated.push(Some("ok".to_string()));
                simulated_ids.push(None);
                if let Some((step, blocked)) = in_flight.remove(session) {
                    if blocked {
                        orphaned.insert(*session, step);
                    }
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
                deadlock_checked.push(false);
                orphaned.clear();
                steps.push(("-".to_string(), "CRASH".to_string()));
                raw.push(None);
                sim_results.push(None);
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
        deadlock_checked,
        raw,
        sim_results,
        tables: setup_tables(&transcript.setup.ddl),
    }
}

/// What became of one transcript.
#[derive(Debug, Clone)]
pub struct TranscriptCheck {
    /// Steps compared: up to the first difference (all, if none).
    pub compared: usize,
    /// Of those, the steps whose outcomes agree (all but the first difference).
    pub identical: usize,
    /// Steps in the transcript.
    pub steps: usize,
    /// The first difference, if any.
    pub first: Option<Divergence>,
    /// The named nondeterminism class that explains the first difference, if one does.
    pub allowed: Option<&'static Nondeterminism>,
    /// Generated ids the replay bound to another real value.
    pub ids_remapped: usize,
    /// Steps sent in further real runs of the transcript (see [`classes::RACE_REPLAYS`]).
    pub steps_replayed: usize,
    /// The replay (for shrinking and reporting).
    pub replay: Replay,
}

/// Replays `transcript` on the real engines and compares step by step.
pub fn check(engines: &mut Engines, transcript: &Transcript) -> Result<TranscriptCheck, RunError> {
    let kind = EngineKind::of(transcript.profile);
    engines.check_alive(kind)?;
    check_on(engines.lane(), transcript).map_err(|e| engines.classify(kind, e))
}

/// The simulated ids of step `i`'s answer bound to the real ones (an insert's generated ids).
fn learn(replay: &Replay, i: usize, real: &RealResult, ids: &mut IdMap) {
    let (Some((sql, _)), Some(Ok(sim)), RealResult::Ok(real)) =
        (&replay.raw[i], &replay.sim_results[i], real)
    else {
        return;
    };
    if !sql.trim_start().to_ascii_lowercase().starts_with("insert") {
        return;
    }
    let Some(table) = statement_table(sql) else {
        return;
    };
    if let Some(column) = sim.columns.iter().position(|c| c == "id") {
        for (sim_row, real_row) in sim.rows.iter().zip(&real.rows) {
            let real_id = real_row.get(column).and_then(|c| c.parse::<i64>().ok());
            if let (Some(Value::Int(s)), Some(r)) = (sim_row.get(column), real_id) {
                ids.bind(&table, *s, r);
            }
        }
    }
    if let (Some(s), r) = (sim.last_insert_id, real.last_insert_id) {
        if r > 0 {
            ids.bind(&table, s, r as i64);
        }
    }
}

/// Step `i`'s statement with every parameter that names a generated id of a table replaced
/// by the real id bound to it.
fn rewritten(replay: &Replay, i: usize, ids: &IdMap) -> String {
    let Some((sql, params)) = &replay.raw[i] else {
        return replay.steps[i].1.clone();
    };
    let kind = EngineKind::of(replay.profile);
    let own = statement_table(sql);
    let columns = placeholder_columns(kind, sql);
    let mapped: Vec<Value> = params
        .iter()
        .enumerate()
        .map(|(p, value)| match (value, columns.get(&p)) {
            (Value::Int(x), Some(column)) => {
                match column_table(column, own.as_deref(), &replay.tables) {
                    Some(table) => Value::Int(ids.real_of(&table, *x)),
                    None => value.clone(),
                }
            }
            _ => value.clone(),
        })
        .collect();
    inline(kind, sql, &mapped)
}

/// The simulated token of step `i` with its generated ids put through the bijection (the
/// cells of id columns of a result set, and MariaDB's last insert id).
fn mapped_simulated(replay: &Replay, i: usize, ids: &IdMap) -> String {
    let token = &replay.simulated[i];
    let statement = &replay.steps[i].1;
    let own = replay.raw[i]
        .as_ref()
        .and_then(|(sql, _)| statement_table(sql));
    let sim_id = replay.simulated_ids[i].map(|x| match &own {
        Some(table) => ids.real_of(table, x),
        None => x,
    });
    let Some(Some(Ok(result))) = replay.sim_results.get(i) else {
        return with_id(token, sim_id);
    };
    let tables: Vec<Option<String>> = result
        .columns
        .iter()
        .map(|c| column_table(c, own.as_deref(), &replay.tables))
        .collect();
    if result.rows.is_empty() || tables.iter().all(Option::is_none) {
        return with_id(token, sim_id);
    }
    let mut mapped = result.clone();
    for row in &mut mapped.rows {
        for (cell, table) in row.iter_mut().zip(&tables) {
            if let (Value::Int(x), Some(table)) = (&*cell, table) {
                *cell = Value::Int(ids.real_of(table, *x));
            }
        }
    }
    let before = result_token(statement, &Ok(result.clone()));
    let after = result_token(statement, &Ok(mapped));
    with_id(&token.replacen(&before, &after, 1), sim_id)
}

/// The sessions whose statements the simulated run kept waiting through step `i` while
/// another waiter was granted during it: the replay holds them back so the real engine grants
/// the same waiter ([`crate::stepper::Stepper::step_steered`]). Empty when no waiter was
/// granted during step `i`, or none kept waiting. Ordered by the step that ended each wait in
/// the simulated run, the never-ended last.
pub fn held_back(replay: &Replay, i: usize) -> Vec<String> {
    let Some(waiting) = replay.waiting_at.get(i) else {
        return Vec::new();
    };
    // 1-based step during which a waiting statement ended in the simulated run.
    let ended = |w: usize| {
        let token = &replay.simulated[w];
        token
            .starts_with("BLOCK->")
            .then(|| classes::end_step(token))
            .flatten()
    };
    let granted_now = waiting.iter().any(|&w| ended(w) == Some(i + 1));
    if !granted_now {
        return Vec::new();
    }
    let mut held: Vec<(Option<usize>, usize)> = waiting
        .iter()
        .map(|&w| (ended(w), w))
        .filter(|&(end, _)| end.is_none_or(|n| n > i + 1))
        .collect();
    // In the order the simulated run ended their waits, the never-ended last: the replay lets
    // them go in this order, so they re-queue on the row's new version as the simulated
    // waiters were queued (a stable sort keeps arrival order among equals).
    held.sort_by_key(|&(end, _)| end.unwrap_or(usize::MAX));
    held.into_iter()
        .map(|(_, w)| replay.steps[w].0.clone())
        .collect()
}

/// Replays `transcript` on `lane` and compares step by step up to the first difference, with
/// generated ids bound between the two sides.
pub fn check_on(lane: &mut Lane, transcript: &Transcript) -> Result<TranscriptCheck, StepError> {
    let replay = replay_of(transcript);
    let count = replay.steps.len();
    let mut ids = IdMap::default();
    let mut unanswered: Vec<usize> = Vec::new();
    let (real, results) = lane.run_steps_with(
        replay.profile,
        Clock::Steps,
        &replay.setup,
        count,
        |i, stepper| {
            // Inserts answered since the last step bind their ids before this step is sent:
            // a session uses an id only after the statement that generated it answered.
            unanswered.retain(|&j| match stepper.result(j) {
                Some(r) => {
                    learn(&replay, j, r, &mut ids);
                    false
                }
                None => true,
            });
            let text = rewritten(&replay, i, &ids);
            if replay.raw[i].is_some() {
                unanswered.push(i);
            }
            let steering = Steering {
                hold: held_back(&replay, i),
                pg_deadlock_check: deadlock_check(&replay, i),
            };
            (replay.steps[i].0.clone(), text, steering)
        },
    )?;
    for j in unanswered {
        if let Some(r) = &results[j] {
            learn(&replay, j, r, &mut ids);
        }
    }
    let mut differences = Vec::new();
    let mut same = vec![false; count];
    for (i, result) in results.iter().enumerate().take(count) {
        let real_id = match result {
            Some(RealResult::Ok(r)) if r.last_insert_id > 0 => Some(r.last_insert_id as i64),
            _ => None,
        };
        let sim_full = mapped_simulated(&replay, i, &ids);
        let real_full = with_id(&real.steps[i], real_id);
        if sim_full == real_full {
            same[i] = true;
            continue;
        }
        differences.push(Divergence {
            profile: replay.profile,
            step: Some(i + 1),
            session: replay.steps[i].0.clone(),
            statement: replay.steps[i].1.clone(),
            simulated: sim_full,
            real: real_full,
        });
    }
    // The comparison ends at the first difference, explained or not: once the real engine
    // decided a race otherwise (granted another waiter), the two runs go on from different
    // states and their later steps say nothing about the simulator. First is first in time:
    // a statement that waits differs from the step its wait ends on one side, and a waiter
    // woken in a step was woken by that step's statement, so that statement, if it differs
    // itself, is the cause (a deadlock victim on one side lets the waiter behind it run).
    let first = first_in_time(differences, &replay.timers);
    let (compared, identical) = match &first {
        Some(d) => {
            let at = d.step.expect("a step") - 1;
            (at + 1, same[..at].iter().filter(|&&s| s).count())
        }
        None => (count, count),
    };
    let allowed = first
        .as_ref()
        .and_then(|d| classes::explain_transcript(d, &replay, &real.steps));
    if let Ok(path) = std::env::var("SHOPSIM_CROSSCHECK_DUMP") {
        // A side-by-side table of the replay, for reading a divergence in context.
        let mut text = String::new();
        for (i, (session, statement)) in replay.steps.iter().enumerate() {
            text.push_str(&format!(
                "{:>5} {session:<5} {statement}\n      sim  {}\n      real {}\n",
                i + 1,
                mapped_simulated(&replay, i, &ids),
                real.steps[i]
            ));
        }
        let _ = std::fs::write(path, text);
    }
    Ok(TranscriptCheck {
        compared,
        identical,
        steps: count,
        first,
        allowed,
        ids_remapped: ids.remapped(),
        steps_replayed: 0,
        replay,
    })
}

/// The 1-based step during which a difference became visible: the step of an immediate
/// outcome, or the step where the first side's wait ended. A wait still pending at the end
/// shows nothing on its side; two pending ones count from the step.
fn visible_at(d: &Divergence) -> usize {
    let step = d.step.expect("a step");
    let end = |token: &str| match classes::end_step(token) {
        Some(at) => Some(at),
        None if classes::blocked(token) => None,
        None => Some(step),
    };
    match (end(&d.simulated), end(&d.real)) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => step,
    }
    .max(step)
}

/// The difference visible first; at one step, a cause of what that step woke: the statement
/// sent in it, then one a simulated timer ended in it (a deadlock victim, whose abort lets
/// the waiters behind it run; `timers` as in [`Replay::timers`], which also lists those
/// waiters), else the earliest sent.
fn first_in_time(
    differences: Vec<Divergence>,
    timers: &[(usize, String, String)],
) -> Option<Divergence> {
    differences.into_iter().min_by_key(|d| {
        let at = visible_at(d);
        // The statement of the step is a cause unless it waited on both sides: a waiter
        // releases nothing.
        let sent_then =
            d.step == Some(at) && !(classes::blocked(&d.simulated) && classes::blocked(&d.real));
        let timer_then = classes::end_step(&d.simulated) == Some(at)
            && timers.iter().any(|(step, session, token)| {
                *step == at && *session == d.session && classes::ended_by_its_timer(token)
            });
        // Of two waiters one grant decided otherwise, the one granted on each side ends on
        // both; one still waiting at the end on a side is the consequence.
        let pending = |t: &str| classes::blocked(t) && classes::end_step(t).is_none();
        let one_pending = pending(&d.simulated) || pending(&d.real);
        (at, !sent_then, !timer_then, one_pending, d.step)
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

#[cfg(test)]
mod tests {
    use super::*;
    use shopsim_sim::db::server::transcript::TranscriptSetup;

    fn difference(step: usize, simulated: &str, real: &str) -> Divergence {
        Divergence {
            profile: Profile::PgRc,
            step: Some(step),
            session: format!("S{step}"),
            statement: "select 1".to_string(),
            simulated: simulated.to_string(),
            real: real.to_string(),
        }
    }

    /// A waiter granted earlier on one side differs from the step its wait ended in; the
    /// statement of that step, a deadlock victim on one side, comes first as its cause.
    #[test]
    fn the_first_difference_is_the_first_visible_and_its_cause() {
        let waiter = difference(92, "BLOCK->rows[converted]@s631", "BLOCK->rows[open]@s121");
        let victim = difference(121, "BLOCK->aff=1@s621", "ERR 40P01");
        let later = difference(130, "aff=1", "aff=0");
        let first = first_in_time(vec![waiter.clone(), victim.clone(), later.clone()], &[]);
        assert_eq!(first.unwrap().step, Some(121));
        let first = first_in_time(vec![waiter.clone(), later.clone()], &[]);
        assert_eq!(
            first.unwrap().step,
            Some(92),
            "visible at 121, before step 130"
        );
        let early = difference(95, "aff=1 id=4", "aff=1 id=5");
        assert_eq!(
            first_in_time(vec![waiter, early], &[]).unwrap().step,
            Some(95)
        );
        assert!(first_in_time(Vec::new(), &[]).is_none());
        // A wait still pending on one side is visible when the other side's ends.
        let pending = difference(90, "BLOCK->aff=1@s140", "BLOCK");
        let victim = difference(100, "BLOCK->ERR 40P01@s120", "BLOCK");
        let first = first_in_time(vec![pending.clone(), victim.clone()], &[]);
        assert_eq!(first.unwrap().step, Some(100), "visible at 120, before 140");
        assert_eq!(visible_at(&difference(7, "BLOCK", "QUEUED BLOCK")), 7);
        // At one step, the statement a simulated timer ended there comes before the waiters
        // its abort let run, though they were sent earlier.
        let woken = difference(80, "BLOCK->rows[open]@s140", "BLOCK");
        let victim = difference(100, "BLOCK->ERR 40P01@s140", "BLOCK");
        let timers = [
            (140, "S80".to_string(), "rows[open]".to_string()),
            (140, "S100".to_string(), "ERR 40P01".to_string()),
        ];
        let first = first_in_time(vec![woken.clone(), victim.clone()], &timers);
        assert_eq!(first.unwrap().step, Some(100));
        assert_eq!(
            first_in_time(vec![woken, victim], &[]).unwrap().step,
            Some(80)
        );
        // One grant, decided otherwise: the waiter granted on the real side comes before the
        // one the simulated run granted, which waits on to the end there.
        let granted_sim = difference(404, "BLOCK->aff=1@s478", "BLOCK");
        let granted_real = difference(456, "BLOCK->rows[7:6]@s797", "BLOCK->rows[11:9]@s478");
        let first = first_in_time(vec![granted_sim, granted_real], &[]);
        assert_eq!(first.unwrap().step, Some(456));
        // A statement that waits on both sides, granted in its own step because a timer
        // ended another's wait then, is no cause: the victim comes first.
        let sent = difference(1811, "BLOCK->aff=1@s1811", "BLOCK");
        let victim = difference(1769, "BLOCK->ERR 40P01@s1811", "BLOCK");
        let timers = [(1811, "S1769".to_string(), "ERR 40P01".to_string())];
        let first = first_in_time(vec![sent, victim], &timers);
        assert_eq!(first.unwrap().step, Some(1769));
    }

    fn execute(session: SessionId, sql: &str, params: Vec<Value>) -> TranscriptEvent {
        TranscriptEvent::Execute {
            session,
            sql: sql.to_string(),
            params,
            at_us: 0,
            application: None,
            tag: None,
        }
    }

    fn finish(session: SessionId, result: QueryResult, cause: FinishCause) -> TranscriptEvent {
        TranscriptEvent::Finish {
            session,
            result: Ok(result),
            cause,
            at_us: 0,
            woken_by: None,
        }
    }

    fn block(session: SessionId) -> TranscriptEvent {
        TranscriptEvent::Block {
            session,
            at_us: 0,
            table: None,
        }
    }

    fn transcript(events: Vec<TranscriptEvent>) -> Transcript {
        Transcript {
            profile: Profile::PgRc,
            read_only: false,
            setup: TranscriptSetup {
                ddl: vec![
                    "create table orders (id serial primary key, total int not null)".into(),
                    "create table payments (id serial primary key, order_id int not null)".into(),
                ],
                tables: Vec::new(),
            },
            origin_run_us: 0,
            events,
        }
    }

    /// S1 updates a row that `waiters` then wait for, in that order; S1's COMMIT grants the
    /// first of `grants`, whose COMMIT grants the next, and so on.
    fn row_handed_on(waiters: &[SessionId], grants: &[SessionId]) -> Transcript {
        let update = "update orders set total = 1 where id = 1";
        let ok = QueryResult::default;
        let mut events = vec![
            execute(1, "BEGIN", vec![]),
            finish(1, ok(), FinishCause::Immediate),
            execute(1, update, vec![]),
            finish(1, ok(), FinishCause::Immediate),
        ];
        for &w in waiters {
            events.extend([execute(w, update, vec![]), block(w)]);
        }
        events.extend([
            execute(1, "COMMIT", vec![]),
            finish(1, ok(), FinishCause::Immediate),
        ]);
        for (n, &g) in grants.iter().enumerate() {
            events.push(finish(g, ok(), FinishCause::Woken));
            if n + 1 < grants.len() {
                events.extend([
                    execute(g, "COMMIT", vec![]),
                    finish(g, ok(), FinishCause::Immediate),
                ]);
            }
        }
        transcript(events)
    }

    /// S1 holds a row S2 and S3 wait for; S1's COMMIT lets S2 through while S3 waits on (for
    /// S2's COMMIT): at S1's COMMIT the replay holds S3 back, and at no other step.
    #[test]
    fn the_waiters_the_simulated_run_kept_waiting_are_held_back() {
        let replay = replay_of(&row_handed_on(&[2, 3], &[2, 3]));
        assert_eq!(replay.steps.len(), 6);
        let held: Vec<Vec<String>> = (0..6).map(|i| held_back(&replay, i)).collect();
        assert_eq!(held[4], ["S3"], "{:?}", replay.simulated);
        // S2's COMMIT grants S3, the last waiter: nobody is left to hold back.
        assert!(held.iter().enumerate().all(|(i, h)| i == 4 || h.is_empty()));
    }

    /// S2, S3 and S4 wait for S1's row; S1's COMMIT lets S2 through, and the simulated run
    /// grants S4 before S3 afterwards: the replay lets S4 go first, so S4 re-queues first on
    /// the row's new version.
    #[test]
    fn held_waiters_go_in_the_order_the_simulated_run_granted_them() {
        let replay = replay_of(&row_handed_on(&[2, 3, 4], &[2, 4, 3]));
        assert_eq!(replay.steps.len(), 8);
        assert_eq!(
            held_back(&replay, 5),
            ["S4", "S3"],
            "{:?}",
            replay.simulated
        );
        assert_eq!(held_back(&replay, 6), ["S3"], "{:?}", replay.simulated);
    }

    /// A wait counts as checked for a deadlock when a check found nothing, when one made it
    /// the victim, and when one ran after its client left; a statement that never waited is
    /// not steered, and an unchecked wait is steered to no check.
    #[test]
    fn deadlock_checks_of_the_simulated_run_steer_the_real_waits() {
        let update = |id: i64| format!("update orders set total = 1 where id = {id}");
        let ok = QueryResult::default;
        let check = |session| TranscriptEvent::DeadlockCheck { session, at_us: 0 };
        let t = transcript(vec![
            execute(1, &update(1), vec![]),
            finish(1, ok(), FinishCause::Immediate),
            execute(2, &update(1), vec![]),
            block(2),
            check(2),
            execute(3, &update(1), vec![]),
            block(3),
            TranscriptEvent::Finish {
                session: 3,
                result: Err(DbError::new("40P01", "deadlock detected")),
                cause: FinishCause::Deadline,
                at_us: 0,
                woken_by: None,
            },
            execute(4, &update(1), vec![]),
            block(4),
            TranscriptEvent::Disconnect {
                session: 4,
                at_us: 0,
            },
            check(4),
            execute(5, &update(1), vec![]),
            block(5),
        ]);
        let replay = replay_of(&t);
        let steered: Vec<Option<bool>> = (0..replay.steps.len())
            .map(|i| deadlock_check(&replay, i))
            .collect();
        assert_eq!(
            steered,
            [None, Some(true), Some(true), Some(true), None, Some(false)],
            "{:?}",
            replay.simulated
        );
    }

    /// The simulated engine gave the order id 2 where the real one gave 7: the later insert
    /// that names the order is sent with 7, and a read of it is compared with 7.
    #[test]
    fn generated_ids_are_sent_and_compared_through_the_bijection() {
        let inserted = QueryResult {
            columns: vec!["id".into()],
            rows: vec![vec![Value::Int(2)]],
            ..QueryResult::default()
        };
        let read = QueryResult {
            columns: vec!["id".into(), "order_id".into()],
            rows: vec![vec![Value::Int(1), Value::Int(2)]],
            ..QueryResult::default()
        };
        let t = transcript(vec![
            execute(
                1,
                "insert into orders (total) values ($1) returning id",
                vec![Value::Int(5)],
            ),
            finish(1, inserted, FinishCause::Immediate),
            execute(
                1,
                "insert into payments (order_id) values ($1)",
                vec![Value::Int(2)],
            ),
            finish(1, QueryResult::default(), FinishCause::Immediate),
            execute(
                1,
                "select id, order_id from payments where order_id = $1",
                vec![Value::Int(2)],
            ),
            finish(1, read, FinishCause::Immediate),
        ]);
        let replay = replay_of(&t);
        let mut ids = IdMap::default();
        let real = RealResult::Ok(crate::session::RealRows {
            result_set: true,
            rows: vec![vec!["7".into()]],
            ..Default::default()
        });
        learn(&replay, 0, &real, &mut ids);
        assert_eq!(ids.real_of("orders", 2), 7);
        assert_eq!(ids.real_of("payments", 2), 2, "per table");
        assert_eq!(
            rewritten(&replay, 1, &ids),
            "insert into payments (order_id) values (7)"
        );
        assert!(rewritten(&replay, 2, &ids).ends_with("where order_id = 7"));
        let read_real = QueryResult {
            columns: vec!["id".into(), "order_id".into()],
            rows: vec![vec![Value::Int(1), Value::Int(7)]],
            ..QueryResult::default()
        };
        let expected = result_token(&replay.steps[2].1, &Ok(read_real));
        assert_eq!(mapped_simulated(&replay, 2, &ids), expected);
        assert_ne!(replay.simulated[2], expected);
        // Without the binding both sides keep the simulated value.
        let none = IdMap::default();
        assert_eq!(
            rewritten(&replay, 1, &none),
            "insert into payments (order_id) values (2)"
        );
    }
}
