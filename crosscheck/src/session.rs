//! Real client connections: one per script session, through `tokio-postgres` and
//! `mysql_async`, plus a control connection that asks the server which backends wait for a
//! lock. Used only in plain tokio runtimes, never inside a madsim simulation.
//!
//! Every statement's answer becomes a [`RealResult`]: text cells (what the simple query
//! protocol returns), affected rows, the last insert id, or an error code.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use tokio::sync::mpsc;

use crate::server::{EngineKind, ServerError};

/// The answer of a real server to one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealResult {
    /// It succeeded.
    Ok(RealRows),
    /// It failed with this SQLSTATE / MariaDB error number and message.
    Err {
        /// `40P01`, `1213`, ... or `conn-closed` / `2013` when the connection was lost.
        code: String,
        /// The server's message.
        message: String,
    },
}

/// A successful answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RealRows {
    /// Whether the statement returned a result set (possibly empty).
    pub result_set: bool,
    /// The rows as text cells, `NULL` for SQL NULL.
    pub rows: Vec<Vec<String>>,
    /// Rows affected (PostgreSQL: matched; MariaDB: changed).
    pub affected: u64,
    /// MariaDB's last insert id of the statement (0 = none).
    pub last_insert_id: u64,
}

impl RealResult {
    /// The conformance token of this answer to `statement`.
    pub fn token(&self, statement: &str) -> String {
        use shopsim_sim::db::conformance::{error_token, result_token};
        match self {
            RealResult::Ok(r) => result_token(statement, r.result_set, r.rows.clone(), r.affected),
            RealResult::Err { code, message } => error_token(code, message),
        }
    }

    fn lost(kind: EngineKind, message: String) -> RealResult {
        RealResult::Err {
            code: lost_code(kind).to_string(),
            message,
        }
    }
}

/// The token code of a connection the client lost or closed.
pub fn lost_code(kind: EngineKind) -> &'static str {
    match kind {
        EngineKind::Postgres => "conn-closed",
        EngineKind::MariaDb => "2013",
    }
}

enum Conn {
    Pg(tokio_postgres::Client),
    Maria(Box<mysql_async::Conn>),
}

/// When the backend last reported a finished deadlock check ("still waiting" / "avoided
/// deadlock"), as seconds since the epoch on this machine's clock (the server's too).
pub type CheckNotice = Arc<Mutex<Option<f64>>>;

/// One real connection driven by a task of its own: statements go in through a channel, and
/// answers come out on the stepper's shared channel tagged with `key`.
pub struct RealSession {
    /// The server's id of the backend: PostgreSQL pid or MariaDB connection id.
    pub backend: i64,
    /// The stepper's key of this session.
    pub key: usize,
    statements: mpsc::UnboundedSender<Vec<String>>,
    task: tokio::task::JoinHandle<()>,
    driver: Option<tokio::task::JoinHandle<()>>,
    /// PostgreSQL: the last deadlock-check notice.
    pub check_notice: CheckNotice,
}

fn connect_error(kind: EngineKind, e: impl std::fmt::Display) -> ServerError {
    ServerError {
        binary: match kind {
            EngineKind::Postgres => "postgres",
            EngineKind::MariaDb => "mariadbd",
        }
        .to_string(),
        message: format!("connect: {e}"),
    }
}

fn pg_config(port: u16, database: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname(database)
        .connect_timeout(Duration::from_secs(10));
    config
}

fn maria_opts(port: u16, database: Option<&str>) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("root"))
        .db_name(database)
        .client_found_rows(false)
        .prefer_socket(false)
        .into()
}

