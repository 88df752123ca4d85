//! Live state of node agents as the operator sees it: registrations,
//! heartbeats, the current [`Assignment`] of every node, and the wake-ups
//! that answer assignment long-polls.
//!
//! Owns no policy: what a node should run is decided by `plan`; this module
//! only stores each node's latest assignment, bumps its revision when (and
//! only when) the content changes, and wakes that node's long-poll. An
//! unchanged node costs nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use veil_crds::wire::{
    Assignment, JournalFault, RegisterRequest, ServerAssignment, ServerReport, StrategyGroup,
    StrategyReport, TaskAssignment,
};

/// What the operator knows about one node's agent.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeObservation {
    pub registration: RegisterRequest,
    pub registered_at: DateTime<Utc>,
    /// Last register, report or long-poll.
    pub last_seen: DateTime<Utc>,
    /// Revision of the assignment the agent last said it applied.
    pub applied_revision: u64,
    /// Every server the agent runs, from its latest report (a state: the
    /// whole list is replaced by each report). Empty until the first report.
    pub servers: Vec<ServerReport>,
    /// When `servers` last changed (not when it was last repeated: every
    /// heartbeat carries the same states, and a status that changed with
    /// each heartbeat would be rewritten for every key every few seconds).
    pub servers_reported_at: Option<DateTime<Utc>>,
    /// The report seq `servers` came from: an older, replayed report never
    /// replaces a newer state (reset by a registration, whose agent may
    /// have started numbering again).
    pub servers_seq: u64,
    /// Every Strategy member the agent was given, from its latest report (a
    /// state, replaced whole like `servers`, guarded by the same seq).
    pub strategies: Vec<StrategyReport>,
    /// Why the agent's journal cannot be written, from its latest report
    /// (`None`: writable, or not reported yet).
    pub journal_fault: Option<JournalFault>,
}

/// A node's whole desired state, before its revision is assigned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeAssignment {
    pub tasks: Vec<TaskAssignment>,
    pub servers: Vec<ServerAssignment>,
    pub strategies: Vec<StrategyGroup>,
}

/// Users by server key (`namespace/name`, as traffic counters name servers).
type ServerUsers = BTreeMap<String, BTreeSet<String>>;

/// What one node may report traffic for: the servers and users of its
/// current and previous assignment, and every server it was given since
/// this operator started; and the Strategies it runs now (whose probe
/// rounds the store keeps). Only ever built from what the operator itself
/// published to the node, never from what the node says.
#[derive(Clone, Debug, Default)]
pub struct ReportScope {
    current: Arc<ServerUsers>,
    previous: Arc<ServerUsers>,
    servers_ever: Arc<BTreeSet<String>>,
    /// (namespace, name) of every Strategy member assigned now.
    strategies: Arc<BTreeSet<(String, String)>>,
}

impl ReportScope {
    /// Whether the server (`namespace/name`) was assigned to the node.
    pub fn allows_server(&self, server: &str) -> bool {
        self.servers_ever.contains(server)
    }

    /// Whether the user was in the node's current or previous assignment of `server`.
    pub fn allows_user(&self, server: &str, email: &str) -> bool {
        [&self.current, &self.previous]
            .iter()
            .any(|users| users.get(server).is_some_and(|e| e.contains(email)))
    }

    /// Whether Strategy `namespace`/`name` is in the node's current assignment.
    pub fn allows_strategy(&self, namespace: &str, name: &str) -> bool {
        self.strategies
            .contains(&(namespace.to_owned(), name.to_owned()))
    }

    fn advance(&mut self, content: &NodeAssignment) {
        self.strategies = Arc::new(
            content
                .strategies
                .iter()
                .flat_map(|g| &g.members)
                .map(|m| (m.strategy.namespace.clone(), m.strategy.name.clone()))
                .collect(),
        );
        let next: ServerUsers = content
            .servers
            .iter()
            .map(|s| {
                let emails = s.vless.users.iter().map(|u| u.email.clone()).collect();
                (s.server.to_string(), emails)
            })
            .collect();
        let ever = Arc::make_mut(&mut self.servers_ever);
        ever.extend(next.keys().cloned());
        self.previous = std::mem::replace(&mut self.current, Arc::new(next));
    }
}

struct NodeEntry {
    observation: Option<NodeObservation>,
    assignment: watch::Sender<Arc<Assignment>>,
    content_hash: String,
    scope: ReportScope,
}

/// Every node's agent state. Cheap to share (`Arc<Agents>`).
pub struct Agents {
    nodes: Mutex<HashMap<String, NodeEntry>>,
    /// Bumped on every registration and report, so the controller replans.
    changes: watch::Sender<u64>,
    /// Whether the controller published assignments at least once (until
    /// then no node's [`ReportScope`] is known).
    published: AtomicBool,
}

