//! Scripted tests of the server node and the client pool: each sets up one database node and a
//! few app nodes in one seeded runtime, plays a short race, and checks what the clients saw
//! (results, errors, virtual latency) and what the database kept.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use madsim::runtime::{NodeHandle, Runtime};
use madsim::time::{sleep, Instant};

use super::*;
use crate::db::client::{ClientError, DbClientConfig, DbConn, DbPool};

const DB_IP: &str = "10.0.0.1";

struct World {
    rt: Runtime,
    state: Arc<DbNodeState>,
    db_node: NodeHandle,
    app_count: u8,
}

impl World {
    fn new(seed: u64, profile: Profile, config: DbServerConfig) -> World {
        // DESIGN.md's one-way latency, 0.1–0.5 ms (madsim delivers no sooner than 1 ms).
        let mut sim_config = madsim::Config::default();
        sim_config.net.send_latency = Duration::from_micros(100)..Duration::from_micros(500);
        let rt = Runtime::with_seed_and_config(seed, sim_config);
        let state = DbNodeState::new(profile, DbConfig::default());
        let placeholder = if profile.is_postgres() {
            ["$1", "$2"]
        } else {
            ["?", "?"]
        };
        state.with_database(|db| {
            let session = db.connect();
            let create = "CREATE TABLE test (id INT PRIMARY KEY, value INT NOT NULL)";
            assert!(matches!(
                db.execute(session, create, &[], Duration::ZERO),
                Exec::Done(Ok(_))
            ));
            let insert = format!(
                "INSERT INTO test (id, value) VALUES ({}, {})",
                placeholder[0], placeholder[1]
            );
            for id in 1..=4 {
                let params = [Value::Int(id), Value::Int(0)];
                assert!(matches!(
                    db.execute(session, &insert, &params, Duration::ZERO),
                    Exec::Done(Ok(_))
                ));
            }
            db.disconnect(session);
        });
        let serve_state = state.clone();
        let db_node = rt
            .create_node()
            .name("db")
            .ip(DB_IP.parse().unwrap())
            .init(move || serve(serve_state.clone(), config.clone()))
            .build();
        World {
            rt,
            state,
            db_node,
            app_count: 0,
        }
    }

    fn app_node(&mut self) -> NodeHandle {
        self.app_count += 1;
        let ip: IpAddr = format!("10.0.1.{}", self.app_count).parse().unwrap();
        self.rt
            .create_node()
            .name(format!("app{}", self.app_count))
            .ip(ip)
            .build()
    }

    fn value(&self, id: i64) -> i64 {
        let rows = self.state.table_rows("test").unwrap();
        let row = rows
            .iter()
            .find(|row| row[0] == Value::Int(id))
            .expect("row exists");
        match row[1] {
            Value::Int(value) => value,
            ref other => panic!("value is not an int: {other:?}"),
        }
    }
}

fn client_config() -> DbClientConfig {
    DbClientConfig::new(SocketAddr::new(DB_IP.parse().unwrap(), PORT_DEFAULT))
}

fn pool() -> DbPool {
    DbPool::new(client_config())
}

const UPDATE: &str = "UPDATE test SET value = value + 1 WHERE id = $1";
const SELECT: &str = "SELECT value FROM test WHERE id = $1";

fn id(id: i64) -> [Value; 1] {
    [Value::Int(id)]
}

/// Waits for the server to bind before the first connection.
async fn settle() {
    sleep(Duration::from_millis(10)).await;
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap()
}

