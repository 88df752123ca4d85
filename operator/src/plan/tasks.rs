//! Task placement and the statuses of TaskRuns, Runners and VeilNodes.
//!
//! Pure: inputs are the world, the agents' observations and the run book;
//! outputs are run-state changes (placements, lost runs, refusals), each
//! node's task assignments and statuses. A run is placed on a Ready,
//! uncordoned node that some Runner in the run's namespace selects, whose
//! Runner allows the run's executor and is picked by the run's
//! `runnerSelector`, that has the executor's tool, and that has free
//! capacity (the largest `maxParallelTasks` of the Runners selecting it,
//! counted over every active run on the node). Least-loaded node first,
//! ties by name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};
use veil_crds::runner::{Executor, Runner};
use veil_crds::task_run::TaskRun;
use veil_crds::veil_node::VeilNode;
use veil_crds::wire::{ResolvedEnv, RunRef, SecretValue, TaskAssignment};

use crate::agents::NodeObservation;
use crate::records::{ObjectRef, RunStateRecord, RunStates};
use crate::runs::is_finished;
use crate::world::{World, WorldObject, timestamp};

pub mod settled;

/// What the task plan needs besides the world.
pub struct TaskInputs<'a> {
    pub world: &'a World,
    pub nodes: &'a BTreeMap<String, NodeObservation>,
    pub runs: &'a RunStates,
    pub now: DateTime<Utc>,
    /// A node silent longer than this is NotReady (3 heartbeat intervals).
    pub node_timeout: chrono::Duration,
}

/// The task plan's decisions.
#[derive(Debug, Default)]
pub struct TaskPlan {
    /// Run states to write (placements, lost runs, refusals).
    pub run_changes: Vec<RunStateRecord>,
    /// Run states whose TaskRun is gone.
    pub stale_runs: Vec<String>,
    /// Every node's task assignments (nodes without tasks included when registered).
    pub assignments: BTreeMap<String, Vec<TaskAssignment>>,
    /// Why each still-pending run waits (by uid).
    pub pending_reasons: BTreeMap<String, String>,
}

/// A node as placement sees it.
#[derive(Debug)]
pub struct NodeView<'a> {
    pub name: &'a str,
    pub labels: Labels,
    pub ready: bool,
    pub cordoned: bool,
    pub observation: Option<&'a NodeObservation>,
}

/// Every known node: registered agents and declared VeilNodes. A node's
/// labels are its VeilNode's desired labels only (`metadata.labels`, then
/// `spec.labels`, which win): the labels an agent registers with are shown
/// in status and never matched, so a node cannot claim its way into other
/// servers' keys or other Runners' tasks. An agent without a VeilNode has
/// no labels.
/// `labels`, when given, keeps each VeilNode's merged labels from pass to
/// pass while its object is the same allocation.
pub fn node_views<'a>(
    inputs: &TaskInputs<'a>,
    mut labels: Option<&mut NodeLabels>,
) -> BTreeMap<&'a str, NodeView<'a>> {
    // VeilNodes come in name order (cluster-scoped: one namespace), so the
    // map is bulk-built; the few registered agents are merged in after.
    let mut views: BTreeMap<&str, NodeView<'_>> = inputs
        .world
        .of_kind(Kind::VeilNode)
        .filter_map(|(key, object)| {
            let Object::VeilNode(node) = &*object.object else {
                return None;
            };
            let labels = match labels.as_deref_mut() {
                Some(kept) => kept.of(&key.name, &object.object, node),
                None => Arc::new(merged_labels(node)),
            };
            let view = NodeView {
                name: key.name.as_str(),
                labels,
                ready: false,
                cordoned: node.spec.cordoned,
                observation: None,
            };
            Some((key.name.as_str(), view))
        })
        .collect();
    for (name, observation) in inputs.nodes {
        let ready = inputs.now - observation.last_seen <= inputs.node_timeout;
        let view = views.entry(name).or_insert_with(|| NodeView {
            name,
            labels: Arc::default(),
            ready,
            cordoned: false,
            observation: None,
        });
        view.ready = ready;
        view.observation = Some(observation);
    }
    views
}

/// A VeilNode's labels: `metadata.labels`, then `spec.labels`, which win.
fn merged_labels(node: &VeilNode) -> BTreeMap<String, String> {
    let mut labels = node.metadata.labels.clone().unwrap_or_default();
    labels.extend(
        node.spec
            .labels
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned())),
    );
    labels
}

