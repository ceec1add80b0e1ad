//! Reads along an access path: the rows a statement sees and the rows it locks. Snapshot
//! reads see the version of their snapshot; PostgreSQL's locking reads find rows in the
//! snapshot and lock them (re-checking changed rows); InnoDB's locking reads lock every record
//! they scan on its newest version, with gaps under repeatable read. Serializable reads are
//! recorded for SSI here.

use std::collections::BTreeSet;
use std::ops::Bound;

use super::access::{
    dead_inserts_met, index_order, positions, row_entries, row_keys, Access, Direction, Position,
};
use super::expr::{eval, matches, BExpr};
use super::predicate::{examine, MetWriters};
use super::result::compare_sort_keys;
use super::{Database, Fail, SessionId, Step};
use crate::db::lock::{Grant, LockMode, LockTarget, RecordLockKind};
use crate::db::profile::{errors, Engine, Isolation};
use crate::db::sql::LockWaitPolicy;
use crate::db::storage::{CommitSeq, Key, Row, RowVersions, TxId};
use crate::db::value::Value;

/// What a locking read walks: the table, the access path and its direction, the WHERE, and
/// how many matching rows it needs before it may stop.
#[derive(Debug, Clone, Copy)]
pub(super) struct ScanSpec<'a> {
    pub(super) table: &'a str,
    pub(super) access: &'a Access,
    pub(super) direction: Direction,
    pub(super) filter: Option<&'a BExpr>,
    /// `LIMIT` plus `OFFSET` when rows come in the order asked for; `None` reads them all.
    pub(super) wanted: Option<usize>,
    /// PostgreSQL: the plan is an index scan that delivers the rows in the order asked for
    /// (see [`pg_index_order`]), so rows are read and locked one by one, without a sort.
    pub(super) in_order: bool,
}

/// What PostgreSQL's locking read does with each row it finds (see
/// [`Database::pg_lock_found`]).
struct PgFound<'a> {
    table: &'a str,
    filter: Option<&'a BExpr>,
    mode: LockMode,
    policy: LockWaitPolicy,
    snapshot: CommitSeq,
    writes: bool,
}

/// Where the update chain of a row version leads (PostgreSQL's `t_ctid` links).
enum Chain {
    /// To this newest committed version.
    Live(Row),
    /// To this transaction's own version (or its deletion).
    Own(Option<Row>),
    /// To a deletion, or to a new tuple inserted under the same key after one.
    Deleted,
    /// To a deletion by an UPDATE of the primary key, at this commit: the row goes on under
    /// the new key.
    Moved(Key, CommitSeq),
}

/// Follows the update chain of a committed row through its versions from `from` on (the
/// version a snapshot saw: excluded; the version a move wrote under a new key: included).
fn follow_chain(rv: &RowVersions, from: Bound<CommitSeq>) -> Chain {
    let after = |seq: CommitSeq| match from {
        Bound::Included(s) => seq >= s,
        Bound::Excluded(s) => seq > s,
        Bound::Unbounded => true,
    };
    let mut latest = None;
    for v in rv.committed.iter().filter(|v| after(v.seq)) {
        if v.new_tuple {
            // A new tuple at the key ends the old tuple's chain: where it moved, if the same
            // writer moved it away first (see `Version::moved_to`), or nowhere.
            return match &v.moved_to {
                Some(next) => Chain::Moved(next.clone(), v.seq),
                None => Chain::Deleted,
            };
        }
        match &v.data {
            None => {
                return match &v.moved_to {
                    Some(next) => Chain::Moved(next.clone(), v.seq),
                    None => Chain::Deleted,
                }
            }
            Some(row) => latest = Some(row),
        }
    }
    Chain::Live(
        latest
            .expect("a chain has a version after its start")
            .clone(),
    )
}

/// PostgreSQL's plan for a query ordered by the primary key over primary key lookups, a
/// range of it or the whole table: an index scan of the primary key in that order, not a
/// sort (EXPLAIN on PostgreSQL 15.18, with or without `LIMIT`, for `FOR UPDATE` too). The
/// direction it walks, or `None` for a plan that sorts, a secondary index (whose equal
/// entries are in heap order, not key order) or no `ORDER BY` (a sequential scan).
pub(super) fn pg_index_order(
    table: &crate::db::storage::Table,
    access: &Access,
    order: &[(BExpr, bool)],
) -> Option<Direction> {
    if order.is_empty() || matches!(access, Access::Index { .. }) {
        return None;
    }
    index_order(table, access, order)
}

/// How far an index scan has read its access path.
#[derive(Clone, Copy)]
pub(super) enum ReadUpTo<'a> {
    /// All of it.
    All,
    /// It stopped before the first row (`LIMIT 0`).
    Nothing,
    /// It stopped after this row.
    Row(&'a Key),
}

