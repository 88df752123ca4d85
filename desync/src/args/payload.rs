//! Fake payload values (`--dpi-desync-fake-tls/-http/...`): `0xHEX`, a path,
//! `@path`, `+OFFSET@path`, and for TLS `!` / `!+OFFSET` (nfqws's built-in
//! ClientHello), and reading them the way nfqws does (non-empty, at most
//! one TCP segment's worth).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::values::{ValueError, parse_hex};

/// The longest TCP fake nfqws keeps (`FAKE_MAX_TCP`); longer files are cut.
pub const FAKE_MAX_TCP: usize = 1460;

/// Where a fake payload comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeSource {
    /// `!` or `!+N`: the engine's built-in default fake.
    Default { offset: usize },
    /// `0xHEX`.
    Hex(Vec<u8>),
    /// `path`, `@path` or `+N@path`.
    File { path: PathBuf, offset: usize },
}

/// Parses a fake payload value. `allow_default`: whether `!` is accepted
/// (nfqws has it for `--dpi-desync-fake-tls` only).
pub fn parse_fake(value: &str, allow_default: bool) -> Result<FakeSource, ValueError> {
    if value.is_empty() {
        return Err(ValueError::Empty);
    }
    if allow_default && let Some(rest) = value.strip_prefix('!') {
        let offset = match rest.strip_prefix('+') {
            None if rest.is_empty() => 0,
            Some(n) => offset(n)?,
            None => return Err(ValueError::Payload),
        };
        return Ok(FakeSource::Default { offset });
    }
    if let Some(hex) = value.strip_prefix("0x") {
        return Ok(FakeSource::Hex(parse_hex(hex, FAKE_MAX_TCP)?));
    }
    let (offset, path) = match value.strip_prefix('+') {
        Some(rest) => {
            let (n, path) = rest.split_once('@').ok_or(ValueError::Payload)?;
            (offset(n)?, path)
        }
        None => (0, value.strip_prefix('@').unwrap_or(value)),
    };
    if path.is_empty() {
        return Err(ValueError::Payload);
    }
    Ok(FakeSource::File {
        path: PathBuf::from(path),
        offset,
    })
}

fn offset(s: &str) -> Result<usize, ValueError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::Payload);
    }
    s.parse().map_err(|_| ValueError::Payload)
}

/// Reads a fake payload file like nfqws: the first [`FAKE_MAX_TCP`] bytes,
/// which must not be empty, then skips `offset` bytes (which must leave some).
/// The error is a sentence for [`super::ArgsError::File`].
pub fn load_fake_file(path: &Path, offset: usize) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut data = Vec::new();
    file.take(FAKE_MAX_TCP as u64)
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if data.is_empty() {
        return Err("the file is empty; a fake payload must have at least one byte".to_owned());
    }
    if offset >= data.len() {
        return Err(format!(
            "offset {offset} is beyond the {} bytes read",
            data.len()
        ));
    }
    data.drain(..offset);
    Ok(data)
}
