//! Schedule steering: seeded delays at the points where interleavings decide races, so that a
//! narrow race window opens in a few seeds instead of a few thousand.
//!
//! Real races hide where contention is low: with two shoppers arriving 500 ms apart, the few
//! milliseconds between one request's read of the stock and its write almost never contain
//! the other request's read. madsim's scheduler is already random, but it only reorders what
//! is runnable at the same instant; it never makes a request wait inside its transaction while
//! another arrives. Steering does, at delay points placed where that pays:
//!
//! - the database client, before a statement is sent and after its result arrives
//!   ([`Point::DbSend`], [`Point::DbResult`]);
//! - RPC, when a call is sent and when its reply is received ([`Point::RpcSend`],
//!   [`Point::RpcReceive`]), on the caller's side so that no deadline shrinks;
//! - every `sometimes!` race window ([`Point::Window`]).
//!
//! Where a point sits matters ([`Site`]). Inside a database transaction that has already read
//! or written rows, a delay holds the transaction's snapshot, reads and locks open while others
//! run. Between what such a transaction learned and what it does with it — after a result
//! arrives, before a write or the commit is sent, at a race window — a delay opens the
//! check-then-act window of every lost update, oversell and double booking: that is where
//! change points land. At each point a seeded plan ([`SteeringPlan`]) decides:
//!
//! - **jitter**: a short delay (a few ms) at a fired point, as FoundationDB's buggified
//!   delays do;
//! - **stalls**: a long delay at a fired point, drawn up to `stall_ms_max`, within a per-run
//!   budget;
//! - **change points** ([`ChangePoint`], after PCT: Burckhardt et al., "A randomized scheduler
//!   with probabilistic guarantees of finding bugs", ASPLOS 2010, and Coyote's delay-bounded
//!   scheduling): at a few deciding points the logical process that reached it (a *lane*)
//!   is held back while the others run, until the other lanes have passed a number of delay
//!   points or a time limit ends. PCT's insight is that a bug of depth d needs only d - 1 well
//!   placed priority changes; holding the lane of an open transaction until the others moved
//!   is such a change.
//!
//! A lane is the chain of work one root RPC call started (a shopper's request, through the app
//! node's handler and its database statements, to the cache and back); the call carries its
//! lane to the server like a tracing header. Work outside any call (a queue worker's loop) is
//! the lane of its node.
//!
//! Determinism: delays use madsim time only and draw from a ChaCha stream of their own,
//! seeded from the run's seed, so turning steering on or off never shifts any other draw, and
//! with steering off no point draws, sleeps or yields: the run is exactly the run without
//! steering. Every delay is recorded: each operation of the history gets `steered_us` in its
//! details (the steering delay its own lane absorbed), every stall and hold is a `steering`
//! event in the history (with its start and length), and a `steering summary` event closes the
//! run. The trace hash covers them, so a replay reproduces every delay bit for bit.
//!
//! Steering stops when the faults stop (the quiet period), so liveness is judged on an
//! unsteered system, and the latency checks leave out operations near a stall or hold
//! ([`steering_windows`]) and subtract the jitter an operation absorbed itself.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use madsim::task::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::history::{History, Op, OpOutcome};
use crate::input::{check_probability, InputError};
use crate::runner::{RegisteredNode, World};

/// Most change points a plan may have.
pub const CHANGE_POINTS_MAX: usize = 16;

/// How a run is steered. As a scenario's `[steering]` table every field is optional (the
/// defaults below, with `enabled = false`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SteeringPlan {
    /// Whether steering is on. Off, no point ever delays and the run is the unsteered run.
    pub enabled: bool,
    /// Probability that a delay point outside a transaction with rows ([`Site::Outside`])
    /// fires.
    pub point_probability: f64,
    /// Probability that a point inside a transaction that read or wrote rows, or at a race
    /// window ([`Site::Inside`], [`Site::Deciding`]), fires.
    pub txn_point_probability: f64,
    /// Longest jitter of a fired point, ms (drawn uniformly from 1 ms, madsim's shortest
    /// sleep; 0: no jitter).
    pub jitter_ms_max: u64,
    /// Probability that a fired point stalls instead of jittering.
    pub stall_probability: f64,
    /// Longest stall, ms (drawn uniformly from a tenth of it).
    pub stall_ms_max: u64,
    /// Total stall time a run may spend, ms; once spent, fired points only jitter.
    pub stall_budget_ms: u64,
    /// The PCT-style change points, in the order they are armed.
    pub change_points: Vec<ChangePoint>,
    /// Most time one lane (one request) may be held by change points in all, ms: keeps a
    /// request far inside its deadline however often a change point is given back.
    pub lane_hold_budget_ms: u64,
}

