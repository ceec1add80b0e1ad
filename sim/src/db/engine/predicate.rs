//! PostgreSQL's predicate locks for serializable transactions: what a read locks and which
//! concurrent writers it meets, and what a write conflicts with, at the granularity
//! PostgreSQL uses (`ssi` holds the locks and judges the conflicts). A sequential scan locks
//! the relation; an index scan (primary key lookups and ranges, secondary index lookups)
//! locks the index leaf pages it visits and the tuples it finds visible.

use super::access::Access;
use super::{Database, Step};
use crate::db::profile::errors;
use crate::db::ssi::{IndexPage, SiTarget, WriteSet};
use crate::db::storage::{CommitSeq, Key, Row, RowVersions, Table, TxId};

/// What a serializable read learnt from one row's versions: the committed version it sees
/// (to lock; `None` for none, or its own write) and the concurrent writers of versions it
/// cannot see (conflicts out).
pub(super) struct Examined {
    pub(super) version: Option<CommitSeq>,
    pub(super) writers: Vec<TxId>,
}

/// Examines the versions of a row as PostgreSQL's scan does for SSI (`heap_hot_search_buffer`
/// and `HeapCheckForSerializableConflictOut`): an index scan walks the row's update chain from
/// the oldest version and stops at the one it sees, so it meets only the writer of the version
/// after it (or every writer, if it sees none); a sequential scan meets every version on the
/// page, so every writer of a version newer than its snapshot.
pub(super) fn examine(rv: &RowVersions, tx: TxId, snapshot: CommitSeq, seqscan: bool) -> Examined {
    let own = rv.pending.as_ref().is_some_and(|p| p.tx == tx);
    let visible = rv.visible_at(snapshot);
    let mut writers: Vec<TxId> = rv
        .committed
        .iter()
        .filter(|v| v.seq > snapshot)
        .map(|v| v.tx)
        .collect();
    if let Some(p) = rv.pending.as_ref().filter(|p| p.tx != tx) {
        writers.push(p.tx);
    }
    let sees = visible.is_some_and(|v| v.data.is_some());
    if sees && !seqscan {
        // Only the writer of the version right after the one seen.
        writers.truncate(1);
    }
    Examined {
        version: visible.filter(|v| v.data.is_some() && !own).map(|v| v.seq),
        writers,
    }
}

/// The concurrent writers a serializable read met, in the order PostgreSQL's scan meets them:
/// a sequential scan walks the heap (rows in the order they were placed), an index scan its
/// index; each conflict out is checked, and may doom its writer, before the next is met.
pub(super) struct MetWriters {
    seqscan: bool,
    /// (where in the scan, writer), in the order added.
    met: Vec<(u64, TxId)>,
}

impl MetWriters {
    /// Writers met by a sequential scan (`seqscan`) or an index scan.
    pub(super) fn new(seqscan: bool) -> MetWriters {
        MetWriters {
            seqscan,
            met: Vec::new(),
        }
    }

    /// The writers of versions of row `key` of `table` that the scan could not see; rows
    /// must come in the access path's order.
    pub(super) fn add(&mut self, table: &Table, key: &Key, writers: Vec<TxId>) {
        let at = if self.seqscan {
            table.heap_position(key)
        } else {
            self.met.len() as u64
        };
        self.met.extend(writers.into_iter().map(|w| (at, w)));
    }

    /// Each writer once, where the scan first met it.
    pub(super) fn into_ordered(mut self) -> Vec<TxId> {
        // Stable: the versions of one row keep their order.
        self.met.sort_by_key(|&(at, _)| at);
        let mut out: Vec<TxId> = Vec::with_capacity(self.met.len());
        for (_, w) in self.met {
            if !out.contains(&w) {
                out.push(w);
            }
        }
        out
    }
}

impl Database {
    /// A serializable transaction that another one doomed (`Ssi::doom`) fails with `40001`
    /// at its next SSI check, as PostgreSQL's `SXACT_FLAG_DOOMED` does: when it examines a
    /// tuple (`CheckForSerializableConflictOutNeeded`), writes one
    /// (`CheckForSerializableConflictIn`) or commits. A statement that reads no tuple (an
    /// index lookup that finds nothing, an UPDATE that matches nothing) passes (measured).
    pub(super) fn ssi_check_doomed(&mut self, tx: TxId) -> Step<()> {
        if self.ssi.fails_as_doomed(tx) {
            return Err(errors::rw_dependency().into());
        }
        Ok(())
    }

