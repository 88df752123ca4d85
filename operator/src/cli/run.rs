//! `veil-operator run` and `up`: the long-running operator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::admin::{self, AdminError, Provisioned};
use crate::agents::Agents;
use crate::api::{self, ApiState};
use crate::controller::{Controller, ControllerError};
use crate::leader::{self, LeaseConfig};
use crate::metrics::Metrics;
use crate::node_tokens::{self, NodeTokens};
use crate::runs::RunBook;
use crate::sink::{KubeEvents, KubeStatusWriter, KubeTaskRuns, KubeVeilNodes};
use crate::source::SourceSnapshot;
use crate::source::dir::{DirLimits, DirOptions, DirSource};
use crate::source::kube::{ConnectError, KubeOptions, KubeSource};
use crate::store::{Store, StoreError, StoreTarget};
use crate::traffic::TrafficBook;
use crate::view::View;

use super::tls_args::{self, TlsArgs};
use super::{DEFAULT_DATA_DIR, DEFAULT_LISTEN};

/// Where desired state comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// `dir:PATH` — a watched directory of YAML/JSON files.
    Dir(PathBuf),
    /// `kube` — Veil's custom resources on a Kubernetes API server.
    Kube,
}

impl FromStr for SourceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("dir", path)) if !path.is_empty() => Ok(SourceSpec::Dir(PathBuf::from(path))),
            None if s == "kube" => Ok(SourceSpec::Kube),
            Some(("kube", _)) => Err(
                "write `--source kube --namespace NS` to watch one namespace (`kube` alone watches all)"
                    .to_owned(),
            ),
            _ => Err(format!(
                "unknown source `{s}`: write `dir:PATH` (a directory of YAML files) or `kube` (a Kubernetes API server)"
            )),
        }
    }
}

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Desired state: `dir:PATH` watches a directory of YAML/JSON files;
    /// `kube` watches Veil's custom resources on a Kubernetes API server
    /// and writes statuses there.
    #[arg(long, env = "VEIL_SOURCE")]
    pub source: SourceSpec,
    /// With `--source kube`: watch this namespace only (VeilNodes are
    /// cluster-scoped and always watched); all namespaces when absent.
    #[arg(long, env = "VEIL_NAMESPACE")]
    pub namespace: Option<String>,
    /// With `--source kube`: the kubeconfig to use (its current context).
    /// Default: KUBECONFIG, ~/.kube/config, then the in-cluster service account.
    #[arg(long, env = "VEIL_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// With `--source kube`: namespace of the leader-election Lease
    /// `veil-operator` (only its holder writes). Default: POD_NAMESPACE,
    /// else `veil-system`.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// With `--source kube`: this replica's name in the Lease; unique per
    /// replica. Default: POD_NAME, else `<hostname>_<pid>`.
    #[arg(long, env = "POD_NAME")]
    pub lease_identity: Option<String>,
    /// With `--source kube`: base URL of this replica's API, written on the
    /// Lease while it leads so that followers hand `/v1/` requests to it.
    /// Default: `https://$POD_IP:<--listen port>` when POD_IP is set, else
    /// `https://<--listen>` (http with --insecure-plaintext) unless that is 0.0.0.0 or `::` (then none, and
    /// followers answer 503).
    #[arg(long, env = "VEIL_ADVERTISE_URL")]
    pub advertise_url: Option<reqwest::Url>,
    /// Address of the HTTP API (agents, `veil-operator get`, /metrics, /healthz, /readyz).
    #[arg(long, env = "VEIL_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Data directory: the SQLite database (unless --database-url) and admin.token.
    #[arg(long, env = "VEIL_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Use PostgreSQL instead of SQLite: postgres://user:password@host/db.
    #[arg(long, env = "VEIL_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Quiet period that coalesces bursts of file changes into one snapshot, in milliseconds.
    #[arg(long, default_value_t = 25)]
    pub debounce_ms: u64,
    /// Dir mode: most objects loaded from the whole directory; a file that
    /// would take the tree over it is not loaded (and says so).
    #[arg(long, env = "VEIL_MAX_OBJECTS", default_value_t = DirLimits::default().max_total_objects)]
    pub max_objects: usize,
    /// Replace the admin token with a new one (written to DATA_DIR/admin.token).
    #[arg(long)]
    pub rotate_admin_token: bool,
    /// Seconds between agent heartbeats; a node silent for 3 intervals is NotReady
    /// and its running task runs end with reason NodeLost.
    #[arg(long, default_value_t = crate::api::agent::HEARTBEAT_INTERVAL_SECONDS)]
    pub heartbeat_interval: u32,
    /// Let Schedule webhooks reach loopback, private, link-local and CGNAT
    /// addresses (refused by default: Schedule authors choose the URLs).
    #[arg(long, env = "VEIL_ALLOW_PRIVATE_WEBHOOKS")]
    pub allow_private_webhooks: bool,
    #[command(flatten)]
    pub agent_identity: super::agent_identity::AgentIdentityArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Arguments of `up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Directory of YAML files to run (for example examples/standalone).
    pub dir: PathBuf,
    /// Address of the HTTP API.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Most objects loaded from the directory.
    #[arg(long, env = "VEIL_MAX_OBJECTS", default_value_t = DirLimits::default().max_total_objects)]
    pub max_objects: usize,
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl UpArgs {
    /// `up DIR` is `run --source dir:DIR --data-dir .veil`.
    pub fn into_run_args(self) -> RunArgs {
        RunArgs {
            source: SourceSpec::Dir(self.dir),
            namespace: None,
            kubeconfig: None,
            lease_namespace: None,
            lease_identity: None,
            advertise_url: None,
            listen: self.listen,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            database_url: None,
            debounce_ms: 25,
            max_objects: self.max_objects,
            rotate_admin_token: false,
            heartbeat_interval: crate::api::agent::HEARTBEAT_INTERVAL_SECONDS,
            allow_private_webhooks: false,
            agent_identity: Default::default(),
            tls: self.tls,
        }
    }
}

/// Why the operator could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Controller(#[from] ControllerError),
    #[error("watching the source: {0}")]
    Source(String),
    #[error("Kubernetes: {0}")]
    Kube(#[from] ConnectError),
    #[error("--namespace is for `--source kube`; a directory's files name their own namespaces")]
    NamespaceWithoutKube,
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Forward(#[from] api::forward::ForwardError),
    #[error(transparent)]
    StoreNotShared(#[from] leader::StoreNotShared),
    #[error("--tls-secret is for `--source kube`; in dir mode use --tls-cert/--tls-key")]
    TlsSecretWithoutKube,
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("the in-process agent: {0}")]
    Trust(#[from] veil_agent::trust::TrustError),
    #[error("cannot write {path}: {source}")]
    UrlFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the operator until SIGINT/SIGTERM.
pub async fn run(args: RunArgs) -> Result<(), RunError> {
    run_with(args, None).await
}

/// `up`: the operator plus an in-process agent for this machine, node `local`.
pub async fn up(args: UpArgs) -> Result<(), RunError> {
    run_with(args.into_run_args(), Some(LOCAL_NODE)).await
}

/// Node name of the agent `up` runs in-process.
pub const LOCAL_NODE: &str = "local";

/// The local agent's token: kept in `DATA_DIR/local-agent.token` (0600) and
/// reused while the store still knows it; a new one otherwise.
async fn local_agent_token(store: &Store, data_dir: &std::path::Path) -> Result<String, RunError> {
    let path = data_dir.join("local-agent.token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        let token = token.trim().to_owned();
        if store
            .node_for_token_hash(&admin::hash_token(&token))
            .await?
            .as_deref()
            == Some(LOCAL_NODE)
        {
            return Ok(token);
        }
    }
    let token = admin::generate_token("veil_node_");
    let id = admin::generate_token("")[..12].to_owned();
    store
        .create_node_token(LOCAL_NODE, &admin::hash_token(&token), &id)
        .await?;
    admin::write_secret_file(&path, &token).map_err(|source| {
        RunError::Admin(AdminError::WriteFile {
            path: path.clone(),
            source,
        })
    })?;
    Ok(token)
}

async fn run_with(args: RunArgs, local_agent: Option<&str>) -> Result<(), RunError> {
    let target = StoreTarget::parse(args.database_url.as_deref(), &args.data_dir)?;
    let store = Store::open(&target).await?;
    tracing::info!(store = %target, "state store open");

    let (admin_hash, provisioned) =
        admin::ensure_admin_token(&store, &args.data_dir, args.rotate_admin_token).await?;
    if let Provisioned::Created(path) = &provisioned {
        tracing::info!(path = %path.display(), "admin token written (0600); `veil-operator get` reads it from there");
    }

    let metrics = Arc::new(Metrics::new());
    let (view_tx, view_rx) = watch::channel(Arc::new(View::default()));
    let (snapshot_tx, snapshot_rx) = watch::channel(Arc::new(SourceSnapshot::default()));

    let debounce = Duration::from_millis(args.debounce_ms);
    let (_source, cluster) = match &args.source {
        SourceSpec::Dir(root) => {
            if args.namespace.is_some() {
                return Err(RunError::NamespaceWithoutKube);
            }
            let options = DirOptions {
                debounce,
                limits: DirLimits {
                    max_total_objects: args.max_objects,
                    ..DirLimits::default()
                },
                ..DirOptions::default()
            };
            let source = DirSource::new(root.clone(), options)
                .spawn(snapshot_tx)
                .map_err(|e| RunError::Source(e.to_string()))?;
            tracing::info!(dir = %root.display(), "watching source directory");
            (RunningSource::Dir(source), None)
        }
        SourceSpec::Kube => {
            let client = crate::source::kube::connect(args.kubeconfig.as_deref()).await?;
            let options = KubeOptions {
                namespace: args.namespace.clone(),
                debounce,
                ..KubeOptions::default()
            };
            let source = KubeSource::new(client.clone(), options).spawn(snapshot_tx);
            (RunningSource::Kube(source), Some(client))
        }
    };

    let (server_tls, own_trust) = resolve_tls(&args, cluster.as_ref()).await?;
    let https = server_tls.config.is_some();
    write_url_file(&args, &server_tls)?;
    if let Some((path, pin)) = &server_tls.ca {
        tracing::info!(ca = %path.display(), ca_cert_hash = %pin, "serving HTTPS; agents pin this CA (`veil-operator token create` prints join values carrying it)");
    }

    let agents = Arc::new(Agents::default());
    let runs = Arc::new(RunBook::load(store.clone()).await?);
    let traffic = Arc::new(TrafficBook::load(store.clone(), metrics.clone()).await?);
    let heartbeat = args.heartbeat_interval.max(1);
    let mut controller = Controller::start(
        store.clone(),
        agents.clone(),
        runs.clone(),
        traffic.clone(),
        Duration::from_secs(3 * u64::from(heartbeat)),
        view_tx,
        metrics.clone(),
    )
    .await?;
    if args.allow_private_webhooks {
        tracing::warn!(
            "--allow-private-webhooks: Schedule webhooks may reach loopback and private addresses"
        );
        controller.allow_private_webhooks();
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut node_tokens = NodeTokens::off();
    let mut _token_watch = None;
    let (controller, elector, forwarder) = match cluster {
        None => {
            metrics.leader.set(1);
            (controller, None, None)
        }
        Some(client) => {
            // Agent tokens from the Secrets of the operator's namespace, on
            // every replica (a follower forwards agents to the leader, and
            // serves them itself once it leads).
            let namespace = leader::operator_namespace(args.lease_namespace.clone());
            node_tokens = NodeTokens::listing()
                .with_reviewer(args.agent_identity.reviewer(client.clone(), &namespace));
            _token_watch = Some(AbortOnDrop(node_tokens::watch::spawn(
                client.clone(),
                namespace,
                node_tokens.clone(),
            )));
            // Only the holder of the Lease writes; a follower plans alike,
            // and hands `/v1/` requests to the leader.
            let mut config =
                LeaseConfig::from_env(args.lease_namespace.clone(), args.lease_identity.clone());
            leader::check_store_is_shared(client.clone(), &config, target.is_shared()).await?;
            let pod_ip = std::env::var("POD_IP").ok();
            config.endpoint = leader::advertised(
                args.advertise_url.as_ref(),
                args.listen,
                pod_ip.as_deref(),
                https,
            );
            let identity = config.identity.clone();
            let gauge = metrics.leader.clone();
            let election = leader::spawn(
                client.clone(),
                config,
                shutdown.child_token(),
                move |leading| {
                    gauge.set(i64::from(leading));
                },
            );
            let forwarder = api::forward::Forwarder::new(
                election.state,
                &identity,
                &own_trust,
                metrics.clone(),
                shutdown.clone(),
            )?;
            let gate = election.gate;
            let credentials = crate::credential_secrets::CredentialSecrets::spawn(
                client.clone(),
                args.namespace.clone(),
                gate.clone(),
            );
            let controller = controller
                .into_kube_mode(
                    KubeStatusWriter::spawn(client.clone(), gate.clone(), metrics.clone()),
                    KubeTaskRuns::new(client.clone(), gate.clone()),
                    KubeEvents::spawn(client.clone(), gate.clone(), identity),
                    KubeVeilNodes::new(client, gate.clone()),
                    gate,
                )
                .with_credential_secrets(credentials);
            (controller, Some(election.task), Some(Arc::new(forwarder)))
        }
    };
    let controller = tokio::spawn(controller.run(snapshot_rx));

    let store_for_agent = store.clone();
    let state = ApiState {
        shutdown: shutdown.clone(),
        view: view_rx,
        store,
        metrics,
        admin_token_hash: admin_hash.into(),
        agents,
        runs,
        traffic,
        heartbeat_interval_seconds: heartbeat,
        forwarder,
        node_tokens,
        failed_auth: Default::default(),
        store_tokens: Default::default(),
        probe_history: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: args.listen,
            source,
        })?;
    tracing::info!(addr = %args.listen, "API listening");
    let agent = match local_agent {
        Some(node) => {
            let token = local_agent_token(&store_for_agent, &args.data_dir).await?;
            // Its tasks run as an unprivileged user, under `DATA_DIR/agent/runs`
            // (after the token: writing it makes the data dir private again).
            if let Err(error) = crate::private_fs::make_passable_dir(&args.data_dir) {
                tracing::warn!(dir = %args.data_dir.display(), %error, "cannot make the data dir passable (0711): the local agent's tasks will fail to reach their work dirs");
            }
            let operator = tls_args::local_url(&server_tls, args.listen);
            print_join_hint(&server_tls, &args.data_dir);
            let config = veil_agent::runtime::AgentConfig {
                node: node.to_owned(),
                operator,
                trust: own_trust.clone(),
                insecure_plaintext: false,
                token,
                token_file: None,
                probe_ca_file: None,
                labels: Default::default(),
                data_dir: args.data_dir.join("agent"),
                address: None,
                stats_interval: std::time::Duration::from_secs(10),
                zapret_mark: veil_agent::drivers::zapret::DEFAULT_MARK,
                desync_program: None,
                // The default: an unprivileged user when this process is root.
                task_user: None,
                journal: veil_agent::journal::JournalLimits::default(),
            };
            tracing::info!(%node, "starting the in-process agent for this machine");
            let stop = shutdown.clone();
            Some(tokio::spawn(async move {
                if let Err(error) = veil_agent::runtime::run(config, stop).await {
                    tracing::error!(error = %error, "in-process agent stopped");
                }
            }))
        }
        None => None,
    };
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stopping");
        on_signal.cancel();
    });
    crate::tls::serve::serve(
        listener,
        api::router(state),
        server_tls.config.clone(),
        args.tls.serve_options(),
        shutdown.clone(),
    )
    .await;
    if let Some(agent) = agent {
        let _ = tokio::time::timeout(Duration::from_secs(35), agent).await;
    }
    if let Some(elector) = elector {
        // Releases the Lease, so a follower takes over at once.
        let _ = tokio::time::timeout(Duration::from_secs(5), elector).await;
    }
    controller.abort();
    tracing::info!("stopped");
    Ok(())
}

/// What the API serves, and how this process's own clients trust it.
async fn resolve_tls(
    args: &RunArgs,
    cluster: Option<&kube::Client>,
) -> Result<(crate::tls::ServerTls, veil_agent::trust::Trust), RunError> {
    let tls = &args.tls;
    let Some(secret) = &tls.tls_secret else {
        let server = tls.resolve(&args.data_dir, args.listen, args.advertise_url.as_ref())?;
        let trust = tls_args::own_trust(&server, tls.tls_server_name.as_deref())?;
        return Ok((server, trust));
    };
    let client = cluster.ok_or(RunError::TlsSecretWithoutKube)?;
    let namespace = leader::operator_namespace(args.lease_namespace.clone());
    let names = crate::tls::secret::generated_names(&tls.tls_service, &namespace, &tls.tls_sans);
    let files = crate::tls::secret::load_or_create(
        client.clone(),
        &namespace,
        secret,
        &names,
        &args.data_dir,
    )
    .await?;
    let server = crate::tls::ServerTls::load(&files)?;
    let name = tls
        .tls_server_name
        .clone()
        .unwrap_or_else(|| crate::tls::secret::service_name(&tls.tls_service, &namespace));
    let trust = tls_args::own_trust(&server, Some(&name))?;
    Ok((server, trust))
}

/// Writes DATA_DIR/operator.url: the URL join values carry (the
/// advertised URL, else the listen address unless it is unspecified).
fn write_url_file(args: &RunArgs, tls: &crate::tls::ServerTls) -> Result<(), RunError> {
    let path = args.data_dir.join(tls_args::URL_FILE);
    let url = match &args.advertise_url {
        Some(url) => Some(url.to_string()),
        None if args.listen.ip().is_unspecified() => None,
        None => Some(format!("{}://{}", tls_args::scheme(tls), args.listen)),
    };
    let written = match url {
        Some(url) => std::fs::create_dir_all(&args.data_dir)
            .and_then(|()| std::fs::write(&path, format!("{}\n", url.trim_end_matches('/')))),
        None => match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        },
    };
    written.map_err(|source| RunError::UrlFile { path, source })
}

/// `up`: how to add a second node.
fn print_join_hint(tls: &crate::tls::ServerTls, data_dir: &std::path::Path) {
    let pin = tls
        .ca
        .as_ref()
        .map(|(_, pin)| pin.to_string())
        .unwrap_or_else(|| "none (plain HTTP)".to_owned());
    eprintln!(
        "veil: to add another node, run `veil-operator token create --node NAME --data-dir {} --url https://THIS-HOST:PORT` and give the printed join value to `veil-agent --node NAME --token-file FILE` there (CA {pin})",
        data_dir.display()
    );
}

/// A background task that stops when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The running source; dropping it stops the watching.
#[allow(
    dead_code,
    reason = "held only so that the source runs until `run` returns"
)]
enum RunningSource {
    Dir(crate::source::dir::DirSourceHandle),
    Kube(crate::source::kube::KubeSourceHandle),
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
