//! Followers hand `/v1/` requests to the leader, against a real
//! kube-apiserver with etcd and real operator and agent processes: the
//! leader advertises its API on the Lease (`veil.dev/endpoint`); an agent
//! pointed at the follower registers, gets a TaskRun applied to the
//! cluster and runs it to Succeeded; `veil-operator get` through the
//! follower answers with the leader's data and admin token; with the
//! leader gone (killed, Lease not yet expired) the follower answers 503
//! with `Retry-After`, and once it has taken over it serves itself.
//!
//! The replicas share one real PostgreSQL (several replicas need a shared
//! store) and each has a Pod of one ReplicaSet with its IP, which is what a
//! follower checks before it forwards anything: a Lease that names an
//! address outside the replica set — a Pod that does not exist, a Pod of
//! another set, or another IP than the Pod's — is not followed, and the
//! address never sees a request (nor the token in it).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use veil_e2e::kube::TestCluster;
use veil_e2e::postgres::TestPostgres;
use veil_e2e::process::{Agent, Operator, binary, free_port};
use veil_e2e::wait::wait_until;

/// The namespace of this test's objects and of its Lease.
const NS: &str = "forwarding";
const WAIT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(250);

const OBJECTS: &str = "
apiVersion: veil.dev/v1alpha1
kind: VeilNode
metadata: {name: fwd-node}
spec:
  labels: {role: forward-test}
---
apiVersion: veil.dev/v1alpha1
kind: Runner
metadata: {name: pool, namespace: forwarding}
spec:
  nodeSelector: {matchLabels: {role: forward-test}}
  maxParallelTasks: 1
  executors: [shell]
";

const TASK_RUN: &str = "
apiVersion: veil.dev/v1alpha1
kind: TaskRun
metadata: {name: through-follower, namespace: forwarding}
spec:
  task:
    executor: shell
    timeoutSeconds: 60
    shell: {script: 'echo ran-through-the-follower'}
";

/// The ReplicaSet whose Pods the test's replicas are.
const REPLICA_SET: &str = "veil-operator-7d9f";

async fn start(cluster: &TestCluster, name: &str, database_url: &str) -> Operator {
    cluster.replica(NS, REPLICA_SET, name, database_url).await
}

fn get_json(cluster: &TestCluster, args: &[&str]) -> Option<Value> {
    let mut all = vec!["-n", NS];
    all.extend_from_slice(args);
    cluster.get_json(&all)
}

