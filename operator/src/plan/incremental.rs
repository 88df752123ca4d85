//! Incremental planning: a [`Planner`] keeps what the last pass computed
//! and recomputes only what the changes since reach. Its plan equals
//! [`super::plan`]'s (the reference) for the same inputs: the property
//! test in `tests/incremental.rs` checks that after every step of random
//! histories.
//!
//! The VlessKeys and the TaskRuns, by far the most numerous objects, are
//! planned incrementally (see [`super::vless::KeyCache`] for what marks a
//! key, [`SettledRuns`] for what keeps a finished run); the other kinds
//! are planned whole each pass.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use veil_crds::kind::Kind;
use veil_crds::object::ObjectKey;

use super::tasks::settled::SettledRuns;
use super::{
    BuiltStatuses, KindBodies, Plan, PlanInputs, StatusMemo, Statuses, plan_with, status_of, vless,
};
use crate::world::WorldObject;

/// The planner the controller keeps from pass to pass.
#[derive(Default)]
pub struct Planner {
    pub(super) keys: vless::KeyCache,
    pub(super) runs: SettledRuns,
    /// The world the last pass saw.
    world: crate::world::WorldObjects,
    /// Objects that left the world since the last pass.
    gone: Vec<ObjectKey>,
    /// Keys that changed in the world since the last pass.
    changed: std::collections::HashSet<ObjectKey>,
    /// The quiet VeilNodes of the last pass.
    pub(super) quiet_nodes: QuietNodes,
    /// Each VeilNode's merged labels.
    pub(super) labels: super::tasks::NodeLabels,
}

/// VeilNodes with no agent and no runs, with their status phases: such a
/// node's status depends on its object alone (and the node timeout), so
/// while it stays quiet and its object is the same, the status the last
/// pass left stands.
pub(super) type QuietNodes = HashMap<ObjectKey, (Arc<str>, chrono::Duration)>;

impl Planner {
    /// Plans `inputs`; the same plan as [`super::plan`] gives.
    pub fn step(&mut self, inputs: &PlanInputs<'_>) -> Plan {
        plan_with(inputs, Some(self))
    }

    /// The TaskRuns this pass plans (see [`SettledRuns::scope`]).
    /// Follows the world's changes since the last pass and returns the
    /// TaskRuns this pass plans (see [`SettledRuns::scope`]).
    pub(super) fn task_scope<'w>(&mut self, inputs: &PlanInputs<'w>) -> super::tasks::Scope<'w> {
        let objects = &inputs.world.objects;
        let changed: Vec<ObjectKey> = crate::world::changed_keys(&self.world, objects)
            .cloned()
            .collect();
        self.gone = changed
            .iter()
            .filter(|key| !objects.contains_key(*key))
            .cloned()
            .collect();
        for key in self.gone.iter().filter(|key| key.kind == Kind::VeilNode) {
            self.labels.forget(&key.name);
        }
        let before = std::mem::replace(&mut self.world, objects.clone());
        self.changed = changed.iter().cloned().collect();
        let made = self.keys.made(inputs.previous);
        let context = super::tasks::settled::Context {
            before: &before,
            changed: &changed,
            nodes: inputs.nodes,
            made,
        };
        self.runs.scope(inputs.world, inputs.runs, context)
    }

    /// Takes what the pass finished: its statuses, and its run states
    /// (`runs`, with the pass's changes) with each placed run's Runner.
    pub(super) fn record(
        &mut self,
        world: &crate::world::World,
        statuses: &Statuses,
        runs: &crate::records::RunStates,
        runners: &HashMap<&str, &str>,
    ) {
        self.keys.record(statuses);
        let runner_of = |uid: &str| runners.get(uid).map(|name| (*name).to_owned());
        self.runs.settle(world, runs, runner_of);
    }
}

/// The statuses of a pass whose previous statuses are the very ones the
/// key cache last recorded (nothing replaced any since): those, with every
/// object of the other kinds built again, the open TaskRuns built, and the
/// VlessKeys the cache recomputed or forgot and the TaskRuns gone updated.
/// The same statuses, phase counts and memo entries as
/// [`super::build_statuses`] gives, in time proportional to the other
/// kinds, the open runs and the changed keys, not to every key or run.
pub(super) fn build_changed_statuses(
    inputs: &PlanInputs<'_>,
    bodies: &mut KindBodies<'_>,
    planner: &Planner,
) -> BuiltStatuses {
    let cache = &planner.keys;
    let mut out = Changed {
        statuses: inputs.previous.clone(),
        memo: inputs.memo.cloned().unwrap_or_default(),
        phase_counts: HashMap::new(),
        touched: Vec::new(),
        quiet_nodes: QuietNodes::new(),
    };
    for key in planner.gone.iter().filter(|key| key.kind != Kind::VlessKey) {
        out.remove(key);
    }
    out.build_tasks(inputs, bodies, &planner.runs);
    out.build_nodes(inputs, bodies, planner);
    out.build_whole_kinds(inputs, bodies);
    for key in cache.recomputed() {
        match inputs.world.objects.get(key) {
            Some(object) => {
                out.build(key, object, inputs, bodies);
            }
            None => out.remove(key),
        }
    }
    for key in cache.forgotten() {
        out.remove(key);
    }
    let phase_counts = phase_counts(std::mem::take(&mut out.phase_counts), planner);
    let quiet_nodes = std::mem::take(&mut out.quiet_nodes);
    out.touched.sort();
    out.touched.dedup();
    BuiltStatuses {
        statuses: out.statuses,
        phase_counts,
        memo: out.memo,
        changed: Some(super::StatusDelta {
            base: inputs.previous.clone(),
            keys: out.touched,
        }),
        quiet_nodes,
    }
}

