//! `plan`: pure functions from the world (and the statuses last written) to
//! the statuses every object should have now.
//!
//! Nothing here performs I/O or reads the clock: `now` is an argument, so
//! every rule is unit-tested from YAML without a server. Later work adds
//! per-node assignments and task runs to [`Plan`].

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;
use veil_crds::kind::Kind;
use veil_crds::object::ObjectKey;

use crate::world::World;

pub mod conditions;
mod not_implemented;

/// Statuses by object, shared cheaply between the controller and readers.
pub type Statuses = BTreeMap<ObjectKey, Arc<Value>>;

/// What the world should look like after this pass.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The status every object with a status should have (Secrets have none).
    pub statuses: Statuses,
}

/// Computes the plan. `previous` holds the statuses last written, so that
/// condition transition times survive passes in which nothing changed.
pub fn plan(world: &World, previous: &Statuses, now: DateTime<Utc>) -> Plan {
    let mut statuses = Statuses::new();
    for (key, object) in &world.objects {
        if key.kind == Kind::Secret {
            continue;
        }
        let generation = object.object.meta().generation;
        let status =
            not_implemented::status(key.kind, generation, previous.get(key).map(|v| &**v), now);
        statuses.insert(key.clone(), Arc::new(status));
    }
    Plan { statuses }
}

#[cfg(test)]
mod tests;
