//! What the controller reads back from the store when it starts: the
//! objects it made itself, schedule times, registered nodes, the statuses
//! last written and the credentials it generated.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use veil_crds::object::ObjectKey;

use super::generated_object;
use crate::agents::{Agents, NodeObservation};
use crate::plan::Statuses;
use crate::plan::vless::{GeneratedSecrets, REALITY_KEY_SCOPE, VLESS_ID_SCOPE};
use crate::source::SourcedObject;
use crate::store::{Store, StoreError};
use crate::world::object_key;

/// The objects the operator made (TaskRuns of Schedules), by key.
pub(super) async fn generated_objects(
    store: &Store,
) -> Result<BTreeMap<ObjectKey, SourcedObject>, StoreError> {
    Ok(store
        .generated_objects()
        .await?
        .iter()
        .filter_map(|record| generated_object(&record.document))
        .collect())
}

/// The last schedule time of every Schedule.
pub(super) async fn schedule_times(
    store: &Store,
) -> Result<BTreeMap<ObjectKey, DateTime<Utc>>, StoreError> {
    Ok(store
        .schedule_states()
        .await?
        .into_iter()
        .filter_map(|(reference, time)| Some((object_key(&reference)?, time)))
        .collect())
}

/// Registered nodes, known again (their reports start over: nothing of
/// what they ran is assumed).
pub(super) async fn nodes(store: &Store, agents: &Agents) -> Result<(), StoreError> {
    for record in store.nodes().await? {
        if let Ok(registration) = serde_json::from_value(record.registration.clone()) {
            agents.restore(NodeObservation::registered(
                registration,
                record.registered_at,
                record.last_seen,
            ));
        }
    }
    Ok(())
}

/// The statuses last written.
pub(super) async fn statuses(store: &Store) -> Result<Statuses, StoreError> {
    Ok(store
        .statuses()
        .await?
        .into_iter()
        .filter_map(|(reference, status)| {
            Some((object_key(&reference)?, crate::plan::raw_status(&status)))
        })
        .collect())
}

/// The VLESS ids and Reality keys the operator generated.
pub(super) async fn secrets(store: &Store) -> Result<GeneratedSecrets, StoreError> {
    Ok(GeneratedSecrets {
        vless_ids: store
            .generated_values(VLESS_ID_SCOPE)
            .await?
            .into_iter()
            .collect(),
        reality_keys: store
            .generated_values(REALITY_KEY_SCOPE)
            .await?
            .into_iter()
            .collect(),
    })
}
