//! Where the store lives: parsing `--database-url` / the data dir into a
//! [`StoreTarget`], and rendering it without its password.

use std::fmt;
use std::path::{Path, PathBuf};

use super::StoreError;

/// File name of the SQLite database inside the data dir.
const SQLITE_FILE_NAME: &str = "veil.db";

/// Shown instead of a password.
const MASK: &str = "***";

/// The database a [`Store`](super::Store) opens.
///
/// `Display` and `Debug` mask the password of a PostgreSQL URL, both in its
/// user-info part (`postgres://user:secret@host`) and in a `password=` query
/// parameter.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreTarget {
    /// A SQLite file; its parent directory is created on open.
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
}

/// The kind of database behind a store (for `/readyz` and logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StoreTarget {
    /// Whether several operator processes can share this store (a database
    /// server), as opposed to a file of one process.
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreTarget::Postgres(_))
    }

    /// Chooses the database from `--database-url` and the data dir.
    ///
    /// - `None` (or an empty string): SQLite at `data_dir/veil.db`;
    /// - `postgres://…` or `postgresql://…`: PostgreSQL;
    /// - `sqlite://PATH` or `sqlite:PATH`: SQLite at `PATH`;
    /// - anything without a scheme: SQLite at that path.
    ///
    /// # Errors
    /// [`StoreError::UnsupportedUrl`] for any other scheme (`mysql://…`).
    pub fn parse(database_url: Option<&str>, data_dir: &Path) -> Result<StoreTarget, StoreError> {
        let Some(url) = database_url.map(str::trim).filter(|url| !url.is_empty()) else {
            return Ok(StoreTarget::Sqlite(data_dir.join(SQLITE_FILE_NAME)));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreTarget::Postgres(url.to_owned()));
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            return Ok(StoreTarget::Sqlite(PathBuf::from(path)));
        }
        if url.contains("://") {
            return Err(StoreError::UnsupportedUrl {
                url: mask_password(url),
            });
        }
        Ok(StoreTarget::Sqlite(PathBuf::from(url)))
    }

    /// The backend this target selects.
    pub fn backend(&self) -> Backend {
        match self {
            StoreTarget::Sqlite(_) => Backend::Sqlite,
            StoreTarget::Postgres(_) => Backend::Postgres,
        }
    }
}

impl fmt::Display for StoreTarget {
    /// The SQLite path, or the PostgreSQL URL with its password masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreTarget::Sqlite(path) => write!(f, "{}", path.display()),
            StoreTarget::Postgres(url) => f.write_str(&mask_password(url)),
        }
    }
}

impl fmt::Debug for StoreTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreTarget::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            StoreTarget::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&mask_password(url))
                .finish(),
        }
    }
}

/// Replaces the password of a URL, in the user-info part and in a
/// `password=` query parameter, with [`MASK`]. Works on malformed URLs too:
/// it only looks for the delimiters, so nothing it cannot parse leaks.
fn mask_password(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);

    let mut masked = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        masked.push_str(scheme);
        masked.push_str("://");
    }
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            match user_info.split_once(':') {
                Some((user, _password)) => {
                    masked.push_str(user);
                    masked.push(':');
                    masked.push_str(MASK);
                }
                None => masked.push_str(user_info),
            }
            masked.push('@');
            masked.push_str(host);
        }
        None => masked.push_str(authority),
    }
    masked.push_str(&mask_password_parameter(tail));
    masked
}

/// Masks the value of every `password=` parameter in the path/query tail of a URL.
fn mask_password_parameter(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (query, None),
    };
    let query = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _value)) if key.eq_ignore_ascii_case("password") => format!("{key}={MASK}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    match fragment {
        Some(fragment) => format!("{path}?{query}#{fragment}"),
        None => format!("{path}?{query}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: Option<&str>) -> StoreTarget {
        StoreTarget::parse(url, Path::new("/data")).expect("valid target")
    }

    #[test]
    fn no_url_means_sqlite_in_the_data_dir() {
        assert_eq!(parse(None), StoreTarget::Sqlite("/data/veil.db".into()));
        assert_eq!(
            parse(Some("  ")),
            StoreTarget::Sqlite("/data/veil.db".into())
        );
    }

    #[test]
    fn postgres_urls_select_postgres() {
        for url in ["postgres://u@h/db", "postgresql://u@h/db"] {
            assert_eq!(parse(Some(url)), StoreTarget::Postgres(url.into()));
        }
    }

    #[test]
    fn sqlite_urls_and_plain_paths_select_sqlite() {
        let cases = [
            ("sqlite:///var/veil.db", "/var/veil.db"),
            ("sqlite:state/veil.db", "state/veil.db"),
            ("/var/veil.db", "/var/veil.db"),
        ];
        for (url, path) in cases {
            assert_eq!(parse(Some(url)), StoreTarget::Sqlite(path.into()), "{url}");
        }
    }

    #[test]
    fn unknown_scheme_is_rejected_without_leaking_the_password() {
        let error = StoreTarget::parse(Some("mysql://root:hunter2@db/veil"), Path::new("/data"))
            .expect_err("mysql is not supported");
        let message = error.to_string();
        assert!(message.contains("mysql://root:***@db/veil"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn display_and_debug_mask_the_password() {
        let cases = [
            (
                "postgres://veil:hunter2@db:5432/veil",
                "postgres://veil:***@db:5432/veil",
            ),
            ("postgres://veil@db/veil", "postgres://veil@db/veil"),
            (
                "postgres://db/veil?user=veil&password=hunter2",
                "postgres://db/veil?user=veil&password=***",
            ),
            (
                "postgresql://veil:p%40ss@db?sslmode=require#x",
                "postgresql://veil:***@db?sslmode=require#x",
            ),
            (
                "postgres://veil:pa@ss@db/veil",
                "postgres://veil:***@db/veil",
            ),
        ];
        for (url, expected) in cases {
            let target = StoreTarget::Postgres(url.into());
            assert_eq!(target.to_string(), expected);
            let debug = format!("{target:?}");
            assert!(debug.contains(expected), "{debug}");
            assert!(
                !debug.contains("hunter2") && !debug.contains("p%40ss"),
                "{debug}"
            );
        }
    }
}
