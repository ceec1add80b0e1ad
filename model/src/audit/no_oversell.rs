//! `no_oversell`: per product, stock never goes negative, the reserved counter equals the held
//! reservations, held plus converted units never exceed the stock the product started with,
//! the stock fell by exactly the converted units, and a reservation only ever goes from held
//! to converted or from held to released (a converted or released reservation never changes).
//!
//! Judged on the final state, and, for the witness, on a reference model replayed over the
//! committed history of `reservations` and `products`: the first commit after which the
//! product broke an invariant (or a reservation changed illegally) is the cause, named with
//! its reservations and the requests in flight then. Not verified: states inside a
//! transaction (only commits are visible).

use std::collections::BTreeMap;

use shopsim_sim::check::{describe, Checker, Report};
use shopsim_sim::history::History;

use super::{int, request_objects, text, Columns};
use crate::shop::{RowChange, ShopState};

/// See the module documentation.
pub struct NoOversell;

const NAME: &str = "no_oversell";

/// A reservation as the reference model knows it.
#[derive(Debug, Clone)]
struct Held {
    status: String,
    quantity: i64,
    cart: i64,
}

/// The first commit after which product `product` broke an invariant, described with its
/// changes and the requests in flight then.
fn first_cause(history: &History, state: &ShopState, product: i64, initial: i64) -> Option<String> {
    let (rc, pc) = (
        Columns::of(state, "reservations"),
        Columns::of(state, "products"),
    );
    let mut changes: Vec<(&str, &RowChange)> = Vec::new();
    changes.extend(
        state
            .changes("reservations")
            .iter()
            .filter(|c| {
                c.row
                    .as_ref()
                    .is_some_and(|r| rc.int(r, "product_id") == product)
            })
            .map(|c| ("reservations", c)),
    );
    changes.extend(
        state
            .changes("products")
            .iter()
            .filter(|c| c.id == product)
            .map(|c| ("products", c)),
    );
    changes.sort_by_key(|(table, c)| (c.commit, *table != "reservations"));
    let mut reservations: BTreeMap<i64, Held> = BTreeMap::new();
    let (mut stock, mut reserved) = (initial, 0);
    let mut i = 0;
    while i < changes.len() {
        let commit = changes[i].1.commit;
        let at_us = changes[i].1.at_us;
        let mut events = Vec::new();
        let mut illegal = None;
        let mut carts = Vec::new();
        while i < changes.len() && changes[i].1.commit == commit {
            let (table, change) = changes[i];
            i += 1;
            let Some(row) = &change.row else { continue };
            if table == "products" {
                let (s, r) = (pc.int(row, "stock"), pc.int(row, "reserved"));
                if (s, r) != (stock, reserved) {
                    events.push(format!("stock {stock} -> {s}, reserved {reserved} -> {r}"));
                }
                (stock, reserved) = (s, r);
                continue;
            }
            let next = Held {
                status: rc.text(row, "status").to_string(),
                quantity: rc.int(row, "quantity"),
                cart: rc.int(row, "cart_id"),
            };
            carts.push(next.cart);
            let before = reservations.get(&change.id).map(|h| h.status.clone());
            let legal = match before.as_deref() {
                None => next.status == "held",
                Some("held") => true,
                Some(status) => status == next.status,
            };
            let text = format!(
                "reservation {} (cart {}, {} units) {}",
                change.id,
                next.cart,
                next.quantity,
                match &before {
                    None => format!("created {}", next.status),
                    Some(b) if *b == next.status => format!("stayed {b}"),
                    Some(b) => format!("went {b} -> {}", next.status),
                }
            );
            if !legal && illegal.is_none() {
                illegal = Some(text.clone());
            }
            events.push(text);
            reservations.insert(change.id, next);
        }
        // Only commits of this product's rows reach here, so every group has a change.
        let sum = |s: &str| -> i64 {
            reservations
                .values()
                .filter(|h| h.status == s)
                .map(|h| h.quantity)
                .sum()
        };
        let (held, converted) = (sum("held"), sum("converted"));
        let broken = if let Some(change) = &illegal {
            Some(format!(
                "{change}, which a converted or released reservation must never do"
            ))
        } else if held + converted > initial {
            Some(format!(
                "{} units taken of a stock of {initial}",
                held + converted
            ))
        } else if stock < 0 {
            Some(format!("stock went to {stock}"))
        } else if reserved != held {
            Some(format!(
                "the reserved counter became {reserved} with {held} units held"
            ))
        } else if initial - stock != converted {
            Some(format!(
                "stock had fallen by {} with {converted} units converted",
                initial - stock
            ))
        } else {
            None
        };
        let Some(broken) = broken else { continue };
        let in_flight: Vec<String> = history
            .ops
            .iter()
            .filter(|op| op.invoke_us <= at_us && op.complete_us.is_none_or(|c| c >= at_us))
            .filter(|op| {
                let objects = request_objects(op);
                objects.contains(&("products", product))
                    || carts.iter().any(|c| objects.contains(&("carts", *c)))
            })
            .take(4)
            .map(describe)
            .collect();
        let by = if events.iter().any(|e| e.contains("-> released")) {
            "the expiry sweep of the worker (the only writer of released)".to_string()
        } else if in_flight.is_empty() {
            "no request in flight named its cart or product".to_string()
        } else {
            in_flight.join(", ")
        };
        return Some(format!(
            "first broken at {:.1} ms (commit {commit}): {broken}; that commit: {}; in flight: {by}",
            at_us as f64 / 1000.0,
            events.join(", ")
        ));
    }
    None
}

impl Checker<ShopState> for NoOversell {
    fn name(&self) -> &str {
        NAME
    }

