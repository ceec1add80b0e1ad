//! A campaign's session: its batches, how each failure is filed into its group (and which
//! keep an artifact), the count lines, and reading the state of a campaign to resume.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use shopsim_sim::runner::{FailureKind, Outcome, SimConfig, System};

use super::campaign::Campaign;
use super::corpus;
use super::groups::{self, Exemplar, Group, Keep, RunSize};
use super::seed_of;
use super::state::{self, State};
use crate::artifact::{self, Artifact};
use crate::progress::Bar;
use crate::reproduce::{replay_artifact_command, SeedRun};
use crate::run::Selected;
use crate::signature::{truncate_chars, Signature};

/// Counters the status thread reads while a batch runs.
#[derive(Debug, Default)]
pub(super) struct Live {
    pub(super) seeds: AtomicU64,
    pub(super) failing: AtomicU64,
    pub(super) groups: AtomicU64,
}

/// The campaign's loop and its files.
pub(super) struct Session<'a> {
    pub(super) campaign: &'a Campaign,
    pub(super) state: State,
    pub(super) state_path: PathBuf,
    pub(super) live: Arc<Live>,
    pub(super) bar: Bar,
    /// Repeated failures per group id since the last count line.
    pub(super) repeats: BTreeMap<u64, u64>,
    pub(super) last_repeat_line: Instant,
    /// The corpus of draws that reached rare race windows.
    pub(super) corpus: corpus::Corpus,
    /// When this session started, and the campaign's wall time before it, ms: a window's
    /// first-hit time is their sum.
    pub(super) started: Instant,
    pub(super) elapsed_before_ms: u64,
}

