//! `schedule`: what a `Schedule` should do right now — Kubernetes CronJob
//! semantics as a pure function.
//!
//! This module owns the scheduling rules: which scheduled time is due, the
//! deterministic name of the run for it, concurrency policy, starting
//! deadline, missed runs after downtime, history pruning and the next wake-up.
//! It never performs I/O, never reads the clock (`now` is an argument) and
//! never creates, cancels or deletes anything itself: [`decide`] returns a
//! [`Decision`] and the controller carries it out.
//!
//! # Rules (CronJob v2 controller behaviour, adapted)
//!
//! | situation | decision |
//! |---|---|
//! | invalid spec (neither/both of `schedule`/`runAt`, a cron that never matches) | `stalled`, no run, no requeue |
//! | `suspend: true` | no new run, nothing cancelled, `next_schedule_time` none, no requeue; history is still pruned (as CronJob does) |
//! | nothing due since `earliest` | no run; requeue at the next fire time |
//! | one or more times due | only the **most recent** is considered, at most once |
//! | more than [`TOO_MANY_MISSED`] due | Warning `TooManyMissedTimes`, then the most recent is still considered |
//! | the most recent is older than `startingDeadlineSeconds` | Warning `MissedSchedule`, no run, `last_schedule_time` advances to it |
//! | a run with the computed name exists | adopted: no create, `last_schedule_time` advances |
//! | `Forbid` and a run is `Pending`/`Running` | Normal `SkippedForbid`, no run, `last_schedule_time` **unchanged** |
//! | `Replace` and runs are active | they are listed in `cancel`, and the new run is created |
//! | `Allow` | the new run is created |
//!
//! `earliest` is `last_schedule_time`, or `created_at` when the schedule
//! never ran; with `startingDeadlineSeconds` the window is further limited to
//! `(now - deadline, now]`, exactly as CronJob counts missed times. Times are
//! due when `earliest < t <= now`.
//!
//! **Deadline.** CronJob never looks before `now - deadline`, so a time past
//! its deadline simply drops out of the window and is never retried. Veil
//! does the same, and additionally reports the most recent such time once
//! with `MissedSchedule` and records it as `last_schedule_time`, so the event
//! is not repeated on every pass and the skip is visible in status.
//!
//! **Forbid.** Like CronJob, a time skipped because a run is still active is
//! not recorded: when the active run finishes (and the time is still within
//! `startingDeadlineSeconds`, or there is no deadline) it starts late. Set a
//! deadline to drop such runs instead.
//!
//! **Time zones and DST** (evaluated in `spec.timeZone`, default UTC; the
//! behaviour of the croner crate, which follows Vixie cron):
//! - a wall-clock time that does not exist (spring forward, e.g. `30 2 * * *`
//!   in `Europe/Berlin` on the last Sunday of March) fires once at the first
//!   valid instant after the gap (03:00 local) when the schedule has a fixed
//!   hour and minute; schedules with wildcard or stepped hours/minutes simply
//!   have no occurrences inside the gap;
//! - a wall-clock time that occurs twice (fall back) fires once, at its first
//!   (summer-time) occurrence, for fixed-time schedules; schedules with
//!   wildcard or stepped hours/minutes fire in both passes (an hourly job
//!   runs every real hour).
//!
//! **`runAt`.** One run, named from `runAt`, due once `runAt <= now` and
//! `last_schedule_time < runAt` (a one-shot written slightly in the past still
//! runs — bound it with `startingDeadlineSeconds`); afterwards the phase is
//! `Completed` and nothing is requeued.
//!
//! **History.** At most `successfulJobsHistoryLimit` `Succeeded` and
//! `failedJobsHistoryLimit` `Failed`/`Cancelled` runs are kept; the oldest
//! (by scheduled time) beyond that are listed in `prune`.
//!
//! **Events** are computed per decision; the caller records or aggregates
//! them (the same inputs give the same events).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use veil_crds::schedule::{ConcurrencyPolicy, SchedulePhase, ScheduleSpec};
use veil_crds::task_run::TaskRunPhase;

mod history;
mod name;
#[cfg(test)]
mod tests;
mod timetable;

pub use name::{MAX_RUN_NAME_LEN, run_name};

use timetable::Timetable;

/// More missed start times than this since `earliest` add a
/// `TooManyMissedTimes` warning (CronJob's limit; Veil still starts the most
/// recent one instead of failing).
pub const TOO_MANY_MISSED: usize = 100;

/// Added to every requeue delay so the next pass lands just after the fire
/// time rather than a hair before it (CronJob adds the same 100 ms).
pub const REQUEUE_SLACK: Duration = Duration::from_millis(100);

