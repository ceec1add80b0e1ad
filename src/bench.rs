//! `shopsim bench`: seeds per second and virtual/wall time per scenario on one thread, peak
//! memory, and the speed-up from 1 to N threads.

use std::time::Instant;

use crate::{EXIT_BAD_INPUT, EXIT_OK};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenarios (default: every built-in one, unless --file is given).
    scenarios: Vec<String>,
    /// A scenario file outside the registry (repeatable).
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<std::path::PathBuf>,
    /// Seeds per scenario (at least 1; up to 2^64 - 1, run lazily).
    #[arg(long, default_value = "40")]
    seeds: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also measure, per planted bug and profile, the median number of seeds to its first
    /// detection (from each of 40 starting seeds).
    #[arg(long)]
    detection: bool,
}

/// Median and worst number of seeds to the first seed at or after each start that fails
/// `check`, over starts 0..40, searching seeds 0..80.
fn detection(
    scenario: &str,
    bug: &str,
    check: &str,
    profile: shopsim_sim::db::Profile,
) -> (f64, u64, usize) {
    let scenario = shopsim_scenarios::find(scenario).expect("built in");
    let system = scenario
        .system(profile, &[bug.to_string()])
        .expect("valid bug");
    let config = scenario.sim_config();
    let seeds = shopsim_sim::seed::SeedPlan {
        start: 0,
        count: 80,
    };
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut failing: Vec<u64> = Vec::new();
    shopsim_sim::fuzz::for_each_seed(
        || system.clone(),
        &seeds,
        |_| config.clone(),
        jobs,
        |o| {
            let fails = o
                .reports
                .iter()
                .any(|r| r.check == check && r.verdict == shopsim_sim::check::Verdict::Invalid);
            if fails {
                failing.push(o.seed);
            }
            true
        },
    );
    failing.sort_unstable();
    let mut distances: Vec<u64> = (0..40u64)
        .filter_map(|start| failing.iter().find(|&&f| f >= start).map(|f| f - start + 1))
        .collect();
    distances.sort_unstable();
    let median = if distances.is_empty() {
        f64::NAN
    } else if distances.len() % 2 == 1 {
        distances[distances.len() / 2] as f64
    } else {
        (distances[distances.len() / 2 - 1] + distances[distances.len() / 2]) as f64 / 2.0
    };
    (
        median,
        distances.last().copied().unwrap_or(0),
        failing.len(),
    )
}

/// Peak resident memory of this process in KiB (Linux), if known.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident memory of this process while it runs one simulation of `seed`, in KiB
/// (Linux: the peak is reset through `/proc/self/clear_refs` first), if known. It includes
/// the process's own baseline (binary, allocator), so it bounds the simulation's memory.
fn peak_rss_one_seed_kib(
    system: &shopsim_model::shop::Shop,
    config: &shopsim_sim::runner::SimConfig,
    seed: u64,
) -> Option<u64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    let outcome = shopsim_sim::runner::run(system, seed, config);
    let peak = peak_rss_kib();
    drop(outcome);
    peak
}

/// Checks every flag and file without running anything: the scenarios benched (each once,
/// under its first profile).
pub fn check_args(args: &Args) -> Result<Vec<crate::run::Selected>, String> {
    if args.seeds == 0 {
        return Err("--seeds: must be at least 1, got `0`".to_string());
    }
    let selected = crate::run::resolve(
        &args.scenarios,
        args.scenarios.is_empty() && args.files.is_empty(),
        &args.files,
        None,
    )?;
    let mut benched: Vec<crate::run::Selected> = Vec::new();
    for s in selected {
        s.system(&[]).map_err(|e| e.to_string())?;
        if !benched.iter().any(|b| b.scenario == s.scenario) {
            benched.push(s);
        }
    }
    Ok(benched)
}

