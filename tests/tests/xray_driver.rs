//! The agent's xray driver against real xray, with real xray clients over
//! VLESS+Reality on loopback: users applied live, revocation closing exactly
//! the revoked user's connections, no restart for user changes, refused
//! configs leaving the running server untouched, exact traffic deltas, an
//! adopted xray re-synced to what it really has.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use veil_agent::drivers::xray::api::{UserOp, XrayApi};
use veil_agent::drivers::xray::config::INBOUND_TAG;
use veil_agent::drivers::xray::process::Identity;
use veil_agent::drivers::xray::{Event, XrayContext, XrayDriver};
use veil_crds::protocol_server::VlessFlow;
use veil_crds::wire::{
    SecretValue, ServerAssignment, ServerId, ServerReport, VlessAssignment, VlessUser,
};
use veil_e2e::process::{free_port, stop_left_xray};
use veil_e2e::xray::{
    ALLOW_CIDRS, ByteServer, ClientSettings, RealityDest, SteadyDownload, XrayClient,
    closed_within, download, echo_roundtrip, open_echo, xray_binary,
};

struct Harness {
    driver: XrayDriver,
    events: mpsc::UnboundedReceiver<Event>,
    sender: mpsc::UnboundedSender<Event>,
    /// Opens the driver's counter reads (an agent that has registered).
    reporting: watch::Sender<bool>,
    dest: RealityDest,
    private_key: String,
    public_key: String,
    port: u16,
    _data: tempfile::TempDir,
    latest: Option<ServerReport>,
    traffic: std::collections::BTreeMap<String, (u64, u64)>,
}

/// How often the drivers read every counter, unless a test says otherwise.
const STATS_INTERVAL: Duration = Duration::from_millis(500);

fn driver(
    data: &std::path::Path,
    events: &mpsc::UnboundedSender<Event>,
    reporting: &watch::Sender<bool>,
    stats_interval: Duration,
) -> XrayDriver {
    let ctx = XrayContext {
        xray: xray_binary(),
        version: None,
        data_dir: data.to_path_buf(),
        stats_interval,
        events: events.clone(),
        reporting: reporting.subscribe(),
    };
    XrayDriver::new(Some(ctx), events.clone())
}

impl Drop for Harness {
    fn drop(&mut self) {
        // A failed test leaves no xray behind (xray outlives its driver).
        stop_left_xray(self._data.path());
    }
}

fn user(n: usize) -> VlessUser {
    VlessUser {
        email: format!("user{n}"),
        id: SecretValue(format!("6f2a1c3e-0000-4000-8000-{n:012}")),
        flow: VlessFlow::XtlsRprxVision,
    }
}

impl Harness {
    fn new() -> Harness {
        Harness::with_stats_interval(STATS_INTERVAL)
    }

    fn with_stats_interval(stats_interval: Duration) -> Harness {
        let data = tempfile::tempdir().unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        let (reporting, _) = watch::channel(true);
        let private_key = veil_crds::reality::generate_private_key();
        let public_key = veil_crds::reality::public_key(&private_key).unwrap();
        Harness {
            driver: driver(data.path(), &tx, &reporting, stats_interval),
            events,
            sender: tx,
            reporting,
            dest: RealityDest::start(),
            private_key,
            public_key,
            port: free_port(),
            _data: data,
            latest: None,
            traffic: Default::default(),
        }
    }

    /// A new driver on the same data dir, as a restarted agent makes, with
    /// counter reads open or not (an agent not yet registered).
    fn new_driver(&mut self, reporting: bool) {
        self.reporting.send_replace(reporting);
        self.driver = driver(
            self._data.path(),
            &self.sender,
            &self.reporting,
            STATS_INTERVAL,
        );
        self.latest = None;
    }

