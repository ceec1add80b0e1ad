//! The transcript recorder of a database node: every statement each session executed, with its
//! bound parameters, in the order the server executed and finished them, and the outcome the
//! simulated engine gave. `shopsim crosscheck --scenario` replays transcripts on a real
//! PostgreSQL or MariaDB and compares outcome by outcome.
//!
//! Off unless asked: a node records only when it was created inside [`record_transcripts`] on
//! the same thread, and a node that does not record pays one `Option` test per event. The
//! recorder only observes: it draws no randomness, spends no virtual time and changes no reply,
//! so a recorded run has the same trace hash as an unrecorded one.
//!
//! Key invariant: per session, events alternate `Execute` then (`Finish` | `Block` ... `Finish`),
//! because a connection sends its next statement only after the previous one finished.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{DbError, Profile, QueryResult, SessionId, Value};

/// Why a blocked statement finished when it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishCause {
    /// It never blocked: the engine answered at once.
    Immediate,
    /// Another session's statement or disconnect released the lock (or chose it as a deadlock
    /// victim, on InnoDB).
    Woken,
    /// A timer ended it: a lock wait timeout, PostgreSQL's deadlock check after
    /// `deadlock_timeout`, or `statement_timeout`.
    Deadline,
}

/// One event of a transcript. Times are virtual microseconds since the node first started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TranscriptEvent {
    /// A connection was accepted and got a session.
    Connect {
        /// The engine session.
        session: SessionId,
        /// When.
        at_us: u64,
    },
    /// The server ran a statement of `session`.
    Execute {
        /// The engine session.
        session: SessionId,
        /// The statement text as the client sent it.
        sql: String,
        /// The bound parameters.
        params: Vec<Value>,
        /// When.
        at_us: u64,
        /// The client's tag ([`crate::db::client::DbPool::with_tag`]): the client operation
        /// the statement serves, when the client says.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tag: Option<u64>,
        /// The client's `application_name`, when it sent one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        application: Option<String>,
    },
    /// The statement just executed waits for a lock.
    Block {
        /// The engine session.
        session: SessionId,
        /// When.
        at_us: u64,
        /// The table whose row lock it waits for, as the engine reports it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        table: Option<String>,
    },
    /// PostgreSQL's deadlock check of the wait of `session`'s statement ran
    /// (`deadlock_timeout` after the wait began) and found no cycle. A check that finds one
    /// ends the statement instead: a `Finish` with [`FinishCause::Deadline`] and `40P01`.
    /// The crosscheck needs both: a cycle is found only by a check that runs while it exists.
    DeadlockCheck {
        /// The engine session (also an orphaned one, whose client left while it waited).
        session: SessionId,
        /// When.
        at_us: u64,
    },
    /// A statement of `session` finished.
    Finish {
        /// The engine session.
        session: SessionId,
        /// What the simulated engine answered.
        result: Result<QueryResult, DbError>,
        /// Why it finished now.
        cause: FinishCause,
        /// When.
        at_us: u64,
        /// For [`FinishCause::Woken`]: the session whose statement or disconnect woke it
        /// (released the lock, or closed a deadlock cycle on InnoDB).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        woken_by: Option<SessionId>,
    },
    /// The connection closed (client gone, reply undeliverable, buggified drop); the open
    /// transaction rolled back, or, while a statement was blocked, the session is orphaned
    /// and rolls back when that statement ends.
    Disconnect {
        /// The engine session.
        session: SessionId,
        /// When.
        at_us: u64,
    },
    /// The node crashed and restarted: every session of the earlier incarnation is gone, a
    /// blocked statement never finishes, committed data stays.
    Crash {
        /// When the new incarnation started.
        at_us: u64,
    },
}

/// The state of the database when the node first started: what the run set up before any
/// client connected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TranscriptSetup {
    /// Schema statements in the order they were applied, in the engine's dialect.
    pub ddl: Vec<String>,
    /// Committed rows per table: (table, column names, rows in primary key order).
    pub tables: Vec<(String, Vec<String>, Vec<Vec<Value>>)>,
}

