//! The zapret actor: the only owner of the engine process, the
//! materialised files and Veil's capture rules. Commands arrive one at a
//! time through its mailbox, so no two changes ever interleave.
//!
//! An assignment is applied in named steps: pick the active members →
//! write their files → check and choose the engine → compose → (only when
//! the profiles changed) dry-run, bisect on failure, start the new engine
//! on the other queue, switch the rules, stop the old engine → prune files.
//! After every command and every engine state change it sends the full
//! set of Strategy reports if they changed.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::{mpsc, watch};
use veil_crds::strategy::VlessClient;
use veil_crds::strategy::{StrategyPhase, ZapretSyntax};
use veil_crds::wire::{
    ProbeReport, StrategyGroup, StrategyId, StrategyMember, StrategyReport, VlessMember,
    ZapretMember,
};
use veil_desync::args::{self, ArgsError, ParseMode};

use super::choice::{self, Available, EngineKind, Failure, Wish};
use super::compose::{self, ProfileArgs};
use super::engine::{self, Engine, Launch};
use super::rules::{self, Capture};
use super::{Command, EngineProgram, ZapretConfig, files, firewall, winws};
use crate::drivers::vless_client::clients::{ClientState, VlessClients};
use crate::supervisor::{LastExit, State};

/// An active member whose files are written and whose args are composed.
struct Prepared {
    id: StrategyId,
    profile: ProfileArgs,
    /// Its profiles as parsed (for the capture rules).
    parsed: Vec<veil_desync::spec::Profile>,
    files: Vec<std::path::PathBuf>,
}

pub struct Actor {
    config: ZapretConfig,
    reports: mpsc::UnboundedSender<Vec<StrategyReport>>,
    groups: Vec<StrategyGroup>,
    failures: BTreeMap<StrategyId, Failure>,
    engine: Option<Engine>,
    engine_state: Option<watch::Receiver<State>>,
    /// Veil's rules may be in the firewall (installed by this or a previous
    /// run): only then is removing them worth running iptables.
    rules_may_exist: bool,
    last_sent: Option<Vec<StrategyReport>>,
    /// The probes' latest word per member (the prober's reports).
    probes: BTreeMap<StrategyId, ProbeReport>,
    /// The active member's name per group, as failover chose it (absent:
    /// the primary).
    chosen: BTreeMap<StrategyId, String>,
    /// The member under test in the candidate slot.
    candidate: Option<Candidate>,
    /// The `vless` members' clients (active and backups: kept warm).
    vless: VlessClients,
}

/// Exits in a row after which the active engine counts as failed (failover
/// then looks for a member that works).
const CRASH_LOOP: u32 = 3;

/// A failover candidate running in its own engine on the side queue,
/// reached only by probe-marked packets.
struct Candidate {
    group: StrategyId,
    member: StrategyId,
    engine: Engine,
}

impl Actor {
    pub fn new(config: ZapretConfig, reports: mpsc::UnboundedSender<Vec<StrategyReport>>) -> Actor {
        Actor {
            reports,
            groups: Vec::new(),
            failures: BTreeMap::new(),
            engine: None,
            engine_state: None,
            rules_may_exist: false,
            last_sent: None,
            probes: BTreeMap::new(),
            chosen: BTreeMap::new(),
            candidate: None,
            vless: VlessClients::new(config.vless_dir.clone()),
            config,
        }
    }