/// Each VeilNode's merged labels with the object they were merged from.
#[derive(Default)]
pub struct NodeLabels(HashMap<String, (Arc<Object>, Labels)>);

/// A node's labels, shared.
type Labels = Arc<BTreeMap<String, String>>;

impl NodeLabels {
    /// The labels of `node` (the object `object`, named `name`): the kept
    /// ones while the object is the same allocation.
    fn of(
        &mut self,
        name: &str,
        object: &Arc<Object>,
        node: &VeilNode,
    ) -> Arc<BTreeMap<String, String>> {
        if let Some((kept, labels)) = self.0.get(name)
            && Arc::ptr_eq(kept, object)
        {
            return Arc::clone(labels);
        }
        let labels = Arc::new(merged_labels(node));
        self.0
            .insert(name.to_owned(), (Arc::clone(object), Arc::clone(&labels)));
        labels
    }

    /// Forgets a VeilNode that left the world.
    pub fn forget(&mut self, name: &str) {
        self.0.remove(name);
    }
}

/// The tool an executor needs on the node.
pub fn executor_tools(executor: Executor) -> &'static [&'static str] {
    match executor {
        Executor::Shell => &["sh"],
        Executor::Ansible => &["ansible-playbook"],
        Executor::Terraform => &["tofu", "terraform"],
    }
}

/// Whether the node's agent reported a tool `executor` needs.
pub fn has_tool(node: &NodeView<'_>, executor: Executor) -> bool {
    node.observation.is_some_and(|o| {
        o.registration
            .capabilities
            .iter()
            .any(|c| executor_tools(executor).contains(&c.name.as_str()))
    })
}

fn runner_labels(runner: &Runner) -> BTreeMap<String, String> {
    runner
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// Runners in `namespace` that `run` may use.
fn runners_for<'w>(world: &'w World, run: &TaskRun, namespace: &str) -> Vec<&'w Runner> {
    world
        .of_kind(Kind::Runner)
        .filter(|(key, _)| key.namespace == namespace)
        .filter_map(|(_, o)| match &*o.object {
            Object::Runner(r) => Some(&**r),
            _ => None,
        })
        .filter(|r| {
            r.spec.executors.contains(&run.spec.task.executor)
                && run
                    .spec
                    .runner_selector
                    .as_ref()
                    .is_none_or(|s| s.matches(&runner_labels(r), &r.spec.tags))
        })
        .collect()
}

/// The Runner a run placed on `node` uses: the first, in name order, of the
/// Runners the run may use ([`runners_for`]) whose `nodeSelector` picks the
/// node. Its `workDir`, `env` and `runAsRoot` apply to the run. `None` when
/// no such Runner is left (the run then gets nothing from any Runner, and
/// never root).
pub fn runner_on<'w>(
    world: &'w World,
    views: &BTreeMap<&str, NodeView<'_>>,
    namespace: &str,
    run: &TaskRun,
    node: &str,
) -> Option<&'w Runner> {
    let view = views.get(node)?;
    runners_for(world, run, namespace)
        .into_iter()
        .find(|r| r.spec.node_selector.matches(&view.labels))
}

/// The TaskRuns a pass plans and the run states that may be unfinished:
/// every one ([`Scope::full`]), or, for the incremental planner, those
/// not settled (see [`settled`]) and the stale ones.
pub struct Scope<'a> {
    /// The TaskRuns to plan with their uids, oldest first.
    pub runs: Vec<(&'a ObjectKey, &'a str, &'a TaskRun)>,
    /// Uids of the run states that may be unfinished (those of `runs` and
    /// `stale`); `None`: every run state.
    pub open: Option<Vec<String>>,
    /// Run states whose TaskRun is gone.
    pub stale: Vec<String>,
}

impl<'a> Scope<'a> {
    /// Every TaskRun of the world and every run state.
    pub fn full(world: &'a World, runs: &RunStates) -> Scope<'a> {
        let tasks = task_runs(world);
        let live: std::collections::HashSet<&str> = tasks.iter().map(|(_, uid, _)| *uid).collect();
        let stale = runs
            .keys()
            .filter(|uid| !live.contains(uid.as_str()))
            .cloned()
            .collect();
        Scope {
            runs: tasks,
            open: None,
            stale,
        }
    }

    /// The run states in scope, read from `runs`.
    pub fn states<'r>(
        &'r self,
        runs: &'r RunStates,
    ) -> Box<dyn Iterator<Item = &'r RunStateRecord> + 'r> {
        match &self.open {
            None => Box::new(runs.values().map(|state| &**state)),
            Some(uids) => Box::new(
                uids.iter()
                    .filter_map(|uid| runs.get(uid.as_str()))
                    .map(|state| &**state),
            ),
        }
    }
}

