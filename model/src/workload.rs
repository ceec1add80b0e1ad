//! The clients: shoppers (create a cart, add items, convert; payers then pay and come back
//! from the provider's page), catalog readers, admins racing an order lock, and adversaries
//! that send other tenants' ids to every endpoint. Each client is a node of its own, and
//! every request it sends is an operation of the history.
//!
//! Honest clients publish the ids they were given (carts, orders, payments) on an
//! [`IdBoard`]; adversaries pick their targets from it, so they name objects that exist and
//! belong to someone else, not only guesses.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::rand::Rng;
use serde_json::json;
use shopsim_sim::history::{OpOutcome, Recorder};
use shopsim_sim::net::{self, RpcOutcome};
use shopsim_sim::runner::{NodeRole, World};

use crate::config::ShopConfig;
use crate::http::{route, HttpRequest, HttpResponse};
use crate::shop::Addrs;

/// The kinds of object ids clients learn and adversaries reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IdKind {
    /// A cart (`/api/v1/cart/{id}`).
    Cart,
    /// An order (`/api/v1/orders/{id}`).
    Order,
    /// A payment (`/api/v1/payments/{id}`).
    Payment,
    /// A financial order (`/api/v1/financial-orders/{id}`).
    FinancialOrder,
    /// A product (`/api/v1/products/{id}`, and the `product_id` of an item).
    Product,
}

const ID_KINDS: [IdKind; 5] = [
    IdKind::Cart,
    IdKind::Order,
    IdKind::Payment,
    IdKind::FinancialOrder,
    IdKind::Product,
];

/// Ids seen by honest clients, with their tenant, in the order they were published.
#[derive(Debug, Default)]
pub struct IdBoard {
    ids: BTreeMap<IdKind, Vec<(i64, i64)>>,
}

/// The board shared by the clients of one run.
pub type SharedBoard = Arc<Mutex<IdBoard>>;

impl IdBoard {
    /// Publishes `id` of `kind`, owned by `tenant`.
    pub fn publish(&mut self, kind: IdKind, tenant: i64, id: i64) {
        self.ids.entry(kind).or_default().push((tenant, id));
    }

    /// A random id of `kind` that another tenant than `tenant` owns, if any was published.
    fn foreign(&self, kind: IdKind, tenant: i64) -> Option<i64> {
        let foreign: Vec<i64> = self
            .ids
            .get(&kind)?
            .iter()
            .filter(|(owner, _)| *owner != tenant)
            .map(|(_, id)| *id)
            .collect();
        (!foreign.is_empty())
            .then(|| foreign[madsim::rand::thread_rng().gen_range(0..foreign.len())])
    }
}

/// A client node (registered for network faults) and the HTTP client that runs on it.
pub fn client_node(
    world: &World,
    addrs: &Addrs,
    config: &ShopConfig,
    process: String,
    ip: IpAddr,
) -> (madsim::runtime::NodeHandle, Client) {
    let node = world
        .handle()
        .create_node()
        .name(process.clone())
        .ip(ip)
        .build();
    world.register(&node, &process, NodeRole::CLIENT);
    let client = Client::new(process, world.recorder(), addrs, config);
    (node, client)
}

/// The response fields a history operation keeps: status, body and the debug headers.
pub fn response_details(response: &HttpResponse) -> serde_json::Value {
    // Built from clones: `json!` would turn the body into a value again through `Serialize`,
    // a walk of the whole tree several times slower than copying it.
    let mut details = serde_json::Map::new();
    details.insert("status".into(), response.status.into());
    details.insert("body".into(), response.body.clone());
    details.insert("queries".into(), response.queries.into());
    details.insert("row_tenants".into(), response.row_tenants.clone().into());
    details.insert(
        "foreign_statement".into(),
        json!(response.foreign_statement),
    );
    serde_json::Value::Object(details)
}

