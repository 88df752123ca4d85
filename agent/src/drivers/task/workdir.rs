//! The per-run working directory: `<base>/<namespace>/<name>-<uid8>/`.
//!
//! Owns creating it fresh (a leftover from an earlier attempt of the same run
//! is removed first), owner-only (0700 on Unix, parents too), and removing it
//! when the run is over unless the agent was asked to keep it for debugging.
//! It never touches anything outside `<base>/<namespace>/`.

use std::io;
use std::path::{Path, PathBuf};

use veil_crds::wire::RunRef;

use super::TaskError;

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
    /// Creates `<base>/<namespace>/<name>-<uid8>/` empty and owner-only.
    ///
    /// # Errors
    ///
    /// [`TaskError::InvalidRun`] when a name part could escape `base` (empty,
    /// `.`/`..`, a path separator, a control character);
    /// [`TaskError::WorkDir`] when the directory cannot be removed or created.
    pub fn create(base: &Path, run: &RunRef, keep: bool) -> Result<Self, TaskError> {
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
        create_private_dir_all(&path).map_err(work_dir_error)?;
        Ok(Self { path, keep })
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

/// `create_dir_all` with mode 0700 for every directory it creates.
pub(crate) fn create_private_dir_all(path: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
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
        create_private_dir_all(&stale).unwrap();
        let dir = RunDir::create(base.path(), &r, false).unwrap();
        assert!(
            !stale.exists(),
            "a leftover of an earlier attempt is removed"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for p in [dir.path(), dir.path().parent().unwrap()] {
                let mode = std::fs::metadata(p).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o700, "{}", p.display());
            }
        }
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
        let kept = RunDir::create(base.path(), &r, true).unwrap();
        let path = kept.path().to_path_buf();
        drop(kept);
        assert!(path.exists());
    }
}
