//! Table-style tests of the scheduling rules with fixed clocks.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use veil_crds::schedule::{SchedulePhase, ScheduleSpec};
use veil_crds::task_run::TaskRunPhase;

use super::*;

const NAME: &str = "backup";

fn mk_spec(fields: &str) -> ScheduleSpec {
    let yaml = format!("task: {{executor: shell, shell: {{command: [\"true\"]}}}}\n{fields}");
    serde_yaml_ng::from_str(&yaml).unwrap()
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn mk_run(scheduled: &str, phase: TaskRunPhase) -> RunSummary {
    let scheduled_time = at(scheduled);
    RunSummary {
        name: run_name(NAME, scheduled_time),
        scheduled_time,
        phase,
        finished_at: phase.is_finished().then_some(scheduled_time),
    }
}

/// Decides for `NAME` created at midnight 2026-01-01 UTC.
fn decide_at(spec: &ScheduleSpec, last: Option<&str>, runs: &[RunSummary], now: &str) -> Decision {
    decide(&ScheduleInput {
        name: NAME,
        spec,
        created_at: at("2026-01-01T00:00:00Z"),
        last_schedule_time: last.map(at),
        runs,
        now: at(now),
    })
}

/// Runs the controller every `step` from `from` to `to`, carrying out each
/// decision (created runs succeed at once); returns the scheduled times of the
/// runs created, asserting that no name is created twice.
fn simulate(
    spec: &ScheduleSpec,
    created: &str,
    from: &str,
    to: &str,
    step: TimeDelta,
) -> Vec<DateTime<Utc>> {
    let (mut last, mut runs, mut fired) = (None, Vec::<RunSummary>::new(), Vec::new());
    let mut now = at(from);
    while now <= at(to) {
        let decision = decide(&ScheduleInput {
            name: NAME,
            spec,
            created_at: at(created),
            last_schedule_time: last,
            runs: &runs,
            now,
        });
        if let Some(new) = decision.create {
            assert!(
                runs.iter().all(|r| r.name != new.name),
                "{} created twice",
                new.name
            );
            fired.push(new.scheduled_time);
            runs.push(RunSummary {
                name: new.name,
                scheduled_time: new.scheduled_time,
                phase: TaskRunPhase::Succeeded,
                finished_at: Some(now),
            });
        }
        last = decision.last_schedule_time;
        now += step;
    }
    fired
}

fn reasons(decision: &Decision) -> Vec<&'static str> {
    decision.events.iter().map(|e| e.reason).collect()
}

#[test]
fn every_minute_schedule_fires_once_per_minute_and_never_twice() {
    let spec = mk_spec("schedule: '* * * * *'");
    let fired = simulate(
        &spec,
        "2026-01-01T10:00:30Z",
        "2026-01-01T10:00:30Z",
        "2026-01-01T10:05:59Z",
        TimeDelta::seconds(7),
    );
    let minutes: Vec<_> = (1..=5)
        .map(|m| at(&format!("2026-01-01T10:0{m}:00Z")))
        .collect();
    assert_eq!(fired, minutes);
}

#[test]
fn nothing_due_requeues_just_after_the_next_fire_time() {
    let spec = mk_spec("schedule: '*/5 * * * *'");
    let d = decide_at(
        &spec,
        Some("2026-01-01T10:00:00Z"),
        &[],
        "2026-01-01T10:01:00Z",
    );
    assert_eq!(d.create, None);
    assert_eq!(d.next_schedule_time, Some(at("2026-01-01T10:05:00Z")));
    assert_eq!(
        d.requeue_after,
        Some(Duration::from_secs(240) + REQUEUE_SLACK)
    );
    assert_eq!(d.last_schedule_time, Some(at("2026-01-01T10:00:00Z")));
    assert_eq!(d.phase, SchedulePhase::Active);
}

