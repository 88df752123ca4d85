//! The built-in nfqws-compatible NFQUEUE engine (`veil-agent desync`).
//!
//! It takes the same parsed command line as nfqws ([`crate::spec::Config`])
//! and implements the built-in subset (design §4b): profiles, port/L3/L7
//! filters, hostlists and ipsets (through [`ProfileFilter`]), `fake`,
//! `multisplit`, `multidisorder`, `fakedsplit`, `fakeddisorder` and the
//! `fake,<split>` combinations, split markers, TTL, `badsum`/`badseq`,
//! repeats, fake payloads, cutoff/start, any-protocol, for TCP over IPv4
//! and IPv6.
//!
//! Structure, one thread, in packet order:
//!
//! ```text
//! queue::run ── nfq recv (non-blocking poll) ──► packet::parse
//!        ──► desyncer::Desyncer::on_packet
//!               ├─ flow::FlowTable   (5-tuple → phase, counters, host, held packets)
//!               ├─ locate::scan      (ClientHello / HTTP request whole? host? markers)
//!               ├─ profile::select   (first matching profile; lists via ProfileFilter)
//!               └─ transform::apply  (fakes + split parts as whole IP packets)
//!        ──► inject::Injector (raw sockets, fwmark) then verdicts (accept / drop)
//! ```
//!
//! A request split over several segments (Chrome's post-quantum ClientHello)
//! is held until whole (at most 16 KiB and [`desyncer::HOLD_TIMEOUT`]), then
//! desynced as one; on any doubt the held packets pass unchanged. Packets
//! the engine builds always carry correct checksums unless `badsum` asks
//! otherwise. The engine never touches packets of flows no profile takes.

pub mod desyncer;
pub mod fake;
pub mod flow;
pub mod inject;
pub mod lists_filter;
pub mod locate;
pub mod packet;
pub mod profile;
pub mod queue;
#[cfg(test)]
mod testutil;
pub mod transform;

pub use inject::InjectError;
pub use lists_filter::ListsFilter;
pub use profile::{NoLists, ProfileFilter};
pub use queue::{EngineError, Shutdown, run};
