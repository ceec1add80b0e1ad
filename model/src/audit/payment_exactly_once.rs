//! `payment_exactly_once`: each succeeded payment has exactly one ledger transaction, one
//! financial-order update (the order's paid amount equals its ledger sum) and one receipt; no
//! ledger entry exists without a succeeded payment; the ledger sums to the succeeded payments.
//!
//! Not verified: that every created payment was confirmed (the provider may still be retrying
//! a webhook when the run ends; that is liveness, not exactly-once).

use std::collections::BTreeMap;

use shopsim_sim::check::{Checker, Report};
use shopsim_sim::history::History;

use super::{int, text};
use crate::shop::ShopState;

/// See the module documentation.
pub struct PaymentExactlyOnce;

impl Checker<ShopState> for PaymentExactlyOnce {
    fn name(&self) -> &str {
        "payment_exactly_once"
    }

    fn check(&self, _history: &History, state: &ShopState) -> Report {
        let name = "payment_exactly_once";
        let mut ledger: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for l in state.rows("ledger_transactions") {
            ledger
                .entry(int(&l, "payment_id"))
                .or_default()
                .push(int(&l, "amount"));
        }
        let receipts: BTreeMap<i64, usize> =
            state
                .rows("receipts")
                .iter()
                .fold(BTreeMap::new(), |mut m, r| {
                    *m.entry(int(r, "payment_id")).or_default() += 1;
                    m
                });
        let mut paid_per_order: BTreeMap<i64, i64> = BTreeMap::new();
        let mut succeeded = 0;
        for p in state.rows("payments") {
            let id = int(&p, "id");
            let entries = ledger.remove(&id).unwrap_or_default();
            if text(&p, "status") == "succeeded" {
                succeeded += 1;
                if entries.len() != 1 {
                    return Report::invalid(
                        name,
                        format!(
                            "payment {id} succeeded with {} ledger transactions {entries:?}",
                            entries.len()
                        ),
                    );
                }
                *paid_per_order.entry(int(&p, "order_id")).or_default() += entries[0];
                if receipts.get(&id).copied().unwrap_or(0) != 1 && state.rows("jobs").is_empty() {
                    return Report::invalid(
                        name,
                        format!(
                            "payment {id} succeeded with {} receipts and no job left to send one",
                            receipts.get(&id).copied().unwrap_or(0)
                        ),
                    );
                }
            } else if !entries.is_empty() {
                return Report::invalid(
                    name,
                    format!(
                        "payment {id} is {} but has ledger transactions {entries:?}",
                        text(&p, "status")
                    ),
                );
            }
        }
        if let Some((payment, entries)) = ledger.iter().next() {
            return Report::invalid(
                name,
                format!(
                    "ledger transactions {entries:?} for payment {payment}, which does not exist"
                ),
            );
        }
        for fo in state.rows("financial_orders") {
            let order = int(&fo, "order_id");
            let expected = paid_per_order.get(&order).copied().unwrap_or(0);
            if int(&fo, "paid") != expected {
                return Report::invalid(
                    name,
                    format!("financial order {} (order {order}) records {} paid but its ledger sums to {expected}", int(&fo, "id"), int(&fo, "paid")),
                );
            }
        }
        Report::valid(
            name,
            format!("{succeeded} succeeded payments, one ledger transaction each"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::*;
    use shopsim_sim::check::Verdict;

    #[test]
    fn canary_double_ledger_entry() {
        let s = state(&[
            ("payments", "id,order_id,amount,status; 1,5,100,'succeeded'"),
            (
                "ledger_transactions",
                "id,payment_id,amount; 1,1,100; 2,1,100",
            ),
            ("financial_orders", "id,order_id,paid; 1,5,200"),
            ("receipts", "payment_id; 1"),
        ]);
        let r = PaymentExactlyOnce.check(&history(vec![]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(
            r.witness,
            "payment 1 succeeded with 2 ledger transactions [100, 100]"
        );
    }

    #[test]
    fn canary_paid_twice_on_the_financial_order() {
        let s = state(&[
            ("payments", "id,order_id,amount,status; 1,5,100,'succeeded'"),
            ("ledger_transactions", "id,payment_id,amount; 1,1,100"),
            ("financial_orders", "id,order_id,paid; 1,5,200"),
            ("receipts", "payment_id; 1"),
        ]);
        let r = PaymentExactlyOnce.check(&history(vec![]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.witness
                .contains("records 200 paid but its ledger sums to 100"),
            "{}",
            r.witness
        );
    }
}
