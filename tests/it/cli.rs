//! The `shopsim` binary as users run it: exit codes and output.

use std::process::Command;

fn shopsim(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_shopsim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
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
