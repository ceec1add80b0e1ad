//! Request/response RPC between simulated nodes over madsim's network, with deadlines.
//!
//! A request travels as one datagram and its reply as another, so packet loss, clogged links
//! and partitions hit either. Like HTTP over TCP, a lost datagram is retransmitted (the first
//! retransmission after [`RETRANSMIT_AFTER`], then doubling) and the server answers a
//! retransmitted request from its reply cache instead of serving it twice. A call whose reply
//! does not arrive by its deadline ends as [`RpcOutcome::Unknown`]: the server may or may not
//! have acted on it. It is never reported as a failure, because a checker that took it for one
//! would be wrong whenever it succeeded.
//!
//! A request carries its schedule-steering lane ([`crate::steering`]) like a tracing header,
//! and the caller passes a steering delay point before it sends and after the reply arrives
//! (outside the deadline, so steering never makes a call time out).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::net::Endpoint;
use madsim::rand::Rng;

use crate::fault::buggify;
use crate::steering::{self, Point};

/// The datagram tag requests are sent with; replies use the caller's random tag.
const TAG_REQUEST: u64 = 1;

/// The first retransmission timeout (Linux TCP's minimum RTO).
pub const RETRANSMIT_AFTER: Duration = Duration::from_millis(200);

/// (client, reply tag) -> the reply once sent; `None` while the request is being served.
type ReplyCache<Resp> = Arc<Mutex<BTreeMap<(SocketAddr, u64), Option<Resp>>>>;

/// How many recent requests a server remembers to answer retransmissions.
const REPLY_CACHE_ENTRIES: usize = 4096;

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcOutcome<T> {
    /// The reply.
    Reply(T),
    /// No reply by the deadline: the request may or may not have been served.
    Unknown,
}

/// Serves requests of type `Req` on `port` of the current node, one task per request, until
/// the node is killed.
pub async fn serve<Req, Resp, F, Fut>(port: u16, handler: F)
where
    Req: Send + Sync + 'static,
    Resp: Clone + Send + Sync + 'static,
    F: Fn(Req) -> Fut + 'static,
    Fut: Future<Output = Resp> + 'static,
{
    let endpoint = match Endpoint::bind(("0.0.0.0", port)).await {
        Ok(endpoint) => endpoint,
        Err(_) => {
            // A restart without a kill keeps the old incarnation's sockets bound.
            madsim::net::NetSim::current().reset_node(madsim::plugin::node());
            Endpoint::bind(("0.0.0.0", port))
                .await
                .expect("the port is free after a reset")
        }
    };
    let endpoint = Arc::new(endpoint);
    let replies: ReplyCache<Resp> = Arc::default();
    let mut order: VecDeque<(SocketAddr, u64)> = VecDeque::new();
    loop {
        let Ok((payload, from)) = endpoint.recv_from_raw(TAG_REQUEST).await else {
            return;
        };
        let Ok(request) = payload.downcast::<(u64, u64, Req)>() else {
            tracing::warn!(%from, "rpc: request of an unexpected type dropped");
            continue;
        };
        let (reply_tag, lane, request) = *request;
        let key = (from, reply_tag);
        {
            let mut cache = replies.lock().expect("reply cache");
            match cache.get(&key) {
                Some(Some(reply)) => {
                    // A retransmission after the reply was lost: send it again.
                    let (endpoint, reply) = (endpoint.clone(), reply.clone());
                    madsim::task::spawn_local(async move {
                        let _ = endpoint.send_to_raw(from, reply_tag, Box::new(reply)).await;
                    });
                    continue;
                }
                // Still being served: the reply will go out when it is ready.
                Some(None) => continue,
                None => {
                    cache.insert(key, None);
                    order.push_back(key);
                    while order.len() > REPLY_CACHE_ENTRIES {
                        let old = order.pop_front().expect("non-empty");
                        cache.remove(&old);
                    }
                }
            }
        }
        let reply = steering::scoped(lane, handler(request));
        let endpoint = endpoint.clone();
        let replies = replies.clone();
        madsim::task::spawn_local(async move {
            let response = reply.await;
            if buggify("rpc.delay_reply", 0.02) {
                let delay_ms = madsim::rand::thread_rng().gen_range(10..2_000);
                madsim::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            if let Some(slot) = replies.lock().expect("reply cache").get_mut(&key) {
                *slot = Some(response.clone());
            }
            let _ = endpoint
                .send_to_raw(from, reply_tag, Box::new(response))
                .await;
        });
    }
}

/// Calls the server at `addr`; `Unknown` if no reply arrives within `deadline`.
pub async fn call<Req, Resp>(addr: SocketAddr, request: Req, deadline: Duration) -> RpcOutcome<Resp>
where
    Req: Clone + Send + Sync + 'static,
    Resp: Send + Sync + 'static,
{
    assert!(deadline > Duration::ZERO);
    let lane = steering::call_lane();
    steering::call_point(lane.id(), Point::RpcSend).await;
    let started = madsim::time::Instant::now();
    let Ok(endpoint) = Endpoint::bind("0.0.0.0:0").await else {
        return RpcOutcome::Unknown;
    };
    let reply_tag: u64 = madsim::rand::thread_rng().gen_range(2..u64::MAX);
    let mut retransmit_after = RETRANSMIT_AFTER;
    loop {
        let remaining = deadline.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return RpcOutcome::Unknown;
        }
        // The same tag every time: the server serves a request once.
        let payload = Box::new((reply_tag, lane.id(), request.clone()));
        if endpoint
            .send_to_raw(addr, TAG_REQUEST, payload)
            .await
            .is_err()
        {
            // Nothing was sent, but a caller cannot always tell; stay on the safe side.
            return RpcOutcome::Unknown;
        }
        let wait = retransmit_after.min(remaining);
        match madsim::time::timeout(wait, endpoint.recv_from_raw(reply_tag)).await {
            Ok(Ok((payload, _))) => {
                let outcome = match payload.downcast::<Resp>() {
                    Ok(response) => RpcOutcome::Reply(*response),
                    Err(_) => RpcOutcome::Unknown,
                };
                steering::call_point(lane.id(), Point::RpcReceive).await;
                return outcome;
            }
            Ok(Err(_)) => return RpcOutcome::Unknown,
            Err(_) => retransmit_after *= 2,
        }
    }
}
