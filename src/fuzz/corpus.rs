//! Coverage-guided fuzzing: the campaign keeps the draws (fault plan and steering) of seeds
//! that reached a rare race window, or a window no seed of their `scenario@profile` had
//! reached before, and spends a share of its seeds (`--corpus-share`) running mutations of
//! those draws with fresh seeds, the way AFL-style fuzzers and Antithesis spend effort near
//! new coverage.
//!
//! A corpus entry is a seed plus its exact configuration, written as an artifact of format
//! [`artifact::CORPUS_FORMAT`] under `--out/corpus/`, so it replays as an artifact does. A
//! mutated seed's failure is written with its configuration too, and its group names only
//! the artifact's replay command (its draws do not follow from the seed). Plain seeds stay
//! plain: their draws follow from the seed alone.
//!
//! Everything here is decided from campaign indexes and outcomes in seed order, never from
//! timing or thread order: mutation choices come from a SplitMix64 stream of the campaign
//! index, admissions are made after each batch in campaign order.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use shopsim_sim::coverage::CoverageReport;
use shopsim_sim::runner::{SimConfig, System};
use shopsim_sim::steering::{ChangePoint, CHANGE_POINTS_MAX};

use crate::artifact::{self, Artifact};
use crate::run::Selected;

/// The share of a campaign's seeds that run mutated corpus draws, by default.
pub const SHARE_DEFAULT: f64 = 0.25;
/// The largest `--corpus-share`: most seeds stay fresh draws, so new coverage keeps coming.
pub const SHARE_MAX: f64 = 0.9;
/// The most corpus entries a campaign keeps (each a file of a few KiB).
pub const ENTRIES_MAX: usize = 256;
/// The most entries kept for one race window of one run: more would spend the mutation
/// share on one window.
pub const ENTRIES_PER_WINDOW_MAX: usize = 4;
/// A window that fewer than this share of a run's seeds reached is rare.
pub const RARE_SHARE: f64 = 0.05;
/// The most race windows the state file tracks.
pub const WINDOWS_MAX: usize = 1_000;

/// The race windows `system` declares that `coverage` reached, in declaration order, with
/// how often each was true.
pub fn window_hits<S: System>(system: &S, coverage: &CoverageReport) -> Vec<(String, u64)> {
    system
        .windows()
        .iter()
        .filter_map(|w| {
            let hits = coverage.sometimes.get(w.name())?.0;
            (hits > 0).then(|| (w.name().to_string(), hits))
        })
        .collect()
}

/// The race windows `system` declares that `coverage` reached, in declaration order.
pub fn windows_reached<S: System>(system: &S, coverage: &CoverageReport) -> Vec<String> {
    window_hits(system, coverage)
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

/// When and where a window was first reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirstHit {
    /// The seed that reached it.
    #[serde(with = "crate::json_u64::decimal")]
    pub seed: u64,
    /// Its `scenario@profile`.
    pub run: String,
    /// Campaign wall time when its batch ended, ms (all sessions).
    pub elapsed_ms: u64,
    /// Whether the seed ran mutated corpus draws.
    pub mutated: bool,
}

/// Seeds of one run that reached one window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunHits {
    /// `scenario@profile`.
    pub run: String,
    /// Seeds of it that reached the window.
    pub seeds: u64,
}

/// What the campaign knows of one declared race window, kept across `--resume`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowStats {
    /// The window's name.
    pub window: String,
    /// Times a `sometimes!` of it was true, all seeds.
    pub hits: u64,
    /// Seeds that reached it.
    pub seeds: u64,
    /// The first seed that reached it (`None`: never reached).
    pub first: Option<FirstHit>,
    /// Per run that reached it, in order of first reach.
    pub runs: Vec<RunHits>,
}

impl WindowStats {
    /// A declared window no seed has reached yet.
    pub fn new(window: &str) -> WindowStats {
        WindowStats {
            window: window.to_string(),
            hits: 0,
            seeds: 0,
            first: None,
            runs: Vec::new(),
        }
    }

    /// Seeds of `run` that reached it.
    pub fn seeds_of(&self, run: &str) -> u64 {
        self.runs
            .iter()
            .find(|r| r.run == run)
            .map_or(0, |r| r.seeds)
    }
}

