//! Writes: unique checks that fail on a live duplicate and wait for an uncommitted one, new
//! row versions with their undo entries and SSI write tracking, and InnoDB's insert
//! intentions that wait for gap locks.

use super::access::{concat_key, index_successor};
use super::transaction::Undo;
use super::{Database, Fail, SessionId, Step};
use crate::db::lock::{Grant, LockMode, LockTarget, RecordLockKind};
use crate::db::profile::{errors, Engine, Isolation};
use crate::db::sql::LockWaitPolicy;
use crate::db::ssi::WriteSet;
use crate::db::storage::{Key, Pending, Row, TxId};
use crate::db::value::{DbError, Value};

/// Which indexes a unique check or an insert intention covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// The primary key and every secondary index.
    All,
    /// The primary key (the clustered index).
    Primary,
    /// One secondary index.
    Secondary(usize),
}

impl Scope {
    /// Whether the scope covers `index` (`None`: the primary key).
    fn has(self, index: Option<usize>) -> bool {
        match self {
            Scope::All => true,
            Scope::Primary => index.is_none(),
            Scope::Secondary(i) => index == Some(i),
        }
    }
}

/// InnoDB: how far an INSERT has come, kept across its lock waits. InnoDB inserts a row into
/// one index after the other, the clustered index first, and a statement that waits in a
/// secondary index keeps the rows and the clustered record it has inserted (other
/// transactions meet that record, and wait for it); it goes on from there when woken.
#[derive(Debug, Clone, Default)]
pub(super) struct InnoDbInsert {
    /// The rows of the statement before this one are done.
    pub(super) next_row: usize,
    /// Row `next_row` as evaluated (its auto-increment value drawn once).
    pub(super) row: Option<Row>,
    /// The undo log length before row `next_row`'s clustered record was written, once it is.
    pub(super) written_at: Option<usize>,
    /// The rows inserted so far.
    pub(super) inserted: Vec<Row>,
    /// The first auto-increment value drawn.
    pub(super) last_insert_id: Option<i64>,
}

/// What a unique check met.
enum Conflict {
    /// A version of another open transaction, on this row, met in the primary key (`index`
    /// `None`) or a unique index.
    Uncommitted { row: Key, index: Option<usize> },
    /// A committed row with the key, in the primary key (`index` `None`) or a unique index.
    Committed {
        row: Key,
        index: Option<usize>,
        live: bool,
    },
}

impl Database {
    /// Unique checks for a new version `new` of row `key` (`old`: the key and row it
    /// replaces, for an UPDATE): a live duplicate fails, an uncommitted one by another
    /// transaction is waited for (then checked again).
    pub(super) fn check_unique(
        &mut self,
        tx: TxId,
        table_name: &str,
        key: &Key,
        new: &Row,
        old: Option<(&Key, &Row)>,
    ) -> Step<()> {
        self.check_unique_in(tx, table_name, key, new, old, Scope::All)
    }

