//! Schedules in the plan: CronJob semantics (see [`crate::schedule`]) turned
//! into actions on TaskRuns the operator owns, and Schedule statuses.
//!
//! A run made by a Schedule is named `<schedule>-<unix minutes>`, labelled
//! `veil.dev/schedule=<schedule>`, annotated with its scheduled time and
//! owned by the Schedule. Because the name is deterministic and the store
//! inserts a name once, a run is never created twice, even across restarts.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};
use veil_crds::schedule::{Schedule, SchedulePhase};
use veil_crds::task_run::TaskRunPhase;

use super::tasks::strip_nulls;
use crate::records::{RunStateRecord, RunStates};
use crate::schedule::{Decision, RunSummary, ScheduleEvent, ScheduleInput, decide};
use crate::world::{World, timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Label naming the Schedule that made a TaskRun.
pub const SCHEDULE_LABEL: &str = "veil.dev/schedule";
/// Annotation holding a run's scheduled time (RFC 3339).
pub const SCHEDULED_TIME_ANNOTATION: &str = "veil.dev/scheduled-time";

/// What the controller must do for Schedules.
#[derive(Clone, Debug, Default)]
pub struct ScheduleActions {
    /// TaskRuns to create (full objects), with their owner.
    pub create: Vec<(ObjectKey, Value, ObjectKey)>,
    /// TaskRuns to cancel (`spec.cancel: true`).
    pub cancel: Vec<ObjectKey>,
    /// Finished TaskRuns beyond the history limits.
    pub prune: Vec<ObjectKey>,
    /// New last schedule times to persist.
    pub last_schedule_times: Vec<(ObjectKey, DateTime<Utc>)>,
    /// Events to report (by Schedule).
    pub events: Vec<(ObjectKey, ScheduleEvent)>,
    /// When the next pass is needed for some Schedule.
    pub requeue_after: Option<Duration>,
}

type Conditions = [(&'static str, &'static str, String, String); 3];

/// Decides every Schedule; returns the actions and each Schedule's status body and conditions.
/// The TaskRuns Schedules look through: the pass's TaskRuns (every one,
/// or the open ones) and, for the incremental planner, the settled ones.
pub struct ScheduleRuns<'a> {
    pub runs: &'a [(&'a ObjectKey, &'a str, &'a veil_crds::task_run::TaskRun)],
    pub settled: Option<&'a super::tasks::settled::SettledRuns>,
}

