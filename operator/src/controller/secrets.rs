//! Credentials the operator generates: a VLESS id for every VlessKey
//! without `spec.id`, a Reality private key for every vless ProtocolServer
//! without `privateKeySecretRef`.
//!
//! Each is made once, keyed by the object's uid, and kept in the store
//! (`generated_values`): in dir mode the store is the Secret the operator
//! owns, and the credentials API serves what a client needs. New objects
//! get theirs in one batch per pass, before `plan` reads them; values of
//! objects that are gone are deleted (a uid never comes back). Values are
//! never logged.
//!
//! In Kubernetes mode the cluster's credentials Secrets
//! ([`crate::credential_secrets`]) come first: nothing is generated before
//! they are listed, a replica without a value (a new pod, an empty store)
//! adopts the Secret's, a follower always takes the Secret's, and only the
//! leader generates. Adopted values are written to the store too, which the
//! credentials API reads.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use veil_crds::kind::Kind;
use veil_crds::object::Object;
use veil_crds::protocol_server::Protocol;
use veil_crds::reality;
use veil_crds::validate::VlessId;

use super::{Controller, ControllerError};
use crate::plan::vless::{GeneratedValues, REALITY_KEY_SCOPE, VLESS_ID_SCOPE};
use crate::store::Store;
use crate::world::World;

/// Per scope: the uids that need a generated value, and the uids of every
/// object of the kind (a value is kept while its object exists, so a key
/// that sets `spec.id` for a while gets its generated id back after).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Needed {
    pub vless_ids: HashSet<String>,
    pub keys: HashSet<String>,
    pub reality_keys: HashSet<String>,
    pub servers: HashSet<String>,
}

/// Which objects of `world` need a generated value.
pub(super) fn needed(world: &World) -> Needed {
    let mut needed = Needed::default();
    for (_, object) in world.of_kind(Kind::VlessKey) {
        if let Object::VlessKey(key) = &*object.object
            && let Some(uid) = &key.metadata.uid
        {
            needed.keys.insert(uid.clone());
            if key.spec.id.is_none() {
                needed.vless_ids.insert(uid.clone());
            }
        }
    }
    for (_, object) in world.of_kind(Kind::ProtocolServer) {
        if let Object::ProtocolServer(server) = &*object.object
            && let Some(uid) = &server.metadata.uid
        {
            needed.servers.insert(uid.clone());
            let generated = server.spec.protocol == Protocol::Vless
                && server
                    .spec
                    .vless
                    .as_ref()
                    .is_some_and(|v| v.reality.private_key_secret_ref.is_none());
            if generated {
                needed.reality_keys.insert(uid.clone());
            }
        }
    }
    needed
}

impl Controller {
    /// Makes sure every object of `world` that needs a generated value has
    /// one (in the store and in `self.secrets`), and forgets the values of
    /// objects that are gone. Does nothing for a world already completed.
    pub(super) async fn complete_secrets(
        &mut self,
        world: &Arc<World>,
    ) -> Result<(), ControllerError> {
        let cluster = self.kube.as_ref().and_then(|kube| kube.credentials_state());
        if self
            .secrets_world
            .as_ref()
            .is_some_and(|(done, state)| Arc::ptr_eq(done, world) && *state == cluster)
        {
            return Ok(());
        }
        let mut needed = needed(world);
        let may_generate = match cluster {
            None => true,
            Some(ClusterState { listed: false, .. }) => {
                // Nothing may be generated before the Secrets are known.
                self.secrets_world = None;
                return Ok(());
            }
            Some(ClusterState { leading, .. }) => {
                let adopted = self
                    .kube
                    .as_ref()
                    .map(|kube| kube.adoptable_secrets())
                    .unwrap_or_default();
                adopt_scope(
                    &self.store,
                    VLESS_ID_SCOPE,
                    (&adopted.vless_ids, &needed.vless_ids),
                    &mut self.secrets.vless_ids,
                    leading,
                )
                .await?;
                adopt_scope(
                    &self.store,
                    REALITY_KEY_SCOPE,
                    (&adopted.reality_keys, &needed.reality_keys),
                    &mut self.secrets.reality_keys,
                    leading,
                )
                .await?;
                leading
            }
        };
        if !may_generate {
            needed.vless_ids.clear();
            needed.reality_keys.clear();
        }
        sync_scope(
            &self.store,
            VLESS_ID_SCOPE,
            (&needed.vless_ids, &needed.keys),
            &mut self.secrets.vless_ids,
            || VlessId::generate().uuid().hyphenated().to_string(),
        )
        .await?;
        sync_scope(
            &self.store,
            REALITY_KEY_SCOPE,
            (&needed.reality_keys, &needed.servers),
            &mut self.secrets.reality_keys,
            reality::generate_private_key,
        )
        .await?;
        self.secrets_world = Some((world.clone(), cluster));
        Ok(())
    }
}

