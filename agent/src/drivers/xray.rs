//! The xray driver: runs xray for `protocol: vless` servers and keeps its
//! users in step with the assignment through xray's gRPC API, without
//! restarting it (design §4, §6).
//!
//! One actor per server ([`server`]) owns that server's xray; the driver
//! starts, updates and stops actors as assignments come and go, and passes
//! on what they observe as [`Event`]s.
//!
//! xray outlives the agent ([`process`]): [`XrayDriver::detach_all`] (the
//! agent stopping) leaves every xray running and recorded, and the next
//! agent's actors adopt them. Only a server dropped from the assignment
//! ([`XrayDriver::apply`], [`XrayDriver::stop_all`]) or found orphaned
//! ([`XrayDriver::stop_orphans`]) has its xray stopped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use veil_crds::common::WorkloadPhase;
use veil_crds::wire::{ServerAssignment, ServerId, ServerReport, UserTraffic};

pub mod api;
pub mod config;
mod files;
mod logs;
pub mod process;
mod server;
pub mod sockets;
pub mod tracker;
mod user_diff;

/// What the driver observed, for the reporter.
#[derive(Debug)]
pub enum Event {
    /// A server's current state (sent when it changes).
    State(ServerReport),
    /// A server was stopped and removed.
    Gone(ServerId),
    /// Bytes moved since the previous counter read, per user.
    Traffic(Vec<UserTraffic>),
}

/// What every server actor needs.
#[derive(Debug)]
pub struct XrayContext {
    /// The xray executable.
    pub xray: PathBuf,
    /// Its version, as reported by `xray version`.
    pub version: Option<String>,
    /// Server configs and state records live under here.
    pub data_dir: PathBuf,
    /// How often traffic counters are read (and connections counted).
    pub stats_interval: Duration,
    /// Where observations go.
    pub events: mpsc::UnboundedSender<Event>,
    /// Whether traffic read now can be journaled: false until the agent
    /// has registered (its report numbering is known). While false, counters
    /// are left in xray, which keeps counting, so an agent killed before it
    /// reached the operator loses nothing.
    pub reporting: watch::Receiver<bool>,
}

struct Handle {
    desired: watch::Sender<Arc<ServerAssignment>>,
    stop: CancellationToken,
    detach: CancellationToken,
    task: JoinHandle<()>,
}

/// All xray servers of this node.
pub struct XrayDriver {
    /// `None` when xray is not installed: servers are reported `Failed`.
    ctx: Option<Arc<XrayContext>>,
    events: mpsc::UnboundedSender<Event>,
    servers: HashMap<ServerId, Handle>,
}

impl XrayDriver {
    /// A driver using `ctx` (or, with `None`, one that reports every server
    /// as failed because xray is missing).
    pub fn new(ctx: Option<XrayContext>, events: mpsc::UnboundedSender<Event>) -> XrayDriver {
        XrayDriver {
            ctx: ctx.map(Arc::new),
            events,
            servers: HashMap::new(),
        }
    }

    /// Makes the running servers exactly `servers`: starts new ones, hands
    /// changed desired states to their actors, stops the rest.
    pub async fn apply(&mut self, servers: &[ServerAssignment]) {
        let wanted: HashMap<&ServerId, &ServerAssignment> =
            servers.iter().map(|s| (&s.server, s)).collect();
        let gone: Vec<ServerId> = self
            .servers
            .keys()
            .filter(|id| !wanted.contains_key(id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(handle) = self.servers.remove(&id) {
                handle.stop.cancel();
                let _ = handle.task.await;
            }
        }
        let Some(ctx) = &self.ctx else {
            for server in servers {
                let _ = self.events.send(Event::State(ServerReport {
                    server: server.server.clone(),
                    phase: WorkloadPhase::Failed,
                    message: Some(
                        "xray is not installed on this node: put it on the agent's PATH (see docs/agents.md)"
                            .into(),
                    ),
                    ..ServerReport::default()
                }));
            }
            return;
        };
        for (id, server) in wanted {
            match self.servers.get(id) {
                Some(handle) => {
                    if **handle.desired.borrow() != *server {
                        let _ = handle.desired.send(Arc::new(server.clone()));
                    }
                }
                None => {
                    let desired = Arc::new(server.clone());
                    let (tx, rx) = watch::channel(desired.clone());
                    let stop = CancellationToken::new();
                    let detach = CancellationToken::new();
                    let actor = server::Actor::new(ctx.clone(), desired);
                    let task = tokio::spawn(actor.run(rx, stop.clone(), detach.clone()));
                    self.servers.insert(
                        id.clone(),
                        Handle {
                            desired: tx,
                            stop,
                            detach,
                            task,
                        },
                    );
                }
            }
        }
    }

    /// Stops every server (reading their counters first) and removes their
    /// files: nothing is left for a next agent.
    pub async fn stop_all(&mut self) {
        for (_, handle) in self.servers.drain() {
            handle.stop.cancel();
            let _ = handle.task.await;
        }
    }

    /// Lets go of every server without stopping it (the agent is stopping):
    /// counters are read, each xray keeps running and stays recorded, and
    /// the next agent adopts it.
    pub async fn detach_all(&mut self) {
        for (_, handle) in self.servers.drain() {
            handle.detach.cancel();
            let _ = handle.task.await;
        }
    }

    /// Stops the xray of every server directory that belongs to no server
    /// of this driver (a server unassigned while no agent ran) and removes
    /// the directory. Call it with the operator's own assignment applied,
    /// never a remembered one. Their last counters are not read: the server
    /// is no longer this node's, so the operator would refuse its traffic.
    pub async fn stop_orphans(&mut self) {
        let Some(ctx) = &self.ctx else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&ctx.data_dir) else {
            return;
        };
        let ours: std::collections::HashSet<String> =
            self.servers.keys().map(server::dir_name).collect();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if ours.contains(&name) || !entry.path().is_dir() {
                continue;
            }
            server::stop_orphan(entry.path()).await;
        }
    }
}
