use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use veil_agent::desync_command;
use veil_agent::join::JoinValue;
use veil_agent::journal::JournalLimits;
use veil_agent::runtime::{AgentConfig, run};
use veil_agent::token_file::{TOKEN_FILE_POLL, wait_for_token};
use veil_agent::trust::{Trust, check_url};

/// veil-agent: applies what the Veil operator assigns to this node (task
/// runs now; xray, sing-box, nfqws and protocol servers as they land) and
/// reports back.
///
/// Example:
///   veil-operator token create --node edge-1 > /etc/veil/edge-1.join
///   veil-agent --node edge-1 --token-file /etc/veil/edge-1.join
///
/// The join value carries the operator's URL, the node token and the
/// SHA-256 of the operator's CA certificate: the agent talks only to a
/// server whose certificate chains to that CA.
///
/// `veil-agent desync <nfqws arguments>` runs Veil's built-in
/// nfqws-compatible engine (what the agent starts where nfqws is absent).
#[derive(Debug, Parser)]
#[command(name = "veil-agent", version)]
struct Args {
    /// Operator API base URL (`https://HOST:PORT`). Default: the URL in the
    /// join value.
    #[arg(long, env = "VEIL_OPERATOR")]
    operator: Option<String>,
    /// This node's name (the token must have been created for it).
    #[arg(long, env = "VEIL_NODE")]
    node: String,
    /// The join value `veil-operator token create` printed (URL, token and
    /// CA hash). Prefer --token-file or VEIL_JOIN: a command line is
    /// visible to every user of the machine.
    #[arg(
        long,
        env = "VEIL_JOIN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    join: Option<String>,
    /// File holding the join value (or a bare node token). When it does
    /// not exist yet (a Kubernetes Secret key not created yet) the agent
    /// waits for it.
    #[arg(long, env = "VEIL_TOKEN_FILE", required_unless_present = "join")]
    token_file: Option<PathBuf>,
    /// Trust only an operator whose certificate chain holds the CA
    /// certificate with this SHA-256 (`sha256:HEX`); overrides the join
    /// value's.
    #[arg(long, env = "VEIL_CA_CERT_HASH")]
    ca_cert_hash: Option<veil_agent::trust::CaPin>,
    /// Trust only operators whose certificate verifies against the CA
    /// certificates in this PEM file (instead of a pin).
    #[arg(long, env = "VEIL_CA_FILE", conflicts_with = "ca_cert_hash")]
    ca_file: Option<PathBuf>,
    /// Allow `http://` to a non-loopback operator: tokens, keys and tasks
    /// cross the network in clear. Logs a warning on every start.
    #[arg(long, env = "VEIL_INSECURE_PLAINTEXT")]
    insecure_plaintext: bool,
    /// Node label reported at registration (repeatable): --label zone=eu.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Journal, run work dirs and markers.
    #[arg(long, env = "VEIL_AGENT_DATA_DIR", default_value = ".veil-agent")]
    data_dir: PathBuf,
    /// Address this node is reachable at (shown in VeilNode status).
    #[arg(long)]
    address: Option<String>,
    /// How often xray's per-user traffic counters are read and reported
    /// (e.g. `10s`; at most this much counted traffic is at risk if xray
    /// itself is killed).
    #[arg(long, env = "VEIL_STATS_INTERVAL", default_value = "10s")]
    stats_interval: veil_crds::validate::Duration,
    /// Mark the DPI-bypass engine puts on its own packets; Veil's capture
    /// rules skip packets carrying it. zapret's default; on Calico clusters
    /// (which own the upper 16 mark bits) pick a low bit such as 0x100.
    #[arg(long, env = "VEIL_ZAPRET_MARK", default_value = "0x40000000", value_parser = veil_agent::drivers::zapret::parse_mark)]
    zapret_mark: u32,
    /// The user task processes run as (a name or a uid) when the agent runs
    /// as root; tasks of a Runner with `runAsRoot: true` run as root instead.
    /// Default: `veil-task` when that user exists, else `nobody` (65534).
    /// An agent that is not root runs tasks as its own user.
    #[arg(long, env = "VEIL_TASK_USER")]
    task_user: Option<String>,
    /// Most space the report journal may take, in MiB. Over it the agent
    /// merges traffic deltas and cuts old task output (with a marker in the
    /// run's log); task results and traffic are never dropped.
    #[arg(long, env = "VEIL_JOURNAL_MAX_MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    journal_max_mib: u64,
    /// Extra CA certificates (PEM) Strategy probes trust besides the
    /// system's, for probe targets behind a private CA.
    #[arg(long, env = "VEIL_PROBE_CA_FILE")]
    probe_ca_file: Option<PathBuf>,
    /// Log output: plain or json.
    #[arg(long, env = "VEIL_LOG_FORMAT", default_value = "plain")]
    log_format: String,
}

