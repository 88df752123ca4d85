//! Shapes shared by several kinds: conditions, status plumbing, selectors,
//! Secret references, environment variables and per-node workload status.
//!
//! Nothing here knows about a particular kind; kind modules compose these.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{FieldErrors, Rfc3339};

mod selector;

pub use selector::{LabelSelector, LabelSelectorRequirement, SelectorOperator};

/// kstatus condition type: the object's desired state is in effect.
pub const READY: &str = "Ready";
/// kstatus condition type: the operator is still working towards the desired state.
pub const RECONCILING: &str = "Reconciling";
/// kstatus condition type: progress stopped and needs a change from a person.
pub const STALLED: &str = "Stalled";

/// The value of a condition, as in Kubernetes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    #[default]
    Unknown,
}

/// One observation about an object, following kstatus (`Ready`, `Reconciling`,
/// `Stalled`) so `kubectl wait --for=condition=Ready` and Flux health checks work.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type: `Ready`, `Reconciling` or `Stalled`.
    #[serde(rename = "type", default)]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[serde(default)]
    pub status: ConditionStatus,
    /// Machine-readable reason in CamelCase, e.g. `NodeLost`, `NotImplemented`, `InvalidSpec`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human-readable explanation: what happened and what to do about it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Rfc3339>,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Sets the condition of `type_` in `conditions`. `lastTransitionTime` becomes
/// `now` only when the condition is new or its status changed, so it records
/// transitions, not reconciles. Returns whether anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition, now: &Rfc3339) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            let last_transition_time =
                if old.status == new.status && old.last_transition_time.is_some() {
                    old.last_transition_time.clone()
                } else {
                    Some(now.clone())
                };
            let new = Condition {
                last_transition_time,
                ..new
            };
            let changed = *old != new;
            *old = new;
            changed
        }
        None => {
            conditions.push(Condition {
                last_transition_time: Some(now.clone()),
                ..new
            });
            true
        }
    }
}

/// What every status offers the reconciler, whatever the kind.
pub trait ObjectStatus {
    /// The `metadata.generation` the status was computed from.
    fn observed_generation(&self) -> Option<i64>;
    /// Records the generation the status was computed from.
    fn set_observed_generation(&mut self, generation: Option<i64>);
    /// The kstatus conditions.
    fn conditions(&self) -> &[Condition];
    /// The kstatus conditions, to change.
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;

    /// Sets one condition (see [`set_condition`]); returns whether anything changed.
    fn set_condition(&mut self, condition: Condition, now: &Rfc3339) -> bool {
        set_condition(self.conditions_mut(), condition, now)
    }

    /// The condition of `type_`, if present.
    fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions().iter().find(|c| c.type_ == type_)
    }
}

/// Implements [`ObjectStatus`] for a status struct with `observed_generation`
/// and `conditions` fields.
macro_rules! impl_object_status {
    ($ty:ty) => {
        impl $crate::common::ObjectStatus for $ty {
            fn observed_generation(&self) -> Option<i64> {
                self.observed_generation
            }
            fn set_observed_generation(&mut self, generation: Option<i64>) {
                self.observed_generation = generation;
            }
            fn conditions(&self) -> &[$crate::common::Condition] {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<$crate::common::Condition> {
                &mut self.conditions
            }
        }
    };
}
pub(crate) use impl_object_status;

/// A reference to a whole Secret in the object's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace as this object (e.g. `reality-key`).
    pub name: crate::validate::DnsName,
}

/// A reference to one key of a Secret in the object's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as this object (e.g. `deploy-token`).
    pub name: crate::validate::DnsName,
    /// Key inside the Secret's `data`/`stringData` (e.g. `token`).
    pub key: String,
}

/// A reference to one key of a ConfigMap in the object's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap, in the same namespace as this object.
    pub name: crate::validate::DnsName,
    /// Key inside the ConfigMap's `data`.
    pub key: String,
}

/// One environment variable for a process: a literal `value` or a `secretKeyRef`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    /// Variable name: letters, digits and `_`, not starting with a digit (e.g. `DEPLOY_ENV`).
    pub name: String,
    /// Literal value. Exactly one of `value` and `secretKeyRef` must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Take the value from a Secret key; it is never logged or shown in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

