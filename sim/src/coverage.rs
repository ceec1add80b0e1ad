//! `sometimes!` / `always!` assertions, as in Antithesis: mark race windows in model code and
//! learn which ones a run reached.
//!
//! `sometimes!("two converts of one cart overlap", cond)` records whether `cond` was ever true;
//! aggregated over seeds, [`CoverageReport::never_fired`] lists the windows no seed reached,
//! which means the scenario does not test that race. `always!(name, cond)` records every time
//! `cond` is false; the runner turns that into a failed check.
//!
//! The registry is per run and per thread (a run is single-threaded inside madsim): the runner
//! starts it and takes it, so nothing outlives a run.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What one run (or many, merged) reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageReport {
    /// `sometimes!` name -> (times true, times evaluated).
    pub sometimes: BTreeMap<String, (u64, u64)>,
    /// `always!` name -> (times false, times evaluated).
    pub always: BTreeMap<String, (u64, u64)>,
    /// Named counters (fault families that happened, buggify points that fired).
    pub counters: BTreeMap<String, u64>,
}

impl CoverageReport {
    /// Adds another run's coverage.
    pub fn merge(&mut self, other: &CoverageReport) {
        for (k, (a, b)) in &other.sometimes {
            let e = self.sometimes.entry(k.clone()).or_default();
            e.0 += a;
            e.1 += b;
        }
        for (k, (a, b)) in &other.always {
            let e = self.always.entry(k.clone()).or_default();
            e.0 += a;
            e.1 += b;
        }
        for (k, n) in &other.counters {
            *self.counters.entry(k.clone()).or_default() += n;
        }
    }

    /// `sometimes!` windows that were evaluated but never true.
    pub fn never_fired(&self) -> Vec<&str> {
        self.sometimes
            .iter()
            .filter(|(_, (hits, _))| *hits == 0)
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// `always!` assertions that were false at least once.
    pub fn violated(&self) -> Vec<&str> {
        self.always
            .iter()
            .filter(|(_, (misses, _))| *misses > 0)
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<CoverageReport>> = const { RefCell::new(None) };
}

/// Starts recording for a run on this thread.
pub(crate) fn start_run() {
    CURRENT.with(|c| *c.borrow_mut() = Some(CoverageReport::default()));
}

/// Ends the run and returns what it reached.
pub(crate) fn end_run() -> CoverageReport {
    CURRENT.with(|c| c.borrow_mut().take()).unwrap_or_default()
}

fn with(f: impl FnOnce(&mut CoverageReport)) {
    CURRENT.with(|c| {
        if let Some(report) = c.borrow_mut().as_mut() {
            f(report)
        }
    });
}

/// Records a `sometimes!` evaluation.
pub fn record_sometimes(name: &str, condition: bool) {
    with(|r| {
        let e = r.sometimes.entry(name.to_string()).or_default();
        e.0 += u64::from(condition);
        e.1 += 1;
    });
}

/// Records an `always!` evaluation.
pub fn record_always(name: &str, condition: bool) {
    if !condition {
        tracing::warn!(assertion = name, "always! assertion was false");
    }
    with(|r| {
        let e = r.always.entry(name.to_string()).or_default();
        e.0 += u64::from(!condition);
        e.1 += 1;
    });
}

/// Counts an event (a fault family happening, a buggify point firing).
pub fn count(name: &str) {
    with(|r| *r.counters.entry(name.to_string()).or_default() += 1);
}

/// Records whether a race window was reached: `sometimes!("name", condition)`.
#[macro_export]
macro_rules! sometimes {
    ($name:expr, $cond:expr) => {
        $crate::coverage::record_sometimes($name, $cond)
    };
}

/// Records an invariant that must hold every time: `always!("name", condition)`.
#[macro_export]
macro_rules! always {
    ($name:expr, $cond:expr) => {
        $crate::coverage::record_always($name, $cond)
    };
}
