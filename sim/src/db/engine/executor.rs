//! Statement execution: runs a statement inside its session's transaction (opening an
//! autocommit one if needed), and executes SELECT, INSERT, UPDATE and DELETE over the access
//! paths, reads and writes of the sibling modules.

use std::sync::Arc;

use super::access::{choose_access, index_order, Access, Direction};
use super::expr::{bind, coerce, eval, limit_value, BExpr, STATEMENT_SETTINGS};
use super::read::{pg_index_order, visible, ScanSpec};
use super::result::{aggregate, project, sort_rows};
use super::wait::Resume;
use super::write::{InnoDbInsert, Scope};
use super::{Database, Fail, SessionId, Step};
use crate::db::lock::{LockMode, LockTarget};
use crate::db::profile::{errors, Engine, Isolation};
use crate::db::sql::{self, Expr, InsertValue, LockWaitPolicy, Plan, SelectItem, Stmt};
use crate::db::storage::{CommitSeq, Row, Table};
use crate::db::value::{DbError, QueryResult, Value};

impl Database {
    /// Runs (or re-runs) a statement. `None` if it blocked.
    pub(super) fn run(
        &mut self,
        session: SessionId,
        plan: Arc<Plan>,
        params: Vec<Value>,
        resume: Option<Resume>,
    ) -> Option<Result<QueryResult, DbError>> {
        self.stats.statements += 1;
        if !plan.stmt.is_dml() {
            assert!(resume.is_none());
            return Some(self.control(session, &plan.stmt, &params));
        }
        let aborted = self.sessions[&session]
            .tx
            .as_ref()
            .is_some_and(|t| t.aborted);
        if aborted {
            return Some(Err(errors::in_failed_transaction()));
        }
        if self.sessions[&session].tx.is_none() {
            self.begin_tx(session, false);
        }
        // A serializable transaction another one doomed fails at its next SSI check, not at
        // its next statement: see `Database::ssi_check_doomed`.
        self.tx_mut(session).queried = true;
        if plan
            .stmt
            .table()
            .is_some_and(|t| self.tables.contains_key(t))
        {
            // The statement opens a table: MariaDB registers InnoDB in the transaction.
            self.tx_mut(session).innodb_registered = true;
        }
        if resume.is_none() {
            self.sessions
                .get_mut(&session)
                .expect("session")
                .innodb_cursor = None;
            let s = self.sessions.get_mut(&session).expect("session");
            s.innodb_insert = None;
            s.innodb_written_before_wait = 0;
        }
        let mark = resume.map_or_else(|| self.tx_mut(session).undo.len(), |r| r.mark);
        let statement_started = resume.map_or(self.now, |r| r.statement_started);
        let statement_snapshot = match resume {
            Some(r) => r.statement_snapshot,
            None => self.statement_snapshot(session, &plan.stmt),
        };
        let result = self.dml(session, &plan.stmt, &params, statement_snapshot);
        match result {
            Ok(result) => {
                let implicit = !self.tx_mut(session).explicit;
                if implicit {
                    if let Err(e) = self.commit_tx(session) {
                        return Some(Err(e));
                    }
                }
                Some(Ok(result))
            }
            Err(Fail::Error(e)) => {
                if e.is_serialization_failure() {
                    self.stats.serialization_failures += 1;
                }
                self.statement_failed(session, &e, mark);
                Some(Err(e))
            }
            Err(Fail::Wait {
                table,
                release_on_wake,
            }) => {
                let resume = Resume {
                    mark,
                    statement_snapshot,
                    statement_started,
                };
                self.park(session, plan, params, resume, table, release_on_wake);
                None
            }
        }
    }

    pub(super) fn dml(
        &mut self,
        session: SessionId,
        stmt: &Stmt,
        params: &[Value],
        snapshot: Option<CommitSeq>,
    ) -> Step<QueryResult> {
        let settings = self.sessions[&session].settings.custom.clone();
        STATEMENT_SETTINGS.with(|s| *s.borrow_mut() = settings);
        let result = self.dml_statement(session, stmt, params, snapshot);
        STATEMENT_SETTINGS.with(|s| s.borrow_mut().clear());
        result
    }

