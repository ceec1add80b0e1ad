//! The cache node (Redis-like): get, set with TTL, delete, atomic add-if-absent, increment.
//! Its contents live in the node's memory: a crash empties it, as a Redis without persistence.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::rand::Rng;
use serde_json::Value as Json;
use shopsim_sim::net::{self, RpcOutcome};

/// The port the cache serves on.
pub const PORT: u16 = 6379;

/// A cached value: text, or a JSON document kept as the document it was set as (a store that
/// serializes documents gives back an equal document on read; keeping it parsed spares the
/// encoding and decoding, not a behaviour). Values are shared, not copied, between the store
/// and its readers (a cached product page is a few kilobytes, read many times).
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    /// A string.
    Text(Arc<str>),
    /// A JSON document.
    Json(Arc<Json>),
}

impl Cached {
    /// The value as text (a document as its JSON text).
    pub fn text(&self) -> Arc<str> {
        match self {
            Cached::Text(text) => text.clone(),
            Cached::Json(json) => Arc::from(json.to_string()),
        }
    }

    /// The value as a JSON document, if it is one (text is parsed).
    pub fn json(&self) -> Option<Arc<Json>> {
        match self {
            Cached::Text(text) => serde_json::from_str(text).ok().map(Arc::new),
            Cached::Json(json) => Some(json.clone()),
        }
    }
}

/// A cache command.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheRequest {
    /// Value of a key.
    Get(String),
    /// Sets a key for `ttl_ms`.
    Set(String, Cached, u64),
    /// Deletes a key.
    Del(String),
    /// Sets a key only if absent; true if it was set.
    Add(String, Cached, u64),
    /// Adds 1 and returns the new value.
    Incr(String),
}

/// A cache reply.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheResponse {
    /// A value, if present.
    Value(Option<Cached>),
    /// Whether an add or delete changed something.
    Changed(bool),
    /// A counter.
    Count(i64),
}

/// The store: values with their expiry instants, expired lazily (a read of an expired key
/// finds nothing) and swept when the store has doubled since the last sweep, as Redis
/// expires keys on access and in the background, so no request scans the whole store.
#[derive(Default)]
struct Store {
    entries: BTreeMap<String, (Cached, Duration)>,
    len_after_sweep: usize,
}

impl Store {
    fn live(&self, key: &str, now: Duration) -> Option<&Cached> {
        self.entries
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(value, _)| value)
    }

    /// Adds 1 to a counter, keeping its expiry (a new counter lives an hour), as `INCR` does.
    fn incr(&mut self, key: String, now: Duration) -> i64 {
        let (n, expires) = match self.entries.get(&key).filter(|(_, e)| *e > now) {
            Some((value, expires)) => (value.text().parse::<i64>().unwrap_or(0) + 1, *expires),
            None => (1, now + Duration::from_secs(3600)),
        };
        self.entries
            .insert(key, (Cached::Text(Arc::from(n.to_string())), expires));
        n
    }

    fn sweep_if_grown(&mut self, now: Duration) {
        if self.entries.len() > 2 * self.len_after_sweep.max(64) {
            self.entries.retain(|_, (_, expires)| *expires > now);
            self.len_after_sweep = self.entries.len();
        }
    }
}

/// Serves the cache on this node until it is killed.
pub async fn serve(cost_us_max: u64) {
    let store: Arc<Mutex<Store>> = Arc::default();
    net::serve(PORT, move |request: CacheRequest| {
        let store = store.clone();
        async move {
            let cost = madsim::rand::thread_rng().gen_range(50..=cost_us_max.max(50));
            madsim::time::sleep(Duration::from_micros(cost)).await;
            let now = shopsim_sim::trace::virtual_now();
            let mut store = store.lock().expect("cache store");
            store.sweep_if_grown(now);
            match request {
                CacheRequest::Get(k) => CacheResponse::Value(store.live(&k, now).cloned()),
                CacheRequest::Set(k, v, ttl) => {
                    store
                        .entries
                        .insert(k, (v, now + Duration::from_millis(ttl)));
                    CacheResponse::Changed(true)
                }
                CacheRequest::Del(k) => {
                    let live = store.live(&k, now).is_some();
                    store.entries.remove(&k);
                    CacheResponse::Changed(live)
                }
                CacheRequest::Add(k, v, ttl) => {
                    let absent = store.live(&k, now).is_none();
                    if absent {
                        store
                            .entries
                            .insert(k, (v, now + Duration::from_millis(ttl)));
                    }
                    CacheResponse::Changed(absent)
                }
                CacheRequest::Incr(k) => CacheResponse::Count(store.incr(k, now)),
            }
        }
    })
    .await
}

