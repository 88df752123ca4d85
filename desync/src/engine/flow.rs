//! The flow table: per 5-tuple, what the engine knows about a connection
//! (phase, packet counters for `--dpi-desync-cutoff/-start`, the protocol,
//! host and profile once known) and the packets it holds while a request
//! is being reassembled.
//!
//! Entries expire like nfqws' conntrack (`--ctrack-timeouts` defaults):
//! 60 s in SYN, 300 s established, 60 s after FIN/RST, 60 s for UDP. The
//! table is capped; when full, new flows are not tracked (they pass).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::locate::Proto;
use super::packet::{FlowKey, TcpSegment, Transport};
use crate::spec::Limit;

/// Timeout of a TCP flow that has seen only its SYN.
pub const SYN_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of an established TCP flow.
pub const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(300);
/// Timeout of a TCP flow after FIN or RST.
pub const FIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of a UDP flow.
pub const UDP_TIMEOUT: Duration = Duration::from_secs(60);
/// Flows tracked at most (each is a few hundred bytes when idle).
pub const MAX_FLOWS: usize = 65_536;
/// Flows holding packets at most. A held queue message pins its receive
/// buffer (about 20 KiB), so this bounds the memory reassembly can take;
/// beyond it, incomplete requests pass un-desynced.
pub const MAX_HOLDING_FLOWS: usize = 1024;

/// TCP connection phase as seen from the client's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Syn,
    Established,
    Fin,
}

/// Packets held back while a request is incomplete.
#[derive(Debug)]
pub struct Held<T> {
    /// Queue tokens of the held packets, to verdict later.
    pub tokens: Vec<T>,
    pub segments: Vec<TcpSegment>,
    /// When the first one arrived (the hold times out from here).
    pub since: Instant,
    /// Counters as of the first held packet (limits apply there).
    pub counters: Counters,
}

impl<T> Held<T> {
    /// Sequence number right after the held data.
    pub fn next_seq(&self) -> u32 {
        let first = self.segments.first().map_or(0, |s| s.tcp.sequence_number);
        first.wrapping_add(self.byte_len() as u32)
    }
    /// Bytes held.
    pub fn byte_len(&self) -> usize {
        self.segments.iter().map(|s| s.payload.len()).sum()
    }
    /// The held payloads joined.
    pub fn joined(&self) -> Vec<u8> {
        self.segments
            .iter()
            .flat_map(|s| s.payload.iter().copied())
            .collect()
    }
}

/// Client-direction counters (nfqws `n`, `d`, `s` limits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets seen, from 1 (the SYN).
    pub packets: u32,
    /// Packets with payload, from 1.
    pub data_packets: u32,
    /// Sequence number relative to the SYN's (first data byte = 1);
    /// `None` when the SYN was not seen.
    pub relative_seq: Option<u32>,
}

impl Counters {
    /// The counter a limit compares against; `None` if unknown.
    pub fn value(&self, limit: Limit) -> Option<(u32, u32)> {
        match limit {
            Limit::Packets(n) => Some((self.packets, n)),
            Limit::DataPackets(n) => Some((self.data_packets, n)),
            Limit::Seq(n) => self.relative_seq.map(|s| (s, n)),
        }
    }
}

/// One tracked flow.
#[derive(Debug)]
pub struct Flow<T> {
    pub phase: Phase,
    pub last_seen: Instant,
    /// Sequence number of the SYN, if seen.
    pub syn_seq: Option<u32>,
    /// Sequence number after the furthest client data seen so far.
    pub seq_high: Option<u32>,
    pub counters: Counters,
    /// Protocol of the first payload.
    pub proto: Option<Proto>,
    /// Host name of the first request, once known.
    pub host: Option<String>,
    /// Profile chosen once protocol and host are known (`Some(None)`: none matched).
    pub profile: Option<Option<usize>>,
    pub held: Option<Held<T>>,
}

impl<T> Flow<T> {
    fn new(now: Instant) -> Self {
        Flow {
            phase: Phase::Syn,
            last_seen: now,
            syn_seq: None,
            seq_high: None,
            counters: Counters::default(),
            proto: None,
            host: None,
            profile: None,
            held: None,
        }
    }

