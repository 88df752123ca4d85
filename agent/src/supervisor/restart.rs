//! [`Supervised`]: a long-running workload, restarted with backoff.
//!
//! Owns one background task per workload that runs the spec, waits for it to
//! exit and starts it again after an exponential, jittered delay. It must never
//! restart without a delay (a crash loop would spin a core), never keep a
//! process running once the handle is stopped or dropped, and never block the
//! caller's reads of state or output on the running process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::child::{self, RunningChild};
use super::error::SupervisorError;
use super::output::{OutputLine, OutputLog};
use super::spec::ProcessSpec;
use super::{Exit, group};

/// When a workload is started again after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartOn {
    /// After every exit, successful or not (daemons such as xray).
    Always,
    /// Only after an exit other than `Code(0)`; a clean exit stops it.
    OnFailure,
}

/// How a [`Supervised`] workload is restarted.
///
/// The n-th consecutive delay is `min_delay * factor^(n-1)`, capped at
/// `max_delay`, plus up to 100% random jitter when `jitter` is set (so
/// instances restarted together do not stay in step). A run that lasted at
/// least `stable_after` resets the sequence to `min_delay`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartPolicy {
    /// When to restart.
    pub on: RestartOn,
    /// First delay after an exit.
    pub min_delay: Duration,
    /// Largest delay before jitter.
    pub max_delay: Duration,
    /// Growth per consecutive restart.
    pub factor: f32,
    /// Add random jitter to each delay.
    pub jitter: bool,
    /// A run this long counts as healthy and resets the delay.
    pub stable_after: Duration,
    /// Stop for good after this many restarts; `None` restarts for ever.
    pub max_restarts: Option<u32>,
}

impl Default for RestartPolicy {
    /// Always restart; 1 s doubling to 60 s, jittered; reset after 60 s of
    /// healthy running (the shape of Kubernetes' crash-loop backoff, with a
    /// shorter ceiling because a proxy that is down is a user-visible outage).
    fn default() -> Self {
        Self {
            on: RestartOn::Always,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            factor: 2.0,
            jitter: true,
            stable_after: Duration::from_secs(60),
            max_restarts: None,
        }
    }
}

impl RestartPolicy {
    fn delays(&self) -> ExponentialBackoff {
        let builder = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.factor)
            .without_max_times();
        if self.jitter {
            builder.with_jitter().build()
        } else {
            builder.build()
        }
    }
}

/// How the previous run of a workload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastExit {
    /// It ran and exited.
    Exited(Exit),
    /// It could not be started (pre-flight or spawn error, as text).
    StartFailed(String),
}

/// What a [`Supervised`] workload is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Being spawned.
    Starting,
    /// Running as `pid` (also its process-group id on Unix) since `since`.
    Running {
        /// Process id of the current instance.
        pid: u32,
        /// When the current instance was spawned.
        since: SystemTime,
    },
    /// Waiting until `until` before the next start.
    Backoff {
        /// When the next start is due.
        until: SystemTime,
        /// How the previous run ended.
        last_exit: LastExit,
    },
    /// Not running and not going to be restarted.
    Stopped {
        /// How the last run ended, if there was one.
        last_exit: Option<LastExit>,
    },
}

struct Shared {
    state: watch::Sender<State>,
    restarts: AtomicU32,
    /// Exits and failed starts in a row ([`Supervised::failures_in_a_row`]).
    unstable: AtomicU32,
    log: OutputLog,
}

/// A long-running process kept alive by restarting it.
///
/// Dropping it cancels supervision and sends SIGKILL to the current process
/// group at once (no grace); call [`stop`](Self::stop) for a graceful stop.
pub struct Supervised {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Supervised {
    /// Checks and starts `spec`, then keeps it running under `policy`.
    ///
    /// Returns once the first instance is running, so pre-flight and spawn
    /// errors reach the caller; later failures to start are retried with
    /// backoff and show as [`State::Backoff`] with [`LastExit::StartFailed`].
    /// The spec's timeout, if any, applies to each run. Must be called within
    /// a Tokio runtime.
    ///
    /// # Errors
    ///
    /// The first pre-flight or spawn error.
    pub async fn start(spec: ProcessSpec, policy: RestartPolicy) -> Result<Self, SupervisorError> {
        let log = OutputLog::new(spec.limits(), spec.sink());
        let first = child::start(&spec, &log).await?;
        let (state, _) = watch::channel(State::Running {
            pid: first.pid(),
            since: first.started_at(),
        });
        let shared = Arc::new(Shared {
            state,
            restarts: AtomicU32::new(0),
            unstable: AtomicU32::new(0),
            log,
        });
        let cancel = CancellationToken::new();
        let task = tokio::spawn(supervise(
            spec,
            policy,
            Arc::clone(&shared),
            cancel.clone(),
            first,
        ));
        Ok(Self {
            shared,
            cancel,
            task: Some(task),
        })
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.shared.state.borrow().clone()
    }

