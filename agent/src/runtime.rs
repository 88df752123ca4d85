//! The agent's main loop: register, long-poll assignments, run what is
//! assigned, and report — surviving an operator that comes and goes.
//!
//! - Registration retries with exponential backoff and jitter.
//! - A 401/403 (token wrong, revoked, or another node's) stops new work: no
//!   assignment is polled, so no new task runs; what runs keeps running
//!   (servers keep serving) until the operator assigns otherwise. The agent
//!   logs the refusal as an error and tries again every [`REFUSED_RETRY`].
//! - The last applied assignment (servers and Strategies) is kept on disk
//!   ([`last_assignment`]); an agent that starts while the operator is away
//!   serves it before registering, adopting the xray processes a previous
//!   agent left running.
//! - Stopping the agent leaves xray running for the next agent (see
//!   [`XrayDriver::detach_all`]); traffic counters are read only once reports
//!   can be journaled with the right numbering (after registration).
//! - While the operator is away the agent keeps running what it was last
//!   assigned, and journals every report until it is acknowledged.
//! - Level-triggered: each assignment is the node's whole desired state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use veil_crds::wire::RegisterRequest;

use crate::client::{ClientError, OperatorClient};
use crate::drivers::xray::{Event, XrayContext, XrayDriver};
use crate::drivers::zapret::{EngineProgram, ExternalEngine, ZapretConfig, ZapretDriver};
use crate::journal::{Journal, JournalError, JournalLimits};
use crate::strategy::probe::ProbeOptions;
use crate::strategy::prober::Prober;
use crate::strategy::saved::SavedStates;
use crate::throttle::Throttle;
use crate::token_file::NodeToken;

mod backoff;
pub mod last_assignment;
mod reporter;
mod tasks;

/// How often an agent whose token the operator refused (401/403) tries
/// again: slowly, as a refusal needs a person to act (restore the token or
/// create a new one), and each attempt is logged as an error.
pub const REFUSED_RETRY: Duration = Duration::from_secs(60);

pub use backoff::Backoff;

