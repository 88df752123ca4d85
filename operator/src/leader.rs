//! Leader election with a `coordination.k8s.io/v1` Lease, so that two
//! replicas of `veil-operator run --source kube` run safely: only the
//! holder of the Lease writes to the cluster (statuses, Schedule-made
//! TaskRuns); the other keeps its world up to date and takes over when the
//! holder stops renewing.
//!
//! Contract of [`spawn`]:
//! - the returned [`WriteGate`] starts closed and is open exactly while
//!   this replica holds the Lease (as far as it knows: it closes the gate
//!   when a renewal has not succeeded for [`RENEW_DEADLINE`], which is
//!   shorter than [`LEASE_DURATION`], so an old leader stops writing before
//!   anyone else may take the Lease over);
//! - the Lease is taken when it is absent, has no holder, or is expired
//!   (`renewTime + leaseDurationSeconds < now`); every write carries the
//!   `resourceVersion` it was based on, so of two replicas racing for it one
//!   gets `409 Conflict` and stays a follower;
//! - it uses only `get`, `create` and `update` on `leases` in the Lease's
//!   namespace (what `manifests/rbac.yaml` grants), never patch/list/watch;
//! - a lost Lease is tried again every [`RETRY_PERIOD`], forever;
//! - when `shutdown` is cancelled the gate closes and a held Lease is
//!   released (no holder), so a follower takes over at its next try;
//! - the holder writes its API endpoint ([`LeaseConfig::endpoint`]) into
//!   the annotation [`ENDPOINT_ANNOTATION`] with every take-over and
//!   renewal, and the returned `watch::Receiver<LeaderState>` says after
//!   every attempt who leads and where it serves (followers read the Lease
//!   every [`RETRY_PERIOD`]), so followers can hand requests to it. A
//!   follower reports an endpoint only after [`replica_set`] has found it
//!   to be the Pod IP of a replica of its own set; any other is dropped
//!   (logged once per change) and requests are answered 503 instead.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::sink::WriteGate;

mod endpoint;
pub mod replica_set;

pub use endpoint::{ENDPOINT_ANNOTATION, advertised};
use replica_set::{ReplicaError, ReplicaSets};
use reqwest::Url;

/// The Lease's name.
pub const LEASE_NAME: &str = "veil-operator";
/// Namespace of the Lease when neither `--lease-namespace` nor
/// `POD_NAMESPACE` names one.
pub const DEFAULT_LEASE_NAMESPACE: &str = "veil-system";
/// How long a Lease stays valid after its last renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);
/// How long the leader keeps writing without a successful renewal.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often a follower (or a failing leader) tries again.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// One API request longer than this counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

/// Who competes for which Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// This replica's name in `holderIdentity`; unique per replica.
    pub identity: String,
    /// Base URL of this replica's API, advertised on the Lease while it
    /// leads (see [`advertised`]); `None` advertises nothing.
    pub endpoint: Option<Url>,
}

/// Who leads, as far as this replica knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LeaderState {
    /// Not known yet (no attempt finished), or this replica lost the
    /// Lease without learning who holds it now.
    #[default]
    Unknown,
    /// This replica holds the Lease.
    Leader,
    /// Another replica holds the Lease; `endpoint` is where it serves, if
    /// it advertises a usable URL.
    Follower {
        holder: String,
        endpoint: Option<Url>,
    },
}

impl LeaseConfig {
    /// The Lease in `namespace` (else `POD_NAMESPACE`, else
    /// [`DEFAULT_LEASE_NAMESPACE`]) for `identity` (else `POD_NAME`, else
    /// `<hostname>_<pid>`).
    pub fn from_env(namespace: Option<String>, identity: Option<String>) -> LeaseConfig {
        let non_empty = |value: Option<String>| value.filter(|v| !v.is_empty());
        let namespace = operator_namespace(namespace);
        let identity = non_empty(identity)
            .or_else(|| non_empty(std::env::var("POD_NAME").ok()))
            .unwrap_or_else(|| format!("{}_{}", hostname(), std::process::id()));
        LeaseConfig {
            namespace,
            identity,
            endpoint: None,
        }
    }
}

