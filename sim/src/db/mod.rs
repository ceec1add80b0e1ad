//! The simulated SQL database: a synchronous engine that behaves like PostgreSQL 15 or
//! MariaDB 10.11 InnoDB under concurrency, put on a simulated network node.
//!
//! Start with [`engine::Database`] (sessions, transactions, statements), then [`server`] (the
//! node: connections, statement costs in virtual time, crash and restart) and [`client`] (the
//! pool model code uses). [`sql`] is the SQL subset, [`storage`] the multi-version rows,
//! [`lock`] row and gap locks, [`ssi`] serializable snapshot isolation, [`profile`] the engine
//! profiles and their real error codes, [`conformance`] the isolation-script runner that
//! checks all of it against measurements of the real engines.

pub mod client;
pub mod conformance;
pub mod engine;
pub mod lock;
pub mod profile;
pub mod replica;
pub mod server;
pub mod sql;
pub mod ssi;
pub mod storage;
pub mod value;

pub use engine::{Database, DbStats, Exec, SessionId};
pub use profile::{DbConfig, Engine, Isolation, Profile, ProfileParseError};
pub use storage::{CommitRecord, RowWrite};
pub use value::{DbError, QueryResult, Value};