fn seconds_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl RealSession {
    /// Opens a session of `kind` on the server at `port`, in `database` (PostgreSQL: the
    /// schema is chosen by `init`), runs `init` (session settings), and starts its task.
    pub async fn open(
        kind: EngineKind,
        port: u16,
        key: usize,
        init: &[String],
        answers: mpsc::UnboundedSender<(usize, RealResult)>,
    ) -> Result<RealSession, ServerError> {
        let check_notice: CheckNotice = Arc::new(Mutex::new(None));
        let (conn, driver) = match kind {
            EngineKind::Postgres => {
                let (client, mut connection) = pg_config(port, "postgres")
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| connect_error(kind, e))?;
                let notice = check_notice.clone();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        if let Ok(tokio_postgres::AsyncMessage::Notice(n)) = &message {
                            let text = n.message();
                            if text.contains("still waiting for")
                                || text.contains("avoided deadlock")
                            {
                                *notice.lock().unwrap_or_else(|p| p.into_inner()) =
                                    Some(seconds_now());
                            }
                        }
                        if message.is_err() {
                            break;
                        }
                    }
                });
                (Conn::Pg(client), Some(driver))
            }
            EngineKind::MariaDb => {
                let conn = mysql_async::Conn::new(maria_opts(port, None))
                    .await
                    .map_err(|e| connect_error(kind, e))?;
                (Conn::Maria(Box::new(conn)), None)
            }
        };
        let mut conn = conn;
        let backend = match &mut conn {
            Conn::Pg(client) => {
                let rows = simple_rows(client, "select pg_backend_pid()")
                    .await
                    .map_err(|e| connect_error(kind, e))?;
                rows.first()
                    .and_then(|r| r.first())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            }
            Conn::Maria(c) => i64::from(c.id()),
        };
        for statement in init {
            if let RealResult::Err { code, message } = execute(&mut conn, kind, statement).await {
                return Err(connect_error(
                    kind,
                    format!("session setting `{statement}` failed: {code} {message}"),
                ));
            }
        }
        let (statements, mut rx) = mpsc::unbounded_channel::<Vec<String>>();
        let task = tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                let mut result = RealResult::Ok(RealRows::default());
                for statement in &batch {
                    result = execute(&mut conn, kind, statement).await;
                    if matches!(result, RealResult::Err { .. }) {
                        break;
                    }
                }
                if answers.send((key, result)).is_err() {
                    break;
                }
            }
        });
        Ok(RealSession {
            backend,
            key,
            statements,
            task,
            driver,
            check_notice,
        })
    }

    /// Sends statements that run one after the other as one step (stopping at the first
    /// error); the last one's answer arrives on the answers channel.
    pub fn send(&self, batch: Vec<String>) {
        assert!(!batch.is_empty());
        // A closed channel means the task ended; the stepper sees the session as lost.
        let _ = self.statements.send(batch);
    }

    /// Closes the connection abruptly, also while a statement is in flight.
    pub fn close(self) {
        self.task.abort();
        if let Some(driver) = self.driver {
            driver.abort();
        }
    }
}

async fn simple_rows(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<Vec<String>>, tokio_postgres::Error> {
    let mut rows = Vec::new();
    for message in client.simple_query(sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            rows.push(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            );
        }
    }
    Ok(rows)
}

async fn execute(conn: &mut Conn, kind: EngineKind, sql: &str) -> RealResult {
    match conn {
        Conn::Pg(client) => match client.simple_query(sql).await {
            Ok(messages) => {
                let mut out = RealRows::default();
                for message in messages {
                    match message {
                        tokio_postgres::SimpleQueryMessage::Row(row) => {
                            out.result_set = true;
                            out.rows.push(
                                (0..row.len())
                                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                                    .collect(),
                            );
                        }
                        tokio_postgres::SimpleQueryMessage::RowDescription(_) => {
                            out.result_set = true;
                        }
                        tokio_postgres::SimpleQueryMessage::CommandComplete(n) => {
                            out.affected = n;
                        }
                        _ => {}
                    }
                }
                RealResult::Ok(out)
            }
            Err(e) => match e.as_db_error() {
                Some(db) => RealResult::Err {
                    code: db.code().code().to_string(),
                    message: db.message().to_string(),
                },
                None => RealResult::lost(kind, e.to_string()),
            },
        },
        Conn::Maria(conn) => {
            let result = async {
                let mut result = conn.query_iter(sql).await?;
                let result_set = result.columns().is_some_and(|c| !c.is_empty());
                let rows: Vec<mysql_async::Row> = result.collect().await?;
                let affected = result.affected_rows();
                let last_insert_id = result.last_insert_id().unwrap_or(0);
                result.drop_result().await?;
                Ok::<_, mysql_async::Error>(RealRows {
                    result_set,
                    rows: rows.into_iter().map(maria_row).collect(),
                    affected,
                    last_insert_id,
                })
            }
            .await;
            match result {
                Ok(rows) => RealResult::Ok(rows),
                Err(mysql_async::Error::Server(e)) => RealResult::Err {
                    code: e.code.to_string(),
                    message: e.message,
                },
                Err(e) => RealResult::lost(kind, e.to_string()),
            }
        }
    }
}

fn maria_row(row: mysql_async::Row) -> Vec<String> {
    row.unwrap()
        .into_iter()
        .map(|v| match v {
            mysql_async::Value::NULL => "NULL".to_string(),
            mysql_async::Value::Bytes(b) => String::from_utf8_lossy(&b).to_string(),
            mysql_async::Value::Int(i) => i.to_string(),
            mysql_async::Value::UInt(u) => u.to_string(),
            other => other.as_sql(true).trim_matches('\'').to_string(),
        })
        .collect()
}

