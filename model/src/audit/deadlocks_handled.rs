//! `deadlocks_handled`: no deadlock reaches a client as an error; the app retries the
//! transaction (Laravel's `DB::transaction($fn, 3)`) instead.

use shopsim_sim::check::{describe, Checker, Report};
use shopsim_sim::history::History;

use crate::shop::ShopState;

/// See the module documentation.
pub struct DeadlocksHandled;

impl Checker<ShopState> for DeadlocksHandled {
    fn name(&self) -> &str {
        "deadlocks_handled"
    }

    fn check(&self, history: &History, state: &ShopState) -> Report {
        let leaked = history.ops.iter().find(|op| {
            matches!(
                op.details["response"]["body"]["code"].as_str(),
                Some("40P01" | "1213")
            )
        });
        match leaked {
            Some(op) => Report::invalid(
                "deadlocks_handled",
                format!(
                    "{} answered with deadlock error {}",
                    describe(op),
                    op.details["response"]["body"]["code"]
                ),
            ),
            None => Report::valid(
                "deadlocks_handled",
                format!(
                    "{} deadlocks detected, none reached a client",
                    state.deadlocks
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
    fn canary_deadlock_reaches_client() {
        let h = history(vec![op(
            0,
            "POST /api/v1/cart/{id}/items",
            Some(500),
            serde_json::json!({"code": "1213"}),
            1,
            5,
        )]);
        let r = DeadlocksHandled.check(&h, &ShopState::default());
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.witness.ends_with("answered with deadlock error \"1213\""),
            "{}",
            r.witness
        );
    }
}
