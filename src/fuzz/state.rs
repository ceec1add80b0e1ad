//! The campaign state file `--out/state.json`: what a resumed campaign continues from.
//!
//! It holds counts and failure groups, never a list of seeds, so its size depends on the
//! number of groups (bounded by `--max-groups`), not on the campaign's length. It is
//! versioned ([`STATE_FORMAT`]) and read defensively: at most [`STATE_BYTES_MAX`] bytes, every
//! field checked for its type and range, unknown fields refused, the relations between the
//! counts checked with checked arithmetic, and each artifact path required to be the one the
//! campaign itself would write (a state file can never make a campaign remove another file).
//! Every problem is an [`InputError`] naming the field, e.g.
//! `groups[2].count: must be at least 1, got `0``.

use serde::Serialize;
use serde_json::{Map, Value};
use shopsim_sim::input::InputError;

use super::groups::{self, Exemplar, Group};

/// The format written and read. Version 1 (no `format` field) listed every failing seed.
pub const STATE_FORMAT: &str = "shopsim-fuzz-state-2";
/// The largest state file read.
pub const STATE_BYTES_MAX: u64 = 64 << 20;
/// Counters read must be at most this, so a campaign adding to them never overflows.
pub const COUNT_MAX: u64 = 1 << 62;
/// The longest elapsed time read: 100 years, in ms.
pub const ELAPSED_MS_MAX: u64 = 100 * 366 * 86_400_000;
/// The most runs (scenario@profile) and checks per run read.
pub const RUNS_MAX: usize = 10_000;
/// The longest name, check or identity read, in characters.
pub const TEXT_CHARS_MAX: usize = 10_000;

/// Bytes and files a campaign wrote (all sessions).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Io {
    /// Files written (artifacts, state, reports; each rewrite counts).
    pub files_written: u64,
    /// Bytes written to them.
    pub bytes_written: u64,
    /// Artifacts removed because a smaller failure of their group replaced them.
    pub artifacts_removed: u64,
}

/// How often one check judged a run valid, unknown or invalid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckCounts {
    /// The check.
    pub check: String,
    /// Seeds it judged valid.
    pub valid: u64,
    /// Seeds it could not judge.
    pub unknown: u64,
    /// Seeds it judged invalid.
    pub invalid: u64,
}

/// The figures of one `scenario@profile` of the campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunStats {
    /// `scenario@profile`.
    pub name: String,
    /// Seeds run.
    pub seeds: u64,
    /// Seeds that failed.
    pub failing_seeds: u64,
    /// Wall time spent running its seeds, ms.
    pub wall_ms: u64,
    /// Each check's verdicts (plus `panic` and `time_limit`).
    pub checks: Vec<CheckCounts>,
}

impl RunStats {
    /// Counts one verdict of `check`.
    pub fn count(&mut self, check: &str, verdict: shopsim_sim::check::Verdict) {
        use shopsim_sim::check::Verdict;
        let i = match self.checks.iter().position(|c| c.check == check) {
            Some(i) => i,
            None => {
                self.checks.push(CheckCounts {
                    check: check.to_string(),
                    ..CheckCounts::default()
                });
                self.checks.len() - 1
            }
        };
        let c = &mut self.checks[i];
        let slot = match verdict {
            Verdict::Valid => &mut c.valid,
            Verdict::Unknown => &mut c.unknown,
            Verdict::Invalid => &mut c.invalid,
        };
        *slot = slot.saturating_add(1);
    }
}

/// The campaign state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct State {
    /// Always [`STATE_FORMAT`].
    pub format: String,
    /// The arguments that define the campaign, to refuse resuming a different one.
    pub identity: String,
    /// Sessions so far (the first run and each `--resume`).
    pub sessions: u64,
    /// Seeds run so far, all sessions; also the next campaign index.
    pub seeds_run: u64,
    /// Wall time of all sessions, ms.
    pub elapsed_ms: u64,
    /// Failures that did not reproduce when re-run (nondeterminism).
    pub nondeterministic: u64,
    /// What the campaign wrote.
    pub io: Io,
    /// Per `scenario@profile`, in campaign order.
    pub runs: Vec<RunStats>,
    /// The failure groups, in order of discovery.
    pub groups: Vec<Group>,
}

