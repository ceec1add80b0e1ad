//! Failure artifacts: everything needed to reproduce and understand a failing seed, written
//! atomically (a temporary file renamed into place) so that a kill at any moment leaves either
//! a complete artifact or none.
//!
//! Every value an artifact stores reads back bit for bit (the replay guarantee): floats
//! through serde_json's exact `float_roundtrip` parsing, the scenario through TOML, and the
//! 64-bit seed and trace hash as strings (see `json_u64`), so that no JSON reader that holds
//! numbers as doubles can round them.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shopsim_sim::check::Report;
use shopsim_sim::history::History;
use shopsim_sim::runner::{Failure, SimConfig};

/// The format written. Version 2 stores the seed and the trace hash as strings.
pub const FORMAT: &str = "shopsim-artifact-2";
/// The formats read: version 1 stored them as JSON integers.
pub const FORMATS_READ: [&str; 2] = ["shopsim-artifact-1", FORMAT];

/// A failing seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Always [`FORMAT`] when written.
    pub format: String,
    /// The scenario's name.
    pub scenario: String,
    /// The database profile.
    pub profile: String,
    /// The seed.
    #[serde(with = "crate::json_u64::decimal")]
    pub seed: u64,
    /// Planted bugs that were on.
    pub bugs: Vec<String>,
    /// The exact configuration (with the swarm's fault draw).
    pub config: SimConfig,
    /// The scenario file's text, so a run of a file outside the registry replays too.
    pub scenario_toml: String,
    /// The commit the shopsim binary that found it was built from (`build.rs`), with
    /// `-dirty` if its tree had uncommitted changes.
    pub commit: String,
    /// The version of the shopsim binary that found it.
    #[serde(default)]
    pub version: String,
    /// The trace hash a replay must reproduce.
    #[serde(with = "crate::json_u64::hex")]
    pub trace_hash: u64,
    /// The failure.
    pub failure: Failure,
    /// Every check's report.
    pub reports: Vec<Report>,
    /// The history.
    pub history: History,
}

/// The commit this binary was built from (see `build.rs`); never read at run time.
pub const BUILD_COMMIT: &str = env!("SHOPSIM_BUILD_COMMIT");
/// This binary's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Writes `value` as JSON to `path` atomically, replacing any file there; returns the bytes
/// written.
pub fn write_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<u64> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    write_bytes_atomic(path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// Writes `bytes` to `path` atomically, replacing any file there.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temporary(path)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Writes `value` as JSON to `path` atomically unless a file is there already: then the
/// error is `AlreadyExists` and the file is untouched. Returns the bytes written.
pub fn write_new<T: Serialize>(path: &Path, value: &T) -> std::io::Result<u64> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let tmp = temporary(path)?;
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
    }
    // A hard link never replaces an existing file (unlike rename), and the name appears
    // with its whole content at once.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked?;
    Ok(bytes.len() as u64)
}

/// A temporary name next to `path` (same directory, so renaming is atomic), creating the
/// directory.
fn temporary(path: &Path) -> std::io::Result<PathBuf> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{}: not a file name", path.display())))?;
    let mut tmp = name.to_os_string();
    tmp.push(format!(".{}.tmp", std::process::id()));
    Ok(path.with_file_name(tmp))
}

/// The longest artifact read (a multi-tenant-mixed history is a few MiB).
pub const ARTIFACT_BYTES_MAX: u64 = 256 << 20;

/// Reads an artifact; errors name the file and what is wrong with it.
pub fn read(path: &Path) -> Result<Artifact, String> {
    let text =
        read_bounded(path, ARTIFACT_BYTES_MAX).map_err(|e| format!("{}: {e}", path.display()))?;
    let artifact: Artifact = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a shopsim artifact: {e}", path.display()))?;
    if !FORMATS_READ.contains(&artifact.format.as_str()) {
        return Err(format!(
            "{}: format `{}` is not `{FORMAT}`",
            path.display(),
            artifact.format
        ));
    }
    Ok(artifact)
}

/// Reads a UTF-8 text file of at most `bytes_max` bytes: a larger file is refused without
/// being read, so a hostile or corrupt file cannot exhaust memory.
pub fn read_bounded(path: &Path, bytes_max: u64) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(bytes_max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > bytes_max {
        return Err(format!("larger than {bytes_max} bytes"));
    }
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))
}

/// The folder name of `scenario`@`profile`: characters other than letters, digits and
/// `._@-` become `_`, so that a scenario named `a/../b` stays one folder under `--out`.
pub fn folder_name(scenario: &str, profile: &str) -> String {
    folder_of(&format!("{scenario}@{profile}"))
}

/// The folder name of a run named `scenario@profile` (see [`folder_name`]).
pub fn folder_of(system: &str) -> String {
    let name: String = system
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._@-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with('.') {
        format!("_{name}")
    } else {
        name
    }
}

/// Where the artifact of `seed` of `scenario`@`profile` goes, relative to `--out`.
pub fn relative_path(scenario: &str, profile: &str, seed: u64) -> String {
    format!("{}/{seed}.json", folder_name(scenario, profile))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names_stay_inside_out() {
        assert_eq!(
            folder_name("inventory-race", "pg_rc"),
            "inventory-race@pg_rc"
        );
        assert_eq!(folder_name("a/../b", "pg_rc"), "a_.._b@pg_rc");
        assert_eq!(folder_name("..", "x"), "_..@x");
        assert_eq!(relative_path("../../etc", "p", 1), "_.._.._etc@p/1.json");
    }

    #[test]
    fn write_new_never_replaces_a_file() {
        let dir = std::env::temp_dir().join(format!("shopsim-write-new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("a.json");
        write_new(&path, &1).unwrap();
        let err = write_new(&path, &2).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary left"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
