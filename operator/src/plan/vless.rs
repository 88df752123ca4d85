//! `protocol: vless` ProtocolServers and their VlessKeys: which nodes run
//! which server with which users, the statuses of both kinds, the traffic
//! baselines to persist when a period begins, and when the clock alone
//! next changes something.
//!
//! Pure like the rest of `plan`: generated credentials and traffic counters
//! are inputs the controller loads from the store. Secrets (Reality private
//! keys, user ids) go only into assignments, inside `SecretValue`s; statuses
//! carry the public key and an 8-character id prefix, never a secret.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};
use veil_crds::wire::{ServerAssignment, Users};

use super::tasks::NodeView;
use crate::records::TrafficBaselineRecord;
use crate::world::World;

mod cache;
mod inputs;
mod key_status;
mod keys;
pub mod link;
mod observed;
pub mod period;
mod server_status;
mod servers;
pub mod share;
mod traffic_state;
mod usage;
mod users;

pub use cache::KeyCache;
pub use inputs::{
    Counters, GeneratedSecrets, GeneratedValues, REALITY_KEY_SCOPE, UserKey, VLESS_ID_SCOPE,
};
pub use observed::Conditions;
pub(crate) use observed::{progressing, ready, stalled};
pub use server_status::host_port;
pub(crate) use servers::Problem;
pub use traffic_state::{Touched, TrafficState, TrafficVersion};
pub use users::users_hash;

/// What VLESS planning reads.
pub struct VlessInputs<'a> {
    pub world: &'a World,
    /// The statuses last written: a key already live on a node stays live
    /// while another key's change is being applied there.
    pub previous: &'a crate::plan::Statuses,
    /// Every known node (registered agents and declared VeilNodes).
    pub views: &'a BTreeMap<&'a str, NodeView<'a>>,
    pub secrets: &'a GeneratedSecrets,
    pub traffic: &'a TrafficState,
    pub now: DateTime<Utc>,
}

/// What VLESS planning decided.
#[derive(Debug, Default)]
pub struct VlessPlan {
    /// Status bodies (without conditions and generation) of every vless
    /// ProtocolServer and every VlessKey, with their conditions.
    pub statuses: BTreeMap<ObjectKey, (Body, Conditions)>,
    /// The servers each node must run, in server order.
    pub assignments: BTreeMap<String, Vec<ServerAssignment>>,
    /// Baselines of periods that began (the controller persists them).
    pub baselines: Vec<TrafficBaselineRecord>,
    /// Uids of baselines whose VlessKey is gone.
    pub stale_baselines: Vec<String>,
    /// The next instant at which time alone changes the plan: a key expires
    /// or a traffic period begins.
    pub wake_at: Option<DateTime<Utc>>,
}

/// A status body before its conditions and generation are added.
#[derive(Debug)]
pub enum Body {
    /// A VlessKey's, typed: at the start of a 100,000-key operator every
    /// key's body waits here between the planner and the status build, and
    /// as JSON trees they took ~2 KB each; each becomes JSON only as its
    /// status is finished.
    Key(Box<veil_crds::vless_key::VlessKeyStatus>),
    /// A ProtocolServer's.
    Json(Value),
}

impl Body {
    /// The body as JSON.
    pub fn into_value(self) -> Value {
        match self {
            Body::Key(status) => serde_json::to_value(&*status).unwrap_or(Value::Null),
            Body::Json(value) => value,
        }
    }
}

/// Plans every vless server and key.
pub fn plan_vless(inputs: &VlessInputs<'_>) -> VlessPlan {
    let servers = servers::resolve(inputs.world, inputs.views, inputs.secrets);
    let (keys, baselines) = keys::resolve(
        inputs.world,
        &servers,
        inputs.secrets,
        inputs.traffic,
        inputs.now,
    );
    let mut plan = VlessPlan {
        baselines,
        ..VlessPlan::default()
    };
    let assigned = assign_servers(&servers, users::user_sets(&keys), &mut plan);
    for (&key, server) in &servers {
        let users = assigned.get(key).map_or(0, |(_, users)| *users);
        let (body, conditions) = server_status::server_status(server, users, inputs.views);
        plan.statuses
            .insert(key.clone(), (Body::Json(body), conditions));
    }
    for key in &keys {
        let server = key.server.and_then(|server| servers.get(server));
        let hash = key
            .server
            .and_then(|server| assigned.get(server))
            .map(|(hash, _)| hash.as_str());
        let (status, conditions) = key_status::key_status(
            key,
            server,
            hash,
            inputs.views,
            inputs.previous.get(key.key).map(|raw| raw.get()),
            inputs.now,
        );
        plan.statuses
            .insert(key.key.clone(), (Body::Key(Box::new(status)), conditions));
    }
    plan.wake_at = keys
        .iter()
        .filter_map(|key| next_change(key, inputs.now))
        .min();
    plan.stale_baselines = stale_baselines(inputs.world, inputs.traffic);
    plan
}

/// Adds every server's assignment (with its users) to its nodes'; returns
/// the users hash and user count of each server that has one.
fn assign_servers<'s>(
    servers: &'s BTreeMap<&ObjectKey, servers::Server<'_>>,
    mut user_sets: BTreeMap<&ObjectKey, Users>,
    plan: &mut VlessPlan,
) -> BTreeMap<&'s ObjectKey, (String, usize)> {
    let mut assigned = BTreeMap::new();
    for (&key, server) in servers {
        let Ok(reality) = &server.reality else {
            continue;
        };
        let users = user_sets.remove(key).unwrap_or_default();
        let count = users.len();
        let assignment = users::assignment(server, reality, users);
        assigned.insert(key, (assignment.vless.users_hash.clone(), count));
        for node in &server.nodes {
            plan.assignments
                .entry(node.clone())
                .or_default()
                .push(assignment.clone());
        }
    }
    assigned
}

/// When time alone next changes `key`: its expiry (unless it is in error
/// anyway), or its next period (for every key on a vless server: even a
/// key in error shows its period's traffic).
fn next_change(key: &keys::Key<'_>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let spec = &key.object.spec;
    let expiry = spec
        .expires_at
        .as_ref()
        .map(|at| at.utc())
        .filter(|at| *at > now && !matches!(key.state, keys::KeyState::Error(_)));
    let tz = spec
        .time_zone
        .as_ref()
        .map_or(chrono_tz::Tz::UTC, |zone| zone.tz());
    let reset = key
        .usage
        .as_ref()
        .and_then(|_| period::next_start(spec.traffic_reset_period, tz, now));
    expiry.into_iter().chain(reset).min()
}

/// Baselines of keys that no longer exist.
fn stale_baselines(world: &World, traffic: &TrafficState) -> Vec<String> {
    if traffic.baseline_uids().next().is_none() {
        return Vec::new();
    }
    let live: HashSet<&str> = world
        .of_kind(Kind::VlessKey)
        .filter_map(|(_, object)| match &*object.object {
            Object::VlessKey(key) => key.metadata.uid.as_deref(),
            _ => None,
        })
        .collect();
    let mut stale: Vec<String> = traffic
        .baseline_uids()
        .filter(|uid| !live.contains(uid.as_str()))
        .cloned()
        .collect();
    stale.sort();
    stale
}

#[cfg(test)]
mod tests;
