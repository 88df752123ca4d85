//! TLS on the operator's API, end to end with real processes on loopback:
//! the join value, the pinned CA, and the attacks it stops — an agent or
//! the CLI pointed at a server with another certificate (the token never
//! leaves), plain HTTP to a non-loopback address, and a client that
//! connects and sends no headers.
#![allow(clippy::unwrap_used, reason = "test helpers fail loudly by design")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use veil_agent::join::JoinValue;
use veil_agent::trust::CaPin;
use veil_e2e::process::{Operator, OperatorOptions, binary, free_port, shared_kube_tls};

const WAIT: Duration = Duration::from_secs(30);

/// A server on 127.0.0.1 that completes TLS handshakes with `cert_chain`
/// (PEM file) and counts the application bytes clients send: what an
/// on-path attacker would read.
struct Impostor {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    received: Arc<AtomicUsize>,
}

impl Impostor {
    fn start(cert_chain: &Path, key: &Path) -> Impostor {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_chain)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(AtomicUsize::new(0));
        let (done, got) = (handshakes.clone(), received.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut tcp) = stream else { continue };
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                let mut server = rustls::ServerConnection::new(config.clone()).unwrap();
                while server.is_handshaking() {
                    if server.complete_io(&mut tcp).is_err() {
                        break;
                    }
                }
                if server.is_handshaking() {
                    continue;
                }
                done.fetch_add(1, Ordering::SeqCst);
                let mut tls = rustls::Stream::new(&mut server, &mut tcp);
                let mut buf = [0u8; 4096];
                while let Ok(n) = tls.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got.fetch_add(n, Ordering::SeqCst);
                }
            }
        });
        Impostor {
            addr,
            handshakes,
            received,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

/// An impostor with its own CA (a valid certificate for 127.0.0.1, just
/// not the operator's).
fn foreign_impostor() -> Impostor {
    let dir = shared_kube_tls();
    Impostor::start(&dir.join("tls.crt"), &dir.join("tls.key"))
}

fn pin_of(ca_file: &Path) -> CaPin {
    let der = CertificateDer::from_pem_file(ca_file).unwrap();
    CaPin::of_der(&der)
}

/// A `veil-agent` process with `args`, logging to `dir/agent.log`.
fn spawn_agent(dir: &Path, args: &[&str]) -> (Child, PathBuf) {
    let log = dir.join("agent.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(binary("veil-agent"))
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("agent"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    (child, log)
}

fn wait_for_log(log: &Path, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "no `{needle}` in:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An agent for `node` with `op`'s join value in its token file, sent to
/// `url` instead of the operator (an impostor): its dir, the process
/// (killed on drop) and its log.
fn joined_agent_at(op: &Operator, node: &str, url: &str) -> (tempfile::TempDir, Killed, PathBuf) {
    let join = op.create_join(node);
    let dir = tempfile::tempdir().unwrap();
    let join_file = dir.path().join("edge.join");
    std::fs::write(&join_file, &join).unwrap();
    let (child, log) = spawn_agent(
        dir.path(),
        &[
            "--node",
            node,
            "--operator",
            url,
            "--token-file",
            join_file.to_str().unwrap(),
        ],
    );
    (dir, Killed(child), log)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_join_value_alone_brings_an_agent_to_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start(dir.path()).await;
    let join = op.create_join("joined");
    let value = JoinValue::parse(&join).unwrap();
    assert_eq!(value.url.as_deref(), Some(op.url.as_str()));
    assert_eq!(value.ca_pin, Some(pin_of(&op.ca_file)));

    let agent_dir = tempfile::tempdir().unwrap();
    let join_file = agent_dir.path().join("edge.join");
    std::fs::write(&join_file, &join).unwrap();
    // No --operator, no --ca-file: both come from the join value.
    let (child, log) = spawn_agent(
        agent_dir.path(),
        &[
            "--node",
            "joined",
            "--token-file",
            join_file.to_str().unwrap(),
        ],
    );
    let _agent = Killed(child);
    op.eventually("the joined agent's VeilNode Ready", WAIT, || async {
        op.object("veilnodes", "joined").await.filter(|n| {
            n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(&value.token), "the token is never logged");
    assert!(
        !op.log().contains(&value.token),
        "the token is never logged"
    );
}

#[tokio::test]
async fn an_agent_refuses_a_server_with_another_certificate_and_sends_it_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start(dir.path()).await;
    let pin = pin_of(&op.ca_file);
    let impostor = foreign_impostor();
    let (_dir, _agent, log) = joined_agent_at(&op, "edge-pinned", &impostor.url());
    let foreign = pin_of(&shared_kube_tls().join("ca.crt"));
    let text = wait_for_log(
        &log,
        &format!("operator certificate does not match the pinned CA {pin}; got {foreign}"),
    );
    assert_eq!(impostor.handshakes.load(Ordering::SeqCst), 0, "{text}");
    assert_eq!(impostor.received.load(Ordering::SeqCst), 0, "{text}");
}

#[tokio::test]
async fn an_impostor_presenting_the_real_ca_next_to_its_own_leaf_is_refused() {
    // The CA certificate is public; its key is not.
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start(dir.path()).await;
    let shared = shared_kube_tls();
    let chain = dir.path().join("impostor-chain.pem");
    let leaf = std::fs::read_to_string(shared.join("tls.crt")).unwrap();
    let leaf_only = &leaf[..leaf.find("-----END CERTIFICATE-----").unwrap() + 25];
    let real_ca = std::fs::read_to_string(&op.ca_file).unwrap();
    std::fs::write(&chain, format!("{leaf_only}\n{real_ca}")).unwrap();
    let impostor = Impostor::start(&chain, &shared.join("tls.key"));

    let (_dir, _agent, log) = joined_agent_at(&op, "edge-chain", &impostor.url());
    let text = wait_for_log(&log, "invalid peer certificate");
    assert_eq!(impostor.received.load(Ordering::SeqCst), 0, "{text}");
}

#[tokio::test]
async fn the_cli_refuses_a_server_with_another_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start(dir.path()).await;
    let impostor = foreign_impostor();
    let out = Command::new(binary("veil-operator"))
        .args(["get", "veilnodes"])
        .env("VEIL_SERVER", impostor.url())
        .env("VEIL_TOKEN_FILE", op.data_dir.join("admin.token"))
        .env("VEIL_CA_FILE", &op.ca_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("invalid peer certificate"), "{stderr}");
    assert_eq!(impostor.received.load(Ordering::SeqCst), 0, "{stderr}");
    // The same CLI against the real operator works.
    let ok = op.cli(&["get", "veilnodes"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// An address of this machine that is not loopback (the interface a packet
/// to a public address would leave by); no packet is sent.
fn non_loopback_ip() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket
        .connect("203.0.113.1:9")
        .and_then(|()| socket.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .unwrap_or_else(|| "203.0.113.1".parse().unwrap())
}

#[test]
fn plain_http_to_a_non_loopback_address_is_refused_before_connecting() {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!(
        "http://{}",
        SocketAddr::new(non_loopback_ip(), listener.local_addr().unwrap().port())
    );
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("node.token");
    std::fs::write(&token_file, "veil_node_0123").unwrap();
    let out = Command::new(binary("veil-agent"))
        .args(["--node", "plain", "--operator", &url, "--token-file"])
        .arg(&token_file)
        .arg("--data-dir")
        .arg(dir.path().join("agent"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("refusing plain http://"), "{stderr}");
    assert!(stderr.contains("--insecure-plaintext"), "{stderr}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the agent connected"
    );
    // The CLI refuses it too, before sending the admin token.
    let admin = dir.path().join("admin.token");
    std::fs::write(&admin, "veil_admin_0123").unwrap();
    let out = Command::new(binary("veil-operator"))
        .args(["get", "veilnodes", "--server", &url, "--token-file"])
        .arg(&admin)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing plain http://"), "{stderr}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the CLI connected"
    );
}

/// Reads until the server closes the connection; panics if it is still
/// open after 30 s (far beyond the operator's 1 s header timeout).
fn closed_by_server(read: &mut dyn Read) {
    let mut buf = [0u8; 512];
    loop {
        match read.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the server kept a silent connection open for 30 s")
            }
            // A reset or an unclean TLS end: closed too.
            Err(_) => return,
        }
    }
}

#[tokio::test]
async fn a_client_that_sends_no_headers_is_closed_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start_with(
        dir.path(),
        OperatorOptions {
            extra_args: vec!["--header-read-timeout".into(), "1s".into()],
            ..Default::default()
        },
    )
    .await;
    let addr: SocketAddr = op.url.trim_start_matches("https://").parse().unwrap();
    let ca = CertificateDer::from_pem_file(&op.ca_file).unwrap();

    let slow = std::thread::spawn(move || {
        // TLS done, then silence: hyper's header-read timeout closes it.
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        while client.is_handshaking() {
            client.complete_io(&mut tcp).unwrap();
        }
        let mut tls = rustls::Stream::new(&mut client, &mut tcp);
        tls.flush().unwrap();
        closed_by_server(&mut tls);
    });
    // Meanwhile the API serves everyone else.
    let (status, _) = op.api("/v1/objects/veilnodes").await;
    assert_eq!(status, 200);
    tokio::task::spawn_blocking(move || slow.join().unwrap())
        .await
        .unwrap();
    let (status, _) = op.api("/v1/objects/veilnodes").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_client_that_never_starts_the_tls_handshake_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start(dir.path()).await;
    let addr: SocketAddr = op.url.trim_start_matches("https://").parse().unwrap();
    tokio::task::spawn_blocking(move || {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        closed_by_server(&mut tcp);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn up_runs_its_own_agent_over_https_with_one_command() {
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("infra");
    std::fs::create_dir_all(&source).unwrap();
    let port = free_port();
    let log = work.path().join("up.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(binary("veil-operator"))
        .args(["up", "infra", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(work.path())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let _up = Killed(child);
    let ca_file = work.path().join(".veil/tls/ca.crt");
    let deadline = Instant::now() + WAIT;
    loop {
        // `get` with its defaults but the port: https and .veil/tls/ca.crt.
        let out = Command::new(binary("veil-operator"))
            .args(["get", "veilnodes", "-o", "json", "--server"])
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(work.path())
            .output()
            .unwrap();
        if out.status.success() {
            let nodes: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let ready = nodes["items"].as_array().is_some_and(|items| {
                items.iter().any(|n| {
                    n["metadata"]["name"] == "local"
                        && n["status"]["conditions"].as_array().is_some_and(|c| {
                            c.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                })
            });
            if ready {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node `local` not Ready over HTTPS:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ca_file.exists());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&pin_of(&ca_file).to_string()),
        "up tells the CA hash for adding nodes:\n{text}"
    );
}
