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
}

/// A replay whose every input was checked: what `run` hands the runner.
pub struct Plan {
    system: shopsim_model::shop::Shop,
    seed: u64,
    config: shopsim_sim::runner::SimConfig,
    expect_hash: Option<u64>,
    artifact_path: Option<String>,
}

/// Checks every input of a replay (artifact, scenario, seed, profile, bugs, hash) without
/// running anything; errors name the flag or field and the value.
pub fn plan(mut args: Args) -> Result<(Plan, Args), String> {
    // An artifact carries everything: scenario, profile, bugs, seed, configuration and hash.
    let artifact_path = args.scenario.clone().filter(|s| s.ends_with(".json"));
    let mut loaded = None;
    if let Some(path) = &artifact_path {
        let artifact = crate::artifact::load(std::path::Path::new(path))
            .map_err(|e| format!("ARTIFACT {e}"))?;
        args.seed = Some(artifact.artifact.seed.to_string());
        args.bugs = artifact.artifact.bugs.clone();
        if args.expect_hash.is_none() {
            args.expect_hash = Some(format!("{:016x}", artifact.artifact.trace_hash));
        }
        loaded = Some(artifact);
    }
    let expect_hash = args
        .expect_hash
        .as_deref()
        .map(crate::input::parse_hash)
        .transpose()?;
    let (scenario, profile, config) = match loaded {
        Some(l) => (l.scenario, l.profile, Some(l.artifact.config)),
        None => {
            let names: Vec<String> = args.scenario.iter().cloned().collect();
            let files: Vec<PathBuf> = args.file.iter().cloned().collect();
            let runs = crate::run::resolve(&names, false, &files, args.profile.as_deref())?;
            let (scenario, profile) = runs.into_iter().next().ok_or("no scenario")?;
            (scenario, profile, None)
        }
    };
    let seed_text = args
        .seed
        .as_deref()
        .ok_or("--seed: required (or give an artifact)")?;
    let seed = shopsim_sim::seed::parse_seed("--seed", seed_text).map_err(|e| e.to_string())?;
    let system = scenario
        .system(profile, &args.bugs)
        .map_err(|e| format!("--bug: {e}"))?;
    let config = config.unwrap_or_else(|| scenario.sim_config());
    Ok((
        Plan {
            system,
            seed,
            config,
            expect_hash,
            artifact_path,
        },
        args,
    ))
}

pub fn run(args: Args) -> u8 {
    let (plan, args) = match plan(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let Plan {
        system,
        seed,
        config,
        expect_hash,
        artifact_path,
    } = plan;
    shopsim_sim::trace::init_from_env();
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
    if let Some(expected) = expect_hash {
        if expected != outcome.trace_hash {
            eprintln!(
                "NONDETERMINISM: trace hash {:016x} differs from the expected {expected:016x}",
                outcome.trace_hash,
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
