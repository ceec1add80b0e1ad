//! The simulated database against real PostgreSQL 15 and MariaDB 10.11, on servers these tests
//! start themselves: the measured conformance data, a sample of random transaction groups and
//! transcripts of every scenario. A divergence outside the known open classes
//! (`shopsim_crosscheck::classes::KNOWN_OPEN`) fails; canaries prove the harness reports a
//! planted wrong outcome. Without the engines the tests skip, unless
//! `SHOPSIM_REQUIRE_ENGINES=1` (CI), where a missing engine fails them.

use std::sync::{Mutex, MutexGuard, OnceLock};

use shopsim_crosscheck::campaign::{self, Summary};
use shopsim_crosscheck::classes::{self, KNOWN_OPEN, NONDETERMINISM};
use shopsim_crosscheck::compare::{first_difference, simulate};
use shopsim_crosscheck::server::{EngineKind, RealServer};
use shopsim_crosscheck::{engines_required, files, transcript, Engines};
use shopsim_sim::db::conformance::ScriptFile;
use shopsim_sim::db::server::transcript::{record_transcripts, Transcript, TranscriptEvent};
use shopsim_sim::db::{DbError, Profile};

/// One pair of servers for the whole test binary (initdb and mariadb-install-db take
/// seconds); tests take turns on it. A static is never dropped: the servers' watchdogs stop
/// them once the test process has ended.
fn engines() -> Option<MutexGuard<'static, Engines>> {
    static ENGINES: OnceLock<Option<Mutex<Engines>>> = OnceLock::new();
    let engines = ENGINES.get_or_init(|| {
        let kinds = [EngineKind::Postgres, EngineKind::MariaDb];
        let missing: Vec<String> = kinds
            .iter()
            .filter_map(|k| RealServer::check_binaries(*k).err())
            .map(|e| e.to_string())
            .collect();
        if !missing.is_empty() {
            assert!(
                !engines_required(),
                "SHOPSIM_REQUIRE_ENGINES=1 but an engine is missing: {}",
                missing.join("; ")
            );
            eprintln!(
                "skipping the crosscheck: {} (install with scripts/install-engines.sh)",
                missing.join("; ")
            );
            return None;
        }
        Some(Mutex::new(
            Engines::start(&kinds).expect("the real engines start"),
        ))
    });
    engines
        .as_ref()
        .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
}

