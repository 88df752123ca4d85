//! The task driver: runs one [`TaskAssignment`] (shell, ansible or
//! terraform) to completion on this node and says how it ended.
//!
//! One run, in order:
//! 1. the tools are resolved — `git` when a `repository` is set, and the
//!    executor's program (`sh`, the command's program, `ansible-playbook`,
//!    `tofu` or `terraform`) — from the node's capabilities, then `PATH`; a
//!    missing one ends the run `ExecutorMissing` before anything is created;
//! 2. a fresh, owner-only work dir `<base>/<namespace>/<name>-<uid8>/` is
//!    made, owned by the user the run executes as, with `HOME` in it
//!    (`.veil-home`); `<base>` is the Runner's `workDir` when set, else
//!    [`TaskContext::work_root`];
//! 3. the repository is checked out into it (module `checkout`);
//! 4. the executor's processes run there, one after the other (module `executor`);
//! 5. the work dir is removed (unless [`TaskContext::keep_work_dirs`]).
//!
//! Who runs it: [`TaskContext::task_user`] (an unprivileged user; see
//! [`crate::task_user`]) unless the assignment says `runAsRoot`, in which
//! case the agent's own user. The first line of every run says which. The
//! task's tools and work dir must be reachable by that user; when one is
//! not, the run fails naming the directory that blocks it. The task is
//! validated again here (repository URL, ref, paths) before anything runs:
//! the agent does not trust the operator for what reaches `git`.
//!
//! Every process goes through the [supervisor](crate::supervisor): no
//! implicit shell, output from the first byte, the whole process tree killed
//! on timeout (`timeoutSeconds`, counted from the start of the run, checkout
//! included) and on cancellation.
//!
//! Secrets: environment values reach the processes and nothing else. The
//! driver never writes one into a message or a line of its own, and strips
//! `user:password@` from repository URLs in everything it reports. In the
//! processes' output it replaces with [`MASK`] every env value of at least
//! [`MIN_MASKED_LEN`] bytes except the literal `value`s the task itself
//! declares (a `secretKeyRef` value, or one from the Runner, whose source the
//! agent cannot see, may be secret).

mod checkout;
mod executor;
mod redact;
mod session;
mod workdir;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use veil_crds::runner::Executor;
use veil_crds::task_run::TaskRunPhase;
use veil_crds::wire::{Capability, RunRef, TaskAssignment, TaskUpdate};

use crate::supervisor::{DEFAULT_KILL_GRACE, OutputLine, SupervisorError};
use crate::task_user::TaskUser;

pub use redact::{MASK, MIN_MASKED_LEN, strip_url_credentials};
pub use session::DRIVER_LINE_PREFIX;
pub use workdir::RunDir;

/// What the driver needs to know about this node.
#[derive(Debug, Clone)]
pub struct TaskContext {
    /// Name of this node, used in messages (`ExecutorMissing` names it).
    pub node: String,
    /// Where run work dirs go when the Runner sets no `workDir`: the agent's
    /// data dir `runs/`. The terraform plugin cache lives in
    /// `<base>/.cache/terraform-plugins`, shared by the runs under it.
    pub work_root: PathBuf,
    /// Tools found on the node ([`crate::capabilities::detect`]); a tool is
    /// taken from here first, then looked up on `PATH`.
    pub capabilities: Vec<Capability>,
    /// Time between SIGTERM and SIGKILL when a run's process tree is stopped.
    pub kill_grace: Duration,
    /// Debug option: leave each run's work dir in place after the run
    /// (a rerun of the same run still starts from an empty dir).
    /// Default `false`: work dirs can hold checked-out secrets and state.
    pub keep_work_dirs: bool,
    /// Where each run's current process is recorded as `<run file stem>.pid`
    /// ([`run_file_stem`]), so a restarted agent can end what a killed one
    /// left running. `None`: not recorded.
    pub pid_dir: Option<PathBuf>,
    /// The user runs execute as unless they ask for `runAsRoot`. `None`:
    /// the agent's own user (an agent that is not root cannot switch).
    pub task_user: Option<TaskUser>,
}

