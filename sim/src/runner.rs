//! One seed in, one fully decided run out.
//!
//! [`run`] builds a fresh madsim `Runtime` from the seed, lets the [`System`] create its nodes
//! and drive its workload inside it, runs the nemesis when the system asks for it, and returns
//! an [`Outcome`]: the history, the final state, each check's report, the virtual time spent
//! and the trace hash. A run that exceeds its virtual time limit is a liveness failure; a panic
//! anywhere in the simulation is a failure of that seed, not of the process.

use std::future::Future;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::runtime::{Handle, NodeHandle, Runtime};
use serde::{Deserialize, Serialize};

use crate::check::{Checker, Report, Verdict};
use crate::coverage::{self, CoverageReport, Window};
use crate::fault::{self, FaultPlan};
use crate::history::{History, Recorder};
use crate::input::{check_positive_ms, InputError};
use crate::steering::{self, SteeringPlan};
use crate::trace::{self, TraceHasher};

/// What a run is configured with. All times are virtual.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// How long the workload runs, ms.
    pub duration_ms: u64,
    /// A run still going this long after its start is stopped as a liveness failure, ms.
    pub time_limit_ms: u64,
    /// Shortest one-way network latency, µs (madsim delivers no sooner than its own floor).
    pub latency_us_min: u64,
    /// Longest one-way network latency, µs.
    pub latency_us_max: u64,
    /// The faults.
    pub faults: FaultPlan,
    /// Schedule steering (off by default).
    #[serde(default)]
    pub steering: SteeringPlan,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            duration_ms: 10_000,
            time_limit_ms: 600_000,
            latency_us_min: 100,
            latency_us_max: 500,
            faults: FaultPlan::none(),
            steering: SteeringPlan::off(),
        }
    }
}

impl SimConfig {
    /// Checks ranges and relations, naming the field.
    pub fn validate(&self) -> Result<(), InputError> {
        check_positive_ms("duration_ms", self.duration_ms)?;
        check_positive_ms("time_limit_ms", self.time_limit_ms)?;
        if self.time_limit_ms <= self.duration_ms {
            return Err(InputError::new(
                "time_limit_ms",
                self.time_limit_ms,
                format!("must be greater than duration_ms ({})", self.duration_ms),
            ));
        }
        if self.latency_us_min == 0 || self.latency_us_min > self.latency_us_max {
            return Err(InputError::new(
                "latency_us_min",
                self.latency_us_min,
                format!("must be in 1..=latency_us_max ({})", self.latency_us_max),
            ));
        }
        self.faults.validate()?;
        self.steering.validate()
    }

    /// When faults stop: the duration minus the quiet period (never before 0).
    pub fn faults_end(&self) -> Duration {
        Duration::from_millis(self.duration_ms.saturating_sub(self.faults.quiet_period_ms))
    }
}

/// What the nemesis may do to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRole {
    /// It may be crashed and restarted.
    pub crashable: bool,
    /// It may be paused and resumed.
    pub pausable: bool,
    /// Its network may be clogged and partitioned.
    pub networked: bool,
}

impl NodeRole {
    /// A server node: every node fault applies.
    pub const SERVER: NodeRole = NodeRole {
        crashable: true,
        pausable: true,
        networked: true,
    };
    /// A client node: network faults only (a client crash would just lose its history).
    pub const CLIENT: NodeRole = NodeRole {
        crashable: false,
        pausable: false,
        networked: true,
    };
}

/// A node the system registered for faults.
#[derive(Debug, Clone)]
pub struct RegisteredNode {
    /// madsim's id.
    pub id: madsim::task::NodeId,
    /// Its name (in the history's fault events).
    pub name: String,
    /// What may happen to it.
    pub role: NodeRole,
}

#[derive(Debug)]
struct WorldInner {
    seed: u64,
    config: SimConfig,
    recorder: Recorder,
    nodes: Mutex<Vec<RegisteredNode>>,
    /// Every node to stop at the end of the run (registered ones and the nemesis).
    all_nodes: Mutex<Vec<madsim::task::NodeId>>,
}