/// The part of `access` an index scan in `direction` has read, for SSI: an index scan of the
/// whole table locks the primary key's pages it visits, not the relation.
pub(super) fn read_so_far(access: &Access, direction: Direction, read: ReadUpTo) -> Access {
    let last = match read {
        ReadUpTo::All => {
            return match access {
                Access::Scan => Access::Range {
                    lo: Bound::Unbounded,
                    hi: Bound::Unbounded,
                },
                other => other.clone(),
            };
        }
        ReadUpTo::Nothing => return Access::Keys(Vec::new()),
        ReadUpTo::Row(last) => last,
    };
    let reached = |k: &Key| match direction {
        Direction::Asc => k <= last,
        Direction::Desc => k >= last,
    };
    let (lo, hi) = match access {
        Access::Scan => (Bound::Unbounded, Bound::Unbounded),
        Access::Range { lo, hi } => (lo.clone(), hi.clone()),
        Access::Keys(keys) => {
            return Access::Keys(keys.iter().filter(|k| reached(k)).cloned().collect())
        }
        Access::Index { .. } => return access.clone(),
    };
    match direction {
        Direction::Asc => Access::Range {
            lo,
            hi: Bound::Included(last.clone()),
        },
        Direction::Desc => Access::Range {
            lo: Bound::Included(last.clone()),
            hi,
        },
    }
}

impl Database {
    /// A non-locking read: the version each row has in `snapshot` (own writes included), or the
    /// newest version of any transaction when there is no snapshot (InnoDB read uncommitted).
    /// `in_order`: PostgreSQL's index scan in the order the query asks for (see
    /// [`pg_index_order`]), in this direction, stopping after `wanted` rows (`LIMIT` plus
    /// `OFFSET`) when given: a serializable transaction reads (locks, meets writers) only
    /// that far.
    pub(super) fn snapshot_read(
        &mut self,
        tx: TxId,
        table_name: &str,
        access: &Access,
        filter: Option<&BExpr>,
        snapshot: Option<CommitSeq>,
        in_order: Option<(Direction, Option<usize>)>,
    ) -> Step<Vec<Row>> {
        let engine = self.engine;
        let serializable = self.ssi.tracks(tx);
        let table = self.table(table_name)?;
        let (direction, wanted) = in_order.unwrap_or((Direction::Asc, None));
        let entries = row_entries(table, access, direction);
        let seqscan = matches!(access, Access::Scan) && in_order.is_none();
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let mut writers = MetWriters::new(seqscan);
        let mut touched = 0u64;
        let mut last_read: Option<&Key> = None;
        let mut stopped = false;
        for &(key, rv) in &entries {
            if wanted.is_some_and(|w| out.len() >= w) {
                stopped = true;
                break;
            }
            touched += 1;
            last_read = Some(key);
            let data = match snapshot {
                Some(snapshot) => {
                    if serializable {
                        let examined = examine(rv, tx, snapshot, seqscan);
                        seen.extend(examined.version.map(|v| (key.clone(), v)));
                        writers.add(table, key, examined.writers);
                    }
                    if engine == Engine::Postgres {
                        if let Some(old) = deleted_under_own_insert(rv, tx, snapshot) {
                            // PostgreSQL keeps the deleted tuple, still visible in the
                            // snapshot, beside the one this transaction inserted in its
                            // place: a scan returns both (measured).
                            if matches(engine, filter, old)? {
                                out.push(old.clone());
                            }
                        }
                    }
                    visible(rv, tx, snapshot)
                }
                None => match &rv.pending {
                    Some(p) => p.data.as_ref(),
                    None => rv.latest_committed().and_then(|v| v.data.as_ref()),
                },
            };
            let Some(row) = data else {
                continue;
            };
            if matches(engine, filter, row)? {
                out.push(row.clone());
            }
        }
        let last_read: Option<Key> = last_read.cloned();
        self.stats.rows_touched += touched;
        let met_dead = !stopped && self.meet_dead_inserts(table_name, access)?;
        if serializable {
            let read = match in_order {
                None => access.clone(),
                Some(_) => {
                    let up_to = match (stopped, &last_read) {
                        (false, _) => ReadUpTo::All,
                        (true, None) => ReadUpTo::Nothing,
                        (true, Some(last)) => ReadUpTo::Row(last),
                    };
                    read_so_far(access, direction, up_to)
                }
            };
            let writers = writers.into_ordered();
            self.ssi_after_read(
                tx,
                table_name,
                &read,
                touched > 0 || met_dead,
                seen,
                writers,
            )?;
        }
        Ok(out)
    }

    /// PostgreSQL: an index scan of `access` that read its whole path meets the tuples of
    /// rolled-back inserts left in it (see [`Table::dead_inserts`]): whether it met any (a
    /// tuple examined, for SSI's doom check). It marks their entries dead, as the scan's
    /// `kill_prior_tuple` does, so the next scan of the index skips them. (A scan that
    /// stopped early is not credited with them.)
    ///
    /// [`Table::dead_inserts`]: crate::db::storage::Table::dead_inserts
    fn meet_dead_inserts(&mut self, table_name: &str, access: &Access) -> Step<bool> {
        if self.engine != Engine::Postgres {
            return Ok(false);
        }
        let met = dead_inserts_met(self.table(table_name)?, access);
        let table = self.tables.get_mut(table_name).expect("table");
        for entry in &met {
            table.dead_inserts.remove(entry);
        }
        Ok(!met.is_empty())
    }