/// Everything one database node executed during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// The engine profile (by name in JSON).
    #[serde(with = "profile_name")]
    pub profile: Profile,
    /// A read-only node (a replica): its reads follow a lagging copy, so they are not
    /// comparable with one real server.
    pub read_only: bool,
    /// The schema and data before the first connection.
    pub setup: TranscriptSetup,
    /// The run's virtual time ([`crate::trace::virtual_now`]) when the node first started,
    /// µs: event times plus this are times of the run's history.
    #[serde(default)]
    pub origin_run_us: u64,
    /// The events in server order.
    pub events: Vec<TranscriptEvent>,
}

impl Transcript {
    /// Statements executed (re-runs after a lock wait are not counted twice).
    pub fn statement_count(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, TranscriptEvent::Execute { .. }))
            .count()
    }

    /// The statements, in the order the server executed them, each with how it ended: the
    /// transcript read per statement instead of per event (for `replay --trace` and the
    /// diagrams). Relies on the key invariant: one statement in flight per session.
    pub fn statements(&self) -> Vec<TranscriptStatement> {
        let mut statements: Vec<TranscriptStatement> = Vec::new();
        // Per session: its statement in flight (an index into `statements`).
        let mut in_flight: BTreeMap<SessionId, usize> = BTreeMap::new();
        for (event, e) in self.events.iter().enumerate() {
            match e {
                TranscriptEvent::Connect { .. } | TranscriptEvent::DeadlockCheck { .. } => {}
                TranscriptEvent::Execute {
                    session,
                    sql,
                    params,
                    at_us,
                    tag,
                    application,
                } => {
                    let previous = in_flight.insert(*session, statements.len());
                    assert!(previous.is_none(), "one statement in flight per session");
                    statements.push(TranscriptStatement {
                        session: *session,
                        sql: sql.clone(),
                        params: params.clone(),
                        tag: *tag,
                        application: application.clone(),
                        event,
                        executed_us: *at_us,
                        blocked: None,
                        end: StatementEnd::Pending,
                    });
                }
                TranscriptEvent::Block {
                    session,
                    at_us,
                    table,
                } => {
                    if let Some(&i) = in_flight.get(session) {
                        statements[i].blocked = Some(LockWait {
                            at_us: *at_us,
                            table: table.clone(),
                        });
                    }
                }
                TranscriptEvent::Finish {
                    session,
                    result,
                    cause,
                    at_us,
                    woken_by,
                } => {
                    if let Some(i) = in_flight.remove(session) {
                        statements[i].end = StatementEnd::Finished {
                            event,
                            at_us: *at_us,
                            result: result.clone(),
                            cause: *cause,
                            woken_by: *woken_by,
                        };
                    }
                }
                TranscriptEvent::Disconnect { session, at_us } => {
                    if let Some(i) = in_flight.remove(session) {
                        statements[i].end = StatementEnd::Disconnected {
                            event,
                            at_us: *at_us,
                        };
                    }
                }
                TranscriptEvent::Crash { at_us } => {
                    for (_, i) in std::mem::take(&mut in_flight) {
                        statements[i].end = StatementEnd::Crashed {
                            event,
                            at_us: *at_us,
                        };
                    }
                }
            }
        }
        assert!(statements.windows(2).all(|w| w[0].event < w[1].event));
        statements
    }
}

/// One statement of a [`Transcript`] ([`Transcript::statements`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptStatement {
    /// The engine session that ran it.
    pub session: SessionId,
    /// The statement text as the client sent it.
    pub sql: String,
    /// The bound parameters.
    pub params: Vec<Value>,
    /// The client's tag (the client operation it serves), if the client sent one.
    pub tag: Option<u64>,
    /// The client's `application_name`, if it sent one.
    pub application: Option<String>,
    /// The index of its `Execute` event in [`Transcript::events`].
    pub event: usize,
    /// When the engine ran it, µs since the node's origin.
    pub executed_us: u64,
    /// Its lock wait, if it blocked.
    pub blocked: Option<LockWait>,
    /// How it ended.
    pub end: StatementEnd,
}

