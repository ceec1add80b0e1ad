//! shopsim's integration tests: one binary, a module per area.

mod campaign;
mod cli;
mod conformance;
mod corpus;
mod counter;
mod crosscheck;
mod diagram;
mod inputs;
mod profiles;
mod roundtrip;
mod scenarios;
mod steering;
mod trace;
