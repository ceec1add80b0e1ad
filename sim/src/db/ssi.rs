//! Serializable snapshot isolation for `pg_ser`, after PostgreSQL's `predicate.c` (Cahill's
//! algorithm as in Ports & Grittner, VLDB 2012), with PostgreSQL's own rules for when a
//! dangerous structure is found and who fails.
//!
//! Serializable transactions take SIREAD locks on what they read, at PostgreSQL's granularity:
//! a whole relation for a sequential scan; for an index scan, the index leaf pages it visited
//! and every tuple (row version) it found visible, promoted to the tuple's heap page once the
//! transaction holds more than two tuples of that page (`max_pred_locks_per_page`). A write
//! checks the locks it covers (`CheckForSerializableConflictIn`): a new index entry the index
//! page it lands on, an update or delete the tuple it replaces and that tuple's heap page,
//! every write the relation; a writer drops its own lock of the tuple it replaces (not inside a
//! savepoint), which then no longer counts towards its page. A reader that meets a version it
//! cannot see, written by a concurrent transaction, has a conflict out to that writer
//! (`CheckForSerializableConflictOut`). Each such rw-antidependency `reader -> writer` is
//! checked as `OnConflict_CheckForSerializationFailure` does:
//! 1. the writer committed with a conflict out to a transaction that committed before it
//!    (a committed pivot): the reader fails;
//! 2. the writer is a pivot with a conflict out to a committed T2, and T2 committed first
//!    (before the reader's commit and the writer's, and for a read-only reader before its
//!    snapshot);
//! 3. the writer committed and the reader is a pivot with a conflict in from a T0 that is
//!    active or committed after the writer.
//!
//! The writer fails at once if it is the one acting; else a committed writer means the
//! acting reader fails (a transaction that fails at once gets no edge: the check comes before
//! the flagging, so the conflict is found again after a rollback to a savepoint); else the
//! writer is doomed at once (the next conflict the reader's scan meets sees it doomed: no
//! longer a T0 or pivot to fail for) and fails at its next SSI check: the next
//! tuple it examines or writes, or its commit (not a statement that touches no tuple).
//! At commit (`PreCommit_CheckForSerializationFailure`) a transaction dooms each active
//! in-neighbour that has an active in-neighbour of its own (or the committer itself). A
//! transaction that commits without writing is read-only from then on, which exempts it from
//! some of the rules, as in PostgreSQL. A failure is `40001` "could not serialize access due
//! to read/write dependencies among transactions".
//!
//! Not modelled: `READ ONLY` / `DEFERRABLE` transactions (outside the SQL subset),
//! promotion of index page locks to the relation, summarising of old committed transactions
//! (committed transactions stay until no active one overlaps them), and two-phase commit.

use std::collections::{BTreeMap, BTreeSet};

use super::storage::{CommitSeq, Key, TxId};

/// What a SIREAD lock covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SiTarget {
    /// A whole table (a sequential scan read it).
    Relation(String),
    /// One heap page of a table: the rows stored on it (promoted from tuple locks).
    HeapPage {
        /// The table.
        table: String,
        /// The page number.
        page: u64,
    },
    /// One row version: the row `key` as committed at `version`.
    Tuple {
        /// The table.
        table: String,
        /// The primary key.
        key: Key,
        /// The commit that wrote the version.
        version: CommitSeq,
    },
}

/// A leaf page of an index, as the key range it covered when it was read: entries `e` with
/// `lo <= e < hi` (`None`: unbounded). Index entries of a secondary index are its values
/// followed by the primary key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IndexPage {
    /// The table.
    pub table: String,
    /// `None` for the primary key, else the secondary index number.
    pub index: Option<usize>,
    /// The first entry of the page.
    pub lo: Option<Key>,
    /// The first entry of the next page.
    pub hi: Option<Key>,
}

impl IndexPage {
    fn covers(&self, entry: &Key) -> bool {
        self.lo.as_ref().is_none_or(|lo| entry >= lo)
            && self.hi.as_ref().is_none_or(|hi| entry < hi)
    }
}

/// What a write touches, for the conflict-in check.
#[derive(Debug, Clone, Default)]
pub struct WriteSet {
    /// The table.
    pub table: String,
    /// The row replaced by an update or delete: its key, the committed version replaced
    /// (`None`: the writer's own uncommitted version, which no other transaction can have
    /// locked), and its heap page (which another's page lock may cover all the same).
    pub replaced: Option<(Key, Option<CommitSeq>, u64)>,
    /// New index entries (`None`: the primary key), each on the index page it lands on.
    pub entries: Vec<(Option<usize>, Key)>,
    /// The writer is inside a savepoint (a subtransaction): it keeps its own SIREAD lock of
    /// the tuple it replaces, which a rollback to the savepoint could otherwise leave it
    /// without.
    pub in_subtransaction: bool,
}