impl Session<'_> {
    /// Saves the state (counting the write in the state's own I/O figures); false if it
    /// could not be written.
    pub(super) fn save(&mut self) -> bool {
        match artifact::write_atomic(&self.state_path, &self.state) {
            Ok(bytes) => {
                self.count_write(bytes);
                true
            }
            Err(e) => {
                self.bar.eprintln(&format!(
                    "error: writing {}: {e}",
                    self.state_path.display()
                ));
                false
            }
        }
    }

    pub(super) fn count_write(&mut self, bytes: u64) {
        let io = &mut self.state.io;
        io.files_written = io.files_written.saturating_add(1);
        io.bytes_written = io.bytes_written.saturating_add(bytes);
    }

    /// Confirms a failure replays (re-runs it) and writes its artifact; returns its path
    /// relative to `--out`, or `None` if it could not be written.
    fn write_artifact<S: System>(
        &mut self,
        run: usize,
        system: &S,
        config: &SimConfig,
        o: &Outcome<S::State>,
    ) -> Option<String> {
        let selected = &self.campaign.runs[run];
        let again = shopsim_sim::runner::run(system, o.seed, config);
        let failure = o.failure.clone().expect("a failed outcome");
        if again.trace_hash != o.trace_hash {
            self.state.nondeterministic = self.state.nondeterministic.saturating_add(1);
            self.bar.println(&format!(
                "NONDETERMINISM {} seed={}: trace hash {:016x}, then {:016x} when re-run",
                selected.name(),
                o.seed,
                o.trace_hash,
                again.trace_hash
            ));
        }
        let artifact = Artifact {
            format: artifact::FORMAT.to_string(),
            scenario: selected.scenario.name.clone(),
            profile: selected.profile.name().to_string(),
            seed: o.seed,
            bugs: self.campaign.bugs.clone(),
            config: config.clone(),
            scenario_toml: selected.scenario.to_toml(),
            commit: artifact::BUILD_COMMIT.to_string(),
            version: artifact::VERSION.to_string(),
            trace_hash: o.trace_hash,
            inputs_hash: None,
            failure: Some(failure),
            windows: super::corpus::windows_reached(system, &o.coverage),
            reports: o.reports.clone(),
            history: o.history.clone(),
        }
        .sealed();
        let relative =
            artifact::relative_path(&selected.scenario.name, selected.profile.name(), o.seed);
        let path = self.campaign.out.join(&relative);
        match artifact::write_atomic(&path, &artifact) {
            Ok(bytes) => {
                self.count_write(bytes);
                Some(relative)
            }
            Err(e) => {
                self.bar
                    .eprintln(&format!("error: writing {}: {e}", path.display()));
                None
            }
        }
    }

    /// Files a failing outcome of run `run` into its group.
    fn file_failure<S: System>(
        &mut self,
        run: usize,
        system: &S,
        config: &SimConfig,
        o: &Outcome<S::State>,
        mutated: bool,
    ) {
        let campaign = self.campaign;
        let selected = &campaign.runs[run];
        let failure = o.failure.as_ref().expect("a failed outcome");
        let name = selected.name();
        let mut signature = Signature::of(&name, &failure.check, &failure.witness);
        let size = RunSize {
            ops: o.history.ops.len() as u64,
            virtual_us: o.virtual_elapsed.as_micros() as u64,
        };
        self.state.runs[run].failing_seeds += 1;
        self.live.failing.fetch_add(1, Ordering::Relaxed);
        let find = |groups: &[Group], s: &Signature| {
            groups
                .iter()
                .position(|g| g.system == s.system && g.check == s.check && g.shape == s.shape)
        };
        let mut existing = find(&self.state.groups, &signature);
        if existing.is_none() && self.state.groups.len() >= campaign.groups_max {
            // Past the limit, new shapes share one group per run and check.
            signature.shape = groups::OVERFLOW_SHAPE.to_string();
            existing = find(&self.state.groups, &signature);
        }
        let Some(index) = existing else {
            let artifact = self.write_artifact(run, system, config, o);
            let exemplar = Exemplar {
                seed: o.seed,
                ops: size.ops,
                virtual_us: size.virtual_us,
                artifact: artifact.clone(),
                mutated,
            };
            let id = self.state.groups.len() as u64 + 1;
            let group = Group::new(id, signature, failure.kind, &failure.witness, exemplar);
            self.state.groups.push(group);
            self.live.groups.store(id, Ordering::Relaxed);
            self.print_new_group(run, o, id, artifact.as_deref(), mutated);
            return;
        };
        self.state.groups[index].count_one();
        let id = self.state.groups[index].id;
        *self.repeats.entry(id).or_default() += 1;
        let plan = self.state.groups[index].plan(o.seed, size, campaign.artifacts_max);
        if plan == Keep::Count {
            return;
        }
        let Some(artifact) = self.write_artifact(run, system, config, o) else {
            return;
        };
        let exemplar = Exemplar {
            seed: o.seed,
            ops: size.ops,
            virtual_us: size.virtual_us,
            artifact: Some(artifact),
            mutated,
        };
        let removed = self.state.groups[index].keep(exemplar, &plan, campaign.artifacts_max);
        for relative in removed {
            let path = campaign.out.join(&relative);
            match std::fs::remove_file(&path) {
                Ok(()) => self.state.io.artifacts_removed += 1,
                Err(e) => self
                    .bar
                    .eprintln(&format!("error: removing {}: {e}", path.display())),
            }
        }
    }

    fn print_new_group<T>(
        &self,
        run: usize,
        o: &Outcome<T>,
        id: u64,
        artifact: Option<&str>,
        mutated: bool,
    ) {
        let campaign = self.campaign;
        let selected = &campaign.runs[run];
        let failure = o.failure.as_ref().expect("a failed outcome");
        let mut text = format!(
            "FAIL {} seed={} {}: {}\n  new failure group {id}",
            selected.name(),
            o.seed,
            failure.check,
            truncate_chars(&failure.witness, 600)
        );
        if let Some(relative) = artifact {
            let path = campaign.out.join(relative);
            text.push_str(&format!(
                "\n  artifact: {}\nnote: reproduce with: {}",
                path.display(),
                replay_artifact_command(&path)
            ));
        }
        let by_seed = SeedRun {
            source: &selected.source,
            profile: selected.profile.name(),
            seed: o.seed,
            bugs: &campaign.bugs,
            draw: campaign.draw,
        };
        if mutated {
            text.push_str("\n  (mutated corpus draws: only the artifact replays it)");
        } else {
            text.push_str(&format!("\nnote: or by seed: {}", by_seed.replay_command()));
        }
        self.bar.println(&text);
    }

    /// The count line for repeated failures, if any and if the last one is old enough (or
    /// `now` is set, at the end).
    pub(super) fn print_repeats(&mut self, now: bool) {
        if self.repeats.is_empty()
            || (!now && self.last_repeat_line.elapsed() < self.campaign.status_interval)
        {
            return;
        }
        let total: u64 = self.repeats.values().sum();
        let mut top: Vec<(u64, u64)> = self.repeats.iter().map(|(&g, &n)| (g, n)).collect();
        top.sort_by_key(|&(g, n)| (std::cmp::Reverse(n), g));
        let shown: Vec<String> = top
            .iter()
            .take(5)
            .map(|(g, n)| format!("group {g} +{n}"))
            .collect();
        let more = if top.len() > 5 {
            format!(", {} more groups", top.len() - 5)
        } else {
            String::new()
        };
        self.bar.println(&format!(
            "repeats: +{total} failing seeds in known groups ({}{more}); {} failing seeds in {} groups so far",
            shown.join(", "),
            self.state.failing_seeds(),
            self.state.groups.len()
        ));
        self.repeats.clear();
        self.last_repeat_line = Instant::now();
    }

    /// Counts what one seed of run `run` reached into the window stats, and admits it to the
    /// corpus if it passed and reached a window first for its run or a rare one.
    fn count_reach<S: System>(
        &mut self,
        run: usize,
        system: &S,
        reach: &corpus::Reach,
        config: &SimConfig,
        mutated: bool,
    ) {
        let campaign = self.campaign;
        let selected = &campaign.runs[run];
        let name = selected.name();
        for w in system.windows() {
            if !self.state.windows.iter().any(|s| s.window == w.name())
                && self.state.windows.len() < corpus::WINDOWS_MAX
            {
                self.state.windows.push(corpus::WindowStats::new(w.name()));
            }
        }
        let admitted = reach.passed
            && self.corpus.entries.len() < corpus::ENTRIES_MAX
            && corpus::admits(
                &reach.windows,
                &self.state.windows,
                self.state.runs[run].seeds,
                |w| {
                    (self.corpus.entries.iter())
                        .filter(|e| e.run == run && e.windows.iter().any(|x| x == w))
                        .count()
                },
                &name,
            )
            .is_some();
        let elapsed_ms =
            (self.elapsed_before_ms).saturating_add(self.started.elapsed().as_millis() as u64);
        for (window, hits) in &reach.windows {
            let Some(stats) = self.state.windows.iter_mut().find(|s| &s.window == window) else {
                continue;
            };
            stats.hits = stats.hits.saturating_add(*hits);
            stats.seeds = stats.seeds.saturating_add(1);
            if stats.first.is_none() {
                stats.first = Some(corpus::FirstHit {
                    seed: reach.seed,
                    run: name.clone(),
                    elapsed_ms,
                    mutated,
                });
            }
            match stats.runs.iter_mut().find(|h| h.run == name) {
                Some(h) => h.seeds = h.seeds.saturating_add(1),
                None => stats.runs.push(corpus::RunHits {
                    run: name.clone(),
                    seeds: 1,
                }),
            }
        }
        if !admitted {
            return;
        }
        let windows: Vec<String> = reach.windows.iter().map(|(w, _)| w.clone()).collect();
        let entry = corpus::entry_artifact(
            selected,
            &campaign.bugs,
            reach.seed,
            config,
            reach.trace_hash,
            windows.clone(),
        );
        let relative =
            artifact::corpus_path(&selected.scenario.name, selected.profile.name(), reach.seed);
        match artifact::write_atomic(&campaign.out.join(&relative), &entry) {
            Ok(bytes) => {
                self.count_write(bytes);
                self.corpus.entries.push(corpus::Entry {
                    run,
                    config: config.clone(),
                    windows,
                    path: relative,
                });
            }
            Err(e) => self.bar.eprintln(&format!(
                "error: writing {}: {e}",
                campaign.out.join(&relative).display()
            )),
        }
    }

    /// Runs one batch of `count` campaign indexes, from `state.seeds_run`; false (and nothing
    /// run) if an index of the batch has no seed on this shard.
    pub(super) fn batch(&mut self, count: u64) -> bool {
        let campaign = self.campaign;
        let first = self.state.seeds_run;
        let runs = campaign.runs.len() as u64;
        let Some(end) = first.checked_add(count) else {
            self.bar
                .eprintln("error: the campaign's seed indexes are used up");
            return false;
        };
        // Each index picks its (scenario, profile) round robin and a fresh seed.
        let Some(work) = (first..end)
            .map(|i| seed_of(i, campaign.shard).map(|seed| (i % runs, seed)))
            .collect::<Option<Vec<(u64, u64)>>>()
        else {
            self.bar
                .eprintln("error: this shard's seed indexes are used up");
            return false;
        };
        for (r, selected) in campaign.runs.iter().enumerate() {
            let indexed: Vec<(u64, u64)> = (first..end)
                .zip(&work)
                .filter(|(_, (run, _))| *run == r as u64)
                .map(|(i, (_, seed))| (i, *seed))
                .collect();
            if indexed.is_empty() {
                continue;
            }
            let seeds: Vec<u64> = indexed.iter().map(|(_, seed)| *seed).collect();
            let system = selected.system(&campaign.bugs).expect("checked");
            let base = selected.scenario.sim_config();
            let draw = campaign.draw;
            let name = selected.name();
            // A share of the indexes runs a mutation of a corpus entry's draws with its
            // fresh seed; a mutation that does not validate runs the entry's draws as they are.
            let mut mutated: BTreeMap<u64, SimConfig> = BTreeMap::new();
            for &(i, seed) in &indexed {
                let Some(entry) =
                    self.corpus
                        .pick(i, r, campaign.corpus_share, &self.state.windows, &name)
                else {
                    continue;
                };
                let config = corpus::mutate(&entry.config, i, &base);
                let config = if selected.scenario.check_sim_config(&config).is_ok() {
                    config
                } else {
                    entry.config.clone()
                };
                mutated.insert(seed, config);
            }
            let config_of = |seed: u64| {
                mutated
                    .get(&seed)
                    .cloned()
                    .unwrap_or_else(|| draw.config(&base, seed))
            };
            let started = Instant::now();
            let mut failing = Vec::new();
            let mut reached: Vec<corpus::Reach> = Vec::new();
            let stats = &mut self.state.runs[r];
            let live = &self.live;
            shopsim_sim::fuzz::for_each_seed(
                || system.clone(),
                &seeds,
                config_of,
                campaign.jobs,
                |o| {
                    live.seeds.fetch_add(1, Ordering::Relaxed);
                    count_verdicts(stats, &o);
                    reached.push(corpus::Reach {
                        seed: o.seed,
                        trace_hash: o.trace_hash,
                        passed: o.passed(),
                        windows: corpus::window_hits(&system, &o.coverage),
                    });
                    if !o.passed() {
                        failing.push(o);
                    }
                    true
                },
            );
            stats.seeds += seeds.len() as u64;
            self.state.corpus_seeds = self.state.corpus_seeds.saturating_add(mutated.len() as u64);
            // In seed order, whatever order the threads finished in: a group's first
            // failure is its earliest campaign index, and the corpus admits in that order.
            let position = |seed: u64| seeds.iter().position(|s| *s == seed);
            failing.sort_by_key(|o| position(o.seed));
            reached.sort_by_key(|r| position(r.seed));
            for o in &failing {
                self.file_failure(
                    r,
                    &system,
                    &config_of(o.seed),
                    o,
                    mutated.contains_key(&o.seed),
                );
            }
            for reach in &reached {
                let is_mutated = mutated.contains_key(&reach.seed);
                self.count_reach(r, &system, reach, &config_of(reach.seed), is_mutated);
            }
            // Running the seeds and confirming and writing the failures.
            let wall = &mut self.state.runs[r].wall_ms;
            *wall = wall.saturating_add(started.elapsed().as_millis() as u64);
        }
        self.state.seeds_run = end;
        true
    }
}

