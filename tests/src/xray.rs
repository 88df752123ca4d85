//! Real xray peers for VLESS tests: the xray binary `make env` builds, a
//! local TLS 1.3 site for Reality's `dest` (a threaded Python HTTPS server), a second
//! xray as the VLESS+Reality client with a SOCKS inbound, a SOCKS5 connect,
//! and a byte server (echo, or a paced endless stream) to move bytes through.
//!
//! Every process is killed when its handle drops.
//!
//! The Reality site listens on [`DEST_HOST`] and the byte server on
//! [`ECHO_HOST`], not on 127.0.0.1: VLESS users are fenced off loopback, so
//! servers under test open exactly these two addresses ([`ALLOW_CIDRS`])
//! and 127.0.0.1 stays fenced.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::process::free_port;

/// Loopback address of the Reality site ([`RealityDest`]).
pub const DEST_HOST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// Loopback address of the byte server ([`ByteServer`]).
pub const ECHO_HOST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// What a test ProtocolServer's `allowCidrs` opens: the byte server (users
/// reach it) and the Reality site (`dest` must be allowed).
pub const ALLOW_CIDRS: [&str; 2] = ["127.0.0.2/32", "127.0.0.3/32"];

/// A free TCP port on `host` (bind to port 0 and release).
pub fn free_port_on(host: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

/// The xray binary: `$VEIL_XRAY`, else `$VEIL_CACHE/bin/xray`, else
/// `~/.cache/veil/bin/xray`. Panics with what to run when it is missing.
pub fn xray_binary() -> PathBuf {
    find_xray().expect("xray not found: run `make env` (it builds xray into ~/.cache/veil/bin)")
}

fn find_xray() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("VEIL_XRAY").map(PathBuf::from),
        std::env::var_os("VEIL_CACHE").map(|c| PathBuf::from(c).join("bin/xray")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/veil/bin/xray")),
    ];
    candidates.into_iter().flatten().find(|p| p.exists())
}