/// How many tuple locks of one heap page a transaction holds before they become a page lock
/// (PostgreSQL's `max_pred_locks_per_page`, default 2).
pub const MAX_TUPLE_LOCKS_PER_PAGE: usize = 2;

#[derive(Debug, Clone)]
struct SsiTx {
    snapshot: CommitSeq,
    commit: Option<CommitSeq>,
    /// Committed without writing: read-only from then on.
    read_only: bool,
    /// Committed with a conflict out to a transaction that committed before it: the
    /// earliest such commit (`SXACT_FLAG_CONFLICT_OUT`).
    conflict_out: Option<CommitSeq>,
    /// In the order the conflicts were found (PostgreSQL's `inConflicts` list: the order in
    /// which a commit dooms pivots among them).
    ins: Vec<TxId>,
    outs: BTreeSet<TxId>,
    doomed: bool,
    wrote: bool,
    locks: BTreeSet<SiTarget>,
    pages: BTreeSet<IndexPage>,
    /// Tuple locks per heap page, to promote at the threshold.
    tuples_per_page: BTreeMap<(String, u64), Vec<SiTarget>>,
}

/// The SSI state of one database.
#[derive(Debug, Default, Clone)]
pub struct Ssi {
    txs: BTreeMap<TxId, SsiTx>,
    /// The holders of each SIREAD lock, in the order they took it (the order of a target's
    /// lock list, in which a conflict-in check meets them).
    readers: BTreeMap<SiTarget, Vec<TxId>>,
    page_readers: BTreeMap<(String, Option<usize>), BTreeMap<IndexPage, Vec<TxId>>>,
    /// A statement of this transaction runs again after waiting for the lock of this row
    /// (table, key), up to the row: see [`Ssi::replay`].
    replaying: Option<(TxId, String, Key)>,
}

impl Ssi {
    /// Starts tracking a serializable transaction that took its snapshot at `snapshot`.
    pub fn begin(&mut self, tx: TxId, snapshot: CommitSeq) {
        let previous = self.txs.insert(
            tx,
            SsiTx {
                snapshot,
                commit: None,
                read_only: false,
                conflict_out: None,
                ins: Vec::new(),
                outs: BTreeSet::new(),
                doomed: false,
                wrote: false,
                locks: BTreeSet::new(),
                pages: BTreeSet::new(),
                tuples_per_page: BTreeMap::new(),
            },
        );
        assert!(previous.is_none());
    }

    /// Whether `tx` is tracked (a serializable transaction with a snapshot).
    pub fn tracks(&self, tx: TxId) -> bool {
        self.txs.contains_key(&tx)
    }

    /// Whether `tx` was doomed by another transaction.
    pub fn is_doomed(&self, tx: TxId) -> bool {
        self.txs.get(&tx).is_some_and(|t| t.doomed)
    }

    /// Whether an SSI check of `tx` fails now because it is doomed: not while its statement
    /// replays what it did before a lock wait (see [`Ssi::replay`]).
    pub fn fails_as_doomed(&self, tx: TxId) -> bool {
        self.is_doomed(tx) && self.replaying.as_ref().is_none_or(|(t, _, _)| *t != tx)
    }

    /// Whether a statement of `tx` is replaying what it did before a lock wait.
    pub fn is_replaying(&self, tx: TxId) -> bool {
        self.replaying.as_ref().is_some_and(|(t, _, _)| *t == tx)
    }

    /// A statement of `tx` runs again from the start after waiting for the lock of row `key`
    /// of `table`. PostgreSQL's statement did not: it waited inside `heap_lock_tuple` /
    /// `heap_update` / `heap_delete` with its scan done up to that row, and its SSI checks up
    /// to there ran before the wait, when the transaction was not doomed (else it would have
    /// failed then). After the wait it looks at what the other transaction left first (a
    /// concurrent update or delete fails with plain `40001` in repeatable read and
    /// serializable, before any SSI check). So until the statement is back at that row,
    /// being doomed does not fail its checks; conflicts found are recorded as usual.
    pub fn replay(&mut self, tx: TxId, table: &str, key: &Key) {
        self.replaying = Some((tx, table.to_string(), key.clone()));
    }