fn file(name: &str) -> ScriptFile {
    let path = format!("{}/sim/conformance/{name}", env!("CARGO_MANIFEST_DIR"));
    ScriptFile::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn unknown_findings(summary: &Summary) -> Vec<String> {
    summary
        .unknown()
        .iter()
        .map(|f| format!("{} (first: {} in {})", f.signature, f.divergence, f.source))
        .collect()
}

/// The stepping protocol reproduces the earlier measurements of real servers (Hermitage and
/// the behaviour scripts), and the simulated database agrees with the real engines on them.
#[test]
fn conformance_files_agree_with_the_real_engines() {
    let Some(mut engines) = engines() else { return };
    for name in ["hermitage.toml", "behaviours.toml"] {
        let file = file(name);
        let checks = files::check_file(&mut engines, &file, &Profile::ALL).unwrap();
        assert!(checks.len() >= 20, "{name}: {} runs", checks.len());
        for check in &checks {
            assert!(
                check.measurement_differs.is_none(),
                "{name} {}: {}",
                check.script,
                check.measurement_differs.as_ref().unwrap()
            );
            assert!(
                check.divergence.is_none(),
                "{name} {}: {}",
                check.script,
                check.divergence.as_ref().unwrap()
            );
        }
    }
}

/// The regression data the crosscheck found (`sim/conformance/crosscheck.toml`) is measured:
/// the real engines reproduce every recorded outcome (the stepping protocol is repeatable).
/// How the simulated database fares on it is judged without the engines, below.
#[test]
fn found_regression_scripts_reproduce_on_the_real_engines() {
    let Some(mut engines) = engines() else { return };
    let file = file("crosscheck.toml");
    assert!(file.scripts.len() >= 20, "{}", file.scripts.len());
    let checks = files::check_file(&mut engines, &file, &Profile::ALL).unwrap();
    // One check per script and measured profile (a script may carry several).
    let runs: usize = file.scripts.iter().map(|s| s.outcomes.len()).sum();
    assert_eq!(checks.len(), runs);
    for check in &checks {
        assert!(
            check.measurement_differs.is_none(),
            "{}: {}",
            check.script,
            check.measurement_differs.as_ref().unwrap()
        );
    }
}

/// The scripts of `sim/conformance/crosscheck.toml` the simulated database still gets wrong.
/// Every other script is regression data the simulation must reproduce exactly, on every
/// profile measured; a script leaves this list when the engine is fixed.
const STILL_DIVERGENT: &[&str] = &["random-201270-mariadb"];

/// The simulated database against the measured outcomes of `crosscheck.toml` (no engines
/// needed): the scripts fixed since they were found match on every measured profile, each
/// still divergent one is explained by a class of `KNOWN_OPEN`, and every class of
/// `KNOWN_OPEN` still explains one of them (a class nothing shows any more is removed).
#[test]
fn found_regression_scripts_match_or_diverge_in_a_known_open_class() {
    let file = file("crosscheck.toml");
    let mut matched = 0;
    let mut classes_seen = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for script in &file.scripts {
        let open = STILL_DIVERGENT.contains(&script.name.as_str());
        // A still-divergent script keeps the outcome of every profile it was measured on:
        // the profiles it matches count as matches, and it must still diverge on one.
        let mut diverged = false;
        for (&profile, measured) in &script.outcomes {
            let simulated = simulate(script, profile);
            match (
                first_difference(script, profile, &simulated, measured),
                open,
            ) {
                (None, _) => matched += 1,
                (Some(d), false) => failures.push(format!("{} regressed: {d}", script.name)),
                (Some(d), true) => {
                    diverged = true;
                    match classes::known(&d, script) {
                        Some(class) => {
                            classes_seen.insert(class.name);
                        }
                        None => failures.push(format!(
                            "{}: {d} is outside classes::KNOWN_OPEN",
                            script.name
                        )),
                    }
                }
            }
        }
        if open && !diverged {
            failures.push(format!(
                "{} now matches on every profile: take it off STILL_DIVERGENT",
                script.name
            ));
        }
    }
    let unused: Vec<&str> = KNOWN_OPEN
        .iter()
        .map(|k| k.name)
        .filter(|name| !classes_seen.contains(name))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every script of STILL_DIVERGENT is in the file (every other run matched, or it is a
    // failure above).
    let open = file
        .scripts
        .iter()
        .filter(|s| STILL_DIVERGENT.contains(&s.name.as_str()))
        .count();
    assert_eq!(open, STILL_DIVERGENT.len());
    assert!(matched > 0);
    assert!(
        unused.is_empty(),
        "KNOWN_OPEN classes no script shows any more: {unused:?}"
    );
}

/// `--measure` writes a file that parses back with the real outcomes and says what was
/// measured on which server.
#[test]
fn measuring_writes_a_file_that_parses_back() {
    let Some(mut engines) = engines() else { return };
    let mut file = file("hermitage.toml");
    file.scripts.truncate(2);
    let (measured, header) =
        files::measure(&mut engines, &file, &[Profile::PgRc, Profile::MariaRr]).unwrap();
    let text = measured.to_toml(&header);
    assert!(text.contains("PostgreSQL 15"), "{text}");
    assert!(text.contains("MariaDB"), "{text}");
    let back = ScriptFile::parse(&text).unwrap();
    assert_eq!(back, measured);
    assert_eq!(
        back.scripts[0].outcomes[&Profile::PgRc],
        file.scripts[0].outcomes[&Profile::PgRc]
    );
}

/// A few hundred random transaction groups under every profile: every divergence is of a
/// known open class, and most runs are identical.
#[test]
fn random_groups_diverge_only_in_known_classes() {
    let Some(mut engines) = engines() else { return };
    let summary = campaign::random_groups(
        &mut engines,
        0,
        120,
        &[EngineKind::Postgres, EngineKind::MariaDb],
        0,
        2,
        |_| {},
    )
    .unwrap();
    eprintln!(
        "random groups: {} runs, {} identical, {} statements, {:.0} ms per 1000 statements",
        summary.runs,
        summary.identical_runs,
        summary.statements,
        summary.ms_per_1000_statements()
    );
    assert_eq!(summary.runs, 120 * 8);
    assert!(
        summary.harness_failures.is_empty(),
        "{:?}",
        summary.harness_failures
    );
    let unknown = unknown_findings(&summary);
    assert!(
        unknown.is_empty(),
        "divergences outside classes::KNOWN_OPEN:\n{}",
        unknown.join("\n")
    );
    assert!(
        summary.identical_runs * 2 > summary.runs,
        "{} of {} identical",
        summary.identical_runs,
        summary.runs
    );
}

/// Canary: a simulated outcome planted wrong in a transcript is reported as the first
/// difference, at its step, with both outcomes.
#[test]
fn a_planted_wrong_simulated_outcome_is_reported() {
    let Some(mut engines) = engines() else { return };
    let scenario = shopsim_scenarios::find("payment-race").unwrap();
    let system = scenario.system(Profile::MariaRr, &[]).unwrap();
    let (_, transcripts) =
        record_transcripts(|| shopsim_sim::runner::run(&system, 1, &scenario.sim_config()));
    let mut t = transcripts.into_iter().find(|t| !t.read_only).unwrap();
    // The third statement that finished at once: its answer becomes a deadlock error.
    let planted = t
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, TranscriptEvent::Finish { cause, .. } if *cause == shopsim_sim::db::server::transcript::FinishCause::Immediate))
        .nth(2)
        .map(|(i, _)| i)
        .unwrap();
    if let TranscriptEvent::Finish { result, .. } = &mut t.events[planted] {
        *result = Err(DbError::new("1213", "planted"));
    }
    let check = transcript::check(&mut engines, &t).unwrap();
    let first = check.first.expect("the planted outcome is found");
    assert_eq!(first.simulated, "ERR 1213");
    assert_ne!(first.real, "ERR 1213");
    assert!(check.allowed.is_none());
    assert_eq!(check.identical, first.step.unwrap() - 1);
    assert_eq!(check.compared, first.step.unwrap());
    // Stepped again, the real engine never gives the planted outcome: not a race of its own.
    let summary = campaign::transcripts(
        &mut engines,
        1,
        |_| ("planted".into(), t.clone()),
        0,
        1,
        |_| {},
    )
    .unwrap();
    assert!(summary.allowed.is_empty(), "{:?}", summary.allowed);
    assert_eq!(summary.diverged(), 1);
    assert!(
        summary.statements_stepped > 2 * check.steps as u64,
        "replayed"
    );
}

