//! Checks: pure functions of the history and the final state that judge a run.
//!
//! A [`Checker`] returns a [`Report`] with a three-valued [`Verdict`] (Elle's valid / unknown /
//! invalid) and, when invalid, a minimal witness in words: the few operations that prove the
//! violation. Generic checkers live here (server errors, latency percentiles in virtual time,
//! liveness, progress, no remote call from inside a database transaction); the shop's domain
//! checkers live in `model::audit`.
//!
//! A check with nothing to judge says so ([`Verdict::Unknown`]) and never counts as a pass;
//! whether a run did enough work to count at all is the [`Progress`] check's judgement.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::history::{History, Op, OpOutcome};

/// The name of the [`Liveness`] check (its failures are liveness failures, exit code 3).
pub const LIVENESS_CHECK: &str = "liveness";

/// The name of the [`Progress`] check (its failures are no-progress failures, exit code 6).
pub const PROGRESS_CHECK: &str = "progress";

/// The judgement of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Verdict {
    /// The property holds.
    Valid,
    /// Cannot tell (for example, every relevant operation had an unknown outcome).
    Unknown,
    /// The property is violated; the witness says how.
    Invalid,
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The check's name (`no_oversell`).
    pub check: String,
    /// The verdict.
    pub verdict: Verdict,
    /// For an invalid verdict, a one-sentence witness; else a short summary.
    pub witness: String,
}

impl Report {
    /// A valid report with a summary.
    pub fn valid(check: &str, summary: impl Into<String>) -> Report {
        Report {
            check: check.to_string(),
            verdict: Verdict::Valid,
            witness: summary.into(),
        }
    }

    /// An invalid report with a witness.
    pub fn invalid(check: &str, witness: impl Into<String>) -> Report {
        Report {
            check: check.to_string(),
            verdict: Verdict::Invalid,
            witness: witness.into(),
        }
    }

    /// An unknown report with the reason.
    pub fn unknown(check: &str, reason: impl Into<String>) -> Report {
        Report {
            check: check.to_string(),
            verdict: Verdict::Unknown,
            witness: reason.into(),
        }
    }
}

/// A check: a pure function of the history and the final state `S`.
pub trait Checker<S> {
    /// The check's name.
    fn name(&self) -> &str;
    /// Judges a run.
    fn check(&self, history: &History, state: &S) -> Report;
}

/// Describes an operation in a witness: `shopper-3 POST /x (status 500) at 12.5 ms`.
pub fn describe(op: &Op) -> String {
    let status = op
        .status
        .map(|s| format!(" status {s}"))
        .unwrap_or_default();
    let at = op.invoke_us as f64 / 1000.0;
    format!(
        "#{} {} {}{status} at {at:.1} ms",
        op.index, op.process, op.kind
    )
}

/// No server errors: no operation completed with a 5xx status.
#[derive(Debug, Clone, Default)]
pub struct ServerErrors;

impl<S> Checker<S> for ServerErrors {
    fn name(&self) -> &str {
        "no_5xx"
    }

    fn check(&self, history: &History, _state: &S) -> Report {
        let errors: Vec<&Op> = history
            .ops
            .iter()
            .filter(|op| op.status.is_some_and(|s| s >= 500))
            .collect();
        match errors.first() {
            None => Report::valid("no_5xx", "no 5xx responses"),
            Some(first) => Report::invalid(
                "no_5xx",
                format!(
                    "{} responses were 5xx; the first: {} ({})",
                    errors.len(),
                    describe(first),
                    first.details.get("response").unwrap_or(&first.details)
                ),
            ),
        }
    }
}

