//! Dir-mode statuses and load errors.

use serde_json::json;
use std::time::Instant;
use veil_operator::store::{LoadErrorRecord, ObjectRef};

use crate::Fixture;

/// The batch size the reconcile loop must handle (design §3: 10,000 objects).
const MANY: usize = 10_000;

fn key(kind: &str, name: &str) -> ObjectRef {
    ObjectRef::new(kind, "default", name)
}

pub async fn statuses_are_upserted_and_deleted_in_key_order(fixture: &Fixture) {
    let store = fixture.open().await;
    // Bytewise order on both backends: upper case sorts before lower case.
    let (upper, lower, node) = (
        key("VlessKey", "Zed"),
        key("VlessKey", "alice"),
        ObjectRef::new("VeilNode", "", "edge"),
    );
    store
        .write_statuses(&[
            (lower.clone(), Some(json!({"phase": "Pending"}))),
            (upper.clone(), Some(json!({"phase": "Ready"}))),
            (node.clone(), Some(json!({"phase": "Ready"}))),
        ])
        .await
        .expect("insert");
    assert_eq!(
        store.statuses().await.expect("read"),
        [
            (node.clone(), json!({"phase": "Ready"})),
            (upper.clone(), json!({"phase": "Ready"})),
            (lower.clone(), json!({"phase": "Pending"})),
        ]
    );

    store
        .write_statuses(&[
            (lower.clone(), Some(json!({"phase": "Ready"}))),
            (upper.clone(), None),
            (key("VlessKey", "never-written"), None),
            // The last change for a key wins.
            (node.clone(), Some(json!({"phase": "Failed"}))),
            (node.clone(), None),
        ])
        .await
        .expect("update and delete");
    assert_eq!(
        store.statuses().await.expect("read"),
        [(lower, json!({"phase": "Ready"}))]
    );
    store
        .write_statuses::<serde_json::Value>(&[])
        .await
        .expect("empty batch");
}

pub async fn status_documents_come_back_as_written(fixture: &Fixture) {
    let store = fixture.open().await;
    let document = json!({
        "zeta": [1, 2.5, -3, 1e300, u64::MAX, i64::MIN],
        "alpha": {"nested": null, "flag": true, "text": "ünïcødé \"quoted\" \\ \n line"},
        "conditions": [{"type": "Ready", "status": "True"}],
    });
    let target = key("VlessKey", "alice");
    store
        .write_statuses(&[(target.clone(), Some(document.clone()))])
        .await
        .expect("write");
    let read = store.statuses().await.expect("read");
    assert_eq!(read, [(target, document.clone())]);
    assert_eq!(read[0].1.to_string(), document.to_string());
}

pub async fn status_batch_is_all_or_nothing(fixture: &Fixture) {
    let store = fixture.open().await;
    let kept = key("VlessKey", "kept");
    store
        .write_statuses(&[(kept.clone(), Some(json!({"v": 1})))])
        .await
        .expect("write");
    store
        .write_statuses(&[
            (kept.clone(), None),
            (key("VlessKey", "new"), Some(json!({"v": 2}))),
            (key("VlessKey", ""), Some(json!({"v": 3}))),
        ])
        .await
        .expect_err("an empty name is rejected");
    assert_eq!(
        store.statuses().await.expect("read"),
        [(kept, json!({"v": 1}))]
    );
}

pub async fn ten_thousand_statuses_are_written_in_one_batch(fixture: &Fixture) {
    let store = fixture.open().await;
    let status = |name: &str, generation: usize| {
        json!({
            "observedGeneration": generation,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Applied", "message": name}],
        })
    };
    let keys: Vec<ObjectRef> = (0..MANY)
        .map(|i| key("VlessKey", &format!("user-{i:05}")))
        .collect();

    let inserts: Vec<_> = keys
        .iter()
        .map(|k| (k.clone(), Some(status(&k.name, 1))))
        .collect();
    let started = Instant::now();
    store.write_statuses(&inserts).await.expect("insert 10,000");
    let insert_time = started.elapsed();

    let updates: Vec<_> = keys
        .iter()
        .map(|k| (k.clone(), Some(status(&k.name, 2))))
        .collect();
    let started = Instant::now();
    store.write_statuses(&updates).await.expect("update 10,000");
    let update_time = started.elapsed();

    let started = Instant::now();
    let read = store.statuses().await.expect("read 10,000");
    let read_time = started.elapsed();
    assert_eq!(read.len(), MANY);
    assert_eq!(
        read[MANY - 1],
        (keys[MANY - 1].clone(), status(&keys[MANY - 1].name, 2))
    );

    let deletes: Vec<_> = keys
        .iter()
        .map(|k| (k.clone(), None::<serde_json::Value>))
        .collect();
    let started = Instant::now();
    store.write_statuses(&deletes).await.expect("delete 10,000");
    let delete_time = started.elapsed();
    assert!(store.statuses().await.expect("read").is_empty());

    eprintln!(
        "{}: 10,000 statuses: insert {insert_time:?}, update {update_time:?}, \
         read {read_time:?}, delete {delete_time:?}",
        fixture.backend()
    );
    // Speed is measured by `make bench`, not asserted here.
}

pub async fn load_errors_are_replaced_wholesale_in_order(fixture: &Fixture) {
    let store = fixture.open().await;
    let error = |file: &str, message: &str| LoadErrorRecord {
        file: file.into(),
        line: Some(12),
        column: Some(3),
        object: Some("VlessKey default/alice".into()),
        path: Some("spec.port".into()),
        message: message.into(),
    };
    let first = vec![
        error("b.yaml", "second file first"),
        error("a.yaml", "then this"),
    ];
    store.replace_load_errors(&first).await.expect("replace");
    assert_eq!(store.load_errors().await.expect("read"), first);

    let bare = LoadErrorRecord {
        file: "c.yaml".into(),
        line: None,
        column: None,
        object: None,
        path: None,
        message: "not YAML".into(),
    };
    let many: Vec<_> = std::iter::once(bare)
        .chain((0..2_500).map(|i| error("d.yaml", &format!("error {i}"))))
        .collect();
    store.replace_load_errors(&many).await.expect("replace");
    assert_eq!(store.load_errors().await.expect("read"), many);

    store.replace_load_errors(&[]).await.expect("clear");
    assert!(store.load_errors().await.expect("read").is_empty());
}
