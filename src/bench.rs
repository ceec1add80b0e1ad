//! `shopsim bench`: seeds per second and virtual/wall time per scenario on one thread, peak
//! memory, and the speed-up from 1 to N threads.

use std::time::Instant;

use crate::reproduce::Draw;
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
    /// Also measure, per planted bug and profile, in its low-contention variant and in its
    /// built-in scenario, the seeds and wall time to its first detection (median and worst
    /// over 40 starting seeds), with steering off and on side by side.
    #[arg(long)]
    detection: bool,
    /// Only the scaling series: one checkout shape at growing size (shoppers 10 to 10,000,
    /// tenants 1 to 100, virtual duration 10 s to 600 s), wall time per request and peak
    /// memory of one run per size, one seed per size on one thread.
    #[arg(long, conflicts_with_all = ["scenarios", "files", "detection"])]
    scaling: bool,
}

/// How fast a planted bug is found from one configuration: seeds (and wall time) from each
/// of [`DETECTION_STARTS`] starting seeds to the first seed at or after it that fails the
/// bug's check, searching seeds `0..DETECTION_SEEDS`.
#[derive(Debug, Clone, Copy)]
struct Detection {
    /// Median seeds to the first detection, counting the failing seed (NaN: never found).
    median: f64,
    /// The most seeds any start needed (0: never found).
    worst: u64,
    /// Median wall time from a start to its first detection, ms (NaN: never found).
    wall_ms_median: f64,
    /// Seeds of `0..DETECTION_SEEDS` run (the search stops once every start has a detection).
    seeds_run: u64,
    /// How many of the seeds run failed the check.
    failing: usize,
}

/// Starting seeds of the detection measurement.
const DETECTION_STARTS: u64 = 40;
/// Seeds the detection measurement searches.
const DETECTION_SEEDS: u64 = 80;

/// The median of sorted values (NaN for none).
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Measures [`Detection`] of `bug` by `check` in `scenario`@`profile`, with each seed's
/// steering plan drawn from it (`steering`) or without steering. Runs one seed at a time on
/// this thread, so that each seed's wall time is its own.
fn detection(
    scenario: &shopsim_scenarios::Scenario,
    bug: &str,
    check: &str,
    profile: shopsim_sim::db::Profile,
    steering: bool,
) -> Detection {
    let system = scenario
        .system(profile, &[bug.to_string()])
        .expect("valid bug");
    let base = scenario.sim_config();
    // (seed, failed, wall ms), in seed order.
    let mut runs: Vec<(u64, bool, f64)> = Vec::new();
    for seed in 0..DETECTION_SEEDS {
        let draw = if steering {
            Draw::Steering
        } else {
            Draw::Scenario
        };
        let config = draw.config(&base, seed);
        let started = Instant::now();
        let outcome = shopsim_sim::runner::run(&system, seed, &config);
        let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
        let failed = outcome
            .reports
            .iter()
            .any(|r| r.check == check && r.verdict == shopsim_sim::check::Verdict::Invalid);
        runs.push((seed, failed, wall_ms));
        // Every start has its detection once a seed at or after the last start failed.
        if failed && seed + 1 >= DETECTION_STARTS {
            break;
        }
    }
    let mut seeds_to = Vec::new();
    let mut walls = Vec::new();
    for start in 0..DETECTION_STARTS {
        let Some(first) = runs.iter().position(|&(s, f, _)| s >= start && f) else {
            continue;
        };
        let from = runs.iter().position(|&(s, _, _)| s == start).expect("run");
        seeds_to.push((runs[first].0 - start + 1) as f64);
        walls.push(runs[from..=first].iter().map(|r| r.2).sum::<f64>());
    }
    seeds_to.sort_by(f64::total_cmp);
    walls.sort_by(f64::total_cmp);
    Detection {
        median: median(&seeds_to),
        worst: seeds_to.last().map_or(0, |w| *w as u64),
        wall_ms_median: median(&walls),
        seeds_run: runs.len() as u64,
        failing: runs.iter().filter(|r| r.1).count(),
    }
}

