//! The schema: `schema.sql`, in the dialect of the database profile, minus the unique keys a
//! planted bug removes.

use shopsim_sim::db::Engine;

use crate::bugs::Bugs;

const SCHEMA: &str = include_str!("schema.sql");

/// The schema statements for `engine` with `bugs`.
pub fn statements(engine: Engine, bugs: &Bugs) -> Vec<String> {
    let mut out = Vec::new();
    for line in SCHEMA.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("--") {
            continue;
        }
        let (sql, key) = match line.split_once("-- key:") {
            Some((sql, key)) => (sql.trim(), Some(key.trim())),
            None => (line, None),
        };
        let dropped = match key {
            Some("orders_cart") => bugs.double_order_on_convert,
            Some("ledger_payment") => bugs.payment_check_then_act,
            _ => false,
        };
        if dropped {
            continue;
        }
        let sql = match engine {
            Engine::Postgres => sql.to_string(),
            Engine::InnoDb => {
                sql.replace("bigserial primary key", "bigint auto_increment primary key")
            }
        };
        out.push(sql);
    }
    assert!(out.len() >= 15);
    out
}

/// Converts `?` placeholders to PostgreSQL's `$n`.
pub fn dialect(engine: Engine, sql: &str) -> String {
    match engine {
        Engine::InnoDb => sql.to_string(),
        Engine::Postgres => {
            use std::fmt::Write;
            // Runs for every statement the app sends: copies the text between placeholders
            // in one piece and writes the numbers without a string of their own.
            let mut out = String::with_capacity(sql.len() + 8);
            let mut parts = sql.split('?');
            out.push_str(parts.next().unwrap_or(""));
            for (n, part) in parts.enumerate() {
                write!(out, "${}", n + 1).expect("writing to a string");
                out.push_str(part);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_only() {
        let sql = "select * from t where a = ? and b in (?, ?)";
        assert_eq!(
            dialect(Engine::Postgres, sql),
            "select * from t where a = $1 and b in ($2, $3)"
        );
        assert_eq!(dialect(Engine::InnoDb, sql), sql);
        assert_eq!(dialect(Engine::Postgres, "?"), "$1");
        assert_eq!(dialect(Engine::Postgres, "commit"), "commit");
    }
}
