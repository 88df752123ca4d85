//! Veil's built-in desync engine (`veil-agent desync`, nfqws command line)
//! against the DPI simulator: the engine with its capture rule in [c], the
//! simulator in [d], the test site in [s], real curl in [c]. Each test has
//! its own namespaces, so they run in parallel.
//!
//! Every verdict is read from two sides: curl's exit code and HTTP status,
//! and the simulator's decision log for that very connection (curl reports
//! its local port, the log names each flow).

use std::net::IpAddr;

use serde_json::Value;
use veil_desync::engine::fake::FAKE_HOST;
use veil_e2e::desync_engine::DesyncEngine;
use veil_e2e::dpi_lab::{DpiLab, Fetch, PARTIAL};
use veil_e2e::netns::Topology;

struct Lab {
    dpi: DpiLab,
    dir: tempfile::TempDir,
}

impl std::ops::Deref for Lab {
    type Target = DpiLab;
    fn deref(&self) -> &DpiLab {
        &self.dpi
    }
}

fn lab(topology: Topology, level: u8) -> Lab {
    let dpi = DpiLab::with_topology(topology, level);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("hostlist.txt"), "blocked.test\n").expect("hostlist");
    Lab { dpi, dir }
}

trait FetchChecks {
    fn assert_ok(&self, body: &[u8], lab: &Lab);
    fn assert_reset(&self, lab: &Lab);
}

impl FetchChecks for Fetch {
    fn assert_ok(&self, body: &[u8], lab: &Lab) {
        assert!(
            self.exit == 0 && self.status == "200" && self.body == body,
            "expected 200 {:?}, got {self:?}\nsimulator decisions: {:?}",
            String::from_utf8_lossy(body),
            lab.sim.decisions()
        );
    }

    /// curl failed because the simulator reset the connection, and the
    /// simulator logged the block for this connection.
    fn assert_reset(&self, lab: &Lab) {
        assert!(
            self.exit != 0 && self.stderr.to_lowercase().contains("reset"),
            "expected a RST, got {self:?}\nsimulator decisions: {:?}",
            lab.sim.decisions()
        );
        let blocks: Vec<Value> = lab
            .flow_decisions(self)
            .into_iter()
            .filter(|d| d["verdict"] == "block")
            .collect();
        assert_eq!(blocks.len(), 1, "{self:?}: {:?}", lab.sim.decisions());
        assert_eq!(blocks[0]["sni"], "blocked.test");
    }
}

impl Lab {
    fn hostlist(&self) -> String {
        format!(
            "--hostlist={}",
            self.dir.path().join("hostlist.txt").display()
        )
    }

    /// `--filter-tcp=443 --hostlist=<blocked.test> <desync…>`.
    fn profile(&self, desync: &[&str]) -> Vec<String> {
        let mut argv = vec!["--filter-tcp=443".to_string(), self.hostlist()];
        argv.extend(desync.iter().map(|s| s.to_string()));
        argv
    }

    fn engine(&self, desync: &[&str]) -> DesyncEngine<'_> {
        let argv = self.profile(desync);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        DesyncEngine::start(&self.topology.client, &argv)
    }

    /// The simulator saw this connection's ClientHello only in parts: it
    /// passed a partial name and never saw `blocked.test` whole.
    fn assert_seen_split(&self, fetch: &Fetch) {
        let decisions = self.flow_decisions(fetch);
        assert!(
            decisions.iter().any(|d| d["reason"] == PARTIAL),
            "{decisions:?}"
        );
        assert!(
            decisions
                .iter()
                .all(|d| d["verdict"] == "pass" && d["sni"] != "blocked.test"),
            "{decisions:?}"
        );
    }
}

const MULTISPLIT: [&str; 2] = ["--dpi-desync=multisplit", "--dpi-desync-split-pos=1,midsld"];

