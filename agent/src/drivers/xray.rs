//! The xray driver: runs xray for `protocol: vless` servers and keeps its
//! users in step with the assignment through xray's gRPC API, without
//! restarting it (design §4, §6).
//!
//! One actor per server ([`server`]) owns that server's xray; the driver
//! starts, updates and stops actors as assignments come and go, and passes
//! on what they observe as [`Event`]s.

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
mod server;
pub mod sockets;
pub mod tracker;

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
}

struct Handle {
    desired: watch::Sender<Arc<ServerAssignment>>,
    cancel: CancellationToken,
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
                handle.cancel.cancel();
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
                    let cancel = CancellationToken::new();
                    let actor = server::Actor::new(ctx.clone(), desired);
                    let task = tokio::spawn(actor.run(rx, cancel.clone()));
                    self.servers.insert(
                        id.clone(),
                        Handle {
                            desired: tx,
                            cancel,
                            task,
                        },
                    );
                }
            }
        }
    }

    /// Stops every server (reading their counters first).
    pub async fn stop_all(&mut self) {
        for (_, handle) in self.servers.drain() {
            handle.cancel.cancel();
            let _ = handle.task.await;
        }
    }
}
