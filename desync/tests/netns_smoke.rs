//! Smoke test of the real packet path: the engine bound to an NFQUEUE in a
//! network namespace of its own, a capture rule like the agent installs,
//! a TCP client and server on that namespace's loopback, and an AF_PACKET
//! socket on `lo` that sees what actually went over the wire.
//!
//! One binary, three roles (this file has its own `main`; cargo runs it
//! with `harness = false`): without `VEIL_SMOKE_ROLE` it is the test
//! driver; re-executed under `ip netns exec` with `VEIL_SMOKE_ROLE=engine`
//! it runs the engine until its stdin closes; with `VEIL_SMOKE_ROLE=probe`
//! it sends one request and reports the segments seen.
//!
//! Scenarios (all in one namespace whose `lo` has MTU 1280, so a
//! 1800-byte ClientHello takes two segments, like Chrome's ML-KEM one):
//! - `no_engine_traffic_flows_through_the_bypass`: rule present, nobody
//!   bound: `--queue-bypass` lets the request through unchanged;
//! - `multisplit_reassembles_and_splits_a_two_segment_client_hello`;
//! - `ipv6_multisplit_reassembles_and_splits_a_two_segment_client_hello`
//!   (same over `::1`: IPv6 headers and raw IPv6 injection);
//! - `multidisorder_sends_the_parts_last_first`;
//! - `fake_with_badseq_goes_first_and_never_reaches_the_server`;
//! - `killed_engine_fails_open`: SIGKILL the engine, traffic flows.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use veil_desync::engine::fake::client_hello;
use veil_desync::engine::{NoLists, run};
use veil_desync::spec::{
    Config, Desync, Fooling, Globals, Marker, PortFilter, Profile, SplitMode, SplitPos,
};

const ROLE: &str = "VEIL_SMOKE_ROLE";
const MODE: &str = "VEIL_SMOKE_MODE";
/// `6`: the probe talks over `::1` instead of `127.0.0.1`.
const FAMILY: &str = "VEIL_SMOKE_FAMILY";
const NS_PREFIX: &str = "veil-desync-";
const QNUM: u16 = 217;
const PORT: u16 = 4433;
const MARK: u32 = 0x4000_0000;
const SNI: &str = "www.blocked.test";
/// The probe's ClientHello size: above the 1280-MTU segment size.
const HELLO_LEN: usize = 1800;
/// TTL the fake carries (loopback never decrements it, so it shows as is).
const FAKE_TTL: u8 = 7;

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("engine") => engine_role(),
        Ok("probe") => probe_role(),
        _ => driver(),
    }
}

// ---------------------------------------------------------------- roles

/// The engine configured by `VEIL_SMOKE_MODE`; stops when stdin closes.
fn engine_role() {
    let mode = std::env::var(MODE).unwrap_or_default();
    let mut desync = Desync::default();
    match mode.as_str() {
        "multisplit" | "multidisorder" => {
            desync.split = Some(if mode == "multisplit" {
                SplitMode::Multisplit
            } else {
                SplitMode::Multidisorder
            });
            desync.split_pos = vec![
                SplitPos {
                    marker: Marker::Absolute,
                    offset: 1,
                },
                SplitPos {
                    marker: Marker::Host,
                    offset: 3,
                },
            ];
        }
        "fake-badseq" => {
            desync.fake = true;
            desync.ttl = Some(FAKE_TTL);
            desync.fooling = Fooling {
                badsum: false,
                badseq: true,
            };
        }
        other => panic!("unknown mode {other:?}"),
    }
    let config = Config {
        globals: Globals {
            qnum: QNUM,
            fwmark: MARK,
            ..Globals::default()
        },
        profiles: vec![Profile {
            number: 1,
            tcp: Some(PortFilter {
                negate: false,
                ranges: vec![(PORT, PORT)],
            }),
            desync,
            ..Profile::default()
        }],
    };
    let shutdown = veil_desync::engine::Shutdown::new();
    let trigger = shutdown.clone();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        trigger.trigger();
        // An idle engine blocks in the kernel holding nothing; like
        // `veil-agent desync`, exit under it after a short grace.
        std::thread::sleep(Duration::from_millis(500));
        std::process::exit(0);
    });
    if let Err(e) = run(config, NoLists, shutdown) {
        eprintln!("engine failed: {e}");
        std::process::exit(1);
    }
}

