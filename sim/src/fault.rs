//! Faults, in symmetric pairs: `crash`/`restart` and `pause`/`resume` of nodes, `clog`/`unclog`
//! of a node, `partition`/`heal` of node sets, network `loss` and latency `spike` periods, and
//! named buggify points that the database and RPC layers consult.
//!
//! A [`FaultPlan`] says which families are on and how often; the nemesis ([`run_nemesis`])
//! draws the schedule from the run's seed and applies one fault at a time to the nodes the
//! system registered, and stops (healing everything) at the end of the fault window so that a
//! quiet period remains in which liveness can be checked.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::time::Duration;

use madsim::rand::Rng;
use serde::{Deserialize, Serialize};

use crate::coverage;
use crate::history::Recorder;
use crate::input::{check_probability, InputError};
use crate::runner::{NodeRole, World};

/// The fault families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultFamily {
    /// `crash`/`restart` a node (its in-memory state is lost).
    Crash,
    /// `pause`/`resume` a node (a GC pause: it neither runs nor answers).
    Pause,
    /// `clog`/`unclog` a node's network.
    Clog,
    /// `partition`/`heal` two sets of nodes.
    Partition,
    /// A period of packet loss.
    Loss,
    /// A period of high network latency.
    Latency,
    /// Buggify points fire (slow statements, connections dropped after commit, late replies).
    Buggify,
}

impl FaultFamily {
    /// Every family.
    pub const ALL: [FaultFamily; 7] = [
        FaultFamily::Crash,
        FaultFamily::Pause,
        FaultFamily::Clog,
        FaultFamily::Partition,
        FaultFamily::Loss,
        FaultFamily::Latency,
        FaultFamily::Buggify,
    ];

    /// The family's name (as in scenario files and coverage counters).
    pub fn name(self) -> &'static str {
        match self {
            FaultFamily::Crash => "crash",
            FaultFamily::Pause => "pause",
            FaultFamily::Clog => "clog",
            FaultFamily::Partition => "partition",
            FaultFamily::Loss => "loss",
            FaultFamily::Latency => "latency",
            FaultFamily::Buggify => "buggify",
        }
    }
}

/// Which faults a run gets and how often. All times are virtual. As a scenario's `[faults]`
/// table every field is optional (the defaults of [`FaultPlan::none`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultPlan {
    /// The families that are on (a family listed twice is an error, not silently merged).
    #[serde(deserialize_with = "distinct_families")]
    pub families: BTreeSet<FaultFamily>,
    /// Shortest time between two fault events, ms.
    pub interval_ms_min: u64,
    /// Longest time between two fault events, ms.
    pub interval_ms_max: u64,
    /// Longest a fault lasts before its pair heals it, ms.
    pub duration_ms_max: u64,
    /// Packet loss probability during a loss period.
    pub loss_probability: f64,
    /// One-way latency during a latency spike, ms.
    pub spike_latency_ms: u64,
    /// Probability that a buggify point fires when buggify is on.
    pub buggify_probability: f64,
    /// Faults stop this long before the end of the run, ms.
    pub quiet_period_ms: u64,
}

/// Reads a list of fault families, refusing one listed twice: `["crash", "crash"]` is a typo
/// for something, and a set would hide it.
fn distinct_families<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeSet<FaultFamily>, D::Error> {
    let list = Vec::<FaultFamily>::deserialize(deserializer)?;
    let mut set = BTreeSet::new();
    for family in list {
        if !set.insert(family) {
            return Err(serde::de::Error::custom(format!(
                "fault family `{}` is listed twice",
                family.name()
            )));
        }
    }
    Ok(set)
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan::none()
    }
}

impl FaultPlan {
    /// No faults.
    pub fn none() -> FaultPlan {
        FaultPlan {
            families: BTreeSet::new(),
            interval_ms_min: 200,
            interval_ms_max: 2_000,
            duration_ms_max: 1_000,
            loss_probability: 0.05,
            spike_latency_ms: 100,
            buggify_probability: 0.05,
            quiet_period_ms: 5_000,
        }
    }

