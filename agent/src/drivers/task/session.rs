//! One run's process plumbing: the environment every process gets, the
//! run-wide deadline, and the single numbered stream of output lines.
//!
//! Owns the [`OutputLine`] sender: every line the run emits — the processes'
//! (masked) and the driver's own notes — passes through [`Session`] so the
//! numbering is gap-free across processes. It never logs an environment value
//! and never lets a slow line consumer hold up a child process.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use veil_crds::wire::TaskAssignment;

use super::redact::{Mask, strip_url_credentials};
use super::{PASSED_AGENT_ENV, TaskContext, TaskError};
use crate::supervisor::{
    Completion, Exit, OutputLine, ProcessSpec, Stream, SupervisorError, run_once,
};
use crate::task_user::TaskUser;

/// Starts every line the driver writes itself (as opposed to a process).
pub const DRIVER_LINE_PREFIX: &str = "[veil] ";

/// Lines buffered between a process and the run's consumer. A few seconds of
/// a chatty `terraform apply`; beyond it lines are dropped and counted, never
/// waited for.
const FORWARD_BUFFER: usize = 4096;

/// One process of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Step {
    /// How the step is named in lines and messages, e.g. `tofu init`.
    pub(super) label: String,
    /// An absolute path, or a program name/path the supervisor resolves.
    pub(super) program: OsString,
    pub(super) args: Vec<OsString>,
    pub(super) dir: PathBuf,
    /// Executor settings (not secret), applied before the run's own `env`.
    pub(super) env: Vec<(String, OsString)>,
    /// Files that must exist before spawning (e.g. the playbook).
    pub(super) required_paths: Vec<PathBuf>,
    /// Strip URL credentials from this step's output (git).
    pub(super) strip_urls: bool,
    /// Write a driver line naming the step before it starts (off for the
    /// plumbing of a checkout, which has its own line).
    pub(super) announce: bool,
}

impl Step {
    pub(super) fn new(
        label: impl Into<String>,
        program: impl Into<OsString>,
        dir: PathBuf,
    ) -> Self {
        Self {
            label: label.into(),
            program: program.into(),
            args: Vec::new(),
            dir,
            env: Vec::new(),
            required_paths: Vec::new(),
            strip_urls: false,
            announce: true,
        }
    }
}

/// The state shared by all processes of one run.
pub(super) struct Session {
    node: String,
    /// The run's `env`, in order (later wins); values may be secret.
    env: Vec<(String, String)>,
    output_mask: Mask,
    driver_mask: Mask,
    lines: mpsc::Sender<OutputLine>,
    next_seq: u64,
    cancel: CancellationToken,
    deadline: Instant,
    timeout_seconds: u32,
    kill_grace: Duration,
    /// Where the running step's pid is recorded, if anywhere.
    pid_file: Option<PathBuf>,
    /// The user the processes run as; `None`: the agent's own.
    run_as: Option<TaskUser>,
    /// The processes' `HOME` (the run's own, once its work dir exists).
    home: Option<PathBuf>,
}

impl Session {
    pub(super) fn new(
        assignment: &TaskAssignment,
        ctx: &TaskContext,
        cancel: CancellationToken,
        lines: mpsc::Sender<OutputLine>,
    ) -> Self {
        let timeout_seconds = assignment.task.timeout_seconds;
        Self {
            node: ctx.node.clone(),
            env: assignment
                .env
                .iter()
                .map(|e| (e.name.clone(), e.value.expose().to_owned()))
                .collect(),
            output_mask: Mask::for_assignment(assignment),
            driver_mask: Mask::all_env(assignment),
            lines,
            next_seq: 0,
            cancel,
            deadline: Instant::now() + Duration::from_secs(u64::from(timeout_seconds)),
            timeout_seconds,
            kill_grace: ctx.kill_grace,
            pid_file: ctx
                .pid_dir
                .as_ref()
                .map(|dir| dir.join(format!("{}.pid", super::run_file_stem(&assignment.run.uid)))),
            run_as: if assignment.run_as_root {
                None
            } else {
                ctx.task_user.clone()
            },
            home: None,
        }
    }

    /// The user the run's processes execute as (`None`: the agent's own).
    pub(super) fn run_as(&self) -> Option<&TaskUser> {
        self.run_as.as_ref()
    }

