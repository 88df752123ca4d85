//! Live state of node agents as the operator sees it: registrations,
//! heartbeats, the current [`Assignment`] of every node, and the wake-ups
//! that answer assignment long-polls.
//!
//! Owns no policy: what a node should run is decided by `plan`; this module
//! only stores each node's latest assignment, bumps its revision when (and
//! only when) the content changes (compared in place), and wakes that node's long-poll. An
//! unchanged node costs nothing.
//!
//! Every change is also kept as a delta (see `veil_crds::wire::diff`), a
//! bounded chain per node, so an agent a few revisions behind gets only
//! what changed ([`Agents::answer`]); one further behind, or asking from
//! revision 0, gets the whole state.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use veil_crds::wire::{
    Assignment, AssignmentDelta, JournalFault, RegisterRequest, ServerAssignment, ServerReport,
    StrategyGroup, StrategyReport, TaskAssignment, Users,
};

/// Deltas kept per node, newest last.
const KEPT_DELTAS: usize = 64;
/// Users named by the deltas kept per node, at most. A delta naming more
/// (a server's first assignment, a mass expiry) is not kept: agents behind
/// it get the whole state, which is then about as small.
const KEPT_DELTA_USERS: usize = 4096;

/// What an agent polling from some revision is sent.
#[derive(Clone, Debug, PartialEq)]
pub enum AssignmentAnswer {
    /// The whole current assignment.
    Full(Arc<Assignment>),
    /// The deltas from the agent's revision to the current one, in order.
    Deltas(Vec<Arc<AssignmentDelta>>),
}

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

impl NodeObservation {
    /// A node known from its registration, registered at `registered_at`
    /// and last heard from at `last_seen`: nothing reported or applied yet.
    pub fn registered(
        registration: RegisterRequest,
        registered_at: DateTime<Utc>,
        last_seen: DateTime<Utc>,
    ) -> NodeObservation {
        NodeObservation {
            registration,
            registered_at,
            last_seen,
            applied_revision: 0,
            servers: Vec::new(),
            servers_reported_at: None,
            servers_seq: 0,
            strategies: Vec::new(),
            journal_fault: None,
        }
    }
}

/// A node's whole desired state, before its revision is assigned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeAssignment {
    pub tasks: Vec<TaskAssignment>,
    pub servers: Vec<ServerAssignment>,
    pub strategies: Vec<StrategyGroup>,
}

/// Users by server key (`namespace/name`, as traffic counters name
/// servers): the very sets published (shared, not copied).
type ServerUsers = BTreeMap<String, Users>;

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
            .map(|s| (s.server.to_string(), s.vless.users.clone()))
            .collect();
        let ever = Arc::make_mut(&mut self.servers_ever);
        ever.extend(next.keys().cloned());
        self.previous = std::mem::replace(&mut self.current, Arc::new(next));
    }
}

struct NodeEntry {
    observation: Option<NodeObservation>,
    assignment: watch::Sender<Arc<Assignment>>,
    scope: ReportScope,
    /// The latest changes, each from the revision before it (a chain
    /// ending at the current revision, or empty).
    deltas: VecDeque<Arc<AssignmentDelta>>,
    /// Users named by `deltas`.
    delta_users: usize,
}

impl NodeEntry {
    /// Publishes `next`, keeping the change from the current assignment.
    fn publish(&mut self, next: Assignment) {
        let delta = veil_crds::wire::diff(&self.assignment.borrow(), &next);
        let users = delta.user_changes();
        if users > KEPT_DELTA_USERS {
            self.deltas.clear();
            self.delta_users = 0;
        } else {
            self.deltas.push_back(Arc::new(delta));
            self.delta_users += users;
            while self.deltas.len() > KEPT_DELTAS || self.delta_users > KEPT_DELTA_USERS {
                if let Some(oldest) = self.deltas.pop_front() {
                    self.delta_users -= oldest.user_changes();
                }
            }
        }
        self.assignment.send_replace(Arc::new(next));
    }

    /// See [`Agents::answer`].
    fn answer(&self, after: u64) -> AssignmentAnswer {
        let current = self.assignment.borrow().clone();
        if after != 0
            && let Some(start) = self.deltas.iter().position(|d| d.from == after)
            && self
                .deltas
                .back()
                .is_some_and(|d| d.revision == current.revision)
        {
            return AssignmentAnswer::Deltas(self.deltas.range(start..).cloned().collect());
        }
        AssignmentAnswer::Full(current)
    }
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
            scope: ReportScope::default(),
            deltas: VecDeque::new(),
            delta_users: 0,
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