/// The detection rows: every planted bug in its low-contention variant and in its crowded
/// built-in scenario, under each profile, with steering off and on side by side.
fn detections() -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    let variants = shopsim_scenarios::LOW_CONTENTION_BUGS
        .iter()
        .map(|row| ("low contention", *row));
    let crowded = shopsim_scenarios::PLANTED_BUGS
        .iter()
        .map(|row| ("built-in", *row));
    for (kind, (name, bug, check)) in variants.chain(crowded) {
        let scenario = shopsim_scenarios::find(name).expect("built in");
        for profile in scenario.profile_list() {
            let off = detection(&scenario, bug, check, profile, false);
            let on = detection(&scenario, bug, check, profile, true);
            let side = |d: Detection| {
                serde_json::json!({
                    "median_seeds_to_detection": d.median,
                    "worst_seeds_to_detection": d.worst,
                    "median_wall_ms_to_detection": d.wall_ms_median,
                    "seeds_run": d.seeds_run,
                    "failing": d.failing,
                })
            };
            rows.push(serde_json::json!({
                "bug": bug, "scenario": format!("{name}@{profile}"), "kind": kind,
                "check": check, "steering_off": side(off), "steering_on": side(on),
            }));
        }
    }
    rows
}

/// One side of a detection row: `median 2 (worst 7) 5.1 ms`, or `not found`.
fn detection_text(side: &serde_json::Value) -> String {
    let median = side["median_seeds_to_detection"]
        .as_f64()
        .unwrap_or(f64::NAN);
    if median.is_nan() {
        return format!("not found in {} seeds", side["seeds_run"]);
    }
    format!(
        "{median:>4} (worst {:>2}) {:>8.1} ms",
        side["worst_seeds_to_detection"],
        side["median_wall_ms_to_detection"].as_f64().unwrap_or(0.0)
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
    peak_rss_of_kib(&|| drop(shopsim_sim::runner::run(system, seed, config)))
}

/// Peak resident memory of this process while `run` runs, in KiB (Linux: the peak is reset
/// through `/proc/self/clear_refs` first, after the allocator returned the memory it kept),
/// if known.
fn peak_rss_of_kib(run: &dyn Fn()) -> Option<u64> {
    // Memory kept mapped from earlier runs would count as this run's.
    crate::allocator_release_memory();
    let cleared = std::fs::write("/proc/self/clear_refs", "5");
    run();
    let peak = peak_rss_kib();
    crate::allocator_keep_memory_again();
    cleared.ok()?;
    peak
}

/// `bench --scaling`: the series of [`crate::scaling`], one seed per size.
fn scaling(json: bool) -> u8 {
    let bar = crate::progress::Bar::new(crate::scaling::SIZES.len() as u64, "scaling", "sizes");
    let mut points = Vec::new();
    for size in crate::scaling::SIZES {
        points.push(crate::scaling::measure(size, 1, peak_rss_of_kib));
        bar.inc();
    }
    bar.finish();
    if json {
        let report = serde_json::json!({ "scaling": crate::scaling::json(&points) });
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        print!("{}", crate::scaling::table(&points));
    }
    EXIT_OK
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
    if args.scaling {
        return scaling(args.json);
    }
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
    // Each scenario's peak of one run is measured first, on this thread: memory that the
    // throughput runs leave in their worker threads' heaps (abandoned when a thread ends,
    // not returned by a collection here) would count as the measured run's.
    let peaks_kib: Vec<Option<u64>> = benched
        .iter()
        .map(|selected| {
            let system = selected.system(&[]).expect("checked above");
            peak_rss_one_seed_kib(&system, &selected.scenario.sim_config(), seeds.start)
        })
        .collect();
    assert_eq!(peaks_kib.len(), benched.len());
    for (selected, peak_kib) in benched.iter().zip(peaks_kib) {
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
    let detections = if args.detection {
        detections()
    } else {
        Vec::new()
    };
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
    if !detections.is_empty() {
        println!(
            "\nseeds to the first detection (median over {DETECTION_STARTS} starting seeds, worst) and its median wall time"
        );
        println!(
            "{:<34} {:<32} {:<28} {:<28}",
            "bug", "scenario", "steering off", "steering on"
        );
    }
    for d in &detections {
        println!(
            "{:<34} {:<32} {:<28} {:<28}",
            d["bug"].as_str().unwrap_or(""),
            d["scenario"].as_str().unwrap_or(""),
            detection_text(&d["steering_off"]),
            detection_text(&d["steering_on"]),
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
