//! [`ProcessSpec`]: what to run and the conditions for running it.
//!
//! A spec is plain data plus the guards it holds; it never spawns anything
//! itself and its `Debug` output never shows environment values.

use std::any::Any;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;

use super::output::{OutputLimits, OutputLine};

/// How long a process group gets between SIGTERM and SIGKILL by default.
///
/// Long enough for xray or terraform to flush and exit cleanly, short enough
/// that an agent shutdown is not held up noticeably.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// A port the process must find free when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortCheck {
    Tcp(SocketAddr),
    Udp(SocketAddr),
}

/// What to run and how.
///
/// Built with chained methods:
///
/// ```no_run
/// # use veil_agent::supervisor::ProcessSpec;
/// # use std::time::Duration;
/// let spec = ProcessSpec::new("terraform")
///     .args(["plan", "-input=false"])
///     .pass_env("PATH")
///     .env("TF_TOKEN", "secret, never logged")
///     .current_dir("/var/lib/veil/runs/42")
///     .timeout(Duration::from_secs(600));
/// ```
///
/// Defaults: environment cleared (the child sees only what [`env`](Self::env)
/// and [`pass_env`](Self::pass_env) give it), the agent's working directory,
/// no timeout, [`OutputLimits::default`], [`DEFAULT_KILL_GRACE`], stdin
/// connected to `/dev/null`.
pub struct ProcessSpec {
    program: OsString,
    args: Vec<OsString>,
    inherit_env: bool,
    env: Vec<(OsString, OsString)>,
    pass_env: Vec<OsString>,
    current_dir: Option<PathBuf>,
    timeout: Option<Duration>,
    kill_grace: Duration,
    output: OutputLimits,
    sink: Option<mpsc::Sender<OutputLine>>,
    ports: Vec<PortCheck>,
    paths: Vec<PathBuf>,
    held: Vec<Box<dyn Any + Send + Sync>>,
    pid_file: Option<PathBuf>,
    user: Option<(u32, u32)>,
}