/// One kept draw.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Index of its run in the campaign.
    pub run: usize,
    /// Its exact configuration.
    pub config: SimConfig,
    /// The windows it reached.
    pub windows: Vec<String>,
    /// Its file, relative to `--out`.
    pub path: String,
}

/// What one seed of a batch reached, for the admission pass after the batch.
#[derive(Debug, Clone)]
pub struct Reach {
    /// Its seed.
    pub seed: u64,
    /// Its trace hash.
    pub trace_hash: u64,
    /// Whether every check passed.
    pub passed: bool,
    /// Windows reached, with how often each was true.
    pub windows: Vec<(String, u64)>,
}

/// The corpus of a campaign.
#[derive(Debug, Default)]
pub struct Corpus {
    /// Entries, in order of admission.
    pub entries: Vec<Entry>,
}

/// SplitMix64 of `x`: the stream mutation choices are drawn from.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Corpus {
    /// Reads the entries a campaign wrote under `out/corpus/`, in path order; an entry of a
    /// run the campaign does not have, or one that does not read back, is an error naming
    /// the file.
    pub fn load(out: &Path, runs: &[Selected]) -> Result<Corpus, String> {
        let root = out.join("corpus");
        let mut paths = Vec::new();
        if root.is_dir() {
            let dirs = std::fs::read_dir(&root).map_err(|e| format!("{}: {e}", root.display()))?;
            for dir in dirs {
                let dir = dir.map_err(|e| format!("{}: {e}", root.display()))?.path();
                if !dir.is_dir() {
                    continue;
                }
                let files =
                    std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                for file in files {
                    let file = file.map_err(|e| format!("{}: {e}", dir.display()))?.path();
                    if file.extension().is_some_and(|x| x == "json") {
                        paths.push(file);
                    }
                }
            }
        }
        paths.sort();
        if paths.len() > ENTRIES_MAX {
            return Err(format!(
                "{}: holds {} corpus entries, at most {ENTRIES_MAX} are kept",
                root.display(),
                paths.len()
            ));
        }
        let mut corpus = Corpus::default();
        for path in paths {
            let loaded = artifact::load(&path)?;
            let a = loaded.artifact;
            if a.format != artifact::CORPUS_FORMAT {
                return Err(format!(
                    "{}: format: expected `{}`, got `{}`",
                    path.display(),
                    artifact::CORPUS_FORMAT,
                    a.format
                ));
            }
            let name = format!("{}@{}", a.scenario, a.profile);
            let run = runs.iter().position(|s| s.name() == name).ok_or_else(|| {
                format!(
                    "{}: scenario@profile `{name}` is not a run of this campaign",
                    path.display()
                )
            })?;
            let relative = path
                .strip_prefix(out)
                .map_or_else(|_| path.display().to_string(), |p| p.display().to_string());
            corpus.entries.push(Entry {
                run,
                config: a.config,
                windows: a.windows,
                path: relative,
            });
        }
        Ok(corpus)
    }

    /// The draws campaign index `index` of run `run` mutates, if it is one of the
    /// `share` of indexes that do and the run has entries: an entry picked with weight
    /// 1 / (seeds of the run that reached its rarest window).
    pub fn pick(
        &self,
        index: u64,
        run: usize,
        share: f64,
        windows: &[WindowStats],
        run_name: &str,
    ) -> Option<&Entry> {
        let coin = (mix(index ^ 0x434f_5250_5553_0001) >> 11) as f64 / (1u64 << 53) as f64;
        if coin >= share {
            return None;
        }
        let candidates: Vec<&Entry> = self.entries.iter().filter(|e| e.run == run).collect();
        if candidates.is_empty() {
            return None;
        }
        let weight = |e: &Entry| {
            let rarest = e
                .windows
                .iter()
                .map(|w| {
                    windows
                        .iter()
                        .find(|s| &s.window == w)
                        .map_or(1, |s| s.seeds_of(run_name).max(1))
                })
                .min()
                .unwrap_or(1);
            1.0 / rarest as f64
        };
        let total: f64 = candidates.iter().map(|e| weight(e)).sum();
        let mut at =
            (mix(index ^ 0x434f_5250_5553_0002) >> 11) as f64 / (1u64 << 53) as f64 * total;
        for e in &candidates {
            at -= weight(e);
            if at < 0.0 {
                return Some(e);
            }
        }
        candidates.last().copied()
    }
}

