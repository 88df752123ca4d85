//! Watching a real `veil-agent`'s zapret driver from outside, for the
//! Strategy end-to-end tests: Strategy files written into an operator's
//! `dir:` source, node statuses read back, the engine processes the agent
//! runs (from `/proc`), and Veil's capture chain in a namespace.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::netns::Namespace;
use crate::process::Operator;

/// Longest wait for one Strategy status or process change.
pub const WAIT: Duration = Duration::from_secs(15);

/// Replaces `path` with `text` atomically (temp file, then rename), so the
/// operator's directory watcher never reads half a file.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Waits (at most [`WAIT`]) until Strategy `name` has a status entry for
/// `node` that `check` accepts; returns the Strategy's whole status and
/// that entry (`check` gets them in the same order).
pub async fn wait_node_status(
    op: &Operator,
    name: &str,
    node: &str,
    what: &str,
    check: impl Fn(&Value, &Value) -> bool,
) -> (Value, Value) {
    op.eventually(&format!("Strategy {name}: {what}"), WAIT, || async {
        let object = op.object("strategies", name).await?;
        let status = &object["status"];
        let entry = status["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["node"] == node)?
            .clone();
        check(status, &entry).then(|| (status.clone(), entry))
    })
    .await
}

/// Strategy `name`'s status entry for `node`, if it has one.
pub async fn node_entry(op: &Operator, name: &str, node: &str) -> Option<Value> {
    let object = op.object("strategies", name).await?;
    object["status"]["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node"] == node)
        .cloned()
}

/// Like [`wait_node_status`] on the node's entry alone, for at most
/// `wait`; a timeout names the last entry seen.
pub async fn wait_entry(
    op: &Operator,
    name: &str,
    node: &str,
    what: &str,
    wait: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + wait;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(entry) = node_entry(op, name, node).await {
            if check(&entry) {
                return entry;
            }
            last = Some(entry);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "timed out after {wait:?} waiting for Strategy {name} on {node}: {what}; last entry: {last:?}"
    );
}

/// Waits until two probe rounds in a row of Strategy `name` on `node`
/// (and of `active`, the group's active member) passed every target: with
/// `passes: 2` or fewer, the node's baseline is then "everything works".
pub async fn wait_two_passing_rounds(op: &Operator, name: &str, node: &str, active: &str) {
    let passing =
        |e: &Value| e["activeStrategy"] == active && e["successRate"].as_f64() == Some(1.0);
    let first = wait_entry(op, name, node, "a passing round", WAIT * 4, passing).await;
    wait_entry(op, name, node, "a second passing round", WAIT * 4, |e| {
        passing(e) && e["lastProbe"] != first["lastProbe"]
    })
    .await;
}

/// When each line of a JSON log (`--log-format json`) with message
/// `message` was written, in order.
pub fn logged_at(log: &str, message: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"]["message"] == message)
        .filter_map(|line| {
            let time = line["timestamp"].as_str()?;
            chrono::DateTime::parse_from_rfc3339(time).ok()
        })
        .map(|t| t.with_timezone(&chrono::Utc))
        .collect()
}

/// A fake by low TTL: fools the simulator at level 2, not at level 3.
pub const FAKE_TTL: &[&str] = &["--dpi-desync=fake", "--dpi-desync-ttl=1"];
/// A fake with a bad checksum: fools the simulator at levels 2 and 3.
pub const FAKE_BADSUM: &[&str] = &["--dpi-desync=fake", "--dpi-desync-fooling=badsum"];

/// The built-in engine's Strategy `name` for `blocked.test` on port 443
/// with `desync` arguments, on nodes labelled `role=edge`.
pub fn blocked_test_strategy(name: &str, desync: &[&str]) -> String {
    let mut args = vec!["--filter-tcp=443", "--hostlist={hostlist:sites}"];
    args.extend_from_slice(desync);
    let lists = "    hostlists:\n      - name: sites\n        domains: [blocked.test]\n";
    zapret_strategy(name, "builtin", &args, lists)
}

/// A page and a 64 KiB download of `blocked.test`: the probe targets of
/// the failover tests (`minBytes` catches level 3's 16–20 KB freeze).
pub const PAGE_AND_DOWNLOAD: &[(&str, Option<u32>)] = &[
    ("https://blocked.test/", None),
    ("https://blocked.test/bytes/65536", Some(65536)),
];

/// Probe and failover settings of a test Strategy.
pub struct Failover<'a> {
    pub interval: &'a str,
    pub timeout: &'a str,
    pub passes: u32,
    /// URLs, each with its `minBytes`.
    pub targets: &'a [(&'a str, Option<u32>)],
    pub backups: &'a [&'a str],
    pub failure_threshold: u32,
    pub min_switch_interval: &'a str,
}

/// `strategy` (YAML of one Strategy) with `probes` and `failover` added.
pub fn with_failover(strategy: &str, f: &Failover<'_>) -> String {
    let mut yaml = format!(
        "{strategy}  probes:\n    interval: {}\n    timeout: {}\n    passes: {}\n    targets:\n",
        f.interval, f.timeout, f.passes
    );
    for (url, min_bytes) in f.targets {
        yaml.push_str(&format!("      - url: {url}\n"));
        if let Some(min) = min_bytes {
            yaml.push_str(&format!("        minBytes: {min}\n"));
        }
    }
    yaml.push_str(&format!(
        "  failover:\n    backups: [{}]\n    failureThreshold: {}\n    minSwitchInterval: {}\n",
        f.backups.join(", "),
        f.failure_threshold,
        f.min_switch_interval
    ));
    yaml
}

/// Waits until the Strategy is Ready with `node` Running; returns the
/// node's status entry.
pub async fn wait_ready(op: &Operator, name: &str, node: &str) -> Value {
    wait_node_status(op, name, node, "Ready and Running", |status, entry| {
        let ready = status["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        ready && entry["phase"] == "Running"
    })
    .await
    .1
}

/// The condition of `kind` (`Ready`, `Stalled`, …) in a status.
pub fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// `(pid, argv)` of every process whose parent is `parent`.
pub fn children(parent: u32) -> Vec<(u32, Vec<String>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: comm may hold spaces, so split after `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        if let Some(argv) = cmdline(pid) {
            found.push((pid, argv));
        }
    }
    found
}

/// The argv of process `pid` (`/proc/PID/cmdline`), if it still exists.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Polls (every 50 ms, at most [`WAIT`]) until `check` holds; panics naming
/// `what` followed by `context()`.
pub fn eventually<T>(what: &str, context: impl Fn() -> String, check: impl Fn() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether Veil's capture chain is in `ns`'s mangle table; `save` is
/// `iptables-save` (IPv4) or `ip6tables-save` (IPv6).
pub fn capture_chain(ns: &Namespace, save: &str) -> bool {
    let output = ns.exec(save, &["-t", "mangle"]);
    String::from_utf8_lossy(&output.stdout).contains("VEIL")
}

/// A zapret Strategy for nodes labelled `role=edge`, run by `implementation`
/// (`builtin`, `external`, `auto`) with `args` and the YAML of its
/// `hostlists`/`files` (`lists`, indented under `zapret:`).
pub fn zapret_strategy(name: &str, implementation: &str, args: &[&str], lists: &str) -> String {
    let args: String = args.iter().map(|a| format!("      - {a}\n")).collect();
    format!(
        "apiVersion: veil.dev/v1alpha1
kind: Strategy
metadata:
  name: {name}
spec:
  nodeSelector:
    matchLabels:
      role: edge
  engine: zapret
  zapret:
    implementation: {implementation}
    args:
{args}{lists}"
    )
}
