//! Failover end to end: a real `veil-operator` and `veil-agent` in the
//! client namespace [c] of a DPI topology, the simulator in [d], the test
//! site in [s]. The primary fakes by TTL, its backup fakes by bad
//! checksum. When the DPI turns TSPU-like (level 3) the TTL fake stops
//! working; the agent tests the backup in a second engine on the side
//! queue — only its own marked probes go there, while curl from [c]
//! keeps going through the live engine — and switches to it. When the
//! DPI relents, the agent re-tests the primary and returns to it. An agent
//! killed while on the backup resumes there from its saved state.
//!
//! The agent runs through `ip netns exec` (so `blocked.test` resolves from
//! [c]'s hosts file), trusts the test site's CA for its probes and logs
//! JSON, whose timestamps bound the candidate's test.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use veil_e2e::dpi_lab::{DpiLab, Fetch};
use veil_e2e::process::{Agent, Operator};
use veil_e2e::zapret_agent::{self, logged_at, wait_entry, write_atomically as write};

const NODE: &str = "edge-c";

/// Longest wait for a switch (two failed 3 s rounds, two candidate
/// rounds, the report) or for a return to the primary (minSwitchInterval).
const SWITCH_WAIT: Duration = Duration::from_secs(60);

/// The primary (fake by TTL) with probes and failover to `youtube-badsum`.
fn primary() -> String {
    let strategy = zapret_agent::blocked_test_strategy("youtube", zapret_agent::FAKE_TTL);
    zapret_agent::with_failover(
        &strategy,
        &zapret_agent::Failover {
            interval: "3s",
            timeout: "2s",
            passes: 2,
            targets: zapret_agent::PAGE_AND_DOWNLOAD,
            backups: &["youtube-badsum"],
            failure_threshold: 2,
            min_switch_interval: "15s",
        },
    )
}

/// The backup: the same fake with a bad checksum instead of a low TTL.
fn backup() -> String {
    zapret_agent::blocked_test_strategy("youtube-badsum", zapret_agent::FAKE_BADSUM)
}

/// One curl from [c] and when it ran.
struct Timed {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    fetch: Fetch,
}

