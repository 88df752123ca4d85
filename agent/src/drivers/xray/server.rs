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
//! - after every xray start, and after adopting the xray a previous agent
//!   left running, the user set is re-synced against what xray reports;
//! - xray outlives the agent ([`process`](super::process)): when the actor
//!   is detached (agent stopping) it reads the counters and leaves xray
//!   running; only a stop (server no longer assigned) ends xray;
//! - an adopted xray whose config differs in something the API cannot change
//!   is replaced, but not before reports can be journaled (counters are
//!   read first);
//! - a dead xray is started again with backoff (a fresh config, all users);
//! - every `stats_interval` traffic is read with `reset: true` (the only
//!   reader: reset and non-reset reads are never mixed) and sent as deltas,
//!   but only once the agent can journal them ([`XrayContext::reporting`]):
//!   until then xray keeps counting, so nothing is lost.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use veil_crds::common::WorkloadPhase;
use veil_crds::wire::{
    FailedUser, ServerAssignment, ServerId, ServerReport, UserTraffic, Users, VlessUser,
};

use super::api::{UserCounters, UserOp, XrayApi, XrayApiError};
use super::config::{self, INBOUND_TAG};
use super::files::{ServerFiles, StateRecord};
use super::logs::{self, AccessLog};
use super::process::{Identity, XrayProcess};
use super::tracker::{Tracker, parse_access_line};
use super::user_diff::{Applied, UserChanges, user_changes, user_changes_since};
use super::{Event, XrayContext, sockets};
use crate::runtime::Backoff;
use crate::supervisor::{self, ProcessSpec};
use crate::throttle::Throttle;

/// How long a fresh xray gets to open its API.
const API_READY: Duration = Duration::from_secs(15);
/// How often xray's access log is read for new connections (revocation
/// reads it once more right before closing connections).
const ACCESS_POLL: Duration = Duration::from_millis(200);

/// Removing at most this many users reads their counters one by one;
/// more, and everyone's are read at once.
const PER_USER_READS: usize = 32;

/// The fallback config is rewritten at most this often (see [`Throttle`]).
const FALLBACK_INTERVAL: Duration = Duration::from_secs(1);

struct Running {
    process: XrayProcess,
    api: XrayApi,
    api_port: u16,
    infra_hash: String,
    access: AccessLog,
}

/// How the actor's loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The server is no longer assigned: stop xray, remove its files.
    Stop,
    /// The agent is stopping: leave xray running for the next agent.
    Detach,
}

pub(super) struct Actor {
    ctx: Arc<XrayContext>,
    id: ServerId,
    files: ServerFiles,
    desired: Arc<ServerAssignment>,
    running: Option<Running>,
    /// The user set in xray is unknown (adopted): read it before syncing.
    resync: bool,
    applied: BTreeMap<String, Applied>,
    /// The desired users xray is known to hold exactly (`applied` is this
    /// set), after a start or a sync that did everything it meant to;
    /// `None` when unknown. Lets a sync look only at what changed since.
    synced: Option<Users>,
    /// The periodic counter read, running beside the actor.
    reading: Option<JoinHandle<Result<Vec<UserCounters>, XrayApiError>>>,
    failed: BTreeMap<String, String>,
    tracker: Tracker,
    phase: WorkloadPhase,
    message: Option<String>,
    connections: u32,
    restarts: u32,
    retry_at: Option<Instant>,
    backoff: Backoff,
    last_report: Option<ServerReport>,
    /// The applied users changed since the fallback config was written.
    fallback_stale: bool,
    /// Limits rewriting the fallback config (every user) to one write per
    /// [`FALLBACK_INTERVAL`] while changes keep coming.
    fallback: Throttle,
}

impl Actor {
    pub(super) fn new(ctx: Arc<XrayContext>, desired: Arc<ServerAssignment>) -> Actor {
        let id = desired.server.clone();
        let files = ServerFiles::new(ctx.data_dir.join(dir_name(&id)));
        Actor {
            ctx,
            id,
            files,
            desired,
            running: None,
            resync: false,
            applied: BTreeMap::new(),
            synced: None,
            reading: None,
            failed: BTreeMap::new(),
            tracker: Tracker::default(),
            phase: WorkloadPhase::Pending,
            message: None,
            connections: 0,
            restarts: 0,
            retry_at: None,
            backoff: Backoff::default(),
            last_report: None,
            fallback_stale: false,
            fallback: Throttle::new(FALLBACK_INTERVAL),
        }
    }

