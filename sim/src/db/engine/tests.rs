//! Engine tests beyond the isolation scripts: the SQL subset, errors with their real codes,
//! waits, timeouts, disconnects, crashes and replicas.

use std::time::Duration;

use super::*;
use crate::db::storage::{Key, PURGE_THRESHOLD_WRITES};

/// A database with a `t(id, v, name)` table and a few sessions, driven statement by statement.
struct T {
    db: Database,
    now: Duration,
}

impl T {
    fn new(profile: Profile) -> T {
        let mut db = Database::new(profile, DbConfig::default());
        let serial = if profile.is_postgres() {
            "id bigserial primary key"
        } else {
            "id bigint auto_increment primary key"
        };
        db.execute_setup(
            &format!(
                "create table t ({serial}, v int not null default 0, name text, unique (name))"
            ),
            &[],
        )
        .unwrap();
        db.execute_setup("create index t_v on t (v)", &[]).unwrap();
        T {
            db,
            now: Duration::ZERO,
        }
    }

    fn p(&self, n: usize) -> String {
        if self.db.profile().is_postgres() {
            format!("${n}")
        } else {
            "?".to_string()
        }
    }

    fn exec(&mut self, s: SessionId, sql: &str, params: &[Value]) -> Exec {
        self.db.execute(s, sql, params, self.now)
    }