#[test]
fn a_strategy_that_stops_working_is_replaced_by_a_tested_backup_survives_a_restart_and_comes_back()
{
    let lab = DpiLab::new(2);
    let curls: Mutex<Vec<Timed>> = Mutex::new(Vec::new());
    let curling = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Users' traffic: an unmarked curl from [c] every 200 ms while the
        // scenario wants it (bounded: at most 10 minutes of it).
        scope.spawn(|| {
            for _ in 0..3000 {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                if curling.load(Ordering::SeqCst) {
                    let start = Utc::now();
                    let fetch = lab.curl("https://blocked.test/", &["--max-time", "3"]);
                    curls.lock().expect("curls").push(Timed {
                        start,
                        end: Utc::now(),
                        fetch,
                    });
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        // Ends the curl loop however the scenario ends (a panic included).
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _done = Done(&done);
        lab.topology
            .client
            .block_on(|| scenario(&lab, &curls, &curling));
    });
}

async fn scenario(lab: &DpiLab, curls: &Mutex<Vec<Timed>>, curling: &AtomicBool) {
    let source = tempfile::tempdir().expect("source dir");
    let op = Operator::start(source.path()).await;
    let options = lab.agent_options();
    let agent = Agent::start_with(&op, NODE, &["role=edge"], &options);
    write(&source.path().join("youtube-badsum.yaml"), &backup());
    write(&source.path().join("youtube.yaml"), &primary());

    // Level 2: the TTL fake fools the DPI; the primary's baseline is set.
    zapret_agent::wait_two_passing_rounds(&op, "youtube", NODE, "youtube").await;
    let backup_entry = wait_entry(&op, "youtube-badsum", NODE, "standby", SWITCH_WAIT, |e| {
        e["phase"] == "Standby"
    })
    .await;
    assert_eq!(backup_entry["active"], false, "{backup_entry}");

    // Level 3 ignores the low-TTL fake: the big target stalls, the agent
    // tests the backup beside the live engine and switches to it.
    curling.store(true, Ordering::SeqCst);
    lab.sim.set_level(3);
    let entry = wait_entry(
        &op,
        "youtube",
        NODE,
        "switched to youtube-badsum",
        SWITCH_WAIT,
        |e| e["activeStrategy"] == "youtube-badsum" && e["lastSwitchTime"].is_string(),
    )
    .await;
    curling.store(false, Ordering::SeqCst);
    assert_eq!(entry["phase"], "Standby", "the primary waits: {entry}");

    // The backup runs for users now: the big download passes level 3.
    let big = lab.curl("https://blocked.test/bytes/65536", &[]);
    assert!(big.ok() && big.body.len() == 65536, "{big:?}");

    // While the backup was under test, users' traffic (unmarked curl) went
    // through the live engine only: each of its flows shows the TTL fake
    // the simulator ignores, none the backup's bad-checksum fake.
    let log = agent.log();
    let tested = *logged_at(&log, "testing a failover candidate on the side queue")
        .first()
        .unwrap_or_else(|| panic!("no candidate test in the agent log:\n{log}"));
    let switched = *logged_at(&log, "strategy switched")
        .first()
        .unwrap_or_else(|| panic!("no switch in the agent log:\n{log}"));
    assert!(tested < switched, "{tested} {switched}");
    users_kept_the_active_strategy(lab, &curls.lock().expect("curls"), tested, switched);

    // A crashed and restarted agent resumes on the backup from its saved
    // state: no switch back and forth, and probes go on.
    let restarted_at = Utc::now();
    let agent = Agent::restart(&op, NODE, &["role=edge"], agent.kill(), &options);
    let resumed = wait_entry(
        &op,
        "youtube-badsum",
        NODE,
        "probed after the restart",
        SWITCH_WAIT,
        |e| {
            let probed = e["lastProbe"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t > restarted_at);
            probed && e["phase"] == "Running"
        },
    )
    .await;
    assert_eq!(resumed["active"], true, "{resumed}");
    assert_eq!(
        resumed["lastSwitchTime"], entry["lastSwitchTime"],
        "the switch before the restart is the last one"
    );

    // Level 2 again: after minSwitchInterval the primary is re-tested,
    // passes, and is active again.
    lab.sim.set_level(2);
    let back = wait_entry(
        &op,
        "youtube",
        NODE,
        "back on the primary",
        SWITCH_WAIT,
        |e| e["activeStrategy"] == "youtube" && e["phase"] == "Running",
    )
    .await;
    assert!(back["lastSwitchTime"].is_string(), "{back}");
    let switches = logged_at(&agent.log(), "strategy switched").len();
    assert_eq!(switches, 2, "one switch each way:\n{}", agent.log());
}

/// Each curl from [c] that ran between `tested` and `switched` (there must
/// be one) went through the live engine only: its flow shows the TTL fake
/// the simulator ignores, none the candidate's bad-checksum fake (which the
/// simulator reads as a ClientHello for another name and passes).
fn users_kept_the_active_strategy(
    lab: &DpiLab,
    curls: &[Timed],
    tested: DateTime<Utc>,
    switched: DateTime<Utc>,
) {
    let during: Vec<&Timed> = curls
        .iter()
        .filter(|c| c.start >= tested && c.end <= switched && c.fetch.client.is_some())
        .collect();
    assert!(
        !during.is_empty(),
        "no curl ran while the candidate was tested ({tested} – {switched}); {} in all",
        curls.len()
    );
    for timed in during {
        let decisions = lab.flow_decisions(&timed.fetch);
        assert!(
            decisions.iter().any(|d| d["verdict"] == "ignore"),
            "a user's flow during the test missed the active TTL fake: {decisions:?}"
        );
        assert!(
            !decisions.iter().any(|d| d["verdict"] == "pass"),
            "a user's flow during the test went through the candidate: {decisions:?}"
        );
    }
}