/// A mutation of `config` drawn from campaign index `index`: its steering perturbed
/// (probabilities and delays scaled, a change point moved, added or removed, or steering
/// turned on), sometimes with a fault plan drawn afresh. The caller validates the result.
pub fn mutate(config: &SimConfig, index: u64, base: &SimConfig) -> SimConfig {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(index ^ 0x4d55_5441_5445_0000));
    let mut c = config.clone();
    let scale = |rng: &mut ChaCha8Rng| 2f64.powf(rng.gen_range(-1.0..=1.0));
    let steering = &mut c.steering;
    if !steering.enabled {
        *steering = shopsim_sim::swarm::draw_steering(rng.gen());
    } else {
        match rng.gen_range(0..5) {
            0 => {
                steering.point_probability =
                    (steering.point_probability * scale(&mut rng)).clamp(0.001, 1.0);
                steering.txn_point_probability =
                    (steering.txn_point_probability * scale(&mut rng)).clamp(0.001, 1.0);
            }
            1 => {
                steering.stall_probability =
                    (steering.stall_probability * scale(&mut rng)).clamp(0.0, 1.0);
                steering.stall_ms_max =
                    ((steering.stall_ms_max as f64 * scale(&mut rng)) as u64).clamp(1, 60_000);
                steering.jitter_ms_max =
                    ((steering.jitter_ms_max as f64 * scale(&mut rng)) as u64).min(60_000);
            }
            2 if !steering.change_points.is_empty() => {
                let i = rng.gen_range(0..steering.change_points.len());
                let cp = &mut steering.change_points[i];
                cp.after_points = ((cp.after_points as f64 * scale(&mut rng)) as u64)
                    .saturating_add(rng.gen_range(0..4));
                cp.probability = (cp.probability * scale(&mut rng)).clamp(0.01, 1.0);
            }
            3 if steering.change_points.len() < CHANGE_POINTS_MAX => {
                let after_max = steering
                    .change_points
                    .iter()
                    .map(|cp| cp.after_points)
                    .max()
                    .unwrap_or(16)
                    .saturating_mul(2)
                    .max(4);
                steering.change_points.push(ChangePoint {
                    after_points: rng.gen_range(0..=after_max),
                    ..ChangePoint::default()
                });
            }
            _ if !steering.change_points.is_empty() => {
                let i = rng.gen_range(0..steering.change_points.len());
                steering.change_points.remove(i);
            }
            _ => {
                steering.txn_point_probability =
                    (steering.txn_point_probability * scale(&mut rng)).clamp(0.001, 1.0);
            }
        }
    }
    if rng.gen_bool(0.2) {
        c.faults = shopsim_sim::swarm::config(rng.gen(), base, false).faults;
    }
    assert_eq!(
        c.duration_ms, config.duration_ms,
        "a mutation keeps the run's length"
    );
    c
}

/// The corpus entry file of a passing seed: its exact configuration and trace hash, the
/// windows it reached, and no failure, reports or history (a replay computes its own).
pub fn entry_artifact(
    selected: &Selected,
    bugs: &[String],
    seed: u64,
    config: &SimConfig,
    trace_hash: u64,
    windows: Vec<String>,
) -> Artifact {
    assert!(!windows.is_empty(), "a corpus entry reached a window");
    Artifact {
        format: artifact::CORPUS_FORMAT.to_string(),
        scenario: selected.scenario.name.clone(),
        profile: selected.profile.name().to_string(),
        seed,
        bugs: bugs.to_vec(),
        config: config.clone(),
        scenario_toml: selected.scenario.to_toml(),
        commit: artifact::BUILD_COMMIT.to_string(),
        version: artifact::VERSION.to_string(),
        trace_hash,
        inputs_hash: None,
        failure: None,
        windows,
        reports: Vec::new(),
        history: Default::default(),
    }
    .sealed()
}

