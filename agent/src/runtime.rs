//! The agent's main loop: register, long-poll assignments, run what is
//! assigned, and report — surviving an operator that comes and goes.
//!
//! - Registration retries with exponential backoff and jitter; a 401/403 is
//!   final (a wrong token never fixes itself).
//! - While the operator is away the agent keeps running what it was last
//!   assigned, and journals every report until it is acknowledged.
//! - Level-triggered: each assignment is the node's whole desired state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use veil_crds::wire::RegisterRequest;

use crate::client::{ClientError, OperatorClient};
use crate::drivers::xray::{Event, XrayContext, XrayDriver};
use crate::drivers::zapret::{EngineProgram, ExternalEngine, ZapretConfig, ZapretDriver};
use crate::journal::{Journal, JournalError, JournalLimits};
use crate::token_file::NodeToken;

mod backoff;
mod reporter;
mod tasks;

pub use backoff::Backoff;

/// How the agent was started.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// This node's name (the token must be bound to it).
    pub node: String,
    /// Operator base URL, e.g. `http://127.0.0.1:7070`.
    pub operator: String,
    /// Node token (secret).
    pub token: String,
    /// The file `token` was read from, read again before every request
    /// (projected ServiceAccount tokens rotate); `None`: `token` only.
    pub token_file: Option<PathBuf>,
    /// Labels reported at registration.
    pub labels: BTreeMap<String, String>,
    /// Journal, run work dirs and markers live here.
    pub data_dir: PathBuf,
    /// Address the node is reachable at, if known.
    pub address: Option<String>,
    /// How often xray's traffic counters are read.
    pub stats_interval: Duration,
    /// Mark the DPI-bypass engine puts on its own packets (the capture
    /// rules skip it): zapret's `0x40000000` by default; pick a low bit on
    /// Calico clusters, which use the upper 16 bits.
    pub zapret_mark: u32,
    /// The executable whose `desync` subcommand is the built-in engine;
    /// `None`: see [`default_desync_program`].
    pub desync_program: Option<PathBuf>,
}

/// Environment variable naming the executable whose `desync` subcommand is
/// the built-in engine (tests, or an operator running the agent in-process).
pub const DESYNC_PROGRAM_ENV: &str = "VEIL_AGENT_DESYNC_PROGRAM";

/// The built-in engine's executable: `$VEIL_AGENT_DESYNC_PROGRAM`, else
/// this executable when it is `veil-agent`, else a `veil-agent` next to it,
/// else `veil-agent` on `PATH`.
pub fn default_desync_program() -> PathBuf {
    if let Some(path) = std::env::var_os(DESYNC_PROGRAM_ENV) {
        return PathBuf::from(path);
    }
    let name = format!("veil-agent{}", std::env::consts::EXE_SUFFIX);
    if let Ok(exe) = std::env::current_exe() {
        if exe.file_name().is_some_and(|n| n == name.as_str()) {
            return exe;
        }
        if let Some(sibling) = exe.parent().map(|d| d.join(&name))
            && sibling.is_file()
        {
            return sibling;
        }
    }
    PathBuf::from(name)
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A non-transient refusal (wrong or revoked token, token of another node).
    #[error("registration refused: {0}")]
    Refused(#[source] ClientError),
    #[error("cannot create {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the agent until `shutdown` is cancelled (then stops every task's
/// process tree) or registration is refused.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let runs_dir = config.data_dir.join("runs");
    std::fs::create_dir_all(&runs_dir).map_err(|source| AgentError::DataDir {
        path: runs_dir.clone(),
        source,
    })?;
    let journal = Journal::open(&config.data_dir.join("journal"), JournalLimits::default())?;
    let mut client = OperatorClient::new(&config.operator, &config.token);
    if let Some(file) = &config.token_file {
        client = client.with_token(NodeToken::from_file(file.clone(), &config.token));
    }
    let capabilities = crate::capabilities::detect_async().await;
    let request = RegisterRequest {
        node: config.node.clone(),
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        labels: config.labels.clone(),
        capabilities: capabilities.clone(),
        address: config.address.clone(),
    };

    let applied = Arc::new(AtomicU64::new(0));
    let (outbox_tx, outbox_rx) = mpsc::unbounded_channel();
    let registered = register(&client, &request, &shutdown).await?;
    let Some(registered) = registered else {
        return Ok(());
    };
    tracing::info!(node = %config.node, "registered with the operator");

    let reporter = reporter::Reporter {
        client: client.clone(),
        node: config.node.clone(),
        journal,
        heartbeat: Duration::from_secs(registered.heartbeat_interval_seconds.max(1).into()),
        applied: applied.clone(),
    };
    let reporter = tokio::spawn(reporter.run(outbox_rx, registered.last_report_seq));

    let mut servers = servers_driver(&config, &capabilities, outbox_tx.clone());
    let zapret = zapret_driver(&config, &capabilities, outbox_tx.clone());
    let mut tasks = tasks::Tasks::new(
        crate::drivers::task::TaskContext {
            capabilities,
            ..crate::drivers::task::TaskContext::new(config.node.clone(), runs_dir.clone())
        },
        runs_dir,
        outbox_tx,
    );
    let long_poll = Duration::from_secs(registered.long_poll_seconds.max(1).into());
    let mut revision = 0;
    let mut backoff = Backoff::default();
    loop {
        let poll = tokio::select! {
            _ = shutdown.cancelled() => break,
            poll = client.assignment(revision, long_poll) => poll,
        };
        match poll {
            Ok(Some(assignment)) => {
                backoff.reset();
                revision = assignment.revision;
                tasks.apply(&assignment);
                servers.apply(&assignment.servers).await;
                zapret.apply(assignment.strategies.clone());
                applied.store(revision, Ordering::Relaxed);
            }
            Ok(None) => backoff.reset(),
            Err(ClientError::RegisterAgain(_)) => {
                if register(&client, &request, &shutdown).await?.is_none() {
                    break;
                }
            }
            Err(error) if error.is_transient() => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, "assignment poll failed; keeping the last assignment");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(error) => return Err(AgentError::Refused(error)),
        }
    }
    tasks.stop_all().await;
    servers.stop_all().await;
    zapret.shutdown().await;
    // Dropping both closes the outbox: the reporter delivers what is left and ends.
    drop(tasks);
    drop(servers);
    let _ = reporter.await;
    Ok(())
}

