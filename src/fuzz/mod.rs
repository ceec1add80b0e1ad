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
//! `--shard K/N` makes N machines cover disjoint seeds. Ctrl-C or SIGTERM ends the campaign
//! after the running batch with exit 130, its state and reports saved. `campaign` is what the
//! arguments define (every flag checked, without writing anything: `check_args`), `session`
//! the batches and the filing of each failure; this file runs a session with its status
//! thread.

pub mod campaign;
pub mod corpus;
pub mod groups;
pub mod lock;
pub mod report;
pub mod session;
pub mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::artifact;
use crate::progress::{hms, on_terminal, Bar, Ticker};
use crate::run::Selected;
use crate::{EXIT_BAD_INPUT, EXIT_INTERRUPTED};
use campaign::Campaign;
use session::{resume_state, Live, Session};
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
    /// Worker threads, 1..=256 (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// This machine's share of the seeds: `K/N` (1 <= K <= N <= 10000).
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
    /// Keep each scenario's own fault plan and steering instead of swarm draws.
    #[arg(long)]
    no_swarm: bool,
    /// Swarm-draw faults only: keep each scenario's own steering (off unless its file turns it
    /// on) instead of drawing it per seed.
    #[arg(long)]
    no_steering: bool,
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
    /// The share of seeds (0 to 0.9) that run mutations of corpus draws: draws of seeds that
    /// reached a rare race window, or one their scenario@profile had not reached before.
    #[arg(long, default_value_t = corpus::SHARE_DEFAULT)]
    corpus_share: f64,
}

/// The seed of campaign index `i` on shard `k` of `n`: disjoint across shards. `None` if the
/// index does not fit in 64 bits (past [`state::SEEDS_RUN_MAX`] seeds on 10000 shards).
fn seed_of(i: u64, shard: (u64, u64)) -> Option<u64> {
    let index = i.checked_mul(shard.1)?.checked_add(shard.0 - 1)?;
    // SplitMix64, so consecutive indexes give unrelated seeds.
    let mut z = index.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    Some(z ^ (z >> 31))
}

/// Checks every flag (and, with `--resume`, the state file in `--out`) exactly as `fuzz`
/// does before it starts, without writing anything; errors name the flag and the value.
pub fn check_args(args: &Args) -> Result<Campaign, String> {
    let campaign = Campaign::from_args(args)?;
    if args.resume {
        resume_state(&campaign, &campaign.out.join("state.json"))?;
    }
    Ok(campaign)
}

/// Reads and checks the text of a campaign state file, as `--resume` does.
pub fn parse_state(text: &str) -> Result<(), String> {
    State::from_json(text)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

pub fn run(args: Args) -> u8 {
    let campaign = match Campaign::from_args(&args).and_then(|c| c.prepare_out().map(|()| c)) {
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
    // The corpus: kept across --resume; a new campaign starts without the old one's.
    let corpus_dir = campaign.out.join("corpus");
    let corpus = if args.resume {
        match corpus::Corpus::load(&campaign.out, &campaign.runs) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: --resume: corpus {e}");
                return EXIT_BAD_INPUT;
            }
        }
    } else {
        if corpus_dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&corpus_dir) {
                eprintln!(
                    "error: --out: removing the old corpus {}: {e}",
                    corpus_dir.display()
                );
                return EXIT_BAD_INPUT;
            }
        }
        corpus::Corpus::default()
    };
    // Every declared race window is listed from the start, reached or not.
    for selected in &campaign.runs {
        if let Ok(system) = selected.system(&[]) {
            for w in shopsim_sim::runner::System::windows(&system) {
                if !state.windows.iter().any(|s| s.window == w.name())
                    && state.windows.len() < corpus::WINDOWS_MAX
                {
                    state.windows.push(corpus::WindowStats::new(w.name()));
                }
            }
        }
    }
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
        corpus,
        started: session_started,
        elapsed_before_ms: elapsed_before.as_millis() as u64,
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
        // Never past SEEDS_RUN_MAX, so a saved state always reads back.
        let room = state::SEEDS_RUN_MAX.saturating_sub(session.state.seeds_run);
        let left = campaign
            .seeds_target
            .map_or(batch, |t| t.saturating_sub(session.state.seeds_run))
            .min(batch)
            .min(room);
        if left == 0 {
            if room == 0 {
                session.bar.eprintln(&format!(
                    "note: the campaign has run {} seeds, the most one campaign runs",
                    state::SEEDS_RUN_MAX
                ));
            }
            break;
        }
        ran_any = true;
        if !session.batch(left) {
            break;
        }
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
    // Every declared race window (`sometimes!`), all sessions: how often it was reached and
    // when first; the ones never reached are races the campaign does not test.
    println!(
        "race windows ({} corpus entries; {} seeds ran mutated corpus draws):",
        session.corpus.entries.len(),
        state.corpus_seeds
    );
    for line in report::window_lines(state) {
        println!("  {line}");
    }
    let exit = campaign.exit_code(state);
    let stopped = stop.load(Ordering::SeqCst);
    let mut report = report::report_json(&campaign, state, exit, stopped);
    report["corpus"] = serde_json::json!({
        "entries": session.corpus.entries.iter().map(|e| campaign.out.join(&e.path).display().to_string()).collect::<Vec<_>>(),
        "share": campaign.corpus_share,
        "mutated_seeds": state.corpus_seeds,
    });
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
        // Interrupted is its own outcome, whatever was found before the signal: the
        // campaign did not finish (a Kubernetes Job restarts a pod that exits non-zero).
        return EXIT_INTERRUPTED;
    }
    exit
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::input::{parse_duration, parse_shard};

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
        let a: Vec<u64> = (0..100).map(|i| seed_of(i, (1, 2)).unwrap()).collect();
        let b: Vec<u64> = (0..100).map(|i| seed_of(i, (2, 2)).unwrap()).collect();
        assert!(a.iter().all(|s| !b.contains(s)));
    }

    /// Before: `--shard 1/4611686018427387904` overflowed the seed index; now the index is
    /// checked, and every index of a readable state fits on the most shards.
    #[test]
    fn seed_indexes_are_checked() {
        assert_eq!(seed_of(u64::MAX / 2, (1, 4)), None);
        let (k, n) = parse_shard("10000/10000").unwrap();
        assert!(seed_of(state::SEEDS_RUN_MAX + 1_000_000, (k, n)).is_some());
        assert!(parse_shard("1/4611686018427387904").is_err());
    }

    /// Before: a forged `seeds_run` near 2^64 overflowed the campaign's arithmetic on
    /// `--resume`; now it is refused by name, as is a count of the wrong type.
    #[test]
    fn forged_state_counters_are_refused() {
        let mut state = State::new("x".to_string(), &["s@pg_rc".to_string()]);
        state.sessions = 1;
        let text = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v = serde_json::to_value(&state).unwrap();
            edit(&mut v);
            v.to_string()
        };
        assert!(parse_state(&text(&|_| {})).is_ok());
        for forged in [
            text(&|v| v["seeds_run"] = u64::MAX.into()),
            text(&|v| v["seeds_run"] = (-1).into()),
        ] {
            assert!(
                parse_state(&forged).unwrap_err().starts_with("seeds_run: "),
                "{forged}"
            );
        }
        // A run's own count near 2^64 is refused by its path, before the totals are added.
        let forged = text(&|v| v["runs"][0]["seeds"] = u64::MAX.into());
        assert!(
            parse_state(&forged)
                .unwrap_err()
                .starts_with("runs[0].seeds: "),
            "{forged}: {}",
            parse_state(&forged).unwrap_err()
        );
    }
}
