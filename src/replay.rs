//! `shopsim replay`: reproduces one seed of a scenario and explains its outcome.

use std::path::PathBuf;

use shopsim_sim::check::Verdict;
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
    /// Print the whole history.
    #[arg(long)]
    trace: bool,
    /// Write a Mermaid sequence diagram of the operations in the witness to this file.
    #[arg(long, value_name = "FILE")]
    diagram: Option<PathBuf>,
    /// Steer the schedule with the steering plan drawn from the seed, as `run --steering`
    /// does (not with an artifact: it holds its configuration).
    #[arg(long)]
    steering: bool,
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
            let profile = args
                .profile
                .as_deref()
                .unwrap_or("pg_rc")
                .parse()
                .expect("an artifact names a valid profile");
            vec![(scenario.clone(), profile)]
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
    let (scenario, profile) = &runs[0];
    let system = match scenario.system(*profile, &args.bugs) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --bug: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    shopsim_sim::trace::init_from_env();
    let config = artifact_config
        .unwrap_or_else(|| crate::run::config_for(&scenario.sim_config(), seed, args.steering));
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
    if let Some(path) = &args.diagram {
        let diagram = diagram(&outcome);
        if let Err(e) = std::fs::write(path, diagram) {
            eprintln!("error: --diagram {}: {e}", path.display());
            return EXIT_BAD_INPUT;
        }
        println!("diagram: {}", path.display());
    }
    if !outcome.passed() {
        match &artifact_path {
            Some(path) => println!(
                "\n{}\nnote: reproduce with: cargo run --release -- replay {path}",
                outcome.fail_line().expect("failed")
            ),
            None if args.steering => println!(
                "\n{}",
                crate::run::with_replay_flag(
                    &crate::failure_text(&outcome, &args.bugs),
                    "--steering"
                )
            ),
            None => println!("\n{}", crate::failure_text(&outcome, &args.bugs)),
        }
    }
    outcome.exit_code()
}

/// A Mermaid sequence diagram of the operations a failure's witness names (`#12`), or of the
/// first operations of the run if it names none, with the faults around them.
pub fn diagram<S>(outcome: &shopsim_sim::runner::Outcome<S>) -> String {
    let witness = outcome
        .failure
        .as_ref()
        .map(|f| f.witness.clone())
        .unwrap_or_default();
    let mut named = std::collections::BTreeSet::new();
    let bytes: Vec<char> = witness.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == '#' {
            let digits: String = bytes[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if let Ok(n) = digits.parse::<usize>() {
                named.insert(n);
            }
            i += digits.len();
        }
        i += 1;
    }
    let ops: Vec<_> = outcome
        .history
        .ops
        .iter()
        .filter(|op| {
            if named.is_empty() {
                op.index < 30
            } else {
                named.contains(&op.index) || (op.process == "nemesis" && op.kind != "buggify")
            }
        })
        .collect();
    let mut out = String::from("sequenceDiagram\n    participant shop as shop (app nodes)\n");
    if let Some(f) = &outcome.failure {
        out.push_str(&format!(
            "    Note over shop: {} seed {}: {}\n",
            outcome.system, outcome.seed, f.check
        ));
    }
    let mut events: Vec<(u64, String)> = Vec::new();
    for op in ops {
        let who = op.process.replace('-', "_");
        if op.process == "nemesis" {
            events.push((
                op.invoke_us,
                format!(
                    "    Note over shop: {:.1} ms fault: {} {}\n",
                    op.invoke_us as f64 / 1000.0,
                    op.kind,
                    op.details
                ),
            ));
            continue;
        }
        events.push((
            op.invoke_us,
            format!(
                "    {who}->>shop: #{} {} ({:.1} ms)\n",
                op.index,
                op.kind,
                op.invoke_us as f64 / 1000.0
            ),
        ));
        let answer = match (op.status, op.complete_us) {
            (Some(status), Some(t)) => format!(
                "    shop-->>{who}: #{} {status} {} ({:.1} ms)\n",
                op.index,
                op.details["response"]["body"]
                    .to_string()
                    .replace(['{', '}', '"', ';'], ""),
                t as f64 / 1000.0
            ),
            (None, Some(t)) => format!(
                "    shop--x{who}: #{} no answer ({:.1} ms)\n",
                op.index,
                t as f64 / 1000.0
            ),
            _ => format!("    shop--x{who}: #{} never completed\n", op.index),
        };
        events.push((op.complete_us.unwrap_or(u64::MAX), answer));
    }
    events.sort_by_key(|(t, _)| *t);
    for (_, line) in events {
        out.push_str(&line);
    }
    out
}
