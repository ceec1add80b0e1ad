//! The lock manager: row locks, InnoDB gap locks and insert intentions, FIFO wait queues, and
//! the waits-for graph that deadlock detection walks.
//!
//! Conflicts follow InnoDB (and, for row locks, PostgreSQL's tuple locks): shared and exclusive
//! row locks conflict unless both are shared; gap locks never conflict with each other or with
//! row locks, only with an insert intention into the same gap. A new request also waits behind
//! conflicting requests already queued by other transactions, which is how InnoDB keeps
//! waiters from starving and why a shared-to-exclusive upgrade behind a queued writer
//! deadlocks (`pmp-write@mysql-ser` in the conformance data).
//!
//! Key invariant: a transaction waits for at most one lock at a time, and a granted entry of a
//! transaction is never also queued as waiting for the same target.

use std::collections::{BTreeMap, BTreeSet};

use super::storage::{Key, TxId};

/// What a lock protects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum LockTarget {
    /// A row, by table and primary key.
    Record {
        /// The table.
        table: String,
        /// The primary key.
        key: Key,
    },
    /// The gap before an index record (`None` = InnoDB's supremum, the end of the index).
    Gap {
        /// The table.
        table: String,
        /// `None` for the primary key, else the secondary index number.
        index: Option<usize>,
        /// The index record the gap ends at: primary key, or index values followed by the
        /// primary key.
        before: Option<Key>,
    },
}

impl LockTarget {
    fn table(&self) -> &str {
        match self {
            LockTarget::Record { table, .. } | LockTarget::Gap { table, .. } => table,
        }
    }
}

/// Lock modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LockMode {
    /// A shared row lock (`FOR SHARE`, InnoDB serializable reads, unique checks).
    Shared,
    /// An exclusive row lock (writes, `FOR UPDATE`).
    Exclusive,
    /// A gap lock (InnoDB repeatable read and serializable).
    Gap,
    /// An insert into a gap: waits for others' gap locks, never held.
    InsertIntention,
}

fn conflicts(requested: LockMode, other: LockMode) -> bool {
    use LockMode::*;
    matches!(
        (requested, other),
        (Shared, Exclusive) | (Exclusive, Shared) | (Exclusive, Exclusive) | (InsertIntention, Gap)
    )
}

fn covers(held: LockMode, requested: LockMode) -> bool {
    held == requested || (held == LockMode::Exclusive && requested == LockMode::Shared)
}

#[derive(Debug, Default, Clone)]
struct Queue {
    granted: Vec<(TxId, LockMode)>,
    waiting: Vec<(TxId, LockMode)>,
}

/// Whether a request was granted or has to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Granted (or already held).
    Granted,
    /// Queued behind these transactions.
    Wait(Vec<TxId>),
}

/// All locks of one database.
#[derive(Debug, Default, Clone)]
pub struct LockManager {
    queues: BTreeMap<LockTarget, Queue>,
    held: BTreeMap<TxId, BTreeSet<LockTarget>>,
    waiting_for: BTreeMap<TxId, LockTarget>,
}

impl LockManager {
    /// Whether `tx` holds a lock on `target` that covers `mode`.
    pub fn holds(&self, tx: TxId, target: &LockTarget, mode: LockMode) -> bool {
        self.queues
            .get(target)
            .is_some_and(|q| q.granted.iter().any(|&(t, m)| t == tx && covers(m, mode)))
    }

    /// Whether a request of `mode` by `tx` would have to wait, without queueing it.
    pub fn would_wait(&self, tx: TxId, target: &LockTarget, mode: LockMode) -> bool {
        if self.holds(tx, target, mode) {
            return false;
        }
        !self.blockers_of(tx, target, mode, None).is_empty()
    }

    /// The transaction `tx` is waiting for a lock on, if any.
    pub fn waiting_target(&self, tx: TxId) -> Option<&LockTarget> {
        self.waiting_for.get(&tx)
    }

    /// Requests `mode` on `target` for `tx`: granted at once, or queued.
    pub fn request(&mut self, tx: TxId, target: &LockTarget, mode: LockMode) -> Grant {
        assert!(
            !self.waiting_for.contains_key(&tx),
            "a transaction waits for one lock at a time"
        );
        if self.holds(tx, target, mode) {
            return Grant::Granted;
        }
        let blockers = self.blockers_of(tx, target, mode, None);
        if blockers.is_empty() {
            self.grant(tx, target, mode);
            return Grant::Granted;
        }
        assert!(mode != LockMode::Gap, "gap locks never wait");
        self.queues
            .entry(target.clone())
            .or_default()
            .waiting
            .push((tx, mode));
        self.waiting_for.insert(tx, target.clone());
        Grant::Wait(blockers)
    }

