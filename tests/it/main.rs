//! shopsim's integration tests: one binary, a module per area.

mod campaign;
mod cli;
mod conformance;
mod counter;
mod crosscheck;
mod diagram;
mod roundtrip;
mod scenarios;
mod trace;