/// Plans task placement and assignments of the TaskRuns in `scope`.
pub fn plan_tasks(
    inputs: &TaskInputs<'_>,
    views: &BTreeMap<&str, NodeView<'_>>,
    scope: &Scope<'_>,
) -> TaskPlan {
    let mut active: BTreeMap<String, u32> = BTreeMap::new();
    for state in scope.states(inputs.runs) {
        if let Some(node) = &state.node
            && !is_finished(&state.phase)
        {
            *active.entry(node.clone()).or_default() += 1;
        }
    }
    let plan = TaskPlan {
        stale_runs: scope.stale.clone(),
        ..TaskPlan::default()
    };
    let mut planner = RunPlanner {
        inputs,
        views,
        active,
        plan,
    };
    for &(key, uid, run) in &scope.runs {
        planner.run(key, uid, run);
    }
    let mut plan = planner.plan;
    for name in inputs.nodes.keys() {
        plan.assignments.entry(name.clone()).or_default();
    }
    plan
}

/// Plans runs one at a time: each placement counts for the next.
struct RunPlanner<'a, 'v> {
    inputs: &'a TaskInputs<'a>,
    views: &'a BTreeMap<&'v str, NodeView<'v>>,
    /// Unfinished runs per node.
    active: BTreeMap<String, u32>,
    plan: TaskPlan,
}

impl RunPlanner<'_, '_> {
    /// One run: skipped when finished, assigned again (or lost with its
    /// node) when placed, else cancelled, placed, kept waiting or refused.
    fn run(&mut self, key: &ObjectKey, uid: &str, run: &TaskRun) {
        let inputs = self.inputs;
        let state = inputs.runs.get(uid).map(|s| &**s);
        if state.is_some_and(|s| is_finished(&s.phase)) {
            return;
        }
        if let Some(state) = state
            && let Some(node) = &state.node
        {
            self.placed(state, node, (key, uid, run));
            return;
        }
        let record = || {
            state
                .cloned()
                .unwrap_or_else(|| new_state(key, uid, inputs.now))
        };
        if run.spec.cancel {
            let message = "cancelled before it was placed";
            let change = finish(&record(), "Cancelled", "Cancelled", message, inputs.now);
            self.plan.run_changes.push(change);
            return;
        }
        match place(inputs, self.views, &self.active, key, run) {
            Placement::Node(node) => {
                *self.active.entry(node.clone()).or_default() += 1;
                let mut record = record();
                record.node = Some(node.clone());
                record.placed_at = Some(inputs.now);
                record.updated_at = inputs.now;
                self.plan.run_changes.push(record);
                self.assign(&node, (key, uid, run));
            }
            Placement::Wait(reason) => {
                self.plan.pending_reasons.insert(uid.to_owned(), reason);
            }
            Placement::Refuse(reason, message) => {
                let change = finish(&record(), "Failed", &reason, &message, inputs.now);
                self.plan.run_changes.push(change);
            }
        }
    }

    /// A placed run: assigned to its node again, or failed with it.
    fn placed(&mut self, state: &RunStateRecord, node: &str, run: (&ObjectKey, &str, &TaskRun)) {
        if self.views.get(node).is_none_or(|v| !v.ready) {
            let message = format!(
                "node {node} stopped reporting (no heartbeat for {}s); the run's outcome is unknown",
                self.inputs.node_timeout.num_seconds()
            );
            let change = finish(state, "Failed", "NodeLost", &message, self.inputs.now);
            self.plan.run_changes.push(change);
            return;
        }
        self.assign(node, run);
    }

    /// Adds the run to `node`'s assignment, with its Runner's settings.
    fn assign(&mut self, node: &str, (key, uid, run): (&ObjectKey, &str, &TaskRun)) {
        let world = self.inputs.world;
        let runner = runner_on(world, self.views, &key.namespace, run, node);
        self.plan
            .assignments
            .entry(node.to_owned())
            .or_default()
            .push(assignment(world, key, uid, run, runner));
    }
}

enum Placement {
    Node(String),
    Wait(String),
    Refuse(String, String),
}

