//! `shopsim run`: runs scenarios on seeds and prints a summary table.

use std::path::PathBuf;

use serde_json::json;
use shopsim_scenarios::Scenario;
use shopsim_sim::check::LatencySla;
use shopsim_sim::coverage::{CoverageReport, Window};
use shopsim_sim::db::Profile;
use shopsim_sim::seed::SeedPlan;

use crate::reproduce::{Draw, SeedRun, Source};
use crate::signature::Signature;
use crate::{EXIT_BAD_INPUT, EXIT_OK};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Built-in scenarios to run (see `shopsim list`).
    scenarios: Vec<String>,
    /// Run every built-in scenario.
    #[arg(long)]
    all: bool,
    /// A scenario file outside the registry (repeatable).
    #[arg(long = "file", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// Run exactly this seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<String>,
    /// How many seeds per scenario and profile (default: 8; up to 2^64 - 1, run lazily).
    #[arg(long)]
    seeds: Option<String>,
    /// First seed (with --seeds).
    #[arg(long, default_value = "0")]
    seed_start: String,
    /// Only this database profile (default: each profile the scenario names).
    #[arg(long, conflicts_with = "all_profiles")]
    profile: Option<String>,
    /// Every scenario under all eight database profiles, not only those it names.
    #[arg(long)]
    all_profiles: bool,
    /// Turn on a planted bug (repeatable), to see the checks at work.
    #[arg(long = "bug", value_name = "NAME")]
    bugs: Vec<String>,
    /// Worker threads, 1..=256 (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Steer each seed's schedule with a steering plan drawn from the seed (as swarm mode
    /// draws it, always on); faults stay the scenario's own.
    #[arg(long)]
    steering: bool,
    /// Print a JSON summary instead of the table: per scenario its figures and each seed's
    /// trace hash and failure, and the failures grouped by signature with replay commands.
    #[arg(long)]
    json: bool,
}

/// A scenario under one profile, with where it came from (to name it in commands).
#[derive(Debug, Clone)]
pub struct Selected {
    /// The scenario.
    pub scenario: Scenario,
    /// The database profile.
    pub profile: Profile,
    /// A built-in name or a file.
    pub source: Source,
}

impl Selected {
    /// `scenario@profile`, as the system and its reports name it.
    pub fn name(&self) -> String {
        format!("{}@{}", self.scenario.name, self.profile.name())
    }

    /// The shop with planted `bugs`.
    pub fn system(
        &self,
        bugs: &[String],
    ) -> Result<shopsim_model::shop::Shop, shopsim_sim::input::InputError> {
        self.scenario.system(self.profile, bugs)
    }
}

/// The race windows declared by the systems of `runs`, in declaration order.
pub fn declared_windows(runs: &[Selected]) -> Vec<Window> {
    let mut declared: Vec<Window> = Vec::new();
    for selected in runs {
        if let Ok(system) = selected.system(&[]) {
            for w in shopsim_sim::runner::System::windows(&system) {
                if !declared.contains(w) {
                    declared.push(*w);
                }
            }
        }
    }
    declared
}

