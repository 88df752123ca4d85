//! Agent identity in Kubernetes mode, against a real kube-apiserver with
//! etcd.
//!
//! Pod tokens: a Node and a Pod bound to it, a token from the TokenRequest
//! API bound to that Pod with Veil's audience (what the DaemonSet's
//! projected volume holds): a real agent registers as that node; the same
//! token claiming another node, a token of the wrong audience, of another
//! ServiceAccount, or of a deleted Pod is refused.
//!
//! Token Secrets (agents outside the cluster): `veil-operator token create
//! --kube` writes the node's own Secret, the agent registers with it and
//! gets a VeilNode created in the cluster that turns Ready; a wrong token
//! is 401; `token revoke --kube` revokes at once; a Secret holding several
//! nodes' tokens grants none.
//!
//! VeilNodes are cluster-scoped and every operator writes the status of
//! every VeilNode it sees, so the two tests that wait for a node to turn
//! Ready start clusters of their own (on the shared one, another test's
//! operator wrote the node's status back to not Ready now and then); each
//! test has its own namespace for the operator's Lease and token Secrets.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use veil_agent::join::JoinValue;
use veil_agent::trust::{CaPin, Trust};
use veil_e2e::kube::TestCluster;
use veil_e2e::process::{Agent, Operator, OperatorOptions, binary, shared_kube_tls};
use veil_e2e::wait::wait_until;

/// Upper bound of every wait (each step usually takes about a second).
const WAIT: Duration = Duration::from_secs(60);
/// How often a condition is checked again while waiting.
const POLL: Duration = Duration::from_millis(200);

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// `veil-operator token ARGS --kube` against `cluster`, tokens in
/// `namespace`; `create` pins the CA the test operators serve under (they
/// serve files, not a `--tls-secret` Secret).
fn token_cli(cluster: &TestCluster, namespace: &str, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(binary("veil-operator"));
    command
        .arg("token")
        .args(args)
        .args(["--kube", "--kubeconfig", &path_arg(cluster.kubeconfig())])
        .args(["--namespace", namespace]);
    if args.first() == Some(&"create") {
        command.args(["--ca-file", &path_arg(&shared_kube_tls().join("ca.crt"))]);
    }
    command.output().expect("running veil-operator token")
}

fn succeeded(what: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A `--source kube` operator whose Lease and token Secrets live in
/// `namespace` (and which watches only that namespace's objects);
/// heartbeats every second, so a silent node is NotReady within seconds.
async fn kube_operator(cluster: &TestCluster, namespace: &str) -> Operator {
    let unused = tempfile::tempdir().unwrap();
    let extra_args = [
        "--kubeconfig",
        &path_arg(cluster.kubeconfig()),
        "--namespace",
        namespace,
        "--lease-namespace",
        namespace,
        "--heartbeat-interval",
        "1",
    ]
    .map(str::to_owned)
    .to_vec();
    Operator::start_with(
        unused.path(),
        OperatorOptions {
            source: Some("kube".into()),
            extra_args,
            ..OperatorOptions::default()
        },
    )
    .await
}

/// Polls `check` until it returns `Some`; panics after [`WAIT`] with `log()`.
async fn wait_for<T, F, Fut>(what: &str, log: impl Fn() -> String, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_until(what, WAIT, POLL, log, async || check().await).await
}

/// `kubectl get ARGS -o json`, or `None` when it does not exist.
fn get_json(cluster: &TestCluster, args: &[&str]) -> Option<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    let output = cluster.kubectl(&all);
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).unwrap())
}

/// The node's token from its Secret `veil-node-token-NODE`, decoded.
fn secret_key(cluster: &TestCluster, namespace: &str, node: &str) -> Option<String> {
    let secret = get_json(
        cluster,
        &["-n", namespace, &format!("secret/veil-node-token-{node}")],
    )?;
    let encoded = secret["data"][node].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    Some(String::from_utf8(bytes).unwrap())
}

/// `POST /v1/agent/register` for `node` with `token`; the HTTP status.
async fn register_status(operator: &Operator, node: &str, token: &str) -> u16 {
    operator
        .client()
        .post(format!("{}/v1/agent/register", operator.url))
        .bearer_auth(token)
        .json(&json!({
            "node": node,
            "os": "linux",
            "arch": "x86_64",
            "agentVersion": "0.0.0-test",
        }))
        .send()
        .await
        .expect("operator reachable")
        .status()
        .as_u16()
}

