//! `one_order_per_cart`: converting a cart, however often and concurrently, yields one order;
//! every successful convert response of a cart names that one order.

use std::collections::BTreeMap;

use shopsim_sim::check::{describe, Checker, Report};
use shopsim_sim::history::{History, OpOutcome};

use super::int;
use crate::shop::ShopState;

/// See the module documentation.
pub struct OneOrderPerCart;

impl Checker<ShopState> for OneOrderPerCart {
    fn name(&self) -> &str {
        "one_order_per_cart"
    }

    fn check(&self, history: &History, state: &ShopState) -> Report {
        let mut orders: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for o in state.rows("orders") {
            let cart = int(&o, "cart_id");
            if cart > 0 {
                orders.entry(cart).or_default().push(int(&o, "id"));
            }
        }
        if let Some((cart, ids)) = orders.iter().find(|(_, ids)| ids.len() > 1) {
            let converts: Vec<String> = history
                .of_kind("POST /api/v1/cart/{id}/convert")
                .filter(|op| {
                    op.outcome == OpOutcome::Ok
                        && op.details["path"] == format!("/api/v1/cart/{cart}/convert")
                })
                .map(describe)
                .collect();
            return Report::invalid(
                "one_order_per_cart",
                format!(
                    "cart {cart} has {} orders {ids:?}; its successful converts: {}",
                    ids.len(),
                    converts.join("; ")
                ),
            );
        }
        Report::valid(
            "one_order_per_cart",
            format!("{} carts, one order each", orders.len()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::*;

    #[test]
    fn canary_double_order() {
        let s = state(&[("orders", "id,cart_id; 1,7; 2,7; 3,8")]);
        let r = OneOrderPerCart.check(&history(vec![]), &s);
        assert_eq!(r.verdict, shopsim_sim::check::Verdict::Invalid);
        assert!(
            r.witness.starts_with("cart 7 has 2 orders [1, 2]"),
            "{}",
            r.witness
        );
    }
}