/// The race windows declared by the systems of `runs` that `coverage` never hit.
pub fn windows_never_hit(runs: &[Selected], coverage: &CoverageReport) -> Vec<String> {
    coverage
        .never_hit(&declared_windows(runs))
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// Resolves scenario names, files and flags into (scenario, profile) pairs; errors name the
/// flag and the value.
pub fn resolve(
    names: &[String],
    all: bool,
    files: &[PathBuf],
    profile: Option<&str>,
) -> Result<Vec<Selected>, String> {
    let mut scenarios = Vec::new();
    if all {
        for s in shopsim_scenarios::builtin() {
            let source = Source::Builtin(s.name.clone());
            scenarios.push((s, source));
        }
    }
    let mut named_profile = None;
    for name in names {
        let s = shopsim_scenarios::find(name).map_err(|e| format!("SCENARIO: {e}"))?;
        let source = Source::Builtin(s.name.clone());
        scenarios.push((s, source));
        // `payment-race@pg_rc`, as failure reports name a run, selects that profile.
        if let Some((_, p)) = name.split_once('@') {
            named_profile = Some(p.to_string());
        }
    }
    let profile = profile.or(named_profile.as_deref());
    for path in files {
        let text = crate::input::read_text(path, crate::input::SCENARIO_BYTES_MAX)
            .map_err(|e| format!("--file {e}"))?;
        let s =
            Scenario::from_toml(&text).map_err(|e| format!("--file {}: {e}", path.display()))?;
        scenarios.push((s, Source::File(path.clone())));
    }
    if scenarios.is_empty() {
        return Err(
            "SCENARIO: required: name one (see `shopsim list`), or pass --all or --file"
                .to_string(),
        );
    }
    let only = match profile {
        None => None,
        Some(p) => Some(
            p.parse::<Profile>()
                .map_err(|e| format!("--profile: {e}"))?,
        ),
    };
    let mut runs = Vec::new();
    for (s, source) in scenarios {
        let mut profiles: Vec<Profile> = s
            .profile_list()
            .into_iter()
            .filter(|p| only.is_none_or(|o| o == *p))
            .collect();
        if let Some(o) = only {
            if !profiles.contains(&o) {
                profiles.push(o);
            }
        }
        for p in profiles {
            runs.push(Selected {
                scenario: s.clone(),
                profile: p,
                source: source.clone(),
            });
        }
    }
    Ok(runs)
}

/// Each scenario of `runs` under every database profile, in `Profile::ALL` order.
fn every_profile(runs: Vec<Selected>) -> Vec<Selected> {
    let mut scenarios: Vec<Selected> = Vec::new();
    for selected in runs {
        if !scenarios
            .iter()
            .any(|s| s.scenario.name == selected.scenario.name)
        {
            scenarios.push(selected);
        }
    }
    scenarios
        .into_iter()
        .flat_map(|s| {
            Profile::ALL.into_iter().map(move |profile| Selected {
                profile,
                ..s.clone()
            })
        })
        .collect()
}

/// The seeds from `--seed` / `--seeds` / `--seed-start`: a range, run lazily, so any count up
/// to 2^64 - 1 is accepted and costs no memory (the last seed must not pass 2^64 - 1).
pub fn seeds(
    seed: Option<&str>,
    count: Option<&str>,
    start: &str,
    default_count: u64,
) -> Result<SeedPlan, String> {
    let plan = SeedPlan::from_vars(seed, count, Some(start), default_count).map_err(|e| {
        let flag = match e.field.as_str() {
            "SHOPSIM_SEED" => "--seed",
            "SHOPSIM_SEEDS" => "--seeds",
            _ => "--seed-start",
        };
        let value = shopsim_sim::input::cut(&e.value, 40);
        format!("{flag}: {}, got `{value}`", e.expected)
    })?;
    Ok(plan)
}

/// Latencies counted by the value a table shows (0.1 ms), so that a percentile over any
/// number of seeds needs memory for distinct shown values only, and shows exactly what the
/// percentile of every latency would: rounding is monotone, so it keeps the order.
#[derive(Debug, Default)]
pub struct LatencyCounts {
    tenths_ms: std::collections::BTreeMap<u64, u64>,
    total: u64,
}

impl LatencyCounts {
    /// Counts latencies in µs.
    pub fn extend(&mut self, latencies_us: impl IntoIterator<Item = u64>) {
        for us in latencies_us {
            let shown: f64 = format!("{:.1}", us as f64 / 1000.0)
                .parse()
                .expect("a formatted number parses");
            *self
                .tenths_ms
                .entry((shown * 10.0).round() as u64)
                .or_default() += 1;
            self.total += 1;
        }
    }

    /// The `p`-th percentile (nearest rank, as [`shopsim_sim::check::percentile`]), ms.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        let sorted_rank = ((p / 100.0) * self.total as f64).ceil() as u64;
        let rank = sorted_rank.clamp(1, self.total.max(1));
        let mut seen = 0;
        for (&tenths, &n) in &self.tenths_ms {
            seen += n;
            if seen >= rank {
                return Some(tenths as f64 / 10.0);
            }
        }
        None
    }
}

/// The most failures `run` prints in full (the first ones in seed order); the table counts
/// all of them.
pub const FAILURES_SHOWN_MAX: usize = 100;

