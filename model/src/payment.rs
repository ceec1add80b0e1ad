//! Payments and the ledger: `POST /api/v1/orders/{id}/payments` creates a payment with the
//! provider; the provider's `payment.succeeded` webhook (`POST /api/v1/webhooks/payments`,
//! delivered at least once) and the customer's return URL (`GET /api/v1/payments/{id}/return`)
//! both confirm it.
//!
//! Confirmation is exactly once: in one transaction that locks the payment, the idempotency
//! key `payment_confirmed:{paymentId}` is inserted (a primary key, so a second insert is a
//! no-op), and only the transaction that inserted it marks the payment paid, updates the
//! financial order, writes the one ledger transaction and queues the receipt. The cache holds
//! the key too, set only after the commit, as a fast path for duplicates.

use std::time::Duration;

use serde_json::json;
use shopsim_sim::db::Value;
use shopsim_sim::net::{self, RpcOutcome};
use shopsim_sim::sometimes;

use crate::app::{insert_id, int_at, q, text_at, App, AppResult};
use crate::http::HttpResponse;
use crate::provider::{ProviderRequest, ProviderResponse};
use crate::windows;

/// `POST /api/v1/orders/{id}/payments`.
pub async fn create(app: &App, tenant: i64, order_id: i64) -> AppResult<HttpResponse> {
    let engine = app.engine;
    let payment = {
        let mut conn = app.pool.acquire().await?;
        let order = q(
            engine,
            &mut conn,
            "select total from orders where id = ? and tenant_id = ?",
            &[Value::Int(order_id), Value::Int(tenant)],
        )
        .await?;
        let Some(amount) = int_at(&order, 0, 0) else {
            return Ok(HttpResponse::new(404, json!({"error": "order not found"})));
        };
        let id = insert_id(
            engine,
            &mut conn,
            "insert into payments (tenant_id, order_id, amount, status) values (?, ?, ?, 'pending')",
            &[Value::Int(tenant), Value::Int(order_id), Value::Int(amount)],
        )
        .await?;
        (id, amount)
    };
    let request = ProviderRequest::Create {
        payment_id: payment.0,
        tenant,
        amount: payment.1,
    };
    let deadline = Duration::from_millis(app.config.provider_timeout_ms);
    match net::call::<ProviderRequest, ProviderResponse>(app.provider, request, deadline).await {
        RpcOutcome::Reply(_) => Ok(HttpResponse::new(
            201,
            json!({"payment_id": payment.0, "amount": payment.1}),
        )),
        RpcOutcome::Unknown => Ok(HttpResponse::new(
            504,
            json!({"error": "payment provider timeout", "payment_id": payment.0}),
        )),
    }
}

/// `POST /api/v1/webhooks/payments` with `payment.succeeded`.
pub async fn webhook(app: &App, tenant: i64, payment_id: i64) -> AppResult<HttpResponse> {
    let confirmed = confirm(app, tenant, payment_id).await?;
    Ok(confirmed)
}

/// `GET /api/v1/payments/{id}/return`: asks the provider, confirms if it succeeded.
pub async fn return_url(app: &App, tenant: i64, payment_id: i64) -> AppResult<HttpResponse> {
    let deadline = Duration::from_millis(app.config.provider_timeout_ms);
    let status = net::call::<ProviderRequest, ProviderResponse>(
        app.provider,
        ProviderRequest::Status { payment_id },
        deadline,
    )
    .await;
    match status {
        RpcOutcome::Reply(ProviderResponse::Succeeded) => confirm(app, tenant, payment_id).await,
        RpcOutcome::Reply(_) => Ok(HttpResponse::new(200, json!({"status": "pending"}))),
        RpcOutcome::Unknown => Ok(HttpResponse::new(
            504,
            json!({"error": "payment provider timeout"}),
        )),
    }
}

