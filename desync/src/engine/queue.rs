//! The NFQUEUE loop: receives queued packets, runs them through the
//! [`Desyncer`], injects what it builds and gives every packet its verdict.
//!
//! One thread does everything, in order, so a held packet's verdict can
//! never overtake the injection of its replacement. `nfq` 0.2.5 has no way
//! to wait on its socket with a timeout, so while packets flow or are held
//! the loop polls in non-blocking mode, sleeping briefly between polls (at
//! most [`MAX_IDLE_SLEEP`]); the same wake-ups release timed-out holds and
//! expire flows. After [`BLOCK_AFTER_IDLE`] without a packet and with
//! nothing held it blocks in the kernel instead: an idle engine costs no
//! CPU, and the first packet after a quiet spell wakes it at once.
//!
//! Shutdown: [`Shutdown::trigger`] ends the loop at its next wake-up. A
//! loop blocked while idle wakes only with the next packet, but then it
//! holds nothing, so the process around it may simply exit (what
//! `veil-agent desync` does a moment after SIGTERM).
//!
//! The queue is bound fail-open: if the engine cannot keep up, the kernel
//! accepts packets instead of dropping them; if it dies, `--queue-bypass`
//! on the capture rule lets traffic through un-desynced.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nfq::{Message, Queue};

use super::desyncer::{Actions, Desyncer, Verdict};
use super::inject::{InjectError, Injector};
use super::packet::{Parsed, parse};
use super::profile::ProfileFilter;
use crate::spec::Config;

/// Longest sleep between polls of an idle queue.
pub const MAX_IDLE_SLEEP: Duration = Duration::from_millis(1);
/// Quiet time, with nothing held, after which the loop blocks in the kernel.
pub const BLOCK_AFTER_IDLE: Duration = Duration::from_millis(200);
/// First sleep after the queue runs dry (doubles up to [`MAX_IDLE_SLEEP`]).
const MIN_IDLE_SLEEP: Duration = Duration::from_micros(20);
/// How often holds and flows are checked for expiry.
const TICK: Duration = Duration::from_millis(50);
/// Kernel queue length (nfqws uses the same order of magnitude).
const QUEUE_MAX_LEN: u32 = 4096;
/// Bytes of each packet copied to the engine: a jumbo frame fits. Larger
/// packets (possible on loopback) arrive truncated and pass untouched. A
/// smaller range than nfq's default 64 KiB keeps held messages (each pins
/// its receive buffer) small.
const COPY_RANGE: u16 = 16 * 1024 + 512;
/// `ENOBUFS`: the kernel dropped queued packets' notifications (fail-open
/// already let them through); not fatal.
const ENOBUFS: i32 = 105;

