//! Benchmark: point statements per second of wall time through the simulated network.
//!
//! Two figures, each one seeded simulation run timed from outside (the wall clock is read only
//! here, never inside a simulation):
//! - uncontended: `CLIENT_COUNT` app nodes, each on its own connection, alternate
//!   `SELECT value FROM test WHERE id = $1` and an autocommit `UPDATE` on their own row;
//! - contended: 20 sessions run short transactions (two updates) over the same four rows,
//!   with Laravel-style retry on deadlock.
//!
//! A statement is one full round trip: client send, network delay, server cost sleep, engine
//! execute, reply. The count is the server's statement counter, retries included.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use madsim::runtime::Runtime;
use shopsim_sim::db::client::{DbClientConfig, DbPool};
use shopsim_sim::db::server::{serve, DbNodeState, DbServerConfig, PORT_DEFAULT};
use shopsim_sim::db::{DbConfig, Exec, Profile, Value};

const DB_IP: &str = "10.0.0.1";
const ROW_COUNT: i64 = 64;

fn setup(seed: u64) -> (Runtime, Arc<DbNodeState>) {
    let mut sim_config = madsim::Config::default();
    sim_config.net.send_latency = Duration::from_micros(100)..Duration::from_micros(500);
    let rt = Runtime::with_seed_and_config(seed, sim_config);
    let state = DbNodeState::new(Profile::PgRc, DbConfig::default());
    state.with_database(|db| {
        let session = db.connect();
        let create = "CREATE TABLE test (id INT PRIMARY KEY, value INT NOT NULL)";
        assert!(matches!(
            db.execute(session, create, &[], Duration::ZERO),
            Exec::Done(Ok(_))
        ));
        for id in 0..ROW_COUNT {
            let insert = "INSERT INTO test (id, value) VALUES ($1, $2)";
            let params = [Value::Int(id), Value::Int(0)];
            assert!(matches!(
                db.execute(session, insert, &params, Duration::ZERO),
                Exec::Done(Ok(_))
            ));
        }
        db.disconnect(session);
    });
    let serve_state = state.clone();
    let config = DbServerConfig {
        max_connections: 200,
        ..DbServerConfig::default()
    };
    rt.create_node()
        .name("db")
        .ip(DB_IP.parse().unwrap())
        .init(move || serve(serve_state.clone(), config.clone()))
        .build();
    (rt, state)
}

fn client_config() -> DbClientConfig {
    DbClientConfig::new(SocketAddr::new(DB_IP.parse().unwrap(), PORT_DEFAULT))
}

/// Runs `per_client` statements on each of `client_count` connections; returns statements run.
fn uncontended(client_count: usize, per_client: usize) -> u64 {
    let (rt, state) = setup(1);
    let mut handles = Vec::new();
    for client in 0..client_count {
        let ip = format!("10.0.1.{}", client + 1).parse().unwrap();
        let node = rt.create_node().ip(ip).build();
        handles.push(node.spawn(async move {
            madsim::time::sleep(Duration::from_millis(10)).await;
            let pool = DbPool::new(client_config());
            let mut conn = pool.acquire().await.unwrap();
            let row = [Value::Int(i64::try_from(client).unwrap() % ROW_COUNT)];
            for i in 0..per_client {
                let sql = if i % 2 == 0 {
                    "SELECT value FROM test WHERE id = $1"
                } else {
                    "UPDATE test SET value = value + 1 WHERE id = $1"
                };
                conn.execute(sql, &row).await.unwrap();
            }
        }));
    }
    rt.block_on(async move {
        for handle in handles {
            handle.await.unwrap();
        }
    });
    state.statement_count()
}

/// `session_count` sessions each run `per_session` two-update transactions over four rows.
fn contended(session_count: usize, per_session: usize) -> u64 {
    let (rt, state) = setup(2);
    let mut handles = Vec::new();
    for session in 0..session_count {
        let ip = format!("10.0.1.{}", session + 1).parse().unwrap();
        let node = rt.create_node().ip(ip).build();
        handles.push(node.spawn(async move {
            madsim::time::sleep(Duration::from_millis(10)).await;
            let pool = DbPool::new(client_config());
            let mut conn = pool.acquire().await.unwrap();
            for i in 0..per_session {
                let first = i64::try_from((session + i) % 4).unwrap();
                let second = (first + 1) % 4;
                let result = conn
                    .transaction(5, move |c| {
                        Box::pin(async move {
                            let update = "UPDATE test SET value = value + 1 WHERE id = $1";
                            c.execute(update, &[Value::Int(first)]).await?;
                            c.execute(update, &[Value::Int(second)]).await?;
                            Ok(())
                        })
                    })
                    .await;
                // Retries may run out under heavy contention; that is part of the load.
                let _ = result;
            }
        }));
    }
    rt.block_on(async move {
        for handle in handles {
            handle.await.unwrap();
        }
    });
    state.statement_count()
}

fn report(name: &str, run: impl FnOnce() -> u64) {
    let start = std::time::Instant::now();
    let statements = run();
    let elapsed = start.elapsed();
    let per_second = statements as f64 / elapsed.as_secs_f64();
    println!(
        "{name}: {statements} statements in {elapsed:.2?} wall = {per_second:.0} statements/s"
    );
}

fn main() {
    report("uncontended (20 connections, point select/update)", || {
        uncontended(20, 10_000)
    });
    report(
        "contended (20 sessions, 2-update transactions on 4 rows)",
        || contended(20, 2_000),
    );
}