#[test]
fn lock_wait_shows_in_latency() {
    let mut world = World::new(1, Profile::PgRc, DbServerConfig::default());
    let app = world.app_node();
    let holder = app.spawn(async {
        settle().await;
        let pool = pool();
        let mut conn = pool.acquire().await.unwrap();
        conn.begin().await.unwrap();
        conn.execute(UPDATE, &id(1)).await.unwrap();
        sleep(Duration::from_millis(200)).await;
        conn.commit().await.unwrap();
    });
    let waiter = app.spawn(async {
        settle().await;
        sleep(Duration::from_millis(50)).await;
        let pool = pool();
        let mut conn = pool.acquire().await.unwrap();
        // Warm the connection so the measured latency is the statement's alone.
        conn.execute(SELECT, &id(2)).await.unwrap();
        let start = Instant::now();
        conn.execute(UPDATE, &id(1)).await.unwrap();
        start.elapsed()
    });
    let latency = world.rt.block_on(async move {
        holder.await.unwrap();
        waiter.await.unwrap()
    });
    // The holder keeps the row lock for 200 ms; the waiter arrives about 50 ms later.
    assert!(ms(latency) >= 100, "latency {latency:?} shows no lock wait");
    assert!(ms(latency) < 400, "latency {latency:?} too long");
    assert_eq!(world.value(1), 2);
}

#[test]
fn statement_cost_is_spent() {
    let mut world = World::new(2, Profile::PgRc, DbServerConfig::default());
    let app = world.app_node();
    let (read, commit) = world.rt.block_on(async move {
        app.spawn(async {
            settle().await;
            let pool = pool();
            let mut conn = pool.acquire().await.unwrap();
            conn.execute(SELECT, &id(1)).await.unwrap();
            let start = Instant::now();
            conn.execute(SELECT, &id(1)).await.unwrap();
            let read = start.elapsed();
            let start = Instant::now();
            conn.execute(UPDATE, &id(1)).await.unwrap();
            (read, start.elapsed())
        })
        .await
        .unwrap()
    });
    // An autocommit write pays a durable flush (>= 0.5 ms) on top of the round trip.
    assert!(read > Duration::ZERO);
    assert!(
        commit >= read + Duration::from_micros(500),
        "read {read:?}, commit {commit:?}"
    );
}

/// A client killed while its statement waits for a lock keeps its transaction's locks until
/// the statement ends, as on PostgreSQL and MariaDB, whose backends do not notice a closed
/// socket while they sleep on a lock: the statement runs once the holder commits, then the
/// session ends and rolls back, and only then does the next waiter get the row.
#[test]
fn killed_client_keeps_its_locks_until_its_blocked_statement_ends() {
    let mut world = World::new(3, Profile::PgRc, DbServerConfig::default());
    let holder_node = world.app_node();
    let victim_node = world.app_node();
    let other_node = world.app_node();
    // The holder locks row 1 and commits at 300 ms, after the victim's node is killed.
    let holder = holder_node.spawn(async {
        settle().await;
        let pool = pool();
        let mut conn = pool.acquire().await.unwrap();
        conn.begin().await.unwrap();
        conn.execute(UPDATE, &id(1)).await.unwrap();
        sleep(Duration::from_millis(300)).await;
        conn.commit().await.unwrap();
        Instant::now()
    });
    // The victim locks row 2, then blocks on row 1.
    victim_node.spawn(async {
        settle().await;
        sleep(Duration::from_millis(20)).await;
        let pool = pool();
        let mut conn = pool.acquire().await.unwrap();
        conn.begin().await.unwrap();
        conn.execute(UPDATE, &id(2)).await.unwrap();
        let _ = conn.execute(UPDATE, &id(1)).await;
        unreachable!("the victim's node is killed while blocked");
    });
    let other = other_node.spawn(async {
        settle().await;
        sleep(Duration::from_millis(60)).await;
        let pool = pool();
        let mut conn = pool.acquire().await.unwrap();
        conn.execute(UPDATE, &id(2)).await.unwrap();
        Instant::now()
    });
    let handle = world.rt.handle().clone();
    let victim_id = victim_node.id();
    let (killed_at, committed_at, done_at) = world.rt.block_on(async move {
        sleep(Duration::from_millis(100)).await;
        let killed_at = Instant::now();
        handle.kill(victim_id);
        let done_at = other.await.unwrap();
        (killed_at, holder.await.unwrap(), done_at)
    });
    assert!(committed_at > killed_at);
    assert!(
        done_at >= committed_at - Duration::from_millis(50),
        "other got row 2 {:?} after the kill, before the holder's commit {:?} after it",
        done_at - killed_at,
        committed_at - killed_at
    );
    assert!(
        ms(done_at - committed_at) < 100,
        "other waited {:?} after the commit",
        done_at - committed_at
    );
    assert_eq!(
        world.value(2),
        1,
        "only the other's update of row 2 is committed"
    );
    assert_eq!(
        world.value(1),
        1,
        "the holder's update; the victim's rolled back"
    );
}