/// [`response_details`] of a response nobody reads after the history: its body and row
/// tenants move into the details instead of being copied.
fn response_details_moved(response: HttpResponse) -> serde_json::Value {
    let mut details = serde_json::Map::new();
    details.insert("status".into(), response.status.into());
    details.insert("body".into(), response.body);
    details.insert("queries".into(), response.queries.into());
    details.insert("row_tenants".into(), response.row_tenants.into());
    details.insert(
        "foreign_statement".into(),
        json!(response.foreign_statement),
    );
    serde_json::Value::Object(details)
}

/// A shopper's or admin's HTTP client: picks an app node per request (the load balancer) and
/// records every request in the history.
pub struct Client {
    process: String,
    recorder: Recorder,
    apps: Vec<SocketAddr>,
    provider: SocketAddr,
    timeout: Duration,
}

/// The history kind of a customer paying on the provider's page.
pub const PAY_AT_PROVIDER: &str = "pay at provider";

impl Client {
    fn new(process: String, recorder: Recorder, addrs: &Addrs, config: &ShopConfig) -> Client {
        Client {
            process,
            recorder,
            apps: addrs.apps.clone(),
            provider: addrs.provider,
            timeout: Duration::from_millis(config.request_timeout_ms),
        }
    }

    /// Pays `payment_id` on the provider's page (a request to the provider, not the shop).
    pub async fn pay_at_provider(&self, payment_id: i64) {
        let op = self.recorder.invoke(
            &self.process,
            PAY_AT_PROVIDER,
            json!({"payment_id": payment_id}),
        );
        let request = crate::provider::ProviderRequest::Pay { payment_id };
        let outcome = match net::call::<_, crate::provider::ProviderResponse>(
            self.provider,
            request,
            self.timeout,
        )
        .await
        {
            RpcOutcome::Reply(crate::provider::ProviderResponse::Succeeded) => OpOutcome::Ok,
            RpcOutcome::Reply(_) => OpOutcome::Fail,
            RpcOutcome::Unknown => OpOutcome::Unknown,
        };
        self.recorder
            .complete(op, outcome, None, serde_json::Value::Null);
    }

    /// Sends a request and records it; `None` if the outcome is unknown.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        tenant: i64,
        body: serde_json::Value,
    ) -> Option<HttpResponse> {
        self.exchange(method, path, tenant, body, true).await
    }

    /// Sends a request and records it, for a caller that reads nothing of the response: the
    /// response moves into the history instead of being copied there.
    pub async fn send(&self, method: &str, path: &str, tenant: i64, body: serde_json::Value) {
        let kept = self.exchange(method, path, tenant, body, false).await;
        assert!(kept.is_none());
    }

    /// Sends a request and records it; returns the response if `keep` and it arrived.
    async fn exchange(
        &self,
        method: &str,
        path: &str,
        tenant: i64,
        body: serde_json::Value,
        keep: bool,
    ) -> Option<HttpResponse> {
        let kind = route(method, path);
        let op = self.recorder.invoke(
            &self.process,
            &kind,
            json!({"path": path, "tenant": tenant, "body": body}),
        );
        let app = self.apps[madsim::rand::thread_rng().gen_range(0..self.apps.len())];
        let request = HttpRequest {
            method: method.to_string(),
            path: path.to_string(),
            tenant,
            body,
            // The history stays as it was (it is hashed): which app node served the request
            // is told by the transcript, whose statements carry the node's name and this id.
            request_id: Some(op as u64),
        };
        match net::call::<HttpRequest, HttpResponse>(app, request, self.timeout).await {
            RpcOutcome::Reply(response) => {
                let outcome = if response.is_success() {
                    OpOutcome::Ok
                } else {
                    OpOutcome::Fail
                };
                let status = Some(response.status);
                if keep {
                    let details = response_details(&response);
                    self.recorder.complete(op, outcome, status, details);
                    Some(response)
                } else {
                    let details = response_details_moved(response);
                    self.recorder.complete(op, outcome, status, details);
                    None
                }
            }
            RpcOutcome::Unknown => {
                self.recorder
                    .complete(op, OpOutcome::Unknown, None, serde_json::Value::Null);
                None
            }
        }
    }
}

