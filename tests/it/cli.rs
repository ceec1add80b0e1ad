//! The `shopsim` binary as users run it: exit codes and output.

use std::process::Command;

/// Runs the binary from the repository's root: (exit code, stdout, stderr).
pub(crate) fn shopsim(args: &[&str]) -> (i32, String, String) {
    shopsim_in(std::path::Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

/// Runs the binary in `dir`: (exit code, stdout, stderr).
pub(crate) fn shopsim_in(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_shopsim"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the binary runs");
    (
        output.status.code().expect("exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn conformance_passes_on_the_measured_scripts() {
    let (code, out, _) = shopsim(&["conformance", "sim/conformance/hermitage.toml"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("152 passed, 0 failed\n"), "{out}");
}

#[test]
fn conformance_reports_a_mismatch_with_exit_1() {
    let dir = std::env::temp_dir().join(format!("shopsim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("wrong.toml");
    std::fs::write(
        &path,
        "[[script]]\nname = \"wrong\"\nsteps = [[\"T1\", \"select * from test\"]]\n\
         [script.outcome.maria_rr]\nsteps = [\"rows[]\"]\nfinal = \"1=>10, 2=>20\"\n",
    )
    .unwrap();
    let (code, out, _) = shopsim(&["conformance", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("wrong maria_rr: step 1 (T1: select * from test): expected `rows[]`, got `rows[1:10,2:20]`"),
        "{out}"
    );
    assert!(out.ends_with("0 passed, 1 failed\n"), "{out}");
}

#[test]
fn conformance_bad_input_exits_2_naming_the_value() {
    let (code, _, err) = shopsim(&[
        "conformance",
        "sim/conformance/hermitage.toml",
        "--profile",
        "pg_xx",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--profile: unknown database profile `pg_xx`"),
        "{err}"
    );
    let (code, _, err) = shopsim(&["conformance", "no/such/file.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("no/such/file.toml"), "{err}");
    let (code, _, _) = shopsim(&["no-such-command"]);
    assert_eq!(code, 2);
}

/// A file with no measured outcome (for the profiles asked) has nothing to judge: no pass.
#[test]
fn conformance_with_nothing_measured_is_no_pass() {
    let dir = std::env::temp_dir().join(format!("shopsim-cli-unmeasured-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("unmeasured.toml");
    std::fs::write(
        &path,
        "[[script]]\nname = \"bare\"\nsteps = [[\"T1\", \"select * from test\"]]\n",
    )
    .unwrap();
    let (code, out, err) = shopsim(&["conformance", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains("nothing to judge: no script has a measured outcome"),
        "{err}"
    );
    let (code, _, err) = shopsim(&[
        "conformance",
        "sim/conformance/hermitage.toml",
        "--profile",
        "pg_rc",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = shopsim(&[
        "conformance",
        "sim/conformance/crosscheck.toml",
        "--profile",
        "pg_rc",
    ]);
    // Most found scripts were measured on one engine only; those are named, not passed.
    assert!(code <= 1, "{err}");
    assert!(out.contains("not judged (no measured outcome): "), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `crosscheck`'s lane count and swarm mode are checked before any server starts.
#[test]
fn crosscheck_bad_input_exits_2_naming_the_value() {
    for (args, names) in [
        (
            &["crosscheck", "--random", "1", "--workers", "0"][..],
            "--workers: expected a whole number in 1..=64, got `0`",
        ),
        (
            &["crosscheck", "--random", "1", "--workers", "65"][..],
            "got `65`",
        ),
        (
            &["crosscheck", "--random", "1", "--swarm"][..],
            "--swarm: needs --scenario",
        ),
    ] {
        let (code, _, err) = shopsim(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(names), "{args:?}: {err}");
    }
}

/// A fresh, empty temporary folder for this test process.
pub(crate) fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shopsim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn list_and_run_a_scenario() {
    let (code, out, _) = shopsim(&["list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("checkout-concurrency") && out.contains("order-lock-race"),
        "{out}"
    );
    let (code, out, err) = shopsim(&["run", "payment-race", "--seeds", "2", "--profile", "pg_rc"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("payment-race@pg_rc"), "{out}");
}

#[test]
fn a_planted_bug_fails_with_exit_1_and_a_paste_able_replay() {
    let (code, out, _) = shopsim(&[
        "run",
        "inventory-race",
        "--seeds",
        "3",
        "--profile",
        "maria_rr",
        "--bug",
        "oversell_check_then_act",
    ]);
    assert_eq!(code, 1, "{out}");
    let fail = out
        .lines()
        .find(|l| l.starts_with("FAIL inventory-race@maria_rr seed="))
        .expect("a FAIL line");
    assert!(fail.contains("no_oversell"), "{fail}");
    let replay = out
        .lines()
        .find_map(|l| l.strip_prefix("note: reproduce with: cargo run --release -- "))
        .expect("a replay command");
    let args: Vec<&str> = replay.split_whitespace().collect();
    let (code, out, _) = shopsim(&args);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(fail), "{out}");
}

#[test]
fn bad_input_exits_2_naming_flag_and_value() {
    for (args, needle) in [
        (
            vec!["run", "checkout-concurency"],
            "did you mean `checkout-concurrency`",
        ),
        (
            vec!["run", "inventory-race", "--seeds", "0"],
            "--seeds: must be at least 1",
        ),
        (
            vec!["run", "inventory-race", "--seed", "abc"],
            "--seed: must be an unsigned 64-bit integer, got `abc`",
        ),
        (
            vec!["run", "inventory-race", "--bug", "nope"],
            "unknown bug `nope`",
        ),
        (
            vec!["run", "inventory-race", "--jobs", "0"],
            "--jobs: expected a whole number in 1..=256, got `0`",
        ),
        (vec!["fuzz", "--duration", "8x"], "`8x`"),
        (vec!["fuzz", "--seeds", "5", "--shard", "3/2"], "`3/2`"),
        (vec!["fuzz", "--seeds", "5", "--jobs", "0"], "--jobs"),
        (
            vec!["fuzz", "--seeds", "5", "--out", "/proc/nope"],
            "--out /proc/nope",
        ),
        (vec!["replay", "/nonexistent/artifact.json"], "ARTIFACT"),
        (
            vec!["fuzz", "payment-race", "payment-race", "--seeds", "2"],
            "`payment-race@pg_rc` is given twice",
        ),
        (
            vec!["fuzz", "--seeds", "2", "--max-artifacts-per-group", "1"],
            "--max-artifacts-per-group: must be in 2..=1000",
        ),
        (
            vec!["fuzz", "--seeds", "2", "--max-groups", "0"],
            "--max-groups",
        ),
        (
            vec!["fuzz", "--seeds", "2", "--status-interval", "0s"],
            "--status-interval: must be longer than 0",
        ),
        (
            vec!["replay", "payment-race", "--seed", "x"],
            "--seed: must be an unsigned 64-bit integer",
        ),
    ] {
        let (code, out, err) = shopsim(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let dir = temp_dir("bad-scenario");
    let file = dir.join("s.toml");
    std::fs::write(&file, "name = \"x\"\nwhy = \"y\"\n[shop]\nshoppers = -1\n").unwrap();
    let (code, _, err) = shopsim(&["run", "--file", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("shop.shoppers: expected a whole number in 0..=1000, got `-1`"),
        "{err}"
    );
    let foreign = dir.join("foreign.json");
    std::fs::write(&foreign, "{\"format\": \"something-else\"}").unwrap();
    let (code, _, err) = shopsim(&["replay", foreign.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("not a shopsim artifact"), "{err}");
}

#[test]
fn fuzz_writes_artifacts_that_replay_with_the_same_hash_and_a_diagram() {
    let out_dir = temp_dir("fuzz");
    let (code, out, err) = shopsim(&[
        "fuzz",
        "payment-race",
        "--seeds",
        "8",
        "--profile",
        "pg_rc",
        "--bug",
        "payment_check_then_act",
        "--out",
        out_dir.to_str().unwrap(),
        "--jobs",
        "2",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let dir = out_dir.join("payment-race@pg_rc");
    let artifact = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .expect("an artifact")
        .unwrap()
        .path();
    let diagram = out_dir.join("d.mmd");
    // With the statement recorder on (`--trace`, `--diagram`) the replay still gives the
    // artifact's hash: exit 1, not 5.
    let (code, out, err) = shopsim(&[
        "replay",
        artifact.to_str().unwrap(),
        "--diagram",
        diagram.to_str().unwrap(),
        "--trace",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("payment_exactly_once"), "{out}");
    assert!(out.contains("\ndatabase primary (pg_rc): "), "{out}");
    assert!(std::fs::read_to_string(&diagram)
        .unwrap()
        .starts_with("sequenceDiagram"));
    assert!(out_dir.join("report.json").exists() && out_dir.join("junit.xml").exists());
    // A tampered hash is nondeterminism: exit 5.
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&artifact).unwrap()).unwrap();
    json["trace_hash"] = serde_json::json!(12345);
    let tampered = out_dir.join("tampered.json");
    std::fs::write(&tampered, json.to_string()).unwrap();
    let (code, _, _) = shopsim(&["replay", tampered.to_str().unwrap()]);
    assert_eq!(code, 5);
    // An edited input is another run: its recorded hash does not apply, and the run is
    // judged on its own (no nondeterminism claimed).
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&artifact).unwrap()).unwrap();
    assert!(
        json["inputs_hash"].is_string(),
        "an artifact records its inputs hash"
    );
    let other = if json["profile"] == "pg_rc" {
        "maria_rr"
    } else {
        "pg_rc"
    };
    json["profile"] = serde_json::json!(other);
    let edited = out_dir.join("edited.json");
    std::fs::write(&edited, json.to_string()).unwrap();
    let (code, out, err) = shopsim(&["replay", edited.to_str().unwrap()]);
    assert!(code == 0 || code == 1, "{out}{err}");
    assert!(err.contains("were edited after it was written"), "{err}");
    assert!(!err.contains("NONDETERMINISM"), "{err}");
}

#[test]
fn a_killed_campaign_keeps_every_reported_failure_and_resumes() {
    use std::io::{BufRead, BufReader};
    let out_dir = temp_dir("kill");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shopsim"))
        .args([
            "fuzz",
            "inventory-race",
            "--seeds",
            "100000",
            "--bug",
            "oversell_check_then_act",
            "--out",
            out_dir.to_str().unwrap(),
            "--jobs",
            "2",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Read the reported artifacts on a thread, so a campaign that reports nothing cannot hang
    // the test: after 60 s it is killed and the test fails.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(path) = line.trim().strip_prefix("artifact: ") {
                if tx
                    .send(std::path::PathBuf::from(path.split("  ").next().unwrap()))
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    // Failures are grouped: only a new group's first failure prints its artifact.
    let mut reported = Vec::new();
    while reported.is_empty() {
        match rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(path) => reported.push(path),
            Err(_) => {
                child.kill().unwrap();
                panic!("the campaign reported {} failures in 60 s", reported.len());
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for path in &reported {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let json: serde_json::Value = serde_json::from_str(&text).expect("a complete artifact");
        assert_eq!(json["format"], "shopsim-artifact-2");
    }
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("state.json")).unwrap())
            .unwrap();
    let before = state["seeds_run"].as_u64().unwrap();
    assert!(
        before.is_multiple_of(16),
        "the state is saved between batches: {before}"
    );
    // --seeds is the campaign's total: 16 more than the killed session saved.
    let total = (before + 16).to_string();
    let (code, out, err) = shopsim(&[
        "fuzz",
        "inventory-race",
        "--seeds",
        &total,
        "--bug",
        "oversell_check_then_act",
        "--out",
        out_dir.to_str().unwrap(),
        "--jobs",
        "2",
        "--resume",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("state.json")).unwrap())
            .unwrap();
    assert_eq!(state["seeds_run"].as_u64().unwrap(), before + 16);
}

#[test]
fn check_determinism_passes_in_and_across_processes() {
    let (code, out, err) = shopsim(&[
        "check-determinism",
        "order-lock-race",
        "--seeds",
        "3",
        "--profile",
        "maria_rr",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("3 seeds deterministic (twice in process, once in a fresh process)"),
        "{out}"
    );
}

#[test]
fn shrink_makes_a_failing_run_smaller_and_it_replays() {
    let out_dir = temp_dir("shrink");
    let (code, _, _) = shopsim(&[
        "fuzz",
        "inventory-race",
        "--seeds",
        "4",
        "--profile",
        "pg_rc",
        "--bug",
        "oversell_check_then_act",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    let dir = out_dir.join("inventory-race@pg_rc");
    let artifact = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let (code, out, err) = shopsim(&["shrink", artifact.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("clients "))
        .expect("a size line");
    let (before, after): (u32, u32) = {
        let mut it = line
            .trim_start_matches("clients ")
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty());
        (
            it.next().unwrap().parse().unwrap(),
            it.next().unwrap().parse().unwrap(),
        )
    };
    assert!(after < before, "{line}");
    let shrunk = out
        .lines()
        .find_map(|l| l.strip_prefix("artifact: "))
        .unwrap();
    // Stock shrinks too: an oversell needs two shoppers and one unit, no more.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shrunk).unwrap()).unwrap();
    let scenario: toml::Value = toml::from_str(json["scenario_toml"].as_str().unwrap()).unwrap();
    assert_eq!(scenario["shop"]["shoppers"].as_integer(), Some(2), "{out}");
    assert_eq!(
        scenario["shop"]["stock_per_product"].as_integer(),
        Some(1),
        "{out}"
    );
    assert_eq!(
        scenario["shop"]["products_per_tenant"].as_integer(),
        Some(1),
        "{out}"
    );
    let (code, out, _) = shopsim(&["replay", shrunk]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no_oversell"), "{out}");
}

/// A scenario whose round trip is longer than the client's deadline (one-way latency at
/// least 0.9 s, a deadline of 1.5 s; main's bounds refuse a deadline below what a request
/// needs inside the shop, not a slow network): every request ends unknown, nothing is ever
/// bought, and every safety check has nothing to judge. Such a run proves nothing and must
/// fail with its own exit code (6), not pass.
#[test]
fn a_run_without_progress_fails_with_exit_6() {
    let dir = temp_dir("no-progress");
    let path = dir.join("slow.toml");
    std::fs::write(
        &path,
        "name = \"too-slow\"\nwhy = \"The client gives up before any answer can arrive.\"\n\
         profiles = [\"pg_rc\"]\n[sim]\nduration_ms = 2_000\nlatency_us_min = 900_000\n\
         latency_us_max = 1_000_000\n[shop]\nshoppers = 5\nrequest_timeout_ms = 1_500\n\
         db_acquire_timeout_ms = 500\nprovider_timeout_ms = 500\n",
    )
    .unwrap();
    let (code, out, _) = shopsim(&["run", "--file", path.to_str().unwrap(), "--seed", "3"]);
    assert_eq!(code, 6, "{out}");
    assert!(
        out.contains("FAIL too-slow@pg_rc seed=3 progress: the run made too little progress: orders placed 0 (at least 1)"),
        "{out}"
    );
}

#[test]
fn steered_runs_replay_from_their_command_and_in_a_fresh_process() {
    let (code, out, err) = shopsim(&[
        "run",
        "lc-last-unit",
        "--seeds",
        "10",
        "--profile",
        "pg_rc",
        "--bug",
        "oversell_check_then_act",
        "--steering",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let fail = out
        .lines()
        .find(|l| l.starts_with("FAIL lc-last-unit@pg_rc seed="))
        .expect("a FAIL line");
    let replay = out
        .lines()
        .find_map(|l| l.strip_prefix("note: reproduce with: cargo run --release -- "))
        .expect("a replay command");
    assert!(replay.ends_with(" --steering"), "{replay}");
    let args: Vec<&str> = replay.split_whitespace().collect();
    let (code, out, _) = shopsim(&args);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(fail), "{out}");
    // The replay prints its configuration: steered.
    assert!(out.contains("enabled: true"), "{out}");
    let (code, out, err) = shopsim(&[
        "check-determinism",
        "lc-webhook-twice",
        "--seeds",
        "3",
        "--steering",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("6 seeds deterministic (twice in process, once in a fresh process)"),
        "{out}"
    );
}

/// `run` lists the declared race windows its seeds never reached, once for the whole run (a
/// scenario that does not lock orders never reaches the lock windows).
#[test]
fn run_lists_the_race_windows_it_never_reached() {
    let (code, out, err) = shopsim(&["run", "inventory-race", "--seeds", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("race windows reached: "), "{out}");
    let line = "never reached: sometimes!(\"lock: a second lock attempt is rejected\")";
    assert_eq!(out.matches(line).count(), 1, "{out}");
}
