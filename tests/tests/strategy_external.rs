//! Strategies on the external engine end to end: a real `veil-operator`
//! (dir source) and a real `veil-agent` in the client namespace [c] of a
//! topology, the agent's `PATH` starting with a directory whose `nfqws` is
//! the nfqws stand-in (`nfqws-standin`: nfqws's command line, strict
//! checks, `--dry-run`, binds its queue and passes every packet). The agent
//! registers it as its `nfqws` capability and runs `implementation:
//! external` Strategies on it.

use std::path::{Path, PathBuf};

use veil_desync::args::ParseMode;
use veil_desync::dry_run::dry_run;
use veil_e2e::netns::Topology;
use veil_e2e::process::{Agent, AgentOptions, Operator, binary};
use veil_e2e::standin::{self, Program, STANDIN_VERSION};
use veil_e2e::zapret_agent::{
    capture_chain, children, condition, eventually, wait_node_status, wait_ready, write_atomically,
    zapret_strategy,
};

const NODE: &str = "edge-c";
const GUARD: &str = "--hostlist-domains=guard.veil.invalid";

/// A zapret Strategy for the external engine with `args` and the YAML of
/// its `hostlists`/`files` (`lists`, indented under `zapret:`).
fn strategy(name: &str, args: &[&str], lists: &str) -> String {
    zapret_strategy(name, "external", args, lists)
}

/// multisplit for the hosts of a one-domain hostlist.
fn multisplit(name: &str) -> String {
    strategy(
        name,
        &[
            "--filter-tcp=443",
            "--hostlist={hostlist:sites}",
            "--dpi-desync=multisplit",
        ],
        "    hostlists:
      - name: sites
        domains: [blocked.test]
",
    )
}

/// A fake desync whose TLS fake payload file is empty.
fn empty_fake(name: &str) -> String {
    strategy(
        name,
        &[
            "--filter-tcp=443",
            "--dpi-desync=fake",
            "--dpi-desync-fake-tls={file:fake}",
        ],
        "    files:
      - name: fake
        content: \"\"
",
    )
}

/// A directory holding `nfqws` → the stand-in, and the `PATH` that puts it
/// first.
struct StandinOnPath {
    dir: tempfile::TempDir,
}

impl StandinOnPath {
    fn new() -> StandinOnPath {
        let dir = tempfile::tempdir().expect("temp dir");
        std::os::unix::fs::symlink(binary("nfqws-standin"), dir.path().join("nfqws"))
            .expect("symlink nfqws");
        StandinOnPath { dir }
    }

    fn nfqws(&self) -> PathBuf {
        self.dir.path().join("nfqws")
    }

    fn search_path(&self) -> String {
        let inherited = std::env::var("PATH").unwrap_or_default();
        format!("{}:{inherited}", self.dir.path().display())
    }
}

/// `(pid, argv)` of every running nfqws the agent started (its version
/// probe and dry runs excluded).
fn engines(agent: &Agent, nfqws: &Path) -> Vec<(u32, Vec<String>)> {
    children(agent.pid())
        .into_iter()
        .filter(|(_, argv)| {
            argv.first().is_some_and(|a| Path::new(a) == nfqws)
                && !argv.iter().any(|a| a == "--dry-run" || a == "--version")
        })
        .collect()
}

/// The one nfqws the agent runs (once a blue/green switch is over).
fn the_engine(agent: &Agent, nfqws: &Path) -> (u32, Vec<String>) {
    eventually(
        "exactly one nfqws process",
        || format!("{:?}\n{}", engines(agent, nfqws), agent.log()),
        || {
            let mut found = engines(agent, nfqws);
            (found.len() == 1).then(|| found.remove(0))
        },
    )
}

#[test]
fn external_strategies_run_on_nfqws_and_a_failed_dry_run_keeps_the_running_engine() {
    let topology = Topology::new();
    topology.client.block_on(|| scenario(&topology));
}

