//! Statuses of VeilNodes (from agent registrations and heartbeats) and of
//! Runners (capacity and run counts over the nodes they select).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use veil_crds::runner::{Executor, Runner};

use super::tasks::{NodeView, has_tool, strip_nulls};
use crate::records::RunStateRecord;
use crate::world::timestamp;

type Conditions = [(&'static str, &'static str, String, String); 3];

/// How stale `status.lastHeartbeat` may get while nothing else about a
/// node changes. Writing every heartbeat would rewrite every node's status
/// every few seconds (in Kubernetes mode, an API write per node per
/// heartbeat); Ready is computed from the latest heartbeat either way.
pub const HEARTBEAT_WRITE_INTERVAL: chrono::Duration = chrono::Duration::minutes(5);

/// A VeilNode's status: what its agent registered, its heartbeat, Ready.
///
/// `lastHeartbeat` keeps its `previous` value while that is less than
/// [`HEARTBEAT_WRITE_INTERVAL`] older than the latest heartbeat and the
/// node stays Ready.
pub fn node_status(
    view: Option<&NodeView<'_>>,
    runs: &BTreeMap<String, RunStateRecord>,
    timeout: chrono::Duration,
    previous: Option<&Value>,
) -> (Value, Conditions) {
    let observation = view.and_then(|v| v.observation);
    let ready = view.is_some_and(|v| v.ready);
    let heartbeat = observation.map(|o| {
        let kept = previous
            .and_then(|p| p["lastHeartbeat"].as_str())
            .filter(|_| ready)
            .filter(|text| {
                chrono::DateTime::parse_from_rfc3339(text).is_ok_and(|at| {
                    let age = o.last_seen - at.with_timezone(&chrono::Utc);
                    age >= chrono::Duration::zero() && age < HEARTBEAT_WRITE_INTERVAL
                })
            });
        kept.map_or_else(|| timestamp(o.last_seen), str::to_owned)
    });
    let running = view.map_or(0, |v| {
        runs.values()
            .filter(|r| r.node.as_deref() == Some(v.name) && r.phase == "Running")
            .count()
    });
    let body = json!({
        "os": observation.map(|o| o.registration.os.clone()),
        "arch": observation.map(|o| o.registration.arch.clone()),
        "agentVersion": observation.map(|o| o.registration.agent_version.clone()),
        "address": observation.and_then(|o| o.registration.address.clone()),
        "lastHeartbeat": heartbeat,
        "reportedLabels": observation.map(|o| o.registration.labels.clone()).filter(|l| !l.is_empty()),
        "capabilities": observation.map(|o| o.registration.capabilities.clone()).unwrap_or_default(),
        "workloads": { "runningTasks": running },
    });
    let conditions = match (observation, ready) {
        (None, _) => [
            (
                "Ready",
                "False",
                "NotRegistered".to_owned(),
                "no agent has registered as this node yet".to_owned(),
            ),
            (
                "Reconciling",
                "True",
                "NotRegistered".to_owned(),
                String::new(),
            ),
            (
                "Stalled",
                "False",
                "NotRegistered".to_owned(),
                String::new(),
            ),
        ],
        (Some(_), true) => [
            (
                "Ready",
                "True",
                "Heartbeat".to_owned(),
                "the agent reports regularly".to_owned(),
            ),
            (
                "Reconciling",
                "False",
                "Heartbeat".to_owned(),
                String::new(),
            ),
            ("Stalled", "False", "Heartbeat".to_owned(), String::new()),
        ],
        (Some(o), false) => {
            let message = format!(
                "no heartbeat since {} (more than {}s); its runs are marked NodeLost",
                timestamp(o.last_seen),
                timeout.num_seconds()
            );
            [
                ("Ready", "False", "NodeLost".to_owned(), message.clone()),
                ("Reconciling", "False", "NodeLost".to_owned(), String::new()),
                ("Stalled", "True", "NodeLost".to_owned(), message),
            ]
        }
    };
    (strip_nulls(body), conditions)
}