    /// The replaying statement of `tx` holds the lock of row `key` of `table` again: if it
    /// is the row it waited for, the replay is over.
    pub fn replayed(&mut self, tx: TxId, table: &str, key: &Key) {
        if self
            .replaying
            .as_ref()
            .is_some_and(|(t, tb, k)| *t == tx && tb == table && k == key)
        {
            self.replaying = None;
        }
    }

    /// The re-run statement ended (or waits again).
    pub fn end_replay(&mut self) {
        self.replaying = None;
    }

    fn concurrent(&self, a: TxId, b: TxId) -> bool {
        let (Some(a), Some(b)) = (self.txs.get(&a), self.txs.get(&b)) else {
            return false;
        };
        a.commit.is_none_or(|c| c > b.snapshot) && b.commit.is_none_or(|c| c > a.snapshot)
    }

    /// `tx` read through these targets; tuple locks of a heap page beyond
    /// [`MAX_TUPLE_LOCKS_PER_PAGE`] become a lock of that page (`page_of` says where a row is).
    pub fn read(&mut self, tx: TxId, targets: Vec<SiTarget>, page_of: impl Fn(&Key) -> u64) {
        for target in targets {
            let state = self.txs.get_mut(&tx).expect("tracked");
            if let SiTarget::Tuple { table, key, .. } = &target {
                let page = page_of(key);
                let covering = SiTarget::HeapPage {
                    table: table.clone(),
                    page,
                };
                if state.locks.contains(&covering) || state.locks.contains(&target) {
                    continue;
                }
                let on_page = state
                    .tuples_per_page
                    .entry((table.clone(), page))
                    .or_default();
                on_page.push(target.clone());
                if on_page.len() > MAX_TUPLE_LOCKS_PER_PAGE {
                    let tuples = std::mem::take(on_page);
                    for t in tuples {
                        self.unlock(tx, &t);
                    }
                    self.lock(tx, covering);
                    continue;
                }
            }
            self.lock(tx, target);
        }
    }

    /// `tx` read the index leaf pages `pages`.
    pub fn read_pages(&mut self, tx: TxId, pages: Vec<IndexPage>) {
        let state = self.txs.get_mut(&tx).expect("tracked");
        for page in pages {
            if state.pages.insert(page.clone()) {
                self.page_readers
                    .entry((page.table.clone(), page.index))
                    .or_default()
                    .entry(page)
                    .or_default()
                    .push(tx);
            }
        }
    }

    fn lock(&mut self, tx: TxId, target: SiTarget) {
        let state = self.txs.get_mut(&tx).expect("tracked");
        if state.locks.insert(target.clone()) {
            self.readers.entry(target).or_default().push(tx);
        }
    }

    fn unlock(&mut self, tx: TxId, target: &SiTarget) {
        if let Some(state) = self.txs.get_mut(&tx) {
            state.locks.remove(target);
        }
        if let Some(set) = self.readers.get_mut(target) {
            set.retain(|&t| t != tx);
            if set.is_empty() {
                self.readers.remove(target);
            }
        }
    }

    /// `writer` writes `write`: every concurrent reader whose SIREAD lock covers it gets a
    /// conflict out to the writer. Returns the transactions that must fail now or be doomed
    /// (see [`Ssi::conflict`]), the acting writer among them if it fails.
    /// It counts as a write (`MyXactDidWrite`) unless the writer was doomed.
    pub fn conflict_in(&mut self, writer: TxId, write: &WriteSet) -> Vec<TxId> {
        self.conflict_in_check(writer, write)
    }