/// A run's uid made safe as a file name (anything but ASCII letters, digits
/// and `-` becomes `_`): the stem of its marker and pid files.
pub fn run_file_stem(uid: &str) -> String {
    uid.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl TaskContext {
    /// A context with [`DEFAULT_KILL_GRACE`] that removes work dirs.
    pub fn new(node: impl Into<String>, work_root: impl Into<PathBuf>) -> Self {
        Self {
            node: node.into(),
            work_root: work_root.into(),
            capabilities: Vec::new(),
            kill_grace: DEFAULT_KILL_GRACE,
            keep_work_dirs: false,
            pid_dir: None,
            task_user: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    /// `Succeeded`, `Failed` or `Cancelled`; never `Pending` or `Running`.
    pub phase: TaskRunPhase,
    /// Exit code of the last process: `Some(0)` on success, the code on
    /// `NonZeroExit`, `None` when the process was killed or never started.
    pub exit_code: Option<i32>,
    /// CamelCase reason when not `Succeeded` (see [`TaskError::reason`]).
    pub reason: Option<String>,
    /// What happened, for a person; never contains an environment value or a
    /// URL's credentials.
    pub message: Option<String>,
    /// When the driver started on the run.
    pub started_at: DateTime<Utc>,
    /// When the run was over (processes gone, output delivered).
    pub finished_at: DateTime<Utc>,
}

impl TaskOutcome {
    /// The outcome as the agent reports it to the operator.
    pub fn to_update(&self, run: &RunRef) -> TaskUpdate {
        let rfc3339 = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        TaskUpdate {
            run: run.clone(),
            phase: self.phase,
            started_at: Some(rfc3339(&self.started_at)),
            finished_at: Some(rfc3339(&self.finished_at)),
            exit_code: self.exit_code,
            reason: self.reason.clone(),
            message: self.message.clone(),
        }
    }
}

/// Why a run did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A part of the run's identity cannot be a directory name.
    #[error("the run's {field} `{value}` cannot be used as a directory name")]
    InvalidRun {
        /// `namespace`, `name` or `uid`.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// The task lacks the settings of its executor (the operator validates
    /// this; the driver does not trust it).
    #[error("the task is malformed: {0}")]
    InvalidTask(String),
    /// The work dir (or the plugin cache) could not be prepared.
    #[error("could not prepare `{}`", path.display())]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The tool the task needs is not on this node.
    #[error(
        "`{tool}` is not installed on node `{node}` ({searched}); install it there or select a runner whose node has it"
    )]
    ExecutorMissing {
        /// This node.
        node: String,
        /// The missing tool (`ansible-playbook`, `tofu or terraform`, `git`, a program).
        tool: String,
        /// Where it was looked for.
        searched: String,
    },
    /// `git` could not fetch or check out the repository.
    #[error("checkout of `{url}` at `{reference}` failed: {detail}")]
    CheckoutFailed {
        /// The URL without credentials.
        url: String,
        /// The ref, or `HEAD`.
        reference: String,
        /// The failing git command and the tail of its stderr.
        detail: String,
    },
    /// A process could not be started.
    #[error("could not start `{step}`")]
    Start {
        /// What was being started, e.g. `tofu init`.
        step: String,
        /// The supervisor's reason, naming the path or binary.
        #[source]
        source: SupervisorError,
    },
    /// A tool the task needs exists but the run's user cannot reach it.
    #[error(
        "`{tool}` (`{}`) cannot be run by the task user {user}: `{}` is not searchable by it; install the tool where every directory on its path is readable by the task user (e.g. /usr/local/bin), or set `runAsRoot: true` on the Runner",
        path.display(), blocked.display()
    )]
    ToolUnreachable {
        /// The tool's name.
        tool: String,
        /// Where it is.
        path: PathBuf,
        /// The task user.
        user: String,
        /// The directory (or file) that stops the user.
        blocked: PathBuf,
    },
    /// A process exited with a non-zero code.
    #[error("`{step}` exited with code {code}")]
    NonZeroExit {
        /// The process, e.g. `ansible-playbook site.yml`.
        step: String,
        /// Its exit code.
        code: i32,
    },
    /// A process was killed by a signal the driver did not send.
    #[error("`{step}` was killed by signal {signal}")]
    Killed {
        /// The process.
        step: String,
        /// The signal number.
        signal: i32,
    },
    /// `timeoutSeconds` elapsed; the process tree was killed.
    #[error(
        "timed out after {seconds} s (timeoutSeconds) during `{step}`; its whole process tree was killed"
    )]
    Timeout {
        /// The task's `timeoutSeconds`.
        seconds: u32,
        /// What was running.
        step: String,
    },
    /// The run was cancelled; the process tree, if any, was killed.
    #[error("cancelled{}", step.as_ref().map(|s| format!(" during `{s}`; its whole process tree was killed")).unwrap_or_default())]
    Cancelled {
        /// What was running, if anything.
        step: Option<String>,
    },
}

