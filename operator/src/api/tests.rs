//! The API served in process on loopback: the VLESS credentials endpoint
//! and traffic from agent reports.
#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use tokio::sync::watch;
use veil_crds::kind::Kind;
use veil_crds::object::ObjectKey;

use super::*;
use crate::admin::hash_token;
use crate::plan::tests::{snapshot, uids};
use crate::plan::vless::{GeneratedSecrets, TrafficState, VLESS_ID_SCOPE};
use crate::plan::{PlanInputs, Statuses, plan};
use crate::store::StoreTarget;
use crate::world::GenerationBook;

const ADMIN_TOKEN: &str = "veil_admin_test";
const NODE_TOKEN: &str = "veil_node_test";
const ALICE_ID: &str = "7d6a1b0e-3c1f-4b8e-9a57-2f0c1e5d9b41";
const BOB_ID: &str = "0f3c2a9e-1b4d-4c6e-8a2f-5d7e9b1c3a60";

const OBJECTS: &str = "
apiVersion: v1
kind: Secret
metadata: {name: edge-reality}
stringData: {privateKey: dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo}
---
apiVersion: veil.dev/v1alpha1
kind: ProtocolServer
metadata: {name: edge-vless}
spec:
  protocol: vless
  port: 8443
  vless:
    publicAddress: vpn.example.com
    reality:
      privateKeySecretRef: {name: edge-reality, key: privateKey}
      dest: www.microsoft.com:443
      serverNames: [www.microsoft.com, cdn.example.com]
      shortIds: [6ba85179e30d4fc2, '']
      fingerprint: firefox
---
apiVersion: veil.dev/v1alpha1
kind: VlessKey
metadata: {name: alice}
spec:
  serverRef: {name: edge-vless}
  id: 7d6a1b0e-3c1f-4b8e-9a57-2f0c1e5d9b41
---
apiVersion: veil.dev/v1alpha1
kind: VlessKey
metadata: {name: bob}
spec:
  serverRef: {name: edge-vless}
  flow: none
---
apiVersion: veil.dev/v1alpha1
kind: Strategy
metadata: {name: youtube}
spec:
  engine: vless
  vless: {keyRef: {name: alice}}
---
apiVersion: veil.dev/v1alpha1
kind: Strategy
metadata: {name: discord}
spec:
  engine: vless
  vless: {keyRef: {name: bob}}
";

/// An operator API on a free loopback port, with `OBJECTS` planned once.
struct Served {
    url: String,
    store: Store,
    state: ApiState,
    _dir: tempfile::TempDir,
}

async fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreTarget::Sqlite(dir.path().join("veil.db")))
        .await
        .unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let (world, _) = GenerationBook::default().build_world(&snapshot(OBJECTS), now, uids());
    let planned = plan(&PlanInputs {
        world: &world,
        previous: &Statuses::new(),
        nodes: &BTreeMap::new(),
        runs: &Default::default(),
        now,
        node_timeout: chrono::Duration::seconds(30),
        last_schedule_times: &BTreeMap::new(),
        secrets: &GeneratedSecrets::default(),
        traffic: &TrafficState::default(),
        memo: None,
    });
    let bob_uid = world.objects[&ObjectKey::new(Kind::VlessKey, "default", "bob")]
        .object
        .meta()
        .uid
        .clone()
        .unwrap();
    store
        .generated_value_or_insert(VLESS_ID_SCOPE, &bob_uid, BOB_ID)
        .await
        .unwrap();
    store
        .create_node_token("edge-1", &hash_token(NODE_TOKEN), "t1")
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let view = View {
        world: Arc::new(world),
        statuses: Arc::new(planned.statuses),
        loaded: true,
    };
    let state = ApiState {
        view: watch::channel(Arc::new(view)).1,
        store: store.clone(),
        metrics: metrics.clone(),
        admin_token_hash: hash_token(ADMIN_TOKEN).into(),
        agents: Arc::new(Agents::default()),
        runs: Arc::new(RunBook::load(store.clone()).await.unwrap()),
        traffic: Arc::new(
            crate::traffic::TrafficBook::load(store.clone(), metrics)
                .await
                .unwrap(),
        ),
        heartbeat_interval_seconds: 10,
        node_tokens: crate::node_tokens::NodeTokens::off(),
        shutdown: tokio_util::sync::CancellationToken::new(),
        forwarder: None,
        failed_auth: Default::default(),
        store_tokens: Default::default(),
        probe_history: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = router(state.clone());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    Served {
        url,
        store,
        state,
        _dir: dir,
    }
}