/// One PCT-style change point: at a deciding delay point ([`Site::Deciding`]) the lane that
/// reached it is held back while the other lanes run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChangePoint {
    /// The change point is armed once this many deciding points of the run have passed.
    pub after_points: u64,
    /// Once armed, the probability that a deciding point is the change point.
    pub probability: f64,
    /// The held lane is released once other requests' lanes have passed this many delay
    /// points...
    pub release_after_points: u32,
    /// ...or once every other request in flight has reached no delay point for this long,
    /// ms: they are blocked (on the held lane's locks, most likely), and in PCT a lowered
    /// thread runs when the higher ones cannot...
    pub quiet_ms: u64,
    /// ...or after this long at most, ms. A hold that no other request moved during is given
    /// back (at most [`REFUNDS_MAX`] times): holding the only lane in flight reorders nothing,
    /// as lowering the priority of the only runnable thread changes nothing in PCT.
    pub hold_ms_max: u64,
}

/// How often one change point is given back after holds that reordered nothing.
pub const REFUNDS_MAX: u32 = 8;

impl Default for ChangePoint {
    fn default() -> Self {
        ChangePoint {
            after_points: 0,
            probability: 0.3,
            release_after_points: 32,
            quiet_ms: 50,
            hold_ms_max: 500,
        }
    }
}

impl Default for SteeringPlan {
    fn default() -> Self {
        SteeringPlan {
            enabled: false,
            point_probability: 0.05,
            txn_point_probability: 0.2,
            jitter_ms_max: 2,
            stall_probability: 0.1,
            stall_ms_max: 200,
            stall_budget_ms: 1_000,
            change_points: vec![ChangePoint::default()],
            lane_hold_budget_ms: 2_000,
        }
    }
}

impl SteeringPlan {
    /// Steering off (the default).
    pub fn off() -> SteeringPlan {
        SteeringPlan::default()
    }

    /// Checks ranges, naming the field.
    pub fn validate(&self) -> Result<(), InputError> {
        check_probability("steering.point_probability", self.point_probability)?;
        check_probability("steering.txn_point_probability", self.txn_point_probability)?;
        check_probability("steering.stall_probability", self.stall_probability)?;
        for (field, value, max) in [
            ("steering.jitter_ms_max", self.jitter_ms_max, 60_000),
            ("steering.stall_ms_max", self.stall_ms_max, 60_000),
            ("steering.stall_budget_ms", self.stall_budget_ms, 600_000),
            (
                "steering.lane_hold_budget_ms",
                self.lane_hold_budget_ms,
                600_000,
            ),
        ] {
            if value > max {
                return Err(InputError::new(
                    field,
                    value,
                    format!("must be at most {max}"),
                ));
            }
        }
        if self.change_points.len() > CHANGE_POINTS_MAX {
            return Err(InputError::new(
                "steering.change_points",
                self.change_points.len(),
                format!("must hold at most {CHANGE_POINTS_MAX} change points"),
            ));
        }
        for (i, cp) in self.change_points.iter().enumerate() {
            let field = |name: &str| format!("steering.change_points[{i}].{name}");
            check_probability(&field("probability"), cp.probability)?;
            if cp.release_after_points == 0 {
                return Err(InputError::new(
                    field("release_after_points"),
                    0,
                    "must be at least 1",
                ));
            }
            if !(1..=60_000).contains(&cp.quiet_ms) {
                return Err(InputError::new(
                    field("quiet_ms"),
                    cp.quiet_ms,
                    "must be in 1..=60000",
                ));
            }
            if !(1..=60_000).contains(&cp.hold_ms_max) {
                return Err(InputError::new(
                    field("hold_ms_max"),
                    cp.hold_ms_max,
                    "must be in 1..=60000",
                ));
            }
        }
        Ok(())
    }
}