    pub(super) fn dml_statement(
        &mut self,
        session: SessionId,
        stmt: &Stmt,
        params: &[Value],
        snapshot: Option<CommitSeq>,
    ) -> Step<QueryResult> {
        match stmt {
            Stmt::Select(select) => self.select(session, select, params, snapshot),
            Stmt::Insert(insert) => self.insert(session, insert, params, snapshot),
            Stmt::Update(update) => self.update_or_delete(
                session,
                &update.table,
                update.filter.as_ref(),
                Some(&update.sets),
                update.returning.as_ref(),
                params,
                snapshot,
            ),
            Stmt::Delete(delete) => self.update_or_delete(
                session,
                &delete.table,
                delete.filter.as_ref(),
                None,
                delete.returning.as_ref(),
                params,
                snapshot,
            ),
            _ => unreachable!("not DML"),
        }
    }

    pub(super) fn select(
        &mut self,
        session: SessionId,
        select: &sql::Select,
        params: &[Value],
        snapshot: Option<CommitSeq>,
    ) -> Step<QueryResult> {
        let engine = self.engine;
        let Some(table_name) = &select.table else {
            // SELECT without FROM: one row of constants.
            let mut columns = Vec::new();
            let mut row = Vec::new();
            for item in &select.items {
                let SelectItem::Expr { expr, name } = item else {
                    return Err(errors::syntax(engine, "SELECT * without FROM").into());
                };
                if matches!(expr, Expr::Agg(..)) {
                    return Err(errors::unsupported(engine, "aggregate without FROM").into());
                }
                columns.push(name.clone());
                row.push(eval(engine, &bind(engine, expr, &[], params)?, &[])?);
            }
            return Ok(QueryResult {
                columns,
                rows: vec![row],
                ..Default::default()
            });
        };
        let table = self.table(table_name)?;
        let column_names = &table.columns;
        let filter = select
            .filter
            .as_ref()
            .map(|f| bind(engine, f, column_names, params))
            .transpose()?;
        let access = choose_access(table, filter.as_ref(), engine == Engine::InnoDb);
        let access = self.innodb_resumed_access(session, table_name, access);
        let order: Vec<(BExpr, bool)> = select
            .order_by
            .iter()
            .map(|(e, desc)| Ok((bind(engine, e, column_names, params)?, *desc)))
            .collect::<Result<_, DbError>>()?;
        let limit = select
            .limit
            .as_ref()
            .map(|e| limit_value(engine, e, params))
            .transpose()?;
        let offset = select
            .offset
            .as_ref()
            .map(|e| limit_value(engine, e, params))
            .transpose()?
            .unwrap_or(0);
        let tx = self.tx_mut(session);
        let (tx_id, isolation, explicit) = (tx.id, tx.isolation, tx.explicit);
        // InnoDB serializable turns plain SELECTs in a transaction into shared locking reads.
        let lock = select.lock.or_else(|| {
            (engine == Engine::InnoDb && isolation == Isolation::Serializable && explicit)
                .then_some(sql::RowLockClause {
                    exclusive: false,
                    wait: LockWaitPolicy::Wait,
                })
        });
        let has_aggregate = select.items.iter().any(|i| {
            matches!(
                i,
                SelectItem::Expr {
                    expr: Expr::Agg(..),
                    ..
                }
            )
        });
        // PostgreSQL walks the primary key in the order asked for where it can, and stops
        // at the limit.
        let pg_order = match engine {
            Engine::Postgres if !has_aggregate => {
                pg_index_order(self.table(table_name)?, &access, &order)
            }
            _ => None,
        };
        let rows: Vec<Row> = match lock {
            None => {
                let in_order = pg_order.map(|d| (d, limit.map(|l| l + offset)));
                let mut rows = self.snapshot_read(
                    tx_id,
                    table_name,
                    &access,
                    filter.as_ref(),
                    snapshot,
                    in_order,
                )?;
                sort_rows(engine, &mut rows, &order)?;
                rows
            }
            Some(clause) => {
                let mode = if clause.exclusive {
                    LockMode::Exclusive
                } else {
                    LockMode::Shared
                };
                // Rows the access path delivers in the order asked for need no sort, so the scan
                // can stop at the limit: InnoDB locks as it scans and stops there, PostgreSQL
                // locks (LockRows under Limit) only the rows the limit takes.
                let ordered = index_order(self.table(table_name)?, &access, &order)
                    .filter(|_| !has_aggregate);
                let spec = ScanSpec {
                    table: table_name,
                    access: &access,
                    direction: ordered.unwrap_or(Direction::Asc),
                    filter: filter.as_ref(),
                    wanted: ordered.and(limit).map(|l| l + offset),
                    in_order: false,
                };
                let rows = match engine {
                    Engine::Postgres => {
                        // PostgreSQL sorts before it locks, so its limit holds either way.
                        let spec = ScanSpec {
                            direction: pg_order.unwrap_or(Direction::Asc),
                            wanted: limit.map(|l| l + offset),
                            in_order: pg_order.is_some(),
                            ..spec
                        };
                        self.pg_locking_read(
                            session,
                            spec,
                            mode,
                            clause.wait,
                            snapshot.expect("PostgreSQL statements have a snapshot"),
                            &order,
                            false,
                        )?
                    }
                    Engine::InnoDb => {
                        let rows =
                            self.innodb_locking_read(session, spec, mode, clause.wait, false)?;
                        let mut rows: Vec<Row> = rows.into_iter().map(|(_, r)| r).collect();
                        sort_rows(engine, &mut rows, &order)?;
                        rows.into_iter().map(|r| (Vec::new(), r)).collect()
                    }
                };
                rows.into_iter().map(|(_, r)| r).collect()
            }
        };
        let table = self.table(table_name)?;
        if has_aggregate {
            let mut result = aggregate(engine, table, &select.items, params, &rows)?;
            result.row_owners = self.row_owners(table, &rows);
            return Ok(result);
        }
        let rows: Vec<Row> = rows
            .into_iter()
            .skip(offset)
            .take(limit.unwrap_or(usize::MAX))
            .collect();
        let mut result = project(engine, table, &select.items, params, &rows)?;
        result.row_owners = self.row_owners(table, &rows);
        Ok(result)
    }

