//! The payment provider: the shop creates a checkout session for a payment; the customer then
//! pays on the provider's page (or abandons it); a payment is captured when the customer pays,
//! and the provider delivers `payment.succeeded` webhooks at least once — after a delay,
//! sometimes twice (concurrently or later), retried with backoff until an app node answers
//! 2xx, in any order relative to the customer's return to the shop.
//!
//! The provider is another company's system, so its own records are the reference the shop is
//! judged against: [`ProviderLedger`] holds every session and every capture (one per shop
//! payment id: the id is the idempotency key of the create call, as with Stripe's
//! `Idempotency-Key`, so a retried create opens one session and charges once) and the
//! deliveries still being retried; every webhook delivery is an operation of the history
//! (process `provider`), with its answer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use shopsim_sim::history::{OpOutcome, Recorder};
use shopsim_sim::net::{self, RpcOutcome};

use crate::http::{route, HttpRequest, HttpResponse};

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
    /// The customer pays on the provider's page (sent by the customer, not the shop).
    Pay {
        /// The shop's payment id.
        payment_id: i64,
    },
}

/// The provider's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderResponse {
    /// The checkout session exists; the customer has not paid (yet).
    Created,
    /// The payment was captured.
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

/// A payment the provider captured: money taken from the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capture {
    /// The shop's payment id (the create call's idempotency key).
    pub payment_id: i64,
    /// The tenant (merchant account).
    pub tenant: i64,
    /// Amount in cents.
    pub amount: i64,
    /// When, µs of virtual time.
    pub at_us: u64,
}

/// The provider's own records, kept outside its node so the checks can read them after the run.
#[derive(Debug, Default)]
pub struct ProviderLedger {
    /// Checkout sessions by shop payment id: (tenant, amount).
    pub sessions: std::collections::BTreeMap<i64, (i64, i64)>,
    /// Every capture, in order.
    pub captures: Vec<Capture>,
    /// Webhook deliveries still being retried.
    pub deliveries_pending: u64,
}

/// The provider's records, shared by its node and the run.
pub type SharedLedger = Arc<Mutex<ProviderLedger>>;

/// How often the provider tries one webhook delivery before it gives up (about 4 minutes at a
/// 5 s cap; a real provider retries for days, the run ends long before).
const DELIVERY_ATTEMPTS_MAX: u32 = 50;

/// Serves the provider on this node until it is killed.
pub async fn serve(config: ProviderConfig, ledger: SharedLedger, recorder: Recorder) {
    let config = Arc::new(config);
    net::serve(PORT, move |request: ProviderRequest| {
        let ledger = ledger.clone();
        let config = config.clone();
        let recorder = recorder.clone();
        async move {
            let latency =
                madsim::rand::thread_rng().gen_range(config.latency_ms_min..=config.latency_ms_max);
            madsim::time::sleep(Duration::from_millis(latency)).await;
            match request {
                ProviderRequest::Create {
                    payment_id,
                    tenant,
                    amount,
                } => {
                    // A retried create with the same idempotency key opens no second session.
                    ledger
                        .lock()
                        .expect("provider ledger")
                        .sessions
                        .entry(payment_id)
                        .or_insert((tenant, amount));
                    ProviderResponse::Created
                }
                ProviderRequest::Pay { payment_id } => {
                    let captured = {
                        let mut ledger = ledger.lock().expect("provider ledger");
                        let Some(&(tenant, amount)) = ledger.sessions.get(&payment_id) else {
                            return ProviderResponse::Unknown;
                        };
                        if ledger.captures.iter().any(|c| c.payment_id == payment_id) {
                            // Paid already (a reload of the provider's page): no second charge.
                            return ProviderResponse::Succeeded;
                        }
                        ledger.captures.push(Capture {
                            payment_id,
                            tenant,
                            amount,
                            at_us: shopsim_sim::trace::virtual_now().as_micros() as u64,
                        });
                        tenant
                    };
                    let tenant = captured;
                    let copies =
                        if madsim::rand::thread_rng().gen_bool(config.duplicate_probability) {
                            2
                        } else {
                            1
                        };
                    for _ in 0..copies {
                        ledger.lock().expect("provider ledger").deliveries_pending += 1;
                        madsim::task::spawn_local(deliver(
                            config.clone(),
                            ledger.clone(),
                            recorder.clone(),
                            tenant,
                            payment_id,
                        ));
                    }
                    ProviderResponse::Succeeded
                }
                ProviderRequest::Status { payment_id } => {
                    let captured = ledger
                        .lock()
                        .expect("provider ledger")
                        .captures
                        .iter()
                        .any(|c| c.payment_id == payment_id);
                    let session = ledger
                        .lock()
                        .expect("provider ledger")
                        .sessions
                        .contains_key(&payment_id);
                    if captured {
                        ProviderResponse::Succeeded
                    } else if session {
                        ProviderResponse::Created
                    } else {
                        ProviderResponse::Unknown
                    }
                }
            }
        }
    })
    .await
}

/// Delivers one webhook until an app node answers 2xx (at least once), recording each attempt
/// in the history.
async fn deliver(
    config: Arc<ProviderConfig>,
    ledger: SharedLedger,
    recorder: Recorder,
    tenant: i64,
    payment_id: i64,
) {
    let delay = madsim::rand::thread_rng().gen_range(0..=config.webhook_delay_ms_max);
    madsim::time::sleep(Duration::from_millis(delay)).await;
    let mut backoff_ms = 200;
    let path = "/api/v1/webhooks/payments";
    for attempt in 1..=DELIVERY_ATTEMPTS_MAX {
        let app = config.apps[madsim::rand::thread_rng().gen_range(0..config.apps.len())];
        let body = json!({"event": "payment.succeeded", "payment_id": payment_id});
        let op = recorder.invoke(
            "provider",
            &route("POST", path),
            json!({"path": path, "tenant": tenant, "body": body, "attempt": attempt}),
        );
        let request = HttpRequest {
            method: "POST".to_string(),
            path: path.to_string(),
            tenant,
            body,
            // The delivery is an operation of the history: its statements are tagged with it.
            request_id: Some(op as u64),
        };
        let delivered = match net::call::<HttpRequest, HttpResponse>(
            app,
            request,
            Duration::from_secs(5),
        )
        .await
        {
            RpcOutcome::Reply(r) => {
                let ok = r.is_success();
                let outcome = if ok { OpOutcome::Ok } else { OpOutcome::Fail };
                recorder.complete(
                    op,
                    outcome,
                    Some(r.status),
                    crate::workload::response_details(&r),
                );
                ok
            }
            RpcOutcome::Unknown => {
                recorder.complete(op, OpOutcome::Unknown, None, serde_json::Value::Null);
                false
            }
        };
        if delivered {
            ledger.lock().expect("provider ledger").deliveries_pending -= 1;
            return;
        }
        madsim::time::sleep(Duration::from_millis(backoff_ms)).await;
        backoff_ms = (backoff_ms * 2).min(5_000);
    }
    tracing::warn!(payment_id, "webhook delivery gave up");
}
