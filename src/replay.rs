//! `shopsim replay`: reproduces one seed of a scenario and explains its outcome.

use std::path::PathBuf;

use shopsim_sim::check::Verdict;
use shopsim_sim::db::server::transcript::record_transcripts;
use shopsim_sim::history::OpOutcome;

use crate::reproduce::Draw;
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
    /// Draw the fault plan and steering from the seed, as `fuzz` does in swarm mode (not
    /// with an artifact, which stores its configuration).
    #[arg(long)]
    swarm: bool,
    /// With --swarm: keep the scenario's own steering, as `fuzz --no-steering` does.
    #[arg(long)]
    no_steering: bool,
    /// Steer the schedule with the steering plan drawn from the seed, as `run --steering`
    /// does (not with an artifact: it holds its configuration).
    #[arg(long)]
    steering: bool,
}

/// A replay whose every input was checked: what `run` hands the runner.
pub struct Plan {
    selected: crate::run::Selected,
    system: shopsim_model::shop::Shop,
    seed: u64,
    config: shopsim_sim::runner::SimConfig,
    expect_hash: Option<u64>,
    /// With an artifact's own hash: the build that recorded it, where that is not this one
    /// (a different hash may then come from the change of shopsim between them).
    recorded_by: Option<String>,
    /// Said before the run when the artifact's inputs were edited after it was written.
    edited_note: Option<String>,
    artifact_path: Option<String>,
    draw: Draw,
}

/// Checks every input of a replay (artifact, scenario, seed, profile, bugs, hash, draw)
/// without running anything; errors name the flag or field and the value.
pub fn plan(mut args: Args) -> Result<(Plan, Args), String> {
    let draw = Draw::from_flags(args.swarm, args.steering, args.no_steering)?;
    // An artifact carries everything: scenario, profile, bugs, seed, configuration and hash.
    let artifact_path = args.scenario.clone().filter(|s| s.ends_with(".json"));
    let mut loaded = None;
    let mut edited_note = None;
    let mut recorded_by = None;
    if let Some(path) = &artifact_path {
        let artifact = crate::artifact::load(std::path::Path::new(path))
            .map_err(|e| format!("ARTIFACT {e}"))?;
        for (given, flag) in [
            (args.swarm, "--swarm"),
            (args.steering, "--steering"),
            (args.no_steering, "--no-steering"),
        ] {
            if given {
                return Err(format!(
                    "{flag}: not with an artifact (it stores its configuration)"
                ));
            }
        }
        args.seed = Some(artifact.artifact.seed.to_string());
        args.bugs = artifact.artifact.bugs.clone();
        // A hash given on the command line is what the run must reproduce; else the
        // artifact's own, unless its inputs were edited after it was written: that hash is
        // of another run, and the edited one is judged on its own.
        if args.expect_hash.is_none() {
            let a = &artifact.artifact;
            if a.inputs_unchanged() == Some(false) {
                edited_note = Some(format!(
                    "note: {path}: its inputs (scenario, profile, seed, bugs or configuration) were \
                     edited after it was written; its trace hash {:016x} is of the run as \
                     written, so this run is judged on its own",
                    a.trace_hash
                ));
            } else {
                args.expect_hash = Some(format!("{:016x}", a.trace_hash));
                let same_build = a.commit == crate::artifact::BUILD_COMMIT
                    && !a.commit.ends_with("-dirty")
                    && a.commit != "unknown";
                if !same_build {
                    recorded_by = Some(a.commit.clone());
                }
            }
        }
        loaded = Some(artifact);
    }
    let expect_hash = args
        .expect_hash
        .as_deref()
        .map(crate::input::parse_hash)
        .transpose()?;
    let (selected, config) = match loaded {
        Some(l) => (
            crate::run::Selected {
                source: crate::reproduce::Source::Builtin(l.scenario.name.clone()),
                scenario: l.scenario,
                profile: l.profile,
            },
            Some(l.artifact.config),
        ),
        None => {
            let names: Vec<String> = args.scenario.iter().cloned().collect();
            let files: Vec<PathBuf> = args.file.iter().cloned().collect();
            let runs = crate::run::resolve(&names, false, &files, args.profile.as_deref())?;
            let selected = runs.into_iter().next().ok_or("SCENARIO: required")?;
            (selected, None)
        }
    };
    let seed_text = args
        .seed
        .as_deref()
        .ok_or("--seed: required (or give an artifact)")?;
    let seed = shopsim_sim::seed::parse_seed("--seed", seed_text).map_err(|e| e.to_string())?;
    let system = selected
        .system(&args.bugs)
        .map_err(|e| format!("--bug: {e}"))?;
    let config = match config {
        Some(c) => c,
        None => {
            let config = draw.config(&selected.scenario.sim_config(), seed);
            // A drawn configuration passes the same validation as any configuration.
            selected.scenario.check_sim_config(&config).map_err(|e| {
                format!("{}: {e}", draw.flags().first().copied().unwrap_or("--seed"))
            })?;
            config
        }
    };
    Ok((
        Plan {
            selected,
            system,
            seed,
            config,
            expect_hash,
            recorded_by,
            edited_note,
            artifact_path,
            draw,
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
        selected,
        system,
        seed,
        config,
        expect_hash,
        recorded_by,
        edited_note,
        artifact_path,
        draw,
    } = plan;
    if let Some(note) = &edited_note {
        eprintln!("{note}");
    }
    shopsim_sim::trace::init_from_env();
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
    if let Some(expected) = expect_hash {
        if expected != outcome.trace_hash {
            match &recorded_by {
                // Another build may run the same inputs differently: that is no proof of
                // nondeterminism, and the message does not claim it.
                Some(commit) => eprintln!(
                    "NOT REPRODUCED: trace hash {:016x} differs from the recorded {expected:016x}; \
                     the artifact was written by shopsim {commit}, this is {}: a change of \
                     shopsim between the two can explain it (replay it with the build of \
                     {commit} to test for nondeterminism)",
                    outcome.trace_hash,
                    crate::artifact::BUILD_COMMIT,
                ),
                None => eprintln!(
                    "NONDETERMINISM: trace hash {:016x} differs from the expected {expected:016x}",
                    outcome.trace_hash,
                ),
            }
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
                    draw,
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
