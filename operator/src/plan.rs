//! `plan`: pure functions from the world, what agents observed and the
//! statuses last written, to everything that should be true now: statuses,
//! run placements and each node's assignment.
//!
//! Nothing here performs I/O or reads the clock: `now` is an input, so every
//! rule is unit-tested from YAML without a server.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};
use veil_crds::protocol_server::Protocol;

use crate::agents::{NodeAssignment, NodeObservation};
use crate::records::{RunStateRecord, RunStates, TrafficBaselineRecord};
use crate::world::World;

pub mod conditions;
mod incremental;
pub mod memo;
mod nodes;
mod not_implemented;
pub mod schedules;
pub mod strategies;
pub mod tasks;
pub mod vless;

use conditions::{ConditionUpdate, set_conditions};
pub use incremental::Planner;
use memo::MemoEntry;
pub use memo::StatusMemo;

/// Statuses by object as compact JSON text, shared cheaply between the
/// controller and readers. Text, not JSON trees: 10,000 statuses take a few
/// MB instead of tens, and comparing two is a string comparison. A
/// persistent map: the view and the controller share it, and the
/// incremental planner makes the next pass's from it in time proportional
/// to the statuses that changed.
pub type Statuses = imbl::OrdMap<ObjectKey, Arc<RawValue>>;

/// A status document as shared text.
pub fn raw_status(value: &Value) -> Arc<RawValue> {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned());
    match RawValue::from_string(text) {
        Ok(raw) => Arc::from(raw),
        // Unreachable: serde_json just produced this text.
        Err(_) => Arc::from(RawValue::NULL.to_owned()),
    }
}

/// Two statuses are equal when their texts are (the same shared text
/// needs no comparison: a status kept from the last pass is).
pub fn same_status(a: &Arc<RawValue>, b: &Arc<RawValue>) -> bool {
    Arc::ptr_eq(a, b) || a.get() == b.get()
}

/// Everything `plan` reads.
pub struct PlanInputs<'a> {
    pub world: &'a World,
    /// The statuses last written (condition transition times are kept from them).
    pub previous: &'a Statuses,
    pub nodes: &'a BTreeMap<String, NodeObservation>,
    pub runs: &'a RunStates,
    pub now: DateTime<Utc>,
    /// A node silent longer than this is NotReady.
    pub node_timeout: chrono::Duration,
    /// Last schedule time of every Schedule (persisted by the controller).
    pub last_schedule_times: &'a BTreeMap<ObjectKey, DateTime<Utc>>,
    /// VLESS ids and Reality keys the operator generated (by object uid).
    pub secrets: &'a vless::GeneratedSecrets,
    /// Traffic counters, period baselines and last-seen times.
    pub traffic: &'a vless::TrafficState,
    /// The previous pass's [`Plan::memo`] (an empty one at first): saves
    /// parsing and serializing statuses that did not change, never changes
    /// one. `None`: no memo is used or built (it holds every status parsed,
    /// about 5 KB per object).
    pub memo: Option<&'a StatusMemo>,
}

/// What should be true after this pass.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The status every object with a status should have (Secrets have none).
    pub statuses: Statuses,
    /// Run states to write: placements, lost runs, refusals.
    pub run_changes: Vec<RunStateRecord>,
    /// Run states whose TaskRun is gone.
    pub stale_runs: Vec<String>,
    /// Every node's desired tasks and servers (registered nodes included
    /// when they have none).
    pub assignments: BTreeMap<String, NodeAssignment>,
    /// What Schedules need done (runs to create, cancel, prune; times to persist).
    pub schedule_actions: schedules::ScheduleActions,
    /// Objects with a status per kind and phase (`Unknown` without one), for metrics.
    pub phase_counts: BTreeMap<(Kind, String), i64>,
    /// These statuses parsed, for the next pass ([`PlanInputs::memo`]).
    pub memo: StatusMemo,
    /// Which statuses changed, when the planner knows without comparing.
    pub changed_statuses: Option<StatusDelta>,
    /// VlessKey traffic baselines to persist (periods that began).
    pub traffic_baselines: Vec<TrafficBaselineRecord>,
    /// Uids of traffic baselines whose VlessKey is gone.
    pub stale_baselines: Vec<String>,
    /// The next instant at which time alone changes this plan (a VlessKey
    /// expires, a traffic period begins); Schedules requeue on their own.
    pub wake_at: Option<DateTime<Utc>>,
}

