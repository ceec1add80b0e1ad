//! The queue worker node: Laravel's database queue driver (a `jobs` table, reserved with
//! `FOR UPDATE SKIP LOCKED`) plus the scheduler that releases expired reservations.
//!
//! Each job carries its tenant, and the worker switches to it per job: the job's connections
//! get the tenant's session context, and the history gets a `job <kind>` event naming the
//! tenants whose rows the job's statements touched, and its outcome. A job that fails is
//! released for another attempt after a backoff that doubles (`--backoff`); after `job_tries`
//! attempts it is dead-lettered into `failed_jobs` with its exception (`--tries`), as
//! `queue:work` does. Reserving a job counts an attempt, so a job whose worker died is retried
//! and counted too.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shopsim_sim::db::client::ClientError;
use shopsim_sim::db::Value;
use shopsim_sim::history::Recorder;

use crate::app::{int_at, q, text_at, App};
use crate::config::ShopConfig;
use crate::{cart, payment};

/// A reserved job older than this is taken again (the worker that had it died).
pub const RETRY_AFTER_MS: i64 = 5_000;

/// A job taken from the queue.
struct Job {
    id: i64,
    tenant: i64,
    kind: String,
    payload: i64,
    /// Attempts so far, this one included.
    attempts: i64,
}

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
            Some(job) => run_job(&app, &recorder, job).await,
            None => madsim::time::sleep(poll).await,
        }
    }
}

/// Runs one job as its tenant, records it, and deletes, releases or dead-letters it.
async fn run_job(app: &App, recorder: &Recorder, job: Job) {
    // The job runs as its tenant: its connections get that tenant's context, and every row its
    // statements touch is audited against it.
    let (job_app, audit) = app.audited(job.tenant);
    let result: Result<(), String> = match job.kind.as_str() {
        "receipt" => payment::send_receipt(&job_app, job.tenant, job.payload)
            .await
            .map_err(|e| e.to_string()),
        other => Err(format!("unknown job kind `{other}`")),
    };
    let details = {
        let audit = audit.lock().expect("statement audit");
        json!({
            "job": job.id,
            "tenant": job.tenant,
            "payload": job.payload,
            "attempt": job.attempts,
            "done": result.is_ok(),
            "error": result.as_ref().err(),
            "row_tenants": audit.row_tenants,
            "foreign_statement": audit.foreign_statement,
        })
    };
    recorder.event("worker", &format!("job {}", job.kind), details);
    // Best effort: if the bookkeeping fails, the reservation expires and the job runs again.
    let _ = match result {
        Ok(()) => delete_job(app, job.id).await,
        Err(error) if job.attempts >= i64::from(app.config.job_tries) => {
            dead_letter(app, &job, &error).await
        }
        Err(_) => release_job(app, &job).await,
    };
}

/// Reserves the next job that is due.
async fn take_job(app: &App) -> Option<Job> {
    let engine = app.engine;
    let now = app.now_ms();
    let mut conn = app.pool.acquire().await.ok()?;
    conn.transaction(app.attempts(), move |c| {
        Box::pin(async move {
            let job = q(
                engine,
                c,
                "select id, tenant_id, kind, payload, attempts from jobs where (reserved_at is null or reserved_at < ?) and available_at <= ? order by id limit 1 for update skip locked",
                &[Value::Int(now - RETRY_AFTER_MS), Value::Int(now)],
            )
            .await?;
            let Some(id) = int_at(&job, 0, 0) else {
                return Ok(None);
            };
            q(engine, c, "update jobs set reserved_at = ?, attempts = attempts + 1 where id = ?", &[Value::Int(now), Value::Int(id)]).await?;
            Ok(Some(Job {
                id,
                tenant: int_at(&job, 0, 1).unwrap_or(0),
                kind: text_at(&job, 0, 2).unwrap_or_default(),
                payload: int_at(&job, 0, 3).unwrap_or(0),
                attempts: int_at(&job, 0, 4).unwrap_or(0) + 1,
            }))
        })
    })
    .await
    .ok()
    .flatten()
}

async fn delete_job(app: &App, id: i64) -> Result<(), ClientError> {
    let mut conn = app.pool.acquire().await?;
    q(
        app.engine,
        &mut conn,
        "delete from jobs where id = ?",
        &[Value::Int(id)],
    )
    .await?;
    Ok(())
}

/// Makes the job available again after the backoff of its attempt.
async fn release_job(app: &App, job: &Job) -> Result<(), ClientError> {
    let exponent = u32::try_from(job.attempts.clamp(1, 16) - 1).expect("in range");
    let backoff_ms = i64::try_from(app.config.job_backoff_ms.saturating_mul(1 << exponent))
        .unwrap_or(i64::MAX / 2);
    let mut conn = app.pool.acquire().await?;
    q(
        app.engine,
        &mut conn,
        "update jobs set reserved_at = null, available_at = ? where id = ?",
        &[Value::Int(app.now_ms() + backoff_ms), Value::Int(job.id)],
    )
    .await?;
    Ok(())
}

/// Moves the job to `failed_jobs` with its exception, in one transaction.
async fn dead_letter(app: &App, job: &Job, error: &str) -> Result<(), ClientError> {
    let engine = app.engine;
    let now = app.now_ms();
    let (id, tenant, kind, payload, attempts) = (
        job.id,
        job.tenant,
        job.kind.clone(),
        job.payload,
        job.attempts,
    );
    let exception = error.to_string();
    let mut conn = app.pool.acquire().await?;
    conn.transaction(app.attempts(), move |c| {
        let (kind, exception) = (kind.clone(), exception.clone());
        Box::pin(async move {
            q(
                engine,
                c,
                "insert into failed_jobs (tenant_id, kind, payload, attempts, exception, failed_at) values (?, ?, ?, ?, ?, ?)",
                &[Value::Int(tenant), Value::Text(kind), Value::Int(payload), Value::Int(attempts), Value::Text(exception), Value::Int(now)],
            )
            .await?;
            q(engine, c, "delete from jobs where id = ?", &[Value::Int(id)]).await?;
            Ok(())
        })
    })
    .await
}