/// A statement waiting for a lock ([`TranscriptStatement::blocked`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LockWait {
    /// When it started to wait, µs since the node's origin.
    pub at_us: u64,
    /// The table whose row lock it waited for.
    pub table: Option<String>,
}

/// How a statement of a transcript ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StatementEnd {
    /// The engine answered.
    Finished {
        /// The index of the `Finish` event.
        event: usize,
        /// When, µs since the node's origin.
        at_us: u64,
        /// The answer.
        result: Result<QueryResult, DbError>,
        /// Why it finished then.
        cause: FinishCause,
        /// The session whose statement or disconnect woke it (for [`FinishCause::Woken`]).
        woken_by: Option<SessionId>,
    },
    /// The connection closed while it waited: no answer; the statement waits on in its
    /// orphaned session, whose transaction rolls back when the statement ends.
    Disconnected {
        /// The index of the `Disconnect` event.
        event: usize,
        /// When, µs since the node's origin.
        at_us: u64,
    },
    /// The node crashed while it waited.
    Crashed {
        /// The index of the `Crash` event.
        event: usize,
        /// When, µs since the node's origin.
        at_us: u64,
    },
    /// Still waiting when the run ended.
    Pending,
}

impl StatementEnd {
    /// The index of the event that ended it, if one did.
    pub fn event(&self) -> Option<usize> {
        match self {
            StatementEnd::Finished { event, .. }
            | StatementEnd::Disconnected { event, .. }
            | StatementEnd::Crashed { event, .. } => Some(*event),
            StatementEnd::Pending => None,
        }
    }

    /// When it ended, µs since the node's origin, if it did.
    pub fn at_us(&self) -> Option<u64> {
        match self {
            StatementEnd::Finished { at_us, .. }
            | StatementEnd::Disconnected { at_us, .. }
            | StatementEnd::Crashed { at_us, .. } => Some(*at_us),
            StatementEnd::Pending => None,
        }
    }
}

mod profile_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Profile;

    pub fn serialize<S: Serializer>(profile: &Profile, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(profile.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Profile, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// A recorder shared by a node's state and the caller of [`record_transcripts`].
pub(crate) type TranscriptHandle = Arc<Mutex<Transcript>>;

thread_local! {
    /// The recorders of nodes created inside [`record_transcripts`] on this thread.
    static SINK: RefCell<Option<Vec<TranscriptHandle>>> = const { RefCell::new(None) };
}

/// Runs `f` (one simulated run: madsim runs it on this thread) with transcript recording on:
/// every database node created meanwhile records, and their transcripts are returned in
/// creation order. Nothing of it outlives the call.
pub fn record_transcripts<T>(f: impl FnOnce() -> T) -> (T, Vec<Transcript>) {
    let previous = SINK.with(|s| s.borrow_mut().replace(Vec::new()));
    assert!(previous.is_none(), "record_transcripts does not nest");
    // Take the sink back even if the run panics, so a later run on this thread records nothing.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SINK.with(|s| s.borrow_mut().take());
        }
    }
    let reset = Reset;
    let value = f();
    let handles = SINK.with(|s| s.borrow_mut().take()).unwrap_or_default();
    drop(reset);
    let transcripts = handles
        .into_iter()
        .map(|h| h.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .collect();
    (value, transcripts)
}

/// A recorder for a node being created, if recording is on for this thread.
pub(crate) fn recorder_for_new_node(profile: Profile) -> Option<TranscriptHandle> {
    SINK.with(|s| {
        let mut sink = s.borrow_mut();
        let sink = sink.as_mut()?;
        let handle = Arc::new(Mutex::new(Transcript {
            profile,
            read_only: false,
            setup: TranscriptSetup::default(),
            origin_run_us: 0,
            events: Vec::new(),
        }));
        sink.push(handle.clone());
        Some(handle)
    })
}

/// Appends an event.
pub(crate) fn push(handle: &TranscriptHandle, event: TranscriptEvent) {
    handle
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .events
        .push(event);
}