async fn get(url: &str, token: Option<&str>) -> (u16, Value, Option<String>) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap_or(Value::Null), cache)
}

/// `POST /v1/agent/{path}` with the node token.
async fn post_as_node(served: &Served, path: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/agent/{path}", served.url))
        .bearer_auth(NODE_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn credentials_need_the_admin_token_and_hold_the_id_and_link() {
    let served = serve().await;
    let alice = format!("{}/v1/credentials/vlesskeys/default/alice", served.url);
    assert_eq!(get(&alice, None).await.0, 401);
    assert_eq!(get(&alice, Some("wrong")).await.0, 401);
    assert_eq!(
        get(&alice, Some(NODE_TOKEN)).await.0,
        401,
        "a node token is not enough"
    );

    let (status, body, cache) = get(&alice, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cache.as_deref(), Some("no-store"));
    assert_eq!(body["id"], ALICE_ID);
    assert_eq!(
        body["link"],
        "vless://7d6a1b0e-3c1f-4b8e-9a57-2f0c1e5d9b41@vpn.example.com:8443?encryption=none&flow=xtls-rprx-vision&security=reality&sni=www.microsoft.com&fp=firefox&pbk=hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo&sid=6ba85179e30d4fc2&spx=%2F&type=tcp#alice"
    );

    let bob = format!("{}/v1/credentials/vlesskeys/default/bob", served.url);
    let (status, body, _) = get(&bob, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], BOB_ID, "the generated id from the store");
    let link = body["link"].as_str().unwrap();
    assert!(
        link.starts_with(&format!(
            "vless://{BOB_ID}@vpn.example.com:8443?encryption=none&security=reality&"
        )),
        "{link}"
    );
    assert!(link.ends_with("#bob"), "{link}");

    let missing = format!("{}/v1/credentials/vlesskeys/default/nobody", served.url);
    let (status, body, _) = get(&missing, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("nobody"));
}

#[tokio::test]
async fn a_report_retried_with_the_same_seq_counts_traffic_once() {
    let served = serve().await;
    let post = |path: &'static str, body: Value| post_as_node(&served, path, body);
    let registered = post(
        "register",
        json!({"node": "edge-1", "os": "linux", "arch": "x86_64", "agentVersion": "t"}),
    )
    .await;
    assert_eq!(registered.status().as_u16(), 200);
    // The controller's publish: bob on edge-vless is this node's (reports
    // may only carry traffic for what was assigned).
    let server: veil_crds::wire::ServerAssignment = serde_json::from_value(json!({
        "server": {"namespace": "default", "name": "edge-vless"},
        "listen": "0.0.0.0", "port": 8443,
        "vless": {"privateKey": "k", "dest": "example.com:443", "serverNames": ["example.com"],
                  "shortIds": [""], "usersHash": "h",
                  "users": [{"email": "default.bob", "id": BOB_ID, "flow": "xtls-rprx-vision"}]}
    }))
    .unwrap();
    served.state.agents.set_assignments(
        std::collections::BTreeMap::from([(
            "edge-1".to_owned(),
            crate::agents::NodeAssignment {
                servers: vec![server],
                ..Default::default()
            },
        )]),
        chrono::Utc::now(),
    );
    let report = json!({
        "node": "edge-1", "seq": 3, "appliedRevision": 0,
        "servers": [{"server": {"namespace": "default", "name": "edge-vless"}, "phase": "Running", "users": 2}],
        "traffic": [{"server": {"namespace": "default", "name": "edge-vless"}, "email": "default.bob", "uplink": 100, "downlink": 2000}],
    });
    for attempt in 0..2 {
        let answer = post("report", report.clone()).await;
        assert_eq!(answer.status().as_u16(), 200, "attempt {attempt}");
        assert_eq!(answer.json::<Value>().await.unwrap()["seq"], 3);
    }
    let totals = served
        .state
        .traffic
        .snapshot()
        .total("default/edge-vless", "default.bob");
    assert_eq!((totals.uplink, totals.downlink), (100, 2000));
    let stored = served.store.traffic_totals().await.unwrap();
    assert_eq!((stored[0].uplink, stored[0].downlink), (100, 2000));
    let metrics = reqwest::get(format!("{}/metrics", served.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "veil_traffic_bytes_total{server=\"default/edge-vless\",direction=\"downlink\"} 2000"
        ),
        "{metrics}"
    );
    let observed = served.state.agents.observations();
    assert_eq!(
        observed["edge-1"].servers[0].users, 2,
        "server states are kept"
    );
}

#[tokio::test]
async fn probe_rounds_of_assigned_strategies_are_stored_once_and_served_to_admins() {
    let served = serve().await;
    let post = |path: &'static str, body: Value| post_as_node(&served, path, body);
    let registered = post(
        "register",
        json!({"node": "edge-1", "os": "linux", "arch": "x86_64", "agentVersion": "t"}),
    )
    .await;
    assert_eq!(registered.status().as_u16(), 200);
    // Only `youtube` is this node's.
    let group: veil_crds::wire::StrategyGroup = serde_json::from_value(json!({
        "primary": {"namespace": "default", "name": "youtube"},
        "members": [{"strategy": {"namespace": "default", "name": "youtube"}, "generation": 1}],
        "specHash": "h",
    }))
    .unwrap();
    served.state.agents.set_assignments(
        BTreeMap::from([(
            "edge-1".to_owned(),
            crate::agents::NodeAssignment {
                strategies: vec![group],
                ..Default::default()
            },
        )]),
        Utc::now(),
    );
    let member = |name: &str, last_probe: &str| {
        json!({
            "strategy": {"namespace": "default", "name": name},
            "group": {"namespace": "default", "name": name},
            "phase": "Running", "active": true,
            "probe": {"score": 0.25, "lastProbe": last_probe, "round": [
                {"target": "https://video.example/ (TLS 1.3)", "passed": false, "failPhase": "Stall16K", "bytes": 16384},
            ]},
        })
    };
    for (seq, last_probe) in [
        (1, "2026-12-07T06:00:00Z"),
        (2, "2026-12-07T06:00:00Z"),
        (3, "2026-12-07T06:05:00Z"),
    ] {
        let report = json!({
            "node": "edge-1", "seq": seq, "appliedRevision": 0,
            "strategies": [member("youtube", last_probe), member("discord", last_probe)],
        });
        let answer = post("report", report).await;
        assert_eq!(answer.status().as_u16(), 200, "report {seq}");
    }

    let url = |name: &str, rounds: u32| {
        format!(
            "{}/v1/probes/strategies/default/{name}?rounds={rounds}",
            served.url
        )
    };
    assert_eq!(get(&url("youtube", 1), None).await.0, 401);
    assert_eq!(get(&url("youtube", 1), Some(NODE_TOKEN)).await.0, 401);
    let (status, body, _) = get(&url("youtube", 10), Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let rounds = body["rounds"].as_array().unwrap();
    let times: Vec<&str> = rounds
        .iter()
        .map(|r| r["finishedAt"].as_str().unwrap())
        .collect();
    assert_eq!(
        times,
        ["2026-12-07T06:05:00Z", "2026-12-07T06:00:00Z"],
        "a round repeated by the next report is stored once"
    );
    assert_eq!(rounds[0]["node"], "edge-1");
    assert_eq!(rounds[0]["score"], 0.25);
    assert_eq!(rounds[0]["samples"][0]["failPhase"], "Stall16K");
    let (_, latest, _) = get(&url("youtube", 1), Some(ADMIN_TOKEN)).await;
    assert_eq!(latest["rounds"].as_array().unwrap().len(), 1);

    let (status, body, _) = get(&url("discord", 10), Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["rounds"],
        json!([]),
        "a Strategy not assigned to the node keeps nothing of its report"
    );
    let (status, body, _) = get(&url("nothing", 1), Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 404);
    assert!(
        body["error"].as_str().unwrap().contains("nothing"),
        "{body}"
    );
}

/// `GET /v1/agent/assignment?QUERY` with the node token.
async fn poll_as_node(served: &Served, query: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{}/v1/agent/assignment?{query}", served.url))
        .bearer_auth(NODE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "{query}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn an_agent_asking_for_deltas_gets_the_changes_since_its_revision() {
    use veil_crds::wire::{Assignment, AssignmentUpdate, ServerAssignment, users_hash};
    let served = serve().await;
    let registered = post_as_node(
        &served,
        "register",
        json!({"node": "edge-1", "os": "linux", "arch": "x86_64", "agentVersion": "t"}),
    )
    .await;
    assert_eq!(registered.status().as_u16(), 200);
    let publish = |emails: &[&str]| {
        let users: Vec<veil_crds::wire::VlessUser> = emails
            .iter()
            .map(|email| {
                serde_json::from_value(json!({"email": email, "id": BOB_ID, "flow": "none"}))
                    .unwrap()
            })
            .collect();
        let server: ServerAssignment = serde_json::from_value(json!({
            "server": {"namespace": "default", "name": "edge-vless"},
            "listen": "0.0.0.0", "port": 8443,
            "vless": {"privateKey": "k", "dest": "example.com:443", "serverNames": ["example.com"],
                      "shortIds": [""], "usersHash": users_hash(&users), "users": users}
        }))
        .unwrap();
        served.state.agents.set_assignments(
            std::collections::BTreeMap::from([(
                "edge-1".to_owned(),
                crate::agents::NodeAssignment {
                    servers: vec![server],
                    ..Default::default()
                },
            )]),
            chrono::Utc::now(),
        );
    };
    publish(&["a", "b"]);
    let first: Assignment = serde_json::from_value(poll_as_node(&served, "after=0").await).unwrap();
    publish(&["a", "b", "c"]);

    let answer = poll_as_node(&served, &format!("after={}&delta=true", first.revision)).await;
    let deltas = answer["deltas"].as_array().unwrap();
    assert_eq!(deltas.len(), 1, "{answer}");
    assert_eq!(deltas[0]["servers"][0]["upsertedUsers"][0]["email"], "c");
    assert!(
        deltas[0]["servers"][0].get("settings").is_none(),
        "unchanged settings are not sent: {answer}"
    );
    let update: AssignmentUpdate = serde_json::from_value(answer).unwrap();
    let rebuilt = update.resolve(Some(first)).unwrap();
    let whole = poll_as_node(&served, "after=0&delta=true").await;
    let AssignmentUpdate::Full(current) = serde_json::from_value(whole).unwrap() else {
        panic!("revision 0 gets the whole state");
    };
    assert_eq!(rebuilt, current);
    let plain: Assignment = serde_json::from_value(poll_as_node(&served, "after=0").await).unwrap();
    assert_eq!(
        plain, current,
        "agents that ask for no deltas get the plain assignment"
    );
    let metrics = served.state.metrics.encode();
    assert!(
        metrics.contains("veil_assignment_bytes_total{encoding=\"delta\"}"),
        "{metrics}"
    );
}
