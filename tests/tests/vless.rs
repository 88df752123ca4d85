//! VLESS end to end: YAML in a watched directory → veil-operator →
//! veil-agent → real xray, with real xray clients built from the
//! credentials' `vless://` link. Revocation by editing a file, exact traffic
//! totals across agent, xray and operator restarts, duplicate emails,
//! expiry and traffic limits; one key added among hundreds travels as a
//! delta of one user.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use veil_agent::drivers::xray::process::Identity;
use veil_e2e::process::{Agent, AgentOptions, Operator, OperatorOptions, binary, free_port};
use veil_e2e::xray::{
    ALLOW_CIDRS, ByteServer, ClientSettings, RealityDest, SteadyDownload, XrayClient,
    closed_within, download, echo_roundtrip, open_echo,
};

const MIB: u64 = 1024 * 1024;

fn agent_options() -> AgentOptions {
    AgentOptions {
        env: vec![("VEIL_STATS_INTERVAL".into(), "1s".into())],
        ..AgentOptions::default()
    }
}

fn server_yaml(port: u16, dest: &RealityDest, secret: bool) -> String {
    let key_ref = if secret {
        "      privateKeySecretRef:\n        name: reality\n        key: privateKey\n"
    } else {
        ""
    };
    format!(
        "apiVersion: veil.dev/v1alpha1\nkind: ProtocolServer\nmetadata:\n  name: edge\nspec:\n  protocol: vless\n  listen: 127.0.0.1\n  port: {port}\n  allowCidrs: [{}]\n  vless:\n    publicAddress: 127.0.0.1\n    reality:\n{key_ref}      dest: \"{}\"\n      serverNames: [{}]\n      shortIds: [\"\", \"6ba85179e30d4fc2\"]\n",
        ALLOW_CIDRS.join(", "),
        dest.dest(),
        dest.server_name
    )
}

fn key_yaml(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1\nkind: VlessKey\nmetadata:\n  name: {name}\nspec:\n  serverRef:\n    name: edge\n{extra}"
    )
}

fn write(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

struct Edge {
    dir: tempfile::TempDir,
    op: Operator,
    /// Kept alive for the server's Reality handshakes.
    _dest: RealityDest,
    bytes: ByteServer,
}

async fn edge(secret: bool, options: OperatorOptions) -> (Edge, Agent) {
    let dest = RealityDest::start();
    let dir = tempfile::tempdir().unwrap();
    if secret {
        let private = veil_crds::reality::generate_private_key();
        write(
            dir.path(),
            "reality.yaml",
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: reality\nstringData:\n  privateKey: {private}\n"
            ),
        );
    }
    write(
        dir.path(),
        "server.yaml",
        &server_yaml(free_port(), &dest, secret),
    );
    let op = Operator::start_with(dir.path(), options).await;
    let agent = Agent::start_with(&op, "edge-1", &[], &agent_options());
    let bytes = ByteServer::start().await;
    (
        Edge {
            dir,
            op,
            _dest: dest,
            bytes,
        },
        agent,
    )
}

impl Edge {
    async fn key(&self, name: &str) -> Value {
        self.op
            .object("vlesskeys", name)
            .await
            .unwrap_or(Value::Null)
    }

    async fn wait_phase(&self, name: &str, phase: &str) -> Value {
        self.op
            .eventually(
                &format!("{name} {phase}"),
                Duration::from_secs(30),
                || async {
                    let key = self.key(name).await;
                    (key["status"]["phase"] == phase).then_some(key)
                },
            )
            .await
    }

    async fn server_node(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        self.op
            .eventually(what, Duration::from_secs(40), || async {
                let server = self.op.object("protocolservers", "edge").await?;
                let node = server["status"]["nodes"].get(0)?.clone();
                check(&node).then_some(node)
            })
            .await
    }

    /// A real xray client configured from the key's `vless://` link.
    async fn client(&self, name: &str) -> XrayClient {
        let (status, body) = self
            .op
            .api(&format!("/v1/credentials/vlesskeys/default/{name}"))
            .await;
        assert_eq!(status, 200, "{body}");
        let link = body["link"].as_str().expect("link").to_owned();
        XrayClient::start(&ClientSettings::from_link(&link))
    }

