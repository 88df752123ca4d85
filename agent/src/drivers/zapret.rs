//! The zapret driver: runs the node's active zapret Strategies in one DPI
//! bypass engine (nfqws/winws, or the built-in `veil-agent desync`), the
//! `vless` members' clients (kept warm, see [`crate::drivers::vless_client`]),
//! and reports each Strategy's state (design §4a).
//!
//! One actor ([`actor`]) owns the engine process, the materialised lists
//! and files under [`ZapretConfig::data_dir`], and Veil's capture rules;
//! every change goes through its mailbox, so nothing checks and then
//! inserts concurrently. [`ZapretDriver`] is the mailbox's sending side.
//! The parts the actor uses are plain functions, tested on their own:
//! [`compose`] (argv), [`rules`] (firewall text), [`choice`] (which
//! engine), [`winws`] (Windows capture and WinDivert errors), and the file
//! writer.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use veil_crds::wire::{ProbeReport, StrategyGroup, StrategyId, StrategyReport};

use crate::strategy::prober::Engines;
use crate::supervisor::RestartPolicy;

mod actor;
pub mod choice;
pub mod compose;
mod engine;
pub mod files;
mod firewall;
pub mod rules;
pub mod winws;

/// Default NFQUEUE numbers: the engine alternates between `base` and
/// `base + 1` on every change (blue/green), zapret's customary 200/201.
pub const DEFAULT_QUEUE_BASE: u16 = 200;

/// zapret's default `--dpi-desync-fwmark`.
pub const DEFAULT_MARK: u32 = veil_desync::spec::DEFAULT_FWMARK;

/// The mark a candidate's probes carry (`SO_MARK`): only packets with it
/// reach the candidate slot's engine (design §4a.6).
pub const DEFAULT_PROBE_MARK: u32 = 0x0800_0000;

/// The candidate slot's queue is `queue_base` + this (after the main
/// engine's two).
pub const SIDE_QUEUE_OFFSET: u16 = 2;

/// A program and the arguments that come before the engine's own argv
/// (`veil-agent` + `desync`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineProgram {
    pub program: PathBuf,
    pub prefix: Vec<String>,
}

impl EngineProgram {
    /// `program` with no prefix arguments.
    pub fn plain(program: impl Into<PathBuf>) -> EngineProgram {
        EngineProgram {
            program: program.into(),
            prefix: Vec::new(),
        }
    }

    /// How it shows in fingerprints and logs.
    fn display(&self) -> String {
        let mut text = self.program.to_string_lossy().into_owned();
        for arg in &self.prefix {
            text.push(' ');
            text.push_str(arg);
        }
        text
    }
}

/// nfqws (or winws) found on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalEngine {
    pub program: EngineProgram,
    /// As printed by `nfqws --version` (`github version v72.12`), if known.
    pub version: Option<String>,
}

/// Everything the actor needs.
#[derive(Clone, Debug)]
pub struct ZapretConfig {
    /// Lists, files and the engine's pid records (`DATA/zapret`).
    pub data_dir: PathBuf,
    /// VLESS clients' configs and pid records (`DATA/vless-clients`).
    pub vless_dir: PathBuf,
    /// The built-in engine: normally this agent's own executable + `desync`.
    pub builtin: EngineProgram,
    /// nfqws/winws, when installed.
    pub external: Option<ExternalEngine>,
    /// Mark the engine puts on its own packets; the capture rules skip it.
    pub mark: u32,
    /// Mark of the probes of a candidate under test (see [`DEFAULT_PROBE_MARK`]).
    pub probe_mark: u32,
    /// First of the two NFQUEUE numbers (see [`DEFAULT_QUEUE_BASE`]); the
    /// candidate slot uses `queue_base + 2`.
    pub queue_base: u16,
    /// How a dead engine is restarted (with `--queue-bypass` traffic flows
    /// un-desynced meanwhile).
    pub restart: RestartPolicy,
    /// Longest wait for a new engine to bind its queue.
    pub bind_timeout: Duration,
    /// Longest a `--dry-run` may take.
    pub dry_run_timeout: Duration,
}

impl ZapretConfig {
    /// Defaults for `data_dir` with the built-in engine `builtin`: zapret's
    /// mark `0x40000000`, queues 200/201, the supervisor's restart policy.
    pub fn new(data_dir: PathBuf, builtin: EngineProgram) -> ZapretConfig {
        let vless_dir = data_dir.parent().map_or_else(
            || data_dir.join("vless-clients"),
            |p| p.join("vless-clients"),
        );
        ZapretConfig {
            data_dir,
            vless_dir,
            builtin,
            external: None,
            mark: DEFAULT_MARK,
            probe_mark: DEFAULT_PROBE_MARK,
            queue_base: DEFAULT_QUEUE_BASE,
            restart: RestartPolicy::default(),
            bind_timeout: Duration::from_secs(10),
            dry_run_timeout: Duration::from_secs(15),
        }
    }
}

