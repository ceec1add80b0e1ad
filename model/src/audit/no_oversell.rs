//! `no_oversell`: per product, stock never goes negative, the reserved counter equals the held
//! reservations, and held plus converted units never exceed the stock the product started with.
//!
//! Verified on the final state (reservations are never deleted, so they are the reference
//! model of every unit that was taken). Not verified: intermediate states between commits.

use shopsim_sim::check::{Checker, Report};
use shopsim_sim::history::History;

use super::int;
use crate::shop::ShopState;

/// See the module documentation.
pub struct NoOversell;

impl Checker<ShopState> for NoOversell {
    fn name(&self) -> &str {
        "no_oversell"
    }

    fn check(&self, history: &History, state: &ShopState) -> Report {
        let reservations = state.rows("reservations");
        // Which request made each reservation, for the witness.
        let made_by: std::collections::BTreeMap<i64, String> = history
            .of_kind("POST /api/v1/cart/{id}/items")
            .filter_map(|op| {
                let id = op.details["response"]["body"]["reservation_id"].as_i64()?;
                Some((id, format!("#{} {}", op.index, op.process)))
            })
            .collect();
        for product in state.rows("products") {
            let id = int(&product, "id");
            let initial = state
                .initial_stock
                .get(&id)
                .copied()
                .unwrap_or(int(&product, "stock"));
            let (stock, reserved) = (int(&product, "stock"), int(&product, "reserved"));
            let of_product = reservations.iter().filter(|r| int(r, "product_id") == id);
            let (mut held, mut converted, mut takers) = (0, 0, Vec::new());
            for r in of_product {
                match super::text(r, "status") {
                    "held" => held += int(r, "quantity"),
                    "converted" => converted += int(r, "quantity"),
                    _ => continue,
                }
                let id = int(r, "id");
                let by = made_by
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| "an unknown request".to_string());
                takers.push(format!(
                    "reservation {id} (cart {}, {} units) by {by}",
                    int(r, "cart_id"),
                    int(r, "quantity")
                ));
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
            if let Some(problem) = problem {
                return Report::invalid(
                    "no_oversell",
                    format!(
                        "product {id}: {problem}; taken by {}{}",
                        takers[..takers.len().min(6)].join(", "),
                        if takers.len() > 6 {
                            format!(" and {} more", takers.len() - 6)
                        } else {
                            String::new()
                        }
                    ),
                );
            }
        }
        Report::valid("no_oversell", "every product's reservations fit its stock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::*;

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
        let r = NoOversell.check(&history(vec![]), &s);
        assert_eq!(r.verdict, shopsim_sim::check::Verdict::Invalid);
        assert_eq!(r.witness, "product 1: 2 units were taken (2 held, 0 converted) of a stock of 1; taken by reservation 1 (cart 10, 1 units) by an unknown request, reservation 2 (cart 11, 1 units) by an unknown request");
        s.tables.get_mut("reservations").unwrap().1.pop();
        assert_eq!(
            NoOversell.check(&history(vec![]), &s).verdict,
            shopsim_sim::check::Verdict::Valid
        );
    }
}
