//! Every status the plan computes fits its CRD's schema: the API server
//! refuses a server-side apply that sets a field the schema does not
//! declare, so a status field missing from `veil-crds` would never reach
//! the cluster.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;
use veil_crds::document::{Limits, parse_documents};
use veil_crds::wire::RegisterRequest;

use crate::agents::NodeObservation;
use crate::plan::vless::{GeneratedSecrets, TrafficState};
use crate::plan::{PlanInputs, Statuses, plan};
use crate::source::{Origin, SourceSnapshot, SourcedObject};
use crate::world::GenerationBook;

/// Field paths in `value` that `schema` does not declare.
fn undeclared(value: &Value, schema: &JSONSchemaProps, path: &str, out: &mut Vec<String>) {
    if schema.x_kubernetes_preserve_unknown_fields == Some(true) {
        return;
    }
    match value {
        Value::Object(fields) => {
            for (field, value) in fields {
                let at = format!("{path}.{field}");
                let declared = schema.properties.as_ref().and_then(|p| p.get(field));
                match (declared, &schema.additional_properties) {
                    (Some(inner), _) => undeclared(value, inner, &at, out),
                    (None, Some(JSONSchemaPropsOrBool::Schema(inner))) => {
                        undeclared(value, inner, &at, out);
                    }
                    (None, Some(JSONSchemaPropsOrBool::Bool(true))) => {}
                    (None, _) => out.push(at),
                }
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(inner)) = &schema.items {
                for (i, item) in items.iter().enumerate() {
                    undeclared(item, inner, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// The examples' objects, with an agent registered for their node so that
/// per-node parts of statuses are filled in.
#[test]
fn every_status_of_the_examples_is_declared_in_its_crd() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/standalone");
    let mut snapshot = SourceSnapshot {
        version: 1,
        ..SourceSnapshot::default()
    };
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for parsed in parse_documents(&text, "default", &Limits::default()).unwrap() {
            snapshot.objects.insert(
                parsed.object.key(),
                SourcedObject {
                    object: parsed.object.into(),
                    origin: Origin {
                        file: path.clone(),
                        line: parsed.line,
                    },
                },
            );
        }
    }
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();
    let mut n = 0;
    let (world, _) = GenerationBook::default().build_world(&snapshot, now, || {
        n += 1;
        format!("uid-{n}")
    });
    let registration: RegisterRequest = serde_json::from_value(serde_json::json!({
        "node": "local", "os": "linux", "arch": "x86_64", "agentVersion": "test",
        "address": "192.0.2.1",
    }))
    .unwrap();
    let nodes = BTreeMap::from([(
        "local".to_owned(),
        NodeObservation {
            applied_revision: 1,
            ..NodeObservation::registered(registration, now, now)
        },
    )]);
    let planned = plan(&PlanInputs {
        world: &world,
        previous: &Statuses::new(),
        nodes: &nodes,
        runs: &Default::default(),
        now,
        node_timeout: chrono::Duration::seconds(30),
        last_schedule_times: &BTreeMap::new(),
        secrets: &GeneratedSecrets::default(),
        traffic: &TrafficState::default(),
        memo: None,
    });
    assert!(
        planned.statuses.len() >= 8,
        "{:?}",
        planned.statuses.keys().collect::<Vec<_>>()
    );
    let mut problems = Vec::new();
    for (key, status) in &planned.statuses {
        let crd = veil_crds::crd::crd(key.kind).unwrap();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| s.properties.as_ref())
            .and_then(|p| p.get("status"))
            .unwrap();
        let value: Value = serde_json::from_str(status.get()).unwrap();
        let mut fields = Vec::new();
        undeclared(&value, schema, "status", &mut fields);
        problems.extend(fields.into_iter().map(|f| format!("{key}: {f}")));
    }
    assert!(
        problems.is_empty(),
        "undeclared status fields: {problems:#?}"
    );
}
