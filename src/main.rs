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
mod diagram;
mod fuzz;
mod json_u64;
mod progress;
mod replay;
mod reproduce;
mod run;
mod shrink;
mod signature;
mod statements;

/// Exit code: every check valid.
pub const EXIT_OK: u8 = 0;
/// Exit code: a property was violated (or the database differs from a measurement).
pub const EXIT_VIOLATION: u8 = 1;
/// Exit code: bad input (flag, file, scenario).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code: a run did not reproduce (nondeterminism).
pub const EXIT_NONDETERMINISM: u8 = 5;

/// `--version`: the version and the commit the binary was built from (`build.rs`).
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SHOPSIM_BUILD_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "shopsim",
    version = LONG_VERSION,
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
        shopsim run --file my-scenario.toml --seed 7\n  \
        shopsim run inventory-race --seeds 100 --json")]
    Run(run::Args),
    /// List the built-in scenarios.
    #[command(after_help = "Example:\n  shopsim list")]
    List,
    /// Reproduce one seed: the checks' reports, the trace hash, and with --trace the history.
    #[command(after_help = "Examples:\n  \
        shopsim replay checkout-concurrency --seed 7 --profile maria_rr --trace\n  \
        shopsim replay inventory-race --seed 3 --bug oversell_check_then_act\n  \
        shopsim replay inventory-race --seed 123 --swarm --diagram race.mmd\n  \
        shopsim replay target/shopsim/fuzz/inventory-race@pg_rc/123.json")]
    Replay(replay::Args),
    /// Explore fresh seeds in swarm mode on N threads; failures become artifacts.
    #[command(after_help = "Examples:\n  \
        shopsim fuzz --duration 8h\n  \
        shopsim fuzz inventory-race --seeds 2000 --bug oversell_check_then_act --out target/fuzz\n  \
        shopsim fuzz --duration 1h --shard 3/10 --out /data/shard-3\n  \
        shopsim fuzz --duration 8h --resume\n  \
        shopsim fuzz --file my-scenario.toml --duration 10m --max-artifacts-per-group 5\n\n\
        Failures are grouped by signature (scenario@profile, check, the witness's shape);\n\
        each group keeps its first and smallest failure. --duration and --seeds are the\n\
        campaign's totals across --resume. Exit: 0 nothing failed, 1/3/4 the worst failure\n\
        of the campaign, 5 a failure did not reproduce, 2 bad input or --out held by\n\
        another campaign.")]
    Fuzz(fuzz::Args),
    /// Search for a smaller run that still fails the same check; writes it as a new artifact.
    #[command(
        after_help = "Example:\n  shopsim shrink target/shopsim/fuzz/inventory-race@pg_rc/123.json\n\n\
        Writes <name>-shrunk-<check>.json next to the artifact (never over a file). Exit: 1 the\n\
        run still fails its check (shrunk, or already minimal), 2 nothing to shrink (its run\n\
        no longer fails the check) or bad input, 5 the artifact does not replay."
    )]
    Shrink(shrink::Args),
    /// Run each seed twice in this process and once in a fresh one; exit 5 on any difference.
    #[command(after_help = "Examples:\n  \
        shopsim check-determinism --seeds 20\n  \
        shopsim check-determinism checkout-concurrency --seeds 100 --profile maria_rr\n  \
        shopsim check-determinism --file my-scenario.toml --seeds 20")]
    CheckDeterminism(determinism::Args),
    /// Seeds per second, virtual/wall time, peak memory and multi-thread speed-up.
    #[command(
        after_help = "Examples:\n  shopsim bench\n  shopsim bench --seeds 100 --json\n  \
        shopsim bench --file my-scenario.toml --seeds 20"
    )]
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
