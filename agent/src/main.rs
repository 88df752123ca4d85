use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use veil_agent::runtime::{AgentConfig, run};
use veil_agent::token_file::{TOKEN_FILE_POLL, wait_for_token};

/// veil-agent: applies what the Veil operator assigns to this node (task
/// runs now; xray, sing-box, nfqws and protocol servers as they land) and
/// reports back.
///
/// Example:
///   veil-operator token create --node edge-1 > /etc/veil/edge-1.token
///   veil-agent --operator http://10.0.0.1:7070 --node edge-1 --token-file /etc/veil/edge-1.token
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
    /// Log output: plain or json.
    #[arg(long, default_value = "plain")]
    log_format: String,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("desync") {
        return desync(&argv[2..]);
    }
    agent_main()
}

/// TEMPORARY minimal `veil-agent desync <nfqws v1 argv>` so the zapret
/// driver can be tested; the lead replaces it with the full subcommand.
/// `--version` prints the version; `--dry-run` checks argv and files and
/// exits 0, or prints the parser's message and exits 1; otherwise binds
/// `--qnum` and runs until SIGTERM/SIGINT. Host and address lists are
/// checked but not applied (every host passes the profile's list filter).
fn desync(argv: &[String]) -> ExitCode {
    use veil_desync::args::ParseMode;
    init_tracing("plain");
    let report = match veil_desync::dry_run::dry_run(argv, ParseMode::Builtin) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let globals = &report.config.globals;
    if globals.version {
        println!("veil-agent desync {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if globals.dry_run {
        println!("{report}");
        return ExitCode::SUCCESS;
    }
    let shutdown = veil_desync::engine::Shutdown::new();
    let trigger = shutdown.clone();
    std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(wait_for_signal());
        }
        trigger.trigger();
    });
    match veil_desync::engine::run(report.config, veil_desync::engine::NoLists, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn agent_main() -> ExitCode {
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
    let config = AgentConfig {
        node: args.node,
        operator: args.operator,
        token,
        labels: args.labels.into_iter().collect::<BTreeMap<_, _>>(),
        data_dir: args.data_dir,
        address: args.address,
        stats_interval: args.stats_interval.as_std(),
        zapret_mark: args.zapret_mark,
        desync_program: None,
    };
    match run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {:#}", anyhow::Error::from(error));
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