#[test]
fn multisplit_defeats_level_1_for_listed_names_only() {
    let lab = lab(Topology::new(), 1);
    lab.curl("https://blocked.test/", &[]).assert_reset(&lab);

    let engine = lab.engine(&MULTISPLIT);
    let blocked = lab.curl("https://blocked.test/", &[]);
    blocked.assert_ok(b"ok blocked.test\n", &lab);
    lab.assert_seen_split(&blocked);

    // allowed.test is not in the hostlist: its ClientHello leaves whole, so
    // the simulator reads the entire name in one segment.
    let allowed = lab.curl("https://allowed.test/", &[]);
    allowed.assert_ok(b"ok allowed.test\n", &lab);
    let decisions = lab.flow_decisions(&allowed);
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(
        decisions[0]["sni"],
        "allowed.test",
        "{decisions:?}\n{}",
        engine.log()
    );
    assert_eq!(decisions[0]["reason"], "name not blocked");

    let desynced = engine.desynced_requests();
    assert_eq!(desynced.len(), 1, "{}", engine.log());
    assert_eq!(desynced[0].host, "blocked.test");
    // Parts of 1, midsld-1 and the rest bytes.
    assert_eq!(desynced[0].injected, 3, "{}", engine.log());
}

#[test]
fn level_2_reassembles_and_defeats_multisplit() {
    let lab = lab(Topology::new(), 2);
    let engine = lab.engine(&MULTISPLIT);
    let fetch = lab.curl("https://blocked.test/", &[]);
    fetch.assert_reset(&lab);
    let block = lab
        .flow_decisions(&fetch)
        .into_iter()
        .find(|d| d["verdict"] == "block")
        .expect("a block decision");
    assert_eq!(block["level"], 2);
    // The engine did split it: the simulator reassembled the parts.
    let desynced = engine.desynced_requests();
    assert_eq!(desynced.len(), 1, "{}", engine.log());
    assert_eq!(desynced[0].host, "blocked.test");
}

/// A fake that the simulator sees first decides the flow at level 2, and
/// the handshake completing proves the fake never reached the server (the
/// server would have answered the fake's ClientHello instead).
fn assert_fake_wins_level_2(desync: &[&str]) {
    let lab = lab(Topology::new(), 2);
    lab.curl("https://blocked.test/", &[]).assert_reset(&lab);

    let engine = lab.engine(desync);
    let fetch = lab.curl("https://blocked.test/", &[]);
    fetch.assert_ok(b"ok blocked.test\n", &lab);
    let decisions = lab.flow_decisions(&fetch);
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(decisions[0]["sni"], FAKE_HOST);
    assert_eq!(decisions[0]["verdict"], "pass");
    assert_eq!(decisions[0]["level"], 2);
    let desynced = engine.desynced_requests();
    assert_eq!(desynced.len(), 1, "{}", engine.log());
    assert_eq!(desynced[0].host, "blocked.test");
}

#[test]
fn ttl_1_fake_defeats_level_2() {
    // The fake's TTL runs out at [d] (after the simulator saw it).
    assert_fake_wins_level_2(&["--dpi-desync=fake", "--dpi-desync-ttl=1"]);
}

#[test]
fn bad_checksum_fake_defeats_level_2() {
    // The fake crosses [d]; the server's kernel drops it (offloads are off
    // on the test veths, so the checksum is really checked).
    assert_fake_wins_level_2(&["--dpi-desync=fake", "--dpi-desync-fooling=badsum"]);
}