/// The run as the system sees it: seed, configuration, history recorder, node registry.
#[derive(Debug, Clone)]
pub struct World {
    inner: Arc<WorldInner>,
}

impl World {
    /// The seed.
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// The fault plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.inner.config.faults
    }

    /// The history recorder.
    pub fn recorder(&self) -> Recorder {
        self.inner.recorder.clone()
    }

    /// How long the workload runs.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.inner.config.duration_ms)
    }

    /// When faults stop.
    pub fn faults_end(&self) -> Duration {
        self.inner.config.faults_end()
    }

    /// The normal network latency range.
    pub fn base_latency(&self) -> Range<Duration> {
        let c = &self.inner.config;
        Duration::from_micros(c.latency_us_min)
            ..Duration::from_micros(c.latency_us_max.max(c.latency_us_min + 1))
    }

    /// The madsim handle (to create nodes).
    pub fn handle(&self) -> Handle {
        Handle::current()
    }

    /// Registers `node` for faults (and to be stopped when the run ends).
    pub fn register(&self, node: &NodeHandle, name: &str, role: NodeRole) {
        crate::open_transactions::name_node(node.id(), name);
        self.inner
            .all_nodes
            .lock()
            .expect("node list")
            .push(node.id());
        self.inner
            .nodes
            .lock()
            .expect("node registry")
            .push(RegisteredNode {
                id: node.id(),
                name: name.to_string(),
                role,
            });
    }

    /// The registered nodes.
    pub fn nodes(&self) -> Vec<RegisteredNode> {
        self.inner.nodes.lock().expect("node registry").clone()
    }

    /// Starts the fault schedule on a node of its own.
    pub fn start_nemesis(&self) {
        let world = self.clone();
        let node = self.handle().create_node().name("nemesis").build();
        self.inner
            .all_nodes
            .lock()
            .expect("node list")
            .push(node.id());
        node.spawn(async move { fault::run_nemesis(world).await });
    }

    /// Stops every node, so their tasks (servers that loop forever, waiters registered with
    /// each other) are dropped with the run instead of outliving it.
    async fn shutdown(&self) {
        let nodes = self.inner.all_nodes.lock().expect("node list").clone();
        let handle = self.handle();
        for node in nodes {
            handle.kill(node);
        }
        // Killed tasks are dropped the next time the executor runs.
        madsim::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A boxed future that does not need to be `Send`: everything in a run is on one thread.
pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// What a system under test provides to the runner.
pub trait System {
    /// The final state checkers judge (for example, the database's tables).
    type State: Serialize + Clone;

    /// The system's name in reports.
    fn name(&self) -> String;

    /// Creates the nodes, starts the nemesis (`world.start_nemesis()`), drives the workload
    /// and returns the final state. Runs inside the runtime.
    fn run(&self, world: World) -> LocalBoxFuture<Self::State>;

    /// The checks that judge a run. The first invalid one is the run's primary failure (its
    /// exit code and group), so safety checks come before progress, latency and liveness.
    fn checkers(&self, config: &SimConfig) -> Vec<Box<dyn Checker<Self::State>>>;

    /// The seed of the madsim runtime for run seed `seed`. A system whose variants (say, one
    /// per database profile) should be independent samples of one seed mixes its variant in;
    /// the default uses the seed as it is.
    fn runtime_seed(&self, seed: u64) -> u64 {
        seed
    }

    /// Every race window the system's `sometimes!` marks (its registry, made with
    /// [`crate::windows!`]): known before any run reaches them, so reports can list the ones
    /// never reached. A `sometimes!` of a window not listed here panics.
    fn windows(&self) -> &'static [Window] {
        &[]
    }
}

/// Why a seed failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// A check found a violation (exit code 1).
    Violation,
    /// The run never settled (exit code 3).
    Liveness,
    /// Something panicked in the simulation (exit code 4).
    Panic,
    /// The run made less progress than its system requires (exit code 6): a run whose
    /// requests never complete proves nothing, so it fails (TigerBeetle's VOPR does the same).
    NoProgress,
}