/// Whether a passing seed that reached `reached` windows of run `run_name` joins the corpus:
/// it reached a window first for this run (a new combination of window and profile), or a
/// rare one (fewer than [`RARE_SHARE`] of the run's seeds) that has fewer than
/// [`ENTRIES_PER_WINDOW_MAX`] entries. `windows` are the stats before this seed counted.
pub fn admits(
    reached: &[(String, u64)],
    windows: &[WindowStats],
    run_seeds: u64,
    entries_of: impl Fn(&str) -> usize,
    run_name: &str,
) -> Option<String> {
    for (w, _) in reached {
        let before = windows
            .iter()
            .find(|s| &s.window == w)
            .map_or(0, |s| s.seeds_of(run_name));
        if before == 0 {
            return Some(format!("first reach of `{w}` in {run_name}"));
        }
        let rare = (before as f64) < RARE_SHARE * run_seeds.max(1) as f64;
        if rare && entries_of(w) < ENTRIES_PER_WINDOW_MAX {
            return Some(format!("rare window `{w}` ({before} of {run_seeds} seeds)"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_deterministic_and_keep_the_run() {
        let base = SimConfig::default();
        let drawn = shopsim_sim::swarm::config(7, &base, true);
        let a = mutate(&drawn, 42, &base);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&mutate(&drawn, 42, &base)).unwrap()
        );
        let changed = (0..64)
            .filter(|&i| {
                serde_json::to_string(&mutate(&drawn, i, &base)).unwrap()
                    != serde_json::to_string(&drawn).unwrap()
            })
            .count();
        assert!(changed > 48, "most mutations change the draws: {changed}");
        for i in 0..256 {
            mutate(&drawn, i, &base)
                .validate()
                .expect("a valid mutation");
        }
    }

    #[test]
    fn admission_takes_first_and_rare_reaches_and_bounds_each_window() {
        let mut w = WindowStats::new("w");
        let reached = vec![("w".to_string(), 1)];
        assert!(admits(&reached, &[w.clone()], 10, |_| 0, "s@pg_rc").is_some());
        w.seeds = 1;
        w.runs.push(RunHits {
            run: "s@pg_rc".to_string(),
            seeds: 1,
        });
        // Another profile's first reach is a new combination.
        assert!(admits(&reached, &[w.clone()], 10, |_| 0, "s@maria_rr").is_some());
        // 1 of 100 seeds is rare, until the window has its share of entries.
        assert!(admits(&reached, &[w.clone()], 100, |_| 0, "s@pg_rc").is_some());
        assert!(admits(&reached, &[w.clone()], 100, |_| 4, "s@pg_rc").is_none());
        // 1 of 10 is not rare.
        assert!(admits(&reached, &[w], 10, |_| 0, "s@pg_rc").is_none());
    }

    #[test]
    fn picks_follow_the_share_and_prefer_rare_windows() {
        let entry = |windows: &[&str]| Entry {
            run: 0,
            config: SimConfig::default(),
            windows: windows.iter().map(|w| w.to_string()).collect(),
            path: String::new(),
        };
        let corpus = Corpus {
            entries: vec![entry(&["common"]), entry(&["rare"])],
        };
        let stats = |name: &str, seeds: u64| WindowStats {
            seeds,
            runs: vec![RunHits {
                run: "r".to_string(),
                seeds,
            }],
            ..WindowStats::new(name)
        };
        let windows = [stats("common", 99), stats("rare", 1)];
        let picked: Vec<_> = (0..10_000)
            .filter_map(|i| corpus.pick(i, 0, 0.25, &windows, "r"))
            .collect();
        assert!((2_200..2_800).contains(&picked.len()), "{}", picked.len());
        let rare = picked.iter().filter(|e| e.windows[0] == "rare").count();
        assert!(rare * 10 > picked.len() * 9, "{rare} of {}", picked.len());
        assert!(
            corpus.pick(3, 1, 1.0, &windows, "r").is_none(),
            "another run"
        );
        assert!((0..1000).all(|i| corpus.pick(i, 0, 0.0, &windows, "r").is_none()));
    }
}