/// Where a delay point is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Point {
    /// A database statement is about to be sent.
    DbSend,
    /// A database statement's result has arrived.
    DbResult,
    /// An RPC request is about to be sent.
    RpcSend,
    /// An RPC reply has arrived.
    RpcReceive,
    /// A `sometimes!` race window.
    Window,
}

impl Point {
    /// The point's name in the history.
    pub fn name(self) -> &'static str {
        match self {
            Point::DbSend => "db_send",
            Point::DbResult => "db_result",
            Point::RpcSend => "rpc_send",
            Point::RpcReceive => "rpc_receive",
            Point::Window => "window",
        }
    }
}

/// Where a delay point sits, as seen from the database transaction of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Site {
    /// Outside any transaction that has read or written rows.
    Outside,
    /// Inside a transaction that has read or written rows, about to read more.
    Inside,
    /// Inside such a transaction between what it learned and what it does with it: after a
    /// result arrived, before a write or the commit is sent; and at every race window.
    Deciding,
}

/// Who reaches a point: the chain of one root call, or a node's own background work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Node(NodeId),
    Call(u64),
}

/// The lane id a call carries when steering is off or the call has none.
pub const NO_LANE: u64 = 0;

thread_local! {
    // The steering state of the run on this thread; `None` = steering off.
    static RUN: RefCell<Option<RunState>> = const { RefCell::new(None) };
    // The call lane of the future being polled, set by `Scoped`.
    static CURRENT_LANE: Cell<u64> = const { Cell::new(NO_LANE) };
}

struct Hold {
    id: u64,
    lane: Lane,
    /// Delay points other requests' lanes passed since the hold began.
    seen: u32,
    need: u32,
    release: Option<oneshot::Sender<()>>,
}

/// A root call: the node that made it and when.
struct Root {
    node: NodeId,
    start_us: u64,
    absorbed_us: u64,
    /// The root call has not returned yet.
    in_flight: bool,
    /// When the lane last reached a delay point, µs.
    last_point_us: u64,
}

struct RunState {
    plan: SteeringPlan,
    rng: ChaCha8Rng,
    /// No delay starts at or after this virtual time (when the faults stop).
    end: Duration,
    /// The run (its recorder, and its node registry for lane names).
    world: World,
    points: u64,
    deciding_points: u64,
    fired: u64,
    /// Jitter slept, µs (as measured on the virtual clock).
    jitter_us: u64,
    stalls: u64,
    /// Stall time drawn, µs (what the budget counts).
    stall_spent_us: u64,
    /// Stall time slept, µs.
    stall_us: u64,
    holds_done: u64,
    hold_spent_us: u64,
    /// Indexes of change points not yet used, in arming order.
    pending: Vec<usize>,
    /// Times each change point was given back.
    refunds: Vec<u32>,
    /// Time each call lane was held, µs, by lane id (node lanes under id 0).
    lane_held_us: BTreeMap<u64, u64>,
    holds: Vec<Hold>,
    next_hold: u64,
    /// Call lanes by id (ids start at 1).
    roots: Vec<Root>,
    /// Delay absorbed by node lanes (background work), µs.
    node_absorbed_us: u64,
}

