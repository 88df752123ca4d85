//! Reading one manifest file: bounded in size, hashed, decoded as UTF-8.
//!
//! This module owns the file-size limit and the content hash that keys the
//! parse cache. It must never parse documents or keep state between calls.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

/// SHA-256 of a file's bytes: the parse cache key (with the path).
pub type ContentHash = [u8; 32];

/// Why a file's content could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file vanished between listing and reading (deleted or renamed away).
    #[error("file disappeared while reading")]
    Gone,
    /// Any other I/O failure.
    #[error("cannot be read ({0})")]
    Io(#[source] io::Error),
    /// Over the size limit.
    #[error(
        "file is larger than {limit} bytes (limit max_file_bytes): split it into several files \
         or raise the limit"
    )]
    TooLarge { limit: u64 },
    /// Not UTF-8 text.
    #[error("file is not UTF-8 text (invalid byte at line {line}, column {column})")]
    NotUtf8 { line: usize, column: usize },
}

/// One file's content.
pub struct Content {
    pub hash: ContentHash,
    /// The text, without a leading byte-order mark.
    pub text: String,
}

/// Reads `path` whole, refusing more than `max_bytes` without reading them
/// (memory stays bounded even if the file grows while it is read).
pub fn read(path: &Path, max_bytes: u64) -> Result<Content, ReadError> {
    let file = File::open(path).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => ReadError::Gone,
        _ => ReadError::Io(error),
    })?;
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ReadError::TooLarge { limit: max_bytes });
    }
    let hash: ContentHash = Sha256::digest(&bytes).into();
    let text = String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        ReadError::NotUtf8 { line, column }
    })?;
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    };
    Ok(Content { hash, text })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn oversized_file_is_refused_naming_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        std::fs::write(&path, vec![b'#'; 11]).unwrap();
        let error = read(&path, 10).err().unwrap();
        assert!(matches!(error, ReadError::TooLarge { limit: 10 }));
        assert!(error.to_string().contains("10 bytes"));
        assert!(read(&path, 11).is_ok());
    }

    #[test]
    fn invalid_utf8_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, b"a: 1\nb\xc3\xa9: \xff\n").unwrap();
        match read(&path, 100).err().unwrap() {
            ReadError::NotUtf8 { line, column } => assert_eq!((line, column), (2, 5)),
            other => panic!("unexpected {other:?}"),
        }
    }
}