#[test]
fn dropped_connection_rolls_back() {
    let mut world = World::new(4, Profile::PgRc, DbServerConfig::default());
    let app = world.app_node();
    let seen = world.rt.block_on(async move {
        app.spawn(async {
            settle().await;
            let pool = pool();
            let mut conn = pool.acquire().await.unwrap();
            conn.begin().await.unwrap();
            conn.execute(UPDATE, &id(1)).await.unwrap();
            drop(conn);
            // The row lock is free again at once: this would block otherwise.
            let mut conn = pool.acquire().await.unwrap();
            let start = Instant::now();
            conn.execute(UPDATE, &id(1)).await.unwrap();
            assert!(ms(start.elapsed()) < 100);
            conn.execute(SELECT, &id(1)).await.unwrap().rows
        })
        .await
        .unwrap()
    });
    assert_eq!(seen, vec![vec![Value::Int(1)]]);
    assert_eq!(world.value(1), 1);
}

fn connection_limit(profile: Profile, code: &str) {
    let config = DbServerConfig {
        max_connections: 2,
        ..DbServerConfig::default()
    };
    let mut world = World::new(5, profile, config);
    let app = world.app_node();
    let select = if profile.is_postgres() {
        SELECT.to_string()
    } else {
        SELECT.replace("$1", "?")
    };
    let errors = world.rt.block_on(async move {
        app.spawn(async move {
            settle().await;
            let pool = DbPool::new(DbClientConfig {
                pool_size: 3,
                ..client_config()
            });
            let mut conns: Vec<DbConn> = Vec::new();
            let mut errors = Vec::new();
            for _ in 0..3 {
                let mut conn = pool.acquire().await.unwrap();
                match conn.execute(&select, &id(1)).await {
                    Ok(_) => conns.push(conn),
                    Err(error) => errors.push(error),
                }
            }
            errors
        })
        .await
        .unwrap()
    });
    assert_eq!(errors.len(), 1);
    let error = errors[0].db_error().expect("the server answered");
    assert_eq!(error.code(), code);
    assert!(!errors[0].is_ambiguous());
}

#[test]
fn connection_limit_postgres() {
    connection_limit(Profile::PgRc, "53300");
}

#[test]
fn connection_limit_mariadb() {
    connection_limit(Profile::MariaRr, "1040");
}

#[test]
fn crash_keeps_committed_loses_open_and_restart_serves() {
    let mut world = World::new(6, Profile::PgRc, DbServerConfig::default());
    let app = world.app_node();
    let handle = world.rt.handle().clone();
    let db_id = world.db_node.id();
    let client = app.spawn(async {
        settle().await;
        let pool = pool();
        let mut conn = pool.acquire().await.unwrap();
        conn.execute(UPDATE, &id(1)).await.unwrap();
        conn.begin().await.unwrap();
        conn.execute(UPDATE, &id(2)).await.unwrap();
        // The node crashes while this transaction is open.
        sleep(Duration::from_millis(100)).await;
        let lost = conn.execute(UPDATE, &id(3)).await.unwrap_err();
        // After the restart an idle pooled connection is reopened transparently.
        sleep(Duration::from_millis(200)).await;
        let rows = conn.execute(SELECT, &id(2)).await.unwrap().rows;
        (lost, rows)
    });
    let (lost, rows) = world.rt.block_on(async move {
        sleep(Duration::from_millis(50)).await;
        handle.kill(db_id);
        sleep(Duration::from_millis(100)).await;
        handle.restart(db_id);
        client.await.unwrap()
    });
    assert!(
        matches!(lost, ClientError::ConnectionLost { ambiguous: false }),
        "{lost}"
    );
    assert_eq!(rows, vec![vec![Value::Int(0)]]);
    assert_eq!(world.value(1), 1, "committed before the crash");
    assert_eq!(world.value(2), 0, "open at the crash");
    assert_eq!(world.value(3), 0);
}

