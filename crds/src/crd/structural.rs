//! Rewrites a schemars schema into a Kubernetes *structural* schema, and
//! checks the result.
//!
//! What a kube-apiserver refuses (or silently prunes) and how it is fixed:
//! - `additionalProperties: false` (from `deny_unknown_fields`) → removed;
//!   unknown fields are refused by Veil's parser, and the API server prunes them;
//! - `type: [T, "null"]` → `type: T` + `nullable: true`;
//! - `anyOf: [S, {nullable}]` (schemars' `Option<T>`) → `S` + `nullable: true`;
//! - `$ref`, `$schema`, `definitions`/`$defs`, `propertyNames` → removed (kube inlines subschemas);
//! - `const` → a one-element `enum`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use serde_json::{Map, Value};

/// Rewrites `schema` (see the module docs).
pub fn structural(schema: JSONSchemaProps) -> JSONSchemaProps {
    let Ok(mut value) = serde_json::to_value(&schema) else {
        return schema;
    };
    rewrite(&mut value);
    serde_json::from_value(value).unwrap_or(schema)
}

fn rewrite(node: &mut Value) {
    let Some(map) = node.as_object_mut() else {
        return;
    };
    for key in [
        "$schema",
        "$ref",
        "definitions",
        "$defs",
        "propertyNames",
        "title",
    ] {
        map.remove(key);
    }
    if map.get("additionalProperties") == Some(&Value::Bool(false)) {
        map.remove("additionalProperties");
    }
    if let Some(Value::Array(types)) = map.get("type").cloned() {
        let real: Vec<&Value> = types
            .iter()
            .filter(|t| t.as_str() != Some("null"))
            .collect();
        if real.len() == 1 {
            map.insert("type".into(), real[0].clone());
        }
        if real.len() < types.len() {
            map.insert("nullable".into(), Value::Bool(true));
        }
    }
    if let Some(value) = map.remove("const") {
        map.insert("enum".into(), Value::Array(vec![value]));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(options)) = map.get(key).cloned() {
            let real: Vec<&Value> = options.iter().filter(|o| !is_null_schema(o)).collect();
            if real.len() == 1 && real.len() < options.len() {
                map.remove(key);
                if let Some(inner) = real[0].as_object() {
                    merge_missing(map, inner);
                }
                map.insert("nullable".into(), Value::Bool(true));
            }
        }
    }
    if let Some(Value::Array(values)) = map.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    for (key, child) in map.iter_mut() {
        match key.as_str() {
            "properties" => {
                if let Some(props) = child.as_object_mut() {
                    props.values_mut().for_each(rewrite);
                }
            }
            "items" | "additionalProperties" | "not" => rewrite(child),
            "anyOf" | "oneOf" | "allOf" => {
                if let Some(list) = child.as_array_mut() {
                    list.iter_mut().for_each(rewrite);
                }
            }
            _ => {}
        }
    }
}

fn is_null_schema(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
        || schema.get("enum") == Some(&Value::Array(vec![Value::Null]))
        || schema.get("nullable") == Some(&Value::Bool(true)) && schema.get("type").is_none()
}

fn merge_missing(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        into.entry(k.clone()).or_insert_with(|| v.clone());
    }
}

/// A structural-schema rule broken at `path` (a JSON-pointer-like path in the schema).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructuralViolation {
    /// Where in the schema, e.g. `.properties.spec.properties.port`.
    pub path: String,
    /// Which rule.
    pub message: String,
}

/// Checks the rules a kube-apiserver enforces on a structural schema, plus
/// Veil's own: every property documented (for `kubectl explain`).
pub fn check_structural(schema: &JSONSchemaProps) -> Vec<StructuralViolation> {
    let mut out = Vec::new();
    if let Ok(value) = serde_json::to_value(schema) {
        check(&value, "", Position::Root, &mut out);
    }
    out
}

/// Where a schema node sits: the rules differ for the root and for properties.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Position {
    Root,
    Property,
    Nested,
}

fn check(node: &Value, path: &str, position: Position, out: &mut Vec<StructuralViolation>) {
    let root = position == Position::Root;
    let mut bad = |message: &str| {
        out.push(StructuralViolation {
            path: if path.is_empty() {
                ".".into()
            } else {
                path.into()
            },
            message: message.into(),
        })
    };
    let Some(map) = node.as_object() else {
        bad("schema is not an object");
        return;
    };
    let typed = map.get("type").is_some_and(Value::is_string)
        || map.contains_key("x-kubernetes-int-or-string")
        || map.contains_key("x-kubernetes-preserve-unknown-fields");
    if !typed {
        bad("no `type` (or type is not a single string)");
    }
    for key in [
        "$ref",
        "$schema",
        "definitions",
        "$defs",
        "propertyNames",
        "const",
    ] {
        if map.contains_key(key) {
            bad(&format!("`{key}` is not allowed"));
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if map.contains_key(key) && !root {
            bad(&format!("`{key}` below the root"));
        }
    }
    if let Some(ap) = map.get("additionalProperties") {
        if ap == &Value::Bool(false) {
            bad("`additionalProperties: false`");
        } else if map.contains_key("properties") {
            bad("`additionalProperties` next to `properties`");
        }
    }
    let documented = map
        .get("description")
        .and_then(Value::as_str)
        .is_some_and(|d| !d.trim().is_empty());
    // `apiVersion`, `kind` and `metadata` are described by the API server itself.
    let builtin = [
        ".properties.apiVersion",
        ".properties.kind",
        ".properties.metadata",
    ]
    .contains(&path);
    if position == Position::Property && !documented && !builtin {
        bad("no description (kubectl explain would show nothing)");
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            check(
                child,
                &format!("{path}.properties.{name}"),
                Position::Property,
                out,
            );
        }
    }
    if let Some(items) = map.get("items") {
        check(items, &format!("{path}.items"), Position::Nested, out);
    }
    if let Some(ap) = map.get("additionalProperties").filter(|v| v.is_object()) {
        check(
            ap,
            &format!("{path}.additionalProperties"),
            Position::Nested,
            out,
        );
    }
}