    /// [`Database::check_unique`] in the indexes of `scope` only.
    pub(super) fn check_unique_in(
        &mut self,
        tx: TxId,
        table_name: &str,
        key: &Key,
        new: &Row,
        old: Option<(&Key, &Row)>,
        scope: Scope,
    ) -> Step<()> {
        let engine = self.engine;
        let found = self.unique_conflict(tx, table_name, key, new, old, scope)?;
        if engine == Engine::InnoDb
            && matches!(found, None | Some(Conflict::Committed { live: false, .. }))
        {
            self.innodb_duplicate_scan_locks(tx, table_name, key, new, old, scope)?;
        }
        if engine == Engine::Postgres && self.ssi.tracks(tx) {
            let met_in = match &found {
                None | Some(Conflict::Committed { live: false, .. }) => None,
                Some(Conflict::Uncommitted { index, .. }) => Some(*index),
                Some(Conflict::Committed { index, .. }) => Some(*index),
            };
            if let Some(index) = met_in {
                self.pg_ssi_before_unique_index(tx, table_name, key, new, index)?;
            }
        }
        match found {
            None => Ok(()),
            Some(Conflict::Uncommitted { row: other, index }) => {
                // Wait for the other writer by queueing for a shared lock on its row; InnoDB
                // keeps that lock, which is what makes concurrent inserts of one key
                // deadlock-prone; PostgreSQL only waits for the other transaction to end.
                let target = LockTarget::Record {
                    table: table_name.to_string(),
                    key: other.clone(),
                };
                match engine {
                    Engine::Postgres => Err(self.pg_wait_for_writer(tx, table_name, target)),
                    Engine::InnoDb => {
                        // In a secondary index InnoDB locks the index record it met, the
                        // writer's implicit lock made explicit, not the clustered record
                        // (`row_ins_scan_sec_index_for_duplicate`): it queues behind that
                        // record's lockers only.
                        let target = match (index, target) {
                            (Some(i), LockTarget::Record { table, key }) => LockTarget::Entry {
                                entry: concat_key(&self.table(&table)?.index_key_of(i, new), &key),
                                table,
                                index: i,
                            },
                            (_, target) => target,
                        };
                        self.innodb_convert_implicit(tx, &target);
                        if index.is_some() {
                            let owner = self.table(table_name)?.rows[&other]
                                .pending
                                .as_ref()
                                .expect("an uncommitted duplicate")
                                .tx;
                            self.locks.grant_converted(owner, &target);
                        }
                        match self.locks.request(tx, &target, LockMode::Shared) {
                            Grant::Wait(_) => Err(Fail::wait(table_name)),
                            Grant::Granted => unreachable!("the other writer holds the row"),
                        }
                    }
                }
            }
            Some(Conflict::Committed { row, index, live }) => {
                if engine == Engine::InnoDb {
                    self.innodb_duplicate_lock(tx, table_name, &row, index, new)?;
                }
                if index.is_none() && self.changed_since_read_view(tx, table_name, &row) {
                    // innodb_snapshot_isolation: the check locks the clustered record it
                    // meets, and a record changed after the read view, deleted or not, is
                    // 1020 (measured). A duplicate met in a secondary index is 1062 even when
                    // its row changed after the read view (measured, random group 100092).
                    return Err(errors::record_changed(table_name).into());
                }
                if !live {
                    return Ok(());
                }
                let table = self.table(table_name)?;
                let (name, values) = match index {
                    None => (table.primary_key_name(), key.clone()),
                    Some(i) => (table.indexes[i].name.clone(), table.index_key_of(i, new)),
                };
                if self.ssi.tracks(tx) {
                    // PostgreSQL checks the index page for a conflict in before it reports a
                    // unique violation, so that SSI can explain it (`_bt_check_unique`): a
                    // transaction that read the key fails with 40001 instead (measured).
                    let mut entry = values.clone();
                    if index.is_some() {
                        entry.extend(key.iter().cloned());
                    }
                    let write = WriteSet {
                        table: table_name.to_string(),
                        replaced: None,
                        entries: vec![(index, entry)],
                        in_subtransaction: false,
                    };
                    let fail = self.ssi.conflict_in_check(tx, &write);
                    self.ssi_fail(tx, fail)?;
                }
                Err(errors::duplicate_key(engine, table_name, &name, &key_text(&values)).into())
            }
        }
    }

