//! Listing a watched directory: which files are manifests, and which parts
//! of the tree could not be listed.
//!
//! This module owns the naming rules (what is a manifest, what is an editor
//! temp file or a `..data`-style indirection) and the walk itself, with its
//! guards (symlink loops, file count). It only lists and stats; it must
//! never read file contents or decide what is pruned — it reports what it
//! could not see so the caller can keep those files.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Why (part of) the tree could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The root does not exist (or is a symlink whose target is gone).
    #[error("directory {root} is missing: nothing pruned until it is back")]
    RootMissing { root: PathBuf },
    /// The root exists but cannot be listed.
    #[error("directory {root} cannot be read ({source}): nothing pruned until it can")]
    RootUnreadable {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The root is a file, not a directory.
    #[error("{root} is not a directory: nothing pruned until it is one")]
    RootNotDirectory { root: PathBuf },
    /// More manifest files than the limit; the rest are not loaded.
    #[error(
        "more than {limit} YAML/JSON files under {root} (limit max_files): only the first \
         {limit} in path order are loaded and nothing is pruned; remove files or raise the limit"
    )]
    TooManyFiles { root: PathBuf, limit: usize },
    /// A subdirectory could not be listed; files known under it are kept.
    #[error("directory cannot be read ({source}): its files keep their last good version")]
    DirUnreadable {
        #[source]
        source: io::Error,
    },
    /// A symlink whose target does not exist (yet: an atomic swap may be in flight).
    #[error(
        "symlink target is missing (an atomic swap may be in flight): what was loaded from \
         here stays in effect until the link resolves or is removed"
    )]
    Dangling,
    /// An entry whose type could not be read.
    #[error("cannot be read ({source}): what was loaded from here stays in effect")]
    Unstattable {
        #[source]
        source: io::Error,
    },
    /// A directory reached a second time (a symlink loop or a second link to it).
    #[error("directory already read as {first}: skipped (symlink loop or second link)")]
    AlreadyVisited { first: PathBuf },
}

/// Identity and change stamp of a file, used to skip re-reading unchanged files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    pub mtime: Option<SystemTime>,
    pub ctime: (i64, i64),
}

