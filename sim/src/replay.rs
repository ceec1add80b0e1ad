//! Reproducing a seed: the commands a failure report prints, and the in-process determinism
//! check (a seed run twice must give the same trace hash).

use crate::runner::{self, Outcome, SimConfig, System};

/// The command that replays `seed` of `scenario` with the CLI.
pub fn replay_command(scenario: &str, seed: u64) -> String {
    format!("cargo run --release -- replay {scenario} --seed {seed}")
}

/// The command that replays `seed` in the test `test` (a `cargo test` filter).
pub fn test_replay_command(test: &str, seed: u64) -> String {
    format!("SHOPSIM_SEED={seed} cargo test --release {test}")
}

/// The failure report of an outcome: the FAIL line, then how to replay it.
pub fn failure_report<S>(outcome: &Outcome<S>, test: Option<&str>) -> Option<String> {
    let line = outcome.fail_line()?;
    let mut report = format!(
        "{line}\nnote: reproduce with: {}",
        replay_command(&outcome.system, outcome.seed)
    );
    if let Some(test) = test {
        report.push_str(&format!(
            "\nnote: or in the tests: {}",
            test_replay_command(test, outcome.seed)
        ));
    }
    Some(report)
}

/// A seed whose two runs differed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nondeterminism {
    /// The seed.
    pub seed: u64,
    /// The first run's hash.
    pub first: u64,
    /// The second run's hash.
    pub second: u64,
    /// The first history operation that differs, described.
    pub first_difference: String,
}

/// Runs `seed` twice in this process; the hash, or where the runs diverged.
pub fn check_determinism<S: System>(
    system: &S,
    seed: u64,
    config: &SimConfig,
) -> Result<u64, Nondeterminism> {
    let a = runner::run(system, seed, config);
    let b = runner::run(system, seed, config);
    if a.trace_hash == b.trace_hash {
        return Ok(a.trace_hash);
    }
    let first_difference = a
        .history
        .ops
        .iter()
        .zip(&b.history.ops)
        .find(|(x, y)| x != y)
        .map(|(x, y)| format!("op #{}: {x:?} vs {y:?}", x.index))
        .unwrap_or_else(|| {
            format!(
                "histories agree on {} ops; final state or coverage differ",
                a.history.ops.len().min(b.history.ops.len())
            )
        });
    Err(Nondeterminism {
        seed,
        first: a.trace_hash,
        second: b.trace_hash,
        first_difference,
    })
}
