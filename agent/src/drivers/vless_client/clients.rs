//! The running VLESS clients: one supervised xray or sing-box process per
//! assigned `vless` member — the active one and the backups alike, so a
//! backup is warm (its SOCKS port already up) when failover picks it.
//!
//! Each client's config (it holds the link's id) is written 0600 under the
//! agent's data directory; a member whose link, client or port changes is
//! restarted, one that is no longer assigned is stopped and its file
//! removed. Pid records let a restarted agent end what a crashed one left.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use veil_crds::strategy::VlessClient;
use veil_crds::wire::{StrategyId, VlessMember};

use super::config;
use super::link::VlessLink;
use crate::supervisor::{ProcessSpec, RestartPolicy, State, Supervised, kill_recorded};

/// Ports taken when a member names none.
pub const AUTO_PORTS: std::ops::RangeInclusive<u16> = 10800..=10899;
/// Longest wait for a new client's SOCKS port.
const READY_WITHIN: Duration = Duration::from_secs(10);
const KILL_GRACE: Duration = Duration::from_secs(2);

/// What a member's client is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Serving SOCKS5 on `127.0.0.1:port`.
    Running {
        port: u16,
        pid: Option<u32>,
        restarts: u32,
    },
    /// Crashed and waiting to restart, or not yet listening.
    Starting { port: u16 },
    /// Cannot run: `reason` (`InvalidVlessLink`, `ClientMissing`,
    /// `ClientFailed`, `NoFreePort`) and what to do.
    Failed {
        reason: &'static str,
        message: String,
    },
}

struct Client {
    fingerprint: String,
    port: u16,
    supervised: Supervised,
    config_file: PathBuf,
    pid_file: PathBuf,
}