/// Confirms a succeeded payment exactly once.
pub async fn confirm(app: &App, tenant: i64, payment_id: i64) -> AppResult<HttpResponse> {
    let key = format!("payment_confirmed:{payment_id}");
    let cache_key = format!("tenant:{tenant}:{key}");
    if app.cache().get(&cache_key).await.is_some() {
        return Ok(HttpResponse::new(
            200,
            json!({"status": "succeeded", "already": true}),
        ));
    }
    let engine = app.engine;
    let bug = app.bugs.payment_check_then_act;
    let now = app.now_ms();
    let mut conn = app.pool.acquire().await?;
    let response = conn
        .transaction(app.attempts(), move |c| {
            let key = key.clone();
            Box::pin(async move {
                let lock = if bug { "" } else { " for update" };
                let sql = format!("select order_id, amount, status from payments where id = ? and tenant_id = ?{lock}");
                let payment = q(engine, c, &sql, &[Value::Int(payment_id), Value::Int(tenant)]).await?;
                let (Some(order_id), Some(amount)) = (int_at(&payment, 0, 0), int_at(&payment, 0, 1)) else {
                    return Ok(HttpResponse::new(404, json!({"error": "payment not found"})));
                };
                if bug {
                    if text_at(&payment, 0, 2).as_deref() == Some("succeeded") {
                        return Ok(HttpResponse::new(200, json!({"status": "succeeded", "already": true})));
                    }
                } else {
                    let insert_key = match engine {
                        shopsim_sim::db::Engine::Postgres => "insert into idempotency_keys (name, created_at) values (?, ?) on conflict do nothing",
                        shopsim_sim::db::Engine::InnoDb => "insert ignore into idempotency_keys (name, created_at) values (?, ?)",
                    };
                    let inserted = q(engine, c, insert_key, &[Value::Text(key), Value::Int(now)]).await?;
                    if inserted.rows_affected == 0 {
                        sometimes!(windows::CONFIRM_DUPLICATE_STOPPED, true).await;
                        return Ok(HttpResponse::new(200, json!({"status": "succeeded", "already": true})));
                    }
                }
                q(engine, c, "update payments set status = 'succeeded' where id = ?", &[Value::Int(payment_id)]).await?;
                q(engine, c, "update financial_orders set paid = paid + ? where order_id = ?", &[Value::Int(amount), Value::Int(order_id)]).await?;
                insert_id(
                    engine,
                    c,
                    "insert into ledger_transactions (tenant_id, payment_id, amount) values (?, ?, ?)",
                    &[Value::Int(tenant), Value::Int(payment_id), Value::Int(amount)],
                )
                .await?;
                insert_id(
                    engine,
                    c,
                    "insert into jobs (tenant_id, kind, payload) values (?, 'receipt', ?)",
                    &[Value::Int(tenant), Value::Int(payment_id)],
                )
                .await?;
                Ok(HttpResponse::new(200, json!({"status": "succeeded", "confirmed": true})))
            })
        })
        .await?;
    if response.is_success() {
        app.cache()
            .set(&cache_key, "1", app.config.idempotency_ttl_ms)
            .await;
    }
    Ok(response)
}

/// The receipt job: sends (records) the receipt of a confirmed payment, idempotently.
pub async fn send_receipt(app: &App, tenant: i64, payment_id: i64) -> AppResult<()> {
    // The receipt's tenant comes from the connection's tenant context, as a tenancy package's
    // creating hook fills `tenant_id` in: a worker that did not switch context per job would
    // file the receipt under the previous job's tenant.
    let sql = match app.engine {
        shopsim_sim::db::Engine::Postgres => "insert into receipts (payment_id, tenant_id, sent_at) values (?, current_setting('app.tenant_id')::bigint, ?) on conflict do nothing",
        shopsim_sim::db::Engine::InnoDb => "insert ignore into receipts (payment_id, tenant_id, sent_at) values (?, @tenant_id, ?)",
    };
    let mut conn = app.tenant_conn(&app.pool, tenant).await?;
    q(
        app.engine,
        &mut conn,
        sql,
        &[Value::Int(payment_id), Value::Int(app.now_ms())],
    )
    .await?;
    Ok(())
}
