//! The database statements of a replay, read from the database nodes' transcripts
//! (`sim::db::server::transcript`): `replay --trace` lists them, and `replay --diagram` draws
//! those of the witness's operations.
//!
//! Each statement is shown as the server ran it: its virtual time (of the run, like the
//! history's), its session (`s7@app-2`: engine session 7, a connection whose client named itself
//! `app-2`), the history operation that issued it (`#18`, from the tag the app sends with each
//! statement of a request), the statement with its parameters inlined, and its outcome. A
//! statement that waited for a lock is listed twice, where it blocked and where it finished,
//! with the wait's length, the table and the session whose statement woke it.
//!
//! The history itself is not changed for this (it is hashed): which app node served a request
//! is the `application_name` of the request's statements. Reading the history stays small and
//! tolerant: only an operation's index, process, kind, status and times are used.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use shopsim_crosscheck::server::EngineKind;
use shopsim_crosscheck::transcript::{inline, literal};
use shopsim_sim::db::server::transcript::{
    FinishCause, StatementEnd, Transcript, TranscriptEvent, TranscriptStatement,
};
use shopsim_sim::db::{DbError, QueryResult};
use shopsim_sim::history::History;

use crate::signature::truncate_chars;

/// The most rows of a result shown in an outcome.
const OUTCOME_ROWS_MAX: usize = 3;
/// The longest error message shown, in characters.
const ERROR_CHARS_MAX: usize = 80;
/// The longest statement repeated on the line where a lock wait ends, in characters.
const REPEAT_CHARS_MAX: usize = 60;

/// One database node's statements.
pub struct DbNode<'a> {
    /// `primary`, `replica`, `replica-2`, ...
    pub name: String,
    /// What it recorded.
    pub transcript: &'a Transcript,
    /// Its statements in the order the server ran them.
    pub statements: Vec<TranscriptStatement>,
    kind: EngineKind,
}

/// The nodes of a run's transcripts, named by role in creation order.
pub fn nodes(transcripts: &[Transcript]) -> Vec<DbNode<'_>> {
    let mut replicas = 0;
    let mut primaries = 0;
    transcripts
        .iter()
        .map(|t| {
            let (role, count) = if t.read_only {
                ("replica", &mut replicas)
            } else {
                ("primary", &mut primaries)
            };
            *count += 1;
            let name = if *count == 1 {
                role.to_string()
            } else {
                format!("{role}-{count}")
            };
            DbNode {
                name,
                transcript: t,
                statements: t.statements(),
                kind: EngineKind::of(t.profile),
            }
        })
        .collect()
}

