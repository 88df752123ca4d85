//! Dir-mode generation bookkeeping.

use chrono::{DateTime, TimeZone, Utc};
use veil_operator::store::{ObjectRecord, ObjectRef};

use crate::Fixture;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, 0)
        .single()
        .expect("valid time")
}

fn mk_record(kind: &str, namespace: &str, name: &str, generation: i64) -> ObjectRecord {
    ObjectRecord {
        key: ObjectRef::new(kind, namespace, name),
        uid: format!("uid-{name}"),
        generation,
        spec_hash: format!("hash-{generation}"),
        created_at: at(generation),
    }
}

pub async fn object_records_are_upserted_and_deleted(fixture: &Fixture) {
    let store = fixture.open().await;
    let node = mk_record("VeilNode", "", "edge-1", 1);
    let alice = mk_record("VlessKey", "default", "alice", 1);
    let bob = mk_record("VlessKey", "default", "bob", 3);
    store
        .upsert_object_records(&[bob.clone(), alice.clone(), node.clone()])
        .await
        .expect("insert");
    assert_eq!(
        store.object_records().await.expect("read"),
        [node.clone(), alice.clone(), bob.clone()]
    );

    let alice_v2 = ObjectRecord {
        generation: 2,
        spec_hash: "hash-2".into(),
        ..alice.clone()
    };
    store
        .upsert_object_records(std::slice::from_ref(&alice_v2))
        .await
        .expect("update");
    store
        .delete_object_records(&[
            bob.key.clone(),
            ObjectRef::new("VlessKey", "default", "unknown"),
        ])
        .await
        .expect("delete");
    assert_eq!(
        store.object_records().await.expect("read"),
        [node, alice_v2]
    );

    store
        .upsert_object_records(&[])
        .await
        .expect("empty upsert");
    store
        .delete_object_records(&[])
        .await
        .expect("empty delete");
}

pub async fn object_record_batch_is_all_or_nothing(fixture: &Fixture) {
    let store = fixture.open().await;
    let kept = mk_record("VlessKey", "default", "kept", 1);
    store
        .upsert_object_records(std::slice::from_ref(&kept))
        .await
        .expect("insert");

    let changed = ObjectRecord {
        generation: 2,
        ..kept.clone()
    };
    let new = mk_record("VlessKey", "default", "new", 1);
    let invalid = mk_record("VlessKey", "default", "invalid", -1);
    store
        .upsert_object_records(&[changed, new, invalid])
        .await
        .expect_err("a negative generation is rejected");
    assert_eq!(store.object_records().await.expect("read"), [kept]);
}

pub async fn last_object_record_for_a_key_wins(fixture: &Fixture) {
    let store = fixture.open().await;
    let first = mk_record("VlessKey", "default", "alice", 1);
    let last = mk_record("VlessKey", "default", "alice", 2);
    store
        .upsert_object_records(&[first, last.clone()])
        .await
        .expect("upsert");
    assert_eq!(store.object_records().await.expect("read"), [last]);
}

pub async fn timestamps_keep_microseconds(fixture: &Fixture) {
    let store = fixture.open().await;
    let precise = Utc
        .timestamp_opt(1_700_000_000, 123_456_789)
        .single()
        .expect("valid time");
    let record = ObjectRecord {
        created_at: precise,
        ..mk_record("VlessKey", "default", "alice", 1)
    };
    store
        .upsert_object_records(&[record])
        .await
        .expect("upsert");
    let read = store.object_records().await.expect("read");
    let expected = Utc
        .timestamp_opt(1_700_000_000, 123_456_000)
        .single()
        .expect("valid time");
    assert_eq!(read[0].created_at, expected);
}
