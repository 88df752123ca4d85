//! Type and object metadata checks, and core `v1/Secret` documents.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Map, Value};

use super::DocumentError;
use super::messages::humanize;
use super::parse::{Doc, describe};
use crate::kind::Kind;
use crate::validate::{DnsLabel, DnsName, LabelKey, LabelValue};

/// Fields a `v1/Secret` document may have at the top level.
pub(super) const SECRET_TOP: [&str; 7] = [
    "apiVersion",
    "kind",
    "metadata",
    "type",
    "data",
    "stringData",
    "immutable",
];

/// `metadata` fields accepted (what `kubectl get -o yaml` prints, so such output can be re-applied).
const METADATA_FIELDS: [&str; 14] = [
    "name",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "finalizers",
    "managedFields",
    "selfLink",
];

fn supported() -> String {
    let veil: Vec<&str> = Kind::VEIL.iter().map(|k| k.as_str()).collect();
    format!(
        "{} ({}) and Secret (v1)",
        veil.join(", "),
        crate::API_VERSION
    )
}

fn str_field<'v>(map: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
    map.get(key).and_then(Value::as_str)
}

/// Reads `apiVersion`, `kind` and the name, and returns the kind and the
/// object label used in every later error (`VlessKey default/alice`).
pub(super) fn identify(
    doc: &Doc<'_>,
    map: &Map<String, Value>,
) -> Result<(Kind, Option<String>), Vec<DocumentError>> {
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str);
    let namespace = map
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    let kind_text = str_field(map, "kind");
    let api_version = str_field(map, "apiVersion");
    let label = |kind: &str| {
        Some(match (namespace, name) {
            (Some(ns), Some(name)) if kind != "VeilNode" => format!("{kind} {ns}/{name}"),
            (_, Some(name)) => format!("{kind} {name}"),
            _ => kind.to_owned(),
        })
    };
    let (Some(kind_text), Some(api_version)) = (kind_text, api_version) else {
        let mut errors = Vec::new();
        let object = kind_text.and_then(label);
        if kind_text.is_none() {
            errors.push(doc.error(&object, "kind", format!("`kind` is missing or not a string; write e.g. `kind: VlessKey` (supported: {})", supported())));
        }
        if api_version.is_none() {
            errors.push(doc.error(&object, "apiVersion", format!("`apiVersion` is missing or not a string; write `apiVersion: {}` (or `v1` for a Secret)", crate::API_VERSION)));
        }
        return Err(errors);
    };
    if let Some(kind) = Kind::from_type_meta(api_version, kind_text) {
        return Ok((kind, label(kind.as_str())));
    }
    if let Some(kind) = Kind::ALL.into_iter().find(|k| k.as_str() == kind_text) {
        return Err(vec![doc.error(
            &label(kind_text),
            "apiVersion",
            format!(
                "`{api_version}` is not served for kind {kind}; write `apiVersion: {}`",
                kind.api_version()
            ),
        )]);
    }
    let close = Kind::ALL.into_iter().find(|k| {
        k.as_str().eq_ignore_ascii_case(kind_text) || Kind::from_cli_name(kind_text) == Some(*k)
    });
    let hint = close
        .map(|k| format!(" Did you mean `{k}`? Kinds are case-sensitive."))
        .unwrap_or_default();
    Err(vec![doc.error(
        &label(kind_text),
        "kind",
        format!(
            "kind `{kind_text}` ({api_version}) is not read by Veil; supported: {}.{hint}",
            supported()
        ),
    )])
}

