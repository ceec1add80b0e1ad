//! Access paths: which index positions a statement visits, in index order, and the gaps
//! between them that InnoDB's next-key locks cover. The executor picks a path from the WHERE
//! clause ([`choose_access`]); `read` walks it.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::expr::BExpr;
use crate::db::lock::LockTarget;
use crate::db::sql::{BinOp, ColumnType};
use crate::db::storage::{Key, RowVersions, Table};
use crate::db::value::Value;

/// How rows are found: which index positions are visited.
#[derive(Debug, Clone)]
pub(super) enum Access {
    /// Primary key lookups.
    Keys(Vec<Key>),
    /// A range of the primary key (a single-column key compared with `<`, `<=`, `>`, `>=`):
    /// the index positions between the bounds, as InnoDB's range scan and PostgreSQL's
    /// (bitmap) index scan visit them.
    Range { lo: Bound<Key>, hi: Bound<Key> },
    /// Equality on all columns of a secondary index.
    Index { index: usize, values: Vec<Key> },
    /// The whole table in primary key order.
    Scan,
}

/// The direction an access path is walked in: primary key order, or backwards for an
/// `ORDER BY` of the primary key `DESC` that the index can deliver without a sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Asc,
    Desc,
}

/// One visited index position.
#[derive(Debug, Clone)]
pub(super) enum Position {
    /// A row; `gap` is the gap before its index record that InnoDB's next-key lock covers
    /// (`None` where InnoDB locks only the record: a unique lookup that found the row, or the
    /// first row of a `>=` range that equals its bound). `end_of_range` marks the first row
    /// past the range, which InnoDB's range scan reads and locks before it stops.
    Row {
        key: Key,
        gap: Option<LockTarget>,
        end_of_range: bool,
        /// InnoDB: the secondary index record a scan of that index locks before the row's
        /// clustered record (`gap` is then the gap before this record).
        entry: Option<LockTarget>,
        /// The position in the scan's index: the primary key, or the index values followed
        /// by the primary key.
        order: Key,
    },
    /// A gap with no row (a lookup that found nothing, or the end of a range).
    Gap(LockTarget),
}

/// Picks the access path: primary key lookups, a secondary index with equality on all its
/// columns (unique first), or a scan. `innodb_costs` weighs a non-unique secondary index
/// against a clustered index scan as MariaDB's range optimizer does
/// ([`innodb_prefers_scan`]); without it the index is always taken.
pub(super) fn choose_access(table: &Table, filter: Option<&BExpr>, innodb_costs: bool) -> Access {
    let mut equal: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
    let mut conjuncts = Vec::new();
    if let Some(f) = filter {
        collect_conjuncts(f, &mut conjuncts);
    }
    let mut lo: Bound<Key> = Bound::Unbounded;
    let mut hi: Bound<Key> = Bound::Unbounded;
    let single_pk = (table.primary_key.len() == 1).then(|| table.primary_key[0]);
    for c in conjuncts {
        if let Some(values) = or_of_equalities(c) {
            let (column, values) = values;
            // Index keys compare as the column's type: a quoted number finds the row.
            let Some(mut values) = values
                .into_iter()
                .map(|v| key_value(table, column, v))
                .collect::<Option<Vec<Value>>>()
            else {
                continue;
            };
            values.sort();
            values.dedup();
            equal.entry(column).or_insert(values);
            continue;
        }
        if let BExpr::Bin(l, op, r) = c {
            // `col op value`, or `value op col` with the comparison turned around.
            let (column, op, value) = match (l.as_ref(), r.as_ref()) {
                (BExpr::Col(i), BExpr::Val(v)) => (*i, *op, v),
                (BExpr::Val(v), BExpr::Col(i)) => (*i, flip(*op), v),
                _ => continue,
            };
            if value.is_null() || Some(column) != single_pk {
                continue;
            }
            let Some(value) = key_value(table, column, value.clone()) else {
                continue;
            };
            let key = vec![value];
            match op {
                BinOp::Gt => lo = tighter_lo(lo, Bound::Excluded(key)),
                BinOp::GtEq => lo = tighter_lo(lo, Bound::Included(key)),
                BinOp::Lt => hi = tighter_hi(hi, Bound::Excluded(key)),
                BinOp::LtEq => hi = tighter_hi(hi, Bound::Included(key)),
                _ => {}
            }
        }
    }
    let product = |columns: &[usize]| -> Option<Vec<Key>> {
        let mut keys: Vec<Key> = vec![Vec::new()];
        for c in columns {
            let values = equal.get(c)?;
            let mut next = Vec::new();
            for k in &keys {
                for v in values {
                    let mut k = k.clone();
                    k.push(v.clone());
                    next.push(k);
                }
            }
            keys = next;
            if keys.len() > 1024 {
                return None;
            }
        }
        keys.sort();
        keys.dedup();
        Some(keys)
    };
    if let Some(keys) = product(&table.primary_key) {
        return Access::Keys(keys);
    }
    for unique in [true, false] {
        for (i, index) in table.indexes.iter().enumerate() {
            if index.unique != unique {
                continue;
            }
            if let Some(values) = product(&index.columns) {
                if !unique && innodb_costs && innodb_prefers_scan(table, i, &values) {
                    continue;
                }
                return Access::Index { index: i, values };
            }
        }
    }
    if lo != Bound::Unbounded || hi != Bound::Unbounded {
        return Access::Range { lo, hi };
    }
    Access::Scan
}

