//! Multi-version storage: tables keyed by primary key, each row a chain of committed versions
//! plus at most one uncommitted version of the transaction that holds the row's write lock.
//!
//! Indexes map index values to primary keys for every version written and not yet purged,
//! like InnoDB's delete-marked secondary records and PostgreSQL's index entries for dead
//! tuples; a lookup re-checks each candidate against the version it can see. Rollback
//! therefore never has to touch an index, and gap positions stay stable while a transaction
//! holds gap locks.
//!
//! Purge ([`Table::purge`]) removes what no snapshot can see any more: deleted rows and index
//! entries of versions gone, as InnoDB's purge and PostgreSQL's vacuum do. It runs once a
//! table has had [`PURGE_THRESHOLD_WRITES`] writes plus [`PURGE_SCALE_PERCENT`] of its rows
//! since the last pass (PostgreSQL's autovacuum trigger), so its cost is amortized over the
//! writes that made the garbage, and it leaves every record alone that a lock refers to.
//!
//! Key invariant: a row has an uncommitted version only while its writer's transaction is open,
//! and that writer holds the row's exclusive lock (the engine asserts this when it writes).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::sql::ColumnSpec;
use super::value::Value;

/// A transaction id. Ids grow with time and are never reused within a database.
pub type TxId = u64;

/// A commit sequence number: the n-th commit since the database was created.
pub type CommitSeq = u64;

/// Values of the primary key (or of an index's columns).
pub type Key = Vec<Value>;

/// The values of one row, in column order.
pub type Row = Vec<Value>;

/// One committed version of a row: the row as of commit `seq`, or its deletion.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// The commit that wrote this version.
    pub seq: CommitSeq,
    /// The transaction that wrote it.
    pub tx: TxId,
    /// The row, or `None` for a deletion.
    pub data: Option<Row>,
    /// For a deletion by an UPDATE of the primary key: the key the row moved to (PostgreSQL
    /// follows an updated row to its new version, wherever its key now is). Kept on a new
    /// tuple the same writer then inserted at the old key, whose chain still leads there.
    pub moved_to: Option<Key>,
    /// The writer deleted the row this version follows and inserted a new one with the same
    /// key: in PostgreSQL a new tuple, not the next link of the old tuple's update chain.
    pub new_tuple: bool,
}

/// The uncommitted version of a row, written by the transaction holding its write lock.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// The writer.
    pub tx: TxId,
    /// The row, or `None` for a deletion.
    pub data: Option<Row>,
    /// See [`Version::moved_to`].
    pub moved_to: Option<Key>,
    /// See [`Version::new_tuple`].
    pub new_tuple: bool,
}

/// All versions of one row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowVersions {
    /// Committed versions, oldest first.
    pub committed: Vec<Version>,
    /// The open writer's version, if any.
    pub pending: Option<Pending>,
}

impl RowVersions {
    /// The newest committed version.
    pub fn latest_committed(&self) -> Option<&Version> {
        self.committed.last()
    }

    /// The newest committed version with `seq <= snapshot`.
    pub fn visible_at(&self, snapshot: CommitSeq) -> Option<&Version> {
        self.committed.iter().rev().find(|v| v.seq <= snapshot)
    }

    /// Drops committed versions no snapshot at or after `horizon` can see: all but the newest
    /// version with `seq <= horizon` and everything newer.
    pub fn prune(&mut self, horizon: CommitSeq) {
        let keep_from = self
            .committed
            .iter()
            .rposition(|v| v.seq <= horizon)
            .unwrap_or(0);
        if keep_from > 0 {
            self.committed.drain(..keep_from);
        }
        assert!(!self.committed.is_empty() || self.pending.is_some());
    }
}

/// Entries per PostgreSQL B-tree leaf page: an 8 kB page of small keys (an index tuple of 16
/// bytes and its line pointer) at the 90% fill of pages split by ascending inserts. Tables of
/// a few hundred rows keep each index in one leaf page, as the real ones do.
pub const INDEX_ENTRIES_PER_PAGE: usize = 367;

/// Writes to a table that trigger a purge pass, plus [`PURGE_SCALE_PERCENT`] of its rows:
/// PostgreSQL's `autovacuum_vacuum_threshold` (50) and `autovacuum_vacuum_scale_factor` (0.2).
/// Short scripts never reach it, so their outcomes are those of engines whose purge has not
/// run yet.
pub const PURGE_THRESHOLD_WRITES: u64 = 50;

/// See [`PURGE_THRESHOLD_WRITES`].
pub const PURGE_SCALE_PERCENT: u64 = 20;

