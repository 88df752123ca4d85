//! The simulated DPI's decisions, level by level, as a pure function of the
//! packets seen so far (no I/O: the caller applies the verdict, sends the
//! RST and writes the log line).
//!
//! Levels (design §4c):
//! - 0: everything passes;
//! - 1: per packet — a client segment whose SNI/Host lies entirely inside it
//!   and is blocked is dropped and answered with a RST;
//! - 2: per flow — the client's stream is reassembled; only the first TLS
//!   record (or HTTP request header) is parsed, the first one seen wins, no
//!   checksum or TTL checks; a blocked flow is dropped and answered with RST.
//! - 3: TSPU-like — reassembled as at level 2, but client segments whose
//!   TTL is below the flow's SYN TTL are not looked at (a fake that expires
//!   before the server fools it no more; one with a bad checksum still
//!   does); a blocked name, or a flow to a blocked server address, is let
//!   through — handshake included — until the server has sent 16–20 KB
//!   ([`super::flow::Flow::freeze_at`]), and from then on the server's data
//!   is dropped silently: no RST, the download just stalls.

use std::net::IpAddr;

use serde_json::{Value, json};

use super::flow::{Direction, Flow, FlowState, FlowTable, STREAM_LIMIT};
use super::names::{Blocklist, Proto, Scan, first_record_len, http_header_end, scan};
use super::packet::{Reset, Segment, parse_segment, reset_to_sender};

/// The highest level implemented.
pub const MAX_LEVEL: u8 = 3;

/// What to do with one queued packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `false`: drop the packet.
    pub pass: bool,
    /// A RST to send to the client.
    pub reset: Option<Reset>,
    /// A decision to log (one JSON object per line).
    pub decision: Option<Value>,
}

impl Outcome {
    fn pass() -> Outcome {
        Outcome {
            pass: true,
            reset: None,
            decision: None,
        }
    }
}

/// The simulated DPI box.
#[derive(Debug, Default)]
pub struct Inspector {
    blocklist: Blocklist,
    /// Server addresses throttled at level 3 whatever the name.
    blocked_addresses: Vec<IpAddr>,
    flows: FlowTable,
}

impl Inspector {
    pub fn new(blocklist: Blocklist) -> Inspector {
        Inspector {
            blocklist,
            blocked_addresses: Vec::new(),
            flows: FlowTable::default(),
        }
    }

    /// Also throttles (level 3) every flow to one of `addresses`.
    pub fn with_blocked_addresses(mut self, addresses: Vec<IpAddr>) -> Inspector {
        self.blocked_addresses = addresses;
        self
    }

    /// Decides on one IP packet at `level`. Non-TCP packets always pass.
    pub fn inspect(&mut self, level: u8, packet: &[u8]) -> Outcome {
        let Some(segment) = parse_segment(packet) else {
            return Outcome::pass();
        };
        // Flows are tracked at every level so that a switch to level 2
        // applies to connections opened after it and before it alike.
        let tracked = self.flows.track(&segment);
        match level {
            0 => Outcome::pass(),
            1 => self.per_packet(&segment),
            2 => match tracked {
                Some((flow, Direction::ClientToServer)) => {
                    let state = flow.state;
                    match state {
                        // A flow throttled at level 3 is left alone at level 2.
                        FlowState::Passed | FlowState::Throttled => Outcome::pass(),
                        FlowState::Blocked => Outcome {
                            pass: false,
                            reset: reset_to_sender(&segment),
                            decision: None,
                        },
                        FlowState::Undecided => {
                            flow.add(segment.seq, segment.payload);
                            let verdict = first_message_verdict(flow.stream(), &self.blocklist);
                            let Some((verdict, scan)) = verdict else {
                                return Outcome::pass();
                            };
                            flow.state = verdict.state;
                            outcome(&segment, 2, verdict, &scan)
                        }
                    }
                }
                _ => Outcome::pass(),
            },
            _ => match tracked {
                Some((flow, direction)) => throttle(
                    flow,
                    direction,
                    &segment,
                    &self.blocklist,
                    &self.blocked_addresses,
                ),
                None => Outcome::pass(),
            },
        }
    }

    /// Level 1: only this segment's bytes count.
    fn per_packet(&self, segment: &Segment<'_>) -> Outcome {
        if segment.payload.is_empty() {
            return Outcome::pass();
        }
        let scan = scan(segment.payload);
        let verdict = match &scan {
            Scan::Other => return Outcome::pass(),
            Scan::Partial(_) => Verdict::pass("name not entirely inside this segment"),
            Scan::NoName(_) => Verdict::pass("no name"),
            Scan::Name(_, name) => self.on_name(name),
        };
        outcome(segment, 1, verdict, &scan)
    }

    fn on_name(&self, name: &str) -> Verdict {
        match self.blocklist.matching(name) {
            Some(listed) => Verdict {
                state: FlowState::Blocked,
                reason: format!("blocked name {listed}"),
            },
            None => Verdict::pass("name not blocked"),
        }
    }
}