    fn timeout(&self, transport: Transport) -> Duration {
        match (transport, self.phase) {
            (Transport::Udp, _) => UDP_TIMEOUT,
            (Transport::Tcp, Phase::Syn) => SYN_TIMEOUT,
            (Transport::Tcp, Phase::Established) => ESTABLISHED_TIMEOUT,
            (Transport::Tcp, Phase::Fin) => FIN_TIMEOUT,
        }
    }

    /// Counts a client packet and moves the phase on.
    pub fn observe(&mut self, segment: &TcpSegment, now: Instant) {
        let tcp = &segment.tcp;
        self.last_seen = now;
        if tcp.syn && !tcp.ack {
            // A new connection on a reused tuple starts over.
            *self = Flow::new(now);
            self.syn_seq = Some(tcp.sequence_number);
        } else if tcp.fin || tcp.rst {
            self.phase = Phase::Fin;
        } else if self.phase == Phase::Syn {
            self.phase = Phase::Established;
        }
        self.counters.packets = self.counters.packets.saturating_add(1);
        if !segment.payload.is_empty() {
            self.counters.data_packets = self.counters.data_packets.saturating_add(1);
        }
        self.counters.relative_seq = self.syn_seq.map(|s| tcp.sequence_number.wrapping_sub(s));
    }

    /// Whether `segment` carries only data already seen (a retransmission),
    /// then records its end as seen.
    pub fn note_data(&mut self, segment: &TcpSegment) -> bool {
        let end = segment
            .tcp
            .sequence_number
            .wrapping_add(segment.payload.len() as u32);
        let old = match self.seq_high {
            // `end` at or behind the furthest end (modulo 2^31 window).
            Some(high) => (high.wrapping_sub(end) as i32) >= 0,
            None => false,
        };
        if !old {
            self.seq_high = Some(end);
        }
        old
    }
}

/// All tracked flows.
#[derive(Debug)]
pub struct FlowTable<T> {
    flows: HashMap<FlowKey, Flow<T>>,
    capacity: usize,
    /// Flows whose `held` is `Some`.
    holding: usize,
}

impl<T> FlowTable<T> {
    pub fn new(capacity: usize) -> Self {
        FlowTable {
            flows: HashMap::new(),
            capacity,
            holding: 0,
        }
    }

    /// The flow for `key`, created if there is room; `None` when the table
    /// is full even after dropping expired flows (their held tokens are
    /// appended to `released`).
    pub fn entry(
        &mut self,
        key: FlowKey,
        now: Instant,
        released: &mut Vec<T>,
    ) -> Option<&mut Flow<T>> {
        if !self.flows.contains_key(&key) && self.flows.len() >= self.capacity {
            self.expire(now, released);
            if self.flows.len() >= self.capacity {
                return None;
            }
        }
        Some(self.flows.entry(key).or_insert_with(|| Flow::new(now)))
    }

    /// Removes flows idle past their timeout; their held tokens go to `released`.
    pub fn expire(&mut self, now: Instant, released: &mut Vec<T>) {
        self.flows.retain(|key, flow| {
            let alive = now.saturating_duration_since(flow.last_seen) < flow.timeout(key.transport);
            if !alive && let Some(held) = flow.held.take() {
                released.extend(held.tokens);
                self.holding = self.holding.saturating_sub(1);
            }
            alive
        });
    }

    /// Whether any flow holds packets now.
    pub fn is_holding(&self) -> bool {
        self.holding > 0
    }

    /// Whether another flow may start holding packets.
    pub fn may_hold(&self) -> bool {
        self.holding < MAX_HOLDING_FLOWS
    }

    /// Records that a flow started (`true`) or stopped (`false`) holding;
    /// callers report every change of a flow's `held` they make.
    pub fn note_hold(&mut self, started: bool) {
        if started {
            self.holding += 1;
        } else {
            self.holding = self.holding.saturating_sub(1);
        }
    }

    /// Flows whose hold started before `deadline`, with the hold taken out.
    pub fn take_stale_holds(&mut self, deadline: Instant) -> Vec<Held<T>> {
        let stale: Vec<Held<T>> = self
            .flows
            .values_mut()
            .filter(|f| f.held.as_ref().is_some_and(|h| h.since < deadline))
            .filter_map(|f| f.held.take())
            .collect();
        self.holding = self.holding.saturating_sub(stale.len());
        stale
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

#[cfg(test)]
#[path = "flow/tests.rs"]
mod tests;
