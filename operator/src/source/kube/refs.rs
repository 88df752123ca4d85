//! Which Secrets the objects reference, so that only those are watched.
//!
//! A reference is any mapping with a `name` under a field called
//! `secretRef`, `secretKeyRef` or ending in `SecretRef`
//! (`privateKeySecretRef`, `pskSecretRef`, `urlSecretRef`) anywhere in a
//! spec: the API's naming rule, so a field added later is covered without
//! touching this module. Secret references always name a Secret in the
//! object's own namespace (design §4).
//!
//! Pure.

use std::collections::BTreeSet;

use serde_json::Value;
use veil_crds::object::Object;

/// A Secret by namespace and name.
pub(super) type SecretName = (String, String);

/// Adds the Secrets `object` references to `out`.
pub(super) fn referenced_secrets(object: &Object, out: &mut BTreeSet<SecretName>) {
    let namespace = object.meta().namespace.as_deref().unwrap_or_default();
    if namespace.is_empty() {
        // Cluster-scoped objects (VeilNode) have no namespace to find a Secret in.
        return;
    }
    walk(&object.spec_value(), namespace, out);
}

fn walk(value: &Value, namespace: &str, out: &mut BTreeSet<SecretName>) {
    match value {
        Value::Object(fields) => {
            for (field, value) in fields {
                if is_secret_ref(field)
                    && let Some(name) = value.get("name").and_then(Value::as_str)
                {
                    out.insert((namespace.to_owned(), name.to_owned()));
                } else {
                    walk(value, namespace, out);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(item, namespace, out);
            }
        }
        _ => {}
    }
}

fn is_secret_ref(field: &str) -> bool {
    field == "secretRef" || field == "secretKeyRef" || field.ends_with("SecretRef")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use veil_crds::document::{Limits, parse_documents};

    use super::*;

    fn refs(yaml: &str) -> BTreeSet<SecretName> {
        let mut out = BTreeSet::new();
        for parsed in parse_documents(yaml, "team", &Limits::default()).unwrap() {
            referenced_secrets(&parsed.object, &mut out);
        }
        out
    }

    fn names(list: &[&str]) -> BTreeSet<SecretName> {
        list.iter()
            .map(|name| ("team".to_owned(), (*name).to_owned()))
            .collect()
    }

    #[test]
    fn every_kind_of_secret_reference_is_found_in_the_objects_namespace() {
        let found = refs(
            "
apiVersion: veil.dev/v1alpha1
kind: ProtocolServer
metadata: {name: edge}
spec:
  protocol: vless
  port: 8443
  vless:
    reality:
      privateKeySecretRef: {name: reality, key: privateKey}
      dest: www.example.com:443
      serverNames: [www.example.com]
---
apiVersion: veil.dev/v1alpha1
kind: TaskRun
metadata: {name: once}
spec:
  task:
    executor: shell
    shell: {command: ['true']}
    env:
      - {name: TOKEN, secretKeyRef: {name: deploy-token, key: token}}
      - {name: PLAIN, value: x}
",
        );
        assert_eq!(found, names(&["deploy-token", "reality"]));
    }

    #[test]
    fn objects_without_references_need_no_secret() {
        let found = refs(
            "
apiVersion: veil.dev/v1alpha1
kind: VlessKey
metadata: {name: alice}
spec:
  serverRef: {name: edge}
",
        );
        assert!(found.is_empty(), "{found:?}");
    }
}
