//! The bench's network: client ─ router ─ server namespaces, the built-in
//! engine (`veil-agent desync`) in the client namespace behind the capture
//! rule the agent installs, a TCP echo/download server in the server
//! namespace, and counters in the server namespace that tell whether each
//! connection's first data segment arrived split.
//!
//! Everything is removed on drop: the engine is stopped (by its pid), the
//! server threads joined, the namespaces deleted.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use veil_e2e::netns::{Namespace, Topology};
use veil_e2e::process::{binary, terminate};

/// The name every bench ClientHello carries; the engine's hostlist holds it.
pub const SNI: &str = "blocked.test";
const PORT: u16 = 443;
const QUEUE: u16 = 200;
const MARK: &str = "0x40000000";
/// Threads accepting on the server (each serves one connection at a time).
const SERVER_THREADS: usize = 32;
/// Bounds every socket wait, so a lost packet cannot hang the bench.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Comments on [s]'s counting rules.
const DATA_RULE: &str = "veil-bench-first-data";
const SPLIT_RULE: &str = "veil-bench-first-data-split";

/// Namespaces, engine and server; torn down in field order on drop.
pub struct Lab {
    engine: Child,
    server: EchoServer,
    pub topology: Topology,
    dir: tempfile::TempDir,
    pub hello: Vec<u8>,
}