    #[track_caller]
    fn ok(&mut self, s: SessionId, sql: &str, params: &[Value]) -> QueryResult {
        match self.exec(s, sql, params) {
            Exec::Done(Ok(r)) => r,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[track_caller]
    fn err(&mut self, s: SessionId, sql: &str, params: &[Value]) -> String {
        match self.exec(s, sql, params) {
            Exec::Done(Err(e)) => e.code().to_string(),
            other => panic!("{sql}: expected an error, got {other:?}"),
        }
    }

    #[track_caller]
    fn blocked(&mut self, s: SessionId, sql: &str, params: &[Value]) {
        let exec = self.exec(s, sql, params);
        assert_eq!(exec, Exec::Blocked, "{sql}");
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.db.advance(self.now);
    }

    fn values(&self) -> Vec<(i64, i64)> {
        self.db
            .table_rows("t")
            .unwrap()
            .iter()
            .map(|r| (r[0].as_int().unwrap(), r[1].as_int().unwrap()))
            .collect()
    }
}

fn int(i: i64) -> Value {
    Value::Int(i)
}

#[test]
fn sql_subset_on_both_engines() {
    for profile in [Profile::PgRc, Profile::MariaRr] {
        let mut t = T::new(profile);
        let s = t.db.connect();
        let insert = format!(
            "insert into t (v, name) values ({}, 'a'), ({}, 'b'), (30, NULL)",
            t.p(1),
            t.p(2)
        );
        let r = t.ok(s, &insert, &[int(10), int(20)]);
        assert_eq!(r.rows_affected, 3);
        assert_eq!(r.last_insert_id, Some(1));
        let r = t.ok(s, "select count(*), sum(v), min(v), max(name) from t", &[]);
        assert_eq!(
            r.rows,
            vec![vec![int(3), int(60), int(10), Value::from("b")]]
        );
        let r = t.ok(
            s,
            "select id, v from t where v between 15 and 40 or name is null order by v desc limit 1 offset 1",
            &[],
        );
        assert_eq!(r.rows, vec![vec![int(2), int(20)]]);
        let r = t.ok(s, "select name from t where id in (3, 1) order by id", &[]);
        assert_eq!(r.rows, vec![vec![Value::from("a")], vec![Value::Null]]);
        // Affected rows: PostgreSQL counts matched rows, MariaDB changed rows.
        let r = t.ok(s, "update t set v = v where id = 1", &[]);
        assert_eq!(r.rows_affected, u64::from(profile.is_postgres()));
        let r = t.ok(s, "update t set v = v + 1 where v >= 20", &[]);
        assert_eq!(r.rows_affected, 2);
        let r = t.ok(s, "delete from t where v % 3 = 0", &[]);
        assert_eq!(r.rows_affected, 1, "only 21 % 3 = 0");
        assert_eq!(t.values(), vec![(1, 10), (3, 31)]);
        let r = t.ok(
            s,
            "insert into t (v, name) values (5, 'c') returning id, v",
            &[],
        );
        assert_eq!(r.rows, vec![vec![int(4), int(5)]]);
        let r = t.ok(s, "select 1 + 2 as three", &[]);
        assert_eq!(r.columns, vec!["three"]);
        assert_eq!(r.rows, vec![vec![int(3)]]);
    }
}

#[test]
fn duplicates_fail_or_are_skipped_on_request() {
    for (profile, ignore, code) in [
        (
            Profile::PgRc,
            "insert into t (v, name) values (1, 'a') on conflict do nothing",
            "23505",
        ),
        (
            Profile::MariaRr,
            "insert ignore into t (v, name) values (1, 'a')",
            "1062",
        ),
    ] {
        let mut t = T::new(profile);
        let s = t.db.connect();
        t.ok(s, "insert into t (v, name) values (1, 'a')", &[]);
        assert_eq!(
            t.err(s, "insert into t (v, name) values (2, 'a')", &[]),
            code
        );
        assert_eq!(t.ok(s, ignore, &[]).rows_affected, 0);
        assert_eq!(t.err(s, "insert into t (id, v) values (1, 3)", &[]), code);
        assert_eq!(t.values(), vec![(1, 1)]);
    }
}

#[test]
fn an_insert_waits_for_an_uncommitted_duplicate() {
    for profile in [Profile::PgRc, Profile::MariaRr] {
        for commit in [true, false] {
            let mut t = T::new(profile);
            let (a, b) = (t.db.connect(), t.db.connect());
            t.ok(a, "begin", &[]);
            t.ok(a, "insert into t (v, name) values (1, 'k')", &[]);
            t.blocked(b, "insert into t (v, name) values (2, 'k')", &[]);
            t.ok(a, if commit { "commit" } else { "rollback" }, &[]);
            let completions = t.db.take_completions();
            assert_eq!(completions.len(), 1);
            assert_eq!(completions[0].0, b);
            match &completions[0].1 {
                Err(e) => assert!(commit && e.is_unique_violation(), "{profile}: {e}"),
                Ok(r) => assert!(!commit && r.rows_affected == 1, "{profile}: {r:?}"),
            }
        }
    }
}

#[test]
fn postgres_error_aborts_the_block_until_rollback_or_savepoint() {
    let mut t = T::new(Profile::PgRc);
    let s = t.db.connect();
    t.ok(s, "insert into t (v, name) values (1, 'a')", &[]);
    t.ok(s, "begin", &[]);
    t.ok(s, "update t set v = 2 where id = 1", &[]);
    t.ok(s, "savepoint before_dup", &[]);
    assert_eq!(
        t.err(s, "insert into t (v, name) values (3, 'a')", &[]),
        "23505"
    );
    assert_eq!(t.err(s, "select * from t", &[]), "25P02");
    t.ok(s, "rollback to savepoint before_dup", &[]);
    t.ok(s, "commit", &[]);
    assert_eq!(t.values(), vec![(1, 2)]);
    // Without a savepoint the block is lost: COMMIT rolls back.
    t.ok(s, "begin", &[]);
    t.ok(s, "update t set v = 5 where id = 1", &[]);
    assert_eq!(t.err(s, "select nope from t", &[]), "42703");
    assert_eq!(t.err(s, "update t set v = 6 where id = 1", &[]), "25P02");
    t.ok(s, "commit", &[]);
    assert!(!t.db.in_transaction(s));
    assert_eq!(t.values(), vec![(1, 2)]);
}

#[test]
fn innodb_rolls_back_only_the_failed_statement() {
    let mut t = T::new(Profile::MariaRr);
    let s = t.db.connect();
    t.ok(s, "insert into t (v, name) values (1, 'a')", &[]);
    t.ok(s, "begin", &[]);
    t.ok(s, "update t set v = 2 where id = 1", &[]);
    assert_eq!(
        t.err(s, "insert into t (v, name) values (3, 'a')", &[]),
        "1062"
    );
    t.ok(s, "update t set v = v + 1 where id = 1", &[]);
    t.ok(s, "commit", &[]);
    assert_eq!(t.values(), vec![(1, 3)]);
}

#[test]
fn nowait_fails_and_skip_locked_skips() {
    for (profile, code) in [(Profile::PgRc, "55P03"), (Profile::MariaRr, "1205")] {
        let mut t = T::new(profile);
        let (a, b) = (t.db.connect(), t.db.connect());
        t.ok(a, "insert into t (v) values (1), (2), (3)", &[]);
        t.ok(a, "begin", &[]);
        t.ok(a, "select * from t where id = 1 for update", &[]);
        t.ok(b, "begin", &[]);
        assert_eq!(
            t.err(b, "select * from t where id = 1 for update nowait", &[]),
            code
        );
        if profile.is_postgres() {
            t.ok(b, "rollback", &[]);
            t.ok(b, "begin", &[]);
        }
        let r = t.ok(
            b,
            "select id from t order by id limit 1 for update skip locked",
            &[],
        );
        assert_eq!(r.rows, vec![vec![int(2)]], "{profile}");
    }
}

#[test]
fn lock_wait_timeout_ends_the_statement_not_the_transaction_on_innodb() {
    let mut t = T::new(Profile::MariaRr);
    let (a, b) = (t.db.connect(), t.db.connect());
    t.ok(a, "insert into t (v) values (1), (2)", &[]);
    t.ok(a, "begin", &[]);
    t.ok(a, "update t set v = 10 where id = 1", &[]);
    t.ok(b, "set innodb_lock_wait_timeout = 1", &[]);
    t.ok(b, "begin", &[]);
    t.ok(b, "update t set v = 20 where id = 2", &[]);
    t.blocked(b, "update t set v = 11 where id = 1", &[]);
    assert_eq!(t.db.next_deadline(), Some(Duration::from_secs(1)));
    t.advance(Duration::from_millis(999));
    assert!(t.db.take_completions().is_empty());
    t.advance(Duration::from_millis(1));
    let completions = t.db.take_completions();
    assert_eq!(completions[0].1.as_ref().unwrap_err().code(), "1205");
    assert!(t.db.in_transaction(b));
    t.ok(b, "commit", &[]);
    t.ok(a, "commit", &[]);
    assert_eq!(t.values(), vec![(1, 10), (2, 20)]);
}

#[test]
fn postgres_finds_a_deadlock_after_deadlock_timeout() {
    let mut t = T::new(Profile::PgRc);
    let (a, b) = (t.db.connect(), t.db.connect());
    t.ok(a, "insert into t (v) values (1), (2)", &[]);
    t.ok(a, "begin", &[]);
    t.ok(b, "begin", &[]);
    t.ok(a, "update t set v = 10 where id = 1", &[]);
    t.ok(b, "update t set v = 20 where id = 2", &[]);
    t.blocked(a, "update t set v = 10 where id = 2", &[]);
    t.advance(Duration::from_millis(100));
    t.blocked(b, "update t set v = 20 where id = 1", &[]);
    // a's timer fires first (1 s after it began waiting): a is the victim, b proceeds.
    t.advance(Duration::from_millis(899));
    assert!(t.db.take_completions().is_empty());
    t.advance(Duration::from_millis(1));
    let completions = t.db.take_completions();
    assert_eq!(completions.len(), 2, "{completions:?}");
    assert_eq!(completions[0].0, a);
    assert_eq!(completions[0].1.as_ref().unwrap_err().code(), "40P01");
    assert_eq!(completions[1].0, b);
    assert!(completions[1].1.is_ok());
    assert_eq!(t.db.stats().deadlocks, 1);
}

/// A client gone while its statement waits does not free the transaction's locks: the
/// statement waits on (the server does not read the closed socket while it sleeps on a lock),
/// and the session ends, rolling back, only when the statement does.
#[test]
fn disconnect_while_blocked_keeps_the_locks_until_the_statement_ends() {
    for profile in [Profile::MariaRr, Profile::PgRc] {
        let mut t = T::new(profile);
        let (a, b, c) = (t.db.connect(), t.db.connect(), t.db.connect());
        t.ok(a, "insert into t (v) values (1), (2)", &[]);
        t.ok(a, "begin", &[]);
        t.ok(a, "update t set v = 10 where id = 1", &[]);
        t.ok(b, "begin", &[]);
        t.ok(b, "update t set v = 20 where id = 2", &[]);
        t.blocked(b, "update t set v = 11 where id = 1", &[]);
        t.blocked(c, "update t set v = 21 where id = 2", &[]);
        t.db.disconnect(b);
        assert!(t.db.has_session(b), "{profile:?}: orphaned, still waiting");
        assert!(t.db.take_completions().is_empty(), "{profile:?}");
        assert!(t.db.is_blocked(c), "{profile:?}: b still holds row 2");
        // a's commit lets b's update run; b then ends, rolling back, and c gets row 2.
        t.ok(a, "commit", &[]);
        let completions = t.db.take_completions();
        assert_eq!(completions.len(), 1, "{profile:?}: {completions:?}");
        assert_eq!(completions[0].0, c);
        assert!(!t.db.has_session(b), "{profile:?}");
        assert_eq!(t.values(), vec![(1, 10), (2, 21)], "{profile:?}");
    }
}

/// An orphaned autocommit statement that gets its lock runs and commits, though no client
/// hears of it; an idle session closes at once.
#[test]
fn an_orphaned_autocommit_statement_still_commits() {
    for profile in [Profile::MariaRr, Profile::PgRc] {
        let mut t = T::new(profile);
        let (a, b, c) = (t.db.connect(), t.db.connect(), t.db.connect());
        t.ok(a, "insert into t (v) values (1)", &[]);
        t.ok(a, "begin", &[]);
        t.ok(a, "update t set v = 10 where id = 1", &[]);
        t.blocked(b, "update t set v = v + 5 where id = 1", &[]);
        t.db.disconnect(b);
        t.db.disconnect(c);
        assert!(
            !t.db.has_session(c),
            "{profile:?}: idle sessions close at once"
        );
        t.ok(a, "commit", &[]);
        assert!(t.db.take_completions().is_empty(), "{profile:?}");
        assert!(!t.db.has_session(b), "{profile:?}");
        assert_eq!(t.values(), vec![(1, 15)], "{profile:?}");
    }
}

#[test]
fn a_crash_keeps_committed_data_only() {
    let mut t = T::new(Profile::PgRc);
    let a = t.db.connect();
    t.ok(a, "insert into t (v) values (1)", &[]);
    t.ok(a, "begin", &[]);
    t.ok(a, "update t set v = 2 where id = 1", &[]);
    t.db.crash();
    assert_eq!(t.db.session_count(), 0);
    let b = t.db.connect();
    t.ok(b, "update t set v = 3 where id = 1", &[]);
    assert_eq!(t.values(), vec![(1, 3)]);
}

#[test]
fn a_replica_applying_the_commit_log_has_the_same_rows() {
    for profile in [Profile::PgRc, Profile::MariaRr] {
        let mut t = T::new(profile);
        let a = t.db.connect();
        t.ok(a, "insert into t (v, name) values (1, 'x'), (2, 'y')", &[]);
        t.ok(a, "begin", &[]);
        t.ok(a, "update t set v = 5 where name = 'x'", &[]);
        t.ok(a, "delete from t where id = 2", &[]);
        t.ok(a, "commit", &[]);
        let mut replica = Database::new(profile, DbConfig::default());
        for record in t.db.commit_log() {
            replica.apply_commit_record(record);
        }
        assert_eq!(replica.table_rows("t"), t.db.table_rows("t"));
        assert_eq!(replica.commit_log().len(), t.db.commit_log().len());
    }
}

#[test]
fn bad_statements_get_the_engines_own_errors() {
    for (profile, codes) in [
        (
            Profile::PgRc,
            [
                "42P01", "42703", "23502", "22P02", "08P01", "42704", "42601", "0A000",
            ],
        ),
        (
            Profile::MariaRr,
            [
                "1146", "1054", "1048", "1366", "1210", "1193", "1064", "1235",
            ],
        ),
    ] {
        let mut t = T::new(profile);
        let s = t.db.connect();
        let statements = [
            "select * from nope".to_string(),
            "select nope from t".to_string(),
            "insert into t (v) values (NULL)".to_string(),
            "insert into t (v) values ('ten')".to_string(),
            format!("select * from t where id = {}", t.p(1)),
            "set no_such_setting = 1".to_string(),
            "selec 1".to_string(),
            "select * from t group by v".to_string(),
        ];
        for (sql, code) in statements.iter().zip(codes) {
            assert_eq!(t.err(s, sql, &[]), code, "{profile}: {sql}");
        }
    }
}

#[test]
fn session_settings_are_checked_and_local_ones_end_with_the_transaction() {
    let mut t = T::new(Profile::PgRc);
    let s = t.db.connect();
    t.ok(s, "set lock_timeout = '200ms'", &[]);
    assert_eq!(t.err(s, "set lock_timeout = 'soon'", &[]), "22023");
    t.ok(s, "set app.tenant_id = '7'", &[]);
    assert_eq!(
        t.db.session_setting(s, "app.tenant_id"),
        Some(Value::from("7"))
    );
    t.ok(s, "begin", &[]);
    t.ok(s, "select * from t", &[]);
    assert_eq!(
        t.err(s, "set transaction isolation level serializable", &[]),
        "25001"
    );
    t.ok(s, "rollback", &[]);
    t.ok(s, "begin", &[]);
    t.ok(s, "set local deadlock_timeout = '2s'", &[]);
    t.ok(s, "commit", &[]);
    let mut m = T::new(Profile::MariaRr);
    let s = m.db.connect();
    assert_eq!(m.err(s, "set innodb_lock_wait_timeout = 0", &[]), "1231");
    m.ok(s, "set @tenant_id = 3", &[]);
    assert_eq!(m.db.session_setting(s, "@tenant_id"), Some(int(3)));
}

/// One session of the transfer property: the statements of its current transfer.
#[derive(Debug, Default)]
struct Transferer {
    statements: Vec<String>,
    next: usize,
    waiting: bool,
}

/// Runs transfers `(session, from, to)` in the given interleaving; every transfer runs as a
/// transaction that fails over to ROLLBACK on any error. Returns the committed total and
/// whether every session finished.
fn run_transfers(profile: Profile, script: &[(usize, i64, i64)]) -> (i64, bool) {
    let mut t = T::new(profile);
    t.db.execute_setup("insert into t (v) values (100), (100), (100), (100)", &[])
        .unwrap();
    let sessions: Vec<SessionId> = (0..4).map(|_| t.db.connect()).collect();
    let mut state: Vec<Transferer> = (0..4).map(|_| Transferer::default()).collect();
    let mut pending: Vec<std::collections::VecDeque<(i64, i64)>> = vec![Default::default(); 4];
    for &(s, from, to) in script {
        pending[s].push_back((from + 1, to + 1));
    }
    let mut order: Vec<usize> = script.iter().map(|&(s, _, _)| s).collect();
    // After the scripted interleaving, let everyone finish in turn.
    for _ in 0..200 {
        order.extend(0..4);
    }
    for s in order {
        for (id, result) in t.db.take_completions() {
            let i = sessions.iter().position(|&x| x == id).unwrap();
            state[i].waiting = false;
            match result {
                Ok(_) => state[i].next += 1,
                Err(_) => {
                    state[i].statements = vec!["rollback".to_string()];
                    state[i].next = 0;
                }
            }
        }
        let st = &mut state[s];
        if st.waiting {
            t.advance(Duration::from_millis(400));
            continue;
        }
        if st.next >= st.statements.len() {
            let Some((from, to)) = pending[s].pop_front() else {
                continue;
            };
            st.statements = vec![
                "begin".to_string(),
                format!("update t set v = v - 1 where id = {from}"),
                format!("update t set v = v + 1 where id = {to}"),
                "commit".to_string(),
            ];
            st.next = 0;
        }
        let sql = st.statements[st.next].clone();
        match t.db.execute(sessions[s], &sql, &[], t.now) {
            Exec::Done(Ok(_)) => st.next += 1,
            Exec::Done(Err(_)) => {
                st.statements = vec!["rollback".to_string()];
                st.next = 0;
            }
            Exec::Blocked => st.waiting = true,
        }
    }
    let finished = state
        .iter()
        .zip(&pending)
        .all(|(st, p)| !st.waiting && st.next >= st.statements.len() && p.is_empty());
    let total = t.values().iter().map(|(_, v)| v).sum();
    (total, finished)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// Concurrent transfers under every profile: deadlocks, serialization failures and waits
    /// happen, but no committed transfer is lost or half-applied, and every session finishes.
    #[test]
    fn transfers_conserve_the_total_under_every_profile(
        script in proptest::collection::vec((0usize..4, 0i64..4, 0i64..4), 1..30)
    ) {
        for profile in Profile::ALL {
            let (total, finished) = run_transfers(profile, &script);
            proptest::prop_assert!(finished, "{} did not finish", profile);
            proptest::prop_assert_eq!(total, 400, "{}", profile);
        }
    }
}

const FRAGMENTS: [&str; 32] = [
    "select",
    "insert",
    "update",
    "delete",
    "into",
    "from",
    "where",
    "set",
    "values",
    "t",
    "v",
    "id",
    "name",
    "=",
    "(",
    ")",
    ",",
    "1",
    "'x'",
    "null",
    "for update",
    "order by",
    "limit",
    "and",
    "or",
    "begin",
    "commit",
    "rollback",
    "savepoint s",
    "+",
    "*",
    "group by",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// Random token soup and random well-formed statements, from random sessions: errors are
    /// values, never panics, and a crash keeps exactly the committed rows.
    #[test]
    fn random_statements_never_panic_and_committed_data_survives(
        steps in proptest::collection::vec(
            (0usize..3, proptest::collection::vec(0usize..FRAGMENTS.len(), 0..12), 0u8..6, 0i64..6),
            1..60
        ),
        pg in proptest::bool::ANY,
    ) {
        let profile = if pg { Profile::PgRc } else { Profile::MariaRr };
        let mut t = T::new(profile);
        let sessions: Vec<SessionId> = (0..3).map(|_| t.db.connect()).collect();
        for (s, soup, kind, n) in steps {
            let session = sessions[s];
            if t.db.is_blocked(session) {
                t.advance(Duration::from_millis(400));
                continue;
            }
            let sql = match kind {
                0 => soup.iter().map(|&i| FRAGMENTS[i]).collect::<Vec<_>>().join(" "),
                1 => format!("insert into t (id, v, name) values ({n}, {n}, 'n{n}')"),
                2 => format!("update t set v = v + 1 where id = {n}"),
                3 => "begin".to_string(),
                4 => "commit".to_string(),
                _ => format!("delete from t where id = {n}"),
            };
            let _ = t.db.execute(session, &sql, &[], t.now);
            t.db.take_completions();
        }
        for s in sessions {
            t.db.disconnect(s);
        }
        let committed = t.db.table_rows("t").unwrap();
        t.db.crash();
        proptest::prop_assert_eq!(t.db.table_rows("t").unwrap(), committed);
    }
}

#[test]
fn session_settings_filter_queries_like_a_tenant_scope() {
    // Never set: PostgreSQL's current_setting() fails (42704), a MariaDB user variable is
    // NULL and nothing matches (both measured; `sim/conformance/crosscheck.toml`).
    for (profile, set, filter, unset_error) in [
        (
            Profile::PgRc,
            "set app.tenant_id = '2'",
            "select id from t where v = current_setting('app.tenant_id')::bigint",
            Some("42704"),
        ),
        (
            Profile::MariaRr,
            "set @tenant_id = 2",
            "select id from t where v = @tenant_id",
            None,
        ),
    ] {
        let mut t = T::new(profile);
        let s = t.db.connect();
        t.ok(s, "insert into t (v) values (1), (2), (2)", &[]);
        let unset = |t: &mut T, session| match unset_error {
            Some(code) => assert_eq!(t.err(session, filter, &[]), code),
            None => assert_eq!(
                t.ok(session, filter, &[]).rows.len(),
                0,
                "NULL matches nothing"
            ),
        };
        unset(&mut t, s);
        t.ok(s, set, &[]);
        assert_eq!(t.ok(s, filter, &[]).rows, vec![vec![int(2)], vec![int(3)]]);
        // Settings are per session.
        let other = t.db.connect();
        unset(&mut t, other);
    }
    // A cast of a column is evaluated per row on PostgreSQL; `::` is no MariaDB syntax.
    let mut t = T::new(Profile::PgRc);
    let s = t.db.connect();
    t.ok(s, "insert into t (v) values (1), (2)", &[]);
    assert_eq!(
        t.ok(s, "select id from t where v::text = '2'", &[]).rows,
        vec![vec![int(2)]]
    );
    let mut t = T::new(Profile::MariaRr);
    let s = t.db.connect();
    assert_eq!(
        t.err(s, "select id from t where v::text = '2'", &[]),
        "1064"
    );
}

#[test]
fn row_owners_name_every_owner_a_statement_read_or_wrote() {
    for profile in [Profile::PgRc, Profile::MariaRr] {
        let config = DbConfig {
            row_owner_column: Some("owner".to_string()),
            ..DbConfig::default()
        };
        let mut db = Database::new(profile, config);
        db.execute_setup(
            "create table o (id bigint primary key, owner bigint not null, v int not null)",
            &[],
        )
        .unwrap();
        db.execute_setup("create table plain (id bigint primary key)", &[])
            .unwrap();
        for (id, owner) in [(1, 7), (2, 7), (3, 9)] {
            db.execute_setup(
                &format!("insert into o (id, owner, v) values ({id}, {owner}, 1)"),
                &[],
            )
            .unwrap();
        }
        let s = db.connect();
        let mut ok = |sql: &str| match db.execute(s, sql, &[], Duration::ZERO) {
            Exec::Done(Ok(r)) => r.row_owners,
            other => panic!("{sql}: {other:?}"),
        };
        let (seven, nine) = (Value::Int(7), Value::Int(9));
        assert_eq!(ok("select id from o where owner = 7"), vec![seven.clone()]);
        // An aggregate returns no row of anyone's, but it read them all.
        assert_eq!(
            ok("select sum(v) from o"),
            vec![seven.clone(), nine.clone()]
        );
        // A write without the owner's filter touches another owner's row.
        assert_eq!(
            ok("update o set v = 2 where id >= 2"),
            vec![seven, nine.clone()]
        );
        assert_eq!(
            ok("select id from o order by id limit 1 offset 2"),
            vec![nine.clone()]
        );
        assert_eq!(
            ok("insert into o (id, owner, v) values (4, 9, 1)"),
            vec![nine]
        );
        assert_eq!(ok("delete from o where id = 99"), Vec::<Value>::new());
        assert_eq!(ok("select id from plain"), Vec::<Value>::new());
    }
}

#[test]
fn without_an_owner_column_results_name_no_owners() {
    let mut t = T::new(Profile::PgRc);
    let s = t.db.connect();
    t.ok(s, "insert into t (v, name) values (1, 'a')", &[]);
    assert!(t.ok(s, "select * from t", &[]).row_owners.is_empty());
}

#[test]
fn purge_keeps_a_churning_table_and_its_indexes_small() {
    for profile in [Profile::PgRc, Profile::MariaRr] {
        let mut t = T::new(profile);
        let a = t.db.connect();
        for _ in 0..10 {
            t.ok(a, "insert into t (v) values (0)", &[]);
        }
        let reader = t.db.connect();
        for i in 0..500 {
            let id = i % 10 + 1;
            t.ok(a, &format!("update t set v = {i} where id = {id}"), &[]);
            t.ok(
                a,
                &format!("insert into t (v, name) values (-1, 'n{i}')"),
                &[],
            );
            t.ok(a, "delete from t where v = -1", &[]);
            if i == 100 {
                // An old snapshot holds back what it can see.
                t.ok(reader, "begin", &[]);
                if profile.is_postgres() {
                    t.ok(
                        reader,
                        "set transaction isolation level repeatable read",
                        &[],
                    );
                }
                let seen = t.ok(reader, "select count(*) from t where v >= 0", &[]);
                assert_eq!(seen.rows, vec![vec![int(10)]], "{profile}");
            }
            if i == 200 {
                // Row 2 had v = 91 in the reader's snapshot (it became 101 at i = 101).
                let old = t.ok(reader, "select id from t where v = 91", &[]);
                assert_eq!(old.rows, vec![vec![int(2)]], "{profile}");
                t.ok(reader, "commit", &[]);
            }
        }
        t.ok(a, "update t set v = v + 1000 where id = 1", &[]);
        let now = t.ok(a, "select id from t where v = 491", &[]);
        assert_eq!(now.rows, vec![vec![int(2)]], "{profile}");
        let table = &t.db.tables["t"];
        let bound = 10 + PURGE_THRESHOLD_WRITES as usize * 4;
        assert!(
            table.rows.len() <= bound,
            "{profile}: {} rows",
            table.rows.len()
        );
        for (i, entries) in table.index_entries.iter().enumerate() {
            assert!(
                entries.len() <= bound,
                "{profile}: index {i}: {}",
                entries.len()
            );
        }
    }
}

#[test]
fn purge_keeps_an_index_record_that_ends_a_locked_gap() {
    let mut t = T::new(Profile::MariaRr);
    let (a, b, c) = (t.db.connect(), t.db.connect(), t.db.connect());
    t.ok(a, "insert into t (v) values (10), (20), (30)", &[]);
    // (20, 2) in t_v becomes dead, and the gap before it is locked.
    t.ok(b, "update t set v = 25 where id = 2", &[]);
    t.ok(a, "begin", &[]);
    t.ok(a, "select * from t where v = 15 for update", &[]);
    let t_v = t.db.tables["t"]
        .indexes
        .iter()
        .position(|i| i.name == "t_v")
        .unwrap();
    let dead: (Key, Key) = (vec![int(20)], vec![int(2)]);
    let churn = |t: &mut T| {
        for i in 0..200 {
            t.ok(b, &format!("update t set name = 'n{i}' where id = 3"), &[]);
        }
    };
    churn(&mut t);
    assert!(t.db.tables["t"].index_entries[t_v].contains(&dead));
    // The insert still falls into the locked gap before (20, 2), as before any purge.
    t.blocked(c, "insert into t (v) values (17)", &[]);
    t.ok(a, "commit", &[]);
    assert_eq!(t.db.take_completions().len(), 1);
    churn(&mut t);
    assert!(!t.db.tables["t"].index_entries[t_v].contains(&dead));
}
