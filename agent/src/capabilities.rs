//! What this node can do: the tools Veil drives, found on `PATH`, with their
//! absolute paths and versions.
//!
//! The agent sends the result with its registration, and the task driver
//! checks a task's tool against it before spawning anything. Detection only
//! looks: every `TOOL --version` runs through the supervisor with a short
//! timeout, concurrently, so a tool that hangs costs at most
//! [`VERSION_TIMEOUT`] and still counts (with no version). This module never
//! fails: a tool that cannot be found is simply absent.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use veil_crds::wire::Capability;

use crate::supervisor::{Exit, OutputLimits, ProcessSpec, Stream, run_once};

/// Each tool Veil knows, with the arguments that make it print its version.
///
/// `sh` has no portable version flag (dash rejects `--version`); it is
/// reported with the version of whatever answers, often none.
pub const TOOLS: &[(&str, &[&str])] = &[
    ("xray", &["version"]),
    ("sing-box", &["version"]),
    ("nfqws", &["--version"]),
    ("winws", &["--version"]),
    ("ansible-playbook", &["--version"]),
    ("terraform", &["version"]),
    ("tofu", &["version"]),
    ("git", &["--version"]),
    ("sh", &["--version"]),
];

/// Longest wait for one tool's version. `ansible-playbook --version` starts a
/// Python interpreter and takes about a second on a busy two-core machine;
/// five leaves room without holding up registration noticeably.
pub const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// SIGTERM→SIGKILL grace for a version probe that hangs: it has nothing to save.
const PROBE_KILL_GRACE: Duration = Duration::from_millis(200);

/// Finds every tool of [`TOOLS`] on the agent's `PATH`, blocking the calling
/// thread for at most about [`VERSION_TIMEOUT`].
///
/// Usable from synchronous code and from inside a Tokio runtime alike (the
/// probes run on a private runtime on their own thread); async callers should
/// prefer [`detect_async`].
pub fn detect() -> Vec<Capability> {
    let search = std::env::var_os("PATH").unwrap_or_default();
    let probe = std::thread::spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(detect_in(&search)),
            Err(error) => {
                tracing::warn!(%error, "cannot start a runtime for capability detection");
                Vec::new()
            }
        }
    });
    probe.join().unwrap_or_default()
}

/// Like [`detect`], without blocking: finds the tools on the agent's `PATH`.
pub async fn detect_async() -> Vec<Capability> {
    detect_in(&std::env::var_os("PATH").unwrap_or_default()).await
}

/// Finds every tool of [`TOOLS`] on `search_path` (a `PATH`-style list) and
/// reads its version. Returns them in [`TOOLS`] order; a tool found but whose
/// version probe failed, printed nothing or hung has `version: None`.
/// Completes within about [`VERSION_TIMEOUT`] plus a short kill grace.
pub async fn detect_in(search_path: &OsStr) -> Vec<Capability> {
    let mut probes = JoinSet::new();
    for (index, &(name, version_args)) in TOOLS.iter().enumerate() {
        let Some(path) = find_on_path(name, search_path) else {
            continue;
        };
        let search = search_path.to_owned();
        probes.spawn(async move {
            let version = read_version(&path, version_args, search).await;
            let capability = Capability {
                name: name.to_owned(),
                version,
                path: path.to_string_lossy().into_owned(),
            };
            (index, capability)
        });
    }
    let mut found = Vec::with_capacity(probes.len());
    while let Some(joined) = probes.join_next().await {
        match joined {
            Ok(entry) => found.push(entry),
            Err(error) => tracing::warn!(%error, "a version probe task failed"),
        }
    }
    found.sort_by_key(|(index, _)| *index);
    found
        .into_iter()
        .map(|(_, capability)| capability)
        .collect()
}

/// The absolute path of the first executable regular file called `name`
/// (plus the platform's executable suffix) in the directories of
/// `search_path`, like a shell's lookup.
pub(crate) fn find_on_path(name: &str, search_path: &OsStr) -> Option<PathBuf> {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    std::env::split_paths(search_path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(&file))
        .find(|candidate| is_executable_file(candidate))
        .and_then(|candidate| std::path::absolute(candidate).ok())
}

