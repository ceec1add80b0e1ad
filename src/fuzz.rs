//! `shopsim fuzz`: fresh seeds in swarm mode on N threads until a duration or seed count is
//! reached. Each failure is re-run once to confirm it reproduces, then written as an artifact;
//! failures are grouped by scenario and check. The campaign's progress is saved after every
//! batch, so Ctrl-C (or a kill) loses nothing and `--resume` continues where it stopped.
//! `--shard K/N` makes N machines cover disjoint seeds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use shopsim_sim::fault::FaultPlan;
use shopsim_sim::runner::SimConfig;

use crate::artifact::{self, Artifact};
use crate::{EXIT_BAD_INPUT, EXIT_OK};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenarios (default: every built-in one).
    scenarios: Vec<String>,
    /// Stop after this long (wall time): `90s`, `10m`, `8h`.
    #[arg(long)]
    duration: Option<String>,
    /// Stop after this many seeds.
    #[arg(long)]
    seeds: Option<u64>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// This machine's share of the seeds: `K/N` (1 <= K <= N).
    #[arg(long)]
    shard: Option<String>,
    /// Where artifacts, the state file and the reports go.
    #[arg(long, default_value = "target/shopsim/fuzz")]
    out: PathBuf,
    /// Continue the campaign saved in --out.
    #[arg(long)]
    resume: bool,
    /// Only this database profile.
    #[arg(long)]
    profile: Option<String>,
    /// Turn on a planted bug (repeatable).
    #[arg(long = "bug", value_name = "NAME")]
    bugs: Vec<String>,
    /// Keep each scenario's own fault plan instead of swarm draws.
    #[arg(long)]
    no_swarm: bool,
}

/// The campaign state saved after every batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    /// The next campaign index to run.
    next_index: u64,
    /// Seeds run so far.
    seeds_run: u64,
    /// Failures so far: (scenario@profile, check) -> seeds.
    failures: BTreeMap<String, Vec<u64>>,
    /// The arguments that define the campaign, to refuse resuming a different one.
    identity: String,
}

/// The largest campaign counter (`next_index`, `seeds_run`) a state file may hold: 10^15
/// seeds is millennia of fuzzing, and with at most [`crate::input::SHARDS_MAX`] shards every
/// seed index below it fits in 64 bits.
pub const STATE_COUNTER_MAX: u64 = 1_000_000_000_000_000;

impl State {
    /// Checks a state read from disk: counters within [`STATE_COUNTER_MAX`], so no campaign
    /// arithmetic can overflow.
    fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("next_index", self.next_index),
            ("seeds_run", self.seeds_run),
        ] {
            if value > STATE_COUNTER_MAX {
                return Err(format!(
                    "{field}: expected a whole number in 0..={STATE_COUNTER_MAX}, got `{value}`"
                ));
            }
        }
        Ok(())
    }
}

/// Reads and checks a campaign state file (a regular file of at most
/// [`crate::input::STATE_BYTES_MAX`] bytes); errors name the file and the field. `Ok(None)`
/// if there is no file.
fn read_state(path: &std::path::Path) -> Result<Option<State>, String> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    let text = crate::input::read_text(path, crate::input::STATE_BYTES_MAX)?;
    parse_state_value(&text)
        .map(Some)
        .map_err(|e| format!("{}: not a campaign state: {e}", path.display()))
}

/// Parses and checks the text of a campaign state file.
pub fn parse_state(text: &str) -> Result<(), String> {
    parse_state_value(text).map(|_| ())
}

fn parse_state_value(text: &str) -> Result<State, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let state: State =
        serde_path_to_error::deserialize(&mut de).map_err(|e| crate::input::json_error(&e))?;
    de.end().map_err(|e| {
        format!(
            "line {}, column {}: trailing characters after the JSON value",
            e.line(),
            e.column()
        )
    })?;
    state.validate()?;
    Ok(state)
}