/// The directory holding xray, to put on agents' `PATH`; `None` without xray.
pub fn xray_dir() -> Option<PathBuf> {
    find_xray().and_then(|binary| binary.parent().map(PathBuf::from))
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_for_port(host: Ipv4Addr, port: u16, what: &str, child: &mut Child, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect((host, port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{what} did not listen on {port}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A threaded HTTPS server (TLS 1.3): argv = host, port, cert, key.
const DEST_SERVER: &str = r#"
import http.server, ssl, sys
host, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
ctx.load_cert_chain(cert, key)
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer((host, port), Quiet)
server.daemon_threads = True
server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
server.serve_forever()
"#;

/// A TLS 1.3 site on loopback that Reality borrows its handshake from.
pub struct RealityDest {
    child: Child,
    pub port: u16,
    /// The SNI name to use (the certificate's name).
    pub server_name: String,
    _dir: tempfile::TempDir,
}

impl RealityDest {
    pub fn start() -> RealityDest {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=dest.test", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .expect("openssl (Debian package openssl) is needed for the Reality dest");
        assert!(made.success(), "openssl req failed");
        let port = free_port_on(DEST_HOST);
        let log = dir.path().join("dest.log");
        // `openssl s_server` serves one connection at a time, and Reality
        // opens one to `dest` per client handshake: a threaded server keeps
        // concurrent handshakes from queueing behind each other.
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(DEST_SERVER)
            .arg(DEST_HOST.to_string())
            .arg(port.to_string())
            .arg(&cert)
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(dir.path().join("dest.err")).expect("log"))
            .spawn()
            .expect("python3 for the Reality dest");
        wait_for_port(
            DEST_HOST,
            port,
            "the Reality dest (python3 TLS server)",
            &mut child,
            &log,
        );
        RealityDest {
            child,
            port,
            server_name: "dest.test".into(),
            _dir: dir,
        }
    }

    /// `127.0.0.3:PORT`, for `reality.dest`.
    pub fn dest(&self) -> String {
        format!("{DEST_HOST}:{}", self.port)
    }
}

impl Drop for RealityDest {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// What a VLESS+Reality client needs to reach a server.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub server_port: u16,
    pub id: String,
    pub flow: String,
    pub public_key: String,
    pub server_name: String,
    pub short_id: String,
}

impl ClientSettings {
    /// Parses `vless://ID@HOST:PORT?…&pbk=…&sni=…&sid=…&flow=…#remark`.
    /// Panics on a link that is not VLESS+Reality over TCP.
    pub fn from_link(link: &str) -> ClientSettings {
        let rest = link.strip_prefix("vless://").expect("vless:// link");
        let (id, rest) = rest.split_once('@').expect("id@ in the link");
        let (address, rest) = rest.split_once('?').expect("? in the link");
        let (_, port) = address.rsplit_once(':').expect("host:port in the link");
        let query = rest.split('#').next().unwrap_or_default();
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap_or_default()
                .replace("%2F", "/")
        };
        assert_eq!(param("security"), "reality");
        assert_eq!(param("type"), "tcp");
        ClientSettings {
            server_port: port.parse().expect("port in the link"),
            id: id.to_owned(),
            flow: param("flow"),
            public_key: param("pbk"),
            server_name: param("sni"),
            short_id: param("sid"),
        }
    }
}

/// A real xray acting as a VLESS+Reality client, with a SOCKS5 inbound.
pub struct XrayClient {
    child: Child,
    pub socks_port: u16,
    dir: tempfile::TempDir,
}

impl XrayClient {
    pub fn start(settings: &ClientSettings) -> XrayClient {
        let dir = tempfile::tempdir().expect("temp dir");
        let socks_port = free_port();
        let config = serde_json::json!({
            "log": { "loglevel": "warning" },
            "inbounds": [{
                "tag": "socks", "listen": "127.0.0.1", "port": socks_port,
                "protocol": "socks", "settings": { "udp": false },
            }],
            "outbounds": [{
                "protocol": "vless",
                "settings": { "vnext": [{
                    "address": "127.0.0.1", "port": settings.server_port,
                    "users": [{ "id": settings.id, "flow": settings.flow, "encryption": "none" }],
                }]},
                "streamSettings": {
                    "network": "tcp", "security": "reality",
                    "realitySettings": {
                        "serverName": settings.server_name, "fingerprint": "chrome",
                        "publicKey": settings.public_key, "shortId": settings.short_id,
                        "spiderX": "/",
                    },
                },
            }],
        });
        let path = dir.path().join("client.json");
        std::fs::write(&path, serde_json::to_vec(&config).expect("json")).expect("write config");
        let log = dir.path().join("client.log");
        let mut child = Command::new(xray_binary())
            .args(["run", "-c"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("xray client");
        wait_for_port(
            Ipv4Addr::LOCALHOST,
            socks_port,
            "xray client",
            &mut child,
            &log,
        );
        XrayClient {
            child,
            socks_port,
            dir,
        }
    }

    /// The client's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("client.log")).unwrap_or_default()
    }

    /// Opens a connection to `target` through the VLESS server.
    pub async fn connect(&self, target: SocketAddr) -> std::io::Result<TcpStream> {
        socks5_connect(self.socks_port, target).await
    }

    /// Opens a connection to the name `host` (resolved by the server) and
    /// `port` through the VLESS server.
    pub async fn connect_name(&self, host: &str, port: u16) -> std::io::Result<TcpStream> {
        socks5_request(self.socks_port, &SocksTarget::Name(host, port)).await
    }
}

impl Drop for XrayClient {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A SOCKS5 CONNECT (no authentication) to an IPv4 or IPv6 `target`.
pub async fn socks5_connect(socks_port: u16, target: SocketAddr) -> std::io::Result<TcpStream> {
    socks5_request(socks_port, &SocksTarget::Address(target)).await
}

/// Where a SOCKS5 CONNECT goes.
enum SocksTarget<'a> {
    Address(SocketAddr),
    /// A host name and port, resolved by the proxy.
    Name(&'a str, u16),
}

async fn socks5_request(socks_port: u16, target: &SocksTarget<'_>) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", socks_port)).await?;
    stream.write_all(&[5, 1, 0]).await?;
    let mut reply = [0u8; 2];
    stream.read_exact(&mut reply).await?;
    if reply != [5, 0] {
        return Err(std::io::Error::other(format!(
            "socks greeting refused: {reply:?}"
        )));
    }
    let mut request = vec![5, 1, 0];
    let port = match target {
        SocksTarget::Address(addr) => {
            match addr.ip() {
                IpAddr::V4(v4) => {
                    request.push(1);
                    request.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    request.push(4);
                    request.extend_from_slice(&v6.octets());
                }
            }
            addr.port()
        }
        SocksTarget::Name(name, port) => {
            let len = u8::try_from(name.len()).map_err(std::io::Error::other)?;
            request.extend_from_slice(&[3, len]);
            request.extend_from_slice(name.as_bytes());
            *port
        }
    };
    request.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&request).await?;
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    if head[1] != 0 {
        return Err(std::io::Error::other(format!(
            "socks connect refused: code {}",
            head[1]
        )));
    }
    // The bound address: IPv4, a name or IPv6, then the port.
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await?;
            usize::from(len[0]) + 2
        }
        other => {
            return Err(std::io::Error::other(format!(
                "socks reply with address type {other}"
            )));
        }
    };
    let mut bound = vec![0u8; rest];
    stream.read_exact(&mut bound).await?;
    Ok(stream)
}

/// A byte server on [`ECHO_HOST`]. The first byte a client sends picks the mode:
/// `E` echoes everything after it; `S` + 8-byte big-endian count sends that
/// many bytes and closes; `P` streams 16 KiB every 5 ms until the client goes.
pub struct ByteServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ByteServer {
    pub async fn start() -> ByteServer {
        let listener = TcpListener::bind((ECHO_HOST, 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream));
            }
        });
        ByteServer { addr, task }
    }
}