    fn assignment(&self, users: &[VlessUser]) -> ServerAssignment {
        let mut users = users.to_vec();
        users.sort_by(|a, b| a.email.cmp(&b.email));
        ServerAssignment {
            server: ServerId {
                namespace: "default".into(),
                name: "edge".into(),
            },
            listen: "127.0.0.1".into(),
            port: self.port,
            allow_cidrs: ALLOW_CIDRS.iter().map(|c| c.parse().unwrap()).collect(),
            vless: VlessAssignment {
                private_key: SecretValue(self.private_key.clone()),
                dest: self.dest.dest(),
                server_names: vec![self.dest.server_name.clone()],
                short_ids: vec![String::new()],
                policy: None,
                users_hash: format!(
                    "{}-{}",
                    users.len(),
                    users
                        .iter()
                        .map(|u| u.email.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                users: users.into(),
            },
        }
    }

    async fn apply(&mut self, users: &[VlessUser]) -> ServerReport {
        let assignment = self.assignment(users);
        self.driver.apply(std::slice::from_ref(&assignment)).await;
        let hash = assignment.vless.users_hash.clone();
        self.wait_state(&format!("users {hash} applied"), |r| {
            r.applied_users_hash.as_deref() == Some(hash.as_str())
        })
        .await
    }

    /// Drains events until a state matches (bounded).
    async fn wait_state(
        &mut self,
        what: &str,
        check: impl Fn(&ServerReport) -> bool,
    ) -> ServerReport {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(latest) = &self.latest
                && check(latest)
            {
                return latest.clone();
            }
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("timed out waiting for {what}; last state {:?}", self.latest)
                })
                .expect("driver events");
            self.record(event);
        }
    }

    fn record(&mut self, event: Event) {
        match event {
            Event::State(report) => self.latest = Some(report),
            Event::Gone(_) => self.latest = None,
            Event::Traffic(traffic) => {
                for t in traffic {
                    let entry = self.traffic.entry(t.email).or_default();
                    entry.0 += t.uplink;
                    entry.1 += t.downlink;
                }
            }
        }
    }

    /// Collects events for `duration`.
    async fn drain_for(&mut self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            self.record(event);
        }
    }

    fn client(&self, user: &VlessUser) -> XrayClient {
        XrayClient::start(&ClientSettings {
            server_port: self.port,
            id: user.id.expose().to_owned(),
            flow: "xtls-rprx-vision".into(),
            public_key: self.public_key.clone(),
            server_name: self.dest.server_name.clone(),
            short_id: String::new(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_key_moves_bytes_and_a_revoked_one_is_cut_off_alone() {
    let mut h = Harness::new();
    let server = ByteServer::start().await;
    let (alice, bob) = (user(1), user(2));
    let state = h.apply(&[alice.clone(), bob.clone()]).await;
    let pid = state.pid.expect("xray pid");
    assert_eq!(state.users, 2);

    let alice_client = h.client(&alice);
    let bob_client = h.client(&bob);
    let mut alice_stream = open_echo(&alice_client, &server).await;
    let mut bob_stream = open_echo(&bob_client, &server).await;

    // Revoke alice: both users come from 127.0.0.1, so only per-connection
    // closing can tell them apart.
    let state = h.apply(std::slice::from_ref(&bob)).await;
    assert_eq!(state.pid, Some(pid), "a user change must not restart xray");
    assert!(
        closed_within(&mut alice_stream, Duration::from_secs(5)).await,
        "alice's open connection survived revocation"
    );
    echo_roundtrip(&mut bob_stream, b"bob is still connected")
        .await
        .expect("bob's connection must stay up");
    // A new connection of alice is refused; bob can open new ones.
    let refused = async {
        let mut s = alice_client.connect(server.addr).await?;
        s.write_all(b"E").await?;
        echo_roundtrip(&mut s, b"again").await
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(10), refused)
            .await
            .map_or(true, |r| r.is_err()),
        "a revoked user connected again"
    );
    open_echo(&bob_client, &server).await;
    h.driver.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_keys_come_and_go_while_a_download_runs_without_restart() {
    let mut h = Harness::new();
    let server = ByteServer::start().await;
    let steady = user(0);
    let state = h.apply(std::slice::from_ref(&steady)).await;
    let pid = state.pid.unwrap();
    let client = h.client(&steady);
    let mut stream = client.connect(server.addr).await.unwrap();
    stream.write_all(b"P").await.unwrap();
    let reader = tokio::spawn(async move {
        let mut total = 0u64;
        let t0 = std::time::Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
                Ok(Ok(0)) => return Err(format!("stream ended after {total} bytes")),
                Ok(Ok(n)) => total += n as u64,
                Ok(Err(e)) => return Err(format!("stream broke after {total} bytes: {e}")),
                Err(_) => {
                    return Err(format!(
                        "stream stalled after {total} bytes at {:?}",
                        t0.elapsed()
                    ));
                }
            }
            if total >= 40 * 1024 * 1024 {
                return Ok(total);
            }
        }
    });
    let mut users = vec![steady.clone()];
    for n in 1..=100 {
        users.push(user(n));
        if n % 10 == 0 {
            let state = h.apply(&users).await;
            assert_eq!(state.pid, Some(pid));
        }
    }
    assert_eq!(h.latest.as_ref().unwrap().users, 101);
    while users.len() > 1 {
        users.truncate(users.len().saturating_sub(10).max(1));
        let state = h.apply(&users).await;
        assert_eq!(state.pid, Some(pid));
    }
    let state = h.latest.clone().unwrap();
    assert_eq!((state.users, state.restarts, state.pid), (1, 0, Some(pid)));
    let downloaded = reader.await.unwrap().unwrap_or_else(|e| {
        panic!(
            "the steady user's download must never break: {e}\nclient log:\n{}",
            client.log()
        )
    });
    assert!(downloaded >= 40 * 1024 * 1024);
    h.driver.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_config_leaves_the_running_server_untouched() {
    let mut h = Harness::new();
    let server = ByteServer::start().await;
    let alice = user(1);
    let state = h.apply(std::slice::from_ref(&alice)).await;
    let pid = state.pid.unwrap();
    let client = h.client(&alice);
    let mut stream = open_echo(&client, &server).await;

    // A private key xray cannot use: the new config fails `xray run -test`.
    let good_key = std::mem::replace(&mut h.private_key, "AAAA".into());
    let bad = h.assignment(std::slice::from_ref(&alice));
    h.driver.apply(std::slice::from_ref(&bad)).await;
    let state = h
        .wait_state("the refusal", |r| {
            r.message.as_deref().is_some_and(|m| m.contains("refused"))
        })
        .await;
    let message = state.message.clone().unwrap();
    assert!(
        message.contains("privateKey"),
        "xray's own message expected: {message}"
    );
    assert!(
        !message.contains("AAAA"),
        "the key must be masked: {message}"
    );
    assert_eq!(state.pid, Some(pid), "the running xray must stay");
    echo_roundtrip(&mut stream, b"still served by the old config")
        .await
        .unwrap();

    // Fixing it restarts nothing either: the running config is the good one.
    h.private_key = good_key;
    let good = h.assignment(std::slice::from_ref(&alice));
    h.driver.apply(std::slice::from_ref(&good)).await;
    let state = h
        .wait_state("the refusal cleared", |r| r.message.is_none())
        .await;
    assert_eq!(state.pid, Some(pid));
    assert_eq!(state.message, None);
    h.driver.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_deltas_add_up_to_the_bytes_moved() {
    let mut h = Harness::new();
    let server = ByteServer::start().await;
    let (alice, bob) = (user(1), user(2));
    h.apply(&[alice.clone(), bob.clone()]).await;
    let alice_client = h.client(&alice);
    let bob_client = h.client(&bob);
    let mut moved_down = 0;
    for _ in 0..3 {
        moved_down += download(&alice_client, server.addr, 3 * 1024 * 1024)
            .await
            .unwrap();
    }
    assert_eq!(moved_down, 9 * 1024 * 1024);
    let mut stream = open_echo(&bob_client, &server).await;
    let payload = vec![7u8; 256 * 1024];
    echo_roundtrip(&mut stream, &payload).await.unwrap();
    drop(stream);
    h.drain_for(Duration::from_secs(2)).await;

    let (up, down) = h.traffic.get("user1").copied().unwrap_or_default();
    // xray counts the payload the user's requests carried (27 request bytes
    // plus VLESS headers) and every byte sent back; overhead stays small.
    assert!(down >= moved_down, "downlink {down} < {moved_down} moved");
    assert!(
        down <= moved_down + 64 * 1024,
        "downlink {down} counted far more than {moved_down}"
    );
    assert!(up < 64 * 1024, "uplink {up} for a few request bytes");
    let (bob_up, bob_down) = h.traffic.get("user2").copied().unwrap_or_default();
    let echoed = payload.len() as u64;
    assert!(
        bob_up >= echoed && bob_up <= echoed + 64 * 1024,
        "bob uplink {bob_up}"
    );
    assert!(
        bob_down >= echoed && bob_down <= echoed + 64 * 1024,
        "bob downlink {bob_down}"
    );

    // Reads reset the counters: nothing moves, nothing more is counted.
    let before = h.traffic.clone();
    h.drain_for(Duration::from_millis(1500)).await;
    assert_eq!(before, h.traffic);
    h.driver.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_users_last_bytes_are_read_alone_before_it_goes() {
    // No periodic read within the test: only the removal reads counters.
    let mut h = Harness::with_stats_interval(Duration::from_secs(3600));
    let server = ByteServer::start().await;
    let (alice, bob) = (user(1), user(2));
    h.apply(&[alice.clone(), bob.clone()]).await;
    let moved = download(&h.client(&alice), server.addr, 1024 * 1024)
        .await
        .unwrap();
    let bob_moved = download(&h.client(&bob), server.addr, 64 * 1024)
        .await
        .unwrap();
    h.apply(std::slice::from_ref(&bob)).await;
    h.drain_for(Duration::from_millis(500)).await;
    let (_, down) = h.traffic.get("user1").copied().unwrap_or_default();
    assert!(
        down >= moved,
        "alice's downlink {down} < {moved} moved before removal"
    );
    assert!(
        !h.traffic.contains_key("user2"),
        "only the removed user's counters are read: {:?}",
        h.traffic
    );
    // Bob's counters stayed in xray: the final read on stop counts them.
    h.driver.stop_all().await;
    h.drain_for(Duration::from_millis(500)).await;
    let (_, bob_down) = h.traffic.get("user2").copied().unwrap_or_default();
    assert!(
        bob_down >= bob_moved,
        "bob's downlink {bob_down} < {bob_moved}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_xray_is_restarted_with_every_user_including_those_added_through_the_api() {
    let mut h = Harness::new();
    let server = ByteServer::start().await;
    let alice = user(1);
    let state = h.apply(std::slice::from_ref(&alice)).await;
    let pid = state.pid.unwrap();
    // Bob is added through the API only; then xray dies.
    let bob = user(2);
    h.apply(&[alice.clone(), bob.clone()]).await;
    nix_kill(pid);
    let state = h
        .wait_state("a new xray", |r| {
            r.pid.is_some_and(|p| p != pid) && r.applied_users_hash.is_some()
        })
        .await;
    assert_eq!(state.users, 2);
    assert_eq!(state.restarts, 1);
    let client = h.client(&bob);
    open_echo(&client, &server).await;
    h.driver.stop_all().await;
}

/// An adopted xray whose users were changed behind the agent's back (one
/// removed, a stranger added, through xray's own API): its config on disk
/// still lists the old set, so only the re-sync against what xray reports
/// can add the missing user back and remove the stranger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_xray_changed_behind_the_agents_back_is_resynced() {
    let mut h = Harness::new();
    let server = ByteServer::start().await;
    let (alice, bob, stranger) = (user(1), user(2), user(3));
    let state = h.apply(&[alice.clone(), bob.clone()]).await;
    let pid = state.pid.unwrap();
    h.driver.detach_all().await;

    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(h._data.path().join("default.edge/state.json")).unwrap(),
    )
    .unwrap();
    let api_port = u16::try_from(record["api_port"].as_u64().unwrap()).unwrap();
    let api = XrayApi::connect(std::net::SocketAddr::from(([127, 0, 0, 1], api_port)))
        .await
        .unwrap();
    let done = api
        .apply(
            INBOUND_TAG,
            vec![
                UserOp::Remove {
                    email: bob.email.clone(),
                },
                UserOp::Add((&stranger).into()),
            ],
        )
        .await;
    assert!(done.iter().all(|(_, r)| r.is_ok()), "{done:?}");

    h.new_driver(true);
    let state = h.apply(&[alice.clone(), bob.clone()]).await;
    assert_eq!(state.pid, Some(pid), "adopted, not replaced");
    assert_eq!(state.users, 2);
    let mut present = api.inbound_users(INBOUND_TAG).await.unwrap();
    present.sort();
    assert_eq!(present, vec!["user1".to_owned(), "user2".to_owned()]);
    open_echo(&h.client(&bob), &server).await;
    h.driver.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_xray_is_adopted_by_the_next_driver_and_counted_exactly_once() {
    const CHUNK: u64 = 2 * 1024 * 1024;
    let mut h = Harness::new();
    let server = ByteServer::start().await;
    let (steady, alice, bob) = (user(0), user(1), user(2));
    let state = h.apply(&[steady.clone(), alice.clone()]).await;
    let pid = state.pid.unwrap();
    let steady_client = h.client(&steady);
    let stream = SteadyDownload::start(&steady_client, server.addr).await;
    let alice_client = h.client(&alice);
    let mut moved = download(&alice_client, server.addr, CHUNK).await.unwrap();
    h.drain_for(Duration::from_secs(1)).await;

    // The agent stops: counters are read, xray keeps running.
    h.driver.detach_all().await;
    let identity = Identity::of(pid).expect("xray outlives its driver");
    moved += download(&alice_client, server.addr, CHUNK).await.unwrap();
    stream.advances(1024 * 1024).await.unwrap();

    // The next agent, not registered yet: adopts xray, syncs users through
    // the API, and leaves the counters in xray (nothing it could journal).
    h.new_driver(false);
    let state = h.apply(&[steady.clone(), alice.clone(), bob.clone()]).await;
    assert_eq!(state.pid, Some(pid), "xray was replaced instead of adopted");
    assert_eq!(state.restarts, 0);
    assert_eq!(state.users, 3);
    moved += download(&alice_client, server.addr, CHUNK).await.unwrap();
    let before = h.traffic.clone();
    h.drain_for(Duration::from_millis(1500)).await;
    assert_eq!(
        before, h.traffic,
        "counters read before they could be journaled"
    );

    // Registered: everything xray counted meanwhile arrives, once.
    h.reporting.send_replace(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while h.traffic.get("user1").map_or(0, |t| t.1) < moved {
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice's downlink {:?} never reached {moved}",
            h.traffic.get("user1")
        );
        h.drain_for(Duration::from_millis(200)).await;
    }
    h.drain_for(Duration::from_secs(1)).await;
    let down = h.traffic["user1"].1;
    assert!(
        down <= moved + 64 * 1024,
        "downlink {down} for {moved} bytes moved: counted twice"
    );
    open_echo(&h.client(&bob), &server).await;
    stream.advances(1024 * 1024).await.unwrap();
    stream.finish().await.unwrap();

    // Detached again, and the next assignment has no server: the orphan is
    // stopped and its files removed.
    h.driver.detach_all().await;
    h.new_driver(true);
    h.driver.apply(&[]).await;
    h.driver.stop_orphans().await;
    assert!(!identity.is_alive(), "the orphaned xray still runs");
    assert_eq!(std::fs::read_dir(h._data.path()).unwrap().count(), 0);
}

fn nix_kill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
