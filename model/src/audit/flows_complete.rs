//! `flows_complete`: the share of flows that complete is at least what the scenario states.
//! A checkout flow (a shopper's cart) completes when it ends with an order or a domain
//! rejection (out of stock, reservations expired); a paying flow (a payer's order) completes
//! when its payment request was answered 201 and the payment ended succeeded in the database,
//! or the provider never captured it (the customer left the provider's page without paying).
//! Only flows whose requests all ran clear of faults (from one second before each request to
//! its answer) are counted: a fault may end any flow, the share says what a healthy shop does.
//!
//! Unknown when the scenario states no share, or no flow ran clear of faults.

use std::collections::BTreeMap;

use shopsim_sim::check::{describe, fault_windows, overlaps_fault, Checker, Report};
use shopsim_sim::history::{History, Op};

use super::{int, path_object, text};
use crate::config::ShopConfig;
use crate::shop::ShopState;

/// See the module documentation.
pub struct FlowsComplete {
    /// Least share of clear checkout flows that complete.
    pub checkout_min: f64,
    /// Least share of clear paying flows that complete.
    pub payment_min: f64,
}

const NAME: &str = "flows_complete";

impl FlowsComplete {
    /// The check with the shares `config` states.
    pub fn new(config: &ShopConfig) -> FlowsComplete {
        FlowsComplete {
            checkout_min: config.checkout_completion_min,
            payment_min: config.payment_completion_min,
        }
    }
}

/// One client's flow: its operations in order.
struct Flow<'h> {
    ops: Vec<&'h Op>,
}

impl Flow<'_> {
    /// The checkout ended with an order or a domain rejection.
    fn checkout_completed(&self) -> bool {
        // An order, or the convert refused a cart whose items were all refused or expired.
        self.ops.iter().any(|op| {
            op.kind == "POST /api/v1/cart/{id}/convert"
                && (op.details["response"]["body"]["order_id"]
                    .as_i64()
                    .is_some()
                    || op.status == Some(422))
        })
    }

    fn order(&self) -> Option<i64> {
        self.ops
            .iter()
            .find_map(|op| op.details["response"]["body"]["order_id"].as_i64())
    }

    fn last(&self) -> String {
        self.ops.last().map_or("-".to_string(), |op| {
            format!("{} {}", describe(op), op.details["response"]["body"])
        })
    }
}

fn share_report(
    what: &str,
    completed: usize,
    clear: usize,
    min: f64,
    incomplete: &[String],
) -> Option<String> {
    let share = completed as f64 / clear as f64;
    (share < min).then(|| {
        format!(
            "{completed} of {clear} {what} clear of faults completed ({:.0}%, at least {:.0}% required); the first incomplete ones ended with: {}",
            100.0 * share,
            100.0 * min,
            incomplete[..incomplete.len().min(3)].join("; ")
        )
    })
}

impl Checker<ShopState> for FlowsComplete {
    fn name(&self) -> &str {
        NAME
    }

