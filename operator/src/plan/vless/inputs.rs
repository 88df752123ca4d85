//! What VLESS planning reads besides the world and the agents'
//! observations: values the operator generated (by object uid) and traffic
//! counters. Plain data, loaded from and kept in step with the store by the
//! controller and the agent API.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};

use crate::records::{TrafficBaselineRecord, TrafficTotal};

/// Store scope of generated VLESS ids, keyed by VlessKey uid.
pub const VLESS_ID_SCOPE: &str = "vless-id";
/// Store scope of generated Reality private keys, keyed by ProtocolServer uid.
pub const REALITY_KEY_SCOPE: &str = "reality-private-key";

/// Credentials the operator generated once and keeps in the store: in dir
/// mode the store *is* the "Secret the operator owns". `Debug` shows counts,
/// never values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GeneratedSecrets {
    /// VLESS ids (hyphenated UUIDs) of keys without `spec.id`, by key uid.
    pub vless_ids: HashMap<String, String>,
    /// Reality private keys (base64url) of servers without
    /// `privateKeySecretRef`, by server uid.
    pub reality_keys: HashMap<String, String>,
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

/// Traffic as the store holds it, mirrored in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrafficState {
    /// Lifetime counters.
    pub totals: HashMap<UserKey, Counters>,
    /// When traffic of a user was last reported.
    pub last_seen: HashMap<UserKey, DateTime<Utc>>,
    /// Period baselines by VlessKey uid.
    pub baselines: HashMap<String, TrafficBaselineRecord>,
}

impl TrafficState {
    /// Adds one applied report's deltas (already summed or not).
    pub fn add(&mut self, server: &str, email: &str, uplink: u64, downlink: u64) {
        let counters = self
            .totals
            .entry((server.to_owned(), email.to_owned()))
            .or_default();
        counters.uplink = counters.uplink.saturating_add(uplink);
        counters.downlink = counters.downlink.saturating_add(downlink);
    }

    /// Sets the totals read from the store.
    pub fn with_totals(mut self, totals: Vec<TrafficTotal>) -> TrafficState {
        self.totals = totals
            .into_iter()
            .map(|total| {
                (
                    (total.server, total.email),
                    Counters {
                        uplink: total.uplink.max(0) as u64,
                        downlink: total.downlink.max(0) as u64,
                    },
                )
            })
            .collect();
        self
    }

    /// The lifetime counters of `(server, email)` (zero when never seen).
    pub fn total(&self, server: &str, email: &str) -> Counters {
        self.totals
            .get(&(server.to_owned(), email.to_owned()))
            .copied()
            .unwrap_or_default()
    }

    /// When traffic of `(server, email)` was last reported.
    pub fn seen(&self, server: &str, email: &str) -> Option<DateTime<Utc>> {
        self.last_seen
            .get(&(server.to_owned(), email.to_owned()))
            .copied()
    }
}