impl EnvVar {
    /// Checks the name and that exactly one source is set.
    pub fn validate(&self, path: &str, errors: &mut FieldErrors) {
        let valid_name = self
            .name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            errors.push(
                format!("{path}.name"),
                format!(
                    "`{}` is not a valid variable name; use letters, digits and `_`, not starting with a digit (e.g. `DEPLOY_ENV`)",
                    self.name
                ),
            );
        }
        match (&self.value, &self.secret_key_ref) {
            (Some(_), Some(_)) => errors.push(
                path,
                "both `value` and `secretKeyRef` are set; keep exactly one",
            ),
            (None, None) => errors.push(
                path,
                "neither `value` nor `secretKeyRef` is set; write `value: ...` or `secretKeyRef: {name: ..., key: ...}`",
            ),
            _ => {}
        }
    }
}

/// Checks a list of variables: each valid, no name twice.
pub fn validate_env(env: &[EnvVar], path: &str, errors: &mut FieldErrors) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, var) in env.iter().enumerate() {
        let item = format!("{path}[{i}]");
        var.validate(&item, errors);
        if !seen.insert(var.name.as_str()) {
            errors.push(
                format!("{item}.name"),
                format!("`{}` is set twice; keep one entry per variable", var.name),
            );
        }
    }
}

/// Lifecycle of one workload on one node, as the agent reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadPhase {
    /// Assigned, not yet applied by the agent.
    #[default]
    Pending,
    /// Applied; the process is starting or the change is being applied.
    Starting,
    /// In effect on the node.
    Running,
    /// Could not be applied or keeps failing; see `message`.
    Failed,
    /// Stopped on purpose (node cordoned, object disabled).
    Stopped,
}

/// The state of one object's work on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeWorkloadStatus {
    /// Name of the `VeilNode`.
    #[serde(default)]
    pub node: String,
    /// `Pending`, `Starting`, `Running`, `Failed` or `Stopped`.
    #[serde(default)]
    pub phase: WorkloadPhase,
    /// Why the workload is in this phase, and what to do when it is `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Assignment revision the agent last applied on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_revision: Option<i64>,
    /// When the agent last reported on this workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Rfc3339>,
}

/// Schema of an `Option<Enum>` field: the enum's values, `nullable`, and no
/// description of its own, so the field's doc stays its description (kube's
/// optional-enum rewrite would otherwise replace it with the enum type's doc).
pub(crate) fn optional_enum_schema<T: JsonSchema>(
    generator: &mut schemars::SchemaGenerator,
) -> schemars::Schema {
    let mut schema = generator.subschema_for::<T>();
    if let Some(map) = schema.as_object_mut() {
        map.remove("description");
        map.insert("nullable".into(), serde_json::Value::Bool(true));
    }
    schema
}

/// `skip_serializing_if` helper for `bool` fields that default to `false`.
pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}

/// `skip_serializing_if` helper for `bool` fields that default to `true`.
pub(crate) fn is_true(value: &bool) -> bool {
    *value
}

/// serde default for `bool` fields that default to `true`.
pub(crate) fn default_true() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: ConditionStatus, reason: &str) -> Condition {
        Condition {
            type_: READY.into(),
            status,
            reason: reason.into(),
            ..Condition::default()
        }
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let t1 = Rfc3339::parse("2026-01-01T00:00:00Z").unwrap();
        let t2 = Rfc3339::parse("2026-01-01T00:05:00Z").unwrap();
        let mut conditions = Vec::new();
        assert!(set_condition(
            &mut conditions,
            ready(ConditionStatus::False, "Starting"),
            &t1
        ));
        assert!(set_condition(
            &mut conditions,
            ready(ConditionStatus::False, "Waiting"),
            &t2
        ));
        assert_eq!(conditions[0].last_transition_time, Some(t1.clone()));
        assert!(!set_condition(
            &mut conditions,
            ready(ConditionStatus::False, "Waiting"),
            &t2
        ));
        assert!(set_condition(
            &mut conditions,
            ready(ConditionStatus::True, "Running"),
            &t2
        ));
        assert_eq!(conditions[0].last_transition_time, Some(t2));
    }
}