    /// InnoDB: a new record in a unique secondary index next to records with the same values
    /// (delete-marked, or this transaction's own) makes the unique check scan them
    /// (`row_ins_scan_sec_index_for_duplicate`, entered when the insert position matches the
    /// unique prefix): it locks each record it reads, and the first one past them (or the
    /// supremum), shared with `LOCK_ORDINARY`, the gaps before them included, in every
    /// isolation level (measured: read uncommitted keeps inserts out of the gap after them).
    /// None of them is a live duplicate of another transaction here ([`Database::check_unique`]
    /// handles those).
    fn innodb_duplicate_scan_locks(
        &mut self,
        tx: TxId,
        table_name: &str,
        key: &Key,
        new: &Row,
        old: Option<(&Key, &Row)>,
        scope: Scope,
    ) -> Step<()> {
        let table = self.table(table_name)?;
        let mut targets = Vec::new();
        for (i, index) in table.indexes.iter().enumerate() {
            if !index.unique || !scope.has(Some(i)) {
                continue;
            }
            let values = table.index_key_of(i, new);
            if values.iter().any(Value::is_null) {
                continue;
            }
            // An UPDATE in place that keeps the values leaves the index alone.
            if old.is_some_and(|(k, r)| k == key && table.index_key_of(i, r) == values) {
                continue;
            }
            let exists = |k: &Key| {
                table.rows.get(k).is_some_and(|rv| {
                    rv.pending
                        .iter()
                        .filter_map(|p| p.data.as_ref())
                        .chain(rv.committed.iter().filter_map(|c| c.data.as_ref()))
                        .any(|r| table.index_key_of(i, r) == values)
                })
            };
            let same: Vec<Key> = table
                .index_lookup(i, &values)
                .into_iter()
                .filter(|k| k != key && exists(k))
                .collect();
            let Some(last) = table.index_lookup(i, &values).into_iter().next_back() else {
                continue;
            };
            if same.is_empty() {
                continue;
            }
            let past = index_successor(table, i, &values, &last);
            for record in same
                .iter()
                .map(|k| Some(concat_key(&values, k)))
                .chain(std::iter::once(past))
            {
                let gap = LockTarget::Gap {
                    table: table_name.to_string(),
                    index: Some(i),
                    before: record.clone(),
                };
                let entry = record.map(|entry| LockTarget::Entry {
                    table: table_name.to_string(),
                    index: i,
                    entry,
                });
                targets.push((entry, gap));
            }
        }
        for (entry, gap) in targets {
            self.locks.note_table_lock(tx, table_name, true);
            if let Some(entry) = &entry {
                if let Grant::Wait(_) = self.locks.request(tx, entry, LockMode::Shared) {
                    return Err(Fail::wait(table_name));
                }
            }
            let granted = self.locks.request(tx, &gap, LockMode::Gap);
            assert_eq!(granted, Grant::Granted);
            self.locks
                .note_struct(tx, &gap, false, RecordLockKind::NextKey);
        }
        Ok(())
    }

    /// PostgreSQL: waits for the transaction that holds row `target` to end, as a unique
    /// check does for an uncommitted duplicate (`XactLockTableWait`; no row lock stays).
    fn pg_wait_for_writer(&mut self, tx: TxId, table_name: &str, target: LockTarget) -> Fail {
        match self
            .locks
            .request_holder_wait(tx, &target, LockMode::Shared)
        {
            Grant::Wait(_) => Fail::Wait {
                table: table_name.to_string(),
                release_on_wake: Some(target),
            },
            Grant::Granted => unreachable!("the other writer holds the row"),
        }
    }

    /// PostgreSQL writes a new row version index by index after the heap (`heap_insert` or
    /// `heap_update`, then `ExecInsertIndexTuples` in index order, the primary key first), and
    /// each index insert runs its unique check and then SSI's conflict-in check of the page it
    /// lands on (`_bt_doinsert`). So when the unique check of index `index` (`None`: the
    /// primary key) waits for an uncommitted duplicate or reports a live one, the heap and
    /// the indexes before it have had their conflict-in checks: a doomed transaction fails
    /// there with `40001`, and the conflicts found stay after a wait or a unique violation.
    fn pg_ssi_before_unique_index(
        &mut self,
        tx: TxId,
        table_name: &str,
        key: &Key,
        new: &Row,
        index: Option<usize>,
    ) -> Step<()> {
        let table = &self.tables[table_name];
        let mut entries = Vec::new();
        if let Some(i) = index {
            entries.push((None, key.clone()));
            for j in 0..i {
                entries.push((Some(j), concat_key(&table.index_key_of(j, new), key)));
            }
        }
        let write = WriteSet {
            table: table_name.to_string(),
            replaced: None,
            entries,
            in_subtransaction: false,
        };
        let fail = self.ssi.conflict_in(tx, &write);
        self.ssi_fail(tx, fail)
    }