/// Fault windows (start, end) in µs, from the `nemesis` events of a history: each fault from
/// its start event to the end event of its kind (a restart ends a crash, a heal a partition);
/// with `instants`, every instant event (a buggify point) is a window of its own, as long as
/// the delay it recorded (`delay_us`); a fault never healed lasts to the end.
pub fn fault_windows(history: &History, instants: bool) -> Vec<(u64, u64)> {
    let mut windows = Vec::new();
    let mut open: Vec<(&'static str, u64)> = Vec::new();
    for op in history.ops.iter().filter(|o| o.process == "nemesis") {
        let t = op.invoke_us;
        let kind = op.kind.as_str();
        if let Some(&(start, _)) = FAULT_PAIRS.iter().find(|(start, _)| *start == kind) {
            open.push((start, t));
        } else if let Some(&(start, _)) = FAULT_PAIRS.iter().find(|(_, end)| *end == kind) {
            // The latest open fault of the same kind: faults of several kinds overlap.
            if let Some(i) = open.iter().rposition(|&(k, _)| k == start) {
                let (_, opened) = open.remove(i);
                windows.push((opened, t));
            }
        } else if instants {
            // A buggify delay lasts as long as it recorded.
            windows.push((t, t.saturating_add(delay_us(op))));
        }
    }
    windows.extend(open.into_iter().map(|(_, start)| (start, u64::MAX)));
    windows
}

/// The length of a buggify delay event, µs (0 for an instant that does not delay).
pub fn delay_us(op: &Op) -> u64 {
    op.details
        .get("delay_us")
        .and_then(|d| d.as_u64())
        .unwrap_or(0)
}

/// The buggify delays of a history that slow the whole system (a slow statement, a database
/// reply held back: the transaction holds its locks and connection meanwhile), as windows
/// (start, end), µs. Delays that slow one node's requests only are left out.
pub fn system_delay_windows(history: &History) -> Vec<(u64, u64)> {
    history
        .ops
        .iter()
        .filter(|op| {
            op.process == "nemesis" && delay_us(op) > 0 && op.details.get("node").is_none()
        })
        .map(|op| (op.invoke_us, op.invoke_us.saturating_add(delay_us(op))))
        .collect()
}

/// The buggify delays of a history that slow one node's requests only: windows (start,
/// end), µs, by the node they slow (the `node` of the event).
pub fn node_delay_windows(history: &History) -> BTreeMap<&str, Windows> {
    let mut by_node: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for op in history.ops.iter().filter(|o| o.process == "nemesis") {
        if let Some(node) = op.details.get("node").and_then(|n| n.as_str()) {
            let end = op.invoke_us.saturating_add(delay_us(op));
            by_node.entry(node).or_default().push((op.invoke_us, end));
        }
    }
    by_node
        .into_iter()
        .map(|(node, windows)| (node, Windows::new(windows)))
        .collect()
}

/// The nemesis event that starts each kind of fault, and the one that ends it.
const FAULT_PAIRS: [(&str, &str); 6] = [
    ("crash", "restart"),
    ("pause", "resume"),
    ("clog", "unclog"),
    ("partition", "heal"),
    ("loss", "loss_end"),
    ("latency", "latency_end"),
];

/// Disjoint windows, sorted, for overlap queries in logarithmic time.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    /// (start, end) in µs, sorted by start, pairwise disjoint.
    spans: Vec<(u64, u64)>,
}

impl Windows {
    /// The union of `windows`.
    pub fn new(mut windows: Vec<(u64, u64)>) -> Windows {
        windows.sort_unstable();
        let mut spans: Vec<(u64, u64)> = Vec::with_capacity(windows.len());
        for (a, b) in windows {
            assert!(a <= b, "a window ends before it starts: {a}..{b}");
            match spans.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => spans.push((a, b)),
            }
        }
        Windows { spans }
    }

    /// The index of the first span that ends at or after `t`.
    fn first_ending_after(&self, t: u64) -> usize {
        self.spans.partition_point(|&(_, b)| b < t)
    }

    /// Whether `[start, end]` meets a window.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        let i = self.first_ending_after(start);
        self.spans.get(i).is_some_and(|&(a, _)| a <= end)
    }

    /// Each window lasts until the last operation it caught has finished: requests caught by a
    /// fault hold locks, connections and workers past its end, and every request queued behind
    /// them is slowed by the fault too. An operation is caught if it overlaps the window from
    /// `slack_us` before it was invoked; one that never finished holds the window open to its
    /// own end only if it has one.
    pub fn until_caught_finish(&self, history: &History, slack_us: u64) -> Windows {
        let mut extended = self.spans.clone();
        for op in history.ops.iter().filter(|o| is_client(o)) {
            let start = op.invoke_us.saturating_sub(slack_us);
            let Some(end) = op.complete_us else { continue };
            let mut i = self.first_ending_after(start);
            while let Some(&(a, _)) = self.spans.get(i) {
                if a > end {
                    break;
                }
                extended[i].1 = extended[i].1.max(end);
                i += 1;
            }
        }
        let windows = Windows::new(extended);
        assert!(windows.spans.len() <= self.spans.len());
        windows
    }
}

