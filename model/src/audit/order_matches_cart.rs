//! `order_matches_cart`: an order is exactly what its cart held when it was placed. The commit
//! that places an order for cart K (the checkout's one transaction) also turns K `converted`
//! and converts every reservation of K that was still held, and only those; the order's total
//! is the sum of price × quantity over them, at that commit's prices. After it no reservation
//! of K is held and none is created on K; and no cart or reservation is converted in a commit
//! that places no order for its cart.
//!
//! So an item whose add was accepted ends in its cart's order, or expired and was released
//! before the convert: an add racing the convert cannot slip in beside the order, and an order
//! cannot charge for less or more than it took. Judged on the committed history of `products`,
//! `carts`, `reservations` and `orders` ([`crate::shop::HISTORY_TABLES`]); the seed data
//! (commits at time 0) is the starting state. Unknown when no order was placed.

use std::collections::{BTreeMap, BTreeSet};

use shopsim_sim::check::{Checker, Report};
use shopsim_sim::history::History;

use super::{ops_naming, Columns};
use crate::shop::{RowChange, ShopState};

/// See the module documentation.
pub struct OrderMatchesCart;

const NAME: &str = "order_matches_cart";

/// The tables replayed, in the order their changes of one commit are applied.
const TABLES: [&str; 4] = ["products", "carts", "reservations", "orders"];

/// A reservation as the replay knows it.
struct Reservation {
    cart: i64,
    product: i64,
    quantity: i64,
    status: String,
}

/// An order as its inserting commit wrote it.
struct Placed {
    id: i64,
    cart: i64,
    total: i64,
    tenant: i64,
}

/// What one commit did to the replayed tables.
#[derive(Default)]
struct CommitChanges {
    orders_placed: Vec<Placed>,
    carts_converted: Vec<i64>,
    reservations_converted: Vec<i64>,
    reservations_created: Vec<i64>,
}

/// The replayed state: the committed rows that matter, after each commit.
#[derive(Default)]
struct Replay {
    price: BTreeMap<i64, i64>,
    /// Cart id -> (tenant, status).
    carts: BTreeMap<i64, (i64, String)>,
    reservations: BTreeMap<i64, Reservation>,
    cart_reservations: BTreeMap<i64, BTreeSet<i64>>,
    orders: BTreeSet<i64>,
    /// Cart id -> (its order, the commit that placed it).
    cart_order: BTreeMap<i64, (i64, usize)>,
}

impl Replay {
    /// Applies one committed row change of `TABLES[table]`, noting in `done` what it did.
    fn apply(
        &mut self,
        table: usize,
        columns: &Columns,
        change: &RowChange,
        done: &mut CommitChanges,
    ) {
        // The shop never deletes these rows; a deletion leaves the replay as it was.
        let Some(row) = &change.row else { return };
        let id = change.id;
        match TABLES[table] {
            "products" => {
                self.price.insert(id, columns.int(row, "price"));
            }
            "carts" => {
                let status = columns.text(row, "status").to_string();
                let converted = status == "converted";
                let before = self
                    .carts
                    .insert(id, (columns.int(row, "tenant_id"), status));
                if converted && before.is_none_or(|(_, s)| s != "converted") {
                    done.carts_converted.push(id);
                }
            }
            "reservations" => {
                let next = Reservation {
                    cart: columns.int(row, "cart_id"),
                    product: columns.int(row, "product_id"),
                    quantity: columns.int(row, "quantity"),
                    status: columns.text(row, "status").to_string(),
                };
                let cart = next.cart;
                let now_converted = next.status == "converted";
                match self.reservations.insert(id, next) {
                    None => {
                        self.cart_reservations.entry(cart).or_default().insert(id);
                        done.reservations_created.push(id);
                    }
                    Some(before) if before.status == "held" && now_converted => {
                        done.reservations_converted.push(id);
                    }
                    Some(_) => {}
                }
            }
            _ => {
                if self.orders.insert(id) {
                    done.orders_placed.push(Placed {
                        id,
                        cart: columns.int(row, "cart_id"),
                        total: columns.int(row, "total"),
                        tenant: columns.int(row, "tenant_id"),
                    });
                }
            }
        }
    }

    fn describe(&self, reservation: i64) -> String {
        let r = &self.reservations[&reservation];
        format!(
            "reservation {reservation} (product {}, {} × {})",
            r.product,
            r.quantity,
            self.price.get(&r.product).copied().unwrap_or(0)
        )
    }