/// Starts steering for a run of `world` on this thread, if its plan is enabled. Delays stop
/// when the faults stop.
pub(crate) fn start_run(world: &World) {
    let plan = &world.config().steering;
    let end = world.faults_end();
    assert!(plan.validate().is_ok(), "{:?}", plan.validate());
    CURRENT_LANE.with(|l| l.set(NO_LANE));
    let state = plan.enabled.then(|| RunState {
        // A stream of its own: steering never shifts the runtime's or the swarm's draws.
        rng: ChaCha8Rng::seed_from_u64(world.seed() ^ 0x5354_4545_5249_4e47),
        plan: plan.clone(),
        end,
        world: world.clone(),
        points: 0,
        deciding_points: 0,
        fired: 0,
        jitter_us: 0,
        stalls: 0,
        stall_spent_us: 0,
        stall_us: 0,
        holds_done: 0,
        hold_spent_us: 0,
        pending: (0..plan.change_points.len()).collect(),
        refunds: vec![0; plan.change_points.len()],
        lane_held_us: BTreeMap::new(),
        holds: Vec::new(),
        next_hold: 0,
        roots: Vec::new(),
        node_absorbed_us: 0,
    });
    RUN.with(|r| *r.borrow_mut() = state);
}

/// What a steered run did, for the history.
#[derive(Debug, Clone, Default)]
pub(crate) struct SteeringLog {
    /// Root calls: (node, start µs, absorbed µs), in the order they were made.
    roots: Vec<(NodeId, u64, u64)>,
    summary: serde_json::Value,
}

/// Ends steering for the run and returns its log (`None` if steering was off).
pub(crate) fn end_run() -> Option<SteeringLog> {
    CURRENT_LANE.with(|l| l.set(NO_LANE));
    let state = RUN.with(|r| r.borrow_mut().take())?;
    let unfinished = state.holds.len();
    Some(SteeringLog {
        roots: state
            .roots
            .iter()
            .map(|r| (r.node, r.start_us, r.absorbed_us))
            .collect(),
        summary: serde_json::json!({
            "points": state.points,
            "deciding_points": state.deciding_points,
            "fired": state.fired,
            "jitter_us": state.jitter_us,
            "stalls": state.stalls,
            "stall_us": state.stall_us,
            "holds": state.holds_done,
            "hold_us": state.hold_spent_us,
            "holds_unfinished": unfinished,
            "background_us": state.node_absorbed_us,
        }),
    })
}

fn now_us() -> u64 {
    crate::trace::virtual_now().as_micros() as u64
}

fn node_name(nodes: &[RegisteredNode], node: NodeId) -> String {
    nodes
        .iter()
        .find(|n| n.id == node)
        .map_or_else(|| format!("node-{node}"), |n| n.name.clone())
}

impl RunState {
    fn lane_name(&self, lane: Lane) -> String {
        let nodes = self.world.nodes();
        match lane {
            Lane::Node(node) => node_name(&nodes, node),
            Lane::Call(id) => {
                let root = &self.roots[(id - 1) as usize];
                format!("{} call {id}", node_name(&nodes, root.node))
            }
        }
    }

    /// Decides what the point `at` reached by `lane` does.
    fn decide(&mut self, lane: Lane, at: Point, site: Site) -> Option<Delay> {
        self.points += 1;
        // Another request moved: count it for every hold of a different lane. Background
        // work (a node's own loop, polling on a timer) does not count: it would release a
        // held request before any other request arrived.
        let is_call = matches!(lane, Lane::Call(_));
        if let Lane::Call(id) = lane {
            self.roots[(id - 1) as usize].last_point_us = now_us();
        }
        self.holds.retain_mut(|hold| {
            if hold.lane == lane || !is_call {
                return true;
            }
            hold.seen += 1;
            if hold.seen < hold.need {
                return true;
            }
            if let Some(release) = hold.release.take() {
                let _ = release.send(());
            }
            false
        });
        if crate::trace::virtual_now() >= self.end {
            return None;
        }
        if site == Site::Deciding {
            self.deciding_points += 1;
            if let Some(delay) = self.change_point(lane, at) {
                return Some(delay);
            }
        }
        let p = match site {
            Site::Outside => self.plan.point_probability,
            Site::Inside | Site::Deciding => self.plan.txn_point_probability,
        };
        if p <= 0.0 || !self.rng.gen_bool(p) {
            return None;
        }
        self.fired += 1;
        let stall_left_us = (self.plan.stall_budget_ms * 1_000).saturating_sub(self.stall_spent_us);
        if self.plan.stall_probability > 0.0
            && self.plan.stall_ms_max > 0
            && stall_left_us >= 1_000
            && self.rng.gen_bool(self.plan.stall_probability)
        {
            // Whole milliseconds: madsim sleeps at least 1 ms.
            let max_ms = self.plan.stall_ms_max;
            let us = (self.rng.gen_range((max_ms / 10).max(1)..=max_ms) * 1_000)
                .min(stall_left_us / 1_000 * 1_000);
            assert!(us >= 1_000 && us <= stall_left_us);
            self.stall_spent_us += us;
            self.stalls += 1;
            return Some(Delay::stall(lane, at, us));
        }
        if self.plan.jitter_ms_max == 0 {
            return None;
        }
        let us = self.rng.gen_range(1..=self.plan.jitter_ms_max) * 1_000;
        Some(Delay::jitter(lane, at, us))
    }

