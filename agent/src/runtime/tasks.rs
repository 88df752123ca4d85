//! Runs the task runs of the current assignment: starts new ones, cancels
//! the ones marked `cancel` or no longer assigned, and never runs one twice.
//!
//! A marker file `<uid>.started` exists while a run executes. If the agent
//! dies (`kill -9`) mid-run, the marker survives; the restarted agent then
//! reports that run `Failed` with reason `NodeLost` instead of running it
//! again (a task may not be safe to repeat). At start the agent also ends
//! the processes such runs left behind, recorded in `<uid>.pid` (pid and
//! start time, so a recycled pid is never killed).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use veil_crds::task_run::TaskRunPhase;
use veil_crds::wire::{Assignment, LogChunk, RunRef, TaskAssignment, TaskUpdate};

use super::reporter::{BATCH, Outgoing};
use crate::drivers::task::{TaskContext, run_file_stem, run_task};
use crate::supervisor::OutputLine;

/// Largest log chunk sent in one piece.
const MAX_CHUNK_BYTES: usize = 64 * 1024;

struct Running {
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

/// The task runs this agent is responsible for.
pub struct Tasks {
    ctx: Arc<TaskContext>,
    markers: PathBuf,
    outbox: mpsc::UnboundedSender<Outgoing>,
    running: HashMap<String, Running>,
    finished: HashSet<String>,
}

impl Tasks {
    pub fn new(
        ctx: TaskContext,
        markers: PathBuf,
        outbox: mpsc::UnboundedSender<Outgoing>,
    ) -> Tasks {
        end_leftovers(&markers);
        let ctx = TaskContext {
            pid_dir: Some(markers.clone()),
            ..ctx
        };
        Tasks {
            ctx: Arc::new(ctx),
            markers,
            outbox,
            running: HashMap::new(),
            finished: HashSet::new(),
        }
    }

    fn marker(&self, run: &RunRef) -> PathBuf {
        self.markers
            .join(format!("{}.started", run_file_stem(&run.uid)))
    }

    fn pid_file(&self, run: &RunRef) -> PathBuf {
        self.markers
            .join(format!("{}.pid", run_file_stem(&run.uid)))
    }

    /// Brings the running set in line with `assignment`.
    pub fn apply(&mut self, assignment: &Assignment) {
        let done: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| r.handle.is_finished())
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in done {
            self.running.remove(&uid);
            self.finished.insert(uid);
        }
        let assigned: HashSet<&str> = assignment
            .tasks
            .iter()
            .map(|t| t.run.uid.as_str())
            .collect();
        for (uid, running) in &self.running {
            if !assigned.contains(uid.as_str()) {
                running.cancel.cancel(); // the TaskRun was deleted
            }
        }
        // Forget finished runs the operator no longer assigns (bounded memory).
        self.finished.retain(|uid| assigned.contains(uid.as_str()));
        for task in &assignment.tasks {
            let uid = &task.run.uid;
            if let Some(running) = self.running.get(uid) {
                if task.cancel {
                    running.cancel.cancel();
                }
                continue;
            }
            if self.finished.contains(uid) {
                continue;
            }
            let marker = self.marker(&task.run);
            if marker.exists() {
                let _ = std::fs::remove_file(&marker);
                self.finish(
                    &task.run,
                    TaskRunPhase::Failed,
                    "NodeLost",
                    "the agent restarted while this run was in progress; it is not run again",
                );
                continue;
            }
            if task.cancel {
                self.finish(
                    &task.run,
                    TaskRunPhase::Cancelled,
                    "Cancelled",
                    "cancelled before it started",
                );
                continue;
            }
            self.start(task.clone(), marker);
        }
    }

    fn finish(&mut self, run: &RunRef, phase: TaskRunPhase, reason: &str, message: &str) {
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let _ = self.outbox.send(Outgoing::Update(TaskUpdate {
            run: run.clone(),
            phase,
            started_at: None,
            finished_at: Some(now),
            exit_code: None,
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
        }));
        self.finished.insert(run.uid.clone());
    }

    fn start(&mut self, task: TaskAssignment, marker: PathBuf) {
        let pid_file = self.pid_file(&task.run);
        if let Err(error) = std::fs::write(&marker, task.run.to_string()) {
            tracing::warn!(%error, run = %task.run, "cannot write the run marker");
        }
        let cancel = CancellationToken::new();
        let ctx = self.ctx.clone();
        let outbox = self.outbox.clone();
        let token = cancel.clone();
        let uid = task.run.uid.clone();
        let handle = tokio::spawn(async move {
            let started = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let _ = outbox.send(Outgoing::Update(TaskUpdate {
                run: task.run.clone(),
                phase: TaskRunPhase::Running,
                started_at: Some(started),
                finished_at: None,
                exit_code: None,
                reason: None,
                message: None,
            }));
            let (lines_tx, lines_rx) = mpsc::channel(4096);
            let batcher = tokio::spawn(batch_logs(task.run.clone(), lines_rx, outbox.clone()));
            let outcome = run_task(&task, &ctx, token, lines_tx).await;
            let _ = batcher.await;
            let _ = outbox.send(Outgoing::Update(outcome.to_update(&task.run)));
            let _ = std::fs::remove_file(&marker);
            let _ = std::fs::remove_file(&pid_file);
        });
        self.running.insert(uid, Running { cancel, handle });
    }

    /// Cancels every run and waits for them to report.
    pub async fn stop_all(&mut self) {
        for running in self.running.values() {
            running.cancel.cancel();
        }
        for (_, running) in self.running.drain() {
            let _ = tokio::time::timeout(Duration::from_secs(30), running.handle).await;
        }
    }
}

/// Turns output lines into numbered chunks: one every [`BATCH`] or
/// [`MAX_CHUNK_BYTES`], numbered from 1 without gaps.
async fn batch_logs(
    run: RunRef,
    mut lines: mpsc::Receiver<OutputLine>,
    outbox: mpsc::UnboundedSender<Outgoing>,
) {
    let mut seq = 0;
    let mut text = String::new();
    let mut deadline: Option<Instant> = None;
    loop {
        let line = match deadline {
            Some(at) => tokio::select! {
                line = lines.recv() => line.map(Some),
                _ = tokio::time::sleep_until(at) => Some(None),
            },
            None => lines.recv().await.map(Some),
        };
        match line {
            Some(Some(line)) => {
                text.push_str(&line.text);
                text.push('\n');
                deadline.get_or_insert_with(|| Instant::now() + BATCH);
                if text.len() < MAX_CHUNK_BYTES {
                    continue;
                }
            }
            Some(None) => {}
            None => {
                flush(&run, &mut seq, &mut text, &outbox);
                return;
            }
        }
        flush(&run, &mut seq, &mut text, &outbox);
        deadline = None;
    }
}

fn flush(run: &RunRef, seq: &mut u64, text: &mut String, outbox: &mpsc::UnboundedSender<Outgoing>) {
    if text.is_empty() {
        return;
    }
    *seq += 1;
    let _ = outbox.send(Outgoing::Log(LogChunk {
        run: run.clone(),
        seq: *seq,
        text: std::mem::take(text),
    }));
}

/// A new agent runs no task yet: every process a previous agent run
/// recorded in `dir` is a leftover of a run that agent lost. Ends them all
/// (their process groups), checking each recorded start time first.
fn end_leftovers(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "pid") && crate::supervisor::kill_recorded(&path) {
            tracing::warn!(file = %path.display(), "ended the processes of a run lost by a previous agent");
        }
    }
}
