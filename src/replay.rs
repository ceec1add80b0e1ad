//! `shopsim replay`: reproduces one seed of a scenario and explains its outcome.

use std::path::PathBuf;

use shopsim_sim::check::Verdict;
use shopsim_sim::history::OpOutcome;

use crate::{EXIT_BAD_INPUT, EXIT_NONDETERMINISM};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario (or `--file`).
    scenario: Option<String>,
    /// A scenario file outside the registry.
    #[arg(long = "file", value_name = "PATH")]
    file: Option<PathBuf>,
    /// The seed to replay.
    #[arg(long)]
    seed: String,
    /// The database profile (default: the scenario's first).
    #[arg(long)]
    profile: Option<String>,
    /// Planted bugs that were on (repeatable).
    #[arg(long = "bug", value_name = "NAME")]
    bugs: Vec<String>,
    /// The trace hash the run must reproduce (exit 5 if it does not).
    #[arg(long)]
    expect_hash: Option<String>,
    /// Print the whole history.
    #[arg(long)]
    trace: bool,
}

pub fn run(args: Args) -> u8 {
    let names: Vec<String> = args.scenario.iter().cloned().collect();
    let files: Vec<PathBuf> = args.file.iter().cloned().collect();
    let runs = match crate::run::resolve(&names, false, &files, args.profile.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let seed = match shopsim_sim::seed::parse_seed("--seed", &args.seed) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let (scenario, profile) = &runs[0];
    let system = match scenario.system(*profile, &args.bugs) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --bug: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    shopsim_sim::trace::init_from_env();
    let config = scenario.sim_config();
    println!("SEED={seed}\nscenario: {}\n{config:#?}", system.name);
    let outcome = shopsim_sim::runner::run(&system, seed, &config);
    if args.trace {
        for op in &outcome.history.ops {
            let complete = op
                .complete_us
                .map_or("-".to_string(), |c| format!("{:.3}", c as f64 / 1000.0));
            let outcome_text = match op.outcome {
                OpOutcome::Ok => "ok",
                OpOutcome::Fail => "fail",
                OpOutcome::Unknown => "unknown",
            };
            println!(
                "#{:<5} {:>10.3} {:>10} {:<14} {:<40} {:<7} {}",
                op.index,
                op.invoke_us as f64 / 1000.0,
                complete,
                op.process,
                op.kind,
                outcome_text,
                op.details
            );
        }
    }
    for report in &outcome.reports {
        let verdict = match report.verdict {
            Verdict::Valid => "valid",
            Verdict::Unknown => "unknown",
            Verdict::Invalid => "INVALID",
        };
        println!("{:<26} {verdict:<8} {}", report.check, report.witness);
    }
    println!("trace hash: {:016x}", outcome.trace_hash);
    println!(
        "virtual time: {:.3} s",
        outcome.virtual_elapsed.as_secs_f64()
    );
    if let Some(expected) = &args.expect_hash {
        let expected = u64::from_str_radix(expected.trim_start_matches("0x"), 16).ok();
        if expected != Some(outcome.trace_hash) {
            eprintln!(
                "NONDETERMINISM: trace hash {:016x} differs from the expected {}",
                outcome.trace_hash,
                args.expect_hash.as_deref().unwrap_or_default()
            );
            return EXIT_NONDETERMINISM;
        }
    }
    if !outcome.passed() {
        println!("\n{}", crate::failure_text(&outcome, &args.bugs));
    }
    outcome.exit_code()
}