/// Polls `check` until it returns `Some`; panics after `limit` with the logs.
async fn wait_for<T>(
    what: &str,
    logs: &[&str],
    check: impl AsyncFnMut() -> Option<T>,
    log: impl Fn() -> Vec<String>,
) -> T {
    let context = || {
        logs.iter()
            .zip(log())
            .map(|(name, text)| format!("----- {name}:\n{text}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    wait_until(what, WAIT, POLL, context, check).await
}

/// `veil-operator get …` against `server` with the admin token in `token_file`.
fn cli_get(server: &str, token_file: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(binary("veil-operator"))
        .arg("get")
        .args(args)
        .env("VEIL_SERVER", server)
        .env("VEIL_TOKEN_FILE", token_file)
        .env(
            "VEIL_CA_FILE",
            veil_e2e::process::shared_kube_tls().join("ca.crt"),
        )
        .output()
        .expect("run veil-operator get")
}

#[tokio::test]
async fn a_follower_hands_agent_and_admin_requests_to_the_leader() {
    let cluster = TestCluster::shared().await;
    cluster.kubectl_ok(&["create", "namespace", NS]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, OBJECTS).unwrap();
    cluster.kubectl_ok(&["apply", "-f", &file.display().to_string()]);

    // Operator 1 leads before operator 2 starts; both on one PostgreSQL.
    let database = TestPostgres::shared().fresh_database().await.unwrap();
    let mut leader = start(cluster, "veil-1", &database).await;
    wait_for(
        "veil_leader 1 on operator 1",
        &["leader"],
        async || (leader.metric("veil_leader").await? == 1.0).then_some(()),
        || vec![leader.log()],
    )
    .await;
    let follower = start(cluster, "veil-2", &database).await;
    assert_eq!(follower.metric("veil_leader").await, Some(0.0));

    // The leader advertises where it serves: --listen 127.0.0.1:PORT.
    let lease = get_json(cluster, &["lease", "veil-operator"]).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "veil-1");
    assert_eq!(
        lease["metadata"]["annotations"]["veil.dev/endpoint"],
        format!("{}/", leader.url),
        "{lease:#}"
    );

    // The agent talks to the follower, which passes everything on.
    let token = leader.create_token("fwd-node");
    let tmp = tempfile::tempdir().unwrap();
    let agent_dir = tmp.path().join("agent");
    let agent = Agent::start_in(&follower, "fwd-node", &[], &token, tmp, agent_dir);
    let logs = ["leader", "follower", "agent"];
    let all_logs = || vec![leader.log(), follower.log(), agent.log()];
    wait_for(
        "the agent to register with the leader",
        &logs,
        async || leader.log().contains("agent registered").then_some(()),
        all_logs,
    )
    .await;
    assert!(
        !follower.log().contains("agent registered"),
        "the follower registers no agent itself:\n{}",
        follower.log()
    );

    // A TaskRun applied to the cluster runs on that agent and succeeds.
    let run_file = dir.path().join("taskrun.yaml");
    std::fs::write(&run_file, TASK_RUN).unwrap();
    cluster.kubectl_ok(&["apply", "-f", &run_file.display().to_string()]);
    let run = wait_for(
        "the TaskRun to be Succeeded in the cluster",
        &logs,
        async || {
            get_json(cluster, &["taskruns", "through-follower"])
                .filter(|run| run["status"]["phase"] == "Succeeded")
        },
        all_logs,
    )
    .await;
    assert_eq!(run["status"]["node"], "fwd-node", "{run:#}");
    let forwarded = follower
        .metric("veil_forwarded_requests_total{result=\"forwarded\"}")
        .await
        .unwrap();
    assert!(
        forwarded >= 2.0,
        "register and polls went through: {forwarded}"
    );

    // `veil-operator get` through the follower, with the leader's admin token.
    let leader_token = leader.data_dir.join("admin.token");
    let out = cli_get(&follower.url, &leader_token, &["veilnodes", "-o", "json"]);
    assert!(
        out.status.success(),
        "get through the follower: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    assert!(names.contains(&"fwd-node"), "{nodes:#}");
    let out = cli_get(
        &follower.url,
        &leader_token,
        &["taskruns", "through-follower", "-n", NS],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Succeeded"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The leader checks the token: a wrong one through the follower is 401.
    let wrong = follower
        .client()
        .get(format!("{}/v1/objects/taskruns", follower.url))
        .bearer_auth("veil_admin_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // Health, readiness and metrics stay the follower's own.
    let ready = follower
        .client()
        .get(format!("{}/readyz", follower.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    // The leader dies; until its Lease expires the follower knows no
    // reachable leader and says so with 503 and Retry-After.
    drop(agent);
    leader.kill();
    let response = follower
        .client()
        .get(format!("{}/v1/objects/taskruns", follower.url))
        .bearer_auth(std::fs::read_to_string(&leader_token).unwrap().trim())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "2");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("unreachable"),
        "{body}"
    );

    // Once it holds the Lease it serves itself, from the shared store.
    wait_for(
        "operator 2 to take over",
        &["follower"],
        async || (follower.metric("veil_leader").await? == 1.0).then_some(()),
        || vec![follower.log()],
    )
    .await;
    let served = follower
        .client()
        .get(format!("{}/v1/objects/taskruns", follower.url))
        .bearer_auth(std::fs::read_to_string(&leader_token).unwrap().trim())
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let lease = get_json(cluster, &["lease", "veil-operator"]).unwrap();
    assert_eq!(
        lease["metadata"]["annotations"]["veil.dev/endpoint"],
        format!("{}/", follower.url),
        "{lease:#}"
    );
}

/// Counts the connections made to a loopback address: where a Lease's
/// endpoint would lead a follower that believed it.
struct Decoy {
    url: String,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Decoy {
    async fn listen(ip: &str) -> Decoy {
        let listener = tokio::net::TcpListener::bind((ip, free_port()))
            .await
            .unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(socket);
            }
        });
        Decoy {
            url,
            connections,
            _task: task,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Writes the Lease as someone with `update leases` in the namespace could:
/// held by `holder` for an hour, advertising `endpoint`.
fn forge_lease(cluster: &TestCluster, namespace: &str, holder: &str, endpoint: &str) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "veil-operator", "namespace": namespace,
                     "annotations": {"veil.dev/endpoint": endpoint}},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3600,
                 "acquireTime": now, "renewTime": now},
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lease.json");
    std::fs::write(&file, lease.to_string()).unwrap();
    cluster.kubectl_ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &file.display().to_string(),
    ]);
}

#[tokio::test]
async fn a_lease_endpoint_outside_the_replica_set_is_never_followed() {
    let cluster = TestCluster::shared().await;
    let ns = "forwarding-fence";
    cluster.kubectl_ok(&["create", "namespace", ns]);
    let database = TestPostgres::shared().fresh_database().await.unwrap();
    // The Lease is held (for an hour) before the replica starts, so it follows.
    let decoy = Decoy::listen("127.0.0.1").await;
    forge_lease(cluster, ns, "intruder", &decoy.url);
    let follower = cluster.replica(ns, REPLICA_SET, "veil-f", &database).await;
    // A peer of the same set and one of another set, both at 127.0.0.1.
    cluster.replica_pod(ns, REPLICA_SET, 2, "veil-peer", "127.0.0.1");
    cluster.replica_pod(ns, "other-app-5c8b", 1, "other-app", "127.0.0.1");
    let elsewhere = Decoy::listen("127.0.0.2").await;

    let refusals = || {
        follower
            .log()
            .matches("not a Pod of this replica set")
            .count()
    };
    let asks = |token: &'static str| {
        let url = format!("{}/v1/agent/register", follower.url);
        let client = follower.client();
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"node": "n", "os": "linux", "arch": "x86_64", "agentVersion": "0"}))
                .send()
                .await
                .unwrap()
        }
    };
    let cases = [
        ("a holder with no Pod", "intruder", decoy.url.clone()),
        (
            "a Pod of another ReplicaSet",
            "other-app",
            decoy.url.clone(),
        ),
        (
            "another IP than the peer Pod's",
            "veil-peer",
            elsewhere.url.clone(),
        ),
    ];
    for (case, holder, endpoint) in cases {
        // The first Lease was written before the follower started.
        let before = if holder == "intruder" { 0 } else { refusals() };
        if holder != "intruder" {
            forge_lease(cluster, ns, holder, &endpoint);
        }
        wait_for(
            case,
            &["follower"],
            async || (refusals() > before).then_some(()),
            || vec![follower.log()],
        )
        .await;
        let answer = asks("veil_node_secret-of-some-agent").await;
        assert_eq!(answer.status(), 503, "{case}");
        let body: Value = answer.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("Pod IP of this replica set"),
            "{case}: {body}"
        );
    }
    assert_eq!(decoy.connections(), 0, "a forged endpoint was contacted");
    assert_eq!(
        elsewhere.connections(),
        0,
        "a forged endpoint was contacted"
    );

    // The same follower does forward to a Pod of its own set at that Pod's
    // IP: the check, not a broken forwarder, is what kept the others out.
    forge_lease(cluster, ns, "veil-peer", &decoy.url);
    wait_for(
        "a forwarded request to the peer",
        &["follower"],
        async || {
            let _ = asks("veil_node_x").await;
            (decoy.connections() > 0).then_some(())
        },
        || vec![follower.log()],
    )
    .await;
    assert!(!follower.log().contains("veil_node_secret-of-some-agent"));
}
