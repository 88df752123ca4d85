//! The zapret actor against the real firewall and real engine processes,
//! each test inside a network namespace of its own: the test re-executes
//! itself (`--exact NAME`) under `ip netns exec`, so the actor, its
//! `iptables-restore` and the engine (`veil-agent desync`) all live there.
//! No operator: the tests hand the actor StrategyGroups directly.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use veil_agent::drivers::zapret::{EngineProgram, ExternalEngine, ZapretConfig, ZapretDriver};
use veil_agent::supervisor::RestartPolicy;
use veil_crds::strategy::{StrategyPhase, ZapretImplementation, ZapretSyntax};
use veil_crds::wire::{
    ResolvedFile, ResolvedHostList, SecretValue, StrategyGroup, StrategyId, StrategyMember,
    StrategyReport, ZapretMember,
};

const INNER: &str = "VEIL_ZAPRET_TEST_INNER";
const NS_PREFIX: &str = "veil-zd-";
const MARK: u32 = 0x4000_0000;
const WAIT: Duration = Duration::from_secs(20);

// ------------------------------------------------------------ netns harness

/// Runs `body` inside a fresh network namespace: the outer call creates the
/// namespace and re-runs this very test there.
fn in_netns(test: &str, body: impl FnOnce(PathBuf)) {
    if std::env::var(INNER).as_deref() == Ok(test) {
        let data = tempfile::tempdir().unwrap();
        body(data.path().to_path_buf());
        return;
    }
    ensure_tools();
    remove_stale_namespaces();
    let ns = Netns::create();
    let output = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INNER, test)
        .output()
        .expect("run the test inside the namespace");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "inside the namespace:\n{stdout}\n{stderr}"
    );
}

fn ensure_tools() {
    if Command::new("iptables-restore")
        .arg("--version")
        .output()
        .is_err()
    {
        let status = Command::new("apt-get")
            .args(["install", "-y", "iptables"])
            .status()
            .expect("apt-get");
        assert!(
            status.success(),
            "iptables is needed (apt-get install iptables)"
        );
    }
}

struct Netns(String);

