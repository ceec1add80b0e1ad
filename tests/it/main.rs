//! shopsim's integration tests: one binary, a module per area.

mod cli;
mod conformance;
mod counter;
mod scenarios;
mod steering;
