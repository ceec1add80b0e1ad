//! `shopsim crosscheck`: the simulated database against real PostgreSQL 15 and MariaDB 10.11,
//! from three sources: conformance files (`--measure` writes the real outcomes), transcripts of
//! simulated runs (`--scenario`), and random transaction groups (`--random`).

use std::path::{Path, PathBuf};

use shopsim_crosscheck::campaign::{self, Finding, Summary};
use shopsim_crosscheck::files;
use shopsim_crosscheck::server::{EngineKind, RealServer};
use shopsim_crosscheck::{Engines, RunError};
use shopsim_scenarios::Scenario;
use shopsim_sim::db::conformance::ScriptFile;
use shopsim_sim::db::server::transcript::record_transcripts;
use shopsim_sim::db::Profile;

use crate::{EXIT_BAD_INPUT, EXIT_OK, EXIT_VIOLATION};

/// The most seeds `--random` or `--seeds` accepts: each one is a run on a real server (a few
/// milliseconds at best), so this is years of work, and no seed range can pass 2^64 - 1.
pub const SEEDS_MAX: u64 = 1_000_000_000;
/// The largest `--shrink-budget`: candidate runs for one divergence.
pub const SHRINK_BUDGET_MAX: usize = 1_000_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A conformance file (the format of sim/conformance/hermitage.toml).
    file: Option<PathBuf>,
    /// With FILE: write the real engines' outcomes of FILE's scripts to this file.
    #[arg(long, value_name = "OUT.toml")]
    measure: Option<PathBuf>,
    /// Replay transcripts of simulated runs of this scenario (repeatable; `all` for every
    /// built-in scenario).
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Random transaction groups: how many seeds (1..=1000000000).
    #[arg(long, value_name = "K")]
    random: Option<u64>,
    /// Transcripts: seeds per scenario and profile (default 8; 1..=1000000000).
    #[arg(long, value_name = "K")]
    seeds: Option<u64>,
    /// The first seed (default 0).
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed_start: u64,
    /// Only these profiles (repeatable). Default: a file's measured profiles, a scenario's
    /// profiles, and every profile for random groups.
    #[arg(long = "profile", value_name = "P")]
    profiles: Vec<String>,
    /// Where shrunk divergences are written as conformance scripts.
    #[arg(long, value_name = "DIR", default_value = "target/shopsim/crosscheck")]
    findings: PathBuf,
    /// How many candidate runs shrinking one divergence may try (0: do not shrink; at most
    /// 1000000).
    #[arg(long, value_name = "N", default_value_t = 200)]
    shrink_budget: usize,
    /// Inputs stepped at once, each on its own connections and schema (default: one per
    /// core). Results are taken in input order, so the report does not depend on it, except
    /// where a real engine's outcome depends on its own timing (a loaded server).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Transcripts: each seed's faults and steering drawn in swarm mode, as `shopsim fuzz`
    /// does (default: the scenario's own configuration).
    #[arg(long)]
    swarm: bool,
}

