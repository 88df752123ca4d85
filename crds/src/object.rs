//! The closed set of objects Veil reads, and how they are keyed.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::kind::Kind;
use crate::protocol_server::ProtocolServer;
use crate::runner::Runner;
use crate::schedule::Schedule;
use crate::strategy::Strategy;
use crate::task_run::TaskRun;
use crate::veil_node::VeilNode;
use crate::vless_key::VlessKey;

/// Identity of an object: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: Kind,
    /// Empty for cluster-scoped kinds (`VeilNode`).
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// Builds a key; the namespace is dropped for cluster-scoped kinds.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> ObjectKey {
        let namespace = if kind.namespaced() { namespace } else { "" };
        ObjectKey {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ObjectKey {
    /// `VlessKey default/alice`, or `VeilNode edge-1` for cluster-scoped kinds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One object of a kind Veil reads, fully typed and validated.
#[derive(Clone, Debug)]
pub enum Object {
    VeilNode(Box<VeilNode>),
    ProtocolServer(Box<ProtocolServer>),
    VlessKey(Box<VlessKey>),
    Strategy(Box<Strategy>),
    Runner(Box<Runner>),
    Schedule(Box<Schedule>),
    TaskRun(Box<TaskRun>),
    Secret(Box<Secret>),
}

/// Runs `$body` with `$o` bound to the boxed value of whichever variant `$obj` is.
macro_rules! each_object {
    ($obj:expr, $o:ident => $body:expr) => {
        match $obj {
            Object::VeilNode($o) => $body,
            Object::ProtocolServer($o) => $body,
            Object::VlessKey($o) => $body,
            Object::Strategy($o) => $body,
            Object::Runner($o) => $body,
            Object::Schedule($o) => $body,
            Object::TaskRun($o) => $body,
            Object::Secret($o) => $body,
        }
    };
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::VeilNode(_) => Kind::VeilNode,
            Object::ProtocolServer(_) => Kind::ProtocolServer,
            Object::VlessKey(_) => Kind::VlessKey,
            Object::Strategy(_) => Kind::Strategy,
            Object::Runner(_) => Kind::Runner,
            Object::Schedule(_) => Kind::Schedule,
            Object::TaskRun(_) => Kind::TaskRun,
            Object::Secret(_) => Kind::Secret,
        }
    }

    /// Object metadata.
    pub fn meta(&self) -> &ObjectMeta {
        each_object!(self, o => &o.metadata)
    }

    /// Mutable object metadata (sources fill in namespace, generation, uid, creation time).
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each_object!(self, o => &mut o.metadata)
    }

    /// The object's key. Sources guarantee that `metadata.name` is set
    /// (and `metadata.namespace` for namespaced kinds) before an object
    /// reaches the world.
    pub fn key(&self) -> ObjectKey {
        let meta = self.meta();
        ObjectKey::new(
            self.kind(),
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    /// What `metadata.generation` tracks: the spec of Veil kinds; `type`,
    /// `data` and `stringData` of a Secret. Labels and annotations are not
    /// part of it, as in Kubernetes.
    pub fn spec_value(&self) -> serde_json::Value {
        let value = match self {
            Object::VeilNode(o) => serde_json::to_value(&o.spec),
            Object::ProtocolServer(o) => serde_json::to_value(&o.spec),
            Object::VlessKey(o) => serde_json::to_value(&o.spec),
            Object::Strategy(o) => serde_json::to_value(&o.spec),
            Object::Runner(o) => serde_json::to_value(&o.spec),
            Object::Schedule(o) => serde_json::to_value(&o.spec),
            Object::TaskRun(o) => serde_json::to_value(&o.spec),
            Object::Secret(o) => Ok(serde_json::json!({
                "type": o.type_,
                "data": o.data,
                "stringData": o.string_data,
            })),
        };
        // Serialising these plain data types cannot fail (no maps with non-string keys).
        value.unwrap_or(serde_json::Value::Null)
    }

    /// The whole object as JSON, with `apiVersion` and `kind`.
    pub fn to_value(&self) -> serde_json::Value {
        let value = each_object!(self, o => serde_json::to_value(o));
        let mut value = value.unwrap_or(serde_json::Value::Null);
        if let Some(map) = value.as_object_mut() {
            map.insert("apiVersion".into(), self.kind().api_version().into());
            map.insert("kind".into(), self.kind().as_str().into());
        }
        value
    }
}
