//! Strategies end to end: a real `veil-operator` (dir source) and a real
//! `veil-agent` running inside the client namespace [c] of a DPI topology,
//! the simulator in [d], the test site in [s]. The agent's zapret driver
//! runs the built-in engine (`veil-agent desync`) with its own capture
//! rules; curl in [c] shows what the DPI lets through.
//!
//! The operator runs in [c] too, on [c]'s loopback: the test's async body
//! runs on a thread that joined [c] ([`Namespace::enter`]), so the
//! processes it starts and the sockets it opens live there.

use std::path::{Path, PathBuf};

use veil_e2e::dpi_lab::DpiLab;
use veil_e2e::process::{Agent, Operator};
use veil_e2e::zapret_agent::{self, children, eventually, wait_ready, write_atomically as write};

const NODE: &str = "edge-c";

type Lab = DpiLab;

/// A zapret Strategy on the built-in engine: multisplit for `domains`.
fn strategy(name: &str, domains: &[&str]) -> String {
    strategy_with(
        name,
        domains,
        &["--dpi-desync=multisplit", "--dpi-desync-split-pos=1,midsld"],
    )
}

/// A zapret Strategy on the built-in engine: `desync` for `domains`.
fn strategy_with(name: &str, domains: &[&str], desync: &[&str]) -> String {
    let mut args = vec!["--filter-tcp=443", "--hostlist={hostlist:sites}"];
    args.extend_from_slice(desync);
    let lists = format!(
        "    hostlists:\n      - name: sites\n        domains: [{}]\n",
        domains.join(", ")
    );
    zapret_agent::zapret_strategy(name, "builtin", &args, &lists)
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

/// Veil's capture chain in [c]'s IPv4 or IPv6 mangle table.
fn capture_chain(lab: &Lab, save: &str) -> bool {
    zapret_agent::capture_chain(&lab.topology.client, save)
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
    lab.topology.client.block_on(|| scenario(&lab));
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
            let fetch = lab.curl("https://allowed.test/", &[]);
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

#[test]
fn a_fake_strategy_written_as_yaml_beats_the_reassembling_dpi() {
    let lab = Lab::new(2);
    lab.topology.client.block_on(|| level_2_scenario(&lab));
}

async fn level_2_scenario(lab: &Lab) {
    let source = tempfile::tempdir().expect("source dir");
    let op = Operator::start(source.path()).await;
    let agent = Agent::start(&op, NODE, &["role=edge"]);

    // Splitting does not fool a DPI that reassembles the stream.
    let file = source.path().join("youtube.yaml");
    write(&file, &strategy("youtube", &["blocked.test"]));
    wait_ready(&op, "youtube", NODE).await;
    let (split_engine, _) = the_engine(&agent);
    lab.assert_blocked("https://blocked.test/");

    // A fake ClientHello whose TTL ends at the DPI's router does.
    write(
        &file,
        &strategy_with(
            "youtube",
            &["blocked.test"],
            &["--dpi-desync=fake", "--dpi-desync-ttl=1"],
        ),
    );
    let (fake_engine, argv) = eventually(
        "the engine restarted with the fake profile",
        || agent.log(),
        || {
            let found = engines(agent.pid());
            let [(pid, argv)] = found.as_slice() else {
                return None;
            };
            argv.iter()
                .any(|a| a == "--dpi-desync=fake")
                .then(|| (*pid, argv.clone()))
        },
    );
    assert_ne!(
        fake_engine, split_engine,
        "a new command line is a new engine: {argv:?}"
    );
    wait_ready(&op, "youtube", NODE).await;
    let fetch = lab.curl("https://blocked.test/", &[]);
    assert!(fetch.ok(), "{fetch:?}\n{:?}", lab.flow_decisions(&fetch));
    let decisions = lab.flow_decisions(&fetch);
    assert!(
        decisions.iter().all(|d| d["verdict"] == "pass"),
        "the DPI judged the fake, not the real name: {decisions:?}"
    );
}