#[test]
fn restart_repeats_the_decision_and_adopts_the_existing_run() {
    let spec = mk_spec("schedule: '0 * * * *'");
    let first = decide_at(
        &spec,
        Some("2026-01-01T09:00:00Z"),
        &[],
        "2026-01-01T10:00:03Z",
    );
    assert_eq!(
        first,
        decide_at(
            &spec,
            Some("2026-01-01T09:00:00Z"),
            &[],
            "2026-01-01T10:00:03Z"
        )
    );
    let created = first.create.unwrap();
    assert_eq!(created.name, run_name(NAME, at("2026-01-01T10:00:00Z")));
    // Crash after creating the run, before persisting lastScheduleTime.
    let runs = [mk_run("2026-01-01T10:00:00Z", TaskRunPhase::Running)];
    let again = decide_at(
        &spec,
        Some("2026-01-01T09:00:00Z"),
        &runs,
        "2026-01-01T10:00:09Z",
    );
    assert_eq!(again.create, None, "the name is the lock");
    assert_eq!(again.last_schedule_time, Some(at("2026-01-01T10:00:00Z")));
    assert!(again.events.is_empty());
}

#[test]
fn missed_runs_after_downtime_start_only_the_most_recent_once() {
    let hourly = mk_spec("schedule: '0 * * * *'");
    let every_minute = mk_spec("schedule: '* * * * *'");
    let weekly = mk_spec("schedule: '0 3 * * 1'");
    // (spec, last, now, created run, warning?)
    let table = [
        (
            &hourly,
            "2026-01-01T00:00:00Z",
            "2026-01-01T03:30:00Z",
            "2026-01-01T03:00:00Z",
            false,
        ),
        (
            &every_minute,
            "2026-01-01T00:00:00Z",
            "2026-01-01T01:40:30Z",
            "2026-01-01T01:40:00Z",
            false,
        ),
        (
            &every_minute,
            "2026-01-01T00:00:00Z",
            "2026-01-01T01:41:30Z",
            "2026-01-01T01:41:00Z",
            true,
        ),
        (
            &every_minute,
            "2025-01-01T00:00:00Z",
            "2026-01-01T12:34:56Z",
            "2026-01-01T12:34:00Z",
            true,
        ),
        (
            &weekly,
            "2024-01-01T00:00:00Z",
            "2026-01-01T12:00:00Z",
            "2025-12-29T03:00:00Z",
            true,
        ),
    ];
    for (spec, last, now, expected, warned) in table {
        let d = decide_at(spec, Some(last), &[], now);
        assert_eq!(
            d.create.as_ref().map(|r| r.scheduled_time),
            Some(at(expected)),
            "{now}"
        );
        assert_eq!(d.last_schedule_time, Some(at(expected)));
        let expected_events = if warned {
            vec![reason::TOO_MANY_MISSED_TIMES]
        } else {
            vec![]
        };
        assert_eq!(reasons(&d), expected_events, "{now}");
    }
}

#[test]
fn starting_deadline_skips_a_stale_time_once_and_records_it() {
    let spec = mk_spec("schedule: '0 * * * *'\nstartingDeadlineSeconds: 600");
    let late = decide_at(
        &spec,
        Some("2026-01-01T00:00:00Z"),
        &[],
        "2026-01-01T03:20:00Z",
    );
    assert_eq!(late.create, None);
    assert_eq!(reasons(&late), [reason::MISSED_SCHEDULE]);
    assert_eq!(late.last_schedule_time, Some(at("2026-01-01T03:00:00Z")));
    assert_eq!(late.next_schedule_time, Some(at("2026-01-01T04:00:00Z")));
    let after = decide_at(
        &spec,
        Some("2026-01-01T03:00:00Z"),
        &[],
        "2026-01-01T03:21:00Z",
    );
    assert!(
        after.events.is_empty() && after.create.is_none(),
        "reported once"
    );
    let in_time = decide_at(
        &spec,
        Some("2026-01-01T00:00:00Z"),
        &[],
        "2026-01-01T03:05:00Z",
    );
    assert_eq!(
        in_time.create.as_ref().map(|r| r.scheduled_time),
        Some(at("2026-01-01T03:00:00Z"))
    );
    assert!(
        in_time.events.is_empty(),
        "CronJob counts missed times only inside the deadline"
    );
}

