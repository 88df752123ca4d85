//! One run of a spec: spawn (with retry), attach output readers, wait.
//!
//! Owns the child handle from spawn to the moment its exit is reported. It
//! must never report an exit before both output pipes reached end-of-file (or
//! a bounded drain time passed), and never let the child outlive the handle.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Exit;
use super::error::SupervisorError;
use super::group::ProcessGroup;
use super::output::{OutputLog, Stream};
use super::preflight;
use super::spec::ProcessSpec;

/// Spawn retries after a transient error (a binary still open for writing
/// gives `ETXTBSY`; a full process table gives `EAGAIN`). Three retries over
/// about 350 ms cover a writer closing the file; more would only hide a
/// real problem.
const SPAWN_RETRIES: usize = 3;
const SPAWN_RETRY_FIRST_DELAY: Duration = Duration::from_millis(50);

/// How long to keep reading output after the whole group is gone. The pipes
/// close when the last process holding them exits; only one that escaped the
/// group (a daemon) keeps them open, and it must not hold up the report.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// A spawned child whose output is being read.
pub(crate) struct RunningChild {
    child: Child,
    group: ProcessGroup,
    pid: u32,
    started_at: SystemTime,
    started: Instant,
    readers: Vec<JoinHandle<()>>,
}

/// What [`RunningChild::wait`] observed.
pub(crate) struct Finished {
    pub(crate) exit: Exit,
    pub(crate) duration: Duration,
}

/// Checks `spec`, spawns it as the leader of a new process group and starts
/// reading its output into `log`.
///
/// # Errors
///
/// A pre-flight failure or a spawn failure (after retries for transient
/// errors).
pub(crate) async fn start(
    spec: &ProcessSpec,
    log: &OutputLog,
) -> Result<RunningChild, SupervisorError> {
    let program = preflight::check(spec)?;
    let mut command = command(spec, &program);
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(SPAWN_RETRY_FIRST_DELAY)
        .with_max_times(SPAWN_RETRIES)
        .build();
    let mut attempts = 0;
    let mut child = loop {
        attempts += 1;
        match command.spawn() {
            Ok(child) => break child,
            Err(error) if is_transient(&error) => match delays.next() {
                Some(delay) => {
                    tracing::debug!(program = %spec.program_display(), %error, ?delay, "retrying spawn");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(spawn_error(spec, attempts, error)),
            },
            Err(error) => return Err(spawn_error(spec, attempts, error)),
        }
    };
    let started = Instant::now();
    let started_at = SystemTime::now();
    let Some(pid) = child.id() else {
        // Only possible if the child was already reaped, which nothing here did.
        return Err(spawn_error(
            spec,
            attempts,
            io::Error::other("spawned child has no pid"),
        ));
    };
    let group = ProcessGroup::led_by(pid);
    if let Some(path) = spec.recorded_pid_file()
        && let Err(error) = super::pidfile::record(path, pid)
    {
        tracing::warn!(%error, path = %path.display(), "cannot record the child's pid");
    }
    let mut readers = Vec::with_capacity(2);
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(log.clone().read_pipe(Stream::Stdout, stdout)));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(log.clone().read_pipe(Stream::Stderr, stderr)));
    }
    tracing::info!(program = %spec.program_display(), pid, args = spec.arguments().len(), "process started");
    Ok(RunningChild {
        child,
        group,
        pid,
        started_at,
        started,
        readers,
    })
}

fn command(spec: &ProcessSpec, program: &std::path::Path) -> Command {
    let mut command = Command::new(program);
    #[cfg(unix)]
    {
        // The child sees the program as named, like a shell would show it.
        command.arg0(spec.program());
        command.process_group(0);
        // setgid, then setuid; the standard library also clears the
        // supplementary groups (setgroups(0)) when a uid is set.
        if let Some((uid, gid)) = spec.user() {
            command.gid(gid);
            command.uid(uid);
        }
    }
    command
        .args(spec.arguments())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if !spec.inherits_env() {
        command.env_clear();
    }
    for name in spec.passed_env() {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    for (name, value) in spec.explicit_env() {
        command.env(name, value);
    }
    if let Some(dir) = spec.working_dir() {
        command.current_dir(dir);
    }
    command
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ExecutableFileBusy | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn spawn_error(spec: &ProcessSpec, attempts: u32, source: io::Error) -> SupervisorError {
    SupervisorError::Spawn {
        program: spec.program_display(),
        attempts,
        source,
    }
}

impl RunningChild {
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// Waits for the child to exit, for `timeout`, or for `cancel`; then
    /// stops what is left of its group (SIGTERM, `grace`, SIGKILL), reaps it
    /// and drains its output.
    ///
    /// # Errors
    ///
    /// Waiting for the child failed; the group has been sent SIGKILL.
    pub(crate) async fn wait(
        mut self,
        cancel: &CancellationToken,
        timeout: Option<Duration>,
        grace: Duration,
    ) -> Result<Finished, SupervisorError> {
        let deadline = timeout.map(|t| self.started + t);
        let forced = tokio::select! {
            biased;
            status = self.child.wait() => {
                status.map_err(|source| SupervisorError::Wait { pid: self.pid, source })?;
                None
            }
            () = cancel.cancelled() => Some(Exit::Cancelled),
            () = crate::throttle::sleep_until_some(deadline) => Some(Exit::TimedOut),
        };
        if let Some(exit) = forced {
            tracing::info!(pid = self.pid, ?exit, "stopping process group");
        }
        let status = self
            .group
            .shutdown(&mut self.child, grace)
            .await
            .map_err(|source| SupervisorError::Wait {
                pid: self.pid,
                source,
            })?;
        let duration = self.started.elapsed();
        self.drain_output().await;
        let exit = forced.unwrap_or_else(|| exit_of(status));
        tracing::info!(pid = self.pid, ?exit, ?duration, "process finished");
        Ok(Finished { exit, duration })
    }

    async fn drain_output(&mut self) {
        let deadline = Instant::now() + OUTPUT_DRAIN;
        for reader in &mut self.readers {
            if tokio::time::timeout_at(deadline, &mut *reader)
                .await
                .is_err()
            {
                tracing::warn!(
                    pid = self.pid,
                    "output pipe still open after the process group exited; a process escaped the group"
                );
                reader.abort();
            }
        }
    }
}

fn exit_of(status: ExitStatus) -> Exit {
    if let Some(code) = status.code() {
        return Exit::Code(code);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return Exit::Signal(signal);
        }
    }
    // Unreachable in practice: a reaped process has a code or a signal.
    Exit::Code(-1)
}

impl Drop for RunningChild {
    fn drop(&mut self) {
        // The group guard SIGKILLs an unfinished group; readers end with it.
        for reader in &self.readers {
            if !reader.is_finished() {
                reader.abort();
            }
        }
    }
}