/// Whether MariaDB 10.11's range optimizer (`SQL_SELECT::test_quick_select`) rejects the
/// ranges `values` of non-unique index `index` for a clustered index scan, so that the
/// statement reads (and locks) every row. Measured with the optimizer trace on one-page
/// tables: the scan costs `3 + 0.2 R` for an estimate of `R` rows; the index ranges cost about
/// `1.2 N + 0.145` per range for `N` index records in them (`records_in_range`, at least 1 per
/// range), so with one range the index is taken while `6 N - R <= 14`. `R` is
/// `dict_table_t::stat_n_rows`, which every insert and delete-marking moves at once, committed
/// or not (a rollback moves it back); `records_in_range` counts the index records on the page,
/// delete-marked ones too until purge removes them.
fn innodb_prefers_scan(table: &Table, index: usize, values: &[Key]) -> bool {
    let estimated_rows = table
        .rows
        .values()
        .filter(|rv| match &rv.pending {
            Some(p) => p.data.is_some(),
            None => rv.latest_committed().is_some_and(|c| c.data.is_some()),
        })
        .count() as f64;
    let in_ranges: f64 = values
        .iter()
        .map(|v| index_records(table, index, v).max(1) as f64)
        .sum();
    let scan_cost = 3.0 + 0.2 * estimated_rows;
    let index_cost = 1.2 * in_ranges + 0.145 * values.len() as f64;
    index_cost >= scan_cost
}

/// The records of index `index` with the values `values` that InnoDB still has: of rows some
/// version of which (committed, delete-marked, or being written) has them (see
/// [`index_successor`]).
fn index_records(table: &Table, index: usize, values: &Key) -> usize {
    table
        .index_lookup(index, values)
        .iter()
        .filter(|k| {
            table.rows.get(*k).is_some_and(|rv| {
                rv.pending
                    .iter()
                    .filter_map(|p| p.data.as_ref())
                    .chain(rv.committed.iter().filter_map(|c| c.data.as_ref()))
                    .any(|r| &table.index_key_of(index, r) == values)
            })
        })
        .count()
}

/// `v` as a key of column `c`: an integer column takes a string that spells an integer;
/// `None` if it cannot be a key of the column (the WHERE then decides row by row).
fn key_value(table: &Table, c: usize, v: Value) -> Option<Value> {
    match (&v, table.columns[c].ty) {
        (Value::Text(t), ColumnType::Int) => t.trim().parse::<i64>().ok().map(Value::Int),
        (Value::Int(_), ColumnType::Int) | (Value::Text(_), ColumnType::Text) => Some(v),
        (Value::Bool(_), ColumnType::Bool) => Some(v),
        _ => None,
    }
}