    /// The first armed change point that fires here, as a hold of `lane`.
    fn change_point(&mut self, lane: Lane, at: Point) -> Option<Delay> {
        let budget_us = self.plan.lane_hold_budget_ms * 1_000;
        let held_us = self.lane_held_us.get(&lane_key(lane)).copied().unwrap_or(0);
        let left_us = budget_us.saturating_sub(held_us);
        if left_us < 1_000 {
            return None;
        }
        let mut chosen = None;
        for (i, &cp) in self.pending.iter().enumerate() {
            let point = &self.plan.change_points[cp];
            if point.after_points < self.deciding_points && self.rng.gen_bool(point.probability) {
                chosen = Some(i);
                break;
            }
        }
        let cp = self.pending.remove(chosen?);
        let point = &self.plan.change_points[cp];
        let (tx, rx) = oneshot::channel();
        let id = self.next_hold;
        self.next_hold += 1;
        self.holds.push(Hold {
            id,
            lane,
            seen: 0,
            need: point.release_after_points,
            release: Some(tx),
        });
        assert!(self.holds.len() <= CHANGE_POINTS_MAX);
        let max = Duration::from_millis(point.hold_ms_max).min(Duration::from_micros(left_us));
        Some(Delay {
            lane,
            at,
            kind: DelayKind::Hold {
                id,
                change_point: cp,
                max,
                quiet: Duration::from_millis(point.quiet_ms),
                release: rx,
            },
        })
    }

    /// Whether other requests are in flight and none reached a delay point for `quiet_us`.
    fn others_blocked(&self, held: Lane, quiet_us: u64) -> bool {
        let now = now_us();
        let mut others = self
            .roots
            .iter()
            .enumerate()
            .filter(|(i, root)| root.in_flight && held != Lane::Call(*i as u64 + 1))
            .peekable();
        others.peek().is_some()
            && others.all(|(_, root)| now.saturating_sub(root.last_point_us) >= quiet_us)
    }

    /// Ends hold `id` of change point `cp` after `us`: a hold no other request moved during
    /// gives its change point back, to be armed again in its place.
    fn end_hold(&mut self, id: u64, cp: usize, lane: Lane, us: u64) -> bool {
        let moved = match self.holds.iter().position(|h| h.id == id) {
            // Still listed: it timed out; did anyone move?
            Some(i) => self.holds.remove(i).seen > 0,
            // Released by others' progress.
            None => true,
        };
        self.holds_done += 1;
        self.hold_spent_us += us;
        *self.lane_held_us.entry(lane_key(lane)).or_default() += us;
        let refund = !moved && self.refunds[cp] < REFUNDS_MAX;
        if refund {
            self.refunds[cp] += 1;
            let at = self.pending.partition_point(|&p| p < cp);
            self.pending.insert(at, cp);
        }
        refund
    }

