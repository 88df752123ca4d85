//! Modes of the agent's data dir, so task processes (another user) can
//! reach their own work dirs under `runs/` and nothing else.
//!
//! Layout and modes set at every start (the agent owns these directories):
//!
//! | path | mode | why |
//! |---|---|---|
//! | `<data dir>` | 0711 | passable to reach `runs/`, not listable |
//! | `journal/`, `servers/` (xray configs), `zapret/` | 0700 | the agent's alone |
//! | `runs/` | 0711 | passable to each run's own 0700 dir |
//!
//! Files the agent writes inside the private directories need no mode of
//! their own for this: a task cannot pass through a 0700 directory of root.

use std::io;
use std::path::{Path, PathBuf};

/// Subdirectories no task may enter.
pub const PRIVATE_DIRS: &[&str] = &["journal", "servers", "zapret"];

/// The subdirectory holding run work dirs.
pub const RUNS_DIR: &str = "runs";

/// Why the data dir could not be prepared.
#[derive(Debug, thiserror::Error)]
#[error("cannot prepare {}", path.display())]
pub struct DataDirError {
    /// The directory.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: io::Error,
}

/// Creates the data dir and its subdirectories with the modes above (and
/// resets the modes of existing ones). Returns the `runs/` directory.
///
/// # Errors
///
/// [`DataDirError`] naming the directory that could not be created or
/// changed.
pub fn prepare(data_dir: &Path) -> Result<PathBuf, DataDirError> {
    ensure(data_dir, 0o711)?;
    for name in PRIVATE_DIRS {
        ensure(&data_dir.join(name), 0o700)?;
    }
    let runs = data_dir.join(RUNS_DIR);
    ensure(&runs, 0o711)?;
    Ok(runs)
}

fn ensure(path: &Path, mode: u32) -> Result<(), DataDirError> {
    let error = |source| DataDirError {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path).map_err(error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(error)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    Ok(())
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn private_dirs_are_owner_only_and_runs_is_passable() {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("agent");
        std::fs::create_dir_all(data.join("servers")).unwrap();
        std::fs::set_permissions(data.join("servers"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let runs = prepare(&data).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o711);
        assert_eq!(mode(&runs), 0o711);
        for name in PRIVATE_DIRS {
            assert_eq!(mode(&data.join(name)), 0o700, "{name}");
        }
    }
}