    /// Sets the processes' `HOME` (the run's own dir in its work dir).
    pub(super) fn set_home(&mut self, home: PathBuf) {
        self.home = Some(home);
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The value a process of this run sees for `name`: the run's `env`
    /// first, then its own `HOME`, else the agent's for [`PASSED_AGENT_ENV`]
    /// names.
    pub(super) fn effective_env(&self, name: &str) -> Option<OsString> {
        match self.env.iter().rev().find(|(n, _)| n == name) {
            Some((_, value)) => Some(value.into()),
            None if name == "HOME" => self.home.as_ref().map(|h| h.clone().into_os_string()),
            None if PASSED_AGENT_ENV.contains(&name) => std::env::var_os(name),
            None => None,
        }
    }

    /// The `PATH` processes are looked up in.
    pub(super) fn search_path(&self) -> OsString {
        self.effective_env("PATH").unwrap_or_default()
    }

    /// Whether the processes run with a UTF-8 locale (`LC_ALL`, else `LANG`).
    pub(super) fn utf8_locale(&self) -> bool {
        let locale = self
            .effective_env("LC_ALL")
            .filter(|v| !v.is_empty())
            .or_else(|| self.effective_env("LANG"))
            .unwrap_or_default()
            .to_string_lossy()
            .to_ascii_lowercase();
        locale.contains("utf-8") || locale.contains("utf8")
    }

    /// `text` without URL credentials or any environment value: for
    /// messages and driver lines.
    pub(super) fn sanitize(&self, text: &str) -> String {
        self.driver_mask.apply(&strip_url_credentials(text))
    }

    /// Sends a driver line (sanitized, prefixed with [`DRIVER_LINE_PREFIX`]).
    pub(super) async fn note(&mut self, text: &str) {
        let text = format!("{DRIVER_LINE_PREFIX}{}", self.sanitize(text));
        self.emit(Stream::Stderr, text, false).await;
    }

    async fn emit(&mut self, stream: Stream, text: String, truncated: bool) {
        let line = OutputLine {
            seq: self.next_seq,
            stream,
            text,
            truncated,
        };
        self.next_seq += 1;
        // A closed receiver only loses lines; the run goes on.
        let _ = self.lines.send(line).await;
    }

    /// Runs `step` to its exit within what is left of the run's timeout,
    /// forwarding its output as it comes.
    ///
    /// # Errors
    ///
    /// [`TaskError::Timeout`], [`TaskError::Cancelled`], or the supervisor's
    /// refusal to start it ([`TaskError::ExecutorMissing`] for a program
    /// that is not there, [`TaskError::Start`] otherwise). A non-zero exit is
    /// not an error here: see [`require_success`](Self::require_success).
    pub(super) async fn run(&mut self, step: &Step) -> Result<Completion, TaskError> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(self.timeout(step));
        }
        if step.announce {
            self.note(&format!(
                "running `{}` in {}",
                step.label,
                step.dir.display()
            ))
            .await;
        }
        let (tx, rx) = mpsc::channel(FORWARD_BUFFER);
        let mut spec = ProcessSpec::new(&step.program)
            .args(&step.args)
            .current_dir(&step.dir)
            .timeout(remaining)
            .kill_grace(self.kill_grace)
            .output_sink(tx);
        for name in PASSED_AGENT_ENV {
            spec = spec.pass_env(name);
        }
        if let Some(home) = &self.home {
            spec = spec.env("HOME", home);
        }
        if let Some(user) = &self.run_as {
            spec = spec.run_as(user.uid, user.gid);
        }
        for (name, value) in &step.env {
            spec = spec.env(name, value);
        }
        for (name, value) in &self.env {
            spec = spec.env(name, value);
        }
        for path in &step.required_paths {
            spec = spec.require_path(path);
        }
        if let Some(path) = &self.pid_file {
            spec = spec.pid_file(path);
        }
        let cancel = self.cancel.clone();
        let (result, ()) = tokio::join!(run_once(spec, cancel), self.forward(rx, step.strip_urls));
        let completion = result.map_err(|source| self.start_error(step, source))?;
        if completion.dropped_lines > 0 {
            let dropped = completion.dropped_lines;
            self.note(&format!(
                "{dropped} output lines of `{}` were dropped: the log consumer fell behind",
                step.label
            ))
            .await;
        }
        match completion.exit {
            Exit::TimedOut => Err(self.timeout(step)),
            Exit::Cancelled => Err(TaskError::Cancelled {
                step: Some(step.label.clone()),
            }),
            Exit::Code(_) | Exit::Signal(_) => Ok(completion),
        }
    }

    /// Maps a natural exit other than code 0 to its error.
    ///
    /// # Errors
    ///
    /// [`TaskError::NonZeroExit`] or [`TaskError::Killed`].
    pub(super) fn require_success(
        &self,
        step: &Step,
        completion: &Completion,
    ) -> Result<(), TaskError> {
        match completion.exit {
            Exit::Code(0) => Ok(()),
            Exit::Code(code) => Err(TaskError::NonZeroExit {
                step: step.label.clone(),
                code,
            }),
            Exit::Signal(signal) => Err(TaskError::Killed {
                step: step.label.clone(),
                signal,
            }),
            Exit::TimedOut => Err(self.timeout(step)),
            Exit::Cancelled => Err(TaskError::Cancelled {
                step: Some(step.label.clone()),
            }),
        }
    }

    /// Passes a process's lines on, renumbered into the run's sequence and
    /// masked, until the process's output is closed.
    async fn forward(&mut self, mut rx: mpsc::Receiver<OutputLine>, strip_urls: bool) {
        while let Some(line) = rx.recv().await {
            let text = if strip_urls {
                strip_url_credentials(&line.text)
            } else {
                line.text
            };
            let text = self.output_mask.apply(&text);
            self.emit(line.stream, text, line.truncated).await;
        }
    }

    fn timeout(&self, step: &Step) -> TaskError {
        TaskError::Timeout {
            seconds: self.timeout_seconds,
            step: step.label.clone(),
        }
    }

    fn start_error(&self, step: &Step, source: SupervisorError) -> TaskError {
        match source {
            SupervisorError::Cancelled => TaskError::Cancelled { step: None },
            SupervisorError::BinaryNotFound { searched, .. } => TaskError::ExecutorMissing {
                node: self.node.clone(),
                tool: step.program.to_string_lossy().into_owned(),
                searched: self.sanitize(&format!("searched {searched}")),
            },
            SupervisorError::NotExecutable { path, reason } => TaskError::ExecutorMissing {
                node: self.node.clone(),
                tool: step.program.to_string_lossy().into_owned(),
                searched: self
                    .sanitize(&format!("`{}` is not executable: {reason}", path.display())),
            },
            source => TaskError::Start {
                step: step.label.clone(),
                source,
            },
        }
    }
}
