//! Leader election against a real kube-apiserver with etcd: two
//! `veil-operator run --source kube` processes with distinct `POD_NAME`s,
//! one Lease. Exactly one holds it and only that one writes; a Schedule
//! makes one TaskRun per scheduled time (every create the API server made is
//! counted from a watch); after `kill -9` of the leader the
//! follower takes the Lease over, writes the status of a later spec change,
//! keeps scheduling without making any run twice, and releases the Lease
//! when stopped gracefully.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use veil_e2e::kube::TestCluster;
use veil_e2e::process::Operator;
use veil_e2e::wait::wait_until;

/// The namespace of this test's objects and of its Lease.
const NS: &str = "leader-election";
/// Upper bound of waits for statuses and runs (a run every minute).
const WAIT: Duration = Duration::from_secs(150);
/// Upper bound of the wait for a takeover (lease duration 15 s plus tries).
const TAKEOVER_WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);

const OBJECTS: &str = "
apiVersion: veil.dev/v1alpha1
kind: Runner
metadata: {name: pool, namespace: leader-election}
spec:
  nodeSelector: {matchLabels: {role: leader-test}}
  maxParallelTasks: 1
  executors: [shell]
---
apiVersion: veil.dev/v1alpha1
kind: Schedule
metadata: {name: every-minute, namespace: leader-election}
spec:
  schedule: \"* * * * *\"
  task:
    executor: shell
    shell: {command: [\"true\"]}
";

async fn start(cluster: &TestCluster, name: &str) -> Operator {
    cluster.operator(NS, name).await
}

fn get_json(cluster: &TestCluster, args: &[&str]) -> Option<Value> {
    let mut all = vec!["-n", NS];
    all.extend_from_slice(args);
    cluster.get_json(&all)
}

/// `holderIdentity` of the Lease, if it exists and has a holder.
fn holder(cluster: &TestCluster) -> Option<String> {
    let lease = get_json(cluster, &["lease", "veil-operator"])?;
    lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

/// Polls `check` until it returns `Some`; panics after `limit` with the logs.
async fn wait_for<T>(
    what: &str,
    limit: Duration,
    logs: &[&Operator],
    check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let context = || {
        let logs: Vec<String> = logs.iter().map(|o| o.log()).collect();
        format!("operator logs:\n{}", logs.join("\n-----\n"))
    };
    wait_until(what, limit, POLL, context, check).await
}

/// The Schedule's TaskRuns: scheduled time → names.
fn runs_by_time(cluster: &TestCluster) -> BTreeMap<String, Vec<String>> {
    let list = get_json(
        cluster,
        &["taskruns", "-l", "veil.dev/schedule=every-minute"],
    )
    .unwrap();
    let mut by_time: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for run in list["items"].as_array().unwrap() {
        let time = run["metadata"]["annotations"]["veil.dev/scheduled-time"]
            .as_str()
            .expect("a Schedule-made run names its scheduled time")
            .to_owned();
        let name = run["metadata"]["name"].as_str().unwrap().to_owned();
        by_time.entry(time).or_default().push(name);
    }
    by_time
}

/// Every TaskRun of the Schedule the API server ever created, recorded
/// from a watch started before any operator: scheduled time → uids. A run
/// created twice for one time (even under one name, after a delete) shows
/// as two uids, which listing the runs that exist now could not reveal.
struct CreatedRuns {
    seen: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>,
    watch: std::process::Child,
}

impl CreatedRuns {
    fn watch(cluster: &TestCluster) -> CreatedRuns {
        let mut watch = cluster
            .kubectl_command(&[
                "get",
                "taskruns",
                "-n",
                NS,
                "-l",
                "veil.dev/schedule=every-minute",
                "--watch",
                "--output-watch-events",
                "-o",
                "json",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = watch.stdout.take().unwrap();
        let seen: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> = Arc::default();
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            let events = serde_json::Deserializer::from_reader(stdout).into_iter::<Value>();
            for event in events.map_while(Result::ok) {
                let run = &event["object"];
                let (Some(time), Some(uid)) = (
                    run["metadata"]["annotations"]["veil.dev/scheduled-time"].as_str(),
                    run["metadata"]["uid"].as_str(),
                ) else {
                    continue;
                };
                let mut seen = record.lock().unwrap();
                let uids: &mut BTreeSet<String> = seen.entry(time.to_owned()).or_default();
                uids.insert(uid.to_owned());
            }
        });
        CreatedRuns { seen, watch }
    }

    /// Asserts that every scheduled time in `by_time` (runs that exist now)
    /// was created exactly once, and no other time was created at all.
    fn assert_once_each(&self, by_time: &BTreeMap<String, Vec<String>>) {
        let seen = self.seen.lock().unwrap().clone();
        for (time, names) in by_time {
            assert_eq!(names.len(), 1, "scheduled time {time} has runs {names:?}");
            let uids = seen.get(time).map_or(0, |uids| uids.len());
            assert_eq!(
                uids, 1,
                "scheduled time {time} was created {uids} times: {seen:?}"
            );
        }
        for (time, uids) in &seen {
            assert_eq!(
                uids.len(),
                1,
                "scheduled time {time} was created {} times",
                uids.len()
            );
        }
    }

    /// Waits until the watch has seen the runs of every time in `by_time`.
    async fn caught_up(&self, by_time: &BTreeMap<String, Vec<String>>) {
        for _ in 0..100 {
            if by_time
                .keys()
                .all(|t| self.seen.lock().unwrap().contains_key(t))
            {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("the watch never saw {by_time:?}");
    }
}

impl Drop for CreatedRuns {
    fn drop(&mut self) {
        let _ = self.watch.kill();
        let _ = self.watch.wait();
    }
}

/// The Runner's status, once it is for generation `generation`.
fn runner_observed(cluster: &TestCluster, generation: i64) -> Option<Value> {
    let runner = get_json(cluster, &["runners", "pool"])?;
    (runner["metadata"]["generation"].as_i64() == Some(generation)
        && runner["status"]["observedGeneration"].as_i64() == Some(generation))
    .then_some(runner)
}

#[tokio::test]
async fn only_the_lease_holder_writes_and_the_follower_takes_over_when_it_is_killed() {
    let cluster = TestCluster::shared().await;
    cluster.kubectl_ok(&["create", "namespace", NS]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, OBJECTS).unwrap();
    let created = CreatedRuns::watch(cluster);
    cluster.kubectl_ok(&["apply", "-f", &file.display().to_string()]);

    let mut a = Some(start(cluster, "veil-a").await);
    let mut b = Some(start(cluster, "veil-b").await);

    // Exactly one holds the Lease; it says so in /metrics, the other not.
    let first = {
        let both = [a.as_ref().unwrap(), b.as_ref().unwrap()];
        wait_for("a Lease holder", WAIT, &both, async || holder(cluster)).await
    };
    assert!(first == "veil-a" || first == "veil-b", "holder {first}");
    let (mut leader, follower) = if first == "veil-a" {
        (a.take().unwrap(), b.take().unwrap())
    } else {
        (b.take().unwrap(), a.take().unwrap())
    };
    let both = [&leader, &follower];
    wait_for("veil_leader 1 on the holder", WAIT, &both, async || {
        (leader.metric("veil_leader").await? == 1.0).then_some(())
    })
    .await;
    assert_eq!(follower.metric("veil_leader").await, Some(0.0));

    // Statuses are written — by the leader only.
    wait_for("the Runner's status", WAIT, &both, async || {
        runner_observed(cluster, 1)
    })
    .await;
    let schedule_runs = wait_for("a TaskRun of the Schedule", WAIT, &both, async || {
        let runs = runs_by_time(cluster);
        (!runs.is_empty()).then_some(runs)
    })
    .await;
    created.caught_up(&schedule_runs).await;
    created.assert_once_each(&schedule_runs);
    assert!(leader.metric("veil_status_writes_total").await.unwrap() > 0.0);
    assert_eq!(
        follower.metric("veil_status_writes_total").await,
        Some(0.0),
        "a follower writes no status\n{}",
        follower.log()
    );
    assert!(!follower.log().contains("created a task run"));
    assert_eq!(holder(cluster).as_deref(), Some(first.as_str()));

    // kill -9 the leader: no release, the Lease must expire.
    leader.kill();
    let second = if first == "veil-a" {
        "veil-b"
    } else {
        "veil-a"
    };
    let only = [&follower];
    wait_for(
        "the follower to take the Lease",
        TAKEOVER_WAIT,
        &only,
        async || (holder(cluster)? == second).then_some(()),
    )
    .await;
    wait_for("veil_leader 1 on the new leader", WAIT, &only, async || {
        (follower.metric("veil_leader").await? == 1.0).then_some(())
    })
    .await;

    // A spec change after the failover gets its status from the new leader.
    cluster.kubectl_ok(&[
        "patch",
        "-n",
        NS,
        "runner",
        "pool",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxParallelTasks":2}}"#,
    ]);
    wait_for(
        "the Runner's status after the spec change",
        WAIT,
        &only,
        async || runner_observed(cluster, 2),
    )
    .await;
    assert!(follower.metric("veil_status_writes_total").await.unwrap() > 0.0);

    // The new leader keeps scheduling, and no scheduled time has two runs.
    let before = schedule_runs.len();
    let after = wait_for(
        "a TaskRun made by the new leader",
        WAIT,
        &only,
        async || {
            let runs = runs_by_time(cluster);
            (runs.len() > before && follower.log().contains("created a task run")).then_some(runs)
        },
    )
    .await;
    created.caught_up(&after).await;
    created.assert_once_each(&after);
    for time in schedule_runs.keys() {
        assert!(after.contains_key(time), "run for {time} kept: {after:?}");
    }

    // A graceful stop releases the Lease at once.
    let mut new_leader = follower;
    new_leader.stop();
    assert_eq!(holder(cluster), None, "released on stop");
    drop(leader);
}

#[tokio::test]
async fn a_replica_on_per_pod_sqlite_refuses_to_start_when_its_replica_set_wants_two() {
    let cluster = TestCluster::shared().await;
    let ns = "sqlite-replicas";
    cluster.kubectl_ok(&["create", "namespace", ns]);
    // This process is the Pod veil-s of a ReplicaSet that wants 2 replicas.
    cluster.replica_pod(ns, "veil-operator-two", 2, "veil-s", "127.0.0.1");
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(veil_e2e::process::binary("veil-operator"))
        .args(["run", "--source", "kube", "--namespace", ns])
        .args(["--kubeconfig", &cluster.kubeconfig().display().to_string()])
        .args([
            "--listen",
            &format!("127.0.0.1:{}", veil_e2e::process::free_port()),
        ])
        .arg("--data-dir")
        .arg(data.path())
        .env("POD_NAME", "veil-s")
        .env("POD_NAMESPACE", ns)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the operator kept running on SQLite with 2 replicas wanted");
        }
        std::thread::sleep(POLL);
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("wants 2 replicas") && stderr.contains("PostgreSQL"),
        "{stderr}"
    );
    assert_eq!(
        holder_in(cluster, ns),
        None,
        "it never competed for the Lease"
    );

    // The same on a ReplicaSet of one: it starts and leads.
    cluster.replica_pod(ns, "veil-operator-one", 1, "veil-one", "127.0.0.1");
    let alone = cluster.operator(ns, "veil-one").await;
    wait_for("the lone replica to lead", WAIT, &[&alone], async || {
        (alone.metric("veil_leader").await? == 1.0).then_some(())
    })
    .await;
}

/// `holderIdentity` of the Lease in `namespace`.
fn holder_in(cluster: &TestCluster, namespace: &str) -> Option<String> {
    let lease = cluster.get_json(&["-n", namespace, "lease", "veil-operator"])?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}
