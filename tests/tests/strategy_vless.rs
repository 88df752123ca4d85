//! A VLESS backup end to end: when no zapret Strategy gets through, the
//! node falls back to a VLESS server through a real client.
//!
//! [c] runs the operator and the agent; the agent keeps a real client
//! (xray in one test, sing-box in the other) warm for the `vless` backup (a SOCKS5 port on 127.0.0.1). [s] holds the
//! test site and a real xray VLESS+Reality server on a second, unblocked
//! address. The DPI at level 3 throttles every flow to the site's address,
//! whatever the desync — so the zapret primary fails, the backup is tested
//! through its SOCKS port, and becomes active; curl through that port then
//! reaches the blocked name (the server resolves it: remote DNS).

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Stdio};
use std::time::Duration;

use veil_e2e::dpi_lab::DpiLab;
use veil_e2e::dpi_sim::DpiSimOptions;
use veil_e2e::netns::Topology;
use veil_e2e::process::{Agent, Operator};
use veil_e2e::xray::xray_binary;
use veil_e2e::zapret_agent::{
    self, Failover, blocked_test_strategy, wait_entry, wait_two_passing_rounds, with_failover,
    write_atomically as write,
};

const NODE: &str = "edge-c";
const VLESS_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 9);
const VLESS_PORT: u16 = 8443;
const WAIT: Duration = Duration::from_secs(60);

/// A real xray VLESS+Reality server in [s]; killed on drop.
struct VlessServer {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for VlessServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server for user `id` and returns it with its client link.
fn vless_server(lab: &DpiLab, id: &str) -> (VlessServer, String) {
    let private = veil_crds::reality::generate_private_key();
    let public = veil_crds::reality::public_key(&private).expect("a public key");
    let config = serde_json::json!({
        "log": {"loglevel": "warning"},
        "inbounds": [{
            "listen": VLESS_V4.to_string(),
            "port": VLESS_PORT,
            "protocol": "vless",
            "settings": {"clients": [{"id": id}], "decryption": "none"},
            "streamSettings": {
                "network": "tcp",
                "security": "reality",
                "realitySettings": {
                    "dest": format!("{}:443", Topology::SERVER_V4),
                    "serverNames": ["allowed.test"],
                    "privateKey": private,
                    "shortIds": [""],
                },
            },
        }],
        "outbounds": [{"protocol": "freedom"}],
    });
    let dir = tempfile::tempdir().expect("server dir");
    let path = dir.path().join("server.json");
    std::fs::write(&path, config.to_string()).expect("server config");
    let child = lab
        .topology
        .server
        .command(xray_binary())
        .args(["run", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("xray server");
    let link = format!(
        "vless://{id}@{VLESS_V4}:{VLESS_PORT}?encryption=none&security=reality&sni=allowed.test&fp=chrome&pbk={public}&sid=&type=tcp#backup"
    );
    (VlessServer { child, _dir: dir }, link)
}

#[test]
fn when_no_zapret_strategy_works_the_vless_backup_takes_over_through_xray() {
    fall_back_to_vless("xray");
}

#[test]
fn when_no_zapret_strategy_works_the_vless_backup_takes_over_through_sing_box() {
    fall_back_to_vless("sing-box");
}

/// The scenario with `client` as the node's VLESS client.
fn fall_back_to_vless(client: &str) {
    let topology = Topology::builder().server_address(VLESS_V4).build();
    let options = DpiSimOptions {
        level: 2,
        block_addresses: vec![IpAddr::V4(Topology::SERVER_V4)],
        ..DpiSimOptions::default()
    };
    let lab = DpiLab::with_options(topology, options);
    // The VLESS server (started next) resolves the names its clients ask
    // for. Written after the site started: Python looks up the machine's
    // own name at start, which this file does not hold.
    lab.topology.server.set_hosts(&[(
        IpAddr::V4(Topology::SERVER_V4),
        vec!["blocked.test".to_owned(), "allowed.test".to_owned()],
    )]);
    lab.topology.client.block_on(|| scenario(&lab, client));
}

async fn scenario(lab: &DpiLab, client: &str) {
    let id = uuid::Uuid::new_v4().to_string();
    let (_server, link) = vless_server(lab, &id);
    let source = tempfile::tempdir().expect("source dir");
    let op = Operator::start(source.path()).await;
    let options = lab.agent_options();
    let agent = Agent::start_with(&op, NODE, &["role=edge"], &options);
    let primary = with_failover(
        &blocked_test_strategy("youtube", zapret_agent::FAKE_TTL),
        &Failover {
            interval: "3s",
            timeout: "2s",
            passes: 1,
            targets: &[("https://blocked.test/bytes/65536", Some(65536))],
            backups: &["via-vless"],
            failure_threshold: 1,
            min_switch_interval: "1h",
        },
    );
    let backup = format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: vless-link}}
stringData: {{url: \"{link}\"}}
---
apiVersion: veil.dev/v1alpha1
kind: Strategy
metadata: {{name: via-vless}}
spec:
  nodeSelector: {{matchLabels: {{role: edge}}}}
  engine: vless
  vless: {{urlSecretRef: {{name: vless-link, key: url}}, client: {client}}}
"
    );
    write(&source.path().join("via-vless.yaml"), &backup);
    write(&source.path().join("youtube.yaml"), &primary);

    // The backup's client is warm before anything fails, and checked
    // through its port at a low rate: its status says it would work.
    let warm = wait_entry(
        &op,
        "via-vless",
        NODE,
        "a warm, checked standby",
        WAIT,
        |e| e["phase"] == "Standby" && e["socksPort"].is_u64() && e["lastProbe"].is_string(),
    )
    .await;
    assert_eq!(
        warm["successRate"].as_f64(),
        Some(1.0),
        "{warm}\n{}",
        agent.log()
    );
    assert!(warm.get("failPhase").is_none(), "{warm}");
    let port = warm["socksPort"].as_u64().expect("a port");
    wait_two_passing_rounds(&op, "youtube", NODE, "youtube").await;

    // Level 3 throttles every flow to the site's address: the zapret
    // primary stalls; the VLESS backup passes through its SOCKS port.
    lab.sim.set_level(3);
    let entry = wait_entry(&op, "via-vless", NODE, "active", WAIT, |e| {
        e["active"] == true && e["phase"] == "Running"
    })
    .await;
    assert_eq!(entry["socksPort"].as_u64(), Some(port), "{entry}");
    assert_eq!(entry["implementation"], client, "{entry}");
    let primary_entry = wait_entry(&op, "youtube", NODE, "replaced", WAIT, |e| {
        e["activeStrategy"] == "via-vless"
    })
    .await;
    assert_eq!(primary_entry["phase"], "Standby", "{primary_entry}");

    // Users point their apps at the SOCKS port: the blocked name loads in
    // full, the name resolved by the server.
    let proxy = format!("127.0.0.1:{port}");
    let fetch = lab.curl(
        "https://blocked.test/bytes/65536",
        &["--socks5-hostname", &proxy],
    );
    assert!(
        fetch.ok() && fetch.body.len() == 65536,
        "{fetch:?}\n{}",
        agent.log()
    );
    let log = agent.log();
    assert!(!log.contains(&id), "the link's id in the agent log");
}