    /// Dooms the other pivots; fails this statement if `tx` itself is one. A statement that
    /// replays its scan up to the row it waited for ([`Ssi::replay`]) dooms itself instead:
    /// PostgreSQL made those checks before the wait, and a structure that formed while it
    /// slept (a commit that doomed it) fails it only at its next check, after what it finds
    /// at that row (a concurrent update fails with plain `40001` first).
    pub(super) fn ssi_fail(&mut self, tx: TxId, pivots: Vec<TxId>) -> Step<()> {
        let mut fail = false;
        for pivot in pivots {
            if pivot == tx && !self.ssi.is_replaying(tx) {
                fail = true;
            } else {
                self.ssi.doom(pivot);
            }
        }
        debug_assert!(!fail || !self.ssi.is_replaying(tx));
        if fail {
            return Err(errors::rw_dependency().into());
        }
        Ok(())
    }

    /// PostgreSQL's locking read (`FOR UPDATE`/`FOR SHARE`, and the row search of UPDATE and
    /// DELETE): rows that match in the statement snapshot, locked one by one; a row changed
    /// since the snapshot is re-checked on the newest version of its update chain in read
    /// committed (EvalPlanQual, see [`Database::pg_lock_found`]) and fails with `40001` in
    /// repeatable read and serializable.
    ///
    /// A plan that sorts ([`ScanSpec::in_order`] false: a sequential or bitmap scan) reads
    /// every row before it locks the first. An index scan in the order asked for (`LockRows`
    /// under `Limit` over it) reads and locks row by row and stops once the limit has its
    /// rows, so a serializable transaction takes SIREAD locks and meets concurrent writers
    /// only up to there.
    ///
    /// For an UPDATE or DELETE (`writes`), a serializable transaction runs SSI's conflict-in
    /// check of each row as soon as it holds the row, before it goes on to the next one:
    /// PostgreSQL writes row by row (`heap_update`/`heap_delete` call
    /// `CheckForSerializableConflictIn`), so a row that fails later, or waits, comes after the
    /// conflicts of the rows before it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pg_locking_read(
        &mut self,
        session: SessionId,
        spec: ScanSpec,
        mode: LockMode,
        policy: LockWaitPolicy,
        snapshot: CommitSeq,
        order: &[(BExpr, bool)],
        writes: bool,
    ) -> Step<Vec<(Key, Row)>> {
        let ScanSpec {
            table: table_name,
            access,
            direction,
            filter,
            wanted,
            in_order,
        } = spec;
        let engine = self.engine;
        let tx = self.session_tx(session);
        let serializable = self.ssi.tracks(tx);
        let isolation = self.tx_mut(session).isolation;
        let found = PgFound {
            table: table_name,
            filter,
            mode,
            policy,
            snapshot,
            writes,
        };
        if in_order {
            return self.pg_locking_index_scan(session, access, direction, wanted, &found);
        }
        let table = self.table(table_name)?;
        // Each row found, and whether it is a tuple a concurrent transaction deleted and this
        // one inserted again (see `deleted_under_own_insert`).
        let mut candidates: Vec<(Key, Row, bool)> = Vec::new();
        let seqscan = matches!(access, Access::Scan);
        let mut seen = Vec::new();
        let mut writers = MetWriters::new(seqscan);
        let mut touched = 0u64;
        for key in row_keys(table, access, direction) {
            let Some(rv) = table.rows.get(&key) else {
                continue;
            };
            touched += 1;
            if serializable {
                let examined = examine(rv, tx, snapshot, seqscan);
                seen.extend(examined.version.map(|v| (key.clone(), v)));
                writers.add(table, &key, examined.writers);
            }
            if let Some(old) = deleted_under_own_insert(rv, tx, snapshot) {
                if matches(engine, filter, old)? {
                    candidates.push((key.clone(), old.clone(), true));
                }
            }
            if let Some(row) = visible(rv, tx, snapshot) {
                if matches(engine, filter, row)? {
                    candidates.push((key, row.clone(), false));
                }
            }
        }
        self.stats.rows_touched += touched;
        let met_dead = self.meet_dead_inserts(table_name, access)?;
        if serializable {
            let writers = writers.into_ordered();
            let examined = touched > 0 || met_dead;
            self.ssi_after_read(tx, table_name, access, examined, seen, writers)?;
        }
        if !order.is_empty() {
            let mut keyed: Vec<(Vec<Value>, (Key, Row, bool))> = Vec::new();
            for (key, row, dead) in candidates {
                let sort_key = order
                    .iter()
                    .map(|(e, _)| eval(engine, e, &row))
                    .collect::<Result<Vec<_>, _>>()?;
                keyed.push((sort_key, (key, row, dead)));
            }
            keyed.sort_by(|a, b| compare_sort_keys(engine, &a.0, &b.0, order));
            candidates = keyed.into_iter().map(|(_, kr)| kr).collect();
        }
        let mut out = Vec::new();
        for (key, row, dead) in candidates {
            if wanted.is_some_and(|w| out.len() >= w) {
                break;
            }
            if dead {
                // The old tuple, still visible in the snapshot beside this transaction's own
                // row of its key, was deleted by a transaction that committed since: locking
                // it fails in repeatable read and serializable (measured), and read committed
                // never sees it (its snapshot is newer than that commit).
                if isolation >= Isolation::RepeatableRead {
                    return Err(errors::concurrent_update(true).into());
                }
                continue;
            }
            out.extend(self.pg_lock_found(session, key, row, &found)?);
        }
        Ok(out)
    }

    /// [`Database::pg_locking_read`] over an index scan that delivers rows in the order asked
    /// for: each row is read, locked and re-checked before the next one is read, and the scan
    /// stops when `wanted` rows are locked. A serializable transaction records what it has
    /// read so far before each lock (a wait comes after those reads, as in PostgreSQL), and
    /// at the end the index pages up to the last row read.
    fn pg_locking_index_scan(
        &mut self,
        session: SessionId,
        access: &Access,
        direction: Direction,
        wanted: Option<usize>,
        found: &PgFound,
    ) -> Step<Vec<(Key, Row)>> {
        let engine = self.engine;
        let tx = self.session_tx(session);
        let serializable = self.ssi.tracks(tx);
        let isolation = self.tx_mut(session).isolation;
        let table_name = found.table;
        let keys = row_keys(self.table(table_name)?, access, direction);
        let mut seen = Vec::new();
        let mut writers = MetWriters::new(false);
        let mut last_read: Option<Key> = None;
        // Tuples examined since the SIREAD locks were last taken: the doom check of the final
        // read concerns those only.
        let mut examined_since = false;
        let mut stopped = false;
        let mut out = Vec::new();
        for key in keys {
            if wanted.is_some_and(|w| out.len() >= w) {
                stopped = true;
                break;
            }
            self.stats.rows_touched += 1;
            let table = self.table(table_name)?;
            let Some(rv) = table.rows.get(&key) else {
                continue;
            };
            if serializable {
                let examined = examine(rv, tx, found.snapshot, false);
                seen.extend(examined.version.map(|v| (key.clone(), v)));
                writers.add(table, &key, examined.writers);
            }
            last_read = Some(key.clone());
            examined_since = true;
            let dead = match deleted_under_own_insert(rv, tx, found.snapshot) {
                Some(old) => matches(engine, found.filter, old)?,
                None => false,
            };
            let row = match visible(rv, tx, found.snapshot) {
                Some(row) if matches(engine, found.filter, row)? => Some(row.clone()),
                _ => None,
            };
            if !dead && row.is_none() {
                continue;
            }
            if serializable {
                let read = read_so_far(access, direction, ReadUpTo::Row(&key));
                let writers =
                    std::mem::replace(&mut writers, MetWriters::new(false)).into_ordered();
                let seen = std::mem::take(&mut seen);
                self.ssi_after_read(tx, table_name, &read, true, seen, writers)?;
                examined_since = false;
            }
            if dead && isolation >= Isolation::RepeatableRead {
                // See `pg_locking_read`: the old tuple beside this transaction's own.
                return Err(errors::concurrent_update(true).into());
            }
            let Some(row) = row else {
                continue;
            };
            out.extend(self.pg_lock_found(session, key, row, found)?);
        }
        if !stopped && self.meet_dead_inserts(table_name, access)? {
            examined_since = true;
        }
        if serializable {
            let up_to = match (stopped, &last_read) {
                (false, _) => ReadUpTo::All,
                (true, None) => ReadUpTo::Nothing,
                (true, Some(last)) => ReadUpTo::Row(last),
            };
            let read = read_so_far(access, direction, up_to);
            let writers = writers.into_ordered();
            self.ssi_after_read(tx, table_name, &read, examined_since, seen, writers)?;
        }
        Ok(out)
    }

    /// Locks row `key`, which the statement found as `row` in its snapshot, the way
    /// PostgreSQL's `heap_lock_tuple` / `heap_update` do after a scan found the tuple: wait
    /// for its writer (or skip it, or fail, by the lock wait policy), then look at what the
    /// writer left. Unchanged since the snapshot: the row. Changed, in repeatable read and
    /// serializable: `40001` (concurrent update, or delete). Changed, in read committed: the
    /// update chain of the version found is followed to its newest version, which is locked
    /// and re-checked against the WHERE (EvalPlanQual); a chain that ends in a deletion
    /// skips the row. A row deleted and inserted again under the same key is a new tuple at
    /// the end of no chain: the statement's snapshot did not see it, so it is skipped too.
    /// PostgreSQL holds no lock on a dead tuple: a lock this statement took on a row found
    /// deleted, or on the old key of a row that moved, is given back.
    fn pg_lock_found(
        &mut self,
        session: SessionId,
        key: Key,
        row: Row,
        found: &PgFound,
    ) -> Step<Option<(Key, Row)>> {
        let engine = self.engine;
        let tx = self.session_tx(session);
        let isolation = self.tx_mut(session).isolation;
        let serializable = self.ssi.tracks(tx);
        let table_name = found.table;
        let target = LockTarget::Record {
            table: table_name.to_string(),
            key: key.clone(),
        };
        if !self.lock_row(tx, table_name, &target, found.mode, found.policy)? {
            return Ok(None);
        }
        if serializable {
            // Back at the row a re-run statement waited for: what follows, PostgreSQL did
            // after the wait.
            self.ssi.replayed(tx, table_name, &key);
        }
        let rv = &self.table(table_name)?.rows[&key];
        let mut chain = match &rv.pending {
            Some(p) => {
                assert_eq!(p.tx, tx, "a locked row has no other writer");
                return Ok(Some((key, row)));
            }
            None => {
                let latest = rv.latest_committed().expect("a visible row has versions");
                if latest.seq <= found.snapshot {
                    if found.writes && serializable {
                        let write = self.ssi_write_set(tx, table_name, &key, Some(&row), None);
                        let fail = self.ssi.conflict_in(tx, &write);
                        self.ssi_fail(tx, fail)?;
                    }
                    return Ok(Some((key, row)));
                }
                // Changed by a transaction that committed after the snapshot.
                let seen = rv
                    .visible_at(found.snapshot)
                    .expect("the row was found in the snapshot")
                    .seq;
                let chain = follow_chain(rv, Bound::Excluded(seen));
                if isolation >= Isolation::RepeatableRead {
                    let deleted = matches!(chain, Chain::Deleted);
                    return Err(errors::concurrent_update(deleted).into());
                }
                chain
            }
        };
        // Read committed: follow the chain (across keys, for a row whose primary key was
        // updated), lock its newest version and re-check it.
        let mut key = key;
        let mut hops = 0usize;
        loop {
            let target = LockTarget::Record {
                table: table_name.to_string(),
                key: key.clone(),
            };
            let (next, moved_at) = match chain {
                Chain::Live(latest) => {
                    return Ok(matches(engine, found.filter, &latest)?.then_some((key, latest)));
                }
                Chain::Own(latest) => {
                    let Some(latest) = latest else {
                        return Ok(None);
                    };
                    return Ok(matches(engine, found.filter, &latest)?.then_some((key, latest)));
                }
                Chain::Deleted => {
                    let woken = self.locks.release(tx, &target);
                    self.woken.extend(woken);
                    return Ok(None);
                }
                Chain::Moved(next, at) => (next, at),
            };
            let woken = self.locks.release(tx, &target);
            self.woken.extend(woken);
            hops += 1;
            assert!(hops <= self.stats.commits as usize + 1, "a move chain ends");
            let target = LockTarget::Record {
                table: table_name.to_string(),
                key: next.clone(),
            };
            if !self.lock_row(tx, table_name, &target, found.mode, found.policy)? {
                return Ok(None);
            }
            let Some(rv) = self.table(table_name)?.rows.get(&next) else {
                // The transaction that moved the row deleted it again before it committed:
                // no version of its own at the new key (PostgreSQL's chain ends in a tuple
                // inserted and deleted by one transaction, `TM_Deleted`).
                let woken = self.locks.release(tx, &target);
                self.woken.extend(woken);
                return Ok(None);
            };
            chain = match &rv.pending {
                Some(p) => {
                    assert_eq!(p.tx, tx, "a locked row has no other writer");
                    Chain::Own(p.data.clone())
                }
                None => follow_chain(rv, Bound::Included(moved_at)),
            };
            key = next;
        }
    }

    /// InnoDB's locking read: every row scanned is locked on its newest committed version
    /// (own writes included) before the WHERE is evaluated; a scan of a secondary index locks
    /// the index record first, then the row's clustered record; repeatable read and
    /// serializable also lock the gaps before them and after the range (a record and its gap
    /// as one next-key lock: a record lock that waits takes no gap yet). Read committed
    /// releases the locks of rows that do not match, unless they were granted after a wait
    /// (InnoDB unlocks only a lock the row search created without waiting), and an UPDATE
    /// there first reads the newest committed version of a locked row to skip it without
    /// waiting when it does not match (semi-consistent read; the caller allows it on
    /// clustered index scans only). A statement woken from a wait goes on from the record it
    /// waited for, as InnoDB's cursor does ([`InnoDbCursor`]).
    pub(super) fn innodb_locking_read(
        &mut self,
        session: SessionId,
        spec: ScanSpec,
        mode: LockMode,
        policy: LockWaitPolicy,
        semi_consistent: bool,
    ) -> Step<Vec<(Key, Row)>> {
        let ScanSpec {
            table: table_name,
            access,
            direction,
            filter,
            wanted,
            in_order: _,
        } = spec;
        let engine = self.engine;
        let tx = self.session_tx(session);
        let (isolation, read_view) = {
            let t = self.tx_mut(session);
            (t.isolation, t.snapshot)
        };
        let gaps = isolation >= Isolation::RepeatableRead;
        let exclusive = mode == LockMode::Exclusive;
        let snapshot_isolation =
            self.profile.innodb_snapshot_isolation() && isolation == Isolation::RepeatableRead;
        self.locks.note_table_lock(tx, table_name, exclusive);
        let table = self.table(table_name)?;
        let index_columns = match access {
            Access::Index { index, .. } => table.indexes[*index].columns.len(),
            _ => 0,
        };
        let positions = positions(table, access, direction);
        let cursor = self.sessions[&session]
            .innodb_cursor
            .clone()
            .filter(|c| c.table == table_name);
        let mut resuming = cursor.is_some();
        let mut out: Vec<(Key, Row)> = Vec::new();
        let mut touched = 0u64;
        for position in positions {
            if wanted.is_some_and(|w| out.len() >= w) {
                break;
            }
            let (key, gap, end_of_range, entry, order) = match position {
                Position::Gap(gap) => {
                    if gaps && !resuming {
                        let supremum = matches!(gap, LockTarget::Gap { before: None, .. });
                        let kind = if supremum {
                            RecordLockKind::NextKey
                        } else {
                            RecordLockKind::GapOnly
                        };
                        let covered = self.locks.record_lock_covered(tx, &gap, exclusive, kind);
                        let granted = self.locks.request(tx, &gap, LockMode::Gap);
                        assert_eq!(granted, Grant::Granted);
                        // The supremum is locked with an ordinary next-key lock
                        // (`row_search_mvcc` locks it `LOCK_ORDINARY` before it looks at the
                        // search condition), of one struct type with the scan's next-key
                        // locks; the first record past an equality search only its gap. A
                        // lock the transaction holds there already covers it: no struct.
                        if !covered {
                            self.locks.note_struct(tx, &gap, exclusive, kind);
                        }
                    }
                    continue;
                }
                Position::Row {
                    key,
                    gap,
                    end_of_range,
                    entry,
                    order,
                } => (key, gap, end_of_range, entry, order),
            };
            if let Some(c) = cursor.as_ref().filter(|_| resuming) {
                let before = match direction {
                    Direction::Asc => order < c.resume_at,
                    Direction::Desc => order > c.resume_at,
                };
                if !before {
                    resuming = false;
                } else if !c.kept.contains(&key) {
                    // Passed before the wait: the cursor does not come back to it.
                    continue;
                }
            }
            touched += 1;
            let gap = gap.filter(|_| gaps);
            let target = LockTarget::Record {
                table: table_name.to_string(),
                key: key.clone(),
            };
            if !gaps && entry.is_none() {
                // Read committed passes over a clustered record whose deletion is committed
                // without locking it: no version of it can match any more (measured; a
                // repeatable read scan waits for a lock on it).
                let rv = &self.table(table_name)?.rows[&key];
                if rv.pending.is_none() && rv.latest_committed().is_none_or(|v| v.data.is_none()) {
                    continue;
                }
            }
            let mode_before = self.locks.mode_held(tx, &target);
            let held_before = self.locks.holds(tx, &target, mode);
            if semi_consistent && self.locks.would_wait(tx, &target, mode) {
                let table = self.table(table_name)?;
                let committed = table.rows[&key]
                    .latest_committed()
                    .and_then(|v| v.data.as_ref());
                match committed {
                    Some(row) if matches(engine, filter, row)? => {}
                    _ => continue,
                }
            }
            let mut entry_held_before = false;
            let mut entry_mode_before = None;
            if let Some(entry) = &entry {
                entry_held_before = self.locks.holds(tx, entry, mode);
                entry_mode_before = self.locks.mode_held(tx, entry);
                let kind = if gap.is_some() {
                    RecordLockKind::NextKey
                } else {
                    RecordLockKind::RecordOnly
                };
                let covered = self.locks.record_lock_covered(tx, entry, exclusive, kind);
                if !self
                    .innodb_lock(session, access, entry, mode, policy, &order, &out)
                    .inspect_err(|_| self.innodb_next_key_wait(tx, gap.as_ref()))?
                {
                    continue;
                }
                if !covered {
                    self.locks.note_struct(tx, entry, exclusive, kind);
                }
                if let Some(gap) = &gap {
                    let granted = self.locks.request(tx, gap, LockMode::Gap);
                    assert_eq!(granted, Grant::Granted);
                    self.locks.note_next_key_gap(tx, gap, exclusive);
                }
                // A delete-marked index record (the row is gone, or no longer has these
                // values) is passed over before its clustered record is looked at.
                let rv = &self.table(table_name)?.rows[&key];
                let other_writer = rv.pending.as_ref().is_some_and(|p| p.tx != tx);
                let newest = match &rv.pending {
                    Some(p) if p.tx == tx => p.data.as_ref(),
                    _ => rv.latest_committed().and_then(|v| v.data.as_ref()),
                };
                let values = &order[..index_columns];
                let index = match access {
                    Access::Index { index, .. } => *index,
                    _ => unreachable!("an index record comes from an index scan"),
                };
                let table = self.table(table_name)?;
                let live = newest.is_some_and(|r| table.index_key_of(index, r) == values);
                if !other_writer && !live {
                    if !(gaps || entry_held_before) {
                        let woken = self.locks.release_to(tx, entry, entry_mode_before);
                        self.woken.extend(woken);
                    }
                    continue;
                }
            }
            let next_key_gap = gap.as_ref().filter(|_| entry.is_none());
            let kind = if next_key_gap.is_some() {
                RecordLockKind::NextKey
            } else {
                RecordLockKind::RecordOnly
            };
            let covered = self.locks.record_lock_covered(tx, &target, exclusive, kind);
            if !self
                .innodb_lock(session, access, &target, mode, policy, &order, &out)
                .inspect_err(|_| self.innodb_next_key_wait(tx, next_key_gap))?
            {
                continue;
            }
            if !covered {
                self.locks.note_struct(tx, &target, exclusive, kind);
            }
            if let Some(gap) = next_key_gap {
                let granted = self.locks.request(tx, gap, LockMode::Gap);
                assert_eq!(granted, Grant::Granted);
                self.locks.note_next_key_gap(tx, gap, exclusive);
            }
            let table = self.table(table_name)?;
            let rv = &table.rows[&key];
            let row = match &rv.pending {
                Some(p) => {
                    // The lock is held, so an uncommitted version can only be our own.
                    assert_eq!(p.tx, tx);
                    p.data.as_ref()
                }
                None => {
                    let latest = rv.latest_committed();
                    if snapshot_isolation {
                        if let (Some(view), Some(latest)) = (read_view, latest) {
                            if latest.seq > view {
                                return Err(errors::record_changed(table_name).into());
                            }
                        }
                    }
                    latest.and_then(|v| v.data.as_ref())
                }
            };
            let matched = match row {
                Some(row) => matches(engine, filter, row)?,
                None => false,
            };
            if matched {
                out.push((key, row.expect("matched row").clone()));
            } else if !(gaps || held_before || (end_of_range && direction == Direction::Desc)) {
                // Read committed gives back the lock of a row that does not match, except for
                // the row that ends a backward range scan, which MariaDB keeps (measured).
                let woken = self.locks.release_to(tx, &target, mode_before);
                self.woken.extend(woken);
                if let Some(entry) = entry.as_ref().filter(|_| !entry_held_before) {
                    let woken = self.locks.release_to(tx, entry, entry_mode_before);
                    self.woken.extend(woken);
                }
            }
        }
        self.stats.rows_touched += touched;
        Ok(out)
    }

    /// Requests a record lock for InnoDB's locking read at scan position `order`; a wait
    /// leaves the statement's cursor there (with the rows it has taken so far, `out`), so
    /// that the statement goes on from this record when woken.
    #[allow(clippy::too_many_arguments)]
    fn innodb_lock(
        &mut self,
        session: SessionId,
        access: &Access,
        target: &LockTarget,
        mode: LockMode,
        policy: LockWaitPolicy,
        order: &Key,
        out: &[(Key, Row)],
    ) -> Step<bool> {
        let tx = self.session_tx(session);
        let table_name = target.table();
        self.innodb_convert_implicit(tx, target);
        match self.lock_row(tx, table_name, target, mode, policy) {
            Err(Fail::Wait {
                table,
                release_on_wake,
            }) => {
                let s = self.sessions.get_mut(&session).expect("session");
                let mut kept: BTreeSet<Key> = s
                    .innodb_cursor
                    .take()
                    .filter(|c| c.table == table_name)
                    .map(|c| c.kept)
                    .unwrap_or_default();
                kept.extend(out.iter().map(|(k, _)| k.clone()));
                s.innodb_cursor = Some(InnoDbCursor {
                    table: table_name.to_string(),
                    access: access.clone(),
                    resume_at: order.clone(),
                    kept,
                });
                Err(Fail::Wait {
                    table,
                    release_on_wake,
                })
            }
            other => other,
        }
    }
}

