//! The simulated SQL database (under construction).

// Stand-in for the engine with the agreed API, so the server and client compile and are tested
// before the engine lands; removed when it does.
mod stand_in;
pub use stand_in::*;

pub mod client;
pub mod replica;
pub mod server;