    /// Books a finished delay: the lane's account, and an event for stalls and holds.
    fn finish(
        &mut self,
        lane: Lane,
        at: Point,
        start_us: u64,
        kind: &str,
        extra: serde_json::Value,
    ) {
        let us = now_us().saturating_sub(start_us);
        match lane {
            Lane::Call(id) => self.roots[(id - 1) as usize].absorbed_us += us,
            Lane::Node(_) => self.node_absorbed_us += us,
        }
        match kind {
            "jitter" => {
                self.jitter_us += us;
                return;
            }
            "stall" => self.stall_us += us,
            _ => {}
        }
        let mut details = serde_json::json!({
            "start_us": start_us,
            "us": us,
            "point": at.name(),
            "lane": self.lane_name(lane),
        });
        if let (Some(map), serde_json::Value::Object(extra)) = (details.as_object_mut(), extra) {
            map.extend(extra);
        }
        self.world.recorder().event("steering", kind, details);
    }
}

enum DelayKind {
    Sleep {
        us: u64,
        stall: bool,
    },
    Hold {
        id: u64,
        change_point: usize,
        max: Duration,
        quiet: Duration,
        release: oneshot::Receiver<()>,
    },
}

struct Delay {
    lane: Lane,
    at: Point,
    kind: DelayKind,
}

impl Delay {
    fn stall(lane: Lane, at: Point, us: u64) -> Delay {
        Delay {
            lane,
            at,
            kind: DelayKind::Sleep { us, stall: true },
        }
    }

    fn jitter(lane: Lane, at: Point, us: u64) -> Delay {
        Delay {
            lane,
            at,
            kind: DelayKind::Sleep { us, stall: false },
        }
    }

    async fn wait(self) {
        let start_us = now_us();
        let (kind, extra) = match self.kind {
            DelayKind::Sleep { us, stall } => {
                madsim::time::sleep(Duration::from_micros(us)).await;
                let kind = if stall { "stall" } else { "jitter" };
                (kind, serde_json::Value::Null)
            }
            DelayKind::Hold {
                id,
                change_point,
                max,
                quiet,
                mut release,
            } => {
                let lane = self.lane;
                let deadline = madsim::time::Instant::now() + max;
                let why = loop {
                    let left = deadline.saturating_duration_since(madsim::time::Instant::now());
                    if left.is_zero() {
                        break "hold_ms_max";
                    }
                    if madsim::time::timeout(left.min(quiet), &mut release)
                        .await
                        .is_ok()
                    {
                        break "others_ran";
                    }
                    let quiet_us = quiet.as_micros() as u64;
                    if with_run(|state| state.others_blocked(lane, quiet_us)) == Some(true) {
                        break "others_blocked";
                    }
                };
                let us = now_us().saturating_sub(start_us);
                let refunded = with_run(|state| state.end_hold(id, change_point, lane, us));
                (
                    "hold",
                    serde_json::json!({
                        "change_point": change_point,
                        "released": why,
                        "given_back": refunded.unwrap_or(false),
                    }),
                )
            }
        };
        with_run(|state| state.finish(self.lane, self.at, start_us, kind, extra));
    }
}

/// The key of a lane's hold account: its call id, or 0 for every node lane.
fn lane_key(lane: Lane) -> u64 {
    match lane {
        Lane::Call(id) => id,
        Lane::Node(_) => 0,
    }
}

fn with_run<T>(f: impl FnOnce(&mut RunState) -> T) -> Option<T> {
    RUN.with(|r| r.borrow_mut().as_mut().map(f))
}

fn current_lane() -> Lane {
    match CURRENT_LANE.with(Cell::get) {
        NO_LANE => Lane::Node(madsim::plugin::node()),
        id => Lane::Call(id),
    }
}

/// Whether steering is on in the run on this thread.
pub fn is_active() -> bool {
    RUN.with(|r| r.borrow().is_some())
}

/// A delay point at `site`, reached by the current lane. With steering off it is ready at
/// once, without drawing or yielding.
#[must_use = "a delay point does nothing unless awaited"]
pub fn point(at: Point, site: Site) -> impl Future<Output = ()> + Send {
    let delay = with_run(|state| state.decide(current_lane(), at, site)).flatten();
    async move {
        if let Some(delay) = delay {
            delay.wait().await;
        }
    }
}