/// Whether `path` is a regular file (after symlinks) the agent may execute.
pub(crate) fn is_executable_file(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

/// First non-empty line of the tool's stdout (else stderr) when it exits 0.
async fn read_version(path: &Path, args: &[&str], search_path: OsString) -> Option<String> {
    let spec = ProcessSpec::new(path)
        .args(args)
        .env("PATH", search_path)
        .pass_env("HOME")
        .pass_env("LANG")
        .timeout(VERSION_TIMEOUT)
        .kill_grace(PROBE_KILL_GRACE)
        .output_limits(OutputLimits {
            max_lines: 50,
            max_bytes: 16 * 1024,
            max_line_bytes: 1024,
        });
    let completion = match run_once(spec, CancellationToken::new()).await {
        Ok(completion) => completion,
        Err(error) => {
            tracing::debug!(tool = %path.display(), %error, "version probe did not start");
            return None;
        }
    };
    if completion.exit != Exit::Code(0) {
        tracing::debug!(tool = %path.display(), exit = ?completion.exit, "version probe failed");
        return None;
    }
    let first = |stream: Stream| {
        completion
            .recent_lines
            .iter()
            .filter(|line| line.stream == stream)
            .map(|line| line.text.trim())
            .find(|text| !text.is_empty())
            .map(str::to_owned)
    };
    first(Stream::Stdout).or_else(|| first(Stream::Stderr))
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn fake_tool(dir: &Path, name: &str, script: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn find<'a>(found: &'a [Capability], name: &str) -> Option<&'a Capability> {
        found.iter().find(|c| c.name == name)
    }

    #[tokio::test]
    async fn tools_on_path_are_found_with_absolute_path_and_first_version_line() {
        let dir = tempfile::tempdir().unwrap();
        let git = fake_tool(
            dir.path(),
            "git",
            "echo '  git version 2.99.1  '; echo second",
        );
        fake_tool(dir.path(), "tofu", "echo 'OpenTofu v1.10.10' >&2");
        let found = detect_in(dir.path().as_os_str()).await;
        let names: Vec<&str> = found.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["tofu", "git"], "in TOOLS order, nothing else");
        let git_cap = find(&found, "git").unwrap();
        assert_eq!(git_cap.version.as_deref(), Some("git version 2.99.1"));
        assert_eq!(Path::new(&git_cap.path), git.as_path());
        assert!(Path::new(&git_cap.path).is_absolute());
        let tofu = find(&found, "tofu").unwrap();
        assert_eq!(tofu.version.as_deref(), Some("OpenTofu v1.10.10"));
    }

    #[tokio::test]
    async fn failing_or_hanging_tool_counts_without_version_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        fake_tool(dir.path(), "xray", "echo 'Xray 1.8'; exit 3");
        fake_tool(dir.path(), "nfqws", "sleep 300");
        let started = std::time::Instant::now();
        let found = detect_in(dir.path().as_os_str()).await;
        assert!(started.elapsed() < VERSION_TIMEOUT + Duration::from_secs(3));
        assert_eq!(find(&found, "xray").unwrap().version, None);
        assert_eq!(find(&found, "nfqws").unwrap().version, None);
    }

    #[tokio::test]
    async fn non_executable_file_and_directory_are_not_tools() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("xray"), "not a program").unwrap();
        std::fs::create_dir(dir.path().join("git")).unwrap();
        assert!(detect_in(dir.path().as_os_str()).await.is_empty());
    }

    #[tokio::test]
    async fn first_directory_on_path_wins() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let winner = fake_tool(first.path(), "sing-box", "echo one");
        fake_tool(second.path(), "sing-box", "echo two");
        let search = std::env::join_paths([first.path(), second.path()]).unwrap();
        let found = detect_in(&search).await;
        let sing_box = find(&found, "sing-box").unwrap();
        assert_eq!(Path::new(&sing_box.path), winner.as_path());
        assert_eq!(sing_box.version.as_deref(), Some("one"));
    }

    #[test]
    fn blocking_detect_works_inside_a_runtime() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        // Must not panic with "cannot start a runtime from within a runtime".
        let found = runtime.block_on(async { detect() });
        assert!(found.iter().all(|c| Path::new(&c.path).is_absolute()));
    }
}
