//! `no_5xx`: no request failed with a server error that a fault does not explain. A 500 is
//! always a violation (the app let a database error escape); a 503 or 504 (database or
//! provider unreachable) is excused when a fault was active, or a buggify point fired, between
//! one second before the request and its answer.

use shopsim_sim::check::{describe, Checker, Report};
use shopsim_sim::history::{History, Op};

use crate::shop::ShopState;

/// See the module documentation.
pub struct No5xx;

/// Fault windows (start, end) in µs from the nemesis events of a history.
fn fault_windows(history: &History) -> Vec<(u64, u64)> {
    let mut windows = Vec::new();
    let mut open: Vec<(String, u64)> = Vec::new();
    for op in history.ops.iter().filter(|o| o.process == "nemesis") {
        let t = op.invoke_us;
        match op.kind.as_str() {
            "crash" | "pause" | "clog" | "partition" | "loss" | "latency" => {
                open.push((op.kind.clone(), t))
            }
            "restart" | "resume" | "unclog" | "heal" | "loss_end" | "latency_end" => {
                if let Some((_, start)) = open.pop() {
                    windows.push((start, t));
                }
            }
            _ => windows.push((t, t)),
        }
    }
    windows.extend(open.into_iter().map(|(_, start)| (start, u64::MAX)));
    windows
}

fn excused(op: &Op, windows: &[(u64, u64)]) -> bool {
    let start = op.invoke_us.saturating_sub(1_000_000);
    let end = op.complete_us.unwrap_or(u64::MAX);
    windows.iter().any(|&(a, b)| a <= end && b >= start)
}

impl Checker<ShopState> for No5xx {
    fn name(&self) -> &str {
        "no_5xx"
    }

    fn check(&self, history: &History, _state: &ShopState) -> Report {
        let windows = fault_windows(history);
        let bad: Vec<&Op> = history
            .ops
            .iter()
            .filter(|op| match op.status {
                Some(500) => true,
                Some(s) if s > 500 => !excused(op, &windows),
                _ => false,
            })
            .collect();
        match bad.first() {
            None => Report::valid("no_5xx", "no unexplained server errors"),
            Some(op) => Report::invalid(
                "no_5xx",
                format!(
                    "{} unexplained 5xx; the first: {}: {}",
                    bad.len(),
                    describe(op),
                    op.details["response"]["body"]
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::*;
    use shopsim_sim::check::Verdict;

    #[test]
    fn canary_500_and_unexplained_503() {
        let h = history(vec![op(
            0,
            "POST /api/v1/cart",
            Some(500),
            serde_json::json!({"code": "25P02"}),
            1,
            9,
        )]);
        assert_eq!(
            No5xx.check(&h, &ShopState::default()).verdict,
            Verdict::Invalid
        );
        let h = history(vec![op(
            0,
            "POST /api/v1/cart",
            Some(503),
            serde_json::json!({}),
            10_000,
            10_009,
        )]);
        assert_eq!(
            No5xx.check(&h, &ShopState::default()).verdict,
            Verdict::Invalid
        );
        let mut crash = op(1, "crash", None, serde_json::json!({}), 9_500, 9_500);
        crash.process = "nemesis".into();
        let h = history(vec![
            crash,
            op(
                0,
                "POST /api/v1/cart",
                Some(503),
                serde_json::json!({}),
                10_000,
                10_009,
            ),
        ]);
        assert_eq!(
            No5xx.check(&h, &ShopState::default()).verdict,
            Verdict::Valid
        );
    }
}
