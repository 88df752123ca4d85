//! The agent's on-disk journal of reports the operator has not acknowledged.
//!
//! Every [`NodeReport`] is written to its own file (`<seq>.json`, fsync'd,
//! then the directory fsync'd) *before* it is sent, and removed only after
//! the operator acknowledged that seq. After a crash or `kill -9` the agent
//! replays what is left, in order, so nothing — task results, log chunks,
//! later traffic deltas — is lost, and the operator's per-seq idempotency
//! makes a replayed report count once.
//!
//! Bounded: at most [`JournalLimits::max_entries`] files and
//! [`JournalLimits::max_bytes`] bytes. When full, the oldest *log-only*
//! entries are dropped first (output is the least valuable thing to keep);
//! reports with task updates are never dropped.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use veil_crds::wire::NodeReport;

/// Bounds on the journal's size.
#[derive(Clone, Debug)]
pub struct JournalLimits {
    pub max_entries: usize,
    pub max_bytes: u64,
}

impl Default for JournalLimits {
    fn default() -> Self {
        JournalLimits {
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
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

/// An open journal directory.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    limits: JournalLimits,
    /// (seq, bytes, log_only) of every entry on disk, ascending.
    entries: Vec<(u64, u64, bool)>,
    dropped: u64,
}

impl Journal {
    /// Opens (creating) the journal in `dir`. Entries that do not parse are
    /// moved aside as `<name>.corrupt` (a torn write from a crash before
    /// fsync) and reported through the log, never silently replayed.
    pub fn open(dir: &Path, limits: JournalLimits) -> Result<Journal, JournalError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
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
                continue;
            };
            match read_report(&path) {
                Ok(report) => {
                    let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    entries.push((seq, bytes, log_only(&report)));
                }
                Err(error) => {
                    tracing::warn!(%error, "moving an unreadable journal entry aside");
                    let _ = fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
        entries.sort_unstable();
        Ok(Journal {
            dir: dir.to_owned(),
            limits,
            entries,
            dropped: 0,
        })
    }

    /// Highest seq on disk (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.entries.last().map_or(0, |e| e.0)
    }

    /// Number of entries waiting for acknowledgement.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing waits for acknowledgement.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Log-only entries dropped because the journal was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.json"))
    }

    /// Durably appends `report` (its `seq` must be above [`Self::last_seq`]).
    pub fn append(&mut self, report: &NodeReport) -> Result<(), JournalError> {
        let path = self.path(report.seq);
        let bytes = serde_json::to_vec(report).map_err(|source| JournalError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let tmp = path.with_extension("tmp");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        file.write_all(&bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        sync_dir(&self.dir)?;
        self.entries
            .push((report.seq, bytes.len() as u64, log_only(report)));
        self.enforce_limits();
        Ok(())
    }

    /// Every entry, oldest first, for replay.
    pub fn pending(&self) -> Result<Vec<NodeReport>, JournalError> {
        self.entries
            .iter()
            .map(|(seq, _, _)| read_report(&self.path(*seq)))
            .collect()
    }

    /// Removes every entry with seq ≤ `seq` (the operator applied them).
    pub fn acknowledge(&mut self, seq: u64) -> Result<(), JournalError> {
        let (done, rest): (Vec<_>, Vec<_>) = self.entries.iter().partition(|(s, _, _)| *s <= seq);
        for (s, _, _) in done {
            let path = self.path(s);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        self.entries = rest;
        Ok(())
    }

    fn enforce_limits(&mut self) {
        loop {
            let bytes: u64 = self.entries.iter().map(|e| e.1).sum();
            if self.entries.len() <= self.limits.max_entries && bytes <= self.limits.max_bytes {
                return;
            }
            let Some(index) = self.entries.iter().position(|e| e.2) else {
                return; // only task updates left: keep them, whatever the size
            };
            let (seq, _, _) = self.entries.remove(index);
            let _ = fs::remove_file(self.path(seq));
            self.dropped += 1;
        }
    }
}

/// A report that may be dropped when the journal is full: logs and server
/// states only (a later report repeats the states). Task results and
/// traffic deltas are never dropped.
fn log_only(report: &NodeReport) -> bool {
    report.task_updates.is_empty() && report.traffic.is_empty()
}

fn read_report(path: &Path) -> Result<NodeReport, JournalError> {
    let bytes = fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|source| JournalError::Corrupt {
        path: path.to_owned(),
        source,
    })
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_crds::wire::{LogChunk, RunRef, TaskUpdate};

    fn run() -> RunRef {
        RunRef {
            namespace: "default".into(),
            name: "r".into(),
            uid: "u".into(),
        }
    }

    fn logs(seq: u64) -> NodeReport {
        NodeReport {
            node: "n".into(),
            seq,
            logs: vec![LogChunk {
                run: run(),
                seq,
                text: "x\n".repeat(100),
            }],
            ..NodeReport::default()
        }
    }

    fn update(seq: u64) -> NodeReport {
        NodeReport {
            node: "n".into(),
            seq,
            task_updates: vec![TaskUpdate {
                run: run(),
                phase: veil_crds::task_run::TaskRunPhase::Succeeded,
                started_at: None,
                finished_at: None,
                exit_code: Some(0),
                reason: None,
                message: None,
            }],
            ..NodeReport::default()
        }
    }

    #[test]
    fn unacknowledged_reports_survive_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), JournalLimits::default()).unwrap();
        for seq in 1..=5 {
            journal.append(&logs(seq)).unwrap();
        }
        journal.acknowledge(2).unwrap();
        drop(journal);
        let journal = Journal::open(dir.path(), JournalLimits::default()).unwrap();
        let seqs: Vec<u64> = journal.pending().unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(journal.last_seq(), 5);
    }

    #[test]
    fn a_full_journal_drops_old_log_chunks_but_never_task_updates() {
        let dir = tempfile::tempdir().unwrap();
        let limits = JournalLimits {
            max_entries: 3,
            max_bytes: u64::MAX,
        };
        let mut journal = Journal::open(dir.path(), limits).unwrap();
        journal.append(&update(1)).unwrap();
        journal.append(&logs(2)).unwrap();
        journal.append(&logs(3)).unwrap();
        journal.append(&update(4)).unwrap();
        journal.append(&update(5)).unwrap();
        let seqs: Vec<u64> = journal.pending().unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 4, 5]);
        assert_eq!(journal.dropped(), 2);
    }

    #[test]
    fn a_full_journal_never_drops_traffic() {
        let dir = tempfile::tempdir().unwrap();
        let limits = JournalLimits {
            max_entries: 2,
            max_bytes: u64::MAX,
        };
        let mut journal = Journal::open(dir.path(), limits).unwrap();
        let mut traffic = logs(1);
        traffic.logs.clear();
        traffic.traffic = vec![veil_crds::wire::UserTraffic {
            server: veil_crds::wire::ServerId::default(),
            email: "alice".into(),
            uplink: 1,
            downlink: 2,
        }];
        journal.append(&traffic).unwrap();
        journal.append(&logs(2)).unwrap();
        journal.append(&logs(3)).unwrap();
        let seqs: Vec<u64> = journal.pending().unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 3]);
    }

    #[test]
    fn a_torn_entry_is_moved_aside_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), JournalLimits::default()).unwrap();
        journal.append(&logs(1)).unwrap();
        std::fs::write(dir.path().join(format!("{:020}.json", 2)), b"{\"node\":").unwrap();
        let journal = Journal::open(dir.path(), JournalLimits::default()).unwrap();
        assert_eq!(journal.len(), 1);
        assert!(dir.path().join(format!("{:020}.corrupt", 2)).exists());
    }
}
