//! The unprivileged user task runs execute as (`veil-agent --task-user`).
//!
//! A task is code from whoever may write TaskRuns; the agent holds the node
//! token, the journal and xray's configs. So an agent running as root starts
//! every task process as another user (uid and gid set, supplementary groups
//! cleared by the standard library), unless the task's Runner asks for
//! `runAsRoot`. The default user is `veil-task` when the system has one
//! (create it with `useradd --system --no-create-home veil-task`), else
//! `nobody` (uid 65534). The agent never creates system users itself.
//!
//! An agent that is not root cannot switch users: its tasks run as its own
//! user, and naming another `--task-user` is an error at start.
//!
//! This module also answers whether that user can reach a path (every
//! parent directory searchable), so a tool or work dir it cannot reach
//! fails the run with the directory to fix instead of a bare `EACCES`.

use std::path::{Path, PathBuf};

/// The default task user's name, used when it exists.
pub const DEFAULT_TASK_USER: &str = "veil-task";

/// The fallback when [`DEFAULT_TASK_USER`] does not exist.
pub const FALLBACK_TASK_USER: &str = "nobody";

/// `nobody`'s traditional uid and gid, for systems without a passwd entry.
pub const NOBODY_ID: u32 = 65534;

/// A user task processes run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskUser {
    /// Its name (or the uid as text when it has no passwd entry).
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

impl std::fmt::Display for TaskUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (uid {}, gid {})", self.name, self.uid, self.gid)
    }
}

/// Why the task user cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TaskUserError {
    /// The named user does not exist.
    #[error(
        "--task-user `{0}`: no such user; create it (e.g. `useradd --system --no-create-home {0}`) or give a uid"
    )]
    NoSuchUser(String),
    /// uid 0 was named: root is asked for per Runner, not for every task.
    #[error(
        "--task-user `{0}` is root; tasks run as root only when their Runner sets `runAsRoot: true`"
    )]
    Root(String),
    /// The agent is not root and so cannot switch to another user.
    #[error(
        "--task-user `{name}`: the agent runs as uid {agent_uid} and cannot start processes as uid {uid}; run the agent as root or leave --task-user out (tasks then run as the agent's user)"
    )]
    CannotSwitch {
        /// The requested user.
        name: String,
        /// Its uid.
        uid: u32,
        /// The agent's effective uid.
        agent_uid: u32,
    },
    /// The user database could not be read.
    #[error("cannot look up user `{name}`")]
    Lookup {
        /// The user looked up.
        name: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Whether this process runs as root (and so can switch users).
pub fn agent_is_root() -> bool {
    effective_uid() == 0
}

#[cfg(unix)]
fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[cfg(not(unix))]
fn effective_uid() -> u32 {
    u32::MAX
}

impl TaskUser {
    /// The user for `--task-user` (`requested`: a name or a uid), or the
    /// default. `Ok(None)`: tasks run as the agent's own user (the agent is
    /// not root and nothing else was asked for).
    ///
    /// # Errors
    ///
    /// [`TaskUserError`] when the user does not exist, is root, or the
    /// agent cannot switch to it.
    pub fn resolve(requested: Option<&str>) -> Result<Option<Self>, TaskUserError> {
        let agent_uid = effective_uid();
        let user = match requested {
            Some(text) => {
                Some(lookup(text)?.ok_or_else(|| TaskUserError::NoSuchUser(text.to_owned()))?)
            }
            None if agent_uid == 0 => Some(default_user()?),
            None => None,
        };
        match user {
            Some(user) if user.uid == 0 => Err(TaskUserError::Root(user.name)),
            Some(user) if agent_uid != 0 && user.uid != agent_uid => {
                Err(TaskUserError::CannotSwitch {
                    name: user.name,
                    uid: user.uid,
                    agent_uid,
                })
            }
            // Not root, and the same user as the agent: nothing to switch.
            Some(_) if agent_uid != 0 => Ok(None),
            user => Ok(user),
        }
    }

    /// The first directory on the way to `path` (its parents, then `path`
    /// itself when it is a directory) this user cannot search, judged by
    /// mode bits (not ACLs); `None` when every one is searchable or `path`
    /// cannot be inspected (the process start then reports the error).
    pub fn blocking_dir(&self, path: &Path) -> Option<PathBuf> {
        let mut dirs: Vec<&Path> = path.ancestors().skip(1).collect();
        dirs.reverse();
        if path.is_dir() {
            dirs.push(path);
        }
        dirs.into_iter()
            .find(|dir| !self.can(dir, SEARCH))
            .map(Path::to_path_buf)
    }

    /// Whether this user may execute the file `path` (after following
    /// symlinks) and reach it: `Err(dir or file)` names what stops it.
    pub fn check_executable(&self, path: &Path) -> Result<(), PathBuf> {
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        for candidate in [path, real.as_path()] {
            if let Some(dir) = self.blocking_dir(candidate) {
                return Err(dir);
            }
        }
        if self.can(&real, SEARCH) {
            Ok(())
        } else {
            Err(real)
        }
    }

    #[cfg(unix)]
    fn can(&self, path: &Path, bit: u32) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return true;
        };
        let mode = meta.mode();
        let shift = if meta.uid() == self.uid {
            6
        } else if meta.gid() == self.gid {
            3
        } else {
            0
        };
        (mode >> shift) & bit != 0
    }

    #[cfg(not(unix))]
    fn can(&self, _path: &Path, _bit: u32) -> bool {
        true
    }
}

