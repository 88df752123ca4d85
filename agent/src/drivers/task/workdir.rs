//! The per-run working directory: `<base>/<namespace>/<name>-<uid8>/`.
//!
//! Owns creating it fresh (a leftover from an earlier attempt of the same run
//! is removed first), owner-only (0700 on Unix) and owned by the user the
//! run executes as, with that user's `HOME` inside it ([`HOME_DIR`]), and
//! removing it when the run is over unless the agent was asked to keep it
//! for debugging. The parents it creates (`<base>`, `<base>/<namespace>`)
//! are 0711: the task user may pass through them to its own dir but not
//! list them. It never touches anything outside `<base>/<namespace>/`.

use std::io;
use std::path::{Path, PathBuf};

use veil_crds::wire::RunRef;

use super::TaskError;
use crate::task_user::TaskUser;

/// The run's `HOME`, inside its work dir.
pub const HOME_DIR: &str = ".veil-home";

/// Characters of the run's uid kept in the directory name: enough to tell a
/// recreated run with the same name apart, short enough to read.
const UID_CHARS: usize = 8;

/// A run's working directory; removed on drop unless kept.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    keep: bool,
}

impl RunDir {
    /// Creates `<base>/<namespace>/<name>-<uid8>/` owner-only, owned by
    /// `owner` (the agent's user when `None`), holding only [`HOME_DIR`].
    ///
    /// # Errors
    ///
    /// [`TaskError::InvalidRun`] when a name part could escape `base` (empty,
    /// `.`/`..`, a path separator, a control character);
    /// [`TaskError::WorkDir`] when the directory cannot be removed or created.
    pub fn create(
        base: &Path,
        run: &RunRef,
        keep: bool,
        owner: Option<&TaskUser>,
    ) -> Result<Self, TaskError> {
        let path = Self::path_for(base, run)?;
        let work_dir_error = |source| TaskError::WorkDir {
            path: path.clone(),
            source,
        };
        match std::fs::remove_dir_all(&path) {
            Ok(()) => tracing::info!(run = %run, "removed the work dir of an earlier attempt"),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(work_dir_error(error)),
        }
        if let Some(namespace_dir) = path.parent() {
            create_passage_dir_all(namespace_dir).map_err(work_dir_error)?;
        }
        create_owned_dir(&path, owner).map_err(work_dir_error)?;
        // From here on the directory is removed on drop, even on error.
        let dir = Self { path, keep };
        create_owned_dir(&dir.home(), owner).map_err(|source| TaskError::WorkDir {
            path: dir.home(),
            source,
        })?;
        Ok(dir)
    }

    /// The run's `HOME`: [`HOME_DIR`] in the work dir.
    pub fn home(&self) -> PathBuf {
        self.path.join(HOME_DIR)
    }

    /// Where the run's directory is (or would be) for `run` under `base`.
    ///
    /// # Errors
    ///
    /// [`TaskError::InvalidRun`] when a name part is not a safe path component.
    pub fn path_for(base: &Path, run: &RunRef) -> Result<PathBuf, TaskError> {
        let uid: String = run
            .uid
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(UID_CHARS)
            .collect();
        for (field, value) in [
            ("namespace", run.namespace.as_str()),
            ("name", run.name.as_str()),
            ("uid", uid.as_str()),
        ] {
            if !is_safe_component(value) {
                return Err(TaskError::InvalidRun {
                    field,
                    value: value.to_owned(),
                });
            }
        }
        Ok(base
            .join(&run.namespace)
            .join(format!("{}-{uid}", run.name)))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn is_safe_component(value: &str) -> bool {
    !value.is_empty()
        && value != "."
        && value != ".."
        && !value.starts_with('.')
        && !value.contains(['/', '\\'])
        && !value.chars().any(char::is_control)
}

/// `create_dir_all` with mode 0711 for every directory it creates, and
/// `path` itself set to 0711 (a namespace dir of an older agent was 0700):
/// searchable by task users, listable only by the agent.
pub(crate) fn create_passage_dir_all(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o711);
        builder.create(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o711))
    }
    #[cfg(not(unix))]
    builder.create(path)
}

/// Creates `path` (its parent must exist) with mode 0700, or takes the
/// existing one, and gives it to `owner`.
pub(crate) fn create_owned_dir(path: &Path, owner: Option<&TaskUser>) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    match builder.create(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
        Err(error) => return Err(error),
    }
    #[cfg(unix)]
    if let Some(user) = owner {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))?;
    }
    Ok(())
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.keep {
            tracing::info!(path = %self.path.display(), "keeping the run's work dir (debug option)");
            return;
        }
        if let Err(error) = std::fs::remove_dir_all(&self.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), %error, "could not remove the run's work dir");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn run(namespace: &str, name: &str, uid: &str) -> RunRef {
        RunRef {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    #[test]
    fn path_is_namespace_then_name_and_short_uid() {
        let path = RunDir::path_for(
            Path::new("/var/lib/veil/runs"),
            &run(
                "prod",
                "backup-28000000",
                "0b5e7c2a-91f3-4c1e-8d6b-1a2b3c4d5e6f",
            ),
        )
        .unwrap();
        assert_eq!(
            path,
            Path::new("/var/lib/veil/runs/prod/backup-28000000-0b5e7c2a")
        );
    }

    #[test]
    fn names_that_could_escape_the_base_are_refused() {
        for (ns, name, uid) in [
            ("..", "x", "u1"),
            ("a", "../x", "u1"),
            ("a", "x", "--"),
            ("", "x", "u1"),
            (".hidden", "x", "u1"),
        ] {
            let result = RunDir::path_for(Path::new("/base"), &run(ns, name, uid));
            assert!(
                matches!(result, Err(TaskError::InvalidRun { .. })),
                "{ns}/{name}/{uid} was accepted"
            );
        }
    }

    #[test]
    fn dir_is_fresh_private_and_removed_on_drop_unless_kept() {
        let base = tempfile::tempdir().unwrap();
        let r = run("ns", "job", "abcdef0123");
        let stale = RunDir::path_for(base.path(), &r).unwrap().join("stale");
        std::fs::create_dir_all(&stale).unwrap();
        let dir = RunDir::create(base.path(), &r, false, None).unwrap();
        assert!(
            !stale.exists(),
            "a leftover of an earlier attempt is removed"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(dir.path()), 0o700);
            assert_eq!(mode(&dir.home()), 0o700);
            assert_eq!(
                mode(dir.path().parent().unwrap()),
                0o711,
                "passable, not listable"
            );
        }
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
        let kept = RunDir::create(base.path(), &r, true, None).unwrap();
        let path = kept.path().to_path_buf();
        drop(kept);
        assert!(path.exists());
    }
}
