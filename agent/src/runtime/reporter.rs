//! Sends what the agent observed: batches task updates and log chunks into
//! [`NodeReport`]s every [`BATCH`], journals each report before sending it,
//! replays the journal in order, and sends a heartbeat when idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::collections::BTreeMap;
use tokio::sync::mpsc;
use tokio::time::Instant;

use veil_crds::wire::{
    LogChunk, NodeReport, ServerId, ServerReport, StrategyReport, TaskUpdate, UserTraffic,
};

use super::Backoff;
use crate::client::OperatorClient;
use crate::journal::Journal;

/// How long updates and log lines are gathered into one report.
pub const BATCH: Duration = Duration::from_millis(100);

/// Something to report.
#[derive(Debug)]
pub enum Outgoing {
    /// A run changed state; sent without waiting for the batch tick.
    Update(TaskUpdate),
    /// Output of a run.
    Log(LogChunk),
    /// A server's current state; sent at once, and with every later report.
    Server(ServerReport),
    /// A server was removed from this node.
    ServerGone(ServerId),
    /// Traffic deltas read (and reset) from a server: journaled at once, so
    /// an agent killed right after the read loses nothing.
    Traffic(Vec<UserTraffic>),
    /// Every Strategy's current state (replaces the previous set); sent at
    /// once, and with every later report.
    Strategies(Vec<StrategyReport>),
}

pub struct Reporter {
    pub client: OperatorClient,
    pub node: String,
    pub journal: Journal,
    pub heartbeat: Duration,
    pub applied: Arc<AtomicU64>,
}

impl Reporter {
    /// Runs until every sender of `outbox` is gone (the task manager has
    /// stopped and reported its final updates), then makes one last attempt
    /// to deliver the journal; what is not delivered stays journaled.
    pub async fn run(mut self, mut outbox: mpsc::UnboundedReceiver<Outgoing>, acknowledged: u64) {
        if let Err(error) = self.journal.acknowledge(acknowledged) {
            tracing::warn!(%error, "could not trim the journal");
        }
        let mut seq = self.journal.last_seq().max(acknowledged);
        let mut pending = Pending::default();
        let mut tick = tokio::time::interval(BATCH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sent = Instant::now();
        let mut retry_at: Option<Instant> = None;
        let mut backoff = Backoff::default();
        let mut stopping = false;
        loop {
            let mut urgent = false;
            tokio::select! {
                item = outbox.recv() => match item {
                    Some(item) => urgent = pending.take(item),
                    None => stopping = true,
                },
                _ = tick.tick() => urgent = true,
            }
            while let Ok(item) = outbox.try_recv() {
                pending.take(item);
            }
            if !(urgent || stopping) {
                continue;
            }
            if pending.has_news() {
                seq += 1;
                let report = NodeReport {
                    node: self.node.clone(),
                    seq,
                    applied_revision: self.applied.load(Ordering::Relaxed),
                    task_updates: std::mem::take(&mut pending.updates),
                    logs: std::mem::take(&mut pending.logs),
                    servers: pending.servers.values().cloned().collect(),
                    traffic: std::mem::take(&mut pending.traffic),
                    strategies: pending.strategies.clone(),
                };
                pending.states_changed = false;
                if let Err(error) = self.journal.append(&report) {
                    tracing::error!(%error, "cannot journal a report; it is lost if the agent dies before it is sent");
                }
            }
            let now = Instant::now();
            if stopping || retry_at.is_none_or(|t| now >= t) {
                match self
                    .deliver(
                        seq,
                        now.duration_since(last_sent) >= self.heartbeat,
                        &pending.servers,
                        &pending.strategies,
                    )
                    .await
                {
                    Ok(sent) => {
                        if sent {
                            last_sent = Instant::now();
                        }
                        retry_at = None;
                        backoff.reset();
                    }
                    Err(()) => retry_at = Some(Instant::now() + backoff.next_delay()),
                }
            }
            if stopping {
                return;
            }
        }
    }

    /// Sends the journal in order (or a heartbeat when it is empty and one
    /// is due). `Ok(true)` when something was delivered.
    async fn deliver(
        &mut self,
        seq: u64,
        heartbeat_due: bool,
        servers: &BTreeMap<ServerId, ServerReport>,
        strategies: &[StrategyReport],
    ) -> Result<bool, ()> {
        let pending = match self.journal.pending() {
            Ok(pending) => pending,
            Err(error) => {
                tracing::error!(%error, "cannot read the journal");
                return Err(());
            }
        };
        if pending.is_empty() {
            if !heartbeat_due {
                return Ok(false);
            }
            let heartbeat = NodeReport {
                node: self.node.clone(),
                seq,
                applied_revision: self.applied.load(Ordering::Relaxed),
                servers: servers.values().cloned().collect(),
                strategies: strategies.to_vec(),
                ..NodeReport::default()
            };
            return match self.client.report(&heartbeat).await {
                Ok(_) => Ok(true),
                Err(error) => {
                    tracing::warn!(%error, "heartbeat failed");
                    Err(())
                }
            };
        }
        for mut report in pending {
            report.applied_revision = self.applied.load(Ordering::Relaxed);
            match self.client.report(&report).await {
                Ok(ack) => {
                    if let Err(error) = self.journal.acknowledge(ack.seq) {
                        tracing::warn!(%error, "could not trim the journal");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, pending = self.journal.len(), "report not delivered; kept in the journal");
                    return Err(());
                }
            }
        }
        Ok(true)
    }
}

/// What is gathered for the next report.
#[derive(Default)]
struct Pending {
    updates: Vec<TaskUpdate>,
    logs: Vec<LogChunk>,
    traffic: Vec<UserTraffic>,
    /// Latest state of every server (kept: each report carries them all).
    servers: BTreeMap<ServerId, ServerReport>,
    /// Latest state of every Strategy (kept: each report carries them all).
    strategies: Vec<StrategyReport>,
    /// Servers or strategies changed since the last report.
    states_changed: bool,
}

impl Pending {
    /// Takes one item; true when it should be reported without waiting.
    fn take(&mut self, item: Outgoing) -> bool {
        match item {
            Outgoing::Update(update) => {
                self.updates.push(update);
                true
            }
            Outgoing::Log(chunk) => {
                self.logs.push(chunk);
                false
            }
            Outgoing::Server(report) => {
                self.servers.insert(report.server.clone(), report);
                self.states_changed = true;
                true
            }
            Outgoing::ServerGone(id) => {
                self.servers.remove(&id);
                self.states_changed = true;
                true
            }
            Outgoing::Traffic(traffic) => {
                self.traffic.extend(traffic);
                true
            }
            Outgoing::Strategies(strategies) => {
                self.strategies = strategies;
                self.states_changed = true;
                true
            }
        }
    }

    /// Whether a report (not just a heartbeat) is due.
    fn has_news(&self) -> bool {
        !self.updates.is_empty()
            || !self.logs.is_empty()
            || !self.traffic.is_empty()
            || self.states_changed
    }
}
