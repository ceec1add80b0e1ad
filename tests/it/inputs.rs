//! Hostile input: no flag, scenario, artifact, state file or conformance script can crash
//! shopsim, and every refusal is exit 2 naming the field or flag and the value. Property
//! tests run in process through the same checks the commands use (cheap); a sample runs the
//! real binary. Each regression test names the input that failed before.

use std::process::Command;

use proptest::prelude::*;
use shopsim_scenarios::fields::FIELDS;
use shopsim_scenarios::Scenario;
use shopsim_sim::input::Kind;

fn shopsim(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_shopsim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shopsim-inputs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A valid artifact of a small built-in run (its history left out: replay does not read it).
fn artifact(config_edit: impl Fn(&mut serde_json::Value)) -> serde_json::Value {
    let scenario = shopsim_scenarios::find("payment-race").unwrap();
    let mut config = serde_json::to_value(scenario.sim_config()).unwrap();
    config_edit(&mut config);
    serde_json::json!({
        "format": "shopsim-artifact-1",
        "scenario": "payment-race",
        "profile": "pg_rc",
        "seed": 1,
        "bugs": [],
        "config": config,
        "scenario_toml": scenario.to_toml(),
        "commit": "unknown",
        "trace_hash": 0,
        "failure": {"kind": "Violation", "check": "payment_exactly_once", "witness": "w"},
        "reports": [],
        "history": {"ops": []},
    })
}

/// Before: forged artifacts panicked in the runner (latency min above max, duration 0,
/// probability 1.5, interval 0), `replay` panicked on an unknown profile, and `shrink`
/// overflowed on a quiet period of 2^64 - 1. Now every one is exit 2 naming the field.
#[test]
fn forged_artifacts_are_refused_by_replay_and_shrink() {
    let dir = temp_dir("artifacts");
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (
            artifact(|c| {
                c["latency_us_min"] = 900.into();
                c["latency_us_max"] = 100.into();
            }),
            "config.latency_us_max",
        ),
        (
            artifact(|c| c["duration_ms"] = 0.into()),
            "config.duration_ms",
        ),
        (
            artifact(|c| c["faults"]["loss_probability"] = 1.5.into()),
            "config.faults.loss_probability",
        ),
        (
            artifact(|c| c["faults"]["interval_ms_min"] = 0.into()),
            "config.faults.interval_ms_min",
        ),
        (
            artifact(|c| c["faults"]["quiet_period_ms"] = u64::MAX.into()),
            "config.faults.quiet_period_ms",
        ),
        (
            {
                let mut a = artifact(|_| {});
                a["profile"] = "pg_xx".into();
                a
            },
            "profile",
        ),
        (
            {
                let mut a = artifact(|_| {});
                a["bugs"] = serde_json::json!(["nope"]);
                a
            },
            "bugs[0]",
        ),
        (
            {
                let mut a = artifact(|_| {});
                let toml = a["scenario_toml"]
                    .as_str()
                    .unwrap()
                    .replace("db_max_connections = 100", "db_max_connections = 0");
                a["scenario_toml"] = toml.into();
                a
            },
            "scenario_toml: shop.db_max_connections",
        ),
    ];
    for (i, (json, field)) in cases.iter().enumerate() {
        let path = dir.join(format!("{i}.json"));
        std::fs::write(&path, json.to_string()).unwrap();
        for command in ["replay", "shrink"] {
            let (code, out, err) = shopsim(&[command, path.to_str().unwrap()]);
            assert_eq!(code, 2, "{command} {field}: {out}{err}");
            assert!(
                err.contains(&format!("{field}: ")),
                "{command} {field}: {err}"
            );
        }
    }
    // Before: the whole history was parsed (a 16 MiB artifact took 232 MiB); now it is
    // counted. An artifact at the size limit replays within the memory budget.
    let mut big = artifact(|_| {});
    let op = serde_json::json!({"index": 0, "process": "p", "kind": "k", "invoke_us": 0,
        "complete_us": 1, "outcome": "Ok", "status": 200, "details": {"pad": "x".repeat(1_000)}});
    big["history"]["ops"] = serde_json::Value::Array(vec![op; 25_000]);
    let path = dir.join("big.json");
    std::fs::write(&path, big.to_string()).unwrap();
    let (code, out, err) = shopsim(&["replay", path.to_str().unwrap(), "--expect-hash", "0"]);
    assert_eq!(code, 5, "{out}{err}");
    // The same artifact unforged replays.
    let path = dir.join("good.json");
    std::fs::write(&path, artifact(|_| {}).to_string()).unwrap();
    let (code, out, err) = shopsim(&["replay", path.to_str().unwrap(), "--expect-hash", "0"]);
    assert_eq!(code, 5, "{out}{err}");
}

