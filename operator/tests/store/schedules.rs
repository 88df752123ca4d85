//! Schedule state: the last schedule time never moves backwards.

use chrono::{DateTime, TimeZone, Utc};
use veil_operator::store::ObjectRef;

use crate::Fixture;

fn at(seconds: i64, nanos: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, nanos)
        .single()
        .expect("valid time")
}

fn schedule(name: &str) -> ObjectRef {
    ObjectRef::new("Schedule", "default", name)
}

pub async fn last_schedule_time_never_moves_backwards(fixture: &Fixture) {
    let store = fixture.open().await;
    let nightly = schedule("nightly");
    assert!(store.schedule_states().await.expect("empty").is_empty());
    // Each step: the time set, then the time stored afterwards. Sub-second
    // steps check the comparison is by time, not by how it is written.
    let steps = [
        (at(600, 0), at(600, 0)),
        (at(60, 0), at(600, 0)),
        (at(599, 999_999_000), at(600, 0)),
        (at(600, 500_000_000), at(600, 500_000_000)),
        (at(600, 0), at(600, 500_000_000)),
        (at(600, 123_456_000), at(600, 500_000_000)),
        (at(600, 500_001_000), at(600, 500_001_000)),
        // Nanoseconds are dropped: equal to what is stored, so no change.
        (at(600, 500_001_999), at(600, 500_001_000)),
        (at(600, 500_000_000), at(600, 500_001_000)),
        (at(601, 0), at(601, 0)),
        (at(3_600, 0), at(3_600, 0)),
    ];
    for (set, stored) in steps {
        store
            .set_last_schedule_time(&nightly, set)
            .await
            .expect("set");
        assert_eq!(
            store.schedule_states().await.expect("read"),
            [(nightly.clone(), stored)],
            "after setting {set:?}"
        );
    }
}

pub async fn schedule_states_are_per_schedule_and_deleted(fixture: &Fixture) {
    let store = fixture.open().await;
    let (nightly, hourly) = (schedule("nightly"), schedule("hourly"));
    let prod = ObjectRef::new("Schedule", "prod", "nightly");
    store
        .set_last_schedule_time(&prod, at(1, 0))
        .await
        .expect("prod");
    store
        .set_last_schedule_time(&nightly, at(100, 0))
        .await
        .expect("nightly");
    store
        .set_last_schedule_time(&hourly, at(5, 0))
        .await
        .expect("hourly");
    assert_eq!(
        store.schedule_states().await.expect("read"),
        [
            (hourly.clone(), at(5, 0)),
            (nightly.clone(), at(100, 0)),
            (prod.clone(), at(1, 0)),
        ]
    );

    store.delete_schedule_state(&nightly).await.expect("delete");
    store
        .delete_schedule_state(&schedule("unknown"))
        .await
        .expect("delete unknown");
    assert_eq!(
        store.schedule_states().await.expect("read"),
        [(hourly, at(5, 0)), (prod, at(1, 0))]
    );
    // A schedule recreated under the same name starts afresh.
    store
        .set_last_schedule_time(&nightly, at(2, 0))
        .await
        .expect("recreated");
    assert!(
        store
            .schedule_states()
            .await
            .expect("read")
            .contains(&(nightly, at(2, 0)))
    );
}

/// Writers racing on two stores (two processes) with times in every order:
/// the latest time is what remains.
pub async fn racing_writers_keep_the_latest_time(fixture: &Fixture) {
    const WRITERS: i64 = 16;
    let stores = [fixture.open().await, fixture.open().await];
    let nightly = schedule("nightly");
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let store = stores[writer as usize % stores.len()].clone();
        let nightly = nightly.clone();
        // Spread so that later spawns are not always later times.
        let time = at((writer * 7) % WRITERS, 0);
        tasks.spawn(async move { store.set_last_schedule_time(&nightly, time).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("task").expect("set");
    }
    assert_eq!(
        stores[0].schedule_states().await.expect("read"),
        [(nightly, at(WRITERS - 1, 0))]
    );
}
