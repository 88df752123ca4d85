//! User sets and server assignments.
//!
//! A server's user set is its eligible keys that have an id, by email
//! ([`Users`]); its fingerprint is [`Users::hash`]. The agent reports the
//! fingerprint of the set it applied, which is how the operator knows every
//! user of an assignment is live without listing them.

use std::collections::BTreeMap;

use veil_crds::object::ObjectKey;
pub use veil_crds::wire::users_hash;
use veil_crds::wire::{SecretValue, ServerAssignment, Users, VlessAssignment, VlessUser};

use super::keys::{Key, KeyState};
use super::servers::{RealityKeys, Server};

/// The user set of every server that has eligible keys, by server.
pub fn user_sets<'a>(keys: &[Key<'a>]) -> BTreeMap<&'a ObjectKey, Users> {
    let mut sets: BTreeMap<&ObjectKey, Users> = BTreeMap::new();
    for key in keys {
        if let (KeyState::Eligible(None), Some(server), Some(id)) =
            (&key.state, key.server, &key.id)
        {
            sets.entry(server).or_default().insert(VlessUser {
                email: key.email.clone(),
                id: SecretValue(id.clone()),
                flow: key.flow,
            });
        }
    }
    sets
}

/// What every node of `server` must run.
pub fn assignment(server: &Server<'_>, reality: &RealityKeys, users: Users) -> ServerAssignment {
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
            users_hash: users.hash(),
            users,
        },
    }
}
