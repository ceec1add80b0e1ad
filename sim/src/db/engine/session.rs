//! Sessions and their settings: connecting and disconnecting, `SET` of timeouts and custom
//! settings (`SET LOCAL` undone at the end of the transaction), and reading them back.

use std::collections::BTreeMap;

use super::expr::{bind, eval};
use super::read::InnoDbCursor;
use super::transaction::Tx;
use super::wait::Blocked;
use super::write::InnoDbInsert;
use super::{Database, SessionId};
use crate::db::profile::{errors, Engine, Isolation};
use crate::db::sql::Stmt;
use crate::db::value::{DbError, QueryResult, Value};

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Settings {
    pub(super) pg_lock_timeout_ms: u64,
    pub(super) pg_deadlock_timeout_ms: u64,
    pub(super) pg_statement_timeout_ms: u64,
    pub(super) innodb_lock_wait_timeout_s: u64,
    pub(super) custom: BTreeMap<String, Value>,
}

#[derive(Debug, Clone)]
pub(super) struct Session {
    pub(super) tx: Option<Tx>,
    pub(super) isolation: Isolation,
    pub(super) next_isolation: Option<Isolation>,
    pub(super) settings: Settings,
    pub(super) blocked: Option<Blocked>,
    /// InnoDB: where the statement in flight stands after a lock wait.
    pub(super) innodb_cursor: Option<InnoDbCursor>,
    /// InnoDB: how far the INSERT in flight has come.
    pub(super) innodb_insert: Option<InnoDbInsert>,
    /// InnoDB: the undo records the UPDATE or DELETE in flight would have written by the time
    /// of its lock wait. InnoDB writes each row as soon as it is locked; the simulated
    /// statement locks its rows first and is rolled back to its start when it waits. They
    /// count in the transaction's deadlock weight while it waits.
    pub(super) innodb_written_before_wait: u64,
    /// The client closed the connection while a statement of this session waited for a lock.
    /// Neither engine notices a closed socket while a backend sleeps on a lock (PostgreSQL
    /// without `client_connection_check_interval`, MariaDB's lock wait): the statement waits
    /// on, holding the transaction's locks, and the session ends only when it does.
    pub(super) orphaned: bool,
}

impl Database {
    /// Opens a session.
    pub fn connect(&mut self) -> SessionId {
        let id = self.next_session;
        self.next_session += 1;
        let settings = Settings {
            pg_lock_timeout_ms: self.config.pg_lock_timeout_ms,
            pg_deadlock_timeout_ms: self.config.pg_deadlock_timeout_ms,
            pg_statement_timeout_ms: self.config.pg_statement_timeout_ms,
            innodb_lock_wait_timeout_s: self.config.innodb_lock_wait_timeout_s,
            custom: BTreeMap::new(),
        };
        self.sessions.insert(
            id,
            Session {
                tx: None,
                isolation: self.profile.isolation(),
                next_isolation: None,
                settings,
                blocked: None,
                innodb_cursor: None,
                innodb_insert: None,
                innodb_written_before_wait: 0,
                orphaned: false,
            },
        );
        id
    }

