//! The watched-directory source (`--source dir:PATH`): a tree of YAML/JSON
//! manifests turned into [`SourceSnapshot`]s.
//!
//! This module owns the reload cycle (list → read changed files → parse →
//! combine) and the state kept between reloads: per-file parse cache keyed
//! by content hash, the last good version of every file, and the snapshot
//! version. [`DirSource::spawn`] keeps it current with `notify`.
//!
//! It must never publish a partial view: when the tree (or part of it)
//! cannot be listed, nothing is pruned; a file that fails keeps its last
//! good version in effect. It never writes to the directory.
//!
//! - [`scan`]: listing and naming rules (editor temp files, `..data` swaps, loops);
//! - [`read`]: bounded reads and content hashes;
//! - [`state`]: file atomicity, duplicates, budgets (pure);
//! - [`watch`]: the background thread, debouncing and re-arming.

mod publish;
mod read;
mod scan;
mod state;
mod watch;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch as channel;
use veil_crds::document::Limits;

use self::read::ReadError;
use self::scan::{ListedFile, Listing};
use self::state::{Current, FileState, ParseFn};
use super::{SourceError, SourceSnapshot};

/// Default quiet period that coalesces a burst of file events into one reload.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(25);
/// Default full re-read interval, a safety net against missed events (and
/// against stat stamps that did not change although the content did).
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(30);
/// A file modified this close to the scan that read it may have changed
/// again within the same timestamp tick (1–2 s on some file systems), so
/// its stat stamp is not trusted until it is older than this.
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Input bounds (design §8): a hostile or broken tree is refused with clear
/// errors, in bounded memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirLimits {
    /// Largest file read, in bytes (default 4 MiB).
    pub max_file_bytes: u64,
    /// Most objects in one file (default 5,000).
    pub max_objects_per_file: usize,
    /// Most manifest files in the tree (default 10,000).
    pub max_files: usize,
    /// Most objects in effect across the tree (default 100,000).
    pub max_total_objects: usize,
}

impl Default for DirLimits {
    fn default() -> Self {
        DirLimits {
            max_file_bytes: 4 * 1024 * 1024,
            max_objects_per_file: Limits::default().max_objects,
            max_files: 10_000,
            max_total_objects: 100_000,
        }
    }
}

/// How a [`DirSource`] reads and watches its directory.
#[derive(Clone, Debug)]
pub struct DirOptions {
    /// Quiet period after a file event before reloading (default 25 ms).
    /// A continuous stream of events reloads at least every 8 periods.
    pub debounce: Duration,
    pub limits: DirLimits,
    /// Namespace of namespaced objects that name none (default `default`).
    pub default_namespace: String,
    /// Full re-read interval when no event arrives (default 30 s).
    pub rescan_interval: Duration,
}

impl Default for DirOptions {
    fn default() -> Self {
        DirOptions {
            debounce: DEFAULT_DEBOUNCE,
            limits: DirLimits::default(),
            default_namespace: "default".to_owned(),
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
        }
    }
}

