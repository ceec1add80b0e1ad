//! Expressions: binding names and parameters ([`bind`]), evaluation with SQL's three-valued
//! logic ([`eval`]), and conversion of values to a column's type ([`coerce`]), each with the
//! engine's own errors.

use std::collections::BTreeMap;

use crate::db::profile::{errors, Engine};
use crate::db::sql::{BinOp, ColumnSpec, ColumnType, Expr};
use crate::db::storage::Table;
use crate::db::value::{DbError, Value};

/// A bound expression: columns resolved to positions, parameters substituted.
#[derive(Debug, Clone)]
pub(super) enum BExpr {
    Col(usize),
    Val(Value),
    Not(Box<BExpr>),
    Neg(Box<BExpr>),
    Bin(Box<BExpr>, BinOp, Box<BExpr>),
    IsNull(Box<BExpr>, bool),
    In(Box<BExpr>, Vec<BExpr>, bool),
    /// A cast of a column expression (casts of constants are folded when binding).
    Cast(Box<BExpr>, ColumnType),
}

pub(super) fn limit_value(engine: Engine, e: &Expr, params: &[Value]) -> Result<usize, DbError> {
    match eval(engine, &bind(engine, e, &[], params)?, &[])? {
        Value::Int(n) if n >= 0 => Ok(n as usize),
        other => Err(errors::syntax(
            engine,
            &format!("LIMIT must not be negative: {other}"),
        )),
    }
}

thread_local! {
    // The session settings of the statement being bound (`current_setting`, `@var`); set by
    // `Database::dml` for the duration of one statement, empty otherwise.
    pub(super) static STATEMENT_SETTINGS: std::cell::RefCell<BTreeMap<String, Value>> = const { std::cell::RefCell::new(BTreeMap::new()) };
}

/// Resolves column names (against a table's columns) and substitutes parameters.
pub(super) fn bind(
    engine: Engine,
    e: &Expr,
    columns: &[ColumnSpec],
    params: &[Value],
) -> Result<BExpr, DbError> {
    Ok(match e {
        Expr::Column(name) => match columns.iter().position(|c| c.name == *name) {
            Some(i) => BExpr::Col(i),
            None => return Err(errors::no_such_column(engine, name)),
        },
        Expr::Param(i) => BExpr::Val(params.get(*i).cloned().unwrap_or(Value::Null)),
        Expr::Lit(v) => BExpr::Val(v.clone()),
        Expr::Not(inner) => BExpr::Not(Box::new(bind(engine, inner, columns, params)?)),
        Expr::Neg(inner) => BExpr::Neg(Box::new(bind(engine, inner, columns, params)?)),
        Expr::Binary(l, op, r) => BExpr::Bin(
            Box::new(bind(engine, l, columns, params)?),
            *op,
            Box::new(bind(engine, r, columns, params)?),
        ),
        Expr::IsNull(inner, negated) => {
            BExpr::IsNull(Box::new(bind(engine, inner, columns, params)?), *negated)
        }
        Expr::InList(inner, list, negated) => BExpr::In(
            Box::new(bind(engine, inner, columns, params)?),
            list.iter()
                .map(|e| bind(engine, e, columns, params))
                .collect::<Result<_, _>>()?,
            *negated,
        ),
        Expr::Agg(..) => {
            return Err(DbError::new(
                "42803",
                "aggregate functions are not allowed here",
            ))
        }
        Expr::Setting(name) => match STATEMENT_SETTINGS.with(|s| s.borrow().get(name).cloned()) {
            Some(value) => BExpr::Val(value),
            // `current_setting` of a parameter the session never set fails (measured on
            // PostgreSQL 15.18); a MariaDB user variable never set is NULL.
            None if engine == Engine::Postgres => {
                return Err(errors::unknown_setting(engine, name))
            }
            None => BExpr::Val(Value::Null),
        },
        Expr::Cast(inner, ty) => match bind(engine, inner, columns, params)? {
            BExpr::Val(v) => BExpr::Val(cast(engine, v, *ty)?),
            other => BExpr::Cast(Box::new(other), *ty),
        },
    })
}