/// The phase counts of the objects built this pass (VlessKeys aside),
/// with those of the keys and settled TaskRuns the planner keeps.
fn phase_counts(
    built: HashMap<(Kind, Arc<str>), i64>,
    planner: &Planner,
) -> BTreeMap<(Kind, String), i64> {
    let mut counts: BTreeMap<(Kind, String), i64> = built
        .into_iter()
        .filter(|((kind, _), _)| *kind != Kind::VlessKey)
        .map(|((kind, phase), count)| ((kind, phase.to_string()), count))
        .collect();
    for (phase, count) in planner.keys.phase_counts() {
        counts.insert((Kind::VlessKey, phase.to_string()), count);
    }
    for (phase, count) in planner.runs.phase_counts() {
        *counts
            .entry((Kind::TaskRun, phase.to_string()))
            .or_default() += count;
    }
    counts
}

/// The statuses being updated, with their memo and the phase counts of
/// the objects built.
struct Changed {
    statuses: Statuses,
    memo: StatusMemo,
    phase_counts: HashMap<(Kind, Arc<str>), i64>,
    /// Keys whose status was replaced or removed.
    touched: Vec<ObjectKey>,
    /// This pass's quiet VeilNodes.
    quiet_nodes: QuietNodes,
}

impl Changed {
    /// Builds `key`'s status as [`super::build_statuses`] would and keeps
    /// it (the map is touched only when the text is another).
    fn build(
        &mut self,
        key: &ObjectKey,
        object: &WorldObject,
        inputs: &PlanInputs<'_>,
        bodies: &mut KindBodies<'_>,
    ) -> Option<Arc<str>> {
        let previous = inputs.previous.get(key);
        let remembered = inputs
            .memo
            .and_then(|memo| memo.get(key))
            .filter(|entry| previous.is_some_and(|raw| Arc::ptr_eq(raw, &entry.raw)));
        let generation = object.object.meta().generation;
        let status = bodies
            .body(key, &object.object, previous)
            .and_then(|planned| {
                status_of(planned, (key, generation), (previous, remembered), inputs)
            });
        let Some(status) = status else {
            self.remove(key);
            return None;
        };
        let phase = Arc::clone(&status.phase);
        *self
            .phase_counts
            .entry((key.kind, Arc::clone(&status.phase)))
            .or_default() += 1;
        if !previous.is_some_and(|raw| Arc::ptr_eq(raw, &status.raw)) {
            self.statuses.insert(key.clone(), Arc::clone(&status.raw));
            self.touched.push(key.clone());
        }
        let kept = remembered.is_some_and(|entry| {
            Arc::ptr_eq(&entry.raw, &status.raw) && entry.fingerprint == status.fingerprint
        });
        if inputs.memo.is_some() && !kept {
            self.memo.insert(key.clone(), status);
        }
        Some(phase)
    }

    /// The open TaskRuns built (the settled ones keep their statuses).
    fn build_tasks(
        &mut self,
        inputs: &PlanInputs<'_>,
        bodies: &mut KindBodies<'_>,
        runs: &SettledRuns,
    ) {
        for key in runs.open() {
            if let Some(object) = inputs.world.objects.get(key) {
                self.build(key, object, inputs, bodies);
            }
        }
    }

    /// The VeilNodes: a node quiet in this pass and the last, whose object
    /// did not change, keeps its status; every other one is built.
    fn build_nodes(
        &mut self,
        inputs: &PlanInputs<'_>,
        bodies: &mut KindBodies<'_>,
        planner: &Planner,
    ) {
        for (key, object) in inputs.world.of_kind(Kind::VeilNode) {
            let quiet = bodies.quiet(&key.name);
            let kept = planner
                .quiet_nodes
                .get(key)
                .filter(|(_, timeout)| *timeout == inputs.node_timeout)
                .filter(|_| quiet && !planner.changed.contains(key));
            if let Some((phase, _)) = kept {
                *self
                    .phase_counts
                    .entry((key.kind, Arc::clone(phase)))
                    .or_default() += 1;
                self.quiet_nodes
                    .insert(key.clone(), (Arc::clone(phase), inputs.node_timeout));
                continue;
            }
            let phase = self.build(key, object, inputs, bodies);
            if let Some(phase) = phase.filter(|_| quiet) {
                self.quiet_nodes
                    .insert(key.clone(), (phase, inputs.node_timeout));
            }
        }
    }

    /// The kinds planned whole each pass: every object built.
    fn build_whole_kinds(&mut self, inputs: &PlanInputs<'_>, bodies: &mut KindBodies<'_>) {
        let planned_whole =
            |kind: &Kind| !matches!(kind, Kind::VlessKey | Kind::TaskRun | Kind::VeilNode);
        for kind in Kind::ALL.into_iter().filter(planned_whole) {
            for (key, object) in inputs.world.of_kind(kind) {
                self.build(key, object, inputs, bodies);
            }
        }
    }

    /// Drops `key`'s status and memo entry, if any.
    fn remove(&mut self, key: &ObjectKey) {
        if self.statuses.contains_key(key) {
            self.statuses.remove(key);
            self.touched.push(key.clone());
        }
        self.memo.remove(key);
    }
}
