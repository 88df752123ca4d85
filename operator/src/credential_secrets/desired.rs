//! Which credentials Secrets the world calls for, pure: one per VlessKey
//! whose id is known (from `spec.id` or generated), with its link when the
//! server's status has a public key and an address is known; one per vless
//! ProtocolServer whose Reality key the operator generated. A server whose
//! private key comes from the user's own Secret (`privateKeySecretRef`) gets
//! none: that key is never copied.

use std::collections::HashMap;

use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};
use veil_crds::protocol_server::Protocol;
use veil_crds::reality;

use super::convert::{DesiredSecret, IdSource, reality_secret, vless_secret};
use crate::plan::Statuses;
use crate::plan::vless::GeneratedSecrets;
use crate::plan::vless::share::{Endpoint, endpoint, key_link, key_server};
use crate::world::World;

/// Every credentials Secret `world` calls for, given the statuses just
/// planned and the generated values.
pub fn desired_secrets(
    world: &World,
    statuses: &Statuses,
    secrets: &GeneratedSecrets,
) -> Vec<DesiredSecret> {
    let mut out = Vec::new();
    // Parsed once per server, not once per key.
    let mut endpoints: HashMap<ObjectKey, Option<Endpoint>> = HashMap::new();
    for (key_ref, object) in world.of_kind(Kind::VlessKey) {
        let Object::VlessKey(key) = &*object.object else {
            continue;
        };
        let Some(uid) = key.metadata.uid.as_deref() else {
            continue;
        };
        let (id, source) = match &key.spec.id {
            Some(id) => (id.uuid().hyphenated().to_string(), IdSource::Spec),
            None => match secrets.vless_ids.get(uid) {
                Some(id) => (id.clone(), IdSource::Generated),
                None => continue,
            },
        };
        let link = key_server(world, key_ref).ok().and_then(|found| {
            let endpoint = endpoints
                .entry(found.server_key.clone())
                .or_insert_with(|| endpoint(statuses, &found.server_key, found.vless).ok());
            endpoint
                .as_ref()
                .map(|endpoint| key_link(&found, endpoint, &id))
        });
        out.push(vless_secret(key_ref, uid, &id, source, link.as_deref()));
    }
    for (server_ref, object) in world.of_kind(Kind::ProtocolServer) {
        let Object::ProtocolServer(server) = &*object.object else {
            continue;
        };
        let generated = server.spec.protocol == Protocol::Vless
            && server
                .spec
                .vless
                .as_ref()
                .is_some_and(|vless| vless.reality.private_key_secret_ref.is_none());
        let Some(uid) = server.metadata.uid.as_deref() else {
            continue;
        };
        let Some(private) = secrets.reality_keys.get(uid).filter(|_| generated) else {
            continue;
        };
        let Ok(public) = reality::public_key(private) else {
            continue;
        };
        out.push(reality_secret(server_ref, uid, private, &public));
    }
    out
}