/// A client arrives at a random moment of the arrival window, as a customer of a random
/// tenant; returns the tenant.
pub async fn arrive(config: &ShopConfig) -> i64 {
    let start = madsim::rand::thread_rng().gen_range(0..=config.arrival_window_ms);
    madsim::time::sleep(Duration::from_millis(start)).await;
    madsim::rand::thread_rng().gen_range(1..=i64::from(config.tenants))
}

/// The id of the first product of `tenant` (products of a tenant are consecutive).
fn product_of(config: &ShopConfig, tenant: i64, n: i64) -> i64 {
    (tenant - 1) * i64::from(config.products_per_tenant) + n
}

/// A catalog reader: product pages and product details of its tenant, with think time.
pub async fn read_flow(client: &Client, config: &ShopConfig, tenant: i64) {
    let products = i64::from(config.products_per_tenant);
    let pages = (products + config.page_size - 1) / config.page_size;
    for _ in 0..config.reads_per_reader {
        if madsim::rand::thread_rng().gen_bool(0.5) {
            let page = madsim::rand::thread_rng().gen_range(1..=pages.max(1));
            client
                .send(
                    "GET",
                    "/api/v1/products",
                    tenant,
                    json!({"page": page, "per_page": config.page_size}),
                )
                .await;
        } else {
            let product = product_of(
                config,
                tenant,
                madsim::rand::thread_rng().gen_range(1..=products),
            );
            client
                .send(
                    "GET",
                    &format!("/api/v1/products/{product}"),
                    tenant,
                    json!({}),
                )
                .await;
        }
        let think = madsim::rand::thread_rng().gen_range(0..=20);
        madsim::time::sleep(Duration::from_millis(think)).await;
    }
}

fn id_in(response: &Option<HttpResponse>, field: &str) -> Option<i64> {
    response.as_ref()?.body.get(field)?.as_i64()
}

/// The body of an add-item request: a product of `tenant`, then a quantity, drawn in that
/// order.
fn draw_item(config: &ShopConfig, tenant: i64) -> serde_json::Value {
    let products = i64::from(config.products_per_tenant);
    let product = product_of(
        config,
        tenant,
        madsim::rand::thread_rng().gen_range(1..=products),
    );
    let quantity = madsim::rand::thread_rng().gen_range(1..=config.quantity_max);
    json!({"product_id": product, "quantity": quantity})
}

/// Sends `path` once or, with `double`, twice (a double click: the second up to
/// `gap_ms_max` later, drawn only if there is a gap, so a double click at once draws what it
/// always drew); the first answer with a body field `field` wins.
async fn maybe_twice(
    client: &Client,
    path: &str,
    tenant: i64,
    double: bool,
    gap_ms_max: u64,
    field: &str,
) -> Option<HttpResponse> {
    if !double {
        return client.request("POST", path, tenant, json!({})).await;
    }
    let gap_ms = match gap_ms_max {
        0 => 0,
        max => madsim::rand::thread_rng().gen_range(0..=max),
    };
    let second = async {
        if gap_ms > 0 {
            madsim::time::sleep(Duration::from_millis(gap_ms)).await;
        }
        client.request("POST", path, tenant, json!({})).await
    };
    let (a, b) = madsim::export::futures::future::join(
        client.request("POST", path, tenant, json!({})),
        second,
    )
    .await;
    if id_in(&a, field).is_some() {
        a
    } else {
        b.or(a)
    }
}

