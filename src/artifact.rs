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

/// Reads an artifact (at most [`crate::input::ARTIFACT_BYTES_MAX`] bytes, a regular file) for
/// a replay; errors name the file, the field and what is wrong with it.
pub fn read(path: &Path) -> Result<Header, String> {
    let text = crate::input::read_text(path, crate::input::ARTIFACT_BYTES_MAX)?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// An artifact as a replay reads it: every field but the history and the reports, which are
/// counted while parsing and not kept. They are most of the file and, parsed, about 14 times
/// its size in memory (a 16 MiB artifact took 232 MiB); the replay computes its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    format: String,
    scenario: String,
    profile: String,
    seed: u64,
    bugs: Vec<String>,
    config: SimConfig,
    scenario_toml: String,
    commit: String,
    trace_hash: u64,
    failure: Failure,
    #[serde(rename = "reports")]
    _reports: serde::de::IgnoredAny,
    history: HistoryCount,
}

impl Header {
    /// The artifact with an empty history and no reports.
    pub fn artifact(&self) -> Artifact {
        Artifact {
            format: self.format.clone(),
            scenario: self.scenario.clone(),
            profile: self.profile.clone(),
            seed: self.seed,
            bugs: self.bugs.clone(),
            config: self.config.clone(),
            scenario_toml: self.scenario_toml.clone(),
            commit: self.commit.clone(),
            trace_hash: self.trace_hash,
            failure: self.failure.clone(),
            reports: Vec::new(),
            history: History::default(),
        }
    }

    /// How many operations the artifact's history holds.
    pub fn history_ops(&self) -> usize {
        self.history.ops.0
    }
}

/// `{"ops": [...]}`, counted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryCount {
    ops: Counted,
}

/// A JSON list, counted without keeping its elements.
#[derive(Debug, Clone)]
struct Counted(usize);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Counted;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Counted, A::Error> {
                let mut n = 0;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Counted(n))
            }
        }
        d.deserialize_seq(Visitor)
    }
}

/// Parses an artifact's text; errors name the JSON path of the bad field.
pub fn parse(text: &str) -> Result<Header, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let header: Header = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| format!("not a shopsim artifact: {}", crate::input::json_error(&e)))?;
    de.end().map_err(|e| {
        format!(
            "line {}, column {}: trailing characters after the JSON value",
            e.line(),
            e.column()
        )
    })?;
    if header.format != FORMAT {
        return Err(format!(
            "format: expected `{FORMAT}`, got `{}`",
            shopsim_sim::input::cut(&header.format, 40)
        ));
    }
    Ok(header)
}

/// An artifact whose scenario, profile, bugs and configuration passed the scenario
/// validation ([`shopsim_scenarios::check_replay`]), ready to run.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The artifact as written, without its history and reports.
    pub artifact: Artifact,
    /// How many operations its history holds.
    pub history_ops: usize,
    /// Its scenario (embedded, or the built-in one it names).
    pub scenario: shopsim_scenarios::Scenario,
    /// Its database profile.
    pub profile: shopsim_sim::db::Profile,
}

/// Reads and checks an artifact: anything `replay` or `shrink` would hand the runner.
pub fn load(path: &Path) -> Result<Loaded, String> {
    let header = read(path)?;
    check(header).map_err(|e| format!("{}: {e}", path.display()))
}

/// Checks a parsed artifact (see [`load`]).
pub fn check(header: Header) -> Result<Loaded, String> {
    let (scenario, profile) = shopsim_scenarios::check_replay(
        &header.scenario,
        &header.scenario_toml,
        &header.profile,
        &header.bugs,
        &header.config,
    )
    .map_err(|e| e.to_string())?;
    Ok(Loaded {
        artifact: header.artifact(),
        history_ops: header.history_ops(),
        scenario,
        profile,
    })
}

/// Where the artifact of `seed` of `scenario`@`profile` goes under `out`.
pub fn path(out: &Path, scenario: &str, profile: &str, seed: u64) -> PathBuf {
    out.join(format!("{scenario}@{profile}"))
        .join(format!("{seed}.json"))
}
