//! The admin token that guards the operator's read API (`veil-operator get`).
//!
//! Generated at first start, stored only as a SHA-256 hash, and handed to
//! the person once through a 0600 file in the data dir. Never logged.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

/// File name of the admin token inside the data dir.
pub const TOKEN_FILE: &str = "admin.token";

/// Why the admin token could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Reading or writing the hash failed.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    /// The token file could not be written.
    #[error("cannot write the admin token file {path}: {source}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How the admin token was provisioned at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provisioned {
    /// A new token was written to this file.
    Created(PathBuf),
    /// A token existed already.
    Existing,
}

/// A fresh random token with a recognisable prefix (`veil_admin_…`).
pub fn generate_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// SHA-256 of a token, hex-encoded: the only form tokens are stored in.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// Compares two hashes in constant time.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Makes sure an admin token exists; with `rotate`, replaces it. Returns
/// the hash to check requests against.
pub async fn ensure_admin_token(
    store: &Store,
    data_dir: &Path,
    rotate: bool,
) -> Result<(String, Provisioned), AdminError> {
    if !rotate && let Some(hash) = store.admin_token_hash().await? {
        return Ok((hash, Provisioned::Existing));
    }
    let token = generate_token("veil_admin_");
    let path = data_dir.join(TOKEN_FILE);
    write_secret_file(&path, &token).map_err(|source| AdminError::WriteFile {
        path: path.clone(),
        source,
    })?;
    let hash = hash_token(&token);
    store.set_admin_token_hash(&hash).await?;
    Ok((hash, Provisioned::Created(path)))
}

/// Writes `content` to `path` readable by the owner only (0600), atomically:
/// through a new temporary file with a random name in the same directory
/// (created exclusively, so no file or symlink planted under a fixed name
/// is ever followed), then renamed over `path`. A missing directory is
/// created 0700.
pub fn write_secret_file(path: &Path, content: &str) -> std::io::Result<()> {
    let dir = match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        Some(dir) => dir,
        None => Path::new("."),
    };
    crate::private_fs::create_private_dir(dir)?;
    // tempfile creates 0600 with O_EXCL.
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(content.as_bytes())?;
    file.write_all(b"\n")?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_surrounding_whitespace_from_token_files() {
        assert_eq!(hash_token("abc\n"), hash_token("abc"));
        assert_ne!(hash_token("abc"), hash_token("abd"));
    }

    #[test]
    fn generated_tokens_are_distinct_and_prefixed() {
        let a = generate_token("veil_admin_");
        let b = generate_token("veil_admin_");
        assert!(a.starts_with("veil_admin_"));
        assert_eq!(a.len(), "veil_admin_".len() + 64);
        assert_ne!(a, b);
    }

    #[test]
    fn hashes_equal_is_exact() {
        assert!(hashes_equal("abc", "abc"));
        assert!(!hashes_equal("abc", "abd"));
        assert!(!hashes_equal("abc", "ab"));
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        write_secret_file(&path, "x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