/// Transcripts of every scenario under both default profiles, faults on: the first
/// difference of each is an allowed nondeterminism class or a known open divergence.
#[test]
fn transcripts_of_every_scenario_diverge_only_in_known_classes() {
    let Some(mut engines) = engines() else { return };
    let mut failures = Vec::new();
    let mut compared = 0;
    for scenario in shopsim_scenarios::builtin() {
        for profile in scenario.profile_list() {
            let system = scenario.system(profile, &[]).unwrap();
            let config = scenario.sim_config();
            let input = |seed: usize| {
                let (_, transcripts) =
                    record_transcripts(|| shopsim_sim::runner::run(&system, seed as u64, &config));
                let t = transcripts.into_iter().find(|t| !t.read_only).unwrap();
                (format!("{}@{profile} seed {seed}", scenario.name), t)
            };
            let summary = campaign::transcripts(&mut engines, 2, input, 0, 2, |_| {}).unwrap();
            compared += summary.statements_identical;
            failures.extend(summary.harness_failures.iter().cloned());
            failures.extend(unknown_findings(&summary));
        }
    }
    eprintln!("transcripts: {compared} statements identical before a first difference");
    assert!(compared > 100, "{compared}");
    assert!(
        failures.is_empty(),
        "transcript divergences outside classes::KNOWN_OPEN:\n{}",
        failures.join("\n")
    );
}

