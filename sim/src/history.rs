//! The history of a run: every client operation with its process, invoke and complete times in
//! virtual time, and its outcome, plus the fault events of the nemesis.
//!
//! An operation whose reply never arrived is [`OpOutcome::Unknown`]: it may or may not have
//! taken effect, and checkers must treat it as either (Jepsen's `:info`).

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OpOutcome {
    /// Completed and took effect.
    Ok,
    /// Completed and did not take effect.
    Fail,
    /// No answer: it may or may not have taken effect.
    Unknown,
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history.
    pub index: usize,
    /// Who issued it (`shopper-3`, `admin-0`, `nemesis`).
    pub process: String,
    /// What it is (an endpoint class such as `POST /api/v1/cart/{id}/convert`, or a fault).
    pub kind: String,
    /// Invoke time, microseconds of virtual time since the run started.
    pub invoke_us: u64,
    /// Completion time; `None` while pending (or never, for a liveness failure).
    pub complete_us: Option<u64>,
    /// The outcome; `Unknown` until completed.
    pub outcome: OpOutcome,
    /// An HTTP-like status code if the operation has one.
    pub status: Option<u16>,
    /// The request and response details.
    pub details: serde_json::Value,
}

impl Op {
    /// Latency in microseconds, if completed.
    pub fn latency_us(&self) -> Option<u64> {
        self.complete_us.map(|c| c - self.invoke_us)
    }
}

/// The operations of a run, in invoke order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The operations.
    pub ops: Vec<Op>,
}

impl History {
    /// Operations of `kind`.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Op> + 'a {
        self.ops.iter().filter(move |op| op.kind == kind)
    }
}

/// Records the history during a run; cloned into every task that issues operations.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    inner: Arc<Mutex<History>>,
}

fn now_us() -> u64 {
    crate::trace::virtual_now().as_micros() as u64
}

impl Recorder {
    /// Records the invocation of an operation; returns its index.
    pub fn invoke(&self, process: &str, kind: &str, details: serde_json::Value) -> usize {
        let mut history = self.inner.lock().expect("history lock");
        let index = history.ops.len();
        history.ops.push(Op {
            index,
            process: process.to_string(),
            kind: kind.to_string(),
            invoke_us: now_us(),
            complete_us: None,
            outcome: OpOutcome::Unknown,
            status: None,
            details,
        });
        index
    }

    /// Records the completion of operation `index`. Response details are merged under
    /// `"response"`.
    pub fn complete(
        &self,
        index: usize,
        outcome: OpOutcome,
        status: Option<u16>,
        response: serde_json::Value,
    ) {
        let mut history = self.inner.lock().expect("history lock");
        let op = &mut history.ops[index];
        assert!(op.complete_us.is_none(), "an operation completes once");
        let now = now_us();
        assert!(now >= op.invoke_us);
        op.complete_us = Some(now);
        op.outcome = outcome;
        op.status = status;
        if !response.is_null() {
            if let serde_json::Value::Object(map) = &mut op.details {
                map.insert("response".to_string(), response);
            } else {
                op.details =
                    serde_json::json!({ "request": op.details.take(), "response": response });
            }
        }
    }

    /// A completed event in one step (fault injections, notes).
    pub fn event(&self, process: &str, kind: &str, details: serde_json::Value) {
        let index = self.invoke(process, kind, details);
        self.complete(index, OpOutcome::Ok, None, serde_json::Value::Null);
    }

    /// Takes the history out, leaving an empty one (at the end of a run: no copy).
    pub fn take(&self) -> History {
        std::mem::take(&mut *self.inner.lock().expect("history lock"))
    }

    /// The history so far.
    pub fn snapshot(&self) -> History {
        self.inner.lock().expect("history lock").clone()
    }
}
