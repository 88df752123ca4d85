//! Host name lists and address lists (`--hostlist*`, `--ipset*`): loading
//! the files, matching, and picking up edits without a restart.
//!
//! - [`HostMatcher`]: a set of domain names with nfqws's subdomain rule
//!   (`example.com` also matches `a.example.com`; `^example.com` only itself).
//! - [`IpMatcher`]: a set of IPv4/IPv6 prefixes.
//! - [`ProfileLists`]: every list of one [`crate::spec::Profile`], answering
//!   include/exclude for a host or an address, reloading a file when its
//!   modification time, size or inode changes (checked at most once a second).
//!
//! List files are plain text, one entry per line; lines starting with `#`,
//! `;` or `/` are comments, blank lines are skipped (as in nfqws). Gzip
//! lists, which nfqws also reads, are refused by name.

mod hostlist;
mod ipset;
mod profile;

use std::path::PathBuf;

pub use hostlist::HostMatcher;
pub use ipset::IpMatcher;
pub use profile::{ProfileLists, RELOAD_INTERVAL};

/// Why a list file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("cannot read list {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("list {} is gzip-compressed; write it as plain text (one entry per line)", path.display())]
    Gzip { path: PathBuf },
    #[error("list {}:{line}: `{text}` is not {expected}", path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        text: String,
        expected: &'static str,
    },
}

/// The gzip magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads a list file as text, refusing gzip.
fn read_list(path: &std::path::Path) -> Result<String, ListError> {
    let bytes = std::fs::read(path).map_err(|source| ListError::Io {
        path: path.to_owned(),
        source,
    })?;
    if bytes.starts_with(&GZIP_MAGIC) {
        return Err(ListError::Gzip {
            path: path.to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The entries of a list text: trimmed lines that are not comments or
/// blank, with their 1-based line numbers.
fn entries(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with(['#', ';', '/']))
}