/// A shopper: cart, items, convert; a payer then pays for the order and comes back from the
/// provider's page (racing the webhook).
pub async fn checkout_flow(
    client: &Client,
    config: &ShopConfig,
    board: &SharedBoard,
    tenant: i64,
    pays: bool,
    abandon_probability: f64,
) {
    let cart = client
        .request("POST", "/api/v1/cart", tenant, json!({}))
        .await;
    let Some(cart_id) = id_in(&cart, "cart_id") else {
        return;
    };
    board
        .lock()
        .expect("id board")
        .publish(IdKind::Cart, tenant, cart_id);
    let items = format!("/api/v1/cart/{cart_id}/items");
    for _ in 0..config.items_per_cart {
        let item = draw_item(config, tenant);
        client.request("POST", &items, tenant, item).await;
    }
    let think = madsim::rand::thread_rng()
        .gen_range(config.convert_delay_ms_min..=config.convert_delay_ms_max);
    madsim::time::sleep(Duration::from_millis(think)).await;
    let convert = format!("/api/v1/cart/{cart_id}/convert");
    let double = madsim::rand::thread_rng().gen_bool(config.double_convert_probability);
    let gap = config.double_convert_gap_ms_max;
    // A second tab adds one more item while the convert runs: drawn only when the scenario
    // asks for it, so a scenario without it draws what it always drew.
    let late_add = config.add_during_convert_probability > 0.0
        && madsim::rand::thread_rng().gen_bool(config.add_during_convert_probability);
    let order = if late_add {
        let add = client.request("POST", &items, tenant, draw_item(config, tenant));
        let convert = maybe_twice(client, &convert, tenant, double, gap, "order_id");
        madsim::export::futures::future::join(convert, add).await.0
    } else {
        maybe_twice(client, &convert, tenant, double, gap, "order_id").await
    };
    let Some(order_id) = id_in(&order, "order_id") else {
        return;
    };
    board
        .lock()
        .expect("id board")
        .publish(IdKind::Order, tenant, order_id);
    if !pays {
        return;
    }
    let pay = format!("/api/v1/orders/{order_id}/payments");
    let mut payment = None;
    for _ in 0..=config.payer_retries {
        let double = madsim::rand::thread_rng().gen_bool(config.pay_double_click_probability);
        payment = maybe_twice(client, &pay, tenant, double, 0, "payment_id").await;
        // Tried again only after no answer or a server error, as a customer reloads the page.
        if payment.as_ref().is_some_and(|p| p.status < 500) {
            break;
        }
        madsim::time::sleep(Duration::from_millis(500)).await;
    }
    let Some(payment_id) = id_in(&payment, "payment_id") else {
        return;
    };
    board
        .lock()
        .expect("id board")
        .publish(IdKind::Payment, tenant, payment_id);
    // On the provider's page the customer pays, or leaves without paying.
    if !madsim::rand::thread_rng().gen_bool(abandon_probability) {
        client.pay_at_provider(payment_id).await;
    }
    // The customer comes back from the provider's page, racing the webhook.
    let back = madsim::rand::thread_rng().gen_range(0..=config.webhook_delay_ms_max + 200);
    madsim::time::sleep(Duration::from_millis(back)).await;
    client
        .request(
            "GET",
            &format!("/api/v1/payments/{payment_id}/return"),
            tenant,
            json!({}),
        )
        .await;
}

/// An admin: locks financial order `fo_id` (`m < lockers`: admins 0..lockers race to lock
/// it) or mutates its total (the others, numbered from 1 in their totals).
pub async fn admin_flow(
    client: &Client,
    config: &ShopConfig,
    fo_id: i64,
    tenant: i64,
    m: u32,
    lockers: u32,
) {
    let start = madsim::rand::thread_rng().gen_range(0..=config.arrival_window_ms);
    madsim::time::sleep(Duration::from_millis(start)).await;
    let path = format!("/api/v1/financial-orders/{fo_id}");
    if m < lockers {
        client
            .request("POST", &format!("{path}/lock"), tenant, json!({}))
            .await;
    } else {
        let mutation = i64::from(m - lockers + 1);
        client
            .request("PATCH", &path, tenant, json!({"total": 10_000 + mutation}))
            .await;
    }
}

