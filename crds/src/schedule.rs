//! `Schedule`: creates `TaskRun`s on a cron schedule or once at `runAt`,
//! with Kubernetes CronJob semantics (missed runs, deadline, concurrency).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, impl_object_status, is_false};
use crate::runner::RunnerSelector;
use crate::task_run::{Task, TaskRunPhase};
use crate::validate::{CronSchedule, FieldError, FieldErrors, HttpUrl, Rfc3339, TimeZone};

/// Makes `TaskRun`s on a schedule. Exactly one of `schedule` and `runAt`.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "veil.dev",
    version = "v1alpha1",
    kind = "Schedule",
    doc = "Creates TaskRuns on a cron schedule (or once at runAt) with Kubernetes CronJob semantics: time zone, suspend, concurrency policy, starting deadline, history limits.",
    plural = "schedules",
    shortname = "sched",
    category = "veil",
    namespaced,
    status = "ScheduleStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Cron schedule, five fields `MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK`
    /// (e.g. `*/5 * * * *`, `0 3 * * 1-5`) or `@hourly`, `@daily`, `@midnight`,
    /// `@weekly`, `@monthly`, `@yearly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<CronSchedule>,
    /// One run at this time (RFC 3339, e.g. `2026-03-01T03:00:00+03:00`), instead of `schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<Rfc3339>,
    /// IANA time zone `schedule` is read in (e.g. `Europe/Moscow`; DST handled). Default: `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<TimeZone>,
    /// `true` creates no new runs (running ones continue). Default: `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
    /// What to do when a run is due while the previous one still runs:
    /// `Allow` (run both), `Forbid` (skip the new one), `Replace` (cancel the old one). Default: `Allow`.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A run that could not start within this many seconds of its scheduled time
    /// is skipped (reason `MissedSchedule`). Default: no deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_seconds: Option<u32>,
    /// Finished successful runs to keep; older ones are deleted. Default: `3`.
    #[serde(default = "default_successful")]
    pub successful_jobs_history_limit: u32,
    /// Finished failed runs to keep. Default: `1`.
    #[serde(default = "default_failed")]
    pub failed_jobs_history_limit: u32,
    /// Which runners may take the runs. Default: any runner allowing the executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_selector: Option<RunnerSelector>,
    /// The task every run executes.
    pub task: Task,
    /// Webhooks called when a run finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
}

fn default_successful() -> u32 {
    3
}

fn default_failed() -> u32 {
    1
}

/// What happens when a run is due while an earlier one still runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Start the new run anyway.
    #[default]
    Allow,
    /// Skip the new run.
    Forbid,
    /// Cancel the running one and start the new run.
    Replace,
}

/// Notifications about finished runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Notify {
    /// Webhooks receiving a JSON `POST` per finished run (3 tries, 5 s
    /// timeout each; scheduling never waits for them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<Webhook>,
}

/// One webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Webhook {
    /// Where to `POST` (http or https), e.g. `https://hooks.example.com/veil`.
    pub url: HttpUrl,
    /// Which results to report: `Succeeded`, `Failed`, `Cancelled`. Default: `[Failed]`.
    #[serde(default = "default_on")]
    pub on: Vec<TaskRunPhase>,
}

fn default_on() -> Vec<TaskRunPhase> {
    vec![TaskRunPhase::Failed]
}

impl ScheduleSpec {
    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = FieldErrors::default();
        match (&self.schedule, &self.run_at) {
            (Some(_), Some(_)) => errors.push(
                "spec.runAt",
                "both `schedule` and `runAt` are set; keep `schedule` for repeated runs or `runAt` for one run",
            ),
            (None, None) => errors.push(
                "spec.schedule",
                "neither `schedule` nor `runAt` is set; write e.g. `schedule: \"*/5 * * * *\"` or `runAt: 2026-03-01T03:00:00Z`",
            ),
            _ => {}
        }
        self.task.validate("spec.task", &mut errors);
        if let Some(selector) = &self.runner_selector {
            selector.validate("spec.runnerSelector", &mut errors);
        }
        if let Some(notify) = &self.notify {
            for (i, hook) in notify.webhooks.iter().enumerate() {
                let at = format!("spec.notify.webhooks[{i}].on");
                if hook.on.is_empty() {
                    errors.push(
                        at,
                        "no result listed; write e.g. `[Failed]` or `[Succeeded, Failed]`",
                    );
                } else if hook.on.iter().any(|p| !p.is_finished()) {
                    errors.push(at, "only finished results can be reported; use `Succeeded`, `Failed` or `Cancelled`");
                }
            }
        }
        errors.into_result()
    }
}

/// What the schedule is doing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SchedulePhase {
    /// Creating runs when they are due.
    #[default]
    Active,
    /// `suspend: true`.
    Suspended,
    /// A `runAt` schedule whose run was created.
    Completed,
    /// The schedule cannot run (see the `Stalled` condition).
    Failed,
}

/// Observed state of the schedule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `Active`, `Suspended`, `Completed` or `Failed`.
    #[serde(default)]
    pub phase: SchedulePhase,
    /// The scheduled time of the most recent run created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Rfc3339>,
    /// When the next run is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Rfc3339>,
    /// When the most recent successful run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Rfc3339>,
    /// Names of runs that have not finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
    /// Number of runs that have not finished (the length of `active`).
    #[serde(default)]
    pub active_count: u32,
    /// Name of the most recent finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// Phase of the most recent finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::optional_enum_schema::<TaskRunPhase>")]
    pub last_result: Option<TaskRunPhase>,
}

impl_object_status!(ScheduleStatus);