/// Parses a mark as given on the command line: `0x40000000` or decimal;
/// zero is refused (it would mark nothing and the engine would loop).
pub fn parse_mark(text: &str) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    match parsed {
        Ok(0) => Err("the mark must not be 0".to_owned()),
        Ok(mark) => Ok(mark),
        Err(e) => Err(format!(
            "`{text}` is not a mark (0x40000000 or decimal): {e}"
        )),
    }
}

enum Command {
    Apply(Vec<StrategyGroup>),
    /// The probes' latest word on a member, sent with its report from now on.
    Probe(StrategyId, ProbeReport),
    /// Failover chose `member` (a name in `group`) as the group's active one.
    Activate {
        group: StrategyId,
        member: String,
    },
    /// Runs `member` of `group` in the candidate slot (`None`: empties the
    /// slot); answers once its engine is bound and its rules are in.
    Candidate {
        group: StrategyId,
        member: Option<String>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Answers with the SOCKS port of a `vless` member's running client.
    SocksPort(StrategyId, oneshot::Sender<Option<u16>>),
    /// Answers why the active member of a group cannot work, if it cannot.
    ActiveFailure(StrategyId, oneshot::Sender<Option<String>>),
    /// Answers with the reports as they are once every earlier command is done.
    Sync(oneshot::Sender<Vec<StrategyReport>>),
    /// Stops the engine and removes the rules (files stay), then ends.
    Shutdown(oneshot::Sender<()>),
}

/// The zapret actor's mailbox.
pub struct ZapretDriver {
    mailbox: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
}

impl ZapretDriver {
    /// Starts the actor. It first cleans up what a crashed agent left
    /// (engine processes recorded in `data_dir`, Veil's rules), then waits
    /// for assignments; each time its Strategies' states change it sends
    /// all of them (one per member) to `reports`.
    pub fn start(
        config: ZapretConfig,
        reports: mpsc::UnboundedSender<Vec<StrategyReport>>,
    ) -> ZapretDriver {
        let (mailbox, inbox) = mpsc::unbounded_channel();
        let task = tokio::spawn(actor::Actor::new(config, reports).run(inbox));
        ZapretDriver { mailbox, task }
    }

    /// Makes the engine run exactly the active members of `groups` (the
    /// node's whole desired state; empty stops the engine, removes the
    /// rules and the files).
    pub fn apply(&self, groups: Vec<StrategyGroup>) {
        if self.mailbox.send(Command::Apply(groups)).is_err() {
            tracing::error!("the zapret actor is gone; strategies are not applied");
        }
    }

    /// The handle failover drives the engine with (see [`Engines`]).
    pub fn engines(&self) -> ZapretEngines {
        ZapretEngines {
            mailbox: self.mailbox.clone(),
        }
    }

    /// The reports once everything sent before is applied.
    pub async fn sync(&self) -> Vec<StrategyReport> {
        let (tx, rx) = oneshot::channel();
        if self.mailbox.send(Command::Sync(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Stops the engine and removes Veil's rules (the lists stay for the
    /// next start), then ends the actor.
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self.mailbox.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
        let _ = self.task.await;
    }
}

/// The zapret actor as failover sees it: a clonable handle on its mailbox.
#[derive(Clone)]
pub struct ZapretEngines {
    mailbox: mpsc::UnboundedSender<Command>,
}

impl Engines for ZapretEngines {
    fn activate(&self, group: &StrategyId, member: &str) {
        let _ = self.mailbox.send(Command::Activate {
            group: group.clone(),
            member: member.to_owned(),
        });
    }

    async fn test_candidate(&self, group: &StrategyId, member: &str) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Candidate {
            group: group.clone(),
            member: Some(member.to_owned()),
            reply,
        };
        if self.mailbox.send(command).is_err() {
            return Err("the zapret driver has stopped".to_owned());
        }
        answer
            .await
            .unwrap_or_else(|_| Err("the zapret driver has stopped".to_owned()))
    }

    fn stop_candidate(&self, group: &StrategyId) {
        let (reply, _) = oneshot::channel();
        let _ = self.mailbox.send(Command::Candidate {
            group: group.clone(),
            member: None,
            reply,
        });
    }

    fn report(&self, member: StrategyId, report: ProbeReport) {
        let _ = self.mailbox.send(Command::Probe(member, report));
    }

    async fn active_failure(&self, group: &StrategyId) -> Option<String> {
        let (reply, answer) = oneshot::channel();
        self.mailbox
            .send(Command::ActiveFailure(group.clone(), reply))
            .ok()?;
        answer.await.ok().flatten()
    }

    async fn socks_port(&self, member: &StrategyId) -> Option<u16> {
        let (reply, answer) = oneshot::channel();
        self.mailbox
            .send(Command::SocksPort(member.clone(), reply))
            .ok()?;
        answer.await.ok().flatten()
    }
}