    /// Runs until `stop` (then reads the last counters, stops xray and
    /// removes the server's files) or `detach` (then reads the counters and
    /// leaves xray running, recorded for the next agent to adopt).
    pub(super) async fn run(
        mut self,
        mut desired: watch::Receiver<Arc<ServerAssignment>>,
        stop: CancellationToken,
        detach: CancellationToken,
    ) {
        self.adopt_leftover().await;
        self.reconcile().await;
        let mut stats = tokio::time::interval(self.ctx.stats_interval);
        stats.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut access = tokio::time::interval(ACCESS_POLL);
        access.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let end = loop {
            let retry = self.retry_at;
            tokio::select! {
                () = stop.cancelled() => break End::Stop,
                () = detach.cancelled() => break End::Detach,
                changed = desired.changed() => {
                    if changed.is_err() {
                        break End::Detach;
                    }
                    self.desired = desired.borrow_and_update().clone();
                    self.reconcile().await;
                }
                () = crate::throttle::sleep_until_some(retry) => {
                    self.retry_at = None;
                    self.reconcile().await;
                }
                () = crate::throttle::sleep_until_some(self.fallback.due_at()) => {
                    self.fallback.wrote(Instant::now());
                    self.write_fallback_config();
                }
                _ = stats.tick() => self.collect().await,
                read = reading(&mut self.reading) => self.on_read(read),
                _ = access.tick() => self.read_access_log(),
                () = exited(&mut self.running) => self.on_exit(),
            }
        };
        match end {
            End::Stop => self.shutdown().await,
            End::Detach => self.detach().await,
        }
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
        if restart && self.running.is_some() && !self.reporting() {
            // An adopted xray with another config: its counters cannot be
            // journaled yet, so it keeps serving (users synced) until then.
            self.sync_users(self.resync).await;
            self.retry(
                "xray runs a config that differs in more than users; it is replaced once the operator is reachable"
                    .into(),
            );
        } else if restart {
            self.start(api_port).await;
        } else {
            self.sync_users(self.resync).await;
        }
        self.report();
        // After the report: the operator learns of the change without
        // waiting for a file holding every user to be rendered and written.
        if self.fallback_stale {
            self.fallback_stale = false;
            if self.fallback.changed(Instant::now()) {
                self.write_fallback_config();
            }
        }
    }