/// `kubectl wait --for=CONDITION veilnode/NODE`.
fn kubectl_wait(cluster: &TestCluster, condition: &str, node: &str) -> Output {
    cluster.kubectl(&[
        "wait",
        &format!("--for=condition={condition}"),
        &format!("veilnode/{node}"),
        &format!("--timeout={}s", WAIT.as_secs()),
    ])
}

#[tokio::test]
async fn an_agent_with_a_token_from_the_secret_registers_gets_a_veil_node_and_is_revoked_at_once() {
    // Its own cluster: VeilNodes are cluster-scoped, and another test's
    // operator would write this node's status as not Ready.
    let own = TestCluster::start().await;
    let cluster = &own;
    let ns = "tokens";
    let node = "edge-token";
    cluster.kubectl_ok(&["create", "namespace", ns]);
    let operator = kube_operator(cluster, ns).await;

    // The agent starts before its token file exists: it waits for the
    // file instead of crash-looping.
    let volume = tempfile::tempdir().unwrap();
    let token_file = volume.path().join(node);
    let agent = Agent::start_with_token_file(&operator, node, &token_file);
    wait_for(
        "the agent to wait for its token file",
        || agent.log(),
        || async {
            agent
                .log()
                .contains("waiting for the token file")
                .then_some(())
        },
    )
    .await;

    // `token create --kube` writes the Secret; its join value (the token
    // and the CA pin) is printed once.
    let printed = succeeded(
        "token create --kube",
        &token_cli(cluster, ns, &["create", "--node", node]),
    );
    let join = printed.trim();
    let parsed = JoinValue::parse(join).unwrap();
    let printed = parsed.token.as_str();
    assert!(printed.starts_with("veil_node_"), "{printed}");
    let Ok(Trust::CaFile(ca)) = Trust::ca_file(&shared_kube_tls().join("ca.crt")) else {
        panic!("the test CA file");
    };
    assert_eq!(parsed.ca_pin, Some(CaPin::of_der(&ca[0])));
    let secret = get_json(cluster, &["-n", ns, "secret/veil-node-token-edge-token"]).unwrap();
    assert_eq!(secret["type"], "veil.dev/node-token");
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "veil"
    );
    assert_eq!(secret["metadata"]["labels"]["veil.dev/node"], node);
    let token = secret_key(cluster, ns, node).unwrap();
    assert_eq!(token, printed);
    // A second node gets a Secret of its own: no Secret holds two nodes.
    succeeded(
        "token create --kube (second node)",
        &token_cli(cluster, ns, &["create", "--node", "edge-token-2"]),
    );
    assert_eq!(secret_key(cluster, ns, node).unwrap(), token);
    let other = get_json(cluster, &["-n", ns, "secret/veil-node-token-edge-token-2"]).unwrap();
    assert_eq!(other["data"].as_object().unwrap().len(), 1, "{other:#}");

    // The join value reaches the agent's machine.
    std::fs::write(&token_file, join).unwrap();

    // The agent registers; the leader creates its VeilNode, which turns Ready.
    let created = wait_for(
        "the registered agent's VeilNode",
        || {
            format!(
                "operator log:\n{}\nagent log:\n{}",
                operator.log(),
                agent.log()
            )
        },
        || async { get_json(cluster, &[&format!("veilnodes/{node}")]) },
    )
    .await;
    assert_eq!(
        created["metadata"]["labels"]["app.kubernetes.io/managed-by"], "veil",
        "{created:#}"
    );
    let ready = kubectl_wait(cluster, "Ready", node);
    assert!(
        ready.status.success(),
        "kubectl wait Ready: {}\noperator log:\n{}\nagent log:\n{}",
        String::from_utf8_lossy(&ready.stderr),
        operator.log(),
        agent.log()
    );
    let listed = cluster.kubectl_ok(&["get", "veilnodes", "-o", "name"]);
    assert!(
        listed
            .lines()
            .any(|l| l == format!("veilnode.veil.dev/{node}"))
    );
    assert_eq!(
        operator.log().matches("created a VeilNode").count(),
        1,
        "{}",
        operator.log()
    );

    // A token no Secret holds is 401; a token of another node is 403.
    assert_eq!(
        register_status(&operator, node, "veil_node_wrong").await,
        401
    );
    assert_eq!(register_status(&operator, "edge-other", &token).await, 403);

    // `token revoke --kube` deletes the node's Secret: the very next request is 401.
    succeeded(
        "token revoke --kube",
        &token_cli(cluster, ns, &["revoke", "--node", node]),
    );
    assert_eq!(secret_key(cluster, ns, node), None);
    assert!(secret_key(cluster, ns, "edge-token-2").is_some());
    wait_for(
        "the revoked token to be refused",
        || operator.log(),
        || async { (register_status(&operator, node, &token).await == 401).then_some(()) },
    )
    .await;
    // The running agent's next heartbeat is refused; the node goes NotReady.
    wait_for(
        "the agent's refused heartbeat",
        || agent.log(),
        || async { agent.log().contains("(401)").then_some(()) },
    )
    .await;
    let not_ready = kubectl_wait(cluster, "Ready=false", node);
    assert!(
        not_ready.status.success(),
        "kubectl wait Ready=false: {}\noperator log:\n{}",
        String::from_utf8_lossy(&not_ready.stderr),
        operator.log()
    );
    // Revoking again names what is missing.
    let again = token_cli(cluster, ns, &["revoke", "--node", node]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("there is no token for node `edge-token`"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // No token value ever reaches the operator's log.
    assert!(!operator.log().contains(&token), "{}", operator.log());
}

#[tokio::test]
async fn token_create_refuses_a_secret_of_another_type_and_invalid_keys_are_skipped() {
    let cluster = TestCluster::shared().await;
    let ns = "tokens-typed";
    cluster.kubectl_ok(&["create", "namespace", ns]);
    // An Opaque Secret under the node's Secret name, made by hand.
    cluster.kubectl_ok(&[
        "-n",
        ns,
        "create",
        "secret",
        "generic",
        "veil-node-token-edge-opaque",
        "--from-literal=edge-opaque=veil_node_opaque",
    ]);
    // Without --ca-file and without the operator's TLS Secret there is no
    // CA to pin: refused, and no token Secret is written.
    let no_ca = std::process::Command::new(binary("veil-operator"))
        .args(["token", "create", "--node", "edge-no-ca", "--kube"])
        .args(["--kubeconfig", &path_arg(cluster.kubeconfig())])
        .args(["--namespace", ns])
        .output()
        .unwrap();
    assert!(!no_ca.status.success());
    let stderr = String::from_utf8_lossy(&no_ca.stderr);
    assert!(
        stderr.contains("veil-operator-tls") && stderr.contains("no token was written"),
        "{stderr}"
    );
    assert!(get_json(cluster, &["-n", ns, "secret/veil-node-token-edge-no-ca"]).is_none());
    let refused = token_cli(cluster, ns, &["create", "--node", "edge-opaque"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("has type `Opaque`") && stderr.contains("veil.dev/node-token"),
        "{stderr}"
    );

    // A hand-made node-token Secret: its valid key works, an invalid one
    // is skipped (and logged by key, never by value); the Opaque Secret's
    // token is not accepted.
    cluster.kubectl_ok(&[
        "-n",
        ns,
        "create",
        "secret",
        "generic",
        "more-tokens",
        "--type=veil.dev/node-token",
        "--from-literal=edge-typed=veil_node_typed",
        "--from-literal=Not_A_Node=veil_node_invalid-value",
    ]);
    // A hand-made Secret with two nodes' tokens: the kind of Secret that,
    // mounted into every agent pod, let any agent act as any node.
    cluster.kubectl_ok(&[
        "-n",
        ns,
        "create",
        "secret",
        "generic",
        "shared-tokens",
        "--type=veil.dev/node-token",
        "--from-literal=edge-shared-1=veil_node_shared_1",
        "--from-literal=edge-shared-2=veil_node_shared_2",
    ]);
    let operator = kube_operator(cluster, ns).await;
    wait_for(
        "the hand-made Secret's token",
        || operator.log(),
        || async {
            (register_status(&operator, "edge-typed", "veil_node_typed").await == 200).then_some(())
        },
    )
    .await;
    assert_eq!(
        register_status(&operator, "edge-opaque", "veil_node_opaque").await,
        401
    );
    for (node, token) in [
        ("edge-shared-1", "veil_node_shared_1"),
        ("edge-shared-2", "veil_node_shared_2"),
    ] {
        assert_eq!(register_status(&operator, node, token).await, 401);
    }
    let log = operator.log();
    assert!(log.contains("Not_A_Node"), "{log}");
    assert!(log.contains("holds tokens of 2 nodes"), "{log}");
    assert!(!log.contains("veil_node_invalid-value"), "{log}");
    assert!(!log.contains("veil_node_shared_"), "{log}");
}

/// What the agent DaemonSet projects: the audience the operator expects.
const AGENT_AUDIENCE: &str = "veil.dev/agent";

#[tokio::test]
async fn an_agent_pod_token_names_its_pods_node_and_nothing_else_does() {
    // Its own cluster, for the reason the first test gives.
    let own = TestCluster::start().await;
    let cluster = &own;
    let ns = "pod-tokens";
    cluster.kubectl_ok(&["create", "namespace", ns]);
    // Two agent pods of the DaemonSet's account, on two nodes.
    cluster.agent_pod(ns, "veil-agent", "agent-a", "edge-pod-a");
    cluster.agent_pod(ns, "veil-agent", "agent-b", "edge-pod-b");
    let operator = kube_operator(cluster, ns).await;

    // A real agent with the token of the pod on edge-pod-a registers as
    // edge-pod-a and its VeilNode turns Ready.
    let token_a = cluster.pod_token(ns, "veil-agent", "agent-a", AGENT_AUDIENCE);
    let volume = tempfile::tempdir().unwrap();
    let token_file = volume.path().join("token");
    std::fs::write(&token_file, &token_a).unwrap();
    let agent = Agent::start_with_token_file(&operator, "edge-pod-a", &token_file);
    let logs = || {
        format!(
            "operator log:\n{}\nagent log:\n{}",
            operator.log(),
            agent.log()
        )
    };
    wait_for("the pod agent's VeilNode", logs, || async {
        get_json(cluster, &["veilnodes/edge-pod-a"])
    })
    .await;
    let ready = kubectl_wait(cluster, "Ready", "edge-pod-a");
    assert!(ready.status.success(), "{}", logs());

    // The kubelet replaces the projected token; the agent sends the new one
    // from its next request on and stays registered.
    let rotated = cluster.pod_token(ns, "veil-agent", "agent-a", AGENT_AUDIENCE);
    assert_ne!(rotated, token_a);
    std::fs::write(&token_file, &rotated).unwrap();
    wait_for("the agent to use the rotated token", logs, || async {
        agent.log().contains("the token file changed").then_some(())
    })
    .await;
    assert_eq!(
        register_status(&operator, "edge-pod-a", &rotated).await,
        200
    );

    // The same pod's token claiming another node: 403, whatever the agent says.
    assert_eq!(
        register_status(&operator, "edge-pod-b", &token_a).await,
        403
    );
    let liar = Agent::start_with_token_file(&operator, "edge-pod-b", &token_file);
    wait_for(
        "the lying agent to be refused",
        || liar.log(),
        || async { liar.log().contains("(403)").then_some(()) },
    )
    .await;
    assert!(
        get_json(cluster, &["veilnodes/edge-pod-b"]).is_none(),
        "no VeilNode for the claimed node"
    );

    // The token of the pod on edge-pod-b works for edge-pod-b only.
    let token_b = cluster.pod_token(ns, "veil-agent", "agent-b", AGENT_AUDIENCE);
    assert_eq!(
        register_status(&operator, "edge-pod-a", &token_b).await,
        403
    );

    // Valid tokens that are not for Veil: the API server's own audience,
    // another audience, another account's pod on the same node.
    let for_apiserver = cluster.pod_token(
        ns,
        "veil-agent",
        "agent-a",
        "https://kubernetes.default.svc.cluster.local",
    );
    assert_eq!(
        register_status(&operator, "edge-pod-a", &for_apiserver).await,
        401
    );
    let for_other = cluster.pod_token(ns, "veil-agent", "agent-a", "example.org/other");
    assert_eq!(
        register_status(&operator, "edge-pod-a", &for_other).await,
        401
    );
    cluster.agent_pod(ns, "intruder", "intruder-pod", "edge-pod-a");
    let intruder = cluster.pod_token(ns, "intruder", "intruder-pod", AGENT_AUDIENCE);
    assert_eq!(
        register_status(&operator, "edge-pod-a", &intruder).await,
        403
    );

    // A deleted pod's token is dead (the API server checks the binding).
    let token_b2 = cluster.pod_token(ns, "veil-agent", "agent-b", AGENT_AUDIENCE);
    cluster.kubectl_ok(&[
        "-n",
        ns,
        "delete",
        "pod",
        "agent-b",
        "--grace-period=0",
        "--force",
    ]);
    wait_for(
        "the deleted pod's token to be refused",
        || operator.log(),
        || async {
            (register_status(&operator, "edge-pod-b", &token_b2).await == 401).then_some(())
        },
    )
    .await;

    let log = operator.log();
    for token in [&token_a, &rotated, &token_b, &for_apiserver, &intruder] {
        assert!(!log.contains(token.as_str()), "a token reached the log");
    }
    assert!(log.contains("agent pod token refused"), "{log}");
}
