//! What a VlessKey's `vless://` link is made of, found in the world and the
//! statuses: the one place that decides a key's link, for the credentials
//! API and for the key's Secret in Kubernetes mode (so both always agree).
//!
//! Pure. Errors name the object and what to do, never a credential.

use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};
use veil_crds::protocol_server::{Protocol, ProtocolServer, ProtocolServerStatus, VlessServer};
use veil_crds::vless_key::VlessKey;

use super::link::{LinkParts, vless_link};
use crate::plan::Statuses;
use crate::world::World;

/// Why a key has no link (yet). Never contains a credential.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// No such VlessKey.
    #[error("vlesskey \"{name}\" not found in namespace {namespace}")]
    KeyNotFound { namespace: String, name: String },
    /// The key's server is another protocol.
    #[error("ProtocolServer {0} is not a `protocol: vless` server")]
    ServerNotVless(String),
    /// The key's server does not exist.
    #[error("ProtocolServer {server} not found in namespace {namespace}")]
    ServerNotFound { namespace: String, server: String },
    /// The server has no `vless` section.
    #[error("ProtocolServer {0} has no `vless` settings")]
    NoVlessSettings(String),
    /// The server's status has no Reality public key yet.
    #[error("ProtocolServer {0} has no Reality public key yet; see its Ready condition")]
    NoPublicKey(String),
    /// Neither `publicAddress` nor a node endpoint is known.
    #[error(
        "no address is known for ProtocolServer {0}: set spec.vless.publicAddress, or start its nodes' agents with an address"
    )]
    NoAddress(String),
}

/// A VlessKey and the vless server it belongs to.
pub struct KeyServer<'a> {
    pub key: &'a VlessKey,
    pub name: &'a str,
    pub server_key: ObjectKey,
    pub server: &'a ProtocolServer,
    pub vless: &'a VlessServer,
}

/// The key at `key_ref` and its server.
///
/// # Errors
/// [`LinkError::KeyNotFound`], or why its server cannot serve it.
pub fn key_server<'a>(
    world: &'a World,
    key_ref: &'a ObjectKey,
) -> Result<KeyServer<'a>, LinkError> {
    let Some(Object::VlessKey(key)) = world.objects.get(key_ref).map(|o| &*o.object) else {
        return Err(LinkError::KeyNotFound {
            namespace: key_ref.namespace.clone(),
            name: key_ref.name.clone(),
        });
    };
    let server_name = key.spec.server_ref.name.as_str();
    let server_key = ObjectKey::new(Kind::ProtocolServer, &key_ref.namespace, server_name);
    let server = match world.objects.get(&server_key).map(|o| &*o.object) {
        Some(Object::ProtocolServer(server)) if server.spec.protocol == Protocol::Vless => server,
        Some(_) => return Err(LinkError::ServerNotVless(server_name.to_owned())),
        None => {
            return Err(LinkError::ServerNotFound {
                namespace: key_ref.namespace.clone(),
                server: server_name.to_owned(),
            });
        }
    };
    let vless = server
        .spec
        .vless
        .as_ref()
        .ok_or_else(|| LinkError::NoVlessSettings(server_name.to_owned()))?;
    Ok(KeyServer {
        key,
        name: &key_ref.name,
        server_key,
        server,
        vless,
    })
}

/// Where clients reach a server: its Reality public key and host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub public_key: String,
    pub host: String,
}

/// The endpoint of `server` from its status in `statuses`.
///
/// # Errors
/// [`LinkError::NoPublicKey`] or [`LinkError::NoAddress`].
pub fn endpoint(
    statuses: &Statuses,
    server_key: &ObjectKey,
    vless: &VlessServer,
) -> Result<Endpoint, LinkError> {
    let status: ProtocolServerStatus = statuses
        .get(server_key)
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or_default();
    let Some(public_key) = status.public_key else {
        return Err(LinkError::NoPublicKey(server_key.name.clone()));
    };
    let host = vless.public_address.clone().or_else(|| {
        status
            .nodes
            .iter()
            .find_map(|node| node.endpoint.as_deref().map(endpoint_host))
    });
    let host = host.ok_or_else(|| LinkError::NoAddress(server_key.name.clone()))?;
    Ok(Endpoint { public_key, host })
}

/// The `vless://` link of the key with user id `id`. A credential.
pub fn key_link(key: &KeyServer<'_>, endpoint: &Endpoint, id: &str) -> String {
    let reality = &key.vless.reality;
    vless_link(&LinkParts {
        id,
        host: &endpoint.host,
        port: key.server.spec.port.get(),
        flow: key.key.spec.flow.unwrap_or(key.vless.flow),
        server_name: reality.server_names.first().map_or("", String::as_str),
        fingerprint: reality.fingerprint,
        public_key: &endpoint.public_key,
        short_id: reality.short_ids.first().map_or("", String::as_str),
        remark: key.name,
    })
}

/// The host of a `host:port` endpoint (brackets of an IPv6 address removed).
fn endpoint_host(endpoint: &str) -> String {
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_hosts_lose_the_port_and_ipv6_brackets() {
        assert_eq!(endpoint_host("203.0.113.7:443"), "203.0.113.7");
        assert_eq!(endpoint_host("[2001:db8::7]:443"), "2001:db8::7");
        assert_eq!(endpoint_host("edge.example.com"), "edge.example.com");
    }
}