/// Whether `op` is a client's request, not an event of the nemesis or the scheduler.
fn is_client(op: &Op) -> bool {
    op.process != "nemesis" && op.process != "steering"
}

/// Whether `op` overlaps a fault window, counting from `slack_us` before it was invoked (a
/// fault shortly before a request still slows or breaks it).
pub fn overlaps_fault(op: &Op, windows: &[(u64, u64)], slack_us: u64) -> bool {
    let start = op.invoke_us.saturating_sub(slack_us);
    let end = op.complete_us.unwrap_or(u64::MAX);
    windows.iter().any(|&(a, b)| a <= end && b >= start)
}

/// A latency percentile of one class of operations stays under a threshold (virtual time).
/// Operations that overlap a fault window are left out: the SLA is a promise about the system
/// under load, not under a partition. With fewer than [`LATENCY_SAMPLES_MIN`] operations left
/// the verdict is unknown: the 95th percentile of eight operations is their maximum, one slow
/// request, not a percentile. Schedule steering is treated like a fault: operations
/// that overlap a steering stall or hold ([`crate::steering::steering_windows`], from one
/// second before they were invoked, as for faults) are left out, because a held transaction
/// slows every request queued behind its locks, connections and workers, not only its own;
/// and the short jitter an operation's own lane absorbed (`steered_us` in its details) is
/// subtracted from its latency. So steering moves interleavings without moving the verdict.
/// A fault's or a hold's window lasts until the requests it caught have finished
/// ([`Windows::until_caught_finish`]): the backlog they leave is the fault's, not the system's.
#[derive(Debug, Clone)]
pub struct LatencySla {
    /// The check's name.
    pub name: String,
    /// Operation kinds in the class.
    pub kinds: Vec<String>,
    /// The percentile, in 0..=100.
    pub percentile: f64,
    /// The threshold in milliseconds.
    pub threshold_ms: f64,
}

/// How long before its invocation a fault still slows or breaks a request, µs.
pub const FAULT_SLACK_US: u64 = 1_000_000;

/// The least number of operations a latency percentile is judged on.
pub const LATENCY_SAMPLES_MIN: usize = 20;

/// The `p`-th percentile (nearest rank) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    assert!((0.0..=100.0).contains(&p));
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl LatencySla {
    /// Completed latencies of the class outside fault and steering windows (each lasting until
    /// the requests it caught finished), less the steering jitter each absorbed, sorted, in
    /// microseconds.
    pub fn latencies_us(&self, history: &History) -> Vec<u64> {
        let mut windows = fault_windows(history, false);
        windows.extend(crate::steering::steering_windows(history));
        let windows = Windows::new(windows).until_caught_finish(history, FAULT_SLACK_US);
        // A slow statement or a held database reply slows what is in flight while it lasts and
        // what queues behind it (no slack: it starts when it is drawn, not before a request).
        let system_delays =
            Windows::new(system_delay_windows(history)).until_caught_finish(history, 0);
        // A reply held back from one node slows that node's requests in flight while it lasts,
        // nobody else's: no slack, no backlog.
        let delays = node_delay_windows(history);
        let mut l: Vec<u64> = history
            .ops
            .iter()
            .filter(|op| self.kinds.contains(&op.kind))
            .filter(|op| {
                let end = op.complete_us.unwrap_or(u64::MAX);
                !windows.overlaps(op.invoke_us.saturating_sub(FAULT_SLACK_US), end)
                    && !system_delays.overlaps(op.invoke_us, end)
                    && !delays
                        .get(op.process.as_str())
                        .is_some_and(|d| d.overlaps(op.invoke_us, end))
            })
            .filter_map(|op| {
                let steered = crate::steering::steered_us(op);
                op.latency_us().map(|l| l.saturating_sub(steered))
            })
            .collect();
        l.sort_unstable();
        l
    }
}

