//! Engine profiles: which real engine and isolation level the simulated database behaves like.
//!
//! The differences between profiles are measured data (`sim/conformance/hermitage.toml`,
//! PostgreSQL 15 and MariaDB 10.11); the engine consults the profile only through the small
//! questions asked here, so every behaviour difference has one name.

use std::fmt;
use std::str::FromStr;

use super::value::DbError;

/// The engine family a profile imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Engine {
    /// PostgreSQL 15: MVCC with row locks in tuple headers, SSI for serializable.
    Postgres,
    /// MariaDB 10.11 / MySQL 8 InnoDB: locking reads of the latest version, gap locks.
    InnoDb,
}

/// A transaction isolation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isolation {
    /// READ UNCOMMITTED (InnoDB only; PostgreSQL treats it as read committed).
    ReadUncommitted,
    /// READ COMMITTED.
    ReadCommitted,
    /// REPEATABLE READ.
    RepeatableRead,
    /// SERIALIZABLE.
    Serializable,
}

impl Isolation {
    /// The SQL spelling, as in `SET TRANSACTION ISOLATION LEVEL <this>`.
    pub fn sql(self) -> &'static str {
        match self {
            Isolation::ReadUncommitted => "READ UNCOMMITTED",
            Isolation::ReadCommitted => "READ COMMITTED",
            Isolation::RepeatableRead => "REPEATABLE READ",
            Isolation::Serializable => "SERIALIZABLE",
        }
    }
}

/// A database profile: engine, default isolation level and engine switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Profile {
    /// PostgreSQL, read committed (PostgreSQL's and Laravel's default).
    PgRc,
    /// PostgreSQL, repeatable read.
    PgRr,
    /// PostgreSQL, serializable (SSI).
    PgSer,
    /// MariaDB InnoDB, read uncommitted.
    MariaRu,
    /// MariaDB InnoDB, read committed.
    MariaRc,
    /// MariaDB InnoDB, repeatable read (MySQL's and MariaDB's default).
    MariaRr,
    /// MariaDB InnoDB, serializable.
    MariaSer,
    /// MariaDB InnoDB, repeatable read with `innodb_snapshot_isolation=ON`.
    MariaRrSi,
}

impl Profile {
    /// Every profile, in a fixed order.
    pub const ALL: [Profile; 8] = [
        Profile::PgRc,
        Profile::PgRr,
        Profile::PgSer,
        Profile::MariaRu,
        Profile::MariaRc,
        Profile::MariaRr,
        Profile::MariaSer,
        Profile::MariaRrSi,
    ];

    /// The profile's name, as used in scenario files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Profile::PgRc => "pg_rc",
            Profile::PgRr => "pg_rr",
            Profile::PgSer => "pg_ser",
            Profile::MariaRu => "maria_ru",
            Profile::MariaRc => "maria_rc",
            Profile::MariaRr => "maria_rr",
            Profile::MariaSer => "maria_ser",
            Profile::MariaRrSi => "maria_rr_si",
        }
    }

    /// The engine family.
    pub fn engine(self) -> Engine {
        match self {
            Profile::PgRc | Profile::PgRr | Profile::PgSer => Engine::Postgres,
            _ => Engine::InnoDb,
        }
    }

    /// Whether this is a PostgreSQL profile.
    pub fn is_postgres(self) -> bool {
        self.engine() == Engine::Postgres
    }

    /// The isolation level a transaction gets unless it sets another.
    pub fn isolation(self) -> Isolation {
        match self {
            Profile::MariaRu => Isolation::ReadUncommitted,
            Profile::PgRc | Profile::MariaRc => Isolation::ReadCommitted,
            Profile::PgRr | Profile::MariaRr | Profile::MariaRrSi => Isolation::RepeatableRead,
            Profile::PgSer | Profile::MariaSer => Isolation::Serializable,
        }
    }

    /// `innodb_snapshot_isolation=ON`: a locking read in repeatable read that finds a version
    /// newer than the transaction's read view fails with `1020` instead of reading it.
    pub fn innodb_snapshot_isolation(self) -> bool {
        self == Profile::MariaRrSi
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A profile name that is not one of [`Profile::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileParseError {
    /// The rejected name.
    pub value: String,
}

impl fmt::Display for ProfileParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Profile::ALL.iter().map(|p| p.name()).collect();
        write!(
            f,
            "unknown database profile `{}` (expected one of {})",
            self.value,
            names.join(", ")
        )
    }
}

impl std::error::Error for ProfileParseError {}

impl FromStr for Profile {
    type Err = ProfileParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| ProfileParseError {
                value: s.to_string(),
            })
    }
}

/// Engine settings (a session can also change the timeouts with `SET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConfig {
    /// PostgreSQL `deadlock_timeout`: how long a lock waiter waits before it checks for a
    /// deadlock (and becomes the victim if it is in one). PostgreSQL's default is 1 s.
    pub pg_deadlock_timeout_ms: u64,
    /// PostgreSQL `lock_timeout`: 0 waits forever (PostgreSQL's default).
    pub pg_lock_timeout_ms: u64,
    /// PostgreSQL `statement_timeout`: 0 never cancels (PostgreSQL's default).
    pub pg_statement_timeout_ms: u64,
    /// InnoDB `innodb_lock_wait_timeout` in seconds (MariaDB's default is 50).
    pub innodb_lock_wait_timeout_s: u64,
    /// A column that names each row's owner (a tenant id, say). When set, every result lists
    /// the owners of the rows its statement read or wrote ([`QueryResult::row_owners`]), as an
    /// object audit log would, so a check can prove that a statement stayed within one owner
    /// even when it returned nothing of another's. Rows read are those a SELECT returns (all
    /// rows an aggregate consumed), an UPDATE or DELETE matched, or an INSERT added.
    ///
    /// [`QueryResult::row_owners`]: super::QueryResult::row_owners
    pub row_owner_column: Option<String>,
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            pg_deadlock_timeout_ms: 1000,
            pg_lock_timeout_ms: 0,
            pg_statement_timeout_ms: 0,
            innodb_lock_wait_timeout_s: 50,
            row_owner_column: None,
        }
    }
}