/// Where the operator is, whom to trust, and the token.
struct Connection {
    operator: String,
    trust: Trust,
    token: String,
}

/// The trust setting from the flags alone (`None`: none given).
fn flag_trust(args: &Args) -> Result<Option<Trust>, String> {
    if let Some(path) = &args.ca_file {
        return Trust::ca_file(path).map(Some).map_err(|e| e.to_string());
    }
    Ok(args.ca_cert_hash.map(Trust::Pinned))
}

/// Refuses `http://` to a non-loopback address before the token is read.
fn early_url_check(operator: &str, args: &Args) -> Result<(), String> {
    if !operator.starts_with("http://") {
        return Ok(());
    }
    check_url(operator, &Trust::Plaintext, args.insecure_plaintext)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Combines the flags with the join value (flags win) and checks the URL.
fn connection(args: &Args, secret: &str) -> Result<Connection, String> {
    let (join_url, token, join_pin) = if JoinValue::is_join_value(secret) {
        let join = JoinValue::parse(secret).map_err(|e| e.to_string())?;
        (join.url, join.token, join.ca_pin)
    } else {
        (None, secret.trim().to_owned(), None)
    };
    let operator =
        args.operator.clone().or(join_url).ok_or(
            "no operator URL: pass --operator https://HOST:PORT (the join value has none)",
        )?;
    let trust = match flag_trust(args)? {
        Some(trust) => trust,
        None => join_pin.map_or(Trust::Plaintext, Trust::Pinned),
    };
    let plaintext =
        check_url(&operator, &trust, args.insecure_plaintext).map_err(|e| e.to_string())?;
    if plaintext {
        tracing::warn!(
            operator = %operator,
            "talking to the operator over plain HTTP: the node token and everything assigned cross the network unencrypted"
        );
    }
    Ok(Connection {
        operator,
        trust,
        token,
    })
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut argv = std::env::args();
    if argv.nth(1).as_deref() == Some(desync_command::SUBCOMMAND) {
        return desync(argv.collect()).await;
    }
    let args = Args::parse();
    init_tracing(&args.log_format);
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal.cancel();
    });
    // A plaintext URL the agent may not use is refused before anything
    // else, the token included, is read or sent.
    if let Some(operator) = &args.operator
        && let Err(error) = early_url_check(operator, &args)
    {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    // In Kubernetes the node's key may be added to the Secret after the
    // pod starts: wait for it rather than crash-loop.
    let secret = match (&args.join, &args.token_file) {
        (Some(join), _) => join.clone(),
        (None, Some(path)) => {
            match wait_for_token(path, &args.node, TOKEN_FILE_POLL, &shutdown).await {
                Ok(Some(token)) => token,
                Ok(None) => return ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
        (None, None) => {
            eprintln!("error: pass --join or --token-file");
            return ExitCode::FAILURE;
        }
    };
    let connection = match connection(&args, &secret) {
        Ok(connection) => connection,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The token file is read again before every request (the kubelet
    // rotates projected tokens; `token create` makes new join values); a
    // new URL or CA pin in it takes a restart.
    if let Some(path) = &args.token_file {
        veil_agent::token_file::restrict(path);
    }
    let config = AgentConfig {
        node: args.node,
        operator: connection.operator,
        trust: connection.trust,
        insecure_plaintext: args.insecure_plaintext,
        token: connection.token,
        token_file: args.token_file,
        probe_ca_file: args.probe_ca_file,
        labels: args.labels.into_iter().collect::<BTreeMap<_, _>>(),
        data_dir: args.data_dir,
        address: args.address,
        stats_interval: args.stats_interval.as_std(),
        zapret_mark: args.zapret_mark,
        desync_program: None,
        task_user: args.task_user,
        journal: JournalLimits {
            max_bytes: args.journal_max_mib.saturating_mul(1024 * 1024),
            ..JournalLimits::default()
        },
    };
    match run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {:#}", anyhow::Error::from(error));
            ExitCode::FAILURE
        }
    }
}

/// `veil-agent desync …`: the built-in engine, nfqws-style exit codes.
async fn desync(argv: Vec<String>) -> ExitCode {
    init_tracing("plain");
    match desync_command::run(argv, wait_for_signal()).await {
        Ok(Some(text)) => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
