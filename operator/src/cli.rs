//! Command-line interface of `veil-operator`: arguments (clap) and the
//! commands behind them. `main.rs` only parses and calls [`Cli::run`].

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub mod agent_identity;
pub mod get;
pub mod link;
pub mod logs;
pub mod probe_rounds;
pub mod run;
pub mod table;
pub mod tls_args;
pub mod token;
pub mod validate;

/// Default address of the operator's HTTP API (agents, `get`, metrics).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Default data dir: SQLite database and the admin token file.
pub const DEFAULT_DATA_DIR: &str = ".veil";

/// Veil: declarative censorship-circumvention infrastructure.
///
/// Describe DPI-bypass strategies, VLESS keys, task schedules and runners and
/// protocol servers as YAML; veil-operator reconciles them and node agents
/// apply them.
///
/// Quick start:  veil-operator up examples/standalone
///   then, in a second terminal:  veil-operator get schedules
#[derive(Debug, Parser)]
#[command(name = "veil-operator", version, propagate_version = true)]
pub struct Cli {
    /// Log output: human-readable `plain` or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Plain, env = "VEIL_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing would only obscure the clap derive"
)]
pub enum Command {
    /// Run the operator (long-running): reconcile a source, serve the API.
    ///
    /// Example: veil-operator run --source dir:./infra --listen 127.0.0.1:7070
    Run(run::RunArgs),
    /// Quick start: run on a directory with SQLite under ./.veil/ and an
    /// in-process agent for this machine (node `local`).
    ///
    /// Same as `run --source dir:DIR --data-dir .veil` plus `veil-agent --node local`.
    Up(run::UpArgs),
    /// Show objects and their status from a running operator, like kubectl get.
    ///
    /// KIND accepts singular, plural and short names: `vlesskeys`, `vlesskey`, `vk`.
    /// Examples: veil-operator get vk;  veil-operator get schedule nightly -o yaml
    Get(get::GetArgs),
    /// Print a VlessKey's vless:// link (a credential) for clients; --qr also draws a QR code.
    ///
    /// Example: veil-operator link alice -n default --qr
    Link(link::LinkArgs),
    /// Print a task run's full output (kept in the store); -f follows until it ends.
    ///
    /// Example: veil-operator logs taskrun nightly-29412345 -f
    Logs(logs::LogsArgs),
    /// Check YAML files offline; exits non-zero listing every error.
    ///
    /// Example: veil-operator validate ./infra
    Validate(validate::ValidateArgs),
    /// Print the CustomResourceDefinitions of every Veil kind (for kubectl apply).
    Crds(CrdsArgs),
    /// Manage node tokens for agents: create (printed once), list, revoke.
    ///
    /// Example: veil-operator token create --node edge-1 > edge-1.token
    /// Kubernetes: veil-operator token create --node edge-1 --kube
    #[command(subcommand)]
    Token(token::TokenCommand),
}

/// Arguments of `crds`.
#[derive(Debug, clap::Args)]
pub struct CrdsArgs {
    /// Write one file per CRD into this directory instead of printing.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

/// Why a command failed; printed by `main`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Run(#[from] run::RunError),
    #[error(transparent)]
    Get(#[from] get::GetError),
    #[error(transparent)]
    Token(#[from] token::TokenError),
    #[error(transparent)]
    Link(#[from] link::LinkError),
    /// `validate` found errors (already printed).
    #[error("{0} error(s) found")]
    Invalid(usize),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Cli {
    /// Runs the chosen command to completion.
    pub async fn run(self) -> Result<(), CliError> {
        match self.command {
            Command::Run(args) => Ok(run::run(args).await?),
            Command::Up(args) => Ok(run::up(args).await?),
            Command::Get(args) => Ok(get::get(args).await?),
            Command::Link(args) => Ok(link::link(args).await?),
            Command::Logs(args) => Ok(logs::logs(args).await?),
            Command::Validate(args) => validate::validate(&args),
            Command::Crds(args) => crds(&args),
            Command::Token(command) => Ok(token::token(command).await?),
        }
    }
}

fn crds(args: &CrdsArgs) -> Result<(), CliError> {
    match &args.out_dir {
        None => {
            print!("{}", veil_crds::crd::crds_yaml());
            Ok(())
        }
        Some(dir) => {
            for (name, yaml) in veil_crds::crd::crd_files() {
                let path = dir.join(name);
                std::fs::create_dir_all(dir)
                    .and_then(|()| std::fs::write(&path, yaml))
                    .map_err(|source| CliError::Write { path, source })?;
            }
            Ok(())
        }
    }
}
