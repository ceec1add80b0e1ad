//! The shop's domain checks: pure functions of the history and the final database state
//! (with the committed history of a few tables, and the payment provider's own records), one
//! file each, each with a canary test that feeds it a bad history or state it must flag.
//!
//! They judge the invariants themselves — money (one capture, one ledger transaction, one
//! financial-order update and one receipt per payment), stock, tenancy, freshness, completion
//! — from the database and the external parties' records, whatever the HTTP answers were;
//! answers only help the witness name the operations that caused a violation.

use std::collections::BTreeMap;

use shopsim_sim::check::{describe, Checker};
use shopsim_sim::db::Value;
use shopsim_sim::history::{History, Op};

use crate::config::ShopConfig;
use crate::shop::ShopState;

mod captured_payments_succeed;
mod catalog_fresh;
mod deadlocks_handled;
mod flows_complete;
mod jobs_settled;
mod latency_classes;
mod locked_order_immutable;
mod no_5xx;
mod no_cross_tenant;
mod no_n_plus_one;
mod no_oversell;
mod one_order_per_cart;
mod order_matches_cart;
mod payment_exactly_once;
mod progress;
mod read_your_writes;
mod reservations_settled;

pub use captured_payments_succeed::CapturedPaymentsSucceed;
pub use catalog_fresh::CatalogFresh;
pub use deadlocks_handled::DeadlocksHandled;
pub use flows_complete::FlowsComplete;
pub use jobs_settled::JobsSettled;
pub use latency_classes::EveryEndpointHasALatencyClass;
pub use locked_order_immutable::LockedOrderImmutable;
pub use no_5xx::No5xx;
pub use no_cross_tenant::NoCrossTenant;
pub use no_n_plus_one::NoNPlusOne;
pub use no_oversell::NoOversell;
pub use one_order_per_cart::OneOrderPerCart;
pub use order_matches_cart::OrderMatchesCart;
pub use payment_exactly_once::PaymentExactlyOnce;
pub use progress::progress_made;
pub use read_your_writes::ReadYourWrites;
pub use reservations_settled::ReservationsSettled;

/// Every domain check of a shop with `config`, safety first.
pub fn all(config: &ShopConfig) -> Vec<Box<dyn Checker<ShopState>>> {
    vec![
        Box::new(NoOversell),
        Box::new(OneOrderPerCart),
        Box::new(OrderMatchesCart),
        Box::new(PaymentExactlyOnce),
        Box::new(CapturedPaymentsSucceed),
        Box::new(LockedOrderImmutable),
        Box::new(NoCrossTenant),
        Box::new(ReadYourWrites),
        Box::new(CatalogFresh::new(config)),
        Box::new(JobsSettled),
        Box::new(ReservationsSettled),
        Box::new(DeadlocksHandled),
        Box::new(No5xx),
        Box::new(NoNPlusOne),
    ]
}

/// The products a catalog response carries: a page's `products` and a detail's `product`.
pub(crate) fn products_of(op: &Op) -> Vec<&serde_json::Value> {
    let body = &op.details["response"]["body"];
    let mut products: Vec<&serde_json::Value> = body["products"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if body["product"].is_object() {
        products.push(&body["product"]);
    }
    products
}

/// The object a request path names: (`cart`, `orders`, `payments`, `financial-orders`,
/// `products`) and its id: `/api/v1/orders/45/payments` -> `("orders", 45)`.
pub(crate) fn path_object(path: &str) -> Option<(&str, i64)> {
    let mut parts = path.trim_matches('/').split('/').skip(2);
    let resource = parts.next()?;
    let id = parts.next()?.parse().ok()?;
    Some((resource, id))
}

/// The table of a path resource.
pub(crate) fn resource_table(resource: &str) -> Option<&'static str> {
    match resource {
        "cart" => Some("carts"),
        "orders" => Some("orders"),
        "payments" => Some("payments"),
        "financial-orders" => Some("financial_orders"),
        "products" => Some("products"),
        _ => None,
    }
}

/// Every object a request names, as (table, id): the object of its path, and the product or
/// payment its body names.
pub(crate) fn request_objects(op: &Op) -> Vec<(&'static str, i64)> {
    let mut objects = Vec::new();
    if let Some((resource, id)) = op.details["path"].as_str().and_then(path_object) {
        if let Some(table) = resource_table(resource) {
            objects.push((table, id));
        }
    }
    let body = &op.details["body"];
    if let Some(id) = body["product_id"].as_i64() {
        objects.push(("products", id));
    }
    if let Some(id) = body["payment_id"].as_i64() {
        objects.push(("payments", id));
    }
    objects
}