    /// What an agent that applied revision `after` of `node`'s assignment
    /// is sent: the deltas from there to the current revision when they
    /// are all kept, else (also for `after` 0, an agent with nothing) the
    /// whole assignment.
    pub fn answer(&self, node: &str, after: u64) -> AssignmentAnswer {
        Self::entry(&mut self.lock(), node).answer(after)
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
            let entry = Self::entry(&mut nodes, &node);
            // Every node gets a first revision, even an empty one: an agent
            // stops what it no longer runs once it has an assignment.
            if entry.assignment.borrow().revision != 0
                && same_content(&entry.assignment.borrow(), &content)
            {
                continue;
            }
            entry.scope.advance(&content);
            let previous = entry.assignment.borrow().revision;
            let revision = (now.timestamp_micros().max(0) as u64).max(previous + 1);
            entry.publish(Assignment {
                node: node.clone(),
                revision,
                tasks: content.tasks,
                servers: content.servers,
                strategies: content.strategies,
            });
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
            let mut server = server.clone();
            let users = &mut server.vless.users;
            let (upserted, removed) = users.changes_to(&keep.vless.users);
            // Users `keep` lacks, or has with another id or flow, go;
            // users only `keep` has are not added.
            let gone: Vec<String> = (removed.into_iter())
                .chain(upserted.into_iter().map(|u| u.email))
                .filter(|email| users.contains(email))
                .collect();
            for email in &gone {
                users.remove(email);
            }
            server.vless.users_hash = users.hash();
            Some(server)
        })
        .collect();
    NodeAssignment {
        tasks: current.tasks.clone(),
        servers,
        strategies: current.strategies.clone(),
    }
}

/// Whether `current` already holds exactly `content` (secret values
/// included, so a rotated key or id is a change). Compares in place: no
/// serialising of 100,000 users per pass.
fn same_content(current: &Assignment, content: &NodeAssignment) -> bool {
    current.tasks == content.tasks
        && current.servers == content.servers
        && current.strategies == content.strategies
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

    /// A node whose only server has users `0..n` (emails `u00000`…).
    fn users_of(node: &str, n: usize) -> BTreeMap<String, NodeAssignment> {
        use veil_crds::wire::{SecretValue, ServerId, VlessAssignment, VlessUser};
        let users: Vec<VlessUser> = (0..n)
            .map(|i| VlessUser {
                email: format!("u{i:05}"),
                id: SecretValue(format!("id-{i}")),
                flow: Default::default(),
            })
            .collect();
        let server = ServerAssignment {
            server: ServerId {
                namespace: "default".into(),
                name: "edge".into(),
            },
            listen: "0.0.0.0".into(),
            port: 443,
            allow_cidrs: Vec::new(),
            vless: VlessAssignment {
                private_key: SecretValue("k".into()),
                dest: "example.com:443".into(),
                server_names: vec!["example.com".into()],
                short_ids: Vec::new(),
                policy: None,
                users_hash: veil_crds::wire::users_hash(&users),
                users: users.into(),
            },
        };
        BTreeMap::from([(
            node.to_owned(),
            NodeAssignment {
                servers: vec![server],
                ..NodeAssignment::default()
            },
        )])
    }

    fn deltas(answer: AssignmentAnswer) -> Vec<Arc<AssignmentDelta>> {
        match answer {
            AssignmentAnswer::Deltas(deltas) => deltas,
            AssignmentAnswer::Full(full) => panic!("the whole state, revision {}", full.revision),
        }
    }

    #[test]
    fn an_agent_a_few_revisions_behind_gets_the_chain_of_deltas() {
        let agents = Agents::default();
        let now = Utc::now();
        agents.set_assignments(users_of("a", 10), now);
        let r1 = agents.subscribe("a").borrow().revision;
        agents.set_assignments(users_of("a", 11), now);
        let r2 = agents.subscribe("a").borrow().revision;
        agents.set_assignments(users_of("a", 12), now);
        let r3 = agents.subscribe("a").borrow().revision;

        let chain = deltas(agents.answer("a", r1));
        assert_eq!(
            chain
                .iter()
                .map(|d| (d.from, d.revision))
                .collect::<Vec<_>>(),
            vec![(r1, r2), (r2, r3)]
        );
        assert_eq!(chain[0].servers[0].upserted_users.len(), 1, "one user each");
        let chain = deltas(agents.answer("a", r2));
        assert_eq!(chain.len(), 1);
        // Nothing applied yet, or a revision this operator never published:
        // the whole state.
        for after in [0, r3 + 1, r1 - 1] {
            assert!(
                matches!(agents.answer("a", after), AssignmentAnswer::Full(ref full) if full.revision == r3),
                "after {after}"
            );
        }
    }

    #[test]
    fn a_delta_too_large_to_keep_breaks_the_chain_and_old_ones_are_dropped() {
        let agents = Agents::default();
        let now = Utc::now();
        agents.set_assignments(users_of("a", 1), now);
        let before = agents.subscribe("a").borrow().revision;
        agents.set_assignments(users_of("a", 2 + KEPT_DELTA_USERS), now);
        assert!(
            matches!(agents.answer("a", before), AssignmentAnswer::Full(_)),
            "behind a delta of more than {KEPT_DELTA_USERS} users"
        );
        let big = agents.subscribe("a").borrow().revision;
        let mut first = big;
        for n in 0..=KEPT_DELTAS {
            agents.set_assignments(users_of("a", 3 + KEPT_DELTA_USERS + n), now);
            if n == 0 {
                first = agents.subscribe("a").borrow().revision;
            }
        }
        assert!(
            matches!(agents.answer("a", big), AssignmentAnswer::Full(_)),
            "more than {KEPT_DELTAS} revisions behind"
        );
        assert_eq!(deltas(agents.answer("a", first)).len(), KEPT_DELTAS);
    }
}
