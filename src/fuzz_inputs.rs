//! `shopsim fuzz-inputs`: generated hostile inputs of the five kinds shopsim reads (command
//! lines, scenario files, artifacts, campaign state files, conformance scripts), each judged by
//! the same checks the commands run before they start work (`crate::check_input`,
//! `Scenario::from_toml`, `artifact::check`, `fuzz::parse_state`, `ScriptFile::parse`), in
//! this process, so a million inputs take minutes, not hours of process start-ups.
//!
//! Each input starts from a valid one and gets hostile values for the fields it has (bounds
//! and one past them, 2^63, 2^64, NaN, infinities, wrong types, duplicates, unknown names) or
//! hostile structure (truncated, duplicated or garbage lines, deep nesting, huge strings). An
//! input is judged:
//! - `bad input`: refused with a message that names the field or flag (exit 2). Counted as
//!   naming the changed field, or another one (a relation the change broke);
//! - `unnamed`: refused without naming where (a defect);
//! - `valid`: accepted; one in `--simulate-every` accepted scenarios and artifacts is also run
//!   (one seed, in process) and its exit code counted: 3 or 4 there would mean that an
//!   accepted input breaks the model;
//! - `panic`, `timeout` (over 10 s for checking, 120 s for a run), `memory` (peak resident
//!   memory above 256 MiB while it was judged): defects.
//!
//! One input in `--spawn-every` is also run through the real binary as a child process (when
//! its in-process verdict is bad input, so it cannot start long work) and must exit 2.
//! Inputs are a pure function of (`--seed`, index): `--start I --count 1 --show` shows one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shopsim_scenarios::fields::FIELDS;
use shopsim_scenarios::Scenario;
use shopsim_sim::input::Kind;

use crate::{EXIT_OK, EXIT_VIOLATION};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many inputs.
    #[arg(long, default_value = "10000", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    count: u64,
    /// The first input's index (`--start I --count 1 --show` shows input I).
    #[arg(long, default_value = "0")]
    start: u64,
    /// The generator's seed.
    #[arg(long, default_value = "0")]
    seed: u64,
    /// Run one accepted scenario or artifact in this many (0: none).
    #[arg(long, default_value = "500")]
    simulate_every: u64,
    /// Also run one input in this many through the binary as a child process (0: none).
    #[arg(long, default_value = "1000")]
    spawn_every: u64,
    /// Where the files of spawned inputs go.
    #[arg(long, default_value = "target/shopsim/fuzz-inputs")]
    out: PathBuf,
    /// Print every input and its verdict.
    #[arg(long)]
    show: bool,
}

/// Nothing to check beyond clap's own parsing.
pub fn check_args(_: &Args) -> Result<(), String> {
    Ok(())
}

/// The five kinds of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InputKind {
    Args,
    Scenario,
    Artifact,
    State,
    Conformance,
}

impl InputKind {
    const ALL: [InputKind; 5] = [
        InputKind::Args,
        InputKind::Scenario,
        InputKind::Artifact,
        InputKind::State,
        InputKind::Conformance,
    ];

    fn name(self) -> &'static str {
        match self {
            InputKind::Args => "command line",
            InputKind::Scenario => "scenario",
            InputKind::Artifact => "artifact",
            InputKind::State => "state file",
            InputKind::Conformance => "conformance",
        }
    }
}

/// One generated input.
#[derive(Debug, Clone)]
pub struct Input {
    pub kind: InputKind,
    /// The file's text (not for command lines).
    pub text: String,
    /// The command line (command lines only; file inputs are passed by path).
    pub argv: Vec<String>,
    /// The field or flag given a hostile value, if one was.
    pub changed: Option<String>,
}

/// How an input was judged.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Refused, naming the changed field or flag.
    BadNamed,
    /// Refused, naming another field (a relation the change broke).
    BadOther,
    /// Refused without naming a field or flag: a defect.
    Unnamed(String),
    /// Accepted.
    Valid,
    /// Panicked while being checked: a defect.
    Panic(String),
}

impl Verdict {
    fn is_defect(&self) -> bool {
        matches!(self, Verdict::Unnamed(_) | Verdict::Panic(_))
    }
}

/// Files every generator may point at: built once per campaign.
pub struct Fixtures {
    scenarios: Vec<Scenario>,
    artifact: serde_json::Value,
    paths: Vec<String>,
    dir: PathBuf,
}

