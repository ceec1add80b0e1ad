//! `no_5xx`: no request failed with a server error that a fault does not explain. A 500 is
//! always a violation (the app let a database error escape); a 503 or 504 (database or
//! provider unreachable) is excused when a fault was active, or a buggify point fired, between
//! one second before the request and its answer.

use shopsim_sim::check::{describe, fault_windows, overlaps_fault, Checker, Report};
use shopsim_sim::history::{History, Op};

use crate::shop::ShopState;

/// See the module documentation.
pub struct No5xx;

impl Checker<ShopState> for No5xx {
    fn name(&self) -> &str {
        "no_5xx"
    }

    fn check(&self, history: &History, _state: &ShopState) -> Report {
        let windows = fault_windows(history, true);
        let bad: Vec<&Op> = history
            .ops
            .iter()
            .filter(|op| match op.status {
                Some(500) => true,
                Some(s) if s > 500 => !overlaps_fault(op, &windows, 1_000_000),
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
