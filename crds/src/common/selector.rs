//! Label selectors, as in Kubernetes (`matchLabels` AND `matchExpressions`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{FieldErrors, LabelKey, LabelValue};

/// Picks objects (usually `VeilNode`s) by their labels. All `matchLabels` and all
/// `matchExpressions` must hold. An empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values, e.g. `{region: eu-west}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<LabelKey, LabelValue>,
    /// Set-based requirements, e.g. `{key: role, operator: In, values: [edge, relay]}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based requirement on a label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label key the requirement is about.
    pub key: LabelKey,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: SelectorOperator,
    /// Values for `In`/`NotIn` (at least one); must be empty for `Exists`/`DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<LabelValue>,
}

/// How a requirement compares a label with its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    /// The label is present and its value is one of `values`.
    In,
    /// The label is absent, or its value is none of `values`.
    NotIn,
    /// The label is present, whatever its value.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| {
            labels
                .get(k.as_str())
                .is_some_and(|have| have == v.as_str())
        }) && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector has no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Checks that each operator has the values it needs (`path` is the selector's field path).
    pub fn validate(&self, path: &str, errors: &mut FieldErrors) {
        for (i, r) in self.match_expressions.iter().enumerate() {
            let at = format!("{path}.matchExpressions[{i}]");
            match r.operator {
                SelectorOperator::In | SelectorOperator::NotIn if r.values.is_empty() => {
                    errors.push(
                        format!("{at}.values"),
                        format!(
                            "operator `{:?}` needs at least one value; write e.g. `values: [edge]`, or use `Exists`",
                            r.operator
                        ),
                    )
                }
                SelectorOperator::Exists | SelectorOperator::DoesNotExist if !r.values.is_empty() => {
                    errors.push(
                        format!("{at}.values"),
                        format!(
                            "operator `{:?}` takes no values; remove `values`, or use `In`/`NotIn`",
                            r.operator
                        ),
                    )
                }
                _ => {}
            }
        }
    }
}

impl LabelSelectorRequirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(self.key.as_str());
        let listed = || value.is_some_and(|v| self.values.iter().any(|w| w.as_str() == v));
        match self.operator {
            SelectorOperator::In => listed(),
            SelectorOperator::NotIn => !listed(),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn selector(yaml: &str) -> LabelSelector {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn match_labels_and_expressions_all_hold() {
        let s = selector(
            "matchLabels: {region: eu}\nmatchExpressions:\n- {key: role, operator: In, values: [edge, relay]}\n- {key: cordon, operator: DoesNotExist}",
        );
        assert!(s.matches(&labels(&[("region", "eu"), ("role", "edge")])));
        assert!(!s.matches(&labels(&[("region", "eu"), ("role", "db")])));
        assert!(!s.matches(&labels(&[
            ("region", "eu"),
            ("role", "edge"),
            ("cordon", "")
        ])));
        assert!(!s.matches(&labels(&[("role", "edge")])));
        assert!(LabelSelector::default().matches(&labels(&[])));
    }

    #[test]
    fn not_in_matches_absent_labels() {
        let s = selector("matchExpressions: [{key: role, operator: NotIn, values: [db]}]");
        assert!(s.matches(&labels(&[])));
        assert!(!s.matches(&labels(&[("role", "db")])));
    }

    #[test]
    fn operators_need_the_right_values() {
        let s = selector(
            "matchExpressions: [{key: a, operator: In}, {key: b, operator: Exists, values: [x]}]",
        );
        let mut errors = FieldErrors::default();
        s.validate("spec.nodeSelector", &mut errors);
        let errors = errors.into_result().unwrap_err();
        assert_eq!(
            errors[0].path,
            "spec.nodeSelector.matchExpressions[0].values"
        );
        assert_eq!(
            errors[1].path,
            "spec.nodeSelector.matchExpressions[1].values"
        );
    }
}
