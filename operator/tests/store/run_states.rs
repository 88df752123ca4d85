//! Task-run states, and all task state surviving a reopen.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use veil_operator::store::{GeneratedObjectRecord, NodeRecord, ObjectRef, RunStateRecord};

use crate::Fixture;

/// A time with microseconds, which the store keeps exactly.
fn at(seconds: i64, micros: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, micros * 1_000)
        .single()
        .expect("valid time")
}

/// A run state with every optional field empty.
fn pending(uid: &str, name: &str) -> RunStateRecord {
    RunStateRecord {
        uid: uid.into(),
        run: ObjectRef::new("TaskRun", "default", name),
        node: None,
        phase: "Pending".into(),
        placed_at: None,
        started_at: None,
        finished_at: None,
        exit_code: None,
        reason: None,
        message: None,
        log_tail: Vec::new(),
        updated_at: at(0, 0),
    }
}

/// A run state with every optional field set.
fn finished(uid: &str, name: &str) -> RunStateRecord {
    RunStateRecord {
        node: Some("edge-1".into()),
        phase: "Failed".into(),
        placed_at: Some(at(1, 1)),
        started_at: Some(at(2, 999_999)),
        finished_at: Some(at(3, 500_000)),
        exit_code: Some(-2),
        reason: Some("NonZeroExit".into()),
        message: Some("exited with \"2\"\nsee log".into()),
        log_tail: vec![
            "line 1".into(),
            String::new(),
            "ünïcødé \"quoted\" \\ \t tab".into(),
            "[not json] {".into(),
        ],
        updated_at: at(4, 123_456),
        ..pending(uid, name)
    }
}

pub async fn run_states_round_trip_in_uid_order(fixture: &Fixture) {
    let store = fixture.open().await;
    assert!(store.run_states().await.expect("empty").is_empty());
    // Bytewise order on both backends: upper case sorts before lower case.
    let (upper, lower) = (finished("Uid-2", "backup-2"), pending("uid-1", "backup-1"));
    let cluster = RunStateRecord {
        run: ObjectRef::new("TaskRun", "", "cluster-run"),
        exit_code: Some(i32::MAX),
        ..pending("Uid-1", "x")
    };
    store
        .upsert_run_states(&[lower.clone(), upper.clone(), cluster.clone()])
        .await
        .expect("insert");
    assert_eq!(
        store.run_states().await.expect("read"),
        [cluster, upper, lower]
    );
}

pub async fn run_state_timestamps_keep_microseconds(fixture: &Fixture) {
    let store = fixture.open().await;
    let precise = Utc
        .timestamp_opt(1_700_000_000, 123_456_789)
        .single()
        .expect("valid time");
    let record = RunStateRecord {
        started_at: Some(precise),
        updated_at: precise,
        ..pending("uid-1", "backup-1")
    };
    store.upsert_run_states(&[record]).await.expect("upsert");
    let read = store.run_states().await.expect("read");
    let expected = at(0, 123_456);
    assert_eq!(read[0].started_at, Some(expected));
    assert_eq!(read[0].updated_at, expected);
}

pub async fn run_state_batch_upsert_replaces(fixture: &Fixture) {
    let store = fixture.open().await;
    let kept = pending("uid-kept", "kept");
    let changing = finished("uid-changing", "changing");
    store
        .upsert_run_states(&[kept.clone(), changing.clone()])
        .await
        .expect("insert");

    // Every field is replaced, `Some` fields included by `None`; the last
    // record for a uid in a batch wins.
    let first = RunStateRecord {
        phase: "Running".into(),
        ..changing.clone()
    };
    let last = RunStateRecord {
        run: ObjectRef::new("TaskRun", "prod", "renamed"),
        phase: "Succeeded".into(),
        node: Some("edge-2".into()),
        log_tail: vec!["only".into()],
        updated_at: at(10, 10),
        ..pending("uid-changing", "unused")
    };
    let new = finished("uid-new", "new");
    store
        .upsert_run_states(&[first, new.clone(), last.clone()])
        .await
        .expect("replace");
    assert_eq!(store.run_states().await.expect("read"), [last, kept, new]);

    store.upsert_run_states(&[]).await.expect("empty batch");
}

