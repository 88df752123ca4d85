//! Strategy probes end to end: a real `veil-operator` and `veil-agent` in
//! the client namespace [c] of a DPI topology, the simulator in [d], the
//! test site in [s]. The agent probes its active Strategy through the
//! live engine, and the Strategy's node status says what the probes saw:
//! when the DPI turns TSPU-like (level 3) and the fake-by-TTL Strategy
//! stops working, the big target stalls after 16–20 KB (`Stall16K`) while
//! the header-only one still passes (with TLS 1.2 and with 1.3), and
//! `veil-operator get strategy youtube -o wide` lists the stored round.
//!
//! The agent runs through `ip netns exec` so that `blocked.test` resolves
//! from [c]'s hosts file, and trusts the test site's CA for its probes
//! (`VEIL_PROBE_CA_FILE`).

use serde_json::Value;
use veil_e2e::dpi_lab::DpiLab;
use veil_e2e::process::{Agent, Operator};
use veil_e2e::zapret_agent::{self, wait_node_status, write_atomically as write};

const NODE: &str = "edge-c";

/// A fake-by-TTL Strategy for `blocked.test`, probed every 3 s (one round
/// per evaluation) with a header-only target (TLS 1.2 and 1.3 samples) and
/// a 64 KiB target.
fn probed_strategy() -> String {
    let lists = "    hostlists:\n      - name: sites\n        domains: [blocked.test]\n";
    let mut yaml = zapret_agent::zapret_strategy(
        "youtube",
        "builtin",
        &[
            "--filter-tcp=443",
            "--hostlist={hostlist:sites}",
            "--dpi-desync=fake",
            "--dpi-desync-ttl=1",
        ],
        lists,
    );
    yaml.push_str(
        "  probes:
    interval: 3s
    timeout: 2s
    passes: 1
    targets:
      - url: https://blocked.test/
        tls: [\"1.2\", \"1.3\"]
      - url: https://blocked.test/bytes/65536
        minBytes: 65536
",
    );
    yaml
}

fn rate(entry: &Value, field: &str) -> Option<f64> {
    entry[field].as_f64()
}

#[test]
fn probes_show_when_a_working_strategy_stops_working() {
    let lab = DpiLab::new(2);
    lab.topology.client.block_on(|| scenario(&lab));
}

async fn scenario(lab: &DpiLab) {
    let source = tempfile::tempdir().expect("source dir");
    let op = Operator::start(source.path()).await;
    let options = lab.agent_options();
    let agent = Agent::start_with(&op, NODE, &["role=edge"], &options);
    write(&source.path().join("youtube.yaml"), &probed_strategy());

    // Level 2: the fake fools the DPI; both targets pass.
    let (_, entry) = wait_node_status(&op, "youtube", NODE, "probes passing", |_, entry| {
        rate(entry, "successRate") == Some(1.0)
    })
    .await;
    assert!(entry.get("failPhase").is_none(), "{entry}");
    assert!(entry["lastProbe"].is_string(), "{entry}");

    // Level 3 ignores the low-TTL fake: the handshake and a small answer
    // still pass (both TLS versions), 64 KiB stall.
    lab.sim.set_level(3);
    let (status, entry) = wait_node_status(
        &op,
        "youtube",
        NODE,
        "the big target stalled",
        |_, entry| entry["failPhase"] == "Stall16K" && entry["failedRounds"].as_u64() >= Some(1),
    )
    .await;
    let success = rate(&entry, "successRate").unwrap_or_default();
    assert!(
        (success - 2.0 / 3.0).abs() < 0.01,
        "two samples of three pass: {entry}\n{}",
        agent.log()
    );
    assert_eq!(status["failPhase"], "Stall16K", "{status}");
    assert!(rate(&status, "score").is_some_and(|s| s < 1.0), "{status}");
    let freeze = lab
        .sim
        .decisions()
        .into_iter()
        .find(|d| d["verdict"] == "freeze");
    assert!(freeze.is_some(), "the simulator froze a probe's download");

    // The stored round, sample by sample.
    let out = op.cli(&["get", "strategy", "youtube", "-o", "wide"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let round = stdout
        .split("LAST PROBE ROUND\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no probe round listed:\n{stdout}"));
    let line = |target: &str| {
        round
            .lines()
            .find(|l| l.split("   ").any(|cell| cell.trim() == target))
            .unwrap_or_else(|| panic!("no sample of {target}:\n{stdout}"))
    };
    for version in ["TLS 1.2", "TLS 1.3"] {
        let sample = line(&format!("https://blocked.test/ ({version})"));
        assert!(sample.contains(" pass "), "{sample}");
    }
    let big = line("https://blocked.test/bytes/65536");
    assert!(big.contains(" FAIL ") && big.contains("Stall16K"), "{big}");
    assert!(round.starts_with("NODE "), "{round}");
    assert!(round.contains(NODE), "{round}");
}
