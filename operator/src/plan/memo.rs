//! What the last pass made of each status, kept small, so a pass over
//! 100,000 objects where a few changed does not parse, rebuild and
//! serialize 100,000 statuses again.
//!
//! An entry holds the status text (shared with the statuses themselves),
//! its phase, and a 128-bit fingerprint of the inputs it was built from
//! (body, conditions, generation): about 100 bytes per object, so dir and
//! Kubernetes mode both keep one.
//!
//! Contract: a memo only ever saves work, never changes a result. An entry
//! is used only while the status the controller hands back as `previous`
//! is the very text the entry was made from (the same `Arc`), and a status
//! is reused only when it was computed from inputs with the same
//! fingerprint: recomputing it with itself as `previous` keeps every
//! `lastTransitionTime`, so it would come out the same text (see
//! [`MemoEntry::reusable_with`]). A status found in the cluster, a status
//! from an older pass, or any doubt means the status is computed as
//! without a memo.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;
use veil_crds::object::ObjectKey;

/// Every object's entry, from the last pass: a persistent map, so the
/// incremental planner carries it to the next pass and updates only the
/// entries of the statuses it built again.
#[derive(Clone, Debug, Default)]
pub struct StatusMemo {
    entries: imbl::OrdMap<ObjectKey, MemoEntry>,
}

/// A status's three kstatus conditions: (type, status, reason, message).
pub type Conditions = [(&'static str, &'static str, String, String); 3];

/// One more condition some kinds add (a VeilNode's `JournalWritable`).
pub type ExtraCondition = Option<(&'static str, &'static str, String, String)>;

/// One status as the last pass built it.
#[derive(Clone, Debug)]
pub struct MemoEntry {
    /// The status text (the same `Arc` the plan's statuses hold).
    pub raw: Arc<RawValue>,
    /// `status.phase`, or `Unknown` without one (for the metrics).
    pub phase: Arc<str>,
    /// Fingerprint of the inputs it was built from; `None`: never reused.
    pub fingerprint: Option<u128>,
}

/// The inputs a status is built from, fingerprinted.
pub struct StatusInputs<'a> {
    pub body: &'a Value,
    pub conditions: &'a Conditions,
    pub extra: &'a ExtraCondition,
    pub generation: Option<i64>,
}

impl StatusInputs<'_> {
    /// 128 bits of SipHash over every input (two differently seeded states
    /// fed in one walk): equal inputs give equal fingerprints; different
    /// ones collide with probability about 2^-128. `None` when a condition
    /// type repeats (the rebuilt status could then depend on more than the
    /// inputs: such a status is never reused).
    pub fn fingerprint(&self) -> Option<u128> {
        if !self.unique_types() {
            return None;
        }
        let mut hasher = Pair::new();
        hash_value(self.body, &mut hasher);
        for (type_, status, reason, message) in self.conditions.iter().chain(self.extra.iter()) {
            (type_, status, reason, message).hash(&mut hasher);
        }
        self.extra.is_some().hash(&mut hasher);
        self.generation.hash(&mut hasher);
        Some(hasher.finish128())
    }

    /// Whether every condition type occurs once.
    fn unique_types(&self) -> bool {
        let conditions = self.conditions;
        conditions
            .iter()
            .enumerate()
            .all(|(i, c)| conditions[..i].iter().all(|d| d.0 != c.0))
            && self
                .extra
                .as_ref()
                .is_none_or(|x| conditions.iter().all(|c| c.0 != x.0))
    }
}

impl MemoEntry {
    /// Whether this entry was built from inputs with `fingerprint`, so
    /// building again (with this entry's text as `previous`) would give it
    /// again.
    pub fn built_from(&self, fingerprint: Option<u128>) -> bool {
        fingerprint.is_some() && self.fingerprint == fingerprint
    }

    /// [`MemoEntry::built_from`] the fingerprint of `inputs`.
    pub fn reusable_with(&self, inputs: &StatusInputs<'_>) -> bool {
        self.built_from(inputs.fingerprint())
    }
}

/// Two SipHash states fed the same bytes, for a 128-bit fingerprint.
struct Pair(DefaultHasher, DefaultHasher);

impl Pair {
    fn new() -> Pair {
        let mut second = DefaultHasher::new();
        second.write_u64(0x7665_696c_6d65_6d6f);
        Pair(DefaultHasher::new(), second)
    }

    fn finish128(&self) -> u128 {
        (u128::from(self.0.finish()) << 64) | u128::from(self.1.finish())
    }
}

impl Hasher for Pair {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
        self.1.write(bytes);
    }

    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// Feeds `value` to `hasher` unambiguously (a tag and a length per node).
fn hash_value(value: &Value, hasher: &mut impl Hasher) {
    match value {
        Value::Null => hasher.write_u8(0),
        Value::Bool(b) => {
            hasher.write_u8(1);
            b.hash(hasher);
        }
        Value::Number(n) => {
            hasher.write_u8(2);
            if let Some(u) = n.as_u64() {
                hasher.write_u8(0);
                hasher.write_u64(u);
            } else if let Some(i) = n.as_i64() {
                hasher.write_u8(1);
                hasher.write_i64(i);
            } else {
                hasher.write_u8(2);
                hasher.write_u64(n.as_f64().unwrap_or_default().to_bits());
            }
        }
        Value::String(s) => {
            hasher.write_u8(3);
            s.hash(hasher);
        }
        Value::Array(items) => {
            hasher.write_u8(4);
            hasher.write_usize(items.len());
            for item in items {
                hash_value(item, hasher);
            }
        }
        Value::Object(map) => {
            hasher.write_u8(5);
            hasher.write_usize(map.len());
            for (key, item) in map {
                key.hash(hasher);
                hash_value(item, hasher);
            }
        }
    }
}

