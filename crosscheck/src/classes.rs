//! The named classes, kept in one place:
//!
//! - [`NONDETERMINISM`]: outcomes that truly depend on timing in the real engine, where the
//!   stepping order cannot decide. The comparison accepts a difference only when it is exactly
//!   one of these, shown by the transcript itself.
//! - [`KNOWN_OPEN`]: divergences of the simulated database that are known and being fixed.
//!   Tests accept a divergence only if it matches one of these; the list is emptied as the
//!   engine is fixed, and a divergence outside it fails the test.

use shopsim_sim::db::conformance::Script;

use crate::compare::Divergence;
use crate::transcript::Replay;

/// A class of allowed nondeterminism.
#[derive(Debug)]
pub struct Nondeterminism {
    /// Its name, as reports print it.
    pub name: &'static str,
    /// Why the outcome depends on timing, and what exactly is accepted.
    pub why: &'static str,
}

/// The allowed nondeterminism classes.
pub const NONDETERMINISM: [Nondeterminism; 3] = [
    Nondeterminism {
        name: "pg_deadlock_victim_by_timer",
        why: "PostgreSQL's victim is the waiter whose deadlock_timeout fires first while the \
              cycle exists. A simulated run fires each waiter's check deadlock_timeout after its \
              wait began in virtual time; the stepping protocol runs every check in the step that \
              began the wait, so the statement that closes a cycle is the victim. Accepted: the \
              first difference involves a 40P01 on one side, and the simulated run ended a \
              deadlock by a timer while the differing statement waited or was sent.",
    },
    Nondeterminism {
        name: "pg_waiters_race_after_update",
        why: "PostgreSQL: sessions waiting for one row queue on its tuple lock; when the holder \
              updates the row, its new version has a new tuple id, and every waiter that wakes \
              re-queues on the new version in the order the server's processes happen to run, \
              not in arrival order (replaying one transcript twice on one server grants them \
              differently). Accepted: on PostgreSQL, the differing statement waits on both \
              sides and ends with the same kind of outcome, and another session updated its \
              table between the statement's step and its end.",
    },
    Nondeterminism {
        name: "lock_wait_timeout_in_virtual_time",
        why: "A lock wait or statement timeout fires after real time; a simulated run spends \
              virtual time between statements that the replay does not spend. Accepted: the \
              simulated run ended the differing statement by a timer with a timeout error \
              (1205, 55P03, 57014) and the real engine did not.",
    },
];

fn nondeterminism(name: &str) -> &'static Nondeterminism {
    NONDETERMINISM
        .iter()
        .find(|c| c.name == name)
        .expect("a class of NONDETERMINISM")
}

fn ends_in(token: &str, code: &str) -> bool {
    token.contains(&format!("ERR {code}"))
}

/// The nondeterminism class that explains the first difference `d` of a transcript replay,
/// if exactly one of them does. `real` are the real tokens per step.
pub fn explain_transcript(
    d: &Divergence,
    replay: &Replay,
    real: &[String],
) -> Option<&'static Nondeterminism> {
    let step = d.step? - 1;
    let deadlock_timer = |around: usize| {
        // A timer ended a deadlock while the statement was sent or waited: the simulated
        // victim was chosen by virtual time.
        replay.timers.iter().any(|(at, _, tok)| {
            ends_in(tok, "40P01")
                && *at >= around
                && (replay
                    .waiting_at
                    .get(*at)
                    .is_some_and(|w| w.contains(&around))
                    || *at == around + 1
                    || replay.simulated[around].contains(&format!("@s{at}")))
        })
    };
    let any_40p01 = ends_in(&d.simulated, "40P01") || ends_in(&d.real, "40P01");
    if replay.profile.is_postgres() && any_40p01 {
        // The victim on one side; on the other, a timer chose another waiter.
        let timer_nearby = replay
            .timers
            .iter()
            .any(|(at, _, tok)| ends_in(tok, "40P01") && at.abs_diff(step + 1) <= 64)
            || deadlock_timer(step);
        if timer_nearby {
            return Some(nondeterminism("pg_deadlock_victim_by_timer"));
        }
    }
    if replay.profile.is_postgres() && waiters_race(d, replay) {
        return Some(nondeterminism("pg_waiters_race_after_update"));
    }
    let timed_out = ["1205", "55P03", "57014"]
        .iter()
        .any(|code| ends_in(&d.simulated, code));
    let by_timer = replay.timers.iter().any(|(_, session, tok)| {
        *session == d.session
            && tok
                == d.simulated
                    .trim_start_matches("BLOCK->")
                    .split('@')
                    .next()
                    .unwrap_or("")
    });
    if timed_out
        && by_timer
        && !["1205", "55P03", "57014"]
            .iter()
            .any(|c| ends_in(&d.real, c))
    {
        let _ = real;
        return Some(nondeterminism("lock_wait_timeout_in_virtual_time"));
    }
    None
}