/// Up to `n` operations that name `(table, id)`, described, for a witness.
pub(crate) fn ops_naming(history: &History, table: &str, id: i64, n: usize) -> String {
    let ops: Vec<String> = history
        .ops
        .iter()
        .filter(|op| request_objects(op).contains(&(table_static(table), id)))
        .map(|op| {
            let answer = op.details["response"]["body"].to_string();
            let answer: String = answer.chars().take(80).collect();
            format!("{} {answer}", describe(op))
        })
        .collect();
    if ops.is_empty() {
        return "no request named it".to_string();
    }
    let more = ops.len().saturating_sub(n);
    let mut text = ops[..ops.len().min(n)].join("; ");
    if more > 0 {
        text.push_str(&format!("; and {more} more"));
    }
    text
}

fn table_static(table: &str) -> &'static str {
    [
        "carts",
        "orders",
        "payments",
        "financial_orders",
        "products",
    ]
    .into_iter()
    .find(|t| *t == table)
    .unwrap_or("")
}

/// The tenant of every row of `table`, by id.
pub(crate) fn owners(state: &ShopState, table: &str) -> BTreeMap<i64, i64> {
    state
        .rows(table)
        .iter()
        .map(|r| (int(r, "id"), int(r, "tenant_id")))
        .collect()
}

/// The columns of a table, by name: reads the rows of its committed history.
pub(crate) struct Columns(Vec<String>);

impl Columns {
    /// The columns of `table` in `state` (none if it has no such table).
    pub(crate) fn of(state: &ShopState, table: &str) -> Columns {
        Columns(
            state
                .tables
                .get(table)
                .map(|t| t.0.clone())
                .unwrap_or_default(),
        )
    }

    /// Column `name` of `row` as an integer (0 if absent or not one).
    pub(crate) fn int(&self, row: &[Value], name: &str) -> i64 {
        self.0
            .iter()
            .position(|c| c == name)
            .and_then(|i| row.get(i))
            .and_then(Value::as_int)
            .unwrap_or(0)
    }

    /// Column `name` of `row` as text ("" if absent or not text).
    pub(crate) fn text<'a>(&self, row: &'a [Value], name: &str) -> &'a str {
        self.0
            .iter()
            .position(|c| c == name)
            .and_then(|i| row.get(i))
            .and_then(Value::as_text)
            .unwrap_or("")
    }
}

fn int(row: &std::collections::BTreeMap<&str, &Value>, column: &str) -> i64 {
    row.get(column).and_then(|v| v.as_int()).unwrap_or(0)
}

fn text<'a>(row: &std::collections::BTreeMap<&str, &'a Value>, column: &str) -> &'a str {
    row.get(column).and_then(|v| v.as_text()).unwrap_or("")
}

#[cfg(test)]
pub(crate) mod testing {
    use shopsim_sim::db::Value;
    use shopsim_sim::history::{History, Op, OpOutcome};

    use crate::shop::ShopState;

    /// A state from `table: "col,col; v,v; v,v"` strings (ints, or text in quotes).
    pub fn state(tables: &[(&str, &str)]) -> ShopState {
        let mut s = ShopState::default();
        for (name, spec) in tables {
            let mut parts = spec.split(';').map(str::trim);
            let columns: Vec<String> = parts
                .next()
                .unwrap()
                .split(',')
                .map(|c| c.trim().to_string())
                .collect();
            let rows = parts
                .filter(|p| !p.is_empty())
                .map(|r| {
                    r.split(',')
                        .map(|v| {
                            let v = v.trim();
                            match v.parse::<i64>() {
                                Ok(i) => Value::Int(i),
                                Err(_) if v == "null" => Value::Null,
                                Err(_) => Value::Text(v.trim_matches('\'').to_string()),
                            }
                        })
                        .collect()
                })
                .collect();
            s.tables.insert(name.to_string(), (columns, rows));
        }
        s
    }

    /// An operation: kind, status, response body, times in ms.
    pub fn op(
        index: usize,
        kind: &str,
        status: Option<u16>,
        body: serde_json::Value,
        invoke_ms: u64,
        complete_ms: u64,
    ) -> Op {
        Op {
            index,
            process: format!("p{index}"),
            kind: kind.to_string(),
            invoke_us: invoke_ms * 1000,
            complete_us: Some(complete_ms * 1000),
            outcome: match status {
                Some(s) if s < 300 => OpOutcome::Ok,
                Some(_) => OpOutcome::Fail,
                None => OpOutcome::Unknown,
            },
            status,
            details: serde_json::json!({"path": "", "response": {"status": status, "body": body}}),
        }
    }

    pub fn history(ops: Vec<Op>) -> History {
        History { ops }
    }
}
