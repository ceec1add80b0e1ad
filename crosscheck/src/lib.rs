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
pub mod ids;
pub mod lane;
pub mod random;
pub mod server;
pub mod session;
pub mod stepper;
pub mod transcript;

use shopsim_sim::db::conformance::{setup_of, Outcome, Script};
use shopsim_sim::db::Profile;

use lane::Lane;
use server::{EngineKind, RealServer, ServerError};
use session::RealResult;
use stepper::{Clock, Steering, StepError, Stepper};

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

/// Private real servers, and the lane the calling thread runs on them.
pub struct Engines {
    postgres: Option<RealServer>,
    mariadb: Option<RealServer>,
    lane: Lane,
    /// Statements sent to the real engines so far by the calling thread's lane.
    pub statements: u64,
}

/// Whether `SHOPSIM_REQUIRE_ENGINES=1` asks that a missing engine fail instead of skip.
pub fn engines_required() -> bool {
    std::env::var("SHOPSIM_REQUIRE_ENGINES").is_ok_and(|v| v == "1")
}

impl Engines {
    /// Starts a private server of each engine in `kinds`.
    pub fn start(kinds: &[EngineKind]) -> Result<Engines, ServerError> {
        let mut postgres = None;
        let mut mariadb = None;
        for &kind in kinds {
            let server = RealServer::start(kind)?;
            match kind {
                EngineKind::Postgres => postgres = Some(server),
                EngineKind::MariaDb => mariadb = Some(server),
            }
        }
        let mut engines = Engines {
            postgres,
            mariadb,
            lane: Lane::new(0, Default::default()),
            statements: 0,
        };
        engines.lane = engines.new_lane(0);
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

    /// The ports of the started servers.
    pub fn ports(&self) -> std::collections::BTreeMap<EngineKind, u16> {
        [&self.postgres, &self.mariadb]
            .into_iter()
            .flatten()
            .map(|s| (s.kind, s.port))
            .collect()
    }

    /// A new lane on these servers (for a worker thread); `id` > 0 keeps its schema names
    /// apart from every other lane's.
    pub fn new_lane(&self, id: usize) -> Lane {
        Lane::new(id, self.ports())
    }

    /// A failed step as the campaign sees it: the server died (the run stops), or the
    /// protocol could not finish this input (the server is fine; the campaign goes on).
    pub fn classify(&mut self, kind: EngineKind, e: StepError) -> RunError {
        match self.server(kind) {
            None => RunError::Server(ServerError {
                binary: kind.name().to_string(),
                message: "not started".to_string(),
            }),
            Some(server) => {
                if server.is_alive() {
                    RunError::Step(e)
                } else {
                    RunError::Died(format!("{} ({e})", server.death_report()))
                }
            }
        }
    }

    /// The calling thread's lane.
    pub fn lane(&mut self) -> &mut Lane {
        &mut self.lane
    }

    /// An error unless the server of `kind` was started and still runs.
    pub fn check_alive(&mut self, kind: EngineKind) -> Result<(), RunError> {
        let server = self.server(kind).ok_or_else(|| {
            RunError::Server(ServerError {
                binary: kind.name().to_string(),
                message: "not started".to_string(),
            })
        })?;
        if server.is_alive() {
            Ok(())
        } else {
            Err(RunError::Died(server.death_report()))
        }
    }

    /// Plays `steps` after `setup` on the real engine of `profile` with the stepping protocol.
    pub fn run_steps(
        &mut self,
        profile: Profile,
        clock: Clock,
        setup: &[String],
        steps: &[(String, String)],
    ) -> Result<(Outcome, Vec<Option<RealResult>>), RunError> {
        self.run_steps_with(profile, clock, setup, steps.len(), |i, _| {
            let (session, statement) = steps[i].clone();
            (session, statement, Steering::default())
        })
    }

    /// Like [`Engines::run_steps`], with each step given when it is sent
    /// ([`Lane::run_steps_with`]).
    pub fn run_steps_with(
        &mut self,
        profile: Profile,
        clock: Clock,
        setup: &[String],
        count: usize,
        step_of: impl FnMut(usize, &Stepper) -> (String, String, Steering),
    ) -> Result<(Outcome, Vec<Option<RealResult>>), RunError> {
        let kind = EngineKind::of(profile);
        self.check_alive(kind)?;
        let result = self
            .lane
            .run_steps_with(profile, clock, setup, count, step_of);
        self.statements = self.lane.statements;
        result.map_err(|e| self.classify(kind, e))
    }

    /// The real engine's outcome of a conformance script under `profile`.
    pub fn run_script(&mut self, script: &Script, profile: Profile) -> Result<Outcome, RunError> {
        let setup = setup_of(script);
        self.run_steps(profile, Clock::Conformance, &setup, &script.steps)
            .map(|(outcome, _)| outcome)
    }
}
