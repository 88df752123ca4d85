//! The DPI simulator on its own, with no Veil engine: curl and a hand-shaped
//! TLS client in [c], the simulator in [d], the test site in [s]. Each test
//! has its own namespaces, so they run in parallel.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use veil_e2e::dpi_lab::DpiLab;
use veil_e2e::dpi_sim::{DpiSim, DpiSimOptions};
use veil_e2e::netns::Topology;
use veil_e2e::tls_client::{ClientError, Fake, FirstFlight, https_get};

struct Lab(DpiLab);

impl std::ops::Deref for Lab {
    type Target = DpiLab;
    fn deref(&self) -> &DpiLab {
        &self.0
    }
}

fn lab(level: u8) -> Lab {
    Lab(DpiLab::new(level))
}

impl Lab {
    /// curl in [c] (names from [c]'s hosts file); `Ok(status)` or
    /// `Err(curl's error text)`.
    fn curl(&self, url: &str, extra: &[&str]) -> Result<String, String> {
        let fetch = self.0.curl(url, extra);
        if fetch.exit == 0 {
            Ok(fetch.status)
        } else {
            Err(fetch.stderr)
        }
    }

    fn assert_reset(&self, url: &str, extra: &[&str]) {
        let error = self
            .curl(url, extra)
            .expect_err("the DPI must block this request");
        assert!(
            error.to_lowercase().contains("reset"),
            "expected a RST, got: {error}\nsimulator: {}",
            self.sim.stderr_text()
        );
    }

    /// A TLS GET from [c] to the site's IPv4 address with a shaped first flight.
    fn tls_get(&self, name: &str, flight: FirstFlight) -> Result<u16, ClientError> {
        let server = SocketAddr::new(IpAddr::V4(Topology::SERVER_V4), 443);
        let ca = self.site.ca_der.clone();
        let name = name.to_string();
        self.topology
            .client
            .enter(move || https_get(server, &name, "/", &ca, &flight))
    }

    fn decision(&self, key: &str, name: &str, verdict: &str) -> Option<Value> {
        self.sim
            .decisions()
            .into_iter()
            .find(|d| d[key] == name && d["verdict"] == verdict)
    }
}

/// Sends one ICMP echo request to `to` and waits up to 2 s for the reply.
fn echo_reply_from(to: Ipv4Addr) -> bool {
    use etherparse::{IcmpEchoHeader, Icmpv4Header, Icmpv4Type, SlicedPacket, TransportSlice};
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    use std::io::Read;

    let echo = IcmpEchoHeader { id: 0x7665, seq: 1 };
    let payload = b"veil-dpi-sim";
    let header = Icmpv4Header::with_checksum(Icmpv4Type::EchoRequest(echo), payload);
    let mut message = header.to_bytes().to_vec();
    message.extend_from_slice(payload);
    let mut socket =
        Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).expect("raw ICMP socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    socket
        .send_to(&message, &SockAddr::from(SocketAddr::new(to.into(), 0)))
        .expect("send the echo request");
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buffer = [0u8; 1500];
    while Instant::now() < deadline {
        let Ok(n) = socket.read(&mut buffer) else {
            continue;
        };
        if let Ok(packet) = SlicedPacket::from_ip(&buffer[..n])
            && let Some(TransportSlice::Icmpv4(icmp)) = packet.transport
            && icmp.icmp_type() == Icmpv4Type::EchoReply(echo)
        {
            return true;
        }
    }
    false
}

#[test]
fn level_0_passes_https_http_and_other_traffic() {
    let lab = lab(0);
    assert_eq!(lab.curl("https://blocked.test/", &[]), Ok("200".into()));
    assert_eq!(lab.curl("http://blocked.test/", &[]), Ok("200".into()));
    let size = lab
        .topology
        .client
        .command("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
        ])
        .arg("--cacert")
        .arg(&lab.site.ca_pem)
        .arg("https://allowed.test/bytes/65536")
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&size.stdout), "65536");
    // ICMP is forwarded too.
    assert!(
        lab.topology
            .client
            .enter(|| echo_reply_from(Topology::SERVER_V4)),
        "no echo reply through [d]"
    );
    assert!(lab.sim.decisions().is_empty(), "level 0 decides nothing");
}

