//! Kubernetes Events from `veil-operator run --source kube` against a real
//! kube-apiserver, with a real agent running the task: a TaskRun whose
//! command fails gets a `Warning` Event `TaskFailed` regarding it, shown by
//! `kubectl describe`; an operator restarted on the same store (a new
//! leader that re-adopts the cluster's statuses) does not report it again.
//! A VeilNode whose agent dies gets `NodeLost` (in `default`, where Events
//! of cluster-scoped objects live), and `NodeReady` when it comes back.
//! A Schedule whose one-off time passed beyond its deadline gets one
//! `MissedSchedule` warning.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use veil_e2e::kube::TestCluster;
use veil_e2e::process::{Agent, AgentOptions, Operator, OperatorOptions};
use veil_e2e::wait::wait_until;

/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(60);
/// How often `kubectl` is asked again while waiting.
const POLL: Duration = Duration::from_millis(250);
const NS: &str = "events";

const RUNNER: &str = "apiVersion: veil.dev/v1alpha1
kind: Runner
metadata: {name: pool, namespace: events}
spec:
  nodeSelector: {matchLabels: {role: events}}
  maxParallelTasks: 1
  executors: [shell]
";

/// A TaskRun whose command exits with 1.
fn failing_run(name: &str) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1
kind: TaskRun
metadata: {{name: {name}, namespace: {NS}}}
spec:
  task:
    executor: shell
    shell: {{command: [\"false\"]}}
"
    )
}

fn apply(cluster: &TestCluster, name: &str, yaml: &str) {
    let file = cluster.dir().join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    cluster.kubectl_ok(&["apply", "-f", &file.display().to_string()]);
}

/// A `--source kube` operator; limited to `namespace` (which also holds its
/// Lease) when given, else watching all (Lease in `default`). `data_dir`
/// and `port` restart one on the same store and address.
async fn operator(
    cluster: &TestCluster,
    namespace: Option<&str>,
    data_dir: Option<&Path>,
    port: Option<u16>,
    extra: &[&str],
) -> Operator {
    let mut args = vec![
        "--kubeconfig".to_owned(),
        cluster.kubeconfig().display().to_string(),
        "--lease-namespace".to_owned(),
        namespace.unwrap_or("default").to_owned(),
    ];
    if let Some(namespace) = namespace {
        args.extend(["--namespace".to_owned(), namespace.to_owned()]);
    }
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    Operator::start_with(
        cluster.dir(),
        OperatorOptions {
            source: Some("kube".into()),
            data_dir: data_dir.map(Path::to_path_buf),
            port,
            extra_args: args,
            ..OperatorOptions::default()
        },
    )
    .await
}

/// The events.k8s.io/v1 Events in `namespace` regarding the `kind` `name` with `reason`.
fn events_in(
    cluster: &TestCluster,
    namespace: &str,
    kind: &str,
    name: &str,
    reason: &str,
) -> Vec<Value> {
    let out = cluster.kubectl_ok(&["get", "events.events.k8s.io", "-n", namespace, "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["regarding"]["kind"] == kind
                && e["regarding"]["name"] == name
                && e["reason"] == reason
        })
        .cloned()
        .collect()
}

/// [`events_in`] for a TaskRun in [`NS`].
fn events_about(cluster: &TestCluster, name: &str, reason: &str) -> Vec<Value> {
    events_in(cluster, NS, "TaskRun", name, reason)
}

/// The line of the `Events:` section of `kubectl describe` output that names `reason`.
fn described_event(described: &str, reason: &str) -> String {
    described
        .lines()
        .skip_while(|line| !line.starts_with("Events:"))
        .find(|line| line.contains(reason))
        .unwrap_or_else(|| panic!("no {reason} event in kubectl describe:\n{described}"))
        .trim()
        .to_owned()
}

/// Polls `check` until it returns `Some`; panics after [`WAIT`] with `logs()`.
async fn wait_for<T>(
    what: &str,
    logs: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    wait_until(what, WAIT, POLL, logs, async || check()).await
}

/// The logs of `operator` and `agent`, for a failed wait.
fn logs(operator: &Operator, agent: &Agent) -> String {
    format!(
        "operator log:\n{}\nagent log:\n{}",
        operator.log(),
        agent.log()
    )
}

#[tokio::test]
async fn a_failed_task_run_gets_one_warning_event_not_repeated_by_a_new_leader() {
    let cluster = TestCluster::shared().await;
    cluster.kubectl_ok(&["create", "namespace", NS]);
    apply(cluster, "runner", RUNNER);
    let mut first = operator(cluster, Some(NS), None, None, &[]).await;
    // Selectors match the VeilNode's labels, never what the agent reports.
    apply(
        cluster,
        "events-node",
        "apiVersion: veil.dev/v1alpha1\nkind: VeilNode\nmetadata: {name: events-node}\nspec:\n  labels: {role: events}\n",
    );
    let agent = Agent::start(&first, "events-node", &[]);

    apply(cluster, "fails", &failing_run("fails"));
    let event = wait_for(
        "a TaskFailed event about the run",
        || logs(&first, &agent),
        || {
            events_about(cluster, "fails", "TaskFailed")
                .into_iter()
                .next()
        },
    )
    .await;
    let run: Value = serde_json::from_str(
        &cluster.kubectl_ok(&["get", "-n", NS, "taskrun", "fails", "-o", "json"]),
    )
    .unwrap();
    assert_eq!(run["status"]["phase"], "Failed", "{run:#}");
    assert_eq!(event["type"], "Warning", "{event:#}");
    assert_eq!(
        event["regarding"]["uid"], run["metadata"]["uid"],
        "{event:#}"
    );
    assert_eq!(event["regarding"]["apiVersion"], "veil.dev/v1alpha1");
    assert_eq!(event["reportingController"], "veil-operator", "{event:#}");
    assert_eq!(event["action"], "RunTask", "{event:#}");
    let note = event["note"].as_str().unwrap();
    assert!(
        note.contains("failed on node events-node") && note.contains("exit code 1"),
        "{note}"
    );
    // What a person sees.
    let described = cluster.kubectl_ok(&["describe", "-n", NS, "taskrun", "fails"]);
    let line = described_event(&described, "TaskFailed");
    assert!(line.starts_with("Warning"), "{line}");

    // A new leader on the same store adopts the cluster's statuses: the
    // old failure is no transition for it.
    first.stop();
    let port: u16 = first.url.rsplit(':').next().unwrap().parse().unwrap();
    let second = operator(cluster, Some(NS), Some(&first.data_dir), Some(port), &[]).await;
    apply(cluster, "fails-again", &failing_run("fails-again"));
    wait_for(
        "a TaskFailed event about the second run",
        || logs(&second, &agent),
        || {
            events_about(cluster, "fails-again", "TaskFailed")
                .into_iter()
                .next()
        },
    )
    .await;
    // Events are published in order, so a repeat about the first run from
    // the new leader's first pass would be there by now.
    let about_first = events_about(cluster, "fails", "TaskFailed");
    assert_eq!(about_first.len(), 1, "{about_first:#?}\n{}", second.log());
    assert!(
        about_first[0]["series"].is_null(),
        "the event was repeated: {:#}",
        about_first[0]
    );
}

const NODE: &str = "apiVersion: veil.dev/v1alpha1
kind: VeilNode
metadata: {name: lost-node}
spec: {}
";

#[tokio::test]
async fn a_node_whose_agent_dies_gets_node_lost_and_node_ready_when_it_returns() {
    // Its own cluster: VeilNodes are cluster-scoped, seen by every operator.
    let cluster = TestCluster::start().await;
    apply(&cluster, "node", NODE);
    // Heartbeats every second: the node is lost after 3 s of silence.
    let operator = operator(&cluster, None, None, None, &["--heartbeat-interval", "1"]).await;
    let agent = Agent::start(&operator, "lost-node", &[]);
    let waited = cluster.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "veilnode/lost-node",
        &format!("--timeout={}s", WAIT.as_secs()),
    ]);
    assert!(
        waited.status.success(),
        "kubectl wait: {}\n{}",
        String::from_utf8_lossy(&waited.stderr),
        operator.log()
    );

    let killed = agent.kill();
    let lost = wait_for(
        "a NodeLost event",
        || operator.log(),
        || {
            events_in(&cluster, "default", "VeilNode", "lost-node", "NodeLost")
                .into_iter()
                .next()
        },
    )
    .await;
    assert_eq!(lost["type"], "Warning", "{lost:#}");
    assert!(lost["regarding"]["namespace"].is_null(), "{lost:#}");
    let note = lost["note"].as_str().unwrap();
    assert!(note.contains("no heartbeat since"), "{note}");
    let described = cluster.kubectl_ok(&["describe", "veilnode", "lost-node"]);
    let line = described_event(&described, "NodeLost");
    assert!(line.starts_with("Warning"), "{line}");

    let _agent = Agent::restart(
        &operator,
        "lost-node",
        &[],
        killed,
        &AgentOptions::default(),
    );
    let back = wait_for(
        "a NodeReady event",
        || operator.log(),
        || {
            events_in(&cluster, "default", "VeilNode", "lost-node", "NodeReady")
                .into_iter()
                .next()
        },
    )
    .await;
    assert_eq!(back["type"], "Normal", "{back:#}");
}

