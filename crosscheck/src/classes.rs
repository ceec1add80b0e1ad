//! The named classes, kept in one place:
//!
//! - [`NONDETERMINISM`]: outcomes that truly depend on timing in the real engine, where the
//!   stepping order cannot decide. The comparison accepts a difference only when it is exactly
//!   one of these, shown by the transcript itself or, for `real_engine_race`, by a further
//!   real run identical to the simulated one.
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
pub const NONDETERMINISM: [Nondeterminism; 4] = [
    Nondeterminism {
        name: "pg_deadlock_victim_by_timer",
        why: "PostgreSQL's victim is the waiter whose deadlock_timeout fires first while the \
              cycle exists. A simulated run fires each waiter's check deadlock_timeout after its \
              wait began in virtual time; the stepping protocol runs the check of every wait the \
              simulated run checked in the step that began the wait (and never checks the others), \
              so there the statement that closes a cycle is the victim, while the simulated check \
              of an earlier waiter may have come after the cycle closed. Accepted: the \
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
              sides and ends with the same kind of outcome, or on one side is granted before \
              its session's own DISCONNECT or a CRASH step ends the other side's wait, and \
              another session updated its table between the statement's step and its end.",
    },
    Nondeterminism {
        name: "real_engine_race",
        why: "The real engine itself gives the simulated outcome when the same steps are \
              stepped again: which of several sessions one step woke runs first is the \
              server's scheduling (an InnoDB commit grants two waiters that go on scanning; \
              PostgreSQL wakes every waiter of a transaction that ends, and they race for \
              the rows), and no stepping order can choose it on a release build. Accepted: \
              one of RACE_REPLAYS further real runs of the input is identical to the \
              simulated run in every compared step (and, for a script, the final tables).",
    },
    Nondeterminism {
        name: "lock_wait_timeout_in_virtual_time",
        why: "A lock wait or statement timeout fires after real time; a simulated run spends \
              virtual time between statements that the replay does not spend. Accepted: the \
              simulated run ended the differing statement by a timer with a timeout error \
              (1205, 55P03, 57014) and the real engine did not.",
    },
];

/// How many more times an input that diverged is run on the real engine, looking for a run
/// identical to the simulated one ([`real_engine_race`]).
pub const RACE_REPLAYS: usize = 8;

/// The class of a divergence that a further real run did not show.
pub fn real_engine_race() -> &'static Nondeterminism {
    nondeterminism("real_engine_race")
}

fn nondeterminism(name: &str) -> &'static Nondeterminism {
    NONDETERMINISM
        .iter()
        .find(|c| c.name == name)
        .expect("a class of NONDETERMINISM")
}

/// The error codes of a statement a timer ended: a deadlock found by PostgreSQL's check, a
/// lock wait or statement timeout.
const TIMER_CODES: [&str; 4] = ["40P01", "55P03", "57014", "1205"];

