//! The engine's decisions, free of I/O: a queued packet goes in, packets
//! to inject and verdicts for queued packets come out.
//!
//! Queued packets are identified by an opaque token `T` (the queue loop
//! uses the nfq message itself), so held packets can be given their
//! verdict later, after the rest of their request arrived.

use std::time::{Duration, Instant};

use super::flow::{Counters, Flow, FlowTable, Held, MAX_FLOWS};
use super::locate::{Landmarks, Proto, Scan, host_name, scan};
use super::packet::{FlowKey, Parsed, TcpSegment};
use super::profile::{FlowFacts, ProfileFilter, may_take, select};
use super::transform::{Request, apply};
use crate::spec::{Config, Desync};

/// Request bytes held at most while reassembling (one TLS record: 16 KiB
/// of data plus its 5-byte header). Larger requests pass un-desynced.
pub const MAX_HELD_BYTES: usize = 16 * 1024 + 5;

/// How long packets of an incomplete request are held before they pass
/// un-desynced. Browsers send a multi-segment ClientHello back to back, so
/// the rest normally arrives within a round trip of the stack, not this.
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(1);

/// What happens to a queued packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let it continue unchanged.
    Accept,
    /// Discard it (its data went out in injected packets, or it duplicates
    /// data being held).
    Drop,
}

/// Work for the queue loop: inject `inject` in order first, then give
/// each token its verdict, in order.
#[derive(Debug)]
pub struct Actions<T> {
    pub inject: Vec<Vec<u8>>,
    pub verdicts: Vec<(T, Verdict)>,
}

impl<T> Default for Actions<T> {
    fn default() -> Self {
        Actions {
            inject: Vec::new(),
            verdicts: Vec::new(),
        }
    }
}

impl<T> Actions<T> {
    fn accept_all(&mut self, tokens: impl IntoIterator<Item = T>) {
        self.verdicts
            .extend(tokens.into_iter().map(|t| (t, Verdict::Accept)));
    }
}

/// The decision half of the engine.
pub struct Desyncer<T, F> {
    config: Config,
    filter: F,
    flows: FlowTable<T>,
}

impl<T, F: ProfileFilter> Desyncer<T, F> {
    pub fn new(config: Config, filter: F) -> Self {
        Self::with_capacity(config, filter, MAX_FLOWS)
    }

    /// Whether packets are held (waiting for the rest of a request or for
    /// their hold to time out): the queue loop must keep ticking then.
    pub fn is_holding(&self) -> bool {
        self.flows.is_holding()
    }

    /// Like [`Desyncer::new`] with a flow table capped at `capacity` flows.
    pub fn with_capacity(config: Config, filter: F, capacity: usize) -> Self {
        Desyncer {
            config,
            filter,
            flows: FlowTable::new(capacity),
        }
    }

    /// Flows currently tracked.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Handles one queued packet.
    pub fn on_packet(&mut self, token: T, packet: Parsed, now: Instant) -> Actions<T> {
        let mut actions = Actions::default();
        match packet {
            Parsed::Tcp(segment) => self.on_tcp(token, segment, now, &mut actions),
            // UDP desync (QUIC fakes) is outside the built-in subset.
            Parsed::Udp { .. } | Parsed::Other => actions.accept_all([token]),
        }
        actions
    }

    /// Releases holds older than [`HOLD_TIMEOUT`] (un-desynced) and forgets
    /// expired flows. Call regularly (the queue loop does when idle).
    pub fn on_tick(&mut self, now: Instant) -> Actions<T> {
        let mut actions = Actions::default();
        let mut released = Vec::new();
        if let Some(deadline) = now.checked_sub(HOLD_TIMEOUT) {
            for held in self.flows.take_stale_holds(deadline) {
                released.extend(held.tokens);
            }
        }
        self.flows.expire(now, &mut released);
        actions.accept_all(released);
        actions
    }

    fn on_tcp(&mut self, token: T, segment: TcpSegment, now: Instant, actions: &mut Actions<T>) {
        let key = segment.key();
        let mut released = Vec::new();
        let may_hold = self.flows.may_hold();
        let entry = self.flows.entry(key, now, &mut released);
        actions.accept_all(released);
        let Some(flow) = entry else {
            actions.accept_all([token]);
            return;
        };
        flow.observe(&segment, now);
        if segment.payload.is_empty() {
            actions.accept_all([token]);
            return;
        }
        let retransmission = flow.note_data(&segment);
        if flow.held.is_some() {
            continue_hold(
                &self.config,
                &self.filter,
                key,
                flow,
                token,
                segment,
                actions,
            );
            return;
        }
        let counters = flow.counters;
        match scan(&segment.payload) {
            // A retransmitted start of a request whose rest was already
            // sent: nothing more will come to complete it.
            Scan::Incomplete { .. } if retransmission => actions.accept_all([token]),
            Scan::Incomplete { proto, needed } => {
                flow.proto.get_or_insert(proto);
                let facts = FlowFacts {
                    key: &key,
                    proto: flow.proto,
                    host: None,
                };
                if may_hold
                    && needed.is_none_or(|n| n <= MAX_HELD_BYTES)
                    && may_take(&self.config, facts)
                {
                    flow.held = Some(Held {
                        tokens: vec![token],
                        segments: vec![segment],
                        since: now,
                        counters,
                    });
                    self.flows.note_hold(true);
                } else {
                    actions.accept_all([token]);
                }
            }
            Scan::Complete(proto, marks) => {
                flow.proto.get_or_insert(proto);
                let request = Whole {
                    tokens: vec![token],
                    segments: vec![segment],
                    proto,
                    marks,
                    counters,
                };
                desync(&self.config, &self.filter, key, flow, request, actions);
            }
            Scan::Unknown => {
                flow.proto.get_or_insert(Proto::Unknown);
                let request = Whole {
                    tokens: vec![token],
                    segments: vec![segment],
                    proto: Proto::Unknown,
                    marks: Landmarks::default(),
                    counters,
                };
                desync(&self.config, &self.filter, key, flow, request, actions);
            }
        }
    }
}