impl Database {
    /// InnoDB: a record lock request that waits as part of a next-key lock covers `gap` too.
    fn innodb_next_key_wait(&mut self, tx: TxId, gap: Option<&LockTarget>) {
        if let Some(gap) = gap {
            if self.locks.waiting_target(tx).is_some() {
                self.locks.note_next_key_wait(tx, gap);
            }
        }
    }

    /// InnoDB: a transaction's lock on a row it inserted is implicit in the record (no lock
    /// struct) until another transaction asks for a lock on it; then InnoDB makes it an
    /// explicit record lock of the inserting transaction (`lock_rec_convert_impl_to_expl`),
    /// which counts in that transaction's deadlock weight.
    pub(super) fn innodb_convert_implicit(&mut self, tx: TxId, target: &LockTarget) {
        if let LockTarget::Entry {
            table,
            index,
            entry,
        } = target
        {
            // A secondary index record is implicitly locked by the open transaction that
            // wrote it or delete-marked it, one whose row version changed its values
            // (`row_vers_impl_x_locked`).
            let Some(t) = self.tables.get(table) else {
                return;
            };
            let columns = t.indexes[*index].columns.len();
            let (values, key) = entry.split_at(columns);
            let Some(rv) = t.rows.get(key) else {
                return;
            };
            let Some(p) = rv.pending.as_ref().filter(|p| p.tx != tx) else {
                return;
            };
            let has = |r: Option<&Row>| r.is_some_and(|r| t.index_key_of(*index, r) == values);
            let committed = rv.latest_committed().and_then(|v| v.data.as_ref());
            if has(p.data.as_ref()) != has(committed) {
                // The asker then queues on the index record itself, behind the writer, so
                // its own lock struct there is a waiting one (it holds none it could be
                // granted before reaching the clustered record).
                let owner = p.tx;
                self.locks.grant_converted(owner, target);
                self.locks
                    .note_struct(owner, target, true, RecordLockKind::RecordOnly);
            }
            return;
        }
        let LockTarget::Record { table, key } = target else {
            return;
        };
        let Some(rv) = self.tables.get(table).and_then(|t| t.rows.get(key)) else {
            return;
        };
        let Some(p) = rv.pending.as_ref().filter(|p| p.tx != tx) else {
            return;
        };
        let inserted = p.data.is_some() && rv.latest_committed().is_none_or(|v| v.data.is_none());
        if inserted {
            let owner = p.tx;
            self.locks
                .note_struct(owner, target, true, RecordLockKind::RecordOnly);
        }
    }
}

