//! Failover loses nothing: two real `veil-operator` replicas on one real
//! PostgreSQL, with a Lease on a real kube-apiserver, a real agent running
//! a real xray, and a real VLESS+Reality client moving bytes.
//!
//! The agent talks to the follower (as through a Service), which forwards
//! to the leader. A key with a traffic limit is used up to just below its
//! limit; the leader is `kill -9`'d; bytes keep flowing while no one leads
//! (the agent keeps its reports); the follower takes the Lease over and
//! shows the same totals — every byte, none twice — and the key turns
//! `LimitExceeded` once, and only once, its traffic crosses the limit.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use serde_json::Value;
use veil_e2e::kube::TestCluster;
use veil_e2e::postgres::TestPostgres;
use veil_e2e::process::{Agent, AgentOptions, free_port};
use veil_e2e::wait::wait_until;
use veil_e2e::xray::{ALLOW_CIDRS, ByteServer, ClientSettings, RealityDest, XrayClient, download};

const NS: &str = "failover";
const REPLICA_SET: &str = "veil-operator-f00d";
const MIB: u64 = 1024 * 1024;
/// The key's limit.
const LIMIT: u64 = 6 * MIB;
const WAIT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(250);

fn objects(port: u16, dest: &RealityDest) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1
kind: ProtocolServer
metadata: {{name: edge, namespace: {NS}}}
spec:
  protocol: vless
  listen: 127.0.0.1
  port: {port}
  nodeSelector: {{matchLabels: {{role: failover}}}}
  allowCidrs: [{}]
  vless:
    publicAddress: 127.0.0.1
    reality:
      dest: \"{}\"
      serverNames: [{}]
      shortIds: [\"\", \"6ba85179e30d4fc2\"]
---
apiVersion: veil.dev/v1alpha1
kind: VlessKey
metadata: {{name: capped, namespace: {NS}}}
spec:
  serverRef: {{name: edge}}
  trafficLimitBytes: {LIMIT}
---
apiVersion: veil.dev/v1alpha1
kind: VeilNode
metadata: {{name: edge-failover}}
spec:
  labels: {{role: failover}}
",
        ALLOW_CIDRS.join(", "),
        dest.dest(),
        dest.server_name
    )
}

/// The key as the cluster has it.
fn key(cluster: &TestCluster) -> Value {
    cluster
        .get_json(&["-n", NS, "vlesskey", "capped"])
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leaders_totals_carry_over_and_the_limit_still_holds() {
    let cluster = TestCluster::shared().await;
    cluster.kubectl_ok(&["create", "namespace", NS]);
    let database = TestPostgres::shared().fresh_database().await.unwrap();
    let dest = RealityDest::start();
    let bytes = ByteServer::start().await;

    let mut leader = cluster.replica(NS, REPLICA_SET, "veil-a", &database).await;
    let leader_log = leader.log_path.clone();
    wait_until(
        "replica a to lead",
        WAIT,
        POLL,
        || leader.log(),
        async || (leader.metric("veil_leader").await? == 1.0).then_some(()),
    )
    .await;
    let follower = cluster.replica(NS, REPLICA_SET, "veil-b", &database).await;
    let admin_token = std::fs::read_to_string(leader.data_dir.join("admin.token")).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, objects(free_port(), &dest)).unwrap();
    cluster.kubectl_ok(&["apply", "-f", &file.display().to_string()]);

    // The agent reaches the replicas through the follower.
    let agent = Agent::start_with(
        &follower,
        "edge-failover",
        &[],
        &AgentOptions {
            env: vec![("VEIL_STATS_INTERVAL".into(), "1s".into())],
            ..AgentOptions::default()
        },
    );
    let paths = [&leader_log, &follower.log_path, &agent.log_path];
    let logs = || {
        paths
            .iter()
            .zip(["leader", "follower", "agent"])
            .map(|(path, name)| {
                format!(
                    "----- {name}:\n{}",
                    std::fs::read_to_string(path).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    wait_until("the key to be Active", WAIT, POLL, logs, async || {
        (key(cluster)["status"]["phase"] == "Active").then_some(())
    })
    .await;
    let link = wait_until("the key's link", WAIT, POLL, logs, async || {
        let response = follower
            .client()
            .get(format!(
                "{}/v1/credentials/vlesskeys/{NS}/capped",
                follower.url
            ))
            .bearer_auth(admin_token.trim())
            .send()
            .await
            .ok()?;
        let body: Value = response.json().await.ok()?;
        body["link"].as_str().map(str::to_owned)
    })
    .await;
    let client = XrayClient::start(&ClientSettings::from_link(&link));
    let downlink = |at_least: u64| {
        wait_until(
            "the key's downlink in the cluster",
            WAIT,
            POLL,
            logs,
            async move || {
                let down = key(cluster)["status"]["downlinkBytes"].as_u64()?;
                (down >= at_least).then_some(down)
            },
        )
    };

    // Near the limit, counted by the leader.
    let mut moved = download(&client, bytes.addr, 4 * MIB).await.unwrap();
    downlink(moved).await;

    // kill -9 the leader; a MiB more flows while nobody leads.
    leader.kill();
    moved += download(&client, bytes.addr, MIB).await.unwrap();
    wait_until("the follower to take over", WAIT, POLL, logs, async || {
        (follower.metric("veil_leader").await? == 1.0).then_some(())
    })
    .await;

    // Same totals on the new leader: every byte, none twice, still under
    // the limit and so still Active.
    let down = downlink(moved).await;
    assert!(
        down <= moved + moved / 100,
        "downlink {down} for {moved} bytes moved"
    );
    assert!(down < LIMIT);
    assert_eq!(key(cluster)["status"]["phase"], "Active", "{}", logs());

    // Crossing the limit on the new leader cuts the key off.
    let _ = download(&client, bytes.addr, 2 * MIB).await;
    let capped = wait_until("LimitExceeded", WAIT, POLL, logs, async || {
        let key = key(cluster);
        (key["status"]["phase"] == "LimitExceeded").then_some(key)
    })
    .await;
    let traffic = capped["status"]["trafficBytes"].as_u64().unwrap();
    assert!(
        (LIMIT..=LIMIT + 2 * MIB).contains(&traffic),
        "LimitExceeded at {traffic} bytes for a limit of {LIMIT}: {capped:#}"
    );
    let again =
        tokio::time::timeout(Duration::from_secs(10), download(&client, bytes.addr, MIB)).await;
    assert!(
        !matches!(again, Ok(Ok(n)) if n == MIB),
        "a key over its limit still downloads"
    );
    drop(agent);
    drop(leader);
}