/// A request ready for the transforms.
struct Whole<T> {
    tokens: Vec<T>,
    segments: Vec<TcpSegment>,
    proto: Proto,
    marks: Landmarks,
    counters: Counters,
}

/// Adds `segment` to the flow's hold, and desyncs once the request is whole.
fn continue_hold<T>(
    config: &Config,
    filter: &impl ProfileFilter,
    key: FlowKey,
    flow: &mut Flow<T>,
    token: T,
    segment: TcpSegment,
    actions: &mut Actions<T>,
) {
    let Some(mut held) = flow.held.take() else {
        return actions.accept_all([token]);
    };
    let start = held.segments.first().map_or(0, |s| s.tcp.sequence_number);
    let next = held.next_seq();
    let seq = segment.tcp.sequence_number;
    if seq != next {
        let end = seq.wrapping_add(segment.payload.len() as u32);
        if seq.wrapping_sub(start) < end.wrapping_sub(start)
            && end.wrapping_sub(start) <= next.wrapping_sub(start)
        {
            // A retransmission of data we hold: the held copy goes out later.
            flow.held = Some(held);
            actions.verdicts.push((token, Verdict::Drop));
        } else {
            // Out of order: give up on this request, keep the stream intact.
            actions.accept_all(held.tokens);
            actions.accept_all([token]);
        }
        return;
    }
    held.tokens.push(token);
    held.segments.push(segment);
    let joined = held.joined();
    match scan(&joined) {
        Scan::Complete(proto, marks) => {
            let request = Whole {
                tokens: held.tokens,
                segments: held.segments,
                proto,
                marks,
                counters: held.counters,
            };
            desync(config, filter, key, flow, request, actions);
        }
        Scan::Incomplete { .. } if joined.len() <= MAX_HELD_BYTES => flow.held = Some(held),
        _ => actions.accept_all(held.tokens),
    }
}

/// Chooses the profile for a whole request and applies it.
fn desync<T>(
    config: &Config,
    filter: &impl ProfileFilter,
    key: FlowKey,
    flow: &mut Flow<T>,
    request: Whole<T>,
    actions: &mut Actions<T>,
) {
    if flow.host.is_none()
        && let Some(range) = &request.marks.host
    {
        let joined: Vec<u8> = request
            .segments
            .iter()
            .flat_map(|s| s.payload.iter().copied())
            .collect();
        flow.host = host_name(&joined, range);
    }
    let facts = FlowFacts {
        key: &key,
        proto: flow.proto,
        host: flow.host.as_deref(),
    };
    let profile = select(config, filter, facts);
    flow.profile = Some(profile);
    let Some(desync) = profile.map(|i| &config.profiles[i].desync) else {
        return actions.accept_all(request.tokens);
    };
    if !wanted(desync, request.proto, request.counters) {
        return actions.accept_all(request.tokens);
    }
    let outcome = apply(
        desync,
        &Request {
            segments: &request.segments,
            proto: request.proto,
            marks: &request.marks,
        },
    );
    tracing::debug!(
        profile = profile.map_or(0, |i| config.profiles[i].number),
        host = flow.host.as_deref().unwrap_or(""),
        proto = ?request.proto,
        segments = request.segments.len(),
        injected = outcome.inject.len(),
        originals_kept = outcome.keep_originals,
        "desynced request",
    );
    actions.inject.extend(outcome.inject);
    let verdict = if outcome.keep_originals {
        Verdict::Accept
    } else {
        Verdict::Drop
    };
    actions
        .verdicts
        .extend(request.tokens.into_iter().map(|t| (t, verdict)));
}

/// Whether the profile desyncs this payload at this point of the flow
/// (nfqws: start reached, cutoff not reached; an unknown counter — the SYN
/// was not seen — counts as "cutoff reached" and "start not reached").
fn wanted(desync: &Desync, proto: Proto, counters: Counters) -> bool {
    if !desync.is_active() || (proto == Proto::Unknown && !desync.any_protocol) {
        return false;
    }
    let started = desync
        .start
        .is_none_or(|l| counters.value(l).is_some_and(|(v, n)| v >= n));
    let cut = desync
        .cutoff
        .is_some_and(|l| counters.value(l).is_none_or(|(v, n)| v >= n));
    started && !cut
}

#[cfg(test)]
#[path = "desyncer/tests.rs"]
mod tests;
