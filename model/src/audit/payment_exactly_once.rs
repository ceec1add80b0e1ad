//! `payment_exactly_once`: money moves once per payment, judged from the database and the
//! payment provider's own record of captures, whatever the HTTP answers were.
//!
//! Verified, per payment: a succeeded payment was captured by the provider exactly once, for
//! its amount and tenant, and has exactly one ledger transaction of that amount and exactly
//! one receipt; a payment that did not succeed has no ledger transaction; per order: at most
//! one of its payments was captured (a customer is charged once per order), and its financial
//! order's paid amount equals the ledger of its succeeded payments (one financial-order update
//! per payment); an order has one payment, of the order's total (paying is idempotent per
//! order); no ledger transaction or capture names a payment that does not exist.
//!
//! Not verified here: that every captured payment ends succeeded (`captured_payments_succeed`)
//! and that every job ran (`jobs_settled`). A receipt job that is still queued or was
//! dead-lettered does not excuse a missing receipt.

use std::collections::BTreeMap;

use shopsim_sim::check::{Checker, Report};
use shopsim_sim::history::History;

use super::{int, ops_naming, text};
use crate::shop::ShopState;

/// See the module documentation.
pub struct PaymentExactlyOnce;

const NAME: &str = "payment_exactly_once";

/// What the worker did with a payment's receipt job, for a witness.
fn receipt_jobs(history: &History, state: &ShopState, payment: i64) -> String {
    let runs: Vec<String> = history
        .of_kind("job receipt")
        .filter(|op| op.details["payload"].as_i64() == Some(payment))
        .map(|op| {
            format!(
                "attempt {} at {:.1} ms {}",
                op.details["attempt"],
                op.invoke_us as f64 / 1000.0,
                match op.details["error"].as_str() {
                    Some(error) => format!("failed ({error})"),
                    None => "ran".to_string(),
                }
            )
        })
        .collect();
    let dead = state
        .rows("failed_jobs")
        .iter()
        .any(|j| text(j, "kind") == "receipt" && int(j, "payload") == payment);
    let queued = state
        .rows("jobs")
        .iter()
        .any(|j| text(j, "kind") == "receipt" && int(j, "payload") == payment);
    let fate = match (dead, queued) {
        (true, _) => "; dead-lettered",
        (false, true) => "; still queued",
        _ => "",
    };
    if runs.is_empty() {
        format!("its receipt job never ran{fate}")
    } else {
        format!("its receipt job: {}{fate}", runs.join(", "))
    }
}

impl Checker<ShopState> for PaymentExactlyOnce {
    fn name(&self) -> &str {
        NAME
    }

