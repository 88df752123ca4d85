//! The statuses of the last pass, kept parsed, so a pass over 10,000
//! objects where a few changed does not parse, rebuild and serialize
//! 10,000 statuses again.
//!
//! Contract: a memo only ever saves work, never changes a result. An entry
//! is used only while the status the controller hands back as `previous`
//! is the very text the entry was made from (the same `Arc`), and a status
//! is reused only when it was computed from an equal body, equal
//! conditions and the same generation: recomputing it with itself as
//! `previous` keeps every `lastTransitionTime`, so it would come out the
//! same text (see [`MemoEntry::reusable`]). A status found in the cluster,
//! a status from an older pass, or any doubt means the status is computed
//! as without a memo.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;
use veil_crds::object::ObjectKey;

/// The statuses one pass produced, with their parsed form. Empty by
/// default (the first pass, tests).
#[derive(Clone, Debug, Default)]
pub struct StatusMemo {
    entries: BTreeMap<ObjectKey, MemoEntry>,
}

/// A status's conditions as the planners produce them: type, status,
/// reason, message.
pub type Conditions = [(&'static str, &'static str, String, String); 3];

/// One more condition a kind sets besides the kstatus three (a VeilNode's
/// `JournalWritable`).
pub type ExtraCondition = Option<(&'static str, &'static str, String, String)>;

/// One status as text and as the JSON it was serialized from.
#[derive(Clone, Debug)]
pub struct MemoEntry {
    pub raw: Arc<RawValue>,
    pub value: Arc<Value>,
    /// What the status was computed from; `None` when it cannot be reused
    /// (statuses not built from a body and conditions).
    pub inputs: Option<Arc<StatusInputs>>,
}

/// The inputs of `with_conditions` other than `previous` and `now`.
#[derive(Debug, PartialEq)]
pub struct StatusInputs {
    pub body: Value,
    pub conditions: Conditions,
    pub extra: ExtraCondition,
    pub generation: Option<i64>,
}

impl MemoEntry {
    /// Whether this status is what the same inputs give again, given it is
    /// itself the previous status. Condition types must be unique (a type
    /// listed twice would take the first one's transition time).
    pub fn reusable(&self, body: &Value, conditions: &Conditions, generation: Option<i64>) -> bool {
        self.reusable_with(body, conditions, &None, generation)
    }

    /// [`Self::reusable`] for a status with an extra condition.
    pub fn reusable_with(
        &self,
        body: &Value,
        conditions: &Conditions,
        extra: &ExtraCondition,
        generation: Option<i64>,
    ) -> bool {
        let Some(inputs) = &self.inputs else {
            return false;
        };
        let unique_types = conditions
            .iter()
            .enumerate()
            .all(|(i, c)| conditions[..i].iter().all(|d| d.0 != c.0))
            && extra
                .as_ref()
                .is_none_or(|x| conditions.iter().all(|c| c.0 != x.0));
        unique_types
            && inputs.extra == *extra
            && inputs.generation == generation
            && inputs.conditions == *conditions
            && inputs.body == *body
    }
}

impl StatusMemo {
    /// Builds a memo from entries in key order (as a pass produces them).
    pub fn from_sorted(entries: Vec<(ObjectKey, MemoEntry)>) -> StatusMemo {
        StatusMemo {
            entries: entries.into_iter().collect(),
        }
    }

    /// The entries in key order, for a merge with other key-ordered maps.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &MemoEntry)> {
        self.entries.iter()
    }

    /// Number of statuses held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the memo holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn conditions(message: &str) -> Conditions {
        let condition = |type_| (type_, "True", "Applied".to_owned(), message.to_owned());
        [
            condition("Ready"),
            condition("Reconciling"),
            condition("Stalled"),
        ]
    }

    fn entry() -> MemoEntry {
        let value = json!({"phase": "Ready"});
        MemoEntry {
            raw: crate::plan::raw_status(&value),
            value: Arc::new(value.clone()),
            inputs: Some(Arc::new(StatusInputs {
                body: value,
                conditions: conditions("ok"),
                extra: None,
                generation: Some(3),
            })),
        }
    }

    #[test]
    fn the_same_body_conditions_and_generation_are_reusable() {
        assert!(entry().reusable(&json!({"phase": "Ready"}), &conditions("ok"), Some(3)));
    }

    #[test]
    fn any_difference_or_no_inputs_is_not_reusable() {
        let body = json!({"phase": "Ready"});
        let entry = entry();
        assert!(!entry.reusable(&json!({"phase": "Failed"}), &conditions("ok"), Some(3)));
        assert!(!entry.reusable(&body, &conditions("other"), Some(3)));
        assert!(!entry.reusable(&body, &conditions("ok"), Some(4)));
        assert!(!entry.reusable(&body, &conditions("ok"), None));
        let mut twice = conditions("ok");
        twice[1].0 = "Ready";
        assert!(!entry.reusable(&body, &twice, Some(3)));
        let without_inputs = MemoEntry {
            inputs: None,
            ..entry
        };
        assert!(!without_inputs.reusable(&body, &conditions("ok"), Some(3)));
    }
}