/// The namespace the operator runs in: `explicit` (`--lease-namespace`),
/// else `POD_NAMESPACE`, else [`DEFAULT_LEASE_NAMESPACE`]. It holds the
/// leader-election Lease and the agents' node-token Secrets.
pub fn operator_namespace(explicit: Option<String>) -> String {
    explicit
        .filter(|v| !v.is_empty())
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_LEASE_NAMESPACE.to_owned())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "veil-operator".to_owned())
}

/// Why one attempt to take or renew the Lease failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("Lease {namespace}/{LEASE_NAME}: {source}")]
    Api {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("Lease {namespace}/{LEASE_NAME}: no answer within {REQUEST_TIMEOUT:?}")]
    Timeout { namespace: String },
}

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// This replica holds the Lease (taken or renewed now).
    Holding,
    /// Another replica holds it (`holder`, serving at `endpoint`), or won a
    /// race for it (holder and endpoint unknown until the next read).
    Following {
        holder: String,
        endpoint: Option<Url>,
    },
}

/// What [`spawn`] hands back.
pub struct Election {
    /// Open while this replica leads.
    pub gate: WriteGate,
    /// Who leads and where it serves, updated after every attempt.
    pub state: watch::Receiver<LeaderState>,
    /// The election task; it ends after `shutdown`, having released a held
    /// Lease.
    pub task: JoinHandle<()>,
}

/// Starts competing for the Lease. `on_change` is called with every change
/// of leadership (for the `veil_leader` gauge).
pub fn spawn(
    client: kube::Client,
    config: LeaseConfig,
    shutdown: CancellationToken,
    on_change: impl Fn(bool) + Send + Sync + 'static,
) -> Election {
    let (switch, open) = watch::channel(false);
    let (state, state_rx) = watch::channel(LeaderState::Unknown);
    let elector = Elector {
        api: Api::namespaced(client.clone(), &config.namespace),
        replicas: ReplicaSets::new(client, &config.namespace, &config.identity),
        config,
        switch,
        state,
        on_change: Box::new(on_change),
    };
    Election {
        gate: WriteGate::new(open),
        state: state_rx,
        task: tokio::spawn(elector.run(shutdown)),
    }
}

struct Elector {
    api: Api<Lease>,
    replicas: ReplicaSets,
    config: LeaseConfig,
    switch: watch::Sender<bool>,
    state: watch::Sender<LeaderState>,
    on_change: Box<dyn Fn(bool) + Send + Sync>,
}

