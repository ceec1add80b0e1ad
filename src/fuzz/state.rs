//! The campaign state file `--out/state.json`: what a resumed campaign continues from.
//!
//! It holds counts and failure groups, never a list of seeds, so its size depends on the
//! number of groups (bounded by `--max-groups`), not on the campaign's length. It is
//! versioned ([`STATE_FORMAT`]) and read defensively: a regular file of at most
//! [`crate::input::STATE_BYTES_MAX`] bytes, typed while it is parsed (never a tree of JSON
//! values), every field checked for its type and range, unknown fields refused, the relations between the
//! counts checked with checked arithmetic, and each artifact path required to be the one the
//! campaign itself would write (a state file can never make a campaign remove another file).
//! Every problem is an [`InputError`] naming the field, e.g.
//! `groups[2].count: must be at least 1, got `0``.

use serde::Serialize;
use shopsim_sim::input::InputError;

use super::groups::Group;

/// The format written and read. Version 1 (no `format` field) listed every failing seed.
pub const STATE_FORMAT: &str = "shopsim-fuzz-state-2";
/// Counters read must be at most this, so a campaign adding to them never overflows.
pub const COUNT_MAX: u64 = 1 << 62;
/// The most seeds one campaign runs (`--seeds`, and `seeds_run` read): 10^15 seeds is
/// millennia of fuzzing, and with at most [`crate::input::SHARDS_MAX`] shards every seed
/// index below it fits in 64 bits.
pub const SEEDS_RUN_MAX: u64 = 1_000_000_000_000_000;
/// The longest elapsed time read: 100 years, in ms.
pub const ELAPSED_MS_MAX: u64 = crate::input::FUZZ_DURATION_S_MAX * 1000;
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
    /// Seeds that ran mutated corpus draws, all sessions.
    pub corpus_seeds: u64,
    /// Every declared race window: how often and when it was first reached.
    pub windows: Vec<super::corpus::WindowStats>,
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
            corpus_seeds: 0,
            windows: Vec::new(),
        }
    }

    /// Failing seeds, all groups.
    pub fn failing_seeds(&self) -> u64 {
        self.groups.iter().map(|g| g.count).sum()
    }

    /// Reads and validates a state file's text.
    pub fn from_json(text: &str) -> Result<State, InputError> {
        // The format first: an older or foreign file gets one clear message, not a field
        // error. Nothing but the format is kept while looking for it.
        let probe: wire::Probe = wire::parse(text)?;
        if probe.format.as_ref().map(|f| f.0.as_str()) != Some(STATE_FORMAT) {
            return Err(InputError::new(
                "format",
                probe.format.map_or("nothing".to_string(), |f| {
                    crate::signature::truncate_chars(&f.0, 80)
                }),
                format!("must be `{STATE_FORMAT}` (a campaign state of this shopsim version)"),
            ));
        }
        let state = wire::parse::<wire::State>(text)?.into_state();
        validate(&state)?;
        Ok(state)
    }
}

/// The state file as it is read: typed as it is parsed, so a hostile file never becomes a
/// tree of JSON values (a 16 MiB file of `[0,0,...]` would be 8 million of them, 256 MiB):
/// every string and list is refused as soon as it passes its limit, every count as soon as
/// it passes its range, and unknown fields at once. Errors carry the field's path.
mod wire {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{self, Deserializer, SeqAccess, Visitor};
    use serde::Deserialize;
    use shopsim_sim::input::InputError;

    use super::super::corpus;
    use super::super::groups::{self, Exemplar, Group};
    use super::{
        CheckCounts, Io, RunStats, COUNT_MAX, ELAPSED_MS_MAX, RUNS_MAX, SEEDS_RUN_MAX,
        STATE_FORMAT, TEXT_CHARS_MAX,
    };

    /// Parses `text` as `T`; errors name the field's path (`groups[2].count`), or the line
    /// and column of a syntax error.
    pub fn parse<'de, T: Deserialize<'de>>(text: &'de str) -> Result<T, InputError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let value: T = serde_path_to_error::deserialize(&mut de).map_err(error)?;
        de.end().map_err(|e| {
            InputError::new(
                format!("line {}, column {}", e.line(), e.column()),
                "",
                "trailing characters after the JSON value",
            )
        })?;
        Ok(value)
    }