/// `col = v`, `col IN (...)`, or an OR of those on one column: the column and its values.
fn or_of_equalities(e: &BExpr) -> Option<(usize, Vec<Value>)> {
    match e {
        BExpr::Bin(l, BinOp::Eq, r) => match (l.as_ref(), r.as_ref()) {
            (BExpr::Col(i), BExpr::Val(v)) | (BExpr::Val(v), BExpr::Col(i)) if !v.is_null() => {
                Some((*i, vec![v.clone()]))
            }
            _ => None,
        },
        BExpr::In(inner, list, false) => {
            let BExpr::Col(i) = inner.as_ref() else {
                return None;
            };
            let values = list
                .iter()
                .map(|e| match e {
                    BExpr::Val(v) if !v.is_null() => Some(v.clone()),
                    _ => None,
                })
                .collect::<Option<Vec<Value>>>()?;
            Some((*i, values))
        }
        BExpr::Bin(l, BinOp::Or, r) => {
            let (a, mut left) = or_of_equalities(l)?;
            let (b, right) = or_of_equalities(r)?;
            if a != b {
                return None;
            }
            left.extend(right);
            Some((a, left))
        }
        _ => None,
    }
}

fn flip(op: BinOp) -> BinOp {
    match op {
        BinOp::Lt => BinOp::Gt,
        BinOp::LtEq => BinOp::GtEq,
        BinOp::Gt => BinOp::Lt,
        BinOp::GtEq => BinOp::LtEq,
        other => other,
    }
}

fn tighter_lo(a: Bound<Key>, b: Bound<Key>) -> Bound<Key> {
    match (&a, &b) {
        (Bound::Unbounded, _) => b,
        (_, Bound::Unbounded) => a,
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
            match x.cmp(y) {
                std::cmp::Ordering::Less => b,
                std::cmp::Ordering::Greater => a,
                // Equal values: the exclusive bound is the tighter one.
                std::cmp::Ordering::Equal => {
                    if matches!(a, Bound::Excluded(_)) {
                        a
                    } else {
                        b
                    }
                }
            }
        }
    }
}

fn tighter_hi(a: Bound<Key>, b: Bound<Key>) -> Bound<Key> {
    match (&a, &b) {
        (Bound::Unbounded, _) => b,
        (_, Bound::Unbounded) => a,
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
            match x.cmp(y) {
                std::cmp::Ordering::Less => a,
                std::cmp::Ordering::Greater => b,
                std::cmp::Ordering::Equal => {
                    if matches!(a, Bound::Excluded(_)) {
                        a
                    } else {
                        b
                    }
                }
            }
        }
    }
}

pub(super) fn collect_conjuncts<'a>(e: &'a BExpr, out: &mut Vec<&'a BExpr>) {
    if let BExpr::Bin(l, BinOp::And, r) = e {
        collect_conjuncts(l, out);
        collect_conjuncts(r, out);
    } else {
        out.push(e);
    }
}

/// Whether `key` lies below the upper bound `hi`.
fn below(hi: &Bound<Key>, key: &Key) -> bool {
    match hi {
        Bound::Unbounded => true,
        Bound::Included(h) => key <= h,
        Bound::Excluded(h) => key < h,
    }
}

/// The keys of the rows an access path visits, in its order: [`positions`] without the gaps,
/// for reads that lock no gaps (snapshot reads, PostgreSQL's locking reads).
pub(super) fn row_keys(table: &Table, access: &Access, direction: Direction) -> Vec<Key> {
    row_entries(table, access, direction)
        .into_iter()
        .map(|(key, _)| key.clone())
        .collect()
}

/// The rows an access path visits, in its order, as [`row_keys`] gives their keys, with
/// their versions: borrowed from the table, so a snapshot read copies no key and looks no
/// row up twice.
pub(super) fn row_entries<'t>(
    table: &'t Table,
    access: &Access,
    direction: Direction,
) -> Vec<(&'t Key, &'t RowVersions)> {
    let mut entries: Vec<(&Key, &RowVersions)> = match access {
        Access::Keys(keys) => keys
            .iter()
            .filter_map(|key| table.rows.get_key_value(key))
            .collect(),
        Access::Range { lo, hi } => table
            .rows
            .range::<Key, _>((lo.as_ref(), Bound::Unbounded))
            .take_while(|(k, _)| below(hi, k))
            .collect(),
        Access::Scan => table.rows.iter().collect(),
        Access::Index { index, values } => values
            .iter()
            .flat_map(|v| table.index_keys(*index, v))
            .filter_map(|key| table.rows.get_key_value(key))
            .collect(),
    };
    if direction == Direction::Desc {
        entries.reverse();
    }
    entries
}