impl Elector {
    async fn run(self, shutdown: CancellationToken) {
        let advertising = self.config.endpoint.as_ref().map(Url::as_str);
        tracing::info!(lease = %self.lease_path(), identity = %self.config.identity, endpoint = ?advertising, "competing for the leader Lease");
        if advertising.is_none() {
            tracing::warn!(
                "no endpoint to advertise (set --advertise-url, or POD_IP, or --listen on a specific address): while this replica leads, followers answer /v1/ requests with 503"
            );
        }
        // Until when the Lease we hold is surely ours (last renewal + deadline).
        let mut holding_until: Option<Instant> = None;
        let mut failing = false;
        let mut checked = CheckedEndpoint::default();
        loop {
            let started = Instant::now();
            let wait = match self.attempt().await {
                Ok(Attempt::Holding) => {
                    if failing {
                        tracing::info!("the leader Lease answers again");
                        failing = false;
                    }
                    holding_until = Some(started + RENEW_DEADLINE);
                    self.set_leading(true);
                    self.set_state(LeaderState::Leader);
                    RENEW_INTERVAL
                }
                Ok(Attempt::Following { holder, endpoint }) => {
                    failing = false;
                    holding_until = None;
                    self.set_leading(false);
                    let endpoint = checked.trusted(&self.replicas, &holder, endpoint).await;
                    self.set_state(LeaderState::Follower { holder, endpoint });
                    RETRY_PERIOD
                }
                Err(error) => {
                    if failing {
                        tracing::debug!(%error, "leader election: retrying");
                    } else {
                        tracing::warn!(%error, "leader election: could not read or write the Lease; retrying");
                        failing = true;
                    }
                    RETRY_PERIOD
                }
            };
            // Sleep until the next attempt, but stop writing the moment the
            // renew deadline passes.
            let next = Instant::now() + wait;
            let wake = holding_until.map_or(next, |until| until.min(next));
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(wake) => {}
            }
            if holding_until.is_some_and(|until| Instant::now() >= until) {
                tracing::warn!(deadline = ?RENEW_DEADLINE, "could not renew the leader Lease in time; stopped writing");
                holding_until = None;
                self.set_leading(false);
                self.set_state(LeaderState::Unknown);
            }
        }
        let was_leading = *self.switch.borrow();
        self.set_leading(false);
        self.set_state(LeaderState::Unknown);
        if was_leading {
            match self.release().await {
                Ok(()) => tracing::info!("released the leader Lease"),
                Err(error) => {
                    tracing::warn!(%error, "could not release the leader Lease; it expires by itself");
                }
            }
        }
    }

    fn lease_path(&self) -> String {
        format!("{}/{LEASE_NAME}", self.config.namespace)
    }

    fn set_leading(&self, leading: bool) {
        let changed = self.switch.send_if_modified(|open| {
            let changed = *open != leading;
            *open = leading;
            changed
        });
        if changed {
            if leading {
                tracing::info!(identity = %self.config.identity, "became the leader: writing statuses and task runs");
            } else {
                tracing::info!(identity = %self.config.identity, "not the leader: not writing to the cluster");
            }
            (self.on_change)(leading);
        }
    }

    fn set_state(&self, state: LeaderState) {
        self.state.send_if_modified(|current| {
            let changed = *current != state;
            if changed {
                if let LeaderState::Follower { holder, endpoint } = &state {
                    let endpoint = endpoint.as_ref().map(Url::as_str);
                    tracing::info!(%holder, endpoint = ?endpoint, "following the leader");
                }
                *current = state.clone();
            }
            changed
        });
    }

    /// One get, then at most one create or update.
    async fn attempt(&self) -> Result<Attempt, LeaderError> {
        let now = Timestamp::now();
        let Some(mut lease) = self.call(self.api.get_opt(LEASE_NAME)).await? else {
            let mut lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_owned()),
                    namespace: Some(self.config.namespace.clone()),
                    labels: Some(
                        [("app.kubernetes.io/managed-by".to_owned(), "veil".to_owned())].into(),
                    ),
                    ..ObjectMeta::default()
                },
                spec: Some(self.held_spec(now, now, 0)),
            };
            endpoint::write(&mut lease, self.config.endpoint.as_ref());
            return self.won(
                self.call(self.api.create(&PostParams::default(), &lease))
                    .await,
            );
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let spec = if holder == self.config.identity {
            LeaseSpec {
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(lease_seconds()),
                ..spec
            }
        } else if holder.is_empty() || expired(&spec, now) {
            let transitions = spec.lease_transitions.unwrap_or(0).saturating_add(1);
            self.held_spec(now, now, transitions)
        } else {
            return Ok(Attempt::Following {
                holder,
                endpoint: endpoint::read(&lease),
            });
        };
        lease.spec = Some(spec);
        endpoint::write(&mut lease, self.config.endpoint.as_ref());
        self.won(
            self.call(self.api.replace(LEASE_NAME, &PostParams::default(), &lease))
                .await,
        )
    }

    /// A write's result: ours, or lost to a concurrent writer (409).
    fn won(&self, result: Result<Lease, LeaderError>) -> Result<Attempt, LeaderError> {
        match result {
            Ok(_) => Ok(Attempt::Holding),
            Err(LeaderError::Api {
                source: kube::Error::Api(status),
                ..
            }) if status.code == 409 => Ok(Attempt::Following {
                holder: String::new(),
                endpoint: None,
            }),
            Err(error) => Err(error),
        }
    }

    fn held_spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(lease_seconds()),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Gives up a Lease this replica still holds: no holder, so the next
    /// try of a follower takes it.
    async fn release(&self) -> Result<(), LeaderError> {
        let Some(mut lease) = self.call(self.api.get_opt(LEASE_NAME)).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        endpoint::write(&mut lease, None);
        self.call(self.api.replace(LEASE_NAME, &PostParams::default(), &lease))
            .await
            .map(|_| ())
    }

    async fn call<T>(
        &self,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, LeaderError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(LeaderError::Api {
                namespace: self.config.namespace.clone(),
                source,
            }),
            Err(_) => Err(LeaderError::Timeout {
                namespace: self.config.namespace.clone(),
            }),
        }
    }
}

/// The last advertised endpoint checked against the replica set, so the
/// Pod and ReplicaSet are read once per change of holder or endpoint, not
/// on every read of the Lease.
#[derive(Default)]
struct CheckedEndpoint {
    last: Option<(String, Url, Option<Url>)>,
}