impl DbConfig {
    /// Checks the relations between fields; a zero deadlock timeout would check before any
    /// wait could form a cycle, and an hour-long lock wait is a unit mistake.
    pub fn validate(&self) -> Result<(), String> {
        if self.pg_deadlock_timeout_ms == 0 {
            return Err("pg_deadlock_timeout_ms: must be at least 1, got 0".to_string());
        }
        if self.innodb_lock_wait_timeout_s > 3600 {
            return Err(format!(
                "innodb_lock_wait_timeout_s: must be at most 3600, got {}",
                self.innodb_lock_wait_timeout_s
            ));
        }
        if self.row_owner_column.as_deref() == Some("") {
            return Err("row_owner_column: must name a column, got an empty name".to_string());
        }
        Ok(())
    }
}

/// The real error of each engine for each failure the simulated database can produce.
pub(crate) mod errors {
    use super::{DbError, Engine};

    pub fn duplicate_key(engine: Engine, table: &str, index: &str, key: &str) -> DbError {
        match engine {
            Engine::Postgres => DbError::new(
                "23505",
                &format!("duplicate key value violates unique constraint \"{index}\""),
            ),
            Engine::InnoDb => {
                let index = if index == format!("{table}_pkey") {
                    "PRIMARY"
                } else {
                    index
                };
                DbError::new(
                    "1062",
                    &format!("Duplicate entry '{key}' for key '{table}.{index}'"),
                )
            }
        }
    }

    pub fn deadlock(engine: Engine) -> DbError {
        match engine {
            Engine::Postgres => DbError::new("40P01", "deadlock detected"),
            Engine::InnoDb => DbError::new(
                "1213",
                "Deadlock found when trying to get lock; try restarting transaction",
            ),
        }
    }

    pub fn lock_timeout(engine: Engine) -> DbError {
        match engine {
            Engine::Postgres => DbError::new("55P03", "canceling statement due to lock timeout"),
            Engine::InnoDb => lock_wait_timeout_innodb(),
        }
    }

    pub fn lock_not_available(engine: Engine, table: &str) -> DbError {
        match engine {
            Engine::Postgres => DbError::new(
                "55P03",
                &format!("could not obtain lock on row in relation \"{table}\""),
            ),
            Engine::InnoDb => lock_wait_timeout_innodb(),
        }
    }

    fn lock_wait_timeout_innodb() -> DbError {
        DbError::new(
            "1205",
            "Lock wait timeout exceeded; try restarting transaction",
        )
    }

    pub fn statement_timeout() -> DbError {
        DbError::new("57014", "canceling statement due to statement timeout")
    }

    pub fn concurrent_update(deleted: bool) -> DbError {
        let what = if deleted { "delete" } else { "update" };
        DbError::new(
            "40001",
            &format!("could not serialize access due to concurrent {what}"),
        )
    }

    pub fn rw_dependency() -> DbError {
        DbError::new(
            "40001",
            "could not serialize access due to read/write dependencies among transactions",
        )
    }

    pub fn record_changed(table: &str) -> DbError {
        DbError::new(
            "1020",
            &format!("Record has changed since last read in table '{table}'"),
        )
    }

    pub fn in_failed_transaction() -> DbError {
        DbError::new(
            "25P02",
            "current transaction is aborted, commands ignored until end of transaction block",
        )
    }

    pub fn no_such_table(engine: Engine, table: &str) -> DbError {
        match engine {
            Engine::Postgres => {
                DbError::new("42P01", &format!("relation \"{table}\" does not exist"))
            }
            Engine::InnoDb => DbError::new("1146", &format!("Table 'shop.{table}' doesn't exist")),
        }
    }

    pub fn table_exists(engine: Engine, table: &str) -> DbError {
        match engine {
            Engine::Postgres => {
                DbError::new("42P07", &format!("relation \"{table}\" already exists"))
            }
            Engine::InnoDb => DbError::new("1050", &format!("Table '{table}' already exists")),
        }
    }

