//! Where each kind lives on the API server, shared by the source (watches)
//! and the sinks (status writes, TaskRuns).
//!
//! Everything goes through `DynamicObject`: a typed `Api<VlessKey>` would
//! fail a whole list on one object that Veil's stricter types refuse,
//! while a dynamic object always decodes and is then validated one by one.

use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use veil_crds::kind::Kind;

/// The field manager of every write the operator makes (design §1).
pub const FIELD_MANAGER: &str = "veil-operator";

/// The API resource of `kind` (`veil.dev/v1alpha1` kinds, or core `v1` Secrets).
pub fn api_resource(kind: Kind) -> ApiResource {
    let gvk = match kind {
        Kind::Secret => GroupVersionKind::gvk("", "v1", kind.as_str()),
        _ => GroupVersionKind::gvk(veil_crds::GROUP, version(), kind.as_str()),
    };
    ApiResource::from_gvk_with_plural(&gvk, kind.plural())
}

/// `v1alpha1`: the version part of [`veil_crds::API_VERSION`].
fn version() -> &'static str {
    veil_crds::API_VERSION
        .rsplit_once('/')
        .map_or(veil_crds::API_VERSION, |(_, version)| version)
}

/// The API for objects of `kind` in `namespace`; every namespace when
/// `None`, and always the whole cluster for cluster-scoped kinds.
pub fn api(client: kube::Client, kind: Kind, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource = api_resource(kind);
    match namespace {
        Some(namespace) if kind.namespaced() => Api::namespaced_with(client, namespace, &resource),
        _ => Api::all_with(client, &resource),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_name_the_served_group_version_and_plural() {
        let key = api_resource(Kind::VlessKey);
        assert_eq!(
            (key.group.as_str(), key.version.as_str()),
            ("veil.dev", "v1alpha1")
        );
        assert_eq!(key.api_version, "veil.dev/v1alpha1");
        assert_eq!(key.plural, "vlesskeys");
        let secret = api_resource(Kind::Secret);
        assert_eq!(
            (secret.api_version.as_str(), secret.plural.as_str()),
            ("v1", "secrets")
        );
    }
}