/// A client of the cache node. A cache that does not answer is a miss (as Laravel's cache
/// facade degrades), never an error.
#[derive(Debug, Clone, Copy)]
pub struct CacheClient {
    /// The cache node.
    pub addr: SocketAddr,
}

const DEADLINE: Duration = Duration::from_millis(50);

impl CacheClient {
    /// The value stored under `key`, or `None` (also when the cache does not answer).
    async fn get_cached(&self, key: &str) -> Option<Cached> {
        let request = CacheRequest::Get(key.to_string());
        match net::call::<CacheRequest, CacheResponse>(self.addr, request, DEADLINE).await {
            RpcOutcome::Reply(CacheResponse::Value(v)) => v,
            _ => None,
        }
    }

    /// The value of `key`, or `None` (also when the cache does not answer).
    pub async fn get(&self, key: &str) -> Option<Arc<str>> {
        self.get_cached(key).await.map(|v| v.text())
    }

    /// The JSON document under `key`, or `None` (also when the value is no document, or the
    /// cache does not answer).
    pub async fn get_json(&self, key: &str) -> Option<Arc<Json>> {
        self.get_cached(key).await.and_then(|v| v.json())
    }

    /// Adds 1 to the counter `key`; best effort.
    pub async fn incr(&self, key: &str) {
        let _ = net::call::<CacheRequest, CacheResponse>(
            self.addr,
            CacheRequest::Incr(key.to_string()),
            DEADLINE,
        )
        .await;
    }

    /// Sets `key` for `ttl_ms` only if it is absent; true if this call set it. A cache that
    /// does not answer counts as set (the caller goes on, as `Cache::add` on a dead store
    /// would be treated by code that does not check).
    pub async fn add(&self, key: &str, value: &str, ttl_ms: u64) -> bool {
        let request = CacheRequest::Add(key.to_string(), Cached::Text(Arc::from(value)), ttl_ms);
        match net::call::<CacheRequest, CacheResponse>(self.addr, request, DEADLINE).await {
            RpcOutcome::Reply(CacheResponse::Changed(set)) => set,
            _ => true,
        }
    }

    /// Sets `key` for `ttl_ms`; best effort.
    pub async fn set(&self, key: &str, value: &str, ttl_ms: u64) {
        let request = CacheRequest::Set(key.to_string(), Cached::Text(Arc::from(value)), ttl_ms);
        let _ = net::call::<CacheRequest, CacheResponse>(self.addr, request, DEADLINE).await;
    }

    /// Sets `key` to the JSON document `value` for `ttl_ms`; best effort.
    pub async fn set_json(&self, key: &str, value: Arc<Json>, ttl_ms: u64) {
        let request = CacheRequest::Set(key.to_string(), Cached::Json(value), ttl_ms);
        let _ = net::call::<CacheRequest, CacheResponse>(self.addr, request, DEADLINE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_keys_are_absent_and_swept_once_the_store_doubles() {
        let ms = Duration::from_millis;
        let mut store = Store::default();
        let text = |s: &str| Cached::Text(s.into());
        store.entries.insert("a".into(), (text("1"), ms(10)));
        assert_eq!(
            store.live("a", ms(9)).map(Cached::text).as_deref(),
            Some("1")
        );
        assert_eq!(store.live("a", ms(10)), None);
        // An expired counter starts again from 1.
        assert_eq!(store.incr("a".into(), ms(10)), 1);
        assert_eq!(store.incr("a".into(), ms(11)), 2);
        for i in 0..200 {
            store.entries.insert(format!("k{i}"), (text("v"), ms(20)));
        }
        store.sweep_if_grown(ms(30));
        assert_eq!(store.entries.len(), 1, "only the live counter is left");
        assert_eq!(store.len_after_sweep, 1);
    }
}
