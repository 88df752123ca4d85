//! What VLESS planning reads besides the world and the agents'
//! observations: values the operator generated (by object uid) and traffic
//! counters. Plain data, loaded from and kept in step with the store by the
//! controller and the agent API.

use std::fmt;

/// Store scope of generated VLESS ids, keyed by VlessKey uid.
pub const VLESS_ID_SCOPE: &str = "vless-id";
/// Store scope of generated Reality private keys, keyed by ProtocolServer uid.
pub const REALITY_KEY_SCOPE: &str = "reality-private-key";

/// Generated values by object uid: a persistent map, so the planner keeps
/// the last pass's copy for nothing and finds what changed by a diff.
pub type GeneratedValues = imbl::OrdMap<String, String>;

/// Credentials the operator generated once and keeps in the store: in dir
/// mode the store *is* the "Secret the operator owns". `Debug` shows counts,
/// never values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GeneratedSecrets {
    /// VLESS ids (hyphenated UUIDs) of keys without `spec.id`, by key uid.
    pub vless_ids: GeneratedValues,
    /// Reality private keys (base64url) of servers without
    /// `privateKeySecretRef`, by server uid.
    pub reality_keys: GeneratedValues,
}

impl fmt::Debug for GeneratedSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedSecrets")
            .field("vless_ids", &self.vless_ids.len())
            .field("reality_keys", &self.reality_keys.len())
            .finish()
    }
}

/// Lifetime bytes of one user on one server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub uplink: u64,
    pub downlink: u64,
}

/// `(server as "namespace/name", email)`: whose traffic a counter holds.
pub type UserKey = (String, String);
