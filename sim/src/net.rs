//! Request/response RPC between simulated nodes over madsim's network, with deadlines.
//!
//! A request travels as one datagram and its reply as another, so packet loss, clogged links
//! and partitions hit either. A call whose reply does not arrive by its deadline ends as
//! [`RpcOutcome::Unknown`]: the server may or may not have acted on it. It is never reported
//! as a failure, because a checker that took it for one would be wrong whenever it succeeded.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use madsim::net::Endpoint;
use madsim::rand::Rng;

use crate::fault::buggify;

/// The datagram tag requests are sent with; replies use the caller's random tag.
const TAG_REQUEST: u64 = 1;

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
    Resp: Send + Sync + 'static,
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
    loop {
        let Ok((payload, from)) = endpoint.recv_from_raw(TAG_REQUEST).await else {
            return;
        };
        let Ok(request) = payload.downcast::<(u64, Req)>() else {
            tracing::warn!(%from, "rpc: request of an unexpected type dropped");
            continue;
        };
        let (reply_tag, request) = *request;
        let reply = handler(request);
        let endpoint = endpoint.clone();
        madsim::task::spawn_local(async move {
            let response = reply.await;
            if buggify("rpc.delay_reply", 0.02) {
                let delay_ms = madsim::rand::thread_rng().gen_range(10..2_000);
                madsim::time::sleep(Duration::from_millis(delay_ms)).await;
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
    Req: Send + Sync + 'static,
    Resp: Send + Sync + 'static,
{
    assert!(deadline > Duration::ZERO);
    let started = madsim::time::Instant::now();
    let Ok(endpoint) = Endpoint::bind("0.0.0.0:0").await else {
        return RpcOutcome::Unknown;
    };
    let reply_tag: u64 = madsim::rand::thread_rng().gen_range(2..u64::MAX);
    if endpoint
        .send_to_raw(addr, TAG_REQUEST, Box::new((reply_tag, request)))
        .await
        .is_err()
    {
        // Nothing was sent, but a caller cannot always tell; stay on the safe side.
        return RpcOutcome::Unknown;
    }
    let remaining = deadline.saturating_sub(started.elapsed());
    match madsim::time::timeout(remaining, endpoint.recv_from_raw(reply_tag)).await {
        Ok(Ok((payload, _))) => match payload.downcast::<Resp>() {
            Ok(response) => RpcOutcome::Reply(*response),
            Err(_) => RpcOutcome::Unknown,
        },
        _ => RpcOutcome::Unknown,
    }
}
