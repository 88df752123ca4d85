//! One object from the API server → the [`Object`] a file with the same
//! content would give, or the errors a file would get.
//!
//! The object is re-encoded as a JSON document (a JSON text is a YAML
//! document) without `status` and without the server's bookkeeping that
//! changes on every write (`managedFields`, `resourceVersion`), and handed
//! to the same parser and validation as a file. Server-set metadata the
//! world needs (`uid`, `generation`, `creationTimestamp`, owner references)
//! is kept: in Kubernetes mode the API server, not the operator, assigns it.
//!
//! Pure: no I/O, no clock.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use kube::api::DynamicObject;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use veil_crds::document::{DocumentError, Limits, parse_documents};
use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};

use crate::source::SourceError;

/// One object as the API server sent it, re-encoded but not yet validated.
#[derive(Clone, Debug)]
pub(super) struct Prepared {
    pub key: ObjectKey,
    /// Hash of everything but `status` and the write bookkeeping: equal
    /// fingerprints mean the desired state did not change, and the object
    /// need not be validated again.
    pub fingerprint: u64,
    /// `metadata.uid`, to tell a re-created object from an updated one.
    pub uid: Option<String>,
    /// The status the object carries, as compact JSON text.
    pub status: Option<Arc<RawValue>>,
    /// The document handed to the parser.
    text: String,
}

/// Re-encodes a watched object of `kind`; `None` when it has no name (the
/// API server never sends one).
pub(super) fn prepare(kind: Kind, object: DynamicObject) -> Option<Prepared> {
    let DynamicObject {
        mut metadata, data, ..
    } = object;
    let name = metadata.name.clone()?;
    let namespace = metadata.namespace.clone().unwrap_or_default();
    let key = ObjectKey::new(kind, &namespace, &name);
    metadata.managed_fields = None;
    metadata.resource_version = None;
    let uid = metadata.uid.clone();

    let mut document = Map::new();
    document.insert("apiVersion".into(), kind.api_version().into());
    document.insert("kind".into(), kind.as_str().into());
    let mut status = None;
    if let Value::Object(fields) = data {
        for (field, value) in fields {
            match field.as_str() {
                // Already set from the kind being watched.
                "apiVersion" | "kind" | "metadata" => {}
                "status" => status = Some(value),
                _ => {
                    document.insert(field, value);
                }
            }
        }
    }
    // Serialising plain metadata cannot fail; a failure would only drop it,
    // and the parser then reports the missing name.
    document.insert(
        "metadata".into(),
        serde_json::to_value(&metadata).unwrap_or(Value::Null),
    );
    let text = Value::Object(document).to_string();
    let fingerprint = {
        let mut hasher = DefaultHasher::new();
        text.hash(&mut hasher);
        hasher.finish()
    };
    Some(Prepared {
        key,
        fingerprint,
        uid,
        status: status
            .filter(|s| !s.is_null())
            .map(|s| crate::plan::raw_status(&s)),
        text,
    })
}

impl Prepared {
    /// The object, or why Veil refuses it (never an empty list): the same
    /// parser and validation a file gets.
    pub fn validate(&self) -> Result<Object, Vec<SourceError>> {
        let limits = Limits {
            max_bytes: self.text.len().max(Limits::default().max_bytes),
            max_objects: 1,
        };
        match parse_documents(&self.text, &self.key.namespace, &limits) {
            Ok(parsed) => match parsed.into_iter().next() {
                Some(parsed) => Ok(parsed.object),
                None => Err(vec![SourceError {
                    object: Some(self.key.to_string()),
                    ..SourceError::global("the object is empty")
                }]),
            },
            Err(errors) => Err(errors
                .into_iter()
                .map(|error| from_document(&self.key, error))
                .collect()),
        }
    }
}

/// A parser error about the object `key`: lines and columns of the
/// re-encoded text mean nothing to a user, the object and field path do.
fn from_document(key: &ObjectKey, error: DocumentError) -> SourceError {
    SourceError {
        file: None,
        line: 0,
        column: 0,
        object: Some(error.object.unwrap_or_else(|| key.to_string())),
        path: error.path,
        message: error.message,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use serde_json::json;

    use super::*;

    fn dynamic(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn key_object(port_of_server: &str, status: Value) -> DynamicObject {
        dynamic(json!({
            "apiVersion": "veil.dev/v1alpha1",
            "kind": "VlessKey",
            "metadata": {
                "name": "alice",
                "namespace": "team",
                "uid": "u-1",
                "generation": 3,
                "resourceVersion": "812",
                "creationTimestamp": "2026-01-02T03:04:05Z",
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            },
            "spec": {"serverRef": {"name": port_of_server}, "email": "alice@example.com"},
            "status": status,
        }))
    }

    #[test]
    fn valid_object_keeps_server_metadata_and_drops_write_bookkeeping() {
        let converted = prepare(Kind::VlessKey, key_object("edge", json!(null))).unwrap();
        assert_eq!(
            converted.key,
            ObjectKey::new(Kind::VlessKey, "team", "alice")
        );
        assert_eq!(converted.uid.as_deref(), Some("u-1"));
        let object = converted.validate().unwrap();
        let meta = object.meta();
        assert_eq!(meta.generation, Some(3));
        assert_eq!(meta.uid.as_deref(), Some("u-1"));
        assert!(meta.creation_timestamp.is_some());
        assert!(meta.managed_fields.is_none());
        assert!(meta.resource_version.is_none());
        assert!(converted.status.is_none());
    }

    #[test]
    fn status_is_kept_apart_and_does_not_change_the_fingerprint() {
        let without = prepare(Kind::VlessKey, key_object("edge", json!(null))).unwrap();
        let with = prepare(
            Kind::VlessKey,
            key_object("edge", json!({"phase": "Active", "observedGeneration": 3})),
        )
        .unwrap();
        assert_eq!(without.fingerprint, with.fingerprint);
        assert_eq!(
            with.status.unwrap().get(),
            r#"{"observedGeneration":3,"phase":"Active"}"#
        );
        let changed = prepare(Kind::VlessKey, key_object("other", json!(null))).unwrap();
        assert_ne!(without.fingerprint, changed.fingerprint);
    }

    #[test]
    fn refused_object_names_the_object_and_field_path_without_a_line() {
        let object = dynamic(json!({
            "apiVersion": "veil.dev/v1alpha1",
            "kind": "Schedule",
            "metadata": {"name": "nightly", "namespace": "ops", "uid": "u-2"},
            "spec": {
                "schedule": "not a cron line",
                "task": {"executor": "shell", "shell": {"command": ["true"]}},
            },
        }));
        let errors = prepare(Kind::Schedule, object)
            .unwrap()
            .validate()
            .unwrap_err();
        let error = &errors[0];
        assert_eq!(error.object.as_deref(), Some("Schedule ops/nightly"));
        assert_eq!(error.path, "spec.schedule");
        assert_eq!((error.file.as_ref(), error.line), (None, 0));
        assert!(
            error
                .to_string()
                .starts_with("Schedule ops/nightly: spec.schedule: "),
            "{error}"
        );
    }

    #[test]
    fn secrets_convert_with_their_data() {
        let object = dynamic(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "psk", "namespace": "team", "uid": "u-3"},
            "type": "Opaque",
            "data": {"key": "aHVudGVyMg=="},
        }));
        let converted = prepare(Kind::Secret, object).unwrap();
        let Ok(Object::Secret(secret)) = converted.validate() else {
            panic!("a Secret")
        };
        assert_eq!(secret.data.unwrap()["key"].0, b"hunter2");
    }
}
