//! `plan`: pure functions from the world, what agents observed and the
//! statuses last written, to everything that should be true now: statuses,
//! run placements and each node's assignment.
//!
//! Nothing here performs I/O or reads the clock: `now` is an input, so every
//! rule is unit-tested from YAML without a server.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};
use veil_crds::wire::TaskAssignment;

use crate::agents::NodeObservation;
use crate::store::RunStateRecord;
use crate::world::World;

pub mod conditions;
mod nodes;
mod not_implemented;
pub mod tasks;

use conditions::{ConditionUpdate, set_conditions};

/// Statuses by object, shared cheaply between the controller and readers.
pub type Statuses = BTreeMap<ObjectKey, Arc<Value>>;

/// Everything `plan` reads.
pub struct PlanInputs<'a> {
    pub world: &'a World,
    /// The statuses last written (condition transition times are kept from them).
    pub previous: &'a Statuses,
    pub nodes: &'a BTreeMap<String, NodeObservation>,
    pub runs: &'a BTreeMap<String, RunStateRecord>,
    pub now: DateTime<Utc>,
    /// A node silent longer than this is NotReady.
    pub node_timeout: chrono::Duration,
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
    /// Every node's task assignments.
    pub assignments: BTreeMap<String, Vec<TaskAssignment>>,
}

/// Computes the plan.
pub fn plan(inputs: &PlanInputs<'_>) -> Plan {
    let task_inputs = tasks::TaskInputs {
        world: inputs.world,
        nodes: inputs.nodes,
        runs: inputs.runs,
        now: inputs.now,
        node_timeout: inputs.node_timeout,
    };
    let task_plan = tasks::plan_tasks(&task_inputs);
    // Statuses see the run states as they will be after this pass.
    let mut runs = inputs.runs.clone();
    for change in &task_plan.run_changes {
        runs.insert(change.uid.clone(), change.clone());
    }
    let views = tasks::node_views(&task_inputs);

    let mut statuses = Statuses::new();
    for (key, object) in &inputs.world.objects {
        let generation = object.object.meta().generation;
        let previous = inputs.previous.get(key).map(|v| &**v);
        let status = match &object.object {
            Object::Secret(_) => continue,
            Object::TaskRun(run) => {
                let uid = run.metadata.uid.as_deref().unwrap_or_default();
                let state = runs.get(uid);
                let runner = None;
                let (body, conditions) = tasks::task_run_status(
                    generation,
                    state,
                    task_plan.pending_reasons.get(uid),
                    runner,
                );
                with_conditions(body, previous, &conditions, generation, inputs.now)
            }
            Object::Runner(runner) => {
                let (body, conditions) = nodes::runner_status(runner, &views, &runs);
                with_conditions(body, previous, &conditions, generation, inputs.now)
            }
            Object::VeilNode(_) => {
                let (body, conditions) =
                    nodes::node_status(views.get(key.name.as_str()), &runs, inputs.node_timeout);
                with_conditions(body, previous, &conditions, generation, inputs.now)
            }
            _ => not_implemented::status(key.kind, generation, previous, inputs.now),
        };
        statuses.insert(key.clone(), Arc::new(status));
    }
    debug_assert!(statuses.keys().all(|k| k.kind != Kind::Secret));
    Plan {
        statuses,
        run_changes: task_plan.run_changes,
        stale_runs: task_plan.stale_runs,
        assignments: task_plan.assignments,
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
mod tests;
