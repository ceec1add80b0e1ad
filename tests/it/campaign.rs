//! Fuzz campaigns as a person and a CI system live with them, through the real binary:
//! every artifact replays with its hash, output stays bounded, one campaign per folder,
//! `--duration` across `--resume`, JUnit and report.json, status lines, scenario files
//! everywhere with commands that can be pasted, the build commit, and `shrink`'s names and
//! exit codes.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::{shopsim, shopsim_in, temp_dir};

fn json_of(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The artifacts under a campaign's `out` (its `<scenario>@<profile>/` folders).
fn artifacts(out: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in std::fs::read_dir(out).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "json") {
                found.push(file);
            }
        }
    }
    found.sort();
    found
}

/// Runs a printed command the way a person pastes it: through `sh`, with the binary in
/// place of `cargo run --release --`.
fn paste(command: &str) -> (i32, String, String) {
    let exe = env!("CARGO_BIN_EXE_shopsim");
    let rest = command
        .strip_prefix("cargo run --release --")
        .unwrap_or_else(|| panic!("not a shopsim command: {command}"));
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("'{exe}'{rest}"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn line_after<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{out}"))
}

/// The replay guarantee end to end: a real campaign with planted bugs and swarm mode (every
/// seed draws its own fault rates, the floats that once read back one ULP off), keeping
/// every failure's artifact; each one replays with the hash it recorded.
#[test]
fn every_artifact_of_a_swarm_campaign_replays_with_its_hash() {
    let out = temp_dir("replay-all");
    let (code, stdout, err) = shopsim(&[
        "fuzz",
        "inventory-race",
        "order-lock-race",
        "--seeds",
        "200",
        "--bug",
        "oversell_check_then_act",
        "--bug",
        "order_lock_check_without_row_lock",
        "--max-artifacts-per-group",
        "1000",
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "2",
    ]);
    assert_eq!(code, 1, "{stdout}{err}");
    assert!(!stdout.contains("NONDETERMINISM"), "{stdout}");
    let all = artifacts(&out);
    let report = json_of(&out.join("report.json"));
    assert!(all.len() >= 50, "{} artifacts: {stdout}", all.len());
    assert_eq!(report["nondeterministic"], 0);
    for artifact in &all {
        let (code, replayed, err) = shopsim(&["replay", artifact.to_str().unwrap()]);
        assert_eq!(code, 1, "{}: {replayed}{err}", artifact.display());
        let recorded = json_of(artifact)["trace_hash"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            replayed.contains(&format!("trace hash: {recorded}")),
            "{}: {replayed}",
            artifact.display()
        );
    }
}

/// Failures are grouped: one FAIL line and at most --max-artifacts-per-group artifacts per
/// group however many seeds fail, and the state file does not grow with them.
#[test]
fn a_campaign_groups_failures_and_keeps_its_output_bounded() {
    let out = temp_dir("bounded");
    let fuzz = |seeds: &str, resume: bool| {
        let mut args = vec![
            "fuzz",
            "inventory-race",
            "--seeds",
            seeds,
            "--bug",
            "oversell_check_then_act",
            "--out",
            out.to_str().unwrap(),
            "--jobs",
            "2",
        ];
        if resume {
            args.push("--resume");
        }
        shopsim(&args)
    };
    let (code, stdout, err) = fuzz("96", false);
    assert_eq!(code, 1, "{stdout}{err}");
    let report = json_of(&out.join("report.json"));
    let groups = report["groups"].as_array().unwrap();
    let failing = report["failing_seeds"].as_u64().unwrap();
    assert!(failing >= 60, "{failing} failing seeds");
    assert!(
        (groups.len() as u64) * 4 < failing,
        "{} groups",
        groups.len()
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("FAIL ")).count(),
        groups.len(),
        "one FAIL line per group:\n{stdout}"
    );
    assert!(stdout.contains("repeats: +"), "{stdout}");
    let kept = artifacts(&out);
    assert!(kept.len() <= groups.len() * 3, "{} artifacts", kept.len());
    let total: u64 = groups.iter().map(|g| g["count"].as_u64().unwrap()).sum();
    assert_eq!(total, failing);
    for g in groups {
        for which in ["first", "smallest"] {
            let path = g[which]["artifact"].as_str().expect("kept");
            assert!(Path::new(path).exists(), "{path}");
            assert!(g[which]["ops"].as_u64().unwrap() > 0);
        }
        assert!(
            g["smallest"]["ops"].as_u64() <= g["first"]["ops"].as_u64(),
            "{g}"
        );
        for a in g["artifacts"].as_array().unwrap() {
            assert!(kept.contains(&PathBuf::from(a.as_str().unwrap())), "{a}");
        }
    }
    let state_before = std::fs::metadata(out.join("state.json")).unwrap().len();
    let (code, stdout, err) = fuzz("288", true);
    assert_eq!(code, 1, "{stdout}{err}");
    let report = json_of(&out.join("report.json"));
    let groups_after = report["groups"].as_array().unwrap().len();
    assert!(report["failing_seeds"].as_u64().unwrap() >= 3 * failing - 40);
    let state_after = std::fs::metadata(out.join("state.json")).unwrap().len();
    // Per new group at most a few KiB, and a few bytes of larger counts: not per seed.
    let allowed = state_before + 4_096 * (groups_after - groups.len()) as u64 + 256;
    assert!(
        state_after <= allowed,
        "{state_before} -> {state_after} bytes"
    );
    assert!(artifacts(&out).len() <= groups_after * 3);
    assert!(
        stdout.len() < 3_000 * groups_after + 3_000,
        "{} bytes",
        stdout.len()
    );
}