#[test]
fn pool_exhaustion_queues_then_times_out() {
    let mut world = World::new(7, Profile::PgRc, DbServerConfig::default());
    let app = world.app_node();
    let (queued, timed_out) = world.rt.block_on(async move {
        app.spawn(async {
            settle().await;
            let config = DbClientConfig {
                pool_size: 1,
                acquire_timeout_ms: 300,
                ..client_config()
            };
            let pool = DbPool::new(config);
            let holder = pool.acquire().await.unwrap();
            let start = Instant::now();
            let queued_pool = pool.clone();
            let queued = madsim::task::spawn(async move {
                let mut conn = queued_pool.acquire().await.unwrap();
                conn.execute(SELECT, &id(1)).await.unwrap();
                start.elapsed()
            });
            sleep(Duration::from_millis(200)).await;
            drop(holder);
            let queued = queued.await.unwrap();
            let second = pool.acquire().await.unwrap();
            let start = Instant::now();
            let timed_out = pool.acquire().await.map(drop);
            drop(second);
            (queued, (timed_out, start.elapsed()))
        })
        .await
        .unwrap()
    });
    assert!(ms(queued) >= 200, "queued for {queued:?}");
    let (result, waited) = timed_out;
    assert!(matches!(result, Err(ClientError::PoolTimeout)));
    assert_eq!(ms(waited), 300);
}

#[test]
fn drop_after_commit_is_ambiguous_and_committed() {
    let config = DbServerConfig {
        buggify_slow_statement_probability: 0.0,
        buggify_delay_reply_probability: 0.0,
        buggify_drop_after_commit_probability: 1.0,
        ..DbServerConfig::default()
    };
    let mut world = World::new(8, Profile::PgRc, config);
    let app = world.app_node();
    let error = world.rt.block_on(async move {
        // The run's fault registry, with buggify on at its base rate (the points' own
        // probabilities apply unscaled).
        crate::fault::start_run(&crate::fault::FaultPlan {
            buggify_probability: 0.05,
            ..crate::fault::FaultPlan::all()
        });
        crate::fault::force_active("db.drop_after_commit");
        app.spawn(async {
            settle().await;
            let pool = pool();
            let mut conn = pool.acquire().await.unwrap();
            conn.begin().await.unwrap();
            conn.execute(UPDATE, &id(1)).await.unwrap();
            conn.commit().await.unwrap_err()
        })
        .await
        .unwrap()
    });
    assert!(
        matches!(error, ClientError::ConnectionLost { ambiguous: true }),
        "{error}"
    );
    assert!(error.is_ambiguous());
    assert_eq!(world.value(1), 1, "the commit was applied");
}

/// Updates `first`, then `second`, in one transaction with up to three attempts.
async fn transfer(
    pool: DbPool,
    first: i64,
    second: i64,
    attempts: Arc<AtomicU32>,
) -> Result<(), ClientError> {
    settle().await;
    pool.transaction(3, move |conn| {
        let attempts = attempts.clone();
        Box::pin(async move {
            attempts.fetch_add(1, Ordering::Relaxed);
            conn.execute(UPDATE, &id(first)).await?;
            sleep(Duration::from_millis(20)).await;
            conn.execute(UPDATE, &id(second)).await?;
            Ok(())
        })
    })
    .await
}

/// Two transactions lock rows 1 and 2 in opposite orders; one is the deadlock victim, is
/// retried, and both end up committed. Returns what each saw and its attempt count.
fn deadlock_race(seed: u64) -> (Vec<String>, u32, i64, i64) {
    let mut world = World::new(seed, Profile::PgRc, DbServerConfig::default());
    let a = world.app_node();
    let b = world.app_node();
    let attempts = Arc::new(AtomicU32::new(0));
    let first = a.spawn(transfer(pool(), 1, 2, attempts.clone()));
    let second_attempts = attempts.clone();
    let second = b.spawn(async move {
        sleep(Duration::from_millis(5)).await;
        transfer(pool(), 2, 1, second_attempts).await
    });
    let results = world.rt.block_on(async move {
        let first = first.await.unwrap();
        let second = second.await.unwrap();
        vec![
            format!("{first:?} at {:?}", Instant::now()),
            format!("{second:?}"),
        ]
    });
    (
        results,
        attempts.load(Ordering::Relaxed),
        world.value(1),
        world.value(2),
    )
}

