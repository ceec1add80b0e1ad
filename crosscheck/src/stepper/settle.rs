//! When a step is over: every statement in flight has finished or waits for a lock, as the
//! server itself reports it, with the timers due in the step fired.

use std::time::{Duration, Instant};

use super::{Clock, StepError, Stepper, PG_DEADLOCK_TIMEOUT_VIRTUAL, STEP_LIMIT};
use crate::server::EngineKind;

impl Stepper {
    /// Waits until every statement in flight has finished or waits for a lock with its timers
    /// due in `(start, end]` fired, and every zombie backend has ended or waits.
    pub(super) async fn settle(&mut self, start: Duration, end: Duration) -> Result<(), StepError> {
        let began = Instant::now();
        let mut confirmed = 0;
        let mut poll = Duration::from_millis(1);
        loop {
            if self.drain(None).await? {
                confirmed = 0;
                poll = Duration::from_millis(1);
            }
            let idle = self.zombies.is_empty()
                && self
                    .sessions
                    .values()
                    .all(|s| s.in_flight.is_none() || s.frozen);
            if idle {
                if self.release_queued().await? {
                    continue;
                }
                return Ok(());
            }
            // The cheapest look first: an answer that arrives right away needs no question.
            if let Ok(Some(answer)) = tokio::time::timeout(poll, self.pool.answers.recv()).await {
                self.stash.push_back(answer);
                confirmed = 0;
                poll = Duration::from_millis(1);
                continue;
            }
            if !self.zombies.is_empty() {
                self.forget_ended_zombies()
                    .await
                    .map_err(|e| self.fail(e))?;
            }
            let flights: Vec<(String, i64)> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.in_flight.is_some() && !s.frozen)
                .map(|(n, s)| (n.clone(), s.real.backend))
                .collect();
            if flights.is_empty() && self.zombies.is_empty() {
                if self.release_queued().await? {
                    continue;
                }
                return Ok(());
            }
            let settled = match self.kind {
                EngineKind::Postgres => self.pg_settled(&flights, start, end).await?,
                EngineKind::MariaDb => self.maria_settled(&flights, start, end).await?,
            };
            if settled {
                confirmed += 1;
                // MariaDB's counter drops only when a woken waiter runs: look twice.
                if self.kind == EngineKind::Postgres || confirmed >= 2 {
                    if self.release_queued().await? {
                        confirmed = 0;
                        poll = Duration::from_millis(1);
                        continue;
                    }
                    return Ok(());
                }
            } else {
                confirmed = 0;
            }
            if began.elapsed() > STEP_LIMIT {
                return Err(self.fail(format!(
                    "the step did not settle in {} s: in flight {:?}, zombies {:?}",
                    STEP_LIMIT.as_secs(),
                    flights,
                    self.zombies
                )));
            }
            poll = (poll * 2).min(Duration::from_millis(4));
        }
    }

    /// Whether a timer that ends a wait begun at `wait_v` (virtual) is due by `end`.
    fn due(wait_v: Duration, timeout: Option<Duration>, end: Duration) -> bool {
        timeout.is_some_and(|t| wait_v + t <= end)
    }

    async fn pg_settled(
        &mut self,
        flights: &[(String, i64)],
        start: Duration,
        end: Duration,
    ) -> Result<bool, StepError> {
        let mut backends: Vec<i64> = flights.iter().map(|(_, b)| *b).collect();
        backends.extend(&self.zombies);
        let waits = self
            .pool
            .control
            .pg_waiting(&backends)
            .await
            .map_err(|e| self.fail(e))?;
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        for zombie in &self.zombies {
            // A closed session's backend: its check notice went to a closed socket, so its
            // wait counts once the check has surely run.
            match waits.iter().find(|w| w.backend == *zombie) {
                Some(w) if w.wait_start.is_some_and(|s| now_s - s > 0.2) => {}
                _ => return Ok(false),
            }
        }
        let clock = self.clock;
        let mut settled = true;
        for (name, backend) in flights {
            let session = self.sessions.get_mut(name).expect("in flight");
            let timers = session.timers.clone();
            let notice = *session
                .real
                .check_notice
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let flight = session.in_flight.as_mut().expect("in flight");
            let Some(wait) = waits.iter().find(|w| w.backend == *backend) else {
                flight.wait = None;
                settled = false;
                continue;
            };
            let Some(wait_start) = wait.wait_start else {
                settled = false;
                continue;
            };
            if flight.wait.as_ref().map(|w| w.0) != Some(Some(wait_start)) {
                flight.wait = Some((Some(wait_start), start, Instant::now()));
            }
            let (_, wait_v, wait_real) = flight.wait.expect("set");
            let deadlock_v = match clock {
                Clock::Steps => flight.deadlock_check.then_some(Duration::ZERO),
                Clock::Conformance => Some(timers.deadlock.unwrap_or(PG_DEADLOCK_TIMEOUT_VIRTUAL)),
            };
            if Stepper::due(wait_v, deadlock_v, end) && !notice.is_some_and(|n| n >= wait_start) {
                settled = false;
            }
            let bound = |t: Duration| wait_real.elapsed() < t + Duration::from_secs(5);
            if clock == Clock::Conformance {
                if Stepper::due(wait_v, timers.lock, end) && bound(timers.lock.unwrap_or_default())
                {
                    settled = false;
                }
                if Stepper::due(flight.sent_v, timers.statement, end)
                    && bound(timers.statement.unwrap_or_default())
                {
                    settled = false;
                }
            }
        }
        Ok(settled)
    }

    async fn maria_settled(
        &mut self,
        flights: &[(String, i64)],
        start: Duration,
        end: Duration,
    ) -> Result<bool, StepError> {
        let waiting = self
            .pool
            .control
            .maria_lock_waits()
            .await
            .map_err(|e| self.fail(e))?;
        let expected = (flights.len() + self.zombies.len()) as u64;
        if waiting < expected {
            return Ok(false);
        }
        // The counter drops only when a woken waiter's thread runs: confirm each backend from
        // the transactions' wait locks, which the granting transaction clears itself.
        let waiters = self
            .pool
            .control
            .maria_waiting()
            .await
            .map_err(|e| self.fail(e))?;
        let all_wait = flights
            .iter()
            .map(|(_, b)| b)
            .chain(&self.zombies)
            .all(|b| waiters.contains(b));
        if !all_wait {
            return Ok(false);
        }
        let mut settled = true;
        for (name, _) in flights {
            let session = self.sessions.get_mut(name).expect("in flight");
            let timers = session.timers.clone();
            let flight = session.in_flight.as_mut().expect("in flight");
            if flight.wait.is_none() {
                flight.wait = Some((None, start, Instant::now()));
            }
            let (_, wait_v, wait_real) = flight.wait.expect("set");
            if Stepper::due(wait_v, timers.lock, end)
                && wait_real.elapsed() < timers.lock.unwrap_or_default() + Duration::from_secs(5)
            {
                settled = false;
            }
        }
        Ok(settled)
    }
}
