//! The shop's domain checks: pure functions of the history and the final database state, one
//! file each, each with a canary test that feeds it a bad history or state it must flag.

use shopsim_sim::check::Checker;
use shopsim_sim::db::Value;

use crate::shop::ShopState;

mod deadlocks_handled;
mod locked_order_immutable;
mod no_5xx;
mod no_cross_tenant;
mod no_n_plus_one;
mod no_oversell;
mod one_order_per_cart;
mod payment_exactly_once;
mod reservations_settled;

pub use deadlocks_handled::DeadlocksHandled;
pub use locked_order_immutable::LockedOrderImmutable;
pub use no_5xx::No5xx;
pub use no_cross_tenant::NoCrossTenant;
pub use no_n_plus_one::NoNPlusOne;
pub use no_oversell::NoOversell;
pub use one_order_per_cart::OneOrderPerCart;
pub use payment_exactly_once::PaymentExactlyOnce;
pub use reservations_settled::ReservationsSettled;

/// Every domain check.
pub fn all() -> Vec<Box<dyn Checker<ShopState>>> {
    vec![
        Box::new(NoOversell),
        Box::new(OneOrderPerCart),
        Box::new(PaymentExactlyOnce),
        Box::new(LockedOrderImmutable),
        Box::new(No5xx),
        Box::new(DeadlocksHandled),
        Box::new(ReservationsSettled),
        Box::new(NoCrossTenant),
        Box::new(NoNPlusOne),
    ]
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