    fn check(&self, history: &History, state: &ShopState) -> Report {
        let payments = state.rows("payments");
        if payments.is_empty() && state.captures.is_empty() {
            return Report::unknown(NAME, "nothing to judge: no payment, no capture");
        }
        let mut ledger: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for l in state.rows("ledger_transactions") {
            ledger
                .entry(int(&l, "payment_id"))
                .or_default()
                .push(int(&l, "amount"));
        }
        let mut receipts: BTreeMap<i64, usize> = BTreeMap::new();
        for r in state.rows("receipts") {
            *receipts.entry(int(&r, "payment_id")).or_default() += 1;
        }
        let mut captures: BTreeMap<i64, Vec<&crate::provider::Capture>> = BTreeMap::new();
        for c in &state.captures {
            captures.entry(c.payment_id).or_default().push(c);
        }
        let mut paid_per_order: BTreeMap<i64, i64> = BTreeMap::new();
        let mut captured_per_order: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        let mut succeeded = 0;
        let mut known = std::collections::BTreeSet::new();
        for p in &payments {
            let (id, order, amount) = (int(p, "id"), int(p, "order_id"), int(p, "amount"));
            known.insert(id);
            let entries = ledger.remove(&id).unwrap_or_default();
            let caught = captures.get(&id).map_or(&[][..], Vec::as_slice);
            if !caught.is_empty() {
                captured_per_order.entry(order).or_default().push(id);
            }
            if let Some(c) = caught
                .iter()
                .find(|c| c.amount != amount || c.tenant != int(p, "tenant_id"))
            {
                return Report::invalid(
                    NAME,
                    format!("payment {id} (tenant {}, {amount} cents) was captured by the provider as {} cents for tenant {}", int(p, "tenant_id"), c.amount, c.tenant),
                );
            }
            if text(p, "status") != "succeeded" {
                if !entries.is_empty() {
                    return Report::invalid(
                        NAME,
                        format!(
                            "payment {id} is {} but has ledger transactions {entries:?}; its requests: {}",
                            text(p, "status"),
                            ops_naming(history, "payments", id, 4)
                        ),
                    );
                }
                continue;
            }
            succeeded += 1;
            let problem = if caught.len() != 1 {
                Some(format!("{} captures at the provider", caught.len()))
            } else if entries.len() != 1 {
                Some(format!("{} ledger transactions {entries:?}", entries.len()))
            } else if entries[0] != amount {
                Some(format!(
                    "a ledger transaction of {} cents for a payment of {amount}",
                    entries[0]
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Report::invalid(
                    NAME,
                    format!(
                        "payment {id} succeeded with {problem}; its requests: {}",
                        ops_naming(history, "payments", id, 4)
                    ),
                );
            }
            let n = receipts.get(&id).copied().unwrap_or(0);
            if n != 1 {
                return Report::invalid(
                    NAME,
                    format!(
                        "payment {id} succeeded with {n} receipts; {}",
                        receipt_jobs(history, state, id)
                    ),
                );
            }
            *paid_per_order.entry(order).or_default() += entries[0];
        }
        if let Some((payment, entries)) = ledger.iter().next() {
            return Report::invalid(
                NAME,
                format!(
                    "ledger transactions {entries:?} for payment {payment}, which does not exist"
                ),
            );
        }
        if let Some(c) = state
            .captures
            .iter()
            .find(|c| !known.contains(&c.payment_id))
        {
            return Report::invalid(
                NAME,
                format!(
                    "the provider captured {} cents for payment {} of tenant {}, which does not exist in the shop",
                    c.amount, c.payment_id, c.tenant
                ),
            );
        }
        if let Some((order, ids)) = captured_per_order.iter().find(|(_, ids)| ids.len() > 1) {
            return Report::invalid(
                NAME,
                format!(
                    "order {order} was charged {} times: the provider captured its payments {ids:?}; their requests: {}",
                    ids.len(),
                    ops_naming(history, "orders", *order, 4)
                ),
            );
        }
        // Paying is idempotent per order: a second request for an order answers with the
        // payment it has. Two payments would be two checkout sessions the customer could
        // both pay, and each must charge what its order costs.
        let totals: BTreeMap<i64, i64> = state
            .rows("orders")
            .iter()
            .map(|o| (int(o, "id"), int(o, "total")))
            .collect();
        let mut payments_per_order: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for p in &payments {
            let (id, order, amount) = (int(p, "id"), int(p, "order_id"), int(p, "amount"));
            payments_per_order.entry(order).or_default().push(id);
            if let Some(total) = totals.get(&order).filter(|t| **t != amount) {
                return Report::invalid(
                    NAME,
                    format!("payment {id} is for {amount} cents, but its order {order} totals {total}; its requests: {}", ops_naming(history, "payments", id, 4)),
                );
            }
        }
        if let Some((order, ids)) = payments_per_order.iter().find(|(_, ids)| ids.len() > 1) {
            return Report::invalid(
                NAME,
                format!(
                    "order {order} has {} payments {ids:?}, each a checkout session the customer could pay; its requests: {}",
                    ids.len(),
                    ops_naming(history, "orders", *order, 4)
                ),
            );
        }
        for fo in state.rows("financial_orders") {
            let order = int(&fo, "order_id");
            let expected = paid_per_order.get(&order).copied().unwrap_or(0);
            if int(&fo, "paid") != expected {
                return Report::invalid(
                    NAME,
                    format!("financial order {} (order {order}) records {} paid but its ledger sums to {expected}", int(&fo, "id"), int(&fo, "paid")),
                );
            }
        }
        Report::valid(
            NAME,
            format!(
                "{succeeded} succeeded payments, each captured once with one ledger transaction, one financial-order update and one receipt"
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

    fn capture(payment_id: i64, amount: i64) -> Capture {
        Capture {
            payment_id,
            tenant: 1,
            amount,
            at_us: 0,
        }
    }

    fn paid_once() -> ShopState {
        let mut s = state(&[
            (
                "payments",
                "id,tenant_id,order_id,amount,status; 1,1,5,100,'succeeded'",
            ),
            ("ledger_transactions", "id,payment_id,amount; 1,1,100"),
            ("financial_orders", "id,order_id,paid; 1,5,100"),
            ("receipts", "payment_id; 1"),
        ]);
        s.captures.push(capture(1, 100));
        s
    }

    /// A double click on Pay that made two payments for one order, only one of them paid.
    #[test]
    fn canary_two_payments_for_one_order() {
        let mut s = paid_once();
        s.tables.get_mut("payments").unwrap().1.push(vec![
            2.into(),
            1.into(),
            5.into(),
            100.into(),
            "pending".into(),
        ]);
        let r = PaymentExactlyOnce.check(&history(vec![]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.witness.starts_with("order 5 has 2 payments [1, 2]"),
            "{}",
            r.witness
        );
    }

    #[test]
    fn canary_payment_amount_differs_from_its_order() {
        let mut s = paid_once();
        s.tables.insert(
            "orders".into(),
            (
                vec!["id".into(), "total".into()],
                vec![vec![5.into(), 100.into()]],
            ),
        );
        assert_eq!(
            PaymentExactlyOnce.check(&history(vec![]), &s).verdict,
            Verdict::Valid
        );
        s.tables.get_mut("orders").unwrap().1[0][1] = 120.into();
        let r = PaymentExactlyOnce.check(&history(vec![]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.witness
                .starts_with("payment 1 is for 100 cents, but its order 5 totals 120"),
            "{}",
            r.witness
        );
    }

    #[test]
    fn canary_double_ledger_entry() {
        let mut s = paid_once();
        s.tables
            .get_mut("ledger_transactions")
            .unwrap()
            .1
            .push(vec![2.into(), 1.into(), 100.into()]);
        let r = PaymentExactlyOnce.check(&history(vec![]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.witness
                .starts_with("payment 1 succeeded with 2 ledger transactions [100, 100]"),
            "{}",
            r.witness
        );
        assert_eq!(
            PaymentExactlyOnce
                .check(&history(vec![]), &paid_once())
                .verdict,
            Verdict::Valid
        );
    }

    #[test]
    fn canary_paid_twice_on_the_financial_order() {
        let mut s = paid_once();
        s.tables.get_mut("financial_orders").unwrap().1[0][2] = 200.into();
        let r = PaymentExactlyOnce.check(&history(vec![]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.witness
                .contains("records 200 paid but its ledger sums to 100"),
            "{}",
            r.witness
        );
    }

    /// Every HTTP answer was fine and the ledger has one row, but the provider took the money
    /// twice for one order (two payments, each captured): only its records show it.
    #[test]
    fn canary_order_charged_twice_at_the_provider() {
        let mut s = paid_once();
        s.tables.get_mut("payments").unwrap().1.push(vec![
            2.into(),
            1.into(),
            5.into(),
            100.into(),
            "pending".into(),
        ]);
        s.captures.push(capture(2, 100));
        let r = PaymentExactlyOnce.check(&history(vec![]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.witness.starts_with(
                "order 5 was charged 2 times: the provider captured its payments [1, 2]"
            ),
            "{}",
            r.witness
        );
    }

    #[test]
    fn canary_succeeded_without_capture() {
        let mut s = paid_once();
        s.captures.clear();
        let r = PaymentExactlyOnce.check(&history(vec![]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.witness
                .starts_with("payment 1 succeeded with 0 captures at the provider"),
            "{}",
            r.witness
        );
    }

    /// A receipt job that is stuck (or dead-lettered) does not excuse the missing receipt.
    #[test]
    fn canary_missing_receipt_with_a_stuck_job() {
        let mut s = paid_once();
        s.tables.get_mut("receipts").unwrap().1.clear();
        s.tables.insert(
            "jobs".into(),
            state(&[("jobs", "id,kind,payload; 9,'receipt',1")])
                .tables
                .remove("jobs")
                .unwrap(),
        );
        let mut run = op(0, "job receipt", None, serde_json::Value::Null, 3, 3);
        run.details =
            serde_json::json!({"payload": 1, "attempt": 1, "error": "23505: duplicate key"});
        let r = PaymentExactlyOnce.check(&history(vec![run]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(
            r.witness,
            "payment 1 succeeded with 0 receipts; its receipt job: attempt 1 at 3.0 ms failed (23505: duplicate key); still queued"
        );
    }

    #[test]
    fn nothing_to_judge_is_unknown() {
        let r = PaymentExactlyOnce.check(&history(vec![]), &ShopState::default());
        assert_eq!(r.verdict, Verdict::Unknown);
    }
}
