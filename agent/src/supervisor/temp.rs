//! RAII temporary files and directories for process configs.
//!
//! Owns files that exist only for a run: written owner-only (files 0600,
//! directories 0700 on Unix) because configs carry keys, and removed when the
//! guard drops. Hand a guard to [`ProcessSpec::hold`](super::ProcessSpec::hold)
//! so it lives exactly as long as the process. This module never logs file
//! contents.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::SupervisorError;

const PREFIX: &str = "veil-";

/// A temporary file, removed on drop.
#[derive(Debug)]
pub struct TempFile {
    inner: tempfile::TempPath,
}

impl TempFile {
    /// Writes `contents` to a new file in the system temporary directory,
    /// named `veil-<random><suffix>` (e.g. suffix `.json`).
    ///
    /// # Errors
    ///
    /// [`SupervisorError::Temp`] if the file cannot be created or written.
    pub fn new(contents: &[u8], suffix: &str) -> Result<Self, SupervisorError> {
        Self::new_in(&std::env::temp_dir(), contents, suffix)
    }

    /// Like [`new`](Self::new), in `dir`.
    ///
    /// # Errors
    ///
    /// [`SupervisorError::Temp`] if the file cannot be created or written.
    pub fn new_in(dir: &Path, contents: &[u8], suffix: &str) -> Result<Self, SupervisorError> {
        let temp_error = |source| SupervisorError::Temp {
            dir: dir.to_path_buf(),
            source,
        };
        // tempfile creates with O_EXCL and mode 0600 on Unix.
        let mut file = tempfile::Builder::new()
            .prefix(PREFIX)
            .suffix(suffix)
            .tempfile_in(dir)
            .map_err(temp_error)?;
        file.write_all(contents).map_err(temp_error)?;
        file.as_file().sync_all().map_err(temp_error)?;
        Ok(Self {
            inner: file.into_temp_path(),
        })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.inner
    }
}

/// A temporary directory, removed with everything in it on drop.
#[derive(Debug)]
pub struct TempDir {
    inner: tempfile::TempDir,
}

impl TempDir {
    /// Creates `veil-<random>` in the system temporary directory.
    ///
    /// # Errors
    ///
    /// [`SupervisorError::Temp`] if the directory cannot be created.
    pub fn new() -> Result<Self, SupervisorError> {
        Self::new_in(&std::env::temp_dir())
    }

    /// Creates `veil-<random>` in `dir`.
    ///
    /// # Errors
    ///
    /// [`SupervisorError::Temp`] if the directory cannot be created.
    pub fn new_in(dir: &Path) -> Result<Self, SupervisorError> {
        let mut builder = tempfile::Builder::new();
        builder.prefix(PREFIX);
        // tempfile leaves directory modes to the umask; configs inside are keys.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o700));
        }
        let inner = builder
            .tempdir_in(dir)
            .map_err(|source| SupervisorError::Temp {
                dir: dir.to_path_buf(),
                source,
            })?;
        Ok(Self { inner })
    }

    /// Where the directory is.
    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    /// Writes `contents` to `name` inside the directory, owner-only (0600),
    /// replacing an existing file. The file goes when the directory does.
    ///
    /// # Errors
    ///
    /// [`SupervisorError::Temp`] if the file cannot be written.
    pub fn write_file(&self, name: &str, contents: &[u8]) -> Result<PathBuf, SupervisorError> {
        let path = self.path().join(name);
        write_private(&path, contents).map_err(|source| SupervisorError::Temp {
            dir: self.path().to_path_buf(),
            source,
        })?;
        Ok(path)
    }
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn temp_file_is_private_and_removed_on_drop() {
        let file = TempFile::new(b"secret", ".json").unwrap();
        let path = file.path().to_path_buf();
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        assert!(path.to_string_lossy().ends_with(".json"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn temp_dir_files_are_private_and_removed_with_it() {
        let dir = TempDir::new().unwrap();
        let file = dir.write_file("config.json", b"{}").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let root = dir.path().to_path_buf();
        drop(dir);
        assert!(!root.exists() && !file.exists());
    }
}