    fn grant(&mut self, tx: TxId, target: &LockTarget, mode: LockMode) {
        if mode == LockMode::InsertIntention {
            // An insert intention is only a wait; the insert then holds the new row.
            return;
        }
        let queue = self.queues.entry(target.clone()).or_default();
        // An upgrade replaces the weaker entry, so a transaction has one entry per target.
        if let Some(entry) = queue.granted.iter_mut().find(|(t, _)| *t == tx) {
            if covers(mode, entry.1) {
                entry.1 = mode;
            }
        } else {
            queue.granted.push((tx, mode));
        }
        self.held.entry(tx).or_default().insert(target.clone());
    }

    /// The transactions a request of `mode` on `target` by `tx` waits for: conflicting holders,
    /// and conflicting requests queued before position `queued_at` (all, if `None`).
    fn blockers_of(
        &self,
        tx: TxId,
        target: &LockTarget,
        mode: LockMode,
        queued_at: Option<usize>,
    ) -> Vec<TxId> {
        let Some(queue) = self.queues.get(target) else {
            return Vec::new();
        };
        if mode == LockMode::Gap {
            // InnoDB grants gap locks at once: they only ever stop inserts.
            return Vec::new();
        }
        let mut blockers = BTreeSet::new();
        for &(t, m) in &queue.granted {
            if t != tx && conflicts(mode, m) {
                blockers.insert(t);
            }
        }
        // Only row locks queue fairly; an insert intention waits for gap holders only.
        if mode != LockMode::InsertIntention {
            let ahead = queued_at.unwrap_or(queue.waiting.len());
            for &(t, m) in &queue.waiting[..ahead] {
                if t != tx && (conflicts(mode, m) || conflicts(m, mode)) {
                    blockers.insert(t);
                }
            }
        }
        blockers.into_iter().collect()
    }

    /// The transactions `tx` waits for now (empty if it does not wait).
    pub fn waits_for(&self, tx: TxId) -> Vec<TxId> {
        let Some(target) = self.waiting_for.get(&tx) else {
            return Vec::new();
        };
        let queue = &self.queues[target];
        let position = queue
            .waiting
            .iter()
            .position(|&(t, _)| t == tx)
            .expect("a waiting transaction is queued");
        let mode = queue.waiting[position].1;
        self.blockers_of(tx, target, mode, Some(position))
    }

    /// Withdraws the queued request of `tx`; returns transactions whose requests are now
    /// granted, in queue order.
    pub fn cancel_wait(&mut self, tx: TxId) -> Vec<TxId> {
        let Some(target) = self.waiting_for.remove(&tx) else {
            return Vec::new();
        };
        let queue = self.queues.get_mut(&target).expect("queue of a waiter");
        queue.waiting.retain(|&(t, _)| t != tx);
        self.regrant(&target)
    }

    /// Releases one lock (InnoDB read committed releases rows that did not match).
    pub fn release(&mut self, tx: TxId, target: &LockTarget) -> Vec<TxId> {
        let Some(queue) = self.queues.get_mut(target) else {
            return Vec::new();
        };
        queue.granted.retain(|&(t, _)| t != tx);
        if let Some(set) = self.held.get_mut(&tx) {
            set.remove(target);
        }
        self.regrant(target)
    }

    /// Releases every lock of `tx` and withdraws its request; returns the transactions whose
    /// requests are now granted, in the order they were granted.
    pub fn release_all(&mut self, tx: TxId) -> Vec<TxId> {
        let mut woken = self.cancel_wait(tx);
        let targets = self.held.remove(&tx).unwrap_or_default();
        for target in &targets {
            if let Some(queue) = self.queues.get_mut(target) {
                queue.granted.retain(|&(t, _)| t != tx);
            }
        }
        for target in &targets {
            woken.extend(self.regrant(target));
        }
        assert!(!self.held.contains_key(&tx));
        assert!(!self.waiting_for.contains_key(&tx));
        woken
    }

    /// Grants queued requests of `target` that no longer conflict, in queue order.
    fn regrant(&mut self, target: &LockTarget) -> Vec<TxId> {
        let mut woken = Vec::new();
        loop {
            let Some(queue) = self.queues.get(target) else {
                return woken;
            };
            let grantable = (0..queue.waiting.len()).find(|&i| {
                let (t, m) = queue.waiting[i];
                self.blockers_of(t, target, m, Some(i)).is_empty()
            });
            let Some(i) = grantable else {
                break;
            };
            let (tx, mode) = self
                .queues
                .get_mut(target)
                .expect("queue")
                .waiting
                .remove(i);
            self.waiting_for.remove(&tx);
            self.grant(tx, target, mode);
            woken.push(tx);
        }
        if let Some(queue) = self.queues.get(target) {
            if queue.granted.is_empty() && queue.waiting.is_empty() {
                self.queues.remove(target);
            }
        }
        woken
    }

