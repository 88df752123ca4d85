//! Servers: placement, Reality keys, assignments, server status.

use super::*;

fn now() -> DateTime<Utc> {
    at("2026-11-23T12:00:00Z")
}

fn two_keys() -> String {
    format!(
        "{BASE}{}{}",
        key("bob", &format!("  id: {BOB_ID}\n  flow: none\n")),
        key(
            "alice",
            &format!("  id: {ALICE_ID}\n  email: alice@example.com\n")
        )
    )
}

#[test]
fn a_vless_server_runs_on_the_selected_nodes_with_every_eligible_user_sorted_by_email() {
    let mut case = Case::new(&two_keys(), now());
    case.agent("edge-1", "203.0.113.1")
        .agent("other", "203.0.113.9");
    let plan = case.plan();

    let assigned = servers_of(&plan, "edge-1");
    assert_eq!(assigned.len(), 1);
    let server = &assigned[0];
    assert_eq!(server.server, server_id());
    assert_eq!((server.listen.as_str(), server.port), ("0.0.0.0", 443));
    assert_eq!(server.vless.private_key.expose(), PRIVATE);
    assert_eq!(server.vless.dest, "www.microsoft.com:443");
    assert_eq!(server.vless.short_ids, ["", "6ba85179e30d4fc2"]);
    let users: Vec<(&str, &str, VlessFlowName)> = server
        .vless
        .users
        .iter()
        .map(|u| (u.email.as_str(), u.id.expose(), u.flow.as_str()))
        .collect();
    assert_eq!(
        users,
        [
            ("alice@example.com", ALICE_ID, "xtls-rprx-vision"),
            ("default.bob", BOB_ID, "none"),
        ],
        "sorted by email; email defaults to namespace.name, flow to the server's"
    );
    assert_eq!(server.vless.users_hash, users_hash(&server.vless.users));
    // edge-2 has no agent yet but is selected: its assignment waits for it.
    assert_eq!(servers_of(&plan, "edge-2"), assigned);
    assert!(servers_of(&plan, "other").is_empty(), "not selected");

    let status = server_status(&plan);
    assert_eq!(status["publicKey"], PUBLIC);
    assert_eq!(status["desiredNodes"], 2);
    assert_eq!(status["users"], 2);
    assert_eq!(status["observedGeneration"], 1);
}

type VlessFlowName = &'static str;

#[test]
fn a_missing_private_key_secret_stalls_the_server_naming_it_and_assigns_nothing() {
    let yaml = two_keys().replace("name: edge-reality, key: privateKey", "name: gone, key: pk");
    let mut case = Case::new(&yaml, now());
    case.agent("edge-1", "203.0.113.1");
    let plan = case.plan();
    assert!(servers_of(&plan, "edge-1").is_empty());
    let status = server_status(&plan);
    let stalled = condition(&status, "Stalled");
    assert_eq!(stalled["status"], "True");
    assert_eq!(stalled["reason"], "SecretNotFound");
    let message = stalled["message"].as_str().unwrap();
    assert!(
        message.contains("Secret default/gone") && message.contains("`pk`"),
        "{message}"
    );
    assert!(status.get("publicKey").is_none());

    let alice = key_status(&plan, "alice");
    assert_eq!(alice["phase"], "Pending");
    assert_eq!(condition(&alice, "Ready")["reason"], "ServerNotReady");

    let yaml = two_keys().replace("key: privateKey}", "key: other}");
    let plan = Case::new(&yaml, now()).plan();
    let stalled = condition(&server_status(&plan), "Stalled").clone();
    assert_eq!(stalled["reason"], "SecretKeyNotFound");
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains("has no key `other`")
    );
}

#[test]
fn an_unusable_private_key_is_reported_without_its_value() {
    let yaml = two_keys().replace(PRIVATE, "c2VjcmV0LXZhbHVl");
    let plan = Case::new(&yaml, now()).plan();
    let status = server_status(&plan);
    let stalled = condition(&status, "Stalled");
    assert_eq!(stalled["reason"], "InvalidPrivateKey");
    assert!(!status.to_string().contains("c2VjcmV0LXZhbHVl"));
    assert!(plan.assignments.values().all(|a| a.servers.is_empty()));
}

#[test]
fn without_a_secret_the_generated_key_is_used() {
    let yaml = two_keys().replace(
        "      privateKeySecretRef: {name: edge-reality, key: privateKey}\n",
        "",
    );
    let mut case = Case::new(&yaml, now());
    case.agent("edge-1", "203.0.113.1");
    let pending = case.plan();
    assert_eq!(
        condition(&server_status(&pending), "Reconciling")["reason"],
        "KeyPending"
    );
    let uid = case.uid(Kind::ProtocolServer, "edge-vless");
    case.secrets.reality_keys.insert(uid, PRIVATE.to_owned());
    let plan = case.plan();
    assert_eq!(server_status(&plan)["publicKey"], PUBLIC);
    assert_eq!(
        servers_of(&plan, "edge-1")[0].vless.private_key.expose(),
        PRIVATE
    );
}