    fn error(e: serde_path_to_error::Error<serde_json::Error>) -> InputError {
        let path = e.path().to_string();
        let inner = e.inner();
        let message = inner.to_string();
        // serde_json appends the position; the path says where.
        let message = message.split(" at line ").next().unwrap_or(&message);
        if inner.is_syntax() || inner.is_eof() {
            return InputError::new(
                format!("line {}, column {}", inner.line(), inner.column()),
                "",
                message,
            );
        }
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next());
        match (missing, path.as_str()) {
            (Some(field), ".") => InputError::new(field, "", "is required"),
            (Some(field), _) => InputError::new(format!("{path}.{field}"), "", "is required"),
            (None, ".") => InputError::new("state", "", message),
            (None, _) => InputError::new(path, "", message),
        }
    }

    /// A string of at most `N` characters.
    pub struct Text<const N: usize>(pub String);

    impl<'de, const N: usize> Deserialize<'de> for Text<N> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let s = String::deserialize(d)?;
            if s.chars().count() > N {
                return Err(de::Error::custom(format!(
                    "must be at most {N} characters, got `{}`",
                    crate::signature::truncate_chars(&s, 40)
                )));
            }
            Ok(Text(s))
        }
    }

    /// A whole number in `0..=MAX`.
    #[derive(Default)]
    pub struct Count<const MAX: u64>(pub u64);

    impl<'de, const MAX: u64> Deserialize<'de> for Count<MAX> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            // Every wrong value is named the same way, whatever JSON type it has.
            struct Visit<const MAX: u64>;
            impl<const MAX: u64> Visitor<'_> for Visit<MAX> {
                type Value = Count<MAX>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    write!(f, "an unsigned integer at most {MAX}")
                }
                fn visit_u64<E: de::Error>(self, n: u64) -> Result<Count<MAX>, E> {
                    if n > MAX {
                        return Err(E::custom(format!("must be at most {MAX}, got `{n}`")));
                    }
                    Ok(Count(n))
                }
                fn visit_i64<E: de::Error>(self, n: i64) -> Result<Count<MAX>, E> {
                    match u64::try_from(n) {
                        Ok(n) => self.visit_u64(n),
                        Err(_) => Err(E::custom(format!("must be an unsigned integer, got `{n}`"))),
                    }
                }
                fn visit_f64<E: de::Error>(self, n: f64) -> Result<Count<MAX>, E> {
                    Err(E::custom(format!("must be an unsigned integer, got `{n}`")))
                }
                fn visit_str<E: de::Error>(self, text: &str) -> Result<Count<MAX>, E> {
                    Err(E::custom(format!(
                        "must be an unsigned integer, got the string {text:?}"
                    )))
                }
            }
            d.deserialize_u64(Visit::<MAX>)
        }
    }

    /// A list of at most `N` items, refused at item `N + 1` without reading further.
    pub struct List<T, const N: usize>(pub Vec<T>);

    impl<T, const N: usize> Default for List<T, N> {
        fn default() -> Self {
            List(Vec::new())
        }
    }

    impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for List<T, N> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Items<T, const N: usize>(PhantomData<T>);
            impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Items<T, N> {
                type Value = List<T, N>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    write!(f, "an array of at most {N} items")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                    let mut items = Vec::new();
                    while let Some(item) = seq.next_element()? {
                        if items.len() == N {
                            return Err(de::Error::custom(format!("must have at most {N} items")));
                        }
                        items.push(item);
                    }
                    Ok(List(items))
                }
            }
            d.deserialize_seq(Items(PhantomData))
        }
    }

    /// A seed: an unsigned 64-bit integer as a decimal string (never a JSON number, which
    /// many readers round).
    pub struct Seed(pub u64);

    impl<'de> Deserialize<'de> for Seed {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let text = Text::<20>::deserialize(d)?;
            crate::json_u64::parse(&text.0, 10)
                .map(Seed)
                .ok_or_else(|| {
                    de::Error::custom(format!(
                        "must be an unsigned 64-bit integer as a decimal string, got `{}`",
                        text.0
                    ))
                })
        }
    }

    /// A value that must be given, possibly as `null`.
    pub struct Nullable<T>(pub Option<T>);

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Nullable<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Option::<T>::deserialize(d).map(Nullable)
        }
    }

    /// Only the format, everything else skipped without being kept.
    #[derive(Deserialize)]
    pub struct Probe {
        pub format: Option<Text<64>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct State {
        #[serde(rename = "format")]
        _format: Text<64>,
        identity: Text<TEXT_CHARS_MAX>,
        sessions: Count<COUNT_MAX>,
        seeds_run: Count<SEEDS_RUN_MAX>,
        elapsed_ms: Count<ELAPSED_MS_MAX>,
        nondeterministic: Count<COUNT_MAX>,
        io: IoWire,
        runs: List<Run, RUNS_MAX>,
        groups: List<GroupWire, { groups::GROUPS_MAX + RUNS_MAX }>,
        // Absent in a state written before the corpus existed.
        #[serde(default)]
        corpus_seeds: Count<COUNT_MAX>,
        #[serde(default)]
        windows: List<WindowWire, { corpus::WINDOWS_MAX }>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename = "WindowStats")]
    struct WindowWire {
        window: Text<{ crate::artifact::WINDOW_CHARS_MAX }>,
        hits: Count<COUNT_MAX>,
        seeds: Count<COUNT_MAX>,
        first: Nullable<FirstHitWire>,
        runs: List<RunHitsWire, RUNS_MAX>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename = "FirstHit")]
    struct FirstHitWire {
        seed: Seed,
        run: Text<TEXT_CHARS_MAX>,
        elapsed_ms: Count<ELAPSED_MS_MAX>,
        mutated: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename = "RunHits")]
    struct RunHitsWire {
        run: Text<TEXT_CHARS_MAX>,
        seeds: Count<COUNT_MAX>,
    }

    impl WindowWire {
        fn into_stats(self) -> corpus::WindowStats {
            corpus::WindowStats {
                window: self.window.0,
                hits: self.hits.0,
                seeds: self.seeds.0,
                first: self.first.0.map(|f| corpus::FirstHit {
                    seed: f.seed.0,
                    run: f.run.0,
                    elapsed_ms: f.elapsed_ms.0,
                    mutated: f.mutated,
                }),
                runs: self
                    .runs
                    .0
                    .into_iter()
                    .map(|r| corpus::RunHits {
                        run: r.run.0,
                        seeds: r.seeds.0,
                    })
                    .collect(),
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename = "Io")]
    struct IoWire {
        files_written: Count<COUNT_MAX>,
        bytes_written: Count<COUNT_MAX>,
        artifacts_removed: Count<COUNT_MAX>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Run {
        name: Text<TEXT_CHARS_MAX>,
        seeds: Count<COUNT_MAX>,
        failing_seeds: Count<COUNT_MAX>,
        wall_ms: Count<ELAPSED_MS_MAX>,
        checks: List<Check, RUNS_MAX>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Check {
        check: Text<TEXT_CHARS_MAX>,
        valid: Count<COUNT_MAX>,
        unknown: Count<COUNT_MAX>,
        invalid: Count<COUNT_MAX>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename = "Exemplar")]
    struct ExemplarWire {
        seed: Seed,
        ops: Count<COUNT_MAX>,
        virtual_us: Count<COUNT_MAX>,
        artifact: Nullable<Text<TEXT_CHARS_MAX>>,
        #[serde(default)]
        mutated: bool,
    }

    /// `violation`, `liveness`, `panic` or `no_progress`.
    struct Kind(shopsim_sim::runner::FailureKind);

    impl<'de> Deserialize<'de> for Kind {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let name = Text::<20>::deserialize(d)?;
            groups::kind_of(&name.0).map(Kind).ok_or_else(|| {
                de::Error::custom(format!(
                    "must be `violation`, `liveness`, `panic` or `no_progress`, got `{}`",
                    name.0
                ))
            })
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename = "Group")]
    struct GroupWire {
        id: Count<COUNT_MAX>,
        system: Text<TEXT_CHARS_MAX>,
        check: Text<TEXT_CHARS_MAX>,
        kind: Kind,
        shape: Text<{ crate::signature::SHAPE_CHARS_MAX + 1 }>,
        count: Count<COUNT_MAX>,
        witness: Text<{ groups::WITNESS_CHARS_MAX + 1 }>,
        first: ExemplarWire,
        smallest: ExemplarWire,
        others: List<ExemplarWire, { groups::ARTIFACTS_PER_GROUP_MAX }>,
    }

    impl ExemplarWire {
        fn into_exemplar(self) -> Exemplar {
            Exemplar {
                seed: self.seed.0,
                ops: self.ops.0,
                virtual_us: self.virtual_us.0,
                artifact: self.artifact.0.map(|a| a.0),
                mutated: self.mutated,
            }
        }
    }

    impl State {
        pub fn into_state(self) -> super::State {
            super::State {
                format: STATE_FORMAT.to_string(),
                identity: self.identity.0,
                sessions: self.sessions.0,
                seeds_run: self.seeds_run.0,
                elapsed_ms: self.elapsed_ms.0,
                nondeterministic: self.nondeterministic.0,
                io: Io {
                    files_written: self.io.files_written.0,
                    bytes_written: self.io.bytes_written.0,
                    artifacts_removed: self.io.artifacts_removed.0,
                },
                runs: self
                    .runs
                    .0
                    .into_iter()
                    .map(|r| RunStats {
                        name: r.name.0,
                        seeds: r.seeds.0,
                        failing_seeds: r.failing_seeds.0,
                        wall_ms: r.wall_ms.0,
                        checks: r
                            .checks
                            .0
                            .into_iter()
                            .map(|c| CheckCounts {
                                check: c.check.0,
                                valid: c.valid.0,
                                unknown: c.unknown.0,
                                invalid: c.invalid.0,
                            })
                            .collect(),
                    })
                    .collect(),
                groups: self
                    .groups
                    .0
                    .into_iter()
                    .map(|g| Group {
                        id: g.id.0,
                        system: g.system.0,
                        check: g.check.0,
                        kind: g.kind.0,
                        shape: g.shape.0,
                        count: g.count.0,
                        witness: g.witness.0,
                        first: g.first.into_exemplar(),
                        smallest: g.smallest.into_exemplar(),
                        others: g
                            .others
                            .0
                            .into_iter()
                            .map(ExemplarWire::into_exemplar)
                            .collect(),
                    })
                    .collect(),
                corpus_seeds: self.corpus_seeds.0,
                windows: self
                    .windows
                    .0
                    .into_iter()
                    .map(WindowWire::into_stats)
                    .collect(),
            }
        }
    }
}

