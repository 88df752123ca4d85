//! The nfqws/winws stand-ins behave like zapret at the command line.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use veil_e2e::standin::{DUMP_ENV, STANDIN_VERSION, WINDIVERT_ERROR_ENV};

const NFQWS: &str = env!("CARGO_BIN_EXE_nfqws-standin");
const WINWS: &str = env!("CARGO_BIN_EXE_winws-standin");

fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove(DUMP_ENV)
        .env_remove(WINDIVERT_ERROR_ENV);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn hostlist(dir: &std::path::Path, content: &str) -> String {
    let path = dir.join(format!("list-{}.txt", content.len()));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(content.as_bytes())
        .unwrap();
    path.display().to_string()
}

#[test]
fn version_prints_a_zapret_like_line_and_exits_zero() {
    let out = run(NFQWS, &["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let first = stdout.lines().next().unwrap_or_default();
    assert_eq!(first, format!("github version {STANDIN_VERSION} (standin)"));
}

#[test]
fn dry_run_verifies_and_summarises_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let list = hostlist(dir.path(), "blocked.test\n");
    let hl = format!("--hostlist={list}");
    let out = run(
        NFQWS,
        &[
            "--qnum=200",
            "--dpi-desync-fwmark=0x40000000",
            "--uid=1000:1000",
            "--dry-run",
            "--filter-tcp=443",
            &hl,
            "--dpi-desync=fake,multisplit",
            "--dpi-desync-split-pos=1,midsld",
            "--dpi-desync-fooling=md5sig",
            "--new",
            "--filter-udp=443",
            "--dpi-desync=fake",
            "--dpi-desync-repeats=6",
        ],
        &[],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("2 profile(s) verified"), "{stdout}");
    assert!(
        stdout.contains("nfqws only: --dpi-desync-fooling=md5sig"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("command line parameters verified\n"),
        "{stdout}"
    );
}

#[test]
fn bad_command_lines_exit_1_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let empty = hostlist(dir.path(), "");
    let empty_arg = format!("--hostlist={empty}");
    let cases: &[(&[&str], &str)] = &[
        (
            &["--qnum=200", "--filter-tcp=443", "--dpi-desync=bogus"],
            "`--dpi-desync`",
        ),
        (
            &["--qnum=200", "--filter-tcp=443", "--dpi-desync-tll=3"],
            "unrecognized option '--dpi-desync-tll=3'",
        ),
        (
            &["--qnum=200", "--wf-tcp=443", "--filter-tcp=443"],
            "unrecognized option '--wf-tcp=443'",
        ),
        (
            &["--filter-tcp=443", "--dpi-desync=fake"],
            "Need queue number (--qnum)",
        ),
        (
            &["--qnum=200", "--new", "--filter-tcp=443"],
            "profile 1 is empty",
        ),
        (
            &[
                "--qnum=200",
                "--filter-tcp=443",
                "--hostlist=/nonexistent/list.txt",
            ],
            "`--hostlist`",
        ),
        (&["--qnum=200", "--filter-tcp=443", &empty_arg], "is empty"),
        (
            &[
                "--qnum=200",
                "--filter-tcp=443",
                "--dpi-desync-fake-tls=@/nonexistent.bin",
            ],
            "`--dpi-desync-fake-tls`",
        ),
        (&["@/etc/nfqws.conf"], "config files are not allowed"),
    ];
    for (args, needle) in cases {
        let out = run(NFQWS, args, &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// Polls `f` every 20 ms for at most `limit`.
fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_started_engine_dumps_its_profiles_binds_its_queue_and_runs_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let list = hostlist(dir.path(), "blocked.test\n");
    let dump = dir.path().join("dump.json");
    let mut child = KillOnDrop(
        Command::new(NFQWS)
            .args([
                "--qnum=4201",
                "--filter-tcp=80,443",
                &format!("--hostlist={list}"),
                "--hostlist-domains=guard.veil.invalid",
                "--dpi-desync=split2",
                "--dpi-desync-split-pos=host+1",
                "--new",
                "--filter-udp=443",
                "--dpi-desync=fake",
            ])
            .env(DUMP_ENV, &dump)
            .env_remove(WINDIVERT_ERROR_ENV)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let json: serde_json::Value = wait_for(Duration::from_secs(10), || {
        serde_json::from_slice(&std::fs::read(&dump).ok()?).ok()
    })
    .expect("dump written");
    assert_eq!(json["pid"], child.0.id());
    assert_eq!(json["globals"]["qnum"], 4201);
    // Like nfqws, it binds its queue (first field of each line: the queue number).
    let bound = wait_for(Duration::from_secs(10), || {
        let table = std::fs::read_to_string("/proc/net/netfilter/nfnetlink_queue").ok()?;
        table
            .lines()
            .any(|line| line.split_whitespace().next() == Some("4201"))
            .then_some(())
    });
    assert!(bound.is_some(), "queue 4201 is bound");
    assert_eq!(json["profiles"][0]["tcp"], "80,443");
    assert_eq!(json["profiles"][0]["hostlists"][0], list);
    assert_eq!(json["profiles"][0]["desync"]["split"], "multisplit");
    assert_eq!(json["profiles"][0]["desync"]["splitPos"][0], "host+1");
    assert_eq!(json["profiles"][1]["udp"], "443");
    assert_eq!(json["builtinCompatible"], true);

    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "still running like a daemon"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_for(Duration::from_secs(10), || child.0.try_wait().unwrap())
        .expect("exits on SIGTERM");
    assert_eq!(status.signal(), Some(15));
}

#[test]
fn winws_needs_a_capture_filter_and_reports_windivert_errors() {
    let out = run(WINWS, &["--filter-tcp=443", "--dpi-desync=fake"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("must specify port"),
        "{}",
        text(&out.stderr)
    );

    let out = run(
        WINWS,
        &["--qnum=200", "--wf-tcp=443", "--filter-tcp=443"],
        &[],
    );
    assert!(
        text(&out.stderr).contains("unrecognized option '--qnum=200'"),
        "{}",
        text(&out.stderr)
    );

    let args = [
        "--wf-tcp=80,443",
        "--wf-udp=443",
        "--filter-tcp=443",
        "--dpi-desync=fake",
    ];
    let out = run(WINWS, &args, &[(WINDIVERT_ERROR_ENV, "1275")]);
    let stderr = text(&out.stderr);
    assert!(
        stderr
            .contains("windivert: error opening filter: This driver has been blocked from loading"),
        "{stderr}"
    );
    assert!(stderr.contains("win32 error 1275"), "{stderr}");
    // Linux keeps the low 8 bits of the Win32 code.
    assert_eq!(out.status.code(), Some(1275 & 0xff));

    let out = run(WINWS, &[&args[..], &["--dry-run"]].concat(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// A child process killed (by its PID) and reaped when the test ends, also
/// when an assertion fails first.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
