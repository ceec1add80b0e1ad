//! Shaping a result: ORDER BY with each engine's NULL order, projection and aggregates.

use super::expr::{bind, eval, BExpr};
use crate::db::profile::{errors, Engine};
use crate::db::sql::{AggFn, Expr, SelectItem};
use crate::db::storage::{Row, Table};
use crate::db::value::{DbError, QueryResult, Value};

pub(super) fn compare_sort_keys(
    engine: Engine,
    a: &[Value],
    b: &[Value],
    order: &[(BExpr, bool)],
) -> std::cmp::Ordering {
    for ((x, y), (_, desc)) in a.iter().zip(b).zip(order) {
        // NULL sorts last ascending on PostgreSQL and first on MariaDB.
        let o = match (x.is_null(), y.is_null()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => match engine {
                Engine::Postgres => std::cmp::Ordering::Greater,
                Engine::InnoDb => std::cmp::Ordering::Less,
            },
            (false, true) => match engine {
                Engine::Postgres => std::cmp::Ordering::Less,
                Engine::InnoDb => std::cmp::Ordering::Greater,
            },
            _ => x.cmp(y),
        };
        let o = if *desc { o.reverse() } else { o };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    std::cmp::Ordering::Equal
}

pub(super) fn sort_rows(
    engine: Engine,
    rows: &mut Vec<Row>,
    order: &[(BExpr, bool)],
) -> Result<(), DbError> {
    if order.is_empty() {
        return Ok(());
    }
    let mut keyed = Vec::with_capacity(rows.len());
    for row in rows.drain(..) {
        let key = order
            .iter()
            .map(|(e, _)| eval(engine, e, &row))
            .collect::<Result<Vec<_>, _>>()?;
        keyed.push((key, row));
    }
    keyed.sort_by(|a, b| compare_sort_keys(engine, &a.0, &b.0, order));
    rows.extend(keyed.into_iter().map(|(_, r)| r));
    Ok(())
}

pub(super) fn project(
    engine: Engine,
    table: &Table,
    items: &[SelectItem],
    params: &[Value],
    rows: &[Row],
) -> Result<QueryResult, DbError> {
    let mut columns = Vec::new();
    let mut exprs = Vec::new();
    for item in items {
        match item {
            SelectItem::Star => {
                for (i, c) in table.columns.iter().enumerate() {
                    columns.push(c.name.clone());
                    exprs.push(BExpr::Col(i));
                }
            }
            SelectItem::Expr { expr, name } => {
                columns.push(name.clone());
                exprs.push(bind(engine, expr, &table.columns, params)?);
            }
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(
            exprs
                .iter()
                .map(|e| eval(engine, e, row))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    Ok(QueryResult {
        columns,
        rows: out,
        ..Default::default()
    })
}

pub(super) fn aggregate(
    engine: Engine,
    table: &Table,
    items: &[SelectItem],
    params: &[Value],
    rows: &[Row],
) -> Result<QueryResult, DbError> {
    let mut columns = Vec::new();
    let mut out = Vec::new();
    for item in items {
        let SelectItem::Expr { expr, name } = item else {
            return Err(errors::grouping(engine, "*"));
        };
        let Expr::Agg(func, arg) = expr else {
            let column = match expr {
                Expr::Column(c) => c.clone(),
                _ => name.clone(),
            };
            return Err(errors::grouping(engine, &column));
        };
        columns.push(name.clone());
        let arg = arg
            .as_ref()
            .map(|a| bind(engine, a, &table.columns, params))
            .transpose()?;
        let mut values = Vec::new();
        if let Some(arg) = &arg {
            for row in rows {
                let v = eval(engine, arg, row)?;
                if !v.is_null() {
                    values.push(v);
                }
            }
        }
        out.push(match func {
            AggFn::CountStar => Value::Int(rows.len() as i64),
            AggFn::Count => Value::Int(values.len() as i64),
            AggFn::Sum => {
                if values.is_empty() {
                    Value::Null
                } else {
                    let mut sum: i64 = 0;
                    for v in &values {
                        let Value::Int(i) = v else {
                            return Err(errors::type_mismatch(engine, &format!("sum({v:?})")));
                        };
                        sum = sum
                            .checked_add(*i)
                            .ok_or_else(|| errors::overflow(engine))?;
                    }
                    Value::Int(sum)
                }
            }
            AggFn::Min => values.iter().min().cloned().unwrap_or(Value::Null),
            AggFn::Max => values.iter().max().cloned().unwrap_or(Value::Null),
        });
    }
    Ok(QueryResult {
        columns,
        rows: vec![out],
        ..Default::default()
    })
}
