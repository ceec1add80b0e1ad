//! The named classes, kept in one place:
//!
//! - [`NONDETERMINISM`]: outcomes that truly depend on timing in the real engine, where the
//!   stepping order cannot decide. The comparison accepts a difference only when it is exactly
//!   one of these, shown by the transcript itself.
//! - [`KNOWN_OPEN`]: divergences of the simulated database that are known and being fixed.
//!   Tests accept a divergence only if it matches one of these; the list is emptied as the
//!   engine is fixed, and a divergence outside it fails the test.

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
pub const NONDETERMINISM: [Nondeterminism; 2] = [
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
                && (replay.waiting_at.get(*at).is_some_and(|w| w.contains(&around))
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
    let timed_out = ["1205", "55P03", "57014"]
        .iter()
        .any(|code| ends_in(&d.simulated, code));
    let by_timer = replay
        .timers
        .iter()
        .any(|(_, session, tok)| *session == d.session && tok == d.simulated.trim_start_matches("BLOCK->").split('@').next().unwrap_or(""));
    if timed_out && by_timer && !["1205", "55P03", "57014"].iter().any(|c| ends_in(&d.real, c)) {
        let _ = real;
        return Some(nondeterminism("lock_wait_timeout_in_virtual_time"));
    }
    None
}

/// A known open divergence of the simulated database.
#[derive(Debug)]
pub struct KnownDivergence {
    /// Its name.
    pub name: &'static str,
    /// What differs, precisely.
    pub what: &'static str,
    /// Whether a divergence is of this class.
    pub matches: fn(&Divergence) -> bool,
}

/// The known open divergence classes (issue 12's list as the crosscheck found them); emptied
/// as the engine is fixed.
pub const KNOWN_OPEN: &[KnownDivergence] = &[];

/// The known open class of `d`, if any.
pub fn known(d: &Divergence) -> Option<&'static KnownDivergence> {
    KNOWN_OPEN.iter().find(|k| (k.matches)(d))
}
