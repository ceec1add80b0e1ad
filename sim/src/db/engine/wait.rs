//! Lock waits and deadlines: a statement that has to wait is parked with the deadlines that
//! may end it (lock wait timeout, PostgreSQL's deadlock check after `deadlock_timeout`,
//! `statement_timeout`); InnoDB checks for a deadlock as soon as the wait begins. A granted
//! lock wakes the statement, which runs again from the start.

use std::sync::Arc;
use std::time::Duration;

use super::{Database, Fail, SessionId, Step};
use crate::db::lock::{Grant, LockMode, LockTarget};
use crate::db::profile::{errors, Engine};
use crate::db::sql::{LockWaitPolicy, Plan};
use crate::db::storage::{CommitSeq, TxId};
use crate::db::value::{DbError, Value};

#[derive(Debug, Clone)]
pub(super) struct Blocked {
    pub(super) plan: Arc<Plan>,
    pub(super) params: Vec<Value>,
    pub(super) mark: usize,
    pub(super) statement_snapshot: Option<CommitSeq>,
    pub(super) statement_started: Duration,
    pub(super) lock_deadline: Option<Duration>,
    pub(super) deadlock_check_at: Option<Duration>,
    pub(super) statement_deadline: Option<Duration>,
    /// The table of the row lock waited for.
    pub(super) table: String,
    /// A lock taken only to wait, given back when granted (see [`Fail::Wait`]).
    pub(super) release_on_wake: Option<LockTarget>,
    /// What the statement waits for.
    pub(super) waited: Option<LockTarget>,
}

/// Where a statement resumes after a lock wait.
#[derive(Debug, Clone, Copy)]
pub(super) struct Resume {
    pub(super) mark: usize,
    pub(super) statement_snapshot: Option<CommitSeq>,
    pub(super) statement_started: Duration,
}

impl Database {
    /// Parks the statement of `session` that has to wait for a lock on a row of `table`: its
    /// partial writes are undone (it runs again from the start when woken), and the deadlines
    /// that may end the wait are set from the session's settings.
    pub(super) fn park(
        &mut self,
        session: SessionId,
        plan: Arc<Plan>,
        params: Vec<Value>,
        resume: Resume,
        table: String,
        release_on_wake: Option<LockTarget>,
    ) {
        self.stats.lock_waits += 1;
        let tx = self.session_tx(session);
        tracing::debug!(
            session,
            tx,
            table = %table,
            target = ?self.locks.waiting_target(tx),
            waits_for = ?self.locks.waits_for(tx),
            "lock wait"
        );
        // An InnoDB INSERT keeps what it has written: it goes on from there.
        if self.sessions[&session].innodb_insert.is_none() {
            let written = self.tx_mut(session).undo.len() - resume.mark;
            if written > 0 {
                // Waiting after some rows were written (an UPDATE's insert intention).
                self.sessions
                    .get_mut(&session)
                    .expect("session")
                    .innodb_written_before_wait = written as u64;
            }
            self.undo_for_rerun(session, resume.mark);
        }
        let waited = self.locks.waiting_target(tx).cloned();
        let settings = self.sessions[&session].settings.clone();
        let now = self.now;
        let (lock_deadline, deadlock_check_at, statement_deadline) = match self.engine {
            Engine::Postgres => (
                (settings.pg_lock_timeout_ms > 0)
                    .then(|| now + Duration::from_millis(settings.pg_lock_timeout_ms)),
                Some(now + Duration::from_millis(settings.pg_deadlock_timeout_ms)),
                (settings.pg_statement_timeout_ms > 0).then(|| {
                    resume.statement_started
                        + Duration::from_millis(settings.pg_statement_timeout_ms)
                }),
            ),
            Engine::InnoDb => (
                Some(now + Duration::from_secs(settings.innodb_lock_wait_timeout_s)),
                None,
                None,
            ),
        };
        self.sessions.get_mut(&session).expect("session").blocked = Some(Blocked {
            plan,
            params,
            mark: resume.mark,
            statement_snapshot: resume.statement_snapshot,
            statement_started: resume.statement_started,
            lock_deadline,
            deadlock_check_at,
            statement_deadline,
            table,
            release_on_wake,
            waited,
        });
        if self.engine == Engine::InnoDb {
            self.innodb_deadlock_check(session);
        }
    }

    /// The earliest pending deadline (lock wait timeout, deadlock check, statement timeout).
    pub fn next_deadline(&self) -> Option<Duration> {
        self.sessions
            .values()
            .filter_map(|s| s.blocked.as_ref())
            .flat_map(|b| [b.lock_deadline, b.deadlock_check_at, b.statement_deadline])
            .flatten()
            .min()
    }

