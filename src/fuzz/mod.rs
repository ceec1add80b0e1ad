//! `shopsim fuzz`: fresh seeds in swarm mode on N threads until a duration or seed count is
//! reached, over built-in scenarios or scenario files.
//!
//! Failures are grouped by signature (`groups`, `crate::signature`): the first failure of a
//! new group prints a FAIL line and its replay commands, repeats are counted and summarised
//! in a rate-limited line, and each group keeps a bounded number of artifacts (always its
//! first and its smallest failure), each re-run once to confirm it replays with its hash. The
//! campaign's state (`state`: counts and groups, never a list of seeds) is saved after every
//! batch, so Ctrl-C or a kill loses at most one batch and `--resume` continues; `--duration`
//! and `--seeds` are the campaign's totals across sessions. One campaign at a time holds
//! `--out` (`lock`). `report.json` and `junit.xml` (`report`) are written at the end.
//! `--shard K/N` makes N machines cover disjoint seeds.

pub mod groups;
pub mod lock;
pub mod report;
pub mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shopsim_sim::fault::FaultPlan;
use shopsim_sim::runner::{FailureKind, Outcome, SimConfig, System};

use crate::artifact::{self, Artifact};
use crate::progress::{hms, on_terminal, Bar, Ticker};
use crate::reproduce::{replay_artifact_command, SeedRun, Source};
use crate::run::Selected;
use crate::signature::{truncate_chars, Signature};
use crate::{EXIT_BAD_INPUT, EXIT_NONDETERMINISM, EXIT_OK};
use groups::{Exemplar, Group, Keep, RunSize};
use state::State;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenarios (default: every built-in one, unless --file is given).
    scenarios: Vec<String>,
    /// A scenario file outside the registry (repeatable).
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// The campaign's total wall time, across --resume: `90s`, `10m`, `8h`.
    #[arg(long)]
    duration: Option<String>,
    /// The campaign's total number of seeds, across --resume.
    #[arg(long)]
    seeds: Option<u64>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// This machine's share of the seeds: `K/N` (1 <= K <= N).
    #[arg(long)]
    shard: Option<String>,
    /// Where artifacts, the state file and the reports go.
    #[arg(long, default_value = "target/shopsim/fuzz")]
    out: PathBuf,
    /// Continue the campaign saved in --out.
    #[arg(long)]
    resume: bool,
    /// Only this database profile.
    #[arg(long)]
    profile: Option<String>,
    /// Turn on a planted bug (repeatable).
    #[arg(long = "bug", value_name = "NAME")]
    bugs: Vec<String>,
    /// Keep each scenario's own fault plan instead of swarm draws.
    #[arg(long)]
    no_swarm: bool,
    /// Artifacts kept per failure group: its first and its smallest failure, then the next
    /// ones up to this many (at least 2).
    #[arg(long, default_value_t = groups::ARTIFACTS_PER_GROUP_DEFAULT)]
    max_artifacts_per_group: usize,
    /// Failure groups kept; failures of further shapes are counted in one group per
    /// scenario and check.
    #[arg(long, default_value_t = groups::GROUPS_DEFAULT)]
    max_groups: usize,
    /// Without a terminal, how often a status line is printed; also the least time between
    /// two lines that count repeated failures: `30s`, `5m`.
    #[arg(long, default_value = "60s")]
    status_interval: String,
}

/// Parses `90s`, `10m`, `8h`, `1d` for the flag `flag`.
pub fn parse_duration_flag(flag: &str, text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{flag}: expected a number and a unit (s, m, h, d), got `{text}`"))?;
    let unit_s = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{flag}: unknown unit in `{text}` (use s, m, h or d)"
            ))
        }
    };
    let seconds = n
        .checked_mul(unit_s)
        .filter(|s| *s <= state::ELAPSED_MS_MAX / 1000)
        .ok_or_else(|| format!("{flag}: at most 100 years, got `{text}`"))?;
    if seconds == 0 {
        return Err(format!("{flag}: must be longer than 0, got `{text}`"));
    }
    Ok(Duration::from_secs(seconds))
}

/// Parses `--duration`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_flag("--duration", text)
}

/// Parses `K/N`.
pub fn parse_shard(text: &str) -> Result<(u64, u64), String> {
    let err = || format!("--shard: expected K/N with 1 <= K <= N, got `{text}`");
    let (k, n) = text.split_once('/').ok_or_else(err)?;
    let (k, n): (u64, u64) = (k.parse().map_err(|_| err())?, n.parse().map_err(|_| err())?);
    if k == 0 || n == 0 || k > n {
        return Err(err());
    }
    Ok((k, n))
}

