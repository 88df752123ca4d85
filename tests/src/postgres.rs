//! A real PostgreSQL server for tests, started once per test process, with
//! a fresh database per test so tests run in parallel without sharing state.
//!
//! With `VEIL_TEST_DATABASE_URL` set, that server is used instead (its
//! `test_*` databases are left behind for its owner to drop). Otherwise the
//! newest `/usr/lib/postgresql/*/bin` is used to create a throwaway cluster
//! in a temp dir, listening on a free loopback port. A watcher process stops
//! the server and deletes the temp dir as soon as the test process exits,
//! however it exits (even `SIGKILL`): it waits for EOF on a pipe that only
//! the test process holds open.
//!
//! Missing binaries make the test fail — never skip — with a message that
//! says how to install them.

use anyhow::{Context, Result, anyhow, bail, ensure};
use sqlx::Connection;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Points the tests at an existing server instead of starting one.
pub const DATABASE_URL_ENV: &str = "VEIL_TEST_DATABASE_URL";

/// Where Debian's `postgresql` package installs each major version.
const DEBIAN_POSTGRES_ROOT: &str = "/usr/lib/postgresql";

/// The OS user PostgreSQL runs as when tests run as root (it refuses root).
const POSTGRES_OS_USER: &str = "postgres";

/// Superuser of the throwaway cluster; `trust` auth, loopback only.
const SUPERUSER: &str = "postgres";

/// Seconds `pg_ctl` waits for the server to accept connections.
const START_TIMEOUT_SECS: &str = "60";

/// Attempts at starting the server: a free port can be taken by someone
/// else between picking it and the server binding it.
const START_ATTEMPTS: usize = 3;

/// The failure message when no server binaries are found.
const NOT_INSTALLED: &str = "PostgreSQL server not installed: run `make env`";

/// A PostgreSQL server the tests may create databases on.
pub struct TestPostgres {
    /// URL of the maintenance database (`postgres`) on the server.
    admin_url: String,
    /// Write end of the watcher's pipe, never written: held open until the
    /// test process exits. `None` for an external server.
    _watcher_pipe: Option<Mutex<ChildStdin>>,
}

impl TestPostgres {
    /// The server of this test process, started on first use.
    ///
    /// # Panics
    /// If no server can be used, with the reason — "PostgreSQL server not
    /// installed: run `make env`" when the binaries are missing.
    pub fn shared() -> &'static TestPostgres {
        static SHARED: OnceLock<Result<TestPostgres, String>> = OnceLock::new();
        let server =
            SHARED.get_or_init(|| TestPostgres::start().map_err(|error| format!("{error:#}")));
        match server {
            Ok(server) => server,
            Err(message) => panic!("{message}"),
        }
    }

    /// Creates an empty database for one test and returns its URL.
    pub async fn fresh_database(&self) -> Result<String> {
        let name = unique_database_name();
        let mut connection = sqlx::PgConnection::connect(&self.admin_url)
            .await
            .with_context(|| format!("connecting to the test server as {SUPERUSER}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut connection)
            .await
            .with_context(|| format!("creating database {name}"))?;
        connection.close().await?;
        with_database(&self.admin_url, &name)
    }

    fn start() -> Result<TestPostgres> {
        if let Ok(url) = std::env::var(DATABASE_URL_ENV) {
            return Ok(TestPostgres {
                admin_url: url,
                _watcher_pipe: None,
            });
        }
        let bin = newest_bin_dir()?;
        let run_as = if is_root()? {
            vec!["runuser", "-u", POSTGRES_OS_USER, "--"]
        } else {
            Vec::new()
        };
        let dir = tempfile::Builder::new()
            .prefix("veil-test-postgres-")
            .tempdir()
            .context("creating the server's temp dir")?
            .keep();
        if !run_as.is_empty() {
            let (uid, gid) = (os_id("-u")?, os_id("-g")?);
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .with_context(|| format!("giving {} to {POSTGRES_OS_USER}", dir.display()))?;
        }
        let data = dir.join("data");
        let pg_ctl = bin.join("pg_ctl");
        // First the watcher, so the dir is cleaned up whatever happens next.
        let watcher_pipe = spawn_watcher(&dir, &run_as, &pg_ctl, &data)?;

        let mut initdb = command(&run_as, &bin.join("initdb"), &dir);
        initdb
            .arg("--pgdata")
            .arg(&data)
            .args(["--username", SUPERUSER, "--auth", "trust"])
            .args(["--encoding", "UTF8", "--locale", "C", "--no-sync"]);
        run(&mut initdb)?;

        let log = dir.join("postgres.log");
        let mut last_error = anyhow!("no attempt made");
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let options = format!(
                "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' \
                 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                dir.display()
            );
            let mut start = command(&run_as, &pg_ctl, &dir);
            start
                .arg("start")
                .arg("--pgdata")
                .arg(&data)
                .arg("--log")
                .arg(&log)
                .args(["--wait", "--timeout", START_TIMEOUT_SECS, "--options"])
                .arg(options);
            match run(&mut start) {
                Ok(()) => {
                    return Ok(TestPostgres {
                        admin_url: format!("postgres://{SUPERUSER}@127.0.0.1:{port}/postgres"),
                        _watcher_pipe: Some(Mutex::new(watcher_pipe)),
                    });
                }
                Err(error) => last_error = error,
            }
        }
        Err(last_error.context(format!("starting PostgreSQL (log: {})", log.display())))
    }
}

