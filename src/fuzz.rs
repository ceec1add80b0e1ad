//! `shopsim fuzz`: fresh seeds in swarm mode on N threads until a duration or seed count is
//! reached. Each failure is re-run once to confirm it reproduces, then written as an artifact;
//! failures are grouped by scenario and check. The campaign's progress is saved after every
//! batch, so Ctrl-C (or a kill) loses nothing and `--resume` continues where it stopped.
//! `--shard K/N` makes N machines cover disjoint seeds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
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
    /// Keep each scenario's own fault plan and steering instead of swarm draws.
    #[arg(long)]
    no_swarm: bool,
    /// Swarm-draw faults only: keep each scenario's own steering (off unless its file turns it
    /// on) instead of drawing it per seed.
    #[arg(long)]
    no_steering: bool,
}

/// Parses `90s`, `10m`, `8h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().map_err(|_| {
        format!("--duration: expected a number and a unit (s, m, h, d), got `{text}`")
    })?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "--duration: unknown unit in `{text}` (use s, m, h or d)"
            ))
        }
    };
    if seconds == 0 {
        return Err(format!("--duration: must be longer than 0, got `{text}`"));
    }
    Ok(Duration::from_secs(seconds))
}

/// Parses `K/N`.
pub fn parse_shard(text: &str) -> Result<(u64, u64), String> {
    let err = || format!("--shard: expected K/N with 1 <= K <= N, got `{text}`");
    let (k, n) = text.split_once('/').ok_or_else(err)?;
    let (k, n): (u64, u64) = (k.parse().map_err(|_| err())?, n.parse().map_err(|_| err())?);
    if k == 0 || n == 0 || k > n {
        return Err(err());
    }
    Ok((k, n))
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

/// The seed of campaign index `i` on shard `k` of `n`: disjoint across shards.
fn seed_of(i: u64, shard: (u64, u64)) -> u64 {
    let index = i * shard.1 + (shard.0 - 1);
    // SplitMix64, so consecutive indexes give unrelated seeds.
    let mut z = index.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn run(args: Args) -> u8 {
    let setup = (|| -> Result<_, String> {
        if args.duration.is_none() && args.seeds.is_none() {
            return Err("give --duration or --seeds".to_string());
        }
        let limit = args.duration.as_deref().map(parse_duration).transpose()?;
        if args.seeds == Some(0) {
            return Err("--seeds: must be at least 1, got `0`".to_string());
        }
        let shard = args
            .shard
            .as_deref()
            .map(parse_shard)
            .transpose()?
            .unwrap_or((1, 1));
        let jobs = match args.jobs {
            Some(0) => return Err("--jobs: must be at least 1, got `0`".to_string()),
            Some(j) => j,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
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
        "{:?} {:?} {:?} {:?} swarm={} steering={}",
        args.scenarios, args.profile, args.bugs, args.shard, !args.no_swarm, !args.no_steering
    );
    let state_path = args.out.join("state.json");
    let mut state = if args.resume {
        match std::fs::read_to_string(&state_path)
            .ok()
            .and_then(|t| serde_json::from_str::<State>(&t).ok())
        {
            Some(s) if s.identity == identity => s,
            Some(_) => {
                eprintln!(
                    "error: --resume: {} holds a different campaign",
                    state_path.display()
                );
                return EXIT_BAD_INPUT;
            }
            None => {
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
    let target = args.seeds.map(|s| state.seeds_run + s);
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
    // The race windows this session reached (not kept across --resume).
    let mut coverage = shopsim_sim::coverage::CoverageReport::default();
    loop {
        if stop.load(Ordering::SeqCst) || limit.is_some_and(|l| started.elapsed() >= l) {
            break;
        }
        let remaining = target.map_or(batch, |t| t.saturating_sub(state.seeds_run).min(batch));
        if remaining == 0 {
            break;
        }
        let indexes: Vec<u64> = (state.next_index..state.next_index + remaining).collect();
        // Each index picks its (scenario, profile) round robin and a fresh seed.
        let work: Vec<(usize, u64)> = indexes
            .iter()
            .map(|&i| ((i % runs.len() as u64) as usize, seed_of(i, shard)))
            .collect();
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
            let (swarm, steering) = (!args.no_swarm, !args.no_steering);
            let config_of = move |seed: u64| -> SimConfig {
                if !swarm {
                    return base.clone();
                }
                let mut config = shopsim_sim::swarm::config(seed, &base, false);
                if !steering {
                    config.steering = base.steering.clone();
                }
                config
            };
            let outcomes =
                shopsim_sim::fuzz::run_seeds(|| system.clone(), &seeds, &config_of, jobs, |_| true);
            for o in &outcomes {
                coverage.merge(&o.coverage);
            }
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
    let never_hit = crate::run::windows_never_hit(&runs, &coverage);
    for window in &never_hit {
        println!("  never reached: sometimes!(\"{window}\")");
    }
    let report = serde_json::json!({
        "windows_never_reached": never_hit,
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
    }
    exit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_shards() {
        assert_eq!(parse_duration("8h").unwrap(), Duration::from_secs(28_800));
        assert!(parse_duration("8x").unwrap_err().contains("`8x`"));
        assert_eq!(parse_shard("2/3").unwrap(), (2, 3));
        assert!(parse_shard("3/2").unwrap_err().contains("`3/2`"));
        let a: Vec<u64> = (0..100).map(|i| seed_of(i, (1, 2))).collect();
        let b: Vec<u64> = (0..100).map(|i| seed_of(i, (2, 2))).collect();
        assert!(a.iter().all(|s| !b.contains(s)));
    }
}
