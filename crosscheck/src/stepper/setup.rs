//! The setup of a script rewritten for a real engine: column types MariaDB can index,
//! indexes inlined, serial columns found.

use shopsim_sim::db::conformance::setup_tables;

/// MariaDB: `text` columns of `CREATE TABLE` become `varchar(255)`, what Laravel's
/// `$table->string()` creates on MySQL and MariaDB: MariaDB cannot index a `text` column
/// without a prefix length (1170), which the simulated database does not check.
pub(super) fn maria_types(setup: &[String]) -> Vec<String> {
    setup
        .iter()
        .map(|statement| {
            if !statement
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("create table")
            {
                return statement.clone();
            }
            statement
                .replace(" text not null", " varchar(255) not null")
                .replace(" text,", " varchar(255),")
                .replace(" text)", " varchar(255))")
                .replace(" text primary key", " varchar(255) primary key")
        })
        .collect()
}

/// MariaDB: `CREATE [UNIQUE] INDEX i ON t (c)` folded into `t`'s `CREATE TABLE` as a
/// `[UNIQUE] KEY i (c)`. The same table and index, built in one statement: each separate
/// InnoDB index build is a slow DDL of its own.
pub(super) fn inline_indexes(setup: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for statement in setup {
        let lower = statement.trim().to_ascii_lowercase();
        let unique = lower.starts_with("create unique index ");
        if unique || lower.starts_with("create index ") {
            let words: Vec<&str> = statement.split_whitespace().collect();
            let at = if unique { 3 } else { 2 };
            let (Some(name), Some(on), Some(table)) =
                (words.get(at), words.get(at + 1), words.get(at + 2))
            else {
                out.push(statement.clone());
                continue;
            };
            let columns = statement.find('(').map(|i| &statement[i..]);
            let table = table.split('(').next().unwrap_or(table);
            let target = out.iter_mut().rev().find(|s| {
                setup_tables(std::slice::from_ref(*s))
                    .first()
                    .map(String::as_str)
                    == Some(table)
            });
            match (on.eq_ignore_ascii_case("on"), columns, target) {
                (true, Some(columns), Some(create)) if create.trim_end().ends_with(')') => {
                    let body = create.trim_end();
                    let key = if unique { "unique key" } else { "key" };
                    *create = format!("{}, {key} {name} {columns})", &body[..body.len() - 1]);
                }
                _ => out.push(statement.clone()),
            }
            continue;
        }
        out.push(statement.clone());
    }
    out
}

/// The `serial` / `bigserial` columns of `table` in its `CREATE TABLE`.
pub fn serial_columns(ddl: &[String], table: &str) -> Vec<String> {
    let Some(create) = ddl.iter().find(|s| {
        setup_tables(std::slice::from_ref(*s))
            .first()
            .map(String::as_str)
            == Some(table)
    }) else {
        return Vec::new();
    };
    let Some(open) = create.find('(') else {
        return Vec::new();
    };
    create[open + 1..]
        .split(',')
        .filter_map(|column| {
            let mut words = column.split_whitespace();
            let name = words.next()?;
            let kind = words.next()?.to_ascii_lowercase();
            kind.ends_with("serial").then(|| name.to_string())
        })
        .collect()
}

/// The Hermitage setup as statements.
pub fn default_setup() -> Vec<String> {
    shopsim_sim::db::conformance::DEFAULT_SETUP
        .iter()
        .map(|s| s.to_string())
        .collect()
}
