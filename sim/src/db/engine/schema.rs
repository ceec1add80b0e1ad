//! Schema statements: `CREATE TABLE` and `CREATE INDEX`, outside any transaction, logged in
//! the commit log so a replica applies them in order.

use super::{Database, SessionId};
use crate::db::profile::{errors, Engine};
use crate::db::sql::{Plan, Stmt};
use crate::db::storage::{CommitRecord, IndexDef, Table};
use crate::db::value::{DbError, QueryResult};

impl Database {
    /// Runs a schema statement outside any transaction (setup before a run).
    pub(super) fn ddl(&mut self, stmt: &Stmt, text: &str) -> Result<QueryResult, DbError> {
        let engine = self.engine;
        match stmt {
            Stmt::CreateTable(create) => {
                if self.tables.contains_key(&create.name) {
                    if create.if_not_exists {
                        return Ok(QueryResult::default());
                    }
                    return Err(errors::table_exists(engine, &create.name));
                }
                let column = |name: &str| {
                    create
                        .columns
                        .iter()
                        .position(|c| c.name == name)
                        .ok_or_else(|| errors::no_such_column(engine, name))
                };
                if create.primary_key.is_empty() {
                    return Err(errors::unsupported(engine, "a table without a primary key"));
                }
                let mut columns = create.columns.clone();
                let mut primary_key = Vec::new();
                for name in &create.primary_key {
                    let c = column(name)?;
                    columns[c].not_null = true;
                    primary_key.push(c);
                }
                let mut indexes = Vec::new();
                for (name, cols) in &create.uniques {
                    let positions = cols
                        .iter()
                        .map(|c| column(c))
                        .collect::<Result<Vec<_>, _>>()?;
                    let name = name.clone().unwrap_or_else(|| match engine {
                        Engine::Postgres => format!("{}_{}_key", create.name, cols.join("_")),
                        Engine::InnoDb => cols[0].clone(),
                    });
                    indexes.push(IndexDef {
                        name,
                        columns: positions,
                        unique: true,
                    });
                }
                for (name, cols) in &create.indexes {
                    let positions = cols
                        .iter()
                        .map(|c| column(c))
                        .collect::<Result<Vec<_>, _>>()?;
                    let name = name
                        .clone()
                        .unwrap_or_else(|| format!("{}_{}_idx", create.name, cols.join("_")));
                    indexes.push(IndexDef {
                        name,
                        columns: positions,
                        unique: false,
                    });
                }
                let table = Table::new(create.name.clone(), columns, primary_key, indexes);
                self.tables.insert(create.name.clone(), table);
            }
            Stmt::CreateIndex(create) => {
                let table = self
                    .tables
                    .get_mut(&create.table)
                    .ok_or_else(|| errors::no_such_table(engine, &create.table))?;
                let name = create.name.clone().unwrap_or_else(|| {
                    format!("{}_{}_idx", create.table, create.columns.join("_"))
                });
                if table.indexes.iter().any(|i| i.name == name) {
                    if create.if_not_exists {
                        return Ok(QueryResult::default());
                    }
                    return Err(errors::table_exists(engine, &name));
                }
                let positions = create
                    .columns
                    .iter()
                    .map(|c| {
                        table
                            .column(c)
                            .ok_or_else(|| errors::no_such_column(engine, c))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if !table.rows.is_empty() {
                    return Err(errors::unsupported(
                        engine,
                        "CREATE INDEX on a table with rows",
                    ));
                }
                table.indexes.push(IndexDef {
                    name,
                    columns: positions,
                    unique: create.unique,
                });
                table.index_entries.push(Default::default());
            }
            _ => unreachable!("not a schema statement"),
        }
        self.last_commit += 1;
        self.log.push(CommitRecord {
            seq: self.last_commit,
            ddl: Some(text.to_string()),
            writes: Vec::new(),
        });
        Ok(QueryResult::default())
    }

    /// Runs a schema statement for setup: `CREATE TABLE` / `CREATE INDEX` outside any
    /// transaction of `session`.
    pub(super) fn schema(
        &mut self,
        session: SessionId,
        text: &str,
        plan: &Plan,
    ) -> Result<QueryResult, DbError> {
        if self.in_transaction(session) {
            return Err(errors::unsupported(
                self.engine,
                "schema statements inside a transaction",
            ));
        }
        self.ddl(&plan.stmt, text)
    }
}
