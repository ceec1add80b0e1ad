//! The profile matrix's findings (README, "Every profile"): each is a true finding about the
//! shop under that database profile, kept as its seed. The seed must fail with the check and
//! the error the README names, and pass with the fix a team would make (its scenario option).

use shopsim_scenarios::find;
use shopsim_sim::db::Profile;
use shopsim_sim::replay::failure_report;
use shopsim_sim::runner::run;

/// (profile, seed of inventory-race, failing check, error code in the witness).
const FINDINGS: [(Profile, u64, &str, &str); 4] = [
    // PostgreSQL REPEATABLE READ: a convert whose snapshot predates a concurrent update of a
    // hot product row fails with 40001, three times in a row (Laravel retries at once).
    (Profile::PgRr, 0, "no_5xx", "40001"),
    // PostgreSQL SERIALIZABLE: the same, and SSI's read/write cycles.
    (Profile::PgSer, 0, "no_5xx", "40001"),
    // MariaDB SERIALIZABLE: plain reads take shared locks; read-then-update deadlocks, three
    // times in a row.
    (Profile::MariaSer, 0, "deadlocks_handled", "1213"),
    // MariaDB with innodb_snapshot_isolation=ON: 1020, which Laravel 11.56 does not retry.
    (Profile::MariaRrSi, 0, "no_5xx", "1020"),
];

#[test]
fn each_profile_finding_fails_on_its_seed_and_passes_with_read_committed() {
    for (profile, seed, check, code) in FINDINGS {
        let scenario = find("inventory-race").unwrap();
        let config = scenario.sim_config();
        let system = scenario.system(profile, &[]).unwrap();
        let outcome = run(&system, seed, &config);
        let report = outcome.reports.iter().find(|r| r.check == check).unwrap();
        assert!(
            report.witness.contains(code) && outcome.failure.is_some(),
            "inventory-race@{profile} seed {seed}: expected {check} with {code}, got {:?}",
            outcome.failure
        );
        // The fix: the shop's transactions at READ COMMITTED, where its row locks make it
        // correct (`isolation_level = "read committed"` in `[shop]`).
        let mut fixed = scenario.clone();
        fixed.shop.isolation_level = "read committed".to_string();
        let outcome = run(&fixed.system(profile, &[]).unwrap(), seed, &config);
        assert!(
            outcome.passed(),
            "{}",
            failure_report(&outcome, None).unwrap()
        );
    }
}

/// Laravel 12.29 retries MariaDB's 1020 (pull request #56945), but retrying is not enough
/// under contention: the same seed still fails after three attempts.
#[test]
fn laravel_12_29_retries_1020_but_three_attempts_are_not_enough() {
    let mut scenario = find("inventory-race").unwrap();
    scenario.shop.laravel = shopsim_sim::db::client::LaravelVersion::V12_29;
    let outcome = run(
        &scenario.system(Profile::MariaRrSi, &[]).unwrap(),
        0,
        &scenario.sim_config(),
    );
    let failure = outcome.failure.expect("still fails");
    assert!(failure.witness.contains("1020"), "{}", failure.witness);
}
