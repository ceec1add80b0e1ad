//! Artifacts: everything needed to reproduce and understand a failing seed, written
//! atomically (a temporary file renamed into place) so that a kill at any moment leaves either
//! a complete artifact or none. A fuzz corpus entry ([`CORPUS_FORMAT`]) is an artifact of a
//! run that did not fail but reached rare race windows: the same fields, no failure, and it
//! replays the same way (`shopsim replay ENTRY.json`).
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
/// The format of a fuzz corpus entry: an artifact without a failure.
pub const CORPUS_FORMAT: &str = "shopsim-corpus-1";
/// The formats read: version 1 stored them as JSON integers.
pub const FORMATS_READ: [&str; 3] = ["shopsim-artifact-1", FORMAT, CORPUS_FORMAT];

/// A failing seed, or a corpus entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// [`FORMAT`] (a failure) or [`CORPUS_FORMAT`] (a corpus entry) when written.
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
    /// [`inputs_hash`] of the inputs as written, so a replay can tell an artifact edited
    /// since (its trace hash no longer applies) from a run that did not reproduce. Older
    /// artifacts have none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::json_u64::hex_option"
    )]
    pub inputs_hash: Option<u64>,
    /// The failure (always, in [`FORMAT`]; never in [`CORPUS_FORMAT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The race windows (`sometimes!`) the run reached, in declaration order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<String>,
    /// Every check's report.
    pub reports: Vec<Report>,
    /// The history.
    pub history: History,
}

impl Artifact {
    /// The artifact with [`Artifact::inputs_hash`] set from its current inputs: called
    /// when an artifact is made, after its last input is set.
    pub fn sealed(mut self) -> Artifact {
        self.inputs_hash = Some(inputs_hash(&self));
        self
    }

    /// Whether its inputs are still those it was written with (`None`: it records none).
    pub fn inputs_unchanged(&self) -> Option<bool> {
        self.inputs_hash.map(|h| h == inputs_hash(self))
    }
}

/// A digest of everything that decides a run: scenario, its text, profile, seed, planted
/// bugs and configuration. Not the build: the same inputs under another build of shopsim
/// may run differently, which the replay tells from [`Artifact::commit`].
pub fn inputs_hash(artifact: &Artifact) -> u64 {
    let mut hasher = shopsim_sim::trace::TraceHasher::default();
    hasher.write_value(&(
        &artifact.scenario,
        &artifact.scenario_toml,
        &artifact.profile,
        artifact.seed,
        &artifact.bugs,
        &artifact.config,
    ));
    hasher.finish()
}