/// The execute/search permission bit (of the `rwx` triple).
const SEARCH: u32 = 0o1;

/// `veil-task` if it exists, else `nobody`, else uid/gid 65534.
fn default_user() -> Result<TaskUser, TaskUserError> {
    for name in [DEFAULT_TASK_USER, FALLBACK_TASK_USER] {
        if let Some(user) = lookup(name)? {
            return Ok(user);
        }
    }
    Ok(TaskUser {
        name: NOBODY_ID.to_string(),
        uid: NOBODY_ID,
        gid: NOBODY_ID,
    })
}

/// A user by name, or by uid when `text` is a number (a uid without a
/// passwd entry gets the gid of the same number).
#[cfg(unix)]
fn lookup(text: &str) -> Result<Option<TaskUser>, TaskUserError> {
    use nix::unistd::{Uid, User};
    let lookup_error = |errno: nix::Error| TaskUserError::Lookup {
        name: text.to_owned(),
        source: std::io::Error::from(errno),
    };
    if let Ok(uid) = text.parse::<u32>() {
        let user = User::from_uid(Uid::from_raw(uid)).map_err(lookup_error)?;
        return Ok(Some(match user {
            Some(user) => TaskUser {
                name: user.name,
                uid,
                gid: user.gid.as_raw(),
            },
            None => TaskUser {
                name: text.to_owned(),
                uid,
                gid: uid,
            },
        }));
    }
    Ok(User::from_name(text)
        .map_err(lookup_error)?
        .map(|user| TaskUser {
            name: user.name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }))
}

#[cfg(not(unix))]
fn lookup(_text: &str) -> Result<Option<TaskUser>, TaskUserError> {
    Ok(None)
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn nobody() -> TaskUser {
        TaskUser {
            name: "nobody".into(),
            uid: NOBODY_ID,
            gid: NOBODY_ID,
        }
    }

    #[test]
    fn a_private_parent_blocks_and_is_named() {
        let base = tempfile::tempdir().unwrap();
        let open = base.path().join("open");
        let closed = open.join("closed");
        let tool = closed.join("tool");
        std::fs::create_dir_all(&closed).unwrap();
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (dir, mode) in [
            (base.path(), 0o711),
            (open.as_path(), 0o755),
            (closed.as_path(), 0o700),
        ] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let user = nobody();
        if agent_is_root() {
            // The owner (root) is not nobody: only the "other" bits count.
            assert_eq!(user.check_executable(&tool), Err(closed.clone()));
            std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o711)).unwrap();
            assert_eq!(user.check_executable(&tool), Ok(()));
        }
    }

    #[test]
    fn numeric_ids_without_a_passwd_entry_are_accepted_and_root_is_refused() {
        let user = lookup("4242424").unwrap().unwrap();
        assert_eq!((user.uid, user.gid), (4_242_424, 4_242_424));
        if agent_is_root() {
            assert!(matches!(
                TaskUser::resolve(Some("0")),
                Err(TaskUserError::Root(_))
            ));
            assert!(matches!(
                TaskUser::resolve(Some("no-such-user-veil")),
                Err(TaskUserError::NoSuchUser(_))
            ));
            let default = TaskUser::resolve(None).unwrap().unwrap();
            assert_ne!(default.uid, 0);
        }
    }
}
