//! The SQL subset: parsed with `sqlparser`, turned into a small plan the engine executes.
//!
//! Parsing is the expensive part of a statement, so [`PlanCache`] keeps one plan per distinct
//! statement text; parameters (`$1` on PostgreSQL, `?` on MariaDB) are bound at execution.
//! Anything outside the subset is a clear `0A000` / `1235` error naming what is not supported,
//! never a panic and never silently ignored.
//!
//! MariaDB's `LOCK IN SHARE MODE` parses in no `sqlparser` dialect, so for MariaDB profiles the
//! token stream is rewritten to the equivalent `FOR SHARE` lock clause before parsing
//! ([`rewrite_lock_in_share_mode`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlparser::ast as sql;
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::profile::{errors, Engine, Isolation};
use super::value::{DbError, Value};

/// A parsed statement, ready to bind and execute.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The statement.
    pub stmt: Stmt,
    /// How many parameters it takes.
    pub param_count: usize,
}

/// The statements of the subset.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Stmt {
    CreateTable(CreateTable),
    CreateIndex(CreateIndex),
    Select(Select),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Begin,
    Commit,
    Rollback,
    /// MariaDB's `START TRANSACTION WITH CONSISTENT SNAPSHOT`: a transaction whose read view
    /// is taken at once (in repeatable read).
    BeginWithSnapshot,
    Savepoint(String),
    RollbackTo(String),
    Release(String),
    /// `SET [SESSION] TRANSACTION ISOLATION LEVEL ...`.
    SetIsolation {
        level: Isolation,
        session: bool,
    },
    /// `SET [LOCAL] name = value`.
    Set {
        name: String,
        value: Expr,
        local: bool,
    },
}

impl Stmt {
    /// Whether the statement reads or writes table rows (and so runs inside a transaction).
    pub fn is_dml(&self) -> bool {
        matches!(
            self,
            Stmt::Select(_) | Stmt::Insert(_) | Stmt::Update(_) | Stmt::Delete(_)
        )
    }

    /// The table a DML statement reads or writes (`None` for a SELECT without FROM).
    pub fn table(&self) -> Option<&str> {
        match self {
            Stmt::Select(s) => s.table.as_deref(),
            Stmt::Insert(i) => Some(&i.table),
            Stmt::Update(u) => Some(&u.table),
            Stmt::Delete(d) => Some(&d.table),
            _ => None,
        }
    }
}

/// An expression over the columns of one table.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Expr {
    Column(String),
    Param(usize),
    Lit(Value),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary(Box<Expr>, BinOp, Box<Expr>),
    IsNull(Box<Expr>, bool),
    InList(Box<Expr>, Vec<Expr>, bool),
    /// An aggregate; only at the top of a projection item.
    Agg(AggFn, Option<Box<Expr>>),
    /// A session setting: `current_setting('app.tenant_id')` (PostgreSQL, text) or a user
    /// variable `@tenant_id` (MariaDB); NULL if unset.
    Setting(String),
    /// `expr::bigint` / `CAST(expr AS ...)` to an integer or text.
    Cast(Box<Expr>, ColumnType),
}

/// Binary operators of the subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum BinOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
    Plus,
    Minus,
    Mul,
    Div,
    Mod,
}

/// Aggregate functions of the subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum AggFn {
    CountStar,
    Count,
    Sum,
    Min,
    Max,
}

/// One item of a projection or `RETURNING` list.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum SelectItem {
    Star,
    Expr { expr: Expr, name: String },
}

/// The row lock a `SELECT` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowLockClause {
    /// `FOR UPDATE` (exclusive) or `FOR SHARE` / `LOCK IN SHARE MODE`.
    pub exclusive: bool,
    /// What to do about a row locked by another transaction.
    pub wait: LockWaitPolicy,
}

/// `NOWAIT`, `SKIP LOCKED`, or the default of waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum LockWaitPolicy {
    Wait,
    NoWait,
    SkipLocked,
}

#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct Select {
    pub table: Option<String>,
    pub items: Vec<SelectItem>,
    pub filter: Option<Expr>,
    pub order_by: Vec<(Expr, bool)>,
    pub limit: Option<Expr>,
    pub offset: Option<Expr>,
    pub lock: Option<RowLockClause>,
}

/// A value of an `INSERT` row: an expression or `DEFAULT`.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum InsertValue {
    Default,
    Expr(Expr),
}

#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct Insert {
    pub table: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<InsertValue>>,
    /// `ON CONFLICT DO NOTHING` / `INSERT IGNORE`.
    pub ignore_duplicates: bool,
    pub returning: Option<Vec<SelectItem>>,
}

#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct Update {
    pub table: String,
    pub sets: Vec<(String, Expr)>,
    pub filter: Option<Expr>,
    pub returning: Option<Vec<SelectItem>>,
}

#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct Delete {
    pub table: String,
    pub filter: Option<Expr>,
    pub returning: Option<Vec<SelectItem>>,
}

/// Column types of the subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ColumnType {
    Int,
    Text,
    Bool,
}

