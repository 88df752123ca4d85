//! User sets and server assignments.
//!
//! A server's user set is its eligible keys that have an id, sorted by
//! email; its fingerprint (`users_hash`) is the first 16 hex digits of
//! SHA-256 over `email NUL id NUL flow LF` of each user in that order. The
//! agent reports the fingerprint of the set it applied, which is how the
//! operator knows every user of an assignment is live without listing them.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use veil_crds::object::ObjectKey;
use veil_crds::protocol_server::VlessFlow;
use veil_crds::wire::{SecretValue, ServerAssignment, VlessAssignment, VlessUser};

use super::keys::{Key, KeyState};
use super::servers::{RealityKeys, Server};

/// Hex digits of SHA-256 kept in a `users_hash`.
const USERS_HASH_DIGITS: usize = 16;

/// The user set of every server that has eligible keys, by server.
pub fn user_sets<'a>(keys: &[Key<'a>]) -> BTreeMap<&'a ObjectKey, Vec<VlessUser>> {
    let mut sets: BTreeMap<&ObjectKey, Vec<VlessUser>> = BTreeMap::new();
    for key in keys {
        if let (KeyState::Eligible(None), Some(server), Some(id)) =
            (&key.state, key.server, &key.id)
        {
            sets.entry(server).or_default().push(VlessUser {
                email: key.email.clone(),
                id: SecretValue(id.clone()),
                flow: key.flow,
            });
        }
    }
    for users in sets.values_mut() {
        users.sort_by(|a, b| a.email.cmp(&b.email));
    }
    sets
}

/// The fingerprint of a sorted user set (see the module doc).
pub fn users_hash(users: &[VlessUser]) -> String {
    let mut hasher = Sha256::new();
    for user in users {
        hasher.update(user.email.as_bytes());
        hasher.update([0]);
        hasher.update(user.id.expose().as_bytes());
        hasher.update([0]);
        hasher.update(flow_name(user.flow).as_bytes());
        hasher.update([b'\n']);
    }
    let mut hex = hex::encode(hasher.finalize());
    hex.truncate(USERS_HASH_DIGITS);
    hex
}

/// A flow as written in specs.
pub fn flow_name(flow: VlessFlow) -> &'static str {
    match flow {
        VlessFlow::XtlsRprxVision => "xtls-rprx-vision",
        VlessFlow::None => "none",
    }
}

/// What every node of `server` must run.
pub fn assignment(
    server: &Server<'_>,
    reality: &RealityKeys,
    users: Vec<VlessUser>,
) -> ServerAssignment {
    let settings = &server.vless.reality;
    ServerAssignment {
        server: server.id.clone(),
        listen: server.object.spec.listen.clone(),
        port: server.object.spec.port.get(),
        allow_cidrs: server.object.spec.allow_cidrs.clone(),
        vless: VlessAssignment {
            private_key: SecretValue(reality.private.clone()),
            dest: settings.dest.clone(),
            server_names: settings.server_names.clone(),
            short_ids: settings.short_ids.clone(),
            policy: server.vless.policy.clone(),
            users_hash: users_hash(&users),
            users,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(email: &str, id: &str, flow: VlessFlow) -> VlessUser {
        VlessUser {
            email: email.into(),
            id: SecretValue(id.into()),
            flow,
        }
    }

    #[test]
    fn users_hash_is_short_and_covers_email_id_and_flow() {
        let base = [user("a", "1", VlessFlow::XtlsRprxVision)];
        let hash = users_hash(&base);
        assert_eq!(hash.len(), 16);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(hash, users_hash(&base), "stable");
        for changed in [
            user("b", "1", VlessFlow::XtlsRprxVision),
            user("a", "2", VlessFlow::XtlsRprxVision),
            user("a", "1", VlessFlow::None),
        ] {
            assert_ne!(users_hash(&[changed]), hash);
        }
        assert_ne!(users_hash(&[]), hash);
        // Fields are delimited: moving a character between them is a change.
        assert_ne!(
            users_hash(&[user("ab", "c", VlessFlow::None)]),
            users_hash(&[user("a", "bc", VlessFlow::None)])
        );
    }
}
