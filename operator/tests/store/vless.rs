//! VLESS state: traffic period baselines, last-seen times, and generated
//! credentials written in batches.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use veil_operator::store::{StoreError, TrafficBaselineRecord, TrafficSeenRecord};

use crate::Fixture;

fn time(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .expect("a valid time")
        + TimeDelta::seconds(seconds)
}

fn baseline(uid: &str, email: &str, uplink: i64) -> TrafficBaselineRecord {
    TrafficBaselineRecord {
        key_uid: uid.into(),
        server: "default/edge".into(),
        email: email.into(),
        period_start: time(0),
        uplink,
        downlink: 2 * uplink,
    }
}

pub async fn traffic_baselines_are_upserted_and_deleted(fixture: &Fixture) {
    let store = fixture.open().await;
    assert!(store.traffic_baselines().await.expect("empty").is_empty());
    let first = [baseline("u2", "bob", 1), baseline("u1", "alice", 5)];
    store
        .upsert_traffic_baselines(&first)
        .await
        .expect("insert");
    // A new period replaces the row; the last entry for a uid wins.
    let next = TrafficBaselineRecord {
        period_start: time(86_400),
        ..baseline("u1", "alice", 7)
    };
    store
        .upsert_traffic_baselines(&[baseline("u1", "alice", 6), next.clone()])
        .await
        .expect("replace");
    assert_eq!(
        store.traffic_baselines().await.expect("read"),
        [next, baseline("u2", "bob", 1)],
        "ordered by uid"
    );
    store
        .delete_traffic_baselines(&["u2".into(), "unknown".into(), "u2".into()])
        .await
        .expect("delete");
    assert_eq!(store.traffic_baselines().await.expect("read").len(), 1);
}

pub async fn baseline_batch_is_all_or_nothing(fixture: &Fixture) {
    let store = fixture.open().await;
    let result = store
        .upsert_traffic_baselines(&[baseline("ok", "a", 1), baseline("bad", "b", -1)])
        .await;
    assert!(
        matches!(result, Err(StoreError::Query { .. })),
        "{result:?}"
    );
    assert!(store.traffic_baselines().await.expect("read").is_empty());
}

pub async fn baseline_period_starts_keep_microseconds(fixture: &Fixture) {
    let store = fixture.open().await;
    let precise = TrafficBaselineRecord {
        period_start: time(0) + TimeDelta::microseconds(123_456),
        ..baseline("u1", "alice", 1)
    };
    store
        .upsert_traffic_baselines(std::slice::from_ref(&precise))
        .await
        .expect("insert");
    assert_eq!(store.traffic_baselines().await.expect("read"), [precise]);
}

pub async fn traffic_last_seen_never_moves_backwards(fixture: &Fixture) {
    let store = fixture.open().await;
    let users = |emails: &[&str]| -> Vec<(String, String)> {
        emails
            .iter()
            .map(|e| ("default/edge".to_owned(), (*e).to_owned()))
            .collect()
    };
    store
        .record_traffic_seen(&users(&["alice", "bob", "alice"]), time(10))
        .await
        .expect("first");
    store
        .record_traffic_seen(&users(&["alice"]), time(5))
        .await
        .expect("older");
    store
        .record_traffic_seen(&users(&["bob"]), time(20))
        .await
        .expect("newer");
    let seen = |email: &str, at: DateTime<Utc>| TrafficSeenRecord {
        server: "default/edge".into(),
        email: email.into(),
        last_seen: at,
    };
    assert_eq!(
        store.traffic_last_seen().await.expect("read"),
        [seen("alice", time(10)), seen("bob", time(20))]
    );
}

pub async fn generated_values_are_stored_in_batches_first_writer_wins(fixture: &Fixture) {
    let store = fixture.open().await;
    assert_eq!(
        store
            .generated_value_or_insert("vless-id", "uid-a", "first")
            .await
            .expect("single"),
        "first"
    );
    let pairs = |items: &[(&str, &str)]| -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let stored = store
        .generated_values_or_insert(
            "vless-id",
            &pairs(&[
                ("uid-c", "c1"),
                ("uid-a", "other"),
                ("uid-b", "b1"),
                ("uid-c", "c2"),
            ]),
        )
        .await
        .expect("batch");
    assert_eq!(
        stored,
        pairs(&[("uid-a", "first"), ("uid-b", "b1"), ("uid-c", "c2")]),
        "a stored key keeps its value; the last candidate for a key is offered"
    );
    store
        .generated_values_or_insert("reality-private-key", &pairs(&[("uid-a", "key")]))
        .await
        .expect("other scope");
    assert_eq!(
        store.generated_values("vless-id").await.expect("list"),
        stored
    );
    store
        .delete_generated_values("vless-id", &["uid-b".into(), "nope".into()])
        .await
        .expect("delete");
    assert_eq!(
        store.generated_values("vless-id").await.expect("list"),
        pairs(&[("uid-a", "first"), ("uid-c", "c2")])
    );
    assert_eq!(
        store
            .generated_values("reality-private-key")
            .await
            .expect("other scope"),
        pairs(&[("uid-a", "key")]),
        "scopes are separate"
    );
}

pub async fn racing_generated_value_batches_agree(fixture: &Fixture) {
    const RACERS: usize = 8;
    let store = fixture.open().await;
    let mut tasks = tokio::task::JoinSet::new();
    for racer in 0..RACERS {
        let store = store.clone();
        tasks.spawn(async move {
            let candidates: Vec<(String, String)> = (0..50)
                .map(|i| (format!("uid-{i:02}"), format!("racer-{racer}")))
                .collect();
            store
                .generated_values_or_insert("vless-id", &candidates)
                .await
        });
    }
    let mut answers = Vec::new();
    while let Some(result) = tasks.join_next().await {
        answers.push(result.expect("task").expect("batch"));
    }
    let stored = store.generated_values("vless-id").await.expect("list");
    assert_eq!(stored.len(), 50);
    assert!(answers.iter().all(|answer| *answer == stored));
}

pub async fn adopted_generated_values_replace_stored_ones(fixture: &Fixture) {
    let store = fixture.open().await;
    let pairs = |items: &[(&str, &str)]| -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    store
        .generated_values_or_insert("vless-id", &pairs(&[("uid-a", "mine"), ("uid-b", "b1")]))
        .await
        .expect("generated");
    store
        .put_generated_values(
            "vless-id",
            &pairs(&[("uid-a", "older"), ("uid-c", "c1"), ("uid-a", "cluster")]),
        )
        .await
        .expect("adopted");
    assert_eq!(
        store.generated_values("vless-id").await.expect("list"),
        pairs(&[("uid-a", "cluster"), ("uid-b", "b1"), ("uid-c", "c1")]),
        "an adopted value replaces the stored one; the last one for a key wins"
    );
    assert_eq!(
        store
            .generated_value_or_insert("vless-id", "uid-c", "new")
            .await
            .expect("single"),
        "c1",
        "an adopted value is kept like a generated one"
    );
}