/// Sends a ClientHello of `VEIL_SMOKE_MODE` bytes to a local server, then
/// prints `RECEIVED <ok>` and one `SEG <rel seq> <ttl> <len>` line per
/// client data segment seen on `lo`.
fn probe_role() {
    let len: usize = std::env::var(MODE)
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(HELLO_LEN);
    let hello = client_hello(SNI, len);
    let sniffer = Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from(i32::from(0x0003u16.to_be()))),
    )
    .expect("AF_PACKET socket");
    sniffer.bind_device(Some(b"lo")).expect("bind lo");
    sniffer
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");

    let addr: IpAddr = if std::env::var(FAMILY).as_deref() == Ok("6") {
        Ipv6Addr::LOCALHOST.into()
    } else {
        Ipv4Addr::LOCALHOST.into()
    };
    let listener = TcpListener::bind((addr, PORT)).expect("listen");
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut got = Vec::new();
        conn.read_to_end(&mut got).expect("server read");
        got
    });
    let mut client = TcpStream::connect((addr, PORT)).expect("connect");
    client.set_nodelay(true).expect("nodelay");
    client.write_all(&hello).expect("send");
    client.shutdown(Shutdown::Write).expect("shutdown");
    let got = server.join().expect("server thread");
    println!("RECEIVED {}", got == hello);

    // Every frame appears twice on lo (out and in); keep the first copy.
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 70_000];
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        match (&sniffer).read(&mut buf) {
            Ok(n) if !frames.iter().any(|f| f[..] == buf[..n]) => frames.push(buf[..n].to_vec()),
            _ => {}
        }
    }
    let mut isn = None;
    for frame in &frames {
        let ip = &frame[14..];
        // (header length, total length, TTL/hop limit) of TCP packets.
        let (ihl, total, ttl) = match ip[0] >> 4 {
            4 if ip[9] == 6 => (
                usize::from(ip[0] & 0x0f) * 4,
                usize::from(u16::from_be_bytes([ip[2], ip[3]])),
                ip[8],
            ),
            6 if ip[6] == 6 => (
                40,
                40 + usize::from(u16::from_be_bytes([ip[4], ip[5]])),
                ip[7],
            ),
            _ => continue,
        };
        let tcp = &ip[ihl..total];
        let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        let flags = tcp[13];
        if dport != PORT {
            continue;
        }
        if flags & 0x12 == 0x02 {
            isn = Some(seq);
        }
        let payload = tcp.len() - usize::from(tcp[12] >> 4) * 4;
        if payload > 0 {
            let rel = seq.wrapping_sub(isn.expect("SYN seen first").wrapping_add(1)) as i32;
            println!("SEG {rel} {ttl} {payload}");
        }
    }
}

// ---------------------------------------------------------------- driver

/// A data segment the probe saw: offset from the first data byte, TTL, length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seg {
    rel: i32,
    ttl: u8,
    len: usize,
}

struct Probe {
    received_ok: bool,
    segs: Vec<Seg>,
}

