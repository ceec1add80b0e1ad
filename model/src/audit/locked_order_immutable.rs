//! `locked_order_immutable`: nothing about a locked financial order changes after its lock
//! committed (its total equals the total recorded at the lock), at most one lock attempt
//! succeeds per order, and every mutation rejected with 409 is in the audit log.

use std::collections::BTreeMap;

use shopsim_sim::check::{describe, Checker, Report};
use shopsim_sim::history::{History, OpOutcome};

use super::{int, text};
use crate::shop::ShopState;

/// See the module documentation.
pub struct LockedOrderImmutable;

fn order_of(path: &serde_json::Value) -> Option<i64> {
    path.as_str()?.split('/').nth(4)?.parse().ok()
}

impl Checker<ShopState> for LockedOrderImmutable {
    fn name(&self) -> &str {
        "locked_order_immutable"
    }

    fn check(&self, history: &History, state: &ShopState) -> Report {
        let name = "locked_order_immutable";
        for fo in state.rows("financial_orders") {
            if text(&fo, "status") == "locked" && int(&fo, "total") != int(&fo, "locked_total") {
                let id = int(&fo, "id");
                let writes: Vec<String> = history
                    .of_kind("PATCH /api/v1/financial-orders/{id}")
                    .filter(|op| {
                        op.outcome != OpOutcome::Fail && order_of(&op.details["path"]) == Some(id)
                    })
                    .map(describe)
                    .collect();
                return Report::invalid(
                    name,
                    format!(
                        "financial order {id} was locked at total {} but its total is now {}; mutations not rejected: {}",
                        int(&fo, "locked_total"),
                        int(&fo, "total"),
                        writes.join("; ")
                    ),
                );
            }
        }
        let mut locks: BTreeMap<i64, usize> = BTreeMap::new();
        for op in history.of_kind("POST /api/v1/financial-orders/{id}/lock") {
            if op.status == Some(200) {
                if let Some(id) = order_of(&op.details["path"]) {
                    *locks.entry(id).or_default() += 1;
                }
            }
        }
        if let Some((id, n)) = locks.iter().find(|(_, n)| **n > 1) {
            return Report::invalid(name, format!("financial order {id} was locked {n} times"));
        }
        let mut rejected: BTreeMap<i64, (usize, usize)> = BTreeMap::new();
        for op in history.of_kind("PATCH /api/v1/financial-orders/{id}") {
            if let Some(id) = order_of(&op.details["path"]) {
                let e = rejected.entry(id).or_default();
                match op.status {
                    Some(409) => e.0 += 1,
                    // No answer, or a server error: the rejection may have been committed
                    // (a connection lost after COMMIT) or not.
                    None => e.1 += 1,
                    Some(s) if s >= 500 => e.1 += 1,
                    _ => {}
                }
            }
        }
        let mut audited: BTreeMap<i64, usize> = BTreeMap::new();
        for a in state.rows("audit_log") {
            if text(&a, "action") == "mutation_rejected" {
                *audited.entry(int(&a, "financial_order_id")).or_default() += 1;
            }
        }
        for (id, (seen, unknown)) in &rejected {
            let logged = audited.get(id).copied().unwrap_or(0);
            if logged < *seen || logged > seen + unknown {
                return Report::invalid(
                    name,
                    format!("financial order {id}: {seen} mutations were rejected with 409 ({unknown} unknown) but the audit log has {logged}"),
                );
            }
        }
        Report::valid(name, format!("{} locked orders unchanged", locks.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::*;
    use shopsim_sim::check::Verdict;

    #[test]
    fn canary_total_changed_after_lock() {
        let s = state(&[
            (
                "financial_orders",
                "id,order_id,status,total,locked_total; 1,5,'locked',10002,10000",
            ),
            ("audit_log", "id,financial_order_id,action"),
        ]);
        let mut patch = op(
            0,
            "PATCH /api/v1/financial-orders/{id}",
            Some(200),
            serde_json::json!({}),
            1,
            30,
        );
        patch.details["path"] = "/api/v1/financial-orders/1".into();
        let r = LockedOrderImmutable.check(&history(vec![patch]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(r.witness.starts_with("financial order 1 was locked at total 10000 but its total is now 10002; mutations not rejected: #0 p0 PATCH"), "{}", r.witness);
    }

    #[test]
    fn canary_rejection_missing_from_audit_log() {
        let s = state(&[
            (
                "financial_orders",
                "id,order_id,status,total,locked_total; 1,5,'locked',10000,10000",
            ),
            ("audit_log", "id,financial_order_id,action"),
        ]);
        let mut patch = op(
            0,
            "PATCH /api/v1/financial-orders/{id}",
            Some(409),
            serde_json::json!({}),
            1,
            30,
        );
        patch.details["path"] = "/api/v1/financial-orders/1".into();
        let r = LockedOrderImmutable.check(&history(vec![patch]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(r.witness.contains("audit log has 0"), "{}", r.witness);
    }
}