/// The latency class of these operation kinds.
fn latency_class(kinds: &[&str]) -> LatencySla {
    LatencySla {
        name: String::new(),
        kinds: kinds.iter().map(|s| s.to_string()).collect(),
        percentile: 95.0,
        threshold_ms: 0.0,
    }
}

/// A failure group of one run (`run --json`): seeds with one signature.
struct RunGroup {
    signature: Signature,
    kind: shopsim_sim::runner::FailureKind,
    witness: String,
    count: u64,
    /// (seed, history operations) of the first failure, in seed order.
    first: (u64, u64),
    /// (history operations, seed) of the smallest.
    smallest: (u64, u64),
}

/// What `run` runs: the scenarios under their profiles, the seeds and the threads.
type Plan = (Vec<Selected>, SeedPlan, usize);

/// Checks every flag and file without running anything; errors name the flag and the value.
pub fn check_args(args: &Args) -> Result<Plan, String> {
    let runs = resolve(
        &args.scenarios,
        args.all,
        &args.files,
        args.profile.as_deref(),
    )?;
    let runs = if args.all_profiles {
        every_profile(runs)
    } else {
        runs
    };
    let seeds = seeds(
        args.seed.as_deref(),
        args.seeds.as_deref(),
        &args.seed_start,
        8,
    )?;
    let jobs = crate::input::parse_jobs(args.jobs)?;
    // Check every bug name before any work starts.
    for selected in &runs {
        selected
            .system(&args.bugs)
            .map_err(|e| format!("--bug: {e}"))?;
    }
    Ok((runs, seeds, jobs))
}