fn driver() {
    assert!(
        std::fs::metadata("/proc/self/ns/net").is_ok() && is_root(),
        "the netns smoke test needs root (CAP_NET_ADMIN) and the `ip` command"
    );
    // `make env` installs both; install them here once if it has not run.
    for (tool, package) in [("iptables", "iptables"), ("ethtool", "ethtool")] {
        if Command::new(tool).arg("--version").output().is_err() {
            run_cmd("apt-get", &["install", "-y", package]);
        }
    }
    remove_stale_namespaces();
    let ns = Netns::create();
    ns.exec(&["ip", "link", "set", "lo", "mtu", "1280", "up"]);
    // Without segmentation offload the wire shows real MSS-sized segments
    // (otherwise lo carries one 1800-byte GSO packet, and the queue gets
    // the segments only because NFQUEUE segments GSO packets for us).
    ns.exec(&["ethtool", "-K", "lo", "tso", "off", "gso", "off"]);
    let port = PORT.to_string();
    let qnum = QNUM.to_string();
    ns.exec(&[
        "iptables",
        "-t",
        "mangle",
        "-A",
        "OUTPUT",
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
        "0x40000000/0x40000000",
        "-j",
        "NFQUEUE",
        "--queue-num",
        &qnum,
        "--queue-bypass",
    ]);

    ns.exec(&[
        "ip6tables",
        "-t",
        "mangle",
        "-A",
        "OUTPUT",
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
        "0x40000000/0x40000000",
        "-j",
        "NFQUEUE",
        "--queue-num",
        &qnum,
        "--queue-bypass",
    ]);

    let mut failures = Vec::new();
    let mut check = |name: &str, result: Result<(), String>| match result {
        Ok(()) => println!("test {name} ... ok"),
        Err(e) => {
            println!("test {name} ... FAILED\n    {e}");
            failures.push(name.to_string());
        }
    };

    let hello = client_hello(SNI, HELLO_LEN);
    let host = find(&hello, SNI.as_bytes()) as i32;

    // Without an engine: the original segmentation, through the bypass.
    let original = ns.probe(HELLO_LEN);
    let boundaries: Vec<i32> = original.segs.iter().map(|s| s.rel).collect();
    check(
        "no_engine_traffic_flows_through_the_bypass",
        expect(original.received_ok, "server got the exact bytes")
            .and(expect(
                original.segs.len() >= 2,
                &format!("request takes several segments: {:?}", original.segs),
            ))
            .and(expect(
                contiguous(&original.segs),
                "segments are contiguous",
            )),
    );

    {
        let engine = ns.engine("multisplit");
        let p = ns.probe(HELLO_LEN);
        let mut want: Vec<i32> = boundaries.clone();
        want.extend([1, host + 3]);
        want.sort_unstable();
        want.dedup();
        let got: Vec<i32> = p.segs.iter().map(|s| s.rel).collect();
        check(
            "multisplit_reassembles_and_splits_a_two_segment_client_hello",
            expect(p.received_ok, "server got the exact bytes")
                .and(expect(
                    got == want,
                    &format!("segment starts {got:?}, want {want:?}"),
                ))
                .and(expect(contiguous(&p.segs), "segments are contiguous")),
        );
        engine.stop();
    }
    {
        let original6 = ns.probe_v6(HELLO_LEN);
        let engine = ns.engine("multisplit");
        let p = ns.probe_v6(HELLO_LEN);
        let mut want: Vec<i32> = original6.segs.iter().map(|s| s.rel).collect();
        want.extend([1, host + 3]);
        want.sort_unstable();
        want.dedup();
        let got: Vec<i32> = p.segs.iter().map(|s| s.rel).collect();
        check(
            "ipv6_multisplit_reassembles_and_splits_a_two_segment_client_hello",
            expect(
                original6.received_ok && original6.segs.len() >= 2,
                &format!("v6 bypass: {:?}", original6.segs),
            )
            .and(expect(p.received_ok, "server got the exact bytes"))
            .and(expect(
                got == want,
                &format!("segment starts {got:?}, want {want:?}"),
            ))
            .and(expect(contiguous(&p.segs), "segments are contiguous")),
        );
        engine.stop();
    }
    {
        let engine = ns.engine("multidisorder");
        let p = ns.probe(HELLO_LEN);
        let mut want: Vec<i32> = boundaries.clone();
        want.extend([1, host + 3]);
        want.sort_unstable();
        want.dedup();
        want.reverse();
        // The kernel may retransmit the first part after SACKs; judge the first pass.
        let got: Vec<i32> = p.segs.iter().take(want.len()).map(|s| s.rel).collect();
        check(
            "multidisorder_sends_the_parts_last_first",
            expect(p.received_ok, "server got the exact bytes").and(expect(
                got == want,
                &format!("segment starts {got:?}, want {want:?}"),
            )),
        );
        engine.stop();
    }
    {
        let engine = ns.engine("fake-badseq");
        let p = ns.probe(517);
        let first = p.segs.first().copied();
        check(
            "fake_with_badseq_goes_first_and_never_reaches_the_server",
            expect(p.received_ok, "server got the exact bytes, not the fake")
                .and(expect(
                    first.is_some_and(|s| s.rel == -10_000 && s.ttl == FAKE_TTL),
                    &format!("first segment is the badseq fake: {:?}", p.segs),
                ))
                .and(expect(
                    p.segs
                        .iter()
                        .any(|s| s.rel == 0 && s.len == 517 && s.ttl == 64),
                    "the original follows",
                )),
        );
        engine.stop();
    }
    {
        let mut engine = ns.engine("multisplit");
        engine.kill();
        let p = ns.probe(HELLO_LEN);
        let got: Vec<i32> = p.segs.iter().map(|s| s.rel).collect();
        check(
            "killed_engine_fails_open",
            expect(p.received_ok, "server got the exact bytes").and(expect(
                got == boundaries,
                &format!("untouched segments {got:?}, want {boundaries:?}"),
            )),
        );
    }
    drop(ns);
    assert!(failures.is_empty(), "failed: {failures:?}");
}