    fn check(&self, history: &History, state: &ShopState) -> Report {
        let reservations = state.rows("reservations");
        let products = state.rows("products");
        if products.is_empty() {
            return Report::unknown(NAME, "nothing to judge: no product");
        }
        for product in &products {
            let id = int(product, "id");
            let initial = state
                .initial_stock
                .get(&id)
                .copied()
                .unwrap_or(int(product, "stock"));
            let (stock, reserved) = (int(product, "stock"), int(product, "reserved"));
            let (mut held, mut converted) = (0, 0);
            for r in reservations.iter().filter(|r| int(r, "product_id") == id) {
                match text(r, "status") {
                    "held" => held += int(r, "quantity"),
                    "converted" => converted += int(r, "quantity"),
                    _ => {}
                }
            }
            let problem = if held + converted > initial {
                Some(format!("{} units were taken ({held} held, {converted} converted) of a stock of {initial}", held + converted))
            } else if stock < 0 {
                Some(format!("stock is {stock}"))
            } else if reserved != held {
                Some(format!(
                    "the reserved counter is {reserved} but {held} units are held"
                ))
            } else if initial - stock != converted {
                Some(format!(
                    "stock fell by {} but {converted} units were converted",
                    initial - stock
                ))
            } else {
                None
            };
            // The final state may look right while a reservation changed illegally on the way.
            let cause = first_cause(history, state, id, initial);
            let problem = match (problem, &cause) {
                (Some(p), _) => p,
                (None, Some(_)) => "a reservation changed after it was settled".to_string(),
                (None, None) => continue,
            };
            return Report::invalid(
                NAME,
                format!(
                    "product {id}: {problem}; {}",
                    cause.unwrap_or_else(|| "no commit history to replay".to_string())
                ),
            );
        }
        Report::valid(
            NAME,
            format!(
                "{} products: every reservation fits its stock and changed only from held",
                products.len()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::*;
    use shopsim_sim::check::Verdict;
    use shopsim_sim::db::Value;

    fn change(at_ms: u64, commit: usize, id: i64, row: &[i64], status: Option<&str>) -> RowChange {
        let mut values: Vec<Value> = row.iter().map(|v| Value::Int(*v)).collect();
        if let Some(s) = status {
            values.push(Value::Text(s.to_string()));
        }
        RowChange {
            at_us: at_ms * 1000,
            commit,
            id,
            row: Some(values),
        }
    }

    #[test]
    fn canary_two_reservations_for_one_unit() {
        let mut s = state(&[
            ("products", "id,stock,reserved; 1,1,1"),
            (
                "reservations",
                "id,cart_id,product_id,quantity,status; 1,10,1,1,'held'; 2,11,1,1,'held'",
            ),
        ]);
        s.initial_stock.insert(1, 1);
        s.row_history.insert(
            "reservations".into(),
            vec![
                change(5, 1, 1, &[1, 10, 1, 1], Some("held")),
                change(6, 2, 2, &[2, 11, 1, 1], Some("held")),
            ],
        );
        s.row_history.insert(
            "products".into(),
            vec![
                change(5, 1, 1, &[1, 1, 1], None),
                change(6, 2, 1, &[1, 1, 1], None),
            ],
        );
        let mut add = op(
            0,
            "POST /api/v1/cart/{id}/items",
            Some(201),
            serde_json::json!({}),
            5,
            7,
        );
        add.details["path"] = "/api/v1/cart/11/items".into();
        add.process = "shopper-3".into();
        let r = NoOversell.check(&history(vec![add]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.witness, "product 1: 2 units were taken (2 held, 0 converted) of a stock of 1; first broken at 6.0 ms (commit 2): 2 units taken of a stock of 1; that commit: reservation 2 (cart 11, 1 units) created held; in flight: #0 shopper-3 POST /api/v1/cart/{id}/items status 201 at 5.0 ms");
        s.tables.get_mut("reservations").unwrap().1.pop();
        s.row_history.get_mut("reservations").unwrap().pop();
        s.row_history.get_mut("products").unwrap().pop();
        assert_eq!(
            NoOversell.check(&history(vec![]), &s).verdict,
            Verdict::Valid
        );
    }

    /// After an expiry race, the witness names the reservation that flipped from converted to
    /// released, not the requests that took the stock.
    #[test]
    fn canary_converted_reservation_released_by_the_expiry_sweep() {
        let mut s = state(&[
            ("products", "id,stock,reserved; 1,8,-2"),
            (
                "reservations",
                "id,cart_id,product_id,quantity,status; 7,3,1,2,'released'",
            ),
        ]);
        s.initial_stock.insert(1, 10);
        s.row_history.insert(
            "reservations".into(),
            vec![
                change(1, 1, 7, &[7, 3, 1, 2], Some("held")),
                change(5, 2, 7, &[7, 3, 1, 2], Some("converted")),
                change(6, 3, 7, &[7, 3, 1, 2], Some("released")),
            ],
        );
        s.row_history.insert(
            "products".into(),
            vec![
                change(1, 1, 1, &[1, 10, 2], None),
                change(5, 2, 1, &[1, 8, 0], None),
                change(6, 3, 1, &[1, 8, -2], None),
            ],
        );
        let r = NoOversell.check(&history(vec![]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(r.witness.contains("first broken at 6.0 ms (commit 3): reservation 7 (cart 3, 2 units) went converted -> released, which a converted or released reservation must never do"), "{}", r.witness);
        assert!(
            r.witness.ends_with(
                "in flight: the expiry sweep of the worker (the only writer of released)"
            ),
            "{}",
            r.witness
        );
    }
}