/// A VeilNode's `JournalWritable` condition: `False` (reason `DiskFull`,
/// `ReadOnly` or `WriteFailed`) while its agent reports that it cannot
/// write its report journal — its reports are then held in memory only —
/// `True` otherwise; none before the agent registered.
pub fn journal_condition(view: Option<&NodeView<'_>>) -> super::memo::ExtraCondition {
    let observation = view?.observation?;
    Some(match &observation.journal_fault {
        None => (
            "JournalWritable",
            "True",
            "Writable".to_owned(),
            "the agent journals every report before sending it".to_owned(),
        ),
        Some(fault) => {
            // The agent's words: a known reason only, a bounded message.
            let reason = match fault.reason.as_str() {
                "DiskFull" => "DiskFull",
                "ReadOnly" => "ReadOnly",
                _ => "WriteFailed",
            };
            let message: String = fault.message.chars().take(512).collect();
            (
                "JournalWritable",
                "False",
                reason.to_owned(),
                format!(
                    "{message} ({} report(s) held in memory only, still sent; lost if the agent dies before they are delivered)",
                    fault.held_in_memory
                ),
            )
        }
    })
}

/// A Runner's status: Ready nodes it selects, capacity, and the counts of
/// `runs` — the runs whose Runner it is (`status.runner` names it: same
/// namespace, selected for the run's node), not every run on its nodes —
/// in all and per node, with the executors each node lacks the tool for.
pub fn runner_status(
    runner: &Runner,
    views: &BTreeMap<&str, NodeView<'_>>,
    runs: &[&RunStateRecord],
) -> (Value, Conditions) {
    let selected: Vec<&NodeView<'_>> = views
        .values()
        .filter(|v| runner.spec.node_selector.matches(&v.labels))
        .collect();
    let ready: Vec<&str> = selected
        .iter()
        .filter(|v| v.ready && !v.cordoned)
        .map(|v| v.name)
        .collect();
    let count = |phase: &str, node: Option<&str>| {
        runs.iter()
            .filter(|r| r.phase == phase && node.is_none_or(|n| r.node.as_deref() == Some(n)))
            .count()
    };
    let nodes: Vec<Value> = selected
        .iter()
        .map(|v| {
            // The CRD's per-node shape: a workload phase and why not Running.
            let (phase, message) = match (v.ready, v.cordoned) {
                (true, false) => ("Running", None),
                (_, true) => ("Stopped", Some("the node is cordoned")),
                (false, false) => ("Pending", Some("the node is not Ready")),
            };
            let missing: Vec<Executor> = runner
                .spec
                .executors
                .iter()
                .copied()
                .filter(|e| !has_tool(v, *e))
                .collect();
            strip_nulls(json!({
                "node": v.name,
                "phase": phase,
                "message": message,
                "capacity": runner.spec.max_parallel_tasks,
                "running": count("Running", Some(v.name)),
                "succeeded": count("Succeeded", Some(v.name)),
                "failed": count("Failed", Some(v.name)),
                "missingExecutors": missing,
            }))
        })
        .collect();
    let body = json!({
        "runAsRoot": runner.spec.run_as_root.then_some(true),
        "readyNodes": ready.len(),
        "capacity": runner.spec.max_parallel_tasks as usize * ready.len(),
        "running": count("Running", None),
        "succeeded": count("Succeeded", None),
        "failed": count("Failed", None),
        "nodes": nodes,
    });
    let conditions = if ready.is_empty() {
        let message = if selected.is_empty() {
            "no node matches nodeSelector".to_owned()
        } else {
            "no selected node is Ready and uncordoned".to_owned()
        };
        [
            ("Ready", "False", "NoReadyNodes".to_owned(), message.clone()),
            ("Reconciling", "True", "NoReadyNodes".to_owned(), message),
            ("Stalled", "False", "NoReadyNodes".to_owned(), String::new()),
        ]
    } else {
        [
            (
                "Ready",
                "True",
                "NodesReady".to_owned(),
                format!("{} node(s) ready", ready.len()),
            ),
            (
                "Reconciling",
                "False",
                "NodesReady".to_owned(),
                String::new(),
            ),
            ("Stalled", "False", "NodesReady".to_owned(), String::new()),
        ]
    };
    (strip_nulls(body), conditions)
}