/// Level 3 for one segment of `flow`.
fn throttle(
    flow: &mut Flow,
    direction: Direction,
    segment: &Segment<'_>,
    blocklist: &Blocklist,
    blocked_addresses: &[IpAddr],
) -> Outcome {
    match direction {
        Direction::ServerToClient => freeze(flow, segment),
        Direction::ClientToServer => match flow.state {
            FlowState::Passed | FlowState::Throttled => Outcome::pass(),
            FlowState::Blocked => Outcome {
                pass: false,
                reset: reset_to_sender(segment),
                decision: None,
            },
            FlowState::Undecided if blocked_addresses.contains(&segment.dst.ip()) => {
                flow.state = FlowState::Throttled;
                let decision = json!({
                    "flow": format!("{} -> {}", segment.src, segment.dst),
                    "level": 3,
                    "verdict": "throttle",
                    "reason": format!("blocked address {}", segment.dst.ip()),
                    "freezeAfter": flow.freeze_at(),
                });
                Outcome {
                    pass: true,
                    reset: None,
                    decision: Some(decision),
                }
            }
            FlowState::Undecided if segment.payload.is_empty() => Outcome::pass(),
            FlowState::Undecided => {
                if let Some(syn_ttl) = flow.syn_ttl
                    && segment.ttl < syn_ttl
                {
                    // Would expire before the server: not looked at.
                    return Outcome {
                        pass: true,
                        reset: None,
                        decision: Some(json!({
                            "flow": format!("{} -> {}", segment.src, segment.dst),
                            "level": 3,
                            "verdict": "ignore",
                            "reason": format!("TTL {} below the SYN's {syn_ttl}", segment.ttl),
                        })),
                    };
                }
                flow.add(segment.seq, segment.payload);
                let Some((verdict, scan)) = first_message_verdict(flow.stream(), blocklist) else {
                    return Outcome::pass();
                };
                let blocked = verdict.state == FlowState::Blocked;
                flow.state = if blocked {
                    FlowState::Throttled
                } else {
                    FlowState::Passed
                };
                let mut decided = outcome(segment, 3, verdict, &scan);
                if let Some(decision) = decided.decision.as_mut()
                    && blocked
                {
                    decision["verdict"] = json!("throttle");
                    decision["freezeAfter"] = json!(flow.freeze_at());
                }
                Outcome {
                    pass: true,
                    reset: None,
                    decision: decided.decision.take(),
                }
            }
        },
    }
}

/// Level 3, server to client: a throttled flow's data beyond its freeze
/// point is dropped, without a RST; the first drop is logged.
fn freeze(flow: &mut Flow, segment: &Segment<'_>) -> Outcome {
    let after = flow.freeze_at();
    let frozen = flow.state == FlowState::Throttled
        && !segment.payload.is_empty()
        && flow.server_end(segment).is_some_and(|end| end > after);
    if !frozen {
        return Outcome::pass();
    }
    let decision = (!flow.freeze_logged).then(|| {
        flow.freeze_logged = true;
        json!({
            "flow": format!("{} -> {}", segment.dst, segment.src),
            "level": 3,
            "verdict": "freeze",
            "reason": format!("server data frozen after {after} bytes"),
            "freezeAfter": after,
        })
    });
    Outcome {
        pass: false,
        reset: None,
        decision,
    }
}

/// A decision and why.
struct Verdict {
    state: FlowState,
    reason: String,
}

impl Verdict {
    fn pass(reason: &str) -> Verdict {
        Verdict {
            state: FlowState::Passed,
            reason: reason.to_string(),
        }
    }
}

/// Level 2's verdict once the stream holds the whole first TLS record or
/// HTTP request header (or cannot be either); `None` while waiting.
fn first_message_verdict(stream: &[u8], blocklist: &Blocklist) -> Option<(Verdict, Scan)> {
    let first = if let Some(len) = first_record_len(stream) {
        if stream.len() < len {
            return (stream.len() >= STREAM_LIMIT).then(|| {
                (
                    Verdict::pass("first TLS record too long"),
                    Scan::Partial(Proto::Tls),
                )
            });
        }
        &stream[..len]
    } else {
        match scan(stream) {
            Scan::Other if stream.len() >= 5 => {
                return Some((Verdict::pass("neither TLS nor HTTP"), Scan::Other));
            }
            Scan::Other => return None,
            _ => match http_header_end(stream) {
                Some(end) => &stream[..end],
                None if stream.len() >= STREAM_LIMIT => {
                    return Some((
                        Verdict::pass("HTTP header too long"),
                        Scan::Partial(Proto::Http),
                    ));
                }
                None => return None,
            },
        }
    };
    let scan = scan(first);
    let verdict = match &scan {
        Scan::Other => Verdict::pass("first record is not a ClientHello"),
        Scan::Partial(_) => Verdict::pass("name not inside the first record"),
        Scan::NoName(_) => Verdict::pass("no name"),
        Scan::Name(_, name) => match blocklist.matching(name) {
            Some(listed) => Verdict {
                state: FlowState::Blocked,
                reason: format!("blocked name {listed}"),
            },
            None => Verdict::pass("name not blocked"),
        },
    };
    Some((verdict, scan))
}

fn outcome(segment: &Segment<'_>, level: u8, verdict: Verdict, scan: &Scan) -> Outcome {
    let blocked = verdict.state == FlowState::Blocked;
    let mut decision = json!({
        "flow": format!("{} -> {}", segment.src, segment.dst),
        "level": level,
        "verdict": if blocked { "block" } else { "pass" },
        "reason": verdict.reason,
    });
    match scan {
        Scan::Name(proto, name) => decision[proto.name_key()] = json!(name),
        Scan::Partial(proto) | Scan::NoName(proto) => decision[proto.name_key()] = Value::Null,
        Scan::Other => {}
    }
    Outcome {
        pass: !blocked,
        reset: blocked.then(|| reset_to_sender(segment)).flatten(),
        decision: Some(decision),
    }
}

#[cfg(test)]
#[path = "inspect_tests.rs"]
mod tests;
