//! Serializable snapshot isolation for `pg_ser`, after PostgreSQL's `predicate.c` (Cahill's
//! algorithm as in Ports & Grittner, VLDB 2012).
//!
//! Serializable transactions record what they read (SIREAD locks: single keys, or whole
//! relations for scans). A rw-antidependency `reader -> writer` arises when a transaction
//! writes what a concurrent one read, or reads past a version a concurrent one wrote. A
//! transaction with both an incoming and an outgoing edge is a pivot; the structure is
//! dangerous when the pivot's out-neighbour committed first. Then one transaction fails with
//! `40001` "could not serialize access due to read/write dependencies among transactions":
//! the pivot at once if it is the one acting, else it is doomed and fails at its next
//! statement or commit.
//!
//! Not modelled: read-only transaction optimisations, SIREAD lock promotion to coarser
//! granularity (reads of keys stay keys), and summarising of old committed transactions
//! (committed transactions stay until no active one overlaps them).

use std::collections::{BTreeMap, BTreeSet};

use super::storage::{CommitSeq, Key, TxId};

/// Something a serializable transaction read: a key of a table's primary key (`index` `None`)
/// or of a secondary index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadKey {
    /// The table.
    pub table: String,
    /// `None` for the primary key, else the secondary index number.
    pub index: Option<usize>,
    /// The key values.
    pub key: Key,
}

#[derive(Debug, Clone)]
struct SsiTx {
    snapshot: CommitSeq,
    commit: Option<CommitSeq>,
    ins: BTreeSet<TxId>,
    outs: BTreeSet<TxId>,
    doomed: bool,
    reads: Vec<ReadKey>,
    relations: BTreeSet<String>,
}

/// The SSI state of one database.
#[derive(Debug, Default, Clone)]
pub struct Ssi {
    txs: BTreeMap<TxId, SsiTx>,
    key_readers: BTreeMap<ReadKey, BTreeSet<TxId>>,
    relation_readers: BTreeMap<String, BTreeSet<TxId>>,
}

impl Ssi {
    /// Starts tracking a serializable transaction that took its snapshot at `snapshot`.
    pub fn begin(&mut self, tx: TxId, snapshot: CommitSeq) {
        let previous = self.txs.insert(
            tx,
            SsiTx {
                snapshot,
                commit: None,
                ins: BTreeSet::new(),
                outs: BTreeSet::new(),
                doomed: false,
                reads: Vec::new(),
                relations: BTreeSet::new(),
            },
        );
        assert!(previous.is_none());
    }

    /// Whether `tx` is tracked (a serializable transaction with a snapshot).
    pub fn tracks(&self, tx: TxId) -> bool {
        self.txs.contains_key(&tx)
    }

    /// Whether `tx` was doomed by another transaction's commit.
    pub fn is_doomed(&self, tx: TxId) -> bool {
        self.txs.get(&tx).is_some_and(|t| t.doomed)
    }

    fn concurrent(&self, a: TxId, b: TxId) -> bool {
        let (Some(a), Some(b)) = (self.txs.get(&a), self.txs.get(&b)) else {
            return false;
        };
        a.commit.is_none_or(|c| c > b.snapshot) && b.commit.is_none_or(|c| c > a.snapshot)
    }

    /// `tx` read `key`.
    pub fn read_key(&mut self, tx: TxId, key: ReadKey) {
        let state = self.txs.get_mut(&tx).expect("tracked");
        if self.key_readers.entry(key.clone()).or_default().insert(tx) {
            state.reads.push(key);
        }
    }

    /// `tx` scanned all of `table`.
    pub fn read_relation(&mut self, tx: TxId, table: &str) {
        let state = self.txs.get_mut(&tx).expect("tracked");
        if state.relations.insert(table.to_string()) {
            self.relation_readers
                .entry(table.to_string())
                .or_default()
                .insert(tx);
        }
    }

    /// `writer` wrote a row of `table` with these keys: every concurrent reader of them gets
    /// an edge to it. Returns the transactions that must fail (see [`Ssi::add_edge`]).
    pub fn wrote(&mut self, writer: TxId, table: &str, keys: &[ReadKey]) -> Vec<TxId> {
        let mut readers = BTreeSet::new();
        if let Some(set) = self.relation_readers.get(table) {
            readers.extend(set.iter().copied());
        }
        for key in keys {
            if let Some(set) = self.key_readers.get(key) {
                readers.extend(set.iter().copied());
            }
        }
        let mut fail = Vec::new();
        for reader in readers {
            if reader != writer {
                fail.extend(self.add_edge(reader, writer));
            }
        }
        fail.sort_unstable();
        fail.dedup();
        fail
    }

