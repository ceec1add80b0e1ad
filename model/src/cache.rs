//! The cache node (Redis-like): get, set with TTL, delete, atomic add-if-absent, increment.
//! Its contents live in the node's memory: a crash empties it, as a Redis without persistence.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::rand::Rng;
use shopsim_sim::net::{self, RpcOutcome};

/// The port the cache serves on.
pub const PORT: u16 = 6379;

/// A cache command.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheRequest {
    /// Value of a key.
    Get(String),
    /// Sets a key for `ttl_ms`.
    Set(String, String, u64),
    /// Deletes a key.
    Del(String),
    /// Sets a key only if absent; true if it was set.
    Add(String, String, u64),
    /// Adds 1 and returns the new value.
    Incr(String),
}

/// A cache reply.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheResponse {
    /// A value, if present.
    Value(Option<String>),
    /// Whether an add or delete changed something.
    Changed(bool),
    /// A counter.
    Count(i64),
}

/// Serves the cache on this node until it is killed.
pub async fn serve(cost_us_max: u64) {
    let store: Arc<Mutex<BTreeMap<String, (String, Duration)>>> = Arc::default();
    net::serve(PORT, move |request: CacheRequest| {
        let store = store.clone();
        async move {
            let cost = madsim::rand::thread_rng().gen_range(50..=cost_us_max.max(50));
            madsim::time::sleep(Duration::from_micros(cost)).await;
            let now = shopsim_sim::trace::virtual_now();
            let mut store = store.lock().expect("cache store");
            store.retain(|_, (_, expires)| *expires > now);
            match request {
                CacheRequest::Get(k) => CacheResponse::Value(store.get(&k).map(|(v, _)| v.clone())),
                CacheRequest::Set(k, v, ttl) => {
                    store.insert(k, (v, now + Duration::from_millis(ttl)));
                    CacheResponse::Changed(true)
                }
                CacheRequest::Del(k) => CacheResponse::Changed(store.remove(&k).is_some()),
                CacheRequest::Add(k, v, ttl) => {
                    let absent = !store.contains_key(&k);
                    if absent {
                        store.insert(k, (v, now + Duration::from_millis(ttl)));
                    }
                    CacheResponse::Changed(absent)
                }
                CacheRequest::Incr(k) => {
                    let entry = store
                        .entry(k)
                        .or_insert(("0".to_string(), now + Duration::from_secs(3600)));
                    let n = entry.0.parse::<i64>().unwrap_or(0) + 1;
                    entry.0 = n.to_string();
                    CacheResponse::Count(n)
                }
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
    /// The value of `key`, or `None` (also when the cache does not answer).
    pub async fn get(&self, key: &str) -> Option<String> {
        match net::call::<CacheRequest, CacheResponse>(
            self.addr,
            CacheRequest::Get(key.to_string()),
            DEADLINE,
        )
        .await
        {
            RpcOutcome::Reply(CacheResponse::Value(v)) => v,
            _ => None,
        }
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

    /// Sets `key` for `ttl_ms`; best effort.
    pub async fn set(&self, key: &str, value: &str, ttl_ms: u64) {
        let request = CacheRequest::Set(key.to_string(), value.to_string(), ttl_ms);
        let _ = net::call::<CacheRequest, CacheResponse>(self.addr, request, DEADLINE).await;
    }
}