/// The seed of campaign index `i` on shard `k` of `n`: disjoint across shards.
fn seed_of(i: u64, shard: (u64, u64)) -> u64 {
    let index = i.wrapping_mul(shard.1).wrapping_add(shard.0 - 1);
    // SplitMix64, so consecutive indexes give unrelated seeds.
    let mut z = index.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The configuration of `seed`: the scenario's own, or in swarm mode a fault plan drawn from
/// the seed over every family (keeping the scenario's quiet period). `replay --swarm` uses
/// it too, so a swarm seed replays from its number alone.
pub fn seed_config(base: &SimConfig, seed: u64, swarm: bool) -> SimConfig {
    if !swarm {
        return base.clone();
    }
    let allowed = FaultPlan {
        quiet_period_ms: base.faults.quiet_period_ms,
        ..FaultPlan::all()
    };
    SimConfig {
        faults: shopsim_sim::swarm::draw(seed, &allowed),
        ..base.clone()
    }
}

/// FNV-1a of `text`, to name a scenario file's content in the campaign's identity.
fn fnv64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What a campaign is, from its arguments.
#[derive(Debug)]
pub struct Campaign {
    /// `--out`.
    pub out: PathBuf,
    /// The (scenario, profile) pairs, in campaign order.
    pub runs: Vec<Selected>,
    /// Planted bugs.
    pub bugs: Vec<String>,
    /// Swarm mode.
    pub swarm: bool,
    /// `--duration`: the campaign's total wall time.
    pub duration: Option<Duration>,
    /// `--seeds`: the campaign's total seeds.
    pub seeds_target: Option<u64>,
    shard: (u64, u64),
    jobs: usize,
    artifacts_max: usize,
    groups_max: usize,
    status_interval: Duration,
    /// Per run, the names of its checks (with `panic` and `time_limit`).
    checks: Vec<Vec<String>>,
    identity: String,
}

impl Campaign {
    fn from_args(args: &Args) -> Result<Campaign, String> {
        if args.duration.is_none() && args.seeds.is_none() {
            return Err("give --duration or --seeds".to_string());
        }
        let duration = args.duration.as_deref().map(parse_duration).transpose()?;
        if args.seeds == Some(0) {
            return Err("--seeds: must be at least 1, got `0`".to_string());
        }
        let shard = args
            .shard
            .as_deref()
            .map(parse_shard)
            .transpose()?
            .unwrap_or((1, 1));
        let jobs = match args.jobs {
            Some(0) => return Err("--jobs: must be at least 1, got `0`".to_string()),
            Some(j) => j,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let a = args.max_artifacts_per_group;
        if !(groups::ARTIFACTS_PER_GROUP_MIN..=groups::ARTIFACTS_PER_GROUP_MAX).contains(&a) {
            return Err(format!(
                "--max-artifacts-per-group: must be in {}..={} (each group keeps its first and its smallest failure), got `{a}`",
                groups::ARTIFACTS_PER_GROUP_MIN,
                groups::ARTIFACTS_PER_GROUP_MAX
            ));
        }
        if !(1..=groups::GROUPS_MAX).contains(&args.max_groups) {
            return Err(format!(
                "--max-groups: must be in 1..={}, got `{}`",
                groups::GROUPS_MAX,
                args.max_groups
            ));
        }
        let status_interval = parse_duration_flag("--status-interval", &args.status_interval)?;
        let runs = crate::run::resolve(
            &args.scenarios,
            args.scenarios.is_empty() && args.files.is_empty(),
            &args.files,
            args.profile.as_deref(),
        )?;
        for (i, selected) in runs.iter().enumerate() {
            // Two runs of one name would share their groups, artifacts and counts.
            if let Some(other) = runs[..i].iter().find(|o| o.name() == selected.name()) {
                return Err(format!(
                    "SCENARIO: `{}` is given twice ({} and {}); a campaign runs each scenario once",
                    selected.name(),
                    other.source.args().join(" "),
                    selected.source.args().join(" ")
                ));
            }
        }
        let mut checks = Vec::new();
        for selected in &runs {
            let system = selected
                .system(&args.bugs)
                .map_err(|e| format!("--bug: {e}"))?;
            let mut names: Vec<String> = system
                .checkers(&selected.scenario.sim_config())
                .iter()
                .map(|c| c.name().to_string())
                .collect();
            names.extend(["panic".to_string(), "time_limit".to_string()]);
            checks.push(names);
        }
        std::fs::create_dir_all(&args.out)
            .map_err(|e| format!("--out {}: {e}", args.out.display()))?;
        let probe = args
            .out
            .join(format!(".write-probe-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .map_err(|e| format!("--out {}: not writable: {e}", args.out.display()))?;
        let _ = std::fs::remove_file(probe);
        let files: Vec<String> = runs
            .iter()
            .filter_map(|s| match &s.source {
                Source::File(path) => Some(format!(
                    "{}#{:016x}",
                    path.display(),
                    fnv64(&s.scenario.to_toml())
                )),
                Source::Builtin(_) => None,
            })
            .collect();
        let swarm = !args.no_swarm;
        let identity = format!(
            "scenarios={:?} files={files:?} profile={:?} bugs={:?} shard={}/{} swarm={swarm}",
            args.scenarios, args.profile, args.bugs, shard.0, shard.1
        );
        Ok(Campaign {
            out: args.out.clone(),
            runs,
            bugs: args.bugs.clone(),
            swarm,
            duration,
            seeds_target: args.seeds,
            shard,
            jobs,
            artifacts_max: a,
            groups_max: args.max_groups,
            status_interval,
            checks,
            identity,
        })
    }

    /// The run named `scenario@profile`.
    pub fn run_named(&self, name: &str) -> Option<&Selected> {
        self.runs.iter().find(|s| s.name() == name)
    }

    /// The checks of run `name`: its checkers, `panic`, `time_limit`, and any other check
    /// that failed in it (an `always!` assertion).
    pub fn check_names(&self, name: &str, state: &State) -> Vec<String> {
        let mut names = self
            .runs
            .iter()
            .position(|s| s.name() == name)
            .map(|i| self.checks[i].clone())
            .unwrap_or_default();
        let seen = state
            .runs
            .iter()
            .filter(|r| r.name == name)
            .flat_map(|r| r.checks.iter().map(|c| c.check.clone()))
            .chain(
                state
                    .groups
                    .iter()
                    .filter(|g| g.system == name)
                    .map(|g| g.check.clone()),
            );
        for check in seen {
            if !names.contains(&check) {
                names.push(check);
            }
        }
        names
    }

    /// The exit code of a campaign in `state`: the worst failure kind of its groups, 5 if a
    /// failure did not reproduce, 0 if nothing failed.
    fn exit_code(&self, state: &State) -> u8 {
        let worst = state
            .groups
            .iter()
            .map(|g| g.kind.exit_code())
            .max()
            .unwrap_or(EXIT_OK);
        if state.nondeterministic > 0 {
            worst.max(EXIT_NONDETERMINISM)
        } else {
            worst
        }
    }
}

/// Counters the status thread reads while a batch runs.
#[derive(Debug, Default)]
struct Live {
    seeds: AtomicU64,
    failing: AtomicU64,
    groups: AtomicU64,
}

/// The campaign's loop and its files.
struct Session<'a> {
    campaign: &'a Campaign,
    state: State,
    state_path: PathBuf,
    live: Arc<Live>,
    bar: Bar,
    /// Repeated failures per group id since the last count line.
    repeats: BTreeMap<u64, u64>,
    last_repeat_line: Instant,
}

impl Session<'_> {
    /// Saves the state (counting the write in the state's own I/O figures); false if it
    /// could not be written.
    fn save(&mut self) -> bool {
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

    fn count_write(&mut self, bytes: u64) {
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
            failure,
            reports: o.reports.clone(),
            history: o.history.clone(),
        };
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
            };
            let id = self.state.groups.len() as u64 + 1;
            let group = Group::new(id, signature, failure.kind, &failure.witness, exemplar);
            self.state.groups.push(group);
            self.live.groups.store(id, Ordering::Relaxed);
            self.print_new_group(run, o, id, artifact.as_deref());
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

    fn print_new_group<T>(&self, run: usize, o: &Outcome<T>, id: u64, artifact: Option<&str>) {
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
            swarm: campaign.swarm,
        };
        text.push_str(&format!("\nnote: or by seed: {}", by_seed.replay_command()));
        self.bar.println(&text);
    }

    /// The count line for repeated failures, if any and if the last one is old enough (or
    /// `now` is set, at the end).
    fn print_repeats(&mut self, now: bool) {
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

    /// Runs one batch of `count` campaign indexes, from `state.seeds_run`.
    fn batch(&mut self, count: u64) {
        let campaign = self.campaign;
        let first = self.state.seeds_run;
        let runs = campaign.runs.len() as u64;
        for (r, selected) in campaign.runs.iter().enumerate() {
            // Each index picks its (scenario, profile) round robin and a fresh seed.
            let seeds: Vec<u64> = (first..first + count)
                .filter(|i| i % runs == r as u64)
                .map(|i| seed_of(i, campaign.shard))
                .collect();
            if seeds.is_empty() {
                continue;
            }
            let system = selected.system(&campaign.bugs).expect("checked");
            let base = selected.scenario.sim_config();
            let swarm = campaign.swarm;
            let started = Instant::now();
            let mut failing = Vec::new();
            let stats = &mut self.state.runs[r];
            let live = &self.live;
            shopsim_sim::fuzz::for_each_seed(
                || system.clone(),
                &seeds,
                |seed| seed_config(&base, seed, swarm),
                campaign.jobs,
                |o| {
                    live.seeds.fetch_add(1, Ordering::Relaxed);
                    count_verdicts(stats, &o);
                    if !o.passed() {
                        failing.push(o);
                    }
                    true
                },
            );
            stats.seeds += seeds.len() as u64;
            // In seed order, whatever order the threads finished in: a group's first
            // failure is its earliest campaign index.
            failing.sort_by_key(|o| seeds.iter().position(|s| *s == o.seed));
            for o in &failing {
                let config = seed_config(&base, o.seed, swarm);
                self.file_failure(r, &system, &config, o);
            }
            // Running the seeds and confirming and writing the failures.
            let wall = &mut self.state.runs[r].wall_ms;
            *wall = wall.saturating_add(started.elapsed().as_millis() as u64);
        }
        self.state.seeds_run += count;
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
fn resume_state(campaign: &Campaign, path: &std::path::Path) -> Result<State, String> {
    if !path.exists() {
        return Err(format!("--resume: no campaign state in {}", path.display()));
    }
    let text = artifact::read_bounded(path, state::STATE_BYTES_MAX)
        .map_err(|e| format!("--resume: {}: {e}", path.display()))?;
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

pub fn run(args: Args) -> u8 {
    let campaign = match Campaign::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    // Held until the campaign ends: a second campaign on this folder is refused.
    let _lock = match lock::OutLock::acquire(&campaign.out) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let state_path = campaign.out.join("state.json");
    let names: Vec<String> = campaign.runs.iter().map(Selected::name).collect();
    let mut state = if args.resume {
        match resume_state(&campaign, &state_path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_BAD_INPUT;
            }
        }
    } else {
        if state_path.exists() {
            eprintln!(
                "note: {} held a campaign; starting a new one (--resume continues a campaign)",
                state_path.display()
            );
        }
        State::new(campaign.identity.clone(), &names)
    };
    state.sessions += 1;
    let elapsed_before = Duration::from_millis(state.elapsed_ms);
    let session_started = Instant::now();
    let elapsed_total = move || elapsed_before + session_started.elapsed();
    let live = Arc::new(Live::default());
    live.seeds.store(state.seeds_run, Ordering::Relaxed);
    live.failing.store(state.failing_seeds(), Ordering::Relaxed);
    live.groups
        .store(state.groups.len() as u64, Ordering::Relaxed);
    // Under --duration the bar measures time (of the whole campaign), else seeds.
    let bar = match (campaign.duration, campaign.seeds_target) {
        (Some(d), _) => Bar::with_template(d.as_secs(), "[{bar:20}] {msg}"),
        (None, Some(n)) => Bar::with_template(n, "[{bar:20}] {msg}"),
        (None, None) => unreachable!("checked: --duration or --seeds"),
    };
    let status = {
        let (live, bar) = (live.clone(), bar.clone());
        let (duration, target) = (campaign.duration, campaign.seeds_target);
        let seeds_before = state.seeds_run;
        let terminal = on_terminal();
        let period = if terminal {
            Duration::from_secs(1)
        } else {
            campaign.status_interval
        };
        Ticker::start(period, move |session| {
            let seeds = live.seeds.load(Ordering::Relaxed);
            let elapsed = elapsed_before + session;
            let rate = (seeds - seeds_before) as f64 / session.as_secs_f64().max(1e-9);
            let of = match (duration, target) {
                (Some(d), _) => format!(" of {}", hms(d)),
                (None, Some(n)) => format!(", {seeds} of {n} seeds"),
                (None, None) => String::new(),
            };
            let (groups, failing) = (
                live.groups.load(Ordering::Relaxed),
                live.failing.load(Ordering::Relaxed),
            );
            if terminal {
                // Short enough for an 80-column terminal.
                bar.set_position(if duration.is_some() {
                    elapsed.as_secs()
                } else {
                    seeds
                });
                bar.set_message(format!(
                    "{seeds} seeds {rate:.1}/s, {groups} groups ({failing} failing), {}{of}",
                    hms(elapsed)
                ));
            } else {
                eprintln!(
                    "status: {seeds} seeds, {rate:.1} seeds/s, {groups} groups ({failing} failing seeds), elapsed {}{of}",
                    hms(elapsed)
                );
            }
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let mut session = Session {
        campaign: &campaign,
        state,
        state_path,
        live,
        bar: bar.clone(),
        repeats: BTreeMap::new(),
        last_repeat_line: Instant::now(),
    };
    // Saved before any work, so a campaign killed at any moment can be resumed.
    if !session.save() {
        return EXIT_BAD_INPUT;
    }
    // Every (scenario, profile) gets several seeds per thread in each batch, so the threads
    // stay busy; the state is saved between batches.
    let batch = campaign.runs.len() as u64 * campaign.jobs as u64 * 4;
    let mut ran_any = false;
    loop {
        if stop.load(Ordering::SeqCst) || campaign.duration.is_some_and(|d| elapsed_total() >= d) {
            break;
        }
        let left = campaign.seeds_target.map_or(batch, |t| {
            t.saturating_sub(session.state.seeds_run).min(batch)
        });
        if left == 0 {
            break;
        }
        ran_any = true;
        session.batch(left);
        session.state.elapsed_ms = elapsed_total().as_millis() as u64;
        let _ = session.save();
        session.print_repeats(false);
    }
    drop(status);
    bar.finish();
    session.print_repeats(true);
    session.state.elapsed_ms = elapsed_total().as_millis() as u64;
    let state = &session.state;
    if !ran_any && !stop.load(Ordering::SeqCst) {
        println!(
            "nothing left to run: the campaign has run {} seeds in {}{}",
            state.seeds_run,
            hms(Duration::from_millis(state.elapsed_ms)),
            campaign
                .duration
                .map_or(String::new(), |d| format!(" (--duration {})", hms(d)))
        );
    }
    let elapsed_s = state.elapsed_ms as f64 / 1000.0;
    println!(
        "{} seeds in {:.1} s over {} sessions ({:.1} seeds/s), {} failure groups ({} failing seeds{})",
        state.seeds_run,
        elapsed_s,
        state.sessions,
        state.seeds_run as f64 / elapsed_s.max(1e-9),
        state.groups.len(),
        state.failing_seeds(),
        if state.nondeterministic > 0 {
            format!(", {} did NOT reproduce", state.nondeterministic)
        } else {
            String::new()
        }
    );
    const GROUPS_PRINTED_MAX: usize = 50;
    for g in state.groups.iter().take(GROUPS_PRINTED_MAX) {
        println!(
            "  group {} {} {}: {} seeds; first seed={}, smallest seed={} ({} ops){}",
            g.id,
            g.system,
            g.check,
            g.count,
            g.first.seed,
            g.smallest.seed,
            g.smallest.ops,
            g.smallest
                .artifact
                .as_ref()
                .map_or(String::new(), |a| format!(
                    ": {}",
                    campaign.out.join(a).display()
                ))
        );
    }
    if state.groups.len() > GROUPS_PRINTED_MAX {
        println!(
            "  and {} more groups in {}",
            state.groups.len() - GROUPS_PRINTED_MAX,
            campaign.out.join("report.json").display()
        );
    }
    let exit = campaign.exit_code(state);
    let stopped = stop.load(Ordering::SeqCst);
    let report = report::report_json(&campaign, state, exit, stopped);
    let junit = report::junit_xml(&campaign, state);
    match artifact::write_atomic(&campaign.out.join("report.json"), &report) {
        Ok(bytes) => session.count_write(bytes),
        Err(e) => eprintln!("error: writing report.json: {e}"),
    }
    match artifact::write_bytes_atomic(&campaign.out.join("junit.xml"), junit.as_bytes()) {
        Ok(()) => session.count_write(junit.len() as u64),
        Err(e) => eprintln!("error: writing junit.xml: {e}"),
    }
    let _ = session.save();
    if stopped {
        println!("stopped; continue with --resume");
    }
    exit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_shards() {
        assert_eq!(parse_duration("8h").unwrap(), Duration::from_secs(28_800));
        assert!(parse_duration("8x").unwrap_err().contains("`8x`"));
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("9999999999999999d")
            .unwrap_err()
            .contains("at most 100 years"));
        assert_eq!(parse_shard("2/3").unwrap(), (2, 3));
        assert!(parse_shard("3/2").unwrap_err().contains("`3/2`"));
        let a: Vec<u64> = (0..100).map(|i| seed_of(i, (1, 2))).collect();
        let b: Vec<u64> = (0..100).map(|i| seed_of(i, (2, 2))).collect();
        assert!(a.iter().all(|s| !b.contains(s)));
    }
}
