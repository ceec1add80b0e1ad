//! Failure artifacts: everything needed to reproduce and understand a failing seed, written
//! atomically (a temporary file renamed into place) so that a kill at any moment leaves either
//! a complete artifact or none.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shopsim_sim::check::Report;
use shopsim_sim::history::History;
use shopsim_sim::runner::{Failure, SimConfig};

/// The format version; a different version is a foreign artifact.
pub const FORMAT: &str = "shopsim-artifact-1";

/// A failing seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Always [`FORMAT`].
    pub format: String,
    /// The scenario's name.
    pub scenario: String,
    /// The database profile.
    pub profile: String,
    /// The seed.
    pub seed: u64,
    /// Planted bugs that were on.
    pub bugs: Vec<String>,
    /// The exact configuration (with the swarm's fault draw).
    pub config: SimConfig,
    /// The scenario file's text, so a run of a file outside the registry replays too.
    pub scenario_toml: String,
    /// The commit of shopsim that found it.
    pub commit: String,
    /// The trace hash a replay must reproduce.
    pub trace_hash: u64,
    /// The failure.
    pub failure: Failure,
    /// Every check's report.
    pub reports: Vec<Report>,
    /// The history.
    pub history: History,
}

/// The commit shopsim runs from, if it runs inside a git checkout.
pub fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Writes `value` as JSON to `path` atomically.
pub fn write_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Reads an artifact (at most [`crate::input::ARTIFACT_BYTES_MAX`] bytes, a regular file);
/// errors name the file, the field and what is wrong with it.
pub fn read(path: &Path) -> Result<Artifact, String> {
    let text = crate::input::read_text(path, crate::input::ARTIFACT_BYTES_MAX)?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses an artifact's text; errors name the JSON path of the bad field.
pub fn parse(text: &str) -> Result<Artifact, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let artifact: Artifact = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| format!("not a shopsim artifact: {}", crate::input::json_error(&e)))?;
    de.end().map_err(|e| {
        format!(
            "line {}, column {}: trailing characters after the JSON value",
            e.line(),
            e.column()
        )
    })?;
    if artifact.format != FORMAT {
        return Err(format!(
            "format: expected `{FORMAT}`, got `{}`",
            shopsim_sim::input::cut(&artifact.format, 40)
        ));
    }
    Ok(artifact)
}

/// An artifact whose scenario, profile, bugs and configuration passed the scenario
/// validation ([`shopsim_scenarios::check_replay`]), ready to run.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The artifact as written.
    pub artifact: Artifact,
    /// Its scenario (embedded, or the built-in one it names).
    pub scenario: shopsim_scenarios::Scenario,
    /// Its database profile.
    pub profile: shopsim_sim::db::Profile,
}

/// Reads and checks an artifact: anything `replay` or `shrink` would hand the runner.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let artifact = read(path)?;
    check(artifact).map_err(|e| format!("{}: {e}", path.display()))
}

/// Checks a parsed artifact (see [`load`]).
pub fn check(artifact: Artifact) -> Result<Loaded, String> {
    let (scenario, profile) = shopsim_scenarios::check_replay(
        &artifact.scenario,
        &artifact.scenario_toml,
        &artifact.profile,
        &artifact.bugs,
        &artifact.config,
    )
    .map_err(|e| e.to_string())?;
    Ok(Loaded {
        artifact,
        scenario,
        profile,
    })
}

/// Where the artifact of `seed` of `scenario`@`profile` goes under `out`.
pub fn path(out: &Path, scenario: &str, profile: &str, seed: u64) -> PathBuf {
    out.join(format!("{scenario}@{profile}"))
        .join(format!("{seed}.json"))
}