/// The longest race window name read, in characters.
pub const WINDOW_CHARS_MAX: usize = 200;
/// The most race windows one artifact lists.
pub const WINDOWS_MAX: usize = 1_000;

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
    #[serde(with = "crate::json_u64::decimal")]
    seed: u64,
    bugs: Vec<String>,
    config: SimConfig,
    scenario_toml: String,
    commit: String,
    #[serde(default)]
    version: String,
    #[serde(with = "crate::json_u64::hex")]
    trace_hash: u64,
    #[serde(default, with = "crate::json_u64::hex_option")]
    inputs_hash: Option<u64>,
    #[serde(default)]
    failure: Option<Failure>,
    #[serde(default)]
    windows: Vec<String>,
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
            version: self.version.clone(),
            trace_hash: self.trace_hash,
            inputs_hash: self.inputs_hash,
            failure: self.failure.clone(),
            windows: self.windows.clone(),
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
    if !FORMATS_READ.contains(&header.format.as_str()) {
        return Err(format!(
            "format: expected one of {}, got `{}`",
            FORMATS_READ.map(|f| format!("`{f}`")).join(", "),
            shopsim_sim::input::cut(&header.format, 40)
        ));
    }
    // A failure artifact names its failure; a corpus entry has none to name.
    match (header.format == CORPUS_FORMAT, header.failure.is_some()) {
        (false, false) => return Err("failure: is required".to_string()),
        (true, true) => {
            return Err(format!(
                "failure: a corpus entry (`{CORPUS_FORMAT}`) holds no failure"
            ))
        }
        _ => {}
    }
    if header.windows.len() > WINDOWS_MAX {
        return Err(format!(
            "windows: must have at most {WINDOWS_MAX} items, got {}",
            header.windows.len()
        ));
    }
    if let Some((i, w)) = (header.windows.iter().enumerate())
        .find(|(_, w)| w.is_empty() || w.chars().count() > WINDOW_CHARS_MAX)
    {
        return Err(format!(
            "windows[{i}]: must be 1 to {WINDOW_CHARS_MAX} characters, got `{}`",
            shopsim_sim::input::cut(w, 40)
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

/// Where the corpus entry of `seed` of `scenario`@`profile` goes, relative to `--out`.
pub fn corpus_path(scenario: &str, profile: &str, seed: u64) -> String {
    format!("corpus/{}/{seed}.json", folder_name(scenario, profile))
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

    /// What an artifact is written as reads back as a [`Header`] holding every field but the
    /// history and the reports, so the two types cannot drift apart (`Header` refuses
    /// unknown fields); a version 1 artifact (integers for the seed and the hash) reads too.
    #[test]
    fn a_written_artifact_reads_back_as_its_header() {
        let scenario = shopsim_scenarios::find("payment-race").unwrap();
        let outcome = shopsim_sim::runner::run(
            &scenario
                .system(shopsim_sim::db::Profile::PgRc, &[])
                .unwrap(),
            3,
            &scenario.sim_config(),
        );
        let artifact = Artifact {
            format: FORMAT.to_string(),
            scenario: scenario.name.clone(),
            profile: "pg_rc".to_string(),
            seed: u64::MAX,
            bugs: vec!["payment_check_then_act".to_string()],
            config: scenario.sim_config(),
            scenario_toml: scenario.to_toml(),
            commit: BUILD_COMMIT.to_string(),
            version: VERSION.to_string(),
            trace_hash: 0xfedc_ba98_7654_3210,
            inputs_hash: None,
            failure: Some(Failure {
                kind: shopsim_sim::runner::FailureKind::Violation,
                check: "payment_exactly_once".to_string(),
                witness: "w".to_string(),
                also: Vec::new(),
            }),
            windows: Vec::new(),
            reports: outcome.reports.clone(),
            history: outcome.history.clone(),
        }
        .sealed();
        let text = serde_json::to_string_pretty(&artifact).unwrap();
        let header = parse(&text).unwrap();
        assert_eq!(header.history_ops(), outcome.history.ops.len());
        let read = header.artifact();
        let expected = Artifact {
            reports: Vec::new(),
            history: History::default(),
            ..artifact.clone()
        };
        assert_eq!(
            serde_json::to_value(&read).unwrap(),
            serde_json::to_value(&expected).unwrap()
        );
        let mut v1 = serde_json::to_value(&artifact).unwrap();
        v1["format"] = "shopsim-artifact-1".into();
        v1["seed"] = u64::MAX.into();
        v1["trace_hash"] = 0xfedc_ba98_7654_3210u64.into();
        let header = parse(&v1.to_string()).unwrap();
        assert_eq!(
            (header.artifact().seed, header.artifact().trace_hash),
            (u64::MAX, 0xfedc_ba98_7654_3210)
        );
        v1["format"] = "shopsim-artifact-3".into();
        assert!(parse(&v1.to_string()).unwrap_err().starts_with("format: "));
        v1["format"] = FORMAT.into();
        v1["extra"] = 1.into();
        assert!(parse(&v1.to_string()).is_err());
    }

    /// The inputs hash covers every input of a run and nothing else: an edit of any input
    /// shows, a new history or hash does not.
    #[test]
    fn the_inputs_hash_tells_an_edited_artifact() {
        let scenario = shopsim_scenarios::find("payment-race").unwrap();
        let artifact = Artifact {
            format: FORMAT.to_string(),
            scenario: scenario.name.clone(),
            profile: "pg_rc".to_string(),
            seed: 3,
            bugs: Vec::new(),
            config: scenario.sim_config(),
            scenario_toml: scenario.to_toml(),
            commit: BUILD_COMMIT.to_string(),
            version: VERSION.to_string(),
            trace_hash: 1,
            inputs_hash: None,
            failure: None,
            windows: Vec::new(),
            reports: Vec::new(),
            history: History::default(),
        };
        assert_eq!(
            artifact.inputs_unchanged(),
            None,
            "an older artifact records none"
        );
        let sealed = artifact.sealed();
        assert_eq!(sealed.inputs_unchanged(), Some(true));
        let not_an_input = Artifact {
            trace_hash: 2,
            commit: "other".to_string(),
            ..sealed.clone()
        };
        assert_eq!(not_an_input.inputs_unchanged(), Some(true));
        let mut loss = sealed.config.clone();
        loss.faults.loss_probability = 1.0;
        let edits = [
            Artifact {
                seed: 4,
                ..sealed.clone()
            },
            Artifact {
                profile: "maria_rr".to_string(),
                ..sealed.clone()
            },
            Artifact {
                bugs: vec!["payment_check_then_act".to_string()],
                ..sealed.clone()
            },
            Artifact {
                config: loss,
                ..sealed.clone()
            },
            Artifact {
                scenario_toml: format!("{}\n# edited\n", sealed.scenario_toml),
                ..sealed.clone()
            },
        ];
        for edited in edits {
            assert_eq!(edited.inputs_unchanged(), Some(false), "{edited:?}");
        }
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
