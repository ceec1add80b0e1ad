//! `read_your_writes`: a client that was given an object can use it. Once a 2xx response has
//! told a client of its cart, order or payment (`cart_id`, `order_id`, `payment_id`), no
//! later request of that client naming that object may be answered 404: a shopper who created
//! an order can pay for it, a payer can come back to its payment. A 404 there means the shop
//! read its own write from somewhere that did not have it yet (a lagging replica, a cache), or
//! lost a write it had acknowledged.
//!
//! Verified from the history alone (an acknowledged object exists: its creation committed
//! before the answer). Not verified: other tenants' objects (`no_cross_tenant` judges those).

use std::collections::BTreeMap;

use shopsim_sim::check::{describe, Checker, Report};
use shopsim_sim::history::History;

use super::path_object;
use crate::shop::ShopState;

/// See the module documentation.
pub struct ReadYourWrites;

const NAME: &str = "read_your_writes";

/// The response field that hands a client each kind of object, the path resource that names
/// it, and the `missing` field of a 404 for it.
const HANDED: [(&str, &str, &str); 3] = [
    ("cart_id", "cart", "cart"),
    ("order_id", "orders", "order"),
    ("payment_id", "payments", "payment"),
];

fn missing_of(resource: &str) -> Option<&'static str> {
    HANDED
        .iter()
        .find(|(_, r, _)| *r == resource)
        .map(|(_, _, missing)| *missing)
}

impl Checker<ShopState> for ReadYourWrites {
    fn name(&self) -> &str {
        NAME
    }

    fn check(&self, history: &History, _state: &ShopState) -> Report {
        // (process, resource, id) -> the operation that handed it over.
        let mut handed: BTreeMap<(&str, &str, i64), usize> = BTreeMap::new();
        let mut judged = 0;
        // Completion order matters: an answer hands an object over when it arrives.
        let mut ops: Vec<&shopsim_sim::history::Op> = history
            .ops
            .iter()
            .filter(|op| op.status.is_some())
            .collect();
        ops.sort_by_key(|op| (op.complete_us, op.index));
        for op in ops {
            let process = op.process.as_str();
            if let Some((resource, id)) = op.details["path"].as_str().and_then(path_object) {
                if let Some(&by) = handed.get(&(process, resource, id)) {
                    judged += 1;
                    // A 404 for another object the request named (a product of its body) is
                    // not about this one.
                    let missing = op.details["response"]["body"]["missing"].as_str();
                    if op.status == Some(404)
                        && missing == missing_of(resource)
                        && op.invoke_us >= history.ops[by].complete_us.unwrap_or(0)
                    {
                        let by = &history.ops[by];
                        return Report::invalid(
                            NAME,
                            format!(
                                "{} was answered 404 {} although {} had answered {} with {resource} {id} at {:.1} ms",
                                describe(op),
                                op.details["response"]["body"],
                                describe(by),
                                by.status.unwrap_or(0),
                                by.complete_us.unwrap_or(0) as f64 / 1000.0
                            ),
                        );
                    }
                }
            }
            if op.status.is_some_and(|s| (200..300).contains(&s)) {
                let body = &op.details["response"]["body"];
                for (field, resource, _) in HANDED {
                    if let Some(id) = body[field].as_i64() {
                        handed.entry((process, resource, id)).or_insert(op.index);
                    }
                }
            }
        }
        if judged == 0 {
            return Report::unknown(
                NAME,
                "nothing to judge: no client used an object it was given",
            );
        }
        Report::valid(
            NAME,
            format!("{judged} requests used an object their client was given; none answered 404"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::*;
    use shopsim_sim::check::Verdict;

    /// A payer's order was created (201 with order 45) and its payment request answered 404:
    /// the order was read from a replica that did not have it yet.
    #[test]
    fn canary_own_order_not_found() {
        let mut convert = op(
            0,
            "POST /api/v1/cart/{id}/convert",
            Some(201),
            serde_json::json!({"order_id": 45}),
            1,
            10,
        );
        convert.process = "payer-1".into();
        convert.details["path"] = "/api/v1/cart/9/convert".into();
        let mut pay = op(
            1,
            "POST /api/v1/orders/{id}/payments",
            Some(404),
            serde_json::json!({"error": "order not found", "missing": "order"}),
            11,
            12,
        );
        pay.process = "payer-1".into();
        pay.details["path"] = "/api/v1/orders/45/payments".into();
        let r = ReadYourWrites.check(
            &history(vec![convert.clone(), pay.clone()]),
            &ShopState::default(),
        );
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(r.witness.starts_with("#1 payer-1 POST /api/v1/orders/{id}/payments status 404 at 11.0 ms was answered 404"), "{}", r.witness);
        assert!(r.witness.ends_with("although #0 payer-1 POST /api/v1/cart/{id}/convert status 201 at 1.0 ms had answered 201 with orders 45 at 10.0 ms"), "{}", r.witness);
        // Another client's 404 for that order is not this check's business.
        pay.process = "adversary-0".into();
        assert_eq!(
            ReadYourWrites
                .check(&history(vec![convert, pay]), &ShopState::default())
                .verdict,
            Verdict::Unknown
        );
    }
}