#[test]
fn concurrency_policies() {
    let active = [
        mk_run("2026-01-01T08:00:00Z", TaskRunPhase::Succeeded),
        mk_run("2026-01-01T09:00:00Z", TaskRunPhase::Running),
        mk_run("2026-01-01T09:30:00Z", TaskRunPhase::Pending),
    ];
    let now = "2026-01-01T10:00:01Z";
    let due = at("2026-01-01T10:00:00Z");
    // (policy, created?, cancelled, events)
    let table: [(&str, bool, Vec<String>, Vec<&str>); 3] = [
        ("Allow", true, vec![], vec![]),
        ("Forbid", false, vec![], vec![reason::SKIPPED_FORBID]),
        (
            "Replace",
            true,
            vec![active[1].name.clone(), active[2].name.clone()],
            vec![],
        ),
    ];
    for (policy, created, cancelled, events) in table {
        let spec = mk_spec(&format!(
            "schedule: '0 * * * *'\nconcurrencyPolicy: {policy}"
        ));
        let d = decide_at(&spec, Some("2026-01-01T09:00:00Z"), &active, now);
        assert_eq!(d.create.is_some(), created, "{policy}");
        assert_eq!(d.cancel, cancelled, "{policy}");
        assert_eq!(reasons(&d), events, "{policy}");
        let expected_last = if created {
            due
        } else {
            at("2026-01-01T09:00:00Z")
        };
        assert_eq!(
            d.last_schedule_time,
            Some(expected_last),
            "{policy}: Forbid does not record the skipped time"
        );
    }
}

#[test]
fn forbid_starts_the_skipped_time_late_within_the_deadline_only() {
    let finished = [mk_run("2026-01-01T09:00:00Z", TaskRunPhase::Succeeded)];
    let no_deadline = mk_spec("schedule: '0 * * * *'\nconcurrencyPolicy: Forbid");
    let d = decide_at(
        &no_deadline,
        Some("2026-01-01T09:00:00Z"),
        &finished,
        "2026-01-01T10:20:00Z",
    );
    assert_eq!(
        d.create.as_ref().map(|r| r.scheduled_time),
        Some(at("2026-01-01T10:00:00Z"))
    );
    let deadline =
        mk_spec("schedule: '0 * * * *'\nconcurrencyPolicy: Forbid\nstartingDeadlineSeconds: 300");
    let d = decide_at(
        &deadline,
        Some("2026-01-01T09:00:00Z"),
        &finished,
        "2026-01-01T10:20:00Z",
    );
    assert_eq!(d.create, None);
    assert_eq!(reasons(&d), [reason::MISSED_SCHEDULE]);
}

#[test]
fn suspend_creates_nothing_and_touches_no_run_then_resumes_with_the_latest_missed_time() {
    let spec = mk_spec("schedule: '0 * * * *'\nsuspend: true\nconcurrencyPolicy: Replace");
    let runs = [mk_run("2026-01-01T09:00:00Z", TaskRunPhase::Running)];
    let d = decide_at(
        &spec,
        Some("2026-01-01T09:00:00Z"),
        &runs,
        "2026-01-01T12:00:01Z",
    );
    assert_eq!(
        (
            d.create.clone(),
            d.cancel.clone(),
            d.next_schedule_time,
            d.requeue_after
        ),
        (None, vec![], None, None)
    );
    assert_eq!(d.phase, SchedulePhase::Suspended);
    assert_eq!(d.last_schedule_time, Some(at("2026-01-01T09:00:00Z")));
    let resumed = mk_spec("schedule: '0 * * * *'");
    let d = decide_at(
        &resumed,
        Some("2026-01-01T09:00:00Z"),
        &[],
        "2026-01-01T12:30:00Z",
    );
    assert_eq!(
        d.create.as_ref().map(|r| r.scheduled_time),
        Some(at("2026-01-01T12:00:00Z"))
    );
}

#[test]
fn run_at_fires_once_and_completes() {
    let spec = mk_spec("runAt: '2026-03-01T03:00:00+03:00'");
    let when = at("2026-03-01T00:00:00Z");
    let before = decide_at(&spec, None, &[], "2026-02-28T23:00:00Z");
    assert_eq!(
        (before.create.clone(), before.next_schedule_time),
        (None, Some(when))
    );
    assert_eq!(
        before.requeue_after,
        Some(Duration::from_secs(3600) + REQUEUE_SLACK)
    );
    let due = decide_at(&spec, None, &[], "2026-03-01T00:00:00Z");
    assert_eq!(
        due.create,
        Some(NewRun {
            name: run_name(NAME, when),
            scheduled_time: when
        })
    );
    assert_eq!(
        (due.phase, due.next_schedule_time, due.requeue_after),
        (SchedulePhase::Completed, None, None)
    );
    let done = decide_at(
        &spec,
        Some("2026-03-01T00:00:00Z"),
        &[],
        "2026-03-05T00:00:00Z",
    );
    assert_eq!(
        (done.create, done.phase, done.requeue_after),
        (None, SchedulePhase::Completed, None)
    );
    let stale = mk_spec("runAt: '2026-03-01T00:00:00Z'\nstartingDeadlineSeconds: 60");
    let missed = decide_at(&stale, None, &[], "2026-03-01T00:05:00Z");
    assert_eq!(
        (missed.create.clone(), reasons(&missed)),
        (None, vec![reason::MISSED_SCHEDULE])
    );
    assert_eq!(missed.phase, SchedulePhase::Completed);
}

