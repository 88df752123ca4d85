//! Agent tokens from Secrets in Kubernetes mode, against a real
//! kube-apiserver with etcd: `veil-operator token create --kube` writes the
//! node-token Secret, the agent reads its key as the DaemonSet's volume
//! would provide it, registers, and gets a VeilNode created in the cluster
//! that turns Ready; a wrong token is 401; `token revoke --kube` revokes at
//! once.
//!
//! VeilNodes are cluster-scoped, so this file's tests use node names no
//! other test uses; each test has its own namespace for the operator's
//! Lease and token Secrets.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use veil_e2e::kube::TestCluster;
use veil_e2e::process::{Agent, Operator, OperatorOptions, binary};
use veil_e2e::wait::wait_until;

/// Upper bound of every wait (each step usually takes about a second).
const WAIT: Duration = Duration::from_secs(60);
/// How often a condition is checked again while waiting.
const POLL: Duration = Duration::from_millis(200);

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// `veil-operator token ARGS --kube` against `cluster`, tokens in `namespace`.
fn token_cli(cluster: &TestCluster, namespace: &str, args: &[&str]) -> Output {
    std::process::Command::new(binary("veil-operator"))
        .arg("token")
        .args(args)
        .args(["--kube", "--kubeconfig", &path_arg(cluster.kubeconfig())])
        .args(["--namespace", namespace])
        .output()
        .expect("running veil-operator token")
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

/// The node's key of the token Secret, decoded, as the DaemonSet's
/// volume would hold it in `/etc/veil/tokens/NODE`.
fn secret_key(cluster: &TestCluster, namespace: &str, node: &str) -> Option<String> {
    let secret = get_json(cluster, &["-n", namespace, "secret/veil-agent-tokens"])?;
    let encoded = secret["data"][node].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    Some(String::from_utf8(bytes).unwrap())
}

/// `POST /v1/agent/register` for `node` with `token`; the HTTP status.
async fn register_status(operator: &Operator, node: &str, token: &str) -> u16 {
    reqwest::Client::new()
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
    let cluster = TestCluster::shared().await;
    let ns = "tokens";
    let node = "edge-token";
    cluster.kubectl_ok(&["create", "namespace", ns]);
    let operator = kube_operator(cluster, ns).await;

    // The agent starts before its node has a key, as a DaemonSet pod may:
    // it waits for the file instead of crash-looping.
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

    // `token create --kube` writes the Secret; the token is printed once.
    let printed = succeeded(
        "token create --kube",
        &token_cli(cluster, ns, &["create", "--node", node]),
    );
    let printed = printed.trim();
    assert!(printed.starts_with("veil_node_"), "{printed}");
    let secret = get_json(cluster, &["-n", ns, "secret/veil-agent-tokens"]).unwrap();
    assert_eq!(secret["type"], "veil.dev/node-token");
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "veil"
    );
    let token = secret_key(cluster, ns, node).unwrap();
    assert_eq!(token, printed);
    // A second node's key goes into the same Secret, next to the first.
    succeeded(
        "token create --kube (second node)",
        &token_cli(cluster, ns, &["create", "--node", "edge-token-2"]),
    );
    assert_eq!(secret_key(cluster, ns, node).unwrap(), token);

    // What the kubelet does for the mounted volume.
    std::fs::write(&token_file, &token).unwrap();

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

    // `token revoke --kube` removes the key: the very next request is 401.
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
        String::from_utf8_lossy(&again.stderr).contains("has no token for node `edge-token`"),
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
    // An Opaque Secret under the default name, made by hand.
    cluster.kubectl_ok(&[
        "-n",
        ns,
        "create",
        "secret",
        "generic",
        "veil-agent-tokens",
        "--from-literal=edge-opaque=veil_node_opaque",
    ]);
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
    let log = operator.log();
    assert!(log.contains("Not_A_Node"), "{log}");
    assert!(!log.contains("veil_node_invalid-value"), "{log}");
}