impl Netns {
    fn create() -> Netns {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{NS_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        run(
            "ip",
            &["netns", "exec", &name, "ip", "link", "set", "lo", "up"],
        );
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Namespaces of test processes that are gone (killed before their drop).
fn remove_stale_namespaces() {
    let list = run("ip", &["netns", "list"]);
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ------------------------------------------------------------ fixtures

fn agent() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_veil-agent"))
}

fn config(data: &Path) -> ZapretConfig {
    let builtin = EngineProgram {
        program: agent(),
        prefix: vec!["desync".into()],
    };
    let mut config = ZapretConfig::new(data.join("zapret"), builtin);
    config.mark = MARK;
    config.restart = RestartPolicy {
        min_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(1),
        jitter: false,
        ..RestartPolicy::default()
    };
    config
}

/// `veil-agent desync` playing nfqws (same command line).
fn with_fake_nfqws(mut config: ZapretConfig) -> ZapretConfig {
    config.external = Some(ExternalEngine {
        program: EngineProgram {
            program: agent(),
            prefix: vec!["desync".into()],
        },
        version: Some("github version v72.12".into()),
    });
    config
}

fn id(name: &str) -> StrategyId {
    StrategyId {
        namespace: "edge".into(),
        name: name.into(),
    }
}

fn zapret(args: &[&str], domains: &[&str]) -> ZapretMember {
    ZapretMember {
        args: args.iter().map(|&a| a.to_owned()).collect(),
        syntax: ZapretSyntax::V1,
        priority: 100,
        implementation: ZapretImplementation::Builtin,
        hostlists: vec![ResolvedHostList {
            name: "blocked".into(),
            domains: domains.iter().map(|&d| d.to_owned()).collect(),
            secret: false,
        }],
        files: Vec::new(),
    }
}

fn group(name: &str, member: ZapretMember) -> StrategyGroup {
    StrategyGroup {
        primary: id(name),
        members: vec![StrategyMember {
            strategy: id(name),
            generation: 1,
            zapret: Some(member),
            vless: None,
        }],
        probes: None,
        scoring: Default::default(),
        failover: None,
        spec_hash: format!("hash-{name}"),
    }
}

fn split(port: &str, domains: &[&str]) -> ZapretMember {
    zapret(
        &[
            &format!("--filter-tcp={port}"),
            "--hostlist={hostlist:blocked}",
            "--dpi-desync=multisplit",
            "--dpi-desync-split-pos=1,midsld",
        ],
        domains,
    )
}

fn start(config: ZapretConfig) -> (ZapretDriver, mpsc::UnboundedReceiver<Vec<StrategyReport>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ZapretDriver::start(config, tx), rx)
}

/// Polls the actor until `done` holds for its reports (bounded by [`WAIT`]).
async fn wait_for(
    driver: &ZapretDriver,
    what: &str,
    done: impl Fn(&[StrategyReport]) -> bool,
) -> Vec<StrategyReport> {
    let deadline = Instant::now() + WAIT;
    loop {
        let reports = driver.sync().await;
        if done(&reports) {
            return reports;
        }
        assert!(Instant::now() < deadline, "{what}: still {reports:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn report<'a>(reports: &'a [StrategyReport], name: &str) -> &'a StrategyReport {
    reports
        .iter()
        .find(|r| r.strategy.name == name)
        .unwrap_or_else(|| panic!("no report for {name}: {reports:#?}"))
}

fn running(reports: &[StrategyReport], names: &[&str]) -> bool {
    names.iter().all(|n| {
        reports
            .iter()
            .any(|r| r.strategy.name == *n && r.phase == StrategyPhase::Running && r.pid.is_some())
    })
}

fn pids(reports: &[StrategyReport]) -> BTreeSet<u32> {
    reports.iter().filter_map(|r| r.pid).collect()
}

fn mangle(family: &str) -> String {
    run(&format!("{family}-save"), &["-t", "mangle"])
}

fn jumps(save: &str) -> usize {
    save.lines()
        .filter(|l| l.trim() == "-A POSTROUTING -j VEIL_ZAPRET")
        .count()
}

fn chain_rules(save: &str) -> Vec<String> {
    save.lines()
        .filter(|l| l.starts_with("-A VEIL_ZAPRET "))
        .map(str::to_owned)
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ------------------------------------------------------------ tests

#[test]
fn strategies_share_one_engine_edits_keep_it_and_additions_switch_queues() {
    in_netns(
        "strategies_share_one_engine_edits_keep_it_and_additions_switch_queues",
        |data| {
            runtime().block_on(async {
                let (driver, _rx) = start(config(&data));
                // `youtube` has two backups: a zapret one and one without
                // engine settings; both wait in Standby.
                let mut youtube = group("youtube", split("443", &["youtube.com"]));
                youtube.members.push(StrategyMember {
                    strategy: id("youtube-fake"),
                    generation: 1,
                    zapret: Some(split("8443", &["youtube.com"])),
                    vless: None,
                });
                youtube.members.push(StrategyMember {
                    strategy: id("via-vless"),
                    generation: 1,
                    zapret: None,
                    vless: None,
                });
                driver.apply(vec![youtube, group("plain", split("80", &["example.org"]))]);
                let reports = wait_for(&driver, "both running", |r| {
                    running(r, &["youtube", "plain"])
                })
                .await;
                for backup in ["youtube-fake", "via-vless"] {
                    let standby = report(&reports, backup);
                    assert_eq!(standby.phase, StrategyPhase::Standby, "{standby:?}");
                    assert!(!standby.active);
                    assert_eq!(standby.group, id("youtube"));
                }
                let first = pids(&reports);
                assert_eq!(first.len(), 1, "one engine process: {reports:#?}");
                let pid = *first.iter().next().unwrap();
                assert_eq!(
                    report(&reports, "youtube").implementation.as_deref(),
                    Some("builtin")
                );
                assert_eq!(
                    report(&reports, "youtube").applied_hash.as_deref(),
                    Some("hash-youtube")
                );
                for family in ["iptables", "ip6tables"] {
                    let save = mangle(family);
                    assert_eq!(jumps(&save), 1, "{family}: {save}");
                    let rules = chain_rules(&save);
                    assert_eq!(rules.len(), 1, "{family}: {save}");
                    assert!(rules[0].contains("--dports 80,443"), "{}", rules[0]);
                    assert!(rules[0].contains("--queue-num 200"), "{}", rules[0]);
                    assert!(rules[0].contains("--queue-bypass"), "{}", rules[0]);
                    assert!(rules[0].contains("--connbytes 1:6"), "{}", rules[0]);
                    assert!(
                        rules[0].contains("! --mark 0x40000000/0x40000000"),
                        "{}",
                        rules[0]
                    );
                }
                let list = data.join("zapret/edge/youtube/blocked.txt");
                assert_eq!(std::fs::read_to_string(&list).unwrap(), "youtube.com\n");
                let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
                assert!(
                    cmdline.contains("--hostlist-domains=guard.veil.invalid"),
                    "{cmdline:?}"
                );

                // A list edit: same process, new content.
                driver.apply(vec![
                    group("youtube", split("443", &["youtube.com", "googlevideo.com"])),
                    group("plain", split("80", &["example.org"])),
                ]);
                let reports = driver.sync().await;
                assert_eq!(pids(&reports), first, "no restart for a list edit");
                assert_eq!(
                    std::fs::read_to_string(&list).unwrap(),
                    "youtube.com\ngooglevideo.com\n"
                );

                // A third Strategy: new engine on the other queue, old one gone.
                driver.apply(vec![
                    group("youtube", split("443", &["youtube.com", "googlevideo.com"])),
                    group("plain", split("80", &["example.org"])),
                    group("alt", split("8443", &["example.net"])),
                ]);
                let reports = wait_for(&driver, "three running", |r| {
                    running(r, &["youtube", "plain", "alt"]) && pids(r) != first
                })
                .await;
                assert_eq!(pids(&reports).len(), 1, "{reports:#?}");
                assert!(!alive(pid), "the old engine {pid} is stopped");
                let save = mangle("iptables");
                assert_eq!(jumps(&save), 1, "{save}");
                let rules = chain_rules(&save);
                assert_eq!(rules.len(), 1, "{save}");
                assert!(rules[0].contains("--dports 80,443,8443"), "{}", rules[0]);
                assert!(rules[0].contains("--queue-num 201"), "{}", rules[0]);
                let new_pid = *pids(&reports).iter().next().unwrap();

                // Everything removed: no engine, no rules, no files.
                driver.apply(Vec::new());
                let reports = driver.sync().await;
                assert!(reports.is_empty(), "{reports:#?}");
                assert!(!alive(new_pid), "the engine {new_pid} is stopped");
                for family in ["iptables", "ip6tables"] {
                    let save = mangle(family);
                    assert_eq!(jumps(&save), 0, "{family}: {save}");
                    assert!(!save.contains("VEIL_ZAPRET"), "{family}: {save}");
                }
                assert!(!data.join("zapret/edge").exists(), "files removed");
                driver.shutdown().await;
            });
        },
    );
}

#[test]
fn a_broken_strategy_fails_alone_with_its_reason() {
    in_netns("a_broken_strategy_fails_alone_with_its_reason", |data| {
        runtime().block_on(async {
            let (driver, _rx) = start(config(&data));
            let unsupported = zapret(
                &[
                    "--filter-tcp=443",
                    "--dpi-desync=fake",
                    "--dpi-desync-fooling=md5sig",
                ],
                &["a.com"],
            );
            driver.apply(vec![
                group("good", split("443", &["youtube.com"])),
                group("empty", split("443", &[])),
                group("unsupported", unsupported),
            ]);
            let reports = wait_for(&driver, "good running", |r| running(r, &["good"])).await;
            let empty = report(&reports, "empty");
            assert_eq!(empty.phase, StrategyPhase::Failed);
            assert_eq!(empty.reason.as_deref(), Some("EmptyHostList"));
            assert_eq!(
                empty.message.as_deref(),
                Some("hostlist `blocked` is empty; zapret would treat an empty list as every host")
            );
            assert!(!data.join("zapret/edge/empty/blocked.txt").exists());
            let unsupported = report(&reports, "unsupported");
            assert_eq!(unsupported.phase, StrategyPhase::Failed);
            assert_eq!(unsupported.reason.as_deref(), Some("UnsupportedOption"));
            let message = unsupported.message.as_deref().unwrap();
            assert!(message.contains("--dpi-desync-fooling=md5sig"), "{message}");
            driver.shutdown().await;
        });
    });
}

#[test]
fn a_failing_dry_run_keeps_the_engine_and_blames_the_right_strategy() {
    in_netns(
        "a_failing_dry_run_keeps_the_engine_and_blames_the_right_strategy",
        |data| {
            runtime().block_on(async {
                let mut good = split("443", &["youtube.com"]);
                good.implementation = ZapretImplementation::External;
                let (driver, _rx) = start(with_fake_nfqws(config(&data)));
                driver.apply(vec![group("good", good.clone())]);
                let reports = wait_for(&driver, "good running", |r| running(r, &["good"])).await;
                let first = pids(&reports);
                assert_eq!(
                    report(&reports, "good").implementation.as_deref(),
                    Some("veil-agent v72.12")
                );
                // An empty fake payload file passes validation but not the
                // engine's own check.
                let mut bad = zapret(
                    &[
                        "--filter-tcp=443",
                        "--dpi-desync=fake",
                        "--dpi-desync-fake-tls={file:hello}",
                    ],
                    &["a.com"],
                );
                bad.implementation = ZapretImplementation::External;
                bad.files = vec![ResolvedFile {
                    name: "hello".into(),
                    data_base64: SecretValue(String::new()),
                    secret: false,
                }];
                driver.apply(vec![group("good", good), group("bad", bad)]);
                let reports = driver.sync().await;
                let bad = report(&reports, "bad");
                assert_eq!(bad.phase, StrategyPhase::Failed, "{reports:#?}");
                assert_eq!(bad.reason.as_deref(), Some("DryRunFailed"));
                assert!(
                    bad.message
                        .as_deref()
                        .unwrap()
                        .contains("--dpi-desync-fake-tls"),
                    "the engine's own message: {bad:?}"
                );
                assert_eq!(report(&reports, "good").phase, StrategyPhase::Running);
                assert_eq!(pids(&reports), first, "the running engine stays");
                driver.shutdown().await;
            });
        },
    );
}

#[test]
fn a_killed_engine_comes_back_without_duplicate_rules() {
    in_netns(
        "a_killed_engine_comes_back_without_duplicate_rules",
        |data| {
            runtime().block_on(async {
                let (driver, _rx) = start(config(&data));
                driver.apply(vec![group("youtube", split("443", &["youtube.com"]))]);
                let reports = wait_for(&driver, "running", |r| running(r, &["youtube"])).await;
                let pid = report(&reports, "youtube").pid.unwrap();
                run("kill", &["-9", &pid.to_string()]);
                let reports = wait_for(&driver, "restarted", |r| {
                    running(r, &["youtube"]) && report(r, "youtube").pid != Some(pid)
                })
                .await;
                assert_eq!(report(&reports, "youtube").restarts, 1);
                let save = mangle("iptables");
                assert_eq!(jumps(&save), 1, "{save}");
                assert_eq!(chain_rules(&save).len(), 1, "{save}");
                driver.shutdown().await;
                let save = mangle("iptables");
                assert!(
                    !save.contains("VEIL_ZAPRET"),
                    "shutdown removes the rules: {save}"
                );
            });
        },
    );
}

#[test]
fn a_restarted_actor_cleans_up_what_a_crashed_one_left() {
    in_netns(
        "a_restarted_actor_cleans_up_what_a_crashed_one_left",
        |data| {
            // What a `kill -9`'d agent leaves: its chain with two jumps, and an
            // engine still bound to queue 200, recorded in the data directory.
            let zapret_dir = data.join("zapret");
            std::fs::create_dir_all(&zapret_dir).unwrap();
            for family in ["iptables", "ip6tables"] {
                run(family, &["-t", "mangle", "-N", "VEIL_ZAPRET"]);
                for _ in 0..2 {
                    run(
                        family,
                        &["-t", "mangle", "-A", "POSTROUTING", "-j", "VEIL_ZAPRET"],
                    );
                }
                run(
                    family,
                    &[
                        "-t",
                        "mangle",
                        "-A",
                        "VEIL_ZAPRET",
                        "-p",
                        "tcp",
                        "-j",
                        "NFQUEUE",
                        "--queue-num",
                        "200",
                        "--queue-bypass",
                    ],
                );
            }
            let orphan = {
                use std::os::unix::process::CommandExt;
                Command::new(agent())
                    .args([
                        "desync",
                        "--qnum=200",
                        "--filter-tcp=443",
                        "--dpi-desync=multisplit",
                    ])
                    .process_group(0)
                    .spawn()
                    .unwrap()
            };
            let orphan_pid = orphan.id();
            let deadline = Instant::now() + WAIT;
            while !std::fs::read_to_string("/proc/net/netfilter/nfnetlink_queue")
                .unwrap_or_default()
                .lines()
                .any(|l| l.split_whitespace().next() == Some("200"))
            {
                assert!(
                    Instant::now() < deadline,
                    "the orphan engine never bound queue 200"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let stat = std::fs::read_to_string(format!("/proc/{orphan_pid}/stat")).unwrap();
            let started = stat
                .rsplit(')')
                .next()
                .unwrap()
                .split_whitespace()
                .nth(19)
                .unwrap()
                .to_owned();
            std::fs::write(
                zapret_dir.join(".engine-200.pid"),
                format!("{orphan_pid} {started}\n"),
            )
            .unwrap();
            let mut orphan = orphan;

            runtime().block_on(async {
                let (driver, _rx) = start(config(&data));
                driver.apply(vec![group("youtube", split("443", &["youtube.com"]))]);
                let reports = wait_for(&driver, "running", |r| running(r, &["youtube"])).await;
                assert_ne!(report(&reports, "youtube").pid, Some(orphan_pid));
                for family in ["iptables", "ip6tables"] {
                    let save = mangle(family);
                    assert_eq!(jumps(&save), 1, "{family}: {save}");
                    assert_eq!(chain_rules(&save).len(), 1, "{family}: {save}");
                }
                driver.shutdown().await;
            });
            let status = orphan.wait().unwrap();
            assert!(
                !status.success(),
                "the orphan engine was killed: {status:?}"
            );
        },
    );
}