async fn scenario(topology: &Topology) {
    let c = &topology.client;
    let standin_path = StandinOnPath::new();
    let nfqws = standin_path.nfqws();
    let source = tempfile::tempdir().expect("source dir");
    let op = Operator::start(source.path()).await;
    let options = AgentOptions {
        path: Some(standin_path.search_path()),
        ..AgentOptions::default()
    };
    let agent = Agent::start_with(&op, NODE, &["role=edge"], &options);

    // 1. An external Strategy runs on the stand-in, reported by its version.
    let first = source.path().join("first.yaml");
    write_atomically(&first, &multisplit("first"));
    let node = wait_ready(&op, "first", NODE).await;
    assert_eq!(
        node["implementation"],
        format!("nfqws {STANDIN_VERSION}"),
        "{node}"
    );
    let (pid, argv) = the_engine(&agent, &nfqws);
    assert_eq!(
        std::fs::canonicalize(format!("/proc/{pid}/exe")).expect("engine exe"),
        std::fs::canonicalize(binary("nfqws-standin")).expect("stand-in"),
        "the engine is the stand-in"
    );
    let engine_args = &argv[1..];
    let [qnum, fwmark, profile @ ..] = engine_args else {
        panic!("no globals: {argv:?}");
    };
    assert!(qnum == "--qnum=200" || qnum == "--qnum=201", "{argv:?}");
    assert_eq!(fwmark, "--dpi-desync-fwmark=0x40000000", "{argv:?}");
    let hostlist = PathBuf::from(
        profile
            .iter()
            .find_map(|a| a.strip_prefix("--hostlist="))
            .expect("a hostlist in the profile"),
    );
    assert!(
        hostlist.starts_with(agent.data_dir.join("zapret")),
        "{argv:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&hostlist).expect("hostlist"),
        "blocked.test\n"
    );
    let expected: Vec<String> = [
        "--filter-tcp=443".to_owned(),
        format!("--hostlist={}", hostlist.display()),
        "--dpi-desync=multisplit".to_owned(),
        GUARD.to_owned(),
    ]
    .into();
    assert_eq!(profile, expected.as_slice(), "{argv:?}");
    // The agent starts the engine with a cleared environment (PATH and
    // RUST_LOG only), so the stand-in's VEIL_STANDIN_DUMP cannot reach it:
    // its dump is rebuilt here from the command line it runs with, by the
    // same parser the stand-in uses.
    let report = dry_run(engine_args, ParseMode::Process).expect("the engine's argv parses");
    let dump = standin::dump(Program::Nfqws, engine_args, &report.config);
    let profiles = dump["profiles"].as_array().expect("profiles");
    assert_eq!(profiles.len(), 1, "{dump:#}");
    let parsed = &profiles[0];
    assert_eq!(parsed["tcp"], "443", "{dump:#}");
    assert_eq!(
        parsed["hostlists"],
        serde_json::json!([hostlist]),
        "{dump:#}"
    );
    assert_eq!(
        parsed["hostlistDomains"],
        serde_json::json!(["guard.veil.invalid"]),
        "{dump:#}"
    );
    assert_eq!(parsed["desync"]["split"], "multisplit", "{dump:#}");
    assert_eq!(dump["globals"]["fwmark"], 0x4000_0000, "{dump:#}");
    assert!(capture_chain(c, "iptables-save") && capture_chain(c, "ip6tables-save"));

    // 2. A Strategy with an empty fake payload file: nfqws's dry run
    // refuses it, the bisection blames it alone, the engine stays as it was.
    let second = source.path().join("second.yaml");
    write_atomically(&second, &empty_fake("second"));
    let (status, failed) = wait_node_status(&op, "second", NODE, "Failed", |_, entry| {
        entry["phase"] == "Failed"
    })
    .await;
    let fake = agent
        .data_dir
        .join("zapret")
        .join(namespace_of(&hostlist, &agent))
        .join("second/files/fake");
    // The stand-in's own words for the Strategy's profile run alone
    // (`--qnum`, `--dpi-desync-fwmark`, then args[2..]).
    let words = format!(
        "args[4] `--dpi-desync-fake-tls` (profile 1): cannot use file {}: \
         the file is empty; a fake payload must have at least one byte",
        fake.display()
    );
    assert_eq!(failed["message"], words, "{failed}");
    let ready = condition(&status, "Ready").expect("a Ready condition");
    assert_eq!(ready["status"], "False", "{status:#}");
    assert_eq!(ready["reason"], "DryRunFailed", "{status:#}");
    assert_eq!(ready["message"], format!("{NODE}: {words}"), "{status:#}");
    let still = wait_ready(&op, "first", NODE).await;
    assert_eq!(still["implementation"], node["implementation"], "{still}");
    let (same_pid, same_argv) = the_engine(&agent, &nfqws);
    assert_eq!(same_pid, pid, "the failed dry run left the engine in place");
    assert_eq!(same_argv, argv);
    assert!(
        agent
            .log()
            .contains("dry run of the composed engine failed"),
        "{}",
        agent.log()
    );

    // 3. Deleting the running Strategy stops nfqws and removes the chain.
    std::fs::remove_file(&first).expect("delete first");
    eventually(
        "nfqws stopped and the capture chain removed",
        || format!("{:?}\n{}", engines(&agent, &nfqws), agent.log()),
        || {
            (engines(&agent, &nfqws).is_empty()
                && !Path::new(&format!("/proc/{pid}")).exists()
                && !capture_chain(c, "iptables-save")
                && !capture_chain(c, "ip6tables-save"))
            .then_some(())
        },
    );
    let (status, _) = wait_node_status(&op, "second", NODE, "still Failed", |_, entry| {
        entry["phase"] == "Failed"
    })
    .await;
    let ready = condition(&status, "Ready").expect("a Ready condition");
    assert_eq!(ready["reason"], "DryRunFailed", "{status:#}");
}

/// The Strategies' namespace, read off the path the agent wrote `hostlist`
/// to (`DATA/zapret/NAMESPACE/NAME/LIST.txt`).
fn namespace_of(hostlist: &Path, agent: &Agent) -> PathBuf {
    let relative = hostlist
        .strip_prefix(agent.data_dir.join("zapret"))
        .expect("hostlist under the zapret dir");
    relative
        .components()
        .next()
        .map(|c| PathBuf::from(c.as_os_str()))
        .expect("a namespace directory")
}