impl Drop for ByteServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream) {
    let mut mode = [0u8; 1];
    if stream.read_exact(&mut mode).await.is_err() {
        return;
    }
    match mode[0] {
        b'E' => {
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
        b'S' => {
            let mut count = [0u8; 8];
            if stream.read_exact(&mut count).await.is_err() {
                return;
            }
            let mut left = u64::from_be_bytes(count);
            let chunk = vec![0x5a_u8; 64 * 1024];
            while left > 0 {
                let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
                if stream.write_all(&chunk[..n]).await.is_err() {
                    return;
                }
                left -= n as u64;
            }
            let _ = stream.shutdown().await;
        }
        b'P' => {
            let chunk = vec![0x33_u8; 16 * 1024];
            loop {
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        _ => {}
    }
}

/// Sends `payload` in echo mode and reads it back; the bytes moved each way.
pub async fn echo_roundtrip(stream: &mut TcpStream, payload: &[u8]) -> std::io::Result<()> {
    stream.write_all(payload).await?;
    let mut back = vec![0u8; payload.len()];
    stream.read_exact(&mut back).await?;
    if back != payload {
        return Err(std::io::Error::other("echo mismatch"));
    }
    Ok(())
}

/// Downloads exactly `count` bytes in `S` mode over a fresh connection.
pub async fn download(client: &XrayClient, server: SocketAddr, count: u64) -> std::io::Result<u64> {
    let mut stream = client.connect(server).await?;
    let mut request = vec![b'S'];
    request.extend_from_slice(&count.to_be_bytes());
    stream.write_all(&request).await?;
    let mut got = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    Ok(got)
}

/// Opens an echo connection through `client` to `bytes` and checks one round trip.
pub async fn open_echo(client: &XrayClient, bytes: &ByteServer) -> TcpStream {
    let mut stream = client
        .connect(bytes.addr)
        .await
        .expect("connect through VLESS");
    stream.write_all(b"E").await.expect("echo mode");
    echo_roundtrip(&mut stream, b"hello through vless")
        .await
        .expect("echo through VLESS");
    stream
}

/// True once the other side closes `stream` (end of stream or reset)
/// within `limit`; keeps poking it so a half-open connection is noticed.
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let _ = stream.write_all(b"x").await;
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A download in `P` mode through `client`, read in the background, that
/// must never break or stall: what agent restarts are tested against.
pub struct SteadyDownload {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<Result<u64, String>>,
}

/// Longest pause between two reads before the download counts as broken.
/// The server sends every 5 ms; only a cut connection pauses this long.
const STEADY_STALL: Duration = Duration::from_secs(10);

impl SteadyDownload {
    /// Opens the stream through `client` to `server` and starts reading.
    pub async fn start(client: &XrayClient, server: SocketAddr) -> SteadyDownload {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let mut stream = client.connect(server).await.expect("connect through VLESS");
        stream.write_all(b"P").await.expect("stream mode");
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let (stop_flag, counter) = (stop.clone(), received.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while !stop_flag.load(Ordering::Relaxed) {
                let total = counter.load(Ordering::Relaxed);
                match tokio::time::timeout(STEADY_STALL, stream.read(&mut buf)).await {
                    Ok(Ok(0)) => return Err(format!("the download ended after {total} bytes")),
                    Ok(Ok(n)) => {
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => {
                        return Err(format!("the download broke after {total} bytes: {e}"));
                    }
                    Err(_) => return Err(format!("the download stalled after {total} bytes")),
                }
            }
            Ok(counter.load(Ordering::Relaxed))
        });
        SteadyDownload {
            stop,
            received,
            task,
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `more` bytes arrived after this call (bounded by the
    /// stall limit per read); `Err` if the download broke meanwhile.
    pub async fn advances(&self, more: u64) -> Result<(), String> {
        let target = self.received() + more;
        while self.received() < target {
            if self.task.is_finished() {
                return Err("the download ended".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops reading; the bytes received, or how the download broke.
    pub async fn finish(self) -> Result<u64, String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.map_err(|e| e.to_string())?
    }
}

/// A `ProtocolServer` named `edge` (VLESS with Reality, on 127.0.0.1:`port`)
/// for the nodes labelled `role=edge`: for tests that need a server's keys
/// in an assignment but never connect through it.
pub fn edge_server_yaml(port: u16) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1
kind: ProtocolServer
metadata: {{name: edge}}
spec:
  protocol: vless
  nodeSelector: {{matchLabels: {{role: edge}}}}
  listen: 127.0.0.1
  port: {port}
  vless:
    publicAddress: 127.0.0.1
    reality:
      dest: \"www.example.com:443\"
      serverNames: [www.example.com]
      shortIds: [\"\"]
"
    )
}