impl TaskError {
    /// The stable CamelCase reason reported in `TaskRun.status.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidRun { .. } | Self::InvalidTask(_) => "InvalidTask",
            Self::WorkDir { .. } => "WorkDirFailed",
            Self::ExecutorMissing { .. } | Self::ToolUnreachable { .. } => "ExecutorMissing",
            Self::CheckoutFailed { .. } => "CheckoutFailed",
            Self::Start { .. } => "StartFailed",
            Self::NonZeroExit { .. } | Self::Killed { .. } => "NonZeroExit",
            Self::Timeout { .. } => "Timeout",
            Self::Cancelled { .. } => "Cancelled",
        }
    }

    /// `Cancelled` for a cancellation, `Failed` for everything else.
    pub fn phase(&self) -> TaskRunPhase {
        match self {
            Self::Cancelled { .. } => TaskRunPhase::Cancelled,
            _ => TaskRunPhase::Failed,
        }
    }

    /// The exit code to report, when the process exited by itself.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Self::NonZeroExit { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The message and its sources, joined with `: `.
    fn full_message(&self) -> String {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(error) = source {
            message.push_str(": ");
            message.push_str(&error.to_string());
            source = error.source();
        }
        message
    }
}

/// Runs the task to completion.
///
/// Output lines (the processes' and the driver's own, the latter starting
/// with [`DRIVER_LINE_PREFIX`]) go to `lines` as they are produced, from the
/// first byte, numbered from 0 across the whole run. The receiver must keep
/// reading; when it falls more than a few thousand lines behind, lines are
/// dropped (and a driver line says how many) rather than stalling the child.
/// A closed receiver only loses the lines.
///
/// `cancel` stops the run: the process tree is killed and the outcome is
/// `Cancelled`; a token already cancelled, or an assignment with `cancel`
/// set, means nothing is started.
///
/// Never panics; every failure is an outcome with a reason.
pub async fn run_task(
    assignment: &TaskAssignment,
    ctx: &TaskContext,
    cancel: CancellationToken,
    lines: mpsc::Sender<OutputLine>,
) -> TaskOutcome {
    let started_at = Utc::now();
    let mut session = session::Session::new(assignment, ctx, cancel, lines);
    let result = execute(assignment, ctx, &mut session).await;
    let (phase, exit_code, reason, message) = match result {
        Ok(()) => (TaskRunPhase::Succeeded, Some(0), None, None),
        Err(error) => {
            let message = session.sanitize(&error.full_message());
            session
                .note(&format!("{}: {message}", error.reason()))
                .await;
            tracing::info!(run = %assignment.run, reason = error.reason(), "task run did not succeed");
            let reason = Some(error.reason().to_owned());
            (error.phase(), error.exit_code(), reason, Some(message))
        }
    };
    TaskOutcome {
        phase,
        exit_code,
        reason,
        message,
        started_at,
        finished_at: Utc::now(),
    }
}