impl State {
    /// A new campaign over `runs`.
    pub fn new(identity: String, runs: &[String]) -> State {
        State {
            format: STATE_FORMAT.to_string(),
            identity,
            sessions: 0,
            seeds_run: 0,
            elapsed_ms: 0,
            nondeterministic: 0,
            io: Io::default(),
            runs: runs
                .iter()
                .map(|name| RunStats {
                    name: name.clone(),
                    ..RunStats::default()
                })
                .collect(),
            groups: Vec::new(),
        }
    }

    /// Failing seeds, all groups.
    pub fn failing_seeds(&self) -> u64 {
        self.groups.iter().map(|g| g.count).sum()
    }

    /// Reads and validates a state file's text.
    pub fn from_json(text: &str) -> Result<State, InputError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| InputError::new("state", e, "must be a JSON object"))?;
        let state = read_state(&value)?;
        validate(&state)?;
        Ok(state)
    }
}

/// An object being read, with the path of its fields for error messages.
struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

/// How a value is shown in an error: its JSON, cut short.
fn shown(v: &Value) -> String {
    crate::signature::truncate_chars(&v.to_string(), 80)
}

impl<'a> Obj<'a> {
    /// `value` as an object with exactly the fields `keys`.
    fn new(value: &'a Value, path: &str, keys: &[&str]) -> Result<Obj<'a>, InputError> {
        let field = if path.is_empty() { "state" } else { path };
        let map = value
            .as_object()
            .ok_or_else(|| InputError::new(field, shown(value), "must be a JSON object"))?;
        let obj = Obj {
            path: path.to_string(),
            map,
        };
        if let Some(unknown) = map.keys().find(|k| !keys.contains(&k.as_str())) {
            return Err(InputError::new(
                obj.name(unknown),
                shown(&map[unknown]),
                format!(
                    "is not a field of this format (fields: {})",
                    keys.join(", ")
                ),
            ));
        }
        Ok(obj)
    }

    fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Result<&'a Value, InputError> {
        self.map
            .get(key)
            .ok_or_else(|| InputError::new(self.name(key), "nothing", "is required"))
    }

    fn u64(&self, key: &str, max: u64) -> Result<u64, InputError> {
        let v = self.get(key)?;
        let n = v.as_u64().ok_or_else(|| {
            InputError::new(self.name(key), shown(v), "must be an unsigned integer")
        })?;
        if n > max {
            return Err(InputError::new(
                self.name(key),
                n,
                format!("must be at most {max}"),
            ));
        }
        Ok(n)
    }

    fn seed(&self, key: &str) -> Result<u64, InputError> {
        let v = self.get(key)?;
        v.as_str()
            .and_then(|t| crate::json_u64::parse(t, 10))
            .ok_or_else(|| {
                InputError::new(
                    self.name(key),
                    shown(v),
                    "must be an unsigned 64-bit integer as a decimal string",
                )
            })
    }

    fn string(&self, key: &str, chars_max: usize) -> Result<String, InputError> {
        let v = self.get(key)?;
        let s = v
            .as_str()
            .ok_or_else(|| InputError::new(self.name(key), shown(v), "must be a string"))?;
        if s.chars().count() > chars_max {
            return Err(InputError::new(
                self.name(key),
                crate::signature::truncate_chars(s, 40),
                format!("must be at most {chars_max} characters"),
            ));
        }
        Ok(s.to_string())
    }