/// How the agent was started.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// This node's name (the token must be bound to it).
    pub node: String,
    /// Operator base URL, e.g. `https://10.0.0.1:7070`.
    pub operator: String,
    /// Whom to trust as the operator (pin, CA file, or plain HTTP).
    pub trust: crate::trust::Trust,
    /// Allow `http://` to a non-loopback address (`--insecure-plaintext`).
    pub insecure_plaintext: bool,
    /// Node token (secret).
    pub token: String,
    /// Extra CA certificates (PEM) that Strategy probes trust besides the
    /// system's, for targets behind a private CA.
    pub probe_ca_file: Option<PathBuf>,
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
    /// `--task-user`: who task processes run as (see
    /// [`crate::task_user::TaskUser::resolve`]); `None`: the default.
    pub task_user: Option<String>,
    /// Bounds of the report journal (`DATA_DIR/journal`).
    pub journal: JournalLimits,
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
    /// The operator URL or the trust setting cannot be used; nothing was sent.
    #[error(transparent)]
    Trust(#[from] crate::trust::TrustError),
    #[error("cannot create {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The data dir's modes could not be set.
    #[error(transparent)]
    DataDirModes(#[from] crate::data_dir::DataDirError),
    /// `--task-user` cannot be used.
    #[error(transparent)]
    TaskUser(#[from] crate::task_user::TaskUserError),
}

/// Runs the agent until `shutdown` is cancelled: then stops every task's
/// process tree and the DPI-bypass engines, and leaves xray running for the
/// next agent. A refused token does not end it (see the module docs).
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let task_user = crate::task_user::TaskUser::resolve(config.task_user.as_deref())?;
    match &task_user {
        Some(user) => {
            tracing::info!(%user, "tasks run as this user unless their Runner sets runAsRoot")
        }
        None => tracing::warn!(
            "the agent is not root: tasks run as the agent's own user and can read its token and data dir"
        ),
    }
    let runs_dir = crate::data_dir::prepare(&config.data_dir)?;
    let journal = Journal::open(&config.data_dir.join("journal"), config.journal.clone())?;
    let mut client = OperatorClient::new(
        &config.operator,
        &config.token,
        &config.trust,
        config.insecure_plaintext,
    )?;
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
    // Closed until the reporter runs with the operator's report numbering.
    let (reporting, reporting_rx) = watch::channel(false);
    let mut servers = servers_driver(&config, &capabilities, outbox_tx.clone(), reporting_rx);
    let zapret = zapret_driver(&config, &capabilities, outbox_tx.clone());
    let mut prober = Prober::new(
        probe_options(&config),
        crate::drivers::zapret::DEFAULT_PROBE_MARK,
        zapret.engines(),
        SavedStates::new(config.data_dir.join("failover")),
    );
    let last_path = config.data_dir.join(last_assignment::FILE_NAME);
    if let Some(last) = last_assignment::load(&last_path, &config.node) {
        tracing::info!(
            revision = last.revision,
            servers = last.servers.len(),
            strategies = last.strategies.len(),
            "serving the last applied assignment until the operator answers"
        );
        servers.apply(&last.servers).await;
        // The prober first: it tells the engines which member failover chose.
        prober.apply(&last.strategies);
        zapret.apply(last.strategies.clone());
    }

    let Some(registered) = register(&client, &request, &shutdown).await else {
        servers.detach_all().await;
        zapret.shutdown().await;
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
    reporting.send_replace(true);

    let mut tasks = tasks::Tasks::new(
        crate::drivers::task::TaskContext {
            capabilities,
            task_user,
            ..crate::drivers::task::TaskContext::new(config.node.clone(), runs_dir.clone())
        },
        runs_dir,
        outbox_tx,
    );
    let long_poll = Duration::from_secs(registered.long_poll_seconds.max(1).into());
    // What was applied last: the base the operator's deltas apply to.
    // Revision 0 asks for the whole assignment (after a start or a delta
    // that did not apply); an operator without the deltas from `revision`
    // (restarted, or too many changes behind) sends the whole one too.
    let mut revision = 0;
    let mut current = None;
    let mut backoff = Backoff::default();
    let mut saving = Throttle::new(SAVE_INTERVAL);
    loop {
        let save_due = saving.due_at();
        let poll = tokio::select! {
            _ = shutdown.cancelled() => break,
            () = crate::throttle::sleep_until_some(save_due) => {
                saving.wrote(tokio::time::Instant::now());
                keep_assignment(&last_path, current.as_ref());
                continue;
            }
            poll = client.assignment(revision, long_poll) => poll,
        };
        match poll {
            Ok(Some(update)) => {
                backoff.reset();
                let assignment = match update.resolve(current.take()) {
                    Ok(assignment) => assignment,
                    Err(error) => {
                        // Keep running what was applied; the whole state comes next.
                        tracing::warn!(%error, "cannot apply the assignment delta; asking for the whole assignment");
                        revision = 0;
                        continue;
                    }
                };
                revision = assignment.revision;
                tasks.apply(&assignment);
                servers.apply(&assignment.servers).await;
                servers.stop_orphans().await;
                prober.apply(&assignment.strategies);
                zapret.apply(assignment.strategies.clone());
                applied.store(revision, Ordering::Relaxed);
                current = Some(assignment);
                if saving.changed(tokio::time::Instant::now()) {
                    keep_assignment(&last_path, current.as_ref());
                }
            }
            Ok(None) => backoff.reset(),
            Err(error)
                if error.is_transient() && !matches!(error, ClientError::RegisterAgain(_)) =>
            {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, "assignment poll failed; keeping the last assignment");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(error) => {
                // 409 (the operator forgot us) or a refusal: register again;
                // a refusal waits there, slowly, with nothing new started.
                if !error.is_transient() {
                    refused(&error);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(REFUSED_RETRY) => {}
                    }
                }
                if register(&client, &request, &shutdown).await.is_none() {
                    break;
                }
            }
        }
    }
    if saving.is_pending() {
        keep_assignment(&last_path, current.as_ref());
    }
    drop(prober);
    tasks.stop_all().await;
    servers.detach_all().await;
    zapret.shutdown().await;
    // Dropping both closes the outbox: the reporter delivers what is left and ends.
    drop(tasks);
    drop(servers);
    let _ = reporter.await;
    Ok(())
}

/// Logs a refusal of the node's token: what it means and what to do.
/// The assignment file is rewritten at most this often while changes keep
/// coming (each write renders every user: see [`Throttle`]).
const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Keeps `assignment` on disk for a start without the operator.
fn keep_assignment(path: &std::path::Path, assignment: Option<&veil_crds::wire::Assignment>) {
    let Some(assignment) = assignment else {
        return;
    };
    if let Err(error) = last_assignment::save(path, assignment) {
        tracing::warn!(%error, "cannot keep the assignment for a restart without the operator");
    }
}

fn refused(error: &ClientError) {
    tracing::error!(
        %error,
        retry_in = ?REFUSED_RETRY,
        "the operator refused this node's token: no new work starts; running servers keep serving until the operator assigns otherwise. Restore the token or give the agent a new one (veil-operator token create)"
    );
}

/// The xray driver, with its observations forwarded to the reporter.
fn servers_driver(
    config: &AgentConfig,
    capabilities: &[veil_crds::wire::Capability],
    outbox: mpsc::UnboundedSender<reporter::Outgoing>,
    reporting: watch::Receiver<bool>,
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
            reporting,
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

/// How this node's probes trust and reach their targets: the system's CA
/// store plus `--probe-ca-file` (a target behind a private CA); with
/// neither, nothing verifies and every https sample fails `CertError`.
fn probe_options(config: &AgentConfig) -> ProbeOptions {
    let mut roots = crate::strategy::probe::system_roots().unwrap_or_else(|error| {
        tracing::warn!(%error, "no system CA certificates for probes");
        rustls::RootCertStore::empty()
    });
    if let Some(path) = &config.probe_ca_file {
        match crate::trust::Trust::ca_file(path) {
            Ok(crate::trust::Trust::CaFile(certs)) => {
                let (added, _) = roots.add_parsable_certificates(certs);
                tracing::info!(path = %path.display(), added, "probes also trust these CA certificates");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "probes cannot use --probe-ca-file"),
        }
    }
    ProbeOptions::new(Duration::from_secs(10), Arc::new(roots))
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

/// Registers, retrying transient failures with backoff and refusals every
/// [`REFUSED_RETRY`]; `None` if shut down meanwhile.
async fn register(
    client: &OperatorClient,
    request: &RegisterRequest,
    shutdown: &CancellationToken,
) -> Option<veil_crds::wire::RegisterResponse> {
    let mut backoff = Backoff::default();
    loop {
        let delay = match client.register(request).await {
            Ok(response) => return Some(response),
            Err(error) if error.is_transient() => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, "registration failed; retrying");
                delay
            }
            Err(error) => {
                refused(&error);
                REFUSED_RETRY
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
