//! A Runner's status counts the runs whose Runner it is — not every run on
//! the nodes it selects — in all and per node, and names the executors a
//! node lacks the tool for.

use chrono::{TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::records::{ObjectRef, RunStateRecord};

const OBJECTS: &str = "
apiVersion: veil.dev/v1alpha1
kind: VeilNode
metadata: {name: edge-1}
spec: {labels: {role: edge}}
---
apiVersion: veil.dev/v1alpha1
kind: Runner
metadata: {name: deploy, namespace: team-a}
spec:
  nodeSelector: {matchLabels: {role: edge}}
  executors: [shell, ansible]
---
apiVersion: veil.dev/v1alpha1
kind: Runner
metadata: {name: deploy, namespace: team-b}
spec:
  nodeSelector: {matchLabels: {role: edge}}
---
apiVersion: veil.dev/v1alpha1
kind: TaskRun
metadata: {name: a1, namespace: team-a}
spec: {task: {executor: shell, shell: {command: [date]}}}
---
apiVersion: veil.dev/v1alpha1
kind: TaskRun
metadata: {name: a2, namespace: team-a}
spec: {task: {executor: shell, shell: {command: [date]}}}
---
apiVersion: veil.dev/v1alpha1
kind: TaskRun
metadata: {name: a3, namespace: team-a}
spec: {task: {executor: shell, shell: {command: [date]}}}
---
apiVersion: veil.dev/v1alpha1
kind: TaskRun
metadata: {name: b1, namespace: team-b}
spec: {task: {executor: shell, shell: {command: [date]}}}
";

#[test]
fn a_runner_counts_its_own_runs_per_node_and_names_missing_executors() {
    let t = Utc.with_ymd_and_hms(2026, 12, 7, 7, 0, 0).unwrap();
    let (world, _) = GenerationBook::default().build_world(&snapshot(OBJECTS), t, uids());
    let mut nodes = edge_1_seen(t, t);
    nodes.get_mut("edge-1").unwrap().registration.capabilities =
        serde_json::from_value(json!([{"name": "sh", "path": "/bin/sh"}])).unwrap();
    let state = |namespace: &str, name: &str, phase: &str| {
        let key = ObjectKey::new(Kind::TaskRun, namespace, name);
        let uid = world.objects[&key].object.meta().uid.clone().unwrap();
        let record = RunStateRecord {
            uid: uid.clone(),
            run: ObjectRef::new("TaskRun", namespace, name),
            node: Some("edge-1".into()),
            phase: phase.into(),
            placed_at: Some(t),
            started_at: Some(t),
            finished_at: None,
            exit_code: None,
            reason: None,
            message: None,
            log_tail: Vec::new(),
            updated_at: t,
        };
        (uid, std::sync::Arc::new(record))
    };
    let runs = crate::records::RunStates::from_iter([
        state("team-a", "a1", "Succeeded"),
        state("team-a", "a2", "Failed"),
        state("team-a", "a3", "Running"),
        state("team-b", "b1", "Succeeded"),
    ]);
    let planned = plan(&PlanInputs {
        world: &world,
        previous: &Statuses::new(),
        nodes: &nodes,
        runs: &runs,
        now: t,
        node_timeout: chrono::Duration::seconds(30),
        last_schedule_times: &BTreeMap::new(),
        secrets: &vless::GeneratedSecrets::default(),
        traffic: &vless::TrafficState::default(),
        memo: None,
    });
    let status_of = |namespace: &str, kind: Kind, name: &str| {
        let key = ObjectKey::new(kind, namespace, name);
        json(&planned.statuses[&key])
    };

    let a = status_of("team-a", Kind::Runner, "deploy");
    assert_eq!(
        (&a["running"], &a["succeeded"], &a["failed"]),
        (&json!(1), &json!(1), &json!(1)),
        "team-b's run is not team-a's Runner's: {a}"
    );
    let node = &a["nodes"][0];
    assert_eq!(node["node"], "edge-1");
    assert_eq!(
        (&node["running"], &node["succeeded"], &node["failed"]),
        (&json!(1), &json!(1), &json!(1)),
        "{node}"
    );
    assert_eq!(node["missingExecutors"], json!(["ansible"]), "{node}");
    assert!(node.get("message").is_none(), "{node}");

    let b = status_of("team-b", Kind::Runner, "deploy");
    assert_eq!(
        (&b["running"], &b["succeeded"]),
        (&json!(0), &json!(1)),
        "{b}"
    );
    assert!(b["nodes"][0].get("missingExecutors").is_none(), "{b}");

    let run = status_of("team-b", Kind::TaskRun, "b1");
    assert_eq!(run["runner"], "deploy", "{run}");
}
