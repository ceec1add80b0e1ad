//! What a campaign is, from its arguments: the runs, limits, retention and its identity
//! (the arguments that a resumed campaign must share).

use std::path::PathBuf;
use std::time::Duration;

use shopsim_sim::runner::System;

use super::groups;
use super::state::{self, State};
use super::Args;
use crate::input::{parse_duration, parse_duration_flag, parse_jobs, parse_shard};
use crate::reproduce::{Draw, Source};
use crate::run::Selected;
use crate::{EXIT_NONDETERMINISM, EXIT_OK};

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
    /// How each seed's configuration is drawn: swarm faults and steering, swarm faults only
    /// (`--no-steering`), or the scenario's own (`--no-swarm`).
    pub draw: Draw,
    /// `--duration`: the campaign's total wall time.
    pub duration: Option<Duration>,
    /// `--seeds`: the campaign's total seeds.
    pub seeds_target: Option<u64>,
    pub(super) shard: (u64, u64),
    pub(super) jobs: usize,
    pub(super) artifacts_max: usize,
    pub(super) groups_max: usize,
    pub(super) status_interval: Duration,
    /// Per run, the names of its checks (with `panic` and `time_limit`).
    pub(super) checks: Vec<Vec<String>>,
    /// `--corpus-share`.
    pub corpus_share: f64,
    pub(super) identity: String,
}

impl Campaign {
    /// The campaign the arguments define, every flag and scenario checked; nothing is
    /// written (see [`Campaign::prepare_out`]).
    pub(super) fn from_args(args: &Args) -> Result<Campaign, String> {
        if args.duration.is_none() && args.seeds.is_none() {
            return Err("--duration or --seeds: give one of them".to_string());
        }
        let duration = args.duration.as_deref().map(parse_duration).transpose()?;
        if let Some(seeds) = args.seeds {
            if !(1..=state::SEEDS_RUN_MAX).contains(&seeds) {
                let why = if seeds == 0 {
                    "must be at least 1".to_string()
                } else {
                    format!(
                        "must be at most {} (the most seeds one campaign runs)",
                        state::SEEDS_RUN_MAX
                    )
                };
                return Err(format!("--seeds: {why}, got `{seeds}`"));
            }
        }
        let shard = args
            .shard
            .as_deref()
            .map(parse_shard)
            .transpose()?
            .unwrap_or((1, 1));
        let jobs = parse_jobs(args.jobs)?;
        let corpus_share = args.corpus_share;
        if !(0.0..=super::corpus::SHARE_MAX).contains(&corpus_share) {
            return Err(format!(
                "--corpus-share: expected a share from 0 to {}, got `{corpus_share}`",
                super::corpus::SHARE_MAX
            ));
        }
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
        let draw = match (args.no_swarm, args.no_steering) {
            (true, _) => Draw::Scenario,
            (false, true) => Draw::SwarmFaults,
            (false, false) => Draw::Swarm,
        };
        let identity = format!(
            "scenarios={:?} files={files:?} profile={:?} bugs={:?} shard={}/{} swarm={} steering={}",
            args.scenarios,
            args.profile,
            args.bugs,
            shard.0,
            shard.1,
            !args.no_swarm,
            !args.no_steering
        );
        Ok(Campaign {
            out: args.out.clone(),
            runs,
            bugs: args.bugs.clone(),
            draw,
            duration,
            seeds_target: args.seeds,
            shard,
            jobs,
            artifacts_max: a,
            groups_max: args.max_groups,
            status_interval,
            checks,
            identity,
            corpus_share,
        })
    }

    /// Creates `--out` and checks that it can be written.
    pub(super) fn prepare_out(&self) -> Result<(), String> {
        let out = &self.out;
        std::fs::create_dir_all(out).map_err(|e| format!("--out {}: {e}", out.display()))?;
        let probe = out.join(format!(".write-probe-{}", std::process::id()));
        std::fs::write(&probe, b"")
            .map_err(|e| format!("--out {}: not writable: {e}", out.display()))?;
        let _ = std::fs::remove_file(probe);
        Ok(())
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
    pub(super) fn exit_code(&self, state: &State) -> u8 {
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
