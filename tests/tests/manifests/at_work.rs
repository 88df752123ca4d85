//! The RBAC of manifests/rbac.yaml is enough: the real `veil-operator`,
//! holding nothing but its ServiceAccount's token, does its work against
//! the real API server — watches every kind in every namespace, reads the
//! Secret a task names, writes statuses, creates a Schedule's TaskRun and
//! deletes it beyond the history limit, writes the status of a
//! registered agent's VeilNode, watches the node-token Secrets of its namespace,
//! reviews an agent pod's ServiceAccount token — without one refused
//! request.
//!
//! The operator and agent are started here directly (built binaries, logs
//! in a temp dir, killed by PID on drop), with the arguments the
//! Deployment gives, plus `--kubeconfig` for the token.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use veil_e2e::kube::TestCluster;
use veil_e2e::process::{binary, free_port};

use super::security::{OPERATOR, wait_until_allowed};
use super::{apply, path, write};

/// A child process killed (by its PID) when dropped, with its log file.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn spawn(command: &mut Command, log: PathBuf) -> Running {
        let file = File::create(&log).unwrap();
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawning a built binary (`make build`)");
        Running { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `veil-operator run --source kube` on a free loopback port, ready.
async fn start_operator(dir: &Path, kubeconfig: &str) -> (Running, String) {
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let ca_file = dir.join("operator").join("tls-secret").join("ca.crt");
    let mut operator = Running::spawn(
        Command::new(binary("veil-operator")).args([
            "run",
            "--source",
            "kube",
            "--kubeconfig",
            kubeconfig,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &dir.join("operator").display().to_string(),
            "--tls-secret",
            "veil-operator-tls",
        ]),
        dir.join("operator.log"),
    );
    let deadline = Instant::now() + OPERATOR_WAIT;
    loop {
        if let Ok(Some(status)) = operator.child.try_wait() {
            panic!("veil-operator exited ({status}):\n{}", operator.log());
        }
        if ca_file.exists()
            && let Ok(response) = veil_e2e::process::client_trusting(&ca_file)
                .get(format!("{url}/readyz"))
                .send()
                .await
            && response.status().is_success()
        {
            return (operator, url);
        }
        assert!(
            Instant::now() < deadline,
            "veil-operator not ready:\n{}",
            operator.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `veil-agent` for `node` reporting `label` (shown in status only: the
/// Runner selects the node through its VeilNode), its token made by the operator's CLI.
fn start_agent(dir: &Path, operator_url: &str, node: &str, label: &str) -> Running {
    let token = Command::new(binary("veil-operator"))
        .args(["token", "create", "--node", node, "--data-dir"])
        .arg(dir.join("operator"))
        .output()
        .unwrap();
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token_file = dir.join("agent.token");
    std::fs::write(&token_file, token.stdout).unwrap();
    Running::spawn(
        Command::new(binary("veil-agent"))
            .args(["--operator", operator_url, "--node", node, "--label", label])
            .arg("--token-file")
            .arg(&token_file)
            .arg("--data-dir")
            .arg(dir.join("agent")),
        dir.join("agent.log"),
    )
}

/// How long the operator may take to act on an object (usually under a second).
const OPERATOR_WAIT: Duration = Duration::from_secs(60);

/// The admin kubeconfig with the operator's service-account token instead
/// of the admin's: a client that can do exactly what rbac.yaml grants.
fn operator_kubeconfig(cluster: &TestCluster) -> String {
    let token = cluster.kubectl_ok(&[
        "-n",
        "veil-system",
        "create",
        "token",
        "veil-operator",
        "--duration=2h",
    ]);
    let admin = std::fs::read_to_string(cluster.kubeconfig()).unwrap();
    let mut config: Value = serde_yaml_ng::from_str(&admin).unwrap();
    for user in config["users"].as_array_mut().unwrap() {
        user["user"] = json!({"token": token.trim()});
    }
    write(
        cluster,
        "operator-kubeconfig.json",
        &serde_json::to_string(&config).unwrap(),
    )
}

/// `kubectl get ARGS -o json`, `None` when it does not exist (yet).
fn get(cluster: &TestCluster, args: &[&str]) -> Option<Value> {
    let mut all = vec!["get"];
    all.extend(args);
    all.extend(["-o", "json"]);
    let output = cluster.kubectl(&all);
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).unwrap())
}

async fn eventually<T>(what: &str, operator: &Running, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + OPERATOR_WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} after {OPERATOR_WAIT:?}; operator log:\n{}",
            operator.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_operator_does_its_work_with_only_these_grants() {
    let cluster = TestCluster::shared().await;
    apply(cluster, &path("manifests/namespace.yaml"));
    apply(cluster, &path("manifests/rbac.yaml"));
    let ns = "rbac-at-work";
    let namespace = write(
        cluster,
        "rbac-at-work.yaml",
        &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"),
    );
    apply(cluster, &namespace);
    wait_until_allowed(
        cluster,
        OPERATOR,
        &["create", "taskruns.veil.dev", "-n", ns],
    );

    let dir = TempDir::new().unwrap();
    let (operator, url) = start_operator(dir.path(), &operator_kubeconfig(cluster)).await;

    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("go");
    let run_at = (chrono::Utc::now() - chrono::Duration::seconds(5))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let script = serde_json::to_string(&format!(
        "while [ ! -f '{}' ]; do sleep 0.1; done",
        gate.display()
    ))
    .unwrap();
    let objects = format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: run-secret, namespace: {ns}}}
stringData: {{token: not-a-real-token}}
---
apiVersion: veil.dev/v1alpha1
kind: VeilNode
metadata: {{name: rbac-node}}
spec:
  labels: {{role: rbac-work}}
---
apiVersion: veil.dev/v1alpha1
kind: Runner
metadata: {{name: rbac-runner, namespace: {ns}}}
spec:
  nodeSelector: {{matchLabels: {{role: rbac-work}}}}
  maxParallelTasks: 1
  executors: [shell]
---
apiVersion: veil.dev/v1alpha1
kind: Schedule
metadata: {{name: once, namespace: {ns}}}
spec:
  runAt: \"{run_at}\"
  successfulJobsHistoryLimit: 0
  task:
    executor: shell
    timeoutSeconds: 120
    env:
      - name: RUN_TOKEN
        secretKeyRef: {{name: run-secret, key: token}}
    shell:
      script: {script}
"
    );
    cluster.kubectl_ok(&[
        "apply",
        "-f",
        &write(cluster, "rbac-at-work-objects.yaml", &objects),
    ]);
    // The agent after its VeilNode: the operator creates a VeilNode for a
    // registered agent that has none, and `kubectl apply` racing it would
    // fail with AlreadyExists.
    let _agent = start_agent(dir.path(), &url, "rbac-node", "role=rbac-work");

    // The Schedule's run is created in the cluster, with the Secret read,
    // and its status written (status subresource, server-side apply)…
    let run = eventually("running TaskRun", &operator, || {
        get(cluster, &["-n", ns, "taskruns"])?["items"]
            .as_array()?
            .first()
            .filter(|run| run["status"]["phase"] == "Running")
            .cloned()
    })
    .await;
    let name = run["metadata"]["name"].as_str().unwrap().to_owned();
    // …and deleted once it succeeded (history limit 0).
    std::fs::write(&gate, "").unwrap();
    eventually("deleted TaskRun", &operator, || {
        get(cluster, &["-n", ns, &format!("taskruns/{name}")])
            .is_none()
            .then_some(())
    })
    .await;
    eventually("Completed Schedule", &operator, || {
        get(cluster, &["-n", ns, "schedules/once"])
            .filter(|schedule| schedule["status"]["phase"] == "Completed")
    })
    .await;

    // The agent's VeilNode (applied above, for its labels) got its status
    // from the operator (the status subresource's `patch`).
    let node = eventually("VeilNode status of the registered agent", &operator, || {
        get(cluster, &["veilnodes/rbac-node"])
            .filter(|node| node["status"]["agentVersion"].is_string())
    })
    .await;
    assert_eq!(node["spec"]["labels"]["role"], "rbac-work", "{node:#}");

    // An agent pod's token is reviewed with the operator's own grants.
    cluster.agent_pod(
        "veil-system",
        "veil-agent",
        "veil-agent-at-work",
        "rbac-pod-node",
    );
    let token = cluster.pod_token(
        "veil-system",
        "veil-agent",
        "veil-agent-at-work",
        "veil.dev/agent",
    );
    let registered = veil_e2e::process::client_trusting(
        &dir.path()
            .join("operator")
            .join("tls-secret")
            .join("ca.crt"),
    )
    .post(format!("{url}/v1/agent/register"))
    .bearer_auth(&token)
    .json(&json!({"node": "rbac-pod-node", "os": "linux", "arch": "x86_64", "agentVersion": "0"}))
    .send()
    .await
    .unwrap()
    .status();
    assert_eq!(registered, 200, "{}", operator.log());

    let log = operator.log();
    for refused in ["forbidden", "Forbidden", "code: 403"] {
        assert!(
            !log.contains(refused),
            "the operator was refused something:\n{log}"
        );
    }
}
