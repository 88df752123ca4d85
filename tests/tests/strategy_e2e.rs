//! Strategies end to end: a real `veil-operator` (dir source) and a real
//! `veil-agent` running inside the client namespace [c] of a DPI topology,
//! the simulator in [d], the test site in [s]. The agent's zapret driver
//! runs the built-in engine (`veil-agent desync`) with its own capture
//! rules; curl in [c] shows what the DPI lets through.
//!
//! The operator runs in [c] too, on [c]'s loopback: the test's async body
//! runs on a thread that joined [c] ([`Namespace::enter`]), so the
//! processes it starts and the sockets it opens live there.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;
use veil_e2e::dpi_sim::{DpiSim, DpiSimOptions};
use veil_e2e::netns::Topology;
use veil_e2e::process::{Agent, Operator};
use veil_e2e::test_site::TestSite;
use veil_e2e::zapret_agent::{self, children, eventually, wait_ready, write_atomically as write};

const PARTIAL: &str = "name not entirely inside this segment";
const NODE: &str = "edge-c";

struct Lab {
    topology: Topology,
    site: TestSite,
    sim: DpiSim,
}

/// What one curl run in [c] gave.
#[derive(Debug)]
struct Fetch {
    exit: i32,
    status: String,
    client: Option<SocketAddr>,
    stderr: String,
}

impl Lab {
    fn new(level: u8) -> Lab {
        let topology = Topology::new();
        let site = TestSite::start(&topology.server, &[]);
        let sim = DpiSim::start(
            &topology,
            DpiSimOptions {
                level,
                ..DpiSimOptions::default()
            },
        );
        Lab {
            topology,
            site,
            sim,
        }
    }

    fn curl(&self, url: &str) -> Fetch {
        let output = self
            .topology
            .client
            .command("curl")
            .args(["-sS", "--max-time", "5", "-o", "/dev/null", "--cacert"])
            .arg(&self.site.ca_pem)
            .args(["-w", "%{http_code} %{local_ip} %{local_port}"])
            .arg(url)
            .output()
            .expect("curl");
        let trailer = String::from_utf8_lossy(&output.stdout).into_owned();
        let words: Vec<&str> = trailer.split_whitespace().collect();
        let client = match words.as_slice() {
            [_, ip, port] => format!("{ip}:{port}").parse().ok(),
            _ => None,
        };
        Fetch {
            exit: output.status.code().unwrap_or(-1),
            status: words.first().unwrap_or(&"").to_string(),
            client,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn flow_decisions(&self, fetch: &Fetch) -> Vec<Value> {
        let client = fetch.client.expect("curl reports its local address");
        let prefix = format!("{client} -> ");
        self.sim
            .decisions()
            .into_iter()
            .filter(|d| d["flow"].as_str().is_some_and(|f| f.starts_with(&prefix)))
            .collect()
    }

    /// 200, and the simulator saw the ClientHello only in parts.
    fn assert_desynced(&self, url: &str) {
        let fetch = self.curl(url);
        let decisions = self.flow_decisions(&fetch);
        assert!(
            fetch.exit == 0 && fetch.status == "200",
            "{url}: {fetch:?}\n{decisions:?}"
        );
        assert!(
            decisions.iter().any(|d| d["reason"] == PARTIAL),
            "{url} was not split: {decisions:?}"
        );
    }

    /// 200, and the simulator read the whole name in one segment.
    fn assert_untouched_pass(&self, url: &str, name: &str) {
        let fetch = self.curl(url);
        let decisions = self.flow_decisions(&fetch);
        assert!(
            fetch.exit == 0 && fetch.status == "200",
            "{url}: {fetch:?}\n{decisions:?}"
        );
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        assert_eq!(decisions[0]["sni"], name, "{decisions:?}");
    }

    /// Reset by the simulator, which read the whole name in one segment.
    fn assert_blocked(&self, url: &str) {
        let fetch = self.curl(url);
        let decisions = self.flow_decisions(&fetch);
        assert!(
            fetch.exit != 0 && fetch.stderr.to_lowercase().contains("reset"),
            "{url}: {fetch:?}\n{decisions:?}"
        );
        assert!(
            decisions
                .iter()
                .any(|d| d["verdict"] == "block" && d["sni"] == "blocked.test"),
            "{decisions:?}"
        );
    }
}

/// A zapret Strategy on the built-in engine: multisplit for `domains`.
fn strategy(name: &str, domains: &[&str]) -> String {
    let domains = domains.join(", ");
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
    implementation: builtin
    args:
      - --filter-tcp=443
      - --hostlist={{hostlist:sites}}
      - --dpi-desync=multisplit
      - --dpi-desync-split-pos=1,midsld
    hostlists:
      - name: sites
        domains: [{domains}]
"
    )
}

/// `(pid, argv)` of every running `… desync …` engine (dry runs excluded)
/// the agent `parent` started.
fn engines(parent: u32) -> Vec<(u32, Vec<String>)> {
    children(parent)
        .into_iter()
        .filter(|(_, argv)| {
            argv.iter().any(|a| a == "desync") && !argv.iter().any(|a| a == "--dry-run")
        })
        .collect()
}

/// The one engine the agent runs (after a blue/green switch, once the old
/// one is gone).
fn the_engine(agent: &Agent) -> (u32, Vec<String>) {
    eventually(
        "exactly one engine process",
        || format!("{:?}\n{}", engines(agent.pid()), agent.log()),
        || {
            let mut found = engines(agent.pid());
            (found.len() == 1).then(|| found.remove(0))
        },
    )
}

/// Veil's capture chain in [c]'s IPv4 or IPv6 mangle table.
fn capture_chain(lab: &Lab, save: &str) -> bool {
    zapret_agent::capture_chain(&lab.topology.client, save)
}

fn hostlist_files(data_dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "txt") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&data_dir.join("zapret"), &mut out);
    out
}