impl FailureKind {
    /// The process exit code for this kind of failure (DESIGN.md).
    pub fn exit_code(self) -> u8 {
        match self {
            FailureKind::Violation => 1,
            FailureKind::Liveness => 3,
            FailureKind::Panic => 4,
            FailureKind::NoProgress => 6,
        }
    }
}

/// The failure of a run: its primary check (the first that failed), and the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What kind (of the primary check).
    pub kind: FailureKind,
    /// The first failed check (`panic`, `time_limit` for the other kinds): the exit code and
    /// the failure's group.
    pub check: String,
    /// One sentence that proves it.
    pub witness: String,
    /// Every other check that failed in the same run, in check order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<String>,
}

impl Failure {
    /// The failure kind of an invalid report of `check`.
    pub fn kind_of(check: &str) -> FailureKind {
        match check {
            crate::check::LIVENESS_CHECK => FailureKind::Liveness,
            crate::check::PROGRESS_CHECK => FailureKind::NoProgress,
            _ => FailureKind::Violation,
        }
    }

    /// The failure of a run from its reports: the first invalid report is the primary.
    pub fn from_reports(reports: &[Report]) -> Option<Failure> {
        let mut invalid = reports.iter().filter(|r| r.verdict == Verdict::Invalid);
        let first = invalid.next()?;
        Some(Failure {
            kind: Failure::kind_of(&first.check),
            check: first.check.clone(),
            witness: first.witness.clone(),
            also: invalid.map(|r| r.check.clone()).collect(),
        })
    }
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome<S> {
    /// The system's name.
    pub system: String,
    /// The seed.
    pub seed: u64,
    /// The history.
    pub history: History,
    /// The final state (`None` if the run panicked or hit its time limit).
    pub state: Option<S>,
    /// Each check's report.
    pub reports: Vec<Report>,
    /// Virtual time the run took.
    pub virtual_elapsed: Duration,
    /// The trace hash.
    pub trace_hash: u64,
    /// Which race windows and faults the run reached.
    pub coverage: CoverageReport,
    /// The first failure, if any.
    pub failure: Option<Failure>,
}

impl<S> Outcome<S> {
    /// Whether no check was invalid and nothing panicked or hung. A check that had nothing to
    /// judge (unknown) is not a pass of that check ([`Outcome::unjudged`] lists them); the
    /// system's progress check decides whether the run did enough to count.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// The checks that had nothing to judge in this run.
    pub fn unjudged(&self) -> Vec<&str> {
        self.reports
            .iter()
            .filter(|r| r.verdict == Verdict::Unknown)
            .map(|r| r.check.as_str())
            .collect()
    }

    /// The exit code for this outcome.
    pub fn exit_code(&self) -> u8 {
        self.failure.as_ref().map_or(0, |f| f.kind.exit_code())
    }