/// Computes the plan from scratch: tasks first (statuses see the run
/// states as they will be after this pass), then Schedules, Strategies and
/// VLESS, then every object's status, then each node's assignment. The
/// reference that [`Planner`] (incremental) is checked against.
pub fn plan(inputs: &PlanInputs<'_>) -> Plan {
    plan_with(inputs, None)
}

/// [`plan`], with VlessKeys and TaskRuns planned incrementally when a
/// planner is given.
fn plan_with(inputs: &PlanInputs<'_>, mut planner: Option<&mut Planner>) -> Plan {
    let task_inputs = tasks::TaskInputs {
        world: inputs.world,
        nodes: inputs.nodes,
        runs: inputs.runs,
        now: inputs.now,
        node_timeout: inputs.node_timeout,
    };
    let scope = match planner.as_deref_mut() {
        Some(planner) => planner.task_scope(inputs),
        None => tasks::Scope::full(inputs.world, inputs.runs),
    };
    let views = tasks::node_views(&task_inputs, planner.as_deref_mut().map(|p| &mut p.labels));
    let task_plan = tasks::plan_tasks(&task_inputs, &views, &scope);
    let mut runs = inputs.runs.clone();
    for change in &task_plan.run_changes {
        runs.insert(change.uid.clone(), Arc::new(change.clone()));
    }
    let settled = planner.as_deref().map(|p| &p.runs);
    let owners = RunOwners::index(inputs.world, &views, &scope, &runs, settled);
    let schedule_runs = schedules::ScheduleRuns {
        runs: &scope.runs,
        settled,
    };
    let (schedule_actions, schedule_statuses) = plan_schedules(inputs, &schedule_runs, &runs);
    let strategy_plan = plan_strategies(inputs, &views);
    let vless_plan = plan_vless_with(inputs, &views, planner.as_deref_mut().map(|p| &mut p.keys));
    let mut bodies = KindBodies {
        views: &views,
        running: running_by_node(&scope, &runs),
        owners: &owners,
        runs: &runs,
        pending_reasons: &task_plan.pending_reasons,
        node_timeout: inputs.node_timeout,
        schedules: schedule_statuses,
        strategies: strategy_plan.statuses,
        vless: vless_plan.statuses,
        kept: None,
    };
    let mut built = build_every_status(inputs, &mut bodies, planner.as_deref());
    drop(bodies);
    if let Some(planner) = planner {
        planner.quiet_nodes = std::mem::take(&mut built.quiet_nodes);
        planner.record(inputs.world, &built.statuses, &runs, &owners.runner_names());
    }
    Plan {
        statuses: built.statuses,
        run_changes: task_plan.run_changes,
        stale_runs: task_plan.stale_runs,
        assignments: node_assignments(
            task_plan.assignments,
            vless_plan.assignments,
            strategy_plan.assignments,
        ),
        schedule_actions,
        phase_counts: built.phase_counts,
        memo: built.memo,
        changed_statuses: built.changed,
        traffic_baselines: vless_plan.baselines,
        stale_baselines: vless_plan.stale_baselines,
        wake_at: vless_plan.wake_at,
    }
}

/// The Schedules' decisions and statuses, from the TaskRuns they made.
fn plan_schedules(
    inputs: &PlanInputs<'_>,
    scope: &schedules::ScheduleRuns<'_>,
    runs: &RunStates,
) -> (
    schedules::ScheduleActions,
    BTreeMap<ObjectKey, (Value, memo::Conditions)>,
) {
    let times = inputs.last_schedule_times;
    schedules::plan_schedules(inputs.world, (scope, runs), times, inputs.now)
}

/// The Strategies' placement and statuses.
fn plan_strategies(
    inputs: &PlanInputs<'_>,
    views: &BTreeMap<&str, tasks::NodeView<'_>>,
) -> strategies::StrategyPlan {
    let sources = strategies::members::Sources {
        world: inputs.world,
        previous: inputs.previous,
        secrets: inputs.secrets,
    };
    strategies::plan_strategies(sources, views)
}