/// The table a statement reads or writes (`from t`, `update t`, `into t`).
fn table_of(statement: &str) -> Option<String> {
    let lower = statement.to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| matches!(w[0], "from" | "update" | "into"))
        .map(|w| {
            w[1].trim_matches(|c: char| !c.is_alphanumeric() && c != '_')
                .to_string()
        })
}

/// Step (1-based) at which a `BLOCK->X@sN` token ended.
fn end_step(token: &str) -> Option<usize> {
    token.rsplit_once("@s")?.1.parse().ok()
}

fn waiters_race(d: &Divergence, replay: &Replay) -> bool {
    let Some(step) = d.step else { return false };
    if !(blocked(&d.simulated) && blocked(&d.real)) {
        return false;
    }
    if crate::campaign::token_kind(&d.simulated) != crate::campaign::token_kind(&d.real) {
        return false;
    }
    let Some(table) = table_of(&d.statement) else {
        return false;
    };
    let end = match (end_step(&d.simulated), end_step(&d.real)) {
        (Some(a), Some(b)) => a.min(b),
        _ => return false,
    };
    replay.steps[step..end.min(replay.steps.len())]
        .iter()
        .any(|(session, statement)| {
            *session != d.session
                && statement.to_ascii_lowercase().starts_with("update")
                && table_of(statement).as_deref() == Some(table.as_str())
        })
}

/// A known open divergence of the simulated database.
#[derive(Debug)]
pub struct KnownDivergence {
    /// Its name.
    pub name: &'static str,
    /// What differs, precisely.
    pub what: &'static str,
    /// Whether a divergence of `script` (its first difference) is of this class.
    pub matches: fn(&Divergence, &Script) -> bool,
}

fn is_innodb(d: &Divergence) -> bool {
    !d.profile.is_postgres()
}

fn blocked(token: &str) -> bool {
    token.starts_with("BLOCK") || token.starts_with("QUEUED BLOCK")
}

/// Both sides wait and finish with the same kind of outcome, at a different step or with
/// different rows: the order in which waiters are granted, or which rows they see then.
fn grant_order(d: &Divergence, _: &Script) -> bool {
    is_innodb(d)
        && blocked(&d.simulated)
        && blocked(&d.real)
        && crate::campaign::token_kind(&d.simulated) == crate::campaign::token_kind(&d.real)
}

/// The known open divergence classes, as the crosscheck found them; the lead empties this
/// list as the engine is fixed, and a divergence outside it fails the crosscheck tests.
pub const KNOWN_OPEN: &[KnownDivergence] = &[KnownDivergence {
    name: "innodb_lock_grant_order_differs",
    what: "InnoDB: both sides make the statement wait and end it with the same kind of \
               outcome, but at a different step or with different rows: MariaDB grants the \
               waiters of a record in another order than the simulated FIFO queue (or makes \
               one wait again), so the statement sees another version, or ends its wait at \
               another step; or, of two waiters one commit wakes (an insert that waited for a \
               gap, a range read going on past the record it waited for), runs the other first \
               (a race on the real server: replaying one group twice gives both outcomes).",
    matches: grant_order,
}];

/// The known open class of `d`, the first difference of `script`, if any.
pub fn known(d: &Divergence, script: &Script) -> Option<&'static KnownDivergence> {
    KNOWN_OPEN.iter().find(|k| (k.matches)(d, script))
}