fn workers(args: &Args) -> usize {
    args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

fn parse_profiles(names: &[String]) -> Result<Vec<Profile>, String> {
    names
        .iter()
        .map(|n| n.parse::<Profile>().map_err(|e| format!("--profile: {e}")))
        .collect()
}

/// What a crosscheck compares.
pub enum Source {
    /// A conformance file, read and parsed.
    File(ScriptFile),
    /// Transcripts of these scenarios' runs.
    Scenarios(Vec<Scenario>),
    /// This many random transaction groups.
    Random(u64),
}

/// A crosscheck whose every input was checked.
pub struct Plan {
    source: Source,
    profiles: Vec<Profile>,
    /// The engines it starts.
    kinds: Vec<EngineKind>,
}

/// `--seeds` / `--random`: 1..=[`SEEDS_MAX`], and the last seed from `--seed-start` a 64-bit
/// seed.
fn check_count(flag: &str, count: u64, seed_start: u64) -> Result<u64, String> {
    if !(1..=SEEDS_MAX).contains(&count) {
        return Err(format!(
            "{flag}: expected a whole number in 1..={SEEDS_MAX}, got `{count}`"
        ));
    }
    if seed_start.checked_add(count - 1).is_none() {
        return Err(format!(
            "{flag}: {count} seeds from --seed-start {seed_start} pass the last seed, 2^64 - 1"
        ));
    }
    Ok(count)
}

/// Checks every flag and file, and that the engines it needs are installed, without starting
/// a server or writing anything; errors name the flag and the value. A missing engine is bad
/// input too (exit 2), with what was tried.
pub fn check_args(args: &Args) -> Result<Plan, String> {
    let profiles = parse_profiles(&args.profiles)?;
    let sources = usize::from(args.file.is_some())
        + usize::from(!args.scenarios.is_empty())
        + usize::from(args.random.is_some());
    if sources != 1 {
        return Err(format!(
            "--scenario, --random or FILE: give exactly one source, got {sources}"
        ));
    }
    if args.measure.is_some() && args.file.is_none() {
        return Err("--measure: needs FILE".to_string());
    }
    if args.shrink_budget > SHRINK_BUDGET_MAX {
        return Err(format!(
            "--shrink-budget: expected a whole number in 0..={SHRINK_BUDGET_MAX}, got `{}`",
            args.shrink_budget
        ));
    }
    if let Some(seeds) = args.seeds {
        check_count("--seeds", seeds, args.seed_start)?;
    }
    if let Some(w) = args.workers {
        if !(1..=64).contains(&w) {
            return Err(format!(
                "--workers: expected a whole number in 1..=64, got `{w}`"
            ));
        }
    }
    if args.swarm && args.scenarios.is_empty() {
        return Err("--swarm: needs --scenario".to_string());
    }
    let (source, profiles) = if let Some(path) = &args.file {
        let text = crate::input::read_text(path, crate::input::CONFORMANCE_BYTES_MAX)
            .map_err(|e| format!("FILE {e}"))?;
        let file = ScriptFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let profiles = if profiles.is_empty() {
            let mut measured: Vec<Profile> = file
                .scripts
                .iter()
                .flat_map(|s| s.outcomes.keys().copied())
                .collect();
            measured.sort();
            measured.dedup();
            if measured.is_empty() {
                Profile::ALL.to_vec()
            } else {
                measured
            }
        } else {
            profiles
        };
        (Source::File(file), profiles)
    } else if let Some(count) = args.random {
        let count = check_count("--random", count, args.seed_start)?;
        let profiles = if profiles.is_empty() {
            Profile::ALL.to_vec()
        } else {
            profiles
        };
        (Source::Random(count), profiles)
    } else {
        let scenarios = if args.scenarios.iter().any(|s| s == "all") {
            shopsim_scenarios::builtin()
        } else {
            let mut out = Vec::new();
            for name in &args.scenarios {
                out.push(shopsim_scenarios::find(name).map_err(|e| format!("--scenario: {e}"))?);
            }
            out
        };
        let mut used = profiles.clone();
        if profiles.is_empty() {
            used = scenarios.iter().flat_map(|s| s.profile_list()).collect();
        }
        for scenario in &scenarios {
            for profile in &used {
                scenario
                    .system(*profile, &[])
                    .map_err(|e| format!("--scenario {}: {e}", scenario.name))?;
            }
        }
        (Source::Scenarios(scenarios), profiles)
    };
    let kinds = match &source {
        Source::Random(_) if profiles.is_empty() => {
            vec![EngineKind::Postgres, EngineKind::MariaDb]
        }
        Source::Scenarios(scenarios) if profiles.is_empty() => kinds_of(
            &scenarios
                .iter()
                .flat_map(|s| s.profile_list())
                .collect::<Vec<_>>(),
        ),
        _ => kinds_of(&profiles),
    };
    for kind in &kinds {
        RealServer::check_binaries(*kind).map_err(|e| format!("real engine: {e}"))?;
    }
    Ok(Plan {
        source,
        profiles,
        kinds,
    })
}

pub fn run(args: Args) -> u8 {
    // `SHOPSIM_LOG=debug` logs the simulated database's lock waits and deadlocks.
    shopsim_sim::trace::init_from_env();
    let plan = match check_args(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let result = match &plan.source {
        Source::File(file) => run_file(&args, file, &plan),
        Source::Scenarios(scenarios) => run_scenarios(&args, scenarios, &plan),
        Source::Random(count) => run_random(&args, *count, &plan),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_BAD_INPUT
        }
    }
}

fn kinds_of(profiles: &[Profile]) -> Vec<EngineKind> {
    let mut kinds: Vec<EngineKind> = profiles.iter().map(|p| EngineKind::of(*p)).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

fn start(kinds: &[EngineKind]) -> Result<Engines, String> {
    let engines = Engines::start(kinds).map_err(|e| format!("real engine: {e}"))?;
    for kind in kinds {
        println!("{}: {}", kind.name(), engines.version(*kind).unwrap_or("?"));
    }
    Ok(engines)
}

fn run_error(e: RunError) -> String {
    match e {
        RunError::Died(e) => format!("the real server died, the run stops: {e}"),
        e => e.to_string(),
    }
}

fn run_file(args: &Args, file: &ScriptFile, plan: &Plan) -> Result<u8, String> {
    let profiles = &plan.profiles;
    let mut engines = start(&plan.kinds)?;
    if let Some(out) = &args.measure {
        let (measured, header) = files::measure(&mut engines, file, profiles).map_err(run_error)?;
        std::fs::write(out, measured.to_toml(&header))
            .map_err(|e| format!("--measure {}: {e}", out.display()))?;
        println!(
            "measured {} scripts under {} profiles into {}",
            measured.scripts.len(),
            profiles.len(),
            out.display()
        );
        return Ok(EXIT_OK);
    }
    let started = std::time::Instant::now();
    let checks = files::check_file(&mut engines, file, profiles).map_err(run_error)?;
    let mut diverged = 0;
    let mut statements = 0;
    for check in &checks {
        statements += check.steps;
        match &check.divergence {
            None => println!("{} {}: identical", check.script, check.profile),
            Some(d) => {
                diverged += 1;
                println!("{} DIVERGES: {d}", check.script);
            }
        }
        if let Some(m) = &check.measurement_differs {
            println!(
                "{} measurement differs from the real engine now: {m}",
                check.script
            );
        }
    }
    print_rate(
        checks.len(),
        checks.len() - diverged,
        statements as u64,
        started.elapsed(),
    );
    Ok(if diverged > 0 {
        EXIT_VIOLATION
    } else {
        EXIT_OK
    })
}

fn print_rate(runs: usize, identical: usize, statements: u64, wall: std::time::Duration) {
    println!(
        "{identical} of {runs} runs identical ({:.1}%); {statements} statements in {:.1} s ({:.0} ms per 1000 statements)",
        100.0 * identical as f64 / runs.max(1) as f64,
        wall.as_secs_f64(),
        wall.as_secs_f64() * 1e6 / statements.max(1) as f64
    );
}

fn report(summary: &Summary, findings_dir: &Path, what: &str) -> Result<u8, String> {
    println!(
        "{what}: {} runs, {} identical ({:.2}%), {} within allowed nondeterminism {:?}, {} diverged",
        summary.runs,
        summary.identical_runs,
        100.0 * summary.identical_runs as f64 / summary.runs.max(1) as f64,
        summary.allowed.values().sum::<usize>(),
        summary.allowed,
        summary.diverged()
    );
    println!(
        "statements: {} crosschecked, {} identical ({:.2}%); wall {:.1} s, {:.0} ms per 1000 statements",
        summary.statements,
        summary.statements_identical,
        100.0 * summary.statements_identical as f64 / summary.statements.max(1) as f64,
        summary.wall.as_secs_f64(),
        summary.ms_per_1000_statements()
    );
    if summary.statements_uncompared > 0 || summary.ids_remapped > 0 {
        println!(
            "generated ids remapped: {}; steps after a first difference (stepped, not \
             compared): {}",
            summary.ids_remapped, summary.statements_uncompared
        );
    }
    for failure in &summary.harness_failures {
        println!("not compared (the stepping protocol could not finish): {failure}");
    }
    if !summary.findings.is_empty() {
        std::fs::create_dir_all(findings_dir)
            .map_err(|e| format!("--findings {}: {e}", findings_dir.display()))?;
    }
    for (i, finding) in summary.findings.iter().enumerate() {
        print_finding(i, finding);
        if let Some((script, _)) = &finding.shrunk {
            let path = findings_dir.join(format!("divergence-{:02}.toml", i + 1));
            let file = ScriptFile {
                scripts: vec![script.clone()],
            };
            let mut header = vec![
                format!("Divergence {}: {}", i + 1, finding.signature),
                format!("First seen in {}: {}", finding.source, finding.divergence),
                format!(
                    "Shrunk by `shopsim crosscheck` on {} (UTC); the outcome is the real engine's.",
                    files::utc_now()
                ),
            ];
            header.extend(files::protocol_lines());
            std::fs::write(&path, file.to_toml(&header))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            println!("    written: {}", path.display());
        }
    }
    let unknown = summary.unknown().len();
    Ok(if unknown > 0 { EXIT_VIOLATION } else { EXIT_OK })
}

fn print_finding(i: usize, f: &Finding) {
    let profiles: Vec<&str> = f.profiles.iter().map(|p| p.name()).collect();
    println!(
        "divergence {}: {} ({} runs; {}){}",
        i + 1,
        f.signature,
        f.count,
        profiles.join(", "),
        f.known
            .map_or(" [not a known class]".to_string(), |k| format!(
                " [known: {k}]"
            ))
    );
    println!("    first: {} in {}", f.divergence, f.source);
    if let Some((script, d)) = &f.shrunk {
        println!("    shrunk to {} steps: {d}", script.steps.len());
        for (session, statement) in &script.steps {
            println!("      {session}: {statement}");
        }
    }
}

fn run_random(args: &Args, count: u64, plan: &Plan) -> Result<u8, String> {
    let kinds = &plan.kinds;
    let mut engines = start(kinds)?;
    let mut last = std::time::Instant::now();
    // Checked: the last seed, seed_start + count - 1, is a 64-bit seed.
    let summary = campaign::random_groups(
        &mut engines,
        args.seed_start,
        count,
        kinds,
        args.shrink_budget,
        workers(args),
        |s| {
            if last.elapsed().as_secs() >= 10 {
                last = std::time::Instant::now();
                eprintln!(
                    "... {} runs, {} identical, {} divergence signatures, {:.0} s",
                    s.runs,
                    s.identical_runs,
                    s.findings.len(),
                    s.wall.as_secs_f64()
                );
            }
        },
    )
    .map_err(run_error)?;
    report(&summary, &args.findings, "random groups")
}

fn run_scenarios(args: &Args, scenarios: &[Scenario], plan: &Plan) -> Result<u8, String> {
    let profiles = &plan.profiles;
    let mut runs = Vec::new();
    for scenario in scenarios {
        let list = if profiles.is_empty() {
            scenario.profile_list()
        } else {
            profiles.to_vec()
        };
        for profile in list {
            runs.push((scenario.clone(), profile));
        }
    }
    let mut engines = start(&plan.kinds)?;
    let seeds = args.seeds.unwrap_or(8);
    let mut last = std::time::Instant::now();
    let mut exit = EXIT_OK;
    for (scenario, profile) in runs {
        let system = scenario
            .system(profile, &[])
            .map_err(|e| format!("--scenario {}: {e}", scenario.name))?;
        let base = scenario.sim_config();
        let name = format!("{}@{}", scenario.name, profile);
        // Checked: the last seed, seed_start + seeds - 1, is a 64-bit seed.
        let first = args.seed_start;
        let count =
            usize::try_from(seeds).map_err(|_| format!("--seeds: too many, got `{seeds}`"))?;
        let draw = if args.swarm {
            crate::reproduce::Draw::Swarm
        } else {
            crate::reproduce::Draw::Scenario
        };
        let input = |i: usize| {
            let seed = first + i as u64;
            let config = draw.config(&base, seed);
            let (_, transcripts) =
                record_transcripts(|| shopsim_sim::runner::run(&system, seed, &config));
            let primary = transcripts
                .into_iter()
                .find(|t| !t.read_only)
                .expect("every scenario has a primary database");
            (format!("{name} seed {seed}"), primary)
        };
        let summary = campaign::transcripts(
            &mut engines,
            count,
            input,
            args.shrink_budget,
            workers(args),
            |s| {
                if last.elapsed().as_secs() >= 10 {
                    last = std::time::Instant::now();
                    eprintln!(
                        "... {name}: {} transcripts, {} identical, {:.0} s",
                        s.runs,
                        s.identical_runs,
                        s.wall.as_secs_f64()
                    );
                }
            },
        )
        .map_err(run_error)?;
        let dir = args.findings.join(&name);
        let code = report(&summary, &dir, &format!("transcripts {name}"))?;
        exit = exit.max(code);
    }
    Ok(exit)
}
