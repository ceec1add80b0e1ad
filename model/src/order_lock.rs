//! `OrderLockService`: a `FinancialOrder` is locked only from status draft, inside a
//! transaction with its row locked; after the lock every mutation is rejected with 409 and
//! written to the audit log.

use serde_json::json;
use shopsim_sim::db::Value;
use shopsim_sim::sometimes;

use crate::app::{int_at, q, text_at, App, AppResult};
use crate::http::HttpResponse;
use crate::windows;

/// `POST /api/v1/financial-orders/{id}/lock`.
pub async fn lock(app: &App, tenant: i64, id: i64) -> AppResult<HttpResponse> {
    let engine = app.engine;
    let mut conn = app.pool.acquire().await?;
    conn.transaction(app.attempts(), move |c| {
        Box::pin(async move {
            let fo = q(engine, c, "select status, total from financial_orders where id = ? and tenant_id = ? for update", &[Value::Int(id), Value::Int(tenant)]).await?;
            match text_at(&fo, 0, 0).as_deref() {
                None => Ok(HttpResponse::not_found("financial_order")),
                Some("draft") => {
                    q(engine, c, "update financial_orders set status = 'locked', locked_total = total where id = ?", &[Value::Int(id)]).await?;
                    Ok(HttpResponse::new(200, json!({"status": "locked", "total": int_at(&fo, 0, 1)})))
                }
                Some(status) => {
                    sometimes!(windows::LOCK_SECOND_REJECTED, true).await;
                    q(
                        engine,
                        c,
                        "insert into audit_log (tenant_id, financial_order_id, action, detail) values (?, ?, 'lock_rejected', ?)",
                        &[Value::Int(tenant), Value::Int(id), Value::Text(format!("status {status}"))],
                    )
                    .await?;
                    Ok(HttpResponse::new(409, json!({"error": "financial order is not a draft", "status": status})))
                }
            }
        })
    })
    .await
}

/// `PATCH /api/v1/financial-orders/{id}` with a new `total`.
pub async fn mutate(
    app: &App,
    tenant: i64,
    id: i64,
    body: &serde_json::Value,
) -> AppResult<HttpResponse> {
    let Some(total) = body.get("total").and_then(|v| v.as_i64()) else {
        return Ok(HttpResponse::new(
            400,
            json!({"error": "total is required"}),
        ));
    };
    let engine = app.engine;
    let bug = app.bugs.order_lock_check_without_row_lock;
    let mut conn = app.pool.acquire().await?;
    conn.transaction(app.attempts(), move |c| {
        Box::pin(async move {
            let lock = if bug { "" } else { " for update" };
            let sql = format!("select status from financial_orders where id = ? and tenant_id = ?{lock}");
            let fo = q(engine, c, &sql, &[Value::Int(id), Value::Int(tenant)]).await?;
            match text_at(&fo, 0, 0).as_deref() {
                None => Ok(HttpResponse::not_found("financial_order")),
                Some("locked") => {
                    sometimes!(windows::MUTATION_REJECTED, true).await;
                    q(
                        engine,
                        c,
                        "insert into audit_log (tenant_id, financial_order_id, action, detail) values (?, ?, 'mutation_rejected', ?)",
                        &[Value::Int(tenant), Value::Int(id), Value::Text(format!("total {total}"))],
                    )
                    .await?;
                    Ok(HttpResponse::new(409, json!({"error": "financial order is locked"})))
                }
                Some(_) => {
                    q(engine, c, "update financial_orders set total = ? where id = ?", &[Value::Int(total), Value::Int(id)]).await?;
                    Ok(HttpResponse::new(200, json!({"total": total})))
                }
            }
        })
    })
    .await
}
