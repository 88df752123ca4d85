//! What wakes the controller for a pass: a new source snapshot, an agent's
//! change, the node-timeout tick, the leader gate, a credentials Secret
//! (Kubernetes mode), or the plan's own wake time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::credential_secrets::Observed;
use crate::sink::WriteGate;
use crate::source::SourceSnapshot;

/// Every source of a pass, marked seen by [`Triggers::take`].
pub(super) struct Triggers {
    snapshots: watch::Receiver<Arc<SourceSnapshot>>,
    agent_changes: watch::Receiver<u64>,
    /// Node timeouts need a pass even when nothing else happens.
    tick: Interval,
    /// A pass when this replica becomes (or stops being) the leader.
    gate: Option<WriteGate>,
    /// A pass when a credentials Secret changes.
    credentials: Option<watch::Receiver<Observed>>,
}

impl Triggers {
    /// Triggers from these sources; `tick_every` paces the node-timeout tick.
    pub(super) fn new(
        snapshots: watch::Receiver<Arc<SourceSnapshot>>,
        agent_changes: watch::Receiver<u64>,
        tick_every: Duration,
        gate: Option<WriteGate>,
        credentials: Option<watch::Receiver<Observed>>,
    ) -> Triggers {
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Triggers {
            snapshots,
            agent_changes,
            tick,
            gate,
            credentials,
        }
    }

    /// Waits for the source's first load and, in Kubernetes mode, for the
    /// credentials Secrets to be listed (a pass without them would plan
    /// keys without ids and write those statuses). `false`: never.
    pub(super) async fn ready(&mut self) -> bool {
        if self.snapshots.wait_for(|s| s.version > 0).await.is_err() {
            return false;
        }
        match self.credentials.as_mut() {
            Some(credentials) => credentials.wait_for(|seen| seen.listed).await.is_ok(),
            None => true,
        }
    }

    /// The snapshot to plan, with every trigger marked seen.
    pub(super) fn take(&mut self) -> Arc<SourceSnapshot> {
        self.agent_changes.borrow_and_update();
        if let Some(credentials) = self.credentials.as_mut() {
            credentials.borrow_and_update();
        }
        self.snapshots.borrow_and_update().clone()
    }

    /// The source changed since [`Triggers::take`].
    pub(super) fn source_changed(&self) -> bool {
        self.snapshots.has_changed().unwrap_or(false)
    }

    /// A change waits for the next pass (the source's or an agent's).
    pub(super) fn pending(&self) -> bool {
        self.source_changed() || self.agent_changes.has_changed().unwrap_or(false)
    }

    /// Waits for the next trigger or `wake`; `false` when the source is gone.
    pub(super) async fn next(&mut self, wake: Option<Instant>) -> bool {
        let Triggers {
            snapshots,
            agent_changes,
            tick,
            gate,
            credentials,
        } = self;
        let gate = async {
            match gate.as_mut() {
                Some(gate) => gate.changed().await,
                None => std::future::pending().await,
            }
        };
        let credentials = async {
            match credentials.as_mut() {
                Some(credentials) => {
                    if credentials.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        let wake = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = snapshots.changed() => changed.is_ok(),
            _ = agent_changes.changed() => true,
            _ = tick.tick() => true,
            () = gate => true,
            () = credentials => true,
            () = wake => true,
        }
    }
}