impl FileStat {
    fn of(meta: &Metadata) -> FileStat {
        FileStat {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.modified().ok(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A manifest file found by the walk.
#[derive(Clone, Debug)]
pub struct ListedFile {
    /// Path relative to the root, through symlinks as they are named.
    pub rel: PathBuf,
    /// Path to open (root joined with `rel`).
    pub abs: PathBuf,
    /// Stat of the target, at listing time.
    pub stat: FileStat,
}

/// A path the walk could not see into.
#[derive(Debug)]
pub struct Unlisted {
    /// Relative path; known files at or under it are kept as they were.
    pub rel: PathBuf,
    pub error: ScanError,
    /// Whether the name itself looks like a manifest (so the error matters
    /// even when no file was known there).
    pub manifest_named: bool,
}

/// What a walk saw.
#[derive(Debug, Default)]
pub struct Listing {
    /// Manifest files, in path order (at most `max_files`).
    pub files: Vec<ListedFile>,
    /// Paths that could not be listed.
    pub unlisted: Vec<Unlisted>,
    /// Set when the listing is not the whole tree: nothing may be pruned.
    pub incomplete: Option<ScanError>,
}

/// Whether the walk skips this name: dotfiles and dot-directories (which
/// covers `.x.swp`, `.#x` lock files, `.git` and Kubernetes' `..data` /
/// `..2026_…` indirections, whose files are reached through the top-level
/// symlinks), and editors' backup and temp files.
pub fn is_ignored(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.')
        || name.starts_with('#')
        || name.ends_with('~')
        || name.ends_with(".tmp")
        // vim probes whether it may write a directory by creating this file.
        || name == "4913"
}

/// Whether a (non-ignored) file name is a manifest: `*.yaml`, `*.yml`, `*.json`.
pub fn is_manifest(name: &OsStr) -> bool {
    let extension = Path::new(name).extension().map(OsStr::to_ascii_lowercase);
    matches!(
        extension.as_ref().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    ) && !is_ignored(name)
}

/// Walks `root` recursively, following symlinks, in path order.
///
/// Never fails: problems are in [`Listing::unlisted`] (a part of the tree)
/// or [`Listing::incomplete`] (the whole listing cannot be trusted for
/// pruning). Lists at most `max_files` manifests.
pub fn list(root: &Path, max_files: usize) -> Listing {
    let mut listing = Listing::default();
    let root_meta = match fs::metadata(root) {
        Ok(meta) => meta,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            listing.incomplete = Some(ScanError::RootMissing { root: root.into() });
            return listing;
        }
        Err(source) => {
            listing.incomplete = Some(ScanError::RootUnreadable {
                root: root.into(),
                source,
            });
            return listing;
        }
    };
    if !root_meta.is_dir() {
        listing.incomplete = Some(ScanError::RootNotDirectory { root: root.into() });
        return listing;
    }
    let mut visited: HashSet<(u64, u64)> = HashSet::new();
    let mut first_seen: Vec<((u64, u64), PathBuf)> = Vec::new();
    visited.insert((root_meta.dev(), root_meta.ino()));
    first_seen.push(((root_meta.dev(), root_meta.ino()), PathBuf::from(".")));

    // Depth-first, each directory's entries sorted and visited in place, so
    // files come out in `Path` order: the `max_files` cut and the "later
    // file" duplicate rule are deterministic.
    let mut stack: Vec<(PathBuf, bool)> = match read_sorted(root) {
        Ok(entries) => children(Path::new(""), entries).collect(),
        Err(source) => {
            listing.incomplete = Some(ScanError::RootUnreadable {
                root: root.into(),
                source,
            });
            return listing;
        }
    };
    while let Some((rel, is_symlink)) = stack.pop() {
        let abs = root.join(&rel);
        let name = rel.file_name().unwrap_or_default();
        let meta = match fs::metadata(&abs) {
            Ok(meta) => meta,
            Err(error) => {
                let error = if is_symlink && error.kind() == io::ErrorKind::NotFound {
                    ScanError::Dangling
                } else {
                    ScanError::Unstattable { source: error }
                };
                let manifest_named = is_manifest(name);
                listing.unlisted.push(Unlisted {
                    rel,
                    error,
                    manifest_named,
                });
                continue;
            }
        };
        if meta.is_dir() {
            let id = (meta.dev(), meta.ino());
            if !visited.insert(id) {
                let first = first_seen
                    .iter()
                    .find(|(seen, _)| *seen == id)
                    .map(|(_, path)| path.clone())
                    .unwrap_or_default();
                let error = ScanError::AlreadyVisited { first };
                listing.unlisted.push(Unlisted {
                    rel,
                    error,
                    manifest_named: true,
                });
                continue;
            }
            first_seen.push((id, rel.clone()));
            match read_sorted(&abs) {
                Ok(entries) => stack.extend(children(&rel, entries)),
                Err(source) => {
                    let error = ScanError::DirUnreadable { source };
                    listing.unlisted.push(Unlisted {
                        rel,
                        error,
                        manifest_named: false,
                    });
                }
            }
        } else if meta.is_file() && is_manifest(name) {
            if listing.files.len() == max_files {
                listing.incomplete = Some(ScanError::TooManyFiles {
                    root: root.into(),
                    limit: max_files,
                });
                return listing;
            }
            listing.files.push(ListedFile {
                rel,
                abs,
                stat: FileStat::of(&meta),
            });
        }
    }
    listing
}

/// The entries of directory `dir` worth visiting, reversed so that a stack
/// pops them in name order.
fn children(dir: &Path, entries: Vec<(OsString, bool)>) -> impl Iterator<Item = (PathBuf, bool)> {
    entries
        .into_iter()
        .rev()
        .filter(|(name, _)| !is_ignored(name))
        .map(move |(name, is_symlink)| (dir.join(name), is_symlink))
}

/// Entry names of a directory with whether each is a symlink, sorted.
fn read_sorted(dir: &Path) -> io::Result<Vec<(OsString, bool)>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let is_symlink = entry.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        entries.push((entry.file_name(), is_symlink));
    }
    entries.sort();
    Ok(entries)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn editor_temp_and_backup_files_are_ignored() {
        for name in [
            ".x.yaml.swp",
            "x.yaml~",
            "#x.yaml#",
            ".#x.yaml",
            "4913",
            "x.yaml.tmp",
            "..data",
            ".git",
        ] {
            assert!(is_ignored(OsStr::new(name)), "{name} should be ignored");
            assert!(!is_manifest(OsStr::new(name)), "{name} is not a manifest");
        }
    }

    #[test]
    fn only_yaml_yml_and_json_are_manifests() {
        for name in ["a.yaml", "a.yml", "a.json", "A.YAML"] {
            assert!(is_manifest(OsStr::new(name)), "{name}");
        }
        for name in ["a.txt", "README.md", "yaml", "a.yaml.bak"] {
            assert!(!is_manifest(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn files_are_listed_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        for rel in ["a.yaml", "a/x.yaml", "b.json", "a/b/y.yml"] {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "").unwrap();
        }
        let listing = list(dir.path(), 10);
        let listed: Vec<PathBuf> = listing.files.into_iter().map(|f| f.rel).collect();
        let mut sorted = listed.clone();
        sorted.sort();
        assert_eq!(listed, sorted);
        assert_eq!(listed.len(), 4);
    }
}