impl ColumnType {
    /// The type's name in error messages.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Int => "integer",
            ColumnType::Text => "text",
            ColumnType::Bool => "boolean",
        }
    }

    /// MariaDB's implicit default of the type (what `INSERT IGNORE` stores for a NULL in a
    /// NOT NULL column): 0, the empty string, false.
    pub fn implicit_default(self) -> Value {
        match self {
            ColumnType::Int => Value::Int(0),
            ColumnType::Text => Value::Text(String::new()),
            ColumnType::Bool => Value::Bool(false),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct ColumnSpec {
    pub name: String,
    pub ty: ColumnType,
    pub not_null: bool,
    pub default: Option<Value>,
    pub auto_increment: bool,
}

#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct CreateTable {
    pub name: String,
    pub columns: Vec<ColumnSpec>,
    pub primary_key: Vec<String>,
    /// Unique constraints: optional name, columns.
    pub uniques: Vec<(Option<String>, Vec<String>)>,
    /// Plain secondary indexes (MySQL `KEY name (cols)`).
    pub indexes: Vec<(Option<String>, Vec<String>)>,
    pub if_not_exists: bool,
}

#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct CreateIndex {
    pub name: Option<String>,
    pub table: String,
    pub columns: Vec<String>,
    pub unique: bool,
    pub if_not_exists: bool,
}

/// One plan per distinct statement text and engine.
///
/// Plans are found by a hash of the text first: statement texts share long prefixes
/// (`select id, tenant_id, ... from`), so ordering them by the text compared those prefixes
/// again at every level of the tree on every statement.
#[derive(Debug, Default, Clone)]
pub struct PlanCache {
    /// Plans by the text's [`PlanCache::text_hash`], then by the text.
    plans: BTreeMap<u64, Vec<(String, Arc<Plan>)>>,
    /// How many plans `plans` holds.
    len: usize,
}

impl PlanCache {
    /// Upper bound on cached plans; model code uses a few dozen distinct statements, so the
    /// bound only protects against statements that inline their values.
    pub const CAPACITY: usize = 4096;

    /// FNV-1a over the text: stable and cheap; a collision only shares a bucket.
    fn text_hash(text: &str) -> u64 {
        text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// The plan for `text`, parsed on first use.
    pub fn get(&mut self, engine: Engine, text: &str) -> Result<Arc<Plan>, DbError> {
        let hash = Self::text_hash(text);
        if let Some(bucket) = self.plans.get(&hash) {
            if let Some((_, plan)) = bucket.iter().find(|(t, _)| t == text) {
                return Ok(plan.clone());
            }
        }
        let plan = Arc::new(parse(engine, text)?);
        if self.len >= Self::CAPACITY {
            // Deterministic eviction: drop everything; reparsing is only a cost.
            self.plans.clear();
            self.len = 0;
        }
        self.plans
            .entry(hash)
            .or_default()
            .push((text.to_string(), plan.clone()));
        self.len += 1;
        assert!(self.len <= Self::CAPACITY);
        Ok(plan)
    }
}

/// Parses one statement of the subset.
pub fn parse(engine: Engine, text: &str) -> Result<Plan, DbError> {
    let dialect: Box<dyn Dialect> = match engine {
        Engine::Postgres => Box::new(PostgreSqlDialect {}),
        Engine::InnoDb => Box::new(MySqlDialect {}),
    };
    let tokens = Tokenizer::new(&*dialect, text)
        .tokenize()
        .map_err(|e| errors::syntax(engine, &e.to_string()))?;
    let tokens = match engine {
        Engine::InnoDb => {
            let words = words(&tokens);
            if words.windows(2).any(|w| w == ["FOR", "SHARE"]) {
                // MariaDB 10.11 knows only LOCK IN SHARE MODE (measured).
                return Err(errors::syntax(engine, "near 'SHARE'"));
            }
            if words == ["START", "TRANSACTION", "WITH", "CONSISTENT", "SNAPSHOT"] {
                return Ok(Plan {
                    stmt: Stmt::BeginWithSnapshot,
                    param_count: 0,
                });
            }
            rewrite_lock_in_share_mode(tokens)
        }
        Engine::Postgres => tokens,
    };
    let statements = Parser::new(&*dialect)
        .with_tokens(tokens)
        .parse_statements()
        .map_err(|e| errors::syntax(engine, &e.to_string()))?;
    let statement = match statements.as_slice() {
        [one] => one,
        [] => return Err(errors::syntax(engine, "empty statement")),
        _ => {
            return Err(errors::unsupported(
                engine,
                "several statements in one call",
            ))
        }
    };
    let mut converter = Converter {
        engine,
        param_count: 0,
    };
    let stmt = converter.statement(statement)?;
    Ok(Plan {
        stmt,
        param_count: converter.param_count,
    })
}

/// The unquoted words and symbols of a token stream, upper-cased, without whitespace and a
/// final `;` (to recognise keyword sequences that `sqlparser` does not know).
fn words(tokens: &[Token]) -> Vec<String> {
    let mut out: Vec<String> = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .map(|t| match t {
            Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
            other => other.to_string(),
        })
        .collect();
    if out.last().is_some_and(|w| w == ";") {
        out.pop();
    }
    out
}

/// Rewrites MariaDB's `LOCK IN SHARE MODE` to `FOR SHARE`, which every dialect parses into the
/// same lock clause. Only that exact keyword sequence (outside strings, which are single
/// tokens) is touched.
pub fn rewrite_lock_in_share_mode(tokens: Vec<Token>) -> Vec<Token> {
    let is_word = |token: &Token, word: &str| match token {
        Token::Word(w) => w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word),
        _ => false,
    };
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        if is_word(&tokens[i], "LOCK") {
            // The next three non-whitespace tokens must be IN SHARE MODE.
            let mut words = Vec::new();
            let mut j = i + 1;
            while j < tokens.len() && words.len() < 3 {
                if !matches!(tokens[j], Token::Whitespace(_)) {
                    words.push(j);
                }
                j += 1;
            }
            if words.len() == 3
                && is_word(&tokens[words[0]], "IN")
                && is_word(&tokens[words[1]], "SHARE")
                && is_word(&tokens[words[2]], "MODE")
            {
                out.push(Token::make_keyword("FOR"));
                out.push(Token::Whitespace(sqlparser::tokenizer::Whitespace::Space));
                out.push(Token::make_keyword("SHARE"));
                i = j;
                continue;
            }
        }
        out.push(tokens[i].clone());
        i += 1;
    }
    out
}