/// The `bin` dir of the newest PostgreSQL major version installed.
fn newest_bin_dir() -> Result<PathBuf> {
    let entries = std::fs::read_dir(DEBIAN_POSTGRES_ROOT).context(NOT_INSTALLED)?;
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
        .ok_or_else(|| anyhow!(NOT_INSTALLED))
}

/// Spawns the process that, once the test process has exited, stops the
/// server and removes `dir`. Returns the write end of its stdin pipe.
fn spawn_watcher(dir: &Path, run_as: &[&str], pg_ctl: &Path, data: &Path) -> Result<ChildStdin> {
    // Ignores Ctrl-C and friends so that an interrupted `cargo test` still
    // cleans up; `cat` returns at EOF, when the test process is gone.
    const SCRIPT: &str =
        r#"trap "" HUP INT TERM; cat >/dev/null; "$@" >/dev/null 2>&1; rm -rf -- "$0""#;
    let mut watcher = Command::new("sh");
    watcher
        .args(["-c", SCRIPT])
        .arg(dir)
        .args(run_as)
        .arg(pg_ctl)
        .args(["stop", "--mode", "immediate", "--pgdata"])
        .arg(data)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = watcher.spawn().context("spawning the PostgreSQL watcher")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("the watcher has no stdin pipe"))
}

/// `program`, run as the PostgreSQL OS user when `run_as` says so, from
/// `dir` (the test's working directory may be closed to that user).
fn command(run_as: &[&str], program: &Path, dir: &Path) -> Command {
    let mut command = match run_as.split_first() {
        Some((first, rest)) => {
            let mut command = Command::new(first);
            command.args(rest).arg(program);
            command
        }
        None => Command::new(program),
    };
    command.current_dir(dir);
    command
}

/// Runs `command` to completion; an error carries its output.
fn run(command: &mut Command) -> Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn is_root() -> Result<bool> {
    let output = Command::new("id")
        .arg("-u")
        .output()
        .context("running id -u")?;
    Ok(String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// The uid (`-u`) or gid (`-g`) of the PostgreSQL OS user.
fn os_id(flag: &str) -> Result<u32> {
    let output = Command::new("id")
        .args([flag, POSTGRES_OS_USER])
        .output()
        .context("running id")?;
    if !output.status.success() {
        bail!("no `{POSTGRES_OS_USER}` OS user to run PostgreSQL as: run `make env`");
    }
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .context("parsing the output of id")
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// `test_<pid>_<nanos>_<n>`: unique on this server, across test processes too.
fn unique_database_name() -> String {
    static CREATED: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let n = CREATED.fetch_add(1, Ordering::Relaxed);
    format!("test_{}_{nanos}_{n}", std::process::id())
}

/// `url` with its database (the path) replaced by `database`.
fn with_database(url: &str, database: &str) -> Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| anyhow!("{DATABASE_URL_ENV} is not a URL"))?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |at| &tail[at..]);
    Ok(format!("{scheme}://{authority}/{database}{query}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced_keeping_the_query() {
        let cases = [
            ("postgres://u@h:1/postgres", "postgres://u@h:1/test_x"),
            (
                "postgres://u:p@h/db?sslmode=disable",
                "postgres://u:p@h/test_x?sslmode=disable",
            ),
            ("postgresql://h", "postgresql://h/test_x"),
            ("postgres://h?x=1", "postgres://h/test_x?x=1"),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "test_x").expect("a URL"), expected);
        }
    }
}
