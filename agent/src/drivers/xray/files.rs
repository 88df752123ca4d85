//! A server's files on the node: its config (0600: it holds the Reality
//! private key and user ids) and a small state record naming the running
//! xray, so an agent restarted after `kill -9` finds the xray it left behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a server file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where one server's files live.
#[derive(Debug, Clone)]
pub struct ServerFiles {
    dir: PathBuf,
}

/// What the agent recorded about the xray it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    /// Process id (and process-group id) of xray.
    pub pid: u32,
    /// Port of its gRPC API on 127.0.0.1.
    pub api_port: u16,
}

impl ServerFiles {
    /// Files under `dir` (created when first written).
    pub fn new(dir: PathBuf) -> ServerFiles {
        ServerFiles { dir }
    }

    /// The config xray runs (and reloads when the supervisor restarts it).
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// A candidate config, tested before it replaces [`config`](Self::config).
    pub fn candidate(&self) -> PathBuf {
        self.dir.join("config.next.json")
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Writes `contents` to `path` atomically (temp file, fsync, rename), mode 0600.
    ///
    /// # Errors
    /// When the directory or file cannot be written.
    pub fn write(&self, path: &Path, contents: &[u8]) -> Result<(), FilesError> {
        let error = |source| FilesError::Write {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(error)?;
        let mut file = tempfile::NamedTempFile::new_in(&self.dir).map_err(error)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(error)?;
        }
        file.write_all(contents).map_err(error)?;
        file.as_file().sync_all().map_err(error)?;
        file.persist(path).map_err(|e| error(e.error))?;
        Ok(())
    }

    /// Moves the tested candidate into place.
    ///
    /// # Errors
    /// When the rename fails.
    pub fn promote_candidate(&self) -> Result<(), FilesError> {
        std::fs::rename(self.candidate(), self.config()).map_err(|source| FilesError::Write {
            path: self.config(),
            source,
        })
    }

    /// Records the running xray.
    ///
    /// # Errors
    /// When the record cannot be written.
    pub fn save_state(&self, state: &StateRecord) -> Result<(), FilesError> {
        let json = serde_json::to_vec(state).unwrap_or_default();
        self.write(&self.state(), &json)
    }

    /// The recorded xray, if a record exists and parses.
    pub fn load_state(&self) -> Option<StateRecord> {
        let text = std::fs::read(self.state()).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Forgets the recorded xray.
    pub fn clear_state(&self) {
        let _ = std::fs::remove_file(self.state());
    }

    /// Whether `pid` is alive and is an xray running this server's config
    /// (guards against a recycled pid).
    pub fn is_our_xray(&self, pid: u32) -> bool {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let config = self.config();
        let config = config.to_string_lossy();
        cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == config.as_bytes())
    }

    /// Removes the server's directory (config, state).
    pub fn remove_all(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn config_is_private_and_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let files = ServerFiles::new(dir.path().join("srv"));
        files.write(&files.candidate(), b"{\"a\":1}").unwrap();
        files.promote_candidate().unwrap();
        assert_eq!(std::fs::read(files.config()).unwrap(), b"{\"a\":1}");
        assert!(!files.candidate().exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(files.config())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn state_round_trips_and_foreign_pids_are_not_ours() {
        let dir = tempfile::tempdir().unwrap();
        let files = ServerFiles::new(dir.path().join("srv"));
        assert_eq!(files.load_state(), None);
        let state = StateRecord {
            pid: std::process::id(),
            api_port: 10085,
        };
        files.save_state(&state).unwrap();
        assert_eq!(files.load_state(), Some(state));
        // The test process is alive but is not running this config.
        assert!(!files.is_our_xray(std::process::id()));
        files.clear_state();
        assert_eq!(files.load_state(), None);
    }
}
