//! `shopsim check-determinism`: each seed twice in this process and once in a fresh one; any
//! difference is nondeterminism (exit 5), reported with the first diverging operation and a
//! command that replays the seed.

use std::path::PathBuf;

use shopsim_sim::replay::check_determinism;

use crate::reproduce::{Draw, SeedRun};
use crate::{EXIT_BAD_INPUT, EXIT_NONDETERMINISM, EXIT_OK};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenarios (default: every built-in one, unless --file is given).
    scenarios: Vec<String>,
    /// A scenario file outside the registry (repeatable).
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// Seeds per scenario and profile (up to 2^64 - 1, run lazily).
    #[arg(long, default_value = "8")]
    seeds: String,
    /// First seed.
    #[arg(long, default_value = "0")]
    seed_start: String,
    /// Only this database profile.
    #[arg(long)]
    profile: Option<String>,
    /// Skip the fresh-process run.
    #[arg(long)]
    in_process_only: bool,
    /// Steer each seed with the steering plan drawn from it (as `run --steering`).
    #[arg(long)]
    steering: bool,
}

/// Checks every flag and file without running anything.
pub fn check_args(
    args: &Args,
) -> Result<(Vec<crate::run::Selected>, shopsim_sim::seed::SeedPlan), String> {
    let runs = crate::run::resolve(
        &args.scenarios,
        args.scenarios.is_empty() && args.files.is_empty(),
        &args.files,
        args.profile.as_deref(),
    )?;
    let seeds = crate::run::seeds(None, Some(&args.seeds), &args.seed_start, 8)?;
    for selected in &runs {
        selected.system(&[]).map_err(|e| e.to_string())?;
    }
    Ok((runs, seeds))
}

pub fn run(args: Args) -> u8 {
    let (runs, seeds) = match check_args(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let exe = std::env::current_exe().ok();
    let bar = crate::progress::Bar::new(
        (runs.len() as u64).saturating_mul(seeds.count),
        "check-determinism",
        "seeds",
    );
    let mut checked: u64 = 0;
    let draw = if args.steering {
        Draw::Steering
    } else {
        Draw::Scenario
    };
    for selected in &runs {
        let system = selected.system(&[]).expect("checked above");
        let base = selected.scenario.sim_config();
        for seed in seeds.seeds() {
            let config = draw.config(&base, seed);
            let replay = SeedRun {
                source: &selected.source,
                profile: selected.profile.name(),
                seed,
                bugs: &[],
                draw,
            };
            let hash = match check_determinism(&system, seed, &config) {
                Ok(hash) => hash,
                Err(e) => {
                    bar.finish();
                    println!(
                        "NONDETERMINISM {} seed={seed}: hashes {:016x} and {:016x}; first difference: {}\nnote: replay with: {}",
                        system.name,
                        e.first,
                        e.second,
                        e.first_difference,
                        replay.replay_command()
                    );
                    return EXIT_NONDETERMINISM;
                }
            };
            if !args.in_process_only {
                if let Some(exe) = &exe {
                    let mut replay_args = replay.replay_args();
                    replay_args.extend(["--expect-hash".to_string(), format!("{hash:016x}")]);
                    let status = std::process::Command::new(exe)
                        .args(&replay_args)
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status();
                    if status.ok().and_then(|s| s.code()) == Some(i32::from(EXIT_NONDETERMINISM)) {
                        bar.finish();
                        println!(
                            "NONDETERMINISM {} seed={seed}: a fresh process gave another trace hash than {hash:016x}\nnote: replay with: {}",
                            system.name,
                            replay.replay_command()
                        );
                        return EXIT_NONDETERMINISM;
                    }
                }
            }
            bar.inc();
            checked += 1;
        }
    }
    bar.finish();
    println!(
        "{checked} seeds deterministic (twice in process{})",
        if args.in_process_only {
            ""
        } else {
            ", once in a fresh process"
        }
    );
    EXIT_OK
}