impl Default for Agents {
    fn default() -> Self {
        Agents {
            nodes: Mutex::new(HashMap::new()),
            changes: watch::channel(0).0,
            published: AtomicBool::new(false),
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
            scope: ReportScope::default(),
        })
    }

    /// What `node` may report traffic for; `None` until the controller
    /// published assignments for the first time since the operator started.
    pub fn report_scope(&self, node: &str) -> Option<ReportScope> {
        if !self.published.load(Ordering::Acquire) {
            return None;
        }
        Some(
            self.lock()
                .get(node)
                .map(|e| e.scope.clone())
                .unwrap_or_default(),
        )
    }

    /// Records a registration (creates or updates the node).
    pub fn register(&self, request: RegisterRequest, now: DateTime<Utc>) {
        let mut nodes = self.lock();
        let entry = Self::entry(&mut nodes, &request.node);
        let previous = entry.observation.take();
        let registered_at = previous.as_ref().map_or(now, |o| o.registered_at);
        let applied_revision = previous.as_ref().map_or(0, |o| o.applied_revision);
        let (servers, servers_reported_at, strategies) = previous
            .map(|o| (o.servers, o.servers_reported_at, o.strategies))
            .unwrap_or_default();
        entry.observation = Some(NodeObservation {
            registration: request,
            registered_at,
            last_seen: now,
            applied_revision,
            servers,
            servers_reported_at,
            servers_seq: 0,
            strategies,
            journal_fault: None,
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

    /// Replaces `node`'s server states with those of report `seq`, unless a
    /// newer report's states are already held (a replayed journal entry).
    /// Returns whether they were taken; false too for an unknown node.
    pub fn set_servers(
        &self,
        node: &str,
        seq: u64,
        servers: Vec<ServerReport>,
        now: DateTime<Utc>,
    ) -> bool {
        let mut nodes = self.lock();
        let Some(observation) = nodes.get_mut(node).and_then(|e| e.observation.as_mut()) else {
            return false;
        };
        if seq < observation.servers_seq {
            return false;
        }
        observation.servers_seq = seq;
        if observation.servers != servers || observation.servers_reported_at.is_none() {
            observation.servers = servers;
            observation.servers_reported_at = Some(now);
        }
        true
    }

    /// Replaces `node`'s Strategy states with those of report `seq`, unless
    /// a newer report's states are already held. Call before
    /// [`Agents::set_servers`] for the same report (which advances the seq).
    pub fn set_strategies(&self, node: &str, seq: u64, strategies: Vec<StrategyReport>) -> bool {
        let mut nodes = self.lock();
        let Some(observation) = nodes.get_mut(node).and_then(|e| e.observation.as_mut()) else {
            return false;
        };
        if seq < observation.servers_seq {
            return false;
        }
        observation.strategies = strategies;
        true
    }

    /// Records whether `node`'s journal is writable, as its latest report
    /// says (every report and heartbeat carries it).
    pub fn set_journal_fault(&self, node: &str, fault: Option<JournalFault>) {
        let mut nodes = self.lock();
        if let Some(observation) = nodes.get_mut(node).and_then(|e| e.observation.as_mut()) {
            observation.journal_fault = fault;
        }
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

    /// Sets every node's desired state (tasks and servers); a node absent
    /// from `desired` gets an empty one. A node whose content is unchanged
    /// keeps its revision and is not woken; a changed one gets a revision
    /// larger than any before (wall-clock microseconds, at least previous + 1,
    /// so revisions keep growing across operator restarts).
    pub fn set_assignments(
        &self,
        mut desired: BTreeMap<String, NodeAssignment>,
        now: DateTime<Utc>,
    ) {
        let mut nodes = self.lock();
        let names: std::collections::BTreeSet<String> = nodes
            .keys()
            .cloned()
            .chain(desired.keys().cloned())
            .collect();
        for node in names {
            let content = desired.remove(&node).unwrap_or_default();
            let hash = content_hash(&content);
            let entry = Self::entry(&mut nodes, &node);
            if entry.content_hash == hash {
                continue;
            }
            entry.content_hash = hash;
            entry.scope.advance(&content);
            let previous = entry.assignment.borrow().revision;
            let revision = (now.timestamp_micros().max(0) as u64).max(previous + 1);
            entry.assignment.send_replace(Arc::new(Assignment {
                node: node.clone(),
                revision,
                tasks: content.tasks,
                servers: content.servers,
                strategies: content.strategies,
            }));
        }
        self.published.store(true, Ordering::Release);
    }

    /// Publishes only what `desired` takes away from what each node has
    /// now: users (and whole servers) missing from `desired` are removed;
    /// nothing is added or changed (tasks and Strategies stay as they are).
    /// For a pass whose writes failed: revocations (disabled, expired,
    /// over-limit or deleted keys) must reach the nodes even then, while
    /// anything new waits until it is stored.
    pub fn set_revocations(&self, desired: &BTreeMap<String, NodeAssignment>, now: DateTime<Utc>) {
        let restricted: BTreeMap<String, NodeAssignment> = self
            .lock()
            .iter()
            .map(|(name, entry)| {
                let current = entry.assignment.borrow().clone();
                (name.clone(), revoked_only(&current, desired.get(name)))
            })
            .collect();
        self.set_assignments(restricted, now);
    }

    /// Receiver that changes whenever an agent registers or reports.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// `current` minus every server and user `wanted` does not have.
fn revoked_only(current: &Assignment, wanted: Option<&NodeAssignment>) -> NodeAssignment {
    let servers = current
        .servers
        .iter()
        .filter_map(|server| {
            let keep = wanted?.servers.iter().find(|w| w.server == server.server)?;
            let users: Vec<_> = server
                .vless
                .users
                .iter()
                .filter(|u| keep.vless.users.contains(u))
                .cloned()
                .collect();
            let mut server = server.clone();
            if users.len() != server.vless.users.len() {
                server.vless.users_hash = crate::plan::vless::users_hash(&users);
                server.vless.users = users;
            }
            Some(server)
        })
        .collect();
    NodeAssignment {
        tasks: current.tasks.clone(),
        servers,
        strategies: current.strategies.clone(),
    }
}

/// SHA-256 over the serialised content (secret values included, so a
/// rotated key or id is a change).
fn content_hash(content: &NodeAssignment) -> String {
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(&content.tasks).unwrap_or_default());
    hasher.update(b"\0");
    hasher.update(serde_json::to_vec(&content.servers).unwrap_or_default());
    hasher.update(b"\0");
    hasher.update(serde_json::to_vec(&content.strategies).unwrap_or_default());
    hex::encode(hasher.finalize())
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
            run_as_root: false,
        }
    }

    fn tasks_of(node: &str, tasks: Vec<TaskAssignment>) -> BTreeMap<String, NodeAssignment> {
        BTreeMap::from([(
            node.to_owned(),
            NodeAssignment {
                tasks,
                ..NodeAssignment::default()
            },
        )])
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
        agents.set_assignments(tasks_of("a", vec![task("r1")]), now);
        let first = rx.borrow().clone();
        assert_eq!(first.tasks.len(), 1, "tasks of a registered node are kept");
        assert!(first.revision > 0);
        agents.set_assignments(tasks_of("a", vec![task("r1")]), now);
        assert_eq!(
            rx.borrow().revision,
            first.revision,
            "unchanged content, same revision"
        );
        agents.set_assignments(BTreeMap::new(), now);
        assert!(rx.borrow().revision > first.revision);
        assert!(rx.borrow().tasks.is_empty());
    }

    #[test]
    fn server_states_are_replaced_by_newer_reports_only() {
        use veil_crds::wire::{ServerId, ServerReport};
        let agents = Agents::default();
        let now = Utc::now();
        let report = |users| ServerReport {
            server: ServerId {
                namespace: "default".into(),
                name: "edge".into(),
            },
            users,
            ..ServerReport::default()
        };
        assert!(
            !agents.set_servers("a", 1, vec![report(1)], now),
            "unknown node"
        );
        agents.register(registration("a"), now);
        assert!(agents.set_servers("a", 5, vec![report(5)], now));
        assert!(
            !agents.set_servers("a", 4, vec![report(4)], now),
            "a replayed older report"
        );
        assert_eq!(agents.observations()["a"].servers[0].users, 5);
        assert!(
            agents.set_servers("a", 6, Vec::new(), now),
            "the whole list is replaced"
        );
        assert!(agents.observations()["a"].servers.is_empty());
        // A re-registered agent may number its reports from scratch.
        agents.register(registration("a"), now);
        assert!(agents.set_servers("a", 1, vec![report(1)], now));
    }

    #[test]
    fn repeated_server_states_keep_their_time() {
        use veil_crds::wire::{ServerId, ServerReport};
        let agents = Agents::default();
        let t0 = Utc::now();
        let later = t0 + chrono::Duration::seconds(10);
        let report = |users| ServerReport {
            server: ServerId::default(),
            users,
            ..ServerReport::default()
        };
        agents.register(registration("a"), t0);
        agents.set_servers("a", 1, vec![report(1)], t0);
        // A heartbeat repeats the same states: statuses must not change.
        agents.set_servers("a", 2, vec![report(1)], later);
        assert_eq!(agents.observations()["a"].servers_reported_at, Some(t0));
        agents.set_servers("a", 3, vec![report(2)], later);
        assert_eq!(agents.observations()["a"].servers_reported_at, Some(later));
    }
}