/// Checks `metadata` and builds it, with the namespace defaulted (namespaced
/// kinds) or dropped (`VeilNode`).
pub(super) fn metadata(
    doc: &Doc<'_>,
    kind: Kind,
    map: &Map<String, Value>,
    object: &Option<String>,
    default_namespace: &str,
    errors: &mut Vec<DocumentError>,
) -> Option<ObjectMeta> {
    let Some(meta) = map.get("metadata").and_then(Value::as_object) else {
        errors.push(doc.error(
            object,
            "metadata",
            "`metadata` with a `name` is required; write e.g. `metadata: {name: alice}`",
        ));
        return None;
    };
    let before = errors.len();
    for key in meta.keys() {
        if !METADATA_FIELDS.contains(&key.as_str()) {
            errors.push(doc.error(
                object,
                &format!("metadata.{key}"),
                format!("unknown field `{key}` in metadata; did you mean `labels` or `annotations`? Fields here: {}", METADATA_FIELDS[..4].join(", ")),
            ));
        }
    }
    match meta.get("name") {
        None | Some(Value::Null) => errors.push(doc.error(object, "metadata.name", "`metadata.name` is required; write e.g. `name: edge-1` (lower-case letters, digits, `-`, `.`)")),
        Some(Value::String(name)) => {
            if let Err(e) = DnsName::parse(name) {
                errors.push(doc.error(object, "metadata.name", e.to_string()));
            }
        }
        Some(other) => errors.push(doc.error(object, "metadata.name", format!("the name must be a string, not {}; write e.g. `name: edge-1`", describe(other)))),
    }
    if kind.namespaced()
        && let Some(ns) = meta.get("namespace").filter(|v| !v.is_null())
    {
        match ns.as_str().map(DnsLabel::parse) {
            Some(Ok(_)) => {}
            Some(Err(e)) => errors.push(doc.error(object, "metadata.namespace", e.to_string())),
            None => errors.push(doc.error(
                object,
                "metadata.namespace",
                "the namespace must be a string; write e.g. `namespace: default`",
            )),
        }
    }
    for field in ["labels", "annotations"] {
        let Some(entries) = meta.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        let Some(entries) = entries.as_object() else {
            errors.push(doc.error(
                object,
                &format!("metadata.{field}"),
                format!("`{field}` must be a mapping of `key: value`"),
            ));
            continue;
        };
        for (key, value) in entries {
            let path = format!("metadata.{field}.{key}");
            if let Err(e) = LabelKey::parse(key) {
                errors.push(doc.error(object, &path, e.to_string()));
            }
            match value.as_str() {
                Some(v) if field == "labels" => {
                    if let Err(e) = LabelValue::parse(v) {
                        errors.push(doc.error(object, &path, e.to_string()));
                    }
                }
                Some(_) => {}
                None => errors.push(doc.error(
                    object,
                    &path,
                    format!("{field} values must be strings; quote it, e.g. \"true\" or \"3\""),
                )),
            }
        }
    }
    if errors.len() > before {
        return None;
    }
    let mut meta = meta.clone();
    if kind.namespaced() {
        if meta.get("namespace").is_none_or(Value::is_null) {
            meta.insert(
                "namespace".into(),
                Value::String(default_namespace.to_owned()),
            );
        }
    } else {
        // Cluster-scoped: the API server ignores a namespace here; so does Veil.
        meta.remove("namespace");
    }
    match serde_path_to_error::deserialize::<_, ObjectMeta>(Value::Object(meta)) {
        Ok(meta) => Some(meta),
        Err(e) => {
            let path = format!("metadata.{}", e.path());
            errors.push(doc.error(object, &path, humanize(&e.inner().to_string()).0));
            None
        }
    }
}

/// Checks and builds a Secret. Messages name keys, never values.
pub(super) fn secret(
    doc: &Doc<'_>,
    map: &Map<String, Value>,
    object: &Option<String>,
    errors: &mut Vec<DocumentError>,
) -> Option<Secret> {
    let before = errors.len();
    let valid_key = |k: &str| {
        !k.is_empty()
            && k.len() <= 253
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    for field in ["data", "stringData"] {
        let Some(entries) = map.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        let Some(entries) = entries.as_object() else {
            errors.push(doc.error(
                object,
                field,
                format!("`{field}` must be a mapping of `key: value`"),
            ));
            continue;
        };
        for (key, value) in entries {
            let path = format!("{field}.{key}");
            if !valid_key(key) {
                errors.push(doc.error(
                    object,
                    &path,
                    format!(
                        "`{key}` is not a valid Secret key; use letters, digits, `-`, `_` and `.`"
                    ),
                ));
            }
            let Some(text) = value.as_str() else {
                errors.push(doc.error(
                    object,
                    &path,
                    format!("the value of `{key}` must be a string (value not shown); quote it"),
                ));
                continue;
            };
            if field == "data" {
                let compact: String = text.chars().filter(|c| !matches!(c, '\n' | '\r')).collect();
                if base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .is_err()
                {
                    errors.push(doc.error(
                        object,
                        &path,
                        format!("the value of `{key}` is not valid base64 (value not shown); encode it with `base64 -w0`, or move it to `stringData` as plain text"),
                    ));
                }
            }
        }
    }
    if let Some(t) = map.get("type").filter(|v| !v.is_null() && !v.is_string()) {
        errors.push(doc.error(
            object,
            "type",
            format!(
                "`type` must be a string such as `Opaque`, not {}",
                describe(t)
            ),
        ));
    }
    if let Some(i) = map
        .get("immutable")
        .filter(|v| !v.is_null() && !v.is_boolean())
    {
        errors.push(doc.error(
            object,
            "immutable",
            format!("`immutable` must be `true` or `false`, not {}", describe(i)),
        ));
    }
    if errors.len() > before {
        return None;
    }
    let mut body = map.clone();
    body.remove("metadata");
    match serde_path_to_error::deserialize::<_, Secret>(Value::Object(body)) {
        Ok(secret) => Some(secret),
        Err(e) => {
            // Values were checked above; this message names the path only.
            errors.push(doc.error(
                object,
                &e.path().to_string(),
                "does not match a v1 Secret; check the field's type",
            ));
            None
        }
    }
}
