//! Keeping the journal within its limit, and splitting refused reports.
//!
//! Order of what gives way when the journal is over its limit:
//! 1. entries with no items (server and Strategy states only: every later
//!    report repeats them), all but the newest;
//! 2. traffic: the deltas of every entry not yet offered to the operator
//!    are merged into one new entry, one delta per (server, email) — no
//!    byte is lost, and entries already offered are left alone (they may
//!    have been applied; moving their traffic would count it twice);
//! 3. task output, oldest first: a run's first [`HEAD_CHUNKS`] chunks are
//!    kept, later chunks of an old entry become one marker line per run
//!    ([`truncation_marker`]); the newest chunks survive as long as space
//!    allows. Chunk seqs stay, so the stored log has no holes.

use std::collections::BTreeMap;

use veil_crds::wire::{NodeReport, RunRef};

use super::{Journal, merged_traffic};

/// Chunks at the start of every run's output never cut for space.
pub const HEAD_CHUNKS: u64 = 4;

const MARKER_PREFIX: &str = "[… ";
const MARKER_SUFFIX: &str = " bytes dropped by the agent journal limit …]\n";

/// The line put in a run's log where `bytes` of its output were cut.
pub fn truncation_marker(bytes: u64) -> String {
    format!("{MARKER_PREFIX}{bytes}{MARKER_SUFFIX}")
}

fn is_marker(text: &str) -> bool {
    text.is_empty() || (text.starts_with(MARKER_PREFIX) && text.ends_with(MARKER_SUFFIX))
}

/// Brings `journal` within its limit as far as rules 1–3 allow.
pub(super) fn enforce(journal: &mut Journal) {
    let over = |j: &Journal| j.bytes() > j.limits.max_bytes;
    drop_state_only(journal);
    if over(journal) {
        merge_traffic(journal);
    }
    let mut total = journal.bytes();
    let mut index = 0;
    while total > journal.limits.max_bytes && index < journal.entries.len() {
        let entry = &journal.entries[index];
        if entry.items.logs > 0 && !entry.cut {
            let before = entry.bytes;
            cut_logs(journal, index);
            let entry = &mut journal.entries[index];
            entry.cut = true;
            total = total - before + entry.bytes;
        }
        index += 1;
    }
}

fn drop_state_only(journal: &mut Journal) {
    let newest = journal.entries.last().map(|e| e.seq);
    let (drop, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut journal.entries)
        .into_iter()
        .partition(|e| e.items.total() == 0 && Some(e.seq) != newest);
    journal.entries = keep;
    for entry in &drop {
        journal.remove_file(entry);
    }
}

fn merge_traffic(journal: &mut Journal) {
    let sources: Vec<usize> = (0..journal.entries.len())
        .filter(|&i| {
            let e = &journal.entries[i];
            e.seq > journal.attempted && e.items.traffic > 0
        })
        .collect();
    if sources.len() < 2 {
        return;
    }
    let mut loaded = Vec::with_capacity(sources.len());
    for &index in &sources {
        match journal.load(index) {
            Ok(report) => loaded.push((index, report)),
            Err(_) => return, // unreadable now: leave everything as it is
        }
    }
    let mut traffic = Vec::new();
    let mut template = None;
    for (index, mut report) in loaded {
        traffic.append(&mut report.traffic);
        if template.is_none() {
            template = Some(NodeReport {
                task_updates: Vec::new(),
                logs: Vec::new(),
                traffic: Vec::new(),
                ..report.clone()
            });
        }
        if report.task_updates.is_empty() && report.logs.is_empty() {
            journal.entries[index].items = super::Items::default(); // removed below
        } else {
            journal.rewrite(index, report);
        }
    }
    let Some(mut merged) = template else {
        return;
    };
    // Sources left without items are removed (files included).
    let (empty, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut journal.entries)
        .into_iter()
        .enumerate()
        .partition(|(i, e)| sources.contains(i) && e.items.total() == 0);
    journal.entries = keep.into_iter().map(|(_, e)| e).collect();
    for (_, entry) in &empty {
        journal.remove_file(entry);
    }
    journal.take_newest_states(&mut merged);
    merged.seq = journal.next_seq();
    merged.traffic = merged_traffic(&traffic);
    let entry = journal.store(merged);
    journal.entries.push(entry);
}

fn cut_logs(journal: &mut Journal, index: usize) {
    let Ok(mut report) = journal.load(index) else {
        return;
    };
    let mut cut: BTreeMap<RunRef, u64> = BTreeMap::new();
    let mut first_cut: BTreeMap<RunRef, usize> = BTreeMap::new();
    for (i, chunk) in report.logs.iter_mut().enumerate() {
        if chunk.seq <= HEAD_CHUNKS || is_marker(&chunk.text) {
            continue;
        }
        *cut.entry(chunk.run.clone()).or_default() += chunk.text.len() as u64;
        first_cut.entry(chunk.run.clone()).or_insert(i);
        chunk.text.clear();
    }
    if cut.is_empty() {
        return;
    }
    for (run, i) in first_cut {
        let bytes = cut.get(&run).copied().unwrap_or_default();
        report.logs[i].text = truncation_marker(bytes);
        journal.dropped_bytes += bytes;
        tracing::warn!(%run, bytes, seq = report.seq, "cut task output to keep the journal within its limit");
    }
    journal.rewrite(index, report);
}

/// Splits a report with at least two items into two with new seqs, each
/// carrying the states and about half the items.
pub(super) fn split(report: NodeReport, first: u64, second: u64) -> (NodeReport, NodeReport) {
    let empty = NodeReport {
        task_updates: Vec::new(),
        logs: Vec::new(),
        traffic: Vec::new(),
        ..report.clone()
    };
    let mut a = NodeReport {
        seq: first,
        ..empty.clone()
    };
    let mut b = NodeReport {
        seq: second,
        ..empty
    };
    let total = report.task_updates.len() + report.logs.len() + report.traffic.len();
    let mut left = total / 2;
    for update in report.task_updates {
        if left > 0 {
            a.task_updates.push(update);
            left -= 1;
        } else {
            b.task_updates.push(update);
        }
    }
    for chunk in report.logs {
        if left > 0 {
            a.logs.push(chunk);
            left -= 1;
        } else {
            b.logs.push(chunk);
        }
    }
    for traffic in report.traffic {
        if left > 0 {
            a.traffic.push(traffic);
            left -= 1;
        } else {
            b.traffic.push(traffic);
        }
    }
    (a, b)
}

/// Names what a report carries without its content (for the error log).
pub(super) fn describe(report: &NodeReport) -> String {
    if let Some(update) = report.task_updates.first() {
        return format!("the state of run {}", update.run);
    }
    if let Some(chunk) = report.logs.first() {
        return format!(
            "log chunk {} of run {} ({} bytes)",
            chunk.seq,
            chunk.run,
            chunk.text.len()
        );
    }
    if let Some(traffic) = report.traffic.first() {
        return format!(
            "a traffic delta of server {}/{}",
            traffic.server.namespace, traffic.server.name
        );
    }
    "server and Strategy states only".to_owned()
}