    /// The conflict-in check PostgreSQL also runs on the index page of a unique violation
    /// before it reports one (`_bt_check_unique`): like any `CheckForSerializableConflictIn`
    /// it counts as a write (the heap tuple is already written by then).
    pub fn conflict_in_check(&mut self, writer: TxId, write: &WriteSet) -> Vec<TxId> {
        if self.fails_as_doomed(writer) {
            // A doomed writer fails at its check (`CheckForSerializableConflictIn`).
            return vec![writer];
        }
        self.txs.get_mut(&writer).expect("tracked").wrote = true;
        let table = &write.table;
        // In PostgreSQL's order: the heap (`heap_update`/`heap_delete` check the tuple, its
        // page, then the relation; `heap_insert` the relation), then each new index entry's
        // page, index by index (`_bt_doinsert`). A failure stops there.
        let mut readers: Vec<TxId> = Vec::new();
        let mut add = |set: Option<&Vec<TxId>>| {
            for &tx in set.into_iter().flatten() {
                if !readers.contains(&tx) {
                    readers.push(tx);
                }
            }
        };
        if let Some((key, version, page)) = &write.replaced {
            if let Some(version) = version {
                add(self.readers.get(&SiTarget::Tuple {
                    table: table.clone(),
                    key: key.clone(),
                    version: *version,
                }));
            }
            add(self.readers.get(&SiTarget::HeapPage {
                table: table.clone(),
                page: *page,
            }));
        }
        add(self.readers.get(&SiTarget::Relation(table.clone())));
        for (index, entry) in &write.entries {
            if let Some(pages) = self.page_readers.get(&(table.clone(), *index)) {
                for (page, set) in pages {
                    if page.covers(entry) {
                        add(Some(set));
                    }
                }
            }
        }
        let mut fail = Vec::new();
        for reader in readers {
            if reader == writer {
                continue;
            }
            let r = &self.txs[&reader];
            if r.doomed || r.outs.contains(&writer) || !self.concurrent(reader, writer) {
                continue;
            }
            let failed = self.conflict(reader, writer, writer);
            let stop = failed.contains(&writer);
            fail.extend(failed);
            if stop {
                // The writer's error ends the check: later readers get no edge.
                fail.sort_unstable();
                fail.dedup();
                return fail;
            }
        }
        if let (Some((key, Some(version), page)), false) =
            (&write.replaced, write.in_subtransaction)
        {
            // A writer needs no SIREAD lock of the tuple it write-locks: PostgreSQL drops its
            // own tuple lock (not a page or relation lock) in `CheckTargetForConflictsIn`,
            // and the tuple no longer counts towards promoting its page
            // (`DecrementParentLocks`).
            let target = SiTarget::Tuple {
                table: table.clone(),
                key: key.clone(),
                version: *version,
            };
            if self.txs[&writer].locks.contains(&target) {
                self.unlock(writer, &target);
                let state = self.txs.get_mut(&writer).expect("tracked");
                if let Some(on_page) = state.tuples_per_page.get_mut(&(table.clone(), *page)) {
                    on_page.retain(|t| *t != target);
                }
            }
        }
        fail.sort_unstable();
        fail.dedup();
        fail
    }

    /// `reader` met a version written by `writer` that it cannot see. Returns the
    /// transactions that must fail (see [`Ssi::conflict`]).
    pub fn conflict_out(&mut self, reader: TxId, writer: TxId) -> Vec<TxId> {
        if reader == writer || !self.tracks(writer) || !self.concurrent(reader, writer) {
            return Vec::new();
        }
        if self.txs[&writer].doomed || self.txs[&reader].outs.contains(&writer) {
            return Vec::new();
        }
        self.conflict(reader, writer, reader)
    }

    /// Records `reader -> writer` after PostgreSQL's three checks (module documentation), with
    /// `acting` the transaction whose statement found it. Returns who fails: the acting
    /// transaction (to fail now) or another one (to doom).
    fn conflict(&mut self, reader: TxId, writer: TxId, acting: TxId) -> Vec<TxId> {
        assert!(acting == reader || acting == writer);
        let failure = self.dangerous(reader, writer);
        let w = &self.txs[&writer];
        let acting_fails = failure && (acting == writer || w.commit.is_some());
        if acting_fails {
            // The check comes before the flagging (`FlagRWConflict`): a transaction that fails
            // here raises its error without the edge, so the same conflict is found, and
            // fails again, after a rollback to a savepoint.
            return vec![acting];
        }
        self.txs
            .get_mut(&reader)
            .expect("tracked")
            .outs
            .insert(writer);
        let ins = &mut self.txs.get_mut(&writer).expect("tracked").ins;
        if !ins.contains(&reader) {
            ins.push(reader);
        }
        if !failure {
            return Vec::new();
        }
        // The acting reader met an active writer: the writer is doomed (a committed one could
        // not be aborted any more, and the reader failed above). At once, as PostgreSQL sets
        // `SXACT_FLAG_DOOMED`: the conflicts the reader meets next see it doomed (it no
        // longer counts as a T0 or a pivot).
        assert!(acting == reader && acting != writer);
        self.txs.get_mut(&writer).expect("tracked").doomed = true;
        vec![writer]
    }

