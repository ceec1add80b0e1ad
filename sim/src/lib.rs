//! shopsim-sim: the generic deterministic simulation harness.
//!
//! Start here:
//! - [`runner`] turns one seed into one madsim `Runtime`, runs a [`runner::System`] in it and
//!   returns an [`runner::Outcome`] (history, final state, check reports, trace hash).
//! - [`seed`] and [`swarm`] parse seeds and draw a per-seed fault mix.
//! - [`fault`] injects network, node and buggify faults; [`net`] is request/response RPC with
//!   deadlines over madsim's network; [`steering`] delays seeded delay points (database
//!   statements, RPC, race windows) to open narrow race windows.
//! - [`db`] is the simulated SQL database (PostgreSQL and InnoDB profiles);
//!   [`open_transactions`] knows which nodes hold a database transaction while they call out.
//! - [`history`] records operations; [`check`] judges them; [`coverage`] records which race
//!   windows a run reached; [`trace`] stamps log events with virtual time and hashes the run.
//! - [`fuzz`] and [`replay`] run campaigns over many seeds and reproduce one.
//!
//! This crate has no word for carts, orders or payments: the system under test plugs in
//! through [`runner::System`].

pub mod check;
pub mod coverage;
pub mod db;
pub mod fault;
pub mod fuzz;
mod hash_serializer;
pub mod history;
pub mod input;
pub mod net;
pub mod open_transactions;
pub mod replay;
pub mod runner;
pub mod seed;
pub mod steering;
pub mod swarm;
pub mod trace;