/// Event and condition reasons produced here.
pub mod reason {
    /// Warning: more than [`super::TOO_MANY_MISSED`] start times were missed.
    pub const TOO_MANY_MISSED_TIMES: &str = "TooManyMissedTimes";
    /// Warning: the most recent due time is past `startingDeadlineSeconds`; skipped.
    pub const MISSED_SCHEDULE: &str = "MissedSchedule";
    /// Normal: `Forbid` and a run is still active; the due time was not started.
    pub const SKIPPED_FORBID: &str = "SkippedForbid";
    /// Stalled: the spec cannot produce fire times.
    pub const INVALID_SCHEDULE: &str = "InvalidSchedule";
}

/// What the controller knows about one Schedule.
#[derive(Clone, Copy, Debug)]
pub struct ScheduleInput<'a> {
    /// `metadata.name`; run names derive from it.
    pub name: &'a str,
    /// The desired schedule.
    pub spec: &'a ScheduleSpec,
    /// `metadata.creationTimestamp`: no cron time at or before it is due.
    pub created_at: DateTime<Utc>,
    /// The scheduled time last recorded (persisted by the controller).
    pub last_schedule_time: Option<DateTime<Utc>>,
    /// The TaskRuns owned by this schedule, in any order.
    pub runs: &'a [RunSummary],
    /// The current time.
    pub now: DateTime<Utc>,
}

/// One TaskRun owned by the schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// `metadata.name`.
    pub name: String,
    /// The scheduled time the run was made for.
    pub scheduled_time: DateTime<Utc>,
    /// Its current phase.
    pub phase: TaskRunPhase,
    /// When it finished, if it did.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A run the controller must create (owned by the schedule, labelled
/// `veil.dev/schedule`). Creating it when it already exists is success: the
/// name is the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRun {
    /// [`run_name`] of the schedule and `scheduled_time`.
    pub name: String,
    /// The cron (or `runAt`) time this run stands for.
    pub scheduled_time: DateTime<Utc>,
}

/// Whether an event is routine or needs attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Routine.
    Normal,
    /// A person should look.
    Warning,
}

/// An event to record on the Schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleEvent {
    /// Normal or Warning.
    pub type_: EventType,
    /// CamelCase reason, one of [`reason`].
    pub reason: &'static str,
    /// What happened, naming the scheduled time.
    pub message: String,
}

/// Everything the controller should do for one Schedule now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// The run to create, if one is due and allowed.
    pub create: Option<NewRun>,
    /// `Replace`: active runs to cancel before the new one starts.
    pub cancel: Vec<String>,
    /// Finished runs beyond the history limits, oldest first.
    pub prune: Vec<String>,
    /// The value to persist; equal to the input when nothing was scheduled.
    pub last_schedule_time: Option<DateTime<Utc>>,
    /// When the next run is due (none when suspended, stalled or done).
    pub next_schedule_time: Option<DateTime<Utc>>,
    /// When to look again; `None` means only a change to the schedule or its
    /// runs needs another pass.
    pub requeue_after: Option<Duration>,
    /// Events to record, in order.
    pub events: Vec<ScheduleEvent>,
    /// `(reason, message)` for a `Stalled` condition; no runs are made.
    pub stalled: Option<(String, String)>,
    /// The phase for `status.phase`.
    pub phase: SchedulePhase,
}

/// Why a spec cannot produce fire times (reported as `stalled`).
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// Neither `schedule` nor `runAt` is set.
    #[error("neither `schedule` nor `runAt` is set; write e.g. `schedule: \"*/5 * * * *\"`")]
    NoTimes,
    /// Both `schedule` and `runAt` are set.
    #[error("both `schedule` and `runAt` are set; keep one")]
    BothTimes,
    /// The cron expression has no occurrence after `after` (e.g. `0 0 30 2 *`).
    #[error(
        "spec.schedule `{schedule}` has no fire time after {after} in time zone {zone}; \
         check the day-of-month and month fields"
    )]
    NoNextTime {
        /// The schedule as written.
        schedule: String,
        /// The IANA zone it is read in.
        zone: String,
        /// Where the search started.
        after: DateTime<Utc>,
        /// croner's reason.
        #[source]
        source: croner::errors::CronError,
    },
}