    fn array(&self, key: &str, len_max: usize) -> Result<Vec<(String, &'a Value)>, InputError> {
        let v = self.get(key)?;
        let items = v
            .as_array()
            .ok_or_else(|| InputError::new(self.name(key), shown(v), "must be an array"))?;
        if items.len() > len_max {
            return Err(InputError::new(
                self.name(key),
                format!("{} items", items.len()),
                format!("must have at most {len_max} items"),
            ));
        }
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, item)| (format!("{}[{i}]", self.name(key)), item))
            .collect())
    }
}

fn read_state(value: &Value) -> Result<State, InputError> {
    // The format first: an older or foreign file gets one clear message, not a field error.
    let format = value.get("format").and_then(Value::as_str);
    if format != Some(STATE_FORMAT) {
        return Err(InputError::new(
            "format",
            value.get("format").map_or("nothing".to_string(), shown),
            format!("must be `{STATE_FORMAT}` (a campaign state of this shopsim version)"),
        ));
    }
    let o = Obj::new(
        value,
        "",
        &[
            "format",
            "identity",
            "sessions",
            "seeds_run",
            "elapsed_ms",
            "nondeterministic",
            "io",
            "runs",
            "groups",
        ],
    )?;
    let io = Obj::new(
        o.get("io")?,
        "io",
        &["files_written", "bytes_written", "artifacts_removed"],
    )?;
    let mut runs = Vec::new();
    for (path, item) in o.array("runs", RUNS_MAX)? {
        runs.push(read_run(&path, item)?);
    }
    let mut groups = Vec::new();
    for (path, item) in o.array("groups", groups::GROUPS_MAX + RUNS_MAX)? {
        groups.push(read_group(&path, item)?);
    }
    Ok(State {
        format: STATE_FORMAT.to_string(),
        identity: o.string("identity", TEXT_CHARS_MAX)?,
        sessions: o.u64("sessions", COUNT_MAX)?,
        seeds_run: o.u64("seeds_run", COUNT_MAX)?,
        elapsed_ms: o.u64("elapsed_ms", ELAPSED_MS_MAX)?,
        nondeterministic: o.u64("nondeterministic", COUNT_MAX)?,
        io: Io {
            files_written: io.u64("files_written", COUNT_MAX)?,
            bytes_written: io.u64("bytes_written", COUNT_MAX)?,
            artifacts_removed: io.u64("artifacts_removed", COUNT_MAX)?,
        },
        runs,
        groups,
    })
}

fn read_run(path: &str, value: &Value) -> Result<RunStats, InputError> {
    let o = Obj::new(
        value,
        path,
        &["name", "seeds", "failing_seeds", "wall_ms", "checks"],
    )?;
    let mut checks = Vec::new();
    for (path, item) in o.array("checks", RUNS_MAX)? {
        let c = Obj::new(item, &path, &["check", "valid", "unknown", "invalid"])?;
        checks.push(CheckCounts {
            check: c.string("check", TEXT_CHARS_MAX)?,
            valid: c.u64("valid", COUNT_MAX)?,
            unknown: c.u64("unknown", COUNT_MAX)?,
            invalid: c.u64("invalid", COUNT_MAX)?,
        });
    }
    Ok(RunStats {
        name: o.string("name", TEXT_CHARS_MAX)?,
        seeds: o.u64("seeds", COUNT_MAX)?,
        failing_seeds: o.u64("failing_seeds", COUNT_MAX)?,
        wall_ms: o.u64("wall_ms", ELAPSED_MS_MAX)?,
        checks,
    })
}

fn read_exemplar(path: &str, value: &Value) -> Result<Exemplar, InputError> {
    let o = Obj::new(value, path, &["seed", "ops", "virtual_us", "artifact"])?;
    let artifact = match o.get("artifact")? {
        Value::Null => None,
        _ => Some(o.string("artifact", TEXT_CHARS_MAX)?),
    };
    Ok(Exemplar {
        seed: o.seed("seed")?,
        ops: o.u64("ops", COUNT_MAX)?,
        virtual_us: o.u64("virtual_us", COUNT_MAX)?,
        artifact,
    })
}

