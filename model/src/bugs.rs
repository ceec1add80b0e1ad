//! Planted bugs: switches (all off by default) that replace a correct code path with a known
//! real-world faulty one, to prove that the checks find it.

use serde::{Deserialize, Serialize};

/// The planted bugs, by name.
pub const NAMES: [(&str, &str); 18] = [
    (
        "oversell_check_then_act",
        "reserve stock after a plain SELECT of the available quantity, without FOR UPDATE",
    ),
    (
        "double_order_on_convert",
        "convert a cart without locking it and without the unique key on orders.cart_id",
    ),
    (
        "payment_check_then_act",
        "confirm a payment after reading its status, without the idempotency key or the unique ledger key",
    ),
    (
        "order_lock_check_without_row_lock",
        "check the financial order's status with a plain SELECT before mutating it",
    ),
    (
        "deadlock_not_retried",
        "run transactions once, without Laravel's retry on deadlock",
    ),
    (
        "cache_key_without_tenant",
        "cache catalog responses under keys without the tenant prefix",
    ),
    (
        "n_plus_one_product_list",
        "load each listed product's category with a query of its own",
    ),
    (
        "stock_check_from_replica",
        "check available stock on the read replica, then reserve on the primary without re-checking",
    ),
    (
        "tenant_context_left_on_connection",
        "set the tenant context only on a newly opened connection, not on every request",
    ),
    (
        "page_total_without_tenant_scope",
        "count the product list's total with a raw query that bypasses the tenant scope",
    ),
    (
        "receipt_job_writes_ledger",
        "the queued receipt job also records the capture in the ledger when the cache holds no marker for it",
    ),
    (
        "provider_call_in_transaction",
        "confirm a payment by asking the provider inside the transaction that holds the payment row",
    ),
    (
        "catalog_version_bumped_before_commit",
        "invalidate the catalog (bump the product's version) in a statement of its own before the stock change commits",
    ),
    (
        "idempotency_claimed_before_work",
        "claim the confirmation's idempotency key in the cache before the work, and keep it when the work fails",
    ),
    (
        "payment_order_read_from_replica",
        "read the order a payment is for from the read replica",
    ),
    (
        "order_lookup_without_tenant",
        "look the order a payment is for up by id without the tenant filter",
    ),
    (
        "expiry_releases_without_recheck",
        "release an expired reservation by id without re-checking that it is still held",
    ),
    (
        "add_item_without_cart_lock",
        "add an item after a plain SELECT of the cart's status, without FOR UPDATE",
    ),
];

/// Which bugs are on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bugs {
    /// See [`NAMES`].
    pub oversell_check_then_act: bool,
    /// See [`NAMES`].
    pub double_order_on_convert: bool,
    /// See [`NAMES`].
    pub payment_check_then_act: bool,
    /// See [`NAMES`].
    pub order_lock_check_without_row_lock: bool,
    /// See [`NAMES`].
    pub deadlock_not_retried: bool,
    /// See [`NAMES`].
    pub cache_key_without_tenant: bool,
    /// See [`NAMES`].
    pub n_plus_one_product_list: bool,
    /// See [`NAMES`].
    pub stock_check_from_replica: bool,
    /// See [`NAMES`].
    pub tenant_context_left_on_connection: bool,
    /// See [`NAMES`].
    pub page_total_without_tenant_scope: bool,
    /// See [`NAMES`].
    pub receipt_job_writes_ledger: bool,
    /// See [`NAMES`].
    pub provider_call_in_transaction: bool,
    /// See [`NAMES`].
    pub catalog_version_bumped_before_commit: bool,
    /// See [`NAMES`].
    pub idempotency_claimed_before_work: bool,
    /// See [`NAMES`].
    pub payment_order_read_from_replica: bool,
    /// See [`NAMES`].
    pub order_lookup_without_tenant: bool,
    /// See [`NAMES`].
    pub expiry_releases_without_recheck: bool,
    /// See [`NAMES`].
    pub add_item_without_cart_lock: bool,
}

impl Bugs {
    /// Turns on the bug `name`; an unknown name is an error listing the known ones.
    pub fn enable(&mut self, name: &str) -> Result<(), String> {
        let flag = match name {
            "oversell_check_then_act" => &mut self.oversell_check_then_act,
            "double_order_on_convert" => &mut self.double_order_on_convert,
            "payment_check_then_act" => &mut self.payment_check_then_act,
            "order_lock_check_without_row_lock" => &mut self.order_lock_check_without_row_lock,
            "deadlock_not_retried" => &mut self.deadlock_not_retried,
            "cache_key_without_tenant" => &mut self.cache_key_without_tenant,
            "n_plus_one_product_list" => &mut self.n_plus_one_product_list,
            "stock_check_from_replica" => &mut self.stock_check_from_replica,
            "tenant_context_left_on_connection" => &mut self.tenant_context_left_on_connection,
            "page_total_without_tenant_scope" => &mut self.page_total_without_tenant_scope,
            "receipt_job_writes_ledger" => &mut self.receipt_job_writes_ledger,
            "provider_call_in_transaction" => &mut self.provider_call_in_transaction,
            "catalog_version_bumped_before_commit" => {
                &mut self.catalog_version_bumped_before_commit
            }
            "idempotency_claimed_before_work" => &mut self.idempotency_claimed_before_work,
            "payment_order_read_from_replica" => &mut self.payment_order_read_from_replica,
            "order_lookup_without_tenant" => &mut self.order_lookup_without_tenant,
            "expiry_releases_without_recheck" => &mut self.expiry_releases_without_recheck,
            "add_item_without_cart_lock" => &mut self.add_item_without_cart_lock,
            _ => {
                let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "unknown bug `{name}` (known: {})",
                    known.join(", ")
                ));
            }
        };
        *flag = true;
        Ok(())
    }

    /// Transaction attempts: the configured `DB::transaction($fn, $attempts)`, or 1 with the
    /// bug on.
    pub fn transaction_attempts(&self, configured: u32) -> u32 {
        if self.deadlock_not_retried {
            1
        } else {
            configured
        }
    }
}
