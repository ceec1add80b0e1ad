//! `shopsim check-determinism`: each seed twice in this process and once in a fresh one; any
//! difference is nondeterminism (exit 5), reported with the first diverging operation.

use shopsim_sim::replay::check_determinism;

use crate::{EXIT_BAD_INPUT, EXIT_NONDETERMINISM, EXIT_OK};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenarios (default: every built-in one).
    scenarios: Vec<String>,
    /// Seeds per scenario and profile.
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

pub fn run(args: Args) -> u8 {
    let runs = match crate::run::resolve(
        &args.scenarios,
        args.scenarios.is_empty(),
        &[],
        args.profile.as_deref(),
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let seeds = match crate::run::seeds(None, Some(&args.seeds), &args.seed_start, 8) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let exe = std::env::current_exe().ok();
    let mut checked = 0;
    for (scenario, profile) in &runs {
        let system = scenario.system(*profile, &[]).expect("valid");
        let base = scenario.sim_config();
        for &seed in &seeds {
            let config = crate::run::config_for(&base, seed, args.steering);
            let hash = match check_determinism(&system, seed, &config) {
                Ok(hash) => hash,
                Err(e) => {
                    println!(
                        "NONDETERMINISM {} seed={seed}: hashes {:016x} and {:016x}; first difference: {}",
                        system.name, e.first, e.second, e.first_difference
                    );
                    return EXIT_NONDETERMINISM;
                }
            };
            if !args.in_process_only {
                if let Some(exe) = &exe {
                    let status = std::process::Command::new(exe)
                        .args([
                            "replay",
                            &scenario.name,
                            "--seed",
                            &seed.to_string(),
                            "--profile",
                            profile.name(),
                            "--expect-hash",
                            &format!("{hash:016x}"),
                        ])
                        .args(args.steering.then_some("--steering"))
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .status();
                    if status.ok().and_then(|s| s.code()) == Some(i32::from(EXIT_NONDETERMINISM)) {
                        println!("NONDETERMINISM {} seed={seed}: a fresh process gave another trace hash than {hash:016x}", system.name);
                        return EXIT_NONDETERMINISM;
                    }
                }
            }
            checked += 1;
        }
    }
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