fn read_group(path: &str, value: &Value) -> Result<Group, InputError> {
    let o = Obj::new(
        value,
        path,
        &[
            "id", "system", "check", "kind", "shape", "count", "witness", "first", "smallest",
            "others",
        ],
    )?;
    let kind_text = o.string("kind", 20)?;
    let kind = groups::kind_of(&kind_text).ok_or_else(|| {
        InputError::new(
            o.name("kind"),
            &kind_text,
            "must be `violation`, `liveness` or `panic`",
        )
    })?;
    let mut others = Vec::new();
    for (p, item) in o.array("others", groups::ARTIFACTS_PER_GROUP_MAX)? {
        others.push(read_exemplar(&p, item)?);
    }
    Ok(Group {
        id: o.u64("id", COUNT_MAX)?,
        system: o.string("system", TEXT_CHARS_MAX)?,
        check: o.string("check", TEXT_CHARS_MAX)?,
        kind,
        shape: o.string("shape", crate::signature::SHAPE_CHARS_MAX + 1)?,
        count: o.u64("count", COUNT_MAX)?,
        witness: o.string("witness", groups::WITNESS_CHARS_MAX + 1)?,
        first: read_exemplar(&o.name("first"), o.get("first")?)?,
        smallest: read_exemplar(&o.name("smallest"), o.get("smallest")?)?,
        others,
    })
}

/// Checks the relations between the fields, with checked arithmetic.
fn validate(state: &State) -> Result<(), InputError> {
    if state.sessions == 0 {
        return Err(InputError::new("sessions", 0, "must be at least 1"));
    }
    let mut seeds_total: u64 = 0;
    for (i, run) in state.runs.iter().enumerate() {
        let at = |field: &str| format!("runs[{i}].{field}");
        if state.runs[..i].iter().any(|r| r.name == run.name) {
            return Err(InputError::new(at("name"), &run.name, "must be unique"));
        }
        seeds_total = seeds_total.checked_add(run.seeds).ok_or_else(|| {
            InputError::new(at("seeds"), run.seeds, "makes the sum of seeds overflow")
        })?;
        if run.failing_seeds > run.seeds {
            return Err(InputError::new(
                at("failing_seeds"),
                run.failing_seeds,
                format!("must be at most the run's seeds ({})", run.seeds),
            ));
        }
        for (j, c) in run.checks.iter().enumerate() {
            let judged = c
                .valid
                .checked_add(c.unknown)
                .and_then(|n| n.checked_add(c.invalid));
            if judged.is_none_or(|n| n > run.seeds) {
                return Err(InputError::new(
                    format!("runs[{i}].checks[{j}]"),
                    format!("{} + {} + {}", c.valid, c.unknown, c.invalid),
                    format!(
                        "verdicts must add up to at most the run's seeds ({})",
                        run.seeds
                    ),
                ));
            }
            if run.checks[..j].iter().any(|d| d.check == c.check) {
                return Err(InputError::new(
                    format!("runs[{i}].checks[{j}].check"),
                    &c.check,
                    "must be unique",
                ));
            }
        }
    }
    if seeds_total != state.seeds_run {
        return Err(InputError::new(
            "seeds_run",
            state.seeds_run,
            format!("must equal the sum of runs[].seeds ({seeds_total})"),
        ));
    }
    if state.nondeterministic > state.seeds_run {
        return Err(InputError::new(
            "nondeterministic",
            state.nondeterministic,
            "must be at most seeds_run",
        ));
    }
    for (i, g) in state.groups.iter().enumerate() {
        validate_group(state, i, g)?;
    }
    // Each failing seed is counted in exactly one group (by its first failed check).
    for (i, run) in state.runs.iter().enumerate() {
        let at = |field: &str| format!("runs[{i}].{field}");
        let grouped = state
            .groups
            .iter()
            .filter(|g| g.system == run.name)
            .try_fold(0u64, |sum, g| sum.checked_add(g.count));
        if grouped != Some(run.failing_seeds) {
            return Err(InputError::new(
                at("failing_seeds"),
                run.failing_seeds,
                format!(
                    "must equal the counts of the run's groups ({})",
                    grouped.map_or("overflow".to_string(), |n| n.to_string())
                ),
            ));
        }
    }
    Ok(())
}