/// Errors that stop the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The netfilter queue socket could not be opened (needs CAP_NET_ADMIN).
    #[error("cannot open the netfilter queue socket (needs CAP_NET_ADMIN): {0}")]
    Open(#[source] io::Error),
    /// Binding or configuring the queue failed (another process may own it).
    #[error("cannot bind NFQUEUE {qnum} (is another engine bound to it?): {source}")]
    Bind {
        qnum: u16,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Inject(#[from] InjectError),
    /// Receiving from the queue failed.
    #[error("receiving from NFQUEUE {qnum} failed: {source}")]
    Receive {
        qnum: u16,
        #[source]
        source: io::Error,
    },
    /// Sending a verdict failed.
    #[error("sending a verdict to NFQUEUE {qnum} failed: {source}")]
    Verdict {
        qnum: u16,
        #[source]
        source: io::Error,
    },
}

/// Asks a running engine to stop; cheap to clone and share across threads.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }
    /// Makes [`run`] return at its next wake-up (see the module docs).
    pub fn trigger(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Binds `config.globals.qnum` and desyncs until `shutdown` is triggered
/// or the queue fails. With `--dry-run` it opens nothing and returns `Ok`.
/// Packets held at shutdown are accepted before returning.
pub fn run(
    config: Config,
    filter: impl ProfileFilter,
    shutdown: Shutdown,
) -> Result<(), EngineError> {
    if config.globals.dry_run {
        return Ok(());
    }
    let qnum = config.globals.qnum;
    let injector = Injector::open(config.globals.fwmark)?;
    let mut queue = Queue::open().map_err(EngineError::Open)?;
    let bind = |queue: &mut Queue| -> io::Result<()> {
        queue.bind(qnum)?;
        queue.set_fail_open(qnum, true)?;
        queue.set_copy_range(qnum, COPY_RANGE)?;
        queue.set_queue_max_len(qnum, QUEUE_MAX_LEN)
    };
    bind(&mut queue).map_err(|source| EngineError::Bind { qnum, source })?;
    queue.set_nonblocking(true);
    tracing::info!(
        qnum,
        profiles = config.profiles.len(),
        "desync engine bound"
    );

    let mut desyncer: Desyncer<Message, _> = Desyncer::new(config, filter);
    let mut sleep = MIN_IDLE_SLEEP;
    let mut last_tick = Instant::now();
    let mut last_packet = Instant::now();
    let mut blocking = false;
    let result = loop {
        if shutdown.is_triggered() {
            break Ok(());
        }
        match queue.recv() {
            Ok(msg) => {
                if blocking {
                    queue.set_nonblocking(true);
                    blocking = false;
                }
                last_packet = Instant::now();
                sleep = MIN_IDLE_SLEEP;
                let truncated = msg.get_original_len() > msg.get_payload().len();
                let parsed = if truncated {
                    Parsed::Other
                } else {
                    parse(msg.get_payload())
                };
                let actions = desyncer.on_packet(msg, parsed, Instant::now());
                if let Err(e) = execute(&mut queue, &injector, actions) {
                    break Err(EngineError::Verdict { qnum, source: e });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !desyncer.is_holding() && last_packet.elapsed() >= BLOCK_AFTER_IDLE {
                    queue.set_nonblocking(false);
                    blocking = true;
                    continue;
                }
                std::thread::sleep(sleep);
                sleep = (sleep * 2).min(MAX_IDLE_SLEEP);
            }
            Err(e)
                if e.raw_os_error() == Some(ENOBUFS) || e.kind() == io::ErrorKind::Interrupted =>
            {
                tracing::warn!(qnum, "queue overrun: {e}");
            }
            Err(source) => break Err(EngineError::Receive { qnum, source }),
        }
        let now = Instant::now();
        if now.duration_since(last_tick) >= TICK {
            last_tick = now;
            if let Err(e) = execute(&mut queue, &injector, desyncer.on_tick(now)) {
                break Err(EngineError::Verdict { qnum, source: e });
            }
        }
    };
    // Let everything still held through, whatever ended the loop.
    let far = Instant::now() + Duration::from_secs(3600);
    let _ = execute(&mut queue, &injector, desyncer.on_tick(far));
    result
}

/// Injects, then sends the verdicts. If an injection fails, packets that
/// were to be dropped are accepted instead: their data then reaches the
/// server un-desynced rather than not at all.
fn execute(queue: &mut Queue, injector: &Injector, actions: Actions<Message>) -> io::Result<()> {
    let mut injected = true;
    for packet in &actions.inject {
        if let Err(e) = injector.send(packet) {
            tracing::warn!("injecting a {}-byte packet failed: {e}", packet.len());
            injected = false;
        }
    }
    for (mut msg, verdict) in actions.verdicts {
        msg.set_verdict(match verdict {
            Verdict::Drop if injected => nfq::Verdict::Drop,
            _ => nfq::Verdict::Accept,
        });
        queue.verdict(msg)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::NoLists;
    use crate::spec::Globals;

    #[test]
    fn dry_run_returns_without_binding() {
        let config = Config {
            globals: Globals {
                // A queue nobody could bind twice; dry-run must not even try.
                qnum: 65535,
                dry_run: true,
                ..Globals::default()
            },
            profiles: Vec::new(),
        };
        assert!(run(config, NoLists, Shutdown::new()).is_ok());
    }

    #[test]
    fn shutdown_is_shared_between_clones() {
        let a = Shutdown::new();
        let b = a.clone();
        assert!(!b.is_triggered());
        a.trigger();
        assert!(b.is_triggered());
    }
}
