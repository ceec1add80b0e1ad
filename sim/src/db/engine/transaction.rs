//! Transactions and undo: begin, commit (with the SSI check), rollback, savepoints, the undo
//! log that rolls a statement or a transaction back, each engine's rule for what an error
//! rolls back, and when a transaction takes its snapshot or read view.

use std::collections::BTreeSet;

use super::access::{concat_key, index_successor};
use super::savepoint::Savepoint;
use super::session::Settings;
use super::{Database, SessionId};
use crate::db::lock::LockTarget;
use crate::db::profile::{errors, Engine, Isolation};
use crate::db::sql::Stmt;
use crate::db::storage::{CommitRecord, CommitSeq, Key, Pending, Row, RowWrite, TxId, Version};
use crate::db::value::{DbError, QueryResult, Value};

#[derive(Debug, Clone)]
pub(super) struct Undo {
    pub(super) table: String,
    pub(super) key: Key,
    pub(super) previous: Option<Pending>,
}

#[derive(Debug, Clone)]
pub(super) struct Tx {
    pub(super) id: TxId,
    pub(super) isolation: Isolation,
    /// Opened with BEGIN (else one autocommit statement).
    pub(super) explicit: bool,
    /// The transaction snapshot (PostgreSQL RR/SER) or read view (InnoDB RR/SER).
    pub(super) snapshot: Option<CommitSeq>,
    pub(super) undo: Vec<Undo>,
    pub(super) savepoints: Vec<Savepoint>,
    /// PostgreSQL: an error happened; only ROLLBACK (TO SAVEPOINT) is accepted.
    pub(super) aborted: bool,
    /// A query ran in this transaction (the isolation level can no longer change).
    pub(super) queried: bool,
    /// Session settings to restore at the end of the transaction (`SET LOCAL`).
    pub(super) saved_settings: Option<Settings>,
    /// The session settings when the transaction began: PostgreSQL undoes every `SET` of a
    /// transaction that rolls back.
    pub(super) begin_settings: Settings,
    /// InnoDB: a statement of this transaction has reached the storage engine (MariaDB
    /// registers InnoDB in the transaction then; see [`Savepoint::innodb_registered`]).
    pub(super) innodb_registered: bool,
}

impl Database {
    /// An error before the statement ran (parse, bind): PostgreSQL aborts an open
    /// transaction block; MariaDB keeps it.
    pub(super) fn fail_outside_statement(&mut self, session: SessionId, _e: &DbError) {
        if self.engine == Engine::Postgres && self.in_transaction(session) {
            self.pg_abort(session);
            // The abort released the transaction's locks: the statements waiting for them
            // go on now, as after any other statement.
            self.drain_wakeups();
        }
    }

    /// The snapshot a statement reads with, taking the transaction's snapshot where the engine
    /// and isolation level take it at this statement.
    pub(super) fn statement_snapshot(
        &mut self,
        session: SessionId,
        stmt: &Stmt,
    ) -> Option<CommitSeq> {
        let engine = self.engine;
        let last = self.last_commit;
        let tx = self.tx_mut(session);
        let isolation = tx.isolation;
        // InnoDB's read view comes with the first consistent read of a table: a SELECT
        // without FROM reads none (measured on MariaDB 10.11).
        let plain_select = matches!(stmt, Stmt::Select(s) if s.lock.is_none() && s.table.is_some());
        match (engine, isolation) {
            (Engine::Postgres, Isolation::ReadUncommitted | Isolation::ReadCommitted) => Some(last),
            (Engine::Postgres, _) => {
                let first = tx.snapshot.is_none();
                let snapshot = *tx.snapshot.get_or_insert(last);
                let id = tx.id;
                if first && isolation == Isolation::Serializable {
                    self.ssi.begin(id, snapshot);
                }
                Some(snapshot)
            }
            (Engine::InnoDb, Isolation::ReadUncommitted) => None,
            (Engine::InnoDb, Isolation::ReadCommitted) => plain_select.then_some(last),
            (Engine::InnoDb, _) => {
                if plain_select && !(isolation == Isolation::Serializable && tx.explicit) {
                    Some(*tx.snapshot.get_or_insert(last))
                } else {
                    None
                }
            }
        }
    }

