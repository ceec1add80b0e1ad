//! The queue worker node: Laravel's database queue driver (a `jobs` table, reserved with
//! `FOR UPDATE SKIP LOCKED`) plus the scheduler that releases expired reservations.
//!
//! Each job carries its tenant, and the worker switches to it per job: the job's connections
//! get the tenant's session context, and the history gets a `job <kind>` event naming the
//! tenants whose rows the job's statements touched.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shopsim_sim::db::Value;
use shopsim_sim::history::Recorder;

use crate::app::{int_at, q, text_at, App};
use crate::config::ShopConfig;
use crate::{cart, payment};

/// A reserved job older than this is taken again (the worker that had it died).
pub const RETRY_AFTER_MS: i64 = 5_000;

/// Runs the worker on this node until it is killed.
pub async fn run(config: Arc<ShopConfig>, addrs: crate::shop::Addrs, recorder: Recorder) {
    let app = App::new(config.clone(), &addrs, "worker");
    let poll = Duration::from_millis(config.worker_poll_ms);
    let mut next_sweep = Duration::ZERO;
    loop {
        let now = shopsim_sim::trace::virtual_now();
        if now >= next_sweep {
            // Released until none are left, like `schedule:run` calling the job each minute.
            while let Ok(n) = cart::release_expired(&app).await {
                if n == 0 {
                    break;
                }
            }
            next_sweep = now + Duration::from_millis(config.expiry_sweep_ms);
        }
        match take_job(&app).await {
            Some((id, tenant, kind, payload)) => {
                // The job runs as its tenant: its connections get that tenant's context, and
                // every row its statements touch is audited against it.
                let (job_app, audit) = app.audited(tenant);
                let done = match kind.as_str() {
                    "receipt" => payment::send_receipt(&job_app, tenant, payload)
                        .await
                        .is_ok(),
                    other => {
                        tracing::warn!(kind = other, "unknown job kind dropped");
                        true
                    }
                };
                let details = {
                    let audit = audit.lock().expect("statement audit");
                    json!({
                        "job": id,
                        "tenant": tenant,
                        "done": done,
                        "row_tenants": audit.row_tenants,
                        "foreign_statement": audit.foreign_statement,
                    })
                };
                recorder.event("worker", &format!("job {kind}"), details);
                if done {
                    if let Ok(mut conn) = app.pool.acquire().await {
                        let _ = q(
                            app.engine,
                            &mut conn,
                            "delete from jobs where id = ?",
                            &[Value::Int(id)],
                        )
                        .await;
                    }
                }
            }
            None => madsim::time::sleep(poll).await,
        }
    }
}

/// Reserves the next job: (id, tenant, kind, payload).
async fn take_job(app: &App) -> Option<(i64, i64, String, i64)> {
    let engine = app.engine;
    let now = app.now_ms();
    let mut conn = app.pool.acquire().await.ok()?;
    conn.transaction(app.attempts(), move |c| {
        Box::pin(async move {
            let job = q(
                engine,
                c,
                "select id, tenant_id, kind, payload from jobs where reserved_at is null or reserved_at < ? order by id limit 1 for update skip locked",
                &[Value::Int(now - RETRY_AFTER_MS)],
            )
            .await?;
            let Some(id) = int_at(&job, 0, 0) else {
                return Ok(None);
            };
            q(engine, c, "update jobs set reserved_at = ? where id = ?", &[Value::Int(now), Value::Int(id)]).await?;
            Ok(Some((id, int_at(&job, 0, 1).unwrap_or(0), text_at(&job, 0, 2).unwrap_or_default(), int_at(&job, 0, 3).unwrap_or(0))))
        })
    })
    .await
    .ok()
    .flatten()
}
