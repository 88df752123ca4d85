//! Task-run logs and stable generated values.

use veil_operator::store::ObjectRef;

use crate::Fixture;

pub async fn log_chunks_are_idempotent_per_seq(fixture: &Fixture) {
    let store = fixture.open().await;
    let run = ObjectRef::new("TaskRun", "default", "backup-1");
    assert!(
        store
            .append_log(&run, 0, "starting\n")
            .await
            .expect("append")
    );
    assert!(store.append_log(&run, 1, "done\n").await.expect("append"));
    // A resent chunk changes nothing, even with other text.
    assert!(!store.append_log(&run, 1, "done\n").await.expect("resend"));
    assert!(
        !store
            .append_log(&run, 0, "other")
            .await
            .expect("conflicting resend")
    );
    assert_eq!(
        store.read_log(&run, -1).await.expect("read"),
        [(0, "starting\n".to_owned()), (1, "done\n".to_owned())]
    );
}

pub async fn logs_are_read_after_a_seq_per_run(fixture: &Fixture) {
    let store = fixture.open().await;
    let run = ObjectRef::new("TaskRun", "default", "backup-1");
    let other_run = ObjectRef::new("TaskRun", "default", "backup-2");
    let other_namespace = ObjectRef::new("TaskRun", "prod", "backup-1");
    // Out of order, as retries may deliver them.
    for seq in [3, 1, 0, 2] {
        assert!(
            store
                .append_log(&run, seq, &format!("chunk {seq}"))
                .await
                .expect("append")
        );
    }
    assert!(
        store
            .append_log(&other_run, 0, "other")
            .await
            .expect("append")
    );
    assert!(
        store
            .append_log(&other_namespace, 5, "prod")
            .await
            .expect("append")
    );

    let after_1 = store.read_log(&run, 1).await.expect("read");
    assert_eq!(
        after_1,
        [(2, "chunk 2".to_owned()), (3, "chunk 3".to_owned())]
    );
    assert!(store.read_log(&run, 3).await.expect("read").is_empty());
    assert_eq!(store.read_log(&run, -1).await.expect("read").len(), 4);
    assert_eq!(
        store.read_log(&other_namespace, -1).await.expect("read"),
        [(5, "prod".to_owned())]
    );
}

pub async fn generated_value_first_writer_wins(fixture: &Fixture) {
    let store = fixture.open().await;
    assert_eq!(
        store
            .generated_value("vless-id", "default/alice")
            .await
            .expect("read"),
        None
    );
    let first = store
        .generated_value_or_insert("vless-id", "default/alice", "uuid-1")
        .await
        .expect("insert");
    assert_eq!(first, "uuid-1");
    let second = store
        .generated_value_or_insert("vless-id", "default/alice", "uuid-2")
        .await
        .expect("existing");
    assert_eq!(second, "uuid-1");
    assert_eq!(
        store
            .generated_value("vless-id", "default/alice")
            .await
            .expect("read")
            .as_deref(),
        Some("uuid-1")
    );
    // Scopes are separate.
    let other = store
        .generated_value_or_insert("other", "default/alice", "x")
        .await
        .expect("other scope");
    assert_eq!(other, "x");
}

pub async fn racing_generated_value_inserts_agree(fixture: &Fixture) {
    const RACERS: usize = 16;
    let store = fixture.open().await;
    let mut tasks = tokio::task::JoinSet::new();
    for racer in 0..RACERS {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .generated_value_or_insert("vless-id", "default/bob", &format!("candidate-{racer}"))
                .await
        });
    }
    let mut values = Vec::new();
    while let Some(result) = tasks.join_next().await {
        values.push(result.expect("task").expect("insert"));
    }
    let stored = store
        .generated_value("vless-id", "default/bob")
        .await
        .expect("read");
    let stored = stored.expect("a value was stored");
    assert!(
        values.iter().all(|value| *value == stored),
        "{values:?} vs {stored}"
    );
}

pub async fn a_runs_log_keeps_its_tail_with_a_marker_and_goes_with_the_run(fixture: &Fixture) {
    let store = fixture.open().await;
    let run = ObjectRef::new("TaskRun", "default", "uid-1");
    let other = ObjectRef::new("TaskRun", "default", "uid-2");
    // One report: four 10-character chunks of one run, one of another, capped at 25.
    let chunks: Vec<(ObjectRef, i64, &str)> = vec![
        (run.clone(), 1, "aaaaaaaaa\n"),
        (run.clone(), 2, "bbbbbbbbb\n"),
        (other.clone(), 1, "other\n"),
        (run.clone(), 3, "ccccccccc\n"),
        (run.clone(), 4, "ddddddddd\n"),
    ];
    let stored = store.append_logs(&chunks, 25).await.expect("append");
    assert_eq!(stored, [true, true, true, true, true]);
    let marker = veil_operator::store::truncation_marker(25);
    assert_eq!(
        store.read_log(&run, 0).await.expect("read"),
        [
            (2, marker.clone()),
            (3, "ccccccccc\n".to_owned()),
            (4, "ddddddddd\n".to_owned()),
        ],
        "the newest output is kept, the rest replaced by the marker"
    );
    // A resent chunk already dropped does not come back for good.
    let again = store
        .append_logs(
            &[
                (run.clone(), 4, "ddddddddd\n"),
                (run.clone(), 5, "eeeeeeeee\n"),
            ],
            25,
        )
        .await
        .expect("append");
    assert_eq!(again, [false, true]);
    let log = store.read_log(&run, 0).await.expect("read");
    assert_eq!(log.first().map(|c| c.1.as_str()), Some(marker.as_str()));
    assert_eq!(log.last().map(|c| c.0), Some(5));
    assert!(log.iter().skip(1).map(|c| c.1.len()).sum::<usize>() <= 25);

    // Deleting the runs deletes their logs.
    store
        .delete_run_states(&["uid-1".to_owned(), "uid-2".to_owned()])
        .await
        .expect("delete");
    assert!(store.read_log(&run, -1).await.expect("read").is_empty());
    assert!(store.read_log(&other, -1).await.expect("read").is_empty());
}
