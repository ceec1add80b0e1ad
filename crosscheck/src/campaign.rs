//! Campaigns over many inputs: random groups and transcripts, with statistics, divergences
//! grouped by signature, and each signature's first divergence shrunk into a conformance
//! script whose outcome is the real engine's (ready to join the regression data).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shopsim_sim::db::conformance::{Outcome, Script};
use shopsim_sim::db::server::transcript::Transcript;
use shopsim_sim::db::Profile;

use crate::classes;
use crate::compare::{first_difference, shrink, simulate, Divergence};
use crate::lane::Lane;
use crate::random::{self, profiles_of};
use crate::server::EngineKind;
use crate::stepper::StepError;
use crate::transcript;
use crate::{Engines, RunError};

/// One divergence signature found, with its first occurrence shrunk.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The signature: profile, statement shape and both outcome kinds.
    pub signature: String,
    /// Where it was first seen (`random seed 17`, `checkout-concurrency seed 3`).
    pub source: String,
    /// The first difference as found.
    pub divergence: Divergence,
    /// The known open class it belongs to, if any.
    pub known: Option<&'static str>,
    /// How many runs showed this signature.
    pub count: usize,
    /// The profiles it showed under.
    pub profiles: std::collections::BTreeSet<Profile>,
    /// The shrunk script with the real outcome as its measurement, and its first difference.
    pub shrunk: Option<(Script, Divergence)>,
}

/// Statistics of a campaign.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Inputs run (groups × profiles, or transcripts).
    pub runs: usize,
    /// Runs whose every step and final table agreed.
    pub identical_runs: usize,
    /// Runs whose first difference is an allowed nondeterminism class, by class.
    pub allowed: BTreeMap<&'static str, usize>,
    /// Steps compared (transcripts: up to the first difference).
    pub statements: u64,
    /// Steps compared that agreed.
    pub statements_identical: u64,
    /// Transcript steps after a first difference: stepped, not compared.
    pub statements_uncompared: u64,
    /// Steps sent to the real engines (compared or not): what wall time is divided by.
    pub statements_stepped: u64,
    /// Generated ids bound to another real value in transcript replays.
    pub ids_remapped: usize,
    /// Divergence signatures, in order of first appearance.
    pub findings: Vec<Finding>,
    /// Wall time spent.
    pub wall: Duration,
    /// Inputs the protocol could not finish (the server stayed up), with the reason; they
    /// count as runs that are neither identical nor divergent.
    pub harness_failures: Vec<String>,
}

impl Summary {
    /// Runs that diverged outside the allowed classes.
    pub fn diverged(&self) -> usize {
        self.findings.iter().map(|f| f.count).sum()
    }

    /// Divergences not covered by a known open class.
    pub fn unknown(&self) -> Vec<&Finding> {
        self.findings.iter().filter(|f| f.known.is_none()).collect()
    }

    /// Wall milliseconds per 1,000 statements stepped on both sides.
    pub fn ms_per_1000_statements(&self) -> f64 {
        if self.statements_stepped == 0 {
            return 0.0;
        }
        self.wall.as_secs_f64() * 1000.0 * 1000.0 / self.statements_stepped as f64
    }

    fn add(
        &mut self,
        source: String,
        d: Divergence,
        script: &Script,
        shrink_it: impl FnOnce() -> Option<(Script, Divergence)>,
    ) {
        let signature = signature(&d);
        if let Some(f) = self.findings.iter_mut().find(|f| f.signature == signature) {
            f.count += 1;
            f.profiles.insert(d.profile);
            return;
        }
        let known = classes::known(&d, script).map(|k| k.name);
        self.findings.push(Finding {
            signature,
            source,
            profiles: std::iter::once(d.profile).collect(),
            divergence: d,
            known,
            count: 1,
            shrunk: shrink_it(),
        });
    }
}

/// A statement's shape: numbers replaced by `N`, so one signature covers many seeds.
fn shape(statement: &str) -> String {
    let mut out = String::new();
    let mut digits = false;
    for c in statement.chars() {
        if c.is_ascii_digit() {
            if !digits {
                out.push('N');
            }
            digits = true;
        } else {
            digits = false;
            out.push(c);
        }
    }
    out
}

/// A token's kind: `rows`, `aff=N`, `ERR code`, `BLOCK->kind`, without step numbers.
pub fn token_kind(token: &str) -> String {
    let token = token.trim_start_matches("QUEUED ");
    if let Some(rest) = token.strip_prefix("BLOCK->") {
        let inner = rest.rsplit_once('@').map_or(rest, |(x, _)| x);
        return format!("BLOCK->{}", token_kind(inner));
    }
    if token.starts_with("rows[") {
        return "rows".to_string();
    }
    token.split(" id=").next().unwrap_or(token).to_string()
}