#[test]
fn transaction_retries_deadlock_victim() {
    let (results, attempts, one, two) = deadlock_race(9);
    assert!(
        results.iter().all(|r| r.starts_with("Ok(())")),
        "{results:?}"
    );
    assert_eq!(attempts, 3, "one of the two ran twice");
    assert_eq!((one, two), (2, 2));
}

#[test]
fn same_seed_same_run() {
    let first = deadlock_race(10);
    let second = deadlock_race(10);
    assert_eq!(first, second);
}

const REPLICA_IP: &str = "10.0.0.2";

/// A replica of `world`'s primary with the same seeded rows, on its own node.
fn replica_node(world: &World) -> (Arc<crate::db::replica::DbReplica>, NodeHandle) {
    use crate::db::replica::{serve_replica, DbReplica, DbReplicaConfig};
    let state = DbNodeState::new(Profile::PgRc, DbConfig::default());
    state.with_database(|db| {
        let session = db.connect();
        let create = "CREATE TABLE test (id INT PRIMARY KEY, value INT NOT NULL)";
        assert!(matches!(
            db.execute(session, create, &[], Duration::ZERO),
            Exec::Done(Ok(_))
        ));
        let insert = "INSERT INTO test (id, value) VALUES ($1, $2)";
        for id in 1..=4 {
            let params = [Value::Int(id), Value::Int(0)];
            assert!(matches!(
                db.execute(session, insert, &params, Duration::ZERO),
                Exec::Done(Ok(_))
            ));
        }
        db.disconnect(session);
    });
    let replica = DbReplica::new(world.state.clone(), state);
    assert_eq!(replica.lag_records(), 0);
    let config = DbReplicaConfig {
        lag_ms_min: 20,
        lag_ms_max: 50,
        ..DbReplicaConfig::default()
    };
    let serve_replica_state = replica.clone();
    let node = world
        .rt
        .create_node()
        .name("replica")
        .ip(REPLICA_IP.parse().unwrap())
        .init(move || serve_replica(serve_replica_state.clone(), config.clone()))
        .build();
    (replica, node)
}

fn replica_pool() -> DbPool {
    DbPool::new(DbClientConfig::new(SocketAddr::new(
        REPLICA_IP.parse().unwrap(),
        PORT_DEFAULT,
    )))
}

#[test]
fn replica_lags_refuses_writes_and_survives_restart() {
    let mut world = World::new(11, Profile::PgRc, DbServerConfig::default());
    let (replica, replica_node) = replica_node(&world);
    let app = world.app_node();
    let handle = world.rt.handle().clone();
    let replica_id = replica_node.id();
    let seen = world.rt.block_on(async move {
        app.spawn(async move {
            settle().await;
            let primary = pool();
            let replica_pool = replica_pool();
            let value = |rows: Vec<Vec<Value>>| rows[0][0].clone();
            primary.execute(UPDATE, &id(1)).await.unwrap();
            let stale = value(replica_pool.execute(SELECT, &id(1)).await.unwrap().rows);
            sleep(Duration::from_millis(100)).await;
            let caught_up = value(replica_pool.execute(SELECT, &id(1)).await.unwrap().rows);
            let write = replica_pool.execute(UPDATE, &id(1)).await.unwrap_err();
            // The replica crashes; the primary commits meanwhile; after the restart it catches up.
            handle.kill(replica_id);
            primary.execute(UPDATE, &id(1)).await.unwrap();
            sleep(Duration::from_millis(100)).await;
            handle.restart(replica_id);
            sleep(Duration::from_millis(100)).await;
            let after_restart = value(replica_pool.execute(SELECT, &id(1)).await.unwrap().rows);
            (
                stale,
                caught_up,
                write.db_error().map(|e| e.code().to_string()),
                after_restart,
            )
        })
        .await
        .unwrap()
    });
    assert_eq!(
        seen,
        (
            Value::Int(0),
            Value::Int(1),
            Some("25006".to_string()),
            Value::Int(2)
        )
    );
    assert_eq!(replica.lag_records(), 0);
    assert_eq!(replica.applied_count(), world.state.commit_count());
}

