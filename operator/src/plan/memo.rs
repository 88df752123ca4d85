//! The statuses of the last pass, kept parsed, so a pass over 10,000
//! objects where a few changed does not parse, rebuild and serialize
//! 10,000 statuses again.
//!
//! Contract: a memo only ever saves work, never changes a result. An entry
//! is used only while the status the controller hands back as `previous`
//! is the very text the entry was made from (the same `Arc`), and a status
//! is reused only when recomputing it from the same body, conditions and
//! generation would give the same text (see [`unchanged`]). A status found
//! in the cluster, a status from an older pass, or any doubt means the
//! status is computed as without a memo.

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

/// One status as text and as the JSON it was serialized from.
#[derive(Clone, Debug)]
pub struct MemoEntry {
    pub raw: Arc<RawValue>,
    pub value: Arc<Value>,
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

/// Whether `status` is exactly what `with_conditions(body, Some(status),
/// conditions, generation, _)` would produce: every member of `body` (but
/// the two it sets itself) equal, nothing else but `observedGeneration`
/// and `conditions`, and each condition with the same type, status,
/// reason, message and generation in the same order — so every
/// `lastTransitionTime` would be kept and `now` would not show.
pub fn unchanged(
    status: &Value,
    body: &Value,
    conditions: &[(&str, &str, String, String)],
    generation: Option<i64>,
) -> bool {
    let (Some(status), Some(body)) = (status.as_object(), body.as_object()) else {
        return false;
    };
    let own =
        |key: &str| key == "conditions" || (key == "observedGeneration" && generation.is_some());
    let mut expected_len = 1 + usize::from(generation.is_some());
    for (key, value) in body {
        if own(key) {
            continue;
        }
        expected_len += 1;
        if status.get(key) != Some(value) {
            return false;
        }
    }
    if status.len() != expected_len {
        return false;
    }
    if let Some(generation) = generation
        && status.get("observedGeneration").and_then(Value::as_i64) != Some(generation)
    {
        return false;
    }
    let Some(written) = status.get("conditions").and_then(Value::as_array) else {
        return false;
    };
    if written.len() != conditions.len() {
        return false;
    }
    conditions.iter().zip(written).enumerate().all(
        |(i, ((type_, state, reason, message), condition))| {
            let field = |name: &str| condition.get(name).and_then(Value::as_str);
            // A type listed twice would take the first one's time.
            let first_of_type = conditions[..i].iter().all(|c| c.0 != *type_);
            let fields = condition.as_object().map_or(0, serde_json::Map::len);
            first_of_type
                && field("type") == Some(type_)
                && field("status") == Some(state)
                && field("reason") == Some(reason.as_str())
                && field("message") == Some(message.as_str())
                && field("lastTransitionTime").is_some()
                && condition.get("observedGeneration").and_then(Value::as_i64) == generation
                && fields == 5 + usize::from(generation.is_some())
        },
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::unchanged;

    fn conditions(message: &str) -> [(&'static str, &'static str, String, String); 1] {
        [("Ready", "True", "Applied".to_owned(), message.to_owned())]
    }

    fn status() -> serde_json::Value {
        json!({
            "phase": "Ready",
            "observedGeneration": 3,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "Applied", "message": "ok",
                "lastTransitionTime": "2026-11-23T12:00:00Z", "observedGeneration": 3,
            }],
        })
    }

    #[test]
    fn the_same_body_conditions_and_generation_are_unchanged() {
        assert!(unchanged(
            &status(),
            &json!({"phase": "Ready"}),
            &conditions("ok"),
            Some(3)
        ));
    }

    #[test]
    fn any_difference_is_a_change() {
        let body = json!({"phase": "Ready"});
        assert!(!unchanged(
            &status(),
            &json!({"phase": "Failed"}),
            &conditions("ok"),
            Some(3)
        ));
        assert!(!unchanged(
            &status(),
            &json!({"phase": "Ready", "x": 1}),
            &conditions("ok"),
            Some(3)
        ));
        assert!(!unchanged(
            &status(),
            &json!({}),
            &conditions("ok"),
            Some(3)
        ));
        assert!(!unchanged(&status(), &body, &conditions("other"), Some(3)));
        assert!(!unchanged(&status(), &body, &conditions("ok"), Some(4)));
        assert!(!unchanged(&status(), &body, &conditions("ok"), None));
        assert!(!unchanged(&status(), &body, &[], Some(3)));
        let mut extra = status();
        extra["extra"] = json!(true);
        assert!(!unchanged(&extra, &body, &conditions("ok"), Some(3)));
    }
}