/// The signature of a divergence: engine, statement shape and both outcome kinds.
pub fn signature(d: &Divergence) -> String {
    let engine = EngineKind::of(d.profile).name();
    match d.step {
        Some(_) => format!(
            "{engine} `{}`: simulated {}, real {}",
            shape(&d.statement),
            token_kind(&d.simulated),
            token_kind(&d.real)
        ),
        None => format!("{engine} final tables"),
    }
}

/// Whether `candidate` still shows a divergence of `sig` under `profile`.
fn still_diverges(
    engines: &mut Engines,
    candidate: &Script,
    profile: Profile,
    sig: &str,
) -> Option<(Outcome, Divergence)> {
    let real = engines.run_script(candidate, profile).ok()?;
    let simulated = simulate(candidate, profile);
    let d = first_difference(candidate, profile, &simulated, &real)?;
    (signature(&d) == sig).then_some((real, d))
}

/// Shrinks `script`'s divergence `d` under `profile` (at most `budget` candidates); the result
/// carries the real outcome as its measurement for `profile`.
pub fn shrink_divergence(
    engines: &mut Engines,
    script: &Script,
    profile: Profile,
    d: &Divergence,
    budget: usize,
) -> Option<(Script, Divergence)> {
    let sig = signature(d);
    let (_, first) = still_diverges(engines, script, profile, &sig)?;
    let mut tries = 0;
    let (mut best, _) = shrink(script, |candidate| {
        tries += 1;
        tries <= budget && still_diverges(engines, candidate, profile, &sig).is_some()
    });
    let (real, d) = still_diverges(engines, &best, profile, &sig).unwrap_or_else(|| {
        // Cannot happen unless the engine is nondeterministic; keep the unshrunk script.
        best = script.clone();
        let real = engines.run_script(script, profile).expect("ran before");
        (real, first)
    });
    best.outcomes.insert(profile, real);
    Some((best, d))
}