impl<S> Checker<S> for LatencySla {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, history: &History, _state: &S) -> Report {
        let latencies = self.latencies_us(history);
        if latencies.len() < LATENCY_SAMPLES_MIN {
            return Report::unknown(
                &self.name,
                format!(
                    "{} completed operations of this class outside fault windows (a percentile needs {LATENCY_SAMPLES_MIN})",
                    latencies.len()
                ),
            );
        }
        let Some(p) = percentile(&latencies, self.percentile) else {
            unreachable!("at least {LATENCY_SAMPLES_MIN} latencies");
        };
        let p_ms = p as f64 / 1000.0;
        let summary = format!(
            "p{} = {p_ms:.1} ms over {} operations (threshold {} ms)",
            self.percentile,
            latencies.len(),
            self.threshold_ms
        );
        if p_ms < self.threshold_ms {
            Report::valid(&self.name, summary)
        } else {
            Report::invalid(&self.name, summary)
        }
    }
}

/// Liveness: every operation invoked completes, and none invoked after the faults stopped
/// ends unknown (with the network healed, every request must get an answer).
#[derive(Debug, Clone)]
pub struct Liveness {
    /// When the faults stopped, microseconds of virtual time.
    pub faults_end_us: u64,
}

impl<S> Checker<S> for Liveness {
    fn name(&self) -> &str {
        LIVENESS_CHECK
    }

    fn check(&self, history: &History, _state: &S) -> Report {
        let stuck = history.ops.iter().find(|op| {
            op.complete_us.is_none()
                || (op.invoke_us >= self.faults_end_us && op.outcome == OpOutcome::Unknown)
        });
        match stuck {
            None => Report::valid("liveness", "every operation completed"),
            Some(op) if op.complete_us.is_none() => {
                Report::invalid("liveness", format!("{} never completed", describe(op)))
            }
            Some(op) => Report::invalid(
                "liveness",
                format!(
                    "{} got no answer although faults had stopped at {:.1} ms",
                    describe(op),
                    self.faults_end_us as f64 / 1000.0
                ),
            ),
        }
    }
}

/// One kind of progress a run must make, and how much at least.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressGoal {
    /// What is counted (`checkouts completed`).
    pub name: String,
    /// The least count that makes the run count.
    pub min: u64,
}

/// What a run achieved, by goal name.
pub type ProgressMeasure<S> = Box<dyn Fn(&History, &S) -> BTreeMap<String, u64> + Send + Sync>;

/// Progress: the run made at least the progress its system states (checkouts completed,
/// payments confirmed, reads answered...). A run in which nothing succeeds (every request
/// timed out, say) is not a pass however valid its other checks are: it judged nothing.
pub struct Progress<S> {
    /// The goals, in the order the witness names them.
    pub goals: Vec<ProgressGoal>,
    /// Counts what the run achieved, from its history and final state.
    pub measure: ProgressMeasure<S>,
}

impl<S> Checker<S> for Progress<S> {
    fn name(&self) -> &str {
        PROGRESS_CHECK
    }

    fn check(&self, history: &History, state: &S) -> Report {
        if self.goals.is_empty() {
            return Report::unknown(PROGRESS_CHECK, "the system states no progress goal");
        }
        let achieved = (self.measure)(history, state);
        let mut short = Vec::new();
        let mut made = Vec::new();
        for goal in &self.goals {
            let n = achieved.get(&goal.name).copied().unwrap_or(0);
            let text = format!("{} {n} (at least {})", goal.name, goal.min);
            if n < goal.min {
                short.push(text);
            } else {
                made.push(text);
            }
        }
        if short.is_empty() {
            Report::valid(PROGRESS_CHECK, made.join(", "))
        } else {
            Report::invalid(
                PROGRESS_CHECK,
                format!(
                    "the run made too little progress: {}{}",
                    short.join(", "),
                    if made.is_empty() {
                        String::new()
                    } else {
                        format!("; made: {}", made.join(", "))
                    }
                ),
            )
        }
    }
}

/// No remote call leaves a node while that node holds an open database transaction: the call's
/// round trip would extend the transaction's row locks and its pooled connection (see
/// [`crate::open_transactions`], which records every such call). Unknown when the run opened
/// no transaction or made no call.
#[derive(Debug, Clone, Default)]
pub struct NoRpcInTransaction;

