//! Writes: unique checks that fail on a live duplicate and wait for an uncommitted one, new
//! row versions with their undo entries and SSI write tracking, and InnoDB's insert
//! intentions that wait for gap locks.

use super::access::concat_key;
use super::transaction::Undo;
use super::{Database, Fail, Step};
use crate::db::lock::{Grant, LockMode, LockTarget};
use crate::db::profile::{errors, Engine};
use crate::db::ssi::ReadKey;
use crate::db::storage::{Key, Pending, Row, TxId};
use crate::db::value::{DbError, Value};

impl Database {
    /// Unique checks for a new version of row `key`: a live duplicate fails, an uncommitted
    /// one by another transaction is waited for (then checked again).
    pub(super) fn check_unique(
        &mut self,
        tx: TxId,
        table_name: &str,
        key: &Key,
        new: &Row,
        old: Option<&Row>,
    ) -> Step<Option<DbError>> {
        let engine = self.engine;
        let table = self.table(table_name)?;
        let mut wait_for: Option<Key> = None;
        let mut duplicate: Option<DbError> = None;
        // The primary key of a new row.
        if old.is_none() {
            if let Some(rv) = table.rows.get(key) {
                match &rv.pending {
                    Some(p) if p.tx != tx => wait_for = Some(key.clone()),
                    Some(p) if p.data.is_some() => {
                        duplicate = Some(errors::duplicate_key(
                            engine,
                            table_name,
                            &table.primary_key_name(),
                            &key_text(key),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        if rv.latest_committed().is_some_and(|v| v.data.is_some()) {
                            duplicate = Some(errors::duplicate_key(
                                engine,
                                table_name,
                                &table.primary_key_name(),
                                &key_text(key),
                            ));
                        }
                    }
                }
            }
        }
        if wait_for.is_none() && duplicate.is_none() {
            'indexes: for (i, index) in table.indexes.iter().enumerate() {
                if !index.unique {
                    continue;
                }
                let values = table.index_key_of(i, new);
                if values.iter().any(Value::is_null) {
                    continue;
                }
                if old.is_some_and(|o| table.index_key_of(i, o) == values) {
                    continue;
                }
                for other in table.index_lookup(i, &values) {
                    if other == *key {
                        continue;
                    }
                    // Index entries outlive rolled-back inserts.
                    let Some(rv) = table.rows.get(&other) else {
                        continue;
                    };
                    let has =
                        |row: Option<&Row>| row.is_some_and(|r| table.index_key_of(i, r) == values);
                    let committed = rv.latest_committed().and_then(|v| v.data.as_ref());
                    match &rv.pending {
                        Some(p) if p.tx != tx => {
                            if has(p.data.as_ref()) || has(committed) {
                                wait_for = Some(other);
                                break 'indexes;
                            }
                        }
                        Some(p) => {
                            if has(p.data.as_ref()) {
                                duplicate = Some(errors::duplicate_key(
                                    engine,
                                    table_name,
                                    &index.name,
                                    &key_text(&values),
                                ));
                                break 'indexes;
                            }
                        }
                        None => {
                            if has(committed) {
                                duplicate = Some(errors::duplicate_key(
                                    engine,
                                    table_name,
                                    &index.name,
                                    &key_text(&values),
                                ));
                                break 'indexes;
                            }
                        }
                    }
                }
            }
        }
        if let Some(other) = wait_for {
            // Wait for the other writer by queueing for a shared lock on its row; InnoDB keeps
            // that lock, which is what makes concurrent inserts of one key deadlock-prone.
            let target = LockTarget::Record {
                table: table_name.to_string(),
                key: other,
            };
            return match self.engine {
                Engine::Postgres => {
                    match self
                        .locks
                        .request_holder_wait(tx, &target, LockMode::Shared)
                    {
                        Grant::Wait(_) => Err(Fail::Wait {
                            table: table_name.to_string(),
                            release_on_wake: Some(target),
                        }),
                        Grant::Granted => unreachable!("the other writer holds the row"),
                    }
                }
                Engine::InnoDb => match self.locks.request(tx, &target, LockMode::Shared) {
                    Grant::Wait(_) => Err(Fail::wait(table_name)),
                    Grant::Granted => unreachable!("the other writer holds the row"),
                },
            };
        }
        match duplicate {
            Some(e) => Err(e.into()),
            None => Ok(None),
        }
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
        let table = self.tables.get_mut(table_name).expect("table");
        let mut read_keys = vec![ReadKey {
            table: table_name.to_string(),
            index: None,
            key: key.clone(),
        }];
        for i in 0..table.indexes.len() {
            for row in old.iter().copied().chain(new.as_ref()) {
                read_keys.push(ReadKey {
                    table: table_name.to_string(),
                    index: Some(i),
                    key: table.index_key_of(i, row),
                });
            }
        }
        if let Some(row) = &new {
            table.index_row(key, row);
        }
        let rv = table.rows.entry(key.clone()).or_default();
        let previous = rv.pending.clone();
        assert!(previous.as_ref().is_none_or(|p| p.tx == tx));
        rv.pending = Some(Pending { tx, data: new });
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
        if self.ssi.tracks(tx) {
            let fail = self.ssi.wrote(tx, table_name, &read_keys);
            self.ssi_fail(tx, fail)?;
        }
        Ok(())
    }

    /// InnoDB: an insert waits while another transaction holds a gap lock on a gap the new
    /// row falls into, in the primary key or any secondary index.
    pub(super) fn insert_intention(
        &mut self,
        tx: TxId,
        table_name: &str,
        key: &Key,
        row: &Row,
    ) -> Step<()> {
        let table = self.table(table_name)?;
        let mut gaps = Vec::new();
        if !table.rows.contains_key(key) {
            gaps.push(LockTarget::Gap {
                table: table_name.to_string(),
                index: None,
                before: table.primary_successor(key),
            });
        }
        for i in 0..table.indexes.len() {
            let values = table.index_key_of(i, row);
            gaps.push(LockTarget::Gap {
                table: table_name.to_string(),
                index: Some(i),
                before: table
                    .index_successor(i, &values, key)
                    .map(|(v, k)| concat_key(&v, &k)),
            });
        }
        for gap in gaps {
            if let Grant::Wait(_) = self.locks.request(tx, &gap, LockMode::InsertIntention) {
                return Err(Fail::wait(table_name));
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
