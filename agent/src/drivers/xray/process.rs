//! One server's xray process, run so that it outlives the agent.
//!
//! An agent restart (upgrade, crash, `kill -9`) must not cut a single VLESS
//! connection, so xray is not a child the agent owns the way the
//! [supervisor](crate::supervisor) owns task processes:
//!
//! - it leads its own process group (a Ctrl-C or a signal to the agent's
//!   group does not reach it) and gets no parent-death signal;
//! - its stdout (access lines) and stderr (errors) go to files in the
//!   server's directory, never to pipes: a Go program writing to a pipe whose
//!   reader died is killed by `SIGPIPE`;
//! - dropping an [`XrayProcess`] does nothing to xray; only
//!   [`XrayProcess::stop`] ends it;
//! - it is known by its [`Identity`] (pid *and* the kernel's start time), so
//!   a pid recycled by an unrelated process is never signalled or adopted.
//!
//! The module never signals a process whose identity does not match, and
//! never waits without a bound.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

/// How often an adopted xray (not our child) is checked for life.
const LIFE_POLL: Duration = Duration::from_millis(200);
/// How long xray gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for the group to vanish after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Why xray could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A log file in the server's directory could not be opened.
    #[error("cannot open {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The binary could not be executed.
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A port xray needs is taken by another process.
    #[error("{what} {addr} is already in use by another process: {source}")]
    PortInUse {
        what: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Which process: its pid and the start time the kernel gave it (clock
/// ticks since boot, `/proc/PID/stat` field 22). Two processes never share
/// both while the machine is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub pid: u32,
    pub start_time: u64,
}

impl Identity {
    /// The identity of the live process `pid`, if it can be read.
    pub fn of(pid: u32) -> Option<Identity> {
        let stat = read_stat(pid)?;
        (!stat.zombie).then_some(Identity {
            pid,
            start_time: stat.start_time,
        })
    }

    /// Whether this very process is still running (not a zombie).
    pub fn is_alive(&self) -> bool {
        Identity::of(self.pid).is_some_and(|now| now == *self)
    }

    /// The executable the process runs (`/proc/PID/exe`), if readable.
    pub fn exe(&self) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{}/exe", self.pid)).ok()
    }

    /// Whether the process was started with `arg` among its arguments.
    pub fn has_arg(&self, arg: &Path) -> bool {
        let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", self.pid)) else {
            return false;
        };
        let arg = arg.to_string_lossy();
        cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes())
    }
}

/// Where a server's xray writes its output.
#[derive(Debug, Clone)]
pub struct LogPaths {
    /// stdout: access lines (`from IP:PORT accepted … email: …`).
    pub access: PathBuf,
    /// stderr: xray's warnings and errors.
    pub errors: PathBuf,
}

/// A running xray, started by this agent or adopted from a previous one.
#[derive(Debug)]
pub struct XrayProcess {
    identity: Identity,
    exited: watch::Receiver<bool>,
}