/// Every object's finished status: only the changed ones when the
/// planner made the previous statuses, else all (with the VlessKeys the
/// key cache keeps).
fn build_every_status<'a>(
    inputs: &PlanInputs<'_>,
    bodies: &mut KindBodies<'a>,
    planner: Option<&'a Planner>,
) -> BuiltStatuses {
    match planner {
        Some(planner) if planner.keys.made(inputs.previous) => {
            incremental::build_changed_statuses(inputs, bodies, planner)
        }
        Some(planner) => {
            bodies.kept = Some((Box::new(planner.keys.kept()) as KeptKeys<'_>).peekable());
            build_statuses(inputs, bodies)
        }
        None => build_statuses(inputs, bodies),
    }
}

/// Runs Running on each node, among the run states in `scope`.
fn running_by_node(scope: &tasks::Scope<'_>, runs: &RunStates) -> HashMap<String, usize> {
    let mut running: HashMap<String, usize> = HashMap::new();
    for state in scope.states(runs) {
        if let Some(node) = &state.node
            && state.phase == "Running"
        {
            *running.entry(node.clone()).or_default() += 1;
        }
    }
    running
}

/// VLESS planning: incrementally with the key cache, else from scratch.
fn plan_vless_with(
    inputs: &PlanInputs<'_>,
    views: &BTreeMap<&str, tasks::NodeView<'_>>,
    keys: Option<&mut vless::KeyCache>,
) -> vless::VlessPlan {
    let vless_inputs = vless::VlessInputs {
        world: inputs.world,
        previous: inputs.previous,
        views,
        secrets: inputs.secrets,
        traffic: inputs.traffic,
        now: inputs.now,
    };
    match keys {
        Some(cache) => cache.plan(&vless_inputs),
        None => vless::plan_vless(&vless_inputs),
    }
}

/// Which Runner each placed run belongs to: the one in its namespace whose
/// node selector took its node (it gives the run its settings), and each
/// Runner's runs by node and phase, for the TaskRun's `status.runner` and
/// the Runner's counts (the settled runs' counts added).
struct RunOwners<'w> {
    runner_of: HashMap<&'w str, &'w veil_crds::runner::Runner>,
    runs_of_runner: HashMap<(&'w str, &'w str), nodes::RunCounts>,
}

impl<'w> RunOwners<'w> {
    fn index(
        world: &'w World,
        views: &BTreeMap<&str, tasks::NodeView<'_>>,
        scope: &tasks::Scope<'w>,
        runs: &RunStates,
        settled: Option<&tasks::settled::SettledRuns>,
    ) -> RunOwners<'w> {
        let mut owners = RunOwners {
            runner_of: HashMap::new(),
            runs_of_runner: HashMap::new(),
        };
        for &(key, uid, run) in &scope.runs {
            let Some(state) = runs.get(uid) else {
                continue;
            };
            let Some(node) = state.node.as_deref() else {
                continue;
            };
            if let Some(runner) = tasks::runner_on(world, views, &key.namespace, run, node) {
                owners.runner_of.insert(uid, runner);
                let name = runner.metadata.name.as_deref().unwrap_or_default();
                owners
                    .runs_of_runner
                    .entry((key.namespace.as_str(), name))
                    .or_default()
                    .add_state(state);
            }
        }
        for (key, object) in world.of_kind(Kind::Runner) {
            let counts = settled.and_then(|s| s.runner_counts(&key.namespace, &key.name));
            if let Some(counts) = counts {
                owners
                    .runs_of_runner
                    .entry((key.namespace.as_str(), object_name(object)))
                    .or_default()
                    .merge(counts);
            }
        }
        owners
    }
}

impl RunOwners<'_> {
    /// The name of each placed run's Runner, by run uid.
    fn runner_names(&self) -> HashMap<&str, &str> {
        self.runner_of
            .iter()
            .map(|(uid, runner)| (*uid, runner.metadata.name.as_deref().unwrap_or_default()))
            .collect()
    }
}

/// An object's `metadata.name`.
fn object_name(object: &crate::world::WorldObject) -> &str {
    object.object.meta().name.as_deref().unwrap_or_default()
}

/// What the per-object status step reads besides [`PlanInputs`]: the
/// statuses the kind planners built, taken out one object at a time.
struct KindBodies<'a> {
    views: &'a BTreeMap<&'a str, tasks::NodeView<'a>>,
    /// Runs Running on each node.
    running: HashMap<String, usize>,
    runs: &'a RunStates,
    owners: &'a RunOwners<'a>,
    pending_reasons: &'a BTreeMap<String, String>,
    node_timeout: chrono::Duration,
    schedules: BTreeMap<ObjectKey, (Value, memo::Conditions)>,
    strategies: BTreeMap<ObjectKey, (Value, memo::Conditions)>,
    vless: BTreeMap<ObjectKey, (vless::Body, memo::Conditions)>,
    /// VlessKeys whose last status stands (incremental planning), with
    /// their phases, in key order.
    kept: Option<std::iter::Peekable<KeptKeys<'a>>>,
}