fn place(
    inputs: &TaskInputs<'_>,
    views: &BTreeMap<&str, NodeView<'_>>,
    active: &BTreeMap<String, u32>,
    key: &ObjectKey,
    run: &TaskRun,
) -> Placement {
    let runners = runners_for(inputs.world, run, &key.namespace);
    if runners.is_empty() {
        return Placement::Wait(format!(
            "no Runner in namespace {} matches the runnerSelector and allows executor {:?}",
            key.namespace, run.spec.task.executor
        ));
    }
    // Each node some Runner selects, with the largest capacity given there.
    let matching: Vec<(&NodeView<'_>, u32)> = views
        .values()
        .filter_map(|view| {
            runners
                .iter()
                .filter(|r| r.spec.node_selector.matches(&view.labels))
                .map(|r| r.spec.max_parallel_tasks)
                .max()
                .map(|capacity| (view, capacity))
        })
        .collect();
    if matching.is_empty() {
        return Placement::Wait(
            "no node matches the nodeSelector of the Runners this run may use".to_owned(),
        );
    }
    let usable: Vec<_> = matching
        .iter()
        .filter(|(v, _)| v.ready && !v.cordoned)
        .collect();
    if usable.is_empty() {
        let names: Vec<&str> = matching.iter().map(|(v, _)| v.name).collect();
        return Placement::Wait(format!(
            "no matching node is Ready and uncordoned ({})",
            names.join(", ")
        ));
    }
    least_busy(&usable, active, run.spec.task.executor)
}

/// The usable node with the fewest active runs below its capacity that has
/// the run's executor; refused when no usable node has it.
fn least_busy(
    usable: &[&(&NodeView<'_>, u32)],
    active: &BTreeMap<String, u32>,
    executor: Executor,
) -> Placement {
    let equipped: Vec<_> = usable
        .iter()
        .filter(|(v, _)| has_tool(v, executor))
        .collect();
    if equipped.is_empty() {
        let tools = executor_tools(executor).join(" or ");
        let missing: Vec<String> = usable
            .iter()
            .map(|(v, _)| format!("node {} has no {tools}", v.name))
            .collect();
        return Placement::Refuse("ExecutorMissing".to_owned(), missing.join("; "));
    }
    let free = equipped
        .iter()
        .map(|(v, cap)| (active.get(v.name).copied().unwrap_or(0), *cap, v.name))
        .filter(|(used, cap, _)| used < cap)
        .min_by_key(|(used, _, name)| (*used, *name));
    match free {
        Some((_, _, name)) => Placement::Node(name.to_owned()),
        None => Placement::Wait(format!(
            "all {} matching nodes are busy (maxParallelTasks reached)",
            equipped.len()
        )),
    }
}

/// TaskRuns of the world with their uid, oldest first.
fn task_runs(world: &World) -> Vec<(&ObjectKey, &str, &TaskRun)> {
    oldest_first(world.of_kind(Kind::TaskRun))
}

/// The TaskRuns among `objects` with their uid, oldest first (creation
/// time, then key).
pub fn oldest_first<'a>(
    objects: impl Iterator<Item = (&'a ObjectKey, &'a WorldObject)>,
) -> Vec<(&'a ObjectKey, &'a str, &'a TaskRun)> {
    let mut runs: Vec<_> = objects
        .filter_map(|(key, o)| match &*o.object {
            Object::TaskRun(run) => {
                Some((key, run.metadata.uid.as_deref().unwrap_or_default(), &**run))
            }
            _ => None,
        })
        .collect();
    runs.sort_by_cached_key(|(key, _, run)| {
        (
            run.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string()),
            (*key).clone(),
        )
    });
    runs
}

fn new_state(key: &ObjectKey, uid: &str, now: DateTime<Utc>) -> RunStateRecord {
    RunStateRecord {
        uid: uid.to_owned(),
        run: ObjectRef::new("TaskRun", &key.namespace, &key.name),
        node: None,
        phase: "Pending".to_owned(),
        placed_at: None,
        started_at: None,
        finished_at: None,
        exit_code: None,
        reason: None,
        message: None,
        log_tail: Vec::new(),
        updated_at: now,
    }
}

fn finish(
    state: &RunStateRecord,
    phase: &str,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) -> RunStateRecord {
    let mut record = state.clone();
    record.phase = phase.to_owned();
    record.reason = Some(reason.to_owned());
    record.message = Some(message.to_owned());
    record.finished_at = Some(now);
    record.updated_at = now;
    record
}

/// The assignment of one run: the task, its env resolved (Runner env first,
/// then the task's), and the Runner's `workDir` and `runAsRoot`.
fn assignment(
    world: &World,
    key: &ObjectKey,
    uid: &str,
    run: &TaskRun,
    runner: Option<&Runner>,
) -> TaskAssignment {
    let mut env = Vec::new();
    let vars = runner
        .iter()
        .flat_map(|r| r.spec.env.iter())
        .chain(run.spec.task.env.iter());
    for var in vars {
        let value = match (&var.value, &var.secret_key_ref) {
            (Some(value), _) => Some(value.clone()),
            (None, Some(reference)) => secret_value(
                world,
                &key.namespace,
                reference.name.as_str(),
                reference.key.as_str(),
            ),
            (None, None) => None,
        };
        if let Some(value) = value {
            env.retain(|e: &ResolvedEnv| e.name != var.name);
            env.push(ResolvedEnv {
                name: var.name.clone(),
                value: SecretValue(value),
            });
        }
    }
    TaskAssignment {
        run: RunRef {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            uid: uid.to_owned(),
        },
        task: run.spec.task.clone(),
        env,
        work_dir: runner.and_then(|r| r.spec.work_dir.clone()),
        cancel: run.spec.cancel,
        run_as_root: runner.is_some_and(|r| r.spec.run_as_root),
    }
}

/// A Secret's value by key (`data` decoded, else `stringData`).
pub fn secret_value(world: &World, namespace: &str, name: &str, key: &str) -> Option<String> {
    let object = world
        .objects
        .get(&ObjectKey::new(Kind::Secret, namespace, name))?;
    let Object::Secret(secret) = &*object.object else {
        return None;
    };
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .cloned()
        })
}