pub async fn run_state_batch_is_all_or_nothing(fixture: &Fixture) {
    let store = fixture.open().await;
    let kept = pending("uid-kept", "kept");
    store
        .upsert_run_states(std::slice::from_ref(&kept))
        .await
        .expect("insert");
    let changed = finished("uid-kept", "kept");
    let invalid = RunStateRecord {
        phase: String::new(),
        ..pending("uid-invalid", "invalid")
    };
    store
        .upsert_run_states(&[changed, pending("uid-new", "new"), invalid])
        .await
        .expect_err("an empty phase is rejected");
    store
        .upsert_run_states(&[pending("", "no-uid")])
        .await
        .expect_err("an empty uid is rejected");
    assert_eq!(store.run_states().await.expect("read"), [kept]);
}

pub async fn run_states_are_deleted_by_uid(fixture: &Fixture) {
    let store = fixture.open().await;
    let records = [
        pending("uid-a", "a"),
        finished("uid-b", "b"),
        pending("uid-c", "c"),
    ];
    store.upsert_run_states(&records).await.expect("insert");
    store
        .delete_run_states(&[
            "uid-c".into(),
            "uid-a".into(),
            "unknown".into(),
            "uid-a".into(),
        ])
        .await
        .expect("delete");
    assert_eq!(
        store.run_states().await.expect("read"),
        [records[1].clone()]
    );
    store.delete_run_states(&[]).await.expect("empty delete");
    store
        .delete_run_states(&["uid-b".into()])
        .await
        .expect("delete last");
    assert!(store.run_states().await.expect("read").is_empty());
}

/// Every kind of task state written, the store dropped and opened again (a
/// restarted operator): all of it is still there, and still enforced.
pub async fn task_state_survives_reopening(fixture: &Fixture) {
    let run = finished("uid-1", "backup-1");
    let node = NodeRecord {
        node: "edge-1".into(),
        registration: json!({"os": "linux", "arch": "x86_64", "labels": {"zone": "b", "a": 1}}),
        registered_at: at(0, 1),
        last_seen: at(5, 2),
        last_report_seq: 7,
    };
    let generated = GeneratedObjectRecord {
        key: ObjectRef::new("TaskRun", "default", "nightly-29000000"),
        owner: Some(ObjectRef::new("Schedule", "default", "nightly")),
        document: json!({"kind": "TaskRun", "spec": {"cancel": false}}),
        created_at: at(6, 3),
    };
    let schedule = ObjectRef::new("Schedule", "default", "nightly");
    {
        let store = fixture.open().await;
        store
            .upsert_run_states(std::slice::from_ref(&run))
            .await
            .expect("run state");
        store.upsert_node(&node).await.expect("node");
        assert!(
            store
                .insert_generated_object(&generated)
                .await
                .expect("generated object")
        );
        store
            .set_last_schedule_time(&schedule, at(60, 0))
            .await
            .expect("schedule state");
    }

    let store = fixture.open().await;
    assert_eq!(store.run_states().await.expect("run states"), [run]);
    assert_eq!(store.nodes().await.expect("nodes"), [node]);
    assert_eq!(
        store.generated_objects().await.expect("generated"),
        std::slice::from_ref(&generated)
    );
    assert_eq!(
        store.schedule_states().await.expect("schedules"),
        [(schedule.clone(), at(60, 0))]
    );
    // The locks and sequence numbers survived too.
    assert!(!store.claim_report_seq("edge-1", 7).await.expect("claim"));
    assert!(
        !store
            .insert_generated_object(&generated)
            .await
            .expect("insert again")
    );
    store
        .set_last_schedule_time(&schedule, at(0, 0))
        .await
        .expect("older time");
    assert_eq!(
        store.schedule_states().await.expect("schedules"),
        [(schedule, at(60, 0))]
    );
}
