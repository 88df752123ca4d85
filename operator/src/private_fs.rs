//! Files and directories that hold secrets: the data dir is 0700, its
//! secret files 0600 (design §8). The SQLite database holds every generated
//! VLESS id and Reality private key.
//!
//! On other platforms than Unix these are plain creates (no modes).

use std::io;
use std::path::Path;

/// Creates `dir` (and missing parents) with mode 0700; narrows an
/// existing `dir` that others may read to 0700. A directory this process
/// may not chmod (owned by someone else, e.g. a mounted volume) is kept as
/// it is, with a warning.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0
            && let Err(error) =
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        {
            tracing::warn!(dir = %dir.display(), %error, "the data dir is readable by others and cannot be made private (0700)");
        }
        Ok(())
    }
    #[cfg(not(unix))]
    builder.create(dir)
}

/// Lets other users pass through `dir` without listing it (0711): the
/// in-process agent of `up` keeps its task work dirs under the operator's
/// data dir, and tasks run as an unprivileged user who must reach them.
/// Every secret file inside stays 0600, so passing reveals nothing.
pub fn make_passable_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Makes `path` mode 0600: creates it empty with that mode when `create`
/// and it does not exist, narrows it when it exists.
pub fn make_private_file(path: &Path, create: bool) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::metadata(path) {
            Ok(meta) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                }
                Ok(())
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                if create {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .mode(0o600)
                        .open(path)?;
                }
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, create);
        Ok(())
    }
}