/// InnoDB: where a locking read that waited stands in its index. InnoDB's row search waits at
/// the record and then goes on from it; the simulated statement runs again from the start, so
/// it passes over the positions before `resume_at` except the rows it had already taken
/// (`kept`, still locked), and a row that came into the range behind the cursor meanwhile is
/// not seen (measured on MariaDB 10.11.19).
#[derive(Debug, Clone)]
pub(super) struct InnoDbCursor {
    table: String,
    /// The access path the statement chose when it began: the cursor stays in that index,
    /// though rows committed meanwhile would make the optimizer choose another now.
    access: Access,
    resume_at: Key,
    kept: BTreeSet<Key>,
}

impl Database {
    /// InnoDB: the access path of the statement of `session` on `table_name`: the one it
    /// began with if it resumes after a lock wait, else `chosen`.
    pub(super) fn innodb_resumed_access(
        &self,
        session: SessionId,
        table_name: &str,
        chosen: Access,
    ) -> Access {
        self.sessions[&session]
            .innodb_cursor
            .as_ref()
            .filter(|c| c.table == table_name)
            .map_or(chosen, |c| c.access.clone())
    }

    /// InnoDB: the rows the locking read of `session` on `table_name` took before its wait.
    pub(super) fn innodb_cursor_kept(&self, session: SessionId, table_name: &str) -> Vec<Key> {
        self.sessions[&session]
            .innodb_cursor
            .as_ref()
            .filter(|c| c.table == table_name)
            .map(|c| c.kept.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// PostgreSQL: the row that a concurrent transaction deleted after `snapshot` and `tx` then
/// inserted again: the old tuple is still visible in the snapshot beside `tx`'s own.
fn deleted_under_own_insert(rv: &RowVersions, tx: TxId, snapshot: CommitSeq) -> Option<&Row> {
    let own = rv.pending.as_ref().filter(|p| p.tx == tx)?;
    own.data.as_ref()?;
    let latest = rv.latest_committed()?;
    if latest.data.is_some() || latest.seq <= snapshot {
        return None;
    }
    rv.visible_at(snapshot).and_then(|v| v.data.as_ref())
}

/// The version of `rv` that `tx` sees at `snapshot`: its own uncommitted write, else the
/// newest version committed at or before the snapshot.
pub(super) fn visible(rv: &RowVersions, tx: TxId, snapshot: CommitSeq) -> Option<&Row> {
    if let Some(p) = rv.pending.as_ref().filter(|p| p.tx == tx) {
        return p.data.as_ref();
    }
    rv.visible_at(snapshot).and_then(|v| v.data.as_ref())
}
