//! Virtual time for logs and the trace hash of a run.
//!
//! `SHOPSIM_LOG=debug` (an `EnvFilter` directive) prints every event stamped with virtual time
//! since the run started; madsim's per-node span adds the node's id and name. Nothing printed
//! or hashed depends on wall time or memory addresses.
//!
//! The trace hash is FNV-1a over the serialized history, the database commit log and the
//! coverage hits: two runs of a seed with equal hashes did the same things in the same order
//! at the same virtual times.

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    // The virtual instant the current run started at; set by the runner for the duration of
    // one run on this thread, so no state outlives a run.
    static RUN_ORIGIN: Cell<Option<madsim::time::Instant>> = const { Cell::new(None) };
}

/// Marks the start of a run on this thread (inside the runtime).
pub(crate) fn start_run() {
    RUN_ORIGIN.with(|o| o.set(Some(madsim::time::Instant::now())));
}

/// Clears the run origin (the run ended).
pub(crate) fn end_run() {
    RUN_ORIGIN.with(|o| o.set(None));
}

/// Virtual time since the current run started (zero outside a run).
pub fn virtual_now() -> Duration {
    try_virtual_now().unwrap_or_default()
}

/// Virtual time since the current run started, if a run is on this thread.
pub fn try_virtual_now() -> Option<Duration> {
    let origin = RUN_ORIGIN.with(|o| o.get())?;
    Some(madsim::time::Instant::now().duration_since(origin))
}

struct VirtualTimer;

impl tracing_subscriber::fmt::time::FormatTime for VirtualTimer {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match try_virtual_now() {
            Some(t) => write!(w, "{:>10.3}ms", t.as_secs_f64() * 1000.0),
            None => write!(w, "{:>12}", "-"),
        }
    }
}

/// Installs the log subscriber if `SHOPSIM_LOG` is set (once per process; later calls and an
/// already installed subscriber are left alone).
pub fn init_from_env() {
    let Ok(filter) = std::env::var("SHOPSIM_LOG") else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::new(filter);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(VirtualTimer)
        .with_writer(std::io::stderr)
        .try_init();
}

/// FNV-1a, 64 bits: small, stable across platforms and Rust versions (unlike `DefaultHasher`).
#[derive(Debug, Clone)]
pub struct TraceHasher {
    state: u64,
}

impl Default for TraceHasher {
    fn default() -> Self {
        TraceHasher {
            state: 0xcbf2_9ce4_8422_2325,
        }
    }
}

impl TraceHasher {
    /// Adds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.state ^= u64::from(b);
            self.state = self.state.wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Adds a serializable value (as JSON, whose field order is the struct's).
    pub fn write_json<T: serde::Serialize>(&mut self, value: &T) {
        let bytes = serde_json::to_vec(value).expect("trace values serialize");
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(&bytes);
    }

    /// The hash.
    pub fn finish(&self) -> u64 {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        let mut h = TraceHasher::default();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63dc4c8601ec8c);
        let mut g = TraceHasher::default();
        g.write_json(&(1u8, "x"));
        let mut k = TraceHasher::default();
        k.write_json(&(1u8, "y"));
        assert_ne!(g.finish(), k.finish());
    }
}