    fn check(&self, history: &History, state: &ShopState) -> Report {
        if self.checkout_min == 0.0 && self.payment_min == 0.0 {
            return Report::unknown(NAME, "the scenario states no completion share");
        }
        let windows = fault_windows(history, true);
        let mut flows: BTreeMap<&str, Flow> = BTreeMap::new();
        for op in &history.ops {
            if op.process.starts_with("shopper-") || op.process.starts_with("payer-") {
                flows
                    .entry(op.process.as_str())
                    .or_insert(Flow { ops: Vec::new() })
                    .ops
                    .push(op);
            }
        }
        let clear: Vec<(&str, &Flow)> = flows
            .iter()
            .filter(|(_, f)| {
                f.ops
                    .iter()
                    .all(|op| !overlaps_fault(op, &windows, 1_000_000))
            })
            .map(|(p, f)| (*p, f))
            .collect();
        let captured: std::collections::BTreeSet<i64> =
            state.captures.iter().map(|c| c.payment_id).collect();
        // Orders whose payment ended as it should: succeeded, or never captured (abandoned).
        let settled: BTreeMap<i64, bool> = state
            .rows("payments")
            .iter()
            .filter(|p| text(p, "status") == "succeeded" || !captured.contains(&int(p, "id")))
            .map(|p| (int(p, "order_id"), true))
            .collect();
        let (mut checkouts, mut checkouts_done, mut checkouts_bad) = (0, 0, Vec::new());
        let (mut payments, mut payments_done, mut payments_bad) = (0, 0, Vec::new());
        for (process, flow) in &clear {
            checkouts += 1;
            if flow.checkout_completed() {
                checkouts_done += 1;
            } else {
                checkouts_bad.push(flow.last());
            }
            let Some(order) = flow.order().filter(|_| process.starts_with("payer-")) else {
                continue;
            };
            payments += 1;
            let created = flow.ops.iter().any(|op| {
                op.status == Some(201)
                    && op.details["path"].as_str().and_then(path_object) == Some(("orders", order))
            });
            if created && settled.contains_key(&order) {
                payments_done += 1;
            } else {
                payments_bad.push(flow.last());
            }
        }
        let mut problems = Vec::new();
        if self.checkout_min > 0.0 && checkouts > 0 {
            problems.extend(share_report(
                "checkout flows",
                checkouts_done,
                checkouts,
                self.checkout_min,
                &checkouts_bad,
            ));
        }
        if self.payment_min > 0.0 && payments > 0 {
            problems.extend(share_report(
                "paying flows",
                payments_done,
                payments,
                self.payment_min,
                &payments_bad,
            ));
        }
        if !problems.is_empty() {
            return Report::invalid(NAME, problems.join("; "));
        }
        if checkouts == 0 && payments == 0 {
            return Report::unknown(NAME, "nothing to judge: no flow ran clear of faults");
        }
        Report::valid(
            NAME,
            format!("{checkouts_done} of {checkouts} checkout flows and {payments_done} of {payments} paying flows clear of faults completed"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::*;
    use shopsim_sim::check::Verdict;

    fn payer(i: usize, order: i64, pay_status: u16) -> Vec<Op> {
        let mut convert = op(
            2 * i,
            "POST /api/v1/cart/{id}/convert",
            Some(201),
            serde_json::json!({"order_id": order}),
            10,
            11,
        );
        convert.process = format!("payer-{i}");
        let mut pay = op(
            2 * i + 1,
            "POST /api/v1/orders/{id}/payments",
            Some(pay_status),
            serde_json::json!({}),
            12,
            13,
        );
        pay.process = format!("payer-{i}");
        pay.details["path"] = format!("/api/v1/orders/{order}/payments").into();
        vec![convert, pay]
    }

    /// Payments created right after their order are answered 404 (the order was read from a
    /// replica): the checkout completed, the paying flow did not.
    #[test]
    fn canary_payments_fail_after_checkout() {
        let mut ops = payer(0, 7, 404);
        ops.extend(payer(1, 8, 201));
        let mut s = state(&[("payments", "id,order_id,status; 1,8,'succeeded'")]);
        s.captures.push(crate::provider::Capture {
            payment_id: 1,
            tenant: 1,
            amount: 1,
            at_us: 0,
        });
        let check = FlowsComplete {
            checkout_min: 0.9,
            payment_min: 0.9,
        };
        let r = check.check(&history(ops.clone()), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.witness.starts_with(
                "1 of 2 paying flows clear of faults completed (50%, at least 90% required)"
            ),
            "{}",
            r.witness
        );
        let lenient = FlowsComplete {
            checkout_min: 0.9,
            payment_min: 0.5,
        };
        assert_eq!(lenient.check(&history(ops), &s).verdict, Verdict::Valid);
        let none = FlowsComplete {
            checkout_min: 0.0,
            payment_min: 0.0,
        };
        assert_eq!(none.check(&history(vec![]), &s).verdict, Verdict::Unknown);
    }
}