/// A unique or secondary index over some columns of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexDef {
    /// The index name (as in error messages: `test_pkey`, `orders_cart_id_key`).
    pub name: String,
    /// Column positions.
    pub columns: Vec<usize>,
    /// Whether values must be unique among live rows.
    pub unique: bool,
}

/// A table: schema, rows and indexes.
#[derive(Debug, Clone)]
pub struct Table {
    /// The table name.
    pub name: String,
    /// The columns.
    pub columns: Vec<ColumnSpec>,
    /// Positions of the primary key columns.
    pub primary_key: Vec<usize>,
    /// Unique and secondary indexes (the primary key is not among them).
    pub indexes: Vec<IndexDef>,
    /// Rows by primary key.
    pub rows: BTreeMap<Key, RowVersions>,
    /// Per index: (index values, primary key) of every version ever written.
    pub index_entries: Vec<BTreeSet<(Key, Key)>>,
    /// The next value an auto-increment column hands out.
    pub next_auto_increment: i64,
    /// PostgreSQL's heap position of each row: the order rows were first inserted (an update
    /// stays in place, as a HOT update does on its page). A sequential scan meets rows in this
    /// order; [`Table::rows_per_heap_page`] of them fill a page, which SSI's page locks cover.
    pub heap_positions: BTreeMap<Key, u64>,
    /// Rows placed so far.
    pub heap_rows: u64,
    /// Writes (committed or undone) since the last purge pass.
    pub writes_since_purge: u64,
    /// PostgreSQL: index entries (`None`: the primary key; by primary key) of tuples whose
    /// insert was rolled back, that no index scan has met yet. The dead heap tuple stays until
    /// vacuum; the first index scan that meets it examines it (for SSI, a tuple read) and
    /// marks the entry dead (`kill_prior_tuple`), so later scans of that index skip it.
    pub dead_inserts: BTreeSet<(Option<usize>, Key)>,
}

/// What a purge pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Deleted rows removed.
    pub rows: u64,
    /// Index entries removed.
    pub index_entries: u64,
}

impl Table {
    /// A new empty table.
    pub fn new(
        name: String,
        columns: Vec<ColumnSpec>,
        primary_key: Vec<usize>,
        indexes: Vec<IndexDef>,
    ) -> Table {
        assert!(!primary_key.is_empty(), "a table needs a primary key");
        assert!(primary_key.iter().all(|&c| c < columns.len()));
        let index_entries = indexes.iter().map(|_| BTreeSet::new()).collect();
        Table {
            name,
            columns,
            primary_key,
            indexes,
            rows: BTreeMap::new(),
            index_entries,
            next_auto_increment: 1,
            heap_positions: BTreeMap::new(),
            heap_rows: 0,
            writes_since_purge: 0,
            dead_inserts: BTreeSet::new(),
        }
    }

    /// Whether enough writes happened since the last purge pass for another one (see
    /// [`PURGE_THRESHOLD_WRITES`]).
    pub fn purge_due(&self) -> bool {
        let rows = self.rows.len() as u64;
        self.writes_since_purge > PURGE_THRESHOLD_WRITES + rows * PURGE_SCALE_PERCENT / 100
    }

    /// Removes what no snapshot at or after `horizon` can see: old versions of rows without an
    /// uncommitted version, rows whose only version left is a deletion, and index entries of
    /// values no version left has. A record is kept while a lock refers to it, or to the gap
    /// before it or before the record after it (`record_locked` and `gap_locked` ask the lock
    /// manager, with the index `None` for the primary key and the gap's end record, `None`
    /// for the end of the index): then no locking decision changes because of the purge, and
    /// InnoDB's inheritance of a purged record's locks by its successor never arises. The
    /// entries of a row with an uncommitted version stay too: a rollback to a savepoint may
    /// bring back an earlier uncommitted version.
    pub fn purge(
        &mut self,
        horizon: CommitSeq,
        record_locked: impl Fn(&Key) -> bool,
        gap_locked: impl Fn(Option<usize>, Option<&Key>) -> bool,
    ) -> Purged {
        self.writes_since_purge = 0;
        // Vacuum removes the tuples of rolled-back inserts with their index entries.
        self.dead_inserts.clear();
        let mut purged = Purged::default();
        let mut dead_rows = Vec::new();
        let mut keys = self.rows.iter_mut().peekable();
        while let Some((key, rv)) = keys.next() {
            if rv.pending.is_some() {
                continue;
            }
            rv.prune(horizon);
            let dead =
                matches!(rv.committed.as_slice(), [v] if v.data.is_none() && v.seq <= horizon);
            if !dead || record_locked(key) || gap_locked(None, Some(key)) {
                continue;
            }
            let next = keys.peek().map(|(k, _)| *k);
            if !gap_locked(None, next) {
                dead_rows.push(key.clone());
            }
        }
        for key in &dead_rows {
            self.rows.remove(key);
            self.heap_positions.remove(key);
        }
        purged.rows = dead_rows.len() as u64;
        for index in 0..self.indexes.len() {
            let mut dead_entries = Vec::new();
            let mut entries = self.index_entries[index].iter().peekable();
            while let Some(entry) = entries.next() {
                let (values, key) = entry;
                let live = self.rows.get(key).is_some_and(|rv| {
                    rv.pending.is_some()
                        || rv
                            .committed
                            .iter()
                            .filter_map(|v| v.data.as_ref())
                            .any(|row| self.index_key_of(index, row) == *values)
                });
                if live || record_locked(key) {
                    continue;
                }
                let concat = |(v, k): &(Key, Key)| -> Key { v.iter().chain(k).cloned().collect() };
                if gap_locked(Some(index), Some(&concat(entry))) {
                    continue;
                }
                let next = entries.peek().map(|e| concat(e));
                if !gap_locked(Some(index), next.as_ref()) {
                    dead_entries.push(entry.clone());
                }
            }
            purged.index_entries += dead_entries.len() as u64;
            for entry in &dead_entries {
                self.index_entries[index].remove(entry);
            }
        }
        purged
    }