#[test]
fn replica_applies_records_it_saw_before_a_crash_without_another_commit() {
    let mut world = World::new(13, Profile::PgRc, DbServerConfig::default());
    let (replica, replica_node) = replica_node(&world);
    let app = world.app_node();
    let handle = world.rt.handle().clone();
    let replica_id = replica_node.id();
    let after_restart = world.rt.block_on(async move {
        app.spawn(async move {
            settle().await;
            pool().execute(UPDATE, &id(1)).await.unwrap();
            // Seen by the replica (5 ms after the commit) but not yet due (20-50 ms of lag):
            // the crash loses it from the replica's pending list, and no commit follows.
            sleep(Duration::from_millis(10)).await;
            handle.kill(replica_id);
            sleep(Duration::from_millis(100)).await;
            handle.restart(replica_id);
            sleep(Duration::from_millis(200)).await;
            replica_pool().execute(SELECT, &id(1)).await.unwrap().rows[0][0].clone()
        })
        .await
        .unwrap()
    });
    assert_eq!(after_restart, Value::Int(1));
    assert_eq!(replica.lag_records(), 0);
}

#[test]
fn lock_wait_timeout_fires_from_the_deadline_timer() {
    let mut world = World::new(12, Profile::PgRc, DbServerConfig::default());
    let app = world.app_node();
    let (code, waited) = world.rt.block_on(async move {
        app.spawn(async {
            settle().await;
            let pool = pool();
            let mut holder = pool.acquire().await.unwrap();
            holder.begin().await.unwrap();
            holder.execute(UPDATE, &id(1)).await.unwrap();
            let mut waiter = pool.acquire().await.unwrap();
            waiter
                .execute("SET lock_timeout = '100ms'", &[])
                .await
                .unwrap();
            let start = Instant::now();
            let error = waiter.execute(UPDATE, &id(1)).await.unwrap_err();
            let code = error.db_error().map(|e| e.code().to_string());
            (code, start.elapsed())
        })
        .await
        .unwrap()
    });
    assert_eq!(code.as_deref(), Some("55P03"));
    assert!(ms(waited) >= 100, "waited {waited:?}");
    assert!(ms(waited) < 6_000, "waited {waited:?}");
}

#[test]
fn crash_while_autocommit_write_blocked_is_ambiguous() {
    let mut world = World::new(13, Profile::PgRc, DbServerConfig::default());
    let app = world.app_node();
    let handle = world.rt.handle().clone();
    let db_id = world.db_node.id();
    let client = app.spawn(async {
        settle().await;
        let pool = pool();
        let mut holder = pool.acquire().await.unwrap();
        holder.begin().await.unwrap();
        holder.execute(UPDATE, &id(1)).await.unwrap();
        let mut writer = pool.acquire().await.unwrap();
        // Blocked behind the holder when the node crashes: the client cannot know whether it
        // ran, so the error must not claim it did not.
        let error = writer.execute(UPDATE, &id(1)).await.unwrap_err();
        (error, Instant::now())
    });
    let error = world.rt.block_on(async move {
        sleep(Duration::from_millis(50)).await;
        let killed_at = Instant::now();
        handle.kill(db_id);
        let (error, seen_at) = client.await.unwrap();
        assert!(
            ms(seen_at - killed_at) < 100,
            "the client saw the crash only after {:?}",
            seen_at - killed_at
        );
        error
    });
    assert!(
        matches!(error, ClientError::ConnectionLost { ambiguous: true }),
        "{error}"
    );
    assert_eq!(world.value(1), 0);
}

