//! CustomResourceDefinitions for the seven kinds, generated from the Rust types.
//!
//! kube's derive produces each CRD with a schemars schema; [`structural`]
//! then rewrites the schema into what a real kube-apiserver accepts as
//! *structural* (no `additionalProperties: false`, no type arrays, no
//! `anyOf`/`oneOf` carrying types, a `type` on every node), and the printer
//! columns come from [`crate::printer::columns`] — one table for `kubectl get`
//! and `veil-operator get`. `manifests/crds/` holds the output, checked by the
//! `crd_drift` test.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition, CustomResourceDefinition,
};
use kube::CustomResourceExt;

use crate::kind::Kind;

mod structural;

pub use structural::{StructuralViolation, check_structural, structural};

/// The CRD of one Veil kind (`None` for `Secret`, which is built in).
pub fn crd(kind: Kind) -> Option<CustomResourceDefinition> {
    let mut crd = match kind {
        Kind::VeilNode => crate::veil_node::VeilNode::crd(),
        Kind::ProtocolServer => crate::protocol_server::ProtocolServer::crd(),
        Kind::VlessKey => crate::vless_key::VlessKey::crd(),
        Kind::Strategy => crate::strategy::Strategy::crd(),
        Kind::Runner => crate::runner::Runner::crd(),
        Kind::Schedule => crate::schedule::Schedule::crd(),
        Kind::TaskRun => crate::task_run::TaskRun::crd(),
        Kind::Secret => return None,
    };
    let columns: Vec<CustomResourceColumnDefinition> = kind
        .printer_columns()
        .iter()
        .map(|c| CustomResourceColumnDefinition {
            name: c.name.to_owned(),
            type_: c.type_.to_owned(),
            json_path: c.json_path.to_owned(),
            priority: (c.priority != 0).then_some(c.priority),
            description: Some(c.description.to_owned()),
            format: None,
        })
        .collect();
    for version in &mut crd.spec.versions {
        version.additional_printer_columns = Some(columns.clone());
        if let Some(validation) = &mut version.schema
            && let Some(schema) = validation.open_api_v3_schema.take()
        {
            validation.open_api_v3_schema = Some(structural(schema));
        }
    }
    Some(crd)
}

/// Every Veil CRD, in [`Kind::VEIL`] order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    Kind::VEIL.into_iter().filter_map(crd).collect()
}

/// Renders one CRD as YAML with a header saying it is generated.
fn to_yaml(crd: &CustomResourceDefinition) -> String {
    // Serialising plain data with string keys cannot fail.
    let body = serde_yaml_ng::to_string(crd).unwrap_or_default();
    format!("# Generated from crds/src by `make crds` (veil-operator crds). Do not edit.\n{body}")
}

/// `(file name, YAML)` per CRD, e.g. `("vlesskeys.veil.dev.yaml", "...")`,
/// as committed under `manifests/crds/`.
pub fn crd_files() -> Vec<(String, String)> {
    crds()
        .iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            (format!("{name}.yaml"), to_yaml(crd))
        })
        .collect()
}

/// All CRDs as one multi-document YAML text (`---`-separated).
pub fn crds_yaml() -> String {
    crd_files()
        .into_iter()
        .map(|(_, yaml)| yaml)
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests;
