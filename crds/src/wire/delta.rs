//! Assignment deltas: what changed in a node's [`Assignment`] from one
//! revision to the next, so one VLESS key added among 100,000 sends one
//! user, not the whole set (like incremental xDS: versioned updates against
//! an acknowledged base, the whole state whenever the base is unknown).
//!
//! The rules both sides keep:
//!
//! - an [`Assignment`]'s servers are sorted by [`ServerId`] (the operator
//!   builds them so; [`apply`] keeps that order); a server's users are a
//!   [`Users`] set, unique by email;
//! - a delta applies only to the revision it names in `from`;
//! - after every changed server the agent takes the fingerprint
//!   ([`Users::hash`]) of the rebuilt set and compares it with the delta's: any difference, an
//!   unknown base, or a new server without settings is a [`DeltaError`],
//!   after which the agent asks for the whole state (level-triggered
//!   correctness does not depend on deltas being right);
//! - tasks and Strategy groups are small (bounded by the node's parallelism
//!   and its Strategies): a delta carries their whole list when it changed.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{
    Assignment, ServerAssignment, ServerId, StrategyGroup, TaskAssignment, Users, VlessAssignment,
    VlessUser,
};

/// Answer to `GET assignment?after=REV&delta=true`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AssignmentUpdate {
    /// The whole state: the first answer, and whenever the operator has no
    /// unbroken chain of deltas from the agent's revision.
    Full(Assignment),
    /// The changes from the agent's revision to the newest one, in order.
    Deltas(Vec<AssignmentDelta>),
}

impl AssignmentUpdate {
    /// The assignment this update leads to from `current` (what the agent
    /// applied last, if anything). On an error the caller keeps what it
    /// runs and asks for the whole state (`after=0`).
    pub fn resolve(self, current: Option<Assignment>) -> Result<Assignment, DeltaError> {
        match self {
            AssignmentUpdate::Full(assignment) => Ok(assignment),
            AssignmentUpdate::Deltas(deltas) => {
                let mut assignment = current.ok_or(DeltaError::NoBase)?;
                for delta in &deltas {
                    apply(&mut assignment, delta)?;
                }
                Ok(assignment)
            }
        }
    }
}

/// The changes that turn revision `from` of a node's assignment into `revision`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignmentDelta {
    /// The revision this delta applies to.
    pub from: u64,
    /// The revision it produces.
    pub revision: u64,
    /// The whole task list, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<TaskAssignment>>,
    /// The whole list of Strategy groups, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategies: Option<Vec<StrategyGroup>>,
    /// Servers added or changed, sorted by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ServerDelta>,
    /// Servers no longer assigned (stopped by the agent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_servers: Vec<ServerId>,
}

impl AssignmentDelta {
    /// Users named by this delta (added, changed or removed), a measure of
    /// its size that needs no serialising.
    pub fn user_changes(&self) -> usize {
        self.servers
            .iter()
            .map(|s| s.upserted_users.len() + s.removed_users.len())
            .sum()
    }
}

/// What changed in one server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerDelta {
    pub server: ServerId,
    /// Everything about the server but its users (`vless.users` empty),
    /// when any of it changed or the server is new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<ServerAssignment>,
    /// Users added, or whose id or flow changed, sorted by email.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upserted_users: Vec<VlessUser>,
    /// Emails of users removed, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_users: Vec<String>,
    /// The fingerprint ([`Users::hash`]) of the server's whole user set
    /// after this delta.
    pub users_hash: String,
}

/// Why a delta could not be applied; the agent then asks for the whole state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("a delta arrived but no assignment was applied yet")]
    NoBase,
    #[error("the delta applies to revision {from}, but revision {have} is applied")]
    WrongBase { have: u64, from: u64 },
    #[error("server {0} is new but the delta has no settings for it")]
    NewServerWithoutSettings(ServerId),
    #[error(
        "the users of server {server} rebuilt from the delta do not match it (fingerprint {got}, expected {expected})"
    )]
    UsersHash {
        server: ServerId,
        expected: String,
        got: String,
    },
}

