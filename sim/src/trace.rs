//! Virtual time for logs and the trace hash of a run.
//!
//! `SHOPSIM_LOG=debug` (an `EnvFilter` directive) prints every event stamped with virtual time
//! since the run started; madsim's per-node span adds the node's id and name. Nothing printed
//! or hashed depends on wall time or memory addresses.
//!
//! The trace hash is a word-wise FNV-style hash over the history (its fields in a binary form), the database commit log and the
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

/// A 64-bit hash over 8-byte little-endian words (FNV-1a's offset basis and prime, with a
/// rotation so that every input bit reaches every state bit): small, fast on megabytes of
/// history, and stable across platforms and Rust versions (unlike `DefaultHasher`).
#[derive(Debug, Clone)]
pub struct TraceHasher {
    state: u64,
    /// Bytes not yet a whole word.
    pending: [u8; 8],
    pending_len: usize,
}

impl Default for TraceHasher {
    fn default() -> Self {
        TraceHasher {
            state: 0xcbf2_9ce4_8422_2325,
            pending: [0; 8],
            pending_len: 0,
        }
    }
}

impl TraceHasher {
    fn mix(&mut self, word: u64) {
        self.state = (self.state ^ word)
            .wrapping_mul(0x0100_0000_01b3)
            .rotate_left(29);
    }

    /// Adds bytes.
    pub fn write(&mut self, mut bytes: &[u8]) {
        assert!(self.pending_len < 8);
        if self.pending_len > 0 {
            let take = (8 - self.pending_len).min(bytes.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&bytes[..take]);
            self.pending_len += take;
            bytes = &bytes[take..];
            if self.pending_len < 8 {
                return;
            }
            self.mix(u64::from_le_bytes(self.pending));
            self.pending_len = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.mix(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// Adds a serializable value: its fields as tagged binary (numbers as little-endian
    /// words, strings with their length, every sequence, map and struct closed), streamed into
    /// the hash without building JSON text. The encoding is prefix-free, so `1` then `2`
    /// hashes differently from `12`.
    pub fn write_value<T: serde::Serialize + ?Sized>(&mut self, value: &T) {
        crate::hash_serializer::write(self, value);
    }

    /// The hash of everything written so far (the last partial word padded with its length,
    /// so `"a"` and `"a\0"` differ).
    pub fn finish(&self) -> u64 {
        let mut last = self.clone();
        let mut word = [0u8; 8];
        word[..self.pending_len].copy_from_slice(&self.pending[..self.pending_len]);
        last.mix(u64::from_le_bytes(word));
        last.mix(self.pending_len as u64);
        last.state
    }
}

impl std::io::Write for TraceHasher {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        TraceHasher::write(self, bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_split_independent_and_delimited() {
        // Any split of the same bytes gives the same hash; a different byte does not.
        let mut whole = TraceHasher::default();
        whole.write(b"the quick brown fox jumps");
        let mut split = TraceHasher::default();
        for part in [&b"the q"[..], b"", b"uick brown f", b"ox jumps"] {
            split.write(part);
        }
        assert_eq!(whole.finish(), split.finish());
        let mut other = TraceHasher::default();
        other.write(b"the quick brown fox jumpz");
        assert_ne!(whole.finish(), other.finish());
        let (mut a, mut a0) = (TraceHasher::default(), TraceHasher::default());
        a.write(b"a");
        a0.write(b"a\0");
        assert_ne!(a.finish(), a0.finish());
        let mut g = TraceHasher::default();
        g.write_value(&(1u8, "x"));
        let mut k = TraceHasher::default();
        k.write_value(&(1u8, "y"));
        assert_ne!(g.finish(), k.finish());
        // Values are delimited: 1 then 2 is not 12.
        let (mut one_two, mut twelve) = (TraceHasher::default(), TraceHasher::default());
        one_two.write_value(&1);
        one_two.write_value(&2);
        twelve.write_value(&12);
        assert_ne!(one_two.finish(), twelve.finish());
    }
}
