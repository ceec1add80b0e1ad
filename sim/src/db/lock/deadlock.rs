//! Deadlock detection: the waits-for edges each engine's detector follows, the cycle search,
//! and each engine's rule for what a found cycle means.
//!
//! - MariaDB (10.6 and later) follows one edge per waiter (`wait_trx`, the first conflicting
//!   lock in the record's queue) and checks when a wait begins and when a waiter is
//!   re-pointed; the victim is chosen by weight (`Database::innodb_deadlock_check`).
//! - PostgreSQL's waiter checks once, `deadlock_timeout` after its sleep began
//!   (`DeadLockCheck`): it sees hard edges (to holders of the lock it waits for: the row's
//!   holders for the waiter at the head of the queue, the head sleepers holding the tuple lock
//!   for the others) and soft edges (to earlier conflicting waiters in the same queue). A
//!   cycle of hard edges through the checker is a deadlock; one that needs a soft edge is
//!   resolved by reordering the queue, unless the waiter that would move ahead is itself on a
//!   hard cycle (`TestConfiguration` then reports a hard deadlock), and the checker is the
//!   victim.

use std::collections::BTreeSet;

use super::{conflicts, LockManager, LockMode, QueueRule, Waiter};
use crate::db::storage::TxId;

impl LockManager {
    /// The transactions `tx` waits for now (empty if it does not wait): the edges deadlock
    /// detection follows. PostgreSQL's detector sees every conflicting holder and queued
    /// request; MariaDB's (10.6 and later) follows one edge per waiter, its `wait_trx`: the
    /// first conflicting lock in the record's queue when the wait began, re-pointed when that
    /// one is released. So InnoDB finds a cycle only once the edges line up.
    pub fn waits_for(&self, tx: TxId) -> Vec<TxId> {
        match self.rule {
            QueueRule::InnoDb => self.edge.get(&tx).copied().into_iter().collect(),
            QueueRule::Postgres => self.pg_hard_edges(tx),
        }
    }

    /// PostgreSQL's hard edges of a waiter, the ones its deadlock check cannot rearrange: the
    /// conflicting holders for a waiter at the head of the row's queue (it holds the tuple
    /// lock and sleeps on their transactions), else the sleepers at the head that hold the
    /// tuple lock it waits for. (Waiting behind another waiter is a soft edge: PostgreSQL
    /// reorders the queue rather than report a deadlock through it.)
    fn pg_hard_edges(&self, tx: TxId) -> Vec<TxId> {
        let Some(target) = self.waiting_for.get(&tx) else {
            return Vec::new();
        };
        let queue = &self.queues[target];
        let position = queue
            .waiting
            .iter()
            .position(|w| w.tx == tx)
            .expect("a waiting transaction is queued");
        let waiter = queue.waiting[position];
        let holders = || {
            let mut h: Vec<TxId> = queue
                .granted
                .iter()
                .filter(|&&(t, m)| t != tx && conflicts(waiter.mode, m))
                .map(|&(t, _)| t)
                .collect();
            h.sort_unstable();
            h
        };
        if waiter.holders_only {
            return holders();
        }
        let conflict =
            |a: &Waiter, b: &Waiter| conflicts(a.mode, b.mode) || conflicts(b.mode, a.mode);
        let sleepers: Vec<&Waiter> = queue.waiting[..position]
            .iter()
            .filter(|w| !w.holders_only && w.tx != tx)
            .collect();
        let ahead: Vec<&&Waiter> = sleepers.iter().filter(|w| conflict(w, &waiter)).collect();
        if ahead.is_empty() {
            return holders();
        }
        // The heads: sleepers that no earlier sleeper conflicts with.
        let mut heads: Vec<TxId> = ahead
            .iter()
            .filter(|w| {
                let at = sleepers
                    .iter()
                    .position(|s| s.tx == w.tx)
                    .expect("a sleeper");
                !sleepers[..at].iter().any(|s| conflict(s, w))
            })
            .map(|w| w.tx)
            .collect();
        heads.sort_unstable();
        heads
    }