impl<S> Checker<S> for NoRpcInTransaction {
    fn name(&self) -> &str {
        "no_rpc_in_transaction"
    }

    fn check(&self, history: &History, _state: &S) -> Report {
        let name = "no_rpc_in_transaction";
        let findings: Vec<&Op> = history
            .of_kind(crate::open_transactions::RPC_IN_TRANSACTION)
            .collect();
        if let Some(first) = findings.first() {
            let since = first.details["transaction_since_us"].as_u64().unwrap_or(0);
            return Report::invalid(
                name,
                format!(
                    "{} calls left a node holding an open database transaction; the first: {} called {} at {:.1} ms inside a transaction open since {:.1} ms (first statement: {})",
                    findings.len(),
                    first.process,
                    first.details["to"].as_str().unwrap_or("?"),
                    first.invoke_us as f64 / 1000.0,
                    since as f64 / 1000.0,
                    first.details["first_statement"].as_str().unwrap_or("?"),
                ),
            );
        }
        let summary = history
            .of_kind(crate::open_transactions::AUDIT_SUMMARY)
            .last();
        let (calls, transactions) = summary.map_or((0, 0), |op| {
            (
                op.details["calls"].as_u64().unwrap_or(0),
                op.details["transactions"].as_u64().unwrap_or(0),
            )
        });
        if calls == 0 || transactions == 0 {
            return Report::unknown(
                name,
                format!("nothing to judge: {calls} calls, {transactions} transactions"),
            );
        }
        Report::valid(
            name,
            format!(
                "{calls} calls, none while their node held one of its {transactions} transactions"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        index: usize,
        kind: &str,
        invoke_us: u64,
        complete_us: Option<u64>,
        status: Option<u16>,
    ) -> Op {
        Op {
            index,
            process: format!("p{index}"),
            kind: kind.to_string(),
            invoke_us,
            complete_us,
            outcome: if complete_us.is_some() {
                OpOutcome::Ok
            } else {
                OpOutcome::Unknown
            },
            status,
            details: serde_json::json!({}),
        }
    }

    #[test]
    fn canary_server_errors() {
        let h = History {
            ops: vec![
                op(0, "GET /x", 0, Some(10), Some(200)),
                op(1, "GET /x", 5, Some(9), Some(503)),
            ],
        };
        let r = Checker::<()>::check(&ServerErrors, &h, &());
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.witness.contains("#1 p1 GET /x status 503"),
            "{}",
            r.witness
        );
    }

    #[test]
    fn canary_latency_sla() {
        let ops = (0..100)
            .map(|i| {
                op(
                    i,
                    "read",
                    0,
                    Some(if i < 94 { 1_000 } else { 900_000 }),
                    Some(200),
                )
            })
            .collect();
        let h = History { ops };
        let sla = LatencySla {
            name: "reads_p95".into(),
            kinds: vec!["read".into()],
            percentile: 95.0,
            threshold_ms: 500.0,
        };
        let r = Checker::<()>::check(&sla, &h, &());
        assert_eq!(r.verdict, Verdict::Invalid, "{}", r.witness);
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
        let few = History {
            ops: h.ops[90..].to_vec(),
        };
        assert_eq!(
            Checker::<()>::check(&sla, &few, &()).verdict,
            Verdict::Unknown
        );
    }

    #[test]
    fn latency_sla_leaves_out_steering_stalls_and_subtracts_jitter() {
        // 20 reads of 100 ms; one of 900 ms that overlaps a steering hold, one of 800 ms whose
        // own lane absorbed 750 ms of jitter. Counted as they were, p95 would be 800 ms.
        let mut ops: Vec<Op> = (0..20)
            .map(|i| op(i, "read", 10_000_000, Some(10_100_000), Some(200)))
            .collect();
        ops.push(op(20, "read", 1_000_000, Some(1_900_000), Some(200)));
        let mut jittered = op(21, "read", 5_000_000, Some(5_800_000), Some(200));
        jittered.details = serde_json::json!({ "steered_us": 750_000 });
        ops.push(jittered);
        let mut hold = op(22, "hold", 1_500_000, Some(1_500_000), None);
        hold.process = "steering".into();
        hold.details = serde_json::json!({ "start_us": 1_200_000, "us": 300_000 });
        ops.push(hold);
        let h = History { ops };
        let sla = reads_sla();
        assert_eq!(sla.latencies_us(&h).len(), 21, "the held read is left out");
        assert_eq!(sla.latencies_us(&h).last(), Some(&100_000));
        let r = Checker::<()>::check(&sla, &h, &());
        assert_eq!(r.verdict, Verdict::Valid, "{}", r.witness);
        // Without the steering record the same history fails: the exclusion is what passes it.
        let mut bare = h.clone();
        bare.ops.retain(|o| o.process != "steering");
        bare.ops[21].details = serde_json::json!({});
        let r = Checker::<()>::check(&sla, &bare, &());
        assert_eq!(r.verdict, Verdict::Invalid, "{}", r.witness);
    }

    /// p95 of "read" under 500 ms.
    fn reads_sla() -> LatencySla {
        LatencySla {
            name: "reads_p95".into(),
            kinds: vec!["read".into()],
            percentile: 95.0,
            threshold_ms: 500.0,
        }
    }

    /// 20 reads of 100 ms each, from 20 s: a percentile's worth of fast samples.
    fn fast_reads() -> Vec<Op> {
        (0..20)
            .map(|i| op(i, "read", 20_000_000, Some(20_100_000), Some(200)))
            .collect()
    }

    fn nemesis(index: usize, kind: &str, at_us: u64, details: serde_json::Value) -> Op {
        let mut e = op(index, kind, at_us, Some(at_us), None);
        e.process = "nemesis".into();
        e.details = details;
        e
    }

    #[test]
    fn fault_windows_pair_each_end_with_a_start_of_its_kind() {
        let h = History {
            ops: vec![
                nemesis(0, "crash", 100, serde_json::json!({})),
                nemesis(1, "latency", 200, serde_json::json!({})),
                nemesis(2, "restart", 300, serde_json::json!({})),
                nemesis(3, "buggify", 350, serde_json::json!({ "delay_us": 50 })),
                nemesis(4, "latency_end", 500, serde_json::json!({})),
                nemesis(5, "partition", 900, serde_json::json!({})),
            ],
        };
        let mut w = fault_windows(&h, false);
        w.sort_unstable();
        assert_eq!(w, vec![(100, 300), (200, 500), (900, u64::MAX)]);
        let mut w = fault_windows(&h, true);
        w.sort_unstable();
        assert_eq!(w, vec![(100, 300), (200, 500), (350, 400), (900, u64::MAX)]);
    }

    #[test]
    fn windows_merge_and_answer_overlaps() {
        let w = Windows::new(vec![(50, 60), (10, 20), (15, 30), (100, 100)]);
        assert_eq!(w.spans, vec![(10, 30), (50, 60), (100, 100)]);
        assert!(w.overlaps(0, 10) && w.overlaps(30, 40) && w.overlaps(100, 200));
        assert!(!w.overlaps(31, 49) && !w.overlaps(61, 99) && !w.overlaps(101, 500));
    }

    /// A latency fault ends, but a request it caught still holds its locks; the requests queued
    /// behind it are slow too, long after the fault's slack. They are the fault's backlog, and
    /// without the extension the SLA fails on them.
    #[test]
    fn latency_sla_leaves_out_the_backlog_a_fault_leaves() {
        let mut ops = fast_reads();
        ops.push(nemesis(20, "latency", 1_000_000, serde_json::json!({})));
        ops.push(nemesis(21, "latency_end", 1_500_000, serde_json::json!({})));
        // Caught by the fault, it finishes at 6 s; two reads queued behind it from 4 s.
        ops.push(op(22, "write", 1_200_000, Some(6_000_000), Some(200)));
        ops.push(op(23, "read", 4_000_000, Some(5_900_000), Some(200)));
        ops.push(op(24, "read", 4_100_000, Some(5_950_000), Some(200)));
        let h = History { ops };
        let sla = reads_sla();
        assert_eq!(sla.latencies_us(&h).len(), 20, "the backlog is left out");
        let r = Checker::<()>::check(&sla, &h, &());
        assert_eq!(r.verdict, Verdict::Valid, "{}", r.witness);
        // Canary: without the caught write, the slow reads are the system's own latency.
        let mut bare = h.clone();
        bare.ops.retain(|o| o.kind != "write");
        let r = Checker::<()>::check(&sla, &bare, &());
        assert_eq!(r.verdict, Verdict::Invalid, "{}", r.witness);
    }

    /// A reply held back from one client slows that client's request only: it is left out, and
    /// another client's slow request at the same time still counts.
    #[test]
    fn latency_sla_charges_a_held_reply_to_the_node_it_was_held_from() {
        let mut ops = fast_reads();
        ops.push(op(20, "read", 1_000_000, Some(2_500_000), Some(200)));
        ops.push(nemesis(
            21,
            "buggify",
            1_100_000,
            serde_json::json!({ "point": "rpc.delay_reply", "delay_us": 1_400_000, "node": "p20" }),
        ));
        let h = History { ops: ops.clone() };
        let sla = reads_sla();
        assert_eq!(sla.latencies_us(&h).len(), 20);
        assert_eq!(Checker::<()>::check(&sla, &h, &()).verdict, Verdict::Valid);
        // Canary: the same delay held from another node does not excuse p20's slow read.
        ops[21].details["node"] = "p7".into();
        let h = History { ops };
        let counted = sla.latencies_us(&h);
        assert_eq!(counted.len(), 21);
        assert_eq!(counted.last(), Some(&1_500_000));
    }

    #[test]
    fn canary_liveness() {
        let h = History {
            ops: vec![op(0, "w", 0, Some(5), None), op(1, "w", 2_000, None, None)],
        };
        let r = Checker::<()>::check(
            &Liveness {
                faults_end_us: 1_000,
            },
            &h,
            &(),
        );
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(r.witness.contains("never completed"), "{}", r.witness);
    }

    #[test]
    fn canary_progress() {
        let progress = Progress::<()> {
            goals: vec![
                ProgressGoal {
                    name: "requests answered".into(),
                    min: 2,
                },
                ProgressGoal {
                    name: "writes".into(),
                    min: 0,
                },
            ],
            measure: Box::new(|h: &History, _: &()| {
                let answered = h.ops.iter().filter(|o| o.status.is_some()).count() as u64;
                BTreeMap::from([("requests answered".to_string(), answered)])
            }),
        };
        let h = History {
            ops: vec![op(0, "w", 0, None, None), op(1, "w", 0, Some(5), Some(200))],
        };
        let r = progress.check(&h, &());
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(
            r.witness,
            "the run made too little progress: requests answered 1 (at least 2); made: writes 0 (at least 0)"
        );
        let none = Progress::<()> {
            goals: Vec::new(),
            measure: Box::new(|_: &History, _: &()| BTreeMap::new()),
        };
        assert_eq!(none.check(&h, &()).verdict, Verdict::Unknown);
    }

    #[test]
    fn canary_rpc_in_transaction() {
        let mut call = op(
            0,
            crate::open_transactions::RPC_IN_TRANSACTION,
            12_000,
            Some(12_000),
            None,
        );
        call.process = "app-1".into();
        call.details = serde_json::json!({"to": "10.0.0.12:8000", "transaction_since_us": 11_500, "first_statement": "BEGIN"});
        let mut summary = op(
            1,
            crate::open_transactions::AUDIT_SUMMARY,
            20_000,
            Some(20_000),
            None,
        );
        summary.details = serde_json::json!({"calls": 3, "transactions": 2});
        let r = Checker::<()>::check(
            &NoRpcInTransaction,
            &History {
                ops: vec![call, summary.clone()],
            },
            &(),
        );
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.witness, "1 calls left a node holding an open database transaction; the first: app-1 called 10.0.0.12:8000 at 12.0 ms inside a transaction open since 11.5 ms (first statement: BEGIN)");
        let clean = History { ops: vec![summary] };
        assert_eq!(
            Checker::<()>::check(&NoRpcInTransaction, &clean, &()).verdict,
            Verdict::Valid
        );
        assert_eq!(
            Checker::<()>::check(&NoRpcInTransaction, &History::default(), &()).verdict,
            Verdict::Unknown
        );
    }
}