/// `CAST(v AS ty)` for constant operands (settings and parameters).
pub(super) fn cast(engine: Engine, v: Value, ty: ColumnType) -> Result<Value, DbError> {
    Ok(match (v, ty) {
        (Value::Null, _) => Value::Null,
        (Value::Int(i), ColumnType::Int) => Value::Int(i),
        (Value::Text(t), ColumnType::Int) => match t.trim().parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => return Err(errors::wrong_type(engine, "cast", "bigint", &t)),
        },
        (v, ColumnType::Text) => Value::Text(v.to_string()),
        (v, ty) => {
            return Err(errors::wrong_type(
                engine,
                "cast",
                ty.name(),
                &v.to_string(),
            ))
        }
    })
}

pub(super) fn truthy(v: &Value) -> Option<bool> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(*b),
        Value::Int(i) => Some(*i != 0),
        Value::Text(_) => Some(false),
    }
}

/// The integer a string stands for when compared with an integer (see [`compare`]).
pub(super) fn text_as_int(engine: Engine, text: &str) -> Result<i64, DbError> {
    let trimmed = text.trim();
    match engine {
        Engine::Postgres => trimmed
            .parse::<i64>()
            .map_err(|_| errors::wrong_type(engine, "", "integer", text)),
        Engine::InnoDb => {
            let sign = usize::from(trimmed.starts_with(['-', '+']));
            let digits = trimmed[sign..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(trimmed.len(), |end| end + sign);
            Ok(trimmed[..digits].parse::<i64>().unwrap_or(0))
        }
    }
}

pub(super) fn compare(
    engine: Engine,
    a: &Value,
    b: &Value,
) -> Result<Option<std::cmp::Ordering>, DbError> {
    Ok(match (a, b) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Text(x), Value::Text(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Int(y)) if engine == Engine::InnoDb => Some((*x as i64).cmp(y)),
        (Value::Int(x), Value::Bool(y)) if engine == Engine::InnoDb => Some(x.cmp(&(*y as i64))),
        // A string compared with an integer is read as a number: PostgreSQL takes a quoted
        // literal as the integer it spells (and rejects one that is none); MariaDB converts
        // the string's numeric prefix.
        (Value::Int(x), Value::Text(t)) => Some(x.cmp(&text_as_int(engine, t)?)),
        (Value::Text(t), Value::Int(y)) => Some(text_as_int(engine, t)?.cmp(y)),
        _ => {
            return Err(errors::type_mismatch(
                engine,
                &format!("{a:?} compared with {b:?}"),
            ))
        }
    })
}