    /// A receiver that sees every state change.
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.shared.state.subscribe()
    }

    /// The pid of the running instance, if one is running.
    pub fn pid(&self) -> Option<u32> {
        match *self.shared.state.borrow() {
            State::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// How many times the workload was started again after the first start.
    pub fn restarts(&self) -> u32 {
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// Exits and failed starts in a row, growing in a crash loop. A run
    /// that lasted the policy's `stable_after` ends the row: its own exit
    /// counts as the first of a new one.
    pub fn failures_in_a_row(&self) -> u32 {
        self.shared.unstable.load(Ordering::Relaxed)
    }

    /// Recent output of all runs, oldest first.
    pub fn recent_lines(&self) -> Vec<OutputLine> {
        self.shared.log.recent()
    }

    /// Lines the output sink could not take because it was full.
    pub fn dropped_lines(&self) -> u64 {
        self.shared.log.dropped()
    }

    /// Stops supervision: the current process group gets SIGTERM, then
    /// SIGKILL after the spec's grace period; returns when it is gone and the
    /// spec's held guards are dropped. Calling it again does nothing.
    pub async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::error!(%error, "supervision task failed");
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.cancel.cancel();
            // The task may never run again (runtime shutting down): kill now.
            if let Some(pid) = self.pid() {
                group::kill_now(pid);
            }
        }
    }
}

async fn supervise(
    spec: ProcessSpec,
    policy: RestartPolicy,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    first: RunningChild,
) {
    let mut delays = policy.delays();
    let mut running = Some(first);
    loop {
        let last_exit = match running.take() {
            Some(run) => {
                shared.state.send_replace(State::Running {
                    pid: run.pid(),
                    since: run.started_at(),
                });
                let began = Instant::now();
                let exit = match run.wait(&cancel, spec.run_timeout(), spec.grace()).await {
                    Ok(finished) => finished.exit,
                    Err(error) => {
                        tracing::error!(%error, "lost track of supervised process");
                        Exit::Code(-1)
                    }
                };
                let last_exit = Some(LastExit::Exited(exit));
                if exit == Exit::Cancelled || (policy.on == RestartOn::OnFailure && exit.success())
                {
                    shared.state.send_replace(State::Stopped { last_exit });
                    return;
                }
                if began.elapsed() >= policy.stable_after {
                    delays = policy.delays();
                    shared.unstable.store(0, Ordering::Relaxed);
                }
                LastExit::Exited(exit)
            }
            None => match child::start(&spec, &shared.log).await {
                Ok(run) => {
                    running = Some(run);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "supervised process could not be restarted");
                    LastExit::StartFailed(error.to_string())
                }
            },
        };
        shared.unstable.fetch_add(1, Ordering::Relaxed);
        if policy
            .max_restarts
            .is_some_and(|max| shared.restarts.load(Ordering::Relaxed) >= max)
        {
            shared.state.send_replace(State::Stopped {
                last_exit: Some(last_exit),
            });
            return;
        }
        let delay = delays.next().unwrap_or(policy.max_delay);
        tracing::info!(
            ?last_exit,
            ?delay,
            "restarting supervised process after delay"
        );
        shared.state.send_replace(State::Backoff {
            until: SystemTime::now() + delay,
            last_exit: last_exit.clone(),
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => {
                shared.state.send_replace(State::Stopped { last_exit: Some(last_exit) });
                return;
            }
        }
        shared.restarts.fetch_add(1, Ordering::Relaxed);
        shared.state.send_replace(State::Starting);
    }
}