    fn dangerous(&self, reader: TxId, writer: TxId) -> bool {
        let r = &self.txs[&reader];
        let w = &self.txs[&writer];
        // 1. A committed pivot: the writer committed with a conflict out to an earlier commit.
        if w.commit.is_some() && w.conflict_out.is_some() {
            return true;
        }
        // 2. The writer is a pivot whose out-neighbour T2 committed first.
        let writer_pivot = w.outs.iter().filter_map(|t2| self.txs.get(t2)).any(|t2| {
            let Some(c2) = t2.commit else {
                return false;
            };
            r.commit.is_none_or(|c| c2 <= c)
                && w.commit.is_none_or(|c| c2 <= c)
                && (!r.read_only || c2 <= r.snapshot)
        });
        if writer_pivot {
            return true;
        }
        // 3. The reader is a pivot whose out-neighbour (this writer) committed first.
        let Some(wc) = w.commit else {
            return false;
        };
        if r.read_only {
            return false;
        }
        r.ins.iter().filter_map(|t0| self.txs.get(t0)).any(|t0| {
            !t0.doomed && t0.commit.is_none_or(|c| c >= wc) && (!t0.read_only || t0.snapshot >= wc)
        })
    }

    /// Checks `tx` before it commits: false if it must fail. Dooms every active in-neighbour
    /// that is a pivot with an active in-neighbour of its own, or with `tx` itself.
    pub fn pre_commit(&mut self, tx: TxId) -> bool {
        if self.is_doomed(tx) {
            return false;
        }
        let near: Vec<TxId> = self.txs[&tx].ins.to_vec();
        for n in near {
            let Some(nt) = self.txs.get(&n) else {
                continue;
            };
            if nt.commit.is_some() || nt.doomed {
                continue;
            }
            let pivot = nt.ins.iter().any(|&far| {
                far == tx
                    || self
                        .txs
                        .get(&far)
                        .is_some_and(|f| f.commit.is_none() && !f.doomed)
            });
            if pivot {
                self.txs.get_mut(&n).expect("tracked").doomed = true;
            }
        }
        true
    }

    /// Records the commit of `tx` at `seq`, after [`Ssi::pre_commit`].
    pub fn commit(&mut self, tx: TxId, seq: CommitSeq) {
        let earliest_out = self.txs[&tx]
            .outs
            .iter()
            .filter_map(|o| self.txs.get(o).and_then(|t| t.commit))
            .min();
        let state = self.txs.get_mut(&tx).expect("tracked");
        assert!(state.commit.is_none());
        state.commit = Some(seq);
        state.read_only = !state.wrote;
        if !state.read_only {
            state.conflict_out = earliest_out;
        }
        assert!(state.conflict_out.is_none_or(|c| c < seq));
    }

    /// Marks `tx` doomed: it fails at its next SSI check (see the module documentation).
    pub fn doom(&mut self, tx: TxId) {
        if let Some(state) = self.txs.get_mut(&tx) {
            state.doomed = true;
        }
    }

    /// Forgets an aborted transaction, its locks and its conflicts.
    pub fn abort(&mut self, tx: TxId) {
        if self.replaying.as_ref().is_some_and(|(t, _, _)| *t == tx) {
            self.replaying = None;
        }
        let Some(state) = self.txs.remove(&tx) else {
            return;
        };
        for target in &state.locks {
            if let Some(set) = self.readers.get_mut(target) {
                set.retain(|&t| t != tx);
                if set.is_empty() {
                    self.readers.remove(target);
                }
            }
        }
        for page in &state.pages {
            let by_index = (page.table.clone(), page.index);
            if let Some(pages) = self.page_readers.get_mut(&by_index) {
                if let Some(set) = pages.get_mut(page) {
                    set.retain(|&t| t != tx);
                    if set.is_empty() {
                        pages.remove(page);
                    }
                }
                if pages.is_empty() {
                    self.page_readers.remove(&by_index);
                }
            }
        }
        for other in state.ins.iter().chain(state.outs.iter()) {
            if let Some(o) = self.txs.get_mut(other) {
                o.ins.retain(|&t| t != tx);
                o.outs.remove(&tx);
            }
        }
    }

    /// Forgets committed transactions that no active one overlaps: no new conflict can reach
    /// them.
    pub fn cleanup(&mut self) {
        let horizon = self
            .txs
            .values()
            .filter(|t| t.commit.is_none())
            .map(|t| t.snapshot)
            .min();
        let old: Vec<TxId> = self
            .txs
            .iter()
            .filter(|(_, t)| t.commit.is_some_and(|c| horizon.is_none_or(|h| c <= h)))
            .map(|(&id, _)| id)
            .collect();
        for tx in old {
            self.abort(tx);
        }
    }

