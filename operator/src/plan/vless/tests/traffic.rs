//! Traffic periods: baselines, limits, resets, last seen.

use crate::records::TrafficBaselineRecord;

use super::*;

const SERVER: &str = "default/edge-vless";
const EMAIL: &str = "default.alice";

fn monthly(extra: &str) -> String {
    format!(
        "{BASE}{}",
        key(
            "alice",
            &format!(
                "  id: {ALICE_ID}\n  trafficLimitBytes: 1000\n  trafficResetPeriod: monthly\n{extra}"
            )
        )
    )
}

fn baseline(case: &Case, period_start: &str, uplink: i64, downlink: i64) -> TrafficBaselineRecord {
    TrafficBaselineRecord {
        key_uid: case.uid(Kind::VlessKey, "alice"),
        server: SERVER.into(),
        email: EMAIL.into(),
        period_start: at(period_start),
        uplink,
        downlink,
    }
}

fn with_baseline(case: &mut Case, record: TrafficBaselineRecord) {
    case.traffic.put_baseline(record);
}

/// Alice's baseline taken at `period_start` with these counters.
fn set_baseline(case: &mut Case, period_start: &str, uplink: i64, downlink: i64) {
    let record = baseline(case, period_start, uplink, downlink);
    with_baseline(case, record);
}

#[test]
fn period_traffic_is_totals_minus_the_baseline_and_the_limit_removes_the_user() {
    let mut case = Case::new(&monthly(""), at("2026-11-23T12:00:00Z"));
    case.agent("edge-1", "203.0.113.1");
    case.traffic.add(SERVER, EMAIL, 5_300, 200);
    set_baseline(&mut case, "2026-11-01T00:00:00Z", 5_000, 0);
    let plan = case.plan();
    assert!(plan.traffic_baselines.is_empty(), "the baseline is current");
    let status = key_status(&plan, "alice");
    assert_eq!(status["uplinkBytes"], 300);
    assert_eq!(status["downlinkBytes"], 200);
    assert_eq!(status["trafficBytes"], 500);
    assert_eq!(status["periodStart"], "2026-11-01T00:00:00Z");
    assert_eq!(emails(&plan, "edge-1"), [EMAIL]);
    assert_eq!(
        plan.wake_at,
        Some(at("2026-12-01T00:00:00Z")),
        "the next reset"
    );

    case.traffic.add(SERVER, EMAIL, 250, 250);
    let plan = case.plan();
    let status = key_status(&plan, "alice");
    assert_eq!(status["trafficBytes"], 1_000);
    assert_eq!(status["phase"], "LimitExceeded");
    assert!(emails(&plan, "edge-1").is_empty());
    let message = condition(&status, "Ready")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("2026-12-01T00:00:00Z"), "{message}");
}

#[test]
fn a_new_period_counts_from_zero_and_asks_for_a_new_baseline() {
    let mut case = Case::new(&monthly(""), at("2026-11-30T23:59:59Z"));
    case.agent("edge-1", "203.0.113.1");
    case.traffic.add(SERVER, EMAIL, 5_800, 200);
    set_baseline(&mut case, "2026-11-01T00:00:00Z", 5_000, 0);
    assert_eq!(key_status(&case.plan(), "alice")["phase"], "LimitExceeded");

    case.now = at("2026-12-01T00:00:00Z");
    let plan = case.plan();
    let expected = baseline(&case, "2026-12-01T00:00:00Z", 5_800, 200);
    assert_eq!(plan.traffic_baselines, std::slice::from_ref(&expected));
    let status = key_status(&plan, "alice");
    assert_eq!(status["trafficBytes"], 0);
    assert_eq!(status["periodStart"], "2026-12-01T00:00:00Z");
    assert_eq!(emails(&plan, "edge-1"), [EMAIL], "back at the reset");

    with_baseline(&mut case, expected);
    case.traffic.add(SERVER, EMAIL, 10, 0);
    let plan = case.plan();
    assert!(plan.traffic_baselines.is_empty());
    assert_eq!(key_status(&plan, "alice")["trafficBytes"], 10);
}

#[test]
fn the_period_starts_at_midnight_in_the_keys_time_zone() {
    let case = Case::new(
        &monthly("  timeZone: Europe/Moscow\n"),
        at("2026-11-23T12:00:00Z"),
    );
    let plan = case.plan();
    assert_eq!(
        key_status(&plan, "alice")["periodStart"],
        "2026-10-31T21:00:00Z"
    );
    assert_eq!(plan.wake_at, Some(at("2026-11-30T21:00:00Z")));
}

#[test]
fn a_first_seen_key_or_a_changed_email_starts_a_new_baseline() {
    let mut case = Case::new(&monthly(""), at("2026-11-23T12:00:00Z"));
    case.traffic.add(SERVER, EMAIL, 70, 30);
    let plan = case.plan();
    assert_eq!(
        plan.traffic_baselines,
        [baseline(&case, "2026-11-01T00:00:00Z", 70, 30)],
        "a new key starts at zero even where its email has counters"
    );
    with_baseline(&mut case, plan.traffic_baselines[0].clone());
    case.edit(&monthly("  email: renamed\n"));
    let plan = case.plan();
    assert_eq!(plan.traffic_baselines.len(), 1);
    assert_eq!(plan.traffic_baselines[0].email, "renamed");
    assert_eq!(plan.traffic_baselines[0].uplink, 0);
}

#[test]
fn a_never_resetting_key_counts_from_its_creation() {
    let yaml = format!("{BASE}{}", key("alice", &format!("  id: {ALICE_ID}\n")));
    let mut case = Case::new(&yaml, at("2026-11-23T12:00:00Z"));
    case.now += TimeDelta::days(40);
    let plan = case.plan();
    assert_eq!(plan.traffic_baselines.len(), 1);
    assert_eq!(
        plan.traffic_baselines[0].period_start,
        at("2026-11-23T12:00:00Z")
    );
    assert_eq!(plan.wake_at, None, "no expiry, no reset");
}

#[test]
fn last_seen_shows_when_the_users_traffic_was_last_reported() {
    let mut case = Case::new(&monthly(""), at("2026-11-23T12:00:00Z"));
    case.traffic.see(
        (SERVER.to_owned(), EMAIL.to_owned()),
        at("2026-11-23T11:59:30Z"),
    );
    let status = key_status(&case.plan(), "alice");
    assert_eq!(status["lastSeen"], "2026-11-23T11:59:30Z");
}

#[test]
fn baselines_of_deleted_keys_are_stale() {
    let mut case = Case::new(&monthly(""), at("2026-11-23T12:00:00Z"));
    let mut gone = baseline(&case, "2026-11-01T00:00:00Z", 1, 1);
    gone.key_uid = "uid-deleted".into();
    with_baseline(&mut case, gone);
    set_baseline(&mut case, "2026-11-01T00:00:00Z", 0, 0);
    assert_eq!(case.plan().stale_baselines, ["uid-deleted"]);
}
