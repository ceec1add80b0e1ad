//! Random concurrent transaction groups over small random schemas, drawn from the SQL subset
//! and deterministic from a seed: 2–4 sessions, each one transaction (or autocommit
//! statements), interleaved at random, over 1–2 tables with a primary key, sometimes a unique
//! and a secondary index, and sparse keys so that inserts land in gaps.
//!
//! The statement mix covers what the scenarios use and what the engines lock differently:
//! point and range reads, locking reads with `ORDER BY … LIMIT`, `NOWAIT` and `SKIP LOCKED`,
//! shared then exclusive locks on one row (lock upgrades), updates of the key, unique and
//! secondary columns, deletes, inserts into gaps and onto duplicates, `ON CONFLICT DO NOTHING`
//! / `INSERT IGNORE`, savepoints and rollbacks to them, and aggregates. Keys come from a small
//! hot set, so waits and deadlock cycles of two to four sessions are frequent.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shopsim_sim::db::conformance::Script;
use shopsim_sim::db::Profile;

use crate::server::EngineKind;

/// A random group: the schema, the steps, and the engine dialect they are written in.
#[derive(Debug, Clone)]
pub struct Group {
    /// The seed it was drawn from.
    pub seed: u64,
    /// The dialect.
    pub kind: EngineKind,
    /// As a conformance script (with its own setup, no outcomes).
    pub script: Script,
}

struct Table {
    name: String,
    unique: bool,
    secondary: bool,
}

/// The profiles of an engine family.
pub fn profiles_of(kind: EngineKind) -> Vec<Profile> {
    Profile::ALL
        .into_iter()
        .filter(|p| EngineKind::of(*p) == kind)
        .collect()
}

/// Draws the group of `seed` in the dialect of `kind`. The same seed gives the same logical
/// group in both dialects.
pub fn group(seed: u64, kind: EngineKind) -> Group {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let table_count = rng.gen_range(1..=2);
    let mut tables = Vec::new();
    let mut setup = Vec::new();
    for t in 0..table_count {
        let name = format!("t{t}");
        let unique = rng.gen_bool(0.6);
        let secondary = rng.gen_bool(0.6);
        setup.push(format!(
            "create table {name} (id int primary key, k int not null, u int, v int not null)"
        ));
        if unique {
            setup.push(format!("create unique index {name}_u on {name} (u)"));
        }
        if secondary {
            setup.push(format!("create index {name}_k on {name} (k)"));
        }
        // Sparse keys: gaps between rows for inserts and gap locks.
        let mut ids: Vec<i64> = (1..=10).map(|i| i * 2).collect();
        let keep = rng.gen_range(3..=6);
        while ids.len() > keep {
            let i = rng.gen_range(0..ids.len());
            ids.remove(i);
        }
        let rows: Vec<String> = ids
            .iter()
            .map(|&id| {
                let k = rng.gen_range(1..=3);
                let u = if rng.gen_bool(0.2) {
                    "NULL".to_string()
                } else {
                    (id * 10).to_string()
                };
                format!("({id}, {k}, {u}, {})", rng.gen_range(0..=9))
            })
            .collect();
        setup.push(format!(
            "insert into {name} (id, k, u, v) values {}",
            rows.join(", ")
        ));
        tables.push(Table {
            name,
            unique,
            secondary,
        });
    }
    let session_count = rng.gen_range(2..=4);
    let mut per_session: Vec<Vec<String>> = Vec::new();
    for _ in 0..session_count {
        let mut steps = Vec::new();
        let explicit = rng.gen_bool(0.85);
        if explicit {
            steps.push("BEGIN".to_string());
        }
        let ops = rng.gen_range(1..=4);
        let mut savepoint = false;
        for _ in 0..ops {
            if explicit && !savepoint && rng.gen_bool(0.15) {
                steps.push("savepoint s1".to_string());
                savepoint = true;
            }
            let table = &tables[rng.gen_range(0..tables.len())];
            steps.push(statement(&mut rng, table, kind));
            if savepoint && rng.gen_bool(0.25) {
                steps.push("rollback to savepoint s1".to_string());
            }
        }
        if explicit {
            steps.push(
                if rng.gen_bool(0.75) {
                    "commit"
                } else {
                    "rollback"
                }
                .to_string(),
            );
        }
        per_session.push(steps);
    }
    // Interleave, keeping each session's order.
    let mut cursors = vec![0usize; session_count];
    let mut steps = Vec::new();
    loop {
        let open: Vec<usize> = (0..session_count)
            .filter(|&s| cursors[s] < per_session[s].len())
            .collect();
        if open.is_empty() {
            break;
        }
        let s = open[rng.gen_range(0..open.len())];
        steps.push((format!("T{}", s + 1), per_session[s][cursors[s]].clone()));
        cursors[s] += 1;
    }
    Group {
        seed,
        kind,
        script: Script {
            name: format!("random-{seed}-{}", kind.name()),
            setup,
            steps,
            outcomes: Default::default(),
        },
    }
}

/// A key from the hot set (existing rows and the gaps between them).
fn key(rng: &mut ChaCha8Rng) -> i64 {
    rng.gen_range(1..=12)
}

fn statement(rng: &mut ChaCha8Rng, table: &Table, kind: EngineKind) -> String {
    let t = &table.name;
    let id = key(rng);
    let k = rng.gen_range(1..=3);
    let v = rng.gen_range(0..=9);
    match rng.gen_range(0..100) {
        0..=7 => format!("select * from {t} where id = {id}"),
        8..=12 => format!("select * from {t} where id >= {id} order by id limit 2"),
        13..=24 => format!("select * from {t} where id = {id} for update"),
        25..=29 => format!("select * from {t} where id = {id} {{share}}"),
        30..=33 => format!("select * from {t} where id >= {id} order by id limit 1 for update"),
        34..=37 => {
            format!("select * from {t} order by id limit 1 for update skip locked")
        }
        38..=40 => format!("select * from {t} where id = {id} for update nowait"),
        41..=43 => format!("select * from {t} where k = {k} for update"),
        44..=46 => format!("select count(*), sum(v) from {t} where k = {k}"),
        47..=58 => format!("update {t} set v = v + 1 where id = {id}"),
        59..=62 => format!("update {t} set v = {v} where k = {k}"),
        63..=64 if table.secondary => format!("update {t} set k = {k} where id = {id}"),
        63..=65 if table.unique => {
            format!("update {t} set u = {} where id = {id}", key(rng) * 10)
        }
        63..=66 => format!("update {t} set id = {} where id = {id}", key(rng) + 20),
        67..=72 => format!("delete from {t} where id = {id}"),
        73..=74 => format!("delete from {t} where k = {k}"),
        75..=88 => {
            let u = if table.unique && rng.gen_bool(0.7) {
                (key(rng) * 10).to_string()
            } else {
                "NULL".to_string()
            };
            let values = format!("({id}, {k}, {u}, {v})");
            if rng.gen_bool(0.3) {
                match kind {
                    EngineKind::Postgres => format!(
                        "insert into {t} (id, k, u, v) values {values} on conflict do nothing"
                    ),
                    EngineKind::MariaDb => {
                        format!("insert ignore into {t} (id, k, u, v) values {values}")
                    }
                }
            } else {
                format!("insert into {t} (id, k, u, v) values {values}")
            }
        }
        89..=92 => format!(
            "select * from {t} where id between {id} and {} {{share}}",
            id + 3
        ),
        93..=95 => format!("select * from {t} where v = {v} for update"),
        _ => format!("select sum(v) from {t}"),
    }
}
