//! The processes of a test control plane: where their binaries are, how
//! they are started and stopped, and the watcher that kills them once the
//! test process is gone (a cluster shared through a `static` is never
//! dropped).

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::files::ClusterFiles;

/// The name of the file in the cluster dir that lists the PIDs the watcher kills.
const PID_FILE: &str = "pids";

/// A binary `make env` builds (`etcd`, `kube-apiserver`,
/// `kube-controller-manager`, `kubectl`):
/// `$VEIL_CACHE/bin/NAME`, else `~/.cache/veil/bin/NAME`.
pub fn binary(name: &str) -> Result<PathBuf> {
    let candidates = [
        std::env::var_os("VEIL_CACHE").map(|cache| PathBuf::from(cache).join("bin").join(name)),
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/veil/bin").join(name)),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|path| path.exists())
        .ok_or_else(|| {
            anyhow!(
                "{name} not found: run `make env` (it builds etcd, kube-apiserver, kube-controller-manager, kubectl and helm into ~/.cache/veil/bin)"
            )
        })
}

/// `etcd` with its data under `dir/etcd`, client and peer URLs on loopback.
/// fsync is off: the data lives as long as the test.
pub fn etcd_command(dir: &Path, client_port: u16, peer_port: u16) -> Result<Command> {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut command = Command::new(binary("etcd")?);
    command
        .arg("--name=veil-test")
        .arg(format!("--data-dir={}", dir.join("etcd").display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=veil-test={peer}"))
        .arg("--unsafe-no-fsync")
        .arg("--log-level=warn");
    Ok(command)
}

/// `kube-apiserver` on `127.0.0.1:port`: TLS with the generated serving
/// certificate, the static admin token, RBAC, service-account tokens signed
/// by the generated key, and its own state only in `dir`.
pub fn apiserver_command(
    dir: &Path,
    files: &ClusterFiles,
    etcd_url: &str,
    port: u16,
) -> Result<Command> {
    let mut command = Command::new(binary("kube-apiserver")?);
    let path = |flag: &str, path: &Path| format!("--{flag}={}", path.display());
    command
        .arg(format!("--etcd-servers={etcd_url}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        // The `kubernetes` Service's endpoints would have to be a routable
        // address; nothing in the tests connects through that Service.
        .arg("--endpoint-reconciler-type=none")
        .arg(format!("--secure-port={port}"))
        .arg(path("cert-dir", &dir.join("apiserver-certs")))
        .arg(path("tls-cert-file", &files.serving_cert))
        .arg(path("tls-private-key-file", &files.serving_key))
        .arg(path("token-auth-file", &files.token_file))
        .arg("--authorization-mode=RBAC")
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg(path("service-account-key-file", &files.sa_public_key))
        .arg(path(
            "service-account-signing-key-file",
            &files.sa_private_key,
        ))
        .arg("--service-cluster-ip-range=10.0.0.0/24")
        .arg("--profiling=false")
        .arg("--v=1");
    Ok(command)
}

/// `kube-controller-manager` against the API server of `files.kubeconfig`,
/// running only the controllers the tests need: the garbage collector
/// (acts on `ownerReferences`) and the namespace controller (empties a
/// deleted namespace). No leader election (one instance). Its secure port
/// (health checks) listens on `127.0.0.1:port` with the cluster's serving
/// certificate, which is valid for 127.0.0.1.
///
/// It authenticates with the admin token (`system:masters`): with
/// `--use-service-account-credentials=false` (the default) every controller
/// uses this identity, and the garbage collector must be allowed to delete
/// any kind, custom resources included.
pub fn controller_manager_command(files: &ClusterFiles, port: u16) -> Result<Command> {
    let mut command = Command::new(binary("kube-controller-manager")?);
    let path = |flag: &str, path: &Path| format!("--{flag}={}", path.display());
    command
        .arg(path("kubeconfig", &files.kubeconfig))
        .arg(path("authentication-kubeconfig", &files.kubeconfig))
        .arg(path("authorization-kubeconfig", &files.kubeconfig))
        .arg("--controllers=garbage-collector-controller,namespace-controller")
        .arg("--leader-elect=false")
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(path("tls-cert-file", &files.serving_cert))
        .arg(path("tls-private-key-file", &files.serving_key))
        .arg("--profiling=false")
        .arg("--v=1");
    Ok(command)
}

/// Spawns `command` with stdout and stderr appended to `log`.
pub fn spawn_logged(mut command: Command, log: &Path) -> Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().context("log file")?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("spawning {:?}", command.get_program()))
}

/// Records the PIDs the watcher must kill when the test process exits.
pub fn write_pids(dir: &Path, pids: &[u32]) -> Result<()> {
    let text: String = pids.iter().map(|pid| format!("{pid}\n")).collect();
    let path = dir.join(PID_FILE);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// Spawns the process that, once the test process has exited (however:
/// even `SIGKILL`), kills the PIDs listed in `dir/pids` and removes `dir`.
/// It waits for EOF on its stdin, a pipe only the test process holds open;
/// returns the write end, to be kept until the cluster is dropped.
pub fn spawn_watcher(dir: &Path) -> Result<ChildStdin> {
    // Ignores Ctrl-C and friends so an interrupted `cargo test` still cleans up.
    const SCRIPT: &str = r#"trap "" HUP INT TERM; cat >/dev/null
for pid in $(cat "$0/pids" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
rm -rf -- "$0""#;
    let mut child = Command::new("sh")
        .args(["-c", SCRIPT])
        .arg(dir)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning the cluster watcher")?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("the cluster watcher has no stdin pipe"))
}

pub use crate::process::terminate;

/// SIGKILL, and reap.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Why a process did not become ready.
#[derive(Debug)]
pub enum NotReady {
    /// It exited; its log says whether a port was taken.
    Exited(anyhow::Error),
    /// It kept running but did not answer in time.
    TimedOut(anyhow::Error),
}

impl NotReady {
    /// The error, whichever way it failed.
    pub fn into_error(self) -> anyhow::Error {
        match self {
            NotReady::Exited(error) | NotReady::TimedOut(error) => error,
        }
    }
}

/// Polls `ready` every 50 ms until it says yes, the process ends (checked by
/// `exited`), or `timeout` passes. Errors carry the tail of `log`.
pub async fn wait_ready<R, Fut>(
    what: &str,
    log: &Path,
    timeout: Duration,
    mut exited: impl FnMut() -> Option<String>,
    mut ready: R,
) -> std::result::Result<(), NotReady>
where
    R: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = exited() {
            return Err(NotReady::Exited(anyhow!(
                "{what} exited ({status}):\n{}",
                log_tail(log)
            )));
        }
        if ready().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(NotReady::TimedOut(anyhow!(
                "{what} not ready within {timeout:?}:\n{}",
                log_tail(log)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a log says the process could not bind its port.
pub fn port_taken(error: &anyhow::Error) -> bool {
    format!("{error:#}").contains("address already in use")
}

/// The error lines of `log` (klog's `E`/`F` lines, or lines naming an
/// error), then its last 30 lines: the API server logs hundreds of info
/// lines after the one that says why it stopped.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|line| is_error_line(line))
        .take(20)
        .collect();
    let tail = lines[lines.len().saturating_sub(30)..].join("\n");
    if errors.is_empty() {
        return tail;
    }
    format!("errors:\n{}\nlast lines:\n{tail}", errors.join("\n"))
}

fn is_error_line(line: &str) -> bool {
    let klog_severity =
        line.starts_with(['E', 'F']) && line.as_bytes().get(1).is_some_and(u8::is_ascii_digit);
    klog_severity || line.contains("\"level\":\"error\"") || line.contains("\"level\":\"fatal\"")
}

/// Fails unless `output` is a success, with its stderr.
pub fn check_output(what: &str, output: &std::process::Output) -> Result<()> {
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
