//! `veil-operator run --source kube` against a real kube-apiserver with
//! etcd: statuses through the status subresource (server-side apply, field
//! manager `veil-operator`), the same statuses as dir mode for the same
//! files, `kubectl wait`, Schedule-made TaskRuns owned by their Schedule,
//! and an API server restart.
//!
//! Tests on the shared cluster each use their own namespace and an
//! operator limited to it (`--namespace`). VeilNodes are cluster-scoped and
//! seen by every operator, so the test that needs a node to become Ready
//! starts a cluster of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use veil_e2e::kube::{TestCluster, workspace_root};
use veil_e2e::process::{Agent, Operator, OperatorOptions};
use veil_e2e::wait::wait_until;

/// Upper bound of every wait (statuses usually appear within a second).
const WAIT: Duration = Duration::from_secs(60);
/// How often `kubectl` is asked again while waiting.
const POLL: Duration = Duration::from_millis(250);

/// The objects of `examples/standalone/` that get a status, as `plural/name`.
const EXAMPLE_OBJECTS: [&str; 9] = [
    "veilnodes/local",
    "strategies/youtube-fake",
    "strategies/youtube-badsum",
    "strategies/via-vless",
    "runners/local",
    "schedules/heartbeat",
    "taskruns/hello",
    "protocolservers/edge-vless",
    "vlesskeys/alice",
];

