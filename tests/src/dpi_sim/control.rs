//! The simulator's control socket: a Unix stream socket (reachable from the
//! test process whatever namespace it is in, since it is a path) taking one
//! command per line.
//!
//! - `level` → the current level, e.g. `2`;
//! - `level N` → `ok N` after switching (logged as `{"event":"level",…}`),
//!   or `error: …` for a level that does not exist.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::json;

use super::inspect::MAX_LEVEL;
use super::{DecisionLog, SimError};

/// Binds `path` (replacing a stale socket file) and answers commands on a
/// background thread for the life of the process.
pub fn serve(path: &Path, level: Arc<AtomicU8>, log: DecisionLog) -> Result<(), SimError> {
    let control_error = |source| SimError::Control {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        std::fs::remove_file(path).map_err(control_error)?;
    }
    let listener = UnixListener::bind(path).map_err(control_error)?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let level = Arc::clone(&level);
            let log = log.clone();
            std::thread::spawn(move || answer(stream, &level, &log));
        }
    });
    Ok(())
}

fn answer(stream: UnixStream, level: &AtomicU8, log: &DecisionLog) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else {
            return;
        };
        let reply = command(line.trim(), level, log);
        if writeln!(writer, "{reply}").is_err() {
            return;
        }
    }
}

/// Runs one command; returns the reply line.
pub fn command(line: &str, level: &AtomicU8, log: &DecisionLog) -> String {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("level"), None, None) => level.load(Ordering::Relaxed).to_string(),
        (Some("level"), Some(value), None) => match value.parse::<u8>() {
            Ok(new) if new <= MAX_LEVEL => {
                let old = level.swap(new, Ordering::Relaxed);
                log.write(&json!({"event": "level", "from": old, "to": new}));
                format!("ok {new}")
            }
            _ => format!("error: level must be 0..={MAX_LEVEL}, got {value:?}"),
        },
        _ => format!("error: unknown command {line:?} (try `level` or `level N`)"),
    }
}
