//! `--tls-secret` against a real kube-apiserver: the first replica creates
//! the TLS Secret (cert-manager's shape, no CA key), the second serves the
//! same certificate, and a follower hands `/v1/` requests to the leader
//! over TLS verified against that Secret's `ca.crt`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use veil_e2e::kube::TestCluster;
use veil_e2e::postgres::TestPostgres;
use veil_e2e::process::{Operator, OperatorOptions};
use veil_e2e::wait::wait_until;

const NS: &str = "tls-secret";
const SECRET: &str = "veil-operator-tls";
const WAIT: Duration = Duration::from_secs(90);

/// The ReplicaSet whose Pods the replicas are (a follower forwards only to
/// a Pod of its own set).
const REPLICA_SET: &str = "veil-operator-5b7c";

/// A replica: a Pod of [`REPLICA_SET`] with the loopback IP, on the shared
/// PostgreSQL database (several replicas need one).
async fn start(cluster: &TestCluster, name: &str, database_url: &str) -> Operator {
    cluster.replica_pod(NS, REPLICA_SET, 2, name, "127.0.0.1");
    let unused = tempfile::tempdir().unwrap();
    Operator::start_with(
        unused.path(),
        OperatorOptions {
            source: Some("kube".into()),
            database_url: Some(database_url.to_owned()),
            extra_args: vec![
                "--kubeconfig".into(),
                cluster.kubeconfig().display().to_string(),
                "--namespace".into(),
                NS.into(),
                "--tls-secret".into(),
                SECRET.into(),
            ],
            env: vec![
                ("POD_NAME".into(), name.into()),
                ("POD_NAMESPACE".into(), NS.into()),
            ],
            ..OperatorOptions::default()
        },
    )
    .await
}

#[tokio::test]
async fn replicas_share_the_tls_secret_and_followers_forward_over_tls() {
    let cluster = TestCluster::shared().await;
    cluster.kubectl_ok(&["create", "namespace", NS]);
    let database = TestPostgres::shared().fresh_database().await.unwrap();
    let leader = start(cluster, "tls-1", &database).await;
    wait_until(
        "operator 1 to lead",
        WAIT,
        Duration::from_millis(250),
        || leader.log(),
        async || (leader.metric("veil_leader").await? == 1.0).then_some(()),
    )
    .await;

    let secret = cluster
        .get_json(&["-n", NS, "secret", SECRET])
        .expect("the first replica created the TLS Secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let keys: Vec<&String> = secret["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"], "no CA key in it");

    let follower = start(cluster, "tls-2", &database).await;
    assert_eq!(
        std::fs::read(&follower.ca_file).unwrap(),
        std::fs::read(&leader.ca_file).unwrap(),
        "both replicas serve under the Secret's CA"
    );
    assert_eq!(follower.metric("veil_leader").await, Some(0.0));
    // The leader's admin token through the follower: answered by the leader.
    let response = follower
        .client()
        .get(format!("{}/v1/objects/taskruns", follower.url))
        .bearer_auth(leader.token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", follower.log());
}
