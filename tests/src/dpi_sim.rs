//! `veil-dpi-sim`: a DPI box for tests, run on the router namespace of a
//! [`crate::netns::Topology`] (design §4c).
//!
//! It takes every packet the router receives from NFQUEUE (queued without
//! bypass: if it dies, nothing is forwarded), decides per [`inspect`] and
//! the current level, answers blocked client segments with a RST, and logs
//! each decision as a JSON line. The level changes at run time through a
//! Unix control socket ([`control`]).
//!
//! Written independently of Veil's desync engine: packets are parsed with
//! `etherparse`, ClientHellos with `tls-parser`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

pub mod control;
pub mod flow;
pub mod inspect;
pub mod names;
pub mod packet;
mod process;

pub use process::{DpiSim, DpiSimOptions};

use inspect::{Inspector, MAX_LEVEL};
use names::Blocklist;
use packet::Reset;

/// The queue number the router's rule and the simulator use by default.
pub const DEFAULT_QUEUE: u16 = 100;

/// Command line of `veil-dpi-sim`.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "veil-dpi-sim",
    about = "A DPI simulator for Veil's tests (NFQUEUE)"
)]
pub struct Args {
    /// NFQUEUE number to bind.
    #[arg(long, default_value_t = DEFAULT_QUEUE)]
    pub queue: u16,
    /// Starting level: 0 pass, 1 per-packet SNI/Host, 2 per-flow
    /// reassembly, 3 TSPU-like (TTL-aware, freezes downloads after 16–20 KB).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=i64::from(MAX_LEVEL)))]
    pub level: u8,
    /// A blocked name (it and its subdomains); repeatable.
    #[arg(long = "block", value_name = "NAME")]
    pub block: Vec<String>,
    /// A blocked server address (level 3 throttles every flow to it, whatever
    /// the name); repeatable.
    #[arg(long = "block-address", value_name = "IP")]
    pub block_address: Vec<IpAddr>,
    /// Append one JSON line per decision to this file.
    #[arg(long, value_name = "FILE")]
    pub log: PathBuf,
    /// Unix socket for `level [N]` commands.
    #[arg(long, value_name = "PATH")]
    pub control: PathBuf,
}

/// Why the simulator stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("opening or binding NFQUEUE {queue}: {source}")]
    Queue { queue: u16, source: io::Error },
    #[error("NFQUEUE {queue}: {source}")]
    Recv { queue: u16, source: io::Error },
    #[error("opening the decision log {path}: {source}")]
    Log { path: PathBuf, source: io::Error },
    #[error("raw socket for RSTs: {0}")]
    RawSocket(io::Error),
    #[error("control socket {path}: {source}")]
    Control { path: PathBuf, source: io::Error },
}

/// The shared decision log (the packet loop and the control thread write it).
#[derive(Clone, Debug)]
pub struct DecisionLog(Arc<Mutex<File>>);

impl DecisionLog {
    fn open(path: &PathBuf) -> Result<DecisionLog, SimError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| SimError::Log {
                path: path.clone(),
                source,
            })?;
        Ok(DecisionLog(Arc::new(Mutex::new(file))))
    }

    /// Appends one line; a failed write is reported on stderr and ignored
    /// (the packet path must not stop for the log).
    pub fn write(&self, line: &serde_json::Value) {
        let Ok(mut file) = self.0.lock() else {
            return;
        };
        if let Err(e) = writeln!(file, "{line}") {
            eprintln!("veil-dpi-sim: writing the decision log: {e}");
        }
    }
}

/// Runs the simulator until the queue fails (normally: until killed).
pub fn run(args: Args) -> Result<(), SimError> {
    let queue_error = |source| SimError::Queue {
        queue: args.queue,
        source,
    };
    let mut queue = nfq::Queue::open().map_err(queue_error)?;
    queue.bind(args.queue).map_err(queue_error)?;
    let log = DecisionLog::open(&args.log)?;
    let resets = ResetSender::open()?;
    let level = Arc::new(AtomicU8::new(args.level));
    // Bound last: a control socket that answers means the queue is bound.
    control::serve(&args.control, Arc::clone(&level), log.clone())?;

    let mut inspector =
        Inspector::new(Blocklist::new(args.block)).with_blocked_addresses(args.block_address);
    loop {
        let mut message = queue.recv().map_err(|source| SimError::Recv {
            queue: args.queue,
            source,
        })?;
        let outcome = inspector.inspect(level.load(Ordering::Relaxed), message.get_payload());
        // Logged before the RST leaves: a client that saw the RST finds the
        // decision in the log.
        if let Some(decision) = &outcome.decision {
            log.write(decision);
        }
        if let Some(reset) = &outcome.reset {
            resets.send(reset);
        }
        message.set_verdict(if outcome.pass {
            nfq::Verdict::Accept
        } else {
            nfq::Verdict::Drop
        });
        queue.verdict(message).map_err(|source| SimError::Recv {
            queue: args.queue,
            source,
        })?;
    }
}

/// Raw sockets (`IPPROTO_RAW`: the packet carries its IP header) for RSTs.
/// They leave through OUTPUT, so the simulator never queues its own RSTs.
struct ResetSender {
    v4: Socket,
    v6: Socket,
}

const IPPROTO_RAW: i32 = 255;

impl ResetSender {
    fn open() -> Result<ResetSender, SimError> {
        let raw = |domain| {
            Socket::new(domain, Type::RAW, Some(Protocol::from(IPPROTO_RAW)))
                .map_err(SimError::RawSocket)
        };
        Ok(ResetSender {
            v4: raw(Domain::IPV4)?,
            v6: raw(Domain::IPV6)?,
        })
    }

    fn send(&self, reset: &Reset) {
        let socket = match reset.to {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => &self.v6,
        };
        let to = SockAddr::from(SocketAddr::new(reset.to, 0));
        if let Err(e) = socket.send_to(&reset.packet, &to) {
            eprintln!("veil-dpi-sim: sending a RST to {}: {e}", reset.to);
        }
    }
}