impl Fixtures {
    /// Creates the fixture files under `dir`.
    pub fn new(dir: &Path) -> Fixtures {
        std::fs::create_dir_all(dir).expect("fixture folder");
        let mut scenarios = shopsim_scenarios::builtin();
        let tiny = Scenario::from_toml(TINY).expect("the tiny scenario is valid");
        scenarios.push(tiny.clone());
        let config = tiny.sim_config();
        let artifact = crate::artifact::Artifact {
            format: crate::artifact::FORMAT.to_string(),
            scenario: tiny.name.clone(),
            profile: "pg_rc".to_string(),
            seed: 7,
            bugs: vec!["oversell_check_then_act".to_string()],
            config,
            scenario_toml: tiny.to_toml(),
            commit: "unknown".to_string(),
            version: crate::artifact::VERSION.to_string(),
            trace_hash: 0,
            inputs_hash: None,
            failure: Some(shopsim_sim::runner::Failure {
                kind: shopsim_sim::runner::FailureKind::Violation,
                check: "no_oversell".to_string(),
                witness: "a witness".to_string(),
                also: Vec::new(),
            }),
            windows: Vec::new(),
            reports: Vec::new(),
            history: Default::default(),
        };
        let artifact = serde_json::to_value(&artifact).expect("an artifact serializes");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("fixture file");
            path.display().to_string()
        };
        let fifo = dir.join("fifo.toml");
        if !fifo.exists() {
            let _ = std::process::Command::new("mkfifo").arg(&fifo).status();
        }
        let zero = dir.join("zero.json");
        if std::fs::symlink_metadata(&zero).is_err() {
            let _ = std::os::unix::fs::symlink("/dev/zero", &zero);
        }
        let long = dir.join("long.toml");
        if !long.exists() {
            let big = format!("name = \"x\"\nwhy = \"{}\"\n", "y".repeat(2 << 20));
            std::fs::write(&long, big).expect("fixture file");
        }
        let paths = vec![
            write("tiny.toml", TINY),
            write(
                "bad.toml",
                "name = \"x\"\nwhy = \"y\"\n[shop]\nshoppers = -1\n",
            ),
            write("artifact.json", &artifact.to_string()),
            write(
                "bad-artifact.json",
                &artifact.to_string().replace("\"pg_rc\"", "\"pg_xx\""),
            ),
            write("conformance.toml", CONFORMANCE),
            fifo.display().to_string(),
            zero.display().to_string(),
            long.display().to_string(),
            dir.display().to_string(),
            dir.join("missing.toml").display().to_string(),
            "/dev/null".to_string(),
        ];
        Fixtures {
            scenarios,
            artifact,
            paths,
            dir: dir.to_path_buf(),
        }
    }
}

/// A small valid scenario (fast to run).
const TINY: &str = r#"name = "tiny"
why = "A small run for generated inputs."
profiles = ["pg_rc", "maria_rr"]
[sim]
duration_ms = 2_000
[faults]
families = ["crash", "loss", "buggify"]
quiet_period_ms = 1_000
[shop]
shoppers = 4
payers = 1
catalog_readers = 2
reads_per_reader = 2
products_per_tenant = 2
stock_per_product = 3
arrival_window_ms = 200
"#;

/// A small valid conformance file.
const CONFORMANCE: &str = r#"[[script]]
name = "read-own-write"
steps = [["T1", "begin"], ["T1", "update test set value = 11 where id = 1"], ["T1", "select * from test where id = 1"], ["T1", "commit"]]
[script.outcome.pg_rc]
steps = ["ok", "ok", "rows[1:11]", "ok"]
final = "1=>11, 2=>20"
"#;

/// Hostile whole numbers around `min..=max`.
fn hostile_int(rng: &mut ChaCha8Rng, min: i64, max: u64) -> String {
    let choices = [
        (i128::from(min) - 1).to_string(),
        min.to_string(),
        max.to_string(),
        (i128::from(max) + 1).to_string(),
        "0".to_string(),
        "-1".to_string(),
        i64::MIN.to_string(),
        i64::MAX.to_string(),
        u64::MAX.to_string(),
        "1180591620717411303424".to_string(),
        "2147483647".to_string(),
        "4294967296".to_string(),
        rng.gen_range(min.max(0) as u64..=max.min(1 << 40))
            .to_string(),
        "1.5".to_string(),
        "nan".to_string(),
        "\"7\"".to_string(),
        "true".to_string(),
        "[1]".to_string(),
    ];
    choices.choose(rng).expect("choices").clone()
}

