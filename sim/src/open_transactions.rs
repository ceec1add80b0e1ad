//! Which requests hold an open database transaction, and the RPCs that left them meanwhile.
//!
//! A service that calls another service (a payment provider, a cache) while it holds a
//! database transaction keeps its row locks and its pooled connection for the whole round
//! trip: under load every request queued behind those locks waits for the remote call too, and
//! a slow or lost call turns into lock waits and pool timeouts elsewhere. The pool
//! ([`crate::db::client`]) tells this registry when a connection enters and leaves a
//! transaction; [`crate::net::call`] asks it, before a request leaves, whether the code
//! making the call holds one. Each such call is recorded in the history as an
//! [`RPC_IN_TRANSACTION`] event of the node, and at the end of the run the runner records one
//! [`AUDIT_SUMMARY`] event with the number of calls and transactions seen, so that
//! [`crate::check::NoRpcInTransaction`] can tell "nothing to judge" from "nothing wrong". It
//! knows nothing of what the calls are for.
//!
//! "The code making the call" is a scope: each request a server serves through
//! [`crate::net::serve`] runs in a scope of its own (as each request of a PHP-FPM node runs in
//! a worker process of its own, with its own connection), and code outside any served request
//! (a queue worker's loop) is in the scope of its node.
//!
//! The registry is per run and per thread, like coverage: started and taken by the runner.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use madsim::task::NodeId;

use crate::history::Recorder;

/// The history kind of a call that left a node holding an open transaction.
pub const RPC_IN_TRANSACTION: &str = "rpc during transaction";

/// The history kind of the end-of-run summary (process `sim`).
pub const AUDIT_SUMMARY: &str = "open-transaction audit";

/// Where code runs: inside a served request, or on its node outside any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Request(u64),
    Node(NodeId),
}

/// A connection's open transaction.
#[derive(Debug, Clone)]
struct OpenTransaction {
    node: NodeId,
    scope: Scope,
    since_us: u64,
    first_statement: String,
}

#[derive(Debug, Default)]
struct Registry {
    recorder: Option<Recorder>,
    names: BTreeMap<NodeId, String>,
    open: BTreeMap<u64, OpenTransaction>,
    next_id: u64,
    next_scope: u64,
    calls: u64,
    transactions: u64,
}

thread_local! {
    static CURRENT: RefCell<Option<Registry>> = const { RefCell::new(None) };
    // The served request being polled on this thread, if any.
    static REQUEST: Cell<Option<u64>> = const { Cell::new(None) };
}

fn scope() -> Scope {
    REQUEST
        .with(Cell::get)
        .map_or_else(|| Scope::Node(madsim::plugin::node()), Scope::Request)
}

/// A future that runs in a scope of its own: a served request.
pub(crate) struct InScope<F> {
    request: u64,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for InScope<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let previous = REQUEST.with(|r| r.replace(Some(self.request)));
        let poll = self.future.as_mut().poll(cx);
        REQUEST.with(|r| r.set(previous));
        poll
    }
}

/// `future` as a served request with a scope of its own.
pub(crate) fn in_request_scope<F: Future>(future: F) -> InScope<F> {
    let request = with(|r| {
        r.next_scope += 1;
        r.next_scope
    })
    .unwrap_or(0);
    InScope {
        request,
        future: Box::pin(future),
    }
}

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> Option<T> {
    CURRENT.with(|c| c.borrow_mut().as_mut().map(f))
}

fn now_us() -> u64 {
    crate::trace::virtual_now().as_micros() as u64
}

/// Starts the registry for a run on this thread; findings go to `recorder`.
pub(crate) fn start_run(recorder: Recorder) {
    CURRENT.with(|c| {
        *c.borrow_mut() = Some(Registry {
            recorder: Some(recorder),
            ..Registry::default()
        })
    });
}

/// Records the run's summary event (at the end of the run, inside the simulation).
pub(crate) fn record_summary() {
    let summary = with(|r| (r.recorder.clone(), r.calls, r.transactions));
    if let Some((Some(recorder), calls, transactions)) = summary {
        recorder.event(
            "sim",
            AUDIT_SUMMARY,
            serde_json::json!({ "calls": calls, "transactions": transactions }),
        );
    }
}

/// Ends the registry of this thread's run.
pub(crate) fn end_run() {
    CURRENT.with(|c| *c.borrow_mut() = None);
}

/// Names a node for the events (the runner's node registry).
pub(crate) fn name_node(node: NodeId, name: &str) {
    with(|r| r.names.insert(node, name.to_string()));
}

/// The name `node` was registered with, if this thread runs a run that knows it.
pub(crate) fn node_name(node: NodeId) -> Option<String> {
    with(|r| r.names.get(&node).cloned()).flatten()
}

/// A connection of the current scope entered a transaction with `first_statement`; returns
/// the token to close it with, or `None` outside a run.
pub(crate) fn opened(first_statement: &str) -> Option<u64> {
    let node = madsim::plugin::node();
    let scope = scope();
    let since_us = now_us();
    with(|r| {
        let id = r.next_id;
        r.next_id += 1;
        r.transactions += 1;
        r.open.insert(
            id,
            OpenTransaction {
                node,
                scope,
                since_us,
                first_statement: first_statement.to_string(),
            },
        );
        id
    })
}

/// The transaction of `token` ended (commit, rollback, a broken connection).
pub(crate) fn closed(token: u64) {
    with(|r| {
        let removed = r.open.remove(&token);
        assert!(removed.is_some(), "a transaction closes once");
    });
}

/// A call to `to` is about to leave the current scope: recorded as an event if the scope holds
/// an open transaction.
pub(crate) fn call_leaves(to: std::net::SocketAddr) {
    let node = madsim::plugin::node();
    let scope = scope();
    let finding = with(|r| {
        r.calls += 1;
        // The oldest open transaction of the scope is the one that has waited longest.
        let open = r
            .open
            .values()
            .find(|t| t.node == node && t.scope == scope)?
            .clone();
        let name = r
            .names
            .get(&node)
            .cloned()
            .unwrap_or_else(|| format!("node {node}"));
        Some((r.recorder.clone()?, name, open))
    })
    .flatten();
    if let Some((recorder, name, open)) = finding {
        recorder.event(
            &name,
            RPC_IN_TRANSACTION,
            serde_json::json!({
                "to": to.to_string(),
                "transaction_since_us": open.since_us,
                "first_statement": open.first_statement,
            }),
        );
    }
}