pub fn run(args: Args) -> u8 {
    let benched = match check_args(&args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    // A range, run lazily: any count is accepted without building a list.
    let seeds = shopsim_sim::seed::SeedPlan {
        start: 0,
        count: args.seeds,
    };
    let mut rows = Vec::new();
    let bar = crate::progress::Bar::new(
        (benched.len() as u64 + 2).saturating_mul(args.seeds),
        "bench",
        "seeds",
    );
    for selected in &benched {
        let system = selected.system(&[]).expect("checked above");
        let config = selected.scenario.sim_config();
        // Outcomes are consumed as they come, as `run` does: keeping them would measure
        // the growth of this process's heap, not the simulation.
        let mut virtual_s = 0.0;
        let started = Instant::now();
        shopsim_sim::fuzz::for_each_seed(
            || system.clone(),
            &seeds,
            |_| config.clone(),
            1,
            |o| {
                bar.inc();
                virtual_s += o.virtual_elapsed.as_secs_f64();
                true
            },
        );
        let wall = started.elapsed().as_secs_f64();
        let peak_kib = peak_rss_one_seed_kib(&system, &config, seeds.start);
        rows.push(serde_json::json!({
            "scenario": system.name,
            "seeds": seeds.count,
            "seeds_per_s": seeds.count as f64 / wall,
            "virtual_per_wall": virtual_s / wall,
            "wall_ms_per_seed": wall * 1000.0 / seeds.count as f64,
            "peak_rss_mib_one_seed": peak_kib.map(|k| k as f64 / 1024.0),
        }));
    }
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The speed-up of checkout-concurrency, or of the first scenario named.
    let speed_of = benched
        .iter()
        .find(|s| s.scenario.name == "checkout-concurrency")
        .unwrap_or(&benched[0]);
    let system = speed_of.system(&[]).expect("checked above");
    let config = speed_of.scenario.sim_config();
    let speed = |j: usize| {
        let started = Instant::now();
        shopsim_sim::fuzz::for_each_seed(
            || system.clone(),
            &seeds,
            |_| config.clone(),
            j,
            |_| {
                bar.inc();
                true
            },
        );
        seeds.count as f64 / started.elapsed().as_secs_f64()
    };
    let one = speed(1);
    let many = speed(jobs);
    bar.finish();
    let mut detections = Vec::new();
    if args.detection {
        for (scenario, bug, check) in shopsim_scenarios::PLANTED_BUGS {
            for profile in shopsim_scenarios::find(scenario)
                .expect("built in")
                .profile_list()
            {
                let (median, worst, failing) = detection(scenario, bug, check, profile);
                detections.push(serde_json::json!({
                    "bug": bug, "scenario": format!("{scenario}@{profile}"), "check": check,
                    "median_seeds_to_detection": median, "worst": worst, "failing_of_80": failing,
                }));
            }
        }
    }
    let report = serde_json::json!({
        "detection": detections,
        "scenarios": rows,
        "speedup": { "scenario": system.name, "jobs": jobs, "seeds_per_s_1": one, "seeds_per_s_n": many, "speedup": many / one },
        "peak_rss_mib": peak_rss_kib().map(|k| k as f64 / 1024.0),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
        return EXIT_OK;
    }
    println!(
        "{:<34} {:>10} {:>14} {:>14} {:>16}",
        "scenario (1 thread)", "seeds/s", "virtual/wall", "ms per seed", "peak MiB (1 run)"
    );
    for r in &rows {
        let peak = r["peak_rss_mib_one_seed"]
            .as_f64()
            .map_or("-".to_string(), |m| format!("{m:.1}"));
        println!(
            "{:<34} {:>10.1} {:>13.0}x {:>14.2} {:>16}",
            r["scenario"].as_str().unwrap_or(""),
            r["seeds_per_s"].as_f64().unwrap_or(0.0),
            r["virtual_per_wall"].as_f64().unwrap_or(0.0),
            r["wall_ms_per_seed"].as_f64().unwrap_or(0.0),
            peak
        );
    }
    println!(
        "{}: {one:.1} seeds/s on 1 thread, {many:.1} on {jobs} ({:.2}x)",
        system.name,
        many / one
    );
    for d in &detections {
        println!(
            "{:<34} {:<30} median seeds to detection {} (worst {}, {} of 80 seeds fail {})",
            d["bug"].as_str().unwrap_or(""),
            d["scenario"].as_str().unwrap_or(""),
            d["median_seeds_to_detection"],
            d["worst"],
            d["failing_of_80"],
            d["check"].as_str().unwrap_or("")
        );
    }
    if let Some(kib) = peak_rss_kib() {
        println!(
            "peak memory of this process: {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
    EXIT_OK
}