pub fn run(args: Args) -> u8 {
    let (runs, seeds, jobs) = match check_args(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    shopsim_sim::trace::init_from_env();
    let bar = crate::progress::Bar::new(
        (runs.len() as u64).saturating_mul(seeds.count),
        "run",
        "seeds",
    );
    if !args.json {
        bar.println(&format!(
            "{:<34} {:>6} {:>9} {:>14} {:>12} {:>11} {:>13}",
            "scenario",
            "seeds",
            "failures",
            "p95 checkout",
            "p95 reads",
            "cache hits",
            "virtual time"
        ));
    }
    // A seed's place in the plan: the plan is a range that does not wrap around.
    let position = |seed: u64| seed - seeds.start;
    let mut exit = EXIT_OK;
    let mut failures = Vec::new();
    let draw = if args.steering {
        Draw::Steering
    } else {
        Draw::Scenario
    };
    let mut coverage_all = CoverageReport::default();
    let mut scenarios_json = Vec::new();
    let mut groups_json = Vec::new();
    for selected in &runs {
        let system = selected.system(&args.bugs).expect("checked above");
        let config = selected.scenario.sim_config();
        // Streamed: only the figures and the failures are kept, so any number of seeds fits.
        let mut seen = 0usize;
        let mut failed = 0usize;
        let mut virtual_s = 0.0f64;
        let (mut checkout, mut reads) = (LatencyCounts::default(), LatencyCounts::default());
        let (mut hits, mut cache_reads) = (0u64, 0u64);
        let mut coverage = shopsim_sim::coverage::CoverageReport::default();
        // Per check, the seeds in which it had nothing to judge.
        let mut unjudged: std::collections::BTreeMap<String, usize> = Default::default();
        let checkout_sla = latency_class(&shopsim_model::shop::CHECKOUT_KINDS);
        let read_sla = latency_class(&shopsim_model::shop::READ_KINDS);
        let mut per_seed: Vec<(u64, u64, Option<shopsim_sim::runner::Failure>)> = Vec::new();
        let mut verdicts = crate::fuzz::state::RunStats::default();
        let mut groups: Vec<RunGroup> = Vec::new();
        let name = selected.name();
        // The first failures in seed order, at most FAILURES_SHOWN_MAX of them.
        let mut run_failures: std::collections::BTreeMap<u64, String> = Default::default();
        shopsim_sim::fuzz::for_each_seed(
            || system.clone(),
            &seeds,
            |seed| draw.config(&config, seed),
            jobs,
            |o| {
                bar.inc();
                seen += 1;
                virtual_s += o.virtual_elapsed.as_secs_f64();
                checkout.extend(checkout_sla.latencies_us(&o.history));
                reads.extend(read_sla.latencies_us(&o.history));
                for op in &o.history.ops {
                    match op.details["response"]["body"]["cache"].as_str() {
                        Some("hit") => (hits, cache_reads) = (hits + 1, cache_reads + 1),
                        Some(_) => cache_reads += 1,
                        None => {}
                    }
                }
                coverage.merge(&o.coverage);
                for check in o.unjudged() {
                    *unjudged.entry(check.to_string()).or_default() += 1;
                }
                for report in &o.reports {
                    verdicts.count(&report.check, report.verdict);
                }
                if let Some(f) = &o.failure {
                    failed += 1;
                    exit = exit.max(o.exit_code());
                    let at = position(o.seed);
                    let shown_max = FAILURES_SHOWN_MAX.saturating_sub(failures.len());
                    let earlier = run_failures.len() < shown_max
                        || run_failures.last_key_value().is_some_and(|(&k, _)| at < k);
                    if earlier {
                        run_failures.insert(at, failure_text(&o, selected, &args.bugs, draw));
                        if run_failures.len() > shown_max {
                            run_failures.pop_last();
                        }
                    }
                    let ops = o.history.ops.len() as u64;
                    let signature = Signature::of(&name, &f.check, &f.witness);
                    match groups.iter_mut().find(|g| g.signature == signature) {
                        Some(g) => {
                            g.count += 1;
                            g.first = g.first.min((o.seed, ops));
                            g.smallest = g.smallest.min((ops, o.seed));
                        }
                        None => groups.push(RunGroup {
                            signature,
                            kind: f.kind,
                            witness: f.witness.clone(),
                            count: 1,
                            first: (o.seed, ops),
                            smallest: (ops, o.seed),
                        }),
                    }
                }
                per_seed.push((o.seed, o.trace_hash, o.failure.clone()));
                true
            },
        );
        // In seed order, whatever order the threads finished in.
        failures.extend(run_failures.into_values());
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |ms| format!("{ms:.1} ms"));
        let p95 = |l: LatencyCounts| l.percentile_ms(95.0);
        let hit_rate = (cache_reads > 0).then(|| hits as f64 / cache_reads as f64);
        let (p95_checkout, p95_reads) = (p95(checkout), p95(reads));
        // A check that judged nothing in any seed tested nothing here: not a pass.
        let never: Vec<&str> = unjudged
            .iter()
            .filter(|(_, n)| **n == seen)
            .map(|(check, _)| check.as_str())
            .collect();
        if args.json {
            per_seed.sort_by_key(|(seed, _, _)| position(*seed));
            groups.sort_by_key(|g| position(g.first.0));
            let replay = |seed: u64| {
                SeedRun {
                    source: &selected.source,
                    profile: selected.profile.name(),
                    seed,
                    bugs: &args.bugs,
                    draw,
                }
                .replay_command()
            };
            for g in &groups {
                groups_json.push(json!({
                    "scenario": name,
                    "check": g.signature.check,
                    "kind": crate::fuzz::groups::kind_name(g.kind),
                    "shape": g.signature.shape,
                    "count": g.count,
                    "witness": crate::signature::truncate_chars(&g.witness, crate::fuzz::groups::WITNESS_CHARS_MAX),
                    "first": {"seed": g.first.0.to_string(), "ops": g.first.1, "replay": replay(g.first.0)},
                    "smallest": {"seed": g.smallest.1.to_string(), "ops": g.smallest.0, "replay": replay(g.smallest.1)},
                }));
            }
            scenarios_json.push(json!({
                "name": name,
                "seeds": seen,
                "failing_seeds": failed,
                "p95_checkout_ms": p95_checkout,
                "p95_reads_ms": p95_reads,
                "cache_hit_rate": hit_rate,
                "virtual_s": virtual_s,
                "never_reached": coverage.never_hit(shopsim_sim::runner::System::windows(&system)),
                "never_judged": never,
                "checks": verdicts.checks,
                "per_seed": per_seed.iter().map(|(seed, hash, failure)| json!({
                    "seed": seed.to_string(),
                    "trace_hash": format!("{hash:016x}"),
                    "failure": failure.as_ref().map(|f| json!({
                        "check": f.check,
                        "kind": crate::fuzz::groups::kind_name(f.kind),
                    })),
                })).collect::<Vec<_>>(),
            }));
            continue;
        }
        bar.println(&format!(
            "{:<34} {:>6} {:>9} {:>14} {:>12} {:>11} {:>11.1} s",
            name,
            seen,
            failed,
            fmt(p95_checkout),
            fmt(p95_reads),
            hit_rate.map_or("-".to_string(), |r| format!("{:.0}%", 100.0 * r)),
            virtual_s
        ));
        // The windows are reported once for the whole run, below (a scenario exercises only
        // some of the model's windows; listing the rest per scenario would be noise).
        // A check that judged nothing in any seed of this scenario tested nothing here.
        if !never.is_empty() {
            bar.println(&format!(
                "  never judged (unknown in every seed): {}",
                never.join(", ")
            ));
        }
        coverage_all.merge(&coverage);
    }
    bar.finish();
    if args.json {
        let summary = json!({
            "format": "shopsim-run-report-1",
            "version": crate::artifact::VERSION,
            "commit": crate::artifact::BUILD_COMMIT,
            "exit_code": exit,
            "scenarios": scenarios_json,
            "groups": groups_json,
        });
        println!("{}", serde_json::to_string_pretty(&summary).expect("json"));
        return exit;
    }
    // Race windows (`sometimes!`), all declared up front, and how often this run reached each:
    // the ones never reached are races these scenarios do not test.
    let declared = declared_windows(&runs);
    let never = windows_never_hit(&runs, &coverage_all);
    println!(
        "race windows reached: {} of {} (times reached, window)",
        declared.len().saturating_sub(never.len()),
        declared.len()
    );
    for window in &declared {
        let hits = coverage_all
            .sometimes
            .get(window.name())
            .map_or(0, |(hits, _)| *hits);
        if hits > 0 {
            println!("  {hits:>8}  {}", window.name());
        }
    }
    for window in &never {
        println!("  never reached: sometimes!(\"{window}\")");
    }
    for f in &failures {
        println!("\n{f}");
    }
    if failures.len() == FAILURES_SHOWN_MAX {
        println!(
            "\n(only the first {FAILURES_SHOWN_MAX} failures are shown; the table counts all)"
        );
    }
    exit
}

