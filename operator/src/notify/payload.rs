//! The JSON a webhook receives, and which webhooks want a given result.
//!
//! Owns the payload shape (a public contract: add fields, never rename or
//! remove them). Never puts log lines, environment or messages that may hold
//! secrets into a payload.

use serde::Serialize;
use serde_json::Value;
use veil_crds::schedule::Notify;
use veil_crds::task_run::{TaskRunPhase, TaskRunStatus};
use veil_crds::validate::HttpUrl;

/// The body `POST`ed when a run finishes. Every key is always present;
/// unknown values are `null`:
///
/// ```json
/// { "schedule": "ops/backup", "run": "backup-29453760", "phase": "Failed",
///   "reason": "NonZeroExit", "exitCode": 2,
///   "startedAt": "2026-01-01T00:00:01Z", "finishedAt": "2026-01-01T00:00:09Z",
///   "node": "edge-1" }
/// ```
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Finished<'a> {
    /// `<namespace>/<name>` of the Schedule.
    schedule: String,
    /// The TaskRun's name.
    run: &'a str,
    /// `Succeeded`, `Failed` or `Cancelled`.
    phase: TaskRunPhase,
    /// The TaskRun's `status.reason` (`NonZeroExit`, `Timeout`, `NodeLost`, …).
    reason: Option<&'a str>,
    /// Exit code, when the process exited by itself.
    exit_code: Option<i32>,
    /// RFC 3339.
    started_at: Option<&'a str>,
    /// RFC 3339.
    finished_at: Option<&'a str>,
    /// The VeilNode that ran it.
    node: Option<&'a str>,
}

/// The payload for run `run` of Schedule `namespace/schedule`, from the run's
/// status (see [`Finished`] for the shape).
pub fn finish_payload(namespace: &str, schedule: &str, run: &str, status: &TaskRunStatus) -> Value {
    let body = Finished {
        schedule: format!("{namespace}/{schedule}"),
        run,
        phase: status.phase,
        reason: status.reason.as_deref(),
        exit_code: status.exit_code,
        started_at: status.started_at.as_ref().map(|t| t.as_str()),
        finished_at: status.finished_at.as_ref().map(|t| t.as_str()),
        node: status.node.as_deref(),
    };
    // Plain strings, numbers and enums: serialising cannot fail.
    serde_json::to_value(body).unwrap_or(Value::Null)
}

/// The webhooks of `notify` that asked for `phase` (`on`), in spec order.
pub fn webhooks_for(
    notify: Option<&Notify>,
    phase: TaskRunPhase,
) -> impl Iterator<Item = &HttpUrl> {
    notify
        .into_iter()
        .flat_map(|n| n.webhooks.iter())
        .filter(move |hook| hook.on.contains(&phase))
        .map(|hook| &hook.url)
}