    /// A rw-antidependency `reader -> writer`, if both are tracked and concurrent. Returns the
    /// active pivots of dangerous structures that this edge completes.
    pub fn add_edge(&mut self, reader: TxId, writer: TxId) -> Vec<TxId> {
        if reader == writer || !self.concurrent(reader, writer) {
            return Vec::new();
        }
        self.txs
            .get_mut(&reader)
            .expect("tracked")
            .outs
            .insert(writer);
        self.txs
            .get_mut(&writer)
            .expect("tracked")
            .ins
            .insert(reader);
        [writer, reader]
            .into_iter()
            .filter(|&p| self.dangerous(p))
            .collect()
    }

    /// Whether active `pivot` has an in-edge from some T_in and an out-edge to a committed
    /// T_out that committed before T_in (or T_in is still active, or is T_out itself).
    fn dangerous(&self, pivot: TxId) -> bool {
        let p = &self.txs[&pivot];
        if p.commit.is_some() {
            return false;
        }
        p.outs.iter().any(|o| {
            let Some(o_commit) = self.txs.get(o).and_then(|t| t.commit) else {
                return false;
            };
            p.ins.iter().any(|i| {
                i == o
                    || self
                        .txs
                        .get(i)
                        .is_some_and(|t| t.commit.is_none_or(|c| o_commit <= c))
            })
        })
    }

    /// Checks `tx` before it commits: false if it must fail instead.
    pub fn can_commit(&self, tx: TxId) -> bool {
        !self.is_doomed(tx) && !self.dangerous(tx)
    }

    /// Records the commit of `tx` at `seq`; dooms active transactions that this commit makes
    /// pivots of dangerous structures (T_out committed first). Returns them.
    pub fn commit(&mut self, tx: TxId, seq: CommitSeq) -> Vec<TxId> {
        let state = self.txs.get_mut(&tx).expect("tracked");
        assert!(state.commit.is_none());
        state.commit = Some(seq);
        let ins: Vec<TxId> = state.ins.iter().copied().collect();
        let mut doomed = Vec::new();
        for i in ins {
            if self.dangerous(i) {
                self.txs.get_mut(&i).expect("tracked").doomed = true;
                doomed.push(i);
            }
        }
        doomed
    }

    /// Marks `tx` doomed: it fails at its next statement or commit.
    pub fn doom(&mut self, tx: TxId) {
        if let Some(state) = self.txs.get_mut(&tx) {
            state.doomed = true;
        }
    }

    /// Forgets an aborted transaction and its edges.
    pub fn abort(&mut self, tx: TxId) {
        let Some(state) = self.txs.remove(&tx) else {
            return;
        };
        self.forget_reads(tx, &state);
        for other in state.ins.iter().chain(state.outs.iter()) {
            if let Some(o) = self.txs.get_mut(other) {
                o.ins.remove(&tx);
                o.outs.remove(&tx);
            }
        }
    }

    fn forget_reads(&mut self, tx: TxId, state: &SsiTx) {
        for key in &state.reads {
            if let Some(set) = self.key_readers.get_mut(key) {
                set.remove(&tx);
                if set.is_empty() {
                    self.key_readers.remove(key);
                }
            }
        }
        for table in &state.relations {
            if let Some(set) = self.relation_readers.get_mut(table) {
                set.remove(&tx);
                if set.is_empty() {
                    self.relation_readers.remove(table);
                }
            }
        }
    }

    /// Forgets committed transactions that no active one overlaps: no new edge can reach them.
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

    #[test]
    fn write_skew_dooms_the_second_committer() {
        let mut ssi = Ssi::default();
        ssi.begin(1, 0);
        ssi.begin(2, 0);
        assert!(ssi.add_edge(1, 2).is_empty());
        assert!(ssi.add_edge(2, 1).is_empty());
        assert!(ssi.can_commit(1));
        assert_eq!(ssi.commit(1, 1), vec![2]);
        assert!(!ssi.can_commit(2));
    }

    #[test]
    fn a_single_edge_is_harmless() {
        let mut ssi = Ssi::default();
        ssi.begin(1, 0);
        ssi.begin(2, 0);
        assert!(ssi.add_edge(1, 2).is_empty());
        assert!(ssi.can_commit(2));
        assert!(ssi.commit(2, 1).is_empty());
        assert!(ssi.can_commit(1));
        ssi.commit(1, 2);
        ssi.cleanup();
        assert!(!ssi.tracks(1) && !ssi.tracks(2));
    }
}