/// One campaign per folder: a second one is refused with exit 2, naming the holder, and the
/// lock dies with its process (a killed campaign resumes).
#[test]
fn a_second_campaign_on_one_folder_is_refused_naming_the_holder() {
    let out = temp_dir("lock");
    let mut first = Command::new(env!("CARGO_BIN_EXE_shopsim"))
        .args([
            "fuzz",
            "inventory-race",
            "--seeds",
            "100000",
            "--out",
            out.to_str().unwrap(),
            "--jobs",
            "1",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The state file is written after the lock is taken.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !out.join("state.json").exists() {
        assert!(std::time::Instant::now() < deadline, "no state after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for resume in [false, true] {
        let mut args = vec![
            "fuzz",
            "inventory-race",
            "--seeds",
            "4",
            "--out",
            out.to_str().unwrap(),
        ];
        if resume {
            args.push("--resume");
        }
        let (code, _, err) = shopsim(&args);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("another campaign is running"), "{err}");
        assert!(err.contains(&format!("pid={}", first.id())), "{err}");
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let state = json_of(&out.join("state.json"));
    let total = (state["seeds_run"].as_u64().unwrap() + 4).to_string();
    let (code, stdout, err) = shopsim(&[
        "fuzz",
        "inventory-race",
        "--seeds",
        &total,
        "--out",
        out.to_str().unwrap(),
        "--resume",
    ]);
    assert_eq!(code, 0, "{stdout}{err}");
}

/// `--duration` is the campaign's total: a resumed campaign runs what is left, and the
/// elapsed time and seeds/s of the reports cover every session.
#[test]
fn duration_is_the_campaigns_total_across_resume() {
    let out = temp_dir("duration");
    let fuzz = |duration: &str, resume: bool| {
        let mut args = vec![
            "fuzz",
            "payment-race",
            "--profile",
            "pg_rc",
            "--duration",
            duration,
            "--out",
            out.to_str().unwrap(),
            "--jobs",
            "1",
        ];
        if resume {
            args.push("--resume");
        }
        shopsim(&args)
    };
    let (code, stdout, err) = fuzz("2s", false);
    assert_eq!(code, 0, "{stdout}{err}");
    let first = json_of(&out.join("state.json"));
    assert!(first["elapsed_ms"].as_u64().unwrap() >= 2_000, "{first}");
    let (code, stdout, err) = fuzz("2s", true);
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(stdout.contains("nothing left to run"), "{stdout}");
    let second = json_of(&out.join("state.json"));
    assert_eq!(second["seeds_run"], first["seeds_run"]);
    assert_eq!(second["sessions"], 2);
    let (code, stdout, err) = fuzz("4s", true);
    assert_eq!(code, 0, "{stdout}{err}");
    let report = json_of(&out.join("report.json"));
    let seeds = report["seeds_run"].as_u64().unwrap();
    let elapsed = report["elapsed_s"].as_f64().unwrap();
    assert!(seeds > first["seeds_run"].as_u64().unwrap());
    assert!((4.0..8.0).contains(&elapsed), "{report}");
    assert_eq!(report["sessions"], 3);
    let rate = report["seeds_per_s"].as_f64().unwrap();
    assert!((rate - seeds as f64 / elapsed).abs() < 1e-6, "{report}");
}

/// A corrupt state file is bad input: exit 2 naming the field.
#[test]
fn a_corrupt_state_is_refused_naming_the_field() {
    let out = temp_dir("corrupt");
    let args = |resume: bool| {
        let mut a = vec![
            "fuzz".to_string(),
            "payment-race".to_string(),
            "--profile".to_string(),
            "pg_rc".to_string(),
            "--seeds".to_string(),
            "2".to_string(),
            "--out".to_string(),
            out.display().to_string(),
        ];
        if resume {
            a.push("--resume".to_string());
        }
        a
    };
    let run = |a: Vec<String>| shopsim(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (code, _, err) = run(args(false));
    assert_eq!(code, 0, "{err}");
    let path = out.join("state.json");
    let mut state = json_of(&path);
    state["runs"][0]["seeds"] = serde_json::json!(-5);
    std::fs::write(&path, state.to_string()).unwrap();
    let (code, _, err) = run(args(true));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("runs[0].seeds: must be an unsigned integer, got `-5`"),
        "{err}"
    );
    std::fs::write(&path, "{\"next_index\": 3, \"seeds_run\": 3}").unwrap();
    let (code, _, err) = run(args(true));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("format: must be `shopsim-fuzz-state-2`"),
        "{err}"
    );
}

/// Checks that `xml` is well formed as far as a CI parser cares: tags balance, attribute
/// values are quoted, and text holds no raw `<` or unescaped `&`.
fn assert_well_formed_xml(xml: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = xml
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
        .expect("declaration");
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').map_or(text.len(), |j| i + j + 1)];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity),
                "raw & in text: {entity}"
            );
        }
        let close = rest[open..].find('>').expect("tag closes") + open;
        let tag = &rest[open + 1..close];
        assert!(!tag.contains('<'), "{tag}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "closing {name}");
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap().to_string());
        }
        assert_eq!(tag.matches('"').count() % 2, 0, "{tag}");
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "unclosed {stack:?}");
}