    /// PostgreSQL: the insert of row `key` with the values `row` was rolled back; its tuple
    /// and index entries stay (see [`Table::dead_inserts`]).
    pub fn record_dead_insert(&mut self, key: &Key, row: &Row) {
        self.dead_inserts.insert((None, key.clone()));
        for index in 0..self.indexes.len() {
            let values = self.index_key_of(index, row);
            if self.index_entries[index].contains(&(values, key.clone())) {
                self.dead_inserts.insert((Some(index), key.clone()));
            }
        }
    }

    /// The position of `column`.
    pub fn column(&self, column: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == column)
    }

    /// The primary key of `row`.
    pub fn key_of(&self, row: &Row) -> Key {
        self.primary_key.iter().map(|&c| row[c].clone()).collect()
    }

    /// The values of index `index` in `row`.
    pub fn index_key_of(&self, index: usize, row: &Row) -> Key {
        self.indexes[index]
            .columns
            .iter()
            .map(|&c| row[c].clone())
            .collect()
    }

    /// The name of the primary key constraint, as PostgreSQL names it.
    pub fn primary_key_name(&self) -> String {
        format!("{}_pkey", self.name)
    }

    /// Records that some version of the row `key` has the values `row` in every index.
    pub fn index_row(&mut self, key: &Key, row: &Row) {
        for index in 0..self.indexes.len() {
            let values = self.index_key_of(index, row);
            self.index_entries[index].insert((values, key.clone()));
        }
    }

    /// Primary keys of rows some version of which had `values` in index `index`, in order.
    pub fn index_lookup(&self, index: usize, values: &Key) -> Vec<Key> {
        self.index_keys(index, values).cloned().collect()
    }

    /// The primary keys [`Table::index_lookup`] gives, borrowed from the index.
    pub fn index_keys<'a>(
        &'a self,
        index: usize,
        values: &'a Key,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        let start = (values.clone(), Vec::new());
        self.index_entries[index]
            .range((Bound::Included(start), Bound::Unbounded))
            .take_while(move |(v, _)| v == values)
            .map(|(_, k)| k)
    }

    /// Rows per PostgreSQL heap page for this table: an 8 kB page less its header, over a tuple
    /// header of 24 bytes, a line pointer of 4 and about 8 bytes per column.
    pub fn rows_per_heap_page(&self) -> u64 {
        let row_bytes = 28 + 8 * self.columns.len() as u64;
        (8192 - 24) / row_bytes
    }

    /// Places row `key` at the end of the heap the first time it is written.
    pub fn place_row(&mut self, key: &Key) {
        if !self.heap_positions.contains_key(key) {
            self.heap_positions.insert(key.clone(), self.heap_rows);
            self.heap_rows += 1;
        }
    }

    /// The heap position of row `key` (0 for a row never placed, like a replica's).
    pub fn heap_position(&self, key: &Key) -> u64 {
        self.heap_positions.get(key).copied().unwrap_or(0)
    }

    /// The heap page of row `key` (0 for a row never placed, like a replica's).
    pub fn heap_page(&self, key: &Key) -> u64 {
        self.heap_position(key) / self.rows_per_heap_page()
    }

    /// The leaf page of index `index` (`None`: the primary key) that holds `entry` (index
    /// values followed by the primary key), as the range `[lo, hi)` of entries it covers: the
    /// index's entries in order, [`INDEX_ENTRIES_PER_PAGE`] to a page.
    pub fn index_page(&self, index: Option<usize>, entry: &Key) -> (Option<Key>, Option<Key>) {
        match index {
            None => page_bounds(self.rows.keys().map(|k| (k.as_slice(), &[][..])), entry),
            Some(i) => page_bounds(
                self.index_entries[i]
                    .iter()
                    .map(|(v, k)| (v.as_slice(), k.as_slice())),
                entry,
            ),
        }
    }

    /// The leaf pages of index `index` that a scan from `lo` to `hi` visits (see
    /// [`Table::index_page`]).
    pub fn index_pages_between(
        &self,
        index: Option<usize>,
        lo: &Bound<Key>,
        hi: &Bound<Key>,
    ) -> Vec<(Option<Key>, Option<Key>)> {
        let first = match lo {
            Bound::Included(k) | Bound::Excluded(k) => self.index_page(index, k),
            Bound::Unbounded => self.index_page(index, &Vec::new()),
        };
        let mut pages = vec![first];
        while let Some(next) = pages.last().and_then(|(_, hi)| hi.clone()) {
            let beyond = match hi {
                Bound::Included(h) => next > *h,
                Bound::Excluded(h) => next >= *h,
                Bound::Unbounded => false,
            };
            if beyond {
                break;
            }
            pages.push(self.index_page(index, &next));
        }
        pages
    }

    /// The first primary key after `key`, or `None` for the end of the table (InnoDB's
    /// supremum): the record whose gap an insert of `key` falls into.
    pub fn primary_successor(&self, key: &Key) -> Option<Key> {
        self.rows
            .range((Bound::Excluded(key.clone()), Bound::Unbounded))
            .next()
            .map(|(k, _)| k.clone())
    }

    /// The first entry of index `index` after `(values, key)`.
    pub fn index_successor(&self, index: usize, values: &Key, key: &Key) -> Option<(Key, Key)> {
        self.index_entries[index]
            .range((
                Bound::Excluded((values.clone(), key.clone())),
                Bound::Unbounded,
            ))
            .next()
            .cloned()
    }
}

