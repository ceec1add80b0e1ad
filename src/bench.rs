//! `shopsim bench`: seeds per second and virtual/wall time per scenario on one thread, peak
//! memory, and the speed-up from 1 to N threads.

use std::time::Instant;

use crate::{EXIT_BAD_INPUT, EXIT_OK};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seeds per scenario.
    #[arg(long, default_value = "40")]
    seeds: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Peak resident memory of this process in KiB (Linux), if known.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn run(args: Args) -> u8 {
    if args.seeds == 0 {
        eprintln!("error: --seeds: must be at least 1, got `0`");
        return EXIT_BAD_INPUT;
    }
    let seeds: Vec<u64> = (0..args.seeds).collect();
    let mut rows = Vec::new();
    for scenario in shopsim_scenarios::builtin() {
        let profile = scenario.profile_list()[0];
        let system = scenario.system(profile, &[]).expect("valid");
        let config = scenario.sim_config();
        let started = Instant::now();
        let outcomes = shopsim_sim::fuzz::run_seeds(
            || system.clone(),
            &seeds,
            |_| config.clone(),
            1,
            |_| true,
        );
        let wall = started.elapsed().as_secs_f64();
        let virtual_s: f64 = outcomes
            .iter()
            .map(|o| o.virtual_elapsed.as_secs_f64())
            .sum();
        rows.push(serde_json::json!({
            "scenario": system.name,
            "seeds": seeds.len(),
            "seeds_per_s": seeds.len() as f64 / wall,
            "virtual_per_wall": virtual_s / wall,
            "wall_ms_per_seed": wall * 1000.0 / seeds.len() as f64,
        }));
    }
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let scenario = shopsim_scenarios::find("checkout-concurrency").expect("built in");
    let system = scenario
        .system(scenario.profile_list()[0], &[])
        .expect("valid");
    let config = scenario.sim_config();
    let speed = |j: usize| {
        let started = Instant::now();
        shopsim_sim::fuzz::run_seeds(|| system.clone(), &seeds, |_| config.clone(), j, |_| true);
        seeds.len() as f64 / started.elapsed().as_secs_f64()
    };
    let one = speed(1);
    let many = speed(jobs);
    let report = serde_json::json!({
        "scenarios": rows,
        "speedup": { "jobs": jobs, "seeds_per_s_1": one, "seeds_per_s_n": many, "speedup": many / one },
        "peak_rss_mib": peak_rss_kib().map(|k| k as f64 / 1024.0),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
        return EXIT_OK;
    }
    println!(
        "{:<34} {:>10} {:>14} {:>14}",
        "scenario (1 thread)", "seeds/s", "virtual/wall", "ms per seed"
    );
    for r in &rows {
        println!(
            "{:<34} {:>10.1} {:>13.0}x {:>14.2}",
            r["scenario"].as_str().unwrap_or(""),
            r["seeds_per_s"].as_f64().unwrap_or(0.0),
            r["virtual_per_wall"].as_f64().unwrap_or(0.0),
            r["wall_ms_per_seed"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "checkout-concurrency: {one:.1} seeds/s on 1 thread, {many:.1} on {jobs} ({:.2}x)",
        many / one
    );
    if let Some(kib) = peak_rss_kib() {
        println!(
            "peak memory of this process: {:.1} MiB",
            kib as f64 / 1024.0
        );
    }
    EXIT_OK
}
