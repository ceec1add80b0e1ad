//! `shopsim replay`: reproduces one seed of a scenario and explains its outcome.

use std::path::PathBuf;

use shopsim_sim::check::Verdict;
use shopsim_sim::db::server::transcript::record_transcripts;
use shopsim_sim::history::OpOutcome;

use crate::{EXIT_BAD_INPUT, EXIT_NONDETERMINISM};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario, or an artifact written by `shopsim fuzz` (a `.json` path).
    scenario: Option<String>,
    /// A scenario file outside the registry.
    #[arg(long = "file", value_name = "PATH")]
    file: Option<PathBuf>,
    /// The seed to replay (not with an artifact).
    #[arg(long)]
    seed: Option<String>,
    /// The database profile (default: the scenario's first).
    #[arg(long)]
    profile: Option<String>,
    /// Planted bugs that were on (repeatable).
    #[arg(long = "bug", value_name = "NAME")]
    bugs: Vec<String>,
    /// The trace hash the run must reproduce (exit 5 if it does not).
    #[arg(long)]
    expect_hash: Option<String>,
    /// Print the whole history, then every database statement in the order the server ran
    /// it (virtual time, session, the operation that issued it, outcome, lock waits), then
    /// the statements of the operations the witness names.
    #[arg(long)]
    trace: bool,
    /// Write a Mermaid sequence diagram of the operations in the witness, with their
    /// database statements, to this file.
    #[arg(long, value_name = "FILE")]
    diagram: Option<PathBuf>,
    /// Draw the fault plan from the seed, as `fuzz` does in swarm mode (not with an
    /// artifact, which stores its configuration).
    #[arg(long)]
    swarm: bool,
}

pub fn run(mut args: Args) -> u8 {
    // An artifact carries everything: scenario, profile, bugs, seed, configuration and hash.
    let mut artifact_config = None;
    let artifact_path = args.scenario.clone().filter(|s| s.ends_with(".json"));
    let mut embedded = None;
    if let Some(path) = args.scenario.clone().filter(|s| s.ends_with(".json")) {
        let artifact = match crate::artifact::read(std::path::Path::new(&path)) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: ARTIFACT {e}");
                return EXIT_BAD_INPUT;
            }
        };
        args.scenario = Some(artifact.scenario.clone());
        args.seed = Some(artifact.seed.to_string());
        args.profile = Some(artifact.profile.clone());
        args.bugs = artifact.bugs.clone();
        if args.swarm {
            eprintln!("error: --swarm: not with an artifact (it stores its configuration)");
            return EXIT_BAD_INPUT;
        }
        args.expect_hash = Some(format!("{:016x}", artifact.trace_hash));
        artifact_config = Some(artifact.config.clone());
        if !artifact.scenario_toml.is_empty() {
            match shopsim_scenarios::Scenario::from_toml(&artifact.scenario_toml) {
                Ok(s) => embedded = Some(s),
                Err(e) => {
                    eprintln!("error: ARTIFACT {path}: scenario_toml: {e}");
                    return EXIT_BAD_INPUT;
                }
            }
        }
    }
    let names: Vec<String> = args.scenario.iter().cloned().collect();
    let files: Vec<PathBuf> = args.file.iter().cloned().collect();
    let runs = match &embedded {
        Some(scenario) => {
            let profile = match args.profile.as_deref().unwrap_or("pg_rc").parse() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: ARTIFACT profile: {e}");
                    return EXIT_BAD_INPUT;
                }
            };
            vec![crate::run::Selected {
                scenario: scenario.clone(),
                profile,
                source: crate::reproduce::Source::Builtin(scenario.name.clone()),
            }]
        }
        None => match crate::run::resolve(&names, false, &files, args.profile.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_BAD_INPUT;
            }
        },
    };
    let Some(seed_text) = args.seed.as_deref() else {
        eprintln!("error: --seed: required (or give an artifact)");
        return EXIT_BAD_INPUT;
    };
    let seed = match shopsim_sim::seed::parse_seed("--seed", seed_text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let selected = &runs[0];
    let system = match selected.system(&args.bugs) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --bug: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    shopsim_sim::trace::init_from_env();
    let config = artifact_config.unwrap_or_else(|| {
        crate::fuzz::seed_config(&selected.scenario.sim_config(), seed, args.swarm)
    });
    println!("SEED={seed}\nscenario: {}\n{config:#?}", system.name);
    // The database transcripts only observe (same trace hash), so they are recorded only
    // when something shows them.
    let run = || shopsim_sim::runner::run(&system, seed, &config);
    let (outcome, transcripts) = if args.trace || args.diagram.is_some() {
        record_transcripts(run)
    } else {
        (run(), Vec::new())
    };
    let db_nodes = crate::statements::nodes(&transcripts);
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
        let named = outcome
            .failure
            .as_ref()
            .map(|f| crate::diagram::named_ops(&f.witness))
            .unwrap_or_default();
        print!(
            "{}",
            crate::statements::trace(&db_nodes, &outcome.history, &named)
        );
        println!();
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
    if let Some(path) = &args.diagram {
        let diagram = crate::diagram::diagram(&outcome, &db_nodes);
        if let Err(e) = std::fs::write(path, diagram) {
            eprintln!("error: --diagram {}: {e}", path.display());
            return EXIT_BAD_INPUT;
        }
        println!("diagram: {}", path.display());
    }
    if !outcome.passed() {
        match &artifact_path {
            Some(path) => println!(
                "\n{}\nnote: reproduce with: {}",
                outcome.fail_line().expect("failed"),
                crate::reproduce::replay_artifact_command(std::path::Path::new(path))
            ),
            None => {
                let replay = crate::reproduce::SeedRun {
                    source: &selected.source,
                    profile: selected.profile.name(),
                    seed,
                    bugs: &args.bugs,
                    swarm: args.swarm,
                }
                .replay_command();
                println!(
                    "\n{}\nnote: reproduce with: {replay}",
                    outcome.fail_line().expect("failed")
                );
            }
        }
    }
    outcome.exit_code()
}