/// The phase of every VlessKey the key cache knows, in key order.
type KeptKeys<'a> = Box<dyn Iterator<Item = (&'a ObjectKey, &'a Arc<str>)> + 'a>;

/// What a kind planner made of one object's status.
#[allow(
    clippy::large_enum_variant,
    reason = "one short-lived value per object, moved once: boxing would only add an allocation"
)]
enum Planned {
    /// A body with its conditions, before `observedGeneration` and the
    /// conditions' transition times are added.
    Body(Value, memo::Conditions, memo::ExtraCondition),
    /// A kind without a reconciler yet.
    NotImplemented,
    /// The previous status stands (its inputs did not change); its phase.
    Keep(Arc<str>),
}

impl KindBodies<'_> {
    /// The status body of `object`; `None` for objects without a status
    /// (Secrets) or that a kind planner skipped.
    fn body(
        &mut self,
        key: &ObjectKey,
        object: &Object,
        previous: Option<&Arc<RawValue>>,
    ) -> Option<Planned> {
        let plain =
            |(body, conditions): (Value, memo::Conditions)| Planned::Body(body, conditions, None);
        Some(match object {
            Object::Secret(_) => return None,
            Object::TaskRun(run) => {
                let uid = run.metadata.uid.as_deref().unwrap_or_default();
                plain(tasks::task_run_status(
                    object.meta().generation,
                    self.runs.get(uid).map(|s| &**s),
                    self.pending_reasons.get(uid),
                    self.owners.runner_of.get(uid).copied(),
                ))
            }
            Object::Runner(runner) => {
                let name = runner.metadata.name.as_deref().unwrap_or_default();
                let none = nodes::RunCounts::default();
                let own = self
                    .owners
                    .runs_of_runner
                    .get(&(key.namespace.as_str(), name))
                    .unwrap_or(&none);
                plain(nodes::runner_status(runner, self.views, own))
            }
            Object::Schedule(_) => plain(self.schedules.remove(key)?),
            Object::VeilNode(_) => {
                let view = self.views.get(key.name.as_str());
                // Only a node with an agent reads its last status (the
                // heartbeat it showed): parsing is most of a quiet node's cost.
                let observed = view.is_some_and(|v| v.observation.is_some());
                let previous = if observed { parse(previous) } else { None };
                let running = self.running.get(key.name.as_str()).copied().unwrap_or(0);
                let (body, conditions) =
                    nodes::node_status(view, running, self.node_timeout, previous.as_ref());
                Planned::Body(body, conditions, nodes::journal_condition(view))
            }
            Object::ProtocolServer(server) if server.spec.protocol == Protocol::Vless => {
                let (body, conditions) = self.vless.remove(key)?;
                plain((body.into_value(), conditions))
            }
            Object::VlessKey(_) => match self.vless.remove(key) {
                Some((body, conditions)) => plain((body.into_value(), conditions)),
                None => Planned::Keep(self.kept_phase(key)?),
            },
            Object::Strategy(_) => plain(self.strategies.remove(key)?),
            _ => Planned::NotImplemented,
        })
    }

    /// Whether the node `name` has no agent and no runs Running on it.
    fn quiet(&self, name: &str) -> bool {
        let observed = self
            .views
            .get(name)
            .is_some_and(|view| view.observation.is_some());
        !observed && self.running.get(name).is_none_or(|n| *n == 0)
    }

    /// The phase of a kept VlessKey (keys are asked for in order).
    fn kept_phase(&mut self, key: &ObjectKey) -> Option<Arc<str>> {
        let kept = self.kept.as_mut()?;
        while kept.next_if(|(k, _)| *k < key).is_some() {}
        kept.next_if(|(k, _)| *k == key)
            .map(|(_, phase)| Arc::clone(phase))
    }
}

/// Every object's finished status, with the phase counts and the memo.
struct BuiltStatuses {
    statuses: Statuses,
    phase_counts: BTreeMap<(Kind, String), i64>,
    memo: StatusMemo,
    changed: Option<StatusDelta>,
    /// VeilNodes without an agent or runs, with their phases (incremental
    /// builds only: the next one keeps their statuses if that still holds).
    quiet_nodes: incremental::QuietNodes,
}