/// PostgreSQL: the entries of rolled-back inserts (see [`Table::dead_inserts`]) an index scan
/// of `access` meets (none for a sequential scan, which reads the heap).
pub(super) fn dead_inserts_met(table: &Table, access: &Access) -> Vec<(Option<usize>, Key)> {
    if table.dead_inserts.is_empty() {
        return Vec::new();
    }
    let primary = |k: &Key| (None, k.clone());
    match access {
        Access::Keys(keys) => keys
            .iter()
            .map(primary)
            .filter(|e| table.dead_inserts.contains(e))
            .collect(),
        Access::Range { lo, hi } => table
            .dead_inserts
            .iter()
            .filter(|(index, k)| {
                index.is_none()
                    && match lo {
                        Bound::Included(l) => k >= l,
                        Bound::Excluded(l) => k > l,
                        Bound::Unbounded => true,
                    }
                    && below(hi, k)
            })
            .cloned()
            .collect(),
        Access::Scan => Vec::new(),
        Access::Index { index, values } => values
            .iter()
            .flat_map(|v| table.index_lookup(*index, v))
            .map(|k| (Some(*index), k))
            .filter(|e| table.dead_inserts.contains(e))
            .collect(),
    }
}

/// The index positions an access path visits, in its direction, with the gaps InnoDB locks
/// (measured on MariaDB 10.11.19): every record of a
/// range or scan with its next-key lock; the first record past a range too, which the scan
/// reads before it knows to stop (the end of the index, if none, as its supremum gap); the
/// first record of a `>=` range that equals the bound without its gap. Walked backwards, a
/// scan first locks the gap above the range (InnoDB's guard against phantoms in `ORDER BY
/// ... DESC`), then the records downwards with their next-key locks, and then the first
/// record below the range.
pub(super) fn positions(table: &Table, access: &Access, direction: Direction) -> Vec<Position> {
    let pk_gap = |before: Option<Key>| LockTarget::Gap {
        table: table.name.clone(),
        index: None,
        before,
    };
    let row = |key: &Key, gap: Option<LockTarget>, end_of_range: bool| Position::Row {
        key: key.clone(),
        gap,
        end_of_range,
        entry: None,
        order: key.clone(),
    };
    let mut out = Vec::new();
    match access {
        Access::Keys(keys) => {
            for key in keys {
                if table.rows.contains_key(key) {
                    out.push(row(key, None, false));
                } else {
                    out.push(Position::Gap(pk_gap(table.primary_successor(key))));
                }
            }
            if direction == Direction::Desc {
                out.reverse();
            }
        }
        Access::Range { .. } | Access::Scan => {
            let (lo, hi) = match access {
                Access::Range { lo, hi } => (lo.clone(), hi.clone()),
                _ => (Bound::Unbounded, Bound::Unbounded),
            };
            match direction {
                Direction::Asc => {
                    let mut first = true;
                    let mut past = false;
                    for (key, _) in table.rows.range((lo.clone(), Bound::Unbounded)) {
                        if !below(&hi, key) {
                            out.push(row(key, Some(pk_gap(Some(key.clone()))), true));
                            past = true;
                            break;
                        }
                        let exact = first && matches!(&lo, Bound::Included(l) if l == key);
                        let gap = (!exact).then(|| pk_gap(Some(key.clone())));
                        out.push(row(key, gap, false));
                        first = false;
                    }
                    if !past {
                        out.push(Position::Gap(pk_gap(None)));
                    }
                }
                Direction::Desc => {
                    // The gap above the range: before the first record past its upper end.
                    let above = match &hi {
                        Bound::Unbounded => None,
                        Bound::Included(h) => table
                            .rows
                            .range((Bound::Excluded(h.clone()), Bound::Unbounded))
                            .next()
                            .map(|(k, _)| k.clone()),
                        Bound::Excluded(h) => table
                            .rows
                            .range((Bound::Included(h.clone()), Bound::Unbounded))
                            .next()
                            .map(|(k, _)| k.clone()),
                    };
                    out.push(Position::Gap(pk_gap(above)));
                    for (key, _) in table.rows.range((Bound::Unbounded, hi.clone())).rev() {
                        let in_range = match &lo {
                            Bound::Unbounded => true,
                            Bound::Included(l) => key >= l,
                            Bound::Excluded(l) => key > l,
                        };
                        out.push(row(key, Some(pk_gap(Some(key.clone()))), !in_range));
                        if !in_range {
                            break;
                        }
                    }
                }
            }
        }
        Access::Index { index, values } => {
            let unique = table.indexes[*index].unique;
            let gap = |before: Option<Key>| LockTarget::Gap {
                table: table.name.clone(),
                index: Some(*index),
                before,
            };
            for v in values {
                // Index entries outlive rolled-back inserts; only rows that exist are visited.
                let keys: Vec<Key> = table
                    .index_lookup(*index, v)
                    .into_iter()
                    .filter(|k| table.rows.contains_key(k))
                    .collect();
                for key in &keys {
                    let order = concat_key(v, key);
                    out.push(Position::Row {
                        key: key.clone(),
                        gap: (!unique).then(|| gap(Some(order.clone()))),
                        end_of_range: false,
                        entry: Some(LockTarget::Entry {
                            table: table.name.clone(),
                            index: *index,
                            entry: order.clone(),
                        }),
                        order,
                    });
                }
                if !unique || keys.is_empty() {
                    let last = keys.last().cloned().unwrap_or_default();
                    let next = index_successor(table, *index, v, &last);
                    out.push(Position::Gap(gap(next)));
                }
            }
            if direction == Direction::Desc {
                out.reverse();
            }
        }
    }
    out
}

