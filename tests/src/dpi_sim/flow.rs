//! Per-flow state for levels 2 and 3: who the client is, where its byte
//! stream starts, the reassembled start of that stream, and the flow's
//! verdict once one is made; for level 3 also the TTL of the client's SYN,
//! where the server's stream starts, and after how many server bytes a
//! throttled flow freezes.
//!
//! Reassembly is by sequence number from the client's SYN, in order, with
//! out-of-order chunks held until the gap before them fills. Bytes already
//! placed win over later ones for the same position, so the *first*
//! ClientHello seen for a flow is the one parsed — a fake that never reaches
//! the server still decides the flow, as with a real DPI box.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::packet::Segment;

/// How much of a client's stream is kept: enough for any first TLS record
/// (16 KiB + header) or HTTP request header.
pub const STREAM_LIMIT: usize = 16 * 1024 + 5 + 1024;

/// Flows idle this long are forgotten.
const IDLE: Duration = Duration::from_secs(120);

/// A flow's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// Not decided yet: segments pass.
    Undecided,
    /// Decided harmless: everything passes.
    Passed,
    /// Decided blocked: client segments are dropped and answered with RST.
    Blocked,
    /// Decided blocked at level 3: everything passes until the server has
    /// sent [`Flow::freeze_at`] bytes; later server data is dropped
    /// silently (the TSPU-like freeze).
    Throttled,
}

/// Server bytes a throttled flow gets before it freezes: 16 KiB plus up to
/// 4 KiB more, different per flow (16–20 KB, the window Russian DPI
/// applies).
pub const FREEZE_MIN: u64 = 16 * 1024;
/// The spread above [`FREEZE_MIN`].
pub const FREEZE_SPREAD: u64 = 4 * 1024;

/// One TCP connection, keyed by (client, server).
#[derive(Debug)]
pub struct Flow {
    /// Sequence number of the client's first data byte (ISN + 1).
    base: u32,
    /// The stream's start, contiguous from `base`.
    stream: Vec<u8>,
    /// Chunks beyond a gap: (offset from `base`, bytes).
    pending: Vec<(usize, Vec<u8>)>,
    pub state: FlowState,
    /// TTL of the client's SYN; `None` for a flow whose SYN was missed.
    pub syn_ttl: Option<u8>,
    /// Sequence number of the server's first data byte, once seen.
    server_base: Option<u32>,
    /// Whether the freeze of a throttled flow was logged already.
    pub freeze_logged: bool,
    last_seen: Instant,
}

impl Flow {
    fn new(base: u32, syn_ttl: Option<u8>) -> Flow {
        Flow {
            base,
            stream: Vec::new(),
            pending: Vec::new(),
            state: FlowState::Undecided,
            syn_ttl,
            server_base: None,
            freeze_logged: false,
            last_seen: Instant::now(),
        }
    }

    /// Server bytes this flow gets before a freeze: between [`FREEZE_MIN`]
    /// and `FREEZE_MIN + FREEZE_SPREAD`, derived from the client's random
    /// initial sequence number (so it differs per flow, and a test can
    /// compute it).
    pub fn freeze_at(&self) -> u64 {
        FREEZE_MIN + u64::from(self.base) % FREEZE_SPREAD
    }

    /// Records the server's SYN-ACK (or, when it was missed, its first
    /// segment) as the start of the server's stream.
    pub fn note_server(&mut self, segment: &Segment<'_>) {
        if self.server_base.is_none() {
            let first_data = segment.seq.wrapping_add(u32::from(segment.syn));
            self.server_base = Some(first_data);
        }
    }

    /// Where a server segment's data ends in the server's stream (bytes
    /// from its start; a retransmission ends where it ended the first
    /// time), `None` before the server's start is known.
    pub fn server_end(&self, segment: &Segment<'_>) -> Option<u64> {
        let base = self.server_base?;
        let offset = segment.seq.wrapping_sub(base);
        Some(u64::from(offset) + segment.payload.len() as u64)
    }