#[test]
fn history_keeps_the_newest_finished_runs_and_never_prunes_active_ones() {
    let runs = [
        mk_run("2026-01-01T01:00:00Z", TaskRunPhase::Succeeded),
        mk_run("2026-01-01T02:00:00Z", TaskRunPhase::Failed),
        mk_run("2026-01-01T03:00:00Z", TaskRunPhase::Succeeded),
        mk_run("2026-01-01T04:00:00Z", TaskRunPhase::Cancelled),
        mk_run("2026-01-01T05:00:00Z", TaskRunPhase::Succeeded),
        mk_run("2026-01-01T06:00:00Z", TaskRunPhase::Succeeded),
        mk_run("2026-01-01T07:00:00Z", TaskRunPhase::Failed),
        mk_run("2026-01-01T00:30:00Z", TaskRunPhase::Running),
    ];
    let names = |idx: &[usize]| {
        idx.iter()
            .map(|&i| runs[i].name.clone())
            .collect::<Vec<_>>()
    };
    // (successful limit, failed limit, pruned)
    for (ok, failed, pruned) in [
        (3, 1, names(&[0, 1, 3])),
        (0, 0, names(&[0, 1, 2, 3, 4, 5, 6])),
        (9, 9, vec![]),
    ] {
        let spec = mk_spec(&format!(
            "schedule: '0 * * * *'\nsuccessfulJobsHistoryLimit: {ok}\nfailedJobsHistoryLimit: {failed}"
        ));
        assert_eq!(
            decide_at(
                &spec,
                Some("2026-01-01T07:00:00Z"),
                &runs,
                "2026-01-01T07:10:00Z"
            )
            .prune,
            pruned
        );
    }
}

#[test]
fn fixed_time_schedule_in_berlin_across_dst_changes() {
    let spec = mk_spec("schedule: '30 2 * * *'\ntimeZone: Europe/Berlin");
    let step = TimeDelta::minutes(5);
    // Spring forward 2026-03-29: 02:30 does not exist; runs once at 03:00 CEST.
    let spring = simulate(
        &spec,
        "2026-03-27T12:00:00Z",
        "2026-03-27T12:00:00Z",
        "2026-03-30T12:00:00Z",
        step,
    );
    let expected = [
        "2026-03-28T01:30:00Z",
        "2026-03-29T01:00:00Z",
        "2026-03-30T00:30:00Z",
    ];
    assert_eq!(spring, expected.map(at));
    // Fall back 2026-10-25: 02:30 happens twice; runs once, at 02:30 CEST.
    let autumn = simulate(
        &spec,
        "2026-10-23T12:00:00Z",
        "2026-10-23T12:00:00Z",
        "2026-10-26T12:00:00Z",
        step,
    );
    let expected = [
        "2026-10-24T00:30:00Z",
        "2026-10-25T00:30:00Z",
        "2026-10-26T01:30:00Z",
    ];
    assert_eq!(autumn, expected.map(at));
}