/// The clients of this node.
pub struct VlessClients {
    dir: PathBuf,
    running: BTreeMap<StrategyId, Client>,
    failed: BTreeMap<StrategyId, (&'static str, String)>,
}

impl VlessClients {
    /// Clients whose files live in `dir`; ends processes a previous agent
    /// run recorded there.
    pub fn new(dir: PathBuf) -> VlessClients {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "pid") && kill_recorded(&path) {
                    tracing::warn!(record = %path.display(), "ended a VLESS client left by a previous agent run");
                }
            }
        }
        VlessClients {
            dir,
            running: BTreeMap::new(),
            failed: BTreeMap::new(),
        }
    }

    /// Runs exactly `members` (their clients started, changed ones
    /// restarted, others stopped).
    pub async fn apply(&mut self, members: &[(StrategyId, VlessMember)]) {
        let wanted: BTreeSet<&StrategyId> = members.iter().map(|(id, _)| id).collect();
        let gone: Vec<StrategyId> = self
            .running
            .keys()
            .filter(|id| !wanted.contains(id))
            .cloned()
            .collect();
        for id in gone {
            self.stop(&id).await;
        }
        self.failed.retain(|id, _| wanted.contains(id));
        for (id, member) in members {
            let fingerprint = fingerprint(member);
            if self
                .running
                .get(id)
                .is_some_and(|c| c.fingerprint == fingerprint)
            {
                continue;
            }
            self.stop(id).await;
            self.failed.remove(id);
            if let Err((reason, message)) = self.start(id, member, fingerprint).await {
                tracing::warn!(strategy = %id, reason, %message, "the VLESS client cannot run");
                self.failed.insert(id.clone(), (reason, message));
            }
        }
    }

    /// The state of `id`'s client, if it is assigned.
    pub fn state(&self, id: &StrategyId) -> Option<ClientState> {
        if let Some((reason, message)) = self.failed.get(id) {
            return Some(ClientState::Failed {
                reason,
                message: message.clone(),
            });
        }
        let client = self.running.get(id)?;
        Some(match client.supervised.state() {
            State::Running { pid, .. } => ClientState::Running {
                port: client.port,
                pid: Some(pid),
                restarts: client.supervised.restarts(),
            },
            State::Stopped { .. } => ClientState::Failed {
                reason: "ClientFailed",
                message: "the VLESS client stopped and is not restarted".to_owned(),
            },
            _ => ClientState::Starting { port: client.port },
        })
    }

    /// Stops every client.
    pub async fn stop_all(&mut self) {
        let ids: Vec<StrategyId> = self.running.keys().cloned().collect();
        for id in ids {
            self.stop(&id).await;
        }
        self.failed.clear();
    }

    async fn stop(&mut self, id: &StrategyId) {
        if let Some(mut client) = self.running.remove(id) {
            client.supervised.stop().await;
            let _ = std::fs::remove_file(&client.config_file);
            let _ = std::fs::remove_file(&client.pid_file);
        }
    }

    async fn start(
        &mut self,
        id: &StrategyId,
        member: &VlessMember,
        fingerprint: String,
    ) -> Result<(), (&'static str, String)> {
        let link = VlessLink::parse(member.link.expose()).map_err(|e| {
            (
                "InvalidVlessLink",
                format!("{e}; fix the VlessKey or the Secret"),
            )
        })?;
        let taken: BTreeSet<u16> = self.running.values().map(|c| c.port).collect();
        let port = match member.socks_port {
            Some(port) => port,
            None => free_port(&taken).ok_or((
                "NoFreePort",
                "no free port in 10800–10899 for the SOCKS proxy; set vless.socksPort".to_owned(),
            ))?,
        };
        let (program, config) = match member.client {
            VlessClient::Xray => ("xray", config::xray(&link, port)),
            VlessClient::SingBox => ("sing-box", config::sing_box(&link, port)),
        };
        let base = format!("{}_{}", id.namespace, id.name);
        let config_file = self.dir.join(format!("{base}.json"));
        let pid_file = self.dir.join(format!("{base}.pid"));
        write_private(&config_file, &config).map_err(|e| {
            (
                "ClientFailed",
                format!(
                    "cannot write the client's config under {}: {e}",
                    self.dir.display()
                ),
            )
        })?;
        let spec = ProcessSpec::new(program)
            .args(["run", "-c"])
            .arg(config_file.as_os_str().to_owned())
            .pass_env("PATH")
            .require_free_tcp(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .kill_grace(KILL_GRACE)
            .pid_file(&pid_file);
        let supervised = match Supervised::start(spec, RestartPolicy::default()).await {
            Ok(supervised) => supervised,
            Err(error) => {
                let _ = std::fs::remove_file(&config_file);
                let message = error.to_string();
                let reason = if message.contains("not found") || message.contains("No such file") {
                    "ClientMissing"
                } else {
                    "ClientFailed"
                };
                return Err((reason, format!("{program}: {message}")));
            }
        };
        let mut client = Client {
            fingerprint,
            port,
            supervised,
            config_file,
            pid_file,
        };
        if let Err(message) = wait_listening(&client, program).await {
            client.supervised.stop().await;
            let _ = std::fs::remove_file(&client.config_file);
            return Err(("ClientFailed", message));
        }
        tracing::info!(strategy = %id, client = program, port, "VLESS client serving SOCKS5");
        self.running.insert(id.clone(), client);
        Ok(())
    }
}

/// Waits until the client accepts on its port, or says why not.
async fn wait_listening(client: &Client, program: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + READY_WITHIN;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", client.port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        let running = matches!(
            client.supervised.state(),
            State::Running { .. } | State::Starting
        );
        if !running || tokio::time::Instant::now() >= deadline {
            let words = client
                .supervised
                .recent_lines()
                .iter()
                .rev()
                .map(|l| l.text.trim().to_owned())
                .find(|t| !t.is_empty());
            return Err(format!(
                "{program} did not open 127.0.0.1:{} within {READY_WITHIN:?}{}",
                client.port,
                words.map(|w| format!(": {w}")).unwrap_or_default()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first port of [`AUTO_PORTS`] not in `taken` that nothing listens on.
fn free_port(taken: &BTreeSet<u16>) -> Option<u16> {
    AUTO_PORTS
        .filter(|port| !taken.contains(port))
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
}

/// What makes a client restart when it changes.
fn fingerprint(member: &VlessMember) -> String {
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(member).unwrap_or_default());
    hex::encode(&hasher.finalize()[..16])
}

/// Writes `config` to `path`, readable by the agent's user only.
fn write_private(path: &Path, config: &serde_json::Value) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(&text)
}
