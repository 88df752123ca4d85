//! Strategy probe rounds: recorded once per key, bounded per (strategy,
//! node) and by age.

use chrono::{DateTime, Duration, TimeZone, Utc};
use veil_crds::wire::ProbeSample;
use veil_operator::store::ProbeRoundRecord;

use crate::Fixture;

fn at(second: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, 6, 0, 0).unwrap() + Duration::seconds(second)
}

fn round(strategy: &str, node: &str, second: i64) -> ProbeRoundRecord {
    ProbeRoundRecord {
        namespace: "edge".into(),
        strategy: strategy.into(),
        node: node.into(),
        finished_at: at(second) + Duration::microseconds(123_456),
        score: Some(0.5),
        samples: vec![
            ProbeSample {
                target: format!("https://example.com/{second}"),
                critical: true,
                passed: true,
                ttfb_ms: Some(40),
                bytes: 65_536,
                http_status: Some(200),
                ..ProbeSample::default()
            },
            ProbeSample {
                target: "https://blocked.example/ (TLS 1.3)".into(),
                passed: false,
                fail_phase: Some("Stall16K".into()),
                bytes: 16_000,
                detail: Some("no data for 10 s after 16000 bytes".into()),
                ..ProbeSample::default()
            },
        ],
    }
}

/// (node, finished at) of each round, in order.
fn keys(rounds: &[ProbeRoundRecord]) -> Vec<(&str, DateTime<Utc>)> {
    rounds
        .iter()
        .map(|r| (r.node.as_str(), r.finished_at))
        .collect()
}

pub async fn probe_rounds_are_recorded_once_and_read_newest_first(fixture: &Fixture) {
    let store = fixture.open().await;
    let rounds = [
        round("youtube", "b", 1),
        round("youtube", "a", 2),
        round("youtube", "a", 3),
    ];
    assert_eq!(
        store
            .record_probe_rounds(&rounds, 10, at(0))
            .await
            .expect("record"),
        3
    );
    // A report resent (or repeated by the next heartbeat) adds nothing.
    assert_eq!(
        store
            .record_probe_rounds(&rounds, 10, at(0))
            .await
            .expect("again"),
        0
    );
    let other = round("discord", "a", 4);
    store
        .record_probe_rounds(&[other], 10, at(0))
        .await
        .expect("other strategy");

    let read = store
        .probe_rounds("edge", "youtube", 10)
        .await
        .expect("read");
    let seen = keys(&read);
    assert_eq!(
        seen,
        [
            ("a", rounds[2].finished_at),
            ("a", rounds[1].finished_at),
            ("b", rounds[0].finished_at)
        ]
    );
    assert_eq!(
        read[0], rounds[2],
        "samples, score and microseconds come back as written"
    );
    let latest = store
        .probe_rounds("edge", "youtube", 1)
        .await
        .expect("latest per node");
    assert_eq!(latest.len(), 2);
    assert_eq!(
        (latest[0].node.as_str(), latest[1].node.as_str()),
        ("a", "b")
    );
    assert!(
        store
            .probe_rounds("other", "youtube", 1)
            .await
            .expect("read")
            .is_empty()
    );
}

pub async fn probe_rounds_keep_the_newest_per_strategy_and_node_and_age_out(fixture: &Fixture) {
    let store = fixture.open().await;
    for second in 0..8 {
        store
            .record_probe_rounds(&[round("youtube", "a", second)], 3, at(0))
            .await
            .expect("record");
    }
    store
        .record_probe_rounds(&[round("youtube", "b", 0)], 3, at(0))
        .await
        .expect("record");
    let read = store
        .probe_rounds("edge", "youtube", 100)
        .await
        .expect("read");
    let kept = keys(&read);
    let a = |s| ("a", round("youtube", "a", s).finished_at);
    assert_eq!(
        kept,
        [
            a(7),
            a(6),
            a(5),
            ("b", round("youtube", "b", 0).finished_at)
        ]
    );

    // Rounds that finished before the cut-off go, whoever's they are.
    store
        .record_probe_rounds(&[round("discord", "c", 100)], 3, at(6))
        .await
        .expect("record");
    let read = store
        .probe_rounds("edge", "youtube", 100)
        .await
        .expect("read");
    let kept = keys(&read);
    assert_eq!(kept, [a(7), a(6)]);
}
