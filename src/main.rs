//! The shopsim command line. It parses flags, calls `sim` and `scenarios`, and prints; it holds
//! no simulation logic.
//!
//! Exit codes (as in DESIGN.md): 0 all valid, 1 a property violated (or a conformance
//! mismatch), 2 bad input, 3 liveness, 4 panic in the model, 5 nondeterminism.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The allocator: a simulation allocates and frees millions of small objects per second
/// (rows, messages, history records), where mimalloc is markedly faster than the system one.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod artifact;
mod bench;
mod conformance;
mod crosscheck;
mod determinism;
mod fuzz;
mod replay;
mod run;
mod shrink;

/// Exit code: every check valid.
pub const EXIT_OK: u8 = 0;
/// Exit code: a property was violated (or the database differs from a measurement).
pub const EXIT_VIOLATION: u8 = 1;
/// Exit code: bad input (flag, file, scenario).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code: a run did not reproduce (nondeterminism).
pub const EXIT_NONDETERMINISM: u8 = 5;

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
    /// Check the simulated database against real PostgreSQL 15 and MariaDB 10.11 (private
    /// servers this command starts): conformance files, transcripts of simulated runs, or
    /// random transaction groups. Exit 1 on a divergence, 2 if an engine is missing.
    #[command(after_help = "Examples:\n  \
        shopsim crosscheck sim/conformance/hermitage.toml\n  \
        shopsim crosscheck my-scripts.toml --measure measured.toml\n  \
        shopsim crosscheck --scenario checkout-concurrency --seeds 20 --profile pg_rc\n  \
        shopsim crosscheck --scenario all --seeds 100\n  \
        shopsim crosscheck --random 1000 --profile maria_rr\n\n\
        Install the engines with scripts/install-engines.sh (Debian 12, as root).")]
    Crosscheck(crosscheck::Args),
    /// Run scenarios on seeds and print a summary table.
    #[command(after_help = "Examples:\n  \
        shopsim run --all\n  \
        shopsim run checkout-concurrency --seeds 32 --profile maria_rr\n  \
        shopsim run inventory-race --bug oversell_check_then_act\n  \
        shopsim run --file my-scenario.toml --seed 7")]
    Run(run::Args),
    /// List the built-in scenarios.
    #[command(after_help = "Example:\n  shopsim list")]
    List,
    /// Reproduce one seed: the checks' reports, the trace hash, and with --trace the history.
    #[command(after_help = "Examples:\n  \
        shopsim replay checkout-concurrency --seed 7 --profile maria_rr --trace\n  \
        shopsim replay inventory-race --seed 3 --bug oversell_check_then_act")]
    Replay(replay::Args),
    /// Explore fresh seeds in swarm mode on N threads; failures become artifacts.
    #[command(after_help = "Examples:\n  \
        shopsim fuzz --duration 8h\n  \
        shopsim fuzz inventory-race --seeds 2000 --bug oversell_check_then_act --out target/fuzz\n  \
        shopsim fuzz --duration 1h --shard 3/10 --out /data/shard-3\n  \
        shopsim fuzz --duration 8h --resume")]
    Fuzz(fuzz::Args),
    /// Search for a smaller run that still fails the same check; writes it as a new artifact.
    #[command(
        after_help = "Example:\n  shopsim shrink target/shopsim/fuzz/inventory-race@pg_rc/123.json"
    )]
    Shrink(shrink::Args),
    /// Run each seed twice in this process and once in a fresh one; exit 5 on any difference.
    #[command(after_help = "Examples:\n  \
        shopsim check-determinism --seeds 20\n  \
        shopsim check-determinism checkout-concurrency --seeds 100 --profile maria_rr")]
    CheckDeterminism(determinism::Args),
    /// Seeds per second, virtual/wall time, peak memory and multi-thread speed-up.
    #[command(after_help = "Examples:\n  shopsim bench\n  shopsim bench --seeds 100 --json")]
    Bench(bench::Args),
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
        Command::Crosscheck(args) => crosscheck::run(args),
        Command::Run(args) => run::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Shrink(args) => shrink::run(args),
        Command::CheckDeterminism(args) => determinism::run(args),
        Command::Bench(args) => bench::run(args),
        Command::List => {
            for s in shopsim_scenarios::builtin() {
                println!("{:<22} {}", s.name, s.why);
            }
            EXIT_OK
        }
    };
    ExitCode::from(code)
}

/// The report of a failed seed: the FAIL line, then commands that reproduce it.
pub fn failure_text<S>(outcome: &shopsim_sim::runner::Outcome<S>, bugs: &[String]) -> String {
    let line = outcome.fail_line().expect("a failed outcome");
    let (scenario, profile) = outcome
        .system
        .split_once('@')
        .unwrap_or((&outcome.system, ""));
    let mut replay = format!(
        "cargo run --release -- replay {scenario} --seed {}",
        outcome.seed
    );
    if !profile.is_empty() {
        replay.push_str(&format!(" --profile {profile}"));
    }
    for bug in bugs {
        replay.push_str(&format!(" --bug {bug}"));
    }
    format!("{line}\nnote: reproduce with: {replay}")
}