#[test]
fn multisplit_reassembles_a_two_segment_client_hello() {
    let lab = lab(Topology::builder().mtu(1280).build(), 1);
    // An 8192-bit FFDHE key share makes curl's ClientHello ~1.3 KB: two
    // segments at MTU 1280 (like Chrome's post-quantum one), the name in
    // the first.
    let big = ["--curves", "ffdhe8192"];
    lab.curl("https://blocked.test/", &big).assert_reset(&lab);

    let engine = lab.engine(&MULTISPLIT);
    let fetch = lab.curl("https://blocked.test/", &big);
    fetch.assert_ok(b"ok blocked.test\n", &lab);
    lab.assert_seen_split(&fetch);
    let desynced = engine.desynced_requests();
    assert_eq!(desynced.len(), 1, "{}", engine.log());
    assert_eq!(desynced[0].host, "blocked.test");
    assert_eq!(desynced[0].segments, 2, "{}", engine.log());
    // 1, midsld-1, up to the original segment boundary, the second segment.
    assert_eq!(desynced[0].injected, 4, "{}", engine.log());
}

#[test]
fn a_1_mib_download_through_the_engine_is_intact() {
    let lab = lab(Topology::new(), 1);
    let engine = lab.engine(&MULTISPLIT);
    let size = 1024 * 1024;
    let fetch = lab.curl(&format!("https://blocked.test/bytes/{size}"), &[]);
    fetch.assert_ok(&vec![b'x'; size], &lab);
    lab.assert_seen_split(&fetch);
    assert_eq!(engine.desynced_requests().len(), 1, "{}", engine.log());
}

#[test]
fn a_killed_engine_fails_open_and_un_desynced() {
    let lab = lab(Topology::new(), 1);
    let mut engine = lab.engine(&MULTISPLIT);
    lab.curl("https://blocked.test/", &[])
        .assert_ok(b"ok blocked.test\n", &lab);

    engine.kill();
    assert!(!engine.queue_bound(), "nothing is bound after SIGKILL");
    assert!(engine.rule_present(), "the capture rule stays");
    // The queue bypass: traffic flows without the engine...
    lab.sim.set_level(0);
    lab.curl("https://blocked.test/", &[])
        .assert_ok(b"ok blocked.test\n", &lab);
    lab.curl("https://allowed.test/", &[])
        .assert_ok(b"ok allowed.test\n", &lab);
    // ...but un-desynced: the DPI sees the whole name again.
    lab.sim.set_level(1);
    lab.curl("https://blocked.test/", &[]).assert_reset(&lab);
}

#[test]
fn multisplit_defeats_level_1_over_ipv6() {
    let lab = lab(Topology::new(), 1);
    let resolve = format!("blocked.test:443:[{}]", Topology::SERVER_V6);
    let v6 = ["--resolve", resolve.as_str()];
    let direct = lab.curl("https://blocked.test/", &v6);
    direct.assert_reset(&lab);
    assert_eq!(
        direct.client.map(|c| c.ip()),
        Some(IpAddr::V6(Topology::CLIENT_V6))
    );

    let engine = lab.engine(&MULTISPLIT);
    let fetch = lab.curl("https://blocked.test/", &v6);
    fetch.assert_ok(b"ok blocked.test\n", &lab);
    assert_eq!(
        fetch.client.map(|c| c.ip()),
        Some(IpAddr::V6(Topology::CLIENT_V6))
    );
    lab.assert_seen_split(&fetch);
    let desynced = engine.desynced_requests();
    assert_eq!(desynced.len(), 1, "{}", engine.log());
    assert_eq!(desynced[0].host, "blocked.test");
}

#[test]
fn a_stopped_engine_exits_cleanly_and_leaves_no_rule() {
    let lab = lab(Topology::new(), 1);
    let mut engine = lab.engine(&MULTISPLIT);
    engine.stop();
    assert!(!engine.queue_bound());
    drop(engine);
    let rules = lab.topology.client.exec("iptables-save", &["-t", "mangle"]);
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    assert!(!rules.contains("NFQUEUE"), "{rules}");
    let rules = lab
        .topology
        .client
        .exec("ip6tables-save", &["-t", "mangle"]);
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    assert!(!rules.contains("NFQUEUE"), "{rules}");
    lab.curl("https://blocked.test/", &[]).assert_reset(&lab);
}