impl DbNode<'_> {
    /// A transcript time as a time of the run, µs.
    pub fn run_us(&self, at_us: u64) -> u64 {
        self.transcript.origin_run_us.saturating_add(at_us)
    }

    /// The statement with its parameters inlined, as a real server would run it.
    pub fn sql(&self, statement: &TranscriptStatement) -> String {
        inline(self.kind, statement.sql.trim(), &statement.params)
    }

    /// `s7@app-2`: the session and the client's name, if it sent one.
    pub fn session(&self, statement: &TranscriptStatement) -> String {
        match &statement.application {
            Some(application) => format!("s{}@{application}", statement.session),
            None => format!("s{}", statement.session),
        }
    }

    /// What the statement answered: rows, rows affected, an error, or no answer.
    pub fn outcome(&self, statement: &TranscriptStatement) -> String {
        match &statement.end {
            StatementEnd::Finished { result, .. } => self.result(&statement.sql, result),
            StatementEnd::Disconnected { .. } => {
                "no answer: the connection closed while it waited (rolled back)".to_string()
            }
            StatementEnd::Crashed { .. } => {
                "no answer: the database crashed while it waited".to_string()
            }
            StatementEnd::Pending => "no answer: still waiting when the run ended".to_string(),
        }
    }

    fn result(&self, sql: &str, result: &Result<QueryResult, DbError>) -> String {
        let r = match result {
            Err(e) => {
                return format!(
                    "ERROR {} {}",
                    e.code(),
                    truncate_chars(e.message(), ERROR_CHARS_MAX)
                )
            }
            Ok(r) => r,
        };
        if !r.columns.is_empty() {
            let row = |values: &Vec<shopsim_sim::db::Value>| -> String {
                r.columns
                    .iter()
                    .zip(values)
                    .map(|(c, v)| format!("{c}={}", literal(self.kind, v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            return match r.rows.len() {
                0 => "0 rows".to_string(),
                1 => format!("1 row: {}", row(&r.rows[0])),
                n => {
                    let mut shown: Vec<String> = r
                        .rows
                        .iter()
                        .take(OUTCOME_ROWS_MAX)
                        .map(|v| format!("({})", row(v)))
                        .collect();
                    if n > OUTCOME_ROWS_MAX {
                        shown.push(format!("… {} more", n - OUTCOME_ROWS_MAX));
                    }
                    format!("{n} rows: {}", shown.join(", "))
                }
            };
        }
        let writes = ["insert", "update", "delete", "replace"]
            .iter()
            .any(|w| first_word(sql).eq_ignore_ascii_case(w));
        if !writes {
            return "ok".to_string();
        }
        match r.last_insert_id {
            Some(id) if r.rows_affected > 0 => format!("{} affected, id {id}", r.rows_affected),
            _ => format!("{} affected", r.rows_affected),
        }
    }

    /// For a statement that waited: how long, on what, and what ended the wait.
    pub fn wait(&self, statement: &TranscriptStatement) -> Option<String> {
        let wait = statement.blocked.as_ref()?;
        let from = self.run_us(wait.at_us);
        let mut text = match statement.end.at_us() {
            Some(end) => {
                let to = self.run_us(end);
                format!(
                    "waited {} ms ({}..{} ms)",
                    ms(to.saturating_sub(from)),
                    ms(from),
                    ms(to)
                )
            }
            None => format!("waiting since {} ms", ms(from)),
        };
        if let Some(table) = &wait.table {
            let _ = write!(text, " for a row lock on {table}");
        }
        if let StatementEnd::Finished {
            cause,
            woken_by,
            event,
            ..
        } = &statement.end
        {
            match (cause, woken_by) {
                (FinishCause::Woken, Some(waker)) if *waker != statement.session => {
                    let _ = write!(text, ", woken by {}", self.waker(*waker, *event));
                }
                (FinishCause::Deadline, _) => {
                    text.push_str(", ended by a timer (lock wait timeout or deadlock check)")
                }
                _ => {}
            }
        }
        Some(text)
    }

    /// `s7 COMMIT (#18)`: the waker's statement (or disconnect) just before event `before`.
    fn waker(&self, session: u64, before: usize) -> String {
        let events = &self.transcript.events[..before.min(self.transcript.events.len())];
        for e in events.iter().rev() {
            match e {
                TranscriptEvent::Execute {
                    session: s,
                    sql,
                    tag,
                    ..
                } if *s == session => {
                    let what = truncate_chars(sql.trim(), REPEAT_CHARS_MAX);
                    return match tag {
                        Some(op) => format!("s{session}'s {what} (#{op})"),
                        None => format!("s{session}'s {what}"),
                    };
                }
                TranscriptEvent::Disconnect { session: s, .. } if *s == session => {
                    return format!("s{session}'s disconnect (its transaction rolled back)");
                }
                _ => {}
            }
        }
        format!("s{session}")
    }

    /// The lines of `statements` (indexes into [`Self::statements`]) interleaved in server
    /// order: one per statement, and a second where a lock wait ended.
    pub fn lines(&self, statements: impl Iterator<Item = usize>) -> Vec<String> {
        let mut lines: Vec<(usize, String)> = Vec::new();
        for i in statements {
            let s = &self.statements[i];
            let head = |at_us: u64| {
                format!(
                    "{:>10.3}  {:<14} {:<6} ",
                    self.run_us(at_us) as f64 / 1000.0,
                    self.session(s),
                    s.tag.map_or("-".to_string(), |op| format!("#{op}"))
                )
            };
            match &s.blocked {
                None => lines.push((
                    s.event,
                    format!(
                        "{}{} => {}",
                        head(s.executed_us),
                        self.sql(s),
                        self.outcome(s)
                    ),
                )),
                Some(wait) => {
                    let table = wait
                        .table
                        .as_ref()
                        .map_or(String::new(), |t| format!(" on {t}"));
                    lines.push((
                        s.event,
                        format!(
                            "{}{} => waits for a row lock{table}",
                            head(s.executed_us),
                            self.sql(s)
                        ),
                    ));
                    let end_event = s.end.event().unwrap_or(usize::MAX);
                    let end_us = s.end.at_us().unwrap_or(wait.at_us);
                    lines.push((
                        end_event,
                        format!(
                            "{}^ {} => {}; {}",
                            head(end_us),
                            truncate_chars(&self.sql(s), REPEAT_CHARS_MAX),
                            self.outcome(s),
                            self.wait(s).unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        // Event indexes are unique per line, except a pending wait's end (`usize::MAX`).
        lines.sort_by_key(|(event, _)| *event);
        lines.into_iter().map(|(_, line)| line).collect()
    }
}

/// The first word of a statement, lowercase or not.
fn first_word(sql: &str) -> &str {
    sql.trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// The app node that served each operation that ran a statement: the `application_name` of
/// its first tagged statement (a request runs on one node, so all of them name the same).
pub fn apps_by_op<'a>(nodes: &'a [DbNode<'_>]) -> BTreeMap<u64, &'a str> {
    let mut apps = BTreeMap::new();
    for s in nodes.iter().flat_map(|n| &n.statements) {
        if let (Some(tag), Some(application)) = (s.tag, &s.application) {
            let first = *apps.entry(tag).or_insert(application.as_str());
            assert_eq!(first, application, "one request, one app node");
        }
    }
    apps
}

/// The legend above a listing.
const LEGEND: &str = "  (time: virtual ms of the run; sN@name: database session N of a \
                      connection from name; #N: the history operation that issued it; \
                      ^: where a lock wait ended)";

/// `replay --trace`'s database part: every node's statements, then those of the operations
/// the witness names (`named`), with the operations they belong to.
pub fn trace(nodes: &[DbNode<'_>], history: &History, named: &BTreeSet<usize>) -> String {
    let mut out = String::new();
    for node in nodes {
        let sessions: BTreeSet<u64> = node.statements.iter().map(|s| s.session).collect();
        let _ = writeln!(
            out,
            "\ndatabase {} ({}): {} statements in {} sessions, in the order the server ran them",
            node.name,
            node.transcript.profile.name(),
            node.statements.len(),
            sessions.len()
        );
        let _ = writeln!(out, "{LEGEND}");
        for line in node.lines(0..node.statements.len()) {
            let _ = writeln!(out, "{line}");
        }
    }
    if named.is_empty() {
        return out;
    }
    let tags: BTreeSet<u64> = named.iter().map(|&i| i as u64).collect();
    let apps = apps_by_op(nodes);
    let _ = writeln!(out, "\nthe witness's operations in the database:");
    for op in history.ops.iter().filter(|op| named.contains(&op.index)) {
        let app = apps
            .get(&(op.index as u64))
            .map_or(String::new(), |a| format!(" via {a}"));
        let status = op.status.map_or("no answer".to_string(), |s| s.to_string());
        let done = op
            .complete_us
            .map_or("never".to_string(), |c| format!("{} ms", ms(c)));
        let _ = writeln!(
            out,
            "  #{} {} {}{app}: {} ms .. {done}, {status}",
            op.index,
            op.process,
            op.kind,
            ms(op.invoke_us)
        );
    }
    for node in nodes {
        let mine: Vec<usize> = (0..node.statements.len())
            .filter(|&i| node.statements[i].tag.is_some_and(|t| tags.contains(&t)))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\ndatabase {}: the {} statements of the witness's operations",
            node.name,
            mine.len()
        );
        for line in node.lines(mine.into_iter()) {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shopsim_sim::db::server::transcript::TranscriptSetup;
    use shopsim_sim::db::{Profile, Value};

    fn execute(
        session: u64,
        sql: &str,
        params: Vec<Value>,
        at_us: u64,
        tag: u64,
    ) -> TranscriptEvent {
        TranscriptEvent::Execute {
            session,
            sql: sql.to_string(),
            params,
            at_us,
            tag: Some(tag),
            application: Some(format!("app-{session}")),
        }
    }

    fn finish(session: u64, result: QueryResult, at_us: u64) -> TranscriptEvent {
        TranscriptEvent::Finish {
            session,
            result: Ok(result),
            cause: FinishCause::Immediate,
            at_us,
            woken_by: None,
        }
    }

    fn stock(reserved: i64) -> QueryResult {
        QueryResult {
            columns: vec!["stock".into(), "reserved".into()],
            rows: vec![vec![Value::Int(5), Value::Int(reserved)]],
            ..QueryResult::default()
        }
    }

    fn affected(n: u64) -> QueryResult {
        QueryResult {
            rows_affected: n,
            ..QueryResult::default()
        }
    }

    /// Two sessions read the same stock, then both write what they read: the listing shows
    /// the reads, the second update's wait on the first's row lock, and the COMMIT that
    /// ended it; the witness part keeps the statements of the named operations only.
    #[test]
    fn a_lost_update_reads_in_server_order() {
        let select = "select stock, reserved from products where id = $1";
        let update = "update products set reserved = $1 where id = $2";
        let transcript = Transcript {
            profile: Profile::PgRc,
            read_only: false,
            setup: TranscriptSetup::default(),
            origin_run_us: 5_000,
            events: vec![
                TranscriptEvent::Connect {
                    session: 1,
                    at_us: 0,
                },
                TranscriptEvent::Connect {
                    session: 2,
                    at_us: 0,
                },
                execute(1, select, vec![Value::Int(1)], 1_000, 7),
                finish(1, stock(0), 1_000),
                execute(2, select, vec![Value::Int(1)], 1_200, 8),
                finish(2, stock(0), 1_200),
                execute(1, update, vec![Value::Int(1), Value::Int(1)], 1_500, 7),
                finish(1, affected(1), 1_500),
                execute(2, update, vec![Value::Int(1), Value::Int(1)], 1_700, 8),
                TranscriptEvent::Block {
                    session: 2,
                    at_us: 1_700,
                    table: Some("products".into()),
                },
                execute(1, "COMMIT", vec![], 3_000, 7),
                finish(1, affected(0), 3_000),
                TranscriptEvent::Finish {
                    session: 2,
                    result: Ok(affected(1)),
                    cause: FinishCause::Woken,
                    at_us: 3_000,
                    woken_by: Some(1),
                },
                execute(2, "insert into t (a) values ('x''y')", vec![], 3_200, 8),
                TranscriptEvent::Finish {
                    session: 2,
                    result: Err(DbError::new(
                        "23505",
                        "duplicate key value violates unique constraint",
                    )),
                    cause: FinishCause::Immediate,
                    at_us: 3_200,
                    woken_by: None,
                },
                execute(3, "select 1", vec![], 3_300, 9),
                finish(3, affected(0), 3_300),
            ],
        };
        let transcripts = [transcript];
        let nodes = nodes(&transcripts);
        let named: BTreeSet<usize> = [7, 8].into_iter().collect();
        let out = trace(&nodes, &History::default(), &named);
        expect_test::expect![[r#"

            database primary (pg_rc): 7 statements in 3 sessions, in the order the server ran them
              (time: virtual ms of the run; sN@name: database session N of a connection from name; #N: the history operation that issued it; ^: where a lock wait ended)
                 6.000  s1@app-1       #7     select stock, reserved from products where id = 1 => 1 row: stock=5 reserved=0
                 6.200  s2@app-2       #8     select stock, reserved from products where id = 1 => 1 row: stock=5 reserved=0
                 6.500  s1@app-1       #7     update products set reserved = 1 where id = 1 => 1 affected
                 6.700  s2@app-2       #8     update products set reserved = 1 where id = 1 => waits for a row lock on products
                 8.000  s1@app-1       #7     COMMIT => ok
                 8.000  s2@app-2       #8     ^ update products set reserved = 1 where id = 1 => 1 affected; waited 1.300 ms (6.700..8.000 ms) for a row lock on products, woken by s1's COMMIT (#7)
                 8.200  s2@app-2       #8     insert into t (a) values ('x''y') => ERROR 23505 duplicate key value violates unique constraint
                 8.300  s3@app-3       #9     select 1 => ok

            the witness's operations in the database:

            database primary: the 6 statements of the witness's operations
                 6.000  s1@app-1       #7     select stock, reserved from products where id = 1 => 1 row: stock=5 reserved=0
                 6.200  s2@app-2       #8     select stock, reserved from products where id = 1 => 1 row: stock=5 reserved=0
                 6.500  s1@app-1       #7     update products set reserved = 1 where id = 1 => 1 affected
                 6.700  s2@app-2       #8     update products set reserved = 1 where id = 1 => waits for a row lock on products
                 8.000  s1@app-1       #7     COMMIT => ok
                 8.000  s2@app-2       #8     ^ update products set reserved = 1 where id = 1 => 1 affected; waited 1.300 ms (6.700..8.000 ms) for a row lock on products, woken by s1's COMMIT (#7)
                 8.200  s2@app-2       #8     insert into t (a) values ('x''y') => ERROR 23505 duplicate key value violates unique constraint
        "#]]
        .assert_eq(&out);
        // The facts the snapshot shows, whatever its layout: both reads before either write,
        // and the second write after the first's COMMIT.
        let at = |needle: &str| out.find(needle).unwrap_or_else(|| panic!("{needle}"));
        assert!(at("s2@app-2       #8     select") < at("s1@app-1       #7     update"));
        assert!(at("#7     COMMIT") < at("^ update"));
    }
}