    pub(super) fn begin_tx(&mut self, session: SessionId, explicit: bool) {
        let id = self.next_tx;
        self.next_tx += 1;
        let s = self.sessions.get_mut(&session).expect("session");
        assert!(s.tx.is_none());
        let isolation = s.next_isolation.take().unwrap_or(s.isolation);
        let begin_settings = s.settings.clone();
        s.tx = Some(Tx {
            id,
            isolation,
            explicit,
            snapshot: None,
            undo: Vec::new(),
            savepoints: Vec::new(),
            aborted: false,
            queried: false,
            saved_settings: None,
            begin_settings,
            innodb_registered: false,
        });
        self.tx_session.insert(id, session);
    }

    /// Ends the transaction of `session` and restores `SET LOCAL` settings.
    pub(super) fn end_tx(&mut self, session: SessionId) -> Tx {
        let s = self.sessions.get_mut(&session).expect("session");
        let tx = s.tx.take().expect("open transaction");
        if let Some(saved) = &tx.saved_settings {
            self.restore_settings(session, saved.clone());
        }
        self.tx_session.remove(&tx.id);
        let woken = self.locks.release_all(tx.id);
        self.woken.extend(woken);
        tx
    }

    pub(super) fn commit_tx(&mut self, session: SessionId) -> Result<(), DbError> {
        let tx = self.session_tx(session);
        if self.ssi.tracks(tx) && !self.ssi.pre_commit(tx) {
            self.stats.serialization_failures += 1;
            self.rollback_tx(session);
            return Err(errors::rw_dependency());
        }
        let tx = self.end_tx(session);
        self.stats.commits += 1;
        let mut keys: BTreeSet<(String, Key)> = BTreeSet::new();
        for undo in &tx.undo {
            keys.insert((undo.table.clone(), undo.key.clone()));
        }
        let seq = self.last_commit + 1;
        let mut writes = Vec::new();
        let horizon = self.snapshot_horizon();
        for (table_name, key) in keys {
            let table = self.tables.get_mut(&table_name).expect("written table");
            let rv = table.rows.get_mut(&key).expect("written row");
            let Some(pending) = rv.pending.take() else {
                continue;
            };
            assert_eq!(pending.tx, tx.id, "only the lock holder writes a row");
            if rv.committed.is_empty() && pending.data.is_none() && self.engine == Engine::Postgres
            {
                // Inserted and deleted by this transaction: nothing to commit (PostgreSQL's
                // dead tuple is seen by no one). InnoDB commits its record delete-marked, with
                // this transaction's id: a later lock on it meets it until purge.
                table.rows.remove(&key);
                continue;
            }
            rv.committed.push(Version {
                seq,
                tx: tx.id,
                data: pending.data.clone(),
                moved_to: pending.moved_to.clone(),
                new_tuple: pending.new_tuple,
            });
            rv.prune(horizon.unwrap_or(seq));
            table.writes_since_purge += 1;
            writes.push(RowWrite {
                table: table_name,
                key,
                row: pending.data,
            });
        }
        if !writes.is_empty() || self.ssi.tracks(tx.id) {
            // A read-only serializable transaction still takes a place in commit order.
            self.last_commit = seq;
        }
        if self.ssi.tracks(tx.id) {
            self.ssi.commit(tx.id, seq);
            self.ssi.cleanup();
        }
        let written: BTreeSet<String> = writes.iter().map(|w| w.table.clone()).collect();
        if !writes.is_empty() {
            self.log.push(CommitRecord {
                seq,
                ddl: None,
                writes,
            });
        }
        self.purge_due(&written);
        Ok(())
    }

    /// Purges each of `tables` whose purge is due ([`Table::purge`]), with the horizon of the
    /// snapshots still open and the locks held or awaited now. Deterministic: it runs at a
    /// commit, after a count of writes, in table order.
    ///
    /// [`Table::purge`]: crate::db::storage::Table::purge
    pub(super) fn purge_due(&mut self, tables: &BTreeSet<String>) {
        let horizon = self.snapshot_horizon().unwrap_or(self.last_commit);
        for name in tables {
            let Some(table) = self.tables.get_mut(name) else {
                continue;
            };
            if !table.purge_due() {
                continue;
            }
            let locks = &self.locks;
            let record_locked = |key: &Key| {
                locks.is_locked(&LockTarget::Record {
                    table: name.clone(),
                    key: key.clone(),
                })
            };
            let gap_locked = |index: Option<usize>, before: Option<&Key>| {
                locks.is_locked(&LockTarget::Gap {
                    table: name.clone(),
                    index,
                    before: before.cloned(),
                })
            };
            table.purge(horizon, record_locked, gap_locked);
        }
    }

    /// The oldest snapshot any open transaction or blocked statement may still read at.
    pub(super) fn snapshot_horizon(&self) -> Option<CommitSeq> {
        self.sessions
            .values()
            .flat_map(|s| {
                [
                    s.tx.as_ref().and_then(|t| t.snapshot),
                    s.blocked.as_ref().and_then(|b| b.statement_snapshot),
                ]
            })
            .flatten()
            .min()
    }