    /// PostgreSQL: what waiter `tx` sleeps on: `Some(holders)` at the head of the queue,
    /// `None` while it waits for the tuple lock behind other sleepers.
    pub(super) fn pg_phase(&self, tx: TxId) -> Option<Vec<TxId>> {
        let target = self.waiting_for.get(&tx)?;
        let queue = &self.queues[target];
        let position = queue.waiting.iter().position(|w| w.tx == tx)?;
        let waiter = queue.waiting[position];
        let behind = !waiter.holders_only
            && queue.waiting[..position].iter().any(|w| {
                !w.holders_only
                    && w.tx != tx
                    && (conflicts(w.mode, waiter.mode) || conflicts(waiter.mode, w.mode))
            });
        (!behind).then(|| self.pg_hard_edges(tx))
    }

    /// PostgreSQL: waiters that began a new sleep since the last call, in order: a waiter that
    /// got the tuple lock and now sleeps on the holders, or one that woke when a holder ended
    /// and sleeps on the next. Each sleep has its own `deadlock_timeout` and `lock_timeout`.
    pub fn take_restarted(&mut self) -> Vec<TxId> {
        std::mem::take(&mut self.restarted)
    }

    /// The first lock in `tx`'s queue that its waiting request conflicts with (InnoDB keeps a
    /// record's locks in one list in the order they were created: the granted ones, then the
    /// waiting ones).
    pub(super) fn first_blocker(&self, tx: TxId) -> Option<TxId> {
        let target = self.waiting_for.get(&tx)?;
        let queue = &self.queues[target];
        let position = queue.waiting.iter().position(|w| w.tx == tx)?;
        let mode = queue.waiting[position].mode;
        let granted = queue
            .granted
            .iter()
            .find(|&&(t, m)| t != tx && conflicts(mode, m))
            .map(|&(t, _)| t);
        if granted.is_some() {
            return granted;
        }
        if mode == LockMode::InsertIntention {
            return self.next_key_waiters(tx, target).first().copied();
        }
        queue.waiting[..position]
            .iter()
            .find(|w| w.tx != tx && (conflicts(mode, w.mode) || conflicts(w.mode, mode)))
            .map(|w| w.tx)
    }

    /// InnoDB's transaction weight for choosing a deadlock victim (`TRX_WEIGHT`), without the
    /// undo count: the transaction's lock structs ([`LockManager::note_struct`]: its table
    /// locks, and one record lock struct per index and lock type, as InnoDB keeps one per page
    /// and type on these small tables; a request granted after a wait stays a struct of its
    /// own) and the struct of its waiting request, with the table lock it needs if it has
    /// none of that mode yet.
    pub fn weight(&self, tx: TxId) -> u64 {
        let structs = self.structs.get(&tx);
        let mut weight = structs.map_or(0, BTreeSet::len) as u64;
        weight += self.extra_structs.get(&tx).copied().unwrap_or(0);
        if let Some(target) = self.waiting_for.get(&tx) {
            let mode = self.queues[target]
                .waiting
                .iter()
                .find(|w| w.tx == tx)
                .map(|w| w.mode)
                .expect("waiter is queued");
            let exclusive = matches!(mode, LockMode::Exclusive | LockMode::InsertIntention);
            weight += 1;
            if !self.has_table_lock(tx, target.table(), exclusive) {
                weight += 1;
            }
        }
        weight
    }

    /// InnoDB: the waiting transactions that a waiter was re-pointed to since the last call,
    /// in order; MariaDB runs its deadlock check from each of them.
    pub fn take_repointed(&mut self) -> Vec<TxId> {
        std::mem::take(&mut self.repointed)
    }

    /// A cycle of the waits-for graph through `start`, in the order the edges run from it.
    pub fn find_cycle(&self, start: TxId) -> Option<Vec<TxId>> {
        self.cycle_through(start, &|t| self.waits_for(t))
    }

