//! Garbage collection of Schedule-made TaskRuns by a real
//! kube-controller-manager: the operator only sets `ownerReferences`; the
//! cluster's garbage collector deletes a Schedule's runs with it.
//!
//! The operator is stopped before any Schedule is deleted, so nothing but
//! the garbage collector can remove a run. Waits are bounded (liveness), not
//! timing assertions: the collector acts within seconds, the bound is a
//! minute.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::time::Duration;

use serde_json::Value;
use veil_e2e::kube::TestCluster;
use veil_e2e::process::{Operator, OperatorOptions};
use veil_e2e::wait::wait_until;

/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(60);
/// How often `kubectl` is asked again while waiting.
const POLL: Duration = Duration::from_millis(250);
const NS: &str = "gc";

/// Three one-shot Schedules whose time has passed; no Runner, so their runs
/// stay Pending (what matters here is that they exist and are owned).
fn schedules(run_at: &str) -> String {
    ["doomed", "orphaned", "kept"]
        .map(|name| {
            format!(
                "apiVersion: veil.dev/v1alpha1
kind: Schedule
metadata: {{name: {name}, namespace: {NS}}}
spec:
  runAt: \"{run_at}\"
  task:
    executor: shell
    shell: {{command: [\"true\"]}}
"
            )
        })
        .join("---\n")
}

/// The TaskRuns in [`NS`], by name.
fn task_runs(cluster: &TestCluster) -> Vec<Value> {
    let out = cluster.kubectl_ok(&["get", "taskruns", "-n", NS, "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The run made by `schedule`, if it exists.
fn run_of(cluster: &TestCluster, schedule: &str) -> Option<Value> {
    task_runs(cluster)
        .into_iter()
        .find(|run| run["metadata"]["labels"]["veil.dev/schedule"] == schedule)
}

/// Polls `check` until it returns `Some`; panics after [`WAIT`] with `log()`.
async fn wait_for<T>(
    what: &str,
    log: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    wait_until(what, WAIT, POLL, log, async || check()).await
}

#[tokio::test]
async fn deleting_a_schedule_lets_the_garbage_collector_delete_its_task_runs() {
    // Its own cluster: nothing else runs a controller manager.
    let cluster = TestCluster::start().await;
    cluster.start_controller_manager().await;
    cluster.kubectl_ok(&["create", "namespace", NS]);
    let run_at = chrono::Utc::now() - chrono::Duration::seconds(5);
    let file = cluster.dir().join("schedules.yaml");
    std::fs::write(
        &file,
        schedules(&run_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    )
    .unwrap();
    cluster.kubectl_ok(&["apply", "-f", &file.display().to_string()]);

    let unused = tempfile::tempdir().unwrap();
    let operator = Operator::start_with(
        unused.path(),
        OperatorOptions {
            source: Some("kube".into()),
            extra_args: [
                "--kubeconfig",
                &cluster.kubeconfig().display().to_string(),
                "--namespace",
                NS,
                "--lease-namespace",
                NS,
            ]
            .map(str::to_owned)
            .to_vec(),
            ..OperatorOptions::default()
        },
    )
    .await;
    let runs = wait_for(
        "a TaskRun for each Schedule",
        || operator.log(),
        || {
            let runs = ["doomed", "orphaned", "kept"].map(|s| run_of(&cluster, s));
            runs.iter().all(Option::is_some).then_some(runs)
        },
    )
    .await;
    for run in runs.iter().flatten() {
        let owner = &run["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Schedule", "{run:#}");
        assert_eq!(owner["blockOwnerDeletion"], true, "{run:#}");
    }
    // From here on only the garbage collector can delete a run.
    drop(operator);

    // Background deletion (kubectl's default): the Schedule goes at once,
    // the collector deletes its run.
    cluster.kubectl_ok(&["delete", "-n", NS, "schedule", "doomed"]);
    let gc_log = || {
        format!(
            "taskruns: {:#?}\nkube-controller-manager log:\n{}",
            task_runs(&cluster),
            cluster.controller_manager_log()
        )
    };
    wait_for("doomed's TaskRun to be garbage-collected", gc_log, || {
        run_of(&cluster, "doomed").is_none().then_some(())
    })
    .await;

    // `--cascade=orphan`: the run stays, and the collector removes the
    // reference to its deleted owner.
    cluster.kubectl_ok(&[
        "delete",
        "-n",
        NS,
        "schedule",
        "orphaned",
        "--cascade=orphan",
    ]);
    let orphan = wait_for("orphaned's TaskRun to lose its owner", gc_log, || {
        run_of(&cluster, "orphaned").filter(|run| {
            run["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(Vec::is_empty)
        })
    })
    .await;
    assert!(
        orphan["metadata"]["deletionTimestamp"].is_null(),
        "{orphan:#}"
    );

    // The run of a Schedule nobody deleted is untouched.
    let kept = run_of(&cluster, "kept").expect("kept's TaskRun still exists");
    assert_eq!(
        kept["metadata"]["uid"],
        runs[2].as_ref().unwrap()["metadata"]["uid"]
    );
    assert!(kept["metadata"]["deletionTimestamp"].is_null(), "{kept:#}");
    assert_eq!(kept["metadata"]["ownerReferences"][0]["name"], "kept");
}
