//! Failover benchmark (issue 14, design §4e): how long a node takes from
//! "the active Strategy stops working" to "the backup carries users'
//! traffic", in the test configuration (probes every 2 s, timeout 1 s,
//! `passes: 2`, `failureThreshold: 2`). A real operator and agent, the
//! built-in engine, the DPI simulator and the HTTPS site in network
//! namespaces: the primary fakes by TTL, the backup by bad checksum; the
//! clock starts when the simulator goes to level 3 (the TTL fake stops
//! working) and stops at the agent's `strategy switched` log line; then
//! level 2 lets the primary come back, and the cycle repeats.

use std::time::Duration;

use chrono::Utc;
use veil_e2e::dpi_lab::DpiLab;
use veil_e2e::process::{Agent, Operator};
use veil_e2e::zapret_agent::{
    self, Failover, PAGE_AND_DOWNLOAD, blocked_test_strategy, logged_at, wait_entry,
    wait_two_passing_rounds, with_failover, write_atomically,
};

use crate::strategy::verdict;
use crate::{ms, percentile};

const CYCLES: usize = 5;
const NODE: &str = "bench-c";
const WAIT: Duration = Duration::from_secs(90);

pub fn run_all() {
    let lab = DpiLab::new(2);
    lab.topology.client.block_on(|| cycles(&lab));
}

async fn cycles(lab: &DpiLab) {
    let source = tempfile::tempdir().expect("source dir");
    let op = Operator::start(source.path()).await;
    let options = lab.agent_options();
    let agent = Agent::start_with(&op, NODE, &["role=edge"], &options);
    let primary = with_failover(
        &blocked_test_strategy("primary", zapret_agent::FAKE_TTL),
        &Failover {
            interval: "2s",
            timeout: "1s",
            passes: 2,
            targets: PAGE_AND_DOWNLOAD,
            backups: &["backup"],
            failure_threshold: 2,
            min_switch_interval: "5s",
        },
    );
    write_atomically(
        &source.path().join("backup.yaml"),
        &blocked_test_strategy("backup", zapret_agent::FAKE_BADSUM),
    );
    write_atomically(&source.path().join("primary.yaml"), &primary);

    let mut times = Vec::with_capacity(CYCLES);
    for cycle in 0..CYCLES {
        // A full evaluation on the primary before the failure.
        wait_two_passing_rounds(&op, "primary", NODE, "primary").await;
        let before = logged_at(&agent.log(), "strategy switched").len();
        let failed_at = Utc::now();
        lab.sim.set_level(3);
        wait_entry(&op, "primary", NODE, "switched to the backup", WAIT, |e| {
            e["activeStrategy"] == "backup"
        })
        .await;
        let switches = logged_at(&agent.log(), "strategy switched");
        let switched_at = switches
            .get(before)
            .unwrap_or_else(|| panic!("cycle {cycle}: no switch logged"));
        let took = (*switched_at - failed_at).to_std().unwrap_or_default();
        times.push(took);
        lab.sim.set_level(2);
    }
    times.sort();
    let p50 = percentile(&times, 0.5);
    let max = times[times.len() - 1];
    println!(
        "failover: primary stops working -> backup active ({CYCLES} cycles; probes 2s/1s, passes 2, threshold 2): p50 {:.0} ms max {:.0} ms (target < 10000 ms: {})",
        ms(p50),
        ms(max),
        verdict(max < Duration::from_secs(10)),
    );
}
