//! The agent's journal of reports the operator has not acknowledged.
//!
//! Every [`NodeReport`] is written to its own file (`<seq>.json`, mode
//! 0600, fsync'd, then the directory fsync'd; the directory is 0700)
//! *before* it is sent, and removed only after the operator acknowledged
//! that seq. After a crash or `kill -9` the agent replays what is left, in
//! order, so nothing — task results, log chunks, traffic deltas — is lost,
//! and the operator's per-seq idempotency makes a replayed report count once.
//!
//! Contracts:
//! - **Bounded** by [`JournalLimits::max_bytes`] (bytes on disk, in whole
//!   blocks). Over it, state-only entries go first, then the traffic of
//!   every entry not yet sent is merged into one entry per (server, email),
//!   then old task output is cut: a run's first [`HEAD_CHUNKS`] chunks and
//!   the newest ones stay, the chunks between become one line
//!   `[… N bytes dropped by the agent journal limit …]` per entry. Task
//!   updates and traffic deltas are never dropped for space.
//! - **A full disk loses nothing silently**: a report whose write fails
//!   (ENOSPC, EIO, read-only) is held in memory, replayed like the others,
//!   written out as soon as a write succeeds again, and [`Journal::fault`]
//!   says why meanwhile (the reporter puts it in every report, so the
//!   node's status shows it).
//! - **A refused report never blocks the ones behind it**
//!   ([`Journal::reject`]): one with several items is split in two new
//!   entries (so the good items, traffic included, are delivered and a
//!   report too large for the operator becomes smaller); a single refused
//!   item is quarantined in `rejected/` (at most
//!   [`JournalLimits::max_rejected`] files) with an error naming the entry,
//!   never its content.
//! - [`Journal::oldest`] reads one entry; the journal never loads all of
//!   its entries at once after [`Journal::open`].

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use veil_crds::wire::{JournalFault, NodeReport};

mod compact;
mod disk;

pub use compact::{HEAD_CHUNKS, truncation_marker};
pub use disk::{DIR_MODE, FILE_MODE};

/// Bounds on the journal's size.
#[derive(Clone, Debug)]
pub struct JournalLimits {
    /// Bytes the entries may take (on disk, or in memory while the disk
    /// cannot be written).
    pub max_bytes: u64,
    /// Refused reports kept in `rejected/` for inspection; older ones are deleted.
    pub max_rejected: usize,
}

/// Default of [`JournalLimits::max_bytes`]: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;

impl Default for JournalLimits {
    fn default() -> Self {
        JournalLimits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_rejected: 16,
        }
    }
}

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal entry {path} is not a report: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What one entry carries, without its content.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Items {
    updates: usize,
    logs: usize,
    traffic: usize,
}

impl Items {
    fn of(report: &NodeReport) -> Items {
        Items {
            updates: report.task_updates.len(),
            logs: report.logs.len(),
            traffic: report.traffic.len(),
        }
    }

    fn total(self) -> usize {
        self.updates + self.logs + self.traffic
    }
}

/// One unacknowledged report.
#[derive(Debug)]
struct Entry {
    seq: u64,
    /// Space taken (see [`disk::on_disk`]).
    bytes: u64,
    items: Items,
    /// The report itself while its file could not be written.
    held: Option<Box<NodeReport>>,
    /// Its task output was already cut for space (nothing more to gain).
    cut: bool,
}

/// What [`Journal::reject`] did with a refused report.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Split into two new entries with these seqs (sent later, in order).
    Split(u64, u64),
    /// Moved to `rejected/` (or dropped, when even that failed).
    Quarantined,
}

/// An open journal directory.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    limits: JournalLimits,
    /// Ascending by seq.
    entries: Vec<Entry>,
    /// Highest seq handed out (journaled or heartbeat).
    last_seq: u64,
    /// Highest seq offered to the operator: an entry up to it may have been
    /// applied without the answer arriving, so its traffic is never moved
    /// into another entry (it would count twice).
    attempted: u64,
    fault: Option<JournalFault>,
    /// Task output bytes cut for space since the agent started.
    dropped_bytes: u64,
}

