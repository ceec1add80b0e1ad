//! The shopsim command line. It parses flags, calls `sim` and `scenarios`, and prints; it holds
//! no simulation logic.
//!
//! Exit codes (as in DESIGN.md): 0 all valid, 1 a property violated (or a conformance
//! mismatch), 2 bad input, 3 liveness, 4 panic in the model, 5 nondeterminism, 6 no progress
//! (a run made less progress than its scenario requires), 130 `fuzz` interrupted (SIGINT,
//! SIGTERM or SIGHUP) after saving its state and reports. Bad input is always 2 and never
//! reaches the model, so 3, 4 and 6 always mean the system under test misbehaved.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// The allocator: a simulation allocates and frees millions of small objects per second
/// (rows, messages, history records), where mimalloc is markedly faster than the system one.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: its position in `mi_option_e` (the same in mimalloc 2
/// and 3; the `mimalloc` crate links the library but does not name its options).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

extern "C" {
    // mimalloc's option API (`mimalloc.h`), in the library the `mimalloc` crate links.
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    fn mi_collect(force: bool);
}

/// Returns the memory freed so far to the OS and purges again from now on (until
/// [`allocator_keep_memory`]): `bench` measures one run's peak resident memory with it, which
/// memory kept from earlier runs would otherwise inflate.
pub fn allocator_release_memory() {
    // SAFETY: as in `allocator_keep_memory`; called between runs, on the only thread.
    unsafe {
        if KEEPS_MEMORY.load(Ordering::Relaxed) {
            mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
        mi_collect(true);
    }
}

/// Keeps freed memory mapped instead of returning it to the OS after mimalloc's purge delay
/// (10 ms in mimalloc 2, 1 s in 3). Runs on one thread follow each other, each allocating
/// about what the last one freed; with purging, runs fault in fresh pages that the kernel
/// zeroes first (measured: about 8% of a multi-tenant-mixed seed's time in `clear_page_erms`).
/// Resident memory stays at the process's peak, which is one run per thread.
/// `MIMALLOC_PURGE_DELAY` in the environment wins.
/// Whether [`allocator_keep_memory`] applies (no `MIMALLOC_PURGE_DELAY` in the environment).
static KEEPS_MEMORY: AtomicBool = AtomicBool::new(false);

fn allocator_keep_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: reads and sets one numeric option before any other thread exists; mimalloc
    // reads it whenever it considers purging.
    unsafe {
        // Its default is 10 ms in mimalloc 2 and 1000 ms in mimalloc 3: any other value means
        // the position above names another option in this mimalloc, which is then left alone.
        if ![10, 1_000].contains(&mi_option_get(MI_OPTION_PURGE_DELAY)) {
            return;
        }
        mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        assert_eq!(mi_option_get(MI_OPTION_PURGE_DELAY), -1);
    }
    KEEPS_MEMORY.store(true, Ordering::Relaxed);
}

/// Keeps memory mapped again after [`allocator_release_memory`], if this process kept it.
pub fn allocator_keep_memory_again() {
    // SAFETY: as in `allocator_keep_memory`.
    unsafe {
        if KEEPS_MEMORY.load(Ordering::Relaxed) {
            mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
}

mod artifact;
mod bench;
mod conformance;
mod crosscheck;
mod determinism;
mod diagram;
mod fuzz;
mod fuzz_inputs;
mod input;
mod json_u64;
mod progress;
mod replay;
mod reproduce;
mod run;
mod scaling;
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
/// Exit code: `fuzz` was interrupted (SIGINT, or SIGTERM as a stopped pod gets) and saved
/// its state and reports (128 + SIGINT, as shells report it). Never 0: a campaign cut short
/// did not finish, so a Kubernetes Job restarts it with `--resume`.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Every exit code with its meaning, for `--help`.
pub const EXIT_CODES: [(u8, &str); 9] = [
    (EXIT_OK, "every check valid"),
    (
        EXIT_VIOLATION,
        "a property violated (or a conformance mismatch)",
    ),
    (
        EXIT_BAD_INPUT,
        "bad input: a flag, file or scenario (the message names the flag or field and the value)",
    ),
    (3, "liveness: a run never settled"),
    (4, "a panic in the model"),
    (
        EXIT_NONDETERMINISM,
        "nondeterminism: a run did not reproduce its trace hash",
    ),
    (
        6,
        "no progress: a run made less progress than its scenario states ([progress]), and no check before `progress` failed",
    ),
    (101, "a panic of shopsim itself (a bug: please report it)"),
    (
        EXIT_INTERRUPTED,
        "fuzz interrupted (SIGINT or SIGTERM); its state and reports are saved, continue with --resume",
    ),
];

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
        another campaign, 130 interrupted (Ctrl-C or SIGTERM) after saving the state.")]
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
    /// Print a complete scenario template (every field, its unit, default and bounds), or
    /// check a scenario file.
    #[command(after_help = "Examples:\n  \
        shopsim scenario --template > my.toml\n  \
        shopsim scenario --check my.toml")]
    Scenario(ScenarioArgs),
    /// Generated hostile inputs of every kind (command lines, scenarios, artifacts, state
    /// files, conformance scripts), judged by the commands' own checks: counts by outcome.
    #[command(after_help = "Examples:\n  \
        shopsim fuzz-inputs --count 10000\n  \
        shopsim fuzz-inputs --count 1000000 --seed 1\n  \
        shopsim fuzz-inputs --start 4242 --count 1 --show")]
    FuzzInputs(fuzz_inputs::Args),
}

#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct ScenarioArgs {
    /// Print the template.
    #[arg(long)]
    template: bool,
    /// Check this scenario file (exit 0 if valid, 2 naming the field and value if not).
    #[arg(long, value_name = "FILE")]
    check: Option<std::path::PathBuf>,
}

