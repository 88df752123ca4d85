//! The last assignment this agent applied, kept on disk so an agent that
//! starts while the operator is unreachable serves what it served before.
//!
//! Only what keeps serving is kept: protocol servers and Strategies. Task
//! runs are left out (a run must never start without the operator knowing,
//! and their env may carry secrets that have no reason to sit on disk).
//!
//! The file holds secrets (Reality private keys, user ids): it is written
//! 0600, atomically, and its content is never logged; errors name the file
//! only.

use std::io::Write;
use std::path::{Path, PathBuf};

use veil_crds::wire::Assignment;

/// The file's name in the agent's data dir.
pub const FILE_NAME: &str = "assignment.json";

/// Why the last assignment could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum LastAssignmentError {
    /// The file (or its temp file) could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What is kept of an assignment: the same document without its tasks,
/// serialized from the assignment itself (no copy of 100,000 users).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Kept<'a> {
    node: &'a str,
    revision: u64,
    tasks: [(); 0],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    servers: &'a [veil_crds::wire::ServerAssignment],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    strategies: &'a [veil_crds::wire::StrategyGroup],
}

impl<'a> Kept<'a> {
    fn of(assignment: &'a Assignment) -> Kept<'a> {
        Kept {
            node: &assignment.node,
            revision: assignment.revision,
            tasks: [],
            servers: &assignment.servers,
            strategies: &assignment.strategies,
        }
    }
}

/// Saves `assignment` without its task runs to `path` (0600, atomic).
///
/// # Errors
/// When the file cannot be written; the previous one is then left as it was.
pub fn save(path: &Path, assignment: &Assignment) -> Result<(), LastAssignmentError> {
    let error = |source| LastAssignmentError::Write {
        path: path.to_owned(),
        source,
    };
    let json =
        serde_json::to_vec(&Kept::of(assignment)).map_err(|e| error(std::io::Error::other(e)))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(error)?;
    }
    file.write_all(&json).map_err(error)?;
    file.as_file().sync_all().map_err(error)?;
    file.persist(path).map_err(|e| error(e.error))?;
    Ok(())
}

/// The saved assignment for `node`, if there is one that parses. One for
/// another node name (the agent was renamed) is ignored.
pub fn load(path: &Path, node: &str) -> Option<Assignment> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice::<Assignment>(&bytes) {
        Ok(assignment) if assignment.node == node => Some(assignment),
        Ok(_) => None,
        Err(_) => {
            // The parser's message may quote the content: name the file only.
            tracing::warn!(path = %path.display(), "the saved assignment does not parse; ignoring it");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn saved_private_and_only_for_its_node() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let saved = Assignment {
            node: "edge-1".into(),
            revision: 7,
            ..Assignment::default()
        };
        save(&path, &saved).unwrap();
        assert_eq!(load(&path, "edge-1"), Some(saved));
        assert!(load(&path, "edge-2").is_none());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"{not json").unwrap();
        assert!(load(&path, "edge-1").is_none());
    }
}