/// JUnit has one testcase per (scenario@profile, check), passing ones included, each with
/// classname and time, and a failure body with the witness, the replay commands and the
/// artifact; report.json has the seed counts, groups, exemplars, commands, version, commit.
#[test]
fn junit_and_report_json_describe_every_check_and_group() {
    let out = temp_dir("junit");
    let (code, stdout, err) = shopsim(&[
        "fuzz",
        "payment-race",
        "--profile",
        "pg_rc",
        "--seeds",
        "12",
        "--bug",
        "payment_check_then_act",
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "2",
    ]);
    assert_eq!(code, 1, "{stdout}{err}");
    let report = json_of(&out.join("report.json"));
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert_well_formed_xml(&junit);
    let checks = report["scenarios"][0]["checks"].as_array().unwrap();
    let cases: Vec<&str> = junit.matches("<testcase ").collect();
    assert_eq!(cases.len(), checks.len(), "{junit}");
    assert!(checks.len() >= 14, "{checks:?}");
    for line in junit
        .lines()
        .filter(|l| l.trim_start().starts_with("<testcase "))
    {
        assert!(line.contains("classname=\"payment-race@pg_rc\""), "{line}");
        assert!(line.contains(" time=\""), "{line}");
    }
    assert!(junit.contains("<testcase name=\"no_oversell\" classname=\"payment-race@pg_rc\""));
    assert!(
        junit.matches("/>\n").count() >= 8,
        "passing testcases: {junit}"
    );
    let failure = &junit[junit.find("<failure ").expect("a failure")..];
    let failure = &failure[..failure.find("</failure>").unwrap()];
    assert!(failure.contains("witness (seed "), "{failure}");
    assert!(
        failure.contains("replay first: cargo run --release -- replay "),
        "{failure}"
    );
    let artifact = line_after(failure, "artifact: ");
    assert!(Path::new(artifact).exists(), "{artifact}");
    let (_, version, _) = shopsim(&["--version"]);
    assert_eq!(report["version"], "0.1.0");
    assert!(
        version.contains(report["commit"].as_str().unwrap()),
        "{version}"
    );
    assert_eq!(report["scenarios"][0]["name"], "payment-race@pg_rc");
    assert_eq!(report["scenarios"][0]["seeds"], 12);
    let group = &report["groups"][0];
    assert_eq!(group["check"], "payment_exactly_once");
    let (code, replayed, _) = paste(group["first"]["replay"].as_str().unwrap());
    assert_eq!(code, 1, "{replayed}");
    assert!(replayed.contains("payment_exactly_once"), "{replayed}");
}

