//! Failure groups of a campaign and which of their failures keep an artifact.
//!
//! Failures with one signature (`signature`) form a group. A group keeps at most
//! `--max-artifacts-per-group` artifacts, and always two of them: its first failure (the
//! earliest campaign index, what a person saw first) and its smallest (fewest history
//! operations, then shortest virtual run, then lowest seed: the easiest to read and to
//! shrink). The next failures fill the remaining places; after that a failure is only
//! counted, unless it is smaller than the group's smallest, which it then replaces (the
//! replaced one stays if a place is free, else its file is removed). So the artifacts of a
//! campaign are bounded by groups × the limit, whatever its length.

use serde::Serialize;
use shopsim_sim::runner::FailureKind;

use crate::signature::Signature;

/// The fewest artifacts a group keeps: its first and its smallest failure.
pub const ARTIFACTS_PER_GROUP_MIN: usize = 2;
/// The most artifacts per group that `--max-artifacts-per-group` accepts.
pub const ARTIFACTS_PER_GROUP_MAX: usize = 1_000;
/// The default of `--max-artifacts-per-group`.
pub const ARTIFACTS_PER_GROUP_DEFAULT: usize = 3;
/// The most groups `--max-groups` accepts.
pub const GROUPS_MAX: usize = 10_000;
/// The default of `--max-groups`.
pub const GROUPS_DEFAULT: usize = 200;
/// The shape of the overflow group of a (run, check) once `--max-groups` groups exist.
pub const OVERFLOW_SHAPE: &str = "(more shapes than --max-groups; counted here)";
/// The longest witness kept per group, in characters.
pub const WITNESS_CHARS_MAX: usize = 2_000;

/// How big a failing run is: what "smallest" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RunSize {
    /// History operations.
    pub ops: u64,
    /// Virtual time of the run, µs.
    pub virtual_us: u64,
}

/// A failure a group remembers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exemplar {
    /// The seed.
    #[serde(with = "crate::json_u64::decimal")]
    pub seed: u64,
    /// History operations.
    pub ops: u64,
    /// Virtual time of the run, µs.
    pub virtual_us: u64,
    /// Its artifact, relative to `--out` (`None` if it could not be written).
    pub artifact: Option<String>,
    /// Whether it ran mutated corpus draws: then only its artifact replays it (its draws do
    /// not follow from the seed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mutated: bool,
}

impl Exemplar {
    /// Its size.
    pub fn size(&self) -> RunSize {
        RunSize {
            ops: self.ops,
            virtual_us: self.virtual_us,
        }
    }

    /// The order "smallest" uses: size, then seed.
    pub fn rank(&self) -> (RunSize, u64) {
        (self.size(), self.seed)
    }
}

/// The failure kind's name in state and report files.
pub fn kind_name(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Violation => "violation",
        FailureKind::Liveness => "liveness",
        FailureKind::Panic => "panic",
        FailureKind::NoProgress => "no_progress",
    }
}

/// The failure kind of `name` (see [`kind_name`]).
pub fn kind_of(name: &str) -> Option<FailureKind> {
    [
        FailureKind::Violation,
        FailureKind::Liveness,
        FailureKind::Panic,
        FailureKind::NoProgress,
    ]
    .into_iter()
    .find(|k| kind_name(*k) == name)
}

/// One group of failures with one signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// Its number in the campaign, from 1, in order of discovery.
    pub id: u64,
    /// `scenario@profile`.
    pub system: String,
    /// The failed check.
    pub check: String,
    /// The failure kind (`violation`, `liveness`, `panic`).
    #[serde(serialize_with = "serialize_kind")]
    pub kind: FailureKind,
    /// The witness's shape.
    pub shape: String,
    /// Failing seeds in the group.
    pub count: u64,
    /// The first failure's witness (at most [`WITNESS_CHARS_MAX`] characters).
    pub witness: String,
    /// The first failure.
    pub first: Exemplar,
    /// The smallest failure (the first until a smaller one comes).
    pub smallest: Exemplar,
    /// Other failures that keep their artifact.
    pub others: Vec<Exemplar>,
}

fn serialize_kind<S: serde::Serializer>(kind: &FailureKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind_name(*kind))
}

/// What to do with a failure that joins an existing group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    /// Count it; write nothing.
    Count,
    /// Write its artifact; it becomes the group's smallest.
    Smallest,
    /// Write its artifact; it takes a free place.
    Other,
}

impl Group {
    /// A new group whose first failure is `first` (its artifact to be written).
    pub fn new(
        id: u64,
        signature: Signature,
        kind: FailureKind,
        witness: &str,
        first: Exemplar,
    ) -> Group {
        assert!(id >= 1);
        Group {
            id,
            system: signature.system,
            check: signature.check,
            kind,
            shape: signature.shape,
            count: 1,
            witness: crate::signature::truncate_chars(witness, WITNESS_CHARS_MAX),
            first: first.clone(),
            smallest: first,
            others: Vec::new(),
        }
    }

    /// The signature.
    pub fn signature(&self) -> Signature {
        Signature {
            system: self.system.clone(),
            check: self.check.clone(),
            shape: self.shape.clone(),
        }
    }