    /// InnoDB: the unique check locks the duplicate record it meets, committed and live or
    /// delete-marked, shared, before it decides (`row_ins_duplicate_error_in_clust`,
    /// `row_ins_scan_sec_index_for_duplicate`): the clustered record alone, or the secondary
    /// index record with its gap, in every isolation level (the secondary scan locks
    /// `LOCK_ORDINARY` whatever the isolation level; measured: under read uncommitted the
    /// gap before the duplicate keeps another transaction's insert out). So it waits while
    /// another transaction holds the record exclusively, and the lock stays after the
    /// duplicate error (or the ignored row) until the transaction ends.
    fn innodb_duplicate_lock(
        &mut self,
        tx: TxId,
        table_name: &str,
        row: &Key,
        index: Option<usize>,
        new: &Row,
    ) -> Step<()> {
        let table = self.table(table_name)?;
        let (target, gap) = match index {
            None => (
                LockTarget::Record {
                    table: table_name.to_string(),
                    key: row.clone(),
                },
                None,
            ),
            Some(i) => {
                let entry = concat_key(&table.index_key_of(i, new), row);
                let gap = Some(LockTarget::Gap {
                    table: table_name.to_string(),
                    index: Some(i),
                    before: Some(entry.clone()),
                });
                (
                    LockTarget::Entry {
                        table: table_name.to_string(),
                        index: i,
                        entry,
                    },
                    gap,
                )
            }
        };
        self.locks.note_table_lock(tx, table_name, true);
        let kind = if gap.is_some() {
            RecordLockKind::NextKey
        } else {
            RecordLockKind::RecordOnly
        };
        // A lock the transaction holds on the duplicate already covers the shared one
        // (`lock_rec_has_expl`): no new lock and no struct.
        let covered = self.locks.record_lock_covered(tx, &target, false, kind);
        if let Grant::Wait(_) = self.locks.request(tx, &target, LockMode::Shared) {
            return Err(Fail::wait(table_name));
        }
        if !covered {
            self.locks.note_struct(tx, &target, false, kind);
        }
        if let Some(gap) = gap {
            let granted = self.locks.request(tx, &gap, LockMode::Gap);
            assert_eq!(granted, Grant::Granted);
        }
        Ok(())
    }

    /// PostgreSQL's `INSERT ... ON CONFLICT DO NOTHING` checks its arbiter indexes before it
    /// inserts (`ExecCheckIndexConstraints`, a dirty-snapshot index scan that takes no SIREAD
    /// locks): true to skip the row for a conflicting live row, after waiting for an
    /// uncommitted one to end. In repeatable read and serializable the conflicting row
    /// version must be visible to the transaction's snapshot (`ExecCheckTIDVisible`), else
    /// the insert fails with `40001` (measured), whoever wrote it.
    pub(super) fn pg_on_conflict_precheck(
        &mut self,
        tx: TxId,
        table_name: &str,
        key: &Key,
        new: &Row,
        snapshot: crate::db::storage::CommitSeq,
        isolation: Isolation,
    ) -> Step<bool> {
        match self.unique_conflict(tx, table_name, key, new, None, Scope::All)? {
            None | Some(Conflict::Committed { live: false, .. }) => Ok(false),
            Some(Conflict::Uncommitted { row: other, .. }) => {
                // Wait for the other writer as the unique check does, before any SSI check:
                // the pre-check comes before the heap insert.
                let target = LockTarget::Record {
                    table: table_name.to_string(),
                    key: other,
                };
                Err(self.pg_wait_for_writer(tx, table_name, target))
            }
            Some(Conflict::Committed { row, .. }) => {
                if isolation >= Isolation::RepeatableRead {
                    let rv = &self.table(table_name)?.rows[&row];
                    let own = rv.pending.as_ref().is_some_and(|p| p.tx == tx);
                    let invisible = !own && rv.latest_committed().is_none_or(|v| v.seq > snapshot);
                    if invisible {
                        return Err(errors::concurrent_update(false).into());
                    }
                }
                Ok(true)
            }
        }
    }