    /// Cleans up after a previous run, then serves the mailbox until it is
    /// closed or told to shut down.
    pub async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Command>) {
        self.recover().await;
        loop {
            let mut state = self.engine_state.take();
            tokio::select! {
                command = inbox.recv() => {
                    self.engine_state = state;
                    match command {
                        Some(Command::Apply(groups)) => {
                            self.apply(groups).await;
                            let members: BTreeSet<&StrategyId> = self
                                .groups
                                .iter()
                                .flat_map(|g| g.members.iter().map(|m| &m.strategy))
                                .collect();
                            self.probes.retain(|id, _| members.contains(id));
                            self.publish();
                        }
                        Some(Command::Probe(id, report)) => {
                            self.probes.insert(id, report);
                            self.publish();
                        }
                        Some(Command::Activate { group, member }) => {
                            self.activate(group, member).await;
                            self.publish();
                        }
                        Some(Command::Candidate { group, member, reply }) => {
                            let result = self.test_candidate(group, member).await;
                            let _ = reply.send(result);
                            self.publish();
                        }
                        Some(Command::SocksPort(id, reply)) => {
                            let port = match self.vless.state(&id) {
                                Some(ClientState::Running { port, .. }) => Some(port),
                                _ => None,
                            };
                            let _ = reply.send(port);
                        }
                        Some(Command::ActiveFailure(group, reply)) => {
                            let _ = reply.send(self.active_failure(&group));
                        }
                        Some(Command::Sync(reply)) => {
                            let _ = reply.send(self.reports());
                        }
                        Some(Command::Shutdown(reply)) => {
                            self.shutdown().await;
                            let _ = reply.send(());
                            return;
                        }
                        None => {
                            self.shutdown().await;
                            return;
                        }
                    }
                }
                () = changed(&mut state) => {
                    self.engine_state = state;
                    self.publish();
                }
            }
        }
    }

    /// Ends engines a crashed agent left running and removes its rules; the
    /// first assignment rebuilds both. A node that never ran a Strategy
    /// (no data directory) has nothing to clean.
    async fn recover(&mut self) {
        if !self.config.data_dir.exists() {
            return;
        }
        engine::kill_leftovers(&self.config.data_dir);
        self.rules_may_exist = true;
        self.remove_rules().await;
    }

    /// Stops both engines and removes the rules.
    async fn shutdown(&mut self) {
        self.engine_state = None;
        if let Some(engine) = self.engine.take() {
            engine.stop().await;
        }
        if let Some(candidate) = self.candidate.take() {
            candidate.engine.stop().await;
        }
        self.vless.stop_all().await;
        self.remove_rules().await;
    }

    /// Makes `member` the active one of `group` (re-applying the groups
    /// when that changes what runs).
    async fn activate(&mut self, group: StrategyId, member: String) {
        let primary = group.name == member;
        let unchanged = match self.chosen.get(&group) {
            Some(current) => *current == member,
            None => primary,
        };
        if primary {
            self.chosen.remove(&group);
        } else {
            self.chosen.insert(group, member);
        }
        if !unchanged && !self.groups.is_empty() {
            self.apply(self.groups.clone()).await;
        }
    }

    /// The name of `group`'s active member.
    fn active_name<'a>(&'a self, group: &'a StrategyGroup) -> &'a str {
        let chosen = self.chosen.get(&group.primary);
        match chosen {
            Some(name) if group.members.iter().any(|m| m.strategy.name == *name) => name,
            _ => group
                .members
                .first()
                .map_or("", |m| m.strategy.name.as_str()),
        }
    }

    /// Why `group`'s active member cannot work here, if it cannot: its
    /// engine could not be set up, stopped for good, or crashed
    /// [`CRASH_LOOP`] times in a row; a VLESS client that failed. `None`
    /// while it runs, starts or restarts after a single crash.
    fn active_failure(&self, group: &StrategyId) -> Option<String> {
        let group = self.groups.iter().find(|g| g.primary == *group)?;
        let active = self.active_name(group);
        let member = group.members.iter().find(|m| m.strategy.name == active)?;
        if member.vless.is_some() {
            return match self.vless.state(&member.strategy) {
                Some(ClientState::Failed { message, .. }) => Some(message),
                _ => None,
            };
        }
        if let Some(failure) = self.failures.get(&member.strategy) {
            return Some(format!("{}: {}", failure.reason, failure.message));
        }
        let engine = self
            .engine
            .as_ref()
            .filter(|e| e.members.contains(&member.strategy))?;
        match engine.state() {
            State::Stopped { .. } => Some("the engine stopped and is not restarted".to_owned()),
            State::Backoff { last_exit, .. } if engine.failures_in_a_row() >= CRASH_LOOP => {
                Some(format!(
                    "crash loop: the engine {} {} times in a row{}",
                    describe(&last_exit),
                    engine.failures_in_a_row(),
                    engine
                        .last_words()
                        .map(|w| format!(": {w}"))
                        .unwrap_or_default()
                ))
            }
            _ => None,
        }
    }

    /// Empties the candidate slot, then (for `Some`) starts `member` of
    /// `group` in it: its own engine on the side queue, behind a rule that
    /// only probe-marked packets match.
    async fn test_candidate(
        &mut self,
        group: StrategyId,
        member: Option<String>,
    ) -> Result<(), String> {
        if let Some(old) = self.candidate.take() {
            old.engine.stop().await;
            self.sync_rules().await.map_err(|e| e.to_string())?;
        }
        let Some(name) = member else {
            return Ok(());
        };
        if cfg!(windows) {
            return Err(
                "candidates are not tested beside the live engine on Windows (WinDivert has no side queue)"
                    .to_owned(),
            );
        }
        let found = self
            .groups
            .iter()
            .find(|g| g.primary == group)
            .and_then(|g| g.members.iter().find(|m| m.strategy.name == name));
        let Some(member) = found.cloned() else {
            return Err(format!("`{name}` is not a member of group `{group}` here"));
        };
        if member.vless.is_some() {
            // Kept warm: testing it is probing its SOCKS port.
            return match self.vless.state(&member.strategy) {
                Some(ClientState::Running { .. }) => Ok(()),
                Some(ClientState::Failed { message, .. }) => Err(message),
                _ => Err(format!("the VLESS client of `{name}` is not serving yet")),
            };
        }
        let Some(zapret) = &member.zapret else {
            return Err(format!(
                "`{name}` is not a zapret Strategy; only zapret candidates are tested on the side queue"
            ));
        };
        let (prepared, refusal) = self
            .prepare(&member.strategy, zapret)
            .map_err(|f| f.message)?;
        let wish = Wish {
            strategy: member.strategy.clone(),
            implementation: zapret.implementation,
            builtin_refusal: refusal,
        };
        let available = Available {
            external: self.config.external.is_some(),
            builtin: cfg!(target_os = "linux"),
        };
        let choice = choice::choose(std::slice::from_ref(&wish), available);
        if let Some((_, Err(failure))) = choice.verdicts.into_iter().next() {
            return Err(failure.message);
        }
        let kind = choice
            .engine
            .ok_or_else(|| "no engine on this node can run it".to_owned())?;
        let (program, implementation) = self.program(kind);
        let queue = self.side_queue();
        let capture = Capture::of(prepared.parsed.iter());
        let argv = self.argv(queue, &capture, &prepared.profile.args);
        engine::dry_run(&program, &argv, self.config.dry_run_timeout).await?;
        let launch = Launch {
            program,
            fingerprint: compose::fingerprint(
                &implementation,
                self.config.mark,
                &prepared.profile.args,
            ),
            argv,
            queue,
            implementation,
            members: BTreeSet::from([member.strategy.clone()]),
            capture,
        };
        let engine = Engine::start(&self.config, launch).await?;
        tracing::info!(group = %group, candidate = %name, queue, pid = ?engine.pid(), "testing a failover candidate on the side queue");
        self.candidate = Some(Candidate {
            group,
            member: member.strategy.clone(),
            engine,
        });
        self.rules_may_exist = true;
        if let Err(error) = self.sync_rules().await {
            if let Some(candidate) = self.candidate.take() {
                candidate.engine.stop().await;
            }
            return Err(error.to_string());
        }
        Ok(())
    }

    /// The rule lines for `main` (the main engine's capture and queue) and
    /// the candidate slot: the slot's first, so probe-marked packets reach
    /// only the candidate.
    fn rule_lines(&self, main: Option<(&Capture, u16)>) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(candidate) = &self.candidate {
            lines.extend(rules::side_rules(
                &candidate.engine.capture,
                candidate.engine.queue,
                self.config.mark,
                self.config.probe_mark,
            ));
        }
        if let Some((capture, queue)) = main {
            lines.extend(rules::chain_rules(capture, queue, self.config.mark));
        }
        lines
    }

    /// Makes the rules match the engines that run (none: no rules).
    async fn sync_rules(&mut self) -> Result<(), firewall::FirewallError> {
        if self.engine.is_none() && self.candidate.is_none() {
            self.remove_rules().await;
            return Ok(());
        }
        let main = self.engine.as_ref().map(|e| (&e.capture, e.queue));
        let lines = self.rule_lines(main);
        self.rules_may_exist = true;
        firewall::install(&lines).await
    }

    async fn remove_rules(&mut self) {
        if !self.rules_may_exist {
            return;
        }
        match firewall::remove().await {
            Ok(()) => self.rules_may_exist = false,
            Err(error) => tracing::error!(%error, "cannot remove Veil's capture rules"),
        }
    }

    async fn apply(&mut self, groups: Vec<StrategyGroup>) {
        self.groups = groups;
        self.failures.clear();
        let primaries: BTreeSet<&StrategyId> = self.groups.iter().map(|g| &g.primary).collect();
        self.chosen.retain(|group, _| primaries.contains(group));
        let mut actives: Vec<(StrategyId, ZapretMember)> = self
            .groups
            .iter()
            .filter_map(|g| {
                let name = self.active_name(g);
                g.members.iter().find(|m| m.strategy.name == name)
            })
            .filter_map(|m| m.zapret.clone().map(|z| (m.strategy.clone(), z)))
            .collect();
        actives.sort_by(|a, b| (a.1.priority, &a.0).cmp(&(b.1.priority, &b.0)));
        actives.dedup_by(|a, b| a.0 == b.0);
        if !actives.is_empty()
            && let Err(error) = std::fs::create_dir_all(&self.config.data_dir)
        {
            tracing::error!(%error, dir = %self.config.data_dir.display(), "cannot create the zapret data directory");
        }

        let mut prepared = Vec::with_capacity(actives.len());
        let mut wishes = Vec::with_capacity(actives.len());
        for (id, member) in actives {
            match self.prepare(&id, &member) {
                Ok((entry, refusal)) => {
                    wishes.push(Wish {
                        strategy: id,
                        implementation: member.implementation,
                        builtin_refusal: refusal,
                    });
                    prepared.push(entry);
                }
                Err(failure) => {
                    self.failures.insert(id, failure);
                }
            }
        }
        let available = Available {
            external: self.config.external.is_some(),
            builtin: cfg!(target_os = "linux"),
        };
        let choice::Choice {
            engine: kind,
            verdicts,
        } = choice::choose(&wishes, available);
        for (id, verdict) in verdicts {
            if let Err(failure) = verdict {
                self.failures.insert(id, failure);
            }
        }
        prepared.retain(|p| !self.failures.contains_key(&p.id));
        let keep: BTreeSet<_> = prepared
            .iter()
            .flat_map(|p| p.files.iter().cloned())
            .collect();
        match kind {
            Some(kind) if !prepared.is_empty() => self.converge(kind, prepared).await,
            _ => self.stop_engine().await,
        }
        self.prune(keep);
        let mut vless: Vec<(StrategyId, VlessMember)> = self
            .groups
            .iter()
            .flat_map(|g| g.members.iter())
            .filter_map(|m| m.vless.clone().map(|v| (m.strategy.clone(), v)))
            .collect();
        vless.sort_by(|a, b| a.0.cmp(&b.0));
        vless.dedup_by(|a, b| a.0 == b.0);
        self.vless.apply(&vless).await;
    }

    /// Writes `member`'s files and composes its args; also returns the
    /// built-in parser's refusal, if any.
    fn prepare(
        &self,
        id: &StrategyId,
        member: &ZapretMember,
    ) -> Result<(Prepared, Option<String>), Failure> {
        if member.syntax == ZapretSyntax::V2 {
            return Err(Failure::new(
                "UnsupportedSyntax",
                "zapret2 (syntax v2) arguments are not supported yet: use syntax v1 (nfqws/winws options)",
            ));
        }
        let parsed = args::parse(&member.args, ParseMode::Validate)
            .map_err(|e| Failure::new("InvalidArgs", e.to_string()))?;
        let written = files::materialise(&self.config.data_dir, id, member)
            .map_err(|e| Failure::new(e.reason(), e.to_string()))?;
        let args = compose::profile_args(&member.args, &written.paths)
            .map_err(|e| Failure::new("InvalidArgs", e.to_string()))?;
        let refusal = match args::parse(&args, ParseMode::Builtin) {
            Err(e @ (ArgsError::UnsupportedOption { .. } | ArgsError::UnsupportedValue { .. })) => {
                Some(e.to_string())
            }
            _ => None,
        };
        let prepared = Prepared {
            id: id.clone(),
            profile: ProfileArgs {
                strategy: id.clone(),
                priority: member.priority,
                args,
            },
            parsed: parsed.profiles,
            files: written.paths.into_values().collect(),
        };
        Ok((prepared, refusal))
    }

    /// Makes the engine run exactly `prepared` (in profile order), unless a
    /// dry run refuses some: those are failed and the rest run.
    async fn converge(&mut self, kind: EngineKind, mut prepared: Vec<Prepared>) {
        let (program, implementation) = self.program(kind);
        let mark = self.config.mark;
        for round in 0..2 {
            if prepared.is_empty() {
                self.stop_engine().await;
                return;
            }
            let profiles: Vec<ProfileArgs> = prepared.iter().map(|p| p.profile.clone()).collect();
            let joined = compose::joined(&profiles);
            let fingerprint = compose::fingerprint(&program.display(), mark, &joined);
            if self
                .engine
                .as_ref()
                .is_some_and(|e| e.fingerprint == fingerprint)
            {
                return;
            }
            let queue = self.next_queue();
            let capture = Capture::of(prepared.iter().flat_map(|p| p.parsed.iter()));
            let argv = self.argv(queue, &capture, &joined);
            let timeout = self.config.dry_run_timeout;
            let Err(message) = engine::dry_run(&program, &argv, timeout).await else {
                let launch = Launch {
                    program: program.clone(),
                    argv,
                    queue,
                    fingerprint,
                    implementation: implementation.clone(),
                    members: prepared.iter().map(|p| p.id.clone()).collect(),
                    capture,
                };
                self.blue_green(launch).await;
                return;
            };
            tracing::warn!(%message, "dry run of the composed engine failed; checking each Strategy alone");
            let mut blamed = false;
            if round == 0 {
                for p in &prepared {
                    let alone = self.argv(queue, &capture, &p.profile.args);
                    if let Err(own) = engine::dry_run(&program, &alone, timeout).await {
                        self.failures
                            .insert(p.id.clone(), Failure::new("DryRunFailed", own));
                        blamed = true;
                    }
                }
            }
            if !blamed {
                // Each passes alone but not together (or still not after
                // the bisection): none can be trusted.
                for p in &prepared {
                    self.failures.insert(
                        p.id.clone(),
                        Failure::new(
                            "DryRunFailed",
                            format!("the Strategies fail together: {message}"),
                        ),
                    );
                }
            }
            prepared.retain(|p| !self.failures.contains_key(&p.id));
        }
    }

    /// Starts `launch` beside the running engine, points the rules at it,
    /// then stops the old one (Windows: stop first, no overlapping WinDivert).
    async fn blue_green(&mut self, launch: Launch) {
        if cfg!(windows)
            && let Some(old) = self.engine.take()
        {
            self.engine_state = None;
            old.stop().await;
        }
        let members = launch.members.clone();
        let (queue, capture) = (launch.queue, launch.capture.clone());
        let fail_all =
            |failures: &mut BTreeMap<StrategyId, Failure>, reason: &str, message: &str| {
                for id in &members {
                    failures.insert(id.clone(), Failure::new(reason, message));
                }
            };
        let new = match Engine::start(&self.config, launch).await {
            Ok(new) => new,
            Err(message) => {
                let message = if cfg!(windows) {
                    winws::failure_message(None, std::slice::from_ref(&message))
                } else {
                    message
                };
                fail_all(&mut self.failures, "EngineStartFailed", &message);
                return;
            }
        };
        self.rules_may_exist = true;
        let lines = self.rule_lines(Some((&capture, queue)));
        if let Err(error) = firewall::install(&lines).await {
            new.stop().await;
            fail_all(&mut self.failures, "FirewallFailed", &error.to_string());
            return;
        }
        tracing::info!(queue, pid = ?new.pid(), strategies = members.len(), "engine switched");
        self.engine_state = Some(new.subscribe());
        if let Some(old) = self.engine.replace(new) {
            old.stop().await;
        }
    }

    /// Stops the main engine; only the candidate slot's rules (if any) stay.
    async fn stop_engine(&mut self) {
        self.engine_state = None;
        if let Some(engine) = self.engine.take() {
            engine.stop().await;
        }
        if let Err(error) = self.sync_rules().await {
            tracing::error!(%error, "cannot update Veil's capture rules");
        }
    }

    fn side_queue(&self) -> u16 {
        self.config
            .queue_base
            .wrapping_add(super::SIDE_QUEUE_OFFSET)
    }

    fn program(&self, kind: EngineKind) -> (EngineProgram, String) {
        match (kind, &self.config.external) {
            (EngineKind::External, Some(external)) => (
                external.program.clone(),
                engine::external_implementation(
                    &external.program.program,
                    external.version.as_deref(),
                ),
            ),
            _ => (self.config.builtin.clone(), "builtin".to_owned()),
        }
    }

    fn next_queue(&self) -> u16 {
        let base = self.config.queue_base;
        match &self.engine {
            Some(engine) if engine.queue == base => base.wrapping_add(1),
            _ => base,
        }
    }

    fn argv(&self, queue: u16, capture: &Capture, profiles: &[String]) -> Vec<String> {
        if cfg!(windows) {
            winws::argv(capture, profiles)
        } else {
            compose::argv(queue, self.config.mark, profiles)
        }
    }

    /// Removes every file but `keep` and those of the Strategies the
    /// engine still runs.
    fn prune(&self, mut keep: BTreeSet<std::path::PathBuf>) {
        let candidate = self.candidate.iter().map(|c| &c.engine);
        for id in self
            .engine
            .iter()
            .chain(candidate)
            .flat_map(|e| e.members.iter())
        {
            keep.extend(list_files(&files::strategy_dir(&self.config.data_dir, id)));
        }
        if let Err(error) = files::prune(&self.config.data_dir, &keep) {
            tracing::warn!(%error, "cannot remove the files of removed Strategies");
        }
    }

    fn publish(&mut self) {
        let reports = self.reports();
        if self.last_sent.as_ref() != Some(&reports) {
            let _ = self.reports.send(reports.clone());
            self.last_sent = Some(reports);
        }
    }

    /// One report per member of every group: backups (of any engine) in
    /// `Standby`, the primary as its engine runs it.
    fn reports(&self) -> Vec<StrategyReport> {
        let mut out = Vec::new();
        for group in &self.groups {
            let active_name = self.active_name(group);
            // The group's last switch shows on every member.
            let last_switch = group
                .members
                .iter()
                .find(|m| m.strategy.name == active_name)
                .and_then(|m| self.probes.get(&m.strategy))
                .and_then(|p| p.last_switch_time.clone());
            for member in &group.members {
                let active = member.strategy.name == active_name;
                if active && member.zapret.is_none() && member.vless.is_none() {
                    continue;
                }
                let mut report = StrategyReport {
                    strategy: member.strategy.clone(),
                    group: group.primary.clone(),
                    active,
                    applied_hash: Some(group.spec_hash.clone()),
                    probe: self.probes.get(&member.strategy).cloned(),
                    ..StrategyReport::default()
                };
                let testing = self
                    .candidate
                    .as_ref()
                    .is_some_and(|c| c.group == group.primary && c.member == member.strategy);
                if !active && let Some(time) = &last_switch {
                    let probe = report.probe.get_or_insert_with(ProbeReport::default);
                    probe.last_switch_time = Some(time.clone());
                }
                if member.vless.is_some() {
                    self.vless_report(member, active, &mut report);
                } else if testing {
                    report.phase = StrategyPhase::Testing;
                    report.message = Some(format!(
                        "failover candidate: tested beside `{active_name}` on the side queue; users' traffic does not go through it"
                    ));
                } else if !active {
                    report.phase = StrategyPhase::Standby;
                    report.message = Some(if member.strategy == group.primary {
                        format!(
                            "primary: `{active_name}` replaced it; re-tested every minSwitchInterval"
                        )
                    } else {
                        format!(
                            "backup of `{}`: not run until failover chooses it",
                            group.primary
                        )
                    });
                } else if let Some(failure) = self.failures.get(&member.strategy) {
                    report.phase = StrategyPhase::Failed;
                    report.reason = Some(failure.reason.clone());
                    report.message = Some(failure.message.clone());
                } else if let Some(engine) = self
                    .engine
                    .as_ref()
                    .filter(|e| e.members.contains(&member.strategy))
                {
                    self.engine_report(engine, &mut report);
                    if report.phase == StrategyPhase::Running
                        && let Some(message) = report.probe.as_ref().and_then(|p| p.message.clone())
                    {
                        report.message = Some(message);
                    }
                } else {
                    report.phase = StrategyPhase::Testing;
                }
                out.push(report);
            }
        }
        out
    }

    /// A `vless` member's report from its client: the active one
    /// `Running`, a backup `Standby` while its client is warm.
    fn vless_report(&self, member: &StrategyMember, active: bool, report: &mut StrategyReport) {
        let client = member.vless.as_ref().map(|v| v.client);
        report.implementation = client.map(|c| match c {
            VlessClient::Xray => "xray".to_owned(),
            VlessClient::SingBox => "sing-box".to_owned(),
        });
        match self.vless.state(&member.strategy) {
            Some(ClientState::Running {
                port,
                pid,
                restarts,
            }) => {
                report.socks_port = Some(port);
                report.pid = pid;
                report.restarts = restarts;
                if active {
                    report.phase = StrategyPhase::Running;
                    if let Some(message) = report.probe.as_ref().and_then(|p| p.message.clone()) {
                        report.message = Some(message);
                    }
                } else {
                    report.phase = StrategyPhase::Standby;
                    report.message = Some(format!(
                        "warm backup: SOCKS5 on 127.0.0.1:{port}, used when failover chooses it"
                    ));
                }
            }
            Some(ClientState::Starting { port }) => {
                report.socks_port = Some(port);
                report.phase = StrategyPhase::Testing;
                report.message = Some("the VLESS client is starting".to_owned());
            }
            Some(ClientState::Failed { reason, message }) => {
                report.phase = StrategyPhase::Failed;
                report.reason = Some(reason.to_owned());
                report.message = Some(message);
            }
            None => report.phase = StrategyPhase::Testing,
        }
    }

    fn engine_report(&self, engine: &Engine, report: &mut StrategyReport) {
        report.implementation = Some(engine.implementation.clone());
        report.restarts = engine.restarts();
        report.pid = engine.pid();
        match engine.state() {
            State::Running { .. } => report.phase = StrategyPhase::Running,
            State::Starting => {
                report.phase = StrategyPhase::Testing;
                report.message = Some("the engine is starting".to_owned());
            }
            State::Backoff { last_exit, .. } => {
                report.phase = StrategyPhase::Testing;
                report.message = Some(format!(
                    "the engine {}; restarting (traffic passes un-desynced meanwhile){}",
                    describe(&last_exit),
                    engine
                        .last_words()
                        .map(|w| format!(": {w}"))
                        .unwrap_or_default()
                ));
            }
            State::Stopped { .. } => {
                report.phase = StrategyPhase::Failed;
                report.reason = Some("EngineStopped".to_owned());
                report.message = Some("the engine stopped and is not restarted".to_owned());
            }
        }
    }
}

fn describe(exit: &LastExit) -> String {
    match exit {
        LastExit::Exited(exit) => format!("exited ({exit:?})"),
        LastExit::StartFailed(why) => format!("could not start ({why})"),
    }
}

/// Files directly or indirectly under `dir`.
fn list_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(list_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Resolves when the engine's state changes; never when there is none.
async fn changed(state: &mut Option<watch::Receiver<State>>) {
    match state {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}