pub fn plan_schedules(
    world: &World,
    (scope, runs): (&ScheduleRuns<'_>, &RunStates),
    last_times: &BTreeMap<ObjectKey, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (ScheduleActions, BTreeMap<ObjectKey, (Value, Conditions)>) {
    let mut actions = ScheduleActions::default();
    let mut statuses = BTreeMap::new();
    for (key, object) in world.of_kind(Kind::Schedule) {
        let Object::Schedule(schedule) = &*object.object else {
            continue;
        };
        let owned = owned_runs(key, scope, runs);
        let summaries: Vec<RunSummary> = owned.iter().map(|(_, s)| s.clone()).collect();
        let created_at = schedule
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| DateTime::parse_from_rfc3339(&t.0.to_string()).ok())
            .map_or(now, |t| t.with_timezone(&Utc));
        let decision = decide(&ScheduleInput {
            name: &key.name,
            spec: &schedule.spec,
            created_at,
            last_schedule_time: last_times.get(key).copied(),
            runs: &summaries,
            now,
        });
        apply(
            &mut actions,
            key,
            schedule,
            &decision,
            last_times.get(key).copied(),
            now,
        );
        statuses.insert(key.clone(), status(&decision, &summaries));
    }
    (actions, statuses)
}

fn apply(
    actions: &mut ScheduleActions,
    key: &ObjectKey,
    schedule: &Schedule,
    decision: &Decision,
    last: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) {
    let run_key = |name: &str| ObjectKey::new(Kind::TaskRun, &key.namespace, name);
    if let Some(new) = &decision.create {
        actions.create.push((
            run_key(&new.name),
            task_run(key, schedule, &new.name, new.scheduled_time),
            key.clone(),
        ));
    }
    actions
        .cancel
        .extend(decision.cancel.iter().map(|n| run_key(n)));
    actions
        .prune
        .extend(decision.prune.iter().map(|n| run_key(n)));
    if let Some(time) = decision.last_schedule_time
        && last.is_none_or(|l| time > l)
    {
        actions.last_schedule_times.push((key.clone(), time));
    }
    actions
        .events
        .extend(decision.events.iter().map(|e| (key.clone(), e.clone())));
    if let Some(after) = decision.requeue_after {
        actions.requeue_after = Some(actions.requeue_after.map_or(after, |a| a.min(after)));
    }
    let _ = now;
}

/// The TaskRun a Schedule makes for one scheduled time.
fn task_run(key: &ObjectKey, schedule: &Schedule, name: &str, scheduled: DateTime<Utc>) -> Value {
    json!({
        "apiVersion": veil_crds::API_VERSION,
        "kind": "TaskRun",
        "metadata": {
            "name": name,
            "namespace": key.namespace,
            "labels": {
                SCHEDULE_LABEL: key.name,
                "app.kubernetes.io/managed-by": "veil",
            },
            "annotations": { SCHEDULED_TIME_ANNOTATION: timestamp(scheduled) },
            "ownerReferences": [{
                "apiVersion": veil_crds::API_VERSION,
                "kind": "Schedule",
                "name": key.name,
                "uid": schedule.metadata.uid.clone().unwrap_or_default(),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "task": schedule.spec.task,
            "runnerSelector": schedule.spec.runner_selector,
        },
    })
}

/// The TaskRuns the Schedule `key` made, with their summaries, in key
/// order: those among the pass's TaskRuns and the settled ones.
fn owned_runs(
    key: &ObjectKey,
    scope: &ScheduleRuns<'_>,
    runs: &RunStates,
) -> Vec<(ObjectKey, RunSummary)> {
    let mut owned: Vec<(ObjectKey, RunSummary)> = scope
        .runs
        .iter()
        .filter(|(run_key, _, _)| run_key.namespace == key.namespace)
        .filter_map(|(run_key, uid, run)| {
            let meta = &run.metadata;
            if meta.labels.as_ref()?.get(SCHEDULE_LABEL) != Some(&key.name) {
                return None;
            }
            let summary = run_summary(run_key, meta, runs.get(*uid).map(|s| &**s))?;
            Some(((*run_key).clone(), summary))
        })
        .collect();
    if let Some(settled) = scope.settled {
        owned.extend(
            settled
                .schedule_runs(&key.namespace, &key.name)
                .map(|(run_key, summary)| (run_key.clone(), summary.clone())),
        );
    }
    owned.sort_by(|a, b| a.0.cmp(&b.0));
    owned
}

/// A TaskRun's summary for its Schedule: `None` without a readable
/// scheduled-time annotation.
pub fn run_summary(
    run_key: &ObjectKey,
    meta: &ObjectMeta,
    state: Option<&RunStateRecord>,
) -> Option<RunSummary> {
    let scheduled = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(SCHEDULED_TIME_ANNOTATION))
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())?
        .with_timezone(&Utc);
    Some(RunSummary {
        name: run_key.name.clone(),
        scheduled_time: scheduled,
        phase: state.map_or(TaskRunPhase::Pending, |s| phase(&s.phase)),
        finished_at: state.and_then(|s| s.finished_at),
    })
}

fn phase(name: &str) -> TaskRunPhase {
    match name {
        "Running" => TaskRunPhase::Running,
        "Succeeded" => TaskRunPhase::Succeeded,
        "Failed" => TaskRunPhase::Failed,
        "Cancelled" => TaskRunPhase::Cancelled,
        _ => TaskRunPhase::Pending,
    }
}

fn status(decision: &Decision, runs: &[RunSummary]) -> (Value, Conditions) {
    let active: Vec<&str> = runs
        .iter()
        .filter(|r| !r.phase.is_finished())
        .map(|r| r.name.as_str())
        .collect();
    let last = runs.iter().max_by_key(|r| r.scheduled_time);
    let last_success = runs
        .iter()
        .filter(|r| r.phase == TaskRunPhase::Succeeded)
        .filter_map(|r| r.finished_at)
        .max();
    let phase = match decision.phase {
        SchedulePhase::Active => "Active",
        SchedulePhase::Suspended => "Suspended",
        SchedulePhase::Completed => "Completed",
        SchedulePhase::Failed => "Failed",
    };
    let body = json!({
        "phase": phase,
        "lastScheduleTime": decision.last_schedule_time.map(timestamp),
        "nextScheduleTime": decision.next_schedule_time.map(timestamp),
        "lastSuccessfulTime": last_success.map(timestamp),
        "active": active,
        "activeCount": active.len(),
        "lastRun": last.map(|r| r.name.clone()),
        "lastResult": last.filter(|r| r.phase.is_finished()).map(|r| serde_json::to_value(r.phase).unwrap_or_default()),
    });
    let conditions = match &decision.stalled {
        Some((reason, message)) => [
            ("Ready", "False", reason.clone(), message.clone()),
            ("Reconciling", "False", reason.clone(), String::new()),
            ("Stalled", "True", reason.clone(), message.clone()),
        ],
        None => [
            (
                "Ready",
                "True",
                phase.to_owned(),
                format!("schedule is {}", phase.to_ascii_lowercase()),
            ),
            ("Reconciling", "False", phase.to_owned(), String::new()),
            ("Stalled", "False", phase.to_owned(), String::new()),
        ],
    };
    (strip_nulls(body), conditions)
}
