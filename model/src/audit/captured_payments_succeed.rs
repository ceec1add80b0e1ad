//! `captured_payments_succeed`: every payment the provider captured ends succeeded in the
//! shop once the faults have healed and the run has settled. The provider's record of its
//! captures is the reference: money taken from a customer whose order the shop still shows as
//! unpaid is a failure whatever the shop answered to the webhooks and the return URL.
//!
//! Verified on the final state (the run waits for the provider's webhook deliveries to be
//! acknowledged, up to `settle_ms_max`). Not verified: how long confirmation took.

use shopsim_sim::check::{describe, Checker, Report};
use shopsim_sim::history::History;

use super::{int, text};
use crate::shop::ShopState;

/// See the module documentation.
pub struct CapturedPaymentsSucceed;

const NAME: &str = "captured_payments_succeed";

impl Checker<ShopState> for CapturedPaymentsSucceed {
    fn name(&self) -> &str {
        NAME
    }

    fn check(&self, history: &History, state: &ShopState) -> Report {
        if state.captures.is_empty() {
            return Report::unknown(NAME, "nothing to judge: the provider captured nothing");
        }
        let payments = state.rows("payments");
        for capture in &state.captures {
            let status = payments
                .iter()
                .find(|p| int(p, "id") == capture.payment_id)
                .map_or("missing", |p| text(p, "status"));
            if status == "succeeded" {
                continue;
            }
            // The confirmations the shop answered, and how: the operations that let it go.
            let confirmations: Vec<String> = history
                .ops
                .iter()
                .filter(|op| {
                    let path = op.details["path"].as_str().unwrap_or("");
                    op.details["body"]["payment_id"].as_i64() == Some(capture.payment_id)
                        && path == "/api/v1/webhooks/payments"
                        || path == format!("/api/v1/payments/{}/return", capture.payment_id)
                })
                .take(5)
                .map(|op| format!("{} {}", describe(op), op.details["response"]["body"]))
                .collect();
            return Report::invalid(
                NAME,
                format!(
                    "payment {} (tenant {}) was captured by the provider at {:.1} ms but is {status} in the shop after the run settled ({} webhook deliveries unacknowledged); its confirmations: {}",
                    capture.payment_id,
                    capture.tenant,
                    capture.at_us as f64 / 1000.0,
                    state.webhooks_unacknowledged,
                    if confirmations.is_empty() {
                        "none arrived".to_string()
                    } else {
                        confirmations.join("; ")
                    }
                ),
            );
        }
        Report::valid(
            NAME,
            format!(
                "{} captured payments, all succeeded in the shop",
                state.captures.len()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::*;
    use crate::provider::Capture;
    use shopsim_sim::check::Verdict;

    /// The shop answered the webhook 200 ("already confirmed": an idempotency key claimed by
    /// an attempt that crashed) and the payment stayed pending.
    #[test]
    fn canary_captured_but_pending() {
        let mut s = state(&[(
            "payments",
            "id,tenant_id,order_id,amount,status; 3,2,7,100,'pending'",
        )]);
        s.captures.push(Capture {
            payment_id: 3,
            tenant: 2,
            amount: 100,
            at_us: 5_000,
        });
        let mut hook = op(
            0,
            "POST /api/v1/webhooks/payments",
            Some(200),
            serde_json::json!({"status": "succeeded", "already": true}),
            6,
            7,
        );
        hook.details["path"] = "/api/v1/webhooks/payments".into();
        hook.details["body"] = serde_json::json!({"payment_id": 3});
        let r = CapturedPaymentsSucceed.check(&history(vec![hook]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.witness.starts_with("payment 3 (tenant 2) was captured by the provider at 5.0 ms but is pending in the shop"),
            "{}",
            r.witness
        );
        assert!(
            r.witness
                .contains("#0 p0 POST /api/v1/webhooks/payments status 200"),
            "{}",
            r.witness
        );
        s.tables.get_mut("payments").unwrap().1[0][4] = "succeeded".into();
        assert_eq!(
            CapturedPaymentsSucceed.check(&history(vec![]), &s).verdict,
            Verdict::Valid
        );
        assert_eq!(
            CapturedPaymentsSucceed
                .check(&history(vec![]), &ShopState::default())
                .verdict,
            Verdict::Unknown
        );
    }
}
