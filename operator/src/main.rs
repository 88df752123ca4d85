use std::process::ExitCode;

/// mimalloc instead of glibc malloc: with glibc's per-thread arenas the
/// operator's RSS grew to 281 MiB over 10,000 task runs (fragmentation from
/// the reconcile loop's short-lived 10,000-element structures); see
/// docs/benchmarks.md. The `system-alloc` feature keeps glibc malloc, so a
/// heap profiler that hooks it (heaptrack) sees every allocation.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use veil_operator::cli::{Cli, Command, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let long_running = matches!(cli.command, Command::Run(_) | Command::Up(_));
    init_tracing(cli.log_format, long_running);
    match cli.run().await.map_err(anyhow::Error::from) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the cause chain on one line; never a backtrace for a user error.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; `RUST_LOG` overrides the default level (info for the
/// long-running commands, warn for one-shot CLI commands).
fn init_tracing(format: LogFormat, long_running: bool) {
    let default = if long_running { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Plain => builder.init(),
    }
}
