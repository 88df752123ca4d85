//! The one way the agent runs a process.
//!
//! Task executors (shell, ansible, terraform: run once) and long-running
//! workloads (xray, sing-box, nfqws, the protocol server: restarted with
//! backoff) are all started through this module, so they all get the same
//! guarantees:
//!
//! - **No implicit shell.** The program is executed directly with an argument
//!   list; `sh -c` happens only when a caller passes it explicitly.
//! - **Pre-flight checks** ([`ProcessSpec::require_free_tcp`],
//!   [`ProcessSpec::require_path`], binary resolution) run before anything is
//!   spawned and fail with an error that names the binary, port or path.
//! - **Output from the first byte.** stdout and stderr are piped and read by
//!   tasks attached right after spawn; an exit is reported only after both
//!   pipes reached end-of-file, so a process that prints and exits at once
//!   loses nothing. Lines go to a bounded ring ([`OutputLine`]) and to an
//!   optional bounded sink that never blocks the child.
//! - **The whole tree dies.** Every child leads its own process group; timeout,
//!   cancellation, [`Supervised::stop`] and drop signal the group (SIGTERM, then
//!   SIGKILL after [`ProcessSpec::kill_grace`]), grandchildren included.
//!   Windows has no process groups here: only the child itself is killed (a Job
//!   Object is future work).
//! - **Temporary files live exactly as long as the run** ([`TempFile`],
//!   [`TempDir`], [`ProcessSpec::hold`]).
//!
//! This module must never log environment values (they may be secrets), never
//! block on a slow output consumer, and never leave a process it started
//! running after the handle that owns it is gone.

mod child;
mod error;
mod group;
mod output;
mod pidfile;
mod preflight;
mod restart;
mod spec;
mod temp;

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

pub use error::SupervisorError;
pub(crate) use group::kill_now as kill_group_now;
pub use output::{OutputLimits, OutputLine, Stream, TRUNCATION_MARKER};
pub use pidfile::kill_recorded;
pub use restart::{LastExit, RestartOn, RestartPolicy, State, Supervised};
pub use spec::{DEFAULT_KILL_GRACE, ProcessSpec};
pub use temp::{TempDir, TempFile};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The process exited by itself with this code.
    Code(i32),
    /// The process was killed by this signal, not sent by the supervisor.
    Signal(i32),
    /// The spec's timeout elapsed; the supervisor killed the process group.
    TimedOut,
    /// The run was cancelled; the supervisor killed the process group.
    Cancelled,
}

impl Exit {
    /// True only for `Code(0)`.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

/// The result of one finished run.
#[derive(Debug, Clone)]
pub struct Completion {
    /// How the run ended.
    pub exit: Exit,
    /// Wall-clock time the process was spawned.
    pub started_at: SystemTime,
    /// Wall-clock time the exit was recorded (after output was drained).
    pub finished_at: SystemTime,
    /// Monotonic run time, immune to clock changes.
    pub duration: Duration,
    /// Process id of the child (also its process-group id on Unix).
    pub pid: u32,
    /// The most recent output lines, as bounded by [`OutputLimits`].
    pub recent_lines: Vec<OutputLine>,
    /// Lines the output sink could not take because it was full.
    pub dropped_lines: u64,
}

/// Runs `spec` to completion.
///
/// Runs the pre-flight checks, spawns the program (retrying a few times on
/// transient errors such as `ETXTBSY`), waits for it to exit, for its process
/// group to be gone and for both output pipes to reach end-of-file, then
/// returns. Processes the child left behind in its group are terminated when it
/// exits: a run owns its whole tree.
///
/// If the spec's timeout elapses the group is killed and the exit is
/// [`Exit::TimedOut`]; if `cancel` fires, likewise with [`Exit::Cancelled`].
/// Dropping the returned future kills the group with SIGKILL (no grace).
/// Guards held by the spec ([`ProcessSpec::hold`]) are dropped when this
/// returns.
///
/// # Errors
///
/// A pre-flight failure, a spawn failure, [`SupervisorError::Cancelled`] when
/// `cancel` had already fired (nothing was started), or a failure to wait for
/// the child. A non-zero exit is not an error: it is in [`Completion::exit`].
pub async fn run_once(
    spec: ProcessSpec,
    cancel: CancellationToken,
) -> Result<Completion, SupervisorError> {
    if cancel.is_cancelled() {
        return Err(SupervisorError::Cancelled);
    }
    let log = output::OutputLog::new(spec.limits(), spec.sink());
    let running = child::start(&spec, &log).await?;
    let pid = running.pid();
    let started_at = running.started_at();
    let finished = running
        .wait(&cancel, spec.run_timeout(), spec.grace())
        .await?;
    Ok(Completion {
        exit: finished.exit,
        started_at,
        finished_at: SystemTime::now(),
        duration: finished.duration,
        pid,
        recent_lines: log.recent(),
        dropped_lines: log.dropped(),
    })
}