struct Converter {
    engine: Engine,
    param_count: usize,
}

fn ident_name(ident: &sql::Ident) -> String {
    // Unquoted identifiers fold to lower case in PostgreSQL; the subset treats names
    // case-insensitively on both engines.
    ident.value.to_ascii_lowercase()
}

impl Converter {
    fn unsupported(&self, what: impl AsRef<str>) -> DbError {
        errors::unsupported(self.engine, what.as_ref())
    }

    fn object_name(&self, name: &sql::ObjectName) -> Result<String, DbError> {
        match name.0.as_slice() {
            [part] => part
                .as_ident()
                .map(ident_name)
                .ok_or_else(|| self.unsupported(format!("name {name}"))),
            _ => Err(self.unsupported(format!("qualified name {name}"))),
        }
    }

    fn statement(&mut self, statement: &sql::Statement) -> Result<Stmt, DbError> {
        use sql::Statement as S;
        match statement {
            S::Query(query) => Ok(Stmt::Select(self.query(query)?)),
            S::Insert(insert) => self.insert(insert),
            S::Update(update) => self.update(update),
            S::Delete(delete) => self.delete(delete),
            S::CreateTable(create) => self.create_table(create),
            S::CreateIndex(create) => self.create_index(create),
            S::StartTransaction { modes, .. } => {
                // (`WITH CONSISTENT SNAPSHOT` is recognised before parsing, see `parse`.)
                if modes.is_empty() {
                    Ok(Stmt::Begin)
                } else {
                    Err(self.unsupported("transaction modes on BEGIN"))
                }
            }
            S::Commit { chain: false, .. } => Ok(Stmt::Commit),
            S::Rollback {
                chain: false,
                savepoint,
            } => Ok(match savepoint {
                None => Stmt::Rollback,
                Some(name) => Stmt::RollbackTo(ident_name(name)),
            }),
            S::Savepoint { name } => Ok(Stmt::Savepoint(ident_name(name))),
            S::ReleaseSavepoint { name } => Ok(Stmt::Release(ident_name(name))),
            S::Set(set) => self.set(set),
            other => {
                let text = other.to_string();
                let head: String = text
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                Err(self.unsupported(format!("statement {head}")))
            }
        }
    }