fn expect(ok: bool, what: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.to_string()) }
}

fn contiguous(segs: &[Seg]) -> bool {
    let mut next = 0;
    for s in segs {
        if s.rel != next {
            return false;
        }
        next += s.len as i32;
    }
    next as usize == HELLO_LEN
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn run_cmd(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes namespaces with our prefix whose creating process is gone.
fn remove_stale_namespaces() {
    for line in run_cmd("ip", &["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "delete", name]).status();
        }
    }
}

/// A network namespace named `veil-desync-<pid>-<n>`, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("{NS_PREFIX}{}-{nanos}", std::process::id());
        run_cmd("ip", &["netns", "add", &name]);
        Netns { name }
    }

    fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        run_cmd("ip", &full)
    }

    fn reexec(&self, role: &str, mode: &str) -> Command {
        let exe = std::env::current_exe().expect("current exe");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(exe)
            .env(ROLE, role)
            .env(MODE, mode);
        cmd
    }

    /// Starts the engine and waits until its queue is bound.
    fn engine(&self, mode: &str) -> Engine {
        let child = self
            .reexec("engine", mode)
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn engine");
        let deadline = Instant::now() + Duration::from_secs(5);
        let bound = |ns: &Netns| {
            ns.exec(&["cat", "/proc/net/netfilter/nfnetlink_queue"])
                .lines()
                .any(|l| l.split_whitespace().next() == Some(&QNUM.to_string()))
        };
        while !bound(self) {
            assert!(
                Instant::now() < deadline,
                "engine did not bind queue {QNUM} within 5 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Engine { child }
    }

    fn probe(&self, len: usize) -> Probe {
        self.probe_family(len, "4")
    }

    fn probe_v6(&self, len: usize) -> Probe {
        self.probe_family(len, "6")
    }

    fn probe_family(&self, len: usize, family: &str) -> Probe {
        let out = self
            .reexec("probe", &len.to_string())
            .env(FAMILY, family)
            .output()
            .expect("run probe");
        assert!(
            out.status.success(),
            "probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut probe = Probe {
            received_ok: false,
            segs: Vec::new(),
        };
        for line in BufReader::new(&out.stdout[..])
            .lines()
            .map_while(Result::ok)
        {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["RECEIVED", ok] => probe.received_ok = *ok == "true",
                ["SEG", rel, ttl, len] => probe.segs.push(Seg {
                    rel: rel.parse().expect("rel"),
                    ttl: ttl.parse().expect("ttl"),
                    len: len.parse().expect("len"),
                }),
                _ => {}
            }
        }
        probe
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// A running engine process (killed on drop if still running).
struct Engine {
    child: Child,
}

impl Engine {
    /// Closes its stdin and waits for a clean exit.
    fn stop(mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait().expect("wait engine") {
                Some(status) => {
                    assert!(status.success(), "engine exited with {status}");
                    return;
                }
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                None => panic!("engine did not stop within 5 s"),
            }
        }
    }

    /// SIGKILL, by PID (the child is the engine itself: `ip netns exec` execs).
    fn kill(&mut self) {
        self.child.kill().expect("kill engine");
        self.child.wait().expect("reap engine");
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
