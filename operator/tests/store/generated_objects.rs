//! Generated objects (dir mode): the key is the lock.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use veil_operator::store::{GeneratedObjectRecord, ObjectRef};

use crate::Fixture;

fn at(seconds: i64, micros: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, micros * 1_000)
        .single()
        .expect("valid time")
}

fn run(namespace: &str, name: &str, owner: Option<&str>) -> GeneratedObjectRecord {
    GeneratedObjectRecord {
        key: ObjectRef::new("TaskRun", namespace, name),
        owner: owner.map(|owner| ObjectRef::new("Schedule", namespace, owner)),
        document: json!({
            "apiVersion": "veil.dev/v1alpha1",
            "kind": "TaskRun",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"executor": "shell", "command": ["true"]},
        }),
        created_at: at(0, 0),
    }
}

pub async fn generated_objects_round_trip_in_key_order(fixture: &Fixture) {
    let store = fixture.open().await;
    assert!(store.generated_objects().await.expect("empty").is_empty());
    let document = json!({
        "zeta": [1, 2.5, -3, 1e300, u64::MAX, i64::MIN],
        "alpha": {"nested": null, "flag": true, "text": "ünïcødé \"quoted\" \\ \n line"},
        "metadata": {"labels": {"veil.dev/schedule": "nightly"}},
    });
    let owned = GeneratedObjectRecord {
        document: document.clone(),
        created_at: at(1, 123_456),
        ..run("default", "nightly-29000000", Some("nightly"))
    };
    let unowned = run("default", "Adhoc", None);
    let other_namespace = run("prod", "nightly-29000000", Some("nightly"));
    for record in [&other_namespace, &owned, &unowned] {
        assert!(store.insert_generated_object(record).await.expect("insert"));
    }
    let read = store.generated_objects().await.expect("read");
    assert_eq!(read, [unowned, owned, other_namespace]);
    assert_eq!(read[1].document.to_string(), document.to_string());
}

pub async fn first_insert_of_a_key_wins(fixture: &Fixture) {
    let store = fixture.open().await;
    let first = run("default", "nightly-1", Some("nightly"));
    assert!(store.insert_generated_object(&first).await.expect("first"));
    let second = GeneratedObjectRecord {
        owner: None,
        document: json!({"other": true}),
        created_at: at(5, 0),
        ..first.clone()
    };
    assert!(
        !store
            .insert_generated_object(&second)
            .await
            .expect("second")
    );
    assert_eq!(store.generated_objects().await.expect("read"), [first]);
}

pub async fn generated_object_documents_are_updated(fixture: &Fixture) {
    let store = fixture.open().await;
    let original = run("default", "nightly-1", Some("nightly"));
    assert!(
        store
            .insert_generated_object(&original)
            .await
            .expect("insert")
    );
    let cancelled = json!({
        "kind": "TaskRun",
        "spec": {"executor": "shell", "command": ["true"], "cancel": true},
    });
    assert!(
        store
            .update_generated_object(&original.key, &cancelled)
            .await
            .expect("update")
    );
    let unknown = ObjectRef::new("TaskRun", "default", "unknown");
    assert!(
        !store
            .update_generated_object(&unknown, &cancelled)
            .await
            .expect("update unknown")
    );
    // Only the document changed; no object appeared.
    assert_eq!(
        store.generated_objects().await.expect("read"),
        [GeneratedObjectRecord {
            document: cancelled,
            ..original
        }]
    );
}

pub async fn invalid_generated_objects_are_rejected(fixture: &Fixture) {
    let store = fixture.open().await;
    let no_name = run("default", "", None);
    store
        .insert_generated_object(&no_name)
        .await
        .expect_err("an empty name is rejected");
    let bad_owner = GeneratedObjectRecord {
        owner: Some(ObjectRef::new("", "default", "nightly")),
        ..run("default", "nightly-1", None)
    };
    store
        .insert_generated_object(&bad_owner)
        .await
        .expect_err("an owner without a kind is rejected");
    assert!(store.generated_objects().await.expect("read").is_empty());
}

/// The same run name inserted by 8 tasks on two stores (two processes) at
/// once: exactly one wins, and its object is the one stored.
pub async fn racing_inserts_of_one_key_let_one_win(fixture: &Fixture) {
    const RACERS: usize = 8;
    let stores = [fixture.open().await, fixture.open().await];
    let mut tasks = tokio::task::JoinSet::new();
    for racer in 0..RACERS {
        let store = stores[racer % stores.len()].clone();
        tasks.spawn(async move {
            let record = GeneratedObjectRecord {
                document: json!({"racer": racer}),
                ..run("default", "nightly-29000000", Some("nightly"))
            };
            let inserted = store.insert_generated_object(&record).await;
            (racer, inserted)
        });
    }
    let mut winners = Vec::new();
    while let Some(result) = tasks.join_next().await {
        let (racer, inserted) = result.expect("task");
        if inserted.expect("insert") {
            winners.push(racer);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let stored = stores[0].generated_objects().await.expect("read");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].document, json!({"racer": winners[0]}));
}

pub async fn generated_objects_are_deleted(fixture: &Fixture) {
    let store = fixture.open().await;
    let records = [
        run("default", "a", Some("nightly")),
        run("default", "b", None),
        run("prod", "a", None),
    ];
    for record in &records {
        assert!(store.insert_generated_object(record).await.expect("insert"));
    }
    store
        .delete_generated_objects(&[
            records[0].key.clone(),
            records[2].key.clone(),
            ObjectRef::new("TaskRun", "default", "unknown"),
            records[0].key.clone(),
        ])
        .await
        .expect("delete");
    assert_eq!(
        store.generated_objects().await.expect("read"),
        [records[1].clone()]
    );
    store
        .delete_generated_objects(&[])
        .await
        .expect("empty delete");
    // A deleted key can be taken again.
    assert!(
        store
            .insert_generated_object(&records[0])
            .await
            .expect("insert again")
    );
}