    /// Whether traffic read now can be journaled (see [`XrayContext::reporting`]).
    fn reporting(&self) -> bool {
        *self.ctx.reporting.borrow()
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
            old.process.stop().await;
            self.files.clear_state();
            self.connections = 0;
        }
        self.phase = WorkloadPhase::Starting;
        self.message = None;
        self.report();
        let listen: Option<SocketAddr> = format!("{}:{}", self.desired.listen, self.desired.port)
            .parse()
            .ok()
            .or_else(|| {
                format!("[{}]:{}", self.desired.listen, self.desired.port)
                    .parse()
                    .ok()
            });
        let mut ports = vec![(
            "xray's API port",
            SocketAddr::from(([127, 0, 0, 1], api_port)),
        )];
        if let Some(listen) = listen {
            ports.push(("the server's listen address", listen));
        }
        let log_paths = self.files.logs();
        // A new xray, new logs: the previous one's lines would only mislead.
        let _ = std::fs::remove_file(&log_paths.access);
        let _ = std::fs::remove_file(&log_paths.errors);
        let mut process =
            match XrayProcess::spawn(&self.ctx.xray, &self.files.config(), &log_paths, &ports) {
                Ok(process) => process,
                Err(error) => {
                    self.fail(format!("cannot start xray: {error}"));
                    return;
                }
            };
        let pid = process.pid();
        let api = match wait_for_api(api_port, &mut process, &log_paths.errors).await {
            Ok(api) => api,
            Err(message) => {
                process.stop().await;
                self.fail(self.mask(&message));
                return;
            }
        };
        let identity = process.identity();
        let record = StateRecord {
            pid,
            start_time: identity.start_time,
            exe: identity.exe().unwrap_or_else(|| self.ctx.xray.clone()),
            config: self.files.config(),
            infra_hash: rendered.infra_hash.clone(),
            api_port,
            listen_port: self.desired.port,
        };
        if let Err(error) = self.files.save_state(&record) {
            tracing::warn!(server = %self.id, %error, "cannot record the running xray");
        }
        self.applied = self
            .desired
            .vless
            .users
            .iter()
            .map(|user| (user.email.clone(), Applied::of(user)))
            .collect();
        self.synced = Some(self.desired.vless.users.clone());
        self.failed.clear();
        self.running = Some(Running {
            process,
            api,
            api_port,
            infra_hash: rendered.infra_hash,
            access: AccessLog::from_start(log_paths.access),
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
                    self.resync = false;
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
        let desired = &wanted.vless.users;
        let UserChanges { removes, adds } = match self.synced.take() {
            Some(base) if !full => user_changes_since(&self.applied, &base, desired),
            _ => user_changes(&self.applied, desired),
        };
        if !self.failed.is_empty() {
            let emails: HashSet<&str> = wanted
                .vless
                .users
                .iter()
                .map(|u| u.email.as_str())
                .collect();
            self.failed
                .retain(|email, _| emails.contains(email.as_str()));
        }
        if removes.is_empty() && adds.is_empty() {
            self.synced = self.failed.is_empty().then(|| desired.clone());
            self.after_sync();
            return;
        }
        if !removes.is_empty() {
            // Their counters may go with them: read them first.
            self.collect_before_removing(&api, &removes).await;
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
        let adding: BTreeMap<&str, &VlessUser> = adds
            .iter()
            .map(|user| (user.email.as_str(), *user))
            .collect();
        for (email, result) in added {
            match result {
                Ok(()) => {
                    self.failed.remove(&email);
                    if let Some(wanted) = adding.get(email.as_str()) {
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
            self.synced = self.failed.is_empty().then(|| desired.clone());
            self.after_sync();
        }
        self.fallback_stale = true;
    }

    /// Closes the open connections of users just removed.
    async fn revoke(&mut self, port: u16, emails: &[String]) {
        // Connections accepted since the last poll are in the log by now.
        self.read_access_log();
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
        if self.reading.is_none() && self.reporting() {
            // Off the actor: reading 100,000 users' counters takes xray a
            // third of a second, during which user changes go on.
            let api = running.api.clone();
            self.reading = Some(tokio::spawn(async move { api.user_traffic(true).await }));
        }
        logs::bound_errors(&self.files.logs().errors);
        match sockets::established_peers(self.desired.port) {
            Ok(open) => {
                self.connections = u32::try_from(open.len()).unwrap_or(u32::MAX);
                self.tracker.retain(&open);
            }
            Err(error) => tracing::debug!(%error, "cannot count connections"),
        }
        self.report();
    }

    /// Reads and resets the counters and sends them as deltas; does nothing
    /// (xray keeps counting) while they could not be journaled.
    async fn collect_from(&mut self, api: &XrayApi) {
        if !self.reporting() {
            return;
        }
        match api.user_traffic(true).await {
            Ok(counters) => self.send_traffic(counters),
            Err(error) => {
                tracing::debug!(server = %self.id, %error, "cannot read traffic counters")
            }
        }
    }

    /// The periodic read has returned: its counters (already reset in
    /// xray) go out as deltas.
    fn on_read(&mut self, read: Result<Result<Vec<UserCounters>, XrayApiError>, JoinError>) {
        self.reading = None;
        match read {
            Ok(Ok(counters)) => self.send_traffic(counters),
            Ok(Err(error)) => {
                tracing::debug!(server = %self.id, %error, "cannot read traffic counters")
            }
            Err(error) => tracing::warn!(server = %self.id, %error, "traffic read task failed"),
        }
    }

    /// Waits for a periodic read in flight, so that what it reset in xray
    /// is sent before anything reads again or stops.
    async fn finish_reading(&mut self) {
        if let Some(reading) = self.reading.take() {
            let read = reading.await;
            self.on_read(read);
        }
    }

    /// Sends the counters that moved as traffic deltas.
    fn send_traffic(&self, counters: Vec<super::api::UserCounters>) {
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

    /// Reads and resets the counters of users about to be removed: theirs
    /// alone for a few (reading 100,000 users' counters takes xray a third
    /// of a second), everyone's for many.
    async fn collect_before_removing(&mut self, api: &XrayApi, emails: &[String]) {
        self.finish_reading().await;
        if emails.len() > PER_USER_READS {
            return self.collect_from(api).await;
        }
        if !self.reporting() {
            return;
        }
        match api.traffic_of(emails, true).await {
            Ok(counters) => self.send_traffic(counters),
            Err(error) => {
                tracing::debug!(server = %self.id, %error, "cannot read removed users' counters")
            }
        }
    }

    /// Feeds new access lines to the connection tracker.
    fn read_access_log(&mut self) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        for line in running.access.read_new() {
            if let Some(accepted) = parse_access_line(&line) {
                self.tracker.observe(accepted);
            }
        }
    }

    /// xray died (crash, OOM, someone's `kill`): start it again with backoff.
    fn on_exit(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        self.restarts += 1;
        self.connections = 0;
        self.synced = None;
        self.files.clear_state();
        let recent = logs::recent_errors(&self.files.logs().errors, 3);
        self.phase = WorkloadPhase::Failed;
        let message = self.mask(&format!(
            "xray (pid {}) exited; restarting with backoff. {recent}",
            running.process.pid()
        ));
        tracing::warn!(server = %self.id, %message, "xray exited");
        self.message = Some(message);
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
        self.report();
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

    /// After an agent restart: takes over the xray a previous agent left
    /// running for this server when the record proves it is that process
    /// (pid, start time, executable, config) and its API answers. Its users
    /// are re-synced by the next reconcile; its counters were never reset
    /// by anyone else, so nothing is lost or counted twice. An xray of an
    /// agent before adoption (no start time) is read and ended instead.
    async fn adopt_leftover(&mut self) {
        let Some(record) = self.files.load_state() else {
            return;
        };
        let identity = Identity {
            pid: record.pid,
            start_time: record.start_time,
        };
        let Some(process) = XrayProcess::adopt(identity, &record.exe, &record.config) else {
            if record.start_time == 0 && self.files.is_our_xray(record.pid) {
                self.end_legacy(&record).await;
            }
            self.files.clear_state();
            return;
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], record.api_port));
        let api = match XrayApi::connect(addr).await {
            Ok(api) if api.inbound_users(INBOUND_TAG).await.is_ok() => api,
            _ => {
                tracing::warn!(server = %self.id, pid = record.pid, "the xray a previous agent left does not answer on its API; replacing it");
                process.stop().await;
                self.files.clear_state();
                return;
            }
        };
        tracing::info!(server = %self.id, pid = record.pid, "adopted the xray a previous agent left running");
        // What the previous agent applied (its config on disk); the full
        // re-sync keeps only what xray confirms it has.
        self.applied = self
            .files
            .recorded_clients(INBOUND_TAG)
            .into_iter()
            .map(|(email, id, flow)| (email, Applied::recorded(id, &flow)))
            .collect();
        self.synced = None;
        self.running = Some(Running {
            process,
            api,
            api_port: record.api_port,
            infra_hash: record.infra_hash,
            access: AccessLog::from_start(self.files.logs().access),
        });
        self.resync = true;
        self.phase = WorkloadPhase::Running;
        self.read_access_log();
    }

    /// Reads the counters of an xray started by an agent before adoption,
    /// then ends it (it writes to pipes nobody reads any more).
    async fn end_legacy(&mut self, record: &StateRecord) {
        tracing::info!(server = %self.id, pid = record.pid, "ending the xray of a previous agent version");
        if let Ok(api) = XrayApi::connect(SocketAddr::from(([127, 0, 0, 1], record.api_port))).await
        {
            self.collect_from(&api).await;
        }
        crate::supervisor::kill_group_now(record.pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.files.is_our_xray(record.pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The agent is stopping: read the counters (journaled before it exits;
    /// if xray dies with the agent, as in a container, nothing is lost) and
    /// leave xray running, recorded for the next agent.
    async fn detach(&mut self) {
        self.finish_reading().await;
        if self.fallback.is_pending() {
            // The next agent adopts xray from this file.
            self.write_fallback_config();
        }
        if let Some(running) = self.running.take() {
            self.collect_from(&running.api).await;
            tracing::info!(server = %self.id, pid = running.process.pid(), "leaving xray running for the next agent");
        }
    }

    async fn shutdown(&mut self) {
        self.finish_reading().await;
        if let Some(running) = self.running.take() {
            self.collect_from(&running.api).await;
            running.process.stop().await;
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

    /// `text` with every secret of the desired state (the Reality key,
    /// user ids) masked out.
    fn mask(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in secrets_of(&self.desired) {
            if !secret.is_empty() && text.contains(secret) {
                text = text.replace(secret, "<redacted>");
            }
        }
        text
    }

    /// Sends the server's state when it changed.
    fn report(&mut self) {
        let complete = self.running.is_some()
            && self.failed.is_empty()
            && (self.synced.as_ref() == Some(&self.desired.vless.users)
                || self.applied.len() == self.desired.vless.users.len()
                    && self
                        .desired
                        .vless
                        .users
                        .iter()
                        .all(|u| self.applied.get(&u.email).is_some_and(|a| a.is(u))));
        let report = ServerReport {
            server: self.id.clone(),
            phase: self.phase,
            message: self.message.clone(),
            pid: self.running.as_ref().map(|r| r.process.pid()),
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

/// The name of a server's directory under the driver's data dir.
pub(super) fn dir_name(id: &ServerId) -> String {
    format!("{}.{}", id.namespace, id.name)
}

/// Stops the xray recorded in the server directory `dir` (if it is still
/// that process) and removes the directory.
pub(super) async fn stop_orphan(dir: std::path::PathBuf) {
    let files = ServerFiles::new(dir);
    if let Some(record) = files.load_state() {
        let identity = Identity {
            pid: record.pid,
            start_time: record.start_time,
        };
        if let Some(process) = XrayProcess::adopt(identity, &record.exe, &record.config) {
            tracing::info!(pid = record.pid, config = %record.config.display(), "stopping the xray of a server no longer assigned to this node");
            process.stop().await;
        } else if record.start_time == 0 && files.is_our_xray(record.pid) {
            crate::supervisor::kill_group_now(record.pid);
        }
    }
    files.remove_all();
}

fn secrets_of(server: &ServerAssignment) -> impl Iterator<Item = &str> {
    let users = server.vless.users.iter().map(|u| u.id.expose());
    std::iter::once(server.vless.private_key.expose()).chain(users)
}

/// A port on 127.0.0.1 that is free now.
fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// Connects to a fresh xray's API, giving up if xray dies or [`API_READY`] passes.
async fn wait_for_api(
    port: u16,
    process: &mut XrayProcess,
    errors: &std::path::Path,
) -> Result<XrayApi, String> {
    let deadline = Instant::now() + API_READY;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Ok(api) = XrayApi::connect(addr).await
            && api.inbound_users(INBOUND_TAG).await.is_ok()
        {
            return Ok(api);
        }
        if !process.identity().is_alive() || Instant::now() >= deadline {
            return Err(format!(
                "xray did not open its API on {addr}: {}",
                logs::recent_errors(errors, 3)
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Resolves when the running xray exits; pending while none runs.
/// The periodic counter read in flight; pending forever when none is.
async fn reading(
    task: &mut Option<JoinHandle<Result<Vec<UserCounters>, XrayApiError>>>,
) -> Result<Result<Vec<UserCounters>, XrayApiError>, JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

async fn exited(running: &mut Option<Running>) {
    match running {
        Some(running) => running.process.exited().await,
        None => std::future::pending().await,
    }
}
