//! Keeping a [`DirSource`] current: file events, debouncing, the safety-net
//! rescan, re-arming when the root comes and goes, publishing snapshots.
//!
//! This module owns the background thread (file I/O never runs on the
//! async runtime) and the `notify` watcher. It must never publish a
//! snapshot whose version did not change, and never decide what a snapshot
//! holds (that is [`DirSource::reload`]'s job).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::watch as channel;

use super::{DirError, DirSource};
use crate::source::SourceSnapshot;

/// A continuous stream of events still reloads after this many debounce
/// periods, so constant writes cannot starve the snapshot.
const MAX_DEBOUNCE_PERIODS: u32 = 8;
/// How often to look for the root while it is missing or not watched
/// (a stat per poll; reads nothing unless something changed).
const UNWATCHED_POLL: Duration = Duration::from_secs(1);

/// What wakes the thread.
enum Signal {
    Fs(notify::Result<Event>),
    Stop,
}

/// A running directory watch. Dropping it stops the thread (after the
/// reload in progress, if any) and the watcher with it.
pub struct DirSourceHandle {
    signals: Sender<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl DirSourceHandle {
    /// Stops the thread and waits until it has exited. Blocks: in async
    /// code, call it from `spawn_blocking` (or just drop the handle).
    pub fn stop(mut self) {
        let _ = self.signals.send(Signal::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Whether the thread has exited (stopped, or every receiver was dropped).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for DirSourceHandle {
    fn drop(&mut self) {
        // The thread may already be gone; then there is nothing to stop.
        let _ = self.signals.send(Signal::Stop);
    }
}

/// See [`DirSource::spawn`].
pub(super) fn spawn(
    source: DirSource,
    tx: channel::Sender<Arc<SourceSnapshot>>,
) -> Result<DirSourceHandle, DirError> {
    let (signals_tx, signals) = mpsc::channel();
    let watcher = new_watcher(&signals_tx).map_err(DirError::Watcher)?;
    let watch = Watch {
        source,
        tx,
        signals,
        signals_tx: signals_tx.clone(),
        watcher,
        armed_for: None,
        published: 0,
    };
    let thread = std::thread::Builder::new()
        .name("veil-dir-source".to_owned())
        .spawn(move || watch.run())
        .map_err(DirError::Thread)?;
    Ok(DirSourceHandle {
        signals: signals_tx,
        thread: Some(thread),
    })
}

fn new_watcher(signals: &Sender<Signal>) -> notify::Result<RecommendedWatcher> {
    let signals = signals.clone();
    notify::recommended_watcher(move |event| {
        // The thread may be stopping; a lost event then does not matter.
        let _ = signals.send(Signal::Fs(event));
    })
}

/// The thread's state.
struct Watch {
    source: DirSource,
    tx: channel::Sender<Arc<SourceSnapshot>>,
    signals: Receiver<Signal>,
    signals_tx: Sender<Signal>,
    watcher: RecommendedWatcher,
    /// Identity (device, inode) of the root the watcher was armed for:
    /// `None` before the first arming, `Some(None)` armed while the root was missing.
    armed_for: Option<Option<(u64, u64)>>,
    /// Version of the last snapshot sent.
    published: u64,
}

impl Watch {
    fn run(mut self) {
        self.reload(false);
        let rescan = self.source.options.rescan_interval;
        let mut next_rescan = Instant::now() + rescan;
        loop {
            let mut wait = next_rescan.saturating_duration_since(Instant::now());
            if !matches!(self.armed_for, Some(Some(_))) {
                wait = wait.min(UNWATCHED_POLL);
            }
            match self.signals.recv_timeout(wait) {
                Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Signal::Fs(event)) => {
                    let Some(verify) = self.relevance(&event) else {
                        continue;
                    };
                    let Some(more) = self.settle() else { return };
                    self.reload(verify || more);
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() >= next_rescan => {
                    self.reload(true);
                    next_rescan = Instant::now() + rescan;
                }
                Err(RecvTimeoutError::Timeout) => self.reload(false),
            }
            if self.tx.is_closed() {
                return;
            }
        }
    }

    /// Whether an event calls for a reload: `None` for events that cannot
    /// change anything (our own reads, siblings of the root seen through
    /// the parent watch), `Some(true)` when events were lost and every file
    /// must be re-read.
    fn relevance(&self, event: &notify::Result<Event>) -> Option<bool> {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, root = %self.source.root().display(), "file watch error; re-reading everything");
                return Some(true);
            }
        };
        if event.need_rescan() {
            return Some(true);
        }
        if let EventKind::Access(kind) = event.kind
            && kind != AccessKind::Close(AccessMode::Write)
        {
            return None;
        }
        let root = self.source.root();
        (event.paths.is_empty() || event.paths.iter().any(|p| p.starts_with(root))).then_some(false)
    }

    /// Waits until no relevant event arrived for one debounce period (at
    /// most [`MAX_DEBOUNCE_PERIODS`]); `None` when asked to stop.
    fn settle(&self) -> Option<bool> {
        let debounce = self.source.options.debounce;
        let cap = Instant::now() + debounce * MAX_DEBOUNCE_PERIODS;
        let mut quiet_at = Instant::now() + debounce;
        let mut verify = false;
        loop {
            let now = Instant::now();
            let until = quiet_at.min(cap);
            if now >= until {
                return Some(verify);
            }
            match self.signals.recv_timeout(until - now) {
                Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => return None,
                Ok(Signal::Fs(event)) => {
                    if let Some(more) = self.relevance(&event) {
                        verify |= more;
                        quiet_at = Instant::now() + debounce;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Re-arms the watch if needed, reloads, and publishes a changed snapshot.
    fn reload(&mut self, verify: bool) {
        self.rearm();
        let snapshot = self.source.reload_with(verify);
        if snapshot.version != self.published {
            tracing::debug!(
                root = %self.source.root().display(),
                version = snapshot.version,
                objects = snapshot.objects.len(),
                errors = snapshot.errors.len(),
                "directory source changed"
            );
            self.published = snapshot.version;
            self.tx.send_replace(Arc::new(snapshot));
        }
    }

    /// Makes the watcher cover the root as it is now. A root that was
    /// removed and re-created (or a root symlink swapped to another
    /// directory) has a new identity, and the old watches are gone with the
    /// old directory, so a fresh watcher is armed. The root's parent is
    /// watched too, so that a root coming back is noticed at once.
    fn rearm(&mut self) {
        let root = self.source.root().to_path_buf();
        let id = fs::metadata(&root)
            .ok()
            .filter(fs::Metadata::is_dir)
            .map(|meta| (meta.dev(), meta.ino()));
        if self.armed_for == Some(id) {
            return;
        }
        self.armed_for = Some(id);
        match new_watcher(&self.signals_tx) {
            Ok(watcher) => self.watcher = watcher,
            Err(error) => {
                self.armed_for = None;
                self.source.set_watch_error(Some(unwatched(&root, &error)));
                return;
            }
        }
        if let Some(parent) = root.parent()
            && let Err(error) = self.watcher.watch(parent, RecursiveMode::NonRecursive)
        {
            // Only delays noticing a re-created root (polling still finds it).
            tracing::debug!(%error, parent = %parent.display(), "cannot watch the root's parent");
        }
        let mut problem = None;
        if id.is_some()
            && let Err(error) = self.watcher.watch(&root, RecursiveMode::Recursive)
        {
            self.armed_for = Some(None);
            problem = Some(unwatched(&root, &error));
        }
        self.source.set_watch_error(problem);
    }
}

fn unwatched(root: &std::path::Path, error: &notify::Error) -> String {
    format!(
        "cannot watch {} for changes ({error}): changes are picked up by polling every {} s; \
         raise fs.inotify.max_user_watches if the limit is reached",
        root.display(),
        UNWATCHED_POLL.as_secs()
    )
}