    /// Whether a failure of `seed` and `size` keeps an artifact, with at most
    /// `artifacts_max` per group. It does not count the failure (see [`Group::count_one`]).
    pub fn plan(&self, seed: u64, size: RunSize, artifacts_max: usize) -> Keep {
        assert!(artifacts_max >= ARTIFACTS_PER_GROUP_MIN);
        if (size, seed) < self.smallest.rank() {
            Keep::Smallest
        } else if self.artifacts().len() < artifacts_max {
            Keep::Other
        } else {
            Keep::Count
        }
    }

    /// Counts one more failing seed.
    pub fn count_one(&mut self) {
        self.count = self.count.saturating_add(1);
    }

    /// Records a failure whose artifact was written as `plan` said; returns the artifacts
    /// (relative to `--out`) no longer kept, to be removed.
    pub fn keep(&mut self, exemplar: Exemplar, plan: &Keep, artifacts_max: usize) -> Vec<String> {
        let mut removed = Vec::new();
        match plan {
            Keep::Count => {}
            Keep::Other => self.others.push(exemplar),
            Keep::Smallest => {
                let old = std::mem::replace(&mut self.smallest, exemplar);
                if old.seed != self.first.seed {
                    self.others.push(old);
                }
            }
        }
        // Over the limit: drop the largest of the others (never the first or the smallest).
        while self.artifacts().len() > artifacts_max && !self.others.is_empty() {
            let largest = (0..self.others.len())
                .max_by_key(|&i| self.others[i].rank())
                .expect("not empty");
            let dropped = self.others.remove(largest);
            removed.extend(dropped.artifact);
        }
        assert!(self.smallest.rank() <= self.first.rank());
        removed
    }

    /// The artifacts the group keeps (relative to `--out`): first, smallest, others.
    pub fn artifacts(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for e in std::iter::once(&self.first)
            .chain(std::iter::once(&self.smallest))
            .chain(&self.others)
        {
            if let Some(a) = &e.artifact {
                if !out.contains(&a.as_str()) {
                    out.push(a);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exemplar(seed: u64, ops: u64) -> Exemplar {
        Exemplar {
            seed,
            ops,
            virtual_us: 1_000,
            artifact: Some(format!("s@p/{seed}.json")),
            mutated: false,
        }
    }

    fn group() -> Group {
        Group::new(
            1,
            Signature::of("s@p", "no_oversell", "x"),
            FailureKind::Violation,
            "x",
            exemplar(10, 500),
        )
    }

    /// Feeds failures (seed, ops) to a group the way the campaign does.
    fn feed(g: &mut Group, failures: &[(u64, u64)], max: usize) -> Vec<String> {
        let mut removed = Vec::new();
        for &(seed, ops) in failures {
            g.count_one();
            let plan = g.plan(seed, exemplar(seed, ops).size(), max);
            removed.extend(g.keep(exemplar(seed, ops), &plan, max));
        }
        removed
    }

    #[test]
    fn keeps_first_and_smallest_and_stays_bounded() {
        let mut g = group();
        let removed = feed(
            &mut g,
            &[
                (11, 600),
                (12, 700),
                (13, 400),
                (14, 300),
                (15, 900),
                (16, 100),
            ],
            3,
        );
        assert_eq!(g.count, 7);
        assert_eq!(g.first.seed, 10);
        assert_eq!(g.smallest.seed, 16);
        assert_eq!(g.artifacts().len(), 3, "{:?}", g.artifacts());
        // Each artifact written and later dropped is listed for removal exactly once.
        let kept: Vec<String> = g.artifacts().iter().map(|s| s.to_string()).collect();
        for r in &removed {
            assert!(!kept.contains(r), "{r} removed but kept");
        }
        let written = 1 + 2 + 3; // the first, seeds 11 and 12 (free places), three new smallest
        assert_eq!(kept.len() + removed.len(), written, "{kept:?} {removed:?}");
    }

    #[test]
    fn two_places_hold_only_first_and_smallest() {
        let mut g = group();
        let removed = feed(&mut g, &[(11, 600), (12, 400), (13, 300)], 2);
        assert_eq!(g.artifacts(), vec!["s@p/10.json", "s@p/13.json"]);
        // Seed 11 took the free place, then made room for a new smallest; so did 12.
        assert_eq!(
            removed,
            vec!["s@p/11.json".to_string(), "s@p/12.json".to_string()]
        );
        // A tie in size is not smaller: the lower seed stays.
        assert_eq!(g.plan(14, exemplar(14, 300).size(), 2), Keep::Count);
        assert_eq!(g.plan(1, exemplar(1, 300).size(), 2), Keep::Smallest);
    }

    #[test]
    fn kinds_have_names() {
        for k in [
            FailureKind::Violation,
            FailureKind::Liveness,
            FailureKind::Panic,
            FailureKind::NoProgress,
        ] {
            assert_eq!(kind_of(kind_name(k)), Some(k));
        }
        assert_eq!(kind_of("other"), None);
    }
}
