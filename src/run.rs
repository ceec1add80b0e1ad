//! `shopsim run`: runs scenarios on seeds and prints a summary table.

use std::path::PathBuf;

use shopsim_scenarios::Scenario;
use shopsim_sim::check::{percentile, LatencySla};
use shopsim_sim::coverage::{CoverageReport, Window};
use shopsim_sim::db::Profile;
use shopsim_sim::runner::SimConfig;
use shopsim_sim::seed::{parse_seed, SeedPlan};

use crate::{EXIT_BAD_INPUT, EXIT_OK};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Built-in scenarios to run (see `shopsim list`).
    scenarios: Vec<String>,
    /// Run every built-in scenario.
    #[arg(long)]
    all: bool,
    /// A scenario file outside the registry (repeatable).
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// Run exactly this seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<String>,
    /// How many seeds per scenario and profile (default: 8).
    #[arg(long)]
    seeds: Option<String>,
    /// First seed (with --seeds).
    #[arg(long, default_value = "0")]
    seed_start: String,
    /// Only this database profile (default: each profile the scenario names).
    #[arg(long)]
    profile: Option<String>,
    /// Turn on a planted bug (repeatable), to see the checks at work.
    #[arg(long = "bug", value_name = "NAME")]
    bugs: Vec<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Steer each seed's schedule with a steering plan drawn from the seed (as swarm mode
    /// draws it, always on); faults stay the scenario's own.
    #[arg(long)]
    steering: bool,
}

/// The configuration of `seed`: the scenario's, with a steering plan drawn from the seed when
/// `steering` is on (the plan `fuzz` would draw for it, turned on).
pub fn config_for(base: &SimConfig, seed: u64, steering: bool) -> SimConfig {
    if !steering {
        return base.clone();
    }
    SimConfig {
        steering: shopsim_sim::swarm::draw_steering(seed),
        ..base.clone()
    }
}