    /// Drops all state (the server crashed).
    pub fn clear(&mut self) {
        *self = Ssi::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::value::Value;

    fn tuple(k: i64) -> SiTarget {
        SiTarget::Tuple {
            table: "t".into(),
            key: vec![Value::Int(k)],
            version: 1,
        }
    }

    fn update(k: i64) -> WriteSet {
        WriteSet {
            table: "t".into(),
            replaced: Some((vec![Value::Int(k)], Some(1), 0)),
            entries: Vec::new(),
            in_subtransaction: false,
        }
    }

    #[test]
    fn write_skew_dooms_the_second_committer() {
        let mut ssi = Ssi::default();
        ssi.begin(1, 1);
        ssi.begin(2, 1);
        ssi.read(1, vec![tuple(1)], |_| 0);
        ssi.read(2, vec![tuple(2)], |_| 0);
        assert!(ssi.conflict_in(1, &update(2)).is_empty());
        assert!(ssi.conflict_in(2, &update(1)).is_empty());
        assert!(ssi.pre_commit(1));
        ssi.commit(1, 2);
        assert!(!ssi.pre_commit(2), "2 was doomed as the pivot");
    }

    #[test]
    fn a_committed_pivot_fails_the_reader() {
        // 2 read what 3 wrote (2 -> 3), 3 committed first, then 2 committed: 2 is a committed
        // pivot, and 1 reading past 2's write fails.
        let mut ssi = Ssi::default();
        for tx in [1, 2, 3] {
            ssi.begin(tx, 1);
        }
        ssi.read(2, vec![tuple(1)], |_| 0);
        assert!(ssi.conflict_in(3, &update(1)).is_empty());
        assert!(ssi.pre_commit(3));
        ssi.commit(3, 2);
        assert!(ssi.conflict_in(2, &update(2)).is_empty());
        assert!(ssi.pre_commit(2));
        ssi.commit(2, 3);
        assert_eq!(ssi.conflict_out(1, 2), vec![1]);
    }

    #[test]
    fn a_single_edge_is_harmless() {
        let mut ssi = Ssi::default();
        ssi.begin(1, 1);
        ssi.begin(2, 1);
        assert!(ssi.conflict_out(1, 2).is_empty());
        assert!(ssi.pre_commit(2));
        ssi.commit(2, 2);
        assert!(ssi.pre_commit(1));
        ssi.commit(1, 3);
        ssi.cleanup();
        assert!(!ssi.tracks(1) && !ssi.tracks(2));
    }

    #[test]
    fn a_pivot_doomed_by_a_reader_no_longer_fails_it() {
        // 1 read the table, then 2 and 3 wrote into it (1 -> 2, 1 -> 3); 3 committed. 2 meets
        // 1's uncommitted row first: 1 is a pivot whose out-neighbour 3 committed first, so 1
        // is doomed. 2 then meets 3's row: 2 is a pivot too (1 -> 2 -> 3), but its only
        // in-neighbour is doomed already, so 2 goes on (PostgreSQL dooms at once).
        let mut ssi = Ssi::default();
        for tx in [1, 2, 3] {
            ssi.begin(tx, 1);
        }
        let relation = SiTarget::Relation("t".into());
        let insert = WriteSet {
            table: "t".into(),
            ..WriteSet::default()
        };
        ssi.read(1, vec![relation], |_| 0);
        assert!(ssi.conflict_in(2, &insert).is_empty());
        assert!(ssi.conflict_in(3, &insert).is_empty());
        assert!(ssi.pre_commit(3));
        ssi.commit(3, 2);
        assert_eq!(ssi.conflict_out(2, 1), vec![1]);
        assert!(ssi.is_doomed(1), "doomed before 2 meets its next writer");
        assert!(ssi.conflict_out(2, 3).is_empty());
        assert!(!ssi.is_doomed(2));
    }

    #[test]
    fn a_third_tuple_on_a_page_becomes_a_page_lock() {
        let mut ssi = Ssi::default();
        ssi.begin(1, 1);
        ssi.begin(2, 1);
        ssi.read(1, vec![tuple(1), tuple(2)], |_| 0);
        // Row 3 is on the same page but unread: no conflict yet.
        let mut other = update(3);
        other.replaced = Some((vec![Value::Int(3)], Some(1), 0));
        ssi.read(1, vec![tuple(4)], |_| 0);
        assert!(ssi.conflict_in(2, &other).is_empty());
        assert!(ssi.txs[&1].outs.contains(&2), "the page lock covers row 3");
    }
}