impl XrayProcess {
    /// Starts `xray run -c config` in its own process group, output to
    /// `logs` (appended), with an empty environment, after checking that
    /// `ports` are free.
    ///
    /// # Errors
    /// A port in use, a log file that cannot be opened, a failed spawn.
    pub fn spawn(
        xray: &Path,
        config: &Path,
        logs: &LogPaths,
        ports: &[(&'static str, std::net::SocketAddr)],
    ) -> Result<XrayProcess, ProcessError> {
        for (what, addr) in ports {
            std::net::TcpListener::bind(addr).map_err(|source| ProcessError::PortInUse {
                what,
                addr: *addr,
                source,
            })?;
        }
        let mut command = tokio::process::Command::new(xray);
        command
            .args(["run", "-c"])
            .arg(config)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(append(&logs.access)?)
            .stderr(append(&logs.errors)?)
            // Never killed with the agent: see the module docs.
            .kill_on_drop(false);
        #[cfg(unix)]
        command.process_group(0);
        let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
            program: xray.to_owned(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        let identity = Identity::of(pid).unwrap_or(Identity { pid, start_time: 0 });
        let (tx, exited) = watch::channel(false);
        // Our child: waiting on it reaps it (no zombie) and tells us at once.
        tokio::spawn(async move {
            let _ = child.wait().await;
            let _ = tx.send(true);
        });
        tracing::info!(pid, "xray started in its own process group");
        Ok(XrayProcess { identity, exited })
    }

    /// Takes over the xray a previous agent left running, if `identity` is
    /// still that process and it runs `exe` with `config`. `None` otherwise
    /// (gone, pid recycled, another program).
    pub fn adopt(identity: Identity, exe: &Path, config: &Path) -> Option<XrayProcess> {
        if identity.start_time == 0 || !identity.is_alive() || !identity.has_arg(config) {
            return None;
        }
        // A binary replaced on disk since xray started reads `PATH (deleted)`.
        let runs_exe = identity.exe().is_some_and(|running| {
            running == exe
                || running.to_string_lossy().strip_suffix(" (deleted)")
                    == Some(&*exe.to_string_lossy())
        });
        if !runs_exe {
            return None;
        }
        let (tx, exited) = watch::channel(false);
        tokio::spawn(async move {
            // Not our child: its parent (init) reaps it; we can only look.
            while identity.is_alive() {
                tokio::select! {
                    () = tokio::time::sleep(LIFE_POLL) => {}
                    () = tx.closed() => return,
                }
            }
            let _ = tx.send(true);
        });
        Some(XrayProcess { identity, exited })
    }

    /// Which process this is.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.identity.pid
    }

    /// Resolves once xray has exited (at once if it already has).
    pub async fn exited(&mut self) {
        let _ = self.exited.wait_for(|gone| *gone).await;
    }

    /// Stops xray: SIGTERM to its group, up to [`STOP_GRACE`], then SIGKILL.
    pub async fn stop(self) {
        stop_identity(self.identity).await;
    }
}

/// Stops the process group led by `identity` (SIGTERM, grace, SIGKILL) if
/// that process is still alive; a no-op for any other process.
pub async fn stop_identity(identity: Identity) {
    if !identity.is_alive() {
        return;
    }
    signal_group(identity, Signal::Term);
    if !wait_gone(identity, STOP_GRACE).await {
        signal_group(identity, Signal::Kill);
        if !wait_gone(identity, KILL_WAIT).await {
            tracing::warn!(pid = identity.pid, "xray survived SIGKILL");
        }
    }
}

async fn wait_gone(identity: Identity, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while identity.is_alive() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[derive(Clone, Copy)]
enum Signal {
    Term,
    Kill,
}

#[cfg(unix)]
fn signal_group(identity: Identity, signal: Signal) {
    use nix::sys::signal::{Signal as Nix, killpg};
    use nix::unistd::Pid;
    // Checked right before signalling: a recycled pid is never touched.
    let Some(pgid) = i32::try_from(identity.pid).ok().filter(|p| *p > 1) else {
        return;
    };
    if !identity.is_alive() {
        return;
    }
    let signal = match signal {
        Signal::Term => Nix::SIGTERM,
        Signal::Kill => Nix::SIGKILL,
    };
    if let Err(error) = killpg(Pid::from_raw(pgid), signal) {
        tracing::debug!(pid = identity.pid, %error, "cannot signal xray's group");
    }
}

#[cfg(not(unix))]
fn signal_group(_identity: Identity, _signal: Signal) {}

fn append(path: &Path) -> Result<std::fs::File, ProcessError> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|source| ProcessError::Log {
        path: path.to_owned(),
        source,
    })
}

struct Stat {
    start_time: u64,
    zombie: bool,
}

/// `/proc/PID/stat`: `pid (comm) state ppid … starttime(22) …`; `comm` may
/// hold spaces and parentheses, so fields are counted after the last `)`.
fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = *fields.first()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some(Stat {
        start_time,
        zombie: matches!(state, "Z" | "X" | "x"),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "42 (x) y (z)) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 777 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.start_time, 777);
        assert!(!stat.zombie);
        assert!(
            parse_stat("42 (x) Z 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5")
                .unwrap()
                .zombie
        );
        assert!(parse_stat("garbage").is_none());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_recycled_pid_is_not_the_same_process() {
        let me = Identity::of(std::process::id()).unwrap();
        assert!(me.is_alive());
        let other = Identity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.is_alive());
        // Our own process runs no xray config: never adopted.
        let exe = me.exe().unwrap();
        assert!(XrayProcess::adopt(me, &exe, Path::new("/nonexistent/config.json")).is_none());
    }
}