/// The page of `entry` among `entries` (in order, each the concatenation of its two parts),
/// [`INDEX_ENTRIES_PER_PAGE`] to a page, as `[lo, hi)` (see [`Table::index_page`]). Walks the
/// entries up to the next page's first one only, and copies just the two bounds.
fn page_bounds<'a>(
    entries: impl Iterator<Item = (&'a [Value], &'a [Value])>,
    entry: &Key,
) -> (Option<Key>, Option<Key>) {
    let per_page = INDEX_ENTRIES_PER_PAGE;
    let concat = |(a, b): (&[Value], &[Value])| -> Key { a.iter().chain(b).cloned().collect() };
    // The first entry of the page of the last entry at or below `entry` (an entry between two
    // pages belongs to the left one, whose high key is above it).
    let mut page_first = None;
    let mut entries = entries.enumerate();
    for (i, e) in entries.by_ref() {
        let above = e.0.iter().chain(e.1).cmp(entry.iter()) == std::cmp::Ordering::Greater;
        if above {
            // `i` entries are at or below `entry`: the page is that of entry `i - 1` (or the
            // first page), and it ends at the next multiple of the page size.
            let page = i.saturating_sub(1) / per_page;
            let hi_at = (page + 1) * per_page;
            let hi = if hi_at == i {
                Some(concat(e))
            } else {
                entries.nth(hi_at - i - 1).map(|(_, e)| concat(e))
            };
            let lo = if page > 0 { page_first } else { None };
            return (lo, hi);
        }
        if i % per_page == 0 && i > 0 {
            page_first = Some(concat(e));
        }
    }
    // Every entry is at or below `entry`: the last page.
    (page_first, None)
}

/// One row written by a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowWrite {
    /// The table.
    pub table: String,
    /// The primary key.
    pub key: Vec<Value>,
    /// The row as committed, or `None` for a deletion.
    pub row: Option<Vec<Value>>,
}

/// One committed transaction or schema change, in commit order: what a replica applies and
/// what the trace hash covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// The commit sequence number.
    pub seq: CommitSeq,
    /// A schema statement (`CREATE TABLE`, `CREATE INDEX`), replayed as is by a replica.
    pub ddl: Option<String>,
    /// The rows written, in primary-key order per table.
    pub writes: Vec<RowWrite>,
}