    pub fn no_such_column(engine: Engine, column: &str) -> DbError {
        match engine {
            Engine::Postgres => {
                DbError::new("42703", &format!("column \"{column}\" does not exist"))
            }
            Engine::InnoDb => DbError::new(
                "1054",
                &format!("Unknown column '{column}' in 'field list'"),
            ),
        }
    }

    pub fn not_null(engine: Engine, table: &str, column: &str) -> DbError {
        match engine {
            Engine::Postgres => DbError::new(
                "23502",
                &format!(
                    "null value in column \"{column}\" of relation \"{table}\" violates not-null constraint"
                ),
            ),
            Engine::InnoDb => DbError::new("1048", &format!("Column '{column}' cannot be null")),
        }
    }

    pub fn wrong_type(engine: Engine, column: &str, expected: &str, got: &str) -> DbError {
        match engine {
            Engine::Postgres => DbError::new(
                "22P02",
                &format!("invalid input syntax for type {expected}: \"{got}\""),
            ),
            Engine::InnoDb => DbError::new(
                "1366",
                &format!("Incorrect {expected} value: '{got}' for column '{column}' at row 1"),
            ),
        }
    }

    pub fn type_mismatch(engine: Engine, what: &str) -> DbError {
        match engine {
            Engine::Postgres => DbError::new("42883", &format!("operator does not exist: {what}")),
            Engine::InnoDb => DbError::new("1292", &format!("Truncated incorrect value: {what}")),
        }
    }

    pub fn division_by_zero() -> DbError {
        DbError::new("22012", "division by zero")
    }

    pub fn overflow(engine: Engine) -> DbError {
        match engine {
            Engine::Postgres => DbError::new("22003", "bigint out of range"),
            Engine::InnoDb => DbError::new("1690", "BIGINT value is out of range"),
        }
    }

    pub fn syntax(engine: Engine, detail: &str) -> DbError {
        match engine {
            Engine::Postgres => DbError::new("42601", &format!("syntax error: {detail}")),
            Engine::InnoDb => DbError::new(
                "1064",
                &format!("You have an error in your SQL syntax; {detail}"),
            ),
        }
    }

    pub fn unsupported(engine: Engine, what: &str) -> DbError {
        match engine {
            Engine::Postgres => DbError::new("0A000", &format!("feature not supported: {what}")),
            Engine::InnoDb => DbError::new(
                "1235",
                &format!("This version of MariaDB doesn't yet support '{what}'"),
            ),
        }
    }

    pub fn unknown_setting(engine: Engine, name: &str) -> DbError {
        match engine {
            Engine::Postgres => DbError::new(
                "42704",
                &format!("unrecognized configuration parameter \"{name}\""),
            ),
            Engine::InnoDb => DbError::new("1193", &format!("Unknown system variable '{name}'")),
        }
    }

    pub fn invalid_setting(engine: Engine, name: &str, value: &str) -> DbError {
        match engine {
            Engine::Postgres => DbError::new(
                "22023",
                &format!("invalid value for parameter \"{name}\": \"{value}\""),
            ),
            Engine::InnoDb => DbError::new(
                "1231",
                &format!("Variable '{name}' can't be set to the value of '{value}'"),
            ),
        }
    }

    pub fn bind_count(engine: Engine, given: usize, wanted: usize) -> DbError {
        match engine {
            Engine::Postgres => DbError::new(
                "08P01",
                &format!(
                    "bind message supplies {given} parameters, but prepared statement requires {wanted}"
                ),
            ),
            Engine::InnoDb => DbError::new("1210", "Incorrect arguments to mysqld_stmt_execute"),
        }
    }

    pub fn no_savepoint(engine: Engine, name: &str) -> DbError {
        match engine {
            Engine::Postgres => {
                DbError::new("3B001", &format!("savepoint \"{name}\" does not exist"))
            }
            Engine::InnoDb => DbError::new("1305", &format!("SAVEPOINT {name} does not exist")),
        }
    }

    pub fn no_transaction_block(what: &str) -> DbError {
        DbError::new(
            "25P01",
            &format!("{what} can only be used in transaction blocks"),
        )
    }

    pub fn isolation_after_query(engine: Engine) -> DbError {
        match engine {
            Engine::Postgres => DbError::new(
                "25001",
                "SET TRANSACTION ISOLATION LEVEL must be called before any query",
            ),
            Engine::InnoDb => DbError::new(
                "1568",
                "Transaction characteristics can't be changed while a transaction is in progress",
            ),
        }
    }

    pub fn grouping(engine: Engine, column: &str) -> DbError {
        match engine {
            Engine::Postgres => DbError::new(
                "42803",
                &format!(
                    "column \"{column}\" must appear in the GROUP BY clause or be used in an aggregate function"
                ),
            ),
            Engine::InnoDb => DbError::new(
                "1140",
                &format!("Mixing of GROUP columns with no GROUP columns is illegal: '{column}'"),
            ),
        }
    }
}