    /// The first rule commit `commit` broke, and the cart it concerns.
    fn judge(&mut self, commit: usize, done: &CommitChanges) -> Option<(i64, String)> {
        for order in &done.orders_placed {
            let k = order.cart;
            let Some((tenant, status)) = self.carts.get(&k) else {
                return Some((
                    k,
                    format!("order {} names cart {k}, which does not exist", order.id),
                ));
            };
            if *tenant != order.tenant {
                return Some((
                    k,
                    format!(
                        "order {} of tenant {} is for cart {k} of tenant {tenant}",
                        order.id, order.tenant
                    ),
                ));
            }
            if let Some((first, at)) = self.cart_order.get(&k) {
                return Some((k, format!("order {} is a second order for cart {k}, whose order {first} commit {at} placed", order.id)));
            }
            if !done.carts_converted.contains(&k) {
                return Some((
                    k,
                    format!(
                        "cart {k} is still '{status}' after order {} was placed for it",
                        order.id
                    ),
                ));
            }
            let reservations = self.cart_reservations.get(&k);
            let ids = || reservations.into_iter().flatten().copied();
            if let Some(held) = ids().find(|r| self.reservations[r].status == "held") {
                return Some((k, format!("{} of cart {k} is still held after order {} was placed: the order left it out", self.describe(held), order.id)));
            }
            let taken: Vec<i64> = done
                .reservations_converted
                .iter()
                .copied()
                .filter(|r| self.reservations[r].cart == k)
                .collect();
            let worth: i64 = taken
                .iter()
                .map(|r| {
                    let r = &self.reservations[r];
                    r.quantity
                        .saturating_mul(self.price.get(&r.product).copied().unwrap_or(0))
                })
                .fold(0, i64::saturating_add);
            if worth != order.total {
                let items: Vec<String> = taken.iter().map(|r| self.describe(*r)).collect();
                return Some((k, format!("order {} has total {}, but the {} reservations it converted come to {worth}: {}", order.id, order.total, taken.len(), items.join(", "))));
            }
            self.cart_order.insert(k, (order.id, commit));
        }
        let placed_here = |cart: i64| done.orders_placed.iter().any(|o| o.cart == cart);
        for r in &done.reservations_created {
            let cart = self.reservations[r].cart;
            if let Some((order, at)) = self.cart_order.get(&cart).filter(|(_, at)| *at < commit) {
                return Some((cart, format!("{} was created on cart {cart} after its order {order} was placed (commit {at})", self.describe(*r))));
            }
        }
        for r in &done.reservations_converted {
            let cart = self.reservations[r].cart;
            if !placed_here(cart) {
                return Some((cart, format!("{} of cart {cart} was converted, but the commit placed no order for its cart", self.describe(*r))));
            }
        }
        for cart in &done.carts_converted {
            if !placed_here(*cart) {
                return Some((
                    *cart,
                    format!("cart {cart} was converted, but the commit placed no order for it"),
                ));
            }
        }
        None
    }
}

impl Checker<ShopState> for OrderMatchesCart {
    fn name(&self) -> &str {
        NAME
    }