/// Why watching a directory could not start. A missing directory is not
/// one of these: it is an error inside the snapshot, and watching goes on.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// The file-event watcher could not be created (e.g. inotify instance limit).
    #[error("cannot watch for file changes: {0}")]
    Watcher(#[source] notify::Error),
    /// The background thread could not be started.
    #[error("cannot start the directory watch thread: {0}")]
    Thread(#[source] io::Error),
}

/// A directory of manifests, with what was loaded from it so far.
///
/// Contract of [`DirSource::reload`]:
/// - lists `*.yaml`, `*.yml`, `*.json` recursively, following symlinks,
///   skipping dotfiles, dot-directories (`..data`, `.git`) and editor temp
///   and backup files;
/// - re-reads only files whose stat stamp changed, and re-parses only
///   files whose content hash changed;
/// - a file that cannot be read, parsed or validated, or whose objects are
///   already defined by another file, keeps its last good version in
///   effect and gets errors; other files are unaffected;
/// - a file or object that is gone is pruned — unless the tree (or the
///   part it lived in) could not be listed, in which case nothing there is
///   pruned and an error says so;
/// - the snapshot version is bumped only when objects or errors changed.
pub struct DirSource {
    root: PathBuf,
    options: DirOptions,
    parse: ParseFn,
    files: BTreeMap<PathBuf, FileState>,
    /// The objects of the versions in effect, kept from one reload to the next.
    published: publish::Published,
    /// Errors of the last snapshot (`None` before the first), to tell whether anything changed.
    last_errors: Option<Vec<SourceError>>,
    version: u64,
    /// Set by the watch thread when file events are not delivered.
    watch_error: Option<SourceError>,
}

impl DirSource {
    /// A source over `root` (made absolute, symlinks left unresolved so an
    /// atomically swapped root link is followed). Touches no file.
    pub fn new(root: PathBuf, options: DirOptions) -> DirSource {
        let root = std::path::absolute(&root).unwrap_or(root);
        DirSource {
            root,
            options,
            parse: veil_crds::document::parse_documents,
            files: BTreeMap::new(),
            published: publish::Published::default(),
            last_errors: None,
            version: 0,
            watch_error: None,
        }
    }

    /// The watched directory, as given (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Lists, reads what changed, and returns the current snapshot (see the
    /// type's contract). Never fails: problems are in `errors`.
    pub fn reload(&mut self) -> SourceSnapshot {
        self.reload_with(false)
    }

    /// [`DirSource::reload`], re-reading every file when `verify` is set
    /// (stat stamps are not trusted).
    fn reload_with(&mut self, verify: bool) -> SourceSnapshot {
        let started = SystemTime::now();
        let Listing {
            files: listed,
            unlisted,
            incomplete,
        } = scan::list(&self.root, self.options.limits.max_files);
        let mut scan_errors = Vec::new();

        let mut seen = std::collections::HashSet::with_capacity(listed.len());
        for file in &listed {
            seen.insert(file.rel.clone());
            self.observe(file, started, verify);
        }
        // Prune only what a complete listing no longer shows: files the
        // listing could not see are kept until a later listing can.
        let complete = incomplete.is_none();
        self.files.retain(|rel, _| {
            seen.contains(rel) || !complete || unlisted.iter().any(|u| rel.starts_with(&u.rel))
        });
        if let Some(error) = incomplete {
            scan_errors.push(SourceError::global(error.to_string()));
        }
        for entry in unlisted {
            let known = self.files.keys().any(|rel| rel.starts_with(&entry.rel));
            if known || entry.manifest_named {
                scan_errors.push(SourceError::in_file(&entry.rel, entry.error.to_string()));
            }
        }

        let mut resolved = state::resolve(&mut self.files, self.options.limits.max_total_objects);
        scan_errors.extend(self.watch_error.clone());
        scan_errors.append(&mut resolved.errors);
        // Stable sort: per-file order (errors, then the "kept" note) is preserved.
        scan_errors.sort_by(|a, b| a.file.cmp(&b.file));
        // Objects are a function of the versions in effect: they changed
        // only if one was accepted or its file pruned.
        let changed = self.published.update(&self.files);
        if changed || self.last_errors.as_ref() != Some(&scan_errors) {
            self.version += 1;
            self.last_errors = Some(scan_errors.clone());
        }
        SourceSnapshot {
            objects: self.published.objects().clone(),
            errors: scan_errors,
            version: self.version,
            observed_statuses: Default::default(),
        }
    }

    /// Brings one listed file's [`FileState`] up to date.
    fn observe(&mut self, file: &ListedFile, started: SystemTime, verify: bool) {
        let limits = &self.options.limits;
        if let Some(state) = self.files.get(&file.rel)
            && !verify
            && let Some((stat, read_at)) = &state.stat
            && *stat == file.stat
            && stat.mtime.is_some_and(|m| m + RACY_WINDOW < *read_at)
        {
            return;
        }
        let (stat, current) = match read::read(&file.abs, limits.max_file_bytes) {
            Ok(content) => {
                let cached = self.files.get(&file.rel).map(|s| &s.current);
                let current = match cached {
                    Some(current) if current.hash() == Some(&content.hash) => current.clone(),
                    _ => state::parse_file(
                        &file.rel,
                        content.hash,
                        &content.text,
                        &self.options.default_namespace,
                        &Limits {
                            max_bytes: usize::try_from(limits.max_file_bytes).unwrap_or(usize::MAX),
                            max_objects: limits.max_objects_per_file,
                        },
                        self.parse,
                    ),
                };
                (Some((file.stat, started)), current)
            }
            Err(error) => {
                let error = match &error {
                    ReadError::NotUtf8 { line, column } => SourceError {
                        line: *line,
                        column: *column,
                        ..SourceError::in_file(&file.rel, error.to_string())
                    },
                    _ => SourceError::in_file(&file.rel, error.to_string()),
                };
                (None, Current::Unreadable(error))
            }
        };
        match self.files.get_mut(&file.rel) {
            Some(state) => {
                state.stat = stat;
                state.current = current;
            }
            None => {
                self.files.insert(
                    file.rel.clone(),
                    FileState {
                        stat,
                        current,
                        in_effect: None,
                    },
                );
            }
        }
    }

    /// Records (or clears) a problem with file-event delivery, shown in
    /// every snapshot until cleared.
    fn set_watch_error(&mut self, message: Option<String>) {
        self.watch_error = message.map(SourceError::global);
    }

    /// Starts watching in a dedicated thread and returns at once.
    ///
    /// The thread arms a recursive watch on the root (and a watch on its
    /// parent, to see the root come back), performs the first reload and
    /// publishes it (version 1: wait with `rx.wait_for(|s| s.version > 0)`),
    /// then reloads after each burst of events (quiet for
    /// [`DirOptions::debounce`]) and every [`DirOptions::rescan_interval`]
    /// (re-reading every file), publishing only snapshots whose version
    /// changed. A root that is missing at start or disappears later is an
    /// error in the snapshot; the watch is re-armed when it is back.
    ///
    /// Dropping the handle, or every receiver of `tx`, stops the thread
    /// after its current reload.
    pub fn spawn(
        self,
        tx: channel::Sender<Arc<SourceSnapshot>>,
    ) -> Result<DirSourceHandle, DirError> {
        watch::spawn(self, tx)
    }
}

pub use self::watch::DirSourceHandle;

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests;