impl Journal {
    /// Opens (creating, mode 0700) the journal in `dir`. Entries that do not
    /// parse are moved aside as `<name>.corrupt` (a torn write from a crash
    /// before fsync) and reported through the log, never silently replayed.
    pub fn open(dir: &Path, limits: JournalLimits) -> Result<Journal, JournalError> {
        disk::private_dir(dir)?;
        let mut entries = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let path = entry.path();
            let Some(seq) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                if path.extension().is_some_and(|e| e == "tmp") {
                    let _ = fs::remove_file(&path); // a write cut by a crash
                }
                continue;
            };
            disk::private_file(&path);
            match read_report(&path) {
                Ok(report) => {
                    let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    entries.push(Entry {
                        seq,
                        bytes: disk::on_disk(bytes as usize),
                        items: Items::of(&report),
                        held: None,
                        cut: false,
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "moving an unreadable journal entry aside");
                    let _ = fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
        entries.sort_unstable_by_key(|e| e.seq);
        let last_seq = entries.last().map_or(0, |e| e.seq);
        Ok(Journal {
            dir: dir.to_owned(),
            limits,
            entries,
            last_seq,
            attempted: 0,
            fault: None,
            dropped_bytes: 0,
        })
    }

    /// Highest seq handed out or found on disk.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Makes later seqs start above `seq` (what the operator already applied).
    pub fn raise_seq(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// A new seq, above every seq handed out before.
    pub fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// Number of entries waiting for acknowledgement.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits for acknowledgement.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Space the entries take, as bounded by [`JournalLimits::max_bytes`].
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    /// Task output bytes cut to stay within the limit.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes
    }

    /// Entries held in memory because their write failed.
    pub fn held(&self) -> u64 {
        self.entries.iter().filter(|e| e.held.is_some()).count() as u64
    }

    /// Why the journal cannot be written now (`None`: it can).
    pub fn fault(&self) -> Option<JournalFault> {
        self.fault.clone().map(|fault| JournalFault {
            held_in_memory: self.held(),
            ..fault
        })
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.json"))
    }

    fn rejected_dir(&self) -> PathBuf {
        self.dir.join("rejected")
    }

    /// Journals `report` (its `seq` from [`Self::next_seq`]): on disk, or
    /// in memory when the write fails (see [`Self::fault`]). Then enforces
    /// the size limit.
    pub fn append(&mut self, report: NodeReport) {
        self.retry_writes();
        let seq = report.seq;
        self.last_seq = self.last_seq.max(seq);
        let entry = self.store(report);
        let at = self.entries.partition_point(|e| e.seq < seq);
        self.entries.insert(at, entry);
        self.enforce_limits();
    }

    /// Writes `report` to its file, or holds it when that fails.
    fn store(&mut self, report: NodeReport) -> Entry {
        let bytes = serde_json::to_vec(&report).unwrap_or_default();
        let items = Items::of(&report);
        let size = disk::on_disk(bytes.len());
        let seq = report.seq;
        let held = if self.fault.is_some() {
            // Keep order simple: while held entries wait, new ones wait too
            // (retry_writes flushes them oldest first).
            Some(Box::new(report))
        } else {
            match disk::write_durably(&self.path(seq), &bytes) {
                Ok(()) => None,
                Err(error) => {
                    self.set_fault(&error);
                    Some(Box::new(report))
                }
            }
        };
        Entry {
            seq,
            bytes: size,
            items,
            held,
            cut: false,
        }
    }

    fn set_fault(&mut self, error: &JournalError) {
        if self.fault.is_none() {
            tracing::error!(%error, "cannot write the journal; reports are held in memory and still sent (lost only if the agent dies before they are delivered)");
        }
        self.fault = Some(disk::fault_of(error, self.held()));
    }

    /// Writes held entries out, oldest first; when every write succeeds
    /// (or a probe does, when nothing is held) the fault is cleared.
    pub fn retry_writes(&mut self) {
        if self.fault.is_none() {
            return;
        }
        for index in 0..self.entries.len() {
            let Some(report) = self.entries[index].held.as_deref() else {
                continue;
            };
            let bytes = serde_json::to_vec(report).unwrap_or_default();
            let path = self.path(self.entries[index].seq);
            if let Err(error) = disk::write_durably(&path, &bytes) {
                self.fault = Some(disk::fault_of(&error, self.held()));
                return;
            }
            self.entries[index].held = None;
        }
        let probe = self.dir.join("probe.tmp");
        let probed = disk::write_durably(&probe, b"probe");
        let _ = fs::remove_file(&probe);
        match probed {
            Ok(()) => {
                tracing::info!("the journal is writable again");
                self.fault = None;
            }
            Err(error) => self.fault = Some(disk::fault_of(&error, self.held())),
        }
    }

    /// The oldest entry, read from its file (or memory). An entry that no
    /// longer parses is moved aside and the next one returned.
    pub fn oldest(&mut self) -> Result<Option<NodeReport>, JournalError> {
        while let Some(entry) = self.entries.first() {
            if let Some(report) = &entry.held {
                return Ok(Some((**report).clone()));
            }
            let path = self.path(entry.seq);
            match read_report(&path) {
                Ok(report) => return Ok(Some(report)),
                Err(error @ JournalError::Corrupt { .. }) => {
                    tracing::error!(%error, "moving an unreadable journal entry aside");
                    let _ = fs::rename(&path, path.with_extension("corrupt"));
                    self.entries.remove(0);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }

    /// Records that entries up to `seq` are being offered to the operator.
    pub fn mark_attempted(&mut self, seq: u64) {
        self.attempted = self.attempted.max(seq);
    }

    /// Removes every entry with seq ≤ `seq` (the operator applied them).
    pub fn acknowledge(&mut self, seq: u64) -> Result<(), JournalError> {
        let done = self.entries.partition_point(|e| e.seq <= seq);
        for entry in self.entries.drain(..done) {
            if entry.held.is_some() {
                continue;
            }
            let path = self.dir.join(format!("{:020}.json", entry.seq));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        Ok(())
    }

    /// The operator refused `report` (a journal entry) for good: splits it
    /// when it has several items, quarantines it when it has one (or none).
    pub fn reject(&mut self, report: NodeReport, why: &str) -> Rejection {
        let seq = report.seq;
        let Some(index) = self.entries.iter().position(|e| e.seq == seq) else {
            return Rejection::Quarantined;
        };
        let entry = self.entries.remove(index);
        if entry.items.total() > 1 {
            let mut report = report;
            self.take_newest_states(&mut report);
            let (first, second) = compact::split(report, self.next_seq(), self.next_seq());
            let seqs = (first.seq, second.seq);
            tracing::warn!(seq, first = seqs.0, second = seqs.1, %why, "the operator refused a report; sending its items in two smaller ones");
            self.remove_file(&entry);
            for half in [first, second] {
                let entry = self.store(half);
                self.entries.push(entry);
            }
            return Rejection::Split(seqs.0, seqs.1);
        }
        let what = compact::describe(&report);
        let kept = self.quarantine(&entry, &report);
        tracing::error!(seq, item = %what, %why, kept_in = %kept, "the operator refused a report; it is set aside and the journal moves on");
        Rejection::Quarantined
    }

    fn remove_file(&self, entry: &Entry) {
        if entry.held.is_none() {
            let _ = fs::remove_file(self.path(entry.seq));
        }
    }

    /// Moves a refused entry into `rejected/`, keeping at most
    /// `max_rejected` there. Returns where it went, for the log.
    fn quarantine(&mut self, entry: &Entry, report: &NodeReport) -> String {
        let dir = self.rejected_dir();
        let target = dir.join(format!("{:020}.json", entry.seq));
        let moved = disk::private_dir(&dir).and_then(|()| {
            if entry.held.is_some() {
                disk::write_durably(&target, &serde_json::to_vec(report).unwrap_or_default())
            } else {
                fs::rename(self.path(entry.seq), &target).map_err(io(&target))
            }
        });
        if let Err(error) = moved {
            self.remove_file(entry);
            tracing::warn!(%error, "cannot keep the refused report; it is dropped");
            return "nowhere (dropped)".to_owned();
        }
        let mut kept: Vec<PathBuf> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        kept.sort();
        let excess = kept.len().saturating_sub(self.limits.max_rejected);
        for old in &kept[..excess] {
            let _ = fs::remove_file(old);
        }
        target.display().to_string()
    }

    fn enforce_limits(&mut self) {
        if self.bytes() <= self.limits.max_bytes {
            return;
        }
        compact::enforce(self);
        if self.bytes() > self.limits.max_bytes {
            tracing::warn!(
                bytes = self.bytes(),
                limit = self.limits.max_bytes,
                "the journal is over its limit with task updates and traffic only; they are kept"
            );
        }
    }

    /// Gives `report` (about to get a new, higher seq) the server and
    /// Strategy states of the newest entry, when that is newer: the
    /// operator keeps the states of the highest seq, so older ones must
    /// not come with it.
    fn take_newest_states(&self, report: &mut NodeReport) {
        let Some(newest) = self.entries.len().checked_sub(1) else {
            return;
        };
        if self.entries[newest].seq <= report.seq {
            return;
        }
        if let Ok(states) = self.load(newest) {
            report.servers = states.servers;
            report.strategies = states.strategies;
        }
    }

    /// Loads entry `index`'s report.
    fn load(&self, index: usize) -> Result<NodeReport, JournalError> {
        let entry = &self.entries[index];
        match &entry.held {
            Some(report) => Ok((**report).clone()),
            None => read_report(&self.path(entry.seq)),
        }
    }

    /// Replaces entry `index` with `report` (same seq).
    fn rewrite(&mut self, index: usize, report: NodeReport) {
        let was_on_disk = self.entries[index].held.is_none();
        let entry = self.store(report);
        if was_on_disk && entry.held.is_some() {
            let _ = fs::remove_file(self.path(entry.seq)); // the disk copy is stale
        }
        self.entries[index] = entry;
    }
}

fn read_report(path: &Path) -> Result<NodeReport, JournalError> {
    let bytes = fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|source| JournalError::Corrupt {
        path: path.to_owned(),
        source,
    })
}

/// Traffic of several reports summed per (server, email).
fn merged_traffic<'a>(
    reports: impl IntoIterator<Item = &'a veil_crds::wire::UserTraffic>,
) -> Vec<veil_crds::wire::UserTraffic> {
    let mut sums: BTreeMap<(veil_crds::wire::ServerId, String), (u64, u64)> = BTreeMap::new();
    for t in reports {
        let sum = sums.entry((t.server.clone(), t.email.clone())).or_default();
        sum.0 = sum.0.saturating_add(t.uplink);
        sum.1 = sum.1.saturating_add(t.downlink);
    }
    sums.into_iter()
        .map(
            |((server, email), (uplink, downlink))| veil_crds::wire::UserTraffic {
                server,
                email,
                uplink,
                downlink,
            },
        )
        .collect()
}

#[cfg(test)]
mod tests;