/// A one-off Schedule whose time passed longer ago than its deadline.
const LATE_SCHEDULE: &str = "apiVersion: veil.dev/v1alpha1
kind: Schedule
metadata: {name: too-late, namespace: events-schedule}
spec:
  runAt: \"2026-01-01T03:00:00Z\"
  startingDeadlineSeconds: 60
  task:
    executor: shell
    shell: {command: [\"true\"]}
";

#[tokio::test]
async fn a_schedule_that_missed_its_time_gets_one_missed_schedule_warning() {
    let cluster = TestCluster::shared().await;
    let namespace = "events-schedule";
    cluster.kubectl_ok(&["create", "namespace", namespace]);
    let operator = operator(cluster, Some(namespace), None, None, &[]).await;
    apply(cluster, "too-late", LATE_SCHEDULE);
    let missed = || events_in(cluster, namespace, "Schedule", "too-late", "MissedSchedule");
    let event = wait_for(
        "a MissedSchedule event",
        || operator.log(),
        || missed().into_iter().next(),
    )
    .await;
    let schedule: Value = serde_json::from_str(
        &cluster.kubectl_ok(&["get", "-n", namespace, "schedule", "too-late", "-o", "json"]),
    )
    .unwrap();
    assert_eq!(event["type"], "Warning", "{event:#}");
    assert_eq!(
        event["regarding"]["uid"], schedule["metadata"]["uid"],
        "{event:#}"
    );
    let note = event["note"].as_str().unwrap();
    assert!(
        note.contains("2026-01-01T03:00:00") && note.contains("startingDeadlineSeconds (60s)"),
        "{note}"
    );
    let described = cluster.kubectl_ok(&["describe", "-n", namespace, "schedule", "too-late"]);
    let line = described_event(&described, "MissedSchedule");
    assert!(line.starts_with("Warning"), "{line}");

    // Later passes do not repeat it: a second late Schedule forces more
    // passes, and once its own warning is there, a repeat of the first
    // (Events are published in order) would be there too.
    apply(
        cluster,
        "too-late-2",
        &LATE_SCHEDULE.replace("name: too-late,", "name: too-late-2,"),
    );
    wait_for(
        "the second MissedSchedule event",
        || operator.log(),
        || {
            events_in(
                cluster,
                namespace,
                "Schedule",
                "too-late-2",
                "MissedSchedule",
            )
            .into_iter()
            .next()
        },
    )
    .await;
    let all = missed();
    assert_eq!(all.len(), 1, "{all:#?}");
    assert!(all[0]["series"].is_null(), "repeated: {:#}", all[0]);
    // The missed time counts as handled: it is the Schedule's last time.
    wait_for(
        "lastScheduleTime of the missed time",
        || operator.log(),
        || {
            let time = cluster.kubectl_ok(&[
                "get",
                "-n",
                namespace,
                "schedule",
                "too-late",
                "-o",
                "jsonpath={.status.lastScheduleTime}",
            ]);
            (time.trim() == "2026-01-01T03:00:00Z").then_some(())
        },
    )
    .await;
}