    /// Takes the SIREAD locks of a serializable read of `table_name` through `access` that
    /// examined tuples (`examined`: any, its own included) and saw the committed versions
    /// `seen`, and records its conflicts out to `writers`.
    pub(super) fn ssi_after_read(
        &mut self,
        tx: TxId,
        table_name: &str,
        access: &Access,
        examined: bool,
        seen: Vec<(Key, CommitSeq)>,
        writers: Vec<TxId>,
    ) -> Step<()> {
        if examined {
            self.ssi_check_doomed(tx)?;
        }
        let table = self.table(table_name)?;
        let page = |index: Option<usize>, bounds: (Option<Key>, Option<Key>)| IndexPage {
            table: table_name.to_string(),
            index,
            lo: bounds.0,
            hi: bounds.1,
        };
        let (pages, targets) = match access {
            Access::Scan => (Vec::new(), vec![SiTarget::Relation(table_name.to_string())]),
            Access::Keys(keys) => (
                keys.iter()
                    .map(|k| page(None, table.index_page(None, k)))
                    .collect(),
                Vec::new(),
            ),
            Access::Range { lo, hi } => (
                table
                    .index_pages_between(None, lo, hi)
                    .into_iter()
                    .map(|b| page(None, b))
                    .collect(),
                Vec::new(),
            ),
            Access::Index { index, values } => (
                values
                    .iter()
                    .map(|v| page(Some(*index), table.index_page(Some(*index), v)))
                    .collect(),
                Vec::new(),
            ),
        };
        let mut targets = targets;
        if !matches!(access, Access::Scan) {
            targets.extend(seen.into_iter().map(|(key, version)| SiTarget::Tuple {
                table: table_name.to_string(),
                key,
                version,
            }));
        }
        let table = &self.tables[table_name];
        self.ssi.read_pages(tx, pages);
        self.ssi.read(tx, targets, |k| table.heap_page(k));
        let mut fail = Vec::new();
        for writer in writers {
            let failed = self.ssi.conflict_out(tx, writer);
            // The reader's error ends the scan (`ereport` in `FlagRWConflict`): it meets no
            // later writer.
            let stop = failed.contains(&tx);
            fail.extend(failed);
            if stop {
                break;
            }
        }
        self.ssi_fail(tx, fail)
    }

    /// What a write of row `key` from `old` to `new` touches, for SSI's conflict-in check:
    /// the committed version it replaces (with its heap page) and the index entries it adds
    /// (an insert adds one to every index; an update that changes an indexed column is not a
    /// HOT update and adds one to every index too).
    pub(super) fn ssi_write_set(
        &self,
        tx: TxId,
        table_name: &str,
        key: &Key,
        old: Option<&Row>,
        new: Option<&Row>,
    ) -> WriteSet {
        let table = &self.tables[table_name];
        let rv = table.rows.get(key);
        let replaced = old.and_then(|_| {
            let rv = rv?;
            let version = if rv.pending.as_ref().is_some_and(|p| p.tx == tx) {
                // Its own version: nobody else can hold a lock of that tuple, but a page lock
                // covers it like any other (`heap_update` checks the page too).
                None
            } else {
                Some(rv.latest_committed()?.seq)
            };
            Some((key.clone(), version, table.heap_page(key)))
        });
        let indexed_change = match (old, new) {
            (Some(o), Some(n)) => {
                table.key_of(o) != table.key_of(n)
                    || (0..table.indexes.len())
                        .any(|i| table.index_key_of(i, o) != table.index_key_of(i, n))
            }
            _ => false,
        };
        let mut entries = Vec::new();
        if let Some(n) = new {
            if old.is_none() || indexed_change {
                entries.push((None, key.clone()));
                for i in 0..table.indexes.len() {
                    let mut entry = table.index_key_of(i, n);
                    entry.extend(key.iter().cloned());
                    entries.push((Some(i), entry));
                }
            }
        }
        let in_subtransaction = self
            .tx_session
            .get(&tx)
            .and_then(|s| self.sessions[s].tx.as_ref())
            .is_some_and(|t| !t.savepoints.is_empty());
        WriteSet {
            table: table_name.to_string(),
            replaced,
            entries,
            in_subtransaction,
        }
    }
}