    fn set(&mut self, set: &sql::Set) -> Result<Stmt, DbError> {
        match set {
            sql::Set::SetTransaction { modes, session, .. } => {
                let mut level = None;
                for mode in modes {
                    match mode {
                        sql::TransactionMode::IsolationLevel(l) => {
                            level = Some(match l {
                                sql::TransactionIsolationLevel::ReadUncommitted => {
                                    Isolation::ReadUncommitted
                                }
                                sql::TransactionIsolationLevel::ReadCommitted => {
                                    Isolation::ReadCommitted
                                }
                                sql::TransactionIsolationLevel::RepeatableRead => {
                                    Isolation::RepeatableRead
                                }
                                sql::TransactionIsolationLevel::Serializable => {
                                    Isolation::Serializable
                                }
                                other => {
                                    return Err(self.unsupported(format!("isolation level {other}")))
                                }
                            })
                        }
                        other => return Err(self.unsupported(format!("transaction mode {other}"))),
                    }
                }
                let level =
                    level.ok_or_else(|| self.unsupported("SET TRANSACTION without a level"))?;
                Ok(Stmt::SetIsolation {
                    level,
                    session: *session,
                })
            }
            sql::Set::SingleAssignment {
                scope,
                variable,
                values,
                ..
            } => {
                let name = variable
                    .0
                    .iter()
                    .map(|part| part.as_ident().map(ident_name).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(".");
                let local = match scope {
                    None | Some(sql::ContextModifier::Session) => false,
                    Some(sql::ContextModifier::Local) => true,
                    Some(other) => return Err(self.unsupported(format!("SET {other}"))),
                };
                let [value] = values.as_slice() else {
                    return Err(self.unsupported("SET with several values"));
                };
                let value = match value {
                    // `SET lock_timeout = 200ms` style bare words are not valid SQL anyway;
                    // an identifier value is taken as its text (`SET x = DEFAULT`, `on`).
                    sql::Expr::Identifier(ident) => Expr::Lit(Value::Text(ident.value.clone())),
                    other => self.expr(other)?,
                };
                Ok(Stmt::Set { name, value, local })
            }
            other => Err(self.unsupported(format!("{other}"))),
        }
    }

    fn table_factor(&self, from: &[sql::TableWithJoins]) -> Result<Option<String>, DbError> {
        match from {
            [] => Ok(None),
            [one] => {
                if !one.joins.is_empty() {
                    return Err(self.unsupported("JOIN"));
                }
                match &one.relation {
                    sql::TableFactor::Table {
                        name, args: None, ..
                    } => Ok(Some(self.object_name(name)?)),
                    other => Err(self.unsupported(format!("FROM {other}"))),
                }
            }
            _ => Err(self.unsupported("several tables in FROM")),
        }
    }

    fn query(&mut self, query: &sql::Query) -> Result<Select, DbError> {
        if query.with.is_some() {
            return Err(self.unsupported("WITH"));
        }
        if query.fetch.is_some() {
            return Err(self.unsupported("FETCH"));
        }
        let sql::SetExpr::Select(select) = query.body.as_ref() else {
            return Err(self.unsupported("set operations and subqueries"));
        };
        if select.distinct.is_some() {
            return Err(self.unsupported("DISTINCT"));
        }
        if select.having.is_some() {
            return Err(self.unsupported("HAVING"));
        }
        match &select.group_by {
            sql::GroupByExpr::Expressions(exprs, modifiers)
                if exprs.is_empty() && modifiers.is_empty() => {}
            _ => return Err(self.unsupported("GROUP BY")),
        }
        let table = self.table_factor(&select.from)?;
        let mut items = Vec::new();
        for item in &select.projection {
            items.push(self.select_item(item, true)?);
        }
        let filter = select
            .selection
            .as_ref()
            .map(|e| self.expr(e))
            .transpose()?;
        let mut order_by = Vec::new();
        if let Some(order) = &query.order_by {
            match &order.kind {
                sql::OrderByKind::Expressions(exprs) => {
                    for e in exprs {
                        let desc = match e.options.sort {
                            None | Some(sql::OrderBySort::Asc) => false,
                            Some(sql::OrderBySort::Desc) => true,
                            Some(_) => return Err(self.unsupported("ORDER BY ... USING")),
                        };
                        if e.options.nulls_first.is_some() {
                            return Err(self.unsupported("NULLS FIRST / NULLS LAST"));
                        }
                        order_by.push((self.expr(&e.expr)?, desc));
                    }
                }
                sql::OrderByKind::All(_) => return Err(self.unsupported("ORDER BY ALL")),
            }
        }
        let (limit, offset) = match &query.limit_clause {
            None => (None, None),
            Some(sql::LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            }) => {
                if !limit_by.is_empty() {
                    return Err(self.unsupported("LIMIT BY"));
                }
                let limit = limit.as_ref().map(|e| self.expr(e)).transpose()?;
                let offset = offset.as_ref().map(|o| self.expr(&o.value)).transpose()?;
                (limit, offset)
            }
            Some(sql::LimitClause::OffsetCommaLimit { offset, limit }) => {
                if self.engine == Engine::Postgres {
                    return Err(errors::syntax(
                        self.engine,
                        "LIMIT #,# syntax is not supported",
                    ));
                }
                let offset = self.expr(offset)?;
                let limit = self.expr(limit)?;
                (Some(limit), Some(offset))
            }
        };
        let lock = match query.locks.as_slice() {
            [] => None,
            [clause] => {
                if let Some(of) = &clause.of {
                    // PostgreSQL locks the rows of the tables named; with one table in FROM
                    // that is the plain lock clause. MariaDB has no OF (measured: 1064).
                    if self.engine == Engine::InnoDb {
                        return Err(errors::syntax(self.engine, "near 'of'"));
                    }
                    if Some(self.object_name(of)?) != table {
                        return Err(self.unsupported(format!("FOR UPDATE OF {of}")));
                    }
                }
                Some(RowLockClause {
                    exclusive: matches!(clause.lock_type, sql::LockType::Update),
                    wait: match clause.nonblock {
                        None => LockWaitPolicy::Wait,
                        Some(sql::NonBlock::Nowait) => LockWaitPolicy::NoWait,
                        Some(sql::NonBlock::SkipLocked) => LockWaitPolicy::SkipLocked,
                    },
                })
            }
            _ => return Err(self.unsupported("several lock clauses")),
        };
        let aggregate = items.iter().any(|i| {
            matches!(
                i,
                SelectItem::Expr {
                    expr: Expr::Agg(..),
                    ..
                }
            )
        });
        if lock.is_some() && aggregate && self.engine == Engine::Postgres {
            return Err(DbError::new(
                "0A000",
                "FOR UPDATE is not allowed with aggregate functions",
            ));
        }
        // A lock clause without FROM locks nothing; both engines accept it (measured).
        let lock = lock.filter(|_| table.is_some());
        Ok(Select {
            table,
            items,
            filter,
            order_by,
            limit,
            offset,
            lock,
        })
    }