#[test]
fn level_1_resets_a_blocked_name_and_passes_an_allowed_one() {
    let lab = lab(1);
    lab.assert_reset("https://blocked.test/", &[]);
    lab.assert_reset("https://sub.blocked.test/", &[]);
    lab.assert_reset("http://blocked.test/", &[]);
    assert_eq!(lab.curl("https://allowed.test/", &[]), Ok("200".into()));
    assert_eq!(lab.curl("http://allowed.test/", &[]), Ok("200".into()));

    let blocked = lab
        .decision("sni", "blocked.test", "block")
        .expect("a block decision for blocked.test");
    assert_eq!(blocked["level"], 1);
    assert_eq!(blocked["reason"], "blocked name blocked.test");
    assert!(
        blocked["flow"]
            .as_str()
            .is_some_and(|f| f.starts_with("198.18.1.2:") && f.ends_with("-> 198.18.2.2:443")),
        "{blocked}"
    );
    assert!(lab.decision("sni", "sub.blocked.test", "block").is_some());
    assert!(lab.decision("host", "blocked.test", "block").is_some());
    assert!(lab.decision("sni", "allowed.test", "pass").is_some());
    assert!(lab.decision("host", "allowed.test", "pass").is_some());
}

#[test]
fn level_1_resets_over_ipv6_too() {
    let lab = lab(1);
    let resolve = format!("blocked.test:443:[{}]", Topology::SERVER_V6);
    lab.assert_reset("https://blocked.test/", &["--resolve", &resolve]);
    let resolve = format!("allowed.test:443:[{}]", Topology::SERVER_V6);
    assert_eq!(
        lab.curl("https://allowed.test/", &["--resolve", &resolve]),
        Ok("200".into())
    );
}

#[test]
fn level_1_passes_a_client_hello_split_inside_the_sni() {
    let lab = lab(1);
    let whole = lab.tls_get("blocked.test", FirstFlight::Whole);
    assert!(whole.is_err(), "unsplit must be blocked: {whole:?}");
    let split = FirstFlight::SplitMidSni;
    let result = lab.tls_get("blocked.test", split);
    let decisions = lab.sim.decisions();
    assert_eq!(result.unwrap(), 200, "{decisions:?}");
    assert!(
        decisions
            .iter()
            .any(|d| d["verdict"] == "pass"
                && d["reason"] == "name not entirely inside this segment"),
        "{decisions:?}"
    );
}

#[test]
fn level_2_blocks_a_client_hello_split_inside_the_sni() {
    let lab = lab(2);
    let split = FirstFlight::SplitMidSni;
    let result = lab.tls_get("blocked.test", split);
    assert!(result.is_err(), "level 2 reassembles: {result:?}");
    let blocked = lab
        .decision("sni", "blocked.test", "block")
        .expect("a block decision");
    assert_eq!(blocked["level"], 2);
    assert_eq!(lab.curl("https://allowed.test/", &[]), Ok("200".into()));
}

#[test]
fn level_2_lets_the_first_client_hello_win_even_a_ttl_1_fake() {
    let lab = lab(2);
    let fake = FirstFlight::AfterFake(Fake {
        sni: "allowed.test".into(),
        ttl: 1,
        bad_checksum: false,
    });
    // The handshake completing also proves the fake never reached the
    // server: it would have answered the fake's ClientHello instead.
    assert_eq!(lab.tls_get("blocked.test", fake).unwrap(), 200);
    let decided = lab
        .decision("sni", "allowed.test", "pass")
        .expect("the fake decided the flow");
    assert_eq!(decided["level"], 2);
    assert!(lab.decision("sni", "blocked.test", "block").is_none());
    assert!(lab.tls_get("blocked.test", FirstFlight::Whole).is_err());
}

#[test]
fn level_2_ignores_checksums_so_a_bad_checksum_fake_wins_too() {
    let lab = lab(2);
    let fake = FirstFlight::AfterFake(Fake {
        sni: "allowed.test".into(),
        ttl: 64,
        bad_checksum: true,
    });
    assert_eq!(lab.tls_get("blocked.test", fake).unwrap(), 200);
    assert!(lab.decision("sni", "allowed.test", "pass").is_some());
}