/// A two-session deadlock that a crash breaks before the simulated run checked the wait
/// that closed the cycle; `planted_check` plants a check of that wait that found no cycle.
fn deadlock_broken_by_a_crash(planted_check: bool) -> Transcript {
    use shopsim_sim::db::server::transcript::{FinishCause, TranscriptSetup};
    use shopsim_sim::db::{QueryResult, Value};
    let ok = |rows_affected: u64| QueryResult {
        rows_affected,
        ..QueryResult::default()
    };
    let execute = |session: u64, sql: &str| TranscriptEvent::Execute {
        session,
        sql: sql.to_string(),
        params: Vec::new(),
        at_us: 0,
        tag: None,
        application: None,
    };
    let finish = |session: u64, result: QueryResult| TranscriptEvent::Finish {
        session,
        result: Ok(result),
        cause: FinishCause::Immediate,
        at_us: 0,
        woken_by: None,
    };
    let block = |session: u64| TranscriptEvent::Block {
        session,
        at_us: 0,
        table: Some("t".to_string()),
    };
    let mut events = vec![
        execute(1, "BEGIN"),
        finish(1, ok(0)),
        execute(1, "update t set v = 1 where id = 1"),
        finish(1, ok(1)),
        execute(2, "BEGIN"),
        finish(2, ok(0)),
        execute(2, "update t set v = 2 where id = 2"),
        finish(2, ok(1)),
        execute(1, "update t set v = 1 where id = 2"),
        block(1),
        // S1's check runs before the cycle closes: it finds none.
        TranscriptEvent::DeadlockCheck {
            session: 1,
            at_us: 1_000_000,
        },
        execute(2, "update t set v = 2 where id = 1"),
        block(2),
    ];
    if planted_check {
        events.push(TranscriptEvent::DeadlockCheck {
            session: 2,
            at_us: 1_500_000,
        });
    }
    events.push(TranscriptEvent::Crash { at_us: 1_600_000 });
    Transcript {
        profile: Profile::PgRc,
        read_only: false,
        setup: TranscriptSetup {
            ddl: vec!["create table t (id int primary key, v int not null)".to_string()],
            tables: vec![(
                "t".to_string(),
                vec!["id".to_string(), "v".to_string()],
                vec![
                    vec![Value::Int(1), Value::Int(0)],
                    vec![Value::Int(2), Value::Int(0)],
                ],
            )],
        },
        origin_run_us: 0,
        events,
    }
}

/// A wait the simulated run never checked for a deadlock is not checked on the real engine
/// either: the cycle stays until the crash on both sides. Canary: with a planted check of that
/// wait that found nothing, the real engine checks it and finds the cycle, and the comparison
/// reports the difference.
#[test]
fn a_wait_the_simulated_run_never_checked_is_never_checked_on_the_real_engine() {
    let Some(mut engines) = engines() else { return };
    let check = transcript::check(&mut engines, &deadlock_broken_by_a_crash(false)).unwrap();
    assert!(check.first.is_none(), "{:?}", check.first);
    assert_eq!(check.compared, 7);
    let planted = transcript::check(&mut engines, &deadlock_broken_by_a_crash(true)).unwrap();
    let first = planted.first.expect("the real engine finds the cycle");
    assert_eq!(first.step, Some(6));
    assert_eq!(first.real, "ERR 40P01");
    assert!(planted.allowed.is_none());
}

/// The classes are documented: every one has a name and its reason.
#[test]
fn every_class_says_what_and_why() {
    for class in NONDETERMINISM.iter() {
        assert!(!class.name.is_empty() && class.why.len() > 40, "{class:?}");
    }
    for class in KNOWN_OPEN {
        assert!(!class.name.is_empty() && class.what.len() > 40, "{class:?}");
    }
}

/// Recording a transcript changes nothing in the run: same trace hash with and without.
#[test]
fn recording_a_transcript_keeps_the_trace_hash() {
    let scenario = shopsim_scenarios::find("inventory-race").unwrap();
    for profile in [Profile::PgRc, Profile::MariaRr] {
        let system = scenario.system(profile, &[]).unwrap();
        let config = scenario.sim_config();
        let plain = shopsim_sim::runner::run(&system, 5, &config);
        let (recorded, transcripts) =
            record_transcripts(|| shopsim_sim::runner::run(&system, 5, &config));
        assert_eq!(plain.trace_hash, recorded.trace_hash);
        let primary = transcripts.iter().find(|t| !t.read_only).unwrap();
        assert!(
            primary.statement_count() > 50,
            "{}",
            primary.statement_count()
        );
        assert!(!primary.setup.ddl.is_empty());
        // Off unless asked: a run outside record_transcripts records nothing.
        let (_, none) = record_transcripts(|| ());
        assert!(none.is_empty());
    }
}

/// A private server leaves nothing behind: its process group and directory are gone once the
/// value is dropped, also when the owner panics.
#[test]
fn a_private_server_leaves_nothing_behind() {
    if engines().is_none() {
        return;
    }
    let (pid, dir) = std::panic::catch_unwind(|| {
        let server = RealServer::start(EngineKind::Postgres).unwrap();
        let pid = server.pid().unwrap();
        let dir = server.dir().to_path_buf();
        assert!(dir.exists());
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        std::panic::panic_any((pid, dir));
    })
    .unwrap_err()
    .downcast::<(u32, std::path::PathBuf)>()
    .map(|b| *b)
    .unwrap();
    assert!(!dir.exists(), "{} is left", dir.display());
    // The process is reaped by the drop; a zombie entry would still show a state.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(
        status.is_empty() || !status.contains("postgres"),
        "{status}"
    );
}
