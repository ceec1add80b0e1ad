//! Access paths: which index positions a statement visits, in index order, and the gaps
//! between them that InnoDB's next-key locks cover. The executor picks a path from the WHERE
//! clause ([`choose_access`]); `read` walks it.

use std::collections::BTreeMap;

use super::expr::BExpr;
use crate::db::lock::LockTarget;
use crate::db::sql::BinOp;
use crate::db::storage::{Key, Table};
use crate::db::value::Value;

/// How rows are found: which index positions are visited, in index order.
#[derive(Debug, Clone)]
pub(super) enum Access {
    /// Primary key lookups.
    Keys(Vec<Key>),
    /// Equality on all columns of a secondary index.
    Index { index: usize, values: Vec<Key> },
    /// The whole table in primary key order.
    Scan,
}

/// One visited index position.
#[derive(Debug, Clone)]
pub(super) enum Position {
    /// A row; `gap` is the gap before its index record that InnoDB's next-key lock covers
    /// (`None` for a unique lookup that found the row: InnoDB locks only the record then).
    Row { key: Key, gap: Option<LockTarget> },
    /// A gap with no row (a lookup that found nothing, or the end of a range).
    Gap(LockTarget),
}

/// Picks the access path: primary key lookups, a secondary index with equality on all its
/// columns (unique first), or a scan.
pub(super) fn choose_access(table: &Table, filter: Option<&BExpr>) -> Access {
    let mut equal: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
    let mut conjuncts = Vec::new();
    if let Some(f) = filter {
        collect_conjuncts(f, &mut conjuncts);
    }
    for c in conjuncts {
        match c {
            BExpr::Bin(l, BinOp::Eq, r) => match (l.as_ref(), r.as_ref()) {
                (BExpr::Col(i), BExpr::Val(v)) | (BExpr::Val(v), BExpr::Col(i)) if !v.is_null() => {
                    equal.insert(*i, vec![v.clone()]);
                }
                _ => {}
            },
            BExpr::In(inner, list, false) => {
                if let BExpr::Col(i) = inner.as_ref() {
                    let values: Option<Vec<Value>> = list
                        .iter()
                        .map(|e| match e {
                            BExpr::Val(v) if !v.is_null() => Some(v.clone()),
                            _ => None,
                        })
                        .collect();
                    if let Some(mut values) = values {
                        values.sort();
                        values.dedup();
                        equal.entry(*i).or_insert(values);
                    }
                }
            }
            _ => {}
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
                return Access::Index { index: i, values };
            }
        }
    }
    Access::Scan
}

pub(super) fn collect_conjuncts<'a>(e: &'a BExpr, out: &mut Vec<&'a BExpr>) {
    if let BExpr::Bin(l, BinOp::And, r) = e {
        collect_conjuncts(l, out);
        collect_conjuncts(r, out);
    } else {
        out.push(e);
    }
}

/// The keys of the rows an access path visits, in index order: [`positions`] without the
/// gaps, for reads that lock no gaps (snapshot reads, PostgreSQL's locking reads).
pub(super) fn row_keys(table: &Table, access: &Access) -> Vec<Key> {
    match access {
        Access::Keys(keys) => keys
            .iter()
            .filter(|key| table.rows.contains_key(*key))
            .cloned()
            .collect(),
        Access::Scan => table.rows.keys().cloned().collect(),
        Access::Index { index, values } => values
            .iter()
            .flat_map(|v| table.index_lookup(*index, v))
            .filter(|key| table.rows.contains_key(key))
            .collect(),
    }
}

/// The index positions an access path visits, in index order, with the gaps InnoDB locks.
pub(super) fn positions(table: &Table, access: &Access) -> Vec<Position> {
    let pk_gap = |before: Option<Key>| LockTarget::Gap {
        table: table.name.clone(),
        index: None,
        before,
    };
    let mut out = Vec::new();
    match access {
        Access::Keys(keys) => {
            for key in keys {
                if table.rows.contains_key(key) {
                    out.push(Position::Row {
                        key: key.clone(),
                        gap: None,
                    });
                } else {
                    out.push(Position::Gap(pk_gap(table.primary_successor(key))));
                }
            }
        }
        Access::Scan => {
            for key in table.rows.keys() {
                out.push(Position::Row {
                    key: key.clone(),
                    gap: Some(pk_gap(Some(key.clone()))),
                });
            }
            out.push(Position::Gap(pk_gap(None)));
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
                    out.push(Position::Row {
                        key: key.clone(),
                        gap: (!unique).then(|| gap(Some(concat_key(v, key)))),
                    });
                }
                if !unique || keys.is_empty() {
                    let last = keys.last().cloned().unwrap_or_default();
                    let next = table
                        .index_successor(*index, v, &last)
                        .map(|(nv, nk)| concat_key(&nv, &nk));
                    out.push(Position::Gap(gap(next)));
                }
            }
        }
    }
    out
}

pub(super) fn concat_key(values: &Key, key: &Key) -> Key {
    values.iter().chain(key.iter()).cloned().collect()
}