/// The longest a control statement may take: a DDL that waits for a lock held by a backend
/// nobody ended, or a server that stopped answering, must not hang a campaign.
pub const CONTROL_DEADLINE: Duration = Duration::from_secs(60);

/// The longest a new session may take to connect and apply its settings.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(20);

/// The control connection: sets up schemas and asks the server about its backends.
pub struct Control {
    kind: EngineKind,
    conn: Conn,
}

/// What the server says about one backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackendWait {
    /// The backend.
    pub backend: i64,
    /// PostgreSQL: when its current lock wait began, seconds since the epoch.
    pub wait_start: Option<f64>,
}

impl Control {
    /// Connects to the server at `port`.
    pub async fn connect(kind: EngineKind, port: u16) -> Result<Control, ServerError> {
        let conn = match kind {
            EngineKind::Postgres => {
                let (client, connection) = pg_config(port, "postgres")
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| connect_error(kind, e))?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Conn::Pg(client)
            }
            EngineKind::MariaDb => Conn::Maria(Box::new(
                mysql_async::Conn::new(maria_opts(port, None))
                    .await
                    .map_err(|e| connect_error(kind, e))?,
            )),
        };
        let mut control = Control { kind, conn };
        // Waits of its own (DDL behind a backend's lock) end with an error well before the
        // client-side deadline.
        let settings: &[&str] = match kind {
            EngineKind::Postgres => &["set lock_timeout = '20s'"],
            EngineKind::MariaDb => &[
                "set session lock_wait_timeout = 20",
                "set session innodb_lock_wait_timeout = 20",
            ],
        };
        for setting in settings {
            if let RealResult::Err { code, message } = control.run(setting).await {
                return Err(connect_error(
                    kind,
                    format!("`{setting}`: {code} {message}"),
                ));
            }
        }
        Ok(control)
    }

    /// Runs one statement, for at most [`CONTROL_DEADLINE`] (then a `timeout` error: the
    /// connection is unusable and its owner drops it).
    pub async fn run(&mut self, sql: &str) -> RealResult {
        match tokio::time::timeout(CONTROL_DEADLINE, execute(&mut self.conn, self.kind, sql)).await
        {
            Ok(result) => result,
            Err(_) => RealResult::Err {
                code: "timeout".to_string(),
                message: format!("no answer in {} s", CONTROL_DEADLINE.as_secs()),
            },
        }
    }

    /// Runs one statement that must succeed; its rows.
    pub async fn rows(&mut self, sql: &str) -> Result<Vec<Vec<String>>, String> {
        match self.run(sql).await {
            RealResult::Ok(r) => Ok(r.rows),
            RealResult::Err { code, message } => Err(format!("`{sql}`: {code} {message}")),
        }
    }

    /// PostgreSQL: the backends among `backends` that wait for a lock, with the start of the
    /// wait. (`pg_locks.granted` is set by the releasing backend, so a granted waiter never
    /// shows as waiting.)
    pub async fn pg_waiting(&mut self, backends: &[i64]) -> Result<Vec<BackendWait>, String> {
        if backends.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = backends.iter().map(|b| b.to_string()).collect();
        let rows = self
            .rows(&format!(
                "select pid, coalesce(extract(epoch from waitstart)::float8, 0) from pg_locks \
                 where not granted and pid in ({})",
                list.join(",")
            ))
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let backend = r.first()?.parse().ok()?;
                let start: f64 = r.get(1)?.parse().ok()?;
                Some(BackendWait {
                    backend,
                    wait_start: (start > 0.0).then_some(start),
                })
            })
            .collect())
    }

    /// MariaDB: how many transactions wait for a row lock right now
    /// (`Innodb_row_lock_current_waits`, a live counter; `information_schema.innodb_trx` is a
    /// cache refreshed at most every 0.1 s after its last read, too stale for stepping).
    pub async fn maria_lock_waits(&mut self) -> Result<u64, String> {
        let rows = self
            .rows("show global status like 'Innodb_row_lock_current_waits'")
            .await?;
        rows.first()
            .and_then(|r| r.get(1))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| "Innodb_row_lock_current_waits not reported".to_string())
    }

    /// The backends among `backends` that still run a statement (an idle backend of a closed
    /// connection can hold locks but waits for nothing, so a step need not wait for it).
    pub async fn alive(&mut self, backends: &[i64]) -> Result<Vec<i64>, String> {
        if backends.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = backends.iter().map(|b| b.to_string()).collect();
        let sql = match self.kind {
            EngineKind::Postgres => format!(
                "select pid from pg_stat_activity where pid in ({}) and state <> 'idle'",
                list.join(",")
            ),
            EngineKind::MariaDb => format!(
                "select id from information_schema.processlist where id in ({}) \
                 and command <> 'Sleep'",
                list.join(",")
            ),
        };
        Ok(self
            .rows(&sql)
            .await?
            .iter()
            .filter_map(|r| r.first()?.parse().ok())
            .collect())
    }

    /// MariaDB: the connection ids whose transaction waits for a lock right now, from
    /// `SHOW ENGINE INNODB STATUS` ("TRX HAS BEEN WAITING"): printed from the transaction's
    /// wait lock, which the releasing transaction clears when it grants, so a granted waiter
    /// never shows as waiting even before its thread runs.
    pub async fn maria_waiting(&mut self) -> Result<Vec<i64>, String> {
        let rows = self.rows("show engine innodb status").await?;
        let text = rows
            .first()
            .and_then(|r| r.get(2))
            .cloned()
            .unwrap_or_default();
        let mut waiting = Vec::new();
        for block in text.split("---TRANSACTION").skip(1) {
            if !block.contains("TRX HAS BEEN WAITING") {
                continue;
            }
            let id = block
                .split("MariaDB thread id ")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok());
            if let Some(id) = id {
                waiting.push(id);
            }
        }
        Ok(waiting)
    }

    /// The backends among `backends` that still exist at all.
    pub async fn exist(&mut self, backends: &[i64]) -> Result<Vec<i64>, String> {
        if backends.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = backends.iter().map(|b| b.to_string()).collect();
        let sql = match self.kind {
            EngineKind::Postgres => format!(
                "select pid from pg_stat_activity where pid in ({})",
                list.join(",")
            ),
            EngineKind::MariaDb => format!(
                "select id from information_schema.processlist where id in ({})",
                list.join(",")
            ),
        };
        Ok(self
            .rows(&sql)
            .await?
            .iter()
            .filter_map(|r| r.first()?.parse().ok())
            .collect())
    }

    /// Who blocks whom among `backends`: (waiter, blocker) pairs. PostgreSQL from
    /// `pg_blocking_pids`; MariaDB from `information_schema.innodb_lock_waits` after waiting
    /// out its 0.1 s cache (used only to order a crash's teardown).
    pub async fn blocking(&mut self, backends: &[i64]) -> Result<Vec<(i64, i64)>, String> {
        if backends.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = backends.iter().map(|b| b.to_string()).collect();
        let sql = match self.kind {
            EngineKind::Postgres => format!(
                "select pid, unnest(pg_blocking_pids(pid)) from pg_stat_activity where pid in ({})",
                list.join(",")
            ),
            EngineKind::MariaDb => {
                tokio::time::sleep(Duration::from_millis(120)).await;
                format!(
                    "select r.trx_mysql_thread_id, b.trx_mysql_thread_id \
                     from information_schema.innodb_lock_waits w \
                     join information_schema.innodb_trx r on r.trx_id = w.requesting_trx_id \
                     join information_schema.innodb_trx b on b.trx_id = w.blocking_trx_id \
                     where r.trx_mysql_thread_id in ({})",
                    list.join(",")
                )
            }
        };
        Ok(self
            .rows(&sql)
            .await?
            .iter()
            .filter_map(|r| Some((r.first()?.parse().ok()?, r.get(1)?.parse().ok()?)))
            .collect())
    }

    /// Ends a backend as a crash would: PostgreSQL `pg_terminate_backend`, MariaDB `KILL`.
    pub async fn terminate(&mut self, backend: i64) -> Result<(), String> {
        let sql = match self.kind {
            EngineKind::Postgres => format!("select pg_terminate_backend({backend})"),
            EngineKind::MariaDb => format!("kill {backend}"),
        };
        match self.run(&sql).await {
            RealResult::Ok(_) => Ok(()),
            // Already gone.
            RealResult::Err { code, .. } if code == "1094" => Ok(()),
            RealResult::Err { code, message } => Err(format!("`{sql}`: {code} {message}")),
        }
    }
}

/// The server's version, if it accepts a connection now (used while it starts).
pub fn server_version(kind: EngineKind, port: u16) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut control = Control::connect(kind, port)
            .await
            .map_err(|e| e.to_string())?;
        let rows = control.rows("select version()").await?;
        rows.first()
            .and_then(|r| r.first())
            .cloned()
            .ok_or_else(|| "no version".to_string())
    })
}