/// The report of a failed seed of `selected`: the FAIL line, then a command that reproduces
/// it (naming a scenario file with `--file`).
pub fn failure_text<S>(
    outcome: &shopsim_sim::runner::Outcome<S>,
    selected: &Selected,
    bugs: &[String],
    draw: Draw,
) -> String {
    let line = outcome.fail_line().expect("a failed outcome");
    let replay = SeedRun {
        source: &selected.source,
        profile: selected.profile.name(),
        seed: outcome.seed,
        bugs,
        draw,
    }
    .replay_command();
    format!("{line}\nnote: reproduce with: {replay}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counted percentile shows what the percentile of every latency shows.
    #[test]
    fn latency_counts_show_the_exact_percentile() {
        let latencies: Vec<u64> = (0..5_000u64).map(|i| (i * 7_919) % 123_457).collect();
        let mut sorted = latencies.clone();
        sorted.sort_unstable();
        let mut counts = LatencyCounts::default();
        counts.extend(latencies);
        for p in [50.0, 95.0, 99.0, 100.0] {
            let exact = shopsim_sim::check::percentile(&sorted, p).unwrap() as f64 / 1000.0;
            assert_eq!(
                format!("{exact:.1}"),
                format!("{:.1}", counts.percentile_ms(p).unwrap())
            );
        }
        assert_eq!(LatencyCounts::default().percentile_ms(95.0), None);
    }

    /// Before: `--seeds 18446744073709551615` built the list of every seed (a capacity
    /// overflow panic); now it is a range.
    #[test]
    fn the_largest_seed_count_is_a_range() {
        let plan = seeds(None, Some("18446744073709551615"), "0", 8).unwrap();
        assert_eq!(plan.count, u64::MAX);
        assert!(seeds(None, Some("2"), "18446744073709551615", 8)
            .unwrap_err()
            .starts_with("--seeds: "));
    }
}
