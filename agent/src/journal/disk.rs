//! File operations of the journal: private modes, durable writes that
//! leave nothing behind when they fail, and naming a failure for the
//! node's status.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use veil_crds::wire::JournalFault;

use super::{JournalError, io};

/// Mode of the journal directories: the agent's user only.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every journal file.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and parents) and makes it [`DIR_MODE`], also when it
/// already existed with a wider mode.
pub fn private_dir(dir: &Path) -> Result<(), JournalError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(DIR_MODE);
        builder.create(dir).map_err(io(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(io(dir))?;
    }
    #[cfg(not(unix))]
    builder.create(dir).map_err(io(dir))?;
    Ok(())
}

/// Makes an existing file [`FILE_MODE`] (entries written by an older agent).
pub fn private_file(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(FILE_MODE));
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Writes `bytes` to `path` durably: a [`FILE_MODE`] temp file, fsync'd,
/// renamed over `path`, the directory fsync'd. On failure the temp file is
/// removed (on a full disk it would hold the space the retry needs) and
/// `path` is unchanged.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let tmp = path.with_extension("tmp");
    let written = write_file(&tmp, bytes).and_then(|()| fs::rename(&tmp, path).map_err(io(path)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(FILE_MODE);
    }
    let mut file = options.open(path).map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The fault a failed write puts in the node's status: `DiskFull`
/// (ENOSPC, EDQUOT), `ReadOnly` (EROFS) or `WriteFailed` (anything else,
/// EIO included).
pub fn fault_of(error: &JournalError, held: u64) -> JournalFault {
    let reason = match error {
        JournalError::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => "DiskFull",
            std::io::ErrorKind::ReadOnlyFilesystem => "ReadOnly",
            _ => "WriteFailed",
        },
        JournalError::Corrupt { .. } => "WriteFailed",
    };
    JournalFault {
        reason: reason.to_owned(),
        message: format!("cannot write the agent journal: {error}"),
        held_in_memory: held,
    }
}

/// Space an entry of `len` bytes takes on disk: whole 4 KiB blocks, so a
/// journal of many small entries is bounded by what it really uses.
pub fn on_disk(len: usize) -> u64 {
    (len as u64).div_ceil(4096).max(1) * 4096
}