/// Which statuses a plan changed, relative to the previous statuses it
/// was given: the keys outside `keys` have `base`'s status (or none in
/// both). Lets the controller find the writes without comparing every
/// status.
#[derive(Clone, Debug)]
pub struct StatusDelta {
    pub base: Statuses,
    /// In key order.
    pub keys: Vec<ObjectKey>,
}

/// Finishes every object's status: conditions and `observedGeneration`
/// added, the previous status (and the memo) reused where nothing changed.
/// Statuses are collected in key order and bulk-built, and the previous
/// ones (and the memo) are read alongside, all sorted by key: a tree
/// lookup or insert per object costs a string comparison per level.
fn build_statuses(inputs: &PlanInputs<'_>, bodies: &mut KindBodies<'_>) -> BuiltStatuses {
    let mut statuses = Vec::with_capacity(inputs.world.objects.len());
    let mut memo_entries = Vec::with_capacity(inputs.world.objects.len());
    let mut previous = PreviousCursor::new(inputs);
    let mut phase_counts: HashMap<(Kind, Arc<str>), i64> = HashMap::new();
    for (key, object) in &inputs.world.objects {
        let (previous_raw, remembered) = previous.at(key);
        let Some(planned) = bodies.body(key, &object.object, previous_raw) else {
            continue;
        };
        let generation = object.object.meta().generation;
        let Some(status) = status_of(
            planned,
            (key, generation),
            (previous_raw, remembered),
            inputs,
        ) else {
            continue;
        };
        *phase_counts
            .entry((key.kind, Arc::clone(&status.phase)))
            .or_default() += 1;
        statuses.push((key.clone(), status.raw.clone()));
        if inputs.memo.is_some() {
            memo_entries.push((key.clone(), status));
        }
    }
    let phase_counts = phase_counts
        .into_iter()
        .map(|((kind, phase), count)| ((kind, phase.to_string()), count))
        .collect();
    let statuses: Statuses = statuses.into_iter().collect();
    debug_assert!(statuses.keys().all(|k| k.kind != Kind::Secret));
    BuiltStatuses {
        statuses,
        phase_counts,
        memo: StatusMemo::from_sorted(memo_entries),
        changed: None,
        quiet_nodes: Default::default(),
    }
}

/// The previous statuses and the memo, read alongside the world in key
/// order.
/// Entries of a map of statuses, in key order.
type StatusIter<'a> = Box<dyn Iterator<Item = (&'a ObjectKey, &'a Arc<RawValue>)> + 'a>;

struct PreviousCursor<'a> {
    statuses: std::iter::Peekable<StatusIter<'a>>,
    memo: std::iter::Peekable<Box<dyn Iterator<Item = (&'a ObjectKey, &'a MemoEntry)> + 'a>>,
}