/// Decides what to do for one Schedule; pure and deterministic: the same
/// input always gives the same decision, so a restarted controller repeats
/// (and, through the run name, adopts) what the previous one did.
pub fn decide(input: &ScheduleInput<'_>) -> Decision {
    let spec = input.spec;
    let mut decision = Decision {
        prune: history::prune(
            input.runs,
            spec.successful_jobs_history_limit,
            spec.failed_jobs_history_limit,
        ),
        last_schedule_time: input.last_schedule_time,
        ..Decision::default()
    };
    let timetable = match Timetable::from_spec(spec) {
        Ok(timetable) => timetable,
        Err(error) => return stall(decision, input, &error),
    };
    if spec.suspend {
        decision.phase = SchedulePhase::Suspended;
        return decision;
    }
    if let Err(error) = schedule_due(input, &timetable, &mut decision) {
        return stall(decision, input, &error);
    }
    match timetable.next_after(input.now) {
        Ok(next) => {
            decision.next_schedule_time = next;
            decision.requeue_after = next.map(|at| delay(input.now, at));
        }
        Err(error) => return stall(decision, input, &error),
    }
    decision.phase = match (&timetable, decision.last_schedule_time) {
        (Timetable::Once(at), Some(last)) if last >= *at => SchedulePhase::Completed,
        _ => SchedulePhase::Active,
    };
    decision
}

/// Fills `create`, `cancel`, `last_schedule_time` and events for the most
/// recent due time, if any.
fn schedule_due(
    input: &ScheduleInput<'_>,
    timetable: &Timetable<'_>,
    decision: &mut Decision,
) -> Result<(), ScheduleError> {
    let floor = match timetable {
        Timetable::Cron { .. } => Some(input.last_schedule_time.unwrap_or(input.created_at)),
        Timetable::Once(_) => input.last_schedule_time,
    };
    let deadline = input
        .spec
        .starting_deadline_seconds
        .map(|s| TimeDelta::seconds(i64::from(s)));
    let window_start = match (floor, deadline) {
        (Some(floor), Some(d)) => Some(floor.max(input.now - d)),
        (None, Some(d)) => Some(input.now - d),
        (floor, None) => floor,
    };
    let due = timetable.walk(window_start, input.now)?;
    if due.count > TOO_MANY_MISSED {
        decision.events.push(ScheduleEvent {
            type_: EventType::Warning,
            reason: reason::TOO_MANY_MISSED_TIMES,
            message: format!(
                "more than {TOO_MANY_MISSED} start times were missed since {}; only the most recent is considered. \
                 Set or decrease spec.startingDeadlineSeconds or check clock skew",
                window_start.map_or_else(|| "the beginning".to_owned(), |t| t.to_rfc3339())
            ),
        });
    }
    let Some(scheduled) = due.latest else {
        if window_start != floor {
            // Times between `floor` and the deadline window dropped out; report the latest once.
            if let Some(missed) = timetable
                .walk(floor, window_start.unwrap_or(input.now))?
                .latest
            {
                decision.events.push(ScheduleEvent {
                    type_: EventType::Warning,
                    reason: reason::MISSED_SCHEDULE,
                    message: format!(
                        "missed scheduled time {} by more than startingDeadlineSeconds ({}s); skipped",
                        missed.to_rfc3339(),
                        input.spec.starting_deadline_seconds.unwrap_or_default()
                    ),
                });
                decision.last_schedule_time = Some(missed);
            }
        }
        return Ok(());
    };
    let name = run_name(input.name, scheduled);
    if input.runs.iter().any(|run| run.name == name) {
        decision.last_schedule_time = Some(scheduled);
        return Ok(());
    }
    let active: Vec<&RunSummary> = input
        .runs
        .iter()
        .filter(|run| !run.phase.is_finished())
        .collect();
    match input.spec.concurrency_policy {
        ConcurrencyPolicy::Forbid if !active.is_empty() => {
            decision.events.push(ScheduleEvent {
                type_: EventType::Normal,
                reason: reason::SKIPPED_FORBID,
                message: format!(
                    "not starting the run for {} because {} is still active and concurrencyPolicy is Forbid",
                    scheduled.to_rfc3339(),
                    active.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            });
            return Ok(());
        }
        ConcurrencyPolicy::Replace => {
            decision.cancel = active.iter().map(|run| run.name.clone()).collect();
        }
        ConcurrencyPolicy::Allow | ConcurrencyPolicy::Forbid => {}
    }
    decision.create = Some(NewRun {
        name,
        scheduled_time: scheduled,
    });
    decision.last_schedule_time = Some(scheduled);
    Ok(())
}

/// A stalled decision: no runs, nothing recorded, no requeue (only a spec
/// change helps); history is still pruned.
fn stall(mut decision: Decision, input: &ScheduleInput<'_>, error: &ScheduleError) -> Decision {
    decision.create = None;
    decision.last_schedule_time = input.last_schedule_time;
    decision.cancel.clear();
    decision.next_schedule_time = None;
    decision.requeue_after = None;
    decision.stalled = Some((reason::INVALID_SCHEDULE.to_owned(), error.to_string()));
    decision.phase = SchedulePhase::Failed;
    decision
}

/// Time from `now` until just after `at`.
fn delay(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (at - now).to_std().unwrap_or_default() + REQUEUE_SLACK
}
