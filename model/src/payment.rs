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

/// `POST /api/v1/orders/{id}/payments`: creates the order's payment (or finds the one it has:
/// a double click or a retry after a timeout must not charge twice) and asks the provider to
/// capture it, with the payment id as the idempotency key.
pub async fn create(app: &App, tenant: i64, order_id: i64) -> AppResult<HttpResponse> {
    let engine = app.engine;
    if app.bugs.payment_order_read_from_replica {
        // The planted bug: the order is looked up on the read replica, which may not have it
        // yet when its customer pays right after the checkout.
        let mut conn = app.tenant_conn(app.replica_pool(), tenant).await?;
        let order = q(
            engine,
            &mut conn,
            "select total from orders where id = ? and tenant_id = ?",
            &[Value::Int(order_id), Value::Int(tenant)],
        )
        .await?;
        if order.rows.is_empty() {
            return Ok(HttpResponse::not_found("order"));
        }
    }
    let unscoped = app.bugs.order_lookup_without_tenant;
    let mut conn = app.pool.acquire().await?;
    let found = conn
        .transaction(app.attempts(), move |c| {
            Box::pin(async move {
                // The order row is locked, so two creates for one order make one payment (under
                // PostgreSQL REPEATABLE READ the read below uses the snapshot taken before the
                // wait, and a double click can open a second session the customer never pays).
                let order = if unscoped {
                    q(engine, c, "select total from orders where id = ? for update", &[Value::Int(order_id)]).await?
                } else {
                    q(engine, c, "select total from orders where id = ? and tenant_id = ? for update", &[Value::Int(order_id), Value::Int(tenant)]).await?
                };
                let Some(amount) = int_at(&order, 0, 0) else {
                    return Ok(None);
                };
                let existing = q(engine, c, "select id, amount from payments where order_id = ? order by id limit 1", &[Value::Int(order_id)]).await?;
                if let (Some(id), Some(amount)) = (int_at(&existing, 0, 0), int_at(&existing, 0, 1)) {
                    sometimes!(windows::PAYMENT_ALREADY_CREATED, true).await;
                    return Ok(Some((id, amount)));
                }
                let id = insert_id(
                    engine,
                    c,
                    "insert into payments (tenant_id, order_id, amount, status) values (?, ?, ?, 'pending')",
                    &[Value::Int(tenant), Value::Int(order_id), Value::Int(amount)],
                )
                .await?;
                Ok(Some((id, amount)))
            })
        })
        .await?;
    drop(conn);
    let Some((payment_id, amount)) = found else {
        return Ok(HttpResponse::not_found("order"));
    };
    let request = ProviderRequest::Create {
        payment_id,
        tenant,
        amount,
    };
    let deadline = Duration::from_millis(app.config.provider_timeout_ms);
    match net::call::<ProviderRequest, ProviderResponse>(app.provider, request, deadline).await {
        RpcOutcome::Reply(_) => Ok(HttpResponse::new(
            201,
            json!({"payment_id": payment_id, "amount": amount}),
        )),
        RpcOutcome::Unknown => Ok(HttpResponse::new(
            504,
            json!({"error": "payment provider timeout", "payment_id": payment_id}),
        )),
    }
}

/// `POST /api/v1/webhooks/payments` with `payment.succeeded`.
pub async fn webhook(app: &App, tenant: i64, payment_id: i64) -> AppResult<HttpResponse> {
    let confirmed = confirm(app, tenant, payment_id).await?;
    Ok(confirmed)
}

/// `GET /api/v1/payments/{id}/return`: finds the tenant's payment, asks the provider whether it
/// captured it (a customer may come back without paying), and confirms it if so. The payment
/// is looked up first, on the primary (the customer returns moments after creating it): the
/// provider knows every tenant's payments, so asking it first would tell one tenant the status
/// of another's payment (adversarial-tenants found that answer).
pub async fn return_url(app: &App, tenant: i64, payment_id: i64) -> AppResult<HttpResponse> {
    {
        let mut conn = app.pool.acquire().await?;
        let payment = q(
            app.engine,
            &mut conn,
            "select status from payments where id = ? and tenant_id = ?",
            &[Value::Int(payment_id), Value::Int(tenant)],
        )
        .await?;
        if payment.rows.is_empty() {
            return Ok(HttpResponse::not_found("payment"));
        }
    }
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
    if app.bugs.idempotency_claimed_before_work {
        // The planted bug: the key is claimed before the work and kept if the work fails, so
        // every later delivery is answered "already confirmed" while the payment stays pending.
        if !app
            .cache()
            .add(&cache_key, "1", app.config.idempotency_ttl_ms)
            .await
        {
            return Ok(HttpResponse::new(
                200,
                json!({"status": "succeeded", "already": true}),
            ));
        }
    } else if app.cache().get(&cache_key).await.is_some() {
        return Ok(HttpResponse::new(
            200,
            json!({"status": "succeeded", "already": true}),
        ));
    }
    let engine = app.engine;
    let bug = app.bugs.payment_check_then_act;
    let verify_with_provider = app.bugs.provider_call_in_transaction.then(|| {
        (
            app.provider,
            Duration::from_millis(app.config.provider_timeout_ms),
        )
    });
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
                    return Ok(HttpResponse::not_found("payment"));
                };
                if let Some((provider, deadline)) = verify_with_provider {
                    // The planted bug: the provider is asked while the payment row is locked
                    // and the connection is held.
                    let status = net::call::<ProviderRequest, ProviderResponse>(provider, ProviderRequest::Status { payment_id }, deadline).await;
                    if status != RpcOutcome::Reply(ProviderResponse::Succeeded) {
                        return Ok(HttpResponse::new(200, json!({"status": "pending"})));
                    }
                }
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
    if app.bugs.receipt_job_writes_ledger {
        // The planted bug: a second code path that records the capture, guarded by a cache
        // marker nothing sets; the ledger's unique key makes every attempt fail.
        let marker = format!("tenant:{tenant}:ledger_recorded:{payment_id}");
        if app.cache().get(&marker).await.is_none() {
            let amount = q(
                app.engine,
                &mut conn,
                "select amount from payments where id = ? and tenant_id = ?",
                &[Value::Int(payment_id), Value::Int(tenant)],
            )
            .await?;
            q(
                app.engine,
                &mut conn,
                "insert into ledger_transactions (tenant_id, payment_id, amount) values (?, ?, ?)",
                &[
                    Value::Int(tenant),
                    Value::Int(payment_id),
                    Value::Int(int_at(&amount, 0, 0).unwrap_or(0)),
                ],
            )
            .await?;
        }
    }
    q(
        app.engine,
        &mut conn,
        sql,
        &[Value::Int(payment_id), Value::Int(app.now_ms())],
    )
    .await?;
    Ok(())
}
