//! Comparing the simulated database's outcome of a script with the real engine's, and shrinking
//! a divergence to the fewest steps that still show it.

use std::cmp::Ordering;

use shopsim_sim::db::conformance::{run_script, Outcome, Script};
use shopsim_sim::db::Profile;

/// Where the simulated and the real outcome first differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// The profile.
    pub profile: Profile,
    /// 1-based step, `None` for the final tables.
    pub step: Option<usize>,
    /// The step's session (empty for the final tables).
    pub session: String,
    /// The step's statement.
    pub statement: String,
    /// The simulated database's outcome.
    pub simulated: String,
    /// The real engine's outcome.
    pub real: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.step {
            Some(n) => write!(
                f,
                "{} step {n} ({}: {}): simulated `{}`, real `{}`",
                self.profile, self.session, self.statement, self.simulated, self.real
            ),
            None => write!(
                f,
                "{} final tables: simulated `{}`, real `{}`",
                self.profile, self.simulated, self.real
            ),
        }
    }
}

/// The first step (then the final tables) where `simulated` and `real` differ.
pub fn first_difference(
    script: &Script,
    profile: Profile,
    simulated: &Outcome,
    real: &Outcome,
) -> Option<Divergence> {
    assert_eq!(simulated.steps.len(), script.steps.len());
    assert_eq!(real.steps.len(), script.steps.len());
    for (n, (s, r)) in simulated.steps.iter().zip(&real.steps).enumerate() {
        if s != r {
            let (session, statement) = &script.steps[n];
            return Some(Divergence {
                profile,
                step: Some(n + 1),
                session: session.clone(),
                statement: statement.clone(),
                simulated: s.clone(),
                real: r.clone(),
            });
        }
    }
    (simulated.final_table != real.final_table).then(|| Divergence {
        profile,
        step: None,
        session: String::new(),
        statement: String::new(),
        simulated: simulated.final_table.clone(),
        real: real.final_table.clone(),
    })
}

/// Cell order of final tables: `NULL` first, integers by value, then text (the simulated
/// database's primary-key order for one-column keys).
pub fn compare_cells(a: &[String], b: &[String]) -> Ordering {
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

/// Shrinks `script` by dropping steps while `diverges` still holds: chunks of half the steps
/// first, then quarters, down to single steps (delta debugging), until no chunk can go.
/// `diverges` runs the candidate on both sides. Returns the smallest script found and how many
/// candidates were tried.
pub fn shrink(script: &Script, mut diverges: impl FnMut(&Script) -> bool) -> (Script, usize) {
    let mut best = script.clone();
    let mut tried = 0;
    let mut chunk = (best.steps.len() / 2).max(1);
    loop {
        let mut removed_any = false;
        let mut start = 0;
        while start < best.steps.len() && best.steps.len() > 1 {
            let end = (start + chunk).min(best.steps.len());
            let mut candidate = best.clone();
            candidate.steps.drain(start..end);
            tried += 1;
            if !candidate.steps.is_empty() && diverges(&candidate) {
                best = candidate;
                removed_any = true;
            } else {
                start = end;
            }
        }
        if chunk == 1 && !removed_any {
            break;
        }
        if !removed_any {
            chunk = (chunk / 2).max(1);
        }
    }
    assert!(!best.steps.is_empty());
    (best, tried)
}

/// The simulated outcome of `script` under `profile` (the conformance runner).
pub fn simulate(script: &Script, profile: Profile) -> Outcome {
    run_script(script, profile)
}
