//! Credentials Secrets in Kubernetes mode, against a real kube-apiserver
//! with etcd: the leader writes `<key>-vless` (id and link, owned by the
//! VlessKey) and `<server>-reality` (the generated key pair, owned by the
//! ProtocolServer); a new operator with an EMPTY data dir adopts them —
//! same ids, same Reality public key, same links, and not one Secret
//! rewritten — then writes back a Secret a person edited and recreates one
//! a person deleted, with the same id.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use serde_json::Value;
use veil_e2e::kube::TestCluster;
use veil_e2e::process::Operator;
use veil_e2e::wait::wait_until;

/// The namespace of this test's objects and of its Lease.
const NS: &str = "credentials";
/// Upper bound of every wait (Secrets usually appear within a second).
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);
/// Bob brings his own id.
const BOB_ID: &str = "0f3c2a9e-1b4d-4c6e-8a2f-5d7e9b1c3a60";

const OBJECTS: &str = "
apiVersion: veil.dev/v1alpha1
kind: ProtocolServer
metadata: {name: edge, namespace: credentials}
spec:
  nodeSelector: {matchLabels: {role: credentials-test}}
  protocol: vless
  port: 8443
  vless:
    publicAddress: vpn.example.com
    reality:
      dest: www.microsoft.com:443
      serverNames: [www.microsoft.com]
      shortIds: [6ba85179e30d4fc2]
---
apiVersion: veil.dev/v1alpha1
kind: VlessKey
metadata: {name: alice, namespace: credentials}
spec: {serverRef: {name: edge}}
---
apiVersion: veil.dev/v1alpha1
kind: VlessKey
metadata: {name: bob, namespace: credentials}
spec: {serverRef: {name: edge}, id: 0f3c2a9e-1b4d-4c6e-8a2f-5d7e9b1c3a60}
";

const CAROL: &str = "
apiVersion: veil.dev/v1alpha1
kind: VlessKey
metadata: {name: carol, namespace: credentials}
spec: {serverRef: {name: edge}}
";

/// A `--source kube` operator limited to [`NS`], named `name` in the Lease,
/// with a fresh, empty data dir.
async fn start(cluster: &TestCluster, name: &str) -> Operator {
    cluster.operator(NS, name).await
}

fn get_json(cluster: &TestCluster, args: &[&str]) -> Option<Value> {
    let mut all = vec!["-n", NS];
    all.extend_from_slice(args);
    cluster.get_json(&all)
}

/// One data key of a Secret, decoded — the way the docs tell a person to
/// read a link: `kubectl get secret … -o go-template=…base64decode`.
fn secret_value(cluster: &TestCluster, secret: &str, key: &str) -> Option<String> {
    let template = format!("--template={{{{index .data \"{key}\" | base64decode}}}}");
    let output = cluster.kubectl(&[
        "get",
        "secret",
        secret,
        "-n",
        NS,
        "-o",
        "go-template",
        &template,
    ]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success() && !text.is_empty() && text != "<no value>").then_some(text)
}

/// Polls `check` until it returns `Some`; panics after [`WAIT`] with the logs.
async fn wait_for<T>(what: &str, logs: &[&Operator], check: impl AsyncFnMut() -> Option<T>) -> T {
    let context = || {
        let logs: Vec<String> = logs.iter().map(|o| o.log()).collect();
        format!("operator logs:\n{}", logs.join("\n-----\n"))
    };
    wait_until(what, WAIT, POLL, context, check).await
}

