//! shopsim-crosscheck: real PostgreSQL 15 and MariaDB 10.11 next to the simulated database, so
//! that shopsim itself finds where the simulation and the engines it imitates disagree.
//!
//! Start here:
//! - [`server`]: private servers (initdb / mariadb-install-db into a temporary directory,
//!   loopback, a free port, stopped with their process group when dropped).
//! - [`session`]: real client connections (`tokio-postgres`, `mysql_async`) and the control
//!   connection that asks the server which backends wait for a lock.
//! - [`stepper`]: the deterministic stepping protocol.
//! - [`compare`]: first difference between simulated and real outcomes, and shrinking.
//! - Sources: [`files`] (conformance scripts, `--measure`), [`transcript`] (simulated runs
//!   replayed), [`random`] (random transaction groups over random schemas).
//! - [`classes`]: the named classes of allowed nondeterminism and of known open divergences.
//!
//! **Architecture Invariant:** nothing here runs inside a madsim simulation. Real sockets and a
//! real tokio runtime live only in [`Engines`]; the simulated side is the synchronous engine
//! (`shopsim_sim::db::conformance`) or a transcript recorded by a finished run.

pub mod campaign;
pub mod classes;
pub mod compare;
pub mod files;
pub mod random;
pub mod server;
pub mod session;
pub mod stepper;
pub mod transcript;

use shopsim_sim::db::conformance::{setup_of, Outcome, Script};
use shopsim_sim::db::Profile;

use server::{EngineKind, RealServer, ServerError};
use session::RealResult;
use stepper::{Clock, StepError, Stepper};

/// Why a real run could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The engine is not there or would not start (exit 2 from the CLI).
    Server(ServerError),
    /// The server died during the run; the run stops.
    Died(String),
    /// The engine rejected the setup, or the protocol could not go on.
    Step(StepError),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Server(e) => write!(f, "{e}"),
            RunError::Died(e) => write!(f, "the server died: {e}"),
            RunError::Step(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<ServerError> for RunError {
    fn from(e: ServerError) -> Self {
        RunError::Server(e)
    }
}

/// Private real servers and the runtime their clients run on.
pub struct Engines {
    runtime: tokio::runtime::Runtime,
    postgres: Option<RealServer>,
    mariadb: Option<RealServer>,
    schema_counter: u64,
    /// Per engine: the schema of the previous run and its setup, reused when the next run
    /// has the same setup and no generated keys.
    previous: std::collections::BTreeMap<EngineKind, (String, Vec<String>)>,
    /// Per engine: connections kept between runs.
    pools: std::collections::BTreeMap<EngineKind, stepper::Pool>,
    /// Statements sent to the real engines so far.
    pub statements: u64,
}

/// Whether `SHOPSIM_REQUIRE_ENGINES=1` asks that a missing engine fail instead of skip.
pub fn engines_required() -> bool {
    std::env::var("SHOPSIM_REQUIRE_ENGINES").is_ok_and(|v| v == "1")
}

impl Engines {
    /// Starts a private server of each engine in `kinds`.
    pub fn start(kinds: &[EngineKind]) -> Result<Engines, ServerError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ServerError {
                binary: "tokio".to_string(),
                message: e.to_string(),
            })?;
        let mut engines = Engines {
            runtime,
            postgres: None,
            mariadb: None,
            schema_counter: 0,
            previous: Default::default(),
            pools: Default::default(),
            statements: 0,
        };
        for &kind in kinds {
            let server = RealServer::start(kind)?;
            match kind {
                EngineKind::Postgres => engines.postgres = Some(server),
                EngineKind::MariaDb => engines.mariadb = Some(server),
            }
        }
        Ok(engines)
    }

    /// The server of `kind`, if started.
    pub fn server(&mut self, kind: EngineKind) -> Option<&mut RealServer> {
        match kind {
            EngineKind::Postgres => self.postgres.as_mut(),
            EngineKind::MariaDb => self.mariadb.as_mut(),
        }
    }

    /// The version of the server of `kind`.
    pub fn version(&self, kind: EngineKind) -> Option<&str> {
        match kind {
            EngineKind::Postgres => self.postgres.as_ref(),
            EngineKind::MariaDb => self.mariadb.as_ref(),
        }
        .map(|s| s.version.as_str())
    }

    /// Plays `steps` after `setup` on the real engine of `profile` with the stepping protocol.
    pub fn run_steps(
        &mut self,
        profile: Profile,
        clock: Clock,
        setup: &[String],
        steps: &[(String, String)],
    ) -> Result<(Outcome, Vec<Option<RealResult>>), RunError> {
        let kind = EngineKind::of(profile);
        let generated = setup.iter().any(|s| {
            let s = s.to_ascii_lowercase();
            s.contains("serial") || s.contains("auto_increment")
        });
        let (schema, reuse, stale) = match self.previous.get(&kind) {
            // Not InnoDB: a reused table would need the purge of its deleted rows (locking
            // reads lock delete-marked records and their gaps), and waiting for purge takes
            // longer than creating the table again.
            Some((schema, previous))
                if previous == setup && !generated && kind == EngineKind::Postgres =>
            {
                (schema.clone(), true, None)
            }
            previous => {
                self.schema_counter += 1;
                let stale = previous.map(|(s, _)| s.clone());
                (format!("cc{}", self.schema_counter), false, stale)
            }
        };
        self.previous.insert(kind, (schema.clone(), setup.to_vec()));
        let server = self.server(kind).ok_or_else(|| {
            RunError::Server(ServerError {
                binary: kind.name().to_string(),
                message: "not started".to_string(),
            })
        })?;
        if !server.is_alive() {
            return Err(RunError::Died(server.death_report()));
        }
        let port = server.port;
        self.statements += steps.len() as u64;
        let pool = self.pools.remove(&kind);
        let result = self.runtime.block_on(async {
            let mut pool = match pool {
                Some(pool) => pool,
                None => stepper::Pool::connect(kind, port).await?,
            };
            if let Some(stale) = stale {
                let drop = match kind {
                    EngineKind::Postgres => format!("drop schema if exists {stale} cascade"),
                    EngineKind::MariaDb => format!("drop database if exists {stale}"),
                };
                let _ = pool.run(&drop).await;
            }
            let timing = std::env::var("SHOPSIM_CROSSCHECK_TIMING").is_ok();
            let t0 = std::time::Instant::now();
            let mut stepper =
                Stepper::new(pool, kind, port, profile, clock, &schema, setup, reuse).await?;
            let t1 = t0.elapsed();
            let mut slow = Vec::new();
            for (session, statement) in steps {
                let t = std::time::Instant::now();
                stepper.step(session, statement).await?;
                slow.push(t.elapsed().as_micros());
            }
            let t2 = t0.elapsed();
            let out = stepper.finish().await;
            if timing {
                eprintln!(
                    "timing {profile}: setup {:?} steps {:?} finish {:?} per step us {slow:?}",
                    t1,
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
            Err(e) => {
                // The schema may be half set up: never reuse it.
                self.previous.remove(&kind);
                let server = self.server(kind).expect("started");
                if server.is_alive() {
                    Err(RunError::Step(e))
                } else {
                    Err(RunError::Died(format!("{} ({e})", server.death_report())))
                }
            }
        }
    }

    /// The real engine's outcome of a conformance script under `profile`.
    pub fn run_script(&mut self, script: &Script, profile: Profile) -> Result<Outcome, RunError> {
        let setup = setup_of(script);
        self.run_steps(profile, Clock::Conformance, &setup, &script.steps)
            .map(|(outcome, _)| outcome)
    }
}
