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
    #[cfg(target_os = "linux")]
    without_huge_pages();
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

/// No transparent huge pages for the operator's heap. mimalloc asks for
/// them on its arenas, and the first touch of a huge page zeroes all 2 MiB
/// of it: loading 100,000 objects spent a fifth of its CPU zeroing pages
/// (docs/benchmarks.md). Best effort: a kernel that refuses leaves the
/// operator as fast as before.
#[cfg(target_os = "linux")]
fn without_huge_pages() {
    if let Err(error) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("note: transparent huge pages stay on ({error})");
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
