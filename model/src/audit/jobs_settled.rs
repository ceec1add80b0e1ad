//! `jobs_settled`: every queued job finished or was dead-lettered with a reason. After the run
//! settles, no job is left in the `jobs` table (a job that fails forever is a failure, and it
//! does not excuse what it was meant to do), and every row of `failed_jobs` says why it failed.
//!
//! Verified on the final state and the committed history of `jobs` (to know that jobs were
//! queued at all). Not verified: that a dead-lettered job's work was not needed; the checks of
//! that work (a receipt per payment) judge it.

use shopsim_sim::check::{Checker, Report};
use shopsim_sim::history::History;

use super::{int, text};
use crate::shop::ShopState;

/// See the module documentation.
pub struct JobsSettled;

const NAME: &str = "jobs_settled";

impl Checker<ShopState> for JobsSettled {
    fn name(&self) -> &str {
        NAME
    }

    fn check(&self, history: &History, state: &ShopState) -> Report {
        let queued = state
            .changes("jobs")
            .iter()
            .filter(|c| c.row.is_some())
            .map(|c| c.id)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            .max(state.rows("jobs").len());
        if queued == 0 && state.rows("failed_jobs").is_empty() {
            return Report::unknown(NAME, "nothing to judge: no job was queued");
        }
        if let Some(job) = state.rows("jobs").first() {
            let id = int(job, "id");
            let runs: Vec<String> = history
                .ops
                .iter()
                .filter(|op| op.kind.starts_with("job ") && op.details["job"].as_i64() == Some(id))
                .map(|op| {
                    format!(
                        "attempt {} at {:.1} ms: {}",
                        op.details["attempt"],
                        op.invoke_us as f64 / 1000.0,
                        op.details["error"].as_str().unwrap_or("done")
                    )
                })
                .collect();
            return Report::invalid(
                NAME,
                format!(
                    "job {id} ({} of {}, tenant {}) is still queued after the run settled, {} attempts; {}",
                    text(job, "kind"),
                    int(job, "payload"),
                    int(job, "tenant_id"),
                    int(job, "attempts"),
                    if runs.is_empty() {
                        "the worker never ran it".to_string()
                    } else {
                        runs.join("; ")
                    }
                ),
            );
        }
        if let Some(job) = state
            .rows("failed_jobs")
            .iter()
            .find(|j| text(j, "exception").trim().is_empty())
        {
            return Report::invalid(
                NAME,
                format!(
                    "failed job {} ({} of {}) was dead-lettered without a reason",
                    int(job, "id"),
                    text(job, "kind"),
                    int(job, "payload")
                ),
            );
        }
        Report::valid(
            NAME,
            format!(
                "{queued} jobs queued, none left; {} dead-lettered with a reason",
                state.rows("failed_jobs").len()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testing::*;
    use shopsim_sim::check::Verdict;

    #[test]
    fn canary_job_stuck_forever() {
        let s = state(&[(
            "jobs",
            "id,tenant_id,kind,payload,attempts; 4,2,'receipt',9,3",
        )]);
        let mut run = op(0, "job receipt", None, serde_json::Value::Null, 5, 5);
        run.details = serde_json::json!({"job": 4, "attempt": 3, "error": "23505: duplicate key"});
        let r = JobsSettled.check(&history(vec![run]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        assert_eq!(r.witness, "job 4 (receipt of 9, tenant 2) is still queued after the run settled, 3 attempts; attempt 3 at 5.0 ms: 23505: duplicate key");
    }

    #[test]
    fn canary_dead_letter_without_reason() {
        let s = state(&[
            ("jobs", "id"),
            ("failed_jobs", "id,kind,payload,exception; 1,'receipt',9,''"),
        ]);
        let r = JobsSettled.check(&history(vec![]), &s);
        assert_eq!(r.verdict, Verdict::Invalid);
        let ok = state(&[
            ("jobs", "id"),
            (
                "failed_jobs",
                "id,kind,payload,exception; 1,'receipt',9,'boom'",
            ),
        ]);
        assert_eq!(
            JobsSettled.check(&history(vec![]), &ok).verdict,
            Verdict::Valid
        );
        assert_eq!(
            JobsSettled
                .check(&history(vec![]), &ShopState::default())
                .verdict,
            Verdict::Unknown
        );
    }
}