/// An adversary of `tenant`: every request names an object of another tenant (one an honest
/// client published, or a guess next to the ids it has seen), on every endpoint that takes an
/// id. A correct shop answers 404 and touches none of the other tenant's rows.
pub async fn adversary_flow(
    client: &Client,
    config: &ShopConfig,
    board: &SharedBoard,
    tenant: i64,
) {
    // Its own cart, to try putting other tenants' products in.
    let own_cart = id_in(
        &client
            .request("POST", "/api/v1/cart", tenant, json!({}))
            .await,
        "cart_id",
    );
    for _ in 0..config.adversary_requests {
        let think = madsim::rand::thread_rng().gen_range(10..=60);
        madsim::time::sleep(Duration::from_millis(think)).await;
        let kind = ID_KINDS[madsim::rand::thread_rng().gen_range(0..ID_KINDS.len())];
        let published = board.lock().expect("id board").foreign(kind, tenant);
        let Some(id) = published else {
            continue;
        };
        let own_product = product_of(config, tenant, 1);
        let action = madsim::rand::thread_rng().gen_range(0..2);
        let (method, path, body) = match (kind, action) {
            (IdKind::Cart, 0) => (
                "POST",
                format!("/api/v1/cart/{id}/items"),
                json!({"product_id": own_product, "quantity": 1}),
            ),
            (IdKind::Cart, _) => ("POST", format!("/api/v1/cart/{id}/convert"), json!({})),
            (IdKind::Order, _) => ("POST", format!("/api/v1/orders/{id}/payments"), json!({})),
            (IdKind::Payment, 0) => ("GET", format!("/api/v1/payments/{id}/return"), json!({})),
            (IdKind::Payment, _) => (
                "POST",
                "/api/v1/webhooks/payments".to_string(),
                json!({"event": "payment.succeeded", "payment_id": id}),
            ),
            (IdKind::FinancialOrder, 0) => (
                "POST",
                format!("/api/v1/financial-orders/{id}/lock"),
                json!({}),
            ),
            (IdKind::FinancialOrder, _) => (
                "PATCH",
                format!("/api/v1/financial-orders/{id}"),
                json!({"total": 1}),
            ),
            (IdKind::Product, 0) => ("GET", format!("/api/v1/products/{id}"), json!({})),
            (IdKind::Product, _) => match own_cart {
                Some(cart) => (
                    "POST",
                    format!("/api/v1/cart/{cart}/items"),
                    json!({"product_id": id, "quantity": 1}),
                ),
                None => ("GET", format!("/api/v1/products/{id}"), json!({})),
            },
        };
        client.send(method, &path, tenant, body).await;
    }
}

/// A probe of progress after the faults heal.
#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// One checkout (paying if the workload has payers).
    Checkout,
    /// One catalog reader.
    Read,
    /// The lock of this financial order, sent again.
    Lock(i64),
}

/// Runs one probe, as a client of a random tenant (a lock as its order's tenant).
pub async fn probe_flow(client: &Client, config: &ShopConfig, board: &SharedBoard, probe: Probe) {
    let tenant = madsim::rand::thread_rng().gen_range(1..=i64::from(config.tenants));
    match probe {
        // The probe always pays: it measures the shop, not the customer.
        Probe::Checkout => {
            checkout_flow(client, config, board, tenant, config.payers > 0, 0.0).await
        }
        Probe::Read => read_flow(client, config, tenant).await,
        Probe::Lock(fo_id) => {
            let tenant = 1 + (fo_id - 1) % i64::from(config.tenants);
            let path = format!("/api/v1/financial-orders/{fo_id}/lock");
            client.send("POST", &path, tenant, json!({})).await;
        }
    }
}

/// Publishes the objects the seed data creates: every product, and every lockable financial
/// order, with their tenants.
pub fn publish_seed_objects(board: &SharedBoard, config: &ShopConfig) {
    let mut board = board.lock().expect("id board");
    for tenant in 1..=i64::from(config.tenants) {
        for n in 1..=i64::from(config.products_per_tenant) {
            board.publish(IdKind::Product, tenant, product_of(config, tenant, n));
        }
    }
    for i in 0..i64::from(config.lockable_orders) {
        board.publish(
            IdKind::FinancialOrder,
            1 + i % i64::from(config.tenants),
            i + 1,
        );
    }
}