    /// Fires every deadline at or before `now`, in time order.
    pub fn advance(&mut self, now: Duration) {
        assert!(now >= self.now, "time never goes back");
        loop {
            let next = self
                .sessions
                .iter()
                .filter_map(|(&id, s)| s.blocked.as_ref().map(|b| (id, b)))
                .flat_map(|(id, b)| {
                    [
                        b.statement_deadline.map(|d| (d, 0u8, id)),
                        b.lock_deadline.map(|d| (d, 1u8, id)),
                        b.deadlock_check_at.map(|d| (d, 2u8, id)),
                    ]
                })
                .flatten()
                .filter(|&(d, _, _)| d <= now)
                .min();
            let Some((deadline, kind, session)) = next else {
                break;
            };
            self.now = self.now.max(deadline);
            match kind {
                0 => {
                    self.stats.lock_timeouts += 1;
                    self.fail_blocked(session, errors::statement_timeout());
                }
                1 => {
                    self.stats.lock_timeouts += 1;
                    let engine = self.engine;
                    self.fail_blocked(session, errors::lock_timeout(engine));
                }
                _ => self.pg_deadlock_check(session),
            }
            self.drain_wakeups();
        }
        self.now = now;
    }

    /// Runs, now, the deadlock check of every PostgreSQL wait that has one pending, in the
    /// order the waits began (their timers' order); returns whether any ran. For the stepping
    /// protocol, where each wait's check completes before the next statement is sent
    /// (`deadlock_timeout` far below a step), whatever the simulated clock says.
    pub fn run_pending_deadlock_checks(&mut self) -> bool {
        let mut ran = false;
        loop {
            let next = self
                .sessions
                .iter()
                .filter_map(|(&id, s)| s.blocked.as_ref().map(|b| (id, b)))
                .filter_map(|(id, b)| b.deadlock_check_at.map(|d| (d, id)))
                .min();
            let Some((_, session)) = next else {
                return ran;
            };
            assert_eq!(
                self.engine,
                Engine::Postgres,
                "only PostgreSQL waits run timed checks"
            );
            ran = true;
            self.pg_deadlock_check(session);
            self.drain_wakeups();
        }
    }

