//! Kubernetes mode: what the operator generates lives in Secrets of the
//! cluster, so that it survives a leader failover and a pod replacement
//! (the store is a per-pod `emptyDir` there), and so that a person reads a
//! key's link with `kubectl`.
//!
//! - `<vlesskey>-vless`, type `veil.dev/vless-credentials`, owned by the
//!   VlessKey: `id` and, once the server's public key and address are
//!   known, `link` (the very link `GET /v1/credentials/vlesskeys/…` serves).
//!   Annotation `veil.dev/id-source` says whether the id was generated or
//!   is the key's `spec.id`;
//! - `<server>-reality`, type `veil.dev/reality-key`, owned by a vless
//!   ProtocolServer without `privateKeySecretRef`: `privateKey` and
//!   `publicKey`. A key from the user's own Secret is never copied.
//!
//! Both carry `app.kubernetes.io/managed-by: veil` and the owner's name as
//! a label (`veil.dev/vlesskey`, `veil.dev/protocolserver`), and an
//! ownerReference to their object (`controller: true`), so garbage
//! collection deletes them with it.
//!
//! Rules (the controller applies them, `controller/secrets.rs`):
//! - nothing is generated before these Secrets have been listed; a value in
//!   a Secret whose owner uid is a live object is adopted by a replica that
//!   has none (a new leader with an empty store), and by a follower always;
//! - the leader's value wins: a Secret edited by a person is written back,
//!   a deleted one is written again with the same value;
//! - only the leader writes, and only Secrets whose operator fields differ
//!   from what it wants: an idle cluster gets no write.
//!
//! Values are credentials: no log line, status or error of this module
//! holds one.

pub mod convert;
pub mod desired;
mod watch;
mod writer;

use std::collections::HashMap;

use tokio::sync::watch as channel;
use tokio::task::JoinHandle;

use self::convert::{DesiredSecret, ObservedSecret};
use self::writer::SecretWriter;
use crate::sink::WriteGate;

/// The label every Secret the operator owns carries, and its value.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// See [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "veil";
/// Annotation of a VlessKey Secret: `generated` or `spec`.
pub const ID_SOURCE_ANNOTATION: &str = "veil.dev/id-source";
/// Data key of a VlessKey's id.
pub const ID_KEY: &str = "id";
/// Data key of a VlessKey's `vless://` link.
pub const LINK_KEY: &str = "link";
/// Data key of a Reality private key.
pub const PRIVATE_KEY_KEY: &str = "privateKey";
/// Data key of a Reality public key.
pub const PUBLIC_KEY_KEY: &str = "publicKey";

/// A Secret by namespace and name.
pub type SecretName = (String, String);

/// The credentials Secrets in the cluster, as watched.
#[derive(Debug, Default)]
pub struct Observed {
    /// Whether the first list is complete (nothing may be generated before).
    pub listed: bool,
    /// Bumped whenever the operator's fields of some Secret change.
    pub version: u64,
    pub secrets: HashMap<SecretName, ObservedSecret>,
}

/// The watch and the writer of credentials Secrets. Dropping it stops both.
pub struct CredentialSecrets {
    observed: channel::Receiver<Observed>,
    writer: SecretWriter,
    watch: JoinHandle<()>,
}

impl CredentialSecrets {
    /// Starts watching (in `namespace`, or every namespace) and a writer
    /// that writes only while `gate` is open, on the current runtime.
    pub fn spawn(
        client: kube::Client,
        namespace: Option<String>,
        gate: WriteGate,
    ) -> CredentialSecrets {
        let (tx, observed) = channel::channel(Observed::default());
        let writer = SecretWriter::spawn(client.clone(), gate, tx.clone());
        let watch = tokio::spawn(watch::run(client, namespace, tx));
        CredentialSecrets {
            observed,
            writer,
            watch,
        }
    }

    /// A receiver woken when the Secrets change (or are first listed).
    pub fn changes(&self) -> channel::Receiver<Observed> {
        self.observed.clone()
    }

    /// The Secrets as watched now. Hold the guard briefly (it blocks the watch).
    pub fn observed(&self) -> channel::Ref<'_, Observed> {
        self.observed.borrow()
    }

    /// Writes `desired` unless the cluster already holds it (see `writer.rs`).
    pub fn submit(&self, desired: DesiredSecret) {
        self.writer.submit(desired);
    }
}

impl Drop for CredentialSecrets {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

#[cfg(test)]
mod tests;
