//! The commands a failure report prints. Each one can be pasted into a shell as it is: it
//! names the scenario the way it was given (a built-in name, or `--file PATH` for a scenario
//! file), the seed, profile and planted bugs, how the seed's configuration was drawn from it
//! ([`Draw`]: `--steering`, `--swarm`, `--swarm --no-steering`), and every word is
//! shell-quoted when it needs to be.

use std::path::{Path, PathBuf};

use shopsim_sim::runner::SimConfig;

/// How a seed's configuration comes from the seed besides the scenario's own: one rule for
/// `run`, `fuzz`, `replay`, `check-determinism` and `bench`, so a seed replays from its
/// number and these flags alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draw {
    /// The scenario's configuration as it is.
    Scenario,
    /// The scenario's faults and a steering plan drawn from the seed, on (`--steering`).
    Steering,
    /// Fuzz's swarm mode: a fault plan drawn from the seed over every family, and a steering
    /// plan drawn from the seed, on for most seeds (`--swarm`).
    Swarm,
    /// Swarm-drawn faults with the scenario's own steering (`--swarm --no-steering`).
    SwarmFaults,
}

impl Draw {
    /// The draw that `--swarm`, `--steering` and `--no-steering` select, or why they do not
    /// go together.
    pub fn from_flags(swarm: bool, steering: bool, no_steering: bool) -> Result<Draw, String> {
        match (swarm, steering, no_steering) {
            (false, false, false) => Ok(Draw::Scenario),
            (false, true, false) => Ok(Draw::Steering),
            (true, false, false) => Ok(Draw::Swarm),
            (true, false, true) => Ok(Draw::SwarmFaults),
            (_, true, true) => Err("--steering and --no-steering contradict each other".into()),
            (true, true, _) => Err(
                "--steering with --swarm: swarm mode draws its own steering from the seed".into(),
            ),
            (false, false, true) => {
                Err("--no-steering needs --swarm (without it steering is off)".into())
            }
        }
    }

    /// The flags of `shopsim replay` that select this draw.
    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Draw::Scenario => &[],
            Draw::Steering => &["--steering"],
            Draw::Swarm => &["--swarm"],
            Draw::SwarmFaults => &["--swarm", "--no-steering"],
        }
    }

    /// The configuration of `seed` under this draw, from the scenario's `base`.
    pub fn config(self, base: &SimConfig, seed: u64) -> SimConfig {
        match self {
            Draw::Scenario => base.clone(),
            Draw::Steering => SimConfig {
                steering: shopsim_sim::swarm::draw_steering(seed),
                ..base.clone()
            },
            Draw::Swarm => shopsim_sim::swarm::config(seed, base, false),
            Draw::SwarmFaults => SimConfig {
                steering: base.steering.clone(),
                ..shopsim_sim::swarm::config(seed, base, false)
            },
        }
    }
}

/// How every printed command starts (README: the commands run from a checkout).
pub const COMMAND_PREFIX: &str = "cargo run --release --";

/// Where a scenario came from, so a command can name it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A built-in scenario, by name.
    Builtin(String),
    /// A scenario file, by the path given on the command line.
    File(PathBuf),
}

impl Source {
    /// The words that select this scenario: `inventory-race` or `--file PATH`.
    pub fn args(&self) -> Vec<String> {
        match self {
            Source::Builtin(name) => vec![name.clone()],
            Source::File(path) => vec!["--file".to_string(), path.display().to_string()],
        }
    }
}

/// One seed of one scenario under one profile, as a failure report names it.
#[derive(Debug, Clone)]
pub struct SeedRun<'a> {
    /// The scenario.
    pub source: &'a Source,
    /// The database profile.
    pub profile: &'a str,
    /// The seed.
    pub seed: u64,
    /// Planted bugs that were on.
    pub bugs: &'a [String],
    /// How the configuration was drawn from the seed.
    pub draw: Draw,
}

impl SeedRun<'_> {
    /// The arguments of `shopsim replay` for this seed.
    pub fn replay_args(&self) -> Vec<String> {
        let mut args = vec!["replay".to_string()];
        args.extend(self.source.args());
        args.extend(["--seed".to_string(), self.seed.to_string()]);
        args.extend(["--profile".to_string(), self.profile.to_string()]);
        for bug in self.bugs {
            args.extend(["--bug".to_string(), bug.clone()]);
        }
        args.extend(self.draw.flags().iter().map(|f| f.to_string()));
        args
    }

    /// The replay command, ready to paste.
    pub fn replay_command(&self) -> String {
        command(&self.replay_args())
    }
}

/// The command that replays an artifact file.
pub fn replay_artifact_command(path: &Path) -> String {
    command(&["replay".to_string(), path.display().to_string()])
}

/// `cargo run --release -- ARGS`, each argument quoted for a POSIX shell if needed.
pub fn command(args: &[String]) -> String {
    let mut out = COMMAND_PREFIX.to_string();
    for arg in args {
        out.push(' ');
        out.push_str(&shell_word(arg));
    }
    out
}

/// `word` as one word of a POSIX shell: as it is when it holds only characters no shell
/// treats specially, else in single quotes (a `'` inside becomes `'\''`).
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_name_files_swarm_and_quote() {
        let bugs = vec!["oversell_check_then_act".to_string()];
        let builtin = Source::Builtin("inventory-race".to_string());
        let run = SeedRun {
            source: &builtin,
            profile: "pg_rc",
            seed: 18_446_744_073_709_551_615,
            bugs: &bugs,
            draw: Draw::Swarm,
        };
        assert_eq!(
            run.replay_command(),
            "cargo run --release -- replay inventory-race --seed 18446744073709551615 \
             --profile pg_rc --bug oversell_check_then_act --swarm"
        );
        let file = Source::File(PathBuf::from("my dir/it's.toml"));
        let run = SeedRun {
            source: &file,
            draw: Draw::Steering,
            ..run
        };
        assert_eq!(
            run.replay_command(),
            "cargo run --release -- replay --file 'my dir/it'\\''s.toml' --seed \
             18446744073709551615 --profile pg_rc --bug oversell_check_then_act --steering"
        );
        assert!(Draw::from_flags(true, true, false).is_err());
        assert!(Draw::from_flags(false, false, true).is_err());
        for draw in [
            Draw::Scenario,
            Draw::Steering,
            Draw::Swarm,
            Draw::SwarmFaults,
        ] {
            let f = draw.flags();
            let has = |flag: &str| f.contains(&flag);
            assert_eq!(
                Draw::from_flags(has("--swarm"), has("--steering"), has("--no-steering")),
                Ok(draw)
            );
        }
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("a$b"), "'a$b'");
    }
}
