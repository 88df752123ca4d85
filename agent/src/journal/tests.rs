#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use super::*;
use veil_crds::wire::{LogChunk, RunRef, ServerId, TaskUpdate, UserTraffic};

fn run() -> RunRef {
    RunRef {
        namespace: "default".into(),
        name: "r".into(),
        uid: "u".into(),
    }
}

fn report(seq: u64) -> NodeReport {
    NodeReport {
        node: "n".into(),
        seq,
        ..NodeReport::default()
    }
}

fn chunk(seq: u64, text: &str) -> LogChunk {
    LogChunk {
        run: run(),
        seq,
        text: text.to_owned(),
    }
}

fn logs(seq: u64) -> NodeReport {
    NodeReport {
        logs: vec![chunk(seq, &"x\n".repeat(100))],
        ..report(seq)
    }
}

fn update(seq: u64) -> NodeReport {
    NodeReport {
        task_updates: vec![TaskUpdate {
            run: run(),
            phase: veil_crds::task_run::TaskRunPhase::Succeeded,
            started_at: None,
            finished_at: None,
            exit_code: Some(0),
            reason: None,
            message: None,
        }],
        ..report(seq)
    }
}

fn traffic(email: &str, uplink: u64, downlink: u64) -> UserTraffic {
    UserTraffic {
        server: ServerId {
            namespace: "default".into(),
            name: "edge".into(),
        },
        email: email.into(),
        uplink,
        downlink,
    }
}

fn open(dir: &Path, max_bytes: u64) -> Journal {
    Journal::open(
        dir,
        JournalLimits {
            max_bytes,
            max_rejected: 2,
        },
    )
    .unwrap()
}

/// Takes every entry, oldest first, acknowledging each (as the reporter does).
fn drain(journal: &mut Journal) -> Vec<NodeReport> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let Some(report) = journal.oldest().unwrap() else {
            return out;
        };
        journal.acknowledge(report.seq).unwrap();
        out.push(report);
    }
    panic!("the journal did not drain");
}

#[test]
fn unacknowledged_reports_survive_reopening_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = open(dir.path(), DEFAULT_MAX_BYTES);
    for _ in 1..=5 {
        let seq = journal.next_seq();
        journal.append(logs(seq));
    }
    journal.acknowledge(2).unwrap();
    drop(journal);
    let mut journal = open(dir.path(), DEFAULT_MAX_BYTES);
    assert_eq!(journal.last_seq(), 5);
    let seqs: Vec<u64> = drain(&mut journal).iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![3, 4, 5]);
}

#[cfg(unix)]
#[test]
fn the_journal_is_private_to_the_agent_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    // An older agent (or a careless umask) left it world-readable.
    std::fs::create_dir(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut journal = open(&path, DEFAULT_MAX_BYTES);
    let seq = journal.next_seq();
    journal.append(update(seq));
    let seq = journal.next_seq();
    let refused = logs(seq);
    journal.append(refused.clone());
    journal.acknowledge(1).unwrap();
    assert_eq!(journal.reject(refused, "413"), Rejection::Quarantined);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), DIR_MODE);
    assert_eq!(mode(&path.join("rejected")), DIR_MODE);
    let seq = journal.next_seq();
    journal.append(update(seq));
    let entry = path.join(format!("{seq:020}.json"));
    assert_eq!(mode(&entry), FILE_MODE);
    assert_eq!(
        mode(&path.join("rejected").join(format!("{:020}.json", 2))),
        FILE_MODE
    );
}

#[test]
fn over_the_limit_old_output_is_cut_with_a_marker_keeping_head_and_tail() {
    let dir = tempfile::tempdir().unwrap();
    // 40 entries of one 8 KiB chunk each (12 KiB on disk) against 256 KiB.
    let mut journal = open(dir.path(), 256 * 1024);
    let seq = journal.next_seq();
    journal.append(update(seq));
    for n in 1..=40 {
        let seq = journal.next_seq();
        let text = format!("{n:04}{}\n", "y".repeat(8 * 1024));
        journal.append(NodeReport {
            logs: vec![chunk(n, &text)],
            ..report(seq)
        });
    }
    assert!(journal.bytes() <= 256 * 1024, "{}", journal.bytes());
    assert!(journal.dropped_bytes() > 0);
    let reports = drain(&mut journal);
    assert_eq!(reports[0].task_updates.len(), 1, "updates are never cut");
    let log: String = reports
        .iter()
        .flat_map(|r| r.logs.iter())
        .map(|c| {
            if c.text.starts_with("[… ") {
                c.text.clone()
            } else {
                c.text[..4].to_owned() + "\n"
            }
        })
        .collect();
    let chunks: Vec<u64> = reports
        .iter()
        .flat_map(|r| r.logs.iter().map(|c| c.seq))
        .collect();
    assert_eq!(
        chunks,
        (1..=40).collect::<Vec<_>>(),
        "every chunk seq is kept: no holes"
    );
    assert!(
        log.starts_with(
            "0001\n0002\n0003\n0004\n[… 8197 bytes dropped by the agent journal limit …]\n"
        ),
        "{log}"
    );
    assert!(
        log.ends_with("0039\n0040\n"),
        "the newest output is kept: {log}"
    );
}