/// The delta from `old` to `new` (assignments of one node). Linear in the
/// number of servers; a server's users cost only what differs between the
/// two sets when one was derived from the other (see [`Users::changes_to`]).
pub fn diff(old: &Assignment, new: &Assignment) -> AssignmentDelta {
    let mut delta = AssignmentDelta {
        from: old.revision,
        revision: new.revision,
        tasks: (old.tasks != new.tasks).then(|| new.tasks.clone()),
        strategies: (old.strategies != new.strategies).then(|| new.strategies.clone()),
        ..AssignmentDelta::default()
    };
    let old_servers: BTreeMap<&ServerId, &ServerAssignment> =
        old.servers.iter().map(|s| (&s.server, s)).collect();
    let new_ids: HashSet<&ServerId> = new.servers.iter().map(|s| &s.server).collect();
    delta.removed_servers = old
        .servers
        .iter()
        .filter(|s| !new_ids.contains(&s.server))
        .map(|s| s.server.clone())
        .collect();
    delta.removed_servers.sort();
    for server in &new.servers {
        let changed = match old_servers.get(&server.server) {
            None => Some(ServerDelta {
                server: server.server.clone(),
                settings: Some(settings_of(server)),
                upserted_users: server.vless.users.iter().cloned().collect(),
                removed_users: Vec::new(),
                users_hash: server.vless.users_hash.clone(),
            }),
            Some(before) => server_delta(before, server),
        };
        delta.servers.extend(changed);
    }
    delta.servers.sort_by(|a, b| a.server.cmp(&b.server));
    delta
}

/// The changes of one server present in both revisions; `None` when none.
fn server_delta(old: &ServerAssignment, new: &ServerAssignment) -> Option<ServerDelta> {
    let settings = settings_of(new);
    let settings_changed = settings_of(old) != settings;
    let (upserted_users, removed_users) = old.vless.users.changes_to(&new.vless.users);
    if !settings_changed && upserted_users.is_empty() && removed_users.is_empty() {
        return None;
    }
    Some(ServerDelta {
        server: new.server.clone(),
        settings: settings_changed.then_some(settings),
        upserted_users,
        removed_users,
        users_hash: new.vless.users_hash.clone(),
    })
}

/// `server` without its users (and their fingerprint).
fn settings_of(server: &ServerAssignment) -> ServerAssignment {
    let vless = &server.vless;
    ServerAssignment {
        server: server.server.clone(),
        listen: server.listen.clone(),
        port: server.port,
        allow_cidrs: server.allow_cidrs.clone(),
        vless: VlessAssignment {
            private_key: vless.private_key.clone(),
            dest: vless.dest.clone(),
            server_names: vless.server_names.clone(),
            short_ids: vless.short_ids.clone(),
            policy: vless.policy.clone(),
            users: Users::new(),
            users_hash: String::new(),
        },
    }
}

/// Applies `delta` to `assignment`. On an error `assignment` may be half
/// changed: discard it and ask for the whole state.
pub fn apply(assignment: &mut Assignment, delta: &AssignmentDelta) -> Result<(), DeltaError> {
    if delta.from != assignment.revision {
        return Err(DeltaError::WrongBase {
            have: assignment.revision,
            from: delta.from,
        });
    }
    if let Some(tasks) = &delta.tasks {
        assignment.tasks = tasks.clone();
    }
    if let Some(strategies) = &delta.strategies {
        assignment.strategies = strategies.clone();
    }
    if !delta.removed_servers.is_empty() {
        let removed: HashSet<&ServerId> = delta.removed_servers.iter().collect();
        assignment.servers.retain(|s| !removed.contains(&s.server));
    }
    for change in &delta.servers {
        let index = match assignment
            .servers
            .binary_search_by(|s| s.server.cmp(&change.server))
        {
            Ok(index) => index,
            Err(index) => {
                let settings = change
                    .settings
                    .clone()
                    .ok_or_else(|| DeltaError::NewServerWithoutSettings(change.server.clone()))?;
                assignment.servers.insert(index, settings);
                index
            }
        };
        let server = &mut assignment.servers[index];
        if let Some(settings) = &change.settings {
            let users = std::mem::take(&mut server.vless.users);
            *server = settings.clone();
            server.vless.users = users;
        }
        let users = &mut server.vless.users;
        for email in &change.removed_users {
            users.remove(email);
        }
        for user in &change.upserted_users {
            users.insert(user.clone());
        }
        let got = users.hash();
        if got != change.users_hash {
            return Err(DeltaError::UsersHash {
                server: change.server.clone(),
                expected: change.users_hash.clone(),
                got,
            });
        }
        server.vless.users_hash = got;
    }
    assignment.revision = delta.revision;
    Ok(())
}

#[cfg(test)]
mod tests;