    /// PostgreSQL's `CheckDeadLock` for the wait of `session`, once its timer fired: a cycle
    /// through it fails it with `40P01`; none, and this wait is never checked again.
    fn pg_deadlock_check(&mut self, session: SessionId) {
        let tx = self.session_tx(session);
        if self.locks.pg_deadlock(tx) {
            let cycle = self.locks.find_cycle(tx).unwrap_or_default();
            let waits: Vec<_> = cycle
                .iter()
                .map(|&t| (t, self.locks.waiting_target(t).cloned()))
                .collect();
            tracing::debug!(tx, ?waits, "deadlock found after deadlock_timeout");
            self.stats.deadlocks += 1;
            let engine = self.engine;
            self.fail_blocked(session, errors::deadlock(engine));
        } else if let Some(b) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.blocked.as_mut())
        {
            // PostgreSQL checks once per wait; a later cycle is found by a later waiter's
            // timer.
            b.deadlock_check_at = None;
            self.clear_deadlock_checks.push(session);
        }
    }

    /// InnoDB detects a deadlock as soon as a wait closes a cycle, and rolls back the
    /// lightest transaction of the cycle (rows changed plus locks), the requester on a tie.
    /// Rolling back a victim that was only on the path can leave another cycle through the
    /// requester (its other blockers still wait for it), so this repeats until none is left.
    pub(super) fn innodb_deadlock_check(&mut self, session: SessionId) {
        let tx = self.session_tx(session);
        loop {
            if self.locks.waiting_target(tx).is_none() {
                return;
            }
            let Some(cycle) = self.locks.find_cycle(tx) else {
                return;
            };
            tracing::debug!(tx, ?cycle, "deadlock");
            let weight = |db: &Database, t: TxId| {
                let s = &db.sessions[&db.tx_session[&t]];
                let undo = s.tx.as_ref().map_or(0, |x| x.undo.len() as u64);
                // A waiting UPDATE or DELETE has written the rows it locked before the wait.
                let written = if s.blocked.is_some() {
                    s.innodb_written_before_wait
                } else {
                    0
                };
                db.locks.weight(t) + undo + written
            };
            let mut victim = tx;
            let mut victim_weight = weight(self, tx);
            for &t in cycle.iter().skip(1) {
                let w = weight(self, t);
                if w < victim_weight {
                    victim = t;
                    victim_weight = w;
                }
            }
            self.stats.deadlocks += 1;
            let victim_session = self.tx_session[&victim];
            let engine = self.engine;
            self.fail_blocked(victim_session, errors::deadlock(engine));
            if victim == tx {
                return;
            }
        }
    }

    /// Ends the blocked statement of `session` with `error`.
    pub(super) fn fail_blocked(&mut self, session: SessionId, error: DbError) {
        tracing::debug!(session, code = error.code(), "blocked statement failed");
        let blocked = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.blocked.take())
            .expect("a blocked session");
        let tx = self.session_tx(session);
        let woken = self.locks.cancel_wait(tx);
        self.woken.extend(woken);
        self.statement_failed(session, &error, blocked.mark);
        self.completions.push((session, Err(error)));
    }

    /// Re-runs statements whose lock was granted, until none is left. On InnoDB, a waiter
    /// re-pointed to a blocker that waits itself is checked for a deadlock from that blocker,
    /// as MariaDB does after granting locks.
    pub(super) fn drain_wakeups(&mut self) {
        loop {
            self.drain_granted();
            self.restart_sleeps();
            let repointed = self.locks.take_repointed();
            if repointed.is_empty() {
                return;
            }
            for tx in repointed {
                let Some(&session) = self.tx_session.get(&tx) else {
                    continue;
                };
                if self.is_blocked(session) && self.locks.waiting_target(tx).is_some() {
                    self.innodb_deadlock_check(session);
                }
            }
        }
    }

    /// PostgreSQL: a waiter that began a new sleep gets new timers: its deadlock check runs
    /// `deadlock_timeout` after this sleep began (it may be in a cycle now that it was not in
    /// before), and `lock_timeout` counts from here.
    fn restart_sleeps(&mut self) {
        let now = self.now;
        for tx in self.locks.take_restarted() {
            let Some(&session) = self.tx_session.get(&tx) else {
                continue;
            };
            let settings = self.sessions[&session].settings.clone();
            let Some(b) = self
                .sessions
                .get_mut(&session)
                .and_then(|s| s.blocked.as_mut())
            else {
                continue;
            };
            b.deadlock_check_at =
                Some(now + Duration::from_millis(settings.pg_deadlock_timeout_ms));
            if settings.pg_lock_timeout_ms > 0 {
                b.lock_deadline = Some(now + Duration::from_millis(settings.pg_lock_timeout_ms));
            }
        }
    }

    fn drain_granted(&mut self) {
        while let Some(tx) = self.woken.pop_front() {
            let Some(&session) = self.tx_session.get(&tx) else {
                continue;
            };
            let Some(blocked) = self
                .sessions
                .get_mut(&session)
                .and_then(|s| s.blocked.take())
            else {
                continue;
            };
            tracing::debug!(session, tx, "lock granted; statement runs again");
            if self.locks.waiting_target(tx).is_some() {
                // Still queued (woken for an earlier grant): keep waiting.
                self.sessions.get_mut(&session).expect("session").blocked = Some(blocked);
                continue;
            }
            if let Some(target) = &blocked.release_on_wake {
                let woken = self.locks.release(tx, target);
                self.woken.extend(woken);
            }
            let resume = Resume {
                mark: blocked.mark,
                statement_snapshot: blocked.statement_snapshot,
                statement_started: blocked.statement_started,
            };
            if let (Engine::Postgres, None, Some(LockTarget::Record { table, key })) =
                (self.engine, &blocked.release_on_wake, &blocked.waited)
            {
                // A row lock wait (not a unique check's wait for a writer): the statement
                // replays its scan up to that row (see `Ssi::replay`).
                if self.ssi.tracks(tx) {
                    self.ssi.replay(tx, table, key);
                }
            }
            let result = self.run(
                session,
                blocked.plan.clone(),
                blocked.params.clone(),
                Some(resume),
            );
            self.ssi.end_replay();
            if let Some(result) = result {
                self.completions.push((session, result));
            }
        }
    }

    /// Requests a row lock for a locking statement, applying NOWAIT / SKIP LOCKED.
    /// `Ok(false)` means skip the row.
    pub(super) fn lock_row(
        &mut self,
        tx: TxId,
        table_name: &str,
        target: &LockTarget,
        mode: LockMode,
        policy: LockWaitPolicy,
    ) -> Step<bool> {
        if policy != LockWaitPolicy::Wait && self.locks.would_wait(tx, target, mode) {
            return match policy {
                LockWaitPolicy::SkipLocked => Ok(false),
                _ => Err(errors::lock_not_available(self.engine, table_name).into()),
            };
        }
        match self.locks.request(tx, target, mode) {
            Grant::Granted => Ok(true),
            Grant::Wait(_) => Err(Fail::wait(table_name)),
        }
    }
}