    pub(super) fn rollback_tx(&mut self, session: SessionId) {
        self.undo_to(session, 0);
        if self.engine == Engine::Postgres {
            let begin = self.tx_mut(session).begin_settings.clone();
            let tx = self.tx_mut(session);
            // SET LOCAL values are part of the transaction too: nothing to restore after this.
            tx.saved_settings = None;
            self.restore_settings(session, begin);
        }
        let tx = self.end_tx(session);
        self.ssi.abort(tx.id);
        self.ssi.cleanup();
        self.stats.rollbacks += 1;
    }

    /// Undoes the writes after `mark`; the lock of a row whose insert is undone goes too.
    pub(super) fn undo_to(&mut self, session: SessionId, mark: usize) {
        self.undo_writes(session, mark, true);
    }

    /// Undoes the writes after `mark` for a statement that waits and will run again: it keeps
    /// every lock, also of rows it inserted, so that they are still its own when it resumes.
    pub(super) fn undo_for_rerun(&mut self, session: SessionId, mark: usize) {
        self.undo_writes(session, mark, false);
    }

    fn undo_writes(&mut self, session: SessionId, mark: usize, release_inserts: bool) {
        let tx = self.tx_mut(session);
        assert!(mark <= tx.undo.len());
        let id = tx.id;
        let undo: Vec<Undo> = tx.undo.drain(mark..).rev().collect();
        for u in undo {
            let table = self.tables.get_mut(&u.table).expect("written table");
            table.writes_since_purge += 1;
            let rv = table.rows.get_mut(&u.key).expect("written row");
            let undone = std::mem::replace(&mut rv.pending, u.previous);
            if rv.pending.is_none() && rv.committed.is_empty() {
                let row = undone.and_then(|p| p.data);
                // PostgreSQL keeps the dead tuple (not for a statement that runs again: that
                // one never wrote in PostgreSQL).
                if let (Engine::Postgres, true, Some(row)) = (self.engine, release_inserts, &row) {
                    table.record_dead_insert(&u.key, row);
                }
                // An undone insert leaves no record, and its lock goes with it (InnoDB's
                // lock on a row it inserted is implicit in the record).
                table.rows.remove(&u.key);
                if !release_inserts {
                    continue;
                }
                if self.engine == Engine::InnoDb {
                    self.innodb_remove_records(id, &u.table, &u.key, row.as_ref());
                    continue;
                }
                let target = LockTarget::Record {
                    table: u.table.clone(),
                    key: u.key.clone(),
                };
                let woken = self.locks.release(id, &target);
                self.woken.extend(woken);
            }
        }
    }

    /// InnoDB: the records of a row whose insert was undone leave the primary key and every
    /// secondary index, and each passes its locks to the next record there as gap locks
    /// ([`crate::db::lock::LockManager::remove_record`]). A lock kept as a gap lock stays
    /// unless its transaction runs at read committed or below and it is exclusive
    /// (`lock_rec_inherit_to_gap`: there a row lock of an UPDATE or DELETE is not one to keep).
    fn innodb_remove_records(
        &mut self,
        owner: TxId,
        table_name: &str,
        key: &Key,
        row: Option<&Row>,
    ) {
        let (tx_session, sessions) = (&self.tx_session, &self.sessions);
        let inherits = |t: TxId, exclusive: bool| {
            let isolation = tx_session
                .get(&t)
                .and_then(|s| sessions.get(s)?.tx.as_ref())
                .map(|x| x.isolation);
            !exclusive || isolation.is_some_and(|i| i > Isolation::ReadCommitted)
        };
        let table = self.tables.get(table_name).expect("written table");
        assert!(!table.rows.contains_key(key), "the record is removed first");
        let gap = |index: Option<usize>, before: Option<Key>| LockTarget::Gap {
            table: table_name.to_string(),
            index,
            before,
        };
        let mut records = vec![(
            LockTarget::Record {
                table: table_name.to_string(),
                key: key.clone(),
            },
            gap(None, Some(key.clone())),
            gap(None, table.primary_successor(key)),
        )];
        if let Some(row) = row {
            for i in 0..table.indexes.len() {
                let values = table.index_key_of(i, row);
                let entry = concat_key(&values, key);
                records.push((
                    LockTarget::Entry {
                        table: table_name.to_string(),
                        index: i,
                        entry: entry.clone(),
                    },
                    gap(Some(i), Some(entry)),
                    gap(Some(i), index_successor(table, i, &values, key)),
                ));
            }
        }
        for (record, gap, heir) in records {
            let ended = self
                .locks
                .remove_record(owner, &record, &gap, &heir, inherits);
            self.woken.extend(ended);
        }
    }