#[test]
fn level_switches_at_run_time() {
    let lab = lab(0);
    assert_eq!(lab.curl("https://blocked.test/", &[]), Ok("200".into()));
    lab.sim.set_level(1);
    assert_eq!(lab.sim.level(), 1);
    lab.assert_reset("https://blocked.test/", &[]);
    lab.sim.set_level(0);
    assert_eq!(lab.curl("https://blocked.test/", &[]), Ok("200".into()));
    assert!(lab.sim.request("level 4").unwrap().starts_with("error"));
    let switches: Vec<_> = lab
        .sim
        .log_lines()
        .into_iter()
        .filter(|l| l["event"] == "level")
        .map(|l| (l["from"].as_u64(), l["to"].as_u64()))
        .collect();
    assert_eq!(switches, [(Some(0), Some(1)), (Some(1), Some(0))]);
}

#[test]
fn a_dead_simulator_fails_closed() {
    let mut lab = lab(0);
    assert_eq!(lab.curl("https://allowed.test/", &[]), Ok("200".into()));
    lab.0.sim.kill();
    let error = lab
        .curl("https://allowed.test/", &["--max-time", "2"])
        .expect_err("nothing may pass without the simulator");
    assert!(error.contains("timed out"), "{error}");
    // A new simulator on the same queue brings traffic back.
    lab.0.sim = DpiSim::start(&lab.topology, DpiSimOptions::default());
    assert_eq!(lab.curl("https://allowed.test/", &[]), Ok("200".into()));
}

/// `curl URL` in [c] with the test CA: (exit code, bytes of body received).
fn download_size(lab: &Lab, url: &str, max_time: &str) -> (i32, u64) {
    let output = lab
        .topology
        .client
        .command("curl")
        .args(["-sS", "--max-time", max_time, "-o", "/dev/null"])
        .args(["-w", "%{size_download}"])
        .arg("--cacert")
        .arg(&lab.site.ca_pem)
        .arg(url)
        .output()
        .expect("curl");
    let size = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl printed no size: {output:?}"));
    (output.status.code().unwrap_or(-1), size)
}

#[test]
fn level_3_lets_small_answers_through_and_freezes_downloads_after_16_to_20_kb() {
    let lab = lab(3);
    // A header-only check of a blocked name passes: the handshake and a
    // small answer fit before the freeze.
    assert_eq!(lab.curl("https://blocked.test/", &[]), Ok("200".into()));
    // 64 KiB of the blocked name stall: no RST, curl times out with part of
    // the body (the freeze counts the server's TLS bytes, handshake included).
    let (exit, size) = download_size(&lab, "https://blocked.test/bytes/65536", "4");
    assert_eq!(exit, 28, "curl must time out, not fail otherwise");
    assert!(size < 20 * 1024, "{size} bytes got through");
    let (exit, size) = download_size(&lab, "http://blocked.test/bytes/65536", "4");
    assert_eq!(exit, 28);
    assert!(
        (12 * 1024..=20 * 1024).contains(&size),
        "plain HTTP freezes after 16–20 KB less the response header: {size}"
    );
    // The allowed name downloads in full.
    assert_eq!(
        download_size(&lab, "https://allowed.test/bytes/65536", "10"),
        (0, 65536)
    );
    let throttle = lab
        .decision("sni", "blocked.test", "throttle")
        .expect("a throttle decision");
    assert_eq!(throttle["level"], 3);
    let freeze = lab
        .sim
        .decisions()
        .into_iter()
        .find(|d| d["verdict"] == "freeze")
        .expect("a freeze decision");
    let after = freeze["freezeAfter"].as_u64().unwrap();
    assert!((16 * 1024..=20 * 1024).contains(&after), "{freeze}");
}

#[test]
fn level_3_can_be_switched_on_while_running() {
    let lab = lab(2);
    assert_eq!(
        download_size(&lab, "https://allowed.test/bytes/65536", "10"),
        (0, 65536)
    );
    lab.sim.set_level(3);
    let (exit, _) = download_size(&lab, "https://blocked.test/bytes/65536", "4");
    assert_eq!(exit, 28, "blocked downloads stall at level 3");
    lab.sim.set_level(1);
    lab.assert_reset("https://blocked.test/", &[]);
}
