use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use veil_agent::desync_command;
use veil_agent::journal::JournalLimits;
use veil_agent::runtime::{AgentConfig, run};
use veil_agent::token_file::{TOKEN_FILE_POLL, wait_for_token};

/// veil-agent: applies what the Veil operator assigns to this node (task
/// runs now; xray, sing-box, nfqws and protocol servers as they land) and
/// reports back.
///
/// Example:
///   veil-operator token create --node edge-1 > /etc/veil/edge-1.token
///   veil-agent --operator http://10.0.0.1:7070 --node edge-1 --token-file /etc/veil/edge-1.token
///
/// `veil-agent desync <nfqws arguments>` runs Veil's built-in
/// nfqws-compatible engine (what the agent starts where nfqws is absent).
#[derive(Debug, Parser)]
#[command(name = "veil-agent", version)]
struct Args {
    /// Operator API base URL.
    #[arg(long, env = "VEIL_OPERATOR")]
    operator: String,
    /// This node's name (the token must have been created for it).
    #[arg(long, env = "VEIL_NODE")]
    node: String,
    /// File holding the node token. When it does not exist yet (a
    /// Kubernetes Secret key not created yet) the agent waits for it.
    #[arg(long, env = "VEIL_TOKEN_FILE")]
    token_file: PathBuf,
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
    /// Log output: plain or json.
    #[arg(long, default_value = "plain")]
    log_format: String,
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
    // In Kubernetes the node's key may be added to the Secret after the
    // pod starts: wait for it rather than crash-loop.
    let token = match wait_for_token(&args.token_file, &args.node, TOKEN_FILE_POLL, &shutdown).await
    {
        Ok(Some(token)) => token,
        Ok(None) => return ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    veil_agent::token_file::restrict(&args.token_file);
    let config = AgentConfig {
        node: args.node,
        operator: args.operator,
        token,
        token_file: Some(args.token_file),
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
