//! Conformance files as a source: every script under each profile is run on the simulated
//! database and on the real engine and compared step by step; a recorded measurement in the
//! file is compared with the real engine too (which checks the stepping protocol against the
//! earlier measurement harness). `measure` writes the real outcomes back as a new file.

use std::collections::BTreeMap;

use shopsim_sim::db::conformance::{Outcome, Script, ScriptFile};
use shopsim_sim::db::Profile;

use crate::compare::{first_difference, simulate, Divergence};
use crate::{Engines, RunError};

/// The result of one script under one profile.
#[derive(Debug, Clone)]
pub struct ScriptCheck {
    /// The script's name.
    pub script: String,
    /// The profile.
    pub profile: Profile,
    /// Simulated vs real.
    pub divergence: Option<Divergence>,
    /// The file's measurement vs the real engine now (`None`: agree or nothing measured).
    pub measurement_differs: Option<Divergence>,
    /// The real outcome.
    pub real: Outcome,
    /// Steps played.
    pub steps: usize,
}

/// Runs every script of `file` under each of `profiles` on both sides.
pub fn check_file(
    engines: &mut Engines,
    file: &ScriptFile,
    profiles: &[Profile],
) -> Result<Vec<ScriptCheck>, RunError> {
    let mut checks = Vec::new();
    for script in &file.scripts {
        for &profile in profiles {
            if !script.outcomes.is_empty() && !script.outcomes.contains_key(&profile) {
                continue;
            }
            let real = engines.run_script(script, profile)?;
            let simulated = simulate(script, profile);
            let divergence = first_difference(script, profile, &simulated, &real);
            let measurement_differs = script
                .outcomes
                .get(&profile)
                .and_then(|measured| first_difference(script, profile, measured, &real));
            checks.push(ScriptCheck {
                script: script.name.clone(),
                profile,
                divergence,
                measurement_differs,
                real,
                steps: script.steps.len(),
            });
        }
    }
    Ok(checks)
}

/// Measures every script of `file` on the real engines under each of `profiles`: a copy of
/// the file whose outcomes are the real ones, with a header saying what was measured, on
/// which servers, when and how.
pub fn measure(
    engines: &mut Engines,
    file: &ScriptFile,
    profiles: &[Profile],
) -> Result<(ScriptFile, Vec<String>), RunError> {
    let mut scripts = Vec::new();
    for script in &file.scripts {
        let mut outcomes = BTreeMap::new();
        for &profile in profiles {
            outcomes.insert(profile, engines.run_script(script, profile)?);
        }
        scripts.push(Script {
            outcomes,
            ..script.clone()
        });
    }
    let names: Vec<&str> = profiles.iter().map(|p| p.name()).collect();
    let mut header = vec![
        format!(
            "Measured by `shopsim crosscheck --measure` on {} (UTC).",
            utc_now()
        ),
        format!("Profiles: {}.", names.join(", ")),
    ];
    for kind in [
        crate::server::EngineKind::Postgres,
        crate::server::EngineKind::MariaDb,
    ] {
        if let Some(version) = engines.version(kind) {
            header.push(format!("Server: {version}."));
        }
    }
    header.extend(protocol_lines());
    Ok((ScriptFile { scripts }, header))
}

/// How the real outcomes were obtained, for headers of measured files and findings.
pub fn protocol_lines() -> Vec<String> {
    vec![
        "Protocol: one connection per session, steps sent one at a time in script order; a"
            .to_string(),
        "statement counts as blocked when the server reports it waiting for a lock (pg_locks;"
            .to_string(),
        "Innodb_row_lock_current_waits and SHOW ENGINE INNODB STATUS), never after a fixed sleep."
            .to_string(),
        "PostgreSQL sessions run with deadlock_timeout = 1ms and each wait's deadlock check"
            .to_string(),
        "completes in the step that began it; lock wait timeouts follow the format's clock (1 s"
            .to_string(),
        "per SQL step). Statements queued behind a blocked one are sent one at a time, the"
            .to_string(),
        "lowest step first, once everything else has finished or waits. MariaDB: a read view"
            .to_string(),
        "held open on a connection of its own keeps purge from removing deleted records while"
            .to_string(),
        "the steps run. Private servers: initdb / mariadb-install-db defaults.".to_string(),
    ]
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