    /// Every family on with the default rates.
    pub fn all() -> FaultPlan {
        FaultPlan {
            families: FaultFamily::ALL.into_iter().collect(),
            ..FaultPlan::none()
        }
    }

    /// Checks ranges and relations, naming the field.
    pub fn validate(&self) -> Result<(), InputError> {
        check_probability("faults.loss_probability", self.loss_probability)?;
        check_probability("faults.buggify_probability", self.buggify_probability)?;
        if self.interval_ms_min == 0 {
            return Err(InputError::new(
                "faults.interval_ms_min",
                0,
                "must be greater than 0",
            ));
        }
        if self.interval_ms_min > self.interval_ms_max {
            return Err(InputError::new(
                "faults.interval_ms_max",
                self.interval_ms_max,
                format!(
                    "must be at least interval_ms_min ({})",
                    self.interval_ms_min
                ),
            ));
        }
        if self.duration_ms_max == 0 {
            return Err(InputError::new(
                "faults.duration_ms_max",
                0,
                "must be greater than 0",
            ));
        }
        Ok(())
    }

    /// Whether `family` is on.
    pub fn has(&self, family: FaultFamily) -> bool {
        self.families.contains(&family)
    }
}

thread_local! {
    // Buggify probability of the run on this thread; `None` = buggify off. Set by the runner
    // for one run.
    static BUGGIFY: Cell<Option<f64>> = const { Cell::new(None) };
    // Where fired buggify points are recorded, so checks can tell an injected failure from a
    // real one.
    static RECORDER: RefCell<Option<Recorder>> = const { RefCell::new(None) };
    // Which buggify points this run activated (decided at each point's first use).
    static ACTIVE: RefCell<std::collections::BTreeMap<String, bool>> = const { RefCell::new(std::collections::BTreeMap::new()) };
}

/// The probability that a buggify point is active in a run (FoundationDB activates each
/// BUGGIFY site in some runs only, so runs differ in which faults they stress).
pub const BUGGIFY_SITE_ACTIVATION_PROBABILITY: f64 = 0.25;

pub(crate) fn start_run(plan: &FaultPlan) {
    let p = plan
        .has(FaultFamily::Buggify)
        .then_some(plan.buggify_probability);
    BUGGIFY.with(|b| b.set(p));
}

/// Activates buggify point `point` for the rest of this run (tests that need it to fire).
#[cfg(test)]
pub(crate) fn force_active(point: &str) {
    ACTIVE.with(|a| a.borrow_mut().insert(point.to_string(), true));
}

pub(crate) fn record_into(recorder: Recorder) {
    RECORDER.with(|r| *r.borrow_mut() = Some(recorder));
}

pub(crate) fn end_run() {
    BUGGIFY.with(|b| b.set(None));
    ACTIVE.with(|a| a.borrow_mut().clear());
    RECORDER.with(|r| *r.borrow_mut() = None);
}

/// Whether the buggify point `point` fires now. Off unless the run's plan has buggify on;
/// then each point is active in a run with [`BUGGIFY_SITE_ACTIVATION_PROBABILITY`] (decided at
/// its first use), and an active point fires with `probability` scaled by the plan's rate
/// (FoundationDB's BUGGIFY). Hits are counted in the run's coverage as `buggify:<point>` and
/// recorded in the history as `nemesis buggify` events.
pub fn buggify(point: &str, probability: f64) -> bool {
    let fired = fires(point, probability);
    if fired {
        record_buggify(point, serde_json::json!({ "point": point }));
    }
    fired
}

/// A buggify point that delays: `None` if it does not fire, else the delay `draw` gives (it
/// draws from the run's randomness), recorded with the event as `delay_us`. The delay is part
/// of the fault: checks treat `[event, event + delay_us]` as its window, so an injected
/// 2-second stall is never judged as the system's own latency.
pub fn buggify_delay(
    point: &str,
    probability: f64,
    draw: impl FnOnce() -> Duration,
) -> Option<Duration> {
    buggify_delay_at(point, probability, draw, None)
}