#[test]
fn over_the_limit_traffic_is_merged_per_user_and_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = open(dir.path(), 16 * 4096);
    // Offered to the operator already: may be applied; never merged.
    let first = journal.next_seq();
    journal.append(NodeReport {
        traffic: vec![traffic("alice", 1, 1)],
        ..report(first)
    });
    journal.mark_attempted(first);
    for _ in 0..40 {
        let seq = journal.next_seq();
        journal.append(NodeReport {
            traffic: vec![traffic("alice", 10, 100), traffic("bob", 1, 2)],
            ..report(seq)
        });
    }
    assert!(journal.bytes() <= 16 * 4096, "{}", journal.bytes());
    let reports = drain(&mut journal);
    assert_eq!(reports[0].seq, first);
    assert_eq!(reports[0].traffic, vec![traffic("alice", 1, 1)]);
    let sum = |email: &str| {
        reports
            .iter()
            .flat_map(|r| r.traffic.iter())
            .filter(|t| t.email == email)
            .fold((0, 0), |(u, d), t| (u + t.uplink, d + t.downlink))
    };
    assert_eq!(sum("alice"), (1 + 400, 1 + 4000), "no byte lost");
    assert_eq!(sum("bob"), (40, 80));
    assert!(
        reports
            .iter()
            .all(|r| r.traffic.iter().filter(|t| t.email == "bob").count() <= 1),
        "one delta per (server, email) in a merged entry"
    );
}

#[test]
fn a_refused_report_is_split_then_quarantined_and_never_blocks_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = open(dir.path(), DEFAULT_MAX_BYTES);
    let seq = journal.next_seq();
    journal.append(NodeReport {
        logs: vec![chunk(1, "bad\n")],
        traffic: vec![traffic("alice", 5, 6)],
        ..report(seq)
    });
    let seq = journal.next_seq();
    journal.append(update(seq));
    let refused = journal.oldest().unwrap().unwrap();
    assert_eq!(refused.seq, 1);
    // Two items: split in two new entries after the update.
    assert_eq!(journal.reject(refused, "413"), Rejection::Split(3, 4));
    let next = journal.oldest().unwrap().unwrap();
    assert_eq!(next.seq, 2, "the entry behind the refused one goes next");
    journal.acknowledge(2).unwrap();
    let half = journal.oldest().unwrap().unwrap();
    assert_eq!(half.logs.len(), 1);
    // The log chunk alone is refused again: quarantined, not retried.
    assert_eq!(journal.reject(half, "413"), Rejection::Quarantined);
    let rest = drain(&mut journal);
    assert_eq!(rest.len(), 1);
    assert_eq!(
        rest[0].traffic,
        vec![traffic("alice", 5, 6)],
        "the traffic of the refused report is sent again"
    );
    assert!(
        dir.path()
            .join("rejected")
            .join(format!("{:020}.json", 3))
            .exists()
    );
}

#[test]
fn the_rejected_area_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = open(dir.path(), DEFAULT_MAX_BYTES);
    for _ in 0..5 {
        let seq = journal.next_seq();
        journal.append(logs(seq));
        let refused = journal.oldest().unwrap().unwrap();
        assert_eq!(journal.reject(refused, "400"), Rejection::Quarantined);
    }
    let kept = std::fs::read_dir(dir.path().join("rejected"))
        .unwrap()
        .count();
    assert_eq!(kept, 2);
    assert!(journal.is_empty());
}

#[test]
fn a_failed_write_holds_the_report_in_memory_until_the_disk_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = open(dir.path(), DEFAULT_MAX_BYTES);
    // A directory where the entry's temp file and the probe go makes every
    // write fail, as a full disk would (root ignores permission bits).
    let seq = journal.next_seq();
    let blocked = [
        dir.path().join(format!("{seq:020}.tmp")),
        dir.path().join("probe.tmp"),
    ];
    for path in &blocked {
        std::fs::create_dir(path).unwrap();
    }
    journal.append(update(seq));
    let fault = journal.fault().unwrap();
    assert_eq!(fault.reason, "WriteFailed");
    assert_eq!(fault.held_in_memory, 1);
    assert!(!dir.path().join(format!("{seq:020}.json")).exists());
    // Still replayed from memory.
    assert_eq!(journal.oldest().unwrap().unwrap().seq, seq);
    journal.retry_writes();
    assert!(journal.fault().is_some(), "still not writable");
    for path in &blocked {
        std::fs::remove_dir(path).unwrap();
    }
    journal.retry_writes();
    assert!(journal.fault().is_none());
    assert!(
        dir.path().join(format!("{seq:020}.json")).exists(),
        "written out once possible"
    );
    drop(journal);
    let mut journal = open(dir.path(), DEFAULT_MAX_BYTES);
    assert_eq!(drain(&mut journal).len(), 1);
}

#[test]
fn a_torn_entry_is_moved_aside_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = open(dir.path(), DEFAULT_MAX_BYTES);
    let seq = journal.next_seq();
    journal.append(logs(seq));
    std::fs::write(dir.path().join(format!("{:020}.json", 2)), b"{\"node\":").unwrap();
    let journal = open(dir.path(), DEFAULT_MAX_BYTES);
    assert_eq!(journal.len(), 1);
    assert!(dir.path().join(format!("{:020}.corrupt", 2)).exists());
}