impl CheckedEndpoint {
    /// `endpoint` if it is a replica of this set (see [`replica_set`]).
    async fn trusted(
        &mut self,
        replicas: &ReplicaSets,
        holder: &str,
        endpoint: Option<Url>,
    ) -> Option<Url> {
        let endpoint = endpoint?;
        if let Some((last_holder, last_endpoint, verdict)) = &self.last
            && last_holder == holder
            && *last_endpoint == endpoint
        {
            return verdict.clone();
        }
        let verdict = match replicas.trusted_endpoint(holder, &endpoint).await {
            Ok(url) => Some(url),
            // A transient API error: no verdict to keep, try again next time.
            Err(error @ ReplicaError::Api { .. }) => {
                tracing::warn!(%holder, endpoint = %endpoint, %error, "could not check the leader's endpoint against this replica set; not forwarding there yet");
                return None;
            }
            Err(error) => {
                tracing::warn!(%holder, endpoint = %endpoint, reason = %error, "the Lease advertises an endpoint that is not a Pod of this replica set; not forwarding there (requests are answered 503)");
                None
            }
        };
        self.last = Some((holder.to_owned(), endpoint, verdict.clone()));
        verdict
    }
}

/// Refuses a kube-mode replica on a store of its own (per-pod SQLite) when
/// its ReplicaSet wants more than one replica: a new leader would start
/// from empty traffic totals, period baselines and run logs, so limits
/// would stop holding after a failover. Outside a ReplicaSet (a process
/// outside the cluster, a bare Pod) there is nothing to check; when the
/// ReplicaSet cannot be read the check is skipped with a warning.
pub async fn check_store_is_shared(
    client: kube::Client,
    config: &LeaseConfig,
    shared_store: bool,
) -> Result<(), StoreNotShared> {
    if shared_store {
        return Ok(());
    }
    let replicas = ReplicaSets::new(client, &config.namespace, &config.identity);
    match replicas.own_replicas().await {
        Ok(Some(count)) if count > 1 => Err(StoreNotShared { replicas: count }),
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::warn!(%error, "could not read this replica's ReplicaSet; the replica count on the per-pod store is not checked (RBAC: get pods, replicasets in the operator's namespace)");
            Ok(())
        }
    }
}

/// More than one replica on a per-pod store.
#[derive(Debug, thiserror::Error)]
#[error(
    "this replica's ReplicaSet wants {replicas} replicas, but its store is the SQLite file in its own data dir: after a failover the new leader would start from empty traffic totals, period baselines and run logs, and traffic limits would stop holding. Point every replica at one PostgreSQL (--database-url / VEIL_DATABASE_URL; the chart's operator.database.urlSecret), or run one replica (docs/kubernetes.md, \"Several replicas\")"
)]
pub struct StoreNotShared {
    pub replicas: i32,
}

fn lease_seconds() -> i32 {
    i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(i32::MAX)
}

/// Whether a Lease held by someone else may be taken over at `now`: its
/// last renewal (or acquisition) plus its duration lies in the past. A
/// Lease without either time is expired.
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(MicroTime(renewed)) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration_ms = i64::from(spec.lease_duration_seconds.unwrap_or(0)).saturating_mul(1000);
    renewed.as_millisecond().saturating_add(duration_ms) < now.as_millisecond()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn a_lease_expires_after_its_duration_from_the_last_renewal() {
        let spec = LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(at(0))),
            renew_time: Some(MicroTime(at(100))),
            ..LeaseSpec::default()
        };
        assert!(!expired(&spec, at(110)));
        assert!(!expired(&spec, at(115)));
        assert!(expired(&spec, at(116)));
        assert!(expired(&LeaseSpec::default(), at(0)), "no times: expired");
    }

    #[test]
    fn the_old_leader_stops_writing_before_the_lease_can_be_taken() {
        assert!(RENEW_INTERVAL < RENEW_DEADLINE);
        assert!(RENEW_DEADLINE + REQUEST_TIMEOUT <= LEASE_DURATION);
    }

    #[test]
    fn explicit_names_win_over_the_environment() {
        let config = LeaseConfig::from_env(Some("ns".into()), Some("me".into()));
        assert_eq!(
            config,
            LeaseConfig {
                namespace: "ns".into(),
                identity: "me".into(),
                endpoint: None,
            }
        );
    }
}