/// [`buggify_delay`] of a delay that slows only the requests of node `node`, recorded as the
/// event's `node` (the caller a reply is held back from).
pub fn buggify_delay_at(
    point: &str,
    probability: f64,
    draw: impl FnOnce() -> Duration,
    node: Option<&str>,
) -> Option<Duration> {
    if !fires(point, probability) {
        return None;
    }
    let delay = draw();
    let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
    let mut details = serde_json::json!({ "point": point, "delay_us": us });
    if let Some(node) = node {
        details["node"] = node.into();
    }
    record_buggify(point, details);
    Some(delay)
}

/// Whether an active point fires now (the draws of [`buggify`], without recording).
fn fires(point: &str, probability: f64) -> bool {
    assert!((0.0..=1.0).contains(&probability));
    let Some(rate) = BUGGIFY.with(|b| b.get()) else {
        return false;
    };
    // Looked up before inserting: most calls find their point, and need no key of their own.
    let known = ACTIVE.with(|a| a.borrow().get(point).copied());
    let active = known.unwrap_or_else(|| {
        let active = madsim::rand::thread_rng().gen_bool(BUGGIFY_SITE_ACTIVATION_PROBABILITY);
        ACTIVE.with(|a| a.borrow_mut().insert(point.to_string(), active));
        active
    });
    if !active {
        return false;
    }
    let p = (probability * rate / 0.05).min(1.0);
    p > 0.0 && madsim::rand::thread_rng().gen_bool(p)
}

fn record_buggify(point: &str, details: serde_json::Value) {
    coverage::count(&format!("buggify:{point}"));
    RECORDER.with(|r| {
        if let Some(recorder) = r.borrow().as_ref() {
            recorder.event("nemesis", "buggify", details);
        }
    });
}

fn sleep_ms(ms: u64) -> madsim::time::Sleep {
    madsim::time::sleep(Duration::from_millis(ms))
}

