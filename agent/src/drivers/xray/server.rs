//! One server's actor: owns its xray process, the users applied to it, its
//! connection tracker and its traffic counters. Everything that talks to
//! this xray happens in this one task, so changes are serialised (seed 002
//! §2.3) while each batch of user operations is pipelined over gRPC.
//!
//! Loop contract:
//! - a new desired state restarts xray only when the config without users
//!   changed (every new config passes `xray run -test` first; a refused one
//!   leaves the running xray untouched); otherwise users are added/removed
//!   through the API;
//! - removed users (disabled, expired, over limit, deleted, id changed) have
//!   their counters read first and their open connections closed after;
//! - after every xray start (ours or the supervisor's restart) the user set
//!   is re-synced against what xray reports;
//! - every `stats_interval` traffic is read with `reset: true` (the only
//!   reader: reset and non-reset reads are never mixed) and sent as deltas.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use veil_crds::common::WorkloadPhase;
use veil_crds::protocol_server::VlessFlow;
use veil_crds::wire::{
    FailedUser, ServerAssignment, ServerId, ServerReport, UserTraffic, VlessUser,
};

use super::api::{UserOp, XrayApi};
use super::config::{self, INBOUND_TAG};
use super::files::{ServerFiles, StateRecord};
use super::tracker::{Tracker, parse_access_line};
use super::{Event, XrayContext, sockets};
use crate::runtime::Backoff;
use crate::supervisor::{
    self, LastExit, OutputLine, ProcessSpec, RestartPolicy, State, Stream, Supervised,
};

/// How long a fresh xray gets to open its API.
const API_READY: Duration = Duration::from_secs(15);
/// Access-log lines buffered between xray and the tracker.
const ACCESS_BUFFER: usize = 16_384;

/// A user as applied to xray.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    id: String,
    flow: VlessFlow,
}

struct Running {
    process: Supervised,
    state: watch::Receiver<State>,
    api: XrayApi,
    api_port: u16,
    infra_hash: String,
    pid: u32,
    access: mpsc::Receiver<OutputLine>,
}

pub(super) struct Actor {
    ctx: Arc<XrayContext>,
    id: ServerId,
    files: ServerFiles,
    desired: Arc<ServerAssignment>,
    running: Option<Running>,
    applied: BTreeMap<String, Applied>,
    failed: BTreeMap<String, String>,
    tracker: Tracker,
    /// Secrets of the desired state, masked out of every message.
    secrets: Vec<String>,
    phase: WorkloadPhase,
    message: Option<String>,
    connections: u32,
    restarts: u32,
    retry_at: Option<Instant>,
    backoff: Backoff,
    last_report: Option<ServerReport>,
}

impl Actor {
    pub(super) fn new(ctx: Arc<XrayContext>, desired: Arc<ServerAssignment>) -> Actor {
        let id = desired.server.clone();
        let files = ServerFiles::new(ctx.data_dir.join(format!("{}.{}", id.namespace, id.name)));
        Actor {
            ctx,
            id,
            files,
            secrets: secrets_of(&desired),
            desired,
            running: None,
            applied: BTreeMap::new(),
            failed: BTreeMap::new(),
            tracker: Tracker::default(),
            phase: WorkloadPhase::Pending,
            message: None,
            connections: 0,
            restarts: 0,
            retry_at: None,
            backoff: Backoff::default(),
            last_report: None,
        }
    }