#[test]
fn restart_without_kill_serves_again() {
    let mut world = World::new(14, Profile::PgRc, DbServerConfig::default());
    let app = world.app_node();
    let handle = world.rt.handle().clone();
    let db_id = world.db_node.id();
    let client = app.spawn(async {
        settle().await;
        let pool = pool();
        pool.execute(UPDATE, &id(1)).await.unwrap();
        sleep(Duration::from_millis(100)).await;
        pool.execute(UPDATE, &id(1)).await.unwrap();
    });
    world.rt.block_on(async move {
        sleep(Duration::from_millis(50)).await;
        handle.restart(db_id);
        client.await.unwrap();
    });
    assert_eq!(world.value(1), 2);
}

/// An autocommit UPDATE whose reply is lost after it committed: without Laravel's lost
/// connection retry the caller sees an ambiguous error; with it, a success and a double write.
fn lost_autocommit_reply(retry: bool) -> (Result<u64, String>, i64) {
    let config = DbServerConfig {
        buggify_slow_statement_probability: 0.0,
        buggify_delay_reply_probability: 0.0,
        buggify_drop_after_commit_probability: 1.0,
        ..DbServerConfig::default()
    };
    let mut world = World::new(15, Profile::PgRc, config);
    let app = world.app_node();
    let result = world.rt.block_on(async move {
        // The run's fault registry, with buggify on at its base rate (the points' own
        // probabilities apply unscaled).
        crate::fault::start_run(&crate::fault::FaultPlan {
            buggify_probability: 0.05,
            ..crate::fault::FaultPlan::all()
        });
        crate::fault::force_active("db.drop_after_commit");
        app.spawn(async move {
            settle().await;
            let config = DbClientConfig {
                retry_lost_connection_outside_transaction: retry,
                ..client_config()
            };
            let pool = DbPool::new(config);
            let result = pool.execute(UPDATE, &id(1)).await;
            result
                .map(|r| r.rows_affected)
                .map_err(|e| format!("{e:?}"))
        })
        .await
        .unwrap()
    });
    (result, world.value(1))
}

#[test]
fn lost_autocommit_reply_is_ambiguous_or_retried() {
    let (result, value) = lost_autocommit_reply(false);
    assert_eq!(
        result,
        Err("ConnectionLost { ambiguous: true }".to_string())
    );
    assert_eq!(value, 1);
    // The retry's own reply is lost too (probability 1), so only the write count tells.
    let (result, value) = lost_autocommit_reply(true);
    assert_eq!(
        result,
        Err("ConnectionLost { ambiguous: true }".to_string())
    );
    assert_eq!(value, 2, "Laravel's retry wrote twice");
}

#[test]
fn a_listener_hears_the_statements_of_its_handle_only() {
    let mut world = World::new(3, Profile::PgRc, DbServerConfig::default());
    let app = world.app_node();
    let heard = app.spawn(async {
        settle().await;
        let pool = pool();
        let log: Arc<std::sync::Mutex<Vec<(String, bool)>>> = Arc::default();
        let sink = log.clone();
        let listened = pool.with_listener(Arc::new(move |sql, result| {
            sink.lock().unwrap().push((sql.to_string(), result.is_ok()));
        }));
        let mut conn = listened.acquire().await.unwrap();
        conn.execute(SELECT, &id(1)).await.unwrap();
        conn.execute("SELECT nope FROM test", &[])
            .await
            .unwrap_err();
        drop(conn);
        // The same pool through the handle without a listener: not heard.
        pool.execute(SELECT, &id(2)).await.unwrap();
        let heard = log.lock().unwrap().clone();
        heard
    });
    let heard = world.rt.block_on(heard).unwrap();
    assert_eq!(
        heard,
        vec![
            (SELECT.to_string(), true),
            ("SELECT nope FROM test".to_string(), false)
        ]
    );
}