/// The lane of a call made here: the current call lane, or a new root lane (a call made
/// outside any call, as a client's request), in flight until the guard is dropped. Its id is
/// [`NO_LANE`] with steering off.
pub fn call_lane() -> CallLane {
    with_run(|state| match CURRENT_LANE.with(Cell::get) {
        NO_LANE => {
            let now = now_us();
            state.roots.push(Root {
                node: madsim::plugin::node(),
                start_us: now,
                absorbed_us: 0,
                in_flight: true,
                last_point_us: now,
            });
            CallLane {
                id: state.roots.len() as u64,
                root: true,
            }
        }
        id => CallLane { id, root: false },
    })
    .unwrap_or(CallLane {
        id: NO_LANE,
        root: false,
    })
}

/// The lane of an RPC call (from [`call_lane`]); a root lane stops being in flight when this
/// is dropped, whether the call returned or was abandoned.
#[derive(Debug)]
pub struct CallLane {
    id: u64,
    root: bool,
}

impl CallLane {
    /// The id the request carries.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for CallLane {
    fn drop(&mut self) {
        if self.root {
            let id = self.id;
            with_run(|state| state.roots[(id - 1) as usize].in_flight = false);
        }
    }
}

/// A delay point of the call lane `lane` (from [`call_lane`]).
#[must_use = "a delay point does nothing unless awaited"]
pub fn call_point(lane: u64, at: Point) -> impl Future<Output = ()> + Send {
    let delay = if lane == NO_LANE {
        None
    } else {
        with_run(|state| state.decide(Lane::Call(lane), at, Site::Outside)).flatten()
    };
    async move {
        if let Some(delay) = delay {
            delay.wait().await;
        }
    }
}

/// Runs `future` as part of call lane `lane` (a server serving a call): delay points it
/// reaches, and calls it makes, belong to that lane.
pub fn scoped<F: Future>(lane: u64, future: F) -> Scoped<F> {
    Scoped {
        lane,
        inner: Box::pin(future),
    }
}

/// A future polled as part of a call lane; see [`scoped`].
pub struct Scoped<F> {
    lane: u64,
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let lane = self.lane;
        let outer = CURRENT_LANE.with(|l| l.replace(lane));
        let poll = self.inner.as_mut().poll(cx);
        CURRENT_LANE.with(|l| l.set(outer));
        poll
    }
}

/// Writes a steered run's log into its history: every operation whose lane absorbed steering
/// delay gets `details.steered_us`, and a `steering summary` event closes the history.
pub(crate) fn annotate(history: &mut History, log: &SteeringLog, nodes: &[RegisteredNode]) {
    // The k-th root call a process made at an instant belongs to the k-th operation it invoked
    // at that instant (a client records an operation, then makes its call, in one step).
    let mut ops_at: BTreeMap<(String, u64), Vec<usize>> = BTreeMap::new();
    for op in &history.ops {
        ops_at
            .entry((op.process.clone(), op.invoke_us))
            .or_default()
            .push(op.index);
    }
    let mut taken: BTreeMap<(String, u64), usize> = BTreeMap::new();
    let mut unattributed_us = 0u64;
    for &(node, start_us, absorbed_us) in &log.roots {
        let key = (node_name(nodes, node), start_us);
        let k = taken.entry(key.clone()).or_default();
        let op = ops_at.get(&key).and_then(|ops| ops.get(*k)).copied();
        *k += 1;
        if absorbed_us == 0 {
            continue;
        }
        match op {
            Some(index) => {
                let details = &mut history.ops[index].details;
                let before = details["steered_us"].as_u64().unwrap_or(0);
                if let serde_json::Value::Object(map) = details {
                    map.insert("steered_us".to_string(), (before + absorbed_us).into());
                }
            }
            None => unattributed_us += absorbed_us,
        }
    }
    let at = history.ops.last().map_or(0, |op| op.invoke_us);
    let mut summary = log.summary.clone();
    summary["calls"] = log.roots.len().into();
    summary["unattributed_us"] = unattributed_us.into();
    let index = history.ops.len();
    history.ops.push(Op {
        index,
        process: "steering".to_string(),
        kind: "summary".to_string(),
        invoke_us: at,
        complete_us: Some(at),
        outcome: OpOutcome::Ok,
        status: None,
        details: summary,
    });
}

