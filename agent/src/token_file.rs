//! The node token file (`--token-file`), which may not exist yet when the
//! agent starts, and changes while it runs: in Kubernetes the DaemonSet
//! projects the pod's ServiceAccount token, which the kubelet replaces
//! well before it expires; outside a cluster an operator may rotate the
//! file by hand.
//!
//! [`wait_for_token`] waits for it: one clear log line, then a look every
//! [`TOKEN_FILE_POLL`] — no crash loop, no busy loop. Any other read error
//! (a directory, no permission) ends the wait with an error. [`NodeToken`]
//! then reads the file again before every request. The token is never
//! logged.
//!
//! [`restrict`] keeps the file from task processes: a token file readable
//! by group or others is made 0600 when the agent can, and a warning says so
//! when it cannot (a read-only mount).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often a missing token file is looked for again.
pub const TOKEN_FILE_POLL: Duration = Duration::from_secs(5);

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file exists but cannot be read.
    #[error("cannot read the token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The token in `path` (trimmed), once the file exists and is not empty;
/// `Ok(None)` when `shutdown` is cancelled first. Looks again every `poll`.
pub async fn wait_for_token(
    path: &Path,
    node: &str,
    poll: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<String>, TokenFileError> {
    let mut told = false;
    loop {
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => {
                if told {
                    tracing::info!(path = %path.display(), "token file found");
                }
                return Ok(Some(text.trim().to_owned()));
            }
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(TokenFileError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        if !told {
            tracing::warn!(
                path = %path.display(),
                retry_every = ?poll,
                "no token for node {node} yet: waiting for the token file (in Kubernetes the DaemonSet projects the pod's ServiceAccount token there; elsewhere write the output of `veil-operator token create --node {node}` to it)"
            );
            told = true;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// Makes the token file owner-only (0600) when group or others may read
/// it. Never fails the agent: a file it cannot change (a read-only Secret
/// mount) gets a warning naming the risk.
pub fn restrict(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let mode = meta.permissions().mode();
        if mode & 0o077 == 0 {
            return;
        }
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => tracing::info!(
                path = %path.display(),
                was = format!("{:o}", mode & 0o777),
                "made the token file owner-only (0600) so tasks cannot read it"
            ),
            Err(error) => tracing::warn!(
                path = %path.display(),
                %error,
                "the token file is readable by other users (mode {:o}) and cannot be changed; tasks running as another user may read it — mount it with mode 0600 (Kubernetes: defaultMode: 0600)",
                mode & 0o777
            ),
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The token the agent sends: fixed, or the current content of its file.
///
/// With a file, [`NodeToken::current`] reads it again each time (a few
/// hundred bytes, a few times a minute), so a rotated token is used from
/// the next request on; when the file is missing, empty or unreadable for
/// a moment (the kubelet swaps it atomically, an editor may not) the last
/// token read stays in use. Cheap to clone; never printed by `Debug`.
#[derive(Clone)]
pub struct NodeToken {
    file: Option<PathBuf>,
    last: Arc<Mutex<String>>,
}

impl std::fmt::Debug for NodeToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeToken")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl NodeToken {
    /// Always `token` (trimmed).
    pub fn fixed(token: &str) -> NodeToken {
        NodeToken {
            file: None,
            last: Arc::new(Mutex::new(token.trim().to_owned())),
        }
    }

    /// The content of `file`, `first` until it can be read.
    pub fn from_file(file: PathBuf, first: &str) -> NodeToken {
        NodeToken {
            file: Some(file),
            ..NodeToken::fixed(first)
        }
    }

    /// The token to send now.
    pub fn current(&self) -> String {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(file) = &self.file
            && let Ok(text) = std::fs::read_to_string(file)
            && let Some(token) = token_in(&text)
            && token != last.as_str()
        {
            *last = token;
            tracing::info!(path = %file.display(), "the token file changed; using the new token");
        }
        last.clone()
    }
}

/// The token a token file's `text` holds: the token of a join value (its
/// URL and CA pin are read at start only), else the trimmed text; `None`
/// for an empty file or a damaged join value (the last token stays).
fn token_in(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if crate::join::JoinValue::is_join_value(text) {
        return crate::join::JoinValue::parse(text)
            .ok()
            .map(|join| join.token);
    }
    Some(text.to_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_until_the_file_appears_and_returns_the_trimmed_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge-1");
        let shutdown = CancellationToken::new();
        let waiting = {
            let path = path.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                wait_for_token(&path, "edge-1", Duration::from_millis(10), &shutdown).await
            })
        };
        std::fs::write(&path, "").unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiting.is_finished(), "an empty file is no token");
        std::fs::write(&path, "veil_node_abc\n").unwrap();
        let token = waiting.await.unwrap().unwrap();
        assert_eq!(token.as_deref(), Some("veil_node_abc"));
    }

    #[test]
    fn a_join_value_file_yields_its_token_and_a_new_join_value_rotates_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge-1.join");
        let join = |token: &str| {
            crate::join::JoinValue {
                url: Some("https://127.0.0.1:7070".to_owned()),
                token: token.to_owned(),
                ca_pin: None,
            }
            .encode()
        };
        std::fs::write(&path, join("veil_node_first")).unwrap();
        let token = NodeToken::from_file(path.clone(), "veil_node_first");
        assert_eq!(token.current(), "veil_node_first");
        std::fs::write(&path, format!("{}\n", join("veil_node_second"))).unwrap();
        assert_eq!(token.current(), "veil_node_second");
        // A damaged join value is no token: the last one stays.
        std::fs::write(&path, "veil-join-v1.%%%").unwrap();
        assert_eq!(token.current(), "veil_node_second");
    }

    #[test]
    fn a_rotated_token_file_is_used_from_the_next_request_and_a_gap_keeps_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").unwrap();
        let token = NodeToken::from_file(path.clone(), "first");
        assert_eq!(token.current(), "first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(token.current(), "second");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(token.current(), "second");
        std::fs::write(&path, " \n").unwrap();
        assert_eq!(token.current(), "second");
        assert_eq!(NodeToken::fixed(" fixed\n").current(), "fixed");
        assert!(!format!("{token:?}").contains("second"));
    }

    #[tokio::test]
    async fn stops_waiting_on_shutdown_and_fails_on_an_unreadable_path() {
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let missing = dir.path().join("missing");
        let result = wait_for_token(&missing, "n", TOKEN_FILE_POLL, &shutdown).await;
        assert!(result.unwrap().is_none());
        // A directory is not a token file: an error, not a wait.
        let result = wait_for_token(dir.path(), "n", TOKEN_FILE_POLL, &shutdown).await;
        assert!(result.is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_token_file_readable_by_others_is_made_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.token");
        std::fs::write(&path, "veil_node_abc").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        restrict(&path);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