/// `holderIdentity` of the Lease, if it has a holder.
fn holder(cluster: &TestCluster) -> Option<String> {
    let lease = get_json(cluster, &["lease", "veil-operator"])?;
    lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

/// The id and link the operator's credentials API serves for `key`, once it serves them.
async fn served(operator: &Operator, key: &str) -> Option<(String, String)> {
    let (status, body) = operator
        .api(&format!("/v1/credentials/vlesskeys/{NS}/{key}"))
        .await;
    (status == 200).then(|| {
        (
            body["id"].as_str().unwrap().to_owned(),
            body["link"].as_str().unwrap().to_owned(),
        )
    })
}

/// `metadata.resourceVersion` of each named Secret.
fn versions(cluster: &TestCluster, secrets: &[&str]) -> Vec<String> {
    secrets
        .iter()
        .map(|name| {
            let secret = get_json(cluster, &["secret", name]).expect("the Secret exists");
            secret["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn uid(object: &Value) -> &str {
    object["metadata"]["uid"].as_str().unwrap()
}

/// Asserts the Secret is typed, labelled and owned (`controller: true`) by `owner`.
fn assert_owned(secret: &Value, secret_type: &str, label: &str, owner: &Value, kind: &str) {
    assert_eq!(secret["type"], secret_type, "{secret}");
    let labels = &secret["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "veil", "{secret}");
    assert_eq!(labels[label], owner["metadata"]["name"], "{secret}");
    let owners = secret["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(owners.len(), 1, "{secret}");
    assert_eq!(owners[0]["kind"], kind);
    assert_eq!(owners[0]["apiVersion"], "veil.dev/v1alpha1");
    assert_eq!(owners[0]["uid"], uid(owner));
    assert_eq!(owners[0]["controller"], true);
}

#[tokio::test]
async fn credentials_live_in_owned_secrets_and_survive_a_new_operator_with_an_empty_store() {
    let cluster = TestCluster::shared().await;
    cluster.kubectl_ok(&["create", "namespace", NS]);
    let objects = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(objects.path(), OBJECTS).unwrap();
    cluster.kubectl_ok(&["apply", "-f", &objects.path().display().to_string()]);
    let mut first = start(cluster, "first").await;

    // The leader writes all three Secrets, links included.
    wait_for("alice's link in her Secret", &[&first], async || {
        secret_value(cluster, "alice-vless", "link")
    })
    .await;
    wait_for("the Reality key Secret", &[&first], async || {
        get_json(cluster, &["secret", "edge-reality"])
    })
    .await;
    wait_for("bob's link in his Secret", &[&first], async || {
        secret_value(cluster, "bob-vless", "link")
    })
    .await;
    let alice = get_json(cluster, &["vlesskey", "alice"]).unwrap();
    let bob = get_json(cluster, &["vlesskey", "bob"]).unwrap();
    let edge = get_json(cluster, &["protocolserver", "edge"]).unwrap();
    let alice_secret = get_json(cluster, &["secret", "alice-vless"]).unwrap();
    assert_owned(
        &alice_secret,
        "veil.dev/vless-credentials",
        "veil.dev/vlesskey",
        &alice,
        "VlessKey",
    );
    assert_eq!(
        alice_secret["metadata"]["annotations"]["veil.dev/id-source"],
        "generated"
    );
    let bob_secret = get_json(cluster, &["secret", "bob-vless"]).unwrap();
    assert_owned(
        &bob_secret,
        "veil.dev/vless-credentials",
        "veil.dev/vlesskey",
        &bob,
        "VlessKey",
    );
    assert_eq!(
        bob_secret["metadata"]["annotations"]["veil.dev/id-source"],
        "spec"
    );
    let edge_secret = get_json(cluster, &["secret", "edge-reality"]).unwrap();
    assert_owned(
        &edge_secret,
        "veil.dev/reality-key",
        "veil.dev/protocolserver",
        &edge,
        "ProtocolServer",
    );

    // The id is a UUID; the links are the ones the API serves.
    let alice_id = secret_value(cluster, "alice-vless", "id").unwrap();
    assert!(
        alice_id.len() == 36 && alice_id.chars().filter(|c| *c == '-').count() == 4,
        "{alice_id} is a hyphenated UUID"
    );
    assert_ne!(alice_id, BOB_ID);
    assert_eq!(secret_value(cluster, "bob-vless", "id").unwrap(), BOB_ID);
    let alice_link = secret_value(cluster, "alice-vless", "link").unwrap();
    let bob_link = secret_value(cluster, "bob-vless", "link").unwrap();
    let served_alice = wait_for("alice's credentials from the API", &[&first], async || {
        served(&first, "alice").await
    })
    .await;
    assert_eq!(served_alice, (alice_id.clone(), alice_link.clone()));
    assert_eq!(
        served(&first, "bob").await.unwrap(),
        (BOB_ID.to_owned(), bob_link.clone())
    );
    assert!(
        alice_link.starts_with(&format!("vless://{alice_id}@vpn.example.com:8443?")),
        "{alice_link}"
    );
    // The Reality public key: in the Secret, the status and every link.
    let public_key = wait_for(
        "the server's public key in its status",
        &[&first],
        async || {
            get_json(cluster, &["protocolserver", "edge"])?["status"]["publicKey"]
                .as_str()
                .map(str::to_owned)
        },
    )
    .await;
    assert_eq!(
        secret_value(cluster, "edge-reality", "publicKey").unwrap(),
        public_key
    );
    assert!(
        alice_link.contains(&format!("&pbk={public_key}&")),
        "{alice_link}"
    );
    let private_key = secret_value(cluster, "edge-reality", "privateKey").unwrap();

    let secrets = ["alice-vless", "bob-vless", "edge-reality"];
    let before = versions(cluster, &secrets);

    // A new operator with an empty store, once the first one is gone.
    first.stop();
    let second = start(cluster, "second").await;
    wait_for("the second operator to lead", &[&second], async || {
        (holder(cluster).as_deref() == Some("second")).then_some(())
    })
    .await;
    let adopted = wait_for(
        "alice's credentials from the new operator",
        &[&second],
        async || served(&second, "alice").await,
    )
    .await;
    assert_eq!(
        adopted,
        (alice_id.clone(), alice_link.clone()),
        "same id, same link"
    );
    assert_eq!(
        served(&second, "bob").await.unwrap(),
        (BOB_ID.to_owned(), bob_link.clone())
    );
    // It writes Secrets (a new key gets one)…
    let carol = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(carol.path(), CAROL).unwrap();
    cluster.kubectl_ok(&["apply", "-f", &carol.path().display().to_string()]);
    wait_for("carol's link in her Secret", &[&second], async || {
        secret_value(cluster, "carol-vless", "link")
    })
    .await;
    // …but rewrote none of the adopted ones, and the key pair is the same.
    assert_eq!(
        versions(cluster, &secrets),
        before,
        "no Secret was rewritten"
    );
    assert_eq!(
        get_json(cluster, &["protocolserver", "edge"]).unwrap()["status"]["publicKey"],
        public_key.as_str()
    );
    assert_eq!(
        secret_value(cluster, "edge-reality", "privateKey").unwrap(),
        private_key
    );

    // A person edits alice's id: the leader writes hers back.
    let other_id = "5b0f1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d";
    let patch = format!("{{\"stringData\":{{\"id\":\"{other_id}\"}}}}");
    cluster.kubectl_ok(&["patch", "secret", "alice-vless", "-n", NS, "-p", &patch]);
    wait_for("alice's id written back", &[&second], async || {
        (secret_value(cluster, "alice-vless", "id")? == alice_id).then_some(())
    })
    .await;
    // A person deletes it: it comes back with the same id and link.
    cluster.kubectl_ok(&["delete", "secret", "alice-vless", "-n", NS]);
    wait_for("alice's Secret recreated", &[&second], async || {
        secret_value(cluster, "alice-vless", "link")
    })
    .await;
    assert_eq!(
        secret_value(cluster, "alice-vless", "id").unwrap(),
        alice_id
    );
    assert_eq!(
        secret_value(cluster, "alice-vless", "link").unwrap(),
        alice_link
    );

    // No credential ever reached a log.
    for log in [first.log(), second.log()] {
        for value in [alice_id.as_str(), private_key.as_str(), BOB_ID] {
            assert!(!log.contains(value), "a credential was logged:\n{log}");
        }
    }
}
