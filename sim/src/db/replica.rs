//! A read replica node: serves read-only sessions from its own copy of the database, which
//! applies the primary's commit log after a lag.
//!
//! Goal: reads that go to the replica can see stale data (a cart total, a stock count that a
//! concurrent checkout just changed), as they do behind a real asynchronous replica.
//!
//! Key invariant: the replica applies the primary's commit records in commit order, each exactly
//! once, never before its lag has passed; so its state is always the primary's state at some
//! earlier commit. The count of applied records lives outside the node, with the data, so a
//! crash and restart of the replica resumes where it stopped.
//!
//! Not modelled: the replication stream does not cross the simulated network; the replica reads
//! the primary's log directly, so a partition between the two does not stall replication (a
//! crash of the replica does). A crash of the primary loses nothing the replica could see,
//! because only committed records are in the log.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::export::futures::future::Either;

use madsim::rand::Rng;
use madsim::time::Instant;

use super::server::{serve, sleep_precise, DbNodeState, DbServerConfig};

/// Settings of a read replica. Times are virtual.
#[derive(Debug, Clone, PartialEq)]
pub struct DbReplicaConfig {
    /// The server side; `read_only` is forced on.
    pub server: DbServerConfig,
    /// Replication lag of each commit record, drawn from this range, milliseconds.
    pub lag_ms_min: u64,
    /// Upper end (exclusive) of the lag range, milliseconds.
    pub lag_ms_max: u64,
    /// How long after a commit of the primary the replica looks at the log, milliseconds: the
    /// commits of that interval are taken in together.
    pub poll_interval_ms: u64,
}

impl Default for DbReplicaConfig {
    fn default() -> Self {
        DbReplicaConfig {
            server: DbServerConfig::default(),
            lag_ms_min: 1,
            lag_ms_max: 50,
            poll_interval_ms: 1,
        }
    }
}

/// A replica: its own database, the primary it follows, and how far it got.
pub struct DbReplica {
    /// The replica's database and server bookkeeping; committed data survives its crashes.
    pub state: Arc<DbNodeState>,
    primary: Arc<DbNodeState>,
    /// Commit records of the primary applied so far.
    applied_count: Mutex<usize>,
}

impl DbReplica {
    /// A replica of `primary`. `state` must hold the same schema and data as the primary holds
    /// now (load both the same way before the run); the replica follows from the primary's
    /// next commit on.
    pub fn new(primary: Arc<DbNodeState>, state: Arc<DbNodeState>) -> Arc<Self> {
        assert_eq!(primary.profile(), state.profile());
        let applied_count = primary.commit_count();
        Arc::new(DbReplica {
            state,
            primary,
            applied_count: Mutex::new(applied_count),
        })
    }

    /// Commit records of the primary applied so far.
    pub fn applied_count(&self) -> usize {
        *self
            .applied_count
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How many commit records the replica is behind the primary.
    pub fn lag_records(&self) -> usize {
        let primary_count = self.primary.commit_count();
        let applied_count = self.applied_count();
        assert!(applied_count <= primary_count);
        primary_count - applied_count
    }

    fn apply_next(&self) {
        let mut applied_count = self
            .applied_count
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let record = self
            .primary
            .commit_record(*applied_count)
            .expect("a record seen is never lost");
        self.state
            .with_database(|db| db.apply_commit_record(&record));
        *applied_count += 1;
    }
}

/// Runs the replica in the current node until the node is killed: the read-only server plus
/// the apply loop. Use it as the node's init task.
pub async fn serve_replica(replica: Arc<DbReplica>, config: DbReplicaConfig) {
    assert!(config.lag_ms_min <= config.lag_ms_max);
    assert!(config.poll_interval_ms > 0);
    let server_config = DbServerConfig {
        read_only: true,
        ..config.server.clone()
    };
    madsim::task::spawn(apply_loop(replica.clone(), config));
    serve(replica.state.clone(), server_config).await;
}

async fn apply_loop(replica: Arc<DbReplica>, config: DbReplicaConfig) {
    // Records seen but not yet due, with the instant each becomes visible; due instants never
    // decrease, so records apply in commit order.
    let mut pending: VecDeque<Instant> = VecDeque::new();
    loop {
        // Sleep until the next record is due or the primary commits, whichever is first; with
        // nothing due, until the primary commits. A poll every interval would wake the replica
        // thousands of times per run for nothing.
        // Commits not yet seen are there at once after a restart (the pending list died with
        // the old incarnation), with no wake-up to come for them.
        let unseen = replica.primary.commit_count() > replica.applied_count() + pending.len();
        let grew = pin!(replica.primary.commit_log_grew());
        let commit_seen = unseen
            || match pending.front() {
                None => {
                    grew.await;
                    true
                }
                Some(due) => {
                    let wait = pin!(sleep_precise(due.saturating_duration_since(Instant::now())));
                    matches!(
                        madsim::export::futures::future::select(wait, grew).await,
                        Either::Right(_)
                    )
                }
            };
        if commit_seen {
            // Look a poll interval later, taking in every commit of that interval at once.
            sleep_precise(Duration::from_millis(config.poll_interval_ms)).await;
        }
        let now = Instant::now();
        let seen_count = replica.applied_count() + pending.len();
        for _ in seen_count..replica.primary.commit_count() {
            let lag_ms = if config.lag_ms_min == config.lag_ms_max {
                config.lag_ms_min
            } else {
                madsim::rand::thread_rng().gen_range(config.lag_ms_min..config.lag_ms_max)
            };
            let due = now + Duration::from_millis(lag_ms);
            let due = pending.back().map_or(due, |last| due.max(*last));
            pending.push_back(due);
        }
        while pending.front().is_some_and(|due| *due <= now) {
            pending.pop_front();
            replica.apply_next();
        }
    }
}
