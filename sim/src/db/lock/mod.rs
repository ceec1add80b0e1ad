//! The lock manager: row locks, InnoDB gap locks and insert intentions, wait queues, and the
//! waits-for graph that deadlock detection walks.
//!
//! Conflicts follow InnoDB (and, for row locks, PostgreSQL's tuple locks): shared and exclusive
//! row locks conflict unless both are shared; gap locks never conflict with each other or with
//! row locks, only with an insert intention into the same gap.
//!
//! Who waits behind whom is the engine's own rule ([`QueueRule`]):
//! - InnoDB queues every record lock request first-come first-served: a new request also waits
//!   behind conflicting requests already queued by other transactions. That keeps waiters from
//!   starving, and it is why a shared-to-exclusive upgrade behind a queued writer deadlocks
//!   (`pmp-write@mysql-ser` in the conformance data).
//! - PostgreSQL keeps row locks in the tuple (xmax, or a MultiXact of lockers) and uses the
//!   heavyweight tuple lock only to order transactions that must sleep (`heap_lock_tuple`). A
//!   request compatible with the current holders is granted at once, even with conflicting
//!   waiters queued; a transaction that already holds a weaker lock on the row (an upgrade)
//!   skips the tuple lock and waits for the conflicting holders only; everyone else queues on
//!   the tuple lock behind earlier conflicting sleepers, first-come first-served.
//!
//! Every grant is logged per transaction, so a rollback to a savepoint can give back exactly
//! the locks taken after it ([`LockManager::rollback_to`]).
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
    /// InnoDB: a record of a secondary index, locked by a locking read through that index and
    /// by a unique check that meets a duplicate in it (a lock of its own, apart from the row's
    /// clustered record).
    Entry {
        /// The table.
        table: String,
        /// The secondary index number.
        index: usize,
        /// The index values followed by the primary key.
        entry: Key,
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
    /// The table the target is in.
    pub fn table(&self) -> &str {
        match self {
            LockTarget::Record { table, .. }
            | LockTarget::Entry { table, .. }
            | LockTarget::Gap { table, .. } => table,
        }
    }

    /// The secondary index the target is in; `None` for the clustered index.
    pub fn index(&self) -> Option<usize> {
        match self {
            LockTarget::Record { .. } => None,
            LockTarget::Entry { index, .. } => Some(*index),
            LockTarget::Gap { index, .. } => *index,
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

/// InnoDB: what a record lock struct locks (`LOCK_ORDINARY`, `LOCK_GAP`, `LOCK_REC_NOT_GAP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RecordLockKind {
    /// A next-key lock: the record and the gap before it.
    NextKey,
    /// The gap before the record only.
    GapOnly,
    /// The record only.
    RecordOnly,
}

/// InnoDB: one lock struct of a transaction, as its deadlock weight counts them: a table lock
/// (`kind` `None`, intention shared or exclusive) or record locks of one type in one index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct LockStruct {
    table: String,
    index: Option<usize>,
    exclusive: bool,
    kind: Option<RecordLockKind>,
}

/// Which engine's rule decides who waits behind whom (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueRule {
    /// InnoDB: first-come first-served among all conflicting requests.
    #[default]
    InnoDb,
    /// PostgreSQL: compatible-with-holders requests and upgrades do not queue.
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waiter {
    tx: TxId,
    mode: LockMode,
    /// PostgreSQL: the waiter sleeps on the holders only, not on the tuple lock (an upgrade
    /// of its own lock, or a unique check waiting for the inserting transaction).
    holders_only: bool,
}

#[derive(Debug, Default, Clone)]
struct Queue {
    granted: Vec<(TxId, LockMode)>,
    waiting: Vec<Waiter>,
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
    rule: QueueRule,
    queues: BTreeMap<LockTarget, Queue>,
    held: BTreeMap<TxId, BTreeSet<LockTarget>>,
    waiting_for: BTreeMap<TxId, LockTarget>,
    /// Per transaction, every grant in order: the target and the mode held before it.
    log: BTreeMap<TxId, Vec<(LockTarget, Option<LockMode>)>>,
    /// InnoDB: the one transaction each waiter is recorded as waiting for (`wait_trx`).
    edge: BTreeMap<TxId, TxId>,
    /// InnoDB: blockers that a waiter was re-pointed to while they wait themselves; the
    /// deadlock check runs from them ([`LockManager::take_repointed`]).
    repointed: Vec<TxId>,
    /// PostgreSQL: for each waiter, the holders it sleeps on once it is at the head of the
    /// row's queue (`None` while it waits for the tuple lock behind other sleepers).
    sleeping_on: BTreeMap<TxId, Option<Vec<TxId>>>,
    /// PostgreSQL: waiters that began a new sleep (see [`LockManager::take_restarted`]).
    restarted: Vec<TxId>,
    /// InnoDB: each transaction's lock structs, for its deadlock weight.
    structs: BTreeMap<TxId, BTreeSet<LockStruct>>,
    /// InnoDB: waiters whose request is a next-key lock, and the gap it covers: the waiting
    /// lock already stops inserts into that gap, and is granted with its record.
    next_key_waits: BTreeMap<TxId, LockTarget>,
    /// InnoDB: lock structs beyond one per index and type ([`LockManager::weight`]): a
    /// waiting request is a struct of its own, and when granted it stays one (`lock_grant`
    /// only clears its wait flag), beside any struct of the same type the transaction had.
    extra_structs: BTreeMap<TxId, u64>,
    /// InnoDB: the index and lock type (table, index, exclusive, kind) of a request granted
    /// or cancelled after a wait, until the statement notes a struct of that type: if the
    /// transaction had none of that type, the waiting one is it, not an extra one
    /// (`lock_rec_add_to_queue` reuses a struct of the same type and page).
    granted_waits: BTreeMap<TxId, (String, Option<usize>, bool, RecordLockKind)>,
    /// InnoDB: the record locks each transaction took, by what they lock (a next-key lock
    /// under both its record and its gap) and whether exclusive, as `lock_rec_has_expl`
    /// consults them: a request one of them covers adds no lock and no struct.
    record_lock_kinds: BTreeMap<TxId, BTreeMap<LockTarget, BTreeSet<(RecordLockKind, bool)>>>,
}

impl LockManager {
    /// An empty lock manager queueing by `rule`.
    pub fn new(rule: QueueRule) -> LockManager {
        LockManager {
            rule,
            ..LockManager::default()
        }
    }

    /// Whether `tx` holds a lock on `target` that covers `mode`.
    pub fn holds(&self, tx: TxId, target: &LockTarget, mode: LockMode) -> bool {
        self.queues
            .get(target)
            .is_some_and(|q| q.granted.iter().any(|&(t, m)| t == tx && covers(m, mode)))
    }

    /// Whether any transaction holds or waits for a lock on `target` (purge keeps the
    /// records that locks refer to).
    pub fn is_locked(&self, target: &LockTarget) -> bool {
        self.queues.contains_key(target)
    }

    /// Whether a request of `mode` by `tx` would have to wait, without queueing it.
    pub fn would_wait(&self, tx: TxId, target: &LockTarget, mode: LockMode) -> bool {
        if self.holds(tx, target, mode) {
            return false;
        }
        let holders_only = self.rule == QueueRule::Postgres && self.held_mode(tx, target).is_some();
        !self
            .blockers_of(tx, target, mode, None, holders_only)
            .is_empty()
    }

    /// InnoDB: notes that `tx` holds a table lock on `table` (intention exclusive or shared),
    /// which a statement takes before it locks or inserts rows.
    pub fn note_table_lock(&mut self, tx: TxId, table: &str, exclusive: bool) {
        if !exclusive && self.has_table_lock(tx, table, true) {
            // Intention exclusive covers intention shared: `lock_table` adds no struct.
            return;
        }
        self.structs.entry(tx).or_default().insert(LockStruct {
            table: table.to_string(),
            index: None,
            exclusive,
            kind: None,
        });
    }

    /// InnoDB: whether `tx` holds a table lock on `table` at least as strong as intention
    /// exclusive (`exclusive`) or intention shared.
    fn has_table_lock(&self, tx: TxId, table: &str, exclusive: bool) -> bool {
        self.structs.get(&tx).is_some_and(|set| {
            set.iter().any(|s| {
                s.kind.is_none() && s.table == table && (s.exclusive || s.exclusive == exclusive)
            })
        })
    }

    /// InnoDB: whether a record lock of `kind` on `target` (a record, or the gap before one
    /// for [`RecordLockKind::GapOnly`]) is covered by one `tx` already holds there, as
    /// `lock_rec_has_expl` finds: one lock of at least the mode that locks what is asked (a
    /// next-key lock covers its record and its gap; any lock covers the supremum). Such a
    /// request adds no lock struct. A lock given back since no longer covers anything.
    pub fn record_lock_covered(
        &self,
        tx: TxId,
        target: &LockTarget,
        exclusive: bool,
        kind: RecordLockKind,
    ) -> bool {
        if !self.held.get(&tx).is_some_and(|set| set.contains(target)) {
            return false;
        }
        let Some(kinds) = self.record_lock_kinds.get(&tx).and_then(|m| m.get(target)) else {
            return false;
        };
        // A record lock downgraded since (read committed gives an upgrade back) covers only
        // the mode it has now.
        let downgraded = matches!(target, LockTarget::Record { .. } | LockTarget::Entry { .. })
            && self.held_mode(tx, target) != Some(LockMode::Exclusive);
        let supremum = matches!(target, LockTarget::Gap { before: None, .. });
        kinds.iter().any(|&(held, held_exclusive)| {
            let strong_enough = (held_exclusive && !downgraded) || !exclusive;
            let locks_it = supremum
                || match kind {
                    RecordLockKind::NextKey => held == RecordLockKind::NextKey,
                    RecordLockKind::RecordOnly => held != RecordLockKind::GapOnly,
                    RecordLockKind::GapOnly => held != RecordLockKind::RecordOnly,
                };
            strong_enough && locks_it
        })
    }

    /// InnoDB: notes that the next-key lock `tx` took on a record also locks `gap`, the gap
    /// before it (see [`LockManager::record_lock_covered`]).
    pub fn note_next_key_gap(&mut self, tx: TxId, gap: &LockTarget, exclusive: bool) {
        assert!(matches!(gap, LockTarget::Gap { .. }), "{gap:?} is no gap");
        self.note_record_lock_kind(tx, gap, RecordLockKind::NextKey, exclusive);
    }

    fn note_record_lock_kind(
        &mut self,
        tx: TxId,
        target: &LockTarget,
        kind: RecordLockKind,
        exclusive: bool,
    ) {
        self.record_lock_kinds
            .entry(tx)
            .or_default()
            .entry(target.clone())
            .or_default()
            .insert((kind, exclusive));
    }

    /// Forgets that `tx` holds a lock on `target`, once it gave the lock back: it covers
    /// nothing any more ([`LockManager::record_lock_covered`]).
    fn forget_held(&mut self, tx: TxId, target: &LockTarget) {
        if let Some(set) = self.held.get_mut(&tx) {
            set.remove(target);
        }
        if let Some(kinds) = self.record_lock_kinds.get_mut(&tx) {
            kinds.remove(target);
        }
    }

    /// InnoDB: notes that `tx` holds a record lock of `kind` on `target` (a record or the gap
    /// before one), for its deadlock weight ([`LockManager::weight`]).
    pub fn note_struct(
        &mut self,
        tx: TxId,
        target: &LockTarget,
        exclusive: bool,
        kind: RecordLockKind,
    ) {
        let (table, index) = (target.table(), target.index());
        self.note_table_lock(tx, table, exclusive);
        self.note_record_lock_kind(tx, target, kind, exclusive);
        let new = self.structs.entry(tx).or_default().insert(LockStruct {
            table: table.to_string(),
            index,
            exclusive,
            kind: Some(kind),
        });
        let granted_wait = self
            .granted_waits
            .get(&tx)
            .is_some_and(|(t, i, e, k)| t == table && *i == index && *e == exclusive && *k == kind);
        if granted_wait {
            self.granted_waits.remove(&tx);
            if new {
                // The struct of the granted request is the first of its type.
                let extra = self
                    .extra_structs
                    .get_mut(&tx)
                    .expect("counted when granted");
                assert!(*extra > 0);
                *extra -= 1;
            }
        } else if !new && self.rule == QueueRule::InnoDb && self.others_wait_at(tx, target) {
            // `lock_rec_add_to_queue` sets the bit in a similar struct of the page only when
            // no request waits at that record (on it or on its gap); else it creates one.
            *self.extra_structs.entry(tx).or_default() += 1;
        }
    }

    /// Whether a transaction other than `tx` waits at the index record of `target` (for the
    /// record, or for the gap before it: InnoDB keeps both at one heap number of the page).
    fn others_wait_at(&self, tx: TxId, target: &LockTarget) -> bool {
        let (record, gap) = match target {
            LockTarget::Record { table, key } => (
                Some(target.clone()),
                LockTarget::Gap {
                    table: table.clone(),
                    index: None,
                    before: Some(key.clone()),
                },
            ),
            LockTarget::Entry {
                table,
                index,
                entry,
            } => (
                Some(target.clone()),
                LockTarget::Gap {
                    table: table.clone(),
                    index: Some(*index),
                    before: Some(entry.clone()),
                },
            ),
            LockTarget::Gap {
                table,
                index,
                before,
            } => {
                let record = before.as_ref().map(|key| match index {
                    None => LockTarget::Record {
                        table: table.clone(),
                        key: key.clone(),
                    },
                    Some(index) => LockTarget::Entry {
                        table: table.clone(),
                        index: *index,
                        entry: key.clone(),
                    },
                });
                (record, target.clone())
            }
        };
        assert!(matches!(gap, LockTarget::Gap { .. }));
        record
            .iter()
            .chain(std::iter::once(&gap))
            .filter_map(|t| self.queues.get(t))
            .any(|q| q.waiting.iter().any(|w| w.tx != tx))
    }

    /// InnoDB: the waiting record lock request of `tx` is a next-key lock that also covers
    /// `gap` (InnoDB queues it as one lock): inserts into the gap wait for it
    /// (`lock_rec_insert_check_and_lock` counts waiting requests too), and the gap is granted
    /// with the record.
    pub fn note_next_key_wait(&mut self, tx: TxId, gap: &LockTarget) {
        assert!(
            self.waiting_for.contains_key(&tx),
            "a next-key request waits"
        );
        assert!(matches!(gap, LockTarget::Gap { .. }));
        self.next_key_waits.insert(tx, gap.clone());
    }

    /// The transaction `tx` is waiting for a lock on, if any.
    pub fn waiting_target(&self, tx: TxId) -> Option<&LockTarget> {
        self.waiting_for.get(&tx)
    }

    /// Requests `mode` on `target` for `tx`: granted at once, or queued.
    pub fn request(&mut self, tx: TxId, target: &LockTarget, mode: LockMode) -> Grant {
        self.request_as(tx, target, mode, false)
    }

    /// Requests `mode` on `target` to wait until the current holders are gone, as
    /// PostgreSQL's unique check waits for the inserting transaction (`XactLockTableWait`)
    /// rather than queueing on the tuple lock. On InnoDB this is [`LockManager::request`].
    pub fn request_holder_wait(&mut self, tx: TxId, target: &LockTarget, mode: LockMode) -> Grant {
        self.request_as(tx, target, mode, true)
    }

    fn request_as(
        &mut self,
        tx: TxId,
        target: &LockTarget,
        mode: LockMode,
        holder_wait: bool,
    ) -> Grant {
        assert!(
            !self.waiting_for.contains_key(&tx),
            "a transaction waits for one lock at a time"
        );
        if self.holds(tx, target, mode) {
            return Grant::Granted;
        }
        let holders_only = self.rule == QueueRule::Postgres
            && (holder_wait || self.held_mode(tx, target).is_some());
        let blockers = self.blockers_of(tx, target, mode, None, holders_only);
        if blockers.is_empty() {
            self.grant(tx, target, mode);
            return Grant::Granted;
        }
        assert!(mode != LockMode::Gap, "gap locks never wait");
        self.queues
            .entry(target.clone())
            .or_default()
            .waiting
            .push(Waiter {
                tx,
                mode,
                holders_only,
            });
        self.waiting_for.insert(tx, target.clone());
        match self.rule {
            QueueRule::InnoDb => {
                let first = self.first_blocker(tx).expect("a waiter has a blocker");
                self.edge.insert(tx, first);
            }
            QueueRule::Postgres => {
                let phase = self.pg_phase(tx);
                self.sleeping_on.insert(tx, phase);
            }
        }
        Grant::Wait(blockers)
    }

    /// The mode `tx` holds on `target`, if any.
    fn held_mode(&self, tx: TxId, target: &LockTarget) -> Option<LockMode> {
        self.queues
            .get(target)?
            .granted
            .iter()
            .find(|&&(t, _)| t == tx)
            .map(|&(_, m)| m)
    }

    fn grant(&mut self, tx: TxId, target: &LockTarget, mode: LockMode) {
        if mode == LockMode::InsertIntention {
            // An insert intention is only a wait; the insert then holds the new row.
            return;
        }
        let queue = self.queues.entry(target.clone()).or_default();
        // An upgrade replaces the weaker entry, so a transaction has one entry per target.
        let previous = match queue.granted.iter_mut().find(|(t, _)| *t == tx) {
            Some(entry) => {
                let previous = entry.1;
                if covers(mode, entry.1) {
                    entry.1 = mode;
                }
                Some(previous)
            }
            None => {
                queue.granted.push((tx, mode));
                None
            }
        };
        self.held.entry(tx).or_default().insert(target.clone());
        self.log
            .entry(tx)
            .or_default()
            .push((target.clone(), previous));
    }

    /// InnoDB: `owner`'s implicit lock on a secondary index record it wrote becomes an
    /// explicit exclusive lock when another transaction asks for a lock on that record
    /// (`lock_rec_convert_impl_to_expl`); the asker then queues on the record itself.
    pub fn grant_converted(&mut self, owner: TxId, target: &LockTarget) {
        assert!(matches!(target, LockTarget::Entry { .. }));
        if self.holds(owner, target, LockMode::Exclusive) {
            return;
        }
        // The write came first: nobody else can hold the record it implicitly locks.
        assert!(self.queues.get(target).is_none_or(|q| q
            .granted
            .iter()
            .all(|&(t, m)| t == owner || m == LockMode::Gap)));
        self.grant(owner, target, LockMode::Exclusive);
    }

    /// InnoDB: a record inserted into the gap `from` splits it, and every transaction with a
    /// gap lock on it gets one on `to`, the gap before the new record, as well
    /// (`lock_update_insert`, `lock_rec_inherit_to_gap_if_gap_lock`): the gap it locked stays
    /// locked on both sides of the new record.
    pub fn inherit_gap(&mut self, from: &LockTarget, to: &LockTarget) {
        assert!(matches!(from, LockTarget::Gap { .. }) && matches!(to, LockTarget::Gap { .. }));
        let holders: Vec<TxId> = self.queues.get(from).map_or_else(Vec::new, |q| {
            q.granted
                .iter()
                .filter(|&&(_, m)| m == LockMode::Gap)
                .map(|&(t, _)| t)
                .collect()
        });
        for tx in holders {
            if self.holds(tx, to, LockMode::Gap) {
                continue;
            }
            self.grant(tx, to, LockMode::Gap);
            // The inherited lock joins a gap struct of the holder in that index, shared or
            // exclusive as its other locks there.
            let exclusive = self.gap_struct_exclusive(tx, to);
            self.note_struct(tx, to, exclusive, RecordLockKind::GapOnly);
        }
    }

    /// InnoDB: the struct of a request whose wait ended (granted, or cancelled because its
    /// record went away) stays in the transaction's locks: `lock_grant` and `lock_rec_cancel`
    /// only clear its wait flag.
    fn note_ended_wait(&mut self, tx: TxId, target: &LockTarget, mode: LockMode, next_key: bool) {
        if self.rule != QueueRule::InnoDb {
            return;
        }
        *self.extra_structs.entry(tx).or_default() += 1;
        if mode != LockMode::InsertIntention {
            let kind = if next_key {
                RecordLockKind::NextKey
            } else {
                RecordLockKind::RecordOnly
            };
            let (table, index) = (target.table().to_string(), target.index());
            let exclusive = mode == LockMode::Exclusive;
            self.granted_waits
                .insert(tx, (table, index, exclusive, kind));
        }
    }

    /// InnoDB: an index record is removed (the insert that made it rolled back). Its locks
    /// pass to the next record as gap locks (`lock_update_delete`, `lock_rec_inherit_to_gap`):
    /// every lock and waiting request on the record or its gap, except insert intentions and
    /// those `inherits` refuses (read committed does not keep an exclusive lock as a gap
    /// lock), so what was locked stays locked. The requests waiting for the record are
    /// cancelled (`lock_rec_reset_and_release_wait`): their statements run again and find
    /// the record gone. `owner`'s own lock on the record is implicit in it and goes with it.
    /// Returns the transactions whose waits ended, in queue order.
    pub fn remove_record(
        &mut self,
        owner: TxId,
        record: &LockTarget,
        gap: &LockTarget,
        heir: &LockTarget,
        inherits: impl Fn(TxId, bool) -> bool,
    ) -> Vec<TxId> {
        assert!(matches!(
            record,
            LockTarget::Record { .. } | LockTarget::Entry { .. }
        ));
        assert!(matches!(gap, LockTarget::Gap { .. }) && matches!(heir, LockTarget::Gap { .. }));
        let record_queue = self.queues.remove(record).unwrap_or_default();
        let gap_queue = self.queues.remove(gap).unwrap_or_default();
        // Who inherits, exclusive or shared, in the order InnoDB walks the record's locks.
        let mut heirs: Vec<(TxId, bool)> = Vec::new();
        for &(t, m) in &record_queue.granted {
            if t != owner {
                heirs.push((t, m == LockMode::Exclusive));
            }
        }
        for w in &record_queue.waiting {
            heirs.push((w.tx, w.mode == LockMode::Exclusive));
        }
        for &(t, m) in &gap_queue.granted {
            if m == LockMode::Gap {
                let exclusive = self.gap_struct_exclusive(t, gap);
                heirs.push((t, exclusive));
            }
        }
        for &(t, _) in record_queue.granted.iter().chain(&gap_queue.granted) {
            self.forget_held(t, record);
            self.forget_held(t, gap);
        }
        let mut ended = Vec::new();
        for w in record_queue.waiting.iter().chain(&gap_queue.waiting) {
            let (_, next_key) = self.forget_wait(w.tx).expect("a queued waiter");
            self.note_ended_wait(w.tx, record, w.mode, next_key.is_some());
            ended.push(w.tx);
        }
        // A next-key request waiting on another record may cover the removed gap.
        let covering: Vec<TxId> = self
            .next_key_waits
            .iter()
            .filter(|(_, g)| *g == gap)
            .map(|(&t, _)| t)
            .collect();
        for t in covering {
            self.next_key_waits.insert(t, heir.clone());
        }
        for (t, exclusive) in heirs {
            if !inherits(t, exclusive) || self.holds(t, heir, LockMode::Gap) {
                continue;
            }
            self.grant(t, heir, LockMode::Gap);
            self.note_struct(t, heir, exclusive, RecordLockKind::GapOnly);
        }
        assert!(!self.queues.contains_key(record) && !self.queues.contains_key(gap));
        ended
    }

    /// Whether the gap lock `tx` holds on `gap` is exclusive: as its other next-key and gap
    /// locks in that index (the manager keeps a gap lock's mode in its struct only).
    fn gap_struct_exclusive(&self, tx: TxId, gap: &LockTarget) -> bool {
        let (table, index) = (gap.table(), gap.index());
        self.structs.get(&tx).is_some_and(|set| {
            set.iter().any(|s| {
                s.table == table
                    && s.index == index
                    && s.exclusive
                    && matches!(
                        s.kind,
                        Some(RecordLockKind::NextKey | RecordLockKind::GapOnly)
                    )
            })
        })
    }

    /// How many grants `tx` has received so far: a savepoint's place in its lock log.
    pub fn mark(&self, tx: TxId) -> usize {
        self.log.get(&tx).map_or(0, Vec::len)
    }

    /// Gives back every lock `tx` was granted after `mark` (an upgrade goes back to the weaker
    /// mode held before it), as a rollback to a savepoint or an aborted PostgreSQL
    /// subtransaction does. Returns the transactions whose requests are now granted.
    pub fn rollback_to(&mut self, tx: TxId, mark: usize) -> Vec<TxId> {
        let Some(log) = self.log.get_mut(&tx) else {
            return Vec::new();
        };
        assert!(mark <= log.len(), "a savepoint's mark is in the log");
        let undone: Vec<(LockTarget, Option<LockMode>)> = log.drain(mark..).rev().collect();
        let mut touched = BTreeSet::new();
        for (target, previous) in undone {
            let Some(queue) = self.queues.get_mut(&target) else {
                continue;
            };
            match previous {
                Some(mode) => {
                    if let Some(entry) = queue.granted.iter_mut().find(|(t, _)| *t == tx) {
                        entry.1 = mode;
                    }
                }
                None => {
                    queue.granted.retain(|&(t, _)| t != tx);
                    self.forget_held(tx, &target);
                }
            }
            touched.insert(target);
        }
        let mut woken = Vec::new();
        for target in &touched {
            woken.extend(self.regrant(target));
        }
        woken
    }

    /// The transactions a request of `mode` on `target` by `tx` waits for, by the queue rule:
    /// conflicting holders, and conflicting requests queued before position `queued_at` (all,
    /// if `None`: a new request).
    fn blockers_of(
        &self,
        tx: TxId,
        target: &LockTarget,
        mode: LockMode,
        queued_at: Option<usize>,
        holders_only: bool,
    ) -> Vec<TxId> {
        let Some(queue) = self.queues.get(target) else {
            if mode == LockMode::InsertIntention {
                return self.next_key_waiters(tx, target);
            }
            return Vec::new();
        };
        if mode == LockMode::Gap {
            // InnoDB grants gap locks at once: they only ever stop inserts.
            return Vec::new();
        }
        let mut holders = BTreeSet::new();
        for &(t, m) in &queue.granted {
            if t != tx && conflicts(mode, m) {
                holders.insert(t);
            }
        }
        let ahead = &queue.waiting[..queued_at.unwrap_or(queue.waiting.len())];
        let queued_conflict =
            |w: &&Waiter| w.tx != tx && (conflicts(mode, w.mode) || conflicts(w.mode, mode));
        match self.rule {
            QueueRule::InnoDb => {
                // Only row locks queue fairly; an insert intention waits for gap holders and
                // for waiting next-key requests on the gap.
                if mode == LockMode::InsertIntention {
                    holders.extend(self.next_key_waiters(tx, target));
                } else {
                    holders.extend(ahead.iter().filter(queued_conflict).map(|w| w.tx));
                }
                holders.into_iter().collect()
            }
            QueueRule::Postgres => {
                assert!(
                    matches!(mode, LockMode::Shared | LockMode::Exclusive),
                    "PostgreSQL has row locks only"
                );
                if holders_only || (queued_at.is_none() && holders.is_empty()) {
                    // No sleep needed, or sleeping on the holders' transactions directly.
                    return holders.into_iter().collect();
                }
                // Sleepers queue on the tuple lock behind earlier conflicting sleepers.
                let sleepers: BTreeSet<TxId> = ahead
                    .iter()
                    .filter(|w| !w.holders_only)
                    .filter(queued_conflict)
                    .map(|w| w.tx)
                    .collect();
                if sleepers.is_empty() {
                    holders.into_iter().collect()
                } else {
                    sleepers.into_iter().collect()
                }
            }
        }
    }

    /// InnoDB: the other transactions whose waiting next-key requests cover `gap`, in order.
    fn next_key_waiters(&self, tx: TxId, gap: &LockTarget) -> Vec<TxId> {
        self.next_key_waits
            .iter()
            .filter(|&(&t, g)| t != tx && g == gap)
            .map(|(&t, _)| t)
            .collect()
    }

    /// Withdraws the queued request of `tx`; returns transactions whose requests are now
    /// granted, in queue order.
    pub fn cancel_wait(&mut self, tx: TxId) -> Vec<TxId> {
        let Some((target, next_key)) = self.forget_wait(tx) else {
            return Vec::new();
        };
        let queue = self.queues.get_mut(&target).expect("queue of a waiter");
        queue.waiting.retain(|w| w.tx != tx);
        let mut woken = self.regrant(&target);
        if let Some(gap) = next_key {
            woken.extend(self.regrant(&gap));
        }
        woken
    }

    /// Forgets what `tx` was waiting for, once its request left a queue (granted, withdrawn or
    /// cancelled): the target, and the gap of a next-key request, if it waited.
    fn forget_wait(&mut self, tx: TxId) -> Option<(LockTarget, Option<LockTarget>)> {
        let target = self.waiting_for.remove(&tx)?;
        self.edge.remove(&tx);
        self.sleeping_on.remove(&tx);
        Some((target, self.next_key_waits.remove(&tx)))
    }

    /// The mode `tx` holds on `target`, if any.
    pub fn mode_held(&self, tx: TxId, target: &LockTarget) -> Option<LockMode> {
        self.held_mode(tx, target)
    }

    /// Gives back the lock `tx` took on `target` since it held `before` there: the lock goes
    /// (`None`), or an upgrade goes back to the weaker mode, as InnoDB's read committed
    /// releases only the lock its row search created for a row that did not match.
    pub fn release_to(
        &mut self,
        tx: TxId,
        target: &LockTarget,
        before: Option<LockMode>,
    ) -> Vec<TxId> {
        let Some(mode) = before else {
            return self.release(tx, target);
        };
        let Some(queue) = self.queues.get_mut(target) else {
            return Vec::new();
        };
        if let Some(entry) = queue.granted.iter_mut().find(|(t, _)| *t == tx) {
            entry.1 = mode;
        }
        self.regrant(target)
    }

    /// Releases one lock (InnoDB read committed releases rows that did not match).
    pub fn release(&mut self, tx: TxId, target: &LockTarget) -> Vec<TxId> {
        let Some(queue) = self.queues.get_mut(target) else {
            return Vec::new();
        };
        queue.granted.retain(|&(t, _)| t != tx);
        self.forget_held(tx, target);
        self.regrant(target)
    }

    /// Releases every lock of `tx` and withdraws its request; returns the transactions whose
    /// requests are now granted, in the order they were granted.
    pub fn release_all(&mut self, tx: TxId) -> Vec<TxId> {
        let mut woken = self.cancel_wait(tx);
        self.log.remove(&tx);
        self.structs.remove(&tx);
        self.extra_structs.remove(&tx);
        self.granted_waits.remove(&tx);
        self.record_lock_kinds.remove(&tx);
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
                let w = queue.waiting[i];
                self.blockers_of(w.tx, target, w.mode, Some(i), w.holders_only)
                    .is_empty()
            });
            let Some(i) = grantable else {
                break;
            };
            let waiter = self
                .queues
                .get_mut(target)
                .expect("queue")
                .waiting
                .remove(i);
            let (_, next_key) = self.forget_wait(waiter.tx).expect("a queued waiter");
            if let Some(gap) = &next_key {
                // The next-key lock is granted whole: record and gap.
                self.grant(waiter.tx, gap, LockMode::Gap);
            }
            self.grant(waiter.tx, target, waiter.mode);
            self.note_ended_wait(waiter.tx, target, waiter.mode, next_key.is_some());
            woken.push(waiter.tx);
        }
        let waiters: Vec<TxId> = self
            .queues
            .get(target)
            .map(|q| q.waiting.iter().map(|w| w.tx).collect())
            .unwrap_or_default();
        if self.rule == QueueRule::Postgres {
            for &tx in &waiters {
                let phase = self.pg_phase(tx);
                let previous = self.sleeping_on.insert(tx, phase.clone());
                if phase.is_some() && previous != Some(phase) {
                    self.restarted.push(tx);
                }
            }
        }
        if self.rule == QueueRule::InnoDb {
            // Waiters whose first conflicting lock went away now wait for the next one.
            for tx in waiters {
                let first = self
                    .first_blocker(tx)
                    .expect("a waiter still has a blocker");
                if self.edge.insert(tx, first) != Some(first)
                    && self.waiting_for.contains_key(&first)
                {
                    self.repointed.push(first);
                }
            }
        }
        if let Some(queue) = self.queues.get(target) {
            if queue.granted.is_empty() && queue.waiting.is_empty() {
                self.queues.remove(target);
            }
        }
        woken
    }

    /// Drops every lock (the server crashed).
    pub fn clear(&mut self) {
        self.queues.clear();
        self.held.clear();
        self.waiting_for.clear();
        self.log.clear();
        self.edge.clear();
        self.repointed.clear();
        self.sleeping_on.clear();
        self.restarted.clear();
        self.structs.clear();
        self.extra_structs.clear();
        self.granted_waits.clear();
        self.next_key_waits.clear();
        self.record_lock_kinds.clear();
    }
}

mod deadlock;

#[cfg(test)]
mod tests;
