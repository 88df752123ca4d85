//! Pre-flight checks: everything verified before a process is spawned.
//!
//! Owns program resolution (path or `PATH` lookup) and the free-port and
//! required-path checks. It only inspects: it never creates, changes or
//! holds anything (a port probe socket is closed before returning).

use std::ffi::OsStr;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use super::error::SupervisorError;
use super::spec::{PortCheck, ProcessSpec};

/// Runs every check of `spec` and returns the absolute-or-as-given path of
/// the program to execute.
///
/// # Errors
///
/// The first failing check, in this order: working directory, program,
/// required paths, ports.
pub(crate) fn check(spec: &ProcessSpec) -> Result<PathBuf, SupervisorError> {
    if let Some(dir) = spec.working_dir()
        && !dir.is_dir()
    {
        return Err(SupervisorError::WorkingDir {
            path: dir.to_path_buf(),
        });
    }
    let program = resolve_program(spec)?;
    for path in spec.required_paths() {
        if !path.exists() {
            return Err(SupervisorError::MissingPath { path: path.clone() });
        }
    }
    for port in spec.ports() {
        check_port(*port)?;
    }
    Ok(program)
}

fn resolve_program(spec: &ProcessSpec) -> Result<PathBuf, SupervisorError> {
    let program = Path::new(spec.program());
    let name = spec.program_display();
    if program.as_os_str().is_empty() {
        return Err(SupervisorError::BinaryNotFound {
            program: name,
            searched: "an empty program name".to_owned(),
        });
    }
    if program.components().count() > 1 || program.is_absolute() {
        let path = match spec.working_dir() {
            Some(dir) if program.is_relative() => dir.join(program),
            _ => program.to_path_buf(),
        };
        if !path.exists() {
            return Err(SupervisorError::BinaryNotFound {
                program: name,
                searched: path.display().to_string(),
            });
        }
        return check_executable(path);
    }
    let search = spec.search_path().unwrap_or_default();
    let mut found_unexecutable = None;
    for dir in std::env::split_paths(&search) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            match check_executable(candidate) {
                Ok(path) => return Ok(path),
                // Keep looking, as a shell would; report it if nothing better.
                Err(error) => found_unexecutable = found_unexecutable.or(Some(error)),
            }
        }
    }
    Err(
        found_unexecutable.unwrap_or_else(|| SupervisorError::BinaryNotFound {
            program: name,
            searched: searched_description(&search),
        }),
    )
}

fn searched_description(search: &OsStr) -> String {
    if search.is_empty() {
        "PATH is empty or unset".to_owned()
    } else {
        format!("PATH={}", search.to_string_lossy())
    }
}

fn check_executable(path: PathBuf) -> Result<PathBuf, SupervisorError> {
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(error) => {
            return Err(SupervisorError::NotExecutable {
                reason: format!("cannot read its metadata: {error}"),
                path,
            });
        }
    };
    if !meta.is_file() {
        return Err(SupervisorError::NotExecutable {
            path,
            reason: "it is not a regular file".to_owned(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o111 == 0 {
            return Err(SupervisorError::NotExecutable {
                path,
                reason: format!(
                    "mode is {:04o}; add an execute bit (chmod +x)",
                    mode & 0o7777
                ),
            });
        }
    }
    Ok(path)
}

fn check_port(port: PortCheck) -> Result<(), SupervisorError> {
    let result = match port {
        PortCheck::Tcp(addr) => TcpListener::bind(addr).map(drop),
        PortCheck::Udp(addr) => UdpSocket::bind(addr).map(drop),
    };
    result.map_err(|source| {
        let (protocol, addr) = match port {
            PortCheck::Tcp(addr) => ("tcp", addr),
            PortCheck::Udp(addr) => ("udp", addr),
        };
        SupervisorError::PortInUse {
            protocol,
            addr,
            source,
        }
    })
}