/// `run --json`: per scenario its figures and each seed's trace hash (the one replay
/// prints), and the failures grouped with replay commands.
#[test]
fn run_json_gives_per_seed_hashes_and_groups() {
    let (code, stdout, err) = shopsim(&[
        "run",
        "inventory-race",
        "--seeds",
        "3",
        "--profile",
        "pg_rc",
        "--bug",
        "oversell_check_then_act",
        "--json",
    ]);
    assert_eq!(code, 1, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("only JSON on stdout");
    assert_eq!(summary["exit_code"], 1);
    let scenario = &summary["scenarios"][0];
    assert_eq!(scenario["name"], "inventory-race@pg_rc");
    let per_seed = scenario["per_seed"].as_array().unwrap();
    assert_eq!(per_seed.len(), 3);
    assert_eq!(per_seed[1]["seed"], "1");
    let (_, replayed, _) = shopsim(&[
        "replay",
        "inventory-race",
        "--seed",
        "1",
        "--profile",
        "pg_rc",
        "--bug",
        "oversell_check_then_act",
    ]);
    let hash = per_seed[1]["trace_hash"].as_str().unwrap();
    assert!(
        replayed.contains(&format!("trace hash: {hash}")),
        "{replayed}"
    );
    let group = &summary["groups"][0];
    assert_eq!(group["check"], "no_oversell");
    let (code, replayed, _) = paste(group["smallest"]["replay"].as_str().unwrap());
    assert_eq!(code, 1);
    assert!(replayed.contains("no_oversell"), "{replayed}");
}

/// Without a terminal a campaign prints status lines at a fixed interval, and no bar.
#[test]
fn a_campaign_without_a_terminal_prints_status_lines() {
    let out = temp_dir("status");
    let (code, stdout, err) = shopsim(&[
        "fuzz",
        "payment-race",
        "--profile",
        "pg_rc",
        "--duration",
        "3s",
        "--status-interval",
        "1s",
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "1",
    ]);
    assert_eq!(code, 0, "{stdout}{err}");
    let status: Vec<&str> = err.lines().filter(|l| l.starts_with("status: ")).collect();
    assert!(status.len() >= 2, "{err}");
    for line in status {
        for needle in [" seeds, ", " seeds/s, ", " groups (", "elapsed ", " of 3s"] {
            assert!(line.contains(needle), "{line}");
        }
    }
    assert!(
        !err.contains('\r') && !stdout.contains('\r'),
        "a bar was drawn: {err}"
    );
}

/// A scenario file works wherever a built-in name does, and every command a failure report
/// prints for it can be pasted as it is and gives the same failure.
#[test]
fn a_scenario_file_works_everywhere_and_its_commands_paste() {
    let dir = temp_dir("file");
    let file = dir.join("last unit.toml");
    std::fs::write(
        &file,
        "name = \"last-unit\"\nwhy = \"Four shoppers want the last unit.\"\nprofiles = [\"pg_rc\"]\n\
         [sim]\nduration_ms = 4_000\n[faults]\nquiet_period_ms = 2_000\n\
         [shop]\nshoppers = 4\nproducts_per_tenant = 1\nstock_per_product = 1\nitems_per_cart = 1\n\
         quantity_max = 1\ndouble_convert_probability = 0.0\narrival_window_ms = 10\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (code, stdout, err) = shopsim(&[
        "run",
        "--file",
        file,
        "--seeds",
        "8",
        "--bug",
        "oversell_check_then_act",
    ]);
    assert_eq!(code, 1, "{stdout}{err}");
    let fail = stdout.lines().find(|l| l.starts_with("FAIL ")).unwrap();
    let command = line_after(&stdout, "note: reproduce with: ");
    assert!(command.contains("--file '"), "{command}");
    let (code, replayed, err) = paste(command);
    assert_eq!(code, 1, "{command}: {replayed}{err}");
    assert!(replayed.contains(fail), "{replayed}");

    let out = dir.join("fuzz");
    let (code, stdout, err) = shopsim(&[
        "fuzz",
        "--file",
        file,
        "--seeds",
        "16",
        "--bug",
        "oversell_check_then_act",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stdout}{err}");
    let fail = stdout.lines().find(|l| l.starts_with("FAIL ")).unwrap();
    for prefix in ["note: reproduce with: ", "note: or by seed: "] {
        let command = line_after(&stdout, prefix);
        let (code, replayed, err) = paste(command);
        assert_eq!(code, 1, "{command}: {replayed}{err}");
        assert!(replayed.contains(fail), "{command}: {replayed}");
    }

    let (code, stdout, err) = shopsim(&["check-determinism", "--file", file, "--seeds", "2"]);
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(stdout.contains("2 seeds deterministic"), "{stdout}");
    let (code, stdout, err) = shopsim(&["bench", "--file", file, "--seeds", "2"]);
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(stdout.contains("last-unit@pg_rc"), "{stdout}");
}

/// An artifact names the commit the binary was built from, wherever it runs: here from a
/// folder outside any git checkout and from another repository.
#[test]
fn artifacts_name_the_commit_the_binary_was_built_from() {
    let (code, version, _) = shopsim(&["--version"]);
    assert_eq!(code, 0);
    let commit = version
        .trim()
        .strip_prefix("shopsim 0.1.0 (commit ")
        .and_then(|v| v.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{version}"));
    let hex = commit.trim_end_matches("-dirty");
    assert!(
        hex.len() == 40 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{commit}"
    );
    let elsewhere = temp_dir("commit-elsewhere");
    let other_repo = temp_dir("commit-other-repo");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(&other_repo)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let have_repo = git(&["init", "-q"])
        && git(&[
            "-c",
            "user.email=a@b",
            "-c",
            "user.name=a",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ]);
    let mut dirs = vec![elsewhere];
    if have_repo {
        dirs.push(other_repo);
    }
    for dir in dirs {
        let out = dir.join("out");
        let (code, stdout, err) = shopsim_in(
            &dir,
            &[
                "fuzz",
                "payment-race",
                "--profile",
                "pg_rc",
                "--seeds",
                "4",
                "--bug",
                "payment_check_then_act",
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 1, "{stdout}{err}");
        let artifact = &artifacts(&out)[0];
        let json = json_of(artifact);
        assert_eq!(json["commit"], commit, "{}", dir.display());
        assert_eq!(json["version"], "0.1.0");
    }
}

/// `shrink` never replaces a file (its names come from the source artifact and the check),
/// and an artifact with nothing to shrink is refused: exit 2 if its run no longer fails its
/// check, exit 5 if it does not replay with its hash.
#[test]
fn shrink_never_overwrites_and_refuses_what_it_cannot_shrink() {
    let out = temp_dir("shrink-names");
    let (code, stdout, err) = shopsim(&[
        "fuzz",
        "inventory-race",
        "--profile",
        "pg_rc",
        "--seeds",
        "3",
        "--bug",
        "oversell_check_then_act",
        "--max-artifacts-per-group",
        "10",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{stdout}{err}");
    let sources = artifacts(&out);
    assert!(sources.len() >= 2, "{sources:?}");
    let shrink = |source: &Path| {
        let (code, stdout, err) = shopsim(&["shrink", source.to_str().unwrap(), "--seeds", "4"]);
        assert_eq!(code, 1, "{stdout}{err}");
        PathBuf::from(line_after(&stdout, "artifact: "))
    };
    let a = shrink(&sources[0]);
    let first_bytes = std::fs::read(&a).unwrap();
    let b = shrink(&sources[0]);
    let c = shrink(&sources[1]);
    assert_ne!(a, b);
    assert_ne!(a, c);
    assert_ne!(b, c);
    assert_eq!(
        std::fs::read(&a).unwrap(),
        first_bytes,
        "the first result is untouched"
    );
    let stem = sources[0].file_stem().unwrap().to_str().unwrap();
    assert!(
        a.ends_with(format!("{stem}-shrunk-no_oversell.json")),
        "{}",
        a.display()
    );
    assert!(
        b.ends_with(format!("{stem}-shrunk-no_oversell-2.json")),
        "{}",
        b.display()
    );

    let mut json = json_of(&sources[0]);
    json["failure"]["check"] = serde_json::json!("one_order_per_cart");
    let other_check = out.join("other-check.json");
    std::fs::write(&other_check, json.to_string()).unwrap();
    let (code, _, err) = shopsim(&["shrink", other_check.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no longer fails `one_order_per_cart`"),
        "{err}"
    );
    assert!(err.contains("nothing to shrink"), "{err}");
    let mut json = json_of(&sources[0]);
    json["trace_hash"] = serde_json::json!("0000000000000001");
    let tampered = out.join("tampered.json");
    std::fs::write(&tampered, json.to_string()).unwrap();
    let (code, _, err) = shopsim(&["shrink", tampered.to_str().unwrap()]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("does not replay"), "{err}");
}

/// SIGTERM (a Kubernetes pod being stopped) ends a campaign as Ctrl-C does: the running
/// batch completes, the state and the reports are written, and `--resume` continues. The
/// exit code is 130, as for Ctrl-C (`inputs::sigint_ends_fuzz_with_130_after_saving_state`):
/// a campaign cut short did not finish, and a Job whose pod exits 0 would count it done.
#[test]
fn a_terminated_campaign_saves_its_reports() {
    let out = temp_dir("sigterm");
    let child = Command::new(env!("CARGO_BIN_EXE_shopsim"))
        .args([
            "fuzz",
            "payment-race",
            "--profile",
            "pg_rc",
            "--seeds",
            "100000",
            "--out",
            out.to_str().unwrap(),
            "--jobs",
            "1",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !out.join("state.json").exists() {
        assert!(std::time::Instant::now() < deadline, "no state after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(130), "{stdout}");
    assert!(
        stdout.contains("stopped; continue with --resume"),
        "{stdout}"
    );
    let report = json_of(&out.join("report.json"));
    assert_eq!(report["stopped"], true);
    assert!(out.join("junit.xml").exists());
}

/// Past `--max-groups`, failures of new shapes are counted in one group per scenario and
/// check, so the number of groups stays bounded too.
#[test]
fn groups_past_the_limit_are_counted_together() {
    let out = temp_dir("max-groups");
    let (code, stdout, err) = shopsim(&[
        "fuzz",
        "inventory-race",
        "--seeds",
        "24",
        "--bug",
        "oversell_check_then_act",
        "--max-groups",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "2",
    ]);
    assert_eq!(code, 1, "{stdout}{err}");
    let report = json_of(&out.join("report.json"));
    let groups = report["groups"].as_array().unwrap();
    // One real group, then at most one per (scenario@profile, check) for the rest.
    assert!(groups.len() <= 1 + 2, "{groups:?}");
    assert!(
        groups.iter().skip(1).all(|g| g["shape"]
            .as_str()
            .unwrap()
            .starts_with("(more shapes than --max-groups")),
        "{groups:?}"
    );
    let total: u64 = groups.iter().map(|g| g["count"].as_u64().unwrap()).sum();
    assert_eq!(total, report["failing_seeds"].as_u64().unwrap());
    assert!(
        groups.len() >= 2,
        "the other profile's failures overflow: {groups:?}"
    );
}