    /// The first record a unique check of `new` meets: an uncommitted version of another
    /// transaction, or a committed row with the same key (`live` unless it is deleted).
    fn unique_conflict(
        &self,
        tx: TxId,
        table_name: &str,
        key: &Key,
        new: &Row,
        old: Option<(&Key, &Row)>,
        scope: Scope,
    ) -> Result<Option<Conflict>, DbError> {
        let table = self.table(table_name)?;
        let (old_key, old_row) = match old {
            Some((k, r)) => (Some(k), Some(r)),
            None => (None, None),
        };
        let mut deleted = None;
        // The primary key of a new row, or a new primary key.
        if old_key != Some(key) && scope.has(None) {
            if let Some(rv) = table.rows.get(key) {
                match &rv.pending {
                    Some(p) if p.tx != tx => {
                        return Ok(Some(Conflict::Uncommitted {
                            row: key.clone(),
                            index: None,
                        }))
                    }
                    Some(p) => {
                        if p.data.is_some() {
                            return Ok(Some(Conflict::Committed {
                                row: key.clone(),
                                index: None,
                                live: true,
                            }));
                        }
                    }
                    None => {
                        if rv.latest_committed().is_some_and(|v| v.data.is_some()) {
                            return Ok(Some(Conflict::Committed {
                                row: key.clone(),
                                index: None,
                                live: true,
                            }));
                        }
                        // A deleted row: no duplicate, but its record is still met.
                        deleted = Some(Conflict::Committed {
                            row: key.clone(),
                            index: None,
                            live: false,
                        });
                    }
                }
            }
        }
        for (i, index) in table.indexes.iter().enumerate() {
            if !index.unique || !scope.has(Some(i)) {
                continue;
            }
            let values = table.index_key_of(i, new);
            if values.iter().any(Value::is_null) {
                continue;
            }
            if old_row.is_some_and(|o| table.index_key_of(i, o) == values) {
                continue;
            }
            for other in table.index_lookup(i, &values) {
                if other == *key || Some(&other) == old_key {
                    continue;
                }
                // Index entries outlive rolled-back inserts.
                let Some(rv) = table.rows.get(&other) else {
                    continue;
                };
                let has =
                    |row: Option<&Row>| row.is_some_and(|r| table.index_key_of(i, r) == values);
                let committed = rv.latest_committed().and_then(|v| v.data.as_ref());
                let duplicate = Conflict::Committed {
                    row: other.clone(),
                    index: Some(i),
                    live: true,
                };
                match &rv.pending {
                    // InnoDB: a writer that left this index's values as they were holds no
                    // implicit lock on the index record (`row_vers_impl_x_locked`), so the
                    // check meets a live duplicate and fails without waiting (measured).
                    Some(p)
                        if p.tx != tx
                            && self.engine == Engine::InnoDb
                            && has(p.data.as_ref())
                            && has(committed) =>
                    {
                        return Ok(Some(duplicate));
                    }
                    Some(p) if p.tx != tx => {
                        if has(p.data.as_ref()) || has(committed) {
                            return Ok(Some(Conflict::Uncommitted {
                                row: other,
                                index: Some(i),
                            }));
                        }
                    }
                    Some(p) => {
                        if has(p.data.as_ref()) {
                            return Ok(Some(duplicate));
                        }
                    }
                    None => {
                        if has(committed) {
                            return Ok(Some(duplicate));
                        }
                    }
                }
            }
        }
        Ok(deleted)
    }

    /// `innodb_snapshot_isolation`: whether the newest committed version of row `key` is newer
    /// than the read view of `tx` (never without the switch, in another isolation level, or
    /// before the transaction's first consistent read).
    pub(super) fn changed_since_read_view(&self, tx: TxId, table_name: &str, key: &Key) -> bool {
        let Some(t) = self
            .tx_session
            .get(&tx)
            .and_then(|s| self.sessions[s].tx.as_ref())
        else {
            return false;
        };
        let Some(view) = t.snapshot else {
            return false;
        };
        if !(self.profile.innodb_snapshot_isolation() && t.isolation == Isolation::RepeatableRead) {
            return false;
        }
        self.tables
            .get(table_name)
            .and_then(|table| table.rows.get(key))
            .and_then(|rv| rv.latest_committed())
            .is_some_and(|latest| latest.seq > view)
    }

