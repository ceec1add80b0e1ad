//! A lane: one independent stream of real runs on the shared servers, with its own tokio
//! runtime, connections and schemas. Campaigns run one lane per worker thread, so several
//! scripts are stepped at once on one server (each in its own schema / database, so they never
//! meet each other's locks), and a lane that fails is thrown away without touching the others.
//!
//! Schemas are kept per lane and reused by their DDL: a run whose `CREATE` statements equal
//! those of a schema the lane already has truncates its tables (a fresh, empty table with its
//! identity reset: `TRUNCATE` recreates an InnoDB table, about 7 ms against 75 ms for
//! `DROP`+`CREATE`) and loads the rows again. At most [`SCHEMAS_PER_LANE`] are kept; the least
//! recently used is dropped.
//!
//! Key invariant: every wait is bounded. Control statements run with a lock timeout and a
//! client-side deadline ([`crate::session::CONTROL_DEADLINE`]), a step with
//! [`crate::stepper`]'s step limit; a lane whose run failed drops its connections and ends the
//! backends they left, so a stuck input costs one harness failure, never the campaign.

use std::collections::BTreeMap;

use shopsim_sim::db::conformance::Outcome;
use shopsim_sim::db::Profile;

use crate::server::EngineKind;
use crate::session::RealResult;
use crate::stepper::{Clock, Pool, Steering, StepError, Stepper};

/// Schemas a lane keeps for reuse (random groups have about 20 distinct DDL sets).
pub const SCHEMAS_PER_LANE: usize = 24;

struct CachedSchema {
    kind: EngineKind,
    name: String,
    ddl: Vec<String>,
}

/// One stream of real runs (see the module documentation).
pub struct Lane {
    id: usize,
    runtime: tokio::runtime::Runtime,
    ports: BTreeMap<EngineKind, u16>,
    /// Least recently used first.
    schemas: Vec<CachedSchema>,
    counter: u64,
    pools: BTreeMap<EngineKind, Pool>,
    /// Statements sent to the real engines by this lane.
    pub statements: u64,
}

/// The `CREATE` statements of a setup: what decides whether a schema can be reused.
fn ddl_of(setup: &[String]) -> Vec<String> {
    setup
        .iter()
        .filter(|s| s.trim_start().to_ascii_lowercase().starts_with("create "))
        .cloned()
        .collect()
}

impl Lane {
    /// A lane on the servers at `ports`; `id` makes its schema names unique on the server.
    pub fn new(id: usize, ports: BTreeMap<EngineKind, u16>) -> Lane {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime starts");
        Lane {
            id,
            runtime,
            ports,
            schemas: Vec::new(),
            counter: 0,
            pools: BTreeMap::new(),
            statements: 0,
        }
    }

    /// The real engine's outcome of a conformance script under `profile`.
    pub fn run_script(
        &mut self,
        script: &shopsim_sim::db::conformance::Script,
        profile: Profile,
    ) -> Result<Outcome, StepError> {
        let setup = shopsim_sim::db::conformance::setup_of(script);
        self.run_steps(profile, Clock::Conformance, &setup, &script.steps)
            .map(|(outcome, _)| outcome)
    }

    /// Plays `steps` after `setup` on the real engine of `profile` with the stepping protocol.
    pub fn run_steps(
        &mut self,
        profile: Profile,
        clock: Clock,
        setup: &[String],
        steps: &[(String, String)],
    ) -> Result<(Outcome, Vec<Option<RealResult>>), StepError> {
        self.run_steps_with(profile, clock, setup, steps.len(), |i, _| {
            let (session, statement) = steps[i].clone();
            (session, statement, Steering::default())
        })
    }