    /// Waits until the key's reported downlink reaches `at_least`.
    async fn wait_downlink(&self, name: &str, at_least: u64) -> u64 {
        self.op
            .eventually(
                &format!("{name} downlink ≥ {at_least}"),
                Duration::from_secs(30),
                || async {
                    let down = self.key(name).await["status"]["downlinkBytes"].as_u64()?;
                    (down >= at_least).then_some(down)
                },
            )
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_written_as_yaml_connects_and_disabling_it_cuts_only_its_connection() {
    let (edge, _agent) = edge(false, OperatorOptions::default()).await;
    write(edge.dir.path(), "alice.yaml", &key_yaml("alice", ""));
    write(edge.dir.path(), "bob.yaml", &key_yaml("bob", ""));
    let alice = edge.wait_phase("alice", "Active").await;
    edge.wait_phase("bob", "Active").await;

    // The id is a credential: status shows 8 characters, the Secret the rest.
    let (_, creds) = edge.op.api("/v1/credentials/vlesskeys/default/alice").await;
    let id = creds["id"].as_str().unwrap();
    assert!(
        !alice.to_string().contains(id),
        "the id leaked into status: {alice}"
    );
    assert_eq!(alice["status"]["idPrefix"], id[..8]);
    assert_eq!(alice["status"]["credentialsSecret"], "alice-vless");
    let server = edge.op.object("protocolservers", "edge").await.unwrap();
    let public_key = server["status"]["publicKey"].as_str().unwrap();
    assert!(
        creds["link"]
            .as_str()
            .unwrap()
            .contains(&format!("pbk={public_key}"))
    );

    // `veil-operator link` prints the same link.
    let out = edge.op.cli(&["link", "alice"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        creds["link"].as_str().unwrap()
    );

    // Both connect through the generated Reality key, from the same IP.
    let alice_client = edge.client("alice").await;
    let bob_client = edge.client("bob").await;
    let mut alice_stream = open_echo(&alice_client, &edge.bytes).await;
    let mut bob_stream = open_echo(&bob_client, &edge.bytes).await;
    let pid = edge
        .server_node("server running", |n| n["phase"] == "Running")
        .await["pid"]
        .clone();

    write(
        edge.dir.path(),
        "alice.yaml",
        &key_yaml("alice", "  enabled: false\n"),
    );
    assert!(
        closed_within(&mut alice_stream, Duration::from_secs(5)).await,
        "alice's open connection survived `enabled: false`"
    );
    echo_roundtrip(&mut bob_stream, b"bob continues")
        .await
        .expect("bob keeps his connection");
    edge.wait_phase("alice", "Disabled").await;
    let node = edge.server_node("one user left", |n| n["users"] == 1).await;
    assert_eq!(node["pid"], pid, "no xray restart for a key change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_totals_survive_agent_xray_and_operator_kills() {
    let data = tempfile::tempdir().unwrap();
    let options = OperatorOptions {
        data_dir: Some(data.path().to_path_buf()),
        port: Some(free_port()),
        extra_args: vec!["--heartbeat-interval".into(), "2".into()],
        ..OperatorOptions::default()
    };
    let (mut edge, agent) = edge(true, options.clone()).await;
    write(edge.dir.path(), "alice.yaml", &key_yaml("alice", ""));
    edge.wait_phase("alice", "Active").await;
    let chunk = 4 * MIB;
    let mut moved = 0;

    let client = edge.client("alice").await;
    moved += download(&client, edge.bytes.addr, chunk).await.unwrap();
    edge.wait_downlink("alice", moved).await;

    // Agent killed: its xray keeps counting until the new agent reads it.
    let first_pid = edge
        .server_node("running", |n| n["phase"] == "Running")
        .await["pid"]
        .clone();
    moved += download(&client, edge.bytes.addr, chunk).await.unwrap();
    let killed = agent.kill();
    let agent = Agent::restart(&edge.op, "edge-1", &[], killed, &agent_options());
    edge.wait_downlink("alice", moved).await;
    let node = edge
        .server_node("running", |n| n["phase"] == "Running")
        .await;
    assert_eq!(node["pid"], first_pid, "the new agent adopts xray");

    // xray killed: counted bytes were read before; the agent restarts it.
    moved += download(&client, edge.bytes.addr, chunk).await.unwrap();
    edge.wait_downlink("alice", moved).await;
    let pid = edge
        .server_node("running", |n| n["phase"] == "Running")
        .await["pid"]
        .as_u64()
        .unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    edge.server_node("xray restarted", |n| {
        n["phase"] == "Running" && n["pid"].as_u64().is_some_and(|p| p != pid)
    })
    .await;
    edge.wait_phase("alice", "Active").await;

    // Operator killed: totals are in the store.
    moved += download(&client, edge.bytes.addr, chunk).await.unwrap();
    edge.wait_downlink("alice", moved).await;
    edge.op.kill();
    moved += download(&client, edge.bytes.addr, chunk).await.unwrap();
    edge.op = Operator::start_with(edge.dir.path(), options).await;
    let down = edge.wait_downlink("alice", moved).await;

    // Nothing lost, nothing counted twice (VLESS adds a few bytes per connection).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = edge.key("alice").await["status"].clone();
    let down = status["downlinkBytes"].as_u64().unwrap().max(down);
    assert_eq!(moved, 5 * chunk);
    assert!(
        down >= moved && down <= moved + moved / 100,
        "downlink {down} for {moved} bytes moved: {status}"
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_emails_expiry_and_traffic_limits_are_enforced() {
    let (edge, _agent) = edge(false, OperatorOptions::default()).await;
    write(
        edge.dir.path(),
        "first.yaml",
        &key_yaml("first", "  email: shared@example.com\n"),
    );
    edge.wait_phase("first", "Active").await;
    write(
        edge.dir.path(),
        "second.yaml",
        &key_yaml("second", "  email: shared@example.com\n"),
    );
    let second = edge.wait_phase("second", "Error").await;
    let message = second["status"]["conditions"].to_string();
    assert!(
        message.contains("first"),
        "the error must name the key holding the email: {message}"
    );
    edge.wait_phase("first", "Active").await;

    // Expiry: the key leaves xray when its time comes.
    let expires = (chrono::Utc::now() + chrono::Duration::seconds(6))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    write(
        edge.dir.path(),
        "brief.yaml",
        &key_yaml("brief", &format!("  expiresAt: \"{expires}\"\n")),
    );
    edge.wait_phase("brief", "Active").await;
    let brief_client = edge.client("brief").await;
    let mut brief_stream = open_echo(&brief_client, &edge.bytes).await;
    edge.wait_phase("brief", "Expired").await;
    assert!(
        closed_within(&mut brief_stream, Duration::from_secs(5)).await,
        "an expired key kept its connection"
    );

    // Traffic limit: 2 MiB, then the key is cut off.
    write(
        edge.dir.path(),
        "capped.yaml",
        &key_yaml("capped", "  trafficLimitBytes: 2097152\n"),
    );
    edge.wait_phase("capped", "Active").await;
    let capped_client = edge.client("capped").await;
    let _ = download(&capped_client, edge.bytes.addr, 3 * MIB).await;
    let capped = edge.wait_phase("capped", "LimitExceeded").await;
    assert!(capped["status"]["trafficBytes"].as_u64().unwrap() >= 2 * MIB);
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        download(&capped_client, edge.bytes.addr, MIB),
    )
    .await;
    assert!(
        !matches!(again, Ok(Ok(n)) if n == MIB),
        "a key over its limit still downloads"
    );
    // The first key still works.
    let first_client = edge.client("first").await;
    open_echo(&first_client, &edge.bytes).await;
}

/// How many times the agent (all its runs on one data dir) adopted an xray.
fn adoptions(agent: &Agent) -> usize {
    agent.log().matches("adopted the xray").count()
}

/// Waits until the agent's runs adopted xray `count` times in all.
async fn wait_adoptions(edge: &Edge, agent: &Agent, count: usize) {
    edge.op
        .eventually(
            &format!("adoption #{count}"),
            Duration::from_secs(30),
            || async { (adoptions(agent) >= count).then_some(()) },
        )
        .await;
    assert_eq!(adoptions(agent), count, "agent log:\n{}", agent.log());
}

/// The pid of the running server's xray.
async fn xray_pid(edge: &Edge) -> u32 {
    let node = edge
        .server_node("running", |n| n["phase"] == "Running")
        .await;
    u32::try_from(node["pid"].as_u64().expect("pid")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_keeps_flowing_through_agent_restarts_kills_and_an_upgrade() {
    let (edge, agent) = edge(false, OperatorOptions::default()).await;
    // The agent runs from a copy of its binary, so the file can be replaced.
    let bin = tempfile::tempdir().unwrap();
    let installed = bin.path().join("veil-agent");
    std::fs::copy(binary("veil-agent"), &installed).unwrap();
    let options = AgentOptions {
        binary: Some(installed.clone()),
        ..agent_options()
    };
    // The first agent has started the server's xray before it stops.
    let first = xray_pid(&edge).await;
    let agent = Agent::restart(&edge.op, "edge-1", &[], agent.stop(), &options);
    wait_adoptions(&edge, &agent, 1).await;
    assert_eq!(xray_pid(&edge).await, first);
    write(edge.dir.path(), "alice.yaml", &key_yaml("alice", ""));
    write(edge.dir.path(), "steady.yaml", &key_yaml("steady", ""));
    edge.wait_phase("alice", "Active").await;
    edge.wait_phase("steady", "Active").await;
    let pid = xray_pid(&edge).await;
    let steady_client = edge.client("steady").await;
    let stream = SteadyDownload::start(&steady_client, edge.bytes.addr).await;
    let alice = edge.client("alice").await;
    let chunk = 2 * MIB;
    let mut moved = download(&alice, edge.bytes.addr, chunk).await.unwrap();

    // SIGTERM: xray keeps serving with no agent at all.
    let stopped = agent.stop();
    assert!(Identity::of(pid).is_some(), "xray died with the agent");
    moved += download(&alice, edge.bytes.addr, chunk).await.unwrap();
    stream.advances(MIB).await.unwrap();
    let agent = Agent::restart(&edge.op, "edge-1", &[], stopped, &options);
    wait_adoptions(&edge, &agent, 2).await;
    assert_eq!(xray_pid(&edge).await, pid);
    moved += download(&alice, edge.bytes.addr, chunk).await.unwrap();
    stream.advances(MIB).await.unwrap();

    // kill -9: the same.
    let killed = agent.kill();
    moved += download(&alice, edge.bytes.addr, chunk).await.unwrap();
    let agent = Agent::restart(&edge.op, "edge-1", &[], killed, &options);
    wait_adoptions(&edge, &agent, 3).await;
    assert_eq!(xray_pid(&edge).await, pid);
    stream.advances(MIB).await.unwrap();

    // An upgrade: the binary is replaced on disk (as a package manager
    // does, by rename) under the running agent, which is then restarted.
    let new_build = bin.path().join("veil-agent.new");
    std::fs::copy(binary("veil-agent"), &new_build).unwrap();
    std::fs::rename(&new_build, &installed).unwrap();
    let stopped = agent.stop();
    let agent = Agent::restart(&edge.op, "edge-1", &[], stopped, &options);
    wait_adoptions(&edge, &agent, 4).await;
    assert_eq!(xray_pid(&edge).await, pid, "xray replaced by the upgrade");
    moved += download(&alice, edge.bytes.addr, chunk).await.unwrap();
    stream.advances(MIB).await.unwrap();
    let received = stream
        .finish()
        .await
        .unwrap_or_else(|e| panic!("{e}\nclient log:\n{}", steady_client.log()));

    // Every byte counted once: none lost in the gaps, none read twice.
    edge.wait_downlink("alice", moved).await;
    edge.wait_downlink("steady", received).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let down = edge.key("alice").await["status"]["downlinkBytes"]
        .as_u64()
        .unwrap();
    assert_eq!(moved, 5 * chunk);
    assert!(
        down >= moved && down <= moved + moved / 100,
        "downlink {down} for {moved} bytes moved"
    );
    assert_eq!(
        agent
            .log()
            .matches("xray started in its own process group")
            .count(),
        1,
        "only the first agent started an xray:\n{}",
        agent.log()
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_started_while_the_operator_is_down_serves_its_last_assignment() {
    let data = tempfile::tempdir().unwrap();
    let options = OperatorOptions {
        data_dir: Some(data.path().to_path_buf()),
        port: Some(free_port()),
        ..OperatorOptions::default()
    };
    let (mut edge, agent) = edge(false, options.clone()).await;
    write(edge.dir.path(), "alice.yaml", &key_yaml("alice", ""));
    edge.wait_phase("alice", "Active").await;
    let alice = edge.client("alice").await;
    open_echo(&alice, &edge.bytes).await;
    let pid = xray_pid(&edge).await;

    // The agent stops, its xray is gone too (a reboot), the operator is down.
    let stopped = agent.stop();
    let identity = Identity::of(pid).unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    edge.op.kill();
    for _ in 0..250 {
        if !identity.is_alive() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!identity.is_alive());

    // The new agent cannot register, yet xray comes up from what it kept.
    let agent = Agent::restart(&edge.op, "edge-1", &[], stopped, &agent_options());
    let mut connected = false;
    for _ in 0..60 {
        let attempt = tokio::time::timeout(Duration::from_secs(5), async {
            let mut stream = alice.connect(edge.bytes.addr).await?;
            tokio::io::AsyncWriteExt::write_all(&mut stream, b"E").await?;
            echo_roundtrip(&mut stream, b"served without the operator").await
        })
        .await;
        if matches!(attempt, Ok(Ok(()))) {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        connected,
        "no VLESS service without the operator; agent log:\n{}",
        agent.log()
    );
    assert!(agent.log().contains("serving the last applied assignment"));
    let moved = download(&alice, edge.bytes.addr, 2 * MIB).await.unwrap();

    // The operator returns: what xray counted meanwhile is reported (the
    // agent's registration backoff may have grown to 30 s by then).
    edge.op = Operator::start_with(edge.dir.path(), options).await;
    edge.op
        .eventually("the offline traffic", Duration::from_secs(90), || async {
            let down = edge.key("alice").await["status"]["downlinkBytes"].as_u64()?;
            (down >= moved).then_some(())
        })
        .await;
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_new_work_but_leaves_xray_serving() {
    let (edge, agent) = edge(false, OperatorOptions::default()).await;
    write(edge.dir.path(), "alice.yaml", &key_yaml("alice", ""));
    edge.wait_phase("alice", "Active").await;
    let alice = edge.client("alice").await;
    let mut stream = open_echo(&alice, &edge.bytes).await;
    let pid = xray_pid(&edge).await;

    let data_dir = edge.op.data_dir.display().to_string();
    let list = edge.op.cli(&["token", "list", "--data-dir", &data_dir]);
    let listing = String::from_utf8_lossy(&list.stdout).to_string();
    let id = listing
        .lines()
        .find(|l| l.contains("edge-1"))
        .and_then(|l| l.split_whitespace().next())
        .expect("edge-1's token in the list")
        .to_owned();
    let out = edge
        .op
        .cli(&["token", "revoke", &id, "--data-dir", &data_dir]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A change ends the agent's long poll; its next poll is refused.
    write(edge.dir.path(), "bob.yaml", &key_yaml("bob", ""));
    edge.op
        .eventually(
            "the agent sees the refusal",
            Duration::from_secs(60),
            || async {
                agent
                    .log()
                    .contains("the operator refused this node's token")
                    .then_some(())
            },
        )
        .await;

    // xray serves on: the open connection and new ones.
    assert!(Identity::of(pid).is_some(), "xray was torn down");
    echo_roundtrip(&mut stream, b"still served after the refusal")
        .await
        .expect("the open connection survives a refused token");
    open_echo(&alice, &edge.bytes).await;
    assert_eq!(xray_pid(&edge).await, pid);
}

/// Bytes of assignments the operator sent with `encoding` so far.
async fn assignment_bytes(op: &Operator, encoding: &str) -> f64 {
    op.metric(&format!(
        "veil_assignment_bytes_total{{encoding=\"{encoding}\"}}"
    ))
    .await
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_added_among_hundreds_reaches_xray_as_a_delta_of_one_user() {
    const KEYS: usize = 300;
    let (edge, _agent) = edge(false, OperatorOptions::default()).await;
    let many: Vec<String> = (0..KEYS)
        .map(|i| key_yaml(&format!("user-{i:03}"), ""))
        .collect();
    write(edge.dir.path(), "many.yaml", &many.join("---\n"));
    edge.server_node("every user in xray", |n| n["users"] == KEYS)
        .await;
    let full_before = assignment_bytes(&edge.op, "full").await;
    let delta_before = assignment_bytes(&edge.op, "delta").await;
    assert!(
        full_before > 0.0,
        "the agent's first answer is the whole state"
    );

    write(edge.dir.path(), "late.yaml", &key_yaml("late", ""));
    edge.wait_phase("late", "Active").await;
    edge.server_node("one more user in xray", |n| n["users"] == KEYS + 1)
        .await;
    let full_after = assignment_bytes(&edge.op, "full").await;
    let delta_after = assignment_bytes(&edge.op, "delta").await;
    assert_eq!(
        full_after, full_before,
        "no whole assignment was sent for one key"
    );
    let sent = delta_after - delta_before;
    assert!(
        sent > 0.0 && sent < 2048.0,
        "one key's delta took {sent} bytes"
    );

    // The user rebuilt from the delta is live in the real xray.
    let late = edge.client("late").await;
    let mut stream = open_echo(&late, &edge.bytes).await;
    echo_roundtrip(&mut stream, b"added by a delta")
        .await
        .expect("the late key connects");
}