/// The transcript read per statement: the tags and application names the clients sent, and a
/// lock wait with the table it waited on and the session whose COMMIT woke it.
#[test]
fn a_transcript_names_tags_waits_and_wakers() {
    use super::transcript::{record_transcripts, FinishCause, StatementEnd};
    let (_, transcripts) = record_transcripts(|| {
        let mut world = World::new(1, Profile::PgRc, DbServerConfig::default());
        let app = world.app_node();
        let tagged = |tag| {
            DbPool::new(DbClientConfig {
                application_name: Some("app-a".to_string()),
                ..client_config()
            })
            .with_tag(tag)
        };
        let (holder_pool, waiter_pool) = (tagged(7), tagged(8));
        let holder = app.spawn(async move {
            settle().await;
            let mut conn = holder_pool.acquire().await.unwrap();
            conn.begin().await.unwrap();
            conn.execute(UPDATE, &id(1)).await.unwrap();
            sleep(Duration::from_millis(200)).await;
            conn.commit().await.unwrap();
        });
        let waiter = app.spawn(async move {
            settle().await;
            sleep(Duration::from_millis(50)).await;
            waiter_pool.execute(UPDATE, &id(1)).await.unwrap();
        });
        world.rt.block_on(async move {
            holder.await.unwrap();
            waiter.await.unwrap();
        });
    });
    assert_eq!(transcripts.len(), 1);
    let statements = transcripts[0].statements();
    let sqls: Vec<(u64, Option<u64>, &str)> = statements
        .iter()
        .map(|s| (s.session, s.tag, s.sql.as_str()))
        .collect();
    assert_eq!(
        sqls,
        [
            // Session 1 set the table up.
            (2, Some(7), "BEGIN"),
            (2, Some(7), UPDATE),
            (3, Some(8), UPDATE),
            (2, Some(7), "COMMIT")
        ]
    );
    assert!(statements
        .iter()
        .all(|s| s.application.as_deref() == Some("app-a")));
    let waited = &statements[2];
    let wait = waited.blocked.as_ref().expect("the second update waits");
    assert_eq!(wait.table.as_deref(), Some("test"));
    let StatementEnd::Finished {
        cause,
        woken_by,
        at_us,
        result,
        event,
    } = &waited.end
    else {
        panic!("{:?}", waited.end);
    };
    assert_eq!((*cause, *woken_by), (FinishCause::Woken, Some(2)));
    assert_eq!(result.as_ref().map(|r| r.rows_affected), Ok(1));
    // Woken by the COMMIT: it finished after the COMMIT ran, about 150 ms after it blocked.
    assert!(*event > statements[3].event);
    assert!(
        (100_000..300_000).contains(&(at_us - wait.at_us)),
        "{at_us}"
    );
    assert!(statements[..2]
        .iter()
        .chain(&statements[3..])
        .all(|s| s.blocked.is_none()
            && matches!(
                s.end,
                StatementEnd::Finished {
                    cause: FinishCause::Immediate,
                    ..
                }
            )));
}

/// A session setting made with `configure` survives the reconnect after a database restart:
/// the new session gets it before the next statement. One merely executed does not (42704),
/// which is the canary that the restart really opened a new session.
fn setting_after_restart(configure: bool) -> Result<(), ClientError> {
    let mut world = World::new(16, Profile::PgRc, DbServerConfig::default());
    let app = world.app_node();
    let handle = world.rt.handle().clone();
    let db_id = world.db_node.id();
    let client = app.spawn(async move {
        settle().await;
        let pool = pool();
        let mut conn = pool.acquire().await.unwrap();
        let set = "set app.tenant_id = '7'";
        if configure {
            conn.configure(set).await.unwrap();
        } else {
            conn.execute(set, &[]).await.unwrap();
        }
        sleep(Duration::from_millis(100)).await;
        let read = "select value from test where id = current_setting('app.tenant_id')::bigint";
        conn.execute(read, &[]).await.map(|_| ())
    });
    world.rt.block_on(async move {
        sleep(Duration::from_millis(50)).await;
        handle.restart(db_id);
        client.await.unwrap()
    })
}

#[test]
fn configured_session_settings_survive_a_reconnect() {
    if let Err(e) = setting_after_restart(true) {
        panic!("the configured setting was lost: {e}");
    }
    let lost = setting_after_restart(false).unwrap_err();
    assert!(lost.to_string().contains("42704"), "{lost}");
}