    fn check(&self, history: &History, state: &ShopState) -> Report {
        let columns = TABLES.map(|t| Columns::of(state, t));
        let mut changes: Vec<(usize, &RowChange)> = TABLES
            .iter()
            .enumerate()
            .flat_map(|(i, t)| state.changes(t).iter().map(move |c| (i, c)))
            .collect();
        // A stable sort: within a commit, products (prices) first, then carts, reservations
        // and orders, each in the order the commit wrote them.
        changes.sort_by_key(|(table, c)| (c.commit, *table));
        let mut replay = Replay::default();
        let mut judged = 0usize;
        let mut i = 0;
        while i < changes.len() {
            let (commit, at_us) = (changes[i].1.commit, changes[i].1.at_us);
            let mut done = CommitChanges::default();
            while i < changes.len() && changes[i].1.commit == commit {
                let (table, change) = changes[i];
                replay.apply(table, &columns[table], change, &mut done);
                i += 1;
            }
            // The seed data is the starting state (its orders belong to no cart).
            if at_us == 0 {
                continue;
            }
            judged += done.orders_placed.len();
            if let Some((cart, problem)) = replay.judge(commit, &done) {
                return Report::invalid(
                    NAME,
                    format!(
                        "commit {commit} at {:.1} ms: {problem}; requests naming cart {cart}: {}",
                        at_us as f64 / 1000.0,
                        ops_naming(history, "carts", cart, 4)
                    ),
                );
            }
        }
        if judged == 0 {
            return Report::unknown(NAME, "nothing to judge: no order was placed");
        }
        Report::valid(
            NAME,
            format!("{judged} orders, each exactly its cart's held reservations at their prices"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::*;
    use shopsim_sim::check::Verdict;
    use shopsim_sim::db::Value;

    /// Columns of the tables in these tests.
    const SPEC: [(&str, &str); 4] = [
        ("products", "id,price"),
        ("carts", "id,tenant_id,status"),
        ("reservations", "id,cart_id,product_id,quantity,status"),
        ("orders", "id,tenant_id,cart_id,total"),
    ];

    /// A history of commits: (commit, table, id, row as text values), committed at
    /// `commit` ms (commit 0 is the seed data, at time 0).
    fn shop(commits: &[(usize, &str, i64, &str)]) -> ShopState {
        let mut s = state(&SPEC);
        for (commit, table, id, row) in commits {
            let values = row
                .split(',')
                .map(|v| match v.trim().parse::<i64>() {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::Text(v.trim().to_string()),
                })
                .collect();
            s.row_history
                .entry(table.to_string())
                .or_default()
                .push(RowChange {
                    at_us: *commit as u64 * 1000,
                    commit: *commit,
                    id: *id,
                    row: Some(values),
                });
        }
        s
    }

    /// Cart 5 with two items (2 × 300 and 1 × 500) converted into order 9 of total 1100.
    fn good() -> Vec<(usize, &'static str, i64, &'static str)> {
        vec![
            (0, "products", 1, "1,300"),
            (0, "products", 2, "2,500"),
            (1, "carts", 5, "5,1,open"),
            (2, "reservations", 7, "7,5,1,2,held"),
            (3, "reservations", 8, "8,5,2,1,held"),
            (4, "carts", 5, "5,1,converted"),
            (4, "reservations", 7, "7,5,1,2,converted"),
            (4, "reservations", 8, "8,5,2,1,converted"),
            (4, "orders", 9, "9,1,5,1100"),
        ]
    }

    fn verdict(commits: &[(usize, &str, i64, &str)]) -> Report {
        OrderMatchesCart.check(&history(vec![]), &shop(commits))
    }

    #[test]
    fn an_order_of_exactly_its_cart_is_valid() {
        let r = verdict(&good());
        assert_eq!(r.verdict, Verdict::Valid, "{}", r.witness);
    }

    #[test]
    fn canary_order_total_ignores_quantity() {
        let mut h = good();
        h[8].3 = "9,1,5,800";
        let r = verdict(&h);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(r.witness.starts_with("commit 4 at 4.0 ms: order 9 has total 800, but the 2 reservations it converted come to 1100: reservation 7 (product 1, 2 × 300), reservation 8 (product 2, 1 × 500)"), "{}", r.witness);
    }

    #[test]
    fn canary_cart_left_open() {
        let mut h = good();
        h.remove(5);
        let r = verdict(&h);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.witness
                .contains("cart 5 is still 'open' after order 9 was placed"),
            "{}",
            r.witness
        );
    }

    /// An add racing the convert: its reservation committed before the order, unconverted.
    #[test]
    fn canary_item_left_out_of_the_order() {
        let mut h = good();
        h.remove(7);
        h[7].3 = "9,1,5,600";
        let r = verdict(&h);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(r.witness.contains("reservation 8 (product 2, 1 × 500) of cart 5 is still held after order 9 was placed: the order left it out"), "{}", r.witness);
    }

    /// An add racing the convert: its reservation committed after the order.
    #[test]
    fn canary_item_added_after_the_order() {
        let mut h = good();
        h.push((5, "reservations", 10, "10,5,2,1,held"));
        let r = verdict(&h);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(r.witness.contains("reservation 10 (product 2, 1 × 500) was created on cart 5 after its order 9 was placed (commit 4)"), "{}", r.witness);
        // Released by the expiry sweep before the convert, an item is rightly left out.
        let mut h = good();
        h[4].3 = "8,5,2,1,released";
        h.remove(7);
        h[7].3 = "9,1,5,600";
        assert_eq!(verdict(&h).verdict, Verdict::Valid);
    }

    #[test]
    fn canary_converted_without_an_order() {
        let mut h = good();
        h.remove(8);
        let r = verdict(&h);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(r.witness.contains("reservation 7 (product 1, 2 × 300) of cart 5 was converted, but the commit placed no order for its cart"), "{}", r.witness);
    }

    #[test]
    fn no_order_is_nothing_to_judge() {
        let h = &good()[..5];
        assert_eq!(verdict(h).verdict, Verdict::Unknown);
        // Seeded orders (commit 0) are the starting state, not orders placed.
        let seeded = [(0, "orders", 1, "1,1,-1,10000")];
        assert_eq!(verdict(&seeded).verdict, Verdict::Unknown);
    }
}