/// Whether a [`Replay::timers`] token is the error of the statement the timer ended, not of a
/// waiter that the ended statement's locks let run.
pub(crate) fn ended_by_its_timer(token: &str) -> bool {
    TIMER_CODES.iter().any(|code| ends_in(token, code))
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
    if replay.profile.is_postgres() && any_40p01 && deadlock_timer(step) {
        // The victim on one side; on the other, a timer chose another waiter.
        return Some(nondeterminism("pg_deadlock_victim_by_timer"));
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

/// The token of a statement whose connection was closed under it.
fn lost_connection(token: &str) -> bool {
    ends_in(token, "conn-closed") || ends_in(token, "2013")
}

/// The 1-based step during which a `BLOCK->X@sN` token ended (an ` id=…` after it ignored).
pub(crate) fn end_step(token: &str) -> Option<usize> {
    let (_, after) = token.rsplit_once("@s")?;
    let digits = after.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

fn waiters_race(d: &Divergence, replay: &Replay) -> bool {
    let Some(step) = d.step else { return false };
    if !(blocked(&d.simulated) && blocked(&d.real)) {
        return false;
    }
    let end = match (end_step(&d.simulated), end_step(&d.real)) {
        (Some(a), Some(b)) => a.min(b),
        _ => return false,
    };
    let same_kind =
        crate::campaign::token_kind(&d.simulated) == crate::campaign::token_kind(&d.real);
    // One side granted the statement before its session went away, the other was still
    // waiting when the session's own DISCONNECT or CRASH step ended the wait: the outcome
    // differs only in how long the wait lasted.
    let cut_short = |lost: &str, other: &str| {
        lost_connection(lost)
            && end_step(lost).is_some_and(|at| {
                end_step(other).is_some_and(|o| o < at)
                    && replay
                        .steps
                        .get(at - 1)
                        .is_some_and(|(session, statement)| {
                            let step = statement.trim().to_ascii_uppercase();
                            step == "CRASH" || (*session == d.session && step == "DISCONNECT")
                        })
            })
    };
    if !(same_kind || cut_short(&d.simulated, &d.real) || cut_short(&d.real, &d.simulated)) {
        return false;
    }
    let Some(table) = table_of(&d.statement) else {
        return false;
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

/// A token of a statement that waited.
pub(crate) fn blocked(token: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use shopsim_sim::db::Profile;

    /// S1 holds the row, S2 waits for it from step 2, S1 updates it at step 3 and commits at
    /// step 4; `last` is step 5.
    fn replay(last: (&str, &str)) -> Replay {
        let steps: Vec<(String, String)> = [
            ("S1", "select * from t where id = 1 for update"),
            ("S2", "select * from t where id = 1 for update"),
            ("S1", "update t set v = 1 where id = 1"),
            ("S1", "commit"),
            last,
        ]
        .iter()
        .map(|(s, q)| (s.to_string(), q.to_string()))
        .collect();
        let n = steps.len();
        Replay {
            profile: Profile::PgRc,
            setup: Vec::new(),
            steps,
            simulated: vec![String::new(); n],
            simulated_ids: vec![None; n],
            timers: Vec::new(),
            waiting_at: vec![Vec::new(); n],
            deadlock_checked: vec![false; n],
            raw: vec![None; n],
            sim_results: vec![None; n],
            tables: vec!["t".to_string()],
        }
    }

    fn divergence(simulated: &str, real: &str) -> Divergence {
        Divergence {
            profile: Profile::PgRc,
            step: Some(2),
            session: "S2".to_string(),
            statement: "select * from t where id = 1 for update".to_string(),
            simulated: simulated.to_string(),
            real: real.to_string(),
        }
    }

    /// The waiters race accepts a grant at another step, and a grant on one side where the
    /// session's own DISCONNECT (or a CRASH) ended the other side's wait; nothing else.
    #[test]
    fn a_waiters_race_may_end_in_the_sessions_own_disconnect_only() {
        let own = replay(("S2", "DISCONNECT"));
        let explain = |d: &Divergence, r: &Replay| waiters_race(d, r);
        assert!(explain(
            &divergence("BLOCK->rows[1:1]@s4", "BLOCK->rows[1:1]@s5"),
            &own
        ));
        assert!(explain(
            &divergence("BLOCK->rows[1:1]@s4", "BLOCK->ERR conn-closed@s5"),
            &own
        ));
        assert!(explain(
            &divergence("BLOCK->ERR conn-closed@s5", "BLOCK->rows[1:1]@s4"),
            &own
        ));
        assert!(explain(
            &divergence("BLOCK->rows[1:1]@s4", "BLOCK->ERR conn-closed@s5"),
            &replay(("-", "CRASH"))
        ));
        // Another session's disconnect does not end S2's wait.
        assert!(!explain(
            &divergence("BLOCK->rows[1:1]@s4", "BLOCK->ERR conn-closed@s5"),
            &replay(("S3", "DISCONNECT"))
        ));
        // The granted side must have ended before the disconnect.
        assert!(!explain(
            &divergence("BLOCK->rows[1:1]@s5", "BLOCK->ERR conn-closed@s5"),
            &own
        ));
        // Another kind of outcome is not a matter of waiting longer.
        assert!(!explain(
            &divergence("BLOCK->rows[1:1]@s4", "BLOCK->ERR 40P01@s4"),
            &own
        ));
        // Without an update of the table during the wait there is no race.
        let mut no_update = own.clone();
        no_update.steps[2].1 = "select * from t where id = 2".to_string();
        assert!(!explain(
            &divergence("BLOCK->rows[1:1]@s4", "BLOCK->rows[1:1]@s5"),
            &no_update
        ));
    }

    /// A deadlock victim on one side is timing only when a simulated timer ended a deadlock
    /// while the differing statement waited (or in the step after it was sent); a timer
    /// elsewhere in the run explains nothing.
    #[test]
    fn a_victim_by_timer_needs_a_deadlock_timer_during_the_wait() {
        let victim = divergence("BLOCK->ERR 40P01@s4", "BLOCK->rows[1:1]@s4");
        let name = |d: &Divergence, r: &Replay| explain_transcript(d, r, &[]).map(|c| c.name);
        let mut during = replay(("S3", "select 1"));
        during.simulated[1] = victim.simulated.clone();
        during.waiting_at[3] = vec![1];
        during.timers = vec![(3, "S2".to_string(), "ERR 40P01".to_string())];
        assert_eq!(name(&victim, &during), Some("pg_deadlock_victim_by_timer"));
        // No deadlock timer at all: not timing.
        let mut none = during.clone();
        none.timers.clear();
        assert_eq!(name(&victim, &none), None);
        // A deadlock timer of the run that fired before the statement was sent.
        let mut before = during.clone();
        before.timers = vec![(0, "S1".to_string(), "ERR 40P01".to_string())];
        assert_eq!(name(&victim, &before), None);
        // A timer that ended a lock wait timeout is no deadlock.
        let mut timeout = during.clone();
        timeout.timers = vec![(3, "S2".to_string(), "ERR 55P03".to_string())];
        assert_eq!(name(&victim, &timeout), None);
    }
}
