//! Exactly-once traffic accounting.

use veil_operator::store::{StoreError, TrafficDelta, TrafficTotal};

use crate::Fixture;

fn delta(server: &str, email: &str, uplink: i64, downlink: i64) -> TrafficDelta {
    TrafficDelta {
        server: server.into(),
        email: email.into(),
        uplink,
        downlink,
    }
}

fn total(server: &str, email: &str, uplink: i64, downlink: i64) -> TrafficTotal {
    TrafficTotal {
        server: server.into(),
        email: email.into(),
        uplink,
        downlink,
    }
}

pub async fn a_report_seq_is_applied_once_per_stream(fixture: &Fixture) {
    let store = fixture.open().await;
    let report = [
        delta("vless-eu", "alice", 100, 1_000),
        delta("vless-eu", "bob", 5, 50),
    ];
    assert!(
        store
            .apply_traffic_delta("edge-1", "xray", 7, &report)
            .await
            .expect("first")
    );
    // A retry of the same report, and an older one, are ignored.
    assert!(
        !store
            .apply_traffic_delta("edge-1", "xray", 7, &report)
            .await
            .expect("retry")
    );
    assert!(
        !store
            .apply_traffic_delta("edge-1", "xray", 3, &report)
            .await
            .expect("older")
    );
    assert_eq!(
        store.traffic_totals().await.expect("totals"),
        [
            total("vless-eu", "alice", 100, 1_000),
            total("vless-eu", "bob", 5, 50)
        ]
    );

    let next = [
        delta("vless-eu", "alice", 1, 2),
        delta("vless-us", "alice", 3, 4),
    ];
    assert!(
        store
            .apply_traffic_delta("edge-1", "xray", 8, &next)
            .await
            .expect("next")
    );
    assert_eq!(
        store.traffic_totals().await.expect("totals"),
        [
            total("vless-eu", "alice", 101, 1_002),
            total("vless-eu", "bob", 5, 50),
            total("vless-us", "alice", 3, 4),
        ]
    );
    // An empty report still advances the stream.
    assert!(
        store
            .apply_traffic_delta("edge-1", "xray", 9, &[])
            .await
            .expect("empty")
    );
    assert!(
        !store
            .apply_traffic_delta("edge-1", "xray", 9, &next)
            .await
            .expect("retry")
    );
}

pub async fn streams_are_independent(fixture: &Fixture) {
    let store = fixture.open().await;
    let report = [delta("s", "alice", 1, 1)];
    assert!(
        store
            .apply_traffic_delta("edge-1", "a", 5, &report)
            .await
            .expect("edge-1/a")
    );
    assert!(
        store
            .apply_traffic_delta("edge-1", "b", 5, &report)
            .await
            .expect("edge-1/b")
    );
    assert!(
        store
            .apply_traffic_delta("edge-2", "a", 5, &report)
            .await
            .expect("edge-2/a")
    );
    // A stream's first report applies whatever its seq (an agent may restart numbering elsewhere).
    assert!(
        store
            .apply_traffic_delta("edge-3", "a", -10, &report)
            .await
            .expect("edge-3/a")
    );
    assert_eq!(
        store.traffic_totals().await.expect("totals"),
        [total("s", "alice", 4, 4)]
    );
}

pub async fn deltas_for_one_user_are_summed(fixture: &Fixture) {
    let store = fixture.open().await;
    let report = [
        delta("s", "alice", 1, 10),
        delta("s", "bob", 2, 20),
        delta("s", "alice", 3, 30),
    ];
    assert!(
        store
            .apply_traffic_delta("edge-1", "xray", 1, &report)
            .await
            .expect("apply")
    );
    assert_eq!(
        store.traffic_totals().await.expect("totals"),
        [total("s", "alice", 4, 40), total("s", "bob", 2, 20)]
    );
}

pub async fn failed_report_applies_nothing(fixture: &Fixture) {
    let store = fixture.open().await;
    let full = [delta("s", "alice", i64::MAX, 0)];
    assert!(
        store
            .apply_traffic_delta("edge-1", "xray", 1, &full)
            .await
            .expect("fill")
    );

    // Bob's delta comes first, alice's counter then overflows: the whole
    // report, seq included, must be rolled back.
    let overflowing = [delta("s", "bob", 5, 5), delta("s", "alice", 1, 0)];
    let result = store
        .apply_traffic_delta("edge-1", "xray", 2, &overflowing)
        .await;
    assert!(
        matches!(result, Err(StoreError::Query { .. })),
        "{result:?}"
    );
    assert_eq!(
        store.traffic_totals().await.expect("totals"),
        [total("s", "alice", i64::MAX, 0)]
    );

    // Seq 2 was not consumed: a corrected report with that seq applies.
    let corrected = [delta("s", "bob", 5, 5)];
    assert!(
        store
            .apply_traffic_delta("edge-1", "xray", 2, &corrected)
            .await
            .expect("retry")
    );
    assert_eq!(
        store.traffic_totals().await.expect("totals"),
        [total("s", "alice", i64::MAX, 0), total("s", "bob", 5, 5)]
    );
}

pub async fn negative_delta_is_rejected(fixture: &Fixture) {
    let store = fixture.open().await;
    let report = [delta("s", "alice", 1, 1), delta("s", "bob", -1, 0)];
    let result = store
        .apply_traffic_delta("edge-1", "xray", 1, &report)
        .await;
    assert!(
        matches!(result, Err(StoreError::InvalidTrafficDelta { .. })),
        "{result:?}"
    );
    assert!(store.traffic_totals().await.expect("totals").is_empty());
    assert!(
        store
            .apply_traffic_delta("edge-1", "xray", 1, &[])
            .await
            .expect("seq unused")
    );
}

pub async fn concurrent_retries_count_a_report_once(fixture: &Fixture) {
    const RETRIES: usize = 16;
    let store = fixture.open().await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..RETRIES {
        let store = store.clone();
        tasks.spawn(async move {
            let report = [delta("s", "alice", 10, 100)];
            store
                .apply_traffic_delta("edge-1", "xray", 42, &report)
                .await
        });
    }
    let mut applied = 0;
    while let Some(result) = tasks.join_next().await {
        if result.expect("task").expect("apply") {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(
        store.traffic_totals().await.expect("totals"),
        [total("s", "alice", 10, 100)]
    );
}