/// Runs `count` inputs on `workers` lanes at once (one thread each, its own connections and
/// schemas) and hands each result to `consume` on the calling thread, in input order, so a
/// campaign reports the same whatever the timing. With one worker the inputs run on the
/// calling thread's own lane. `consume` may use `engines` (to shrink); its error stops the
/// campaign: no new input starts, and the ones running finish.
pub fn parallel<R: Send>(
    engines: &mut Engines,
    workers: usize,
    count: usize,
    work: impl Fn(&mut Lane, usize) -> R + Sync,
    mut consume: impl FnMut(&mut Engines, R) -> Result<(), RunError>,
) -> Result<(), RunError> {
    if workers <= 1 {
        for i in 0..count {
            let r = work(engines.lane(), i);
            consume(engines, r)?;
        }
        return Ok(());
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let ports = engines.ports();
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, R)>();
        for w in 0..workers.min(count.max(1)) {
            let tx = tx.clone();
            let (next, stop, work, ports) = (&next, &stop, &work, ports.clone());
            scope.spawn(move || {
                let mut lane = Lane::new(w + 1, ports);
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let r = work(&mut lane, i);
                    if tx.send((i, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut pending = BTreeMap::new();
        let mut expect = 0;
        let mut result = Ok(());
        for (i, r) in rx {
            pending.insert(i, r);
            while let Some(r) = pending.remove(&expect) {
                expect += 1;
                if result.is_ok() {
                    if let Err(e) = consume(engines, r) {
                        result = Err(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        result
    })
}

/// The real and simulated outcome of one random group under one profile, and the further
/// real runs a divergence took ([`classes::RACE_REPLAYS`]): how many, and whether one of them
/// was identical to the simulated run.
type GroupRun = (
    u64,
    EngineKind,
    Profile,
    Result<(Outcome, Outcome, Replays), StepError>,
);

/// Further real runs of an input that diverged.
#[derive(Debug, Clone, Copy, Default)]
struct Replays {
    runs: usize,
    identical: bool,
}

/// Runs a diverged input on the real engine again, up to [`classes::RACE_REPLAYS`] times,
/// until one run is identical (`identical` judges a run; an error ends the search).
fn replay_until_identical<E>(mut identical: impl FnMut() -> Result<bool, E>) -> Replays {
    let mut replays = Replays::default();
    while replays.runs < classes::RACE_REPLAYS {
        replays.runs += 1;
        match identical() {
            Ok(true) => {
                replays.identical = true;
                break;
            }
            Ok(false) => {}
            Err(_) => break,
        }
    }
    replays
}

/// Runs random groups `first..first + count` of each engine in `kinds` under every profile of
/// the engine, on `workers` lanes. Runs are numbered, not listed: any count takes no memory
/// up front (the last seed may be 2^64 - 1).
pub fn random_groups(
    engines: &mut Engines,
    first: u64,
    count: u64,
    kinds: &[EngineKind],
    shrink_budget: usize,
    workers: usize,
    mut progress: impl FnMut(&Summary),
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let mut summary = Summary::default();
    let combos: Vec<(EngineKind, Profile)> = kinds
        .iter()
        .flat_map(|&kind| profiles_of(kind).into_iter().map(move |p| (kind, p)))
        .collect();
    assert!(
        count == 0 || first.checked_add(count - 1).is_some(),
        "the last seed is a 64-bit seed"
    );
    let total = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(combos.len()))
        .expect("a run count that fits in memory indexes");
    let work = |lane: &mut Lane, i: usize| -> GroupRun {
        let seed = first + (i / combos.len()) as u64;
        let (kind, profile) = combos[i % combos.len()];
        let group = random::group(seed, kind);
        let script = &group.script;
        let outcomes = lane.run_script(script, profile).map(|real| {
            let simulated = simulate(script, profile);
            let replays = match first_difference(script, profile, &simulated, &real) {
                None => Replays::default(),
                Some(_) => replay_until_identical(|| {
                    lane.run_script(script, profile).map(|again| {
                        first_difference(script, profile, &simulated, &again).is_none()
                    })
                }),
            };
            (real, simulated, replays)
        });
        (seed, kind, profile, outcomes)
    };
    let mut runs_log = std::env::var("SHOPSIM_CROSSCHECK_RUNS")
        .ok()
        .and_then(|path| std::fs::File::create(path).ok());
    parallel(engines, workers, total, work, |engines, run| {
        let (seed, kind, profile, outcomes) = run;
        summary.runs += 1;
        let (real, simulated, replays) = match outcomes {
            Ok(o) => o,
            Err(e) => match engines.classify(kind, e) {
                RunError::Step(e) => {
                    summary
                        .harness_failures
                        .push(format!("random group {seed} {profile}: {e}"));
                    return Ok(());
                }
                e => return Err(e),
            },
        };
        let group = random::group(seed, kind);
        summary.statements += group.script.steps.len() as u64;
        summary.statements_stepped += ((1 + replays.runs) * group.script.steps.len()) as u64;
        let first = first_difference(&group.script, profile, &simulated, &real);
        if let Some(log) = &mut runs_log {
            // One line per run, to compare two campaigns run by run.
            use std::io::Write;
            let what = first
                .as_ref()
                .map_or("identical".to_string(), |d| d.to_string());
            let _ = writeln!(log, "{seed} {profile}: {what}");
            if first.is_some() {
                for (i, (session, statement)) in group.script.steps.iter().enumerate() {
                    let _ = writeln!(
                        log,
                        "    {:>2} {session}: {statement}  sim {} real {}",
                        i + 1,
                        simulated.steps[i],
                        real.steps[i]
                    );
                }
            }
        }
        match first {
            None => {
                summary.identical_runs += 1;
                summary.statements_identical += group.script.steps.len() as u64;
            }
            Some(d) if replays.identical => {
                // The real engine gave the simulated outcome too: its first run decided a
                // race of its own otherwise.
                summary.statements_identical +=
                    d.step.map_or(group.script.steps.len(), |s| s - 1) as u64;
                *summary
                    .allowed
                    .entry(classes::real_engine_race().name)
                    .or_default() += 1;
            }
            Some(d) => {
                summary.statements_identical +=
                    d.step.map_or(group.script.steps.len(), |s| s - 1) as u64;
                let script = group.script.clone();
                let source = format!("random group {seed} ({})", kind.name());
                let sig = signature(&d);
                let new = !summary.findings.iter().any(|f| f.signature == sig);
                let shrunk = if new && shrink_budget > 0 {
                    shrink_divergence(engines, &script, profile, &d, shrink_budget)
                } else {
                    None
                };
                summary.add(source, d, &script, || shrunk);
            }
        }
        summary.wall = started.elapsed();
        progress(&summary);
        Ok(())
    })?;
    summary.wall = started.elapsed();
    Ok(summary)
}

/// Replays `count` transcripts, `input(i)` making the i-th (label, transcript) on the worker
/// that replays it (the simulated run is the costly half), on `workers` lanes.
pub fn transcripts(
    engines: &mut Engines,
    count: usize,
    input: impl Fn(usize) -> (String, Transcript) + Sync,
    shrink_budget: usize,
    workers: usize,
    mut progress: impl FnMut(&Summary),
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let mut summary = Summary::default();
    let work = |lane: &mut Lane, i: usize| {
        let (label, t) = input(i);
        let check = transcript::check_on(lane, &t).map(|mut check| {
            if check.first.is_some() && check.allowed.is_none() {
                let mut stepped = 0;
                let replays = replay_until_identical(|| {
                    transcript::check_on(lane, &t).map(|again| {
                        stepped += again.steps;
                        again.first.is_none()
                    })
                });
                if replays.identical {
                    check.allowed = Some(classes::real_engine_race());
                }
                check.steps_replayed = stepped;
            }
            check
        });
        (label, t.profile, check)
    };
    parallel(
        engines,
        workers,
        count,
        work,
        |engines, (label, profile, check)| {
            summary.runs += 1;
            let check = match check {
                Ok(check) => check,
                Err(e) => match engines.classify(EngineKind::of(profile), e) {
                    RunError::Step(e) => {
                        summary.harness_failures.push(format!("{label}: {e}"));
                        return Ok(());
                    }
                    e => return Err(e),
                },
            };
            summary.statements += check.compared as u64;
            summary.statements_stepped += (check.steps + check.steps_replayed) as u64;
            summary.statements_identical += check.identical as u64;
            summary.statements_uncompared += (check.steps - check.compared) as u64;
            summary.ids_remapped += check.ids_remapped;
            match (&check.first, check.allowed) {
                (None, _) => summary.identical_runs += 1,
                (Some(_), Some(class)) => *summary.allowed.entry(class.name).or_default() += 1,
                (Some(d), None) => {
                    let sig = signature(d);
                    let new = !summary.findings.iter().any(|f| f.signature == sig);
                    let step = d.step.unwrap_or(check.steps);
                    let script =
                        transcript::script_of(&check.replay, &format!("transcript-{label}"), step);
                    let shrunk = if new && shrink_budget > 0 {
                        // As a script the divergence shows on the conformance runner's clock.
                        let simulated = simulate(&script, profile);
                        engines.run_script(&script, profile).ok().and_then(|real| {
                            let d = first_difference(&script, profile, &simulated, &real)?;
                            shrink_divergence(engines, &script, profile, &d, shrink_budget)
                        })
                    } else {
                        None
                    };
                    summary.add(label.clone(), d.clone(), &script, || shrunk);
                }
            }
            summary.wall = started.elapsed();
            progress(&summary);
            Ok(())
        },
    )?;
    summary.wall = started.elapsed();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A diverged input is run again until one run is identical, at most RACE_REPLAYS times;
    /// a run that fails ends the search without an identical one.
    #[test]
    fn replays_stop_at_the_first_identical_run_and_never_exceed_the_limit() {
        let never = replay_until_identical(|| Ok::<bool, ()>(false));
        assert_eq!(
            (never.runs, never.identical),
            (classes::RACE_REPLAYS, false)
        );
        let mut n = 0;
        let third = replay_until_identical(|| {
            n += 1;
            Ok::<bool, ()>(n == 3)
        });
        assert_eq!((third.runs, third.identical), (3, true));
        let failed = replay_until_identical(|| Err::<bool, ()>(()));
        assert_eq!((failed.runs, failed.identical), (1, false));
    }

    /// Results reach `consume` in input order whatever order the lanes finish them in, each
    /// input once; an error from `consume` stops the campaign: nothing after it is consumed.
    #[test]
    fn parallel_inputs_are_consumed_in_input_order_and_an_error_stops_them() {
        let mut engines = Engines::start(&[]).expect("no servers to start");
        // Later inputs finish first: the lanes' order is the reverse of the inputs'.
        let work = |_: &mut Lane, i: usize| {
            std::thread::sleep(Duration::from_millis(((20 - i) % 7) as u64));
            i * i
        };
        for workers in [1, 3] {
            let mut seen = Vec::new();
            parallel(&mut engines, workers, 20, work, |_, r| {
                seen.push(r);
                Ok(())
            })
            .unwrap();
            assert_eq!(
                seen,
                (0..20).map(|i| i * i).collect::<Vec<_>>(),
                "{workers}"
            );
        }
        let mut seen = Vec::new();
        let result = parallel(&mut engines, 3, 20, work, |_, r| {
            if r == 25 {
                return Err(RunError::Died("stop".into()));
            }
            seen.push(r);
            Ok(())
        });
        assert!(matches!(result, Err(RunError::Died(_))));
        assert_eq!(seen, [0, 1, 4, 9, 16]);
    }
}