pub(super) fn eval(engine: Engine, e: &BExpr, row: &[Value]) -> Result<Value, DbError> {
    Ok(match e {
        BExpr::Cast(inner, ty) => cast(engine, eval(engine, inner, row)?, *ty)?,
        BExpr::Col(i) => row[*i].clone(),
        BExpr::Val(v) => v.clone(),
        BExpr::Not(inner) => match truthy(&eval(engine, inner, row)?) {
            None => Value::Null,
            Some(b) => Value::Bool(!b),
        },
        BExpr::Neg(inner) => match eval(engine, inner, row)? {
            Value::Null => Value::Null,
            Value::Int(i) => Value::Int(i.checked_neg().ok_or_else(|| errors::overflow(engine))?),
            other => return Err(errors::type_mismatch(engine, &format!("- {other:?}"))),
        },
        BExpr::IsNull(inner, negated) => {
            Value::Bool(eval(engine, inner, row)?.is_null() != *negated)
        }
        BExpr::In(inner, list, negated) => {
            let v = eval(engine, inner, row)?;
            if v.is_null() {
                return Ok(Value::Null);
            }
            let mut saw_null = false;
            for item in list {
                let item = eval(engine, item, row)?;
                match compare(engine, &v, &item)? {
                    Some(std::cmp::Ordering::Equal) => return Ok(Value::Bool(!*negated)),
                    None => saw_null = true,
                    _ => {}
                }
            }
            if saw_null {
                Value::Null
            } else {
                Value::Bool(*negated)
            }
        }
        BExpr::Bin(l, op, r) => {
            match op {
                BinOp::And | BinOp::Or => {
                    // Three-valued logic: the dominant value (false for AND, true for OR) wins
                    // even over NULL, and the right side is not evaluated once it is known.
                    let dominant = *op == BinOp::Or;
                    let a = truthy(&eval(engine, l, row)?);
                    if a == Some(dominant) {
                        return Ok(Value::Bool(dominant));
                    }
                    let b = truthy(&eval(engine, r, row)?);
                    return Ok(match (a, b) {
                        (_, Some(x)) if x == dominant => Value::Bool(dominant),
                        (Some(_), Some(_)) => Value::Bool(!dominant),
                        _ => Value::Null,
                    });
                }
                _ => {}
            }
            let a = eval(engine, l, row)?;
            let b = eval(engine, r, row)?;
            use std::cmp::Ordering::*;
            match op {
                BinOp::Eq | BinOp::NotEq | BinOp::Lt | BinOp::LtEq | BinOp::Gt | BinOp::GtEq => {
                    match compare(engine, &a, &b)? {
                        None => Value::Null,
                        Some(o) => Value::Bool(match op {
                            BinOp::Eq => o == Equal,
                            BinOp::NotEq => o != Equal,
                            BinOp::Lt => o == Less,
                            BinOp::LtEq => o != Greater,
                            BinOp::Gt => o == Greater,
                            _ => o != Less,
                        }),
                    }
                }
                _ => {
                    let (x, y) = match (&a, &b) {
                        (Value::Null, _) | (_, Value::Null) => return Ok(Value::Null),
                        (Value::Int(x), Value::Int(y)) => (*x, *y),
                        _ => {
                            return Err(errors::type_mismatch(
                                engine,
                                &format!("{a:?} {op:?} {b:?}"),
                            ))
                        }
                    };
                    let overflow = || errors::overflow(engine);
                    let zero = |engine: Engine| -> Result<Value, DbError> {
                        match engine {
                            Engine::Postgres => Err(errors::division_by_zero()),
                            // MariaDB returns NULL (with a warning) outside strict DML.
                            Engine::InnoDb => Ok(Value::Null),
                        }
                    };
                    Value::Int(match op {
                        BinOp::Plus => x.checked_add(y).ok_or_else(overflow)?,
                        BinOp::Minus => x.checked_sub(y).ok_or_else(overflow)?,
                        BinOp::Mul => x.checked_mul(y).ok_or_else(overflow)?,
                        BinOp::Div => {
                            if y == 0 {
                                return zero(engine);
                            }
                            x.checked_div(y).ok_or_else(overflow)?
                        }
                        BinOp::Mod => {
                            if y == 0 {
                                return zero(engine);
                            }
                            x.checked_rem(y).ok_or_else(overflow)?
                        }
                        _ => unreachable!("comparison and logic handled above"),
                    })
                }
            }
        }
    })
}

pub(super) fn matches(
    engine: Engine,
    filter: Option<&BExpr>,
    row: &[Value],
) -> Result<bool, DbError> {
    match filter {
        None => Ok(true),
        Some(f) => Ok(truthy(&eval(engine, f, row)?) == Some(true)),
    }
}

/// Checks and converts a value for column `c`.
pub(super) fn coerce(engine: Engine, table: &Table, c: usize, v: Value) -> Result<Value, DbError> {
    let column = &table.columns[c];
    match (&v, column.ty) {
        (Value::Null, _) => {
            if column.not_null {
                Err(errors::not_null(engine, &table.name, &column.name))
            } else {
                Ok(v)
            }
        }
        (Value::Int(_), ColumnType::Int)
        | (Value::Text(_), ColumnType::Text)
        | (Value::Bool(_), ColumnType::Bool) => Ok(v),
        (Value::Text(s), ColumnType::Int) => s
            .trim()
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|_| errors::wrong_type(engine, &column.name, "integer", s)),
        (Value::Int(i), ColumnType::Bool) if engine == Engine::InnoDb && (*i == 0 || *i == 1) => {
            Ok(Value::Bool(*i == 1))
        }
        (Value::Bool(b), ColumnType::Int) if engine == Engine::InnoDb => Ok(Value::Int(*b as i64)),
        (Value::Int(i), ColumnType::Text) if engine == Engine::InnoDb => {
            Ok(Value::Text(i.to_string()))
        }
        _ => Err(errors::wrong_type(
            engine,
            &column.name,
            column.ty.name(),
            &v.to_string(),
        )),
    }
}
