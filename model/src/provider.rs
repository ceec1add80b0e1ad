//! The payment provider: creates payments and delivers `payment.succeeded` webhooks at least
//! once — after a delay, sometimes twice (concurrently or later), retried with backoff when an
//! app node does not answer 2xx, in any order relative to the customer's return.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::rand::Rng;
use serde_json::json;
use shopsim_sim::net::{self, RpcOutcome};

use crate::http::{HttpRequest, HttpResponse};

/// The port the provider serves on.
pub const PORT: u16 = 8000;

/// A call to the provider.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderRequest {
    /// Create (and, in this model, capture) a payment.
    Create {
        /// The shop's payment id.
        payment_id: i64,
        /// The tenant.
        tenant: i64,
        /// Amount in cents.
        amount: i64,
    },
    /// The status of a payment.
    Status {
        /// The shop's payment id.
        payment_id: i64,
    },
}

/// The provider's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderResponse {
    /// Created; the webhook will follow.
    Created,
    /// The payment succeeded.
    Succeeded,
    /// Unknown payment.
    Unknown,
}

/// How the provider behaves.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The app nodes webhooks go to.
    pub apps: Vec<SocketAddr>,
    /// API latency, ms.
    pub latency_ms_min: u64,
    /// API latency, ms.
    pub latency_ms_max: u64,
    /// Longest delay before the first webhook delivery, ms.
    pub webhook_delay_ms_max: u64,
    /// Probability that a webhook is delivered twice.
    pub duplicate_probability: f64,
}

/// Serves the provider on this node until it is killed.
pub async fn serve(config: ProviderConfig) {
    let created: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
    let config = Arc::new(config);
    net::serve(PORT, move |request: ProviderRequest| {
        let created = created.clone();
        let config = config.clone();
        async move {
            let latency =
                madsim::rand::thread_rng().gen_range(config.latency_ms_min..=config.latency_ms_max);
            madsim::time::sleep(Duration::from_millis(latency)).await;
            match request {
                ProviderRequest::Create {
                    payment_id, tenant, ..
                } => {
                    created.lock().expect("provider state").insert(payment_id);
                    let copies =
                        if madsim::rand::thread_rng().gen_bool(config.duplicate_probability) {
                            2
                        } else {
                            1
                        };
                    for _ in 0..copies {
                        madsim::task::spawn_local(deliver(config.clone(), tenant, payment_id));
                    }
                    ProviderResponse::Created
                }
                ProviderRequest::Status { payment_id } => {
                    if created
                        .lock()
                        .expect("provider state")
                        .contains(&payment_id)
                    {
                        ProviderResponse::Succeeded
                    } else {
                        ProviderResponse::Unknown
                    }
                }
            }
        }
    })
    .await
}

/// Delivers one webhook until an app node answers 2xx (at least once).
async fn deliver(config: Arc<ProviderConfig>, tenant: i64, payment_id: i64) {
    let delay = madsim::rand::thread_rng().gen_range(0..=config.webhook_delay_ms_max);
    madsim::time::sleep(Duration::from_millis(delay)).await;
    let mut backoff_ms = 200;
    for _attempt in 0..12 {
        let app = config.apps[madsim::rand::thread_rng().gen_range(0..config.apps.len())];
        let request = HttpRequest {
            method: "POST".to_string(),
            path: "/api/v1/webhooks/payments".to_string(),
            tenant,
            body: json!({"event": "payment.succeeded", "payment_id": payment_id}),
            // A webhook is no operation of the history.
            request_id: None,
        };
        match net::call::<HttpRequest, HttpResponse>(app, request, Duration::from_secs(5)).await {
            RpcOutcome::Reply(r) if r.is_success() => return,
            _ => {}
        }
        madsim::time::sleep(Duration::from_millis(backoff_ms)).await;
        backoff_ms = (backoff_ms * 2).min(5_000);
    }
    tracing::warn!(payment_id, "webhook delivery gave up");
}