fn validate_group(state: &State, i: usize, g: &Group) -> Result<(), InputError> {
    let at = |field: &str| format!("groups[{i}].{field}");
    if g.id == 0 || state.groups[..i].iter().any(|h| h.id == g.id) {
        return Err(InputError::new(
            at("id"),
            g.id,
            "must be unique and at least 1",
        ));
    }
    if !state.runs.iter().any(|r| r.name == g.system) {
        return Err(InputError::new(
            at("system"),
            &g.system,
            "must be one of runs[].name",
        ));
    }
    if state.groups[..i]
        .iter()
        .any(|h| h.signature() == g.signature())
    {
        return Err(InputError::new(
            at("shape"),
            &g.shape,
            "must be unique per system and check (one group per signature)",
        ));
    }
    if g.count == 0 {
        return Err(InputError::new(at("count"), 0, "must be at least 1"));
    }
    // Each exemplar is a failure of its own, counted in the group.
    let exemplars = (g.others.len() as u64)
        .saturating_add(1)
        .saturating_add(u64::from(g.smallest.seed != g.first.seed));
    if exemplars > g.count {
        return Err(InputError::new(
            at("others"),
            format!("{} items", g.others.len()),
            format!(
                "must leave the exemplars at most the group's count ({})",
                g.count
            ),
        ));
    }
    if g.smallest.rank() > g.first.rank() {
        return Err(InputError::new(
            at("smallest"),
            g.smallest.seed,
            "must be no larger than the first failure",
        ));
    }
    let folder = crate::artifact::folder_of(&g.system);
    for (field, e) in [("first", &g.first), ("smallest", &g.smallest)]
        .into_iter()
        .chain(g.others.iter().map(|e| ("others[]", e)))
    {
        if let Some(path) = &e.artifact {
            let expected = format!("{folder}/{}.json", e.seed);
            if *path != expected {
                return Err(InputError::new(
                    at(&format!("{field}.artifact")),
                    path,
                    format!("must be the campaign's own artifact path `{expected}`"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::Signature;
    use shopsim_sim::runner::FailureKind;

    pub(crate) fn sample() -> State {
        let mut state = State::new("identity".to_string(), &["s@pg_rc".to_string()]);
        state.sessions = 2;
        state.seeds_run = 40;
        state.elapsed_ms = 12_345;
        let run = &mut state.runs[0];
        run.seeds = 40;
        run.failing_seeds = 7;
        run.wall_ms = 12_000;
        run.count("no_oversell", shopsim_sim::check::Verdict::Invalid);
        let first = Exemplar {
            seed: u64::MAX,
            ops: 900,
            virtual_us: 18_000_000,
            artifact: Some(format!("s@pg_rc/{}.json", u64::MAX)),
        };
        let mut g = Group::new(
            1,
            Signature::of("s@pg_rc", "no_oversell", "product 1: 2 units"),
            FailureKind::Violation,
            "product 1: 2 units",
            first,
        );
        g.count = 7;
        g.smallest = Exemplar {
            seed: 3,
            ops: 100,
            virtual_us: 9,
            artifact: Some("s@pg_rc/3.json".to_string()),
        };
        state.groups.push(g);
        state
    }

    fn text(state: &State) -> String {
        serde_json::to_string_pretty(state).unwrap()
    }

    #[test]
    fn a_written_state_reads_back() {
        let state = sample();
        assert_eq!(State::from_json(&text(&state)).unwrap(), state);
    }

    /// Edits the sample's JSON and returns the reader's error.
    fn error_after(edit: impl Fn(&mut Value)) -> InputError {
        let mut v: Value = serde_json::from_str(&text(&sample())).unwrap();
        edit(&mut v);
        State::from_json(&v.to_string()).expect_err("refused")
    }

    #[test]
    fn hostile_states_are_refused_naming_the_field() {
        type Edit = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|v| v["format"] = "shopsim-fuzz-state-1".into()),
                "format",
            ),
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("format");
                }),
                "format",
            ),
            (Box::new(|v| v["seeds_run"] = (-1).into()), "seeds_run"),
            (Box::new(|v| v["seeds_run"] = 41.into()), "seeds_run"),
            (Box::new(|v| v["seeds_run"] = "40".into()), "seeds_run"),
            (Box::new(|v| v["seeds_run"] = 1.5.into()), "seeds_run"),
            (
                Box::new(|v| v["elapsed_ms"] = u64::MAX.into()),
                "elapsed_ms",
            ),
            (Box::new(|v| v["sessions"] = 0.into()), "sessions"),
            (Box::new(|v| v["extra"] = 0.into()), "extra"),
            (
                Box::new(|v| {
                    v["io"].as_object_mut().unwrap().remove("bytes_written");
                }),
                "io.bytes_written",
            ),
            (
                Box::new(|v| v["runs"][0]["failing_seeds"] = 41.into()),
                "runs[0].failing_seeds",
            ),
            (
                Box::new(|v| v["runs"][0]["checks"][0]["invalid"] = 41.into()),
                "runs[0].checks[0]",
            ),
            (
                Box::new(|v| v["groups"][0]["count"] = 0.into()),
                "groups[0].count",
            ),
            (
                Box::new(|v| v["groups"][0]["count"] = 6.into()),
                "runs[0].failing_seeds",
            ),
            (
                Box::new(|v| v["groups"][0]["count"] = COUNT_MAX.saturating_add(1).into()),
                "groups[0].count",
            ),
            (
                Box::new(|v| v["groups"][0]["kind"] = "oops".into()),
                "groups[0].kind",
            ),
            (
                Box::new(|v| v["groups"][0]["system"] = "other@pg_rc".into()),
                "groups[0].system",
            ),
            (
                Box::new(|v| v["groups"][0]["first"]["seed"] = "18446744073709551616".into()),
                "groups[0].first.seed",
            ),
            (
                Box::new(|v| v["groups"][0]["first"]["seed"] = 5.into()),
                "groups[0].first.seed",
            ),
            (
                Box::new(|v| v["groups"][0]["smallest"]["artifact"] = "../../etc/passwd".into()),
                "groups[0].smallest.artifact",
            ),
            (
                Box::new(|v| v["groups"][0]["smallest"]["artifact"] = "s@pg_rc/4.json".into()),
                "groups[0].smallest.artifact",
            ),
            (
                Box::new(|v| v["groups"][0]["smallest"]["ops"] = 1000.into()),
                "groups[0].smallest",
            ),
            (
                Box::new(|v| v["groups"][0]["shape"] = "x".repeat(10_000).into()),
                "groups[0].shape",
            ),
            (Box::new(|v| v["groups"] = serde_json::json!({})), "groups"),
            (
                Box::new(|v| {
                    let g = v["groups"][0].clone();
                    v["groups"].as_array_mut().unwrap().push(g);
                }),
                "groups[1].id",
            ),
        ];
        for (edit, field) in cases {
            let err = error_after(edit);
            assert_eq!(err.field, field, "{err}");
        }
        for bad in ["", "[]", "nul", "{\"format\": 1}", &"[".repeat(100_000)] {
            assert!(State::from_json(bad).is_err(), "{bad:.20}");
        }
    }

    proptest::proptest! {
        /// Any corruption of a state file's text is refused or read, never a panic.
        #[test]
        fn corrupt_states_never_panic(at in 0usize..2_000, byte in proptest::num::u8::ANY) {
            let mut bytes = text(&sample()).into_bytes();
            let i = at % bytes.len();
            bytes[i] = byte;
            if let Ok(text) = String::from_utf8(bytes) {
                let _ = State::from_json(&text);
            }
        }
    }
}