/// Counts each check's verdict of one outcome, and `panic` / `time_limit`.
fn count_verdicts<T>(stats: &mut state::RunStats, o: &Outcome<T>) {
    use shopsim_sim::check::Verdict;
    for report in &o.reports {
        stats.count(&report.check, report.verdict);
    }
    let kind = o.failure.as_ref().map(|f| f.kind);
    let panicked = kind == Some(FailureKind::Panic);
    let timed_out = o.failure.as_ref().is_some_and(|f| f.check == "time_limit");
    stats.count(
        "panic",
        if panicked {
            Verdict::Invalid
        } else {
            Verdict::Valid
        },
    );
    stats.count(
        "time_limit",
        if timed_out {
            Verdict::Invalid
        } else if panicked {
            Verdict::Unknown
        } else {
            Verdict::Valid
        },
    );
}

/// Reads the state of the campaign to resume, or says why it cannot be resumed.
pub(super) fn resume_state(campaign: &Campaign, path: &std::path::Path) -> Result<State, String> {
    if std::fs::symlink_metadata(path).is_err() {
        return Err(format!("--resume: no campaign state in {}", path.display()));
    }
    // A regular file of bounded size only (not a FIFO or a link to /dev/zero).
    let text = crate::input::read_text(path, crate::input::STATE_BYTES_MAX)
        .map_err(|e| format!("--resume: {e}"))?;
    let state =
        State::from_json(&text).map_err(|e| format!("--resume: {}: {e}", path.display()))?;
    if state.identity != campaign.identity {
        return Err(format!(
            "--resume: {} holds a different campaign ({}); this one is {}",
            path.display(),
            state.identity,
            campaign.identity
        ));
    }
    let names: Vec<String> = campaign.runs.iter().map(Selected::name).collect();
    let saved: Vec<&String> = state.runs.iter().map(|r| &r.name).collect();
    if saved != names.iter().collect::<Vec<_>>() {
        return Err(format!(
            "--resume: {} holds a campaign over other runs ({saved:?}); this one runs {names:?}",
            path.display()
        ));
    }
    Ok(state)
}