/// Before: `--expect-hash zz` was reported as nondeterminism (exit 5); the seed-count,
/// duration and shard flags overflowed; a link to /dev/zero ate all memory and a FIFO hung.
#[test]
fn hostile_flags_and_paths_are_exit_2_naming_the_flag() {
    let dir = temp_dir("flags");
    let zero = dir.join("zero.json");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let fifo = dir.join("fifo.toml");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let (zero, fifo) = (zero.to_str().unwrap(), fifo.to_str().unwrap());
    for (args, needle) in [
        (
            vec![
                "replay",
                "payment-race",
                "--seed",
                "1",
                "--expect-hash",
                "zz",
            ],
            "--expect-hash: ",
        ),
        (
            vec!["fuzz", "--seeds", "1", "--shard", "1/4611686018427387904"],
            "--shard: ",
        ),
        (
            vec!["fuzz", "--duration", "213503982334602d"],
            "--duration: ",
        ),
        (
            vec![
                "run",
                "payment-race",
                "--seeds",
                "2",
                "--seed-start",
                "18446744073709551615",
            ],
            "--seeds: ",
        ),
        (vec!["run", "payment-race", "--jobs", "1000000"], "--jobs: "),
        (vec!["replay", zero], "not a regular file"),
        (vec!["shrink", zero], "not a regular file"),
        (vec!["run", "--file", fifo], "not a regular file"),
        (vec!["conformance", fifo], "not a regular file"),
        (vec!["scenario", "--check", zero], "not a regular file"),
    ] {
        let (code, out, err) = shopsim(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// The flags that came with campaigns (`--max-artifacts-per-group`, `--max-groups`,
/// `--status-interval`, `--file` on fuzz, check-determinism and bench, `run --json`) and with
/// the real-engine crosscheck are bounded like every other: exit 2 naming the flag and the
/// value, before any work (no server is started for a refused crosscheck).
#[test]
fn campaign_and_crosscheck_flags_are_exit_2_naming_the_flag() {
    let dir = temp_dir("new-flags");
    let fifo = dir.join("fifo.toml");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let zero = dir.join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let out = dir.join("campaign");
    let (fifo, zero, out) = (
        fifo.to_str().unwrap(),
        zero.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let fuzz = |flags: &[&'static str]| -> Vec<String> {
        let mut args = vec!["fuzz", "payment-race", "--seeds", "1", "--out", out];
        args.extend_from_slice(flags);
        args.into_iter().map(String::from).collect()
    };
    let words = |args: &[&str]| -> Vec<String> { args.iter().map(|a| a.to_string()).collect() };
    for (args, needles) in [
        (
            fuzz(&["--max-artifacts-per-group", "1001"]),
            vec!["--max-artifacts-per-group: ", "`1001`"],
        ),
        (
            fuzz(&["--max-groups", "10001"]),
            vec!["--max-groups: ", "`10001`"],
        ),
        (
            fuzz(&["--status-interval", "36601d"]),
            vec!["--status-interval: ", "`36601d`"],
        ),
        (
            words(&["fuzz", "--seeds", "1000000000000001", "--out", out]),
            vec!["--seeds: ", "`1000000000000001`"],
        ),
        (
            words(&["fuzz", "--file", fifo, "--seeds", "1", "--out", out]),
            vec!["--file ", "not a regular file"],
        ),
        (
            words(&["check-determinism", "--file", zero]),
            vec!["--file ", "not a regular file"],
        ),
        (
            words(&["bench", "--file", fifo]),
            vec!["--file ", "not a regular file"],
        ),
        (
            words(&["bench", "payment-race", "--seeds", "0"]),
            vec!["--seeds: ", "`0`"],
        ),
        (
            words(&["run", "payment-race", "--json", "--jobs", "0"]),
            vec!["--jobs: ", "`0`"],
        ),
        (
            words(&["crosscheck", "--random", "0"]),
            vec!["--random: ", "`0`"],
        ),
        (
            words(&["crosscheck", "--random", "1000000001"]),
            vec!["--random: ", "`1000000001`"],
        ),
        (
            words(&[
                "crosscheck",
                "--scenario",
                "payment-race",
                "--seeds",
                "2",
                "--seed-start",
                "18446744073709551615",
            ]),
            vec!["--seeds: "],
        ),
        (
            words(&["crosscheck", "--random", "1", "--shrink-budget", "1000001"]),
            vec!["--shrink-budget: ", "`1000001`"],
        ),
        (
            words(&["crosscheck", "--random", "1", "--scenario", "payment-race"]),
            vec!["exactly one source"],
        ),
        (
            words(&["crosscheck", fifo]),
            vec!["FILE ", "not a regular file"],
        ),
        (
            words(&["crosscheck", "--scenario", "payment-rac"]),
            vec!["--scenario: ", "payment-race"],
        ),
        (
            words(&["crosscheck", "--random", "1", "--measure", "m.toml"]),
            vec!["--measure: "],
        ),
        (
            words(&["crosscheck", "--random", "1", "--profile", "pg_xx"]),
            vec!["--profile: ", "pg_xx"],
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stdout, err) = shopsim(&args);
        assert_eq!(code, 2, "{args:?}: {stdout}{err}");
        for needle in needles {
            assert!(err.contains(needle), "{args:?}: {needle}: {err}");
        }
    }
}

/// Before: a forged `state.json` with `next_index` near 2^64 overflowed on `--resume`. The
/// state format has changed since (version 2: counts and groups); a state of the old format
/// is refused by its format, and the same forgeries of the new one by their field.
#[test]
fn a_forged_campaign_state_is_exit_2() {
    let dir = temp_dir("state");
    for (state, needle) in [
        (
            r#"{"next_index": 18446744073709551615, "seeds_run": 0, "failures": {}, "identity": ""}"#,
            "format: ",
        ),
        (
            r#"{"format": "shopsim-fuzz-state-2", "seeds_run": 18446744073709551615}"#,
            "seeds_run: ",
        ),
        (
            r#"{"format": "shopsim-fuzz-state-2", "seeds_run": -4}"#,
            "seeds_run: ",
        ),
        (
            r#"{"format": "shopsim-fuzz-state-2", "groups": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}"#,
            "groups[0]: ",
        ),
        (
            r#"{"format": "shopsim-fuzz-state-2", "seeds_run": 0"#,
            "line 1, column ",
        ),
    ] {
        std::fs::write(dir.join("state.json"), state).unwrap();
        let (code, out, err) = shopsim(&[
            "fuzz",
            "payment-race",
            "--seeds",
            "1",
            "--resume",
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{state}: {out}{err}");
        assert!(err.contains(needle), "{state}: {err}");
    }
}

/// Before: SIGINT ended a campaign with exit 0. Now 130, after saving the state (SIGTERM
/// too: see `campaign::a_terminated_campaign_saves_its_reports`).
#[test]
fn sigint_ends_fuzz_with_130_after_saving_state() {
    let dir = temp_dir("sigint");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shopsim"))
        .args(["fuzz", "payment-race", "--duration", "1h", "--jobs", "1"])
        .args(["--out", dir.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let state = dir.join("state.json");
    let started = std::time::Instant::now();
    while !state.exists() && started.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(state.exists(), "no state after 60 s");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved["format"], "shopsim-fuzz-state-2", "{saved}");
    assert!(saved["seeds_run"].is_u64(), "{saved}");
}

/// `--help` lists exit codes, profiles and planted bugs from the registries; the template
/// parses back as a valid scenario.
#[test]
fn help_lists_registries_and_the_template_is_valid() {
    for command in ["run", "fuzz", "replay"] {
        let (code, out, _) = shopsim(&[command, "--help"]);
        assert_eq!(code, 0);
        for profile in shopsim_sim::db::Profile::ALL {
            assert!(out.contains(profile.name()), "{command}: {profile}");
        }
        for (bug, _) in shopsim_model::bugs::NAMES {
            assert!(out.contains(bug), "{command}: {bug}");
        }
        for code in ["  2 ", "  3 ", "  4 ", "  130 "] {
            assert!(out.contains(code), "{command} --help: exit code{code}");
        }
    }
    let (code, template, _) = shopsim(&["scenario", "--template"]);
    assert_eq!(code, 0);
    let dir = temp_dir("template");
    let path = dir.join("template.toml");
    std::fs::write(&path, &template).unwrap();
    let (code, out, err) = shopsim(&["scenario", "--check", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Hostile values for a field of `kind`, as TOML literals.
fn literal(kind: Kind) -> BoxedStrategy<String> {
    let ints = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        (-3i64..3).prop_map(|i| i.to_string()),
        Just(u64::MAX.to_string()),
        Just("18446744073709551616".to_string()),
    ];
    let floats = prop_oneof![
        any::<f64>().prop_map(|x| format!("{x:?}")),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        (-2.0f64..2.0).prop_map(|x| format!("{x:?}")),
    ];
    let strings = "\\PC{0,12}".prop_map(|s| toml::Value::String(s).to_string());
    match kind {
        Kind::Int { min, max } | Kind::OptionalInt { min, max } => prop_oneof![
            ints,
            (min.max(0) as u64..=max.min(1 << 50)).prop_map(|i| i.to_string()),
            Just((i128::from(min) - 1).to_string()),
            Just((i128::from(max) + 1).to_string()),
            floats,
        ]
        .boxed(),
        Kind::Float { .. } => prop_oneof![floats, ints].boxed(),
        Kind::Bool => {
            prop_oneof![Just("true".to_string()), Just("false".to_string()), ints].boxed()
        }
        Kind::Names { choices, .. } => {
            let names: Vec<String> = choices()
                .into_iter()
                .chain(["nope", ""])
                .map(|n| toml::Value::String(n.to_string()).to_string())
                .collect();
            proptest::collection::vec(proptest::sample::select(names), 0..6)
                .prop_map(|v| format!("[{}]", v.join(", ")))
                .boxed()
        }
        _ => prop_oneof![strings, ints].boxed(),
    }
}

/// A scenario with one field set to a hostile value, and that field's path.
fn scenario_with_hostile_field() -> impl Strategy<Value = (String, &'static str)> {
    (0..FIELDS.len())
        .prop_flat_map(|i| (Just(FIELDS[i].path), literal(FIELDS[i].kind)))
        .prop_map(|(path, value)| {
            let (table, key) = path.rsplit_once('.').unwrap_or(("", path));
            let head = if table.is_empty() {
                String::new()
            } else {
                format!("[{table}]\n")
            };
            let mut text = String::new();
            if path != "name" {
                text.push_str("name = \"x\"\n");
            }
            if path != "why" {
                text.push_str("why = \"y\"\n");
            }
            (format!("{text}{head}{key} = {value}\n"), path)
        })
}

/// The place an error names is a field of the table, a TOML line, or the file.
fn names_a_field(field: &str) -> bool {
    let base = field
        .trim_start_matches("scenario_toml: ")
        .split('[')
        .next()
        .unwrap();
    shopsim_scenarios::fields::field(base).is_some()
        || field.starts_with("line ")
        || field == "file"
        || FIELDS
            .iter()
            .any(|f| f.path.starts_with(&format!("{base}.")))
        || base.contains('.')
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    /// Valid structure, hostile values: refused naming a field (the one set, unless a
    /// relation with another field broke), or accepted and then within every bound and
    /// runnable.
    #[test]
    fn scenario_values_are_refused_by_name_or_within_bounds((text, path) in scenario_with_hostile_field()) {
        match Scenario::from_toml(&text) {
            Err(e) => {
                prop_assert!(names_a_field(&e.field), "{text}\n{e}");
                prop_assert!(e.to_string().starts_with(&e.field));
                // A value of the wrong kind or out of its bounds is blamed on its own field;
                // only a broken relation may name another one.
                let own_kind = FIELDS.iter().any(|f| e.expected == format!("expected {}", f.kind.expected()));
                if own_kind {
                    prop_assert!(e.field.starts_with(path) || e.field.starts_with("line"), "{path}: {e}");
                }
            }
            Ok(s) => {
                let document = serde_json::to_value(&s).unwrap();
                prop_assert!(shopsim_sim::input::check_fields(FIELDS, &document).is_ok());
                for profile in s.profile_list() {
                    prop_assert!(s.system(profile, &[]).is_ok());
                }
                prop_assert!(s.sim_config().validate().is_ok());
                prop_assert!(shopsim_scenarios::fields::worst_case_run_ms(&s) <= s.sim.time_limit_ms);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Hostile structure: any text, or a built-in scenario cut and spliced, never panics and
    /// is refused naming a place.
    #[test]
    fn scenario_structure_never_panics(
        base in 0usize..shopsim_scenarios::builtin().len(),
        cut in 0usize..2_000,
        splice in "\\PC{0,40}",
        noise in "(\\PC|\n|\\[|\\]|=|\"){0,200}",
    ) {
        let text = shopsim_scenarios::builtin()[base].to_toml();
        let mut at = cut.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        for candidate in [format!("{}{splice}{}", &text[..at], &text[at..]), noise] {
            if let Err(e) = Scenario::from_toml(&candidate) {
                prop_assert!(!e.field.is_empty(), "{candidate}: {e}");
            }
        }
    }

    /// An artifact's configuration: refused naming `config.*`, or accepted and valid for the
    /// runner (which asserts it).
    #[test]
    fn artifact_configs_are_refused_by_name_or_valid_for_the_runner(
        duration in prop_oneof![Just(0u64), 1u64..100_000, Just(u64::MAX)],
        limit in prop_oneof![Just(0u64), 1u64..2_000_000, Just(u64::MAX)],
        latency in (0u64..2_000_000, 0u64..2_000_000),
        interval in (0u64..10_000, 0u64..10_000),
        loss in prop_oneof![Just(f64::NAN), -1.0f64..2.0, Just(f64::INFINITY)],
        quiet in prop_oneof![0u64..20_000, Just(u64::MAX)],
        families in proptest::collection::btree_set(proptest::sample::select(shopsim_sim::fault::FaultFamily::ALL.to_vec()), 0..7),
    ) {
        let scenario = shopsim_scenarios::find("inventory-race").unwrap();
        let mut config = scenario.sim_config();
        config.duration_ms = duration;
        config.time_limit_ms = limit;
        (config.latency_us_min, config.latency_us_max) = latency;
        (config.faults.interval_ms_min, config.faults.interval_ms_max) = interval;
        config.faults.loss_probability = loss;
        config.faults.quiet_period_ms = quiet;
        config.faults.families = families;
        match shopsim_scenarios::check_replay("inventory-race", "", "pg_rc", &[], &config) {
            Err(e) => prop_assert!(e.field.starts_with("config."), "{e}"),
            Ok(_) => prop_assert!(config.validate().is_ok()),
        }
    }

    /// Conformance scripts with hostile statements, sessions and profiles: parsed or refused
    /// naming the script, never a panic; accepted ones run.
    #[test]
    fn conformance_scripts_never_panic(
        statement in prop_oneof![
            "\\PC{0,40}",
            Just("SLEEP nan".to_string()),
            Just("SLEEP 1e308".to_string()),
            Just("select * from test where id = 9223372036854775807 + 1".to_string()),
            Just("update test set value = value * 9223372036854775807".to_string()),
        ],
        session in prop_oneof![Just("T1"), Just("T2"), Just("-"), Just("")],
        profile in prop_oneof![Just("pg_rc"), Just("maria_rr"), Just("pg_xx")],
    ) {
        let text = format!(
            "[[script]]\nname = \"s\"\nsteps = [[\"T1\", \"begin\"], [{}, {}]]\n[script.outcome.{profile}]\nsteps = [\"ok\", \"ok\"]\nfinal = \"1=>10, 2=>20\"\n",
            toml::Value::String(session.to_string()),
            toml::Value::String(statement.clone()),
        );
        match shopsim_sim::db::conformance::ScriptFile::parse(&text) {
            Err(e) => prop_assert!(!e.field.is_empty(), "{e}"),
            Ok(file) => {
                let _ = shopsim_sim::db::conformance::check_file(&file, &[shopsim_sim::db::Profile::PgRc]);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The real binary on hostile flag values (a sample: each case starts a process):
    /// exit 2 naming the flag, never a panic (101) or an overflow.
    #[test]
    fn the_binary_refuses_hostile_flags_by_name(
        (command, flag) in proptest::sample::select(vec![
            ("run", "--seeds"), ("run", "--seed"), ("run", "--seed-start"), ("run", "--jobs"),
            ("run", "--profile"), ("run", "--bug"), ("fuzz", "--duration"), ("fuzz", "--shard"),
            ("fuzz", "--jobs"), ("fuzz", "--max-artifacts-per-group"), ("fuzz", "--max-groups"),
            ("fuzz", "--status-interval"), ("replay", "--expect-hash"),
            ("check-determinism", "--seeds"),
        ]),
        value in prop_oneof![
            Just("-1".to_string()), Just("18446744073709551616".to_string()), Just("0".to_string()),
            Just("1/0".to_string()), Just("zz".to_string()), "\\PC{1,12}",
        ],
    ) {
        // A valid scenario and seed around the hostile flag, so only it can be wrong.
        let mut args = vec![command, "payment-race"];
        if command == "replay" {
            args.extend(["--seed", "1"]);
        }
        let out = temp_dir("flag-fuzz");
        if command == "fuzz" {
            if flag != "--duration" {
                args.extend(["--seeds", "1"]);
            }
            args.extend(["--out", out.to_str().unwrap()]);
        }
        args.extend([flag, value.as_str()]);
        let (code, out, err) = shopsim(&args);
        // A value that happens to be valid would run: only small runs can be, and they pass.
        // A well-formed --expect-hash that is not the seed's hash is a mismatch (exit 5).
        let mismatch = flag == "--expect-hash" && code == 5 && u64::from_str_radix(&value, 16).is_ok();
        prop_assert!(code == 2 || code == 0 || mismatch, "{args:?}: {code} {out}{err}");
        if code == 2 {
            prop_assert!(err.contains(flag) || err.contains(&value), "{args:?}: {err}");
        }
    }
}