    /// A cycle through `start` along `edges`, as the path from `start`.
    fn cycle_through(&self, start: TxId, edges: &dyn Fn(TxId) -> Vec<TxId>) -> Option<Vec<TxId>> {
        let mut path = vec![start];
        let mut visited = BTreeSet::new();
        Self::cycle_from(start, start, edges, &mut path, &mut visited).then_some(path)
    }

    fn cycle_from(
        start: TxId,
        at: TxId,
        edges: &dyn Fn(TxId) -> Vec<TxId>,
        path: &mut Vec<TxId>,
        visited: &mut BTreeSet<TxId>,
    ) -> bool {
        for next in edges(at) {
            if next == start {
                return true;
            }
            if visited.insert(next) {
                path.push(next);
                if Self::cycle_from(start, next, edges, path, visited) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }

    /// PostgreSQL's soft edges of a waiter: earlier waiters of its queue, not at its head,
    /// whose requests conflict with its own.
    fn pg_soft_edges(&self, tx: TxId) -> Vec<TxId> {
        let Some(target) = self.waiting_for.get(&tx) else {
            return Vec::new();
        };
        let queue = &self.queues[target];
        let Some(position) = queue.waiting.iter().position(|w| w.tx == tx) else {
            return Vec::new();
        };
        let waiter = queue.waiting[position];
        if waiter.holders_only {
            return Vec::new();
        }
        let hard = self.pg_hard_edges(tx);
        let mut soft: Vec<TxId> = queue.waiting[..position]
            .iter()
            .filter(|w| !w.holders_only && w.tx != tx && !hard.contains(&w.tx))
            .filter(|w| conflicts(w.mode, waiter.mode) || conflicts(waiter.mode, w.mode))
            .map(|w| w.tx)
            .collect();
        soft.sort_unstable();
        soft
    }

    /// PostgreSQL's deadlock check of waiter `tx` when its `deadlock_timeout` fires: whether it
    /// is deadlocked (and must abort itself). A cycle through it that needs a soft edge
    /// `a -> b` (a waits behind b) is resolved by moving `a` ahead of `b`, unless `a` is on a
    /// cycle of hard edges itself.
    pub fn pg_deadlock(&mut self, tx: TxId) -> bool {
        assert_eq!(self.rule, QueueRule::Postgres);
        // Each reordering removes a soft edge, so this ends.
        loop {
            let all = |t: TxId| {
                let mut e = self.pg_hard_edges(t);
                e.extend(self.pg_soft_edges(t));
                e
            };
            let Some(cycle) = self.cycle_through(tx, &all) else {
                return false;
            };
            if self.cycle_through(tx, &|t| self.pg_hard_edges(t)).is_some() {
                return true;
            }
            // The first soft edge of the cycle, from a waiter to one it queues behind.
            let next = |i: usize| cycle[(i + 1) % cycle.len()];
            let soft = (0..cycle.len())
                .find(|&i| self.pg_soft_edges(cycle[i]).contains(&next(i)))
                .map(|i| (cycle[i], next(i)))
                .expect("a cycle without a hard one has a soft edge");
            let (mover, ahead_of) = soft;
            if self
                .cycle_through(mover, &|t| self.pg_hard_edges(t))
                .is_some()
            {
                return true;
            }
            self.move_ahead(mover, ahead_of);
        }
    }

    /// Moves waiter `mover` just ahead of `ahead_of` in their queue (PostgreSQL rearranges a
    /// lock's wait queue to resolve a soft deadlock).
    fn move_ahead(&mut self, mover: TxId, ahead_of: TxId) {
        let target = self.waiting_for[&mover].clone();
        let queue = self.queues.get_mut(&target).expect("a waiter's queue");
        let from = queue
            .waiting
            .iter()
            .position(|w| w.tx == mover)
            .expect("queued");
        let to = queue
            .waiting
            .iter()
            .position(|w| w.tx == ahead_of)
            .expect("queued");
        assert!(to < from, "the mover waits behind");
        let waiter: Waiter = queue.waiting.remove(from);
        queue.waiting.insert(to, waiter);
        assert!(!matches!(
            waiter.mode,
            LockMode::Gap | LockMode::InsertIntention
        ));
    }
}