impl StatusMemo {
    /// A memo of `entries`, given in key order.
    pub fn from_sorted(entries: Vec<(ObjectKey, MemoEntry)>) -> StatusMemo {
        StatusMemo {
            entries: entries.into_iter().collect(),
        }
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, &MemoEntry)> {
        self.entries.iter()
    }

    /// The entry of `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<&MemoEntry> {
        self.entries.get(key)
    }

    /// Keeps `entry` for `key`.
    pub fn insert(&mut self, key: ObjectKey, entry: MemoEntry) {
        self.entries.insert(key, entry);
    }

    /// Forgets `key`'s entry.
    pub fn remove(&mut self, key: &ObjectKey) {
        if self.entries.contains_key(key) {
            self.entries.remove(key);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

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

    fn entry(body: &Value, conditions: &Conditions, generation: Option<i64>) -> MemoEntry {
        MemoEntry {
            raw: crate::plan::raw_status(body),
            phase: Arc::from("Ready"),
            fingerprint: StatusInputs {
                body,
                conditions,
                extra: &None,
                generation,
            }
            .fingerprint(),
        }
    }

    fn inputs<'a>(
        body: &'a Value,
        conditions: &'a Conditions,
        generation: Option<i64>,
    ) -> StatusInputs<'a> {
        StatusInputs {
            body,
            conditions,
            extra: &None,
            generation,
        }
    }

    #[test]
    fn the_same_body_conditions_and_generation_are_reusable() {
        let body = json!({"phase": "Ready", "nodes": [{"name": "a", "users": 3}]});
        let entry = entry(&body, &conditions("ok"), Some(3));
        assert!(entry.reusable_with(&inputs(&body.clone(), &conditions("ok"), Some(3))));
    }

    #[test]
    fn any_difference_or_no_fingerprint_is_not_reusable() {
        let body = json!({"phase": "Ready", "users": 3, "ratio": 0.5, "on": true, "x": null});
        let entry = entry(&body, &conditions("ok"), Some(3));
        for other in [
            json!({"phase": "Ready", "users": 4, "ratio": 0.5, "on": true, "x": null}),
            json!({"phase": "Ready", "users": 3, "ratio": 0.25, "on": true, "x": null}),
            json!({"phase": "Ready", "users": 3, "ratio": 0.5, "on": false, "x": null}),
            json!({"phase": "Ready", "users": 3, "ratio": 0.5, "on": true, "x": ""}),
            json!({"phase": "Ready", "users": -3, "ratio": 0.5, "on": true, "x": null}),
            json!({"phase": "Ready", "users": "3", "ratio": 0.5, "on": true, "x": null}),
            json!({"phase": "Ready", "users": [3], "ratio": 0.5, "on": true, "x": null}),
            json!({"phase": "Ready", "users": 3, "ratio": 0.5, "on": true}),
        ] {
            assert!(
                !entry.reusable_with(&inputs(&other, &conditions("ok"), Some(3))),
                "{other}"
            );
        }
        assert!(!entry.reusable_with(&inputs(&body, &conditions("changed"), Some(3))));
        assert!(!entry.reusable_with(&inputs(&body, &conditions("ok"), Some(4))));
        assert!(!entry.reusable_with(&inputs(&body, &conditions("ok"), None)));
        let extra = Some((
            "JournalWritable",
            "True",
            "Writable".to_owned(),
            String::new(),
        ));
        assert!(!entry.reusable_with(&StatusInputs {
            body: &body,
            conditions: &conditions("ok"),
            extra: &extra,
            generation: Some(3),
        }));
        let blind = MemoEntry {
            fingerprint: None,
            ..entry.clone()
        };
        assert!(!blind.reusable_with(&inputs(&body, &conditions("ok"), Some(3))));
    }

    #[test]
    fn strings_are_delimited_in_the_fingerprint() {
        let a = json!(["ab", "c"]);
        let b = json!(["a", "bc"]);
        assert_ne!(
            inputs(&a, &conditions("ok"), None).fingerprint(),
            inputs(&b, &conditions("ok"), None).fingerprint()
        );
        let nested = json!({"a": {"b": 1}});
        let flat = json!({"a": {}, "b": 1});
        assert_ne!(
            inputs(&nested, &conditions("ok"), None).fingerprint(),
            inputs(&flat, &conditions("ok"), None).fingerprint()
        );
    }

    #[test]
    fn repeated_condition_types_are_never_reused() {
        let body = json!({});
        let mut twice = conditions("ok");
        twice[1].0 = "Ready";
        let entry = entry(&body, &twice, None);
        assert!(!entry.reusable_with(&inputs(&body, &twice, None)));
    }
}