fn examples() -> PathBuf {
    workspace_root().join("examples/standalone")
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// A `--source kube` operator for `cluster`, limited to `namespace` when
/// given; its leader-election Lease lives in that namespace (else in
/// `default`), so operators of different tests do not compete.
async fn kube_operator(cluster: &TestCluster, namespace: Option<&str>) -> Operator {
    let mut extra_args = vec![
        "--kubeconfig".to_owned(),
        path_arg(cluster.kubeconfig()),
        "--lease-namespace".to_owned(),
        namespace.unwrap_or("default").to_owned(),
    ];
    if let Some(namespace) = namespace {
        extra_args.extend(["--namespace".to_owned(), namespace.to_owned()]);
    }
    let unused = tempfile::tempdir().unwrap();
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

/// `kubectl get ARGS -o json`, or `None` when the object does not exist.
fn get_json(cluster: &TestCluster, args: &[&str]) -> Option<Value> {
    cluster.get_json(args)
}

/// Polls `check` until it returns `Some`; panics after [`WAIT`] with the operator's log.
async fn wait_for<T>(what: &str, operator: &Operator, mut check: impl FnMut() -> Option<T>) -> T {
    let log = || format!("operator log:\n{}", operator.log());
    wait_until(what, WAIT, POLL, log, async || check()).await
}

/// The object once its status is for its current generation.
fn observed(object: Value) -> Option<Value> {
    let generation = object["metadata"]["generation"].as_i64()?;
    (object["status"]["observedGeneration"].as_i64() == Some(generation)).then_some(object)
}

/// What the shared assertion table compares per object: phase and each
/// condition's type, status and reason.
#[derive(Debug, PartialEq, Eq)]
struct StatusRow {
    phase: Option<String>,
    conditions: Vec<(String, String, String)>,
}

fn status_row(object: &Value) -> StatusRow {
    let status = &object["status"];
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let mut conditions: Vec<_> = status["conditions"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|c| (text(&c["type"]), text(&c["status"]), text(&c["reason"])))
                .collect()
        })
        .unwrap_or_default();
    conditions.sort();
    StatusRow {
        phase: status["phase"].as_str().map(str::to_owned),
        conditions,
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn examples_get_the_same_statuses_as_in_dir_mode_written_by_server_side_apply() {
    let cluster = TestCluster::shared().await;
    let ns = "examples";
    cluster.kubectl_ok(&["create", "namespace", ns]);
    cluster.kubectl_ok(&["apply", "-n", ns, "-f", &path_arg(&examples())]);
    let kube = kube_operator(cluster, Some(ns)).await;
    let dir = Operator::start(&examples()).await;

    // (a) Every object gets a status for its generation, in the cluster.
    let mut kube_objects = BTreeMap::new();
    for object in EXAMPLE_OBJECTS {
        let found = wait_for(&format!("the status of {object}"), &kube, || {
            get_json(cluster, &["-n", ns, object]).and_then(observed)
        })
        .await;
        kube_objects.insert(object, found);
    }
    let mut dir_objects = BTreeMap::new();
    for object in EXAMPLE_OBJECTS {
        let (plural, name) = object.split_once('/').unwrap();
        let found = dir
            .eventually(&format!("dir-mode status of {object}"), WAIT, || async {
                dir.object(plural, name)
                    .await
                    .filter(|o| o["status"].is_object())
            })
            .await;
        dir_objects.insert(object, found);
    }
    // One table: the same phase and conditions per object in both modes.
    let table = |objects: &BTreeMap<&str, Value>| -> BTreeMap<String, StatusRow> {
        objects
            .iter()
            .map(|(name, object)| ((*name).to_owned(), status_row(object)))
            .collect()
    };
    let (kube_table, dir_table) = (table(&kube_objects), table(&dir_objects));
    assert_eq!(
        kube_table, dir_table,
        "kube mode (left) vs dir mode (right)"
    );
    for (object, row) in &kube_table {
        assert!(!row.conditions.is_empty(), "{object} has no conditions");
    }
    // The Secret referenced by the server was found (watched by name).
    assert_eq!(
        kube_table["protocolservers/edge-vless"],
        dir_table["protocolservers/edge-vless"]
    );

    // (b) The status write did not touch spec: re-applying the same files
    // changes nothing, and the operator owns `status` only, via the
    // status subresource. (secrets.yaml is left out: kubectl itself always
    // re-applies a Secret written with `stringData`, which the API server
    // folds into `data`; the operator writes only its own credentials Secrets.)
    let paths: Vec<String> = ["nodes", "strategies", "tasks", "vless"]
        .iter()
        .map(|name| path_arg(&examples().join(format!("{name}.yaml"))))
        .collect();
    let mut veil_files = vec!["-n", ns];
    for path in &paths {
        veil_files.extend(["-f", path.as_str()]);
    }
    let applied = cluster.kubectl_ok(&[&["apply"], veil_files.as_slice()].concat());
    assert_eq!(applied.lines().count(), EXAMPLE_OBJECTS.len(), "{applied}");
    for line in applied.lines() {
        assert!(
            line.ends_with(" unchanged"),
            "kubectl apply changed something:\n{applied}"
        );
    }
    let diff = cluster.kubectl(&[&["diff"], veil_files.as_slice()].concat());
    assert_eq!(
        diff.status.code(),
        Some(0),
        "kubectl diff found differences:\n{}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    for object in EXAMPLE_OBJECTS {
        let live = get_json(cluster, &["-n", ns, object, "--show-managed-fields"]).unwrap();
        let managers = live["metadata"]["managedFields"].as_array().unwrap();
        let ours: Vec<&Value> = managers
            .iter()
            .filter(|m| m["manager"] == "veil-operator")
            .collect();
        assert_eq!(ours.len(), 1, "{object}: {managers:#?}");
        assert_eq!(ours[0]["operation"], "Apply", "{object}");
        assert_eq!(ours[0]["subresource"], "status", "{object}");
        let fields: Vec<&String> = ours[0]["fieldsV1"].as_object().unwrap().keys().collect();
        assert_eq!(fields, ["f:status"], "{object} owns more than status");
        for other in managers.iter().filter(|m| m["manager"] != "veil-operator") {
            assert!(
                other["fieldsV1"].get("f:status").is_none(),
                "{object}: {} owns status fields",
                other["manager"]
            );
        }
    }

    // (c) A spec change gets a new status for the new generation.
    let changed = std::fs::read_to_string(examples().join("vless.yaml"))
        .unwrap()
        .replace("enabled: true", "enabled: false");
    let file = cluster.dir().join("examples-disabled-key.yaml");
    write(&file, &changed);
    cluster.kubectl_ok(&["apply", "-n", ns, "-f", &path_arg(&file)]);
    let key = wait_for("alice disabled at generation 2", &kube, || {
        get_json(cluster, &["-n", ns, "vlesskeys/alice"])
            .and_then(observed)
            .filter(|key| key["metadata"]["generation"] == 2)
    })
    .await;
    assert_eq!(key["status"]["phase"], "Disabled", "{key:#}");
    // `kubectl get` shows it in its columns too.
    let table = cluster.kubectl_ok(&["get", "vlesskeys", "-n", ns]);
    assert!(table.contains("Disabled"), "{table}");
    // And `veil-operator get` against the operator's API agrees.
    let got = kube.cli(&["get", "vlesskeys", "-n", ns]);
    let got = String::from_utf8_lossy(&got.stdout);
    assert!(got.contains("alice") && got.contains("Disabled"), "{got}");
}

/// A Runner for one node label and a one-shot Schedule whose run waits
/// for `gate` to exist; successful runs are not kept (history limit 0).
/// Plus a Schedule the CRD schema accepts but Veil refuses (both
/// `schedule` and `runAt`).
fn schedule_objects(ns: &str, run_at: &str, gate: &Path) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1
kind: Runner
metadata: {{name: sched-runner, namespace: {ns}}}
spec:
  nodeSelector: {{matchLabels: {{role: sched-e}}}}
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
    shell:
      script: {script}
---
apiVersion: veil.dev/v1alpha1
kind: Schedule
metadata: {{name: both, namespace: {ns}}}
spec:
  schedule: \"0 3 * * *\"
  runAt: \"{run_at}\"
  task:
    executor: shell
    shell: {{command: [\"true\"]}}
",
        script = serde_json::to_string(&format!(
            "while [ ! -f '{}' ]; do sleep 0.1; done",
            gate.display()
        ))
        .unwrap()
    )
}

#[tokio::test]
async fn a_schedule_creates_an_owned_task_run_and_deletes_it_beyond_the_history_limit() {
    let cluster = TestCluster::shared().await;
    let ns = "schedules";
    cluster.kubectl_ok(&["create", "namespace", ns]);
    let operator = kube_operator(cluster, Some(ns)).await;
    // Selectors match the VeilNode's labels, never what the agent reports.
    let node_file = cluster.dir().join("sched-node.yaml");
    write(
        &node_file,
        "apiVersion: veil.dev/v1alpha1\nkind: VeilNode\nmetadata: {name: sched-node}\nspec:\n  labels: {role: sched-e}\n",
    );
    cluster.kubectl_ok(&["apply", "-f", &path_arg(&node_file)]);
    let _agent = Agent::start(&operator, "sched-node", &[]);

    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("go");
    let run_at = chrono::Utc::now() - chrono::Duration::seconds(5);
    let run_at = run_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let file = cluster.dir().join("schedules.yaml");
    write(&file, &schedule_objects(ns, &run_at, &gate));
    cluster.kubectl_ok(&["apply", "-f", &path_arg(&file)]);
    let schedule = get_json(cluster, &["-n", ns, "schedules/once"]).unwrap();

    // The refused Schedule is an error naming it and the field; the rest goes on.
    let error = operator
        .eventually("the refused Schedule's error", WAIT, || async {
            operator
                .errors()
                .await
                .into_iter()
                .find(|e| e["object"] == "Schedule schedules/both")
        })
        .await;
    assert_eq!(error["path"], "spec.runAt", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("both"),
        "{error}"
    );

    // The run is a real cluster object, owned by its Schedule.
    let run = wait_for("the scheduled run to be Running", &operator, || {
        let list = get_json(cluster, &["-n", ns, "taskruns"])?;
        list["items"]
            .as_array()?
            .first()
            .filter(|run| run["status"]["phase"] == "Running")
            .cloned()
    })
    .await;
    let name = run["metadata"]["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("once-"), "{name}");
    let owners = run["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(owners.len(), 1, "{owners:#?}");
    let owner = &owners[0];
    assert_eq!(owner["apiVersion"], "veil.dev/v1alpha1");
    assert_eq!(owner["kind"], "Schedule");
    assert_eq!(owner["name"], "once");
    assert_eq!(owner["uid"], schedule["metadata"]["uid"]);
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], true);
    let labels = &run["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "veil");
    assert_eq!(labels["veil.dev/schedule"], "once");

    // Once it succeeded it is beyond `successfulJobsHistoryLimit: 0`: the
    // operator deletes it from the cluster itself (no garbage collector
    // runs here).
    std::fs::write(&gate, "").unwrap();
    wait_for("the finished run to be deleted", &operator, || {
        get_json(cluster, &["-n", ns, &format!("taskruns/{name}")])
            .is_none()
            .then_some(())
    })
    .await;
    let schedule = wait_for("the Schedule to be Completed", &operator, || {
        get_json(cluster, &["-n", ns, "schedules/once"])
            .filter(|s| s["status"]["phase"] == "Completed")
    })
    .await;
    assert!(
        schedule["status"]["lastScheduleTime"].is_string(),
        "{schedule:#}"
    );
    // Exactly one run was ever made for the one-shot.
    assert!(
        operator
            .log()
            .matches("created a task run in the cluster")
            .count()
            == 1,
        "{}",
        operator.log()
    );
}

const NODE_AND_RUNNER: &str = "apiVersion: veil.dev/v1alpha1
kind: VeilNode
metadata: {name: edge-ready}
spec:
  labels: {role: edge}
---
apiVersion: v1
kind: Namespace
metadata: {name: restart}
---
apiVersion: veil.dev/v1alpha1
kind: Runner
metadata: {name: pool, namespace: restart}
spec:
  nodeSelector: {matchLabels: {role: edge}}
  maxParallelTasks: 1
  executors: [shell]
";

#[tokio::test]
async fn a_node_with_a_live_agent_is_ready_for_kubectl_wait_and_an_apiserver_restart_is_survived() {
    // Its own cluster: the API server restarts, and VeilNodes are seen by
    // every operator on a cluster.
    let cluster = TestCluster::start().await;
    let file = cluster.dir().join("node-and-runner.yaml");
    write(&file, NODE_AND_RUNNER);
    cluster.kubectl_ok(&["apply", "-f", &path_arg(&file)]);
    let operator = kube_operator(&cluster, None).await;
    wait_for("the node's first status", &operator, || {
        get_json(&cluster, &["veilnodes/edge-ready"]).and_then(observed)
    })
    .await;

    // (d) The agent registers, the node turns Ready, `kubectl wait` sees it.
    let _agent = Agent::start(&operator, "edge-ready", &[]);
    let waited = cluster.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "veilnode/edge-ready",
        &format!("--timeout={}s", WAIT.as_secs()),
    ]);
    assert!(
        waited.status.success(),
        "kubectl wait: {}\noperator log:\n{}",
        String::from_utf8_lossy(&waited.stderr),
        operator.log()
    );
    let runner = wait_for("the runner's status", &operator, || {
        get_json(&cluster, &["-n", "restart", "runners/pool"]).and_then(observed)
    })
    .await;
    assert_eq!(runner["metadata"]["generation"], 1);

    // (f) The API server restarts; the operator's watches and writes recover.
    cluster.restart_apiserver().await;
    write(
        &file,
        &NODE_AND_RUNNER.replace("maxParallelTasks: 1", "maxParallelTasks: 3"),
    );
    cluster.kubectl_ok(&["apply", "-f", &path_arg(&file)]);
    wait_for("the runner's status for generation 2", &operator, || {
        get_json(&cluster, &["-n", "restart", "runners/pool"])
            .and_then(observed)
            .filter(|runner| runner["metadata"]["generation"] == 2)
    })
    .await;
    let node = get_json(&cluster, &["veilnodes/edge-ready"]).unwrap();
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(ready["status"], "True", "{node:#}");
}