    /// The client closed `session`'s connection. An idle session closes now: its open
    /// transaction rolls back and its locks are released. A session whose statement waits for
    /// a lock is orphaned instead: the statement keeps waiting and may still run (an
    /// autocommit statement then commits), and the session closes when the statement ends,
    /// by a grant, a timeout or a deadlock (see [`Database::take_completions`]).
    pub fn disconnect(&mut self, session: SessionId) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        if s.blocked.is_some() {
            s.orphaned = true;
            return;
        }
        self.close_session(session);
    }

    /// Ends `session`: the open transaction rolls back and its locks are released.
    pub(super) fn close_session(&mut self, session: SessionId) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        s.blocked = None;
        if let Some(tx) = s.tx.as_ref().map(|t| t.id) {
            self.locks.cancel_wait(tx);
            self.rollback_tx(session);
        }
        self.sessions.remove(&session);
        self.completions.retain(|(s, _)| *s != session);
        self.drain_wakeups();
        assert!(!self.sessions.contains_key(&session));
    }

    /// Whether `session` is open: connected, or orphaned with its statement still waiting.
    pub fn has_session(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    /// `SET [SESSION] TRANSACTION ISOLATION LEVEL` and `SET [LOCAL] name = value`.
    pub(super) fn session_control(
        &mut self,
        session: SessionId,
        stmt: &Stmt,
        params: &[Value],
    ) -> Result<QueryResult, DbError> {
        let engine = self.engine;
        let (in_tx, aborted) = self.tx_state(session);
        let ok = Ok(QueryResult::default());
        match stmt {
            Stmt::SetIsolation {
                level,
                session: whole_session,
            } => {
                if aborted {
                    return Err(errors::in_failed_transaction());
                }
                match engine {
                    Engine::Postgres => {
                        if let Some(tx) =
                            self.sessions.get_mut(&session).and_then(|s| s.tx.as_mut())
                        {
                            if tx.queried {
                                let e = errors::isolation_after_query(engine);
                                self.pg_abort(session);
                                return Err(e);
                            }
                            tx.isolation = *level;
                        } else if *whole_session {
                            self.sessions.get_mut(&session).expect("session").isolation = *level;
                        }
                        // Outside a transaction block PostgreSQL warns and does nothing.
                        ok
                    }
                    Engine::InnoDb => {
                        let s = self.sessions.get_mut(&session).expect("session");
                        if *whole_session {
                            s.isolation = *level;
                        } else if in_tx {
                            return Err(errors::isolation_after_query(engine));
                        } else {
                            s.next_isolation = Some(*level);
                        }
                        ok
                    }
                }
            }
            Stmt::Set { name, value, local } => {
                if aborted {
                    return Err(errors::in_failed_transaction());
                }
                let value = bind(engine, value, &[], params).and_then(|e| eval(engine, &e, &[]));
                let value = match value {
                    Ok(v) => v,
                    Err(e) => {
                        if engine == Engine::Postgres && in_tx {
                            self.pg_abort(session);
                        }
                        return Err(e);
                    }
                };
                let result = self.set(session, name, value, *local);
                if result.is_err() && engine == Engine::Postgres && in_tx {
                    self.pg_abort(session);
                }
                result.map(|()| QueryResult::default())
            }
            _ => unreachable!("not a session statement"),
        }
    }

    pub(super) fn set(
        &mut self,
        session: SessionId,
        name: &str,
        value: Value,
        local: bool,
    ) -> Result<(), DbError> {
        let engine = self.engine;
        let in_tx = self.sessions[&session].tx.is_some();
        let text = value.to_string();
        let s = self.sessions.get_mut(&session).expect("session");
        if local {
            if !in_tx {
                // PostgreSQL: SET LOCAL outside a transaction block has no effect.
                return Ok(());
            }
            let saved = s.settings.clone();
            let tx = s.tx.as_mut().expect("transaction");
            tx.saved_settings.get_or_insert(saved);
        }
        match (engine, name) {
            (Engine::Postgres, "lock_timeout" | "deadlock_timeout" | "statement_timeout") => {
                let ms = parse_pg_duration_ms(&value)
                    .ok_or_else(|| errors::invalid_setting(engine, name, &text))?;
                if name == "deadlock_timeout" && ms == 0 {
                    return Err(errors::invalid_setting(engine, name, &text));
                }
                match name {
                    "lock_timeout" => s.settings.pg_lock_timeout_ms = ms,
                    "deadlock_timeout" => s.settings.pg_deadlock_timeout_ms = ms,
                    _ => s.settings.pg_statement_timeout_ms = ms,
                }
                Ok(())
            }
            (Engine::Postgres, custom) if custom.contains('.') => {
                // Custom settings (`SET app.tenant_id = '3'`) are how tenancy packages carry
                // the tenant on a pooled connection.
                s.settings
                    .custom
                    .insert(custom.to_string(), Value::Text(text));
                Ok(())
            }
            (Engine::InnoDb, "innodb_lock_wait_timeout") => {
                let seconds = match value {
                    Value::Int(i) if (1..=1_073_741_824).contains(&i) => i as u64,
                    _ => return Err(errors::invalid_setting(engine, name, &text)),
                };
                s.settings.innodb_lock_wait_timeout_s = seconds;
                Ok(())
            }
            (Engine::InnoDb, var) if var.starts_with('@') => {
                s.settings.custom.insert(var.to_string(), value);
                Ok(())
            }
            _ => Err(errors::unknown_setting(engine, name)),
        }
    }

    /// Puts `session`'s settings back to `earlier` (a rollback, a rolled-back savepoint, the
    /// end of `SET LOCAL`). PostgreSQL keeps a custom setting the undone `SET` created as a
    /// placeholder whose value is the empty string (measured on 15.18: `begin; set app.x =
    /// '1'; rollback; select current_setting('app.x')` is `''`, where before the `SET` it was
    /// `42704`).
    pub(super) fn restore_settings(&mut self, session: SessionId, earlier: Settings) {
        let engine = self.engine;
        let s = self.sessions.get_mut(&session).expect("session");
        let mut restored = earlier;
        if engine == Engine::Postgres {
            for name in s.settings.custom.keys() {
                restored
                    .custom
                    .entry(name.clone())
                    .or_insert_with(|| Value::Text(String::new()));
            }
        }
        s.settings = restored;
    }

    /// The value of a session setting (`app.tenant_id` on PostgreSQL, `@tenant_id` on
    /// MariaDB), for checks that a pooled connection carries the right tenant.
    pub fn session_setting(&self, session: SessionId, name: &str) -> Option<Value> {
        self.sessions
            .get(&session)?
            .settings
            .custom
            .get(name)
            .cloned()
    }
}

pub(super) fn parse_pg_duration_ms(value: &Value) -> Option<u64> {
    match value {
        Value::Int(ms) if *ms >= 0 => Some(*ms as u64),
        Value::Text(text) => {
            let text = text.trim();
            let digits: String = text.chars().take_while(|c| c.is_ascii_digit()).collect();
            let unit = text[digits.len()..].trim();
            let n: u64 = digits.parse().ok()?;
            let factor = match unit {
                "" | "ms" => 1,
                "s" => 1000,
                "min" => 60_000,
                "h" => 3_600_000,
                _ => return None,
            };
            n.checked_mul(factor)
        }
        _ => None,
    }
}
