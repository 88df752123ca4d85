//! Hostlists and files on disk (design §4a.1).
//!
//! Owns everything under the zapret data directory except the engine's pid
//! records (dot files at its top): `<root>/<namespace>/<name>/<list>.txt`
//! for hostlists and `<root>/<namespace>/<name>/files/<file>` for files.
//! Paths are stable, so a list edit is a content change the engine's
//! mtime reload picks up without a restart. Every write is atomic (temp
//! file in the same directory → fsync → rename) and happens only when the
//! content differs; a hostlist with no domain is never written (zapret
//! would treat an empty list as every host).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use veil_crds::wire::{StrategyId, ZapretMember};

/// Mode of a list or file from a ConfigMap or inline.
pub const MODE_PLAIN: u32 = 0o640;
/// Mode of a list or file from a Secret.
pub const MODE_SECRET: u32 = 0o600;

/// Why a Strategy's lists or files could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("hostlist `{list}` is empty; zapret would treat an empty list as every host")]
    EmptyHostList { list: String },
    #[error("`{name}` cannot be a file name (use letters, digits, `-`, `_`, `.`)")]
    InvalidName { name: String },
    #[error("file `{file}` is not valid base64: {reason}")]
    Base64 { file: String, reason: String },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FilesError {
    /// The machine-readable reason for a Strategy report.
    pub fn reason(&self) -> &'static str {
        match self {
            FilesError::EmptyHostList { .. } => "EmptyHostList",
            FilesError::InvalidName { .. } => "InvalidName",
            FilesError::Base64 { .. } => "InvalidFile",
            FilesError::Io { .. } => "FileWriteFailed",
        }
    }
}

/// Where one Strategy's lists and files were written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Materialised {
    /// `hostlist:NAME` / `file:NAME` → path, for placeholder substitution.
    pub paths: BTreeMap<String, PathBuf>,
}

/// The directory of one Strategy under `root`.
pub fn strategy_dir(root: &Path, id: &StrategyId) -> PathBuf {
    root.join(&id.namespace).join(&id.name)
}

/// Writes `member`'s hostlists and files under `root`. Checks everything
/// first (empty lists, names, base64), so a refused Strategy leaves its
/// previous files as they were.
pub fn materialise(
    root: &Path,
    id: &StrategyId,
    member: &ZapretMember,
) -> Result<Materialised, FilesError> {
    check_name(&id.namespace)?;
    check_name(&id.name)?;
    let dir = strategy_dir(root, id);
    let mut writes: Vec<(String, PathBuf, Vec<u8>, u32)> = Vec::new();
    for list in &member.hostlists {
        check_name(&list.name)?;
        if list.domains.iter().all(|d| d.trim().is_empty()) {
            return Err(FilesError::EmptyHostList {
                list: list.name.clone(),
            });
        }
        let mut text = list.domains.join("\n");
        text.push('\n');
        writes.push((
            format!("hostlist:{}", list.name),
            dir.join(format!("{}.txt", list.name)),
            text.into_bytes(),
            mode(list.secret),
        ));
    }
    for file in &member.files {
        check_name(&file.name)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(file.data_base64.expose())
            .map_err(|e| FilesError::Base64 {
                file: file.name.clone(),
                reason: e.to_string(),
            })?;
        writes.push((
            format!("file:{}", file.name),
            dir.join("files").join(&file.name),
            bytes,
            mode(file.secret),
        ));
    }
    let mut materialised = Materialised::default();
    for (key, path, bytes, mode) in writes {
        write_if_changed(&path, &bytes, mode).map_err(|source| FilesError::Io {
            path: path.clone(),
            source,
        })?;
        materialised.paths.insert(key, path);
    }
    Ok(materialised)
}

fn mode(secret: bool) -> u32 {
    if secret { MODE_SECRET } else { MODE_PLAIN }
}

fn check_name(name: &str) -> Result<(), FilesError> {
    let fine = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if fine {
        Ok(())
    } else {
        Err(FilesError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// Replaces `path` with `bytes` (mode `mode`) atomically unless it already
/// holds exactly them with that mode. Returns whether it wrote.
pub fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) && current_mode(path) == Some(mode) {
        return Ok(false);
    }
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("a file path needs a directory"))?;
    std::fs::create_dir_all(dir)?;
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    set_mode(temp.path(), mode)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    if let Ok(dir) = std::fs::File::open(dir) {
        // The rename itself is durable only once the directory is synced.
        let _ = dir.sync_all();
    }
    Ok(true)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn current_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn current_mode(_path: &Path) -> Option<u32> {
    Some(MODE_PLAIN)
}

/// Removes every file under `root` that is not in `keep`, and the
/// directories left empty; dot entries directly in `root` (the engine's pid
/// records) are left alone.
pub fn prune(root: &Path, keep: &BTreeSet<PathBuf>) -> std::io::Result<()> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        prune_tree(&entry.path(), keep)?;
    }
    Ok(())
}

/// Prunes `path`; returns whether it was removed.
fn prune_tree(path: &Path, keep: &BTreeSet<PathBuf>) -> std::io::Result<bool> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        if keep.contains(path) {
            return Ok(false);
        }
        std::fs::remove_file(path)?;
        return Ok(true);
    }
    let mut empty = true;
    for entry in std::fs::read_dir(path)? {
        if !prune_tree(&entry?.path(), keep)? {
            empty = false;
        }
    }
    if empty {
        std::fs::remove_dir(path)?;
    }
    Ok(empty)
}

#[cfg(test)]
mod tests;
