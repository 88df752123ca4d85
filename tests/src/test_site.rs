//! A test web site in a server namespace: HTTPS on 443 and HTTP on 80 (IPv4
//! and IPv6), a certificate for the test names signed by a test CA, and two
//! paths:
//!
//! - `GET /` → `200`, body `ok <host>\n`;
//! - `GET /bytes/N` → `200` with N bytes of body (for ≥ 64 KiB probes).
//!
//! It is a threaded Python server (one thread per connection, the TLS
//! handshake on that thread, so a client stuck behind the DPI never blocks
//! others). Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::netns::DEFAULT_NAMES;
use crate::netns::Namespace;

/// The running site.
#[derive(Debug)]
pub struct TestSite {
    child: Child,
    /// PEM of the test CA, for `curl --cacert` / `SSL_CERT_FILE`.
    pub ca_pem: PathBuf,
    /// DER of the test CA, for rustls clients.
    pub ca_der: Vec<u8>,
    dir: tempfile::TempDir,
}

const SERVER: &str = r#"
import http.server, os, socket, ssl, sys, threading

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30

    def do_GET(self):
        host = (self.headers.get("Host") or "").split(":")[0]
        if self.path.startswith("/bytes/") and self.path[7:].isdigit():
            size = int(self.path[7:])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * 16384
            while size > 0:
                self.wfile.write(chunk[:size])
                size -= len(chunk)
        elif self.path == "/":
            body = ("ok %s\n" % host).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.client_address[0], fmt % args))
        sys.stderr.flush()

class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

cert, key, ready = sys.argv[1], sys.argv[2], sys.argv[3]
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
https = Server(("::", 443), Handler)
https.socket = context.wrap_socket(https.socket, server_side=True, do_handshake_on_connect=False)
plain = Server(("::", 80), Handler)
threading.Thread(target=plain.serve_forever, daemon=True).start()
open(ready, "w").close()
https.serve_forever()
"#;

impl TestSite {
    /// Starts the site in `ns` with a certificate for the default test names
    /// ([`DEFAULT_NAMES`]) and `extra_names`; returns once it listens.
    pub fn start(ns: &Namespace, extra_names: &[&str]) -> TestSite {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut names: Vec<String> = DEFAULT_NAMES.map(String::from).to_vec();
        names.extend(extra_names.iter().map(|n| n.to_string()));
        let (ca_pem, ca_der) = write_certificates(dir.path(), names);
        let ready = dir.path().join("ready");
        let stderr = dir.path().join("site.log");
        let mut child = ns
            .command("python3")
            .arg("-c")
            .arg(SERVER)
            .arg(dir.path().join("cert.pem"))
            .arg(dir.path().join("key.pem"))
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("site log"))
            .spawn()
            .expect("python3 for the test site");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the test site exited ({status}): {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            if Instant::now() >= deadline {
                // Not left behind by the failed test.
                let _ = child.kill();
                let _ = child.wait();
                panic!("the test site did not start in 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        TestSite {
            child,
            ca_pem,
            ca_der,
            dir,
        }
    }

    /// The site's request log (one line per request, with the client address).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("site.log")).unwrap_or_default()
    }
}

impl Drop for TestSite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `ca.pem`, `cert.pem` (leaf for `names`) and `key.pem` into `dir`;
/// returns the CA's PEM path and DER.
fn write_certificates(dir: &Path, names: Vec<String>) -> (PathBuf, Vec<u8>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "veil-dpi-test-ca");
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("self-signed CA");
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf_params = CertificateParams::new(names).expect("leaf params");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "veil-dpi-test-site");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("signed leaf");

    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca_cert.pem()).expect("write ca.pem");
    std::fs::write(dir.join("cert.pem"), leaf.pem()).expect("write cert.pem");
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).expect("write key.pem");
    (ca_pem, ca_cert.der().to_vec())
}
