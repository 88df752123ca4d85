//! VLESS users are fenced off the node. YAML in a watched directory →
//! veil-operator → veil-agent → real xray; a real VLESS+Reality xray client
//! (built from the key's `vless://` link) then attacks through it: the
//! xray gRPC API on 127.0.0.1, the operator's own port, `localhost`, a name
//! that resolves to loopback, and a private address in another network
//! namespace that the node itself reaches. Every one is closed with no byte
//! from the target (and the targets see no connection), while the allowed
//! echo server on 127.0.0.2 works before and after.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use veil_crds::protocol_server::fence;
use veil_e2e::netns::{HostVeth, Namespace};
use veil_e2e::process::{Agent, Operator, free_port};
use veil_e2e::xray::{ALLOW_CIDRS, ByteServer, ClientSettings, RealityDest, XrayClient, open_echo};

/// What every target server sends first: seeing it means the fence leaked.
const BANNER: &[u8] = b"TARGET-REACHED\n";
/// How long a refused connection may take to be closed.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

fn write(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

fn server_yaml(port: u16, dest: &RealityDest) -> String {
    format!(
        "apiVersion: veil.dev/v1alpha1\nkind: ProtocolServer\nmetadata:\n  name: edge\nspec:\n  protocol: vless\n  listen: 127.0.0.1\n  port: {port}\n  allowCidrs: [{}]\n  vless:\n    publicAddress: 127.0.0.1\n    reality:\n      dest: \"{}\"\n      serverNames: [{}]\n",
        ALLOW_CIDRS.join(", "),
        dest.dest(),
        dest.server_name
    )
}

const KEY: &str = "apiVersion: veil.dev/v1alpha1\nkind: VlessKey\nmetadata:\n  name: mallory\nspec:\n  serverRef:\n    name: edge\n";

/// A TCP server that counts connections and greets each with [`BANNER`].
struct Target {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Target {
    /// Serves on `listener` (bound by the caller, possibly in another namespace).
    fn serve(listener: std::net::TcpListener) -> Target {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = stream.write_all(BANNER).await;
                    let mut sink = [0u8; 1024];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
        Target {
            addr,
            accepted,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Precondition: the node itself reaches the target directly.
    async fn assert_reachable_directly(&self) {
        let mut stream = TcpStream::connect(self.addr)
            .await
            .unwrap_or_else(|e| panic!("the node cannot reach {} directly: {e}", self.addr));
        let mut banner = vec![0u8; BANNER.len()];
        tokio::time::timeout(CLOSE_LIMIT, stream.read_exact(&mut banner))
            .await
            .expect("banner in time")
            .expect("banner");
        assert_eq!(banner, BANNER);
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `probe` on a connection opened through VLESS and asserts it is
/// closed without a single byte from the far side.
async fn assert_refused(stream: std::io::Result<TcpStream>, probe: &[u8], what: &str) {
    // xray's SOCKS inbound may refuse outright: that is refused too.
    let Ok(mut stream) = stream else {
        return;
    };
    let _ = stream.write_all(probe).await;
    let mut buf = [0u8; 256];
    match tokio::time::timeout(CLOSE_LIMIT, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!(
            "{what}: the fence leaked, {n} bytes came back: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(_) => panic!("{what}: the connection was neither closed nor answered"),
    }
}

/// The xray config the agent runs, found under its data dir.
fn running_config(data_dir: &Path) -> Value {
    let mut stack = vec![data_dir.to_path_buf()];
    let mut found: Option<PathBuf> = None;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "config.json") {
                found = Some(path);
            }
        }
    }
    let path = found.expect("an xray config.json under the agent's data dir");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// The port after the last `:` of `url` (`http://127.0.0.1:7070`).
fn url_port(url: &str) -> u16 {
    url.trim_end_matches('/')
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("a port in the operator URL")
}

/// This machine's host name if it resolves to a fenced address (Debian's
/// `/etc/hosts` maps it to 127.0.1.1, this one to 127.0.0.1).
fn host_name_on_loopback() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let resolved: Vec<IpAddr> = (name.as_str(), 1)
        .to_socket_addrs()
        .map(|a| a.map(|s| s.ip()).collect())
        .unwrap_or_default();
    assert!(
        resolved.iter().any(|ip| ip.is_loopback()),
        "this test needs the host name `{name}` to resolve to a loopback address (as /etc/hosts does on Debian); it resolves to {resolved:?}"
    );
    name
}

/// A private network the node reaches but VLESS users must not: a network
/// namespace behind a veth pair, with a [`Target`] on its side.
struct PrivateNet {
    target: Target,
    _veth: HostVeth,
    _ns: Namespace,
}

impl PrivateNet {
    fn start() -> PrivateNet {
        let pid = std::process::id();
        // 10.(128..247).(0..255).0/30, unique per test process.
        let b = u8::try_from(128 + (pid >> 8) % 120).unwrap();
        let c = u8::try_from(pid & 0xff).unwrap();
        let ns = Namespace::create("priv");
        let veth = HostVeth::create(
            &ns,
            &format!("vxf{pid}"),
            &format!("10.{b}.{c}.1/30"),
            "veth0",
            &format!("10.{b}.{c}.2/30"),
        );
        let addr = SocketAddr::from((Ipv4Addr::new(10, b, c, 2), free_port()));
        let listener =
            ns.enter(|| std::net::TcpListener::bind(addr).expect("bind in the namespace"));
        assert_eq!(fence::fence_reason(addr.ip()), Some("private network"));
        PrivateNet {
            target: Target::serve(listener),
            _veth: veth,
            _ns: ns,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vless_users_cannot_reach_the_node_or_private_networks() {
    let private = PrivateNet::start();
    let dest = RealityDest::start();
    let echo = ByteServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "server.yaml", &server_yaml(free_port(), &dest));
    write(dir.path(), "mallory.yaml", KEY);
    let op = Operator::start(dir.path()).await;
    let agent = Agent::start(&op, "edge-1", &[]);
    op.eventually("mallory Active", Duration::from_secs(40), || async {
        let key = op.object("vlesskeys", "mallory").await?;
        (key["status"]["phase"] == "Active").then_some(())
    })
    .await;
    let (status, creds) = op.api("/v1/credentials/vlesskeys/default/mallory").await;
    assert_eq!(status, 200, "{creds}");
    let client = XrayClient::start(&ClientSettings::from_link(creds["link"].as_str().unwrap()));

    // The permitted destination works.
    let mut allowed = open_echo(&client, &echo).await;

    // The agent rendered the fence with the server's allowCidrs.
    let config = running_config(&agent.data_dir);
    let rules = &config["routing"]["rules"];
    assert_eq!(config["routing"]["domainStrategy"], "IPIfNonMatch");
    assert!(
        rules[0]["ip"]
            .as_array()
            .unwrap()
            .contains(&"127.0.0.0/31".into()),
        "{rules}"
    );

    // 1. xray's own gRPC API on 127.0.0.1 (add users, read every counter).
    let api: SocketAddr = config["api"]["listen"].as_str().unwrap().parse().unwrap();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let mut direct = TcpStream::connect(api).await.expect("the API listens");
    direct.write_all(preface).await.unwrap();
    let mut answer = [0u8; 9];
    tokio::time::timeout(CLOSE_LIMIT, direct.read_exact(&mut answer))
        .await
        .expect("the API answers a direct HTTP/2 client in time")
        .expect("the API answers a direct HTTP/2 client");
    assert_refused(client.connect(api).await, preface, "xray API").await;

    // 2. The operator's port on the same host (the agent itself listens on none).
    let operator = SocketAddr::from((Ipv4Addr::LOCALHOST, url_port(&op.url)));
    TcpStream::connect(operator)
        .await
        .expect("the operator listens");
    let get = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_refused(client.connect(operator).await, get, "operator port").await;

    // 3. Loopback by name: `localhost`, `localhost.` and the host name,
    //    which xray must resolve before it matches the fence.
    let loopback = Target::serve(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap());
    loopback.assert_reachable_directly().await;
    let port = loopback.addr.port();
    let host = host_name_on_loopback();
    for name in ["localhost", "localhost.", host.as_str()] {
        assert_refused(client.connect_name(name, port).await, b"hi", name).await;
    }
    assert_refused(client.connect(loopback.addr).await, b"hi", "127.0.0.1").await;
    assert_eq!(
        loopback.accepted(),
        1,
        "only the direct connection got through"
    );

    // 4. A private network the node reaches (another namespace over a veth).
    private.target.assert_reachable_directly().await;
    assert_refused(
        client.connect(private.target.addr).await,
        b"hi",
        "private network",
    )
    .await;
    assert_eq!(
        private.target.accepted(),
        1,
        "only the direct connection got through"
    );

    // The permitted destination still works, on the old and a new connection.
    veil_e2e::xray::echo_roundtrip(&mut allowed, b"still here")
        .await
        .unwrap();
    open_echo(&client, &echo).await;
    drop(agent);
}