fn hostile_float(rng: &mut ChaCha8Rng, min: f64, max: f64) -> String {
    let choices = [
        "nan".to_string(),
        "inf".to_string(),
        "-inf".to_string(),
        "-0.0".to_string(),
        "0.0".to_string(),
        "1.0".to_string(),
        "1.5".to_string(),
        "-1.0".to_string(),
        "1e308".to_string(),
        "5e-324".to_string(),
        format!("{min:?}"),
        format!("{max:?}"),
        format!("{:?}", rng.gen_range(min..=max)),
        "3".to_string(),
        "\"0.5\"".to_string(),
    ];
    choices.choose(rng).expect("choices").clone()
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn hostile_text(rng: &mut ChaCha8Rng) -> String {
    let choices = [
        toml_string(""),
        toml_string("x"),
        toml_string("../../etc/passwd"),
        toml_string(".hidden"),
        toml_string("a/b"),
        toml_string("ßchüss ☃"),
        toml_string("\u{0}nul"),
        toml_string(&"w".repeat(3_000)),
        toml_string("checkout-concurrency"),
        "7".to_string(),
        "[\"x\"]".to_string(),
    ];
    choices.choose(rng).expect("choices").clone()
}

fn hostile_names(rng: &mut ChaCha8Rng, names: &[&str]) -> String {
    let pick = || toml_string(names[0]);
    let choices = [
        "[]".to_string(),
        format!("[{}]", pick()),
        format!("[{}, {}]", pick(), pick()),
        format!(
            "[{}]",
            names
                .iter()
                .map(|n| toml_string(n))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "[\"no_such_name\"]".to_string(),
        "[1]".to_string(),
        toml_string(names[names.len() - 1]),
        format!("[{}]", vec![pick(); 10_000].join(", ")),
    ];
    choices.choose(rng).expect("choices").clone()
}

/// A hostile TOML literal for a field of kind `kind`.
fn hostile_literal(rng: &mut ChaCha8Rng, kind: Kind) -> String {
    match kind {
        Kind::Int { min, max } | Kind::OptionalInt { min, max } => hostile_int(rng, min, max),
        Kind::Float { min, max, .. } => hostile_float(rng, min, max),
        Kind::Bool => ["true", "false", "1", "\"true\""]
            .choose(rng)
            .expect("choices")
            .to_string(),
        Kind::Text { .. } | Kind::Name { .. } => hostile_text(rng),
        Kind::Choice(choices) => {
            let names = choices();
            [
                toml_string(names.choose(rng).expect("names")),
                toml_string("pg_xx"),
                toml_string(""),
                "1".to_string(),
            ]
            .choose(rng)
            .expect("choices")
            .clone()
        }
        Kind::Names { choices, .. } => hostile_names(rng, &choices()),
    }
}

/// Puts `key = literal` into `[table]` of TOML text rendered by `toml::to_string` (which
/// writes every table of a scenario).
fn set_key(text: &str, table: &str, key: &str, literal: &str) -> String {
    let line = format!("{key} = {literal}\n");
    if table.is_empty() {
        return format!("{line}{text}");
    }
    let header = format!("[{table}]\n");
    match text.find(&header) {
        Some(at) => {
            let at = at + header.len();
            format!("{}{line}{}", &text[..at], &text[at..])
        }
        None => format!("{text}\n{header}{line}"),
    }
}

/// Hostile structure: the text cut, lines dropped, doubled or garbled, deep nesting.
fn hostile_structure(rng: &mut ChaCha8Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    match rng.gen_range(0..9) {
        0 => {
            let mut cut = rng.gen_range(0..=text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            return text[..cut].to_string();
        }
        1 if !lines.is_empty() => {
            lines.remove(rng.gen_range(0..lines.len()));
        }
        2 if !lines.is_empty() => {
            let i = rng.gen_range(0..lines.len());
            lines.insert(i, lines[i].clone());
        }
        3 => {
            let garbage: String = (0..rng.gen_range(1..40))
                .map(|_| char::from(rng.gen_range(0x20u8..0x7f)))
                .collect();
            let at = rng.gen_range(0..=lines.len());
            lines.insert(at, garbage);
        }
        4 => {
            let depth = rng.gen_range(10..5_000);
            let at = rng.gen_range(0..=lines.len());
            lines.insert(
                at,
                format!("deep = {}{}", "[".repeat(depth), "]".repeat(depth)),
            );
        }
        5 => {
            let at = rng.gen_range(0..=lines.len());
            lines.insert(at, "[[shop]]".to_string());
        }
        6 if lines.len() > 1 => {
            let (a, b) = (rng.gen_range(0..lines.len()), rng.gen_range(0..lines.len()));
            lines.swap(a, b);
        }
        7 => {
            let at = rng.gen_range(0..=lines.len());
            lines.insert(
                at,
                format!("huge = \"{}\"", "h".repeat(rng.gen_range(1..200_000))),
            );
        }
        _ => return String::new(),
    }
    lines.join("\n")
}

/// A scenario file with one hostile change; the field changed, if any.
pub fn scenario_text(rng: &mut ChaCha8Rng, fixtures: &Fixtures) -> (String, Option<String>) {
    let base = fixtures.scenarios.choose(rng).expect("scenarios").to_toml();
    let mut table: toml::Table = base.parse().expect("a scenario renders as TOML");
    match rng.gen_range(0..12) {
        0..=6 => {
            let field = FIELDS.choose(rng).expect("fields");
            let (parent, key) = field.path.rsplit_once('.').unwrap_or(("", field.path));
            let mut at = &mut table;
            for part in parent.split('.').filter(|p| !p.is_empty()) {
                at = at
                    .entry(part)
                    .or_insert_with(|| toml::Value::Table(Default::default()))
                    .as_table_mut()
                    .expect("a table");
            }
            at.remove(key);
            let text = toml::to_string(&table).expect("renders");
            let literal = hostile_literal(rng, field.kind);
            (
                set_key(&text, parent, key, &literal),
                Some(field.path.to_string()),
            )
        }
        7 => {
            let table_name = ["", "sim", "faults", "shop", "shop.db"]
                .choose(rng)
                .expect("tables");
            let key = ["shopers", "durationms", "Families", "x"]
                .choose(rng)
                .expect("keys");
            let path = if table_name.is_empty() {
                key.to_string()
            } else {
                format!("{table_name}.{key}")
            };
            (set_key(&base, table_name, key, "1"), Some(path))
        }
        8 => (base, None),
        _ => (hostile_structure(rng, &base), None),
    }
}

fn hostile_json(rng: &mut ChaCha8Rng) -> serde_json::Value {
    use serde_json::json;
    let choices = [
        json!(-1),
        json!(0),
        json!(1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1.5),
        json!(1e300),
        json!("NaN"),
        json!(""),
        json!("pg_xx"),
        json!(null),
        json!([]),
        json!({}),
        json!(true),
        json!(["crash", "crash"]),
        json!(rng.gen_range(0..100_000u64)),
    ];
    choices.choose(rng).expect("choices").clone()
}

/// Sets `path` (`config.faults.families`, `groups[0].first.seed`: the way errors name a
/// field) in a JSON document to `value`; a path that is not there changes nothing.
fn set_json(doc: &mut serde_json::Value, path: &str, value: serde_json::Value) {
    let mut steps: Vec<Result<usize, &str>> = Vec::new();
    for part in path.split('.') {
        let mut pieces = part.split('[');
        steps.push(Err(pieces.next().unwrap_or_default()));
        for index in pieces {
            steps.push(index.trim_end_matches(']').parse().map_err(|_| ""));
        }
    }
    let Some((last, parents)) = steps.split_last() else {
        return;
    };
    let mut at = doc;
    for step in parents {
        let next = match step {
            Ok(i) => at.get_mut(*i),
            Err(key) => at.get_mut(*key),
        };
        let Some(next) = next else {
            return;
        };
        at = next;
    }
    match (last, at) {
        (Ok(i), serde_json::Value::Array(items)) if *i < items.len() => items[*i] = value,
        (Err(key), serde_json::Value::Object(map)) => {
            map.insert(key.to_string(), value);
        }
        _ => {}
    }
}

/// An artifact with one hostile change.
pub fn artifact_text(rng: &mut ChaCha8Rng, fixtures: &Fixtures) -> (String, Option<String>) {
    let mut doc = fixtures.artifact.clone();
    const PATHS: [&str; 20] = [
        "config.duration_ms",
        "config.time_limit_ms",
        "config.latency_us_min",
        "config.latency_us_max",
        "config.faults.families",
        "config.faults.interval_ms_min",
        "config.faults.interval_ms_max",
        "config.faults.duration_ms_max",
        "config.faults.loss_probability",
        "config.faults.spike_latency_ms",
        "config.faults.buggify_probability",
        "config.faults.quiet_period_ms",
        "profile",
        "bugs",
        "seed",
        "scenario",
        "trace_hash",
        "version",
        "format",
        "failure.kind",
    ];
    match rng.gen_range(0..10) {
        0..=5 => {
            let path = *PATHS.choose(rng).expect("paths");
            let value = if path == "bugs" && rng.gen_bool(0.5) {
                serde_json::json!(["oversell_check_then_act", "no_such_bug"])
            } else {
                hostile_json(rng)
            };
            set_json(&mut doc, path, value);
            (doc.to_string(), Some(path.to_string()))
        }
        6 | 7 => {
            let (toml, changed) = scenario_text(rng, fixtures);
            if let Ok(s) = toml.parse::<toml::Table>() {
                if let Some(name) = s.get("name").and_then(|n| n.as_str()) {
                    doc["scenario"] = serde_json::json!(name);
                }
            }
            doc["scenario_toml"] = serde_json::json!(toml);
            (
                doc.to_string(),
                changed.map(|c| format!("scenario_toml: {c}")),
            )
        }
        8 => (doc.to_string(), None),
        _ => (hostile_structure(rng, &doc.to_string()), None),
    }
}

/// A valid campaign state: two runs, one with a failure group of three failing seeds.
fn state_example() -> serde_json::Value {
    use crate::fuzz::groups::{Exemplar, Group};
    use crate::fuzz::state::State;
    let runs = [
        "inventory-race@pg_rc".to_string(),
        "inventory-race@maria_rr".to_string(),
    ];
    let mut state = State::new("scenarios=[\"inventory-race\"]".to_string(), &runs);
    state.sessions = 2;
    state.seeds_run = 40;
    state.elapsed_ms = 9_000;
    for (i, run) in state.runs.iter_mut().enumerate() {
        run.seeds = 20;
        run.wall_ms = 4_000;
        for _ in 0..20 {
            run.count("no_oversell", shopsim_sim::check::Verdict::Valid);
        }
        run.failing_seeds = if i == 0 { 3 } else { 0 };
    }
    let exemplar = |seed: u64, ops: u64| Exemplar {
        seed,
        ops,
        virtual_us: 1_000 * ops,
        artifact: Some(crate::artifact::relative_path(
            "inventory-race",
            "pg_rc",
            seed,
        )),
        mutated: false,
    };
    let mut group = Group::new(
        1,
        crate::signature::Signature::of("inventory-race@pg_rc", "no_oversell", "product 1: -2"),
        shopsim_sim::runner::FailureKind::Violation,
        "product 1: -2",
        exemplar(u64::MAX, 900),
    );
    group.count = 3;
    group.smallest = exemplar(12, 300);
    state.groups.push(group);
    serde_json::to_value(&state).expect("a state serializes")
}

/// A campaign state file with one hostile change.
pub fn state_text(rng: &mut ChaCha8Rng) -> (String, Option<String>) {
    let mut doc = state_example();
    const PATHS: [&str; 26] = [
        "format",
        "identity",
        "sessions",
        "seeds_run",
        "elapsed_ms",
        "nondeterministic",
        "io",
        "io.files_written",
        "io.bytes_written",
        "runs",
        "runs[0].name",
        "runs[0].seeds",
        "runs[0].failing_seeds",
        "runs[1].wall_ms",
        "runs[0].checks",
        "runs[0].checks[0].valid",
        "groups",
        "groups[0].id",
        "groups[0].system",
        "groups[0].kind",
        "groups[0].shape",
        "groups[0].count",
        "groups[0].first.seed",
        "groups[0].first.artifact",
        "groups[0].smallest.ops",
        "groups[0].others",
    ];
    let paths = PATHS;
    match rng.gen_range(0..6) {
        0..=3 => {
            let path = *paths.choose(rng).expect("paths");
            set_json(&mut doc, path, hostile_json(rng));
            (doc.to_string(), Some(path.to_string()))
        }
        4 => (doc.to_string(), None),
        _ => (hostile_structure(rng, &doc.to_string()), None),
    }
}

/// A conformance file with one hostile change.
pub fn conformance_text(rng: &mut ChaCha8Rng) -> (String, Option<String>) {
    let statements = [
        "SLEEP nan",
        "SLEEP 1e308",
        "SLEEP -1",
        "SLEEP",
        "select * from test where id = 9223372036854775807 + 1",
        "select 1/0",
        "update test set value = value * 9223372036854775807",
        "select * from nowhere",
        "drop table test",
        "begin; commit",
        "",
        "select * from test where id in (((((((((((1)))))))))))",
        "rollback to savepoint nothing",
    ];
    let mut text = CONFORMANCE.to_string();
    match rng.gen_range(0..8) {
        0..=2 => {
            let statement = statements.choose(rng).expect("statements");
            let session = ["T1", "T2", "-", ""].choose(rng).expect("sessions");
            text = text.replace(
                "[\"T1\", \"commit\"]",
                &format!("[{}, {}]", toml_string(session), toml_string(statement)),
            );
            (text, Some("script[0]".to_string()))
        }
        3 => (
            text.replace(
                "pg_rc",
                ["pg_xx", "maria_rr", ""].choose(rng).expect("names"),
            ),
            Some("script[0]".to_string()),
        ),
        4 => (
            text.replace("\"ok\", \"ok\", \"rows[1:11]\", \"ok\"", "\"ok\""),
            Some("script[0]".to_string()),
        ),
        5 => (text, None),
        _ => (hostile_structure(rng, &text), None),
    }
}

fn hostile_arg(rng: &mut ChaCha8Rng, fixtures: &Fixtures) -> String {
    let choices = [
        "0",
        "1",
        "-1",
        "18446744073709551615",
        "18446744073709551616",
        "1000000000000",
        "0x10",
        "0xzz",
        "1e3",
        "",
        " 7",
        "abc",
        "1/0",
        "0/1",
        "3/2",
        "2/3",
        "1/4611686018427387904",
        "1h",
        "0s",
        "30s",
        "1001",
        "10001",
        "1000001",
        "1000000001",
        "all",
        "213503982334602d",
        "8x",
        "zz",
        "00ff",
        "12345678901234567",
        "pg_xx",
        "maria_rr",
        "checkout-concurency",
        "payment-race@pg_rc",
        "oversell_check_then_act",
        "no_such_bug",
        "ß☃",
    ];
    if rng.gen_bool(0.2) {
        return fixtures.paths.choose(rng).expect("paths").clone();
    }
    choices.choose(rng).expect("choices").to_string()
}

/// A command line with hostile flag values; the flag changed, if any.
pub fn args(rng: &mut ChaCha8Rng, fixtures: &Fixtures) -> (Vec<String>, Option<String>) {
    // Every flag of every command that takes input (flags without a value get one anyway:
    // it lands as a positional argument). `--out`, `--diagram`, `--measure` and
    // `--findings` are left out: they name where to write, and the check writes nothing.
    let commands: [(&str, &[&str]); 10] = [
        (
            "run",
            &[
                "--file",
                "--seed",
                "--seeds",
                "--seed-start",
                "--profile",
                "--bug",
                "--jobs",
                "--json",
                "--all",
            ],
        ),
        (
            "fuzz",
            &[
                "--file",
                "--duration",
                "--seeds",
                "--jobs",
                "--shard",
                "--profile",
                "--bug",
                "--no-swarm",
                "--max-artifacts-per-group",
                "--max-groups",
                "--status-interval",
            ],
        ),
        (
            "replay",
            &[
                "--file",
                "--seed",
                "--profile",
                "--bug",
                "--expect-hash",
                "--swarm",
                "--trace",
            ],
        ),
        ("shrink", &["--seeds"]),
        (
            "check-determinism",
            &[
                "--file",
                "--seeds",
                "--seed-start",
                "--profile",
                "--in-process-only",
            ],
        ),
        ("conformance", &["--profile"]),
        ("bench", &["--file", "--seeds", "--json", "--detection"]),
        (
            "crosscheck",
            &[
                "--scenario",
                "--random",
                "--seeds",
                "--seed-start",
                "--profile",
                "--shrink-budget",
            ],
        ),
        ("scenario", &["--check"]),
        ("no-such-command", &["--x"]),
    ];
    let (command, flags) = commands.choose(rng).expect("commands");
    let mut argv = vec!["shopsim".to_string(), command.to_string()];
    let needs_file = matches!(*command, "shrink" | "conformance");
    let file_optional = matches!(*command, "replay" | "crosscheck");
    let names_scenarios = matches!(
        *command,
        "run" | "fuzz" | "replay" | "check-determinism" | "bench"
    );
    if needs_file || (file_optional && rng.gen_bool(0.5)) {
        argv.push(fixtures.paths.choose(rng).expect("paths").clone());
    } else if *command != "scenario" {
        // A hostile positional is refused first; a valid one (or none) lets the flags after
        // it be judged.
        match rng.gen_range(0..10) {
            0..=3 => argv.push(hostile_arg(rng, fixtures)),
            4..=6 if names_scenarios => argv.push("payment-race".to_string()),
            _ => {}
        }
    }
    // What the command needs to start, given valid, so that the hostile flags are reached.
    let needed: &[&str] = match *command {
        "fuzz" => &["--seeds", "1"],
        "replay" => &["--seed", "1"],
        "crosscheck" => &["--random", "1"],
        _ => &[],
    };
    if rng.gen_bool(0.5) {
        argv.extend(needed.iter().map(|a| a.to_string()));
    }
    if *command == "fuzz" {
        // Never a folder outside the fixtures: `--resume` reads its state file there.
        argv.push("--out".to_string());
        argv.push(fixtures.dir.join("campaign").display().to_string());
        if rng.gen_bool(0.3) {
            argv.push("--resume".to_string());
        }
    }
    let mut changed = None;
    for _ in 0..rng.gen_range(1..=3) {
        let flag = flags.choose(rng).expect("flags");
        argv.push(flag.to_string());
        argv.push(hostile_arg(rng, fixtures));
        changed = Some(flag.to_string());
    }
    if rng.gen_bool(0.05) {
        argv.push("--no-such-flag".to_string());
        changed = Some("--no-such-flag".to_string());
    }
    (argv, changed)
}

/// Input `index` of the campaign with `seed`.
pub fn generate(seed: u64, index: u64, fixtures: &Fixtures) -> Input {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let kind = InputKind::ALL[(index % 5) as usize];
    let (text, argv, changed) = match kind {
        InputKind::Args => {
            let (argv, changed) = args(&mut rng, fixtures);
            (String::new(), argv, changed)
        }
        InputKind::Scenario => {
            let (t, c) = scenario_text(&mut rng, fixtures);
            (t, Vec::new(), c)
        }
        InputKind::Artifact => {
            let (t, c) = artifact_text(&mut rng, fixtures);
            (t, Vec::new(), c)
        }
        InputKind::State => {
            let (t, c) = state_text(&mut rng);
            (t, Vec::new(), c)
        }
        InputKind::Conformance => {
            let (t, c) = conformance_text(&mut rng);
            (t, Vec::new(), c)
        }
    };
    Input {
        kind,
        text,
        argv,
        changed,
    }
}

/// What an accepted input hands on: something to run, if it is a run.
pub enum Accepted {
    Nothing,
    Scenario(Box<Scenario>),
    Artifact(Box<crate::artifact::Loaded>),
    Conformance(shopsim_sim::db::conformance::ScriptFile),
}

/// The size limit of each file kind, as the commands apply it when they read the file.
fn within(text: &str, limit: u64) -> Result<(), String> {
    if text.len() as u64 > limit {
        return Err(format!(
            "FILE: longer than the limit of {limit} bytes for this kind of file"
        ));
    }
    Ok(())
}

/// Judges `input` with the commands' own checks: `Err` is the message of a refusal.
pub fn check(input: &Input) -> Result<Accepted, String> {
    match input.kind {
        InputKind::Args => match crate::parse_cli(&input.argv) {
            Err(e) if e.use_stderr() => Err(e.to_string()),
            Err(_) => Ok(Accepted::Nothing),
            Ok(cli) => crate::check_input(cli.command).map(|()| Accepted::Nothing),
        },
        InputKind::Scenario => {
            within(&input.text, crate::input::SCENARIO_BYTES_MAX)?;
            Scenario::from_toml(&input.text)
                .map(|s| Accepted::Scenario(Box::new(s)))
                .map_err(|e| e.to_string())
        }
        InputKind::Artifact => {
            within(&input.text, crate::input::ARTIFACT_BYTES_MAX)?;
            let artifact = crate::artifact::parse(&input.text)?;
            crate::artifact::check(artifact).map(|l| Accepted::Artifact(Box::new(l)))
        }
        InputKind::State => {
            within(&input.text, crate::input::STATE_BYTES_MAX)?;
            crate::fuzz::parse_state(&input.text).map(|()| Accepted::Nothing)
        }
        InputKind::Conformance => {
            within(&input.text, crate::input::CONFORMANCE_BYTES_MAX)?;
            shopsim_sim::db::conformance::ScriptFile::parse(&input.text)
                .map(Accepted::Conformance)
                .map_err(|e| e.to_string())
        }
    }
}

/// Whether a refusal names where the input is wrong: a field path, flag, file or line before
/// a colon, or clap's quoted argument.
fn names_a_place(message: &str) -> bool {
    let message = message.trim_start_matches("error: ");
    // clap names the argument in quotes.
    if message.contains("'--") || message.contains("unrecognized subcommand") {
        return true;
    }
    // Every part before the last `: ` is where: a field path, a flag, a file, a line.
    let parts: Vec<&str> = message.split(": ").collect();
    parts[..parts.len().saturating_sub(1)].iter().any(|part| {
        let part = part.trim();
        let path_like = !part.is_empty()
            && !part.contains(' ')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-[]/@".contains(c));
        path_like
            || part.starts_with("line ")
            || part.starts_with("--")
            || part.starts_with("FILE ")
            || part.starts_with("ARTIFACT ")
    })
}

/// Judges `input` (panics caught).
pub fn judge(input: &Input) -> (Verdict, Option<Accepted>) {
    match std::panic::catch_unwind(|| check(input)) {
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            (Verdict::Panic(message), None)
        }
        Ok(Ok(accepted)) => (Verdict::Valid, Some(accepted)),
        Ok(Err(message)) => {
            let verdict = match &input.changed {
                Some(changed) if message.contains(changed.as_str()) => Verdict::BadNamed,
                _ if names_a_place(&message) => Verdict::BadOther,
                _ => Verdict::Unnamed(message),
            };
            (verdict, None)
        }
    }
}

/// Runs an accepted scenario or artifact for one seed (or a conformance file under one
/// profile); its exit code, or `None` if it is too large to run here.
fn simulate(accepted: &Accepted, seed: u64) -> Option<(u8, String)> {
    let judged = |o: shopsim_sim::runner::Outcome<shopsim_model::shop::ShopState>| {
        let check = o
            .failure
            .as_ref()
            .map(|f| f.check.clone())
            .unwrap_or_default();
        (o.exit_code(), check)
    };
    match accepted {
        Accepted::Nothing => None,
        Accepted::Scenario(s) => {
            if shopsim_scenarios::fields::worst_case_run_ms(s) > 600_000 || s.shop.shoppers > 200 {
                return None;
            }
            let profile = s.profile_list()[0];
            let system = s.system(profile, &[]).ok()?;
            Some(judged(shopsim_sim::runner::run(
                &system,
                seed,
                &s.sim_config(),
            )))
        }
        Accepted::Artifact(l) => {
            let system = l.scenario.system(l.profile, &l.artifact.bugs).ok()?;
            Some(judged(shopsim_sim::runner::run(
                &system,
                l.artifact.seed,
                &l.artifact.config,
            )))
        }
        Accepted::Conformance(file) => {
            let reports =
                shopsim_sim::db::conformance::check_file(file, &[shopsim_sim::db::Profile::PgRc]);
            Some(if reports.iter().any(|r| r.mismatch.is_some()) {
                (EXIT_VIOLATION, "conformance mismatch".to_string())
            } else {
                (EXIT_OK, String::new())
            })
        }
    }
}

/// Runs `input` through the binary; its exit code (`None`: killed after the timeout).
fn spawn(input: &Input, dir: &Path, index: u64) -> Option<i32> {
    let exe = std::env::current_exe().ok()?;
    let file = |ext: &str| {
        let path = dir.join(format!("input-{index}.{ext}"));
        std::fs::write(&path, &input.text).ok();
        path.display().to_string()
    };
    let argv: Vec<String> = match input.kind {
        InputKind::Args => input.argv[1..].to_vec(),
        InputKind::Scenario => vec!["scenario".into(), "--check".into(), file("toml")],
        InputKind::Artifact => vec!["replay".into(), file("json")],
        InputKind::Conformance => vec!["conformance".into(), file("toml")],
        InputKind::State => {
            let campaign = dir.join(format!("campaign-{index}"));
            std::fs::create_dir_all(&campaign).ok()?;
            std::fs::write(campaign.join("state.json"), &input.text).ok()?;
            vec![
                "fuzz".into(),
                "payment-race".into(),
                "--seeds".into(),
                "1".into(),
                "--resume".into(),
                "--out".into(),
                campaign.display().to_string(),
            ]
        }
    };
    let mut child = std::process::Command::new(exe)
        .args(&argv)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Peak resident memory since the last reset, KiB (Linux).
fn peak_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The counts of a campaign.
#[derive(Debug, Default)]
struct Tally {
    by_kind: BTreeMap<(InputKind, String), u64>,
    simulated: BTreeMap<(u8, String), u64>,
    spawned: BTreeMap<String, u64>,
    defects: Vec<String>,
    peak_kib_max: u64,
    over_memory: u64,
    timeouts: u64,
}

/// Peak memory above which an input counts as a defect.
const MEMORY_KIB_MAX: u64 = 256 * 1024;

pub fn run(args: Args) -> u8 {
    let dir = args.out.join("fixtures");
    let fixtures = Fixtures::new(&dir);
    let spawn_dir = args.out.join("spawned");
    let _ = std::fs::create_dir_all(&spawn_dir);
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut accepted_seen = 0u64;
    // Silence panics' default report while inputs are judged: they are counted instead.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let end = args.start.saturating_add(args.count);
    for index in args.start..end {
        let input = generate(args.seed, index, &fixtures);
        reset_peak();
        let begun = Instant::now();
        let (verdict, accepted) = judge(&input);
        let mut limit = Duration::from_secs(10);
        let label = match &verdict {
            Verdict::BadNamed => "exit 2, names the changed field".to_string(),
            Verdict::BadOther => "exit 2, names another field".to_string(),
            Verdict::Unnamed(_) => "exit 2 WITHOUT naming a field".to_string(),
            Verdict::Valid => "valid".to_string(),
            Verdict::Panic(_) => "PANIC".to_string(),
        };
        if let Some(accepted) = &accepted {
            if !matches!(accepted, Accepted::Nothing) {
                accepted_seen += 1;
                if args.simulate_every > 0 && accepted_seen.is_multiple_of(args.simulate_every) {
                    limit = Duration::from_secs(120);
                    let outcome = std::panic::catch_unwind(|| simulate(accepted, index));
                    match outcome {
                        Ok(Some(judged)) => *tally.simulated.entry(judged).or_default() += 1,
                        Ok(None) => *tally.simulated.entry((255, String::new())).or_default() += 1,
                        Err(_) => tally
                            .defects
                            .push(format!("input {index}: simulation panicked")),
                    }
                }
            }
        }
        let took = begun.elapsed();
        let peak = peak_kib().unwrap_or(0);
        tally.peak_kib_max = tally.peak_kib_max.max(peak);
        if peak > MEMORY_KIB_MAX {
            tally.over_memory += 1;
            tally
                .defects
                .push(format!("input {index}: peak {} MiB", peak / 1024));
        }
        if took > limit {
            tally.timeouts += 1;
            tally.defects.push(format!("input {index}: took {took:?}"));
        }
        if verdict.is_defect() && tally.defects.len() < 1_000 {
            tally.defects.push(format!(
                "input {index} ({}): {verdict:?}\n  input: {}",
                input.kind.name(),
                shopsim_sim::input::cut(
                    &if input.argv.is_empty() {
                        input.text.clone()
                    } else {
                        input.argv.join(" ")
                    },
                    300
                )
            ));
        }
        if args.show {
            println!(
                "#{index} {} changed={:?} -> {verdict:?}\n{}",
                input.kind.name(),
                input.changed,
                shopsim_sim::input::cut(
                    &if input.argv.is_empty() {
                        input.text.clone()
                    } else {
                        input.argv.join(" ")
                    },
                    2_000
                )
            );
        }
        *tally.by_kind.entry((input.kind, label)).or_default() += 1;
        let bad = !matches!(verdict, Verdict::Valid | Verdict::Panic(_));
        // The sampled index moves through the block so every kind gets spawned.
        let sampled =
            args.spawn_every > 0 && index % args.spawn_every == (index / args.spawn_every) % 5;
        if sampled && bad {
            let code = spawn(&input, &spawn_dir, index);
            let key = match code {
                Some(2) => "exit 2 (agrees)".to_string(),
                Some(c) => {
                    tally
                        .defects
                        .push(format!("input {index}: the binary exited {c}, not 2"));
                    format!("exit {c} (DISAGREES)")
                }
                None => {
                    tally
                        .defects
                        .push(format!("input {index}: the binary timed out"));
                    "timeout".to_string()
                }
            };
            *tally.spawned.entry(key).or_default() += 1;
        }
        let done = index - args.start + 1;
        if done.is_multiple_of(20_000) {
            eprintln!(
                "{done} inputs in {:.0} s, {} defects",
                started.elapsed().as_secs_f64(),
                tally.defects.len()
            );
        }
    }
    std::panic::set_hook(hook);
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{} inputs (seed {}, from index {}) in {wall:.1} s",
        args.count, args.seed, args.start
    );
    println!("{:<14} {:<36} {:>10}", "kind", "outcome", "count");
    for ((kind, label), n) in &tally.by_kind {
        println!("{:<14} {label:<36} {n:>10}", kind.name());
    }
    for ((code, check), n) in &tally.simulated {
        let what = match (*code, check.is_empty()) {
            (255, _) => "not run (too large to run here)".to_string(),
            (_, true) => format!("exit {code}"),
            (_, false) => format!("exit {code} ({})", shopsim_sim::input::cut(check, 24)),
        };
        println!("{:<14} {:<36} {n:>10}", "accepted, run", what);
    }
    for (what, n) in &tally.spawned {
        println!("{:<14} {what:<36} {n:>10}", "binary sample");
    }
    println!(
        "peak memory while one input was judged: {:.1} MiB at most; {} inputs over 256 MiB; {} timeouts",
        tally.peak_kib_max as f64 / 1024.0,
        tally.over_memory,
        tally.timeouts
    );
    let panics = tally
        .by_kind
        .iter()
        .filter(|((_, l), _)| l == "PANIC")
        .map(|(_, n)| n)
        .sum::<u64>();
    let severe: u64 = tally
        .simulated
        .iter()
        .filter(|((code, _), _)| matches!(code, 3 | 4))
        .map(|(_, n)| n)
        .sum();
    println!(
        "panics: {panics}; accepted inputs that ended in liveness (3) or a model panic (4): {severe}"
    );
    for d in tally.defects.iter().take(20) {
        println!("DEFECT {d}");
    }
    if tally.defects.is_empty() && severe == 0 {
        EXIT_OK
    } else {
        EXIT_VIOLATION
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample of every kind through the same judge as the million-input command: no
    /// panic, and every refusal names where the input is wrong.
    #[test]
    fn generated_inputs_are_refused_by_name_or_accepted() {
        let dir = std::env::temp_dir().join(format!("shopsim-fuzz-inputs-{}", std::process::id()));
        let fixtures = Fixtures::new(&dir);
        let mut refused = 0;
        for index in 0..1_500 {
            let input = generate(1, index, &fixtures);
            let (verdict, _) = judge(&input);
            assert!(
                !verdict.is_defect(),
                "input {index}: {verdict:?}\n{input:?}"
            );
            refused += usize::from(verdict != Verdict::Valid);
        }
        assert!(refused > 500, "{refused}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_refusal_without_a_place_is_a_defect() {
        let input = Input {
            kind: InputKind::State,
            text: String::new(),
            argv: Vec::new(),
            changed: None,
        };
        assert!(!names_a_place("something went wrong somewhere"));
        assert!(names_a_place(
            "shop.shoppers: expected a whole number, got `-1`"
        ));
        let (verdict, _) = judge(&input);
        assert!(!verdict.is_defect(), "{verdict:?}");
    }
}