/// The xray driver, with its observations forwarded to the reporter.
fn servers_driver(
    config: &AgentConfig,
    capabilities: &[veil_crds::wire::Capability],
    outbox: mpsc::UnboundedSender<reporter::Outgoing>,
) -> XrayDriver {
    use reporter::Outgoing;
    let (events, mut observed) = mpsc::unbounded_channel();
    let ctx = capabilities
        .iter()
        .find(|c| c.name == "xray")
        .map(|c| XrayContext {
            xray: PathBuf::from(&c.path),
            version: c.version.as_deref().map(xray_version),
            data_dir: config.data_dir.join("servers"),
            stats_interval: config.stats_interval,
            events: events.clone(),
        });
    tokio::spawn(async move {
        while let Some(event) = observed.recv().await {
            let item = match event {
                Event::State(report) => Outgoing::Server(report),
                Event::Gone(id) => Outgoing::ServerGone(id),
                Event::Traffic(traffic) => Outgoing::Traffic(traffic),
            };
            if outbox.send(item).is_err() {
                break;
            }
        }
    });
    XrayDriver::new(ctx, events)
}

/// The zapret driver, with its reports forwarded to the reporter.
fn zapret_driver(
    config: &AgentConfig,
    capabilities: &[veil_crds::wire::Capability],
    outbox: mpsc::UnboundedSender<reporter::Outgoing>,
) -> ZapretDriver {
    let (reports, mut observed) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(strategies) = observed.recv().await {
            if outbox
                .send(reporter::Outgoing::Strategies(strategies))
                .is_err()
            {
                break;
            }
        }
    });
    let builtin = EngineProgram {
        program: config
            .desync_program
            .clone()
            .unwrap_or_else(default_desync_program),
        prefix: vec!["desync".to_owned()],
    };
    let external_name = if cfg!(windows) { "winws" } else { "nfqws" };
    let mut zapret = ZapretConfig::new(config.data_dir.join("zapret"), builtin);
    zapret.mark = config.zapret_mark;
    zapret.external = capabilities
        .iter()
        .find(|c| c.name == external_name)
        .map(|c| ExternalEngine {
            program: EngineProgram::plain(&c.path),
            version: c.version.clone(),
        });
    ZapretDriver::start(zapret, reports)
}

/// `26.3.27` from `Xray 26.3.27 (Xray, Penetrates Everything.) …`.
fn xray_version(text: &str) -> String {
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some("Xray"), Some(version)) => version.to_owned(),
        _ => text.to_owned(),
    }
}

/// Registers, retrying transient failures; `Ok(None)` if shut down meanwhile.
async fn register(
    client: &OperatorClient,
    request: &RegisterRequest,
    shutdown: &CancellationToken,
) -> Result<Option<veil_crds::wire::RegisterResponse>, AgentError> {
    let mut backoff = Backoff::default();
    loop {
        match client.register(request).await {
            Ok(response) => return Ok(Some(response)),
            Err(error) if error.is_transient() => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, "registration failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(error) => return Err(AgentError::Refused(error)),
        }
    }
}