/// What `--help` of `command` adds from the registries: exit codes, and the profiles,
/// planted bugs and scenarios it accepts.
fn registry_help(command: &str) -> String {
    let mut out = String::from("Exit codes:\n");
    for (code, meaning) in EXIT_CODES {
        out.push_str(&format!("  {code:<4} {meaning}\n"));
    }
    let profiles = matches!(
        command,
        "run" | "fuzz" | "replay" | "check-determinism" | "conformance" | "crosscheck"
    );
    let bugs = matches!(command, "run" | "fuzz" | "replay");
    let scenarios = matches!(
        command,
        "run" | "fuzz" | "replay" | "check-determinism" | "bench" | "crosscheck"
    );
    if profiles {
        let names: Vec<&str> = shopsim_sim::db::Profile::ALL
            .iter()
            .map(|p| p.name())
            .collect();
        out.push_str(&format!("\nProfiles (--profile): {}\n", names.join(", ")));
    }
    if bugs {
        out.push_str("\nPlanted bugs (--bug):\n");
        for (name, what) in shopsim_model::bugs::NAMES {
            out.push_str(&format!("  {name:<36} {what}\n"));
        }
    }
    if scenarios {
        let names: Vec<String> = shopsim_scenarios::builtin()
            .into_iter()
            .map(|s| s.name)
            .collect();
        out.push_str(&format!("\nScenarios: {}\n", names.join(", ")));
    }
    out
}

/// The command line with every subcommand's help extended by [`registry_help`].
fn cli_command() -> clap::Command {
    let mut command = Cli::command();
    let names: Vec<String> = command
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    for name in names {
        command = command.mut_subcommand(&name, |sub| {
            let examples = sub
                .get_after_help()
                .map(|h| format!("{h}\n\n"))
                .unwrap_or_default();
            let help = format!("{examples}{}", registry_help(&name));
            sub.after_help(help)
        });
    }
    let top = registry_help("");
    command.after_help(top)
}

/// Parses `args` as the command line; `Err` carries clap's message and the exit code.
fn parse_cli<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = cli_command().try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

/// Checks every input of `command` (flags, files, scenarios) exactly as the command does
/// before it starts work, without running or writing anything: the in-process oracle of
/// `shopsim fuzz-inputs`.
fn check_input(command: Command) -> Result<(), String> {
    match command {
        Command::Conformance(args) => conformance::check_args(&args).map(|_| ()),
        Command::Crosscheck(args) => crosscheck::check_args(&args).map(|_| ()),
        Command::Run(args) => run::check_args(&args).map(|_| ()),
        Command::Replay(args) => replay::plan(args).map(|_| ()),
        Command::Fuzz(args) => fuzz::check_args(&args).map(|_| ()),
        Command::Shrink(args) => shrink::check_args(&args).map(|_| ()),
        Command::CheckDeterminism(args) => determinism::check_args(&args).map(|_| ()),
        Command::Bench(args) => bench::check_args(&args).map(|_| ()),
        Command::List => Ok(()),
        Command::Scenario(args) => match args.check {
            Some(path) => run::resolve(&[], false, &[path], None).map(|_| ()),
            None => Ok(()),
        },
        Command::FuzzInputs(args) => fuzz_inputs::check_args(&args),
    }
}

fn scenario(args: ScenarioArgs) -> u8 {
    if args.template {
        print!("{}", shopsim_scenarios::Scenario::template());
        return EXIT_OK;
    }
    let Some(path) = args.check else {
        return EXIT_BAD_INPUT;
    };
    match run::resolve(&[], false, std::slice::from_ref(&path), None) {
        Ok(_) => {
            println!("{}: valid", path.display());
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_BAD_INPUT
        }
    }
}

fn main() -> ExitCode {
    allocator_keep_memory();
    let cli = match parse_cli(std::env::args_os()) {
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
        Command::Scenario(args) => scenario(args),
        Command::FuzzInputs(args) => fuzz_inputs::run(args),
        Command::List => {
            for s in shopsim_scenarios::builtin() {
                println!("{:<22} {}", s.name, s.why);
            }
            EXIT_OK
        }
    };
    ExitCode::from(code)
}
