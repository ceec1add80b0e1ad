//! Campaigns over many inputs: random groups and transcripts, with statistics, divergences
//! grouped by signature, and each signature's first divergence shrunk into a conformance
//! script whose outcome is the real engine's (ready to join the regression data).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shopsim_sim::db::conformance::{Outcome, Script};
use shopsim_sim::db::server::transcript::Transcript;
use shopsim_sim::db::Profile;

use crate::classes;
use crate::compare::{first_difference, shrink, simulate, Divergence};
use crate::random::{self, profiles_of};
use crate::server::EngineKind;
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
    /// Steps compared.
    pub statements: u64,
    /// Steps that agreed (for transcripts: before the first difference).
    pub statements_identical: u64,
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

    /// Wall milliseconds per 1,000 statements crosschecked.
    pub fn ms_per_1000_statements(&self) -> f64 {
        if self.statements == 0 {
            return 0.0;
        }
        self.wall.as_secs_f64() * 1000.0 * 1000.0 / self.statements as f64
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

/// Runs random groups `seeds` of each engine in `kinds` under every profile of the engine
/// (any seeds, taken one at a time: a range may end at 2^64 - 1).
pub fn random_groups(
    engines: &mut Engines,
    seeds: impl IntoIterator<Item = u64>,
    kinds: &[EngineKind],
    shrink_budget: usize,
    mut progress: impl FnMut(&Summary),
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let mut summary = Summary::default();
    for seed in seeds {
        for &kind in kinds {
            let group = random::group(seed, kind);
            for profile in profiles_of(kind) {
                let real = match engines.run_script(&group.script, profile) {
                    Ok(real) => real,
                    Err(RunError::Step(e)) => {
                        summary.runs += 1;
                        summary
                            .harness_failures
                            .push(format!("random group {seed} {profile}: {e}"));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let simulated = simulate(&group.script, profile);
                summary.runs += 1;
                summary.statements += group.script.steps.len() as u64;
                match first_difference(&group.script, profile, &simulated, &real) {
                    None => {
                        summary.identical_runs += 1;
                        summary.statements_identical += group.script.steps.len() as u64;
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
            }
        }
        summary.wall = started.elapsed();
        progress(&summary);
    }
    summary.wall = started.elapsed();
    Ok(summary)
}

/// Replays transcripts (label, transcript) and compares them.
pub fn transcripts(
    engines: &mut Engines,
    inputs: impl IntoIterator<Item = (String, Transcript)>,
    shrink_budget: usize,
    mut progress: impl FnMut(&Summary),
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let mut summary = Summary::default();
    for (label, t) in inputs {
        if t.read_only {
            continue;
        }
        let check = match transcript::check(engines, &t) {
            Ok(check) => check,
            Err(RunError::Step(e)) => {
                summary.runs += 1;
                summary.harness_failures.push(format!("{label}: {e}"));
                continue;
            }
            Err(e) => return Err(e),
        };
        summary.runs += 1;
        summary.statements += check.steps as u64;
        summary.statements_identical += check.identical as u64;
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
                    let simulated = simulate(&script, t.profile);
                    engines
                        .run_script(&script, t.profile)
                        .ok()
                        .and_then(|real| {
                            let d = first_difference(&script, t.profile, &simulated, &real)?;
                            shrink_divergence(engines, &script, t.profile, &d, shrink_budget)
                        })
                } else {
                    None
                };
                summary.add(label.clone(), d.clone(), &script, || shrunk);
            }
        }
        summary.wall = started.elapsed();
        progress(&summary);
    }
    summary.wall = started.elapsed();
    Ok(summary)
}