/// What of the cluster's credentials Secrets decides a secrets pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ClusterState {
    /// Whether the Secrets have been listed.
    pub listed: bool,
    /// The watched Secrets' version.
    pub version: u64,
    /// Whether this replica leads (may generate and write).
    pub leading: bool,
}

/// The values of `adopted` (by uid) to take: for live objects that need a
/// generated value, when `held` has none, or — on a follower — a
/// different one (the leader's value is the one in the cluster).
pub(super) fn adoptions(
    adopted: &HashMap<String, String>,
    needed: &HashSet<String>,
    held: &GeneratedValues,
    leading: bool,
) -> Vec<(String, String)> {
    let mut taken: Vec<(String, String)> = adopted
        .iter()
        .filter(|(uid, value)| {
            needed.contains(*uid)
                && match held.get(*uid) {
                    None => true,
                    Some(mine) => !leading && mine != *value,
                }
        })
        .map(|(uid, value)| (uid.clone(), value.clone()))
        .collect();
    taken.sort();
    taken
}

/// Takes the [`adoptions`] into the store and `held`.
async fn adopt_scope(
    store: &Store,
    scope: &str,
    (adopted, needed): (&HashMap<String, String>, &HashSet<String>),
    held: &mut GeneratedValues,
    leading: bool,
) -> Result<(), ControllerError> {
    let taken = adoptions(adopted, needed, held, leading);
    if taken.is_empty() {
        return Ok(());
    }
    store.put_generated_values(scope, &taken).await?;
    tracing::info!(
        scope,
        count = taken.len(),
        "adopted credentials from the cluster's Secrets"
    );
    held.extend(taken);
    Ok(())
}

/// Generates values for `needed` uids missing from `held` (one store batch;
/// a value another replica stored first wins), and deletes held values
/// whose object is gone (not in `live`).
async fn sync_scope(
    store: &Store,
    scope: &str,
    (needed, live): (&HashSet<String>, &HashSet<String>),
    held: &mut GeneratedValues,
    generate: impl Fn() -> String,
) -> Result<(), ControllerError> {
    let missing: Vec<(String, String)> = needed
        .iter()
        .filter(|uid| !held.contains_key(*uid))
        .map(|uid| (uid.clone(), generate()))
        .collect();
    if !missing.is_empty() {
        let stored = store.generated_values_or_insert(scope, &missing).await?;
        tracing::info!(scope, count = stored.len(), "generated credentials stored");
        held.extend(stored);
    }
    let gone: Vec<String> = held
        .keys()
        .filter(|uid| !live.contains(*uid))
        .cloned()
        .collect();
    if !gone.is_empty() {
        store.delete_generated_values(scope, &gone).await?;
        for uid in &gone {
            held.remove(uid);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(items: &[(&str, &str)]) -> HashMap<String, String> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_replica_without_a_value_adopts_the_clusters_and_a_follower_always_does() {
        let cluster = map(&[("a", "cluster-a"), ("b", "cluster-b"), ("gone", "x")]);
        let needed: HashSet<String> = ["a", "b", "c"].map(str::to_owned).into();
        let held: GeneratedValues = map(&[("b", "mine-b")]).into_iter().collect();
        let pairs = |items: &[(&str, &str)]| -> Vec<(String, String)> {
            items
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            adoptions(&cluster, &needed, &held, true),
            pairs(&[("a", "cluster-a")]),
            "the leader keeps its own value (an edited Secret is written back)"
        );
        assert_eq!(
            adoptions(&cluster, &needed, &held, false),
            pairs(&[("a", "cluster-a"), ("b", "cluster-b")]),
            "a follower follows the cluster"
        );
        assert!(
            adoptions(&cluster, &HashSet::new(), &GeneratedValues::new(), false).is_empty(),
            "values of objects that are gone (or set spec.id) are not taken"
        );
    }
}