async fn execute(
    assignment: &TaskAssignment,
    ctx: &TaskContext,
    session: &mut session::Session,
) -> Result<(), TaskError> {
    if session.is_cancelled() || assignment.cancel {
        return Err(TaskError::Cancelled { step: None });
    }
    let task = &assignment.task;
    recheck(task)?;
    let run_as = session.run_as().cloned();
    session
        .note(&describe_user(assignment, run_as.as_ref()))
        .await;
    let tools = executor::Tools::new(ctx, session.search_path());
    let git = match &task.repository {
        Some(_) => Some(tools.resolve(&["git"])?),
        None => None,
    };
    let program = executor::resolve_program(task, &tools)?;
    if let Some(user) = &run_as {
        reachable(user, "git", git.as_deref())?;
        reachable(user, &program.to_string_lossy(), Some(Path::new(&program)))?;
    }
    let base = assignment
        .work_dir
        .as_ref()
        .map_or_else(|| ctx.work_root.clone(), PathBuf::from);
    let run_dir = RunDir::create(&base, &assignment.run, ctx.keep_work_dirs, run_as.as_ref())?;
    if let Some(user) = &run_as
        && let Some(blocked) = user.blocking_dir(run_dir.path())
    {
        return Err(TaskError::WorkDir {
            path: run_dir.path().to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "`{}` is not searchable by the task user {user}; put the agent's data dir or the Runner's workDir where every parent directory is searchable (e.g. /var/lib/veil)",
                    blocked.display()
                ),
            ),
        });
    }
    session.set_home(run_dir.home());
    if let (Some(git), Some(repository)) = (git, &task.repository) {
        checkout::checkout(session, &git, repository, run_dir.path()).await?;
    }
    let steps = executor::steps(task, program, run_dir.path(), &base, session.utf8_locale())?;
    if task.executor == Executor::Terraform {
        let cache = executor::plugin_cache_dir(&base);
        cache
            .parent()
            .map_or(Ok(()), workdir::create_passage_dir_all)
            .and_then(|()| workdir::create_owned_dir(&cache, run_as.as_ref()))
            .map_err(|source| TaskError::WorkDir {
                path: cache,
                source,
            })?;
    }
    for step in &steps {
        let completion = session.run(step).await?;
        session.require_success(step, &completion)?;
    }
    drop(run_dir);
    Ok(())
}

/// Validates the task again (the operator did; the agent does not trust it
/// for what reaches `git`, `ansible-playbook` or `terraform`).
fn recheck(task: &veil_crds::task_run::Task) -> Result<(), TaskError> {
    let mut errors = veil_crds::validate::FieldErrors::default();
    task.validate("task", &mut errors);
    errors.into_result().map_err(|errors| {
        let text: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect();
        TaskError::InvalidTask(text.join("; "))
    })
}

/// The run's first line: who its processes run as.
fn describe_user(assignment: &TaskAssignment, run_as: Option<&TaskUser>) -> String {
    match run_as {
        Some(user) => format!("running as the task user {user}"),
        None if assignment.run_as_root && crate::task_user::agent_is_root() => {
            "running as root: the Runner sets runAsRoot".to_owned()
        }
        None if assignment.run_as_root => {
            "running as the agent's user: the Runner sets runAsRoot, but the agent is not root"
                .to_owned()
        }
        None if !crate::task_user::agent_is_root() => {
            "running as the agent's user: the agent is not root and cannot switch users".to_owned()
        }
        None => "running as the agent's user: no task user is configured".to_owned(),
    }
}

/// `Ok` when `user` can run the tool at `path` (a relative path, resolved
/// later in the work dir, is not checked here).
fn reachable(user: &TaskUser, tool: &str, path: Option<&Path>) -> Result<(), TaskError> {
    let Some(path) = path.filter(|p| p.is_absolute()) else {
        return Ok(());
    };
    user.check_executable(path)
        .map_err(|blocked| TaskError::ToolUnreachable {
            tool: tool.to_owned(),
            path: path.to_path_buf(),
            user: user.to_string(),
            blocked,
        })
}

/// The agent environment variables a run's processes get (before the run's
/// own `env`, which wins). `HOME` is not the agent's: it is the run's own
/// `.veil-home` in its work dir.
pub const PASSED_AGENT_ENV: &[&str] = &["PATH", "LANG"];
