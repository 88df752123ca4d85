//! Sends what the agent observed: batches task updates, log chunks and
//! traffic into [`NodeReport`]s every [`BATCH`] — as many as it takes to
//! keep each under [`MAX_REPORT_BYTES`] — journals each report before
//! sending it, replays the journal in order (a report the operator refuses
//! for good never blocks the ones behind it), and sends a heartbeat when
//! idle. Every report and heartbeat says whether the journal is writable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::collections::BTreeMap;
use tokio::sync::mpsc;
use tokio::time::Instant;

use veil_crds::wire::{
    LogChunk, MAX_REPORT_BYTES, NodeReport, ServerId, ServerReport, StrategyReport, TaskUpdate,
    UserTraffic,
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
        self.journal.raise_seq(acknowledged);
        let mut pending = Pending::default();
        let mut tick = tokio::time::interval(BATCH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sent = Instant::now();
        let mut retry_at: Option<Instant> = None;
        let mut backoff = Backoff::default();
        let mut stopping = false;
        // The journal's writability as the operator last heard it: a change
        // is sent at once, not with the next heartbeat.
        let mut reported_fault: Option<String> = None;
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
                let applied = self.applied.load(Ordering::Relaxed);
                for report in
                    pending.reports(&self.node, applied, MAX_REPORT_BYTES, &mut self.journal)
                {
                    self.journal.append(report);
                }
            }
            let now = Instant::now();
            if stopping || retry_at.is_none_or(|t| now >= t) {
                let fault = self.journal.fault().map(|f| f.reason);
                let heartbeat_due =
                    now.duration_since(last_sent) >= self.heartbeat || fault != reported_fault;
                match self
                    .deliver(heartbeat_due, &pending.servers, &pending.strategies)
                    .await
                {
                    Ok(sent) => {
                        if sent {
                            last_sent = Instant::now();
                            reported_fault = self.journal.fault().map(|f| f.reason);
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

    /// Sends the journal in order, one entry read at a time (or a
    /// heartbeat when it is empty and one is due). A report the operator
    /// refuses for good is handed to [`Journal::reject`] and the next one
    /// is sent. `Ok(true)` when something was delivered.
    async fn deliver(
        &mut self,
        heartbeat_due: bool,
        servers: &BTreeMap<ServerId, ServerReport>,
        strategies: &[StrategyReport],
    ) -> Result<bool, ()> {
        self.journal.retry_writes();
        let mut delivered = false;
        loop {
            let report = match self.journal.oldest() {
                Ok(Some(report)) => report,
                Ok(None) => break,
                Err(error) => {
                    tracing::error!(%error, "cannot read the journal");
                    return Err(());
                }
            };
            let mut report = report;
            report.applied_revision = self.applied.load(Ordering::Relaxed);
            report.journal_fault = self.journal.fault();
            self.journal.mark_attempted(report.seq);
            match self.client.report(&report).await {
                Ok(ack) => {
                    delivered = true;
                    if let Err(error) = self.journal.acknowledge(ack.seq.max(report.seq)) {
                        tracing::warn!(%error, "could not trim the journal");
                    }
                }
                Err(error) if error.is_refusal() => {
                    delivered = true;
                    self.journal.reject(report, &error.to_string());
                }
                Err(error) => {
                    tracing::warn!(%error, pending = self.journal.len(), "report not delivered; kept in the journal");
                    return Err(());
                }
            }
        }
        if delivered || !heartbeat_due {
            return Ok(delivered);
        }
        let heartbeat = NodeReport {
            node: self.node.clone(),
            seq: self.journal.last_seq(),
            applied_revision: self.applied.load(Ordering::Relaxed),
            servers: servers.values().cloned().collect(),
            strategies: strategies.to_vec(),
            journal_fault: self.journal.fault(),
            ..NodeReport::default()
        };
        match self.client.report(&heartbeat).await {
            Ok(_) => Ok(true),
            Err(error) => {
                tracing::warn!(%error, "heartbeat failed");
                Err(())
            }
        }
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

    /// Turns what is gathered into reports of at most `cap` serialized
    /// bytes each (a single item larger than that goes alone), with seqs
    /// from `journal`. Every report carries the current states.
    fn reports(
        &mut self,
        node: &str,
        applied: u64,
        cap: usize,
        journal: &mut Journal,
    ) -> Vec<NodeReport> {
        let base = NodeReport {
            node: node.to_owned(),
            seq: u64::MAX,
            applied_revision: applied,
            servers: self.servers.values().cloned().collect(),
            strategies: self.strategies.clone(),
            ..NodeReport::default()
        };
        self.states_changed = false;
        // Room for the item arrays' names and what is set at send time
        // (applied revision, journal fault).
        let empty = serialized_len(&base) + 1024;
        let mut reports = Vec::new();
        let mut current = base.clone();
        let mut size = empty;
        for item in self.drain_items() {
            let len = item.serialized_len() + 1;
            if has_items(&current) && size + len > cap {
                let mut done = std::mem::replace(&mut current, base.clone());
                done.seq = journal.next_seq();
                reports.push(done);
                size = empty;
            }
            item.put(&mut current);
            size += len;
        }
        if has_items(&current) || reports.is_empty() {
            current.seq = journal.next_seq();
            reports.push(current);
        }
        reports
    }

    fn drain_items(&mut self) -> Vec<Item> {
        let updates = std::mem::take(&mut self.updates)
            .into_iter()
            .map(Item::Update);
        let traffic = std::mem::take(&mut self.traffic)
            .into_iter()
            .map(Item::Traffic);
        let logs = std::mem::take(&mut self.logs).into_iter().map(Item::Log);
        updates.chain(traffic).chain(logs).collect()
    }

    /// Whether a report (not just a heartbeat) is due.
    fn has_news(&self) -> bool {
        !self.updates.is_empty()
            || !self.logs.is_empty()
            || !self.traffic.is_empty()
            || self.states_changed
    }
}

/// One item of a report.
enum Item {
    Update(TaskUpdate),
    Traffic(UserTraffic),
    Log(LogChunk),
}

impl Item {
    fn serialized_len(&self) -> usize {
        match self {
            Item::Update(update) => serialized_len(update),
            Item::Traffic(traffic) => serialized_len(traffic),
            Item::Log(chunk) => serialized_len(chunk),
        }
    }

    fn put(self, report: &mut NodeReport) {
        match self {
            Item::Update(update) => report.task_updates.push(update),
            Item::Traffic(traffic) => report.traffic.push(traffic),
            Item::Log(chunk) => report.logs.push(chunk),
        }
    }
}

fn has_items(report: &NodeReport) -> bool {
    !(report.task_updates.is_empty() && report.logs.is_empty() && report.traffic.is_empty())
}

fn serialized_len<T: serde::Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(0, |bytes| bytes.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::journal::JournalLimits;
    use veil_crds::wire::RunRef;

    #[test]
    fn gathered_output_is_spread_over_reports_under_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), JournalLimits::default()).unwrap();
        let mut pending = Pending::default();
        let run = RunRef {
            namespace: "default".into(),
            name: "big".into(),
            uid: "u".into(),
        };
        // 10 MB of output in 64 KiB chunks, control characters included
        // (JSON escapes them to six bytes each).
        let text = format!("{}\n", "a\u{1}".repeat(32 * 1024 - 1));
        for seq in 1..=160 {
            pending.take(Outgoing::Log(LogChunk {
                run: run.clone(),
                seq,
                text: text.clone(),
            }));
        }
        pending.take(Outgoing::Traffic(vec![UserTraffic {
            server: ServerId::default(),
            email: "alice".into(),
            uplink: 1,
            downlink: 2,
        }]));
        let reports = pending.reports("n", 7, MAX_REPORT_BYTES, &mut journal);
        assert!(reports.len() >= 10, "{} reports", reports.len());
        for report in &reports {
            let len = serde_json::to_vec(report).unwrap().len();
            assert!(
                len <= MAX_REPORT_BYTES,
                "report {} is {len} bytes",
                report.seq
            );
        }
        let seqs: Vec<u64> = reports.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=reports.len() as u64).collect::<Vec<_>>());
        let chunks: Vec<u64> = reports
            .iter()
            .flat_map(|r| r.logs.iter().map(|c| c.seq))
            .collect();
        assert_eq!(
            chunks,
            (1..=160).collect::<Vec<_>>(),
            "every chunk, in order"
        );
        assert_eq!(reports.iter().map(|r| r.traffic.len()).sum::<usize>(), 1);
        assert!(!pending.has_news());
    }
}