/// Checks the relations between the fields, with checked arithmetic.
fn validate(state: &State) -> Result<(), InputError> {
    if state.sessions == 0 {
        return Err(InputError::new("sessions", 0, "must be at least 1"));
    }
    if state.corpus_seeds > state.seeds_run {
        return Err(InputError::new(
            "corpus_seeds",
            state.corpus_seeds,
            format!("must be at most seeds_run ({})", state.seeds_run),
        ));
    }
    for (i, w) in state.windows.iter().enumerate() {
        let at = |field: &str| format!("windows[{i}].{field}");
        if state.windows[..i].iter().any(|o| o.window == w.window) {
            return Err(InputError::new(at("window"), &w.window, "must be unique"));
        }
        if w.seeds > state.seeds_run || w.seeds > w.hits {
            return Err(InputError::new(
                at("seeds"),
                w.seeds,
                format!(
                    "must be at most seeds_run ({}) and hits ({})",
                    state.seeds_run, w.hits
                ),
            ));
        }
        if (w.seeds == 0) != w.first.is_none() {
            return Err(InputError::new(
                at("first"),
                if w.first.is_some() { "a hit" } else { "null" },
                "must be given exactly when some seed reached the window",
            ));
        }
        let per_run = w
            .runs
            .iter()
            .try_fold(0u64, |sum, r| sum.checked_add(r.seeds));
        if per_run != Some(w.seeds) {
            return Err(InputError::new(
                at("runs"),
                format!("{per_run:?}"),
                format!("must add up to the window's seeds ({})", w.seeds),
            ));
        }
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
    use crate::fuzz::groups::Exemplar;
    use crate::signature::Signature;
    use serde_json::Value;
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
            mutated: false,
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
            mutated: true,
        };
        state.groups.push(g);
        state.seeds_run = 40;
        state.corpus_seeds = 10;
        state.windows.push(super::super::corpus::WindowStats {
            window: "convert: two converts overlap".to_string(),
            hits: 12,
            seeds: 3,
            first: Some(super::super::corpus::FirstHit {
                seed: u64::MAX,
                run: "s@pg_rc".to_string(),
                elapsed_ms: 1_500,
                mutated: false,
            }),
            runs: vec![super::super::corpus::RunHits {
                run: "s@pg_rc".to_string(),
                seeds: 3,
            }],
        });
        state
            .windows
            .push(super::super::corpus::WindowStats::new("never"));
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
            (Box::new(|v| v["corpus_seeds"] = 41.into()), "corpus_seeds"),
            (
                Box::new(|v| v["windows"][0]["seeds"] = 41.into()),
                "windows[0].seeds",
            ),
            (
                Box::new(|v| v["windows"][0]["first"] = Value::Null),
                "windows[0].first",
            ),
            (
                Box::new(|v| v["windows"][1]["window"] = v["windows"][0]["window"].clone()),
                "windows[1].window",
            ),
            (
                Box::new(|v| v["windows"][0]["runs"][0]["seeds"] = 2.into()),
                "windows[0].runs",
            ),
            (
                Box::new(|v| v["windows"][0]["first"]["seed"] = 7.into()),
                "windows[0].first.seed",
            ),
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