    fn select_item(
        &mut self,
        item: &sql::SelectItem,
        allow_agg: bool,
    ) -> Result<SelectItem, DbError> {
        match item {
            sql::SelectItem::Wildcard(options) => {
                if options.opt_exclude.is_some() || options.opt_except.is_some() {
                    return Err(self.unsupported("wildcard options"));
                }
                Ok(SelectItem::Star)
            }
            sql::SelectItem::UnnamedExpr(e) => {
                let expr = self.expr_top(e, allow_agg)?;
                let name = match (&expr, self.engine) {
                    (Expr::Column(c), _) => c.clone(),
                    (Expr::Agg(AggFn::CountStar | AggFn::Count, _), Engine::Postgres) => {
                        "count".to_string()
                    }
                    (Expr::Agg(AggFn::Sum, _), Engine::Postgres) => "sum".to_string(),
                    (Expr::Agg(AggFn::Min, _), Engine::Postgres) => "min".to_string(),
                    (Expr::Agg(AggFn::Max, _), Engine::Postgres) => "max".to_string(),
                    (_, Engine::Postgres) => "?column?".to_string(),
                    (_, Engine::InnoDb) => e.to_string(),
                };
                Ok(SelectItem::Expr { expr, name })
            }
            sql::SelectItem::ExprWithAlias { expr, alias } => Ok(SelectItem::Expr {
                expr: self.expr_top(expr, allow_agg)?,
                name: ident_name(alias),
            }),
            other => Err(self.unsupported(format!("select item {other}"))),
        }
    }

    /// A projection item: an aggregate may appear at the top only.
    fn expr_top(&mut self, e: &sql::Expr, allow_agg: bool) -> Result<Expr, DbError> {
        if let sql::Expr::Function(f) = e {
            let name = self.object_name(&f.name)?;
            if matches!(name.as_str(), "count" | "sum" | "min" | "max") {
                if !allow_agg {
                    return Err(self.unsupported("aggregates in RETURNING"));
                }
                return self.aggregate(&name, f);
            }
        }
        self.expr(e)
    }

