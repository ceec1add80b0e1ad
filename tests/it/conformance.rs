//! The simulated database against measurements of real PostgreSQL and MariaDB: every script of
//! `sim/conformance/hermitage.toml` under every profile it was measured on.

use shopsim_sim::db::conformance::{check_file, ScriptFile};
use shopsim_sim::db::Profile;

fn hermitage() -> ScriptFile {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sim/conformance/hermitage.toml"
    );
    let text = std::fs::read_to_string(path).expect("conformance data is in the repository");
    ScriptFile::parse(&text).expect("conformance data parses")
}

#[test]
fn hermitage_scripts_match_every_measured_profile() {
    let file = hermitage();
    let reports = check_file(&file, &Profile::ALL);
    // 21 scripts, every one measured on most of the 8 profiles.
    assert!(reports.len() >= 150, "only {} script runs", reports.len());
    let failures: Vec<String> = reports
        .iter()
        .filter(|r| r.mismatch.is_some())
        .map(|r| r.to_string())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} script runs differ from the measurements:\n{}",
        failures.len(),
        reports.len(),
        failures.join("\n")
    );
}