    /// Plays `count` steps after `setup`; `step_of(i, stepper)` gives step `i` when it is
    /// sent, so it can depend on the real answers of the steps before it (generated ids):
    /// its session, its statement, and the waiting sessions to hold back while it settles
    /// ([`Stepper::step_steered`]).
    pub fn run_steps_with(
        &mut self,
        profile: Profile,
        clock: Clock,
        setup: &[String],
        count: usize,
        mut step_of: impl FnMut(usize, &Stepper) -> (String, String, Steering),
    ) -> Result<(Outcome, Vec<Option<RealResult>>), StepError> {
        let kind = EngineKind::of(profile);
        let port = *self.ports.get(&kind).ok_or_else(|| StepError {
            step: 0,
            message: format!("{} is not started", kind.name()),
        })?;
        let ddl = ddl_of(setup);
        let (schema, reuse, evicted) = self.schema_for(kind, &ddl);
        self.statements += count as u64;
        let pool = self.pools.remove(&kind);
        let timing = std::env::var("SHOPSIM_CROSSCHECK_TIMING").is_ok();
        let result = self.runtime.block_on(async {
            let mut pool = match pool {
                Some(pool) => pool,
                None => Pool::connect(kind, port)
                    .await
                    .map_err(|e| (e, Vec::new()))?,
            };
            for stale in evicted {
                let drop = match kind {
                    EngineKind::Postgres => format!("drop schema if exists {stale} cascade"),
                    EngineKind::MariaDb => format!("drop database if exists {stale}"),
                };
                // A drop that fails (a lock timeout) leaves a schema nobody uses again.
                let _ = pool.run(&drop).await;
            }
            let t0 = std::time::Instant::now();
            let mut stepper =
                match Stepper::new(pool, kind, port, profile, clock, &schema, setup, reuse).await {
                    Ok(s) => s,
                    Err(e) => return Err((e, Vec::new())),
                };
            let t1 = t0.elapsed();
            for i in 0..count {
                let (session, statement, steering) = step_of(i, &stepper);
                if let Err(e) = stepper.step_steered(&session, &statement, &steering).await {
                    return Err((e, stepper.abandon()));
                }
            }
            let t2 = t0.elapsed();
            let out = stepper.finish().await;
            if timing {
                eprintln!(
                    "timing {profile}: setup {t1:?} steps {:?} finish {:?}",
                    t2 - t1,
                    t0.elapsed() - t2
                );
            }
            out
        });
        match result {
            Ok((outcome, results, pool)) => {
                self.pools.insert(kind, pool);
                Ok((outcome, results))
            }
            Err((e, backends)) => {
                // The schema may be half set up or still locked: never reuse it, and end the
                // backends the failed run left (they may hold its locks).
                self.schemas.retain(|s| s.name != schema);
                self.end_backends(kind, port, &backends);
                Err(e)
            }
        }
    }

    /// The schema for a run with `ddl`: a kept one with the same DDL (reused), or a new one;
    /// and the schemas evicted to make room.
    fn schema_for(&mut self, kind: EngineKind, ddl: &[String]) -> (String, bool, Vec<String>) {
        if let Some(i) = self
            .schemas
            .iter()
            .position(|s| s.kind == kind && s.ddl == ddl)
        {
            let kept = self.schemas.remove(i);
            let name = kept.name.clone();
            self.schemas.push(kept);
            return (name, true, Vec::new());
        }
        self.counter += 1;
        let name = format!("cc{}_{}", self.id, self.counter);
        let mut evicted = Vec::new();
        while self.schemas.iter().filter(|s| s.kind == kind).count() >= SCHEMAS_PER_LANE {
            let i = self
                .schemas
                .iter()
                .position(|s| s.kind == kind)
                .expect("counted");
            evicted.push(self.schemas.remove(i).name);
        }
        self.schemas.push(CachedSchema {
            kind,
            name: name.clone(),
            ddl: ddl.to_vec(),
        });
        (name, false, evicted)
    }

    /// Ends `backends` from a fresh control connection (bounded; best effort).
    fn end_backends(&mut self, kind: EngineKind, port: u16, backends: &[i64]) {
        if backends.is_empty() {
            return;
        }
        self.runtime.block_on(async {
            let Ok(mut control) = crate::session::Control::connect(kind, port).await else {
                return;
            };
            for backend in backends {
                let _ = control.terminate(*backend).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A schema is reused for the same `CREATE` statements only, per engine; names are unique
    /// per lane; past [`SCHEMAS_PER_LANE`] the least recently used one is dropped.
    #[test]
    fn schemas_are_reused_by_their_ddl_and_evicted_least_recently_used() {
        let mut lane = Lane::new(3, BTreeMap::new());
        let ddl = |n: usize| vec![format!("create table t{n} (id int primary key)")];
        let (first, reused, evicted) = lane.schema_for(EngineKind::Postgres, &ddl(0));
        assert_eq!((first.as_str(), reused, evicted.len()), ("cc3_1", false, 0));
        let (again, reused, _) = lane.schema_for(EngineKind::Postgres, &ddl(0));
        assert_eq!((again.as_str(), reused), ("cc3_1", true));
        let (other, reused, _) = lane.schema_for(EngineKind::MariaDb, &ddl(0));
        assert!(other != first && !reused, "another engine, another schema");
        for n in 1..SCHEMAS_PER_LANE {
            assert!(!lane.schema_for(EngineKind::Postgres, &ddl(n)).1);
        }
        // Use t0's schema again: t1's is now the least recently used.
        assert!(lane.schema_for(EngineKind::Postgres, &ddl(0)).1);
        let (_, _, evicted) = lane.schema_for(EngineKind::Postgres, &ddl(SCHEMAS_PER_LANE));
        assert_eq!(evicted, ["cc3_3"]);
        assert!(lane.schema_for(EngineKind::Postgres, &ddl(0)).1);
        assert!(!lane.schema_for(EngineKind::Postgres, &ddl(1)).1);
        // Rows are not part of the key: only CREATE statements are.
        let mut with_rows = ddl(0);
        with_rows.push("insert into t0 values (1)".into());
        assert_eq!(ddl_of(&with_rows), ddl(0));
    }
}