    /// Writes a new version of row `key` (`None` deletes it) as `tx`, which holds its lock.
    pub(super) fn write_row(
        &mut self,
        tx: TxId,
        table_name: &str,
        key: &Key,
        old: Option<&Row>,
        new: Option<Row>,
    ) -> Step<()> {
        let target = LockTarget::Record {
            table: table_name.to_string(),
            key: key.clone(),
        };
        assert!(
            self.locks.holds(tx, &target, LockMode::Exclusive),
            "writes hold the row lock"
        );
        let write = self
            .ssi
            .tracks(tx)
            .then(|| self.ssi_write_set(tx, table_name, key, old, new.as_ref()));
        let table = self.tables.get_mut(table_name).expect("table");
        if let Some(row) = &new {
            table.index_row(key, row);
            table.place_row(key);
        }
        let rv = table.rows.entry(key.clone()).or_default();
        let previous = rv.pending.clone();
        assert!(previous.as_ref().is_none_or(|p| p.tx == tx));
        // An insert starts a new tuple, and a tuple this transaction inserted stays new
        // through its later updates: a re-check after a lock wait that follows the update
        // chain of the row it found never reaches it (see `pg_follow_chain`).
        let new_tuple = match &previous {
            Some(p) => p.new_tuple || (p.data.is_none() && new.is_some()),
            None => old.is_none() && new.is_some(),
        };
        // A new tuple written where this transaction moved the row away keeps the move: the
        // old tuple's update chain still leads to the key it moved to, whatever now lives at
        // the old key (PostgreSQL follows t_ctid, not the key).
        let moved_to = previous
            .as_ref()
            .filter(|_| new_tuple)
            .and_then(|p| p.moved_to.clone());
        rv.pending = Some(Pending {
            tx,
            data: new,
            moved_to,
            new_tuple,
        });
        let session = self.tx_session[&tx];
        self.sessions
            .get_mut(&session)
            .and_then(|s| s.tx.as_mut())
            .expect("transaction")
            .undo
            .push(Undo {
                table: table_name.to_string(),
                key: key.clone(),
                previous,
            });
        self.stats.rows_touched += 1;
        if let Some(write) = write {
            let fail = self.ssi.conflict_in(tx, &write);
            self.ssi_fail(tx, fail)?;
        }
        Ok(())
    }

    /// Moves row `key` (`old`) to `new_key` with the values `new`, for an UPDATE of the primary
    /// key: the old key is deleted (marked as moved, so that PostgreSQL's re-check after a
    /// lock wait follows the row), the new one inserted under its own lock (and InnoDB's
    /// insert intention for the gap it lands in).
    pub(super) fn move_row(
        &mut self,
        tx: TxId,
        table_name: &str,
        key: &Key,
        old: &Row,
        new_key: &Key,
        new: Row,
    ) -> Step<()> {
        assert_ne!(key, new_key, "a move changes the key");
        if self.engine == Engine::InnoDb {
            self.insert_intention(tx, table_name, new_key, &new, Scope::All)?;
        }
        self.lock_record_to_write(tx, table_name, new_key)?;
        self.write_row(tx, table_name, key, Some(old), None)?;
        let table = self.tables.get_mut(table_name).expect("table");
        let pending = table.rows.get_mut(key).and_then(|rv| rv.pending.as_mut());
        pending.expect("the deletion just written").moved_to = Some(new_key.clone());
        self.write_row(tx, table_name, new_key, None, Some(new))?;
        // The row under its new key is the next version of the moved one, not a new tuple.
        let table = self.tables.get_mut(table_name).expect("table");
        let pending = table
            .rows
            .get_mut(new_key)
            .and_then(|rv| rv.pending.as_mut());
        let pending = pending.expect("the version just written");
        // The chain of a tuple that moved out of `new_key` earlier ends here, at its last
        // version: a row moved back in is the newest link, not a pointer onwards.
        pending.new_tuple = false;
        pending.moved_to = None;
        Ok(())
    }

    /// Takes the exclusive lock on record `key` of `table_name` that writing it needs, waiting
    /// for it if another transaction holds the record.
    fn lock_record_to_write(&mut self, tx: TxId, table_name: &str, key: &Key) -> Step<()> {
        let target = LockTarget::Record {
            table: table_name.to_string(),
            key: key.clone(),
        };
        let locked = self.lock_row(
            tx,
            table_name,
            &target,
            LockMode::Exclusive,
            LockWaitPolicy::Wait,
        )?;
        assert!(locked, "a waiting lock request never skips the row");
        Ok(())
    }

