//! Values, results and errors of the simulated database.
//!
//! Errors carry the real SQLSTATE (PostgreSQL) or error number (MariaDB) and the real message
//! text, so model code reacts to them the way the application does: Laravel retries a
//! transaction on `40P01`, `40001` and `1213`, and turns everything else into a 5xx.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One SQL value. Integers are 64-bit; money is kept in integer cents by the model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer (`INT`, `BIGINT`, `SERIAL`, ...).
    Int(i64),
    /// A string (`TEXT`, `VARCHAR`).
    Text(String),
    /// A boolean (`BOOLEAN`).
    Bool(bool),
}

impl Value {
    /// The integer inside, if this is an integer.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The string inside, if this is a string.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Text(_) => 3,
        }
    }
}

/// A total order over values for index keys and sorting: NULL first, then by type, then by
/// value. SQL comparison semantics (NULL is unknown) live in expression evaluation, not here.
impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Text(a), Value::Text(b)) => a.cmp(b),
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => write!(f, "NULL"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Text(s) => write!(f, "{s}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_string())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

/// The result of one statement.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueryResult {
    /// Column names of the result set; empty for statements without one.
    pub columns: Vec<String>,
    /// The result set.
    pub rows: Vec<Vec<Value>>,
    /// Rows affected: matched rows on PostgreSQL, changed rows on MariaDB.
    pub rows_affected: u64,
    /// The first value generated for an auto-increment column by the last INSERT.
    pub last_insert_id: Option<i64>,
    /// The distinct owners (values of [`DbConfig::row_owner_column`]) of the rows the statement
    /// read or wrote, in order; empty when no owner column is configured or the table has none.
    ///
    /// [`DbConfig::row_owner_column`]: super::DbConfig::row_owner_column
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub row_owners: Vec<Value>,
}

impl QueryResult {
    /// The value of `column` in row `row`, if both exist.
    pub fn get(&self, row: usize, column: &str) -> Option<&Value> {
        let index = self.columns.iter().position(|c| c == column)?;
        self.rows.get(row)?.get(index)
    }
}

/// An error as the real server reports it: SQLSTATE or MariaDB error number, and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbError {
    code: String,
    message: String,
}

impl DbError {
    /// An error with this code (`"40001"`, `"1213"`, ...) and message.
    pub fn new(code: &str, message: &str) -> Self {
        assert!(!code.is_empty());
        DbError {
            code: code.to_string(),
            message: message.to_string(),
        }
    }

    /// The SQLSTATE (PostgreSQL) or error number (MariaDB).
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The server's message text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// A deadlock victim (`40P01`, `1213`): the whole transaction was rolled back.
    pub fn is_deadlock(&self) -> bool {
        self.code == "40P01" || self.code == "1213"
    }

    /// A serialization failure (`40001`) of PostgreSQL, or MariaDB's `1020` under
    /// `innodb_snapshot_isolation`: retrying the transaction may succeed.
    pub fn is_serialization_failure(&self) -> bool {
        self.code == "40001" || self.code == "1020"
    }

    /// Whether Laravel's `DB::transaction($fn, $attempts)` retries on this error: deadlocks and
    /// serialization failures.
    pub fn is_retryable(&self) -> bool {
        self.is_deadlock() || self.is_serialization_failure()
    }

    /// A unique key violation (`23505`, `1062`).
    pub fn is_unique_violation(&self) -> bool {
        self.code == "23505" || self.code == "1062"
    }

    /// A lock wait that ran out of time (`55P03`, `1205`), including `NOWAIT`.
    pub fn is_lock_timeout(&self) -> bool {
        self.code == "55P03" || self.code == "1205"
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for DbError {}