    /// InnoDB's transaction weight for choosing a deadlock victim, without the undo count:
    /// lock structures (one per table and lock kind, as InnoDB keeps one per page and mode),
    /// table intention locks, and the waiting request.
    pub fn weight(&self, tx: TxId) -> u64 {
        let mut kinds = BTreeSet::new();
        let mut intentions = BTreeSet::new();
        if let Some(targets) = self.held.get(&tx) {
            for target in targets {
                let mode = self.queues[target]
                    .granted
                    .iter()
                    .find(|&&(t, _)| t == tx)
                    .map(|&(_, m)| m)
                    .expect("held lock is granted");
                kinds.insert((target.table(), mode));
                intentions.insert((target.table(), mode == LockMode::Exclusive));
            }
        }
        let mut weight = (kinds.len() + intentions.len()) as u64;
        if let Some(target) = self.waiting_for.get(&tx) {
            let mode = self.queues[target]
                .waiting
                .iter()
                .find(|&&(t, _)| t == tx)
                .map(|&(_, m)| m)
                .expect("waiter is queued");
            let exclusive = matches!(mode, LockMode::Exclusive | LockMode::InsertIntention);
            weight += 1;
            if intentions.insert((target.table(), exclusive)) {
                weight += 1;
            }
        }
        weight
    }

    /// A cycle of the waits-for graph through `start`, in the order the edges run from it.
    pub fn find_cycle(&self, start: TxId) -> Option<Vec<TxId>> {
        let mut path = vec![start];
        let mut visited = BTreeSet::new();
        self.find_cycle_from(start, start, &mut path, &mut visited)
            .then_some(path)
    }

    fn find_cycle_from(
        &self,
        start: TxId,
        at: TxId,
        path: &mut Vec<TxId>,
        visited: &mut BTreeSet<TxId>,
    ) -> bool {
        for next in self.waits_for(at) {
            if next == start {
                return true;
            }
            if visited.insert(next) {
                path.push(next);
                if self.find_cycle_from(start, next, path, visited) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }

    /// Drops every lock (the server crashed).
    pub fn clear(&mut self) {
        self.queues.clear();
        self.held.clear();
        self.waiting_for.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::value::Value;

    fn row(k: i64) -> LockTarget {
        LockTarget::Record {
            table: "t".into(),
            key: vec![Value::Int(k)],
        }
    }

    #[test]
    fn upgrade_behind_a_queued_writer_deadlocks() {
        let mut locks = LockManager::default();
        assert_eq!(locks.request(1, &row(1), LockMode::Shared), Grant::Granted);
        assert_eq!(
            locks.request(2, &row(1), LockMode::Exclusive),
            Grant::Wait(vec![1])
        );
        // 1 upgrades: it waits behind 2's queued request, and 2 waits for 1.
        assert_eq!(
            locks.request(1, &row(1), LockMode::Exclusive),
            Grant::Wait(vec![2])
        );
        assert_eq!(locks.find_cycle(1), Some(vec![1, 2]));
        assert_eq!(locks.cancel_wait(2), vec![1]);
        assert!(locks.holds(1, &row(1), LockMode::Exclusive));
    }

    #[test]
    fn gap_locks_only_block_inserts() {
        let mut locks = LockManager::default();
        let gap = LockTarget::Gap {
            table: "t".into(),
            index: None,
            before: None,
        };
        assert_eq!(locks.request(1, &gap, LockMode::Gap), Grant::Granted);
        assert_eq!(locks.request(2, &gap, LockMode::Gap), Grant::Granted);
        assert_eq!(
            locks.request(3, &gap, LockMode::InsertIntention),
            Grant::Wait(vec![1, 2])
        );
        assert!(locks.release_all(1).is_empty());
        assert_eq!(locks.release_all(2), vec![3]);
        assert!(locks.waiting_target(3).is_none());
    }

    #[test]
    fn shared_locks_are_granted_together_in_queue_order() {
        let mut locks = LockManager::default();
        assert_eq!(
            locks.request(1, &row(1), LockMode::Exclusive),
            Grant::Granted
        );
        assert!(matches!(
            locks.request(2, &row(1), LockMode::Shared),
            Grant::Wait(_)
        ));
        assert!(matches!(
            locks.request(3, &row(1), LockMode::Shared),
            Grant::Wait(_)
        ));
        assert!(matches!(
            locks.request(4, &row(1), LockMode::Exclusive),
            Grant::Wait(_)
        ));
        assert_eq!(locks.release_all(1), vec![2, 3]);
        assert!(locks.release_all(2).is_empty());
        assert_eq!(locks.release_all(3), vec![4]);
    }
}
