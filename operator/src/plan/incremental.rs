//! Incremental planning: a [`Planner`] keeps what the last pass computed
//! and recomputes only what the changes since reach. Its plan equals
//! [`super::plan`]'s (the reference) for the same inputs: the property
//! test in `tests/incremental.rs` checks that after every step of random
//! histories.
//!
//! Today the VlessKeys, by far the most numerous objects, are planned
//! incrementally (see [`super::vless::KeyCache`] for what marks a key);
//! the other kinds are planned whole each pass.

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
}

impl Planner {
    /// Plans `inputs`; the same plan as [`super::plan`] gives.
    pub fn step(&mut self, inputs: &PlanInputs<'_>) -> Plan {
        plan_with(inputs, Some(self))
    }
}

/// The statuses of a pass whose previous statuses are the very ones the
/// key cache last recorded (nothing replaced any since): those, with every
/// object of the other kinds built again and the VlessKeys the cache
/// recomputed or forgot updated. The same statuses, phase counts and memo
/// entries as [`super::build_statuses`] gives, in time proportional to the
/// other kinds and the changed keys, not to every key.
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
    };
    for key in planner.runs.gone() {
        out.remove(key);
    }
    for key in planner.runs.open() {
        if let Some(object) = inputs.world.objects.get(key) {
            out.build(key, object, inputs, bodies);
        }
    }
    let planned_whole = |kind: &Kind| !matches!(kind, Kind::VlessKey | Kind::TaskRun);
    for kind in Kind::ALL.into_iter().filter(planned_whole) {
        let first = ObjectKey::new(kind, "", "");
        let gone: Vec<ObjectKey> = inputs
            .previous
            .range(first..)
            .take_while(|(key, _)| key.kind == kind)
            .filter(|(key, _)| !inputs.world.objects.contains_key(*key))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &gone {
            out.remove(key);
        }
        for (key, object) in inputs.world.of_kind(kind) {
            out.build(key, object, inputs, bodies);
        }
    }
    for key in cache.recomputed() {
        match inputs.world.objects.get(key) {
            Some(object) => out.build(key, object, inputs, bodies),
            None => out.remove(key),
        }
    }
    for key in cache.forgotten() {
        out.remove(key);
    }
    let mut phase_counts: BTreeMap<(Kind, String), i64> = out
        .phase_counts
        .into_iter()
        .filter(|((kind, _), _)| *kind != Kind::VlessKey)
        .map(|((kind, phase), count)| ((kind, phase.to_string()), count))
        .collect();
    for (phase, count) in cache.phase_counts() {
        phase_counts.insert((Kind::VlessKey, phase.to_string()), count);
    }
    for (phase, count) in planner.runs.phase_counts() {
        *phase_counts
            .entry((Kind::TaskRun, phase.to_string()))
            .or_default() += count;
    }
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
    }
}

/// The statuses being updated, with their memo and the phase counts of
/// the objects built.
struct Changed {
    statuses: Statuses,
    memo: StatusMemo,
    phase_counts: HashMap<(Kind, Arc<str>), i64>,
    /// Keys whose status was replaced or removed.
    touched: Vec<ObjectKey>,
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
    ) {
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
            return;
        };
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
