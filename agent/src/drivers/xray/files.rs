//! A server's files on the node: its config (0600: it holds the Reality
//! private key and user ids), xray's log files, and a small state record
//! (0600) naming the running xray, so an agent restarted after a stop, an
//! upgrade or `kill -9` finds the xray it left behind and adopts it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::process::LogPaths;

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

/// What the agent recorded about the xray it started: enough for the next
/// agent to prove the process is still that xray and to take it over.
/// Field names stay as the first agents wrote them (`pid`, `api_port`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    /// Process id (and process-group id) of xray.
    pub pid: u32,
    /// Its start time (`/proc/PID/stat` field 22), against pid reuse; 0 in
    /// records of agents before adoption (such an xray is never adopted).
    #[serde(default)]
    pub start_time: u64,
    /// The executable it runs.
    #[serde(default)]
    pub exe: PathBuf,
    /// The config file it was started with.
    #[serde(default)]
    pub config: PathBuf,
    /// Fingerprint of that config without users
    /// ([`Rendered::infra_hash`](super::config::Rendered::infra_hash)):
    /// what the API cannot change.
    #[serde(default)]
    pub infra_hash: String,
    /// Port of its gRPC API on 127.0.0.1.
    pub api_port: u16,
    /// The port its VLESS inbound listens on.
    #[serde(default)]
    pub listen_port: u16,
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

    /// Where xray writes its stdout (access lines) and stderr (errors).
    pub fn logs(&self) -> LogPaths {
        LogPaths {
            access: self.dir.join("access.log"),
            errors: self.dir.join("error.log"),
        }
    }

    /// Creates the server's directory (0700) if missing.
    ///
    /// # Errors
    /// When it cannot be created.
    pub fn create_dir(&self) -> Result<(), FilesError> {
        let error = |source| FilesError::Write {
            path: self.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(error)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
                .map_err(error)?;
        }
        Ok(())
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
        self.create_dir()?;
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

    /// The VLESS clients of the config on disk as `(email, id, flow)`: the
    /// users last applied to the running xray (the file is rewritten after
    /// every change), which an adopting agent takes as its starting point.
    /// Empty when the file is missing or not a config.
    pub fn recorded_clients(&self, inbound_tag: &str) -> Vec<(String, String, String)> {
        let Ok(bytes) = std::fs::read(self.config()) else {
            return Vec::new();
        };
        let Ok(config) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Vec::new();
        };
        let inbound = config["inbounds"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["tag"] == inbound_tag));
        let Some(clients) = inbound.and_then(|i| i["settings"]["clients"].as_array()) else {
            return Vec::new();
        };
        clients
            .iter()
            .filter_map(|c| {
                Some((
                    c["email"].as_str()?.to_owned(),
                    c["id"].as_str()?.to_owned(),
                    c["flow"].as_str().unwrap_or_default().to_owned(),
                ))
            })
            .collect()
    }

    /// Whether `pid` is alive and is an xray running this server's config
    /// (guards against a recycled pid, for records without a start time).
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
    fn recorded_clients_are_read_from_the_config_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let files = ServerFiles::new(dir.path().join("srv"));
        assert!(files.recorded_clients("vless-in").is_empty());
        let config = serde_json::json!({ "inbounds": [
            { "tag": "other", "settings": { "clients": [{ "email": "x", "id": "1" }] } },
            { "tag": "vless-in", "settings": { "clients": [
                { "email": "alice", "id": "a-id", "flow": "xtls-rprx-vision" },
                { "email": "bob", "id": "b-id", "flow": "" },
                { "id": "no-email" },
            ] } },
        ] });
        files
            .write(&files.config(), &serde_json::to_vec(&config).unwrap())
            .unwrap();
        assert_eq!(
            files.recorded_clients("vless-in"),
            vec![
                ("alice".into(), "a-id".into(), "xtls-rprx-vision".into()),
                ("bob".into(), "b-id".into(), String::new()),
            ]
        );
    }

    #[test]
    fn state_round_trips_and_foreign_pids_are_not_ours() {
        let dir = tempfile::tempdir().unwrap();
        let files = ServerFiles::new(dir.path().join("srv"));
        assert_eq!(files.load_state(), None);
        let state = StateRecord {
            pid: std::process::id(),
            start_time: 1,
            exe: "/usr/bin/xray".into(),
            config: files.config(),
            infra_hash: "abc".into(),
            api_port: 10085,
            listen_port: 8443,
        };
        files.save_state(&state).unwrap();
        assert_eq!(files.load_state(), Some(state));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(files.state())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the state record is private");
        }
        // A record of an agent before adoption still reads (never adopted).
        std::fs::write(files.state(), br#"{"pid":7,"api_port":1}"#).unwrap();
        assert_eq!(files.load_state().map(|s| s.start_time), Some(0));
        // The test process is alive but is not running this config.
        assert!(!files.is_our_xray(std::process::id()));
        files.clear_state();
        assert_eq!(files.load_state(), None);
    }
}