/// Runs the fault schedule of `world`'s plan until the end of the fault window; every fault
/// is healed by its pair before the next one starts and before this returns.
pub async fn run_nemesis(world: World) {
    let plan = world.plan().clone();
    let families: Vec<FaultFamily> = plan
        .families
        .iter()
        .copied()
        .filter(|f| *f != FaultFamily::Buggify)
        .collect();
    if families.is_empty() {
        return;
    }
    let end = world.faults_end();
    let handle = madsim::runtime::Handle::current();
    let net = madsim::net::NetSim::current();
    let base_latency = world.base_latency();
    loop {
        let wait =
            madsim::rand::thread_rng().gen_range(plan.interval_ms_min..=plan.interval_ms_max);
        sleep_ms(wait).await;
        let now = crate::trace::virtual_now();
        if now >= end {
            break;
        }
        let left_ms = (end - now).as_millis() as u64;
        let hold_ms = madsim::rand::thread_rng()
            .gen_range(1..=plan.duration_ms_max)
            .min(left_ms.max(1));
        let family = families[madsim::rand::thread_rng().gen_range(0..families.len())];
        let nodes = world.nodes();
        let pick = |role: fn(&NodeRole) -> bool| {
            let candidates: Vec<_> = nodes.iter().filter(|n| role(&n.role)).collect();
            (!candidates.is_empty()).then(|| {
                candidates[madsim::rand::thread_rng().gen_range(0..candidates.len())].clone()
            })
        };
        let recorder = world.recorder();
        match family {
            FaultFamily::Crash => {
                let Some(node) = pick(|r| r.crashable) else {
                    continue;
                };
                recorder.event("nemesis", "crash", serde_json::json!({ "node": node.name }));
                // The node's sockets die with it, so must the endpoints its calls reuse.
                crate::net::forget_node(node.id);
                handle.kill(node.id);
                sleep_ms(hold_ms).await;
                handle.restart(node.id);
                recorder.event(
                    "nemesis",
                    "restart",
                    serde_json::json!({ "node": node.name }),
                );
            }
            FaultFamily::Pause => {
                let Some(node) = pick(|r| r.pausable) else {
                    continue;
                };
                recorder.event("nemesis", "pause", serde_json::json!({ "node": node.name }));
                handle.pause(node.id);
                sleep_ms(hold_ms).await;
                handle.resume(node.id);
                recorder.event(
                    "nemesis",
                    "resume",
                    serde_json::json!({ "node": node.name }),
                );
            }
            FaultFamily::Clog => {
                let Some(node) = pick(|r| r.networked) else {
                    continue;
                };
                recorder.event("nemesis", "clog", serde_json::json!({ "node": node.name }));
                net.clog_node(node.id);
                sleep_ms(hold_ms).await;
                net.unclog_node(node.id);
                recorder.event(
                    "nemesis",
                    "unclog",
                    serde_json::json!({ "node": node.name }),
                );
            }
            FaultFamily::Partition => {
                let networked: Vec<_> =
                    nodes.iter().filter(|n| n.role.networked).cloned().collect();
                if networked.len() < 2 {
                    continue;
                }
                let mut side_a = Vec::new();
                let mut side_b = Vec::new();
                for n in networked {
                    if madsim::rand::thread_rng().gen_bool(0.5) {
                        side_a.push(n);
                    } else {
                        side_b.push(n);
                    }
                }
                if side_a.is_empty() || side_b.is_empty() {
                    continue;
                }
                let names = |s: &[crate::runner::RegisteredNode]| {
                    s.iter().map(|n| n.name.clone()).collect::<Vec<_>>()
                };
                recorder.event(
                    "nemesis",
                    "partition",
                    serde_json::json!({ "a": names(&side_a), "b": names(&side_b) }),
                );
                for a in &side_a {
                    for b in &side_b {
                        net.clog_link(a.id, b.id);
                        net.clog_link(b.id, a.id);
                    }
                }
                sleep_ms(hold_ms).await;
                for a in &side_a {
                    for b in &side_b {
                        net.unclog_link(a.id, b.id);
                        net.unclog_link(b.id, a.id);
                    }
                }
                recorder.event("nemesis", "heal", serde_json::json!({}));
            }
            FaultFamily::Loss => {
                recorder.event(
                    "nemesis",
                    "loss",
                    serde_json::json!({ "probability": plan.loss_probability }),
                );
                net.update_config(|c| c.packet_loss_rate = plan.loss_probability);
                sleep_ms(hold_ms).await;
                net.update_config(|c| c.packet_loss_rate = 0.0);
                recorder.event("nemesis", "loss_end", serde_json::json!({}));
            }
            FaultFamily::Latency => {
                let spike = Duration::from_millis(plan.spike_latency_ms.max(1));
                recorder.event(
                    "nemesis",
                    "latency",
                    serde_json::json!({ "ms": plan.spike_latency_ms }),
                );
                net.update_config(|c| c.send_latency = spike..spike * 2);
                sleep_ms(hold_ms).await;
                net.update_config(|c| c.send_latency = base_latency.clone());
                recorder.event("nemesis", "latency_end", serde_json::json!({}));
            }
            FaultFamily::Buggify => unreachable!("buggify is not scheduled"),
        }
        coverage::count(&format!("fault:{}", family.name()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_validation_names_the_field() {
        let mut plan = FaultPlan::all();
        plan.loss_probability = 1.5;
        let err = plan.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "faults.loss_probability: must be a probability in 0..=1, got `1.5`"
        );
        let mut plan = FaultPlan::all();
        plan.interval_ms_max = 10;
        assert_eq!(plan.validate().unwrap_err().field, "faults.interval_ms_max");
        assert!(FaultPlan::all().validate().is_ok());
    }
}