/// The direction in which `access` delivers rows in the `order` asked for, or `None` if they
/// must be sorted: no `ORDER BY` (index order), or the primary key columns all ascending or
/// all descending on a primary key path (or a single value of a secondary index, whose
/// entries for one value are in primary key order).
pub(super) fn index_order(
    table: &Table,
    access: &Access,
    order: &[(BExpr, bool)],
) -> Option<Direction> {
    if order.is_empty() {
        return Some(Direction::Asc);
    }
    let pk_path = match access {
        Access::Keys(_) | Access::Range { .. } | Access::Scan => true,
        Access::Index { values, .. } => values.len() == 1,
    };
    if !pk_path || order.len() != table.primary_key.len() {
        return None;
    }
    let by_key = order
        .iter()
        .zip(&table.primary_key)
        .all(|((e, _), &c)| matches!(e, BExpr::Col(i) if *i == c));
    let desc = order[0].1;
    if !by_key || order.iter().any(|(_, d)| *d != desc) {
        return None;
    }
    Some(if desc {
        Direction::Desc
    } else {
        Direction::Asc
    })
}

pub(super) fn concat_key(values: &Key, key: &Key) -> Key {
    values.iter().chain(key.iter()).cloned().collect()
}

/// The first record of secondary index `index` after `(values, key)` that InnoDB still has:
/// the simulated index keeps entries of rolled-back inserts and of a row's old values, and a
/// record exists while some version of its row (committed, delete-marked, or being written)
/// has its values. As the index values followed by the primary key.
pub(super) fn index_successor(table: &Table, index: usize, values: &Key, key: &Key) -> Option<Key> {
    let mut at = (values.clone(), key.clone());
    loop {
        let (v, k) = table.index_successor(index, &at.0, &at.1)?;
        let exists = table.rows.get(&k).is_some_and(|rv| {
            rv.pending
                .iter()
                .filter_map(|p| p.data.as_ref())
                .chain(rv.committed.iter().filter_map(|c| c.data.as_ref()))
                .any(|r| table.index_key_of(index, r) == v)
        });
        if exists {
            return Some(concat_key(&v, &k));
        }
        at = (v, k);
    }
}
