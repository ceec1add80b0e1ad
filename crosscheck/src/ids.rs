//! Engine-generated ids in transcripts: the simulated and the real engine may hand out
//! different auto-increment / serial values for the same logical row (the real engine burns
//! values on failed inserts in its own way). A transcript replay binds them: each insert's
//! generated ids (PostgreSQL `RETURNING id`, MariaDB's last insert id) bind the simulated value
//! to the real one, per table, as a bijection; later statements get the real value in every
//! parameter that names an id of that table, and answers are compared with the simulated ids
//! put through the bijection. So an id difference in the same logical row is no divergence,
//! while a row the other side does not have still is.
//!
//! Which table an id belongs to comes from the column it is compared with or stored in:
//! `id` is the statement's own table, `<name>_id` the table `<name>` pluralised as Laravel
//! does (`order_id` → `orders`, `category_id` → `categories`), if the schema has it. A value
//! in any other column (a job's `payload`) is stored and read back as the simulated value on
//! both sides, so it needs no mapping until it is used as an id, where it gets one.

use std::collections::BTreeMap;

use crate::server::EngineKind;

/// Per table, the bijection between simulated and real generated ids.
#[derive(Debug, Clone, Default)]
pub struct IdMap {
    forward: BTreeMap<String, BTreeMap<i64, i64>>,
    backward: BTreeMap<String, BTreeMap<i64, i64>>,
    /// Bindings refused because they would break the bijection (the comparison then shows
    /// the difference).
    pub conflicts: usize,
}

impl IdMap {
    /// Binds simulated id `sim` of `table` to real id `real`. Refused (false) if either is
    /// already bound to another value.
    pub fn bind(&mut self, table: &str, sim: i64, real: i64) -> bool {
        let forward = self.forward.entry(table.to_string()).or_default();
        let backward = self.backward.entry(table.to_string()).or_default();
        match (forward.get(&sim), backward.get(&real)) {
            (Some(&r), _) if r != real => {
                self.conflicts += 1;
                false
            }
            (_, Some(&s)) if s != sim => {
                self.conflicts += 1;
                false
            }
            _ => {
                forward.insert(sim, real);
                backward.insert(real, sim);
                true
            }
        }
    }

    /// The real id of simulated id `sim` of `table` (itself if unbound: ids loaded by the
    /// setup are the same on both sides).
    pub fn real_of(&self, table: &str, sim: i64) -> i64 {
        self.forward
            .get(table)
            .and_then(|m| m.get(&sim))
            .copied()
            .unwrap_or(sim)
    }

    /// How many ids are bound to a different value.
    pub fn remapped(&self) -> usize {
        self.forward
            .values()
            .flat_map(|m| m.iter())
            .filter(|(s, r)| s != r)
            .count()
    }
}

/// Laravel's plural of a table-name stem (`order` → `orders`, `category` → `categories`).
pub fn plural(stem: &str) -> String {
    let vowel_before_y = stem
        .strip_suffix('y')
        .and_then(|s| s.chars().last())
        .is_some_and(|c| "aeiou".contains(c));
    if stem.ends_with('y') && !vowel_before_y {
        format!("{}ies", &stem[..stem.len() - 1])
    } else if ["s", "x", "ch", "sh"].iter().any(|e| stem.ends_with(e)) {
        format!("{stem}es")
    } else {
        format!("{stem}s")
    }
}

/// The table whose generated id column `column` holds, if any: `id` is `own_table`'s,
/// `<stem>_id` the table `plural(stem)` if `tables` has it.
pub fn column_table(column: &str, own_table: Option<&str>, tables: &[String]) -> Option<String> {
    let column = column
        .rsplit('.')
        .next()
        .unwrap_or(column)
        .trim_matches('"');
    let column = column.trim_matches('`').to_ascii_lowercase();
    if column == "id" {
        return own_table.map(str::to_string);
    }
    let stem = column.strip_suffix("_id")?;
    let table = plural(stem);
    tables.contains(&table).then_some(table)
}

/// The table a statement reads or writes first (`from t`, `update t`, `into t`).
pub fn statement_table(statement: &str) -> Option<String> {
    let lower = statement.to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| matches!(w[0], "from" | "update" | "into"))
        .map(|w| {
            w[1].split('(')
                .next()
                .unwrap_or("")
                .trim_matches(|c: char| !c.is_alphanumeric() && c != '_')
                .to_string()
        })
        .filter(|t| !t.is_empty())
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    /// A placeholder: its parameter index (0-based).
    Param(usize),
    Literal,
    Punct(char),
    Op,
}