/// Steering windows (start, end) in µs: every stall and hold in a history, from its start to
/// its end. Like fault windows, they slow more than the lane they delay (locks held, pools
/// and workers busy), so latency checks leave out the operations around them.
pub fn steering_windows(history: &History) -> Vec<(u64, u64)> {
    history
        .ops
        .iter()
        .filter(|op| op.process == "steering" && (op.kind == "stall" || op.kind == "hold"))
        .map(|op| {
            let start = op.details["start_us"].as_u64().unwrap_or(op.invoke_us);
            (start.min(op.invoke_us), op.invoke_us)
        })
        .collect()
}

/// The steering delay an operation's own lane absorbed, µs (0 if unsteered).
pub fn steered_us(op: &Op) -> u64 {
    op.details["steered_us"].as_u64().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(index: usize, process: &str, invoke_us: u64) -> Op {
        Op {
            index,
            process: process.to_string(),
            kind: "request".to_string(),
            invoke_us,
            complete_us: Some(invoke_us + 10),
            outcome: OpOutcome::Ok,
            status: Some(200),
            details: serde_json::json!({}),
        }
    }

    #[test]
    fn annotate_books_each_root_call_to_the_operation_that_made_it() {
        let rt = madsim::runtime::Runtime::new();
        let node = rt.create_node().name("shopper-0").build();
        let nodes = vec![RegisteredNode {
            id: node.id(),
            name: "shopper-0".to_string(),
            role: crate::runner::NodeRole::CLIENT,
        }];
        // Two operations invoked at the same instant (a double click), then a third.
        let mut history = History {
            ops: vec![
                op(0, "shopper-0", 5),
                op(1, "shopper-0", 5),
                op(2, "shopper-0", 40),
            ],
        };
        let log = SteeringLog {
            roots: vec![
                (node.id(), 5, 1_000),
                (node.id(), 5, 3_000),
                (node.id(), 40, 0),
                // A root call no operation made (a client's own background call).
                (node.id(), 70, 2_000),
            ],
            summary: serde_json::json!({}),
        };
        annotate(&mut history, &log, &nodes);
        assert_eq!(steered_us(&history.ops[0]), 1_000);
        assert_eq!(steered_us(&history.ops[1]), 3_000);
        assert_eq!(steered_us(&history.ops[2]), 0);
        assert!(history.ops[2].details.get("steered_us").is_none());
        let summary = history.ops.last().unwrap();
        assert_eq!(
            (summary.process.as_str(), summary.kind.as_str()),
            ("steering", "summary")
        );
        assert_eq!(summary.details["unattributed_us"], 2_000);
        assert_eq!(
            summary.invoke_us, 40,
            "the summary keeps the history in invoke order"
        );
    }

    #[test]
    fn steering_windows_span_each_stall_and_hold() {
        let mut stall = op(0, "steering", 900);
        stall.kind = "stall".to_string();
        stall.details = serde_json::json!({ "start_us": 400, "us": 500 });
        let mut summary = op(1, "steering", 950);
        summary.kind = "summary".to_string();
        let history = History {
            ops: vec![stall, summary, op(2, "shopper-0", 990)],
        };
        assert_eq!(steering_windows(&history), vec![(400, 900)]);
    }

    #[test]
    fn validation_names_the_field() {
        assert!(SteeringPlan::off().validate().is_ok());
        let plan = SteeringPlan {
            txn_point_probability: 1.5,
            ..SteeringPlan::off()
        };
        assert_eq!(
            plan.validate().unwrap_err().field,
            "steering.txn_point_probability"
        );
        let mut plan = SteeringPlan::off();
        plan.change_points[0].release_after_points = 0;
        assert_eq!(
            plan.validate().unwrap_err().to_string(),
            "steering.change_points[0].release_after_points: must be at least 1, got `0`"
        );
        let plan = SteeringPlan {
            change_points: vec![ChangePoint::default(); CHANGE_POINTS_MAX + 1],
            ..SteeringPlan::off()
        };
        assert_eq!(plan.validate().unwrap_err().field, "steering.change_points");
    }
}