    /// The one line a failure prints first: the primary check and its witness, then every
    /// other check that failed.
    pub fn fail_line(&self) -> Option<String> {
        let f = self.failure.as_ref()?;
        let also = if f.also.is_empty() {
            String::new()
        } else {
            format!(" (also failed: {})", f.also.join(", "))
        };
        Some(format!(
            "FAIL {} seed={} {}: {}{also}",
            self.system, self.seed, f.check, f.witness
        ))
    }
}

/// Runs `system` with `seed`.
pub fn run<S: System>(system: &S, seed: u64, config: &SimConfig) -> Outcome<S::State> {
    assert!(config.validate().is_ok(), "{:?}", config.validate());
    // sqlparser guards its recursion with `stacker`, which asks for the thread's stack bounds
    // once per thread via `pthread_attr_init`; madsim refuses that call inside a simulation
    // (it looks like spawning a thread). Asking once out here caches the answer.
    let _ = crate::db::sql::parse(crate::db::Engine::Postgres, "select 1");
    let mut madsim_config = madsim::Config::default();
    madsim_config.net.send_latency = Duration::from_micros(config.latency_us_min)
        ..Duration::from_micros(config.latency_us_max.max(config.latency_us_min + 1));
    let mut runtime = Runtime::with_seed_and_config(system.runtime_seed(seed), madsim_config);
    runtime.set_time_limit(Duration::from_millis(config.time_limit_ms));
    let world = World {
        inner: Arc::new(WorldInner {
            seed,
            config: config.clone(),
            recorder: Recorder::default(),
            nodes: Mutex::new(Vec::new()),
            all_nodes: Mutex::new(Vec::new()),
        }),
    };
    coverage::start_run(system.windows());
    fault::start_run(&config.faults);
    fault::record_into(world.recorder());
    crate::open_transactions::start_run(world.recorder());
    steering::start_run(&world);
    let run_world = world.clone();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(async move {
            trace::start_run();
            let state = system.run(run_world.clone()).await;
            let elapsed = trace::virtual_now();
            // The registry's summary is the history's last event.
            crate::open_transactions::record_summary();
            run_world.shutdown().await;
            (state, elapsed)
        })
    }));
    crate::open_transactions::end_run();
    crate::net::end_run();
    trace::end_run();
    fault::end_run();
    let steering_log = steering::end_run();
    let coverage = coverage::end_run();
    drop(runtime);
    let mut history = world.recorder().take();
    if let Some(log) = &steering_log {
        steering::annotate(&mut history, log, &world.nodes());
    }
    let mut outcome = Outcome {
        system: system.name(),
        seed,
        history,
        state: None,
        reports: Vec::new(),
        virtual_elapsed: Duration::ZERO,
        trace_hash: 0,
        coverage,
        failure: None,
    };
    match result {
        Ok((state, elapsed)) => {
            outcome.virtual_elapsed = elapsed;
            for checker in system.checkers(config) {
                outcome
                    .reports
                    .push(checker.check(&outcome.history, &state));
            }
            for name in outcome.coverage.violated() {
                outcome.reports.push(Report::invalid(
                    name,
                    format!("always!(\"{name}\") was false"),
                ));
            }
            outcome.failure = Failure::from_reports(&outcome.reports);
            outcome.state = Some(state);
        }
        Err(panic) => {
            let message = panic_message(&panic);
            let kind = if message.contains("time limit exceeded") {
                FailureKind::Liveness
            } else {
                FailureKind::Panic
            };
            outcome.failure = Some(Failure {
                kind,
                check: if kind == FailureKind::Liveness {
                    "time_limit".to_string()
                } else {
                    "panic".to_string()
                },
                witness: message,
                also: Vec::new(),
            });
        }
    }
    let mut hasher = TraceHasher::default();
    hasher.write_value(&outcome.history);
    hasher.write_value(&outcome.state);
    hasher.write_value(&outcome.coverage);
    hasher.write_value(&outcome.virtual_elapsed);
    outcome.trace_hash = hasher.finish();
    outcome
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first invalid report is the primary failure; every other invalid one is named too.
    #[test]
    fn a_failure_names_its_primary_check_and_every_other_failed_one() {
        let reports = vec![
            Report::valid("a", "fine"),
            Report::invalid("no_oversell", "product 1: stock is -1"),
            Report::unknown("b", "nothing to judge"),
            Report::invalid("no_5xx", "1 unexplained 5xx"),
            Report::invalid(crate::check::PROGRESS_CHECK, "too little"),
        ];
        let failure = Failure::from_reports(&reports).unwrap();
        assert_eq!(failure.kind, FailureKind::Violation);
        assert_eq!(failure.check, "no_oversell");
        assert_eq!(failure.also, vec!["no_5xx", "progress"]);
        let progress = Failure::from_reports(&reports[4..]).unwrap();
        assert_eq!(progress.kind.exit_code(), 6);
        assert_eq!(Failure::from_reports(&reports[..1]), None);
        let outcome = Outcome::<()> {
            system: "s@pg_rc".into(),
            seed: 3,
            history: History::default(),
            state: None,
            reports,
            virtual_elapsed: Duration::ZERO,
            trace_hash: 0,
            coverage: CoverageReport::default(),
            failure: Some(failure),
        };
        assert_eq!(
            outcome.fail_line().unwrap(),
            "FAIL s@pg_rc seed=3 no_oversell: product 1: stock is -1 (also failed: no_5xx, progress)"
        );
        assert_eq!(outcome.unjudged(), vec!["b"]);
    }
}
