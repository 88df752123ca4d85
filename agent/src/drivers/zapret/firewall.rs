//! Runs the capture rules of [`rules`](super::rules) through
//! `iptables-save`/`iptables-restore --noflush` (and the `ip6tables`
//! pair), one transaction per family. Linux only; elsewhere (winws) the
//! capture filter is on the engine's command line and these do nothing.
//!
//! IPv4 failures are errors; IPv6 failures are logged (a node without IPv6
//! or without `ip6tables` still desyncs its IPv4 traffic).

use std::time::Duration;

use super::rules::{self, Installed};
use crate::supervisor::{Exit, OutputLimits, ProcessSpec, Stream, TempFile, run_once};

/// Longest an iptables command may take (it waits for the xtables lock).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the rules could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("{command} failed: {message}")]
    Command { command: String, message: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn save(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }
    fn restore(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }
}

/// Makes Veil's chain hold exactly `lines` ([`rules::chain_rules`],
/// [`rules::side_rules`]), with exactly one jump to it, in both families;
/// replaces whatever was there.
pub async fn install(lines: &[String]) -> Result<(), FirewallError> {
    if !cfg!(target_os = "linux") {
        return Ok(());
    }
    for family in [Family::V4, Family::V6] {
        let result = async {
            let installed = installed(family).await?;
            restore(family, &rules::restore_apply(lines, installed)).await
        }
        .await;
        tolerate_v6(family, result)?;
    }
    Ok(())
}

/// Removes every jump to Veil's chain and the chain itself, in both
/// families; nothing to do when none is there.
pub async fn remove() -> Result<(), FirewallError> {
    if !cfg!(target_os = "linux") {
        return Ok(());
    }
    for family in [Family::V4, Family::V6] {
        let result = async {
            match rules::restore_remove(installed(family).await?) {
                Some(text) => restore(family, &text).await,
                None => Ok(()),
            }
        }
        .await;
        tolerate_v6(family, result)?;
    }
    Ok(())
}

fn tolerate_v6(family: Family, result: Result<(), FirewallError>) -> Result<(), FirewallError> {
    match (family, result) {
        (Family::V6, Err(error)) => {
            tracing::warn!(%error, "IPv6 capture rules not changed; IPv6 traffic is not desynced");
            Ok(())
        }
        (_, result) => result,
    }
}

async fn installed(family: Family) -> Result<Installed, FirewallError> {
    let spec = ProcessSpec::new(family.save())
        .args(["-t", "mangle"])
        .pass_env("PATH")
        .timeout(COMMAND_TIMEOUT)
        .output_limits(OutputLimits {
            max_lines: 1_000_000,
            max_bytes: 64 * 1024 * 1024,
            max_line_bytes: 64 * 1024,
        });
    let stdout = run(family.save(), spec).await?;
    Ok(Installed::from_save(&stdout))
}

async fn restore(family: Family, text: &str) -> Result<(), FirewallError> {
    let failed = |message: String| FirewallError::Command {
        command: family.restore().to_owned(),
        message,
    };
    let file = TempFile::new(text.as_bytes(), ".rules").map_err(|e| failed(e.to_string()))?;
    let spec = ProcessSpec::new(family.restore())
        .arg("--noflush")
        .arg(file.path().as_os_str().to_owned())
        .pass_env("PATH")
        .timeout(COMMAND_TIMEOUT)
        .hold(file);
    run(family.restore(), spec).await.map(|_| ())
}

/// Runs a short command; its stdout on success, its stderr in the error.
async fn run(command: &str, spec: ProcessSpec) -> Result<String, FirewallError> {
    let failed = |message: String| FirewallError::Command {
        command: command.to_owned(),
        message,
    };
    let done = run_once(spec, tokio_util::sync::CancellationToken::new())
        .await
        .map_err(|e| failed(e.to_string()))?;
    let text = |stream: Stream| {
        done.recent_lines
            .iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.text.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    };
    if done.exit != Exit::Code(0) {
        return Err(failed(format!("{:?}: {}", done.exit, text(Stream::Stderr))));
    }
    Ok(text(Stream::Stdout))
}
