//! The traffic book against a real SQLite store.
#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use chrono::TimeZone;
use veil_crds::wire::{ServerId, UserTraffic};

use super::*;
use crate::store::StoreTarget;

struct Fixture {
    store: Store,
    metrics: Arc<Metrics>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreTarget::Sqlite(dir.path().join("veil.db")))
        .await
        .unwrap();
    Fixture {
        store,
        metrics: Arc::new(Metrics::new()),
        _dir: dir,
    }
}

fn report(seq: u64, traffic: &[(&str, u64, u64)]) -> NodeReport {
    NodeReport {
        node: "edge-1".into(),
        seq,
        traffic: traffic
            .iter()
            .map(|(email, uplink, downlink)| UserTraffic {
                server: ServerId {
                    namespace: "default".into(),
                    name: "edge-vless".into(),
                },
                email: (*email).into(),
                uplink: *uplink,
                downlink: *downlink,
            })
            .collect(),
        ..NodeReport::default()
    }
}

fn counted(metrics: &Metrics, direction: &str) -> u64 {
    metrics
        .traffic_bytes_total
        .get_or_create(&ServerDirection {
            server: "default/edge-vless".into(),
            direction: direction.into(),
        })
        .get()
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

#[tokio::test]
async fn a_retried_report_counts_its_traffic_once() {
    let f = fixture().await;
    let book = TrafficBook::load(f.store.clone(), f.metrics.clone())
        .await
        .unwrap();
    let first = report(5, &[("alice", 100, 1_000), ("bob", 0, 0)]);
    assert!(book.apply_report("edge-1", &first, now()).await.unwrap());
    assert!(
        !book.apply_report("edge-1", &first, now()).await.unwrap(),
        "the same seq again"
    );
    assert!(
        !book
            .apply_report("edge-1", &report(4, &[("alice", 9, 9)]), now())
            .await
            .unwrap(),
        "an older, replayed report"
    );
    let state = book.snapshot();
    let alice = state.total("default/edge-vless", "alice");
    assert_eq!((alice.uplink, alice.downlink), (100, 1_000));
    assert_eq!(
        (
            counted(&f.metrics, "uplink"),
            counted(&f.metrics, "downlink")
        ),
        (100, 1_000)
    );
    assert_eq!(state.seen("default/edge-vless", "alice"), Some(now()));
    assert_eq!(
        state.seen("default/edge-vless", "bob"),
        None,
        "no bytes, not seen"
    );

    let later = now() + chrono::TimeDelta::seconds(10);
    assert!(
        book.apply_report("edge-1", &report(6, &[("alice", 1, 2)]), later)
            .await
            .unwrap()
    );
    let alice = book.snapshot().total("default/edge-vless", "alice");
    assert_eq!((alice.uplink, alice.downlink), (101, 1_002));

    // What a restarted operator loads is what memory held.
    let reloaded = TrafficBook::load(f.store.clone(), Arc::new(Metrics::new()))
        .await
        .unwrap();
    assert_eq!(*reloaded.snapshot(), *book.snapshot());
    assert_eq!(
        reloaded.snapshot().seen("default/edge-vless", "alice"),
        Some(later)
    );
}

#[tokio::test]
async fn a_report_without_traffic_writes_nothing() {
    let f = fixture().await;
    let book = TrafficBook::load(f.store.clone(), f.metrics.clone())
        .await
        .unwrap();
    assert!(
        !book
            .apply_report("edge-1", &report(1, &[]), now())
            .await
            .unwrap()
    );
    // Seq 1 was not consumed by the empty report (nothing was written).
    assert!(
        book.apply_report("edge-1", &report(1, &[("alice", 1, 1)]), now())
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn baselines_are_kept_and_stale_ones_forgotten() {
    let f = fixture().await;
    let book = TrafficBook::load(f.store.clone(), f.metrics.clone())
        .await
        .unwrap();
    let record = |uid: &str| TrafficBaselineRecord {
        key_uid: uid.into(),
        server: "default/edge-vless".into(),
        email: format!("default.{uid}"),
        period_start: now(),
        uplink: 5,
        downlink: 6,
    };
    book.put_baselines(vec![record("a"), record("b")])
        .await
        .unwrap();
    book.remove_baselines(vec!["a".into()]).await.unwrap();
    let reloaded = TrafficBook::load(f.store.clone(), f.metrics.clone())
        .await
        .unwrap();
    let snapshot = reloaded.snapshot();
    let held: Vec<_> = snapshot
        .baseline_uids()
        .filter_map(|uid| snapshot.baseline(uid))
        .cloned()
        .collect();
    assert_eq!(held, [record("b")]);
    assert_eq!(*reloaded.snapshot(), *book.snapshot());
}

#[tokio::test]
async fn a_replica_taking_over_reads_what_the_previous_leader_counted() {
    let f = fixture().await;
    // Two replicas on one store; the second loaded before any traffic.
    let old_leader = TrafficBook::load(f.store.clone(), f.metrics.clone())
        .await
        .unwrap();
    let new_leader = TrafficBook::load(f.store.clone(), Arc::new(Metrics::new()))
        .await
        .unwrap();
    let first = report(1, &[("alice", 10, 4_000)]);
    assert!(
        old_leader
            .apply_report("edge-1", &first, now())
            .await
            .unwrap()
    );
    assert_eq!(
        new_leader
            .snapshot()
            .total("default/edge-vless", "alice")
            .downlink,
        0,
        "stale until it reloads"
    );

    new_leader.reload().await.unwrap();
    // The report the old leader applied is neither lost nor counted again.
    assert!(
        !new_leader
            .apply_report("edge-1", &first, now())
            .await
            .unwrap()
    );
    assert!(
        new_leader
            .apply_report("edge-1", &report(2, &[("alice", 0, 1_000)]), now())
            .await
            .unwrap()
    );
    let alice = new_leader.snapshot().total("default/edge-vless", "alice");
    assert_eq!((alice.uplink, alice.downlink), (10, 5_000));
}