    /// Runs until `cancel`; then reads the last counters and stops xray.
    pub(super) async fn run(
        mut self,
        mut desired: watch::Receiver<Arc<ServerAssignment>>,
        cancel: CancellationToken,
    ) {
        self.reclaim_leftover().await;
        self.reconcile().await;
        let mut stats = tokio::time::interval(self.ctx.stats_interval);
        stats.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let retry = self.retry_at;
            tokio::select! {
                () = cancel.cancelled() => break,
                changed = desired.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.desired = desired.borrow_and_update().clone();
                    self.secrets = secrets_of(&self.desired);
                    self.reconcile().await;
                }
                () = async { match retry {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }} => {
                    self.retry_at = None;
                    self.reconcile().await;
                }
                _ = stats.tick() => self.collect().await,
                event = process_event(&mut self.running) => match event {
                    ProcessEvent::Access(line) => self.observe(&line),
                    ProcessEvent::State(state) => self.on_process_state(state).await,
                },
            }
        }
        self.shutdown().await;
    }

    /// Brings xray in line with the desired state.
    async fn reconcile(&mut self) {
        let api_port = match &self.running {
            Some(running) => running.api_port,
            None => match free_port() {
                Ok(port) => port,
                Err(error) => {
                    self.fail(format!("no free loopback port for xray's API: {error}"));
                    return;
                }
            },
        };
        let infra = config::render(&self.desired, api_port, &[]).infra_hash;
        let restart = self.running.as_ref().is_none_or(|r| r.infra_hash != infra);
        if restart {
            self.start(api_port).await;
        } else {
            self.sync_users(false).await;
        }
        self.report();
    }

    /// Tests and starts a config with every desired user, replacing the
    /// running xray only if the new config is accepted.
    async fn start(&mut self, api_port: u16) {
        let users: Vec<&VlessUser> = self.desired.vless.users.iter().collect();
        let rendered = config::render(&self.desired, api_port, &users);
        if let Err(error) = self
            .files
            .write(&self.files.candidate(), &rendered.document)
        {
            self.fail(error.to_string());
            return;
        }
        if let Err(message) = self.test_candidate().await {
            let kept = if self.running.is_some() {
                " (the running xray keeps its previous config)"
            } else {
                ""
            };
            self.fail(format!("xray refused the config{kept}: {message}"));
            return;
        }
        if let Err(error) = self.files.promote_candidate() {
            self.fail(error.to_string());
            return;
        }
        if let Some(old) = self.running.take() {
            self.collect_from(&old.api).await;
            let mut process = old.process;
            process.stop().await;
            self.connections = 0;
        }
        self.phase = WorkloadPhase::Starting;
        self.message = None;
        self.report();
        let (sink, access) = mpsc::channel(ACCESS_BUFFER);
        let listen: Option<SocketAddr> = format!("{}:{}", self.desired.listen, self.desired.port)
            .parse()
            .ok()
            .or_else(|| {
                format!("[{}]:{}", self.desired.listen, self.desired.port)
                    .parse()
                    .ok()
            });
        let mut spec = ProcessSpec::new(&self.ctx.xray)
            .args(["run", "-c"])
            .arg(self.files.config())
            .output_sink(sink)
            .require_free_tcp(SocketAddr::from(([127, 0, 0, 1], api_port)));
        if let Some(listen) = listen {
            spec = spec.require_free_tcp(listen);
        }
        let process = match Supervised::start(spec, RestartPolicy::default()).await {
            Ok(process) => process,
            Err(error) => {
                self.fail(format!("cannot start xray: {error}"));
                return;
            }
        };
        let pid = process.pid().unwrap_or_default();
        let state = process.subscribe();
        let api = match wait_for_api(api_port, &process).await {
            Ok(api) => api,
            Err(message) => {
                self.fail(self.mask(&message));
                return;
            }
        };
        if let Err(error) = self.files.save_state(&StateRecord { pid, api_port }) {
            tracing::warn!(server = %self.id, %error, "cannot record the running xray");
        }
        self.applied = self
            .desired
            .vless
            .users
            .iter()
            .map(|user| (user.email.clone(), Applied::of(user)))
            .collect();
        self.failed.clear();
        self.running = Some(Running {
            process,
            state,
            api,
            api_port,
            infra_hash: rendered.infra_hash,
            pid,
            access,
        });
        self.phase = WorkloadPhase::Running;
        tracing::info!(server = %self.id, pid, users = self.applied.len(), "xray started");
        // The config holds every user; confirm against what xray reports.
        self.sync_users(true).await;
    }

    /// Adds and removes users through the API. With `full`, first reads the
    /// user list from xray (after a start) instead of trusting `applied`.
    async fn sync_users(&mut self, full: bool) {
        let Some(running) = &self.running else {
            return;
        };
        let api = running.api.clone();
        let port = self.desired.port;
        if full {
            match api.inbound_users(INBOUND_TAG).await {
                Ok(present) => {
                    let present: HashSet<String> = present.into_iter().collect();
                    self.applied.retain(|email, _| present.contains(email));
                    for email in present {
                        // Present in xray but unknown here: remove it below.
                        self.applied.entry(email).or_insert_with(Applied::unknown);
                    }
                }
                Err(error) => {
                    self.retry(format!("cannot list xray's users: {error}"));
                    return;
                }
            }
        }
        let wanted = self.desired.clone();
        let desired: BTreeMap<&str, &VlessUser> = wanted
            .vless
            .users
            .iter()
            .map(|user| (user.email.as_str(), user))
            .collect();
        let removes: Vec<String> = self
            .applied
            .iter()
            .filter(|(email, applied)| {
                desired
                    .get(email.as_str())
                    .is_none_or(|user| Applied::of(user) != **applied)
            })
            .map(|(email, _)| email.clone())
            .collect();
        let adds: Vec<&VlessUser> = desired
            .values()
            .filter(|user| removes.contains(&user.email) || !self.applied.contains_key(&user.email))
            .copied()
            .collect();
        self.failed
            .retain(|email, _| desired.contains_key(email.as_str()));
        if removes.is_empty() && adds.is_empty() {
            self.after_sync();
            return;
        }
        if !removes.is_empty() {
            // Their counters may go with them: read everything first.
            self.collect_from(&api).await;
        }
        // Removes first, then adds: a user whose id or flow changed is in both.
        let removed = api
            .apply(
                INBOUND_TAG,
                removes
                    .iter()
                    .map(|email| UserOp::Remove {
                        email: email.clone(),
                    })
                    .collect(),
            )
            .await;
        let mut transient = None;
        let mut revoked = Vec::new();
        for (email, result) in removed {
            match result {
                Ok(()) => {
                    self.applied.remove(&email);
                    revoked.push(email);
                }
                Err(error) => transient = Some(format!("remove {email}: {error}")),
            }
        }
        let adds: Vec<&VlessUser> = adds
            .into_iter()
            .filter(|user| !self.applied.contains_key(&user.email))
            .collect();
        let added = api
            .apply(
                INBOUND_TAG,
                adds.iter()
                    .map(|user| UserOp::Add((*user).into()))
                    .collect(),
            )
            .await;
        for (email, result) in added {
            match result {
                Ok(()) => {
                    self.failed.remove(&email);
                    if let Some(wanted) = desired.get(email.as_str()) {
                        self.applied.insert(email, Applied::of(wanted));
                    }
                }
                Err(error) if error.is_transient() => {
                    transient = Some(format!("add {email}: {error}"));
                }
                Err(error) => {
                    let message = self.mask(&error.to_string());
                    self.failed.insert(email, message);
                }
            }
        }
        self.revoke(port, &revoked).await;
        if let Some(message) = transient {
            self.retry(self.mask(&message));
        } else {
            self.after_sync();
        }
        self.write_fallback_config();
    }

    /// Closes the open connections of users just removed.
    async fn revoke(&mut self, port: u16, emails: &[String]) {
        let peers: Vec<SocketAddr> = emails
            .iter()
            .flat_map(|email| self.tracker.peers_of(email))
            .collect();
        if peers.is_empty() {
            return;
        }
        match sockets::destroy(port, &peers).await {
            Ok(closed) => {
                tracing::info!(server = %self.id, users = emails.len(), closed, "closed revoked users' connections");
            }
            Err(error) => {
                tracing::warn!(server = %self.id, %error, "could not close revoked users' connections");
                self.message = Some(format!(
                    "revoked users' open connections could not be closed: {error}"
                ));
            }
        }
    }

    fn after_sync(&mut self) {
        self.backoff.reset();
        self.retry_at = None;
        if self.running.is_some() {
            self.phase = WorkloadPhase::Running;
            self.message = None;
        }
    }

    /// Keeps the on-disk config in step with the applied users, so a crash
    /// restart starts from (nearly) the right set; the re-sync does the rest.
    fn write_fallback_config(&self) {
        let Some(running) = &self.running else {
            return;
        };
        let users: Vec<&VlessUser> = self
            .desired
            .vless
            .users
            .iter()
            .filter(|user| self.applied.contains_key(&user.email))
            .collect();
        let rendered = config::render(&self.desired, running.api_port, &users);
        if let Err(error) = self.files.write(&self.files.config(), &rendered.document) {
            tracing::warn!(server = %self.id, %error, "cannot update the fallback config");
        }
    }

    /// Reads and resets traffic counters, counts connections.
    async fn collect(&mut self) {
        let Some(running) = &self.running else {
            return;
        };
        let api = running.api.clone();
        self.collect_from(&api).await;
        match sockets::established_peers(self.desired.port) {
            Ok(open) => {
                self.connections = u32::try_from(open.len()).unwrap_or(u32::MAX);
                self.tracker.retain(&open);
            }
            Err(error) => tracing::debug!(%error, "cannot count connections"),
        }
        self.report();
    }

    async fn collect_from(&mut self, api: &XrayApi) {
        match api.user_traffic(true).await {
            Ok(counters) => {
                let traffic: Vec<UserTraffic> = counters
                    .into_iter()
                    .filter(|c| c.uplink > 0 || c.downlink > 0)
                    .map(|c| UserTraffic {
                        server: self.id.clone(),
                        email: c.email,
                        uplink: c.uplink,
                        downlink: c.downlink,
                    })
                    .collect();
                if !traffic.is_empty() {
                    let _ = self.ctx.events.send(Event::Traffic(traffic));
                }
            }
            Err(error) => {
                tracing::debug!(server = %self.id, %error, "cannot read traffic counters")
            }
        }
    }

    fn observe(&mut self, line: &OutputLine) {
        if line.stream == Stream::Stdout
            && let Some(accepted) = parse_access_line(&line.text)
        {
            self.tracker.observe(accepted);
        }
    }

    async fn on_process_state(&mut self, state: State) {
        match state {
            State::Running { pid, .. } => {
                let fresh = self.running.as_ref().is_some_and(|r| r.pid != pid);
                if !fresh {
                    return;
                }
                self.restarts += 1;
                let Some(running) = self.running.as_mut() else {
                    return;
                };
                running.pid = pid;
                let api_port = running.api_port;
                if let Err(error) = self.files.save_state(&StateRecord { pid, api_port }) {
                    tracing::warn!(server = %self.id, %error, "cannot record the running xray");
                }
                tracing::warn!(server = %self.id, pid, "xray was restarted; re-syncing users");
                let deadline = Instant::now() + API_READY;
                while Instant::now() < deadline {
                    if let Some(running) = &self.running
                        && running.api.inbound_users(INBOUND_TAG).await.is_ok()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                self.phase = WorkloadPhase::Running;
                self.message = None;
                self.sync_users(true).await;
            }
            State::Backoff { last_exit, .. } => {
                let why = match &last_exit {
                    LastExit::Exited(exit) => format!("xray exited ({exit:?})"),
                    LastExit::StartFailed(message) => format!("xray could not start: {message}"),
                };
                let recent = self.recent_errors();
                self.phase = WorkloadPhase::Failed;
                self.message =
                    Some(self.mask(&format!("{why}; restarting with backoff. {recent}")));
            }
            State::Starting => self.phase = WorkloadPhase::Starting,
            State::Stopped { .. } => self.phase = WorkloadPhase::Stopped,
        }
        self.report();
    }

    /// The last lines xray wrote to stderr (its errors).
    fn recent_errors(&self) -> String {
        let Some(running) = &self.running else {
            return String::new();
        };
        let lines = running.process.recent_lines();
        let errors: Vec<&str> = lines
            .iter()
            .filter(|l| l.stream == Stream::Stderr)
            .map(|l| l.text.as_str())
            .collect();
        errors[errors.len().saturating_sub(3)..].join(" | ")
    }

    /// Runs `xray run -test` on the candidate; `Err(xray's message)` if refused.
    async fn test_candidate(&self) -> Result<(), String> {
        let spec = ProcessSpec::new(&self.ctx.xray)
            .args(["run", "-test", "-c"])
            .arg(self.files.candidate())
            .timeout(Duration::from_secs(30));
        let done = supervisor::run_once(spec, CancellationToken::new())
            .await
            .map_err(|error| format!("cannot run `xray run -test`: {error}"))?;
        if done.exit.success() {
            return Ok(());
        }
        let lines: Vec<&str> = done.recent_lines.iter().map(|l| l.text.as_str()).collect();
        let message = lines
            .iter()
            .rev()
            .find(|l| l.contains("Failed") || l.contains("failed"))
            .copied()
            .unwrap_or_else(|| lines.last().copied().unwrap_or("no output"));
        let candidate = self.files.candidate();
        let message = message.replace(&format!("[{}] > ", candidate.display()), "");
        Err(self.mask(&message))
    }

    /// After an agent restart: reads the counters of an xray a previous
    /// agent left running (nothing counted is lost), then ends it.
    async fn reclaim_leftover(&mut self) {
        let Some(state) = self.files.load_state() else {
            return;
        };
        if self.files.is_our_xray(state.pid) {
            tracing::info!(server = %self.id, pid = state.pid, "found the xray of a previous agent run; collecting its counters");
            if let Ok(api) =
                XrayApi::connect(SocketAddr::from(([127, 0, 0, 1], state.api_port))).await
            {
                self.collect_from(&api).await;
            }
            crate::supervisor::kill_group_now(state.pid);
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.files.is_our_xray(state.pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.files.clear_state();
    }

    async fn shutdown(&mut self) {
        if let Some(running) = self.running.take() {
            self.collect_from(&running.api).await;
            let mut process = running.process;
            process.stop().await;
        }
        self.files.clear_state();
        self.files.remove_all();
        let _ = self.ctx.events.send(Event::Gone(self.id.clone()));
    }

    fn fail(&mut self, message: String) {
        tracing::warn!(server = %self.id, %message, "server not applied");
        self.phase = WorkloadPhase::Failed;
        self.message = Some(message);
        self.retry(String::new());
    }

    fn retry(&mut self, message: String) {
        if !message.is_empty() {
            tracing::warn!(server = %self.id, %message, "will retry");
            self.message = Some(message);
        }
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
    }

    fn mask(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            if !secret.is_empty() {
                text = text.replace(secret.as_str(), "<redacted>");
            }
        }
        text
    }

    /// Sends the server's state when it changed.
    fn report(&mut self) {
        let complete = self.running.is_some()
            && self.failed.is_empty()
            && self.applied.len() == self.desired.vless.users.len()
            && self
                .desired
                .vless
                .users
                .iter()
                .all(|u| self.applied.get(&u.email) == Some(&Applied::of(u)));
        let report = ServerReport {
            server: self.id.clone(),
            phase: self.phase,
            message: self.message.clone(),
            pid: self.running.as_ref().map(|r| r.pid),
            version: self.ctx.version.clone(),
            users: u32::try_from(self.applied.len()).unwrap_or(u32::MAX),
            connections: self.connections,
            restarts: self.restarts,
            applied_users_hash: complete.then(|| self.desired.vless.users_hash.clone()),
            failed_users: self
                .failed
                .iter()
                .map(|(email, message)| FailedUser {
                    email: email.clone(),
                    message: message.clone(),
                })
                .collect(),
        };
        if self.last_report.as_ref() != Some(&report) {
            self.last_report = Some(report.clone());
            let _ = self.ctx.events.send(Event::State(report));
        }
    }
}

impl Applied {
    fn of(user: &VlessUser) -> Applied {
        Applied {
            id: user.id.expose().to_owned(),
            flow: user.flow,
        }
    }

    /// A user found in xray that this agent did not put there.
    fn unknown() -> Applied {
        Applied {
            id: String::new(),
            flow: VlessFlow::None,
        }
    }
}

fn secrets_of(server: &ServerAssignment) -> Vec<String> {
    let mut secrets = vec![server.vless.private_key.expose().to_owned()];
    secrets.extend(server.vless.users.iter().map(|u| u.id.expose().to_owned()));
    secrets
}

/// A port on 127.0.0.1 that is free now.
fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// Connects to a fresh xray's API, giving up if xray dies or [`API_READY`] passes.
async fn wait_for_api(port: u16, process: &Supervised) -> Result<XrayApi, String> {
    let deadline = Instant::now() + API_READY;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Ok(api) = XrayApi::connect(addr).await
            && api.inbound_users(INBOUND_TAG).await.is_ok()
        {
            return Ok(api);
        }
        if !matches!(process.state(), State::Running { .. }) || Instant::now() >= deadline {
            let lines = process.recent_lines();
            let last: Vec<&str> = lines
                .iter()
                .rev()
                .take(3)
                .map(|l| l.text.as_str())
                .collect();
            return Err(format!(
                "xray did not open its API on {addr}: {}",
                last.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Something the running xray did.
enum ProcessEvent {
    /// A line of its output (access lines name users' connections).
    Access(OutputLine),
    /// Its supervisor's state changed (restart, backoff).
    State(State),
}

/// The next thing the running xray does; pending while none runs.
async fn process_event(running: &mut Option<Running>) -> ProcessEvent {
    let Some(running) = running else {
        return std::future::pending().await;
    };
    let Running { access, state, .. } = running;
    tokio::select! {
        Some(line) = access.recv() => ProcessEvent::Access(line),
        Ok(()) = state.changed() => ProcessEvent::State(state.borrow_and_update().clone()),
        else => std::future::pending().await,
    }
}