/// The seed of campaign index `i` on shard `k` of `n`: disjoint across shards. `None` past the
/// last index of the shard (beyond [`STATE_COUNTER_MAX`] and every batch after it).
fn seed_of(i: u64, shard: (u64, u64)) -> Option<u64> {
    let index = i.checked_mul(shard.1)?.checked_add(shard.0 - 1)?;
    // SplitMix64, so consecutive indexes give unrelated seeds.
    let mut z = index.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    Some(z ^ (z >> 31))
}

/// The campaign's settings from its flags.
type Settings = (
    Option<std::time::Duration>,
    (u64, u64),
    usize,
    Vec<(shopsim_scenarios::Scenario, shopsim_sim::db::Profile)>,
);

/// Checks every flag (and, with `--resume`, the state file) without running or writing
/// anything; errors name the flag and the value.
pub fn check_args(args: &Args) -> Result<Settings, String> {
    if args.duration.is_none() && args.seeds.is_none() {
        return Err("--duration or --seeds: one of them is required".to_string());
    }
    let limit = args
        .duration
        .as_deref()
        .map(crate::input::parse_duration)
        .transpose()?;
    if args.seeds == Some(0) {
        return Err("--seeds: must be at least 1, got `0`".to_string());
    }
    let shard = args
        .shard
        .as_deref()
        .map(crate::input::parse_shard)
        .transpose()?
        .unwrap_or((1, 1));
    let jobs = crate::input::parse_jobs(args.jobs)?;
    let runs = crate::run::resolve(
        &args.scenarios,
        args.scenarios.is_empty(),
        &[],
        args.profile.as_deref(),
    )?;
    for (scenario, profile) in &runs {
        scenario
            .system(*profile, &args.bugs)
            .map_err(|e| format!("--bug: {e}"))?;
    }
    if args.resume {
        read_state(&args.out.join("state.json")).map_err(|e| format!("--resume: {e}"))?;
    }
    Ok((limit, shard, jobs, runs))
}

