//! The desync transforms: from a whole request (one or more original TCP
//! segments) and a profile's [`Desync`] settings to the packets to send.
//!
//! Semantics follow nfqws (zapret `docs/readme.en.md`, "Fakes" and "TCP
//! segmentation"): fakes go first, `repeats` times each, with the same
//! sequence number as the request (minus `badseq`'s increment) and the
//! profile's TTL and fooling; split modes cut the request at the resolved
//! positions and also at the original segment boundaries, so no emitted
//! segment is larger than an original one (and none exceeds the path MTU).
//! Real data is never fooled: only fakes carry TTL/badsum/badseq.

use super::fake::default_fake;
use super::locate::{Landmarks, Proto, single_split_point, split_points};
use super::packet::{Emit, TcpSegment};
use crate::spec::{Desync, SplitMode};

/// nfqws' default `--dpi-desync-badack-increment`: `badseq` fakes also
/// carry an acknowledgement number this far back.
pub const BADSEQ_ACK_INCREMENT: i32 = -66000;

/// A request as the transforms see it: its original segments (contiguous,
/// in sequence order) and what the locator found in their joined payload.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    pub segments: &'a [TcpSegment],
    pub proto: Proto,
    pub marks: &'a Landmarks,
}

/// What to do with a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Packets to inject, in order.
    pub inject: Vec<Vec<u8>>,
    /// After injecting, let the original segments through (`true`) or drop
    /// them because `inject` already carries their data (`false`).
    pub keep_originals: bool,
}

/// One piece of the request: a byte range and the original segment whose
/// headers it is sent with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    start: usize,
    end: usize,
    segment: usize,
}

/// Applies `desync` to `request`. An inactive profile, or a split that
/// finds no position, leaves the originals to pass (after any fakes).
pub fn apply(desync: &Desync, request: &Request<'_>) -> Outcome {
    let Some(first) = request.segments.first() else {
        return Outcome::default();
    };
    let message: Vec<u8> = request
        .segments
        .iter()
        .flat_map(|s| s.payload.iter().copied())
        .collect();
    let fooled = fooled_emit(desync, first.is_v6());
    let mut inject = Vec::new();
    if desync.fake {
        let payload = match request.proto {
            Proto::Tls => desync.fake_tls.clone(),
            Proto::Http => desync.fake_http.clone(),
            Proto::Unknown => None,
        }
        .unwrap_or_else(|| default_fake(request.proto));
        for _ in 0..desync.repeats {
            inject.extend(fake_packet(
                desync,
                first,
                first.tcp.sequence_number,
                &payload,
                fooled,
            ));
        }
    }
    let replaced = match desync.split {
        None => None,
        Some(SplitMode::Multisplit | SplitMode::Multidisorder) => {
            let points = split_points(&desync.split_pos, &message, request.marks);
            (!points.is_empty()).then(|| {
                let mut pieces = cut(request.segments, &points);
                if desync.split == Some(SplitMode::Multidisorder) {
                    pieces.reverse();
                }
                pieces
                    .iter()
                    .filter_map(|p| real_packet(request.segments, &message, *p))
                    .collect::<Vec<_>>()
            })
        }
        Some(mode @ (SplitMode::Fakedsplit | SplitMode::Fakeddisorder)) => {
            single_split_point(&desync.split_pos, &message, request.marks).map(|at| {
                let pieces = cut(request.segments, &[at]);
                let (head, tail): (Vec<Piece>, Vec<Piece>) =
                    pieces.into_iter().partition(|p| p.end <= at);
                let order = if mode == SplitMode::Fakedsplit {
                    [head, tail]
                } else {
                    [tail, head]
                };
                let mut out = Vec::new();
                for piece in order.iter().flatten() {
                    let segment = &request.segments[piece.segment];
                    let zeros = vec![0; piece.end - piece.start];
                    let seq = first.tcp.sequence_number.wrapping_add(piece.start as u32);
                    let fakes = || {
                        (0..desync.repeats)
                            .filter_map(|_| fake_packet(desync, segment, seq, &zeros, fooled))
                            .collect::<Vec<_>>()
                    };
                    out.extend(fakes());
                    out.extend(real_packet(request.segments, &message, *piece));
                    out.extend(fakes());
                }
                out
            })
        }
    };
    match replaced {
        Some(packets) => {
            inject.extend(packets);
            Outcome {
                inject,
                keep_originals: false,
            }
        }
        None => Outcome {
            inject,
            keep_originals: true,
        },
    }
}

/// TTL and checksum fooling for fakes of this family.
fn fooled_emit(desync: &Desync, v6: bool) -> Emit {
    Emit {
        ttl: if v6 {
            desync.ttl6.or(desync.ttl)
        } else {
            desync.ttl
        },
        badsum: desync.fooling.badsum,
    }
}

/// A fake with `segment`'s headers and sequence number `seq` (before
/// `badseq`).
fn fake_packet(
    desync: &Desync,
    segment: &TcpSegment,
    mut seq: u32,
    payload: &[u8],
    emit: Emit,
) -> Option<Vec<u8>> {
    let mut ack = segment.tcp.acknowledgment_number;
    if desync.fooling.badseq {
        seq = seq.wrapping_add_signed(desync.badseq_increment);
        ack = ack.wrapping_add_signed(BADSEQ_ACK_INCREMENT);
    }
    segment.build(seq, ack, payload, emit)
}

/// The real bytes of `piece`, sent with its segment's headers.
fn real_packet(segments: &[TcpSegment], message: &[u8], piece: Piece) -> Option<Vec<u8>> {
    let segment = &segments[piece.segment];
    let seq = segments[0]
        .tcp
        .sequence_number
        .wrapping_add(piece.start as u32);
    segment.build(
        seq,
        segment.tcp.acknowledgment_number,
        &message[piece.start..piece.end],
        Emit::default(),
    )
}

/// Cuts the joined request at `points` and at every segment boundary.
fn cut(segments: &[TcpSegment], points: &[usize]) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut seg_start = 0;
    for (index, segment) in segments.iter().enumerate() {
        let seg_end = seg_start + segment.payload.len();
        let mut start = seg_start;
        for &p in points.iter().filter(|&&p| p > seg_start && p < seg_end) {
            pieces.push(Piece {
                start,
                end: p,
                segment: index,
            });
            start = p;
        }
        if seg_end > start {
            pieces.push(Piece {
                start,
                end: seg_end,
                segment: index,
            });
        }
        seg_start = seg_end;
    }
    pieces
}

#[cfg(test)]
#[path = "transform/tests.rs"]
mod tests;
