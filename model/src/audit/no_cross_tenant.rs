//! `no_cross_tenant`: no tenant ever sees or touches another tenant's data.
//!
//! - Every product (and its category) in a catalog response belongs to the requesting tenant,
//!   whether it came from the database or the cache.
//! - Every SQL statement of a request or a queue job read and wrote rows of that request's or
//!   job's tenant only, as the database's row audit reports them (`row_tenants`), including
//!   rows a statement never returned: an aggregate, an UPDATE without the tenant filter.
//! - No request for one tenant that names an object of another (a cart, order, payment,
//!   financial order or product, in its path or body) succeeds: an adversarial tenant sending
//!   other tenants' ids to every endpoint is answered 4xx.
//! - In the final state every row points only at rows of its own tenant (a reservation at its
//!   cart and product, an order at its cart, a payment at its order, a ledger transaction and a
//!   receipt at their payment).

use std::collections::BTreeMap;

use shopsim_sim::check::{describe, Checker, Report};
use shopsim_sim::history::History;

use super::{int, owners, request_objects};
use crate::shop::ShopState;

/// See the module documentation.
pub struct NoCrossTenant;

impl Checker<ShopState> for NoCrossTenant {
    fn name(&self) -> &str {
        "no_cross_tenant"
    }

    fn check(&self, history: &History, state: &ShopState) -> Report {
        let name = "no_cross_tenant";
        let tables = [
            "carts",
            "orders",
            "payments",
            "financial_orders",
            "products",
        ];
        let owner_of: BTreeMap<&str, BTreeMap<i64, i64>> =
            tables.iter().map(|t| (*t, owners(state, t))).collect();
        for op in &history.ops {
            if let (Some(tenant), Some(status)) = (op.details["tenant"].as_i64(), op.status) {
                let foreign = request_objects(op).into_iter().find_map(|(table, id)| {
                    let owner = *owner_of.get(table)?.get(&id)?;
                    (owner != tenant).then_some((table, id, owner))
                });
                if let (Some((table, id, owner)), true) = (foreign, (200..300).contains(&status)) {
                    return Report::invalid(
                        name,
                        format!(
                            "{} for tenant {tenant} names {table} row {id} of tenant {owner} and was answered {status}: {}",
                            describe(op),
                            op.details["response"]["body"]
                        ),
                    );
                }
            }
            let Some(tenant) = op.details["tenant"].as_i64() else {
                continue;
            };
            // A request's audit is in its response; a queue job's in its event.
            let audit = if op.details["response"].is_object() {
                &op.details["response"]
            } else {
                &op.details
            };
            let foreign = audit["row_tenants"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_i64)
                .find(|owner| *owner != tenant);
            if let Some(owner) = foreign {
                let statement = audit["foreign_statement"][1].as_str().unwrap_or("-");
                return Report::invalid(
                    name,
                    format!(
                        "{} for tenant {tenant} ran a statement that touched rows of tenant {owner}: {statement}",
                        describe(op)
                    ),
                );
            }
            let body = &op.details["response"]["body"];
            for p in super::products_of(op) {
                for (what, owner) in [
                    ("product", &p["tenant_id"]),
                    ("its category", &p["category"]["tenant_id"]),
                ] {
                    if let Some(owner) = owner.as_i64() {
                        if owner != tenant {
                            return Report::invalid(
                                name,
                                format!(
                                    "{} for tenant {tenant} received product {} whose {what} belongs to tenant {owner} (cache: {})",
                                    describe(op),
                                    p["id"],
                                    body["cache"].as_str().unwrap_or("-")
                                ),
                            );
                        }
                    }
                }
            }
        }
        let tenants = |table: &str| -> BTreeMap<i64, i64> {
            state
                .rows(table)
                .iter()
                .map(|r| (int(r, "id"), int(r, "tenant_id")))
                .collect()
        };
        let (products, carts, orders, payments) = (
            tenants("products"),
            tenants("carts"),
            tenants("orders"),
            tenants("payments"),
        );
        let links: [(&str, &str, &BTreeMap<i64, i64>, &str); 7] = [
            ("reservations", "product_id", &products, "product"),
            ("reservations", "cart_id", &carts, "cart"),
            ("orders", "cart_id", &carts, "cart"),
            ("financial_orders", "order_id", &orders, "order"),
            ("payments", "order_id", &orders, "order"),
            ("ledger_transactions", "payment_id", &payments, "payment"),
            ("receipts", "payment_id", &payments, "payment"),
        ];
        for (table, column, owners, what) in links {
            for row in state.rows(table) {
                let target = int(&row, column);
                if let Some(&owner) = owners.get(&target) {
                    let tenant = int(&row, "tenant_id");
                    if owner != tenant {
                        return Report::invalid(
                            name,
                            format!("{table} row {} of tenant {tenant} points at {what} {target} of tenant {owner}", row.get("id").map_or("-".to_string(), |v| v.to_string())),
                        );
                    }
                }
            }
        }
        Report::valid(name, "every response and row stays within its tenant")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::*;
    use crate::shop::ShopState;
    use shopsim_sim::check::Verdict;

    #[test]
    fn canary_cached_page_of_another_tenant() {
        let mut read = op(
            0,
            "GET /api/v1/products",
            Some(200),
            serde_json::json!({"products": [{"id": 4, "tenant_id": 1, "category": {"tenant_id": 1}}], "cache": "hit"}),
            1,
            2,
        );
        read.details["tenant"] = 2.into();
        let r = NoCrossTenant.check(&history(vec![read]), &ShopState::default());
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.witness.ends_with(
                "for tenant 2 received product 4 whose product belongs to tenant 1 (cache: hit)"
            ),
            "{}",
            r.witness
        );
    }