    /// InnoDB: inserts row `key` (`row`, row `state.next_row` of the statement of `session`)
    /// index by index as `row_ins_index_entry_step` does: the clustered index (unique check,
    /// insert intention, the record), then each secondary index in order (unique check,
    /// insert intention). A wait keeps what is written ([`InnoDbInsert`]); a duplicate is
    /// ignored (`false`, the row's clustered record rolled back) under INSERT IGNORE.
    pub(super) fn innodb_insert_row(
        &mut self,
        session: SessionId,
        table_name: &str,
        key: &Key,
        row: &Row,
        ignore: bool,
    ) -> Step<bool> {
        let tx = self.session_tx(session);
        let ignored = |e: &Fail| ignore && matches!(e, Fail::Error(e) if e.is_unique_violation());
        let written_at = self.sessions[&session]
            .innodb_insert
            .as_ref()
            .expect("an InnoDB insert in progress")
            .written_at;
        let written_at = match written_at {
            Some(at) => at,
            None => {
                match self.check_unique_in(tx, table_name, key, row, None, Scope::Primary) {
                    Err(e) if ignored(&e) => return Ok(false),
                    other => other?,
                }
                self.insert_intention(tx, table_name, key, row, Scope::Primary)?;
                self.lock_record_to_write(tx, table_name, key)?;
                let at = self.tx_mut(session).undo.len();
                self.write_row(tx, table_name, key, None, Some(row.clone()))?;
                let state = self.sessions.get_mut(&session).expect("session");
                state
                    .innodb_insert
                    .as_mut()
                    .expect("insert state")
                    .written_at = Some(at);
                at
            }
        };
        for i in 0..self.table(table_name)?.indexes.len() {
            match self.check_unique_in(tx, table_name, key, row, None, Scope::Secondary(i)) {
                Err(e) if ignored(&e) => {
                    self.undo_to(session, written_at);
                    return Ok(false);
                }
                other => other?,
            }
            self.insert_intention(tx, table_name, key, row, Scope::Secondary(i))?;
        }
        Ok(true)
    }

    /// InnoDB: an insert waits while another transaction holds a gap lock on a gap the new
    /// row falls into, in the primary key or any secondary index.
    /// A new record splits its gap: the gap locks on it cover the gap before the new record
    /// too ([`crate::db::lock::LockManager::inherit_gap`]).
    pub(super) fn insert_intention(
        &mut self,
        tx: TxId,
        table_name: &str,
        key: &Key,
        row: &Row,
        scope: Scope,
    ) -> Step<()> {
        let table = self.table(table_name)?;
        // Each gap the new row falls into, with the gap before its new record there (`None`
        // where the record is already in the index, delete-marked, and is only written over).
        let mut gaps = Vec::new();
        if !table.rows.contains_key(key) && scope.has(None) {
            gaps.push((
                LockTarget::Gap {
                    table: table_name.to_string(),
                    index: None,
                    before: table.primary_successor(key),
                },
                Some(LockTarget::Gap {
                    table: table_name.to_string(),
                    index: None,
                    before: Some(key.clone()),
                }),
            ));
        }
        for i in (0..table.indexes.len()).filter(|&i| scope.has(Some(i))) {
            let values = table.index_key_of(i, row);
            let existed = table.rows.get(key).is_some_and(|rv| {
                rv.committed
                    .iter()
                    .filter_map(|c| c.data.as_ref())
                    .any(|r| table.index_key_of(i, r) == values)
            });
            gaps.push((
                LockTarget::Gap {
                    table: table_name.to_string(),
                    index: Some(i),
                    before: index_successor(table, i, &values, key),
                },
                (!existed).then(|| LockTarget::Gap {
                    table: table_name.to_string(),
                    index: Some(i),
                    before: Some(concat_key(&values, key)),
                }),
            ));
        }
        for (gap, _) in &gaps {
            if let Grant::Wait(_) = self.locks.request(tx, gap, LockMode::InsertIntention) {
                return Err(Fail::wait(table_name));
            }
        }
        for (gap, split) in &gaps {
            if let Some(split) = split {
                self.locks.inherit_gap(gap, split);
            }
        }
        Ok(())
    }
}

pub(super) fn key_text(key: &Key) -> String {
    key.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("-")
}
