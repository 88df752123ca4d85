//! Where failover must hold back, end to end (real operator, agent,
//! built-in engine, DPI simulator and HTTPS site in network namespaces):
//!
//! - a network that flaps between blocking one Strategy and the other
//!   causes at most one switch per `minSwitchInterval`;
//! - a Strategy that never worked is reported `NeverWorked` and nothing is
//!   tested; when everything is blocked, the search ends with "no
//!   alternative works" and no switch, and retries only after
//!   `minSwitchInterval`.

use std::net::IpAddr;
use std::time::Duration;

use veil_e2e::dpi_lab::DpiLab;
use veil_e2e::dpi_sim::DpiSimOptions;
use veil_e2e::netns::Topology;
use veil_e2e::process::{Agent, Operator};
use veil_e2e::zapret_agent::{
    self, blocked_test_strategy, logged_at, wait_entry, wait_two_passing_rounds,
    write_atomically as write,
};

const NODE: &str = "edge-c";
const WAIT: Duration = Duration::from_secs(60);
const CANDIDATE_TESTED: &str = "testing a failover candidate on the side queue";
const SWITCHED: &str = "strategy switched";

/// `primary` with probes every 3 s (`targets`, one round per
/// evaluation), failover to `backup` after one failed round, at most once
/// per `interval`.
fn with_failover(
    primary: &str,
    backup: &str,
    targets: &[(&str, Option<u32>)],
    interval: &str,
) -> String {
    zapret_agent::with_failover(
        primary,
        &zapret_agent::Failover {
            interval: "3s",
            timeout: "2s",
            passes: 1,
            targets,
            backups: &[backup],
            failure_threshold: 1,
            min_switch_interval: interval,
        },
    )
}

fn agent(lab: &DpiLab, op: &Operator) -> Agent {
    let options = lab.agent_options();
    Agent::start_with(op, NODE, &["role=edge"], &options)
}

#[test]
fn a_flapping_network_switches_at_most_once_per_min_switch_interval() {
    let lab = DpiLab::new(1);
    lab.topology.client.block_on(|| flapping(&lab));
}

async fn flapping(lab: &DpiLab) {
    let source = tempfile::tempdir().expect("source dir");
    let op = Operator::start(source.path()).await;
    let agent = agent(lab, &op);
    // Splitting beats level 1 but not level 3's reassembly; the bad-checksum
    // fake beats level 3 but not level 1, which reads the real hello whole.
    let split = blocked_test_strategy(
        "split",
        &["--dpi-desync=multisplit", "--dpi-desync-split-pos=1,midsld"],
    );
    write(
        &source.path().join("badsum.yaml"),
        &blocked_test_strategy("badsum", zapret_agent::FAKE_BADSUM),
    );
    write(
        &source.path().join("split.yaml"),
        &with_failover(&split, "badsum", zapret_agent::PAGE_AND_DOWNLOAD, "20s"),
    );
    wait_two_passing_rounds(&op, "split", NODE, "split").await;

    // Level 3 until the node has moved to the backup…
    lab.sim.set_level(3);
    wait_entry(&op, "split", NODE, "switched to badsum", WAIT, |e| {
        e["activeStrategy"] == "badsum"
    })
    .await;

    // …then the level flips every 3 s for 45 s: each Strategy keeps
    // failing every other few seconds, yet switches stay 20 s apart.
    for flip in 0..15 {
        lab.sim.set_level(if flip % 2 == 0 { 1 } else { 3 });
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let log = agent.log();
    let switches = logged_at(&log, SWITCHED);
    assert!(!switches.is_empty(), "{log}");
    assert!(
        switches.len() <= 4,
        "at most one switch per 20 s in about 60 s: {switches:?}"
    );
    for pair in switches.windows(2) {
        let apart = pair[1] - pair[0];
        assert!(
            apart >= chrono::Duration::milliseconds(19_500),
            "two switches {apart} apart: {switches:?}"
        );
    }
}

#[test]
fn nothing_is_switched_to_when_nothing_works() {
    // At level 3 every flow to the site's address stalls after 16–20 KB,
    // whatever the Strategy.
    let options = DpiSimOptions {
        level: 3,
        block_addresses: vec![IpAddr::V4(Topology::SERVER_V4)],
        ..DpiSimOptions::default()
    };
    let lab = DpiLab::with_options(Topology::new(), options);
    lab.topology.client.block_on(|| all_blocked(&lab));
}

async fn all_blocked(lab: &DpiLab) {
    let source = tempfile::tempdir().expect("source dir");
    let op = Operator::start(source.path()).await;
    let agent = agent(lab, &op);
    let primary = blocked_test_strategy("youtube", zapret_agent::FAKE_TTL);
    let big_only = &[("https://blocked.test/bytes/65536", Some(65536))];
    write(
        &source.path().join("youtube-badsum.yaml"),
        &blocked_test_strategy("youtube-badsum", zapret_agent::FAKE_BADSUM),
    );
    write(
        &source.path().join("youtube.yaml"),
        &with_failover(&primary, "youtube-badsum", big_only, "10s"),
    );

    // Blocked from the start: NeverWorked, and no candidate is tried.
    let entry = wait_entry(&op, "youtube", NODE, "NeverWorked", WAIT, |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("NeverWorked"))
    })
    .await;
    assert_eq!(entry["failPhase"], "Stall16K", "{entry}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        logged_at(&agent.log(), CANDIDATE_TESTED).is_empty(),
        "a Strategy that never worked is no reason to search:\n{}",
        agent.log()
    );

    // Level 2 (addresses are not throttled there): the TTL fake works and
    // the baseline is taken…
    lab.sim.set_level(2);
    wait_two_passing_rounds(&op, "youtube", NODE, "youtube").await;
    let entry = zapret_agent::node_entry(&op, "youtube", NODE).await;
    assert!(
        entry.is_some_and(|e| e["message"].is_null()),
        "NeverWorked is over"
    );

    // …level 3 again: the primary fails, the backup stalls as well, the
    // node stays and says so.
    lab.sim.set_level(3);
    let entry = wait_entry(&op, "youtube", NODE, "no alternative works", WAIT, |e| {
        e["message"] == "no alternative works"
    })
    .await;
    assert_eq!(entry["activeStrategy"], "youtube", "{entry}");

    // No switch loop: for 25 s the search is retried at most every 10 s.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let log = agent.log();
    assert!(logged_at(&log, SWITCHED).is_empty(), "{log}");
    let searches = logged_at(&log, CANDIDATE_TESTED);
    assert!(
        (1..=4).contains(&searches.len()),
        "one search per minSwitchInterval: {searches:?}"
    );
    for pair in searches.windows(2) {
        assert!(
            pair[1] - pair[0] >= chrono::Duration::milliseconds(9_500),
            "{searches:?}"
        );
    }
}