    /// The reassembled, contiguous start of the client's stream.
    pub fn stream(&self) -> &[u8] {
        &self.stream
    }

    /// Places a client segment's payload; bytes outside the first
    /// [`STREAM_LIMIT`] bytes of the stream are ignored.
    pub fn add(&mut self, seq: u32, payload: &[u8]) {
        let offset = seq.wrapping_sub(self.base) as usize;
        if payload.is_empty() || offset >= STREAM_LIMIT {
            return;
        }
        let end = (offset + payload.len()).min(STREAM_LIMIT);
        let payload = &payload[..end - offset];
        if offset <= self.stream.len() {
            self.append(offset, payload);
            self.drain_pending();
        } else {
            self.pending.push((offset, payload.to_vec()));
        }
    }

    /// Appends the part of `bytes` (starting at `offset`) beyond the stream.
    fn append(&mut self, offset: usize, bytes: &[u8]) {
        let known = self.stream.len() - offset;
        if known < bytes.len() {
            self.stream.extend_from_slice(&bytes[known..]);
        }
    }

    fn drain_pending(&mut self) {
        while let Some(index) = self
            .pending
            .iter()
            .position(|(offset, _)| *offset <= self.stream.len())
        {
            let (offset, bytes) = self.pending.swap_remove(index);
            self.append(offset, &bytes);
        }
    }
}

/// Direction of a segment within its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

/// All flows the simulator tracks.
#[derive(Debug, Default)]
pub struct FlowTable {
    flows: HashMap<(SocketAddr, SocketAddr), Flow>,
    seen: u64,
}

impl FlowTable {
    /// The flow `segment` belongs to, creating it from a client SYN — or,
    /// for a flow whose SYN was missed, from its first data segment (the
    /// sender is taken as the client).
    pub fn track(&mut self, segment: &Segment<'_>) -> Option<(&mut Flow, Direction)> {
        self.seen += 1;
        if self.seen.is_multiple_of(1024) {
            self.flows.retain(|_, flow| flow.last_seen.elapsed() < IDLE);
        }
        let forward = (segment.src, segment.dst);
        let reverse = (segment.dst, segment.src);
        if segment.syn && !segment.has_ack {
            let flow = Flow::new(segment.seq.wrapping_add(1), Some(segment.ttl));
            self.flows.insert(forward, flow);
        } else if !self.flows.contains_key(&forward)
            && !self.flows.contains_key(&reverse)
            && !segment.payload.is_empty()
        {
            self.flows.insert(forward, Flow::new(segment.seq, None));
        }
        let (key, direction) = if self.flows.contains_key(&forward) {
            (forward, Direction::ClientToServer)
        } else {
            (reverse, Direction::ServerToClient)
        };
        let flow = self.flows.get_mut(&key)?;
        flow.last_seen = Instant::now();
        if direction == Direction::ServerToClient {
            flow.note_server(segment);
        }
        Some((flow, direction))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_chunks_join_once_the_gap_fills() {
        let mut flow = Flow::new(1001, None);
        flow.add(1006, b"world");
        assert_eq!(flow.stream(), b"");
        flow.add(1001, b"hello");
        assert_eq!(flow.stream(), b"helloworld");
    }

    #[test]
    fn bytes_seen_first_win_over_a_resend_of_the_same_range() {
        let mut flow = Flow::new(1, None);
        flow.add(1, b"fake!");
        flow.add(1, b"real ClientHello");
        assert_eq!(flow.stream(), b"fake!ClientHello");
    }

    #[test]
    fn bytes_outside_the_window_are_ignored() {
        let mut flow = Flow::new(5000, None);
        flow.add(4000, b"old");
        flow.add(5000 + STREAM_LIMIT as u32, b"far");
        assert_eq!(flow.stream(), b"");
    }
}