pub fn run(args: Args) -> u8 {
    let setup = (|| -> Result<_, String> {
        let (limit, shard, jobs, runs) = check_args(&args)?;
        std::fs::create_dir_all(&args.out)
            .map_err(|e| format!("--out {}: {e}", args.out.display()))?;
        let probe = args.out.join(".write-probe");
        std::fs::write(&probe, b"")
            .map_err(|e| format!("--out {}: not writable: {e}", args.out.display()))?;
        let _ = std::fs::remove_file(probe);
        Ok((limit, shard, jobs, runs))
    })();
    let (limit, shard, jobs, runs) = match setup {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let identity = format!(
        "{:?} {:?} {:?} {:?} swarm={}",
        args.scenarios, args.profile, args.bugs, args.shard, !args.no_swarm
    );
    let state_path = args.out.join("state.json");
    let mut state = if args.resume {
        match read_state(&state_path) {
            Err(e) => {
                eprintln!("error: --resume: {e}");
                return EXIT_BAD_INPUT;
            }
            Ok(Some(s)) if s.identity == identity => s,
            Ok(Some(_)) => {
                eprintln!(
                    "error: --resume: {} holds a different campaign",
                    state_path.display()
                );
                return EXIT_BAD_INPUT;
            }
            Ok(None) => {
                eprintln!(
                    "error: --resume: no campaign state in {}",
                    state_path.display()
                );
                return EXIT_BAD_INPUT;
            }
        }
    } else {
        State {
            identity: identity.clone(),
            ..State::default()
        }
    };
    // Saved before any work, so a campaign killed at any moment can be resumed.
    if let Err(e) = artifact::write_atomic(&state_path, &state) {
        eprintln!("error: --out: writing {}: {e}", state_path.display());
        return EXIT_BAD_INPUT;
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let commit = artifact::commit();
    let started = Instant::now();
    let target = match args.seeds.map(|s| state.seeds_run.checked_add(s)) {
        Some(None) => {
            eprintln!(
                "error: --seeds: {} seeds after the {} already run pass 2^64 - 1",
                args.seeds.unwrap_or_default(),
                state.seeds_run
            );
            return EXIT_BAD_INPUT;
        }
        Some(Some(t)) => Some(t),
        None => None,
    };
    let progress = indicatif::ProgressBar::new(target.unwrap_or(0));
    progress.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos} seeds {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    // Every (scenario, profile) gets several seeds per thread in each batch, so the threads
    // stay busy; the state is saved between batches.
    let batch = (runs.len() * jobs * 4) as u64;
    let mut exit = EXIT_OK;
    loop {
        if stop.load(Ordering::SeqCst) || limit.is_some_and(|l| started.elapsed() >= l) {
            break;
        }
        let remaining = target.map_or(batch, |t| t.saturating_sub(state.seeds_run).min(batch));
        if remaining == 0 {
            break;
        }
        // Each index picks its (scenario, profile) round robin and a fresh seed.
        let work: Option<Vec<(usize, u64)>> = (0..remaining)
            .map(|n| {
                let i = state.next_index.checked_add(n)?;
                Some(((i % runs.len() as u64) as usize, seed_of(i, shard)?))
            })
            .collect();
        let Some(work) = work else {
            eprintln!("error: this shard's seed indexes are used up");
            break;
        };
        let mut found = Vec::new();
        for (r, (scenario, profile)) in runs.iter().enumerate() {
            let seeds: Vec<u64> = work
                .iter()
                .filter(|(w, _)| *w == r)
                .map(|(_, s)| *s)
                .collect();
            if seeds.is_empty() {
                continue;
            }
            let system = scenario.system(*profile, &args.bugs).expect("checked");
            let base = scenario.sim_config();
            let swarm = !args.no_swarm;
            let config_of = move |seed: u64| -> SimConfig {
                if !swarm {
                    return base.clone();
                }
                // A scenario without faults may have a quiet period as long as its run; swarm
                // faults need room before it, or the drawn configuration would be invalid.
                let quiet = base.faults.quiet_period_ms;
                let allowed = FaultPlan {
                    quiet_period_ms: if quiet < base.duration_ms {
                        quiet
                    } else {
                        base.duration_ms / 2
                    },
                    ..FaultPlan::all()
                };
                SimConfig {
                    faults: shopsim_sim::swarm::draw(seed, &allowed),
                    ..base.clone()
                }
            };
            let outcomes =
                shopsim_sim::fuzz::run_seeds(|| system.clone(), &seeds, &config_of, jobs, |_| true);
            for o in outcomes {
                if o.passed() {
                    continue;
                }
                // Confirm: the same seed fails again with the same hash.
                let again = shopsim_sim::runner::run(&system, o.seed, &config_of(o.seed));
                let confirmed = again.trace_hash == o.trace_hash;
                let failure = o.failure.clone().expect("failed");
                let artifact = Artifact {
                    format: artifact::FORMAT.to_string(),
                    scenario: scenario.name.clone(),
                    profile: profile.name().to_string(),
                    seed: o.seed,
                    bugs: args.bugs.clone(),
                    config: config_of(o.seed),
                    scenario_toml: scenario.to_toml(),
                    commit: commit.clone(),
                    trace_hash: o.trace_hash,
                    failure: failure.clone(),
                    reports: o.reports.clone(),
                    history: o.history.clone(),
                };
                let path = artifact::path(&args.out, &scenario.name, profile.name(), o.seed);
                if let Err(e) = artifact::write_atomic(&path, &artifact) {
                    eprintln!("error: writing {}: {e}", path.display());
                }
                let line = o.fail_line().expect("failed");
                let note = if confirmed {
                    ""
                } else {
                    "  (did NOT reproduce: nondeterminism)"
                };
                progress.suspend(|| {
                    println!("{line}\n  artifact: {}{note}", path.display());
                    // Seen at once by whoever watches the campaign, even through a pipe.
                    let _ = std::io::Write::flush(&mut std::io::stdout());
                });
                exit = exit.max(failure.kind.exit_code());
                found.push((format!("{} {}", system.name, failure.check), o.seed));
            }
        }
        for (group, seed) in found {
            state.failures.entry(group).or_default().push(seed);
        }
        state.next_index += remaining;
        state.seeds_run += remaining;
        if let Err(e) = artifact::write_atomic(&state_path, &state) {
            eprintln!("error: writing {}: {e}", state_path.display());
        }
        progress.set_position(state.seeds_run);
        let rate = state.seeds_run as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let left = limit.map(|l| l.saturating_sub(started.elapsed()));
        progress.set_message(format!(
            "{rate:.0} seeds/s, {} failures{}",
            state.failures.values().map(Vec::len).sum::<usize>(),
            left.map_or(String::new(), |l| format!(", {}s left", l.as_secs()))
        ));
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{} seeds in {elapsed:.1} s ({:.0} seeds/s), {} failure groups",
        state.seeds_run,
        state.seeds_run as f64 / elapsed.max(1e-9),
        state.failures.len()
    );
    for (group, seeds) in &state.failures {
        println!(
            "  {group}: {} seeds, e.g. {:?}",
            seeds.len(),
            &seeds[..seeds.len().min(5)]
        );
    }
    let report = serde_json::json!({
        "seeds_run": state.seeds_run,
        "elapsed_s": elapsed,
        "failures": state.failures,
    });
    let _ = artifact::write_atomic(&args.out.join("report.json"), &report);
    let mut junit = format!(
        "<?xml version=\"1.0\"?>\n<testsuite name=\"shopsim-fuzz\" tests=\"{}\" failures=\"{}\">\n",
        state.seeds_run,
        state.failures.values().map(Vec::len).sum::<usize>()
    );
    for (group, seeds) in &state.failures {
        for seed in seeds {
            junit.push_str(&format!(
                "  <testcase name=\"{group} seed={seed}\"><failure message=\"{group}\"/></testcase>\n"
            ));
        }
    }
    junit.push_str("</testsuite>\n");
    let _ = std::fs::write(args.out.join("junit.xml"), junit);
    if stop.load(Ordering::SeqCst) {
        println!("stopped; continue with --resume");
        // Interrupted is its own outcome, whatever was found before the signal.
        return crate::EXIT_INTERRUPTED;
    }
    exit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_disjoint_and_indexes_checked() {
        let a: Vec<u64> = (0..100).map(|i| seed_of(i, (1, 2)).unwrap()).collect();
        let b: Vec<u64> = (0..100).map(|i| seed_of(i, (2, 2)).unwrap()).collect();
        assert!(a.iter().all(|s| !b.contains(s)));
        assert_eq!(seed_of(u64::MAX / 2, (1, 4)), None);
        let (k, n) = crate::input::parse_shard("10000/10000").unwrap();
        assert!(seed_of(STATE_COUNTER_MAX + 1_000_000, (k, n)).is_some());
    }

    /// Before: a forged `next_index` or `seeds_run` near 2^64 overflowed the campaign's
    /// arithmetic.
    #[test]
    fn forged_state_counters_are_refused() {
        let forged = r#"{"next_index": 18446744073709551615, "seeds_run": 0, "failures": {}, "identity": ""}"#;
        assert!(parse_state(forged).unwrap_err().starts_with("next_index: "));
        let wrong_type = r#"{"next_index": -1, "seeds_run": 0, "failures": {}, "identity": ""}"#;
        assert!(parse_state(wrong_type)
            .unwrap_err()
            .starts_with("next_index: "));
        let ok = r#"{"next_index": 5, "seeds_run": 5, "failures": {"a b": [1]}, "identity": "x"}"#;
        assert!(parse_state(ok).is_ok());
    }
}