    /// InnoDB: row `i` of the INSERT of `session` is done.
    fn innodb_insert_done(
        &mut self,
        session: SessionId,
        i: usize,
        inserted: &[Row],
        last_insert_id: Option<i64>,
    ) {
        let s = self.sessions.get_mut(&session).expect("session");
        s.innodb_insert = Some(InnoDbInsert {
            next_row: i + 1,
            row: None,
            written_at: None,
            inserted: inserted.to_vec(),
            last_insert_id,
        });
    }

    /// The distinct owners of `rows` of `table` (see [`DbConfig::row_owner_column`]), in order.
    pub(super) fn row_owners<'a>(
        &self,
        table: &Table,
        rows: impl IntoIterator<Item = &'a Row>,
    ) -> Vec<Value> {
        let Some(c) = self
            .config
            .row_owner_column
            .as_deref()
            .and_then(|name| table.column(name))
        else {
            return Vec::new();
        };
        let mut owners: Vec<Value> = Vec::new();
        for row in rows {
            assert!(c < row.len(), "a row has every column of its table");
            if !owners.contains(&row[c]) {
                owners.push(row[c].clone());
            }
        }
        owners.sort();
        owners
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn update_or_delete(
        &mut self,
        session: SessionId,
        table_name: &str,
        filter: Option<&Expr>,
        sets: Option<&Vec<(String, Expr)>>,
        returning: Option<&Vec<SelectItem>>,
        params: &[Value],
        snapshot: Option<CommitSeq>,
    ) -> Step<QueryResult> {
        let engine = self.engine;
        let table = self.table(table_name)?;
        let column_names = &table.columns;
        let filter = filter
            .map(|f| bind(engine, f, column_names, params))
            .transpose()?;
        let mut assignments = Vec::new();
        if let Some(sets) = sets {
            for (column, expr) in sets {
                let c = table
                    .column(column)
                    .ok_or_else(|| errors::no_such_column(engine, column))?;
                assignments.push((c, bind(engine, expr, column_names, params)?));
            }
        }
        let access = choose_access(table, filter.as_ref(), engine == Engine::InnoDb);
        let access = self.innodb_resumed_access(session, table_name, access);
        let tx = self.session_tx(session);
        let isolation = self.tx_mut(session).isolation;
        let spec = ScanSpec {
            table: table_name,
            access: &access,
            direction: Direction::Asc,
            filter: filter.as_ref(),
            wanted: None,
            in_order: false,
        };
        let targets = match engine {
            Engine::Postgres => self.pg_locking_read(
                session,
                spec,
                LockMode::Exclusive,
                LockWaitPolicy::Wait,
                snapshot.expect("PostgreSQL statements have a snapshot"),
                &[],
                true,
            )?,
            Engine::InnoDb => {
                let read = self.innodb_locking_read(
                    session,
                    spec,
                    LockMode::Exclusive,
                    LockWaitPolicy::Wait,
                    // InnoDB reads semi-consistently in a clustered index scan only, not in a
                    // unique lookup or a secondary index (`row_search_mvcc`; measured).
                    sets.is_some()
                        && isolation <= Isolation::ReadCommitted
                        && matches!(access, Access::Scan | Access::Range { .. }),
                );
                if let Err(Fail::Wait { .. }) = &read {
                    let written = self.innodb_written_before_wait(
                        session,
                        table_name,
                        sets.map(|_| assignments.as_slice()),
                    )?;
                    self.sessions
                        .get_mut(&session)
                        .expect("session")
                        .innodb_written_before_wait = written;
                }
                read?
            }
        };
        let row_owners = self.row_owners(self.table(table_name)?, targets.iter().map(|(_, r)| r));
        let mut affected = 0u64;
        let mut returned = Vec::new();
        for (key, old) in targets {
            let new = match sets {
                None => None,
                Some(_) => Some(self.updated_row(table_name, &assignments, &old)?),
            };
            // PostgreSQL's heap_update and heap_delete check SSI before they write.
            self.ssi_check_doomed(tx)?;
            if let Some(new) = &new {
                if engine == Engine::InnoDb && *new == old {
                    // MariaDB counts changed rows and writes nothing for an unchanged one.
                    continue;
                }
                let new_key = self.table(table_name)?.key_of(new);
                if new_key != key {
                    // An UPDATE of the primary key: the row leaves its key and takes the new
                    // one, checked and locked like an insert (both engines accept it).
                    self.check_unique(tx, table_name, &new_key, new, Some((&key, &old)))?;
                    self.move_row(tx, table_name, &key, &old, &new_key, new.clone())?;
                    affected += 1;
                    returned.push(new.clone());
                    continue;
                }
                if engine == Engine::InnoDb {
                    // InnoDB updates the clustered record first (`row_upd_clust_step`), then
                    // each secondary index whose values changed (`row_upd_sec_step`): the old
                    // entry is delete-marked and the new one inserted as an INSERT's is
                    // (`row_upd_sec_index_entry`, `row_ins_sec_index_entry`), its unique
                    // check and then its insert intention, which waits for gap locks on the
                    // gap it lands in. So a wait there comes after the row's undo record
                    // (it counts in the deadlock weight), and a duplicate after it too.
                    affected += 1;
                    returned.push(new.clone());
                    self.write_row(tx, table_name, &key, Some(&old), Some(new.clone()))?;
                    let table = self.table(table_name)?;
                    let changed: Vec<usize> = (0..table.indexes.len())
                        .filter(|&i| table.index_key_of(i, new) != table.index_key_of(i, &old))
                        .collect();
                    for i in changed {
                        let old = Some((&key, &old));
                        self.check_unique_in(tx, table_name, &key, new, old, Scope::Secondary(i))?;
                        self.insert_intention(tx, table_name, &key, new, Scope::Secondary(i))?;
                    }
                    continue;
                }
                self.check_unique(tx, table_name, &key, new, Some((&key, &old)))?;
            }
            affected += 1;
            returned.push(new.clone().unwrap_or_else(|| old.clone()));
            self.write_row(tx, table_name, &key, Some(&old), new)?;
        }
        let mut result = match returning {
            Some(items) => project(engine, self.table(table_name)?, items, params, &returned)?,
            None => QueryResult::default(),
        };
        result.rows_affected = affected;
        result.row_owners = row_owners;
        Ok(result)
    }

    /// Row `old` of `table_name` with `assignments` applied (an UPDATE's new version).
    fn updated_row(
        &self,
        table_name: &str,
        assignments: &[(usize, BExpr)],
        old: &Row,
    ) -> Result<Row, DbError> {
        let engine = self.engine;
        let mut new = old.clone();
        for (c, expr) in assignments {
            new[*c] = eval(engine, expr, old)?;
        }
        let table = self.table(table_name)?;
        for (c, _) in assignments {
            new[*c] = coerce(engine, table, *c, new[*c].clone())?;
        }
        Ok(new)
    }

    /// InnoDB: the undo records an UPDATE (`assignments`) or DELETE (`None`) that waits now
    /// would have written before this wait. InnoDB changes each row as soon as its lock is
    /// granted (`row_upd_step` after each record the search returns), so those records count
    /// in the transaction's deadlock weight while it waits; the simulated statement writes
    /// its rows only once it has locked all of them. A row an UPDATE leaves unchanged is not
    /// written; a changed primary key is a delete-mark and an insert.
    fn innodb_written_before_wait(
        &self,
        session: SessionId,
        table_name: &str,
        assignments: Option<&[(usize, BExpr)]>,
    ) -> Result<u64, DbError> {
        let tx = self.session_tx(session);
        let mut written = 0;
        for key in self.innodb_cursor_kept(session, table_name) {
            let table = self.table(table_name)?;
            let rv = &table.rows[&key];
            let old = match &rv.pending {
                Some(p) => {
                    assert_eq!(p.tx, tx, "a kept row stays locked");
                    p.data.as_ref()
                }
                None => rv.latest_committed().and_then(|v| v.data.as_ref()),
            };
            let Some(old) = old else { continue };
            let Some(assignments) = assignments else {
                written += 1;
                continue;
            };
            let new = self.updated_row(table_name, assignments, old)?;
            if new == *old {
                continue;
            }
            written += if table.key_of(&new) == key { 1 } else { 2 };
        }
        Ok(written)
    }

    pub(super) fn insert(
        &mut self,
        session: SessionId,
        insert: &sql::Insert,
        params: &[Value],
        snapshot: Option<CommitSeq>,
    ) -> Step<QueryResult> {
        let engine = self.engine;
        let tx = self.session_tx(session);
        let isolation = self.tx_mut(session).isolation;
        let table = self.table(&insert.table)?;
        let columns: Vec<usize> = if insert.columns.is_empty() {
            (0..table.columns.len()).collect()
        } else {
            insert
                .columns
                .iter()
                .map(|c| {
                    table
                        .column(c)
                        .ok_or_else(|| errors::no_such_column(engine, c))
                })
                .collect::<Result<_, _>>()?
        };
        if engine == Engine::InnoDb {
            // The insert's intention exclusive table lock (its rows' locks are implicit).
            self.locks.note_table_lock(tx, &insert.table, true);
        }
        // InnoDB: where a statement woken from a lock wait stands (see `InnoDbInsert`).
        let resumed = match engine {
            Engine::InnoDb => {
                let s = self.sessions.get_mut(&session).expect("session");
                Some(s.innodb_insert.get_or_insert_with(Default::default).clone())
            }
            Engine::Postgres => None,
        };
        let mut inserted = resumed
            .as_ref()
            .map(|r| r.inserted.clone())
            .unwrap_or_default();
        let mut last_insert_id = resumed.as_ref().and_then(|r| r.last_insert_id);
        for (i, values) in insert.rows.iter().enumerate() {
            if let Some(r) = resumed.as_ref().filter(|r| i <= r.next_row) {
                if i < r.next_row {
                    continue;
                }
                if let Some(row) = &r.row {
                    // The row as it was evaluated before the wait.
                    let key = self.table(&insert.table)?.key_of(row);
                    if self.innodb_insert_row(
                        session,
                        &insert.table,
                        &key,
                        row,
                        insert.ignore_duplicates,
                    )? {
                        inserted.push(row.clone());
                    }
                    self.innodb_insert_done(session, i, &inserted, last_insert_id);
                    continue;
                }
            }
            if values.len() != columns.len() {
                return Err(
                    errors::syntax(engine, "INSERT has more or fewer values than columns").into(),
                );
            }
            let table = self.tables.get_mut(&insert.table).expect("table");
            let mut row: Row = table
                .columns
                .iter()
                .map(|c| c.default.clone().unwrap_or(Value::Null))
                .collect();
            let mut given = vec![false; row.len()];
            for (&c, value) in columns.iter().zip(values) {
                if let InsertValue::Expr(e) = value {
                    row[c] = eval(engine, &bind(engine, e, &[], params)?, &[])?;
                    given[c] = true;
                }
            }
            for c in 0..row.len() {
                if !table.columns[c].auto_increment {
                    continue;
                }
                let generate = !given[c] || (engine == Engine::InnoDb && row[c].is_null());
                if generate {
                    let id = table.next_auto_increment;
                    table.next_auto_increment += 1;
                    row[c] = Value::Int(id);
                    last_insert_id.get_or_insert(id);
                } else if let (Engine::InnoDb, Value::Int(id)) = (engine, &row[c]) {
                    // MariaDB moves the counter past explicit ids; PostgreSQL sequences do not.
                    table.next_auto_increment = table.next_auto_increment.max(id + 1);
                }
            }
            let table = self.table(&insert.table)?;
            for (c, value) in row.iter_mut().enumerate() {
                let v = std::mem::replace(value, Value::Null);
                // INSERT IGNORE turns MariaDB's 1048 (NULL into a NOT NULL column) into a
                // warning and stores the type's implicit default (measured on 10.11.19).
                let column = &table.columns[c];
                let v = if engine == Engine::InnoDb
                    && insert.ignore_duplicates
                    && v.is_null()
                    && column.not_null
                {
                    column.ty.implicit_default()
                } else {
                    v
                };
                *value = coerce(engine, table, c, v)?;
            }
            let key = table.key_of(&row);
            if engine == Engine::InnoDb {
                let s = self.sessions.get_mut(&session).expect("session");
                let state = s.innodb_insert.as_mut().expect("insert state");
                state.row = Some(row.clone());
                state.last_insert_id = last_insert_id;
                if self.innodb_insert_row(
                    session,
                    &insert.table,
                    &key,
                    &row,
                    insert.ignore_duplicates,
                )? {
                    inserted.push(row);
                }
                self.innodb_insert_done(session, i, &inserted, last_insert_id);
                continue;
            }
            // ON CONFLICT's pre-check comes first; then heap_insert checks SSI, before the
            // unique check of the index insert.
            if engine == Engine::Postgres && insert.ignore_duplicates {
                let snapshot = snapshot.expect("PostgreSQL statements have a snapshot");
                if self.pg_on_conflict_precheck(
                    tx,
                    &insert.table,
                    &key,
                    &row,
                    snapshot,
                    isolation,
                )? {
                    continue;
                }
            }
            self.ssi_check_doomed(tx)?;
            match self.check_unique(tx, &insert.table, &key, &row, None) {
                Ok(_) => {}
                Err(Fail::Error(e)) if insert.ignore_duplicates && e.is_unique_violation() => {
                    if engine == Engine::Postgres && isolation >= Isolation::RepeatableRead {
                        // ON CONFLICT DO NOTHING may not skip a row its snapshot cannot see.
                        let table = self.table(&insert.table)?;
                        let invisible = table.rows.get(&key).is_some_and(|rv| {
                            rv.pending.is_none()
                                && visible(rv, tx, snapshot.expect("snapshot")).is_none()
                        });
                        if invisible {
                            return Err(errors::concurrent_update(false).into());
                        }
                    }
                    continue;
                }
                Err(other) => return Err(other),
            }
            let target = LockTarget::Record {
                table: insert.table.clone(),
                key: key.clone(),
            };
            if !self.lock_row(
                tx,
                &insert.table,
                &target,
                LockMode::Exclusive,
                LockWaitPolicy::Wait,
            )? {
                unreachable!("waiting policy never skips");
            }
            self.write_row(tx, &insert.table, &key, None, Some(row.clone()))?;
            inserted.push(row);
        }
        if engine == Engine::InnoDb {
            let s = self.sessions.get_mut(&session).expect("session");
            s.innodb_insert = None;
            s.innodb_written_before_wait = 0;
        }
        let mut result = match &insert.returning {
            Some(items) => project(engine, self.table(&insert.table)?, items, params, &inserted)?,
            None => QueryResult::default(),
        };
        result.rows_affected = inserted.len() as u64;
        result.last_insert_id = last_insert_id;
        result.row_owners = self.row_owners(self.table(&insert.table)?, &inserted);
        Ok(result)
    }
}