impl Lab {
    /// Builds the namespaces, starts the server and the engine (bound, but
    /// with no capture rule yet: see [`Lab::capture`]).
    pub fn start() -> Lab {
        let topology = Topology::new();
        let client = &topology.client;
        client.sysctl("net.ipv4.ip_local_port_range", "1024 65535");
        client.sysctl("net.ipv4.tcp_tw_reuse", "1");
        let hello = veil_e2e::tls_client::client_hello(SNI);
        let server = EchoServer::start(&topology.server, hello.len());
        count_first_data_segments(&topology.server);

        let dir = tempfile::tempdir().expect("temp dir");
        let hostlist = dir.path().join("hostlist.txt");
        std::fs::write(&hostlist, format!("{SNI}\n")).expect("hostlist");
        let log = std::fs::File::create(dir.path().join("engine.log")).expect("engine log");
        let engine = client
            .command(binary("veil-agent"))
            .arg("desync")
            .arg(format!("--qnum={QUEUE}"))
            .arg(format!("--dpi-desync-fwmark={MARK}"))
            .arg("--filter-tcp=443")
            .arg(format!("--hostlist={}", hostlist.display()))
            .args(["--dpi-desync=multisplit", "--dpi-desync-split-pos=1,midsld"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("veil-agent desync");
        let mut lab = Lab {
            engine,
            server,
            topology,
            dir,
            hello,
        };
        lab.wait_bound();
        lab
    }

    /// The engine's pid (`ip netns exec` execs it in place).
    pub fn engine_pid(&self) -> u32 {
        self.engine.id()
    }

    fn wait_bound(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let table = self
                .topology
                .client
                .exec("cat", &["/proc/net/netfilter/nfnetlink_queue"]);
            let bound = String::from_utf8_lossy(&table.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(&QUEUE.to_string()));
            if bound {
                return;
            }
            if let Ok(Some(status)) = self.engine.try_wait() {
                panic!("the engine exited ({status}): {}", self.engine_log());
            }
            assert!(Instant::now() < deadline, "queue {QUEUE} never bound");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn engine_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("engine.log")).unwrap_or_default()
    }

    /// Puts the agent's capture rule in [c] (`on`) or takes it out.
    pub fn capture(&self, on: bool) {
        self.rule(on, &["NFQUEUE", "--queue-num", "200", "--queue-bypass"]);
    }

    /// The same rule ending in `ACCEPT` (`on`) or taken out: conntrack and
    /// connbytes accounting in [c] as with the engine, nothing queued.
    pub fn conntrack_only(&self, on: bool) {
        self.rule(on, &["ACCEPT"]);
    }

    fn rule(&self, on: bool, target: &[&str]) {
        let rule = veil_e2e::desync_engine::capture_match();
        let mut args = vec!["-w", "-t", "mangle", if on { "-A" } else { "-D" }];
        args.extend(rule.iter().map(String::as_str));
        args.extend(target);
        self.topology.client.exec("iptables", &args);
    }

    /// (connections whose first data segment reached [s], of those how many
    /// had it split) since the last call: the counters are zeroed.
    pub fn take_split_counts(&self) -> (u64, u64) {
        let server = &self.topology.server;
        let listing = server.exec("iptables", &["-w", "-L", "INPUT", "-v", "-x", "-n"]);
        server.exec("iptables", &["-w", "-Z", "INPUT"]);
        let text = String::from_utf8_lossy(&listing.stdout);
        let count = |comment: &str| {
            text.lines()
                .find(|l| l.contains(&format!("/* {comment} */")))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .expect("a counting rule")
        };
        (count(DATA_RULE), count(SPLIT_RULE))
    }

    /// Runs `f` on `threads` threads inside [c] at once; their results.
    pub fn in_client<T: Send>(&self, threads: usize, f: impl Fn() -> T + Sync) -> Vec<T> {
        let client: &Namespace = &self.topology.client;
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| scope.spawn(|| client.enter(&f)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("client thread"))
                .collect()
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        terminate(&mut self.engine, Duration::from_secs(2));
        self.server.stop();
    }
}

/// Two counting rules in [s]: the third packet of a connection to :443 is
/// its first data segment (SYN, ACK, data); with the engine splitting at 1
/// it is a 1-byte segment, without it the whole ClientHello.
fn count_first_data_segments(server: &Namespace) {
    for (comment, length) in [(DATA_RULE, None), (SPLIT_RULE, Some("0:80"))] {
        let mut args = vec!["-w", "-A", "INPUT", "-p", "tcp", "--dport", "443"];
        args.extend([
            "-m",
            "connbytes",
            "--connbytes-dir=original",
            "--connbytes-mode=packets",
            "--connbytes",
            "3:3",
        ]);
        if let Some(length) = length {
            args.extend(["-m", "length", "--length", length]);
        }
        args.extend(["-m", "comment", "--comment", comment]);
        server.exec("iptables", &args);
    }
}

/// Connects from the calling thread (which must be inside [c]), sends the
/// ClientHello and waits for its echo. Returns (connect → echo, write →
/// echo). The stream is returned for a download, or dropped (closed).
pub fn exchange(hello: &[u8]) -> io::Result<(Duration, Duration, TcpStream)> {
    let started = Instant::now();
    let server = SocketAddr::new(IpAddr::V4(Topology::SERVER_V4), PORT);
    let mut stream = TcpStream::connect_timeout(&server, IO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let written = Instant::now();
    stream.write_all(hello)?;
    let mut echo = vec![0u8; hello.len()];
    stream.read_exact(&mut echo)?;
    let done = Instant::now();
    if echo != hello {
        return Err(io::Error::other("the echo differs from the ClientHello"));
    }
    Ok((done - started, done - written, stream))
}

/// After [`exchange`]: asks for `bytes` bytes and reads them to EOF;
/// returns how many arrived.
pub fn download(stream: &mut TcpStream, bytes: u64) -> io::Result<u64> {
    stream.write_all(&bytes.to_be_bytes())?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// In [s] on :443: reads a ClientHello-sized request and echoes it; then,
/// if 8 more bytes (a big-endian count) arrive, sends that many bytes;
/// closes at the client's EOF or after the download.
struct EchoServer {
    listener: TcpListener,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServer {
    fn start(ns: &Namespace, request_len: usize) -> EchoServer {
        let listener = ns.enter(|| {
            TcpListener::bind(SocketAddr::new(IpAddr::V4(Topology::SERVER_V4), PORT))
                .expect("listen in [s]")
        });
        let threads = (0..SERVER_THREADS)
            .map(|_| {
                let listener = listener.try_clone().expect("listener clone");
                std::thread::spawn(move || {
                    // Ends when the listener is shut down (accept fails).
                    while let Ok((stream, _)) = listener.accept() {
                        let _ = serve(stream, request_len);
                    }
                })
            })
            .collect();
        EchoServer { listener, threads }
    }

    fn stop(&mut self) {
        let _ = socket2::SockRef::from(&self.listener).shutdown(Shutdown::Both);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn serve(mut stream: TcpStream, request_len: usize) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = vec![0u8; request_len];
    stream.read_exact(&mut request)?;
    stream.write_all(&request)?;
    let mut count = [0u8; 8];
    if stream.read_exact(&mut count).is_err() {
        return Ok(());
    }
    let mut left = u64::from_be_bytes(count);
    let chunk = vec![0x5au8; 256 * 1024];
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    Ok(())
}