impl ProcessSpec {
    /// A spec that runs `program`: a path (anything containing `/`), or a
    /// bare name looked up on `PATH` (the `PATH` given with
    /// [`env`](Self::env) if any, else the agent's).
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            inherit_env: false,
            env: Vec::new(),
            pass_env: Vec::new(),
            current_dir: None,
            timeout: None,
            kill_grace: DEFAULT_KILL_GRACE,
            output: OutputLimits::default(),
            sink: None,
            ports: Vec::new(),
            paths: Vec::new(),
            held: Vec::new(),
            pid_file: None,
            user: None,
        }
    }

    /// Appends one argument, passed to the program verbatim (no shell).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments, passed to the program verbatim (no shell).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the child. The value may be a secret:
    /// it is never logged or shown by `Debug`. A later call for the same name
    /// wins.
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Copies the agent's own value of `name` (if set) into the child's
    /// environment, e.g. `PATH` or `HOME`. Explicit [`env`](Self::env) values
    /// win over passed ones.
    pub fn pass_env(mut self, name: impl Into<OsString>) -> Self {
        self.pass_env.push(name.into());
        self
    }

    /// Lets the child inherit the agent's whole environment instead of
    /// starting from an empty one. Explicit values still apply on top.
    pub fn inherit_env(mut self) -> Self {
        self.inherit_env = true;
        self
    }

    /// Runs the child in `dir`, which must exist (checked before spawning).
    /// A relative program path containing `/` is resolved against it.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Kills the process group when a run takes longer than `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Time between SIGTERM and SIGKILL when the group is stopped.
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// Bounds for the ring of recent lines and for single lines.
    pub fn output_limits(mut self, limits: OutputLimits) -> Self {
        self.output = limits;
        self
    }

    /// Also delivers every line to `sink`. When the sink is full the line is
    /// only kept in the ring and counted as dropped; the child never waits.
    pub fn output_sink(mut self, sink: mpsc::Sender<OutputLine>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Requires that a TCP listener can be bound on `addr` before spawning,
    /// e.g. `(Ipv4Addr::UNSPECIFIED, 443)`. Advisory: another process can
    /// still take the port between the check and the child's own bind.
    pub fn require_free_tcp(mut self, addr: impl Into<SocketAddr>) -> Self {
        self.ports.push(PortCheck::Tcp(addr.into()));
        self
    }

    /// Like [`require_free_tcp`](Self::require_free_tcp), for a UDP socket.
    pub fn require_free_udp(mut self, addr: impl Into<SocketAddr>) -> Self {
        self.ports.push(PortCheck::Udp(addr.into()));
        self
    }

    /// Requires that `path` (a file or a directory) exists before spawning.
    pub fn require_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.paths.push(path.into());
        self
    }

    /// Keeps `guard` alive as long as the spec: for [`run_once`] until the run
    /// has finished, for [`Supervised`] until it is stopped. Use it for
    /// [`TempFile`]s, [`TempDir`]s and single-instance guards.
    ///
    /// [`run_once`]: super::run_once
    /// [`Supervised`]: super::Supervised
    /// [`TempFile`]: super::TempFile
    /// [`TempDir`]: super::TempDir
    pub fn hold(mut self, guard: impl Any + Send + Sync) -> Self {
        self.held.push(Box::new(guard));
        self
    }

    /// The program as given to [`new`](Self::new).
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments, in order.
    pub fn arguments(&self) -> &[OsString] {
        &self.args
    }

    /// Records the child's pid and start time in `path` once it is spawned
    /// (see [`kill_recorded`](super::kill_recorded)), so an agent restarted
    /// after a crash can end what this run left behind.
    pub fn pid_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.pid_file = Some(path.into());
        self
    }

    /// Starts the child as user `uid` with primary group `gid` and no
    /// supplementary groups (Unix; needs a root agent). Default: the
    /// agent's own user.
    pub fn run_as(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// The `(uid, gid)` the child runs as, when not the agent's own.
    pub(crate) fn user(&self) -> Option<(u32, u32)> {
        self.user
    }

    pub(crate) fn recorded_pid_file(&self) -> Option<&Path> {
        self.pid_file.as_deref()
    }

    pub(crate) fn program_display(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    pub(crate) fn inherits_env(&self) -> bool {
        self.inherit_env
    }

    /// The explicit variables in the order they were set.
    pub(crate) fn explicit_env(&self) -> &[(OsString, OsString)] {
        &self.env
    }

    pub(crate) fn passed_env(&self) -> &[OsString] {
        &self.pass_env
    }

    /// The `PATH` used to resolve a bare program name.
    pub(crate) fn search_path(&self) -> Option<OsString> {
        let explicit = self.env.iter().rev().find(|(k, _)| k == "PATH");
        match explicit {
            Some((_, v)) => Some(v.clone()),
            None => std::env::var_os("PATH"),
        }
    }

    pub(crate) fn working_dir(&self) -> Option<&Path> {
        self.current_dir.as_deref()
    }

    pub(crate) fn run_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    pub(crate) fn grace(&self) -> Duration {
        self.kill_grace
    }

    pub(crate) fn limits(&self) -> OutputLimits {
        self.output
    }

    pub(crate) fn sink(&self) -> Option<mpsc::Sender<OutputLine>> {
        self.sink.clone()
    }

    pub(crate) fn ports(&self) -> &[PortCheck] {
        &self.ports
    }

    pub(crate) fn required_paths(&self) -> &[PathBuf] {
        &self.paths
    }
}

impl fmt::Debug for ProcessSpec {
    /// Shows environment variable names only: values may be secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env_names: Vec<&OsString> = self.env.iter().map(|(k, _)| k).collect();
        f.debug_struct("ProcessSpec")
            .field("program", &self.program)
            .field("args", &self.args.len())
            .field("inherit_env", &self.inherit_env)
            .field("env_names", &env_names)
            .field("pass_env", &self.pass_env)
            .field("current_dir", &self.current_dir)
            .field("timeout", &self.timeout)
            .field("kill_grace", &self.kill_grace)
            .field("output", &self.output)
            .field("sink", &self.sink.is_some())
            .field("ports", &self.ports)
            .field("paths", &self.paths)
            .field("held", &self.held.len())
            .field("user", &self.user)
            .finish()
    }
}