fn tokens(kind: EngineKind, sql: &str) -> Vec<Tok> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut question = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            i += 1;
            while i < chars.len() {
                if chars[i] == '\\' && kind == EngineKind::MariaDb {
                    i += 2;
                    continue;
                }
                if chars[i] == '\'' {
                    i += 1;
                    if chars.get(i) == Some(&'\'') {
                        i += 1;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            out.push(Tok::Literal);
        } else if c == '$' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
            let mut j = i + 1;
            let mut n = 0usize;
            while j < chars.len() && chars[j].is_ascii_digit() {
                n = n
                    .saturating_mul(10)
                    .saturating_add(chars[j].to_digit(10).unwrap_or(0) as usize);
                j += 1;
            }
            out.push(Tok::Param(n.saturating_sub(1)));
            i = j;
        } else if c == '?' && kind == EngineKind::MariaDb {
            out.push(Tok::Param(question));
            question += 1;
            i += 1;
        } else if c.is_alphanumeric() || c == '_' || c == '"' || c == '`' {
            let mut j = i;
            while j < chars.len() && (chars[j].is_alphanumeric() || "_.\"`@".contains(chars[j])) {
                j += 1;
            }
            let word: String = chars[i..j].iter().collect();
            if word.chars().all(|c| c.is_ascii_digit()) {
                out.push(Tok::Literal);
            } else {
                out.push(Tok::Word(word.to_ascii_lowercase()));
            }
            i = j.max(i + 1);
        } else if "=<>!".contains(c) {
            let mut j = i;
            while j < chars.len() && "=<>!".contains(chars[j]) {
                j += 1;
            }
            out.push(Tok::Op);
            i = j;
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

/// The column each placeholder of `sql` is compared with or stored in (`col = $1`,
/// `col in (?, ?)`, an INSERT's column list), by parameter index; `None` where a parameter is
/// something else (`reserved + ?`, `limit ?`).
pub fn placeholder_columns(kind: EngineKind, sql: &str) -> BTreeMap<usize, String> {
    let toks = tokens(kind, sql);
    let mut out = BTreeMap::new();
    // INSERT ... (columns) VALUES (items), (items): positional.
    if matches!(toks.first(), Some(Tok::Word(w)) if w == "insert") {
        let open = toks.iter().position(|t| *t == Tok::Punct('('));
        let values = toks
            .iter()
            .position(|t| matches!(t, Tok::Word(w) if w == "values"));
        if let (Some(open), Some(values)) = (open, values) {
            if open < values {
                let columns: Vec<String> = toks[open + 1..values]
                    .iter()
                    .filter_map(|t| match t {
                        Tok::Word(w) => Some(w.clone()),
                        _ => None,
                    })
                    .collect();
                let mut depth = 0;
                let mut item = 0;
                for t in &toks[values + 1..] {
                    match t {
                        Tok::Punct('(') => {
                            depth += 1;
                            if depth == 1 {
                                item = 0;
                            }
                        }
                        Tok::Punct(')') => {
                            depth -= 1;
                            if depth == 0 {
                                item = 0;
                            }
                        }
                        Tok::Punct(',') if depth == 1 => item += 1,
                        Tok::Param(p) if depth == 1 => {
                            if let Some(c) = columns.get(item) {
                                out.insert(*p, c.clone());
                            }
                        }
                        // ON CONFLICT / ON DUPLICATE KEY: the rest is not the row.
                        Tok::Word(w) if depth == 0 && w == "on" => break,
                        _ => {}
                    }
                }
            }
        }
    }
    for (i, t) in toks.iter().enumerate() {
        let Tok::Param(p) = t else { continue };
        if out.contains_key(p) {
            continue;
        }
        // Walk back over an IN list (`(`, `,`, other placeholders and literals) to `in`, or
        // over nothing to a comparison operator; the word before it is the column.
        let mut j = i;
        let mut column = None;
        while j > 0 {
            j -= 1;
            match &toks[j] {
                Tok::Punct('(') | Tok::Punct(',') | Tok::Param(_) | Tok::Literal => continue,
                Tok::Word(w) if w == "in" => {
                    if let Some(Tok::Word(c)) = j.checked_sub(1).map(|k| &toks[k]) {
                        column = Some(c.clone());
                    }
                    break;
                }
                Tok::Op if j + 1 == i => {
                    if let Some(Tok::Word(c)) = j.checked_sub(1).map(|k| &toks[k]) {
                        column = Some(c.clone());
                    }
                    break;
                }
                _ => break,
            }
        }
        if let Some(c) = column {
            out.insert(*p, c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_name_their_columns() {
        let pg = placeholder_columns(
            EngineKind::Postgres,
            "select status from carts where id = $1 and tenant_id = $2 for update",
        );
        assert_eq!(pg.get(&0).map(String::as_str), Some("id"));
        assert_eq!(pg.get(&1).map(String::as_str), Some("tenant_id"));
        let ins = placeholder_columns(
            EngineKind::MariaDb,
            "insert into cart_items (tenant_id, cart_id, product_id, quantity) values (?, ?, 'x', ?)",
        );
        assert_eq!(ins.get(&1).map(String::as_str), Some("cart_id"));
        assert_eq!(ins.get(&2).map(String::as_str), Some("quantity"));
        let list = placeholder_columns(
            EngineKind::Postgres,
            "select * from t where id in ($1, $2) and v = reserved + $3 limit $4",
        );
        assert_eq!(list.get(&1).map(String::as_str), Some("id"));
        assert_eq!(list.get(&2), None);
        assert_eq!(list.get(&3), None);
    }

    #[test]
    fn columns_name_tables_the_laravel_way() {
        let tables: Vec<String> = ["orders", "categories", "financial_orders"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            column_table("order_id", None, &tables).as_deref(),
            Some("orders")
        );
        assert_eq!(
            column_table("category_id", None, &tables).as_deref(),
            Some("categories")
        );
        assert_eq!(
            column_table("o.id", Some("orders"), &tables).as_deref(),
            Some("orders")
        );
        assert_eq!(column_table("payload", Some("jobs"), &tables), None);
        assert_eq!(column_table("cart_id", None, &tables), None);
    }

    #[test]
    fn the_map_is_a_bijection() {
        let mut m = IdMap::default();
        assert!(m.bind("orders", 5, 6));
        assert!(m.bind("orders", 5, 6));
        assert!(!m.bind("orders", 5, 7));
        assert!(!m.bind("orders", 4, 6));
        assert!(m.bind("payments", 5, 5));
        assert_eq!(m.real_of("orders", 5), 6);
        assert_eq!(m.real_of("orders", 9), 9);
        assert_eq!(m.conflicts, 2);
        assert_eq!(m.remapped(), 1);
    }
}