impl<'a> PreviousCursor<'a> {
    fn new(inputs: &PlanInputs<'a>) -> PreviousCursor<'a> {
        let memo: Box<dyn Iterator<Item = (&'a ObjectKey, &'a MemoEntry)> + 'a> =
            Box::new(inputs.memo.into_iter().flat_map(StatusMemo::iter));
        PreviousCursor {
            statuses: (Box::new(inputs.previous.iter()) as StatusIter<'a>).peekable(),
            memo: memo.peekable(),
        }
    }

    /// The previous status of `key` (keys asked for in order) and the memo
    /// entry, which speaks for it only if it is the same text.
    fn at(&mut self, key: &ObjectKey) -> (Option<&'a Arc<RawValue>>, Option<&'a MemoEntry>) {
        while self.statuses.next_if(|(k, _)| *k < key).is_some() {}
        while self.memo.next_if(|(k, _)| *k < key).is_some() {}
        let raw = self
            .statuses
            .next_if(|(k, _)| *k == key)
            .map(|(_, raw)| raw);
        let remembered = self
            .memo
            .next_if(|(k, _)| *k == key)
            .map(|(_, entry)| entry)
            .filter(|entry| raw.is_some_and(|raw| Arc::ptr_eq(raw, &entry.raw)));
        (raw, remembered)
    }
}

/// The finished status of one object from what its kind planner made of
/// it; `None` only for a kept key without a previous status (never: such a
/// key is recomputed).
fn status_of(
    planned: Planned,
    (key, generation): (&ObjectKey, Option<i64>),
    (previous, remembered): (Option<&Arc<RawValue>>, Option<&MemoEntry>),
    inputs: &PlanInputs<'_>,
) -> Option<MemoEntry> {
    Some(match planned {
        Planned::NotImplemented => built(
            not_implemented::status(key.kind, generation, parse(previous).as_ref(), inputs.now),
            None,
        ),
        Planned::Keep(phase) => match (remembered, previous) {
            (Some(entry), _) => entry.clone(),
            (None, Some(raw)) => MemoEntry {
                raw: Arc::clone(raw),
                phase,
                fingerprint: None,
            },
            (None, None) => return None,
        },
        Planned::Body(body, conditions, extra) => finish(Finish {
            body,
            conditions,
            extra,
            remembered,
            previous,
            generation,
            now: inputs.now,
            remember: inputs.memo.is_some(),
        }),
    })
}

/// One status to finish (see [`finish`]).
struct Finish<'a> {
    body: Value,
    conditions: memo::Conditions,
    extra: memo::ExtraCondition,
    /// The memo's entry, when `previous` is its very text.
    remembered: Option<&'a MemoEntry>,
    previous: Option<&'a Arc<RawValue>>,
    generation: Option<i64>,
    now: DateTime<Utc>,
    /// Fingerprint the inputs, for the next pass's memo.
    remember: bool,
}

/// The remembered entry when it was built from the same inputs, else a
/// new status with conditions and `observedGeneration` added (the previous
/// status parsed only then).
fn finish(f: Finish<'_>) -> MemoEntry {
    let fingerprint = if f.remember {
        memo::StatusInputs {
            body: &f.body,
            conditions: &f.conditions,
            extra: &f.extra,
            generation: f.generation,
        }
        .fingerprint()
    } else {
        None
    };
    if let Some(entry) = f.remembered
        && entry.built_from(fingerprint)
    {
        return entry.clone();
    }
    let all: Vec<_> = f.conditions.iter().chain(f.extra.iter()).cloned().collect();
    let previous = parse(f.previous);
    let value = with_conditions(f.body, previous.as_ref(), &all, f.generation, f.now);
    built(value, fingerprint)
}

/// A status text parsed (`None` when absent or unreadable).
fn parse(raw: Option<&Arc<RawValue>>) -> Option<Value> {
    raw.and_then(|raw| serde_json::from_str(raw.get()).ok())
}

/// Each node's assignment from the kind planners' parts.
fn node_assignments(
    tasks: BTreeMap<String, Vec<veil_crds::wire::TaskAssignment>>,
    servers: BTreeMap<String, Vec<veil_crds::wire::ServerAssignment>>,
    strategies: BTreeMap<String, Vec<veil_crds::wire::StrategyGroup>>,
) -> BTreeMap<String, NodeAssignment> {
    let mut assignments: BTreeMap<String, NodeAssignment> = tasks
        .into_iter()
        .map(|(node, tasks)| {
            let content = NodeAssignment {
                tasks,
                ..NodeAssignment::default()
            };
            (node, content)
        })
        .collect();
    for (node, servers) in servers {
        assignments.entry(node).or_default().servers = servers;
    }
    for (node, groups) in strategies {
        assignments.entry(node).or_default().strategies = groups;
    }
    assignments
}

/// A freshly computed status as a memo entry: its text, its phase and
/// the fingerprint of its inputs.
fn built(value: Value, fingerprint: Option<u128>) -> MemoEntry {
    let phase = value
        .get("phase")
        .and_then(Value::as_str)
        .unwrap_or("Unknown");
    MemoEntry {
        raw: raw_status(&value),
        phase: Arc::from(phase),
        fingerprint,
    }
}

/// Adds `observedGeneration` and kstatus conditions to a status body.
fn with_conditions(
    body: Value,
    previous: Option<&Value>,
    conditions: &[(&str, &str, String, String)],
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Value {
    let mut map = match body {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    if let Some(generation) = generation {
        map.insert("observedGeneration".into(), generation.into());
    }
    let updates: Vec<ConditionUpdate<'_>> = conditions
        .iter()
        .map(|(type_, status, reason, message)| ConditionUpdate {
            type_,
            status,
            reason,
            message,
        })
        .collect();
    set_conditions(&mut map, previous, &updates, generation, now);
    Value::Object(map)
}

#[cfg(test)]
pub(crate) mod tests;