    /// PostgreSQL: an error aborts the transaction block, and the block then answers `25P02`
    /// until ROLLBACK (TO SAVEPOINT). What is aborted at once is the innermost (sub)transaction:
    /// without a savepoint, all work is undone and every lock released; inside a savepoint, the
    /// subtransaction's writes, locks and settings since that savepoint are (PostgreSQL marks
    /// the subtransaction aborted at the error, not at the ROLLBACK TO that follows).
    pub(super) fn pg_abort(&mut self, session: SessionId) {
        let tx = self.tx_mut(session);
        tx.aborted = true;
        let id = tx.id;
        match tx.savepoints.last().cloned() {
            None => {
                self.undo_to(session, 0);
                let woken = self.locks.release_all(id);
                self.woken.extend(woken);
                self.ssi.abort(id);
            }
            Some(innermost) => self.pg_rollback_subtransaction(session, &innermost),
        }
    }

    /// Applies the engine's rollback rule for an error of a statement that started at `mark`.
    pub(super) fn statement_failed(&mut self, session: SessionId, e: &DbError, mark: usize) {
        let Some(tx) = self.sessions[&session].tx.as_ref() else {
            return;
        };
        if !tx.explicit {
            self.rollback_tx(session);
            return;
        }
        match self.engine {
            Engine::Postgres => {
                self.undo_to(session, mark);
                self.pg_abort(session);
            }
            Engine::InnoDb => {
                if e.is_deadlock() || e.code() == "1020" {
                    // InnoDB rolls back the whole transaction; the session is in autocommit
                    // mode again.
                    self.rollback_tx(session);
                } else {
                    self.undo_to(session, mark);
                }
            }
        }
    }

    /// Whether `session` is in a transaction, and whether that transaction is aborted (only
    /// ROLLBACK may follow).
    pub(super) fn tx_state(&self, session: SessionId) -> (bool, bool) {
        let tx = self.sessions[&session].tx.as_ref();
        (tx.is_some(), tx.is_some_and(|t| t.aborted))
    }

    /// Runs a statement that is not DML: transaction control here, settings in `session`.
    pub(super) fn control(
        &mut self,
        session: SessionId,
        stmt: &Stmt,
        params: &[Value],
    ) -> Result<QueryResult, DbError> {
        let engine = self.engine;
        let (in_tx, aborted) = self.tx_state(session);
        let ok = Ok(QueryResult::default());
        match stmt {
            Stmt::Begin | Stmt::BeginWithSnapshot => {
                if in_tx {
                    match engine {
                        // A warning: there is already a transaction in progress.
                        Engine::Postgres => return ok,
                        // BEGIN commits the open transaction first.
                        Engine::InnoDb => self.commit_tx(session)?,
                    }
                }
                self.begin_tx(session, true);
                if matches!(stmt, Stmt::BeginWithSnapshot) {
                    // MariaDB starts the InnoDB transaction at once, with its read view in
                    // repeatable read (other levels ignore the phrase with a warning).
                    let last = self.last_commit;
                    let tx = self.tx_mut(session);
                    tx.innodb_registered = true;
                    if tx.isolation == Isolation::RepeatableRead {
                        tx.snapshot = Some(last);
                    }
                }
                ok
            }
            Stmt::Commit => {
                if !in_tx {
                    return ok;
                }
                if aborted {
                    // PostgreSQL answers COMMIT of a failed block with ROLLBACK.
                    self.rollback_tx(session);
                    return ok;
                }
                self.commit_tx(session)?;
                ok
            }
            Stmt::Rollback => {
                if in_tx {
                    self.rollback_tx(session);
                }
                ok
            }
            Stmt::Savepoint(_) | Stmt::RollbackTo(_) | Stmt::Release(_) => {
                self.savepoint_control(session, stmt)
            }
            Stmt::SetIsolation { .. } | Stmt::Set { .. } => {
                self.session_control(session, stmt, params)
            }
            Stmt::CreateTable(_) | Stmt::CreateIndex(_) => {
                unreachable!("schema statements are routed in execute")
            }
            Stmt::Select(_) | Stmt::Insert(_) | Stmt::Update(_) | Stmt::Delete(_) => {
                unreachable!("DML is not a control statement")
            }
        }
    }
}
