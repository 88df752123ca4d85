//! The supervisor's one error type.
//!
//! Every message names the binary, port, path or pid involved and, where the
//! user can fix it, says what to change. Messages never contain environment
//! values.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the supervisor could not start or wait for a process.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The program was not found: not on `PATH` for a bare name, or no file at
    /// the given path.
    #[error(
        "binary `{program}` not found (searched: {searched}); install it or give its absolute path"
    )]
    BinaryNotFound {
        /// The program as the spec named it.
        program: String,
        /// The directories (or the single path) that were searched.
        searched: String,
    },

    /// A file exists at the program's path but cannot be executed.
    #[error("`{}` is not executable: {reason}", path.display())]
    NotExecutable {
        /// The resolved path of the program.
        path: PathBuf,
        /// What is wrong with it (a directory, no execute permission, ...).
        reason: String,
    },

    /// A port the process must listen on cannot be bound (usually: another
    /// process listens there; the source says exactly why).
    #[error(
        "{protocol} port {} on {} is in use or cannot be bound; stop whatever listens there or choose another port",
        addr.port(), addr.ip()
    )]
    PortInUse {
        /// `tcp` or `udp`.
        protocol: &'static str,
        /// The address that could not be bound.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: io::Error,
    },

    /// A file or directory the spec requires does not exist.
    #[error("required path `{}` does not exist", path.display())]
    MissingPath {
        /// The missing path.
        path: PathBuf,
    },

    /// The working directory does not exist or is not a directory.
    #[error("working directory `{}` does not exist or is not a directory", path.display())]
    WorkingDir {
        /// The configured working directory.
        path: PathBuf,
    },

    /// The operating system refused to start the program.
    #[error("could not start `{program}` after {attempts} attempt(s)")]
    Spawn {
        /// The program as the spec named it.
        program: String,
        /// How many spawns were tried (transient errors are retried).
        attempts: u32,
        /// The last spawn error.
        #[source]
        source: io::Error,
    },

    /// Waiting for the child's exit status failed.
    #[error("could not wait for process {pid}")]
    Wait {
        /// The child's pid.
        pid: u32,
        /// The wait error.
        #[source]
        source: io::Error,
    },

    /// A temporary file or directory could not be created or written.
    #[error("could not create temporary file in `{}`", dir.display())]
    Temp {
        /// The directory the file or directory was to be created in.
        dir: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    /// The cancellation token had fired before the process was started;
    /// nothing ran.
    #[error("cancelled before the process was started")]
    Cancelled,
}

impl SupervisorError {
    /// A stable, CamelCase reason for statuses and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BinaryNotFound { .. } => "BinaryNotFound",
            Self::NotExecutable { .. } => "NotExecutable",
            Self::PortInUse { .. } => "PortInUse",
            Self::MissingPath { .. } => "MissingPath",
            Self::WorkingDir { .. } => "WorkingDirMissing",
            Self::Spawn { .. } => "SpawnFailed",
            Self::Wait { .. } => "WaitFailed",
            Self::Temp { .. } => "TempFileFailed",
            Self::Cancelled => "Cancelled",
        }
    }
}
