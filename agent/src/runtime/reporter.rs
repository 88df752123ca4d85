//! Sends what the agent observed: batches task updates and log chunks into
//! [`NodeReport`]s every [`BATCH`], journals each report before sending it,
//! replays the journal in order, and sends a heartbeat when idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use veil_crds::wire::{LogChunk, NodeReport, TaskUpdate};

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
        let mut updates = Vec::new();
        let mut logs = Vec::new();
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
                    Some(Outgoing::Update(update)) => { updates.push(update); urgent = true; }
                    Some(Outgoing::Log(chunk)) => logs.push(chunk),
                    None => stopping = true,
                },
                _ = tick.tick() => urgent = true,
            }
            while let Ok(item) = outbox.try_recv() {
                match item {
                    Outgoing::Update(update) => updates.push(update),
                    Outgoing::Log(chunk) => logs.push(chunk),
                }
            }
            if !(urgent || stopping) {
                continue;
            }
            if !updates.is_empty() || !logs.is_empty() {
                seq += 1;
                let report = NodeReport {
                    node: self.node.clone(),
                    seq,
                    applied_revision: self.applied.load(Ordering::Relaxed),
                    task_updates: std::mem::take(&mut updates),
                    logs: std::mem::take(&mut logs),
                };
                if let Err(error) = self.journal.append(&report) {
                    tracing::error!(%error, "cannot journal a report; it is lost if the agent dies before it is sent");
                }
            }
            let now = Instant::now();
            if stopping || retry_at.is_none_or(|t| now >= t) {
                match self
                    .deliver(seq, now.duration_since(last_sent) >= self.heartbeat)
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
    async fn deliver(&mut self, seq: u64, heartbeat_due: bool) -> Result<bool, ()> {
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