    fn aggregate(&mut self, name: &str, f: &sql::Function) -> Result<Expr, DbError> {
        if f.filter.is_some() || f.over.is_some() || !f.within_group.is_empty() {
            return Err(self.unsupported(format!("{name} with FILTER/OVER")));
        }
        let sql::FunctionArguments::List(list) = &f.args else {
            return Err(self.unsupported(format!("{name} without an argument list")));
        };
        if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
            return Err(self.unsupported(format!("{name}(DISTINCT ...)")));
        }
        let [arg] = list.args.as_slice() else {
            return Err(self.unsupported(format!("{name} with several arguments")));
        };
        let arg = match arg {
            sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Wildcard) => None,
            sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Expr(e)) => {
                Some(Box::new(self.expr(e)?))
            }
            other => return Err(self.unsupported(format!("argument {other}"))),
        };
        let func = match (name, &arg) {
            ("count", None) => AggFn::CountStar,
            ("count", Some(_)) => AggFn::Count,
            ("sum", Some(_)) => AggFn::Sum,
            ("min", Some(_)) => AggFn::Min,
            ("max", Some(_)) => AggFn::Max,
            _ => return Err(self.unsupported(format!("{name}(*)"))),
        };
        Ok(Expr::Agg(func, arg))
    }

    fn expr(&mut self, e: &sql::Expr) -> Result<Expr, DbError> {
        use sql::Expr as E;
        Ok(match e {
            E::Identifier(ident)
                if self.engine == Engine::InnoDb && ident.value.starts_with('@') =>
            {
                Expr::Setting(ident.value.to_ascii_lowercase())
            }
            E::Identifier(ident) => Expr::Column(ident_name(ident)),
            E::Cast {
                expr,
                data_type,
                kind,
                ..
            } => {
                if self.engine == Engine::InnoDb && *kind == sql::CastKind::DoubleColon {
                    // `::` is PostgreSQL's; MariaDB has only CAST(... AS ...) (measured).
                    return Err(errors::syntax(self.engine, "near '::'"));
                }
                let inner = self.expr(expr)?;
                let ty = match data_type {
                    sql::DataType::Int(_)
                    | sql::DataType::Integer(_)
                    | sql::DataType::BigInt(_)
                    | sql::DataType::Int8(_)
                    | sql::DataType::Int4(_)
                    | sql::DataType::Signed
                    | sql::DataType::SignedInteger => ColumnType::Int,
                    sql::DataType::Text | sql::DataType::Varchar(_) | sql::DataType::Char(_) => {
                        ColumnType::Text
                    }
                    other => return Err(self.unsupported(format!("cast to {other}"))),
                };
                Expr::Cast(Box::new(inner), ty)
            }
            E::CompoundIdentifier(parts) => match parts.as_slice() {
                [_table, column] => Expr::Column(ident_name(column)),
                _ => return Err(self.unsupported(format!("name {e}"))),
            },
            E::Value(v) => self.value(&v.value)?,
            E::Nested(inner) => self.expr(inner)?,
            E::UnaryOp { op, expr } => {
                let inner = self.expr(expr)?;
                match op {
                    sql::UnaryOperator::Not => Expr::Not(Box::new(inner)),
                    sql::UnaryOperator::Minus => match inner {
                        Expr::Lit(Value::Int(i)) => Expr::Lit(Value::Int(-i)),
                        other => Expr::Neg(Box::new(other)),
                    },
                    sql::UnaryOperator::Plus => inner,
                    other => return Err(self.unsupported(format!("operator {other}"))),
                }
            }
            E::BinaryOp { left, op, right } => {
                let op = match op {
                    sql::BinaryOperator::Eq => BinOp::Eq,
                    sql::BinaryOperator::NotEq => BinOp::NotEq,
                    sql::BinaryOperator::Lt => BinOp::Lt,
                    sql::BinaryOperator::LtEq => BinOp::LtEq,
                    sql::BinaryOperator::Gt => BinOp::Gt,
                    sql::BinaryOperator::GtEq => BinOp::GtEq,
                    sql::BinaryOperator::And => BinOp::And,
                    sql::BinaryOperator::Or => BinOp::Or,
                    sql::BinaryOperator::Plus => BinOp::Plus,
                    sql::BinaryOperator::Minus => BinOp::Minus,
                    sql::BinaryOperator::Multiply => BinOp::Mul,
                    sql::BinaryOperator::Divide => BinOp::Div,
                    sql::BinaryOperator::Modulo => BinOp::Mod,
                    other => return Err(self.unsupported(format!("operator {other}"))),
                };
                let left = self.expr(left)?;
                let right = self.expr(right)?;
                Expr::Binary(Box::new(left), op, Box::new(right))
            }
            E::IsNull(inner) => Expr::IsNull(Box::new(self.expr(inner)?), false),
            E::IsNotNull(inner) => Expr::IsNull(Box::new(self.expr(inner)?), true),
            E::In {
                expr,
                target: sql::InTarget::List(list),
                negated,
                ..
            } => {
                let expr = self.expr(expr)?;
                let mut items = Vec::with_capacity(list.len());
                for item in list {
                    items.push(self.expr(item)?);
                }
                Expr::InList(Box::new(expr), items, *negated)
            }
            E::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let value = self.expr(expr)?;
                let low = self.expr(low)?;
                let high = self.expr(high)?;
                let between = Expr::Binary(
                    Box::new(Expr::Binary(
                        Box::new(value.clone()),
                        BinOp::GtEq,
                        Box::new(low),
                    )),
                    BinOp::And,
                    Box::new(Expr::Binary(Box::new(value), BinOp::LtEq, Box::new(high))),
                );
                if *negated {
                    Expr::Not(Box::new(between))
                } else {
                    between
                }
            }
            E::Function(f) => {
                let name = self.object_name(&f.name)?;
                if name == "current_setting" && self.engine == Engine::Postgres {
                    if let sql::FunctionArguments::List(list) = &f.args {
                        if let [sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Expr(
                            sql::Expr::Value(v),
                        ))] = list.args.as_slice()
                        {
                            if let sql::Value::SingleQuotedString(setting) = &v.value {
                                return Ok(Expr::Setting(setting.to_ascii_lowercase()));
                            }
                        }
                    }
                    return Err(
                        self.unsupported("current_setting with anything but one string literal")
                    );
                }
                if matches!(name.as_str(), "count" | "sum" | "min" | "max") {
                    return Err(self.unsupported(format!("aggregate {name} inside an expression")));
                }
                return Err(self.unsupported(format!("function {name}")));
            }
            other => return Err(self.unsupported(format!("expression {other}"))),
        })
    }

    fn value(&mut self, v: &sql::Value) -> Result<Expr, DbError> {
        Ok(match v {
            sql::Value::Number(text, _) => match text.parse::<i64>() {
                Ok(i) => Expr::Lit(Value::Int(i)),
                Err(_) => return Err(self.unsupported(format!("numeric literal {text}"))),
            },
            sql::Value::SingleQuotedString(s) => Expr::Lit(Value::Text(s.clone())),
            sql::Value::DoubleQuotedString(s) if self.engine == Engine::InnoDb => {
                Expr::Lit(Value::Text(s.clone()))
            }
            sql::Value::Boolean(b) => Expr::Lit(Value::Bool(*b)),
            sql::Value::Null => Expr::Lit(Value::Null),
            sql::Value::Placeholder(p) => {
                let index = match (self.engine, p.as_str()) {
                    (Engine::InnoDb, "?") => {
                        self.param_count += 1;
                        self.param_count - 1
                    }
                    (Engine::Postgres, p) if p.starts_with('$') => {
                        let n: usize = p[1..].parse().map_err(|_| {
                            errors::syntax(self.engine, &format!("at or near \"{p}\""))
                        })?;
                        if n == 0 {
                            return Err(errors::syntax(self.engine, "parameter $0"));
                        }
                        self.param_count = self.param_count.max(n);
                        n - 1
                    }
                    _ => return Err(errors::syntax(self.engine, &format!("placeholder {p}"))),
                };
                Expr::Param(index)
            }
            other => return Err(self.unsupported(format!("literal {other}"))),
        })
    }

    fn returning(
        &mut self,
        returning: &Option<Vec<sql::SelectItem>>,
    ) -> Result<Option<Vec<SelectItem>>, DbError> {
        let Some(items) = returning else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for item in items {
            out.push(self.select_item(item, false)?);
        }
        Ok(Some(out))
    }

    fn insert(&mut self, insert: &sql::Insert) -> Result<Stmt, DbError> {
        let sql::TableObject::TableName(name) = &insert.table else {
            return Err(self.unsupported("INSERT INTO a table function"));
        };
        let table = self.object_name(name)?;
        if insert.or.is_some() || insert.replace_into || !insert.assignments.is_empty() {
            return Err(self.unsupported("INSERT OR / REPLACE / SET"));
        }
        let mut columns = Vec::new();
        for column in &insert.columns {
            columns.push(self.object_name(column)?);
        }
        if insert.on.is_some() && self.engine == Engine::InnoDb {
            // MariaDB has ON DUPLICATE KEY UPDATE, not ON CONFLICT (measured: 1064).
            return Err(errors::syntax(self.engine, "near 'on conflict'"));
        }
        let ignore_duplicates = match &insert.on {
            None => insert.ignore,
            Some(sql::OnInsert::OnConflict(sql::OnConflict {
                conflict_target: None,
                action: sql::OnConflictAction::DoNothing,
            })) => true,
            Some(sql::OnInsert::OnConflict(sql::OnConflict {
                conflict_target: Some(_),
                action: sql::OnConflictAction::DoNothing,
            })) => {
                // Any unique violation is the conflict; a target only narrows which one, and
                // the model's tables have one unique key per idempotency concern.
                true
            }
            Some(other) => return Err(self.unsupported(format!("{other}"))),
        };
        let Some(source) = &insert.source else {
            return Err(self.unsupported("INSERT without VALUES"));
        };
        let sql::SetExpr::Values(values) = source.body.as_ref() else {
            return Err(self.unsupported("INSERT ... SELECT"));
        };
        let mut rows = Vec::new();
        for row in &values.rows {
            let mut out = Vec::new();
            for e in &row.content {
                match e {
                    sql::Expr::Identifier(ident)
                        if ident.quote_style.is_none()
                            && ident.value.eq_ignore_ascii_case("default") =>
                    {
                        out.push(InsertValue::Default)
                    }
                    other => out.push(InsertValue::Expr(self.expr(other)?)),
                }
            }
            rows.push(out);
        }
        let returning = self.returning(&insert.returning)?;
        Ok(Stmt::Insert(Insert {
            table,
            columns,
            rows,
            ignore_duplicates,
            returning,
        }))
    }

    fn update(&mut self, update: &sql::Update) -> Result<Stmt, DbError> {
        if update.from.is_some() || update.limit.is_some() || !update.order_by.is_empty() {
            return Err(self.unsupported("UPDATE with FROM / ORDER BY / LIMIT"));
        }
        let table = self
            .table_factor(std::slice::from_ref(&update.table))?
            .expect("an UPDATE names its table");
        let mut sets = Vec::new();
        for assignment in &update.assignments {
            let sql::AssignmentTarget::ColumnName(column) = &assignment.target else {
                return Err(self.unsupported("tuple assignment"));
            };
            let column = match column.0.last().and_then(|p| p.as_ident()) {
                Some(ident) => ident_name(ident),
                None => return Err(self.unsupported(format!("column {column}"))),
            };
            sets.push((column, self.expr(&assignment.value)?));
        }
        let filter = update
            .selection
            .as_ref()
            .map(|e| self.expr(e))
            .transpose()?;
        if update.returning.is_some() && self.engine == Engine::InnoDb {
            // MariaDB 10.11 has INSERT ... RETURNING and DELETE ... RETURNING, not UPDATE.
            return Err(errors::syntax(self.engine, "near 'returning'"));
        }
        let returning = self.returning(&update.returning)?;
        Ok(Stmt::Update(Update {
            table,
            sets,
            filter,
            returning,
        }))
    }

    fn delete(&mut self, delete: &sql::Delete) -> Result<Stmt, DbError> {
        if !delete.tables.is_empty()
            || delete.using.is_some()
            || delete.limit.is_some()
            || !delete.order_by.is_empty()
        {
            return Err(self.unsupported("multi-table DELETE / ORDER BY / LIMIT"));
        }
        let from = match &delete.from {
            sql::FromTable::WithFromKeyword(from) | sql::FromTable::WithoutKeyword(from) => from,
        };
        let table = self
            .table_factor(from)?
            .ok_or_else(|| errors::syntax(self.engine, "DELETE without a table"))?;
        let filter = delete
            .selection
            .as_ref()
            .map(|e| self.expr(e))
            .transpose()?;
        let returning = self.returning(&delete.returning)?;
        Ok(Stmt::Delete(Delete {
            table,
            filter,
            returning,
        }))
    }

    fn index_columns(&self, columns: &[sql::IndexColumn]) -> Result<Vec<String>, DbError> {
        columns
            .iter()
            .map(|c| match &c.column.expr {
                sql::Expr::Identifier(ident) => Ok(ident_name(ident)),
                other => Err(self.unsupported(format!("index on expression {other}"))),
            })
            .collect()
    }

    fn column_type(&self, ty: &sql::DataType) -> Result<(ColumnType, bool), DbError> {
        use sql::DataType as T;
        Ok(match ty {
            T::Int(_)
            | T::Integer(_)
            | T::BigInt(_)
            | T::SmallInt(_)
            | T::TinyInt(_)
            | T::Int4(_)
            | T::Int8(_)
            | T::Int2(_)
            | T::MediumInt(_) => (ColumnType::Int, false),
            T::Text | T::Varchar(_) | T::Char(_) | T::CharVarying(_) | T::String(_) => {
                (ColumnType::Text, false)
            }
            T::Boolean | T::Bool => (ColumnType::Bool, false),
            T::Custom(name, modifiers) if modifiers.is_empty() => {
                match self.object_name(name)?.as_str() {
                    "serial" | "bigserial" | "serial4" | "serial8" => (ColumnType::Int, true),
                    other => return Err(self.unsupported(format!("column type {other}"))),
                }
            }
            other => return Err(self.unsupported(format!("column type {other}"))),
        })
    }

    fn create_table(&mut self, create: &sql::CreateTable) -> Result<Stmt, DbError> {
        if create.query.is_some() || create.like.is_some() {
            return Err(self.unsupported("CREATE TABLE AS / LIKE"));
        }
        let name = self.object_name(&create.name)?;
        let mut columns = Vec::new();
        let mut primary_key = Vec::new();
        let mut uniques = Vec::new();
        let mut indexes = Vec::new();
        for column in &create.columns {
            let column_name = ident_name(&column.name);
            let (ty, serial) = self.column_type(&column.data_type)?;
            let mut spec = ColumnSpec {
                name: column_name.clone(),
                ty,
                not_null: serial,
                default: None,
                auto_increment: serial,
            };
            for option in &column.options {
                match &option.option {
                    sql::ColumnOption::Null => spec.not_null = false,
                    sql::ColumnOption::NotNull => spec.not_null = true,
                    sql::ColumnOption::Default(e) => match self.expr(e)? {
                        Expr::Lit(v) => spec.default = Some(v),
                        _ => return Err(self.unsupported("non-constant DEFAULT")),
                    },
                    sql::ColumnOption::PrimaryKey(_) => {
                        spec.not_null = true;
                        primary_key = vec![column_name.clone()];
                    }
                    sql::ColumnOption::Unique(_) => {
                        uniques.push((None, vec![column_name.clone()]));
                    }
                    sql::ColumnOption::DialectSpecific(tokens)
                        if tokens.iter().any(|t| {
                            matches!(t, Token::Word(w) if w.value.eq_ignore_ascii_case("auto_increment"))
                        }) =>
                    {
                        spec.auto_increment = true;
                        spec.not_null = true;
                    }
                    other => return Err(self.unsupported(format!("column option {other}"))),
                }
            }
            if spec.auto_increment && spec.ty != ColumnType::Int {
                return Err(self.unsupported("AUTO_INCREMENT on a non-integer column"));
            }
            columns.push(spec);
        }
        for constraint in &create.constraints {
            match constraint {
                sql::TableConstraint::PrimaryKey(pk) => {
                    primary_key = self.index_columns(&pk.columns)?;
                }
                sql::TableConstraint::Unique(unique) => {
                    let name = unique
                        .name
                        .as_ref()
                        .or(unique.index_name.as_ref())
                        .map(ident_name);
                    uniques.push((name, self.index_columns(&unique.columns)?));
                }
                sql::TableConstraint::Index(index) => {
                    let name = index.name.as_ref().map(ident_name);
                    indexes.push((name, self.index_columns(&index.columns)?));
                }
                other => return Err(self.unsupported(format!("constraint {other}"))),
            }
        }
        Ok(Stmt::CreateTable(CreateTable {
            name,
            columns,
            primary_key,
            uniques,
            indexes,
            if_not_exists: create.if_not_exists,
        }))
    }

    fn create_index(&mut self, create: &sql::CreateIndex) -> Result<Stmt, DbError> {
        if create.predicate.is_some() || !create.include.is_empty() {
            return Err(self.unsupported("partial or covering index"));
        }
        let name = create
            .name
            .as_ref()
            .map(|n| self.object_name(n))
            .transpose()?;
        Ok(Stmt::CreateIndex(CreateIndex {
            name,
            table: self.object_name(&create.table_name)?,
            columns: self.index_columns(&create.columns)?,
            unique: create.unique,
            if_not_exists: create.if_not_exists,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_in_share_mode_becomes_for_share() {
        let plan = parse(
            Engine::InnoDb,
            "select * from test where id = ? lock in share mode",
        )
        .unwrap();
        let Stmt::Select(select) = plan.stmt else {
            panic!("not a select")
        };
        assert_eq!(
            select.lock,
            Some(RowLockClause {
                exclusive: false,
                wait: LockWaitPolicy::Wait
            })
        );
        assert_eq!(plan.param_count, 1);
        // A string that merely contains the words is left alone.
        let plan = parse(
            Engine::InnoDb,
            "select * from t where v = 'lock in share mode'",
        )
        .unwrap();
        let Stmt::Select(select) = plan.stmt else {
            panic!("not a select")
        };
        assert_eq!(select.lock, None);
    }

    #[test]
    fn placeholders_are_numbered_per_engine() {
        let plan = parse(Engine::Postgres, "update t set v = $2 where id = $1").unwrap();
        assert_eq!(plan.param_count, 2);
        let plan = parse(Engine::InnoDb, "update t set v = ? where id = ? and w = ?").unwrap();
        assert_eq!(plan.param_count, 3);
    }

    #[test]
    fn outside_the_subset_is_a_clear_error() {
        for (engine, text, code) in [
            (
                Engine::Postgres,
                "select * from a join b on a.id = b.id",
                "0A000",
            ),
            (Engine::Postgres, "select * from t group by v", "0A000"),
            (Engine::InnoDb, "select * from t group by v", "1235"),
            (Engine::Postgres, "select lower(v) from t", "0A000"),
            (Engine::Postgres, "selec * from t", "42601"),
            (Engine::InnoDb, "selec * from t", "1064"),
            (Engine::Postgres, "select 1; select 2", "0A000"),
            (Engine::Postgres, "create table t (x numeric)", "0A000"),
        ] {
            let err = parse(engine, text).unwrap_err();
            assert_eq!(err.code(), code, "{text}: {err}");
        }
    }
}
