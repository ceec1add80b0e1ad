//! The shopsim command line. It parses flags, calls `sim` and `scenarios`, and prints; it holds
//! no simulation logic.
//!
//! Exit codes (as in DESIGN.md): 0 all valid, 1 a property violated (or a conformance
//! mismatch), 2 bad input, 3 liveness, 4 panic in the model, 5 nondeterminism.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod conformance;

/// Exit code: every check valid.
pub const EXIT_OK: u8 = 0;
/// Exit code: a property was violated (or the database differs from a measurement).
pub const EXIT_VIOLATION: u8 = 1;
/// Exit code: bad input (flag, file, scenario).
pub const EXIT_BAD_INPUT: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "shopsim",
    version,
    about = "Deterministic simulation testing for a transactional e-commerce backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay isolation scripts against the simulated database and compare every step with
    /// the outcome measured on real PostgreSQL and MariaDB.
    #[command(after_help = "Examples:\n  \
        shopsim conformance sim/conformance/hermitage.toml\n  \
        shopsim conformance sim/conformance/hermitage.toml --profile pg_rc --profile maria_rr")]
    Conformance(conformance::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                EXIT_BAD_INPUT
            } else {
                EXIT_OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let code = match cli.command {
        Command::Conformance(args) => conformance::run(args),
    };
    ExitCode::from(code)
}
