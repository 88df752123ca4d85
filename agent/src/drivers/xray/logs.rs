//! Reading what xray writes to its log files (see [`process`](super::process)).
//!
//! The access log is tailed: new complete lines since the last read, from
//! the start of the file for an xray adopted from a previous agent (so its
//! connections are known again). Both files are kept small by truncating
//! them once read past a cap; xray opened them for appending, so it goes on
//! writing at the new end. A line written between the last read and the
//! truncation is lost, which only costs the tracker one access line.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The access log is truncated once this much has been read.
const ACCESS_CAP: u64 = 8 << 20;
/// The error log is truncated past this size (its tail is what matters).
const ERRORS_CAP: u64 = 1 << 20;
/// At most this much is read per call, so one call stays short.
const READ_CHUNK: u64 = 4 << 20;
/// How much of the error log's end is read for recent errors.
const ERRORS_TAIL: u64 = 8 << 10;

/// A tail of xray's access log.
#[derive(Debug)]
pub struct AccessLog {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl AccessLog {
    /// Tails `path` from its start.
    pub fn from_start(path: PathBuf) -> AccessLog {
        AccessLog {
            path,
            offset: 0,
            partial: String::new(),
        }
    }

    /// The complete lines written since the last call (none when the file
    /// cannot be read).
    pub fn read_new(&mut self) -> Vec<String> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // Truncated by someone else: start over.
            self.offset = 0;
            self.partial.clear();
        }
        if len == self.offset || file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        let Ok(read) = file.take(READ_CHUNK).read_to_end(&mut bytes) else {
            return Vec::new();
        };
        self.offset += read as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let mut lines: Vec<String> = self.partial.split('\n').map(str::to_owned).collect();
        self.partial = lines.pop().unwrap_or_default();
        if self.offset >= ACCESS_CAP && self.offset >= len && truncate(&self.path) {
            self.offset = 0;
            self.partial.clear();
        }
        lines
    }
}

/// The last `count` lines of xray's error log, joined with ` | `.
pub fn recent_errors(path: &Path, count: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(ERRORS_TAIL)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(count)..].join(" | ")
}

/// Truncates the error log when it grew past its cap.
pub fn bound_errors(path: &Path) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > ERRORS_CAP) {
        truncate(path);
    }
}

fn truncate(path: &Path) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(0))
        .is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::io::Write;

    use super::*;

    #[test]
    fn only_complete_lines_are_returned_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut log = AccessLog::from_start(path.clone());
        assert!(log.read_new().is_empty());
        file.write_all(b"one\ntw").unwrap();
        assert_eq!(log.read_new(), vec!["one"]);
        file.write_all(b"o\nthree\n").unwrap();
        assert_eq!(log.read_new(), vec!["two", "three"]);
        assert!(log.read_new().is_empty());
        // Truncated behind our back: read from the start again.
        file.set_len(0).unwrap();
        file.write_all(b"four\n").unwrap();
        assert_eq!(log.read_new(), vec!["four"]);
    }

    #[test]
    fn recent_errors_are_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("error.log");
        std::fs::write(&path, "a\nb\n\nc\nd\n").unwrap();
        assert_eq!(recent_errors(&path, 3), "b | c | d");
        assert_eq!(recent_errors(&dir.path().join("missing"), 3), "");
    }
}