#[test]
fn hourly_schedule_in_new_york_runs_every_real_hour_across_dst_changes() {
    let spec = mk_spec("schedule: '15 * * * *'\ntimeZone: America/New_York");
    let step = TimeDelta::minutes(1);
    let hours = |from: &str, n: i64| {
        (0..n)
            .map(|h| at(from) + TimeDelta::hours(h))
            .collect::<Vec<_>>()
    };
    // 2026-03-08 02:00 EST → 03:00 EDT (07:00Z); 2026-11-01 02:00 EDT → 01:00 EST (06:00Z).
    let spring = simulate(
        &spec,
        "2026-03-08T04:00:00Z",
        "2026-03-08T04:00:00Z",
        "2026-03-08T09:59:00Z",
        step,
    );
    // 02:15 local does not exist: 00:15 EST (05:15Z), 01:15 EST (06:15Z), then 03:15 EDT (07:15Z).
    assert_eq!(spring, hours("2026-03-08T04:15:00Z", 6));
    let autumn = simulate(
        &spec,
        "2026-11-01T03:00:00Z",
        "2026-11-01T03:00:00Z",
        "2026-11-01T08:59:00Z",
        step,
    );
    // 01:15 happens twice (05:15Z EDT and 06:15Z EST); both run.
    assert_eq!(autumn, hours("2026-11-01T03:15:00Z", 6));
    // Stepped minutes: every quarter hour of real time, in order, through both passes.
    let quarter = mk_spec("schedule: '*/15 * * * *'\ntimeZone: America/New_York");
    let fired = simulate(
        &quarter,
        "2026-11-01T04:50:00Z",
        "2026-11-01T04:50:00Z",
        "2026-11-01T07:10:00Z",
        step,
    );
    let quarters: Vec<_> = (0..9)
        .map(|q| at("2026-11-01T05:00:00Z") + TimeDelta::minutes(15 * q))
        .collect();
    assert_eq!(fired, quarters);
}

#[test]
fn ambiguous_wall_clock_time_is_never_answered_before_now() {
    // Created during the second 01:xx pass in New York; the first 01:30 lies in the past.
    let spec = mk_spec("schedule: '30 1 * * *'\ntimeZone: America/New_York");
    let d = decide(&ScheduleInput {
        name: NAME,
        spec: &spec,
        created_at: at("2026-11-01T06:10:00Z"),
        last_schedule_time: None,
        runs: &[],
        now: at("2026-11-01T06:40:00Z"),
    });
    assert_eq!(d.create, None);
    assert_eq!(d.next_schedule_time, Some(at("2026-11-02T06:30:00Z")));
}

#[test]
fn schedules_that_cannot_fire_are_stalled_not_silent() {
    let never = mk_spec("schedule: '0 0 30 2 *'");
    let d = decide_at(&never, None, &[], "2026-01-01T00:00:00Z");
    let (why, message) = d.stalled.clone().unwrap();
    assert_eq!(why, reason::INVALID_SCHEDULE);
    assert!(message.contains("0 0 30 2 *"), "{message}");
    assert_eq!(
        (d.create, d.requeue_after, d.phase),
        (None, None, SchedulePhase::Failed)
    );
    let mut neither = mk_spec("schedule: '* * * * *'");
    neither.schedule = None;
    assert!(
        decide_at(&neither, None, &[], "2026-01-01T00:05:00Z")
            .stalled
            .is_some()
    );
    // A leap day is rare, not impossible.
    let leap = decide_at(
        &mk_spec("schedule: '0 0 29 2 *'"),
        None,
        &[],
        "2026-01-01T00:00:00Z",
    );
    assert_eq!(leap.next_schedule_time, Some(at("2028-02-29T00:00:00Z")));
}

#[test]
fn unknown_time_zone_never_reaches_decide() {
    // The API type refuses it, so the object is reported invalid (Stalled) upstream.
    let yaml = "task: {executor: shell, shell: {command: [\"true\"]}}\nschedule: '* * * * *'\ntimeZone: Mars/Olympus";
    let error = serde_yaml_ng::from_str::<ScheduleSpec>(yaml)
        .unwrap_err()
        .to_string();
    assert!(error.contains("Mars/Olympus"), "{error}");
}

#[test]
fn run_names_are_deterministic_minute_stamped_dns_labels() {
    let t = at("2026-01-01T00:00:59Z");
    assert_eq!(run_name("backup", t), "backup-29453760");
    let exact = "a".repeat(MAX_RUN_NAME_LEN - "-29453760".len());
    assert_eq!(run_name(&exact, t), format!("{exact}-29453760"));
    let long_a = format!("{}-a", "x".repeat(60));
    let long_b = format!("{}-b", "x".repeat(60));
    let (a, b) = (run_name(&long_a, t), run_name(&long_b, t));
    assert_ne!(a, b);
    assert_eq!(a, run_name(&long_a, t));
    for name in [&a, &b] {
        assert!(name.len() <= MAX_RUN_NAME_LEN, "{name}");
        assert!(name.ends_with("-29453760"), "{name}");
        assert!(
            name.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        );
    }
    assert_ne!(
        run_name("backup", t),
        run_name("backup", t + TimeDelta::minutes(1))
    );
}
