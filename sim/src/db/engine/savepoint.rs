//! Savepoints: `SAVEPOINT`, `ROLLBACK TO SAVEPOINT` and `RELEASE SAVEPOINT`, and what a
//! rollback to a savepoint gives back on each engine (measured on PostgreSQL 15.18 and
//! MariaDB 10.11.19):
//! - PostgreSQL runs the work after a savepoint as a subtransaction. Rolling back to it undoes
//!   the writes and gives back every row lock taken after it (a lock held before it stays, so
//!   an upgrade goes back to the weaker mode), and undoes `SET`s made after it.
//! - InnoDB undoes the writes but keeps the row and gap locks taken after the savepoint (a
//!   row it inserted is gone, and with it the insert's lock). Except when the savepoint was
//!   set before the transaction had reached InnoDB at all: MariaDB then rolls the InnoDB
//!   transaction back completely (`ha_rollback_to_savepoint` rolls back the engines that
//!   joined after the savepoint), which releases every lock and closes the read view.

use super::session::Settings;
use super::{Database, SessionId};
use crate::db::profile::{errors, Engine};
use crate::db::sql::Stmt;
use crate::db::value::{DbError, QueryResult};

/// A named savepoint of a transaction.
#[derive(Debug, Clone)]
pub(super) struct Savepoint {
    pub(super) name: String,
    /// The length of the transaction's undo log when it was set.
    pub(super) undo_mark: usize,
    /// The transaction's place in its lock log when it was set.
    pub(super) lock_mark: usize,
    /// InnoDB: whether the transaction had reached InnoDB when the savepoint was set.
    pub(super) innodb_registered: bool,
    /// PostgreSQL: the session settings when it was set.
    pub(super) settings: Settings,
}

impl Database {
    /// Runs `SAVEPOINT`, `ROLLBACK TO SAVEPOINT` or `RELEASE SAVEPOINT`.
    pub(super) fn savepoint_control(
        &mut self,
        session: SessionId,
        stmt: &Stmt,
    ) -> Result<QueryResult, DbError> {
        let engine = self.engine;
        let (in_tx, aborted) = self.tx_state(session);
        let ok = Ok(QueryResult::default());
        let (name, rollback) = match stmt {
            Stmt::Savepoint(name) => {
                if !in_tx {
                    return match engine {
                        Engine::Postgres => Err(errors::no_transaction_block("SAVEPOINT")),
                        Engine::InnoDb => ok,
                    };
                }
                if aborted {
                    return Err(errors::in_failed_transaction());
                }
                self.set_savepoint(session, name);
                return ok;
            }
            Stmt::RollbackTo(name) => (name, true),
            Stmt::Release(name) => (name, false),
            _ => unreachable!("not a savepoint statement"),
        };
        let found = self.sessions[&session]
            .tx
            .as_ref()
            .and_then(|tx| tx.savepoints.iter().rposition(|s| s.name == *name));
        let Some(position) = found else {
            if engine == Engine::Postgres && !in_tx {
                let what = if rollback {
                    "ROLLBACK TO SAVEPOINT"
                } else {
                    "RELEASE SAVEPOINT"
                };
                return Err(errors::no_transaction_block(what));
            }
            if aborted && !rollback {
                return Err(errors::in_failed_transaction());
            }
            let e = errors::no_savepoint(engine, name);
            if engine == Engine::Postgres && in_tx {
                self.pg_abort(session);
            }
            return Err(e);
        };
        if aborted && !rollback {
            return Err(errors::in_failed_transaction());
        }
        if rollback {
            let savepoint = self.tx_mut(session).savepoints[position].clone();
            match engine {
                Engine::Postgres => self.pg_rollback_subtransaction(session, &savepoint),
                Engine::InnoDb => self.innodb_rollback_to(session, &savepoint),
            }
            let tx = self.tx_mut(session);
            tx.savepoints.truncate(position + 1);
            tx.aborted = false;
        } else {
            // The savepoint's work joins the enclosing transaction, locks included.
            self.tx_mut(session).savepoints.truncate(position);
        }
        ok
    }

    fn set_savepoint(&mut self, session: SessionId, name: &str) {
        let settings = self.sessions[&session].settings.clone();
        let tx_id = self.session_tx(session);
        let lock_mark = self.locks.mark(tx_id);
        let engine = self.engine;
        let tx = self.tx_mut(session);
        if engine == Engine::InnoDb {
            // InnoDB replaces a savepoint of the same name; PostgreSQL nests a new one.
            tx.savepoints.retain(|s| s.name != name);
        }
        let savepoint = Savepoint {
            name: name.to_string(),
            undo_mark: tx.undo.len(),
            lock_mark,
            innodb_registered: tx.innodb_registered,
            settings,
        };
        tx.savepoints.push(savepoint);
    }

    /// PostgreSQL: aborts the subtransaction that began at `savepoint`: its writes, its row
    /// locks and its settings are undone.
    pub(super) fn pg_rollback_subtransaction(&mut self, session: SessionId, savepoint: &Savepoint) {
        assert_eq!(self.engine, Engine::Postgres);
        self.undo_to(session, savepoint.undo_mark);
        let tx = self.session_tx(session);
        let woken = self.locks.rollback_to(tx, savepoint.lock_mark);
        self.woken.extend(woken);
        assert_eq!(self.locks.mark(tx), savepoint.lock_mark);
        self.restore_settings(session, savepoint.settings.clone());
    }

    /// InnoDB: undoes the writes after `savepoint` and keeps the locks, unless the savepoint
    /// predates the transaction's first use of InnoDB (see the module documentation).
    fn innodb_rollback_to(&mut self, session: SessionId, savepoint: &Savepoint) {
        assert_eq!(self.engine, Engine::InnoDb);
        self.undo_to(session, savepoint.undo_mark);
        if savepoint.innodb_registered {
            return;
        }
        assert_eq!(savepoint.undo_mark, 0, "no write before InnoDB was reached");
        let tx = self.session_tx(session);
        let woken = self.locks.release_all(tx);
        self.woken.extend(woken);
        let tx = self.tx_mut(session);
        tx.snapshot = None;
        tx.innodb_registered = false;
    }
}
