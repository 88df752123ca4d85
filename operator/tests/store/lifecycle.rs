//! Opening, reopening and sharing a store.

use serde_json::json;
use std::error::Error;
use veil_operator::store::{
    LoadErrorRecord, ObjectRef, Store, StoreError, StoreTarget, TrafficDelta,
};

use crate::Fixture;

pub async fn fresh_store_is_empty_and_answers_ping(fixture: &Fixture) {
    let store = fixture.open().await;
    assert_eq!(store.backend(), fixture.backend());
    store.ping().await.expect("ping");
    assert!(store.object_records().await.expect("records").is_empty());
    assert!(store.statuses().await.expect("statuses").is_empty());
    assert!(store.load_errors().await.expect("load errors").is_empty());
    assert_eq!(store.admin_token_hash().await.expect("admin"), None);
    assert!(store.node_tokens().await.expect("tokens").is_empty());
    assert!(store.traffic_totals().await.expect("totals").is_empty());
    let run = ObjectRef::new("TaskRun", "default", "backup-1");
    assert!(store.read_log(&run, -1).await.expect("log").is_empty());
    assert_eq!(
        store
            .generated_value("vless", "alice")
            .await
            .expect("value"),
        None
    );
}

pub async fn reopening_keeps_data_and_applies_no_migration_twice(fixture: &Fixture) {
    let key = ObjectRef::new("VlessKey", "default", "alice");
    {
        let store = fixture.open().await;
        store
            .write_statuses(&[(key.clone(), Some(json!({"phase": "Ready"})))])
            .await
            .expect("write");
        store
            .set_admin_token_hash("admin-hash")
            .await
            .expect("admin");
        store
            .create_node_token("edge-1", "node-hash", "t1")
            .await
            .expect("token");
        store
            .replace_load_errors(&[LoadErrorRecord {
                file: "keys.yaml".into(),
                line: Some(3),
                column: None,
                object: None,
                path: None,
                message: "bad".into(),
            }])
            .await
            .expect("load errors");
        let delta = TrafficDelta {
            server: "s".into(),
            email: "alice".into(),
            uplink: 1,
            downlink: 2,
        };
        assert!(
            store
                .apply_traffic_delta("edge-1", "xray", 1, &[delta])
                .await
                .expect("traffic")
        );
    }
    let migrations = fixture.applied_migrations().await;
    assert!(migrations >= 1);

    let store = fixture.open().await;
    let store_again = fixture.open().await;
    assert_eq!(fixture.applied_migrations().await, migrations);
    for store in [store, store_again] {
        assert_eq!(
            store.statuses().await.expect("statuses"),
            [(key.clone(), json!({"phase": "Ready"}))]
        );
        assert_eq!(
            store.admin_token_hash().await.expect("admin").as_deref(),
            Some("admin-hash")
        );
        assert_eq!(
            store
                .node_for_token_hash("node-hash")
                .await
                .expect("node")
                .as_deref(),
            Some("edge-1")
        );
        assert_eq!(store.load_errors().await.expect("load errors").len(), 1);
        assert_eq!(store.traffic_totals().await.expect("totals").len(), 1);
        // The applied seq survived too: a retried report is still ignored.
        assert!(
            !store
                .apply_traffic_delta("edge-1", "xray", 1, &[])
                .await
                .expect("traffic")
        );
    }
}

/// Two stores on one database stand for two processes (or replicas): their
/// write transactions must wait for each other, never fail with "busy".
pub async fn two_stores_on_one_database_write_concurrently(fixture: &Fixture) {
    const WRITES_PER_STORE: i64 = 25;
    let stores = [fixture.open().await, fixture.open().await];
    let mut tasks = tokio::task::JoinSet::new();
    for (which, store) in stores.iter().enumerate() {
        for seq in 1..=WRITES_PER_STORE {
            let store = store.clone();
            tasks.spawn(async move {
                let key = ObjectRef::new("VeilNode", "", &format!("node-{which}-{seq}"));
                store
                    .write_statuses(&[(key, Some(json!({"seq": seq})))])
                    .await?;
                let delta = TrafficDelta {
                    server: "s".into(),
                    email: "shared".into(),
                    uplink: 1,
                    downlink: 0,
                };
                let stream = format!("stream-{which}");
                store
                    .apply_traffic_delta("edge-1", &stream, seq, &[delta])
                    .await?;
                store
                    .generated_value_or_insert("scope", "key", &format!("{which}-{seq}"))
                    .await?;
                Ok::<_, StoreError>(())
            });
        }
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("task").expect("concurrent write");
    }
    let statuses = stores[0].statuses().await.expect("statuses");
    assert_eq!(statuses.len(), 2 * WRITES_PER_STORE as usize);
    let totals = stores[1].traffic_totals().await.expect("totals");
    // Seqs arrive out of order, so some are skipped; at least the highest of
    // each stream applied, and never more than all of them.
    assert_eq!(totals.len(), 1);
    assert!(
        (2..=2 * WRITES_PER_STORE).contains(&totals[0].uplink),
        "{totals:?}"
    );
}

#[tokio::test]
async fn sqlite_file_is_in_wal_mode() {
    let fixture = Fixture::sqlite().await;
    let store = fixture.open().await;
    store.ping().await.expect("ping");
    let StoreTarget::Sqlite(path) = &fixture.target else {
        unreachable!("sqlite fixture")
    };
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    let pool = sqlx::SqlitePool::connect_with(options).await.expect("open");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .expect("journal mode");
    assert_eq!(mode, "wal");
    drop(store);
}

/// A login the server refuses fails at once (an unreachable server would be
/// retried for 30 s); the error must not carry the password.
#[tokio::test]
async fn connect_error_never_shows_the_password() {
    let url = veil_e2e::postgres::TestPostgres::shared()
        .fresh_database()
        .await
        .expect("a fresh test database");
    let (_, host_and_database) = url.rsplit_once('@').expect("the harness URL names a user");
    let target = StoreTarget::Postgres(format!("postgres://nobody:hunter2@{host_and_database}"));
    let error = Store::open(&target)
        .await
        .expect_err("role nobody does not exist");
    let mut rendered = format!("{error} {error:?}");
    let mut source = error.source();
    while let Some(cause) = source {
        rendered.push_str(&format!(" {cause} {cause:?}"));
        source = cause.source();
    }
    assert!(rendered.contains("nobody:***@"), "{rendered}");
    assert!(rendered.contains("nobody"), "{rendered}");
    assert!(!rendered.contains("hunter2"), "{rendered}");
}
