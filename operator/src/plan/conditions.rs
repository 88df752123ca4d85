//! kstatus conditions on JSON statuses: `Ready`, `Reconciling`, `Stalled`.
//!
//! A condition's `lastTransitionTime` changes only when its `status`
//! changes, so recomputing an unchanged status yields an identical document
//! and nothing is written.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::world::timestamp;

/// One condition to set: type, `True`/`False`/`Unknown`, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate<'a> {
    pub type_: &'a str,
    pub status: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
}

/// Sets `updates` on `status.conditions`, keeping `lastTransitionTime` from
/// `previous` for conditions whose status did not change, and stamping
/// `observedGeneration` on each.
pub fn set_conditions(
    status: &mut Map<String, Value>,
    previous: Option<&Value>,
    updates: &[ConditionUpdate<'_>],
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let now = timestamp(now);
    let conditions: Vec<Value> = updates
        .iter()
        .map(|update| {
            let kept = previous
                .and_then(|p| p.get("conditions"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(update.type_))
                .filter(|c| c.get("status").and_then(Value::as_str) == Some(update.status))
                .and_then(|c| c.get("lastTransitionTime").cloned());
            let mut condition = json!({
                "type": update.type_,
                "status": update.status,
                "reason": update.reason,
                "message": update.message,
                "lastTransitionTime": kept.unwrap_or_else(|| Value::String(now.clone())),
            });
            if let (Some(generation), Some(map)) = (generation, condition.as_object_mut()) {
                map.insert("observedGeneration".into(), generation.into());
            }
            condition
        })
        .collect();
    status.insert("conditions".into(), Value::Array(conditions));
}
