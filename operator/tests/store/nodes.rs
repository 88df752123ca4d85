//! Node registrations and exactly-once report sequence numbers.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use veil_operator::store::{NodeRecord, StoreError, StoreTarget};

use crate::Fixture;

fn at(seconds: i64, micros: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, micros * 1_000)
        .single()
        .expect("valid time")
}

fn node(name: &str, last_report_seq: i64) -> NodeRecord {
    NodeRecord {
        node: name.into(),
        registration: json!({"os": "linux", "arch": "aarch64", "version": "0.1.0"}),
        registered_at: at(0, 0),
        last_seen: at(0, 0),
        last_report_seq,
    }
}

/// Runs `sql` on the fixture's database behind the store's back.
async fn execute_raw(fixture: &Fixture, sql: &str) {
    match &fixture.target {
        StoreTarget::Sqlite(path) => {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("sqlite opens");
            sqlx::query(sql).execute(&pool).await.expect("raw sql");
        }
        StoreTarget::Postgres(url) => {
            let pool = sqlx::PgPool::connect(url).await.expect("postgres connects");
            sqlx::query(sql).execute(&pool).await.expect("raw sql");
        }
    }
}

pub async fn node_registrations_round_trip_in_name_order(fixture: &Fixture) {
    let store = fixture.open().await;
    assert!(store.nodes().await.expect("empty").is_empty());
    let registration = json!({
        "zeta": [1, 2.5, -3, 1e300, u64::MAX, i64::MIN],
        "capabilities": [{"name": "xray", "version": "25.1.1", "path": "/usr/bin/xray"}],
        "labels": {"zone": "eu \"west\"", "ünïcødé": "\\ \n", "empty": {}},
        "maybe": null,
    });
    let precise = NodeRecord {
        registration: registration.clone(),
        registered_at: at(1, 123_456),
        last_seen: at(2, 999_999),
        ..node("edge-2", -5)
    };
    let upper = node("Edge-9", 0);
    store.upsert_node(&precise).await.expect("edge-2");
    store.upsert_node(&upper).await.expect("Edge-9");
    let read = store.nodes().await.expect("read");
    // Bytewise order: upper case first.
    assert_eq!(read, [upper, precise]);
    assert_eq!(read[1].registration.to_string(), registration.to_string());

    store
        .upsert_node(&node("", 0))
        .await
        .expect_err("an empty node name is rejected");
}

pub async fn upsert_replaces_a_registration_but_never_lowers_the_seq(fixture: &Fixture) {
    let store = fixture.open().await;
    store.upsert_node(&node("edge-1", 5)).await.expect("insert");
    // Re-registering (an agent restart) replaces everything but the seq.
    let again = NodeRecord {
        registration: json!({"os": "linux", "version": "0.2.0"}),
        registered_at: at(100, 1),
        last_seen: at(100, 2),
        ..node("edge-1", 0)
    };
    store.upsert_node(&again).await.expect("re-register");
    assert_eq!(
        store.nodes().await.expect("read"),
        [NodeRecord {
            last_report_seq: 5,
            ..again.clone()
        }]
    );
    assert!(!store.claim_report_seq("edge-1", 5).await.expect("claim"));
    // A higher seq in a registration is taken.
    store
        .upsert_node(&NodeRecord {
            last_report_seq: 9,
            ..again.clone()
        })
        .await
        .expect("higher seq");
    assert_eq!(store.nodes().await.expect("read")[0].last_report_seq, 9);
}

pub async fn touch_node_sets_last_seen_of_known_nodes_only(fixture: &Fixture) {
    let store = fixture.open().await;
    let registered = node("edge-1", 3);
    store.upsert_node(&registered).await.expect("insert");
    store
        .touch_node("edge-1", at(30, 654_321))
        .await
        .expect("touch");
    store
        .touch_node("unknown", at(30, 0))
        .await
        .expect("touch an unknown node");
    assert_eq!(
        store.nodes().await.expect("read"),
        [NodeRecord {
            last_seen: at(30, 654_321),
            ..registered
        }]
    );
}

pub async fn a_report_seq_is_claimed_once(fixture: &Fixture) {
    let store = fixture.open().await;
    store.upsert_node(&node("edge-1", 0)).await.expect("edge-1");
    store.upsert_node(&node("edge-2", 0)).await.expect("edge-2");
    assert!(store.claim_report_seq("edge-1", 1).await.expect("first"));
    assert!(!store.claim_report_seq("edge-1", 1).await.expect("retry"));
    assert!(!store.claim_report_seq("edge-1", 0).await.expect("lower"));
    // Gaps are fine; lower ones are then refused.
    assert!(store.claim_report_seq("edge-1", 5).await.expect("gap"));
    assert!(!store.claim_report_seq("edge-1", 3).await.expect("older"));
    // Nodes are independent.
    assert!(store.claim_report_seq("edge-2", 3).await.expect("edge-2"));
    // An unregistered node claims nothing.
    assert!(!store.claim_report_seq("unknown", 1).await.expect("unknown"));
    let seqs: Vec<_> = store
        .nodes()
        .await
        .expect("read")
        .into_iter()
        .map(|record| (record.node, record.last_report_seq))
        .collect();
    assert_eq!(seqs, [("edge-1".into(), 5), ("edge-2".into(), 3)]);
}

/// Retries of one report racing from many tasks on two stores (two
/// processes): exactly one claim wins.
pub async fn concurrent_claims_of_one_seq_let_one_through(fixture: &Fixture) {
    const CLAIMERS: usize = 16;
    let stores = [fixture.open().await, fixture.open().await];
    stores[0]
        .upsert_node(&node("edge-1", 0))
        .await
        .expect("register");
    let mut tasks = tokio::task::JoinSet::new();
    for claimer in 0..CLAIMERS {
        let store = stores[claimer % stores.len()].clone();
        tasks.spawn(async move { store.claim_report_seq("edge-1", 42).await });
    }
    let mut won = 0;
    while let Some(result) = tasks.join_next().await {
        if result.expect("task").expect("claim") {
            won += 1;
        }
    }
    assert_eq!(won, 1);
    assert_eq!(
        stores[1].nodes().await.expect("read")[0].last_report_seq,
        42
    );
}

pub async fn nodes_are_deleted(fixture: &Fixture) {
    let store = fixture.open().await;
    store.upsert_node(&node("edge-1", 4)).await.expect("edge-1");
    store.upsert_node(&node("edge-2", 0)).await.expect("edge-2");
    assert!(store.delete_node("edge-1").await.expect("delete"));
    assert!(!store.delete_node("edge-1").await.expect("delete again"));
    assert!(!store.delete_node("unknown").await.expect("delete unknown"));
    assert_eq!(store.nodes().await.expect("read"), [node("edge-2", 0)]);
    // A node registered again starts from its new registration's seq.
    store.upsert_node(&node("edge-1", 0)).await.expect("again");
    assert!(store.claim_report_seq("edge-1", 1).await.expect("claim"));
}

pub async fn corrupt_registration_is_reported(fixture: &Fixture) {
    let store = fixture.open().await;
    store.upsert_node(&node("edge-1", 0)).await.expect("insert");
    execute_raw(fixture, "UPDATE nodes SET registration = '{not json'").await;
    let result = store.nodes().await;
    assert!(
        matches!(&result, Err(StoreError::CorruptDocument { key, .. }) if key.contains("edge-1")),
        "{result:?}"
    );
}
