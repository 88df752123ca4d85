//! Veil's built-in desync engine (`veil-agent desync`) running inside a test
//! namespace, with the capture rule the zapret driver installs, for the
//! end-to-end tests against the DPI simulator.
//!
//! [`DesyncEngine::start`] installs the capture rule (IPv4 and IPv6) in the
//! namespace, starts the engine there and returns once its queue is bound.
//! On drop the engine gets SIGTERM (SIGKILL after a grace period) and the
//! rules are removed, so nothing is left behind even when a test fails.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::netns::Namespace;
use crate::process::{binary, terminate};

/// The queue the capture rule feeds and the engine binds.
pub const QNUM: u16 = 200;

/// The mark the engine puts on the packets it injects (`--dpi-desync-fwmark`);
/// the capture rule skips packets carrying it.
pub const FWMARK: &str = "0x40000000";

/// The destination port captured.
pub const PORT: u16 = 443;

/// `veil-agent desync` in a namespace, plus its capture rules.
#[derive(Debug)]
pub struct DesyncEngine<'ns> {
    ns: &'ns Namespace,
    child: Option<Child>,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl<'ns> DesyncEngine<'ns> {
    /// Installs the capture rule in `ns` and starts
    /// `veil-agent desync --qnum=200 --dpi-desync-fwmark=0x40000000 <argv>`
    /// there with the engine's debug log on; returns once queue 200 is bound
    /// (panics with the engine's stderr if it exits or does not bind in 10 s).
    pub fn start(ns: &'ns Namespace, argv: &[&str]) -> DesyncEngine<'ns> {
        for iptables in ["iptables", "ip6tables"] {
            let mut args = vec!["-w", "-t", "mangle", "-A"];
            let rule = capture_rule();
            args.extend(rule.iter().map(String::as_str));
            ns.exec(iptables, &args);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr = dir.path().join("engine.log");
        let child = ns
            .command(binary("veil-agent"))
            .arg("desync")
            .arg(format!("--qnum={QNUM}"))
            .arg(format!("--dpi-desync-fwmark={FWMARK}"))
            .args(argv)
            .env("RUST_LOG", "info,veil_desync=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("engine log file"))
            .spawn()
            .expect("start veil-agent desync");
        let mut engine = DesyncEngine {
            ns,
            child: Some(child),
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !engine.queue_bound() {
            if let Some(child) = engine.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("veil-agent desync exited ({status}): {}", engine.log());
            }
            assert!(
                Instant::now() < deadline,
                "veil-agent desync did not bind queue {QNUM} within 10 s: {}",
                engine.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        engine
    }

    /// The engine's PID (`ip netns exec` execs it, so this is the engine itself).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether something is bound to queue 200 in the namespace.
    pub fn queue_bound(&self) -> bool {
        queue_bound(self.ns, QNUM)
    }

    /// Whether the capture rule is installed (IPv4 table).
    pub fn rule_present(&self) -> bool {
        self.ns
            .command("iptables")
            .args(["-w", "-t", "mangle", "-C"])
            .args(capture_rule())
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// SIGKILL, by PID; the capture rule stays (the queue bypass is what
    /// keeps traffic flowing then).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (5 s) for the engine to exit; panics unless it
    /// exits 0 in time.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(status.success(), "engine exited with {status}");
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("engine did not stop within 5 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the engine wrote to stderr (its tracing log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The engine's `desynced request` debug lines, one per request it
    /// changed.
    pub fn desynced_requests(&self) -> Vec<DesyncedRequest> {
        self.log()
            .lines()
            .filter(|line| line.contains("desynced request"))
            .map(DesyncedRequest::parse)
            .collect()
    }
}

impl Drop for DesyncEngine<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5));
        }
        for iptables in ["iptables", "ip6tables"] {
            let _ = self
                .ns
                .command(iptables)
                .args(["-w", "-t", "mangle", "-D"])
                .args(capture_rule())
                .output();
        }
    }
}

/// One `desynced request` line of the engine's debug log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesyncedRequest {
    /// The request's host name (SNI or Host), empty when it had none.
    pub host: String,
    /// How many queued segments the request arrived in.
    pub segments: usize,
    /// How many packets the engine sent in their place (parts and fakes).
    pub injected: usize,
}

impl DesyncedRequest {
    fn parse(line: &str) -> DesyncedRequest {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or("")
                .trim_matches('"')
                .to_string()
        };
        DesyncedRequest {
            host: field("host"),
            segments: field("segments").parse().unwrap_or(0),
            injected: field("injected").parse().unwrap_or(0),
        }
    }
}

/// Whether `qnum` appears in `ns`'s `/proc/net/netfilter/nfnetlink_queue`
/// (one line per bound queue, the number first).
pub fn queue_bound(ns: &Namespace, qnum: u16) -> bool {
    let listing = ns.exec("cat", &["/proc/net/netfilter/nfnetlink_queue"]);
    String::from_utf8_lossy(&listing.stdout)
        .lines()
        .any(|line| line.split_whitespace().next() == Some(&qnum.to_string()))
}

/// The capture match after `-A`/`-C`/`-D`, up to and including `-j`: the
/// first six client packets of every connection to [`PORT`] not injected
/// by the engine (the agent's rules have the same shape).
pub fn capture_match() -> Vec<String> {
    let port = PORT.to_string();
    let mark = format!("{FWMARK}/{FWMARK}");
    [
        "POSTROUTING",
        "-p",
        "tcp",
        "--dport",
        &port,
        "-m",
        "connbytes",
        "--connbytes-dir=original",
        "--connbytes-mode=packets",
        "--connbytes",
        "1:6",
        "-m",
        "mark",
        "!",
        "--mark",
        &mark,
        "-j",
    ]
    .map(String::from)
    .to_vec()
}

/// The capture rule: [`capture_match`] to [`QNUM`], bypassed while nothing
/// is bound.
fn capture_rule() -> Vec<String> {
    let mut rule = capture_match();
    rule.extend(
        [
            "NFQUEUE",
            "--queue-num",
            &QNUM.to_string(),
            "--queue-bypass",
        ]
        .map(String::from),
    );
    rule
}