/// `text` (a failure report) with `flag` added to its "reproduce with" command.
pub fn with_replay_flag(text: &str, flag: &str) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with("note: reproduce with:") {
                format!("{line} {flag}")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The race windows declared by the systems of `runs`, in declaration order.
pub fn declared_windows(runs: &[(Scenario, Profile)]) -> Vec<Window> {
    let mut declared: Vec<Window> = Vec::new();
    for (scenario, profile) in runs {
        if let Ok(system) = scenario.system(*profile, &[]) {
            for w in shopsim_sim::runner::System::windows(&system) {
                if !declared.contains(w) {
                    declared.push(*w);
                }
            }
        }
    }
    declared
}

/// The race windows declared by the systems of `runs` that `coverage` never hit.
pub fn windows_never_hit(runs: &[(Scenario, Profile)], coverage: &CoverageReport) -> Vec<String> {
    coverage
        .never_hit(&declared_windows(runs))
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// Resolves scenario names, files and flags into (scenario, profile) pairs; errors name the
/// flag and the value.
pub fn resolve(
    names: &[String],
    all: bool,
    files: &[PathBuf],
    profile: Option<&str>,
) -> Result<Vec<(Scenario, Profile)>, String> {
    let mut scenarios = Vec::new();
    if all {
        scenarios.extend(shopsim_scenarios::builtin());
    }
    let mut named_profile = None;
    for name in names {
        scenarios.push(shopsim_scenarios::find(name).map_err(|e| format!("SCENARIO: {e}"))?);
        // `payment-race@pg_rc`, as failure reports name a run, selects that profile.
        if let Some((_, p)) = name.split_once('@') {
            named_profile = Some(p.to_string());
        }
    }
    let profile = profile.or(named_profile.as_deref());
    for path in files {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("--file {}: {e}", path.display()))?;
        scenarios.push(
            Scenario::from_toml(&text).map_err(|e| format!("--file {}: {e}", path.display()))?,
        );
    }
    if scenarios.is_empty() {
        return Err(
            "no scenario: name one (see `shopsim list`), or pass --all or --file".to_string(),
        );
    }
    let only = match profile {
        None => None,
        Some(p) => Some(
            p.parse::<Profile>()
                .map_err(|e| format!("--profile: {e}"))?,
        ),
    };
    let mut runs = Vec::new();
    for s in scenarios {
        for p in s.profile_list() {
            if only.is_none_or(|o| o == p) {
                runs.push((s.clone(), p));
            }
        }
        if let Some(o) = only {
            if !s.profile_list().contains(&o) {
                runs.push((s.clone(), o));
            }
        }
    }
    Ok(runs)
}

/// The seeds from `--seed` / `--seeds` / `--seed-start`.
pub fn seeds(
    seed: Option<&str>,
    count: Option<&str>,
    start: &str,
    default_count: u64,
) -> Result<Vec<u64>, String> {
    let plan = SeedPlan::from_vars(seed, count, Some(start), default_count).map_err(|e| {
        let flag = match e.field.as_str() {
            "SHOPSIM_SEED" => "--seed",
            "SHOPSIM_SEEDS" => "--seeds",
            _ => "--seed-start",
        };
        format!("{flag}: {}, got `{}`", e.expected, e.value)
    })?;
    let _ = parse_seed;
    Ok(plan.seeds().collect())
}

/// The latency class of these operation kinds.
fn latency_class(kinds: &[&str]) -> LatencySla {
    LatencySla {
        name: String::new(),
        kinds: kinds.iter().map(|s| s.to_string()).collect(),
        percentile: 95.0,
        threshold_ms: 0.0,
    }
}

pub fn run(args: Args) -> u8 {
    let runs = match resolve(
        &args.scenarios,
        args.all,
        &args.files,
        args.profile.as_deref(),
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let seeds = match seeds(
        args.seed.as_deref(),
        args.seeds.as_deref(),
        &args.seed_start,
        8,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let jobs = match args.jobs {
        Some(0) => {
            eprintln!("error: --jobs: must be at least 1, got `0`");
            return EXIT_BAD_INPUT;
        }
        Some(j) => j,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    // Check every bug name before any work starts.
    for (scenario, profile) in &runs {
        if let Err(e) = scenario.system(*profile, &args.bugs) {
            eprintln!("error: --bug: {e}");
            return EXIT_BAD_INPUT;
        }
    }
    shopsim_sim::trace::init_from_env();
    println!(
        "{:<34} {:>6} {:>9} {:>14} {:>12} {:>11} {:>13}",
        "scenario", "seeds", "failures", "p95 checkout", "p95 reads", "cache hits", "virtual time"
    );
    let mut exit = EXIT_OK;
    let mut failures = Vec::new();
    let mut coverage_all = CoverageReport::default();
    for (scenario, profile) in &runs {
        let system = scenario
            .system(*profile, &args.bugs)
            .expect("checked above");
        let config = scenario.sim_config();
        // Streamed: only the figures and the failures are kept, so any number of seeds fits.
        let mut seen = 0usize;
        let mut failed = 0usize;
        let mut virtual_s = 0.0f64;
        let (mut checkout, mut reads) = (Vec::new(), Vec::new());
        let (mut hits, mut cache_reads) = (0u64, 0u64);
        let mut coverage = shopsim_sim::coverage::CoverageReport::default();
        let checkout_sla = latency_class(&shopsim_model::shop::CHECKOUT_KINDS);
        let read_sla = latency_class(&shopsim_model::shop::READ_KINDS);
        shopsim_sim::fuzz::for_each_seed(
            || system.clone(),
            &seeds,
            |seed| config_for(&config, seed, args.steering),
            jobs,
            |o| {
                seen += 1;
                virtual_s += o.virtual_elapsed.as_secs_f64();
                checkout.extend(checkout_sla.latencies_us(&o.history));
                reads.extend(read_sla.latencies_us(&o.history));
                for op in &o.history.ops {
                    match op.details["response"]["body"]["cache"].as_str() {
                        Some("hit") => (hits, cache_reads) = (hits + 1, cache_reads + 1),
                        Some(_) => cache_reads += 1,
                        None => {}
                    }
                }
                coverage.merge(&o.coverage);
                if !o.passed() {
                    failed += 1;
                    exit = exit.max(o.exit_code());
                    let text = crate::failure_text(&o, &args.bugs);
                    failures.push(if args.steering {
                        with_replay_flag(&text, "--steering")
                    } else {
                        text
                    });
                }
                true
            },
        );
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |ms| format!("{ms:.1} ms"));
        let p95 = |mut l: Vec<u64>| {
            l.sort_unstable();
            percentile(&l, 95.0).map(|us| us as f64 / 1000.0)
        };
        let hit_rate = if cache_reads == 0 {
            "-".to_string()
        } else {
            format!("{:.0}%", 100.0 * hits as f64 / cache_reads as f64)
        };
        println!(
            "{:<34} {:>6} {:>9} {:>14} {:>12} {:>11} {:>11.1} s",
            system.name,
            seen,
            failed,
            fmt(p95(checkout)),
            fmt(p95(reads)),
            hit_rate,
            virtual_s
        );
        coverage_all.merge(&coverage);
    }
    // Race windows (`sometimes!`), all declared up front, that no seed of this run reached:
    // these scenarios do not test those races.
    let declared = declared_windows(&runs);
    let never = windows_never_hit(&runs, &coverage_all);
    println!(
        "race windows reached: {} of {} (times reached, window)",
        declared.len().saturating_sub(never.len()),
        declared.len()
    );
    for window in &declared {
        let hits = coverage_all
            .sometimes
            .get(window.name())
            .map_or(0, |(hits, _)| *hits);
        if hits > 0 {
            println!("  {hits:>8}  {}", window.name());
        }
    }
    for window in &never {
        println!("  never reached: sometimes!(\"{window}\")");
    }
    for f in &failures {
        println!("\n{f}");
    }
    exit
}
