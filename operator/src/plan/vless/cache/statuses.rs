//! Server statuses and assignments, and the statuses of the keys marked
//! for recomputation.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use veil_crds::common::WorkloadPhase;
use veil_crds::object::{Object, ObjectKey};
use veil_crds::vless_key::VlessKeyStatus;
use veil_crds::wire::ServerAssignment;

use super::super::keys::{Key, KeyState};
use super::super::servers::Server;
use super::super::{Body, VlessInputs, VlessPlan, key_status, server_status, users};
use super::{Dirty, KeyCache, Settled};

impl KeyCache {
    /// Server statuses and assignments; the user-set fingerprint of every
    /// server that has an assignment.
    pub(super) fn server_parts<'s>(
        &mut self,
        inputs: &VlessInputs<'_>,
        servers: &'s BTreeMap<&ObjectKey, Server<'_>>,
        plan: &mut VlessPlan,
    ) -> HashMap<&'s ObjectKey, String> {
        let mut hashes = HashMap::new();
        for (&key, server) in servers {
            let set = self.users.entry(key.clone()).or_default();
            let count = set.len();
            let (body, conditions) = server_status::server_status(server, count, inputs.views);
            plan.statuses
                .insert(key.clone(), (Body::Json(body), conditions));
            let Ok(reality) = &server.reality else {
                continue;
            };
            let hash = set.hash();
            let assignment: ServerAssignment = users::assignment(server, reality, set.clone());
            for node in &server.nodes {
                plan.assignments
                    .entry(node.clone())
                    .or_default()
                    .push(assignment.clone());
            }
            hashes.insert(key, hash);
        }
        self.users
            .retain(|key, set| servers.contains_key(key) || !set.is_empty());
        hashes
    }

    /// The status of every key resolved again or otherwise marked.
    pub(super) fn key_statuses(
        &mut self,
        inputs: &VlessInputs<'_>,
        servers: &BTreeMap<&ObjectKey, Server<'_>>,
        hashes: &HashMap<&ObjectKey, String>,
        dirty: &Dirty,
        plan: &mut VlessPlan,
    ) {
        for key in dirty.resolve.union(&dirty.status) {
            let Some((world_key, object)) = inputs.world.objects.get_key_value(key) else {
                continue;
            };
            let (Object::VlessKey(vless_key), Some(entry)) =
                (&*object.object, self.entries.get_mut(key))
            else {
                continue;
            };
            let server = servers.get_key_value(&entry.server);
            let r = &entry.resolved;
            let resolved = Key {
                key: world_key,
                object: vless_key,
                email: r.email.clone(),
                server: server.filter(|_| r.on_server).map(|(&k, _)| k),
                id: r.id.clone(),
                flow: r.flow,
                usage: r.usage.clone(),
                state: r.state.clone(),
            };
            let hash = server
                .filter(|_| r.on_server)
                .and_then(|(k, _)| hashes.get(k))
                .map(String::as_str);
            let (status, conditions) = key_status::key_status(
                &resolved,
                server.map(|(_, s)| s).filter(|_| r.on_server),
                hash,
                inputs.views,
                inputs.previous.get(key).map(|raw| raw.get()),
                inputs.now,
            );
            entry.settled = settled(&r.state, &status);
            let (server_key, now_settled) = (entry.server.clone(), entry.settled);
            let phase: Arc<str> = Arc::from(status.phase.as_str());
            let old = std::mem::replace(&mut entry.phase, Arc::clone(&phase));
            if old != phase {
                self.count_phase(&old, -1);
                self.count_phase(&phase, 1);
            }
            plan.statuses
                .insert(key.clone(), (Body::Key(Box::new(status)), conditions));
            self.note_settled(&server_key, key, now_settled);
            self.recomputed.push(key.clone());
        }
    }
}

/// Whether the key's `status` survives nodes applying another user set.
fn settled(state: &KeyState, status: &VlessKeyStatus) -> Settled {
    let all = |phase: WorkloadPhase| status.nodes.iter().all(|n| n.phase == phase);
    if status.nodes.is_empty() {
        return Settled::Independent;
    }
    match state {
        KeyState::Error(_) => Settled::No,
        KeyState::Eligible(None) if all(WorkloadPhase::Running) => Settled::AllRunning,
        KeyState::Eligible(None) => Settled::No,
        _ if all(WorkloadPhase::Stopped) => Settled::AllStopped,
        _ => Settled::No,
    }
}