#[test]
fn strategies_drive_the_builtin_engine_through_the_agent() {
    let lab = Lab::new(1);
    lab.topology.client.enter(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(scenario(&lab));
    });
}

async fn scenario(lab: &Lab) {
    let source = tempfile::tempdir().expect("source dir");
    let op = Operator::start(source.path()).await;
    let agent = Agent::start(&op, NODE, &["role=edge"]);
    lab.assert_blocked("https://blocked.test/");

    // One Strategy: the agent starts the built-in engine for it.
    let first = source.path().join("first.yaml");
    write(&first, &strategy("first", &["blocked.test"]));
    let node = wait_ready(&op, "first", NODE).await;
    assert_eq!(node["implementation"], "builtin", "{node}");
    the_engine(&agent);
    lab.assert_desynced("https://blocked.test/");
    lab.assert_untouched_pass("https://allowed.test/", "allowed.test");
    assert!(capture_chain(lab, "iptables-save") && capture_chain(lab, "ip6tables-save"));

    // A second Strategy joins the same engine process (one pid, two profiles).
    let second = source.path().join("second.yaml");
    write(&second, &strategy("second", &["allowed.test"]));
    wait_ready(&op, "second", NODE).await;
    let (both, argv) = eventually(
        "the engine running both profiles",
        || format!("{:?}\n{}", engines(agent.pid()), agent.log()),
        || {
            let found = engines(agent.pid());
            let [(pid, argv)] = found.as_slice() else {
                return None;
            };
            argv.iter()
                .any(|a| a == "--new")
                .then(|| (*pid, argv.clone()))
        },
    );
    // Each profile reads its Strategy's hostlist from the agent's data dir.
    let mut lists: Vec<PathBuf> = argv
        .iter()
        .filter_map(|a| a.strip_prefix("--hostlist="))
        .map(PathBuf::from)
        .collect();
    lists.sort();
    let mut written = hostlist_files(&agent.data_dir);
    written.sort();
    assert_eq!(lists, written, "{argv:?}");
    assert_eq!(lists.len(), 2, "{argv:?}");
    lab.assert_desynced("https://blocked.test/");
    lab.assert_desynced("https://allowed.test/");

    // A hostlist edit takes effect in the same process.
    write(&second, &strategy("second", &["sub.blocked.test"]));
    eventually(
        "allowed.test no longer desynced",
        || {
            lab.sim
                .decisions()
                .iter()
                .map(|d| format!("{d}\n"))
                .collect()
        },
        || {
            let fetch = lab.curl("https://allowed.test/");
            let decisions = lab.flow_decisions(&fetch);
            (fetch.status == "200" && decisions.iter().all(|d| d["sni"] == "allowed.test"))
                .then_some(())
        },
    );
    assert_eq!(the_engine(&agent).0, both, "a list edit needs no restart");
    let contents: Vec<String> = hostlist_files(&agent.data_dir)
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("hostlist"))
        .collect();
    assert!(
        contents.iter().any(|c| c.contains("sub.blocked.test"))
            && !contents.iter().any(|c| c.contains("allowed.test")),
        "{contents:?}"
    );
    lab.assert_desynced("https://blocked.test/");

    // Deleting both: engine, rules and files go; traffic flows untouched.
    std::fs::remove_file(&first).expect("delete first");
    std::fs::remove_file(&second).expect("delete second");
    eventually(
        "engine, capture rules and hostlists removed",
        || format!("{:?}\n{}", engines(agent.pid()), agent.log()),
        || {
            (engines(agent.pid()).is_empty()
                && !capture_chain(lab, "iptables-save")
                && !capture_chain(lab, "ip6tables-save")
                && hostlist_files(&agent.data_dir).is_empty())
            .then_some(())
        },
    );
    lab.assert_blocked("https://blocked.test/");
    lab.assert_untouched_pass("https://allowed.test/", "allowed.test");
}
