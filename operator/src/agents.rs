//! Live state of node agents as the operator sees it: registrations,
//! heartbeats, the current [`Assignment`] of every node, and the wake-ups
//! that answer assignment long-polls.
//!
//! Owns no policy: what a node should run is decided by `plan`; this module
//! only stores each node's latest assignment, bumps its revision when (and
//! only when) the content changes, and wakes that node's long-poll. An
//! unchanged node costs nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use veil_crds::wire::{Assignment, RegisterRequest, TaskAssignment};

/// What the operator knows about one node's agent.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeObservation {
    pub registration: RegisterRequest,
    pub registered_at: DateTime<Utc>,
    /// Last register, report or long-poll.
    pub last_seen: DateTime<Utc>,
    /// Revision of the assignment the agent last said it applied.
    pub applied_revision: u64,
}

struct NodeEntry {
    observation: Option<NodeObservation>,
    assignment: watch::Sender<Arc<Assignment>>,
    content_hash: String,
}

/// Every node's agent state. Cheap to share (`Arc<Agents>`).
pub struct Agents {
    nodes: Mutex<HashMap<String, NodeEntry>>,
    /// Bumped on every registration and report, so the controller replans.
    changes: watch::Sender<u64>,
}

impl Default for Agents {
    fn default() -> Self {
        Agents {
            nodes: Mutex::new(HashMap::new()),
            changes: watch::channel(0).0,
        }
    }
}

impl Agents {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, NodeEntry>> {
        // A poisoned lock means a panic elsewhere already; the data is still consistent
        // (every critical section is a plain field update), so keep serving.
        self.nodes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn entry<'a>(nodes: &'a mut HashMap<String, NodeEntry>, node: &str) -> &'a mut NodeEntry {
        nodes.entry(node.to_owned()).or_insert_with(|| NodeEntry {
            observation: None,
            assignment: watch::channel(Arc::new(Assignment {
                node: node.to_owned(),
                ..Assignment::default()
            }))
            .0,
            content_hash: String::new(),
        })
    }

    /// Records a registration (creates or updates the node).
    pub fn register(&self, request: RegisterRequest, now: DateTime<Utc>) {
        let mut nodes = self.lock();
        let entry = Self::entry(&mut nodes, &request.node);
        let registered_at = entry.observation.as_ref().map_or(now, |o| o.registered_at);
        let applied_revision = entry.observation.as_ref().map_or(0, |o| o.applied_revision);
        entry.observation = Some(NodeObservation {
            registration: request,
            registered_at,
            last_seen: now,
            applied_revision,
        });
        drop(nodes);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Restores a registration persisted before a restart (no change notification).
    pub fn restore(&self, observation: NodeObservation) {
        let mut nodes = self.lock();
        let node = observation.registration.node.clone();
        Self::entry(&mut nodes, &node).observation = Some(observation);
    }

    /// Records that `node` was heard from; with `applied`, the revision it applied.
    /// Returns false when the node never registered.
    pub fn seen(&self, node: &str, now: DateTime<Utc>, applied: Option<u64>) -> bool {
        let mut nodes = self.lock();
        let Some(observation) = nodes.get_mut(node).and_then(|e| e.observation.as_mut()) else {
            return false;
        };
        observation.last_seen = now;
        if let Some(applied) = applied {
            observation.applied_revision = applied;
        }
        true
    }

    /// Tells the controller something changed (a report was applied).
    pub fn notify_changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Registrations and heartbeats of every registered node.
    pub fn observations(&self) -> BTreeMap<String, NodeObservation> {
        self.lock()
            .iter()
            .filter_map(|(name, e)| Some((name.clone(), e.observation.clone()?)))
            .collect()
    }

    /// A receiver of `node`'s assignment, for long-polls.
    pub fn subscribe(&self, node: &str) -> watch::Receiver<Arc<Assignment>> {
        Self::entry(&mut self.lock(), node).assignment.subscribe()
    }

    /// Sets every node's desired tasks. A node whose content is unchanged
    /// keeps its revision and is not woken; a changed one gets a revision
    /// larger than any before (wall-clock microseconds, at least previous + 1,
    /// so revisions keep growing across operator restarts).
    pub fn set_assignments(
        &self,
        mut tasks: BTreeMap<String, Vec<TaskAssignment>>,
        now: DateTime<Utc>,
    ) {
        let mut nodes = self.lock();
        let names: std::collections::BTreeSet<String> =
            nodes.keys().cloned().chain(tasks.keys().cloned()).collect();
        for node in names {
            let node_tasks = tasks.remove(&node).unwrap_or_default();
            let hash = content_hash(&node_tasks);
            let entry = Self::entry(&mut nodes, &node);
            if entry.content_hash == hash {
                continue;
            }
            entry.content_hash = hash;
            let previous = entry.assignment.borrow().revision;
            let revision = (now.timestamp_micros().max(0) as u64).max(previous + 1);
            entry.assignment.send_replace(Arc::new(Assignment {
                node: node.clone(),
                revision,
                tasks: node_tasks,
            }));
        }
    }

    /// Receiver that changes whenever an agent registers or reports.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

fn content_hash(tasks: &[TaskAssignment]) -> String {
    let bytes = serde_json::to_vec(tasks).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_crds::task_run::Task;
    use veil_crds::wire::RunRef;

    fn task(uid: &str) -> TaskAssignment {
        let task: Task = serde_json::from_value(serde_json::json!({
            "executor": "shell", "shell": {"command": ["true"]}
        }))
        .unwrap();
        TaskAssignment {
            run: RunRef {
                namespace: "default".into(),
                name: uid.into(),
                uid: uid.into(),
            },
            task,
            env: Vec::new(),
            work_dir: None,
            cancel: false,
        }
    }

    fn registration(node: &str) -> RegisterRequest {
        serde_json::from_value(serde_json::json!({
            "node": node, "os": "linux", "arch": "x86_64", "agentVersion": "t"
        }))
        .unwrap()
    }

    #[test]
    fn a_registered_node_gets_its_tasks_and_an_unchanged_one_keeps_its_revision() {
        let agents = Agents::default();
        let now = Utc::now();
        agents.register(registration("a"), now);
        let rx = agents.subscribe("a");
        agents.set_assignments(BTreeMap::from([("a".to_owned(), vec![task("r1")])]), now);
        let first = rx.borrow().clone();
        assert_eq!(first.tasks.len(), 1, "tasks of a registered node are kept");
        assert!(first.revision > 0);
        agents.set_assignments(BTreeMap::from([("a".to_owned(), vec![task("r1")])]), now);
        assert_eq!(
            rx.borrow().revision,
            first.revision,
            "unchanged content, same revision"
        );
        agents.set_assignments(BTreeMap::new(), now);
        assert!(rx.borrow().revision > first.revision);
        assert!(rx.borrow().tasks.is_empty());
    }
}
