//! `veil-agent desync <nfqws v1 arguments>`: Veil's built-in engine as a
//! process of its own, with nfqws's command line and behaviour, so the
//! zapret driver runs it exactly as it runs real nfqws.
//!
//! - `--version` prints one line and exits 0;
//! - `--dry-run` checks every option, list and payload file, prints a
//!   summary and exits 0 — or prints what is wrong and exits 1;
//! - otherwise it binds `--qnum` and desyncs until SIGTERM/SIGINT.
//!
//! Options outside the built-in subset are refused by name (exit 1), never
//! ignored: a Strategy that needs them must run on real nfqws.

use std::fmt::Write as _;

use veil_desync::args::{self, ArgsError, ParseMode};
use veil_desync::dry_run;
use veil_desync::engine::{self, EngineError, ListsFilter, Shutdown};
use veil_desync::lists::ListError;

/// The first argument that selects this command.
pub const SUBCOMMAND: &str = "desync";

/// What the command prints on `--version` (the driver shows it as the
/// Strategy's `implementation`).
pub fn version_line() -> String {
    format!("veil-desync builtin v{}", env!("CARGO_PKG_VERSION"))
}

/// Why the engine did not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DesyncCommandError {
    /// The command line is wrong (the message names the option and profile).
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// A list file could not be loaded.
    #[error(transparent)]
    List(#[from] ListError),
    /// The queue could not be bound or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The engine thread panicked.
    #[error("the engine thread stopped unexpectedly")]
    Panicked,
}

/// Runs the command with `argv` (the arguments after `desync`). `stop`
/// resolves when the process is asked to stop. Returns what to print on
/// stdout for `--version`/`--dry-run`, or `None` after a normal stop.
pub async fn run(
    argv: Vec<String>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Option<String>, DesyncCommandError> {
    let config = args::parse(&argv, ParseMode::Builtin)?;
    if config.globals.version {
        return Ok(Some(version_line()));
    }
    if config.globals.dry_run {
        let report = dry_run::dry_run(&argv, ParseMode::Builtin)?;
        let mut text = report.to_string();
        let _ = writeln!(text, "command line parameters verified");
        return Ok(Some(text));
    }
    let filter = ListsFilter::load(&config)?;
    let shutdown = Shutdown::new();
    let trigger = shutdown.clone();
    let qnum = config.globals.qnum;
    let mut engine = tokio::task::spawn_blocking(move || engine::run(config, filter, shutdown));
    tracing::info!(qnum, "built-in desync engine running");
    tokio::select! {
        result = &mut engine => return finish(result),
        () = stop => trigger.trigger(),
    }
    // An idle engine blocks in the kernel until the next packet, holding
    // nothing: after a short wait the process may exit under it.
    match tokio::time::timeout(STOP_GRACE, &mut engine).await {
        Ok(result) => finish(result),
        Err(_) => Ok(None),
    }
}

/// How long a stop waits for the engine loop to notice it.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

fn finish(
    result: Result<Result<(), EngineError>, tokio::task::JoinError>,
) -> Result<Option<String>, DesyncCommandError> {
    match result {
        Ok(Ok(())) => Ok(None),
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(DesyncCommandError::Panicked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn version_prints_the_builtin_line() {
        let out = run(strings(&["--version"]), std::future::pending())
            .await
            .unwrap();
        assert_eq!(out, Some(version_line()));
    }

    #[tokio::test]
    async fn dry_run_verifies_without_binding() {
        let out = run(
            strings(&[
                "--qnum=201",
                "--dry-run",
                "--filter-tcp=443",
                "--dpi-desync=multisplit",
            ]),
            std::future::pending(),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(out.ends_with("command line parameters verified\n"), "{out}");
    }

    #[tokio::test]
    async fn unsupported_option_is_refused_by_name() {
        let error = run(
            strings(&["--qnum=201", "--filter-tcp=443", "--dpi-desync=ipfrag2"]),
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("ipfrag2"), "{error}");
    }
}
