//! `sometimes!` / `always!` assertions, as in Antithesis: mark race windows in model code and
//! learn which ones a run reached.
//!
//! Every race window is declared up front, as a [`Window`] in a registry made with
//! [`windows!`], and a system lists its registry in `System::windows`. So a window is known
//! before any run reaches it: [`CoverageReport::never_hit`] lists the declared windows no seed
//! reached, including those no seed ever evaluated, which means the scenarios do not test
//! that race. `sometimes!(windows::CONVERT_TWICE, cond).await` records whether `cond` was ever
//! true; it takes a declared [`Window`], not a string, and the runner refuses (panics on) a
//! window its system did not declare. It is also a schedule-steering delay point
//! ([`crate::steering`]), so it returns a future to await: with steering off the future is
//! ready at once and changes nothing. `always!(name, cond)` records every time `cond` is
//! false; the runner turns that into a failed check.
//!
//! The registry of what a run reached is per run and per thread (a run is single-threaded
//! inside madsim): the runner starts it and takes it, so nothing outlives a run.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A race window that `sometimes!` marks, declared in a registry made with [`windows!`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    name: &'static str,
}

impl Window {
    /// A window named `name` (use [`windows!`], which also lists it in the registry).
    pub const fn new(name: &'static str) -> Window {
        assert!(!name.is_empty());
        Window { name }
    }

    /// The window's name, as reports print it.
    pub fn name(self) -> &'static str {
        self.name
    }
}

/// Declares race windows and their registry `ALL`:
///
/// ```
/// mod windows {
///     shopsim_sim::windows! {
///         /// Two converts of one cart overlap.
///         pub CONVERT_TWICE = "convert: two converts overlap";
///     }
/// }
/// assert_eq!(windows::ALL, &[windows::CONVERT_TWICE]);
/// assert_eq!(windows::CONVERT_TWICE.name(), "convert: two converts overlap");
/// ```
#[macro_export]
macro_rules! windows {
    ($($(#[$meta:meta])* $vis:vis $id:ident = $name:literal;)+) => {
        $($(#[$meta])* $vis const $id: $crate::coverage::Window = $crate::coverage::Window::new($name);)+
        /// Every window declared here, in declaration order.
        pub const ALL: &[$crate::coverage::Window] = &[$($id),+];
    };
}

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

    /// The `declared` windows that were never true: evaluated but never hit, or never even
    /// evaluated. In declaration order.
    pub fn never_hit(&self, declared: &[Window]) -> Vec<&'static str> {
        declared
            .iter()
            .map(|w| w.name())
            .filter(|name| self.sometimes.get(*name).is_none_or(|(hits, _)| *hits == 0))
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
    // The windows the running system declared.
    static DECLARED: RefCell<&'static [Window]> = const { RefCell::new(&[]) };
}

/// Starts recording for a run on this thread of a system that declared `windows`.
pub(crate) fn start_run(windows: &'static [Window]) {
    CURRENT.with(|c| *c.borrow_mut() = Some(CoverageReport::default()));
    DECLARED.with(|d| *d.borrow_mut() = windows);
}

/// Ends the run and returns what it reached.
pub(crate) fn end_run() -> CoverageReport {
    DECLARED.with(|d| *d.borrow_mut() = &[]);
    CURRENT.with(|c| c.borrow_mut().take()).unwrap_or_default()
}

fn with(f: impl FnOnce(&mut CoverageReport)) {
    CURRENT.with(|c| {
        if let Some(report) = c.borrow_mut().as_mut() {
            f(report)
        }
    });
}

/// Records a `sometimes!` evaluation of `window` and returns its steering delay point (ready
/// at once with steering off). Panics if the running system did not declare `window`: a
/// window missing from the registry would be invisible until some seed reached it.
#[must_use = "sometimes! is a steering delay point: await it"]
pub fn record_sometimes(
    window: Window,
    condition: bool,
) -> impl std::future::Future<Output = ()> + Send {
    let recording = CURRENT.with(|c| c.borrow().is_some());
    if recording {
        let declared = DECLARED.with(|d| d.borrow().contains(&window));
        assert!(
            declared,
            "sometimes!(\"{}\") is not declared in the system's windows (System::windows)",
            window.name()
        );
    }
    with(|r| {
        let e = r.sometimes.entry(window.name().to_string()).or_default();
        e.0 += u64::from(condition);
        e.1 += 1;
    });
    crate::steering::point(
        crate::steering::Point::Window,
        crate::steering::Site::Deciding,
    )
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

/// Records whether a declared race window was reached, and is a steering delay point there:
/// `sometimes!(windows::NAME, condition).await`.
#[macro_export]
macro_rules! sometimes {
    ($window:expr, $cond:expr) => {
        $crate::coverage::record_sometimes($window, $cond)
    };
}

/// Records an invariant that must hold every time: `always!("name", condition)`.
#[macro_export]
macro_rules! always {
    ($name:expr, $cond:expr) => {
        $crate::coverage::record_always($name, $cond)
    };
}
