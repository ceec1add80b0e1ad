//! What a run achieved, for the progress check (`sim::check::Progress`): orders placed,
//! payments succeeded and financial orders locked, counted in the final database state;
//! catalog reads answered 200, counted in the history.

use std::collections::BTreeMap;

use shopsim_sim::history::History;

use super::{int, text};
use crate::config::{
    PROGRESS_ORDERS_LOCKED, PROGRESS_ORDERS_PLACED, PROGRESS_PAYMENTS_SUCCEEDED,
    PROGRESS_READS_ANSWERED,
};
use crate::shop::{ShopState, READ_KINDS};

/// The progress of a run, by goal name.
pub fn progress_made(history: &History, state: &ShopState) -> BTreeMap<String, u64> {
    let count = |n: usize| n as u64;
    let orders = state
        .rows("orders")
        .iter()
        .filter(|o| int(o, "cart_id") > 0)
        .count();
    let payments = state
        .rows("payments")
        .iter()
        .filter(|p| text(p, "status") == "succeeded")
        .count();
    let locked = state
        .rows("financial_orders")
        .iter()
        .filter(|f| text(f, "status") == "locked")
        .count();
    let reads = history
        .ops
        .iter()
        .filter(|op| READ_KINDS.contains(&op.kind.as_str()) && op.status == Some(200))
        .count();
    BTreeMap::from([
        (PROGRESS_ORDERS_PLACED.to_string(), count(orders)),
        (PROGRESS_PAYMENTS_SUCCEEDED.to_string(), count(payments)),
        (PROGRESS_READS_ANSWERED.to_string(), count(reads)),
        (PROGRESS_ORDERS_LOCKED.to_string(), count(locked)),
    ])
}
