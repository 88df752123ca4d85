//! The read view that `veil-operator get` is served from: the latest world
//! and statuses, swapped atomically after each reconcile pass.
//!
//! The view never exposes secret values: a Secret is rendered with its keys
//! and empty values.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;

use serde_json::Value;
use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};

use crate::plan::Statuses;
use crate::world::{World, WorldObject};

/// One published state of the operator.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub world: Arc<World>,
    pub statuses: Arc<Statuses>,
    /// True once the source has been loaded and reconciled at least once.
    pub loaded: bool,
}

/// Which objects a `get` asks for.
#[derive(Clone, Debug)]
pub struct Query<'a> {
    pub kind: Kind,
    /// `None`: all namespaces.
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

impl View {
    /// The objects matching `query` as `{"kind": …, "items": [...]}` JSON
    /// bytes, each rendered as Kubernetes would return it (`apiVersion`,
    /// `kind`, `metadata`, `spec`, `status`), one at a time: listing 10,000
    /// objects never holds 10,000 JSON trees at once.
    pub fn list_json(&self, query: &Query<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(b"{\"kind\":");
        let _ = serde_json::to_writer(&mut out, query.kind.as_str());
        out.extend_from_slice(b",\"items\":[");
        for (i, (key, object)) in self.matching(query).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut out, &self.render(key, object));
        }
        out.extend_from_slice(b"]}");
        out
    }

    fn matching<'a>(
        &'a self,
        query: &'a Query<'a>,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a WorldObject)> + 'a {
        self.world.of_kind(query.kind).filter(move |(key, _)| {
            query
                .namespace
                .is_none_or(|ns| key.namespace == ns || !query.kind.namespaced())
                && query.name.is_none_or(|name| key.name == name)
        })
    }

    fn render(&self, key: &ObjectKey, object: &WorldObject) -> Value {
        let mut value = match &*object.object {
            Object::Secret(secret) => {
                let mut redacted = (**secret).clone();
                let keys = redacted
                    .data
                    .take()
                    .into_iter()
                    .flat_map(BTreeMap::into_keys)
                    .chain(
                        redacted
                            .string_data
                            .take()
                            .into_iter()
                            .flat_map(BTreeMap::into_keys),
                    );
                let data: BTreeMap<String, ByteString> =
                    keys.map(|k| (k, ByteString(Vec::new()))).collect();
                redacted.data = (!data.is_empty()).then_some(data);
                Object::Secret(Box::new(redacted)).to_value()
            }
            other => other.to_value(),
        };
        if let (Some(map), Some(status)) = (value.as_object_mut(), self.statuses.get(key))
            && let Ok(status) = serde_json::from_str::<Value>(status.get())
        {
            map.insert("status".into(), status);
        }
        value
    }
}
