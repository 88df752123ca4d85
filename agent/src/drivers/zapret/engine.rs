//! The engine process: `--dry-run` pre-flights, starting one instance on a
//! queue and waiting until the kernel lists that queue as bound, stopping
//! it. Each running instance is a [`Supervised`] workload (restarted with
//! backoff if it dies) whose pid is recorded in the data directory, so an
//! agent restarted after `kill -9` ends the instance it left behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use veil_crds::wire::StrategyId;

use super::rules::Capture;
use super::{EngineProgram, ZapretConfig};
use crate::supervisor::{
    Exit, OutputLine, ProcessSpec, State, Stream, Supervised, kill_recorded, run_once,
};

/// Where the kernel lists the NFQUEUE numbers bound in this network namespace.
const QUEUE_TABLE: &str = "/proc/net/netfilter/nfnetlink_queue";
/// SIGTERM→SIGKILL grace: the engine only has to accept the packets it holds.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// How often the queue table is read while waiting for a bind.
const BIND_POLL: Duration = Duration::from_millis(20);

/// A running engine instance and what it runs.
pub struct Engine {
    supervised: Supervised,
    pid_file: PathBuf,
    /// The NFQUEUE it is bound to.
    pub queue: u16,
    /// [`super::compose::fingerprint`] of its profiles.
    pub fingerprint: String,
    /// `builtin`, `nfqws v72.12`, …
    pub implementation: String,
    /// The Strategies whose profiles it runs.
    pub members: BTreeSet<StrategyId>,
    /// What its capture rules send it.
    pub capture: Capture,
}

/// What to start.
pub struct Launch {
    pub program: EngineProgram,
    pub argv: Vec<String>,
    pub queue: u16,
    pub fingerprint: String,
    pub implementation: String,
    pub members: BTreeSet<StrategyId>,
    pub capture: Capture,
}

impl Engine {
    /// Starts `launch` and waits (at most `config.bind_timeout`) until its
    /// queue is bound. On failure nothing is left running and the error is
    /// the engine's own last words.
    pub async fn start(config: &ZapretConfig, launch: Launch) -> Result<Engine, String> {
        let pid_file = pid_file(&config.data_dir, launch.queue);
        let spec = spec(&launch.program, &launch.argv)
            .kill_grace(KILL_GRACE)
            .pid_file(&pid_file);
        let mut supervised = Supervised::start(spec, config.restart)
            .await
            .map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + config.bind_timeout;
        loop {
            if queue_bound(launch.queue) {
                break;
            }
            let exited = !matches!(supervised.state(), State::Running { .. });
            if exited || tokio::time::Instant::now() >= deadline {
                let lines = supervised.recent_lines();
                supervised.stop().await;
                let _ = std::fs::remove_file(&pid_file);
                let why = last_words(&lines).unwrap_or_else(|| {
                    if exited {
                        "the engine exited at once".to_owned()
                    } else {
                        format!(
                            "the engine did not bind NFQUEUE {} within {:?}",
                            launch.queue, config.bind_timeout
                        )
                    }
                });
                return Err(why);
            }
            tokio::time::sleep(BIND_POLL).await;
        }
        Ok(Engine {
            supervised,
            pid_file,
            queue: launch.queue,
            fingerprint: launch.fingerprint,
            implementation: launch.implementation,
            members: launch.members,
            capture: launch.capture,
        })
    }

    /// Its state changes (running, backoff after a crash, …).
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.supervised.subscribe()
    }

    pub fn state(&self) -> State {
        self.supervised.state()
    }

    pub fn pid(&self) -> Option<u32> {
        self.supervised.pid()
    }

    pub fn restarts(&self) -> u32 {
        self.supervised.restarts()
    }

    /// Exits in a row without a healthy run between them.
    pub fn failures_in_a_row(&self) -> u32 {
        self.supervised.failures_in_a_row()
    }

    /// The engine's last output line, for a status message.
    pub fn last_words(&self) -> Option<String> {
        last_words(&self.supervised.recent_lines())
    }

    /// SIGTERM (then SIGKILL after the grace), and forget its pid record.
    pub async fn stop(mut self) {
        self.supervised.stop().await;
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// Runs `argv --dry-run`: `Ok` on exit 0, else the engine's own message.
pub async fn dry_run(
    program: &EngineProgram,
    argv: &[String],
    timeout: Duration,
) -> Result<(), String> {
    let spec = spec(program, argv).arg("--dry-run").timeout(timeout);
    let done = run_once(spec, tokio_util::sync::CancellationToken::new())
        .await
        .map_err(|e| e.to_string())?;
    match done.exit {
        Exit::Code(0) => Ok(()),
        exit => Err(last_words(&done.recent_lines)
            .unwrap_or_else(|| format!("the engine's dry run ended with {exit:?}"))),
    }
}

/// Ends every engine instance a previous agent run recorded in `data_dir`.
pub fn kill_leftovers(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".engine-") && name.ends_with(".pid") && kill_recorded(&entry.path()) {
            tracing::warn!(record = %name, "ended an engine left by a previous agent run");
        }
    }
}

fn pid_file(data_dir: &Path, queue: u16) -> PathBuf {
    data_dir.join(format!(".engine-{queue}.pid"))
}

fn spec(program: &EngineProgram, argv: &[String]) -> ProcessSpec {
    ProcessSpec::new(program.program.as_os_str())
        .args(&program.prefix)
        .args(argv)
        .pass_env("PATH")
        .pass_env("RUST_LOG")
}

/// The last non-empty stderr line (the engine's error), else stdout's.
fn last_words(lines: &[OutputLine]) -> Option<String> {
    let last = |stream: Stream| {
        lines
            .iter()
            .rev()
            .filter(|l| l.stream == stream)
            .map(|l| l.text.trim())
            .find(|t| !t.is_empty())
            .map(str::to_owned)
    };
    last(Stream::Stderr).or_else(|| last(Stream::Stdout))
}

/// Whether the kernel lists `queue` as bound in this network namespace.
pub fn queue_bound(queue: u16) -> bool {
    if !cfg!(target_os = "linux") {
        return true;
    }
    std::fs::read_to_string(QUEUE_TABLE).is_ok_and(|table| {
        table
            .lines()
            .any(|line| line.split_whitespace().next() == Some(&queue.to_string()))
    })
}

/// `nfqws v72.12` from `nfqws --version` output such as
/// `github version v72.12`; the whole text when no `vN…` word is in it.
pub fn external_implementation(program: &Path, version: Option<&str>) -> String {
    let name = program
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "nfqws".to_owned());
    let Some(text) = version else {
        return name;
    };
    let word = text
        .split_whitespace()
        .find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or(text.trim());
    format!("{name} {word}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_implementation_names_the_program_and_its_version_word() {
        let nfqws = Path::new("/usr/bin/nfqws");
        assert_eq!(
            external_implementation(nfqws, Some("github version v72.12 (abc)")),
            "nfqws v72.12"
        );
        assert_eq!(external_implementation(nfqws, Some("72.12")), "nfqws 72.12");
        assert_eq!(external_implementation(nfqws, None), "nfqws");
        assert_eq!(
            external_implementation(Path::new("C:/zapret/winws.exe"), Some("v72.9")),
            "winws v72.9"
        );
    }
}