#[test]
fn a_server_is_ready_when_every_node_runs_it_and_shows_what_agents_report() {
    let mut case = Case::new(&two_keys(), now());
    case.agent("edge-1", "203.0.113.1")
        .agent("edge-2", "2001:db8::2");
    let hash = hash_of(&case.plan());
    case.report("edge-1", running(&hash));
    let half = case.plan();
    let status = server_status(&half);
    assert_eq!(status["readyNodes"], 1);
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "Reconciling")["status"], "True");
    let message = condition(&status, "Ready")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("running on 1 of 2") && message.contains("edge-2"),
        "{message}"
    );

    case.report("edge-2", running(&hash));
    let status = server_status(&case.plan());
    assert_eq!(status["readyNodes"], 2);
    assert_eq!(condition(&status, "Ready")["status"], "True");
    let node = &status["nodes"][0];
    assert_eq!(node["node"], "edge-1");
    assert_eq!(node["phase"], "Running");
    assert_eq!(node["pid"], 4242);
    assert_eq!(node["version"], "26.3.27");
    assert_eq!(
        (node["users"].clone(), node["connections"].clone()),
        (2.into(), 5.into())
    );
    assert_eq!(node["restarts"], 1);
    assert_eq!(node["endpoint"], "203.0.113.1:443", "the node's address");
    assert_eq!(node["lastUpdateTime"], "2026-11-23T12:00:00Z");
    assert_eq!(status["nodes"][1]["endpoint"], "[2001:db8::2]:443");

    let public = two_keys().replace(
        "  vless:\n",
        "  vless:\n    publicAddress: vpn.example.com\n",
    );
    case.edit(&public);
    let status = server_status(&case.plan());
    assert_eq!(status["nodes"][1]["endpoint"], "vpn.example.com:443");
}

#[test]
fn a_refused_config_stalls_the_server_with_xrays_message() {
    let mut case = Case::new(&two_keys(), now());
    case.agent("edge-1", "203.0.113.1");
    case.report(
        "edge-1",
        ServerReport {
            server: server_id(),
            phase: WorkloadPhase::Failed,
            message: Some("xray -test: invalid dest".into()),
            ..ServerReport::default()
        },
    );
    let status = server_status(&case.plan());
    let stalled = condition(&status, "Stalled");
    assert_eq!(stalled["reason"], "ServerFailed");
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains("edge-1: xray -test: invalid dest")
    );
}

#[test]
fn a_lost_node_is_failed_with_when_it_was_last_heard_from() {
    let mut case = Case::new(&two_keys(), now());
    case.agent("edge-1", "203.0.113.1");
    let hash = hash_of(&case.plan());
    case.report("edge-1", running(&hash));
    case.now += TimeDelta::minutes(5);
    let status = server_status(&case.plan());
    let node = &status["nodes"][0];
    assert_eq!(node["phase"], "Failed");
    assert!(
        node["message"]
            .as_str()
            .unwrap()
            .contains("stopped reporting")
    );
    assert_eq!(node["pid"], 4242, "the last report is still shown");
    assert_eq!(status["readyNodes"], 0);
    assert_eq!(
        condition(&status, "Stalled")["status"],
        "False",
        "not a refused config"
    );
}

#[test]
fn a_cordoned_node_keeps_a_server_it_runs_but_gets_no_new_one() {
    let cordoned = two_keys().replace(
        "metadata: {name: edge-2}\nspec: {labels: {role: edge}}",
        "metadata: {name: edge-2}\nspec: {labels: {role: edge}, cordoned: true}",
    );
    let mut case = Case::new(&cordoned, now());
    case.agent("edge-1", "203.0.113.1")
        .agent("edge-2", "203.0.113.2");
    let plan = case.plan();
    assert!(
        servers_of(&plan, "edge-2").is_empty(),
        "nothing new on a cordoned node"
    );
    assert_eq!(server_status(&plan)["desiredNodes"], 1);

    let hash = hash_of(&plan);
    case.report("edge-2", running(&hash));
    let plan = case.plan();
    assert_eq!(servers_of(&plan, "edge-2").len(), 1, "kept where it runs");
    assert_eq!(server_status(&plan)["desiredNodes"], 2);

    let only_cordoned = cordoned.replace(
        "metadata: {name: edge-1}\nspec: {labels: {role: edge}}",
        "metadata: {name: edge-1}",
    );
    let plan = Case::new(&only_cordoned, now()).plan();
    let reconciling = condition(&server_status(&plan), "Reconciling").clone();
    assert_eq!(reconciling["reason"], "NoNodes");
    assert!(
        reconciling["message"]
            .as_str()
            .unwrap()
            .contains("cordoned (edge-2)")
    );
}

#[test]
fn somnytoo_servers_stay_not_implemented() {
    let yaml = "
apiVersion: veil.dev/v1alpha1
kind: ProtocolServer
metadata: {name: relay}
spec:
  protocol: somnytoo
  port: 9000
  somnytoo:
    pskSecretRef: {name: relay-psk, key: psk}
";
    let plan = Case::new(yaml, now()).plan();
    let status = status(&plan, Kind::ProtocolServer, "relay");
    assert_eq!(condition(&status, "Stalled")["reason"], "NotImplemented");
}

#[test]
fn statuses_never_contain_a_secret() {
    let mut case = Case::new(&two_keys(), now());
    case.agent("edge-1", "203.0.113.1");
    let plan = case.plan();
    let all: String = plan.statuses.values().map(|s| s.get().to_owned()).collect();
    for secret in [PRIVATE, ALICE_ID, BOB_ID, &ALICE_ID[..9]] {
        assert!(!all.contains(secret), "a status shows {secret}");
    }
    assert_eq!(key_status(&plan, "alice")["idPrefix"], &ALICE_ID[..8]);
    assert!(
        !format!("{:?}", plan.assignments).contains(PRIVATE),
        "Debug of an assignment hides secrets"
    );
}