    #[test]
    fn canary_statement_touching_another_tenants_rows() {
        let mut update = op(
            0,
            "POST /api/v1/cart/{id}/items",
            Some(201),
            serde_json::json!({}),
            1,
            2,
        );
        update.details["tenant"] = 2.into();
        update.details["response"]["row_tenants"] = serde_json::json!([2, 3]);
        update.details["response"]["foreign_statement"] = serde_json::json!([
            3,
            "update products set reserved = reserved + ? where id = ?"
        ]);
        let r = NoCrossTenant.check(&history(vec![update]), &ShopState::default());
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.witness.ends_with("for tenant 2 ran a statement that touched rows of tenant 3: update products set reserved = reserved + ? where id = ?"),
            "{}",
            r.witness
        );
    }

    #[test]
    fn canary_queue_job_touching_another_tenants_rows() {
        let mut job = op(0, "job receipt", None, serde_json::Value::Null, 1, 1);
        job.details = serde_json::json!({
            "tenant": 4,
            "row_tenants": [7],
            "foreign_statement": [7, "insert into receipts ..."],
            "response": null,
        });
        let r = NoCrossTenant.check(&history(vec![job]), &ShopState::default());
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.witness
                .contains("for tenant 4 ran a statement that touched rows of tenant 7"),
            "{}",
            r.witness
        );
    }

    /// An adversary of tenant 2 pays for tenant 1's order and the endpoint (which looked the
    /// order up by id alone) accepts it.
    #[test]
    fn canary_request_for_another_tenants_object_succeeds() {
        let s = state(&[("orders", "id,tenant_id; 45,1")]);
        let mut pay = op(
            0,
            "POST /api/v1/orders/{id}/payments",
            Some(201),
            serde_json::json!({"payment_id": 9}),
            1,
            2,
        );
        pay.process = "adversary-0".into();
        pay.details["tenant"] = 2.into();
        pay.details["path"] = "/api/v1/orders/45/payments".into();
        let r = NoCrossTenant.check(&history(vec![pay.clone()]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert!(
            r.witness.ends_with("for tenant 2 names orders row 45 of tenant 1 and was answered 201: {\"payment_id\":9}"),
            "{}",
            r.witness
        );
        pay.status = Some(404);
        assert_eq!(
            NoCrossTenant.check(&history(vec![pay]), &s).verdict,
            Verdict::Valid
        );
    }

    #[test]
    fn canary_payment_of_another_tenants_order() {
        let s = state(&[
            ("orders", "id,tenant_id; 1,1"),
            ("payments", "id,tenant_id,order_id; 5,2,1"),
        ]);
        let r = NoCrossTenant.check(&history(vec![]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(
            r.witness,
            "payments row 5 of tenant 2 points at order 1 of tenant 1"
        );
    }
}
