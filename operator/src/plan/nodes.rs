//! Statuses of VeilNodes (from agent registrations and heartbeats) and of
//! Runners (capacity and run counts over the nodes they select).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use veil_crds::runner::{Executor, Runner};

use super::tasks::{NodeView, has_tool, strip_nulls};
use crate::agents::NodeObservation;
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
/// `running`: the runs Running on the node.
pub fn node_status(
    view: Option<&NodeView<'_>>,
    running: usize,
    timeout: chrono::Duration,
    previous: Option<&Value>,
) -> (Value, Conditions) {
    let observation = view.and_then(|v| v.observation);
    let ready = view.is_some_and(|v| v.ready);
    let heartbeat = observation.map(|o| last_heartbeat(o, ready, previous));
    let running = if view.is_some() { running } else { 0 };
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
    let conditions = node_conditions(observation, ready, timeout);
    (strip_nulls(body), conditions)
}

/// `lastHeartbeat`: the previous value while it is less than
/// [`HEARTBEAT_WRITE_INTERVAL`] older than the latest heartbeat and the
/// node stays Ready, else the latest.
fn last_heartbeat(o: &NodeObservation, ready: bool, previous: Option<&Value>) -> String {
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
}

/// Ready while the agent reports; NotRegistered before; NodeLost after
/// `timeout` without a heartbeat.
fn node_conditions(
    observation: Option<&NodeObservation>,
    ready: bool,
    timeout: chrono::Duration,
) -> Conditions {
    match (observation, ready) {
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
    }
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
    runs: &RunCounts,
) -> (Value, Conditions) {
    let selected: Vec<&NodeView<'_>> = views
        .values()
        .filter(|v| runner.spec.node_selector.matches(&v.labels))
        .collect();
    let ready = selected.iter().filter(|v| v.ready && !v.cordoned).count();
    let nodes: Vec<Value> = selected
        .iter()
        .map(|view| runner_node(runner, view, runs))
        .collect();
    let body = json!({
        "runAsRoot": runner.spec.run_as_root.then_some(true),
        "readyNodes": ready,
        "capacity": runner.spec.max_parallel_tasks as usize * ready,
        "running": runs.total("Running"),
        "succeeded": runs.total("Succeeded"),
        "failed": runs.total("Failed"),
        "nodes": nodes,
    });
    (
        strip_nulls(body),
        runner_conditions(ready, selected.is_empty()),
    )
}

/// Runs by node and phase (a Runner's runs: each is placed on a node).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunCounts(BTreeMap<(String, String), i64>);

impl RunCounts {
    /// Counts `state` once, if it is placed.
    pub fn add_state(&mut self, state: &RunStateRecord) {
        if let Some(node) = &state.node {
            self.add(node, &state.phase, 1);
        }
    }

    /// Counts a run on `node` in `phase` once more (`by` 1) or once less.
    pub fn add(&mut self, node: &str, phase: &str, by: i64) {
        let key = (node.to_owned(), phase.to_owned());
        let count = self.0.entry(key.clone()).or_default();
        *count += by;
        if *count == 0 {
            self.0.remove(&key);
        }
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &RunCounts) {
        for ((node, phase), count) in &other.0 {
            self.add(node, phase, *count);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Runs in `phase` on `node`.
    fn on(&self, node: &str, phase: &str) -> i64 {
        self.0
            .get(&(node.to_owned(), phase.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Runs in `phase` on any node.
    fn total(&self, phase: &str) -> i64 {
        self.0
            .iter()
            .filter(|((_, p), _)| p == phase)
            .map(|(_, count)| count)
            .sum()
    }
}

/// One selected node in the CRD's per-node shape: a workload phase and why
/// not Running, the Runner's runs there, the executors it lacks.
fn runner_node(runner: &Runner, view: &NodeView<'_>, runs: &RunCounts) -> Value {
    let (phase, message) = match (view.ready, view.cordoned) {
        (true, false) => ("Running", None),
        (_, true) => ("Stopped", Some("the node is cordoned")),
        (false, false) => ("Pending", Some("the node is not Ready")),
    };
    let missing: Vec<Executor> = runner
        .spec
        .executors
        .iter()
        .copied()
        .filter(|e| !has_tool(view, *e))
        .collect();
    strip_nulls(json!({
        "node": view.name,
        "phase": phase,
        "message": message,
        "capacity": runner.spec.max_parallel_tasks,
        "running": runs.on(view.name, "Running"),
        "succeeded": runs.on(view.name, "Succeeded"),
        "failed": runs.on(view.name, "Failed"),
        "missingExecutors": missing,
    }))
}

/// Ready while some selected node is Ready and uncordoned.
fn runner_conditions(ready: usize, none_selected: bool) -> Conditions {
    if ready == 0 {
        let message = if none_selected {
            "no node matches nodeSelector".to_owned()
        } else {
            "no selected node is Ready and uncordoned".to_owned()
        };
        return [
            ("Ready", "False", "NoReadyNodes".to_owned(), message.clone()),
            ("Reconciling", "True", "NoReadyNodes".to_owned(), message),
            ("Stalled", "False", "NoReadyNodes".to_owned(), String::new()),
        ];
    }
    [
        (
            "Ready",
            "True",
            "NodesReady".to_owned(),
            format!("{ready} node(s) ready"),
        ),
        (
            "Reconciling",
            "False",
            "NodesReady".to_owned(),
            String::new(),
        ),
        ("Stalled", "False", "NodesReady".to_owned(), String::new()),
    ]
}