/// The status of a TaskRun from its run state.
pub fn task_run_status(
    generation: Option<i64>,
    state: Option<&RunStateRecord>,
    pending_reason: Option<&String>,
    runner: Option<&Runner>,
) -> (Value, [(&'static str, &'static str, String, String); 3]) {
    let phase = state.map_or("Pending", |s| s.phase.as_str()).to_owned();
    let reason = state.and_then(|s| s.reason.clone());
    let message = state
        .and_then(|s| s.message.clone())
        .or_else(|| pending_reason.cloned())
        .unwrap_or_default();
    let status = json!({
        "observedGeneration": generation,
        "phase": phase,
        "reason": reason,
        "message": if message.is_empty() { Value::Null } else { Value::String(message.clone()) },
        "node": state.and_then(|s| s.node.clone()),
        "runner": runner.and_then(|r| r.metadata.name.clone()),
        "runAsRoot": runner.is_some_and(|r| r.spec.run_as_root).then_some(true),
        "startedAt": state.and_then(|s| s.started_at).map(timestamp),
        "finishedAt": state.and_then(|s| s.finished_at).map(timestamp),
        "exitCode": state.and_then(|s| s.exit_code),
        "logTail": state.map(|s| s.log_tail.clone()).unwrap_or_default(),
    });
    let why = reason.unwrap_or_else(|| phase.clone());
    let conditions = task_run_conditions(&phase, why, message);
    (strip_nulls(status), conditions)
}

/// A TaskRun's conditions in `phase`; `why` is the reason of a run that
/// failed or was cancelled.
fn task_run_conditions(
    phase: &str,
    why: String,
    message: String,
) -> [(&'static str, &'static str, String, String); 3] {
    match phase {
        "Succeeded" => [
            (
                "Ready",
                "True",
                "Succeeded".to_owned(),
                "the run exited 0".to_owned(),
            ),
            (
                "Reconciling",
                "False",
                "Succeeded".to_owned(),
                String::new(),
            ),
            ("Stalled", "False", "Succeeded".to_owned(), String::new()),
        ],
        "Failed" | "Cancelled" => [
            ("Ready", "False", why.clone(), message.clone()),
            ("Reconciling", "False", why.clone(), String::new()),
            ("Stalled", "True", why, message),
        ],
        "Running" => [
            (
                "Ready",
                "False",
                "Running".to_owned(),
                "the run is executing".to_owned(),
            ),
            ("Reconciling", "True", "Running".to_owned(), String::new()),
            ("Stalled", "False", "Running".to_owned(), String::new()),
        ],
        _ => [
            ("Ready", "False", "Pending".to_owned(), message.clone()),
            ("Reconciling", "True", "Pending".to_owned(), message),
            ("Stalled", "False", "Pending".to_owned(), String::new()),
        ],
    }
}

/// Drops `null` fields so statuses stay small and compare stably.
pub fn strip_nulls(mut value: Value) -> Value {
    if let Some(map) = value.as_object_mut() {
        map.retain(|_, v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()));
    }
    value
}
