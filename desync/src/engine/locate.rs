//! Recognising the first request of a TCP flow (TLS ClientHello or HTTP
//! request), finding its host name, and resolving nfqws split markers to
//! byte offsets inside it.
//!
//! Our own offset-aware parser on purpose: the DPI simulator parses with a
//! different crate, so a shared bug cannot make both agree on a wrong answer.
//! This module only reads bytes; it never allocates packets or keeps state.

use std::ops::Range;

use crate::spec::{Marker, SplitPos};

/// TLS record type of a handshake record.
const TLS_HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// TLS extension number of server_name (RFC 6066).
const EXT_SERVER_NAME: u16 = 0;
/// Record header: type, version (2), length (2).
const RECORD_HEADER_LEN: usize = 5;

/// Request lines nfqws recognises as HTTP (method plus the byte after it).
const HTTP_METHODS: &[&[u8]] = &[
    b"GET /",
    b"POST /",
    b"HEAD /",
    b"OPTIONS ",
    b"PUT /",
    b"DELETE /",
    b"CONNECT ",
    b"TRACE /",
];

/// Application protocol of a flow's first payload (`--filter-l7` terms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tls,
    Http,
    Unknown,
}

/// Where things are inside a complete request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Landmarks {
    /// Start of the HTTP method.
    pub method: Option<usize>,
    /// The host name bytes (SNI name, or the `Host:` value up to the line end).
    pub host: Option<Range<usize>>,
    /// Start of the SNI extension's data field.
    pub sni_ext: Option<usize>,
}

/// The first request of a flow, as far as the bytes seen so far tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scan {
    /// A whole request: its protocol and landmarks.
    Complete(Proto, Landmarks),
    /// The start of a TLS ClientHello or HTTP request whose end has not
    /// arrived yet. `needed` is the total length when the header says it
    /// (TLS), `None` when only the end marker can tell (HTTP).
    Incomplete { proto: Proto, needed: Option<usize> },
    /// Neither TLS nor HTTP.
    Unknown,
}

/// Classifies `payload` (the flow's data from its first byte).
pub fn scan(payload: &[u8]) -> Scan {
    if let Some(scan) = scan_tls(payload) {
        return scan;
    }
    if let Some(scan) = scan_http(payload) {
        return scan;
    }
    Scan::Unknown
}

fn scan_tls(payload: &[u8]) -> Option<Scan> {
    // Record header (type 22, major version 3) then handshake type 1.
    if payload.len() < RECORD_HEADER_LEN + 1
        || payload[0] != TLS_HANDSHAKE
        || payload[1] != 3
        || payload[RECORD_HEADER_LEN] != CLIENT_HELLO
    {
        return None;
    }
    let record_len = usize::from(u16::from_be_bytes([payload[3], payload[4]]));
    let needed = RECORD_HEADER_LEN + record_len;
    if payload.len() < needed {
        return Some(Scan::Incomplete {
            proto: Proto::Tls,
            needed: Some(needed),
        });
    }
    let (host, sni_ext) = match client_hello_sni(&payload[..needed]) {
        Some((host, ext)) => (Some(host), Some(ext)),
        None => (None, None),
    };
    Some(Scan::Complete(
        Proto::Tls,
        Landmarks {
            method: None,
            host,
            sni_ext,
        },
    ))
}

/// A cursor over a byte slice that never reads past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.at.checked_add(n)?;
        (end <= self.bytes.len()).then(|| self.at = end)
    }
    fn u8(&mut self) -> Option<u8> {
        let v = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(v)
    }
    fn u16(&mut self) -> Option<u16> {
        let hi = self.u8()?;
        let lo = self.u8()?;
        Some(u16::from_be_bytes([hi, lo]))
    }
}

/// Finds the first host name in the SNI extension of a complete ClientHello
/// record. Returns the name's byte range and the SNI extension data start.
fn client_hello_sni(record: &[u8]) -> Option<(Range<usize>, usize)> {
    let mut r = Reader {
        bytes: record,
        at: RECORD_HEADER_LEN,
    };
    r.skip(1 + 3)?; // handshake type, length
    r.skip(2 + 32)?; // client version, random
    let session_id = r.u8()?;
    r.skip(usize::from(session_id))?;
    let suites = r.u16()?;
    r.skip(usize::from(suites))?;
    let compression = r.u8()?;
    r.skip(usize::from(compression))?;
    let extensions_len = usize::from(r.u16()?);
    let extensions_end = (r.at + extensions_len).min(record.len());
    while r.at + 4 <= extensions_end {
        let kind = r.u16()?;
        let len = usize::from(r.u16()?);
        let data = r.at;
        if data + len > extensions_end {
            return None;
        }
        if kind == EXT_SERVER_NAME {
            let mut sni = Reader {
                bytes: &record[..data + len],
                at: data,
            };
            sni.skip(2)?; // server_name_list length
            let name_type = sni.u8()?;
            let name_len = usize::from(sni.u16()?);
            let start = sni.at;
            sni.skip(name_len)?;
            if name_type != 0 || name_len == 0 {
                return None;
            }
            return Some((start..start + name_len, data));
        }
        r.skip(len)?;
    }
    None
}

fn scan_http(payload: &[u8]) -> Option<Scan> {
    if !HTTP_METHODS.iter().any(|m| payload.starts_with(m)) {
        // A prefix of a method (`GE`) is not yet worth holding packets for.
        return None;
    }
    if find(payload, b"\r\n\r\n").is_none() {
        return Some(Scan::Incomplete {
            proto: Proto::Http,
            needed: None,
        });
    }
    let host = find_host_header(payload);
    Some(Scan::Complete(
        Proto::Http,
        Landmarks {
            method: Some(0),
            host,
            sni_ext: None,
        },
    ))
}

/// The value of the first `Host:` header (header name case-insensitive),
/// after one optional space or tab, up to the end of the line.
fn find_host_header(payload: &[u8]) -> Option<Range<usize>> {
    let lower: Vec<u8> = payload.iter().map(u8::to_ascii_lowercase).collect();
    let mut start = find(&lower, b"\nhost:")? + b"\nhost:".len();
    if matches!(payload.get(start), Some(b' ' | b'\t')) {
        start += 1;
    }
    let end = payload[start..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map_or(payload.len(), |n| start + n);
    (end > start).then_some(start..end)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The host name for list matching: lower-case, without a `:port` suffix
/// (HTTP) or a trailing dot.
pub fn host_name(payload: &[u8], host: &Range<usize>) -> Option<String> {
    let raw = payload.get(host.clone())?;
    let text = std::str::from_utf8(raw).ok()?.trim();
    let name = match text.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => text,
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

/// The second-level label of a host name (`example` in `www.example.com`),
/// as a range relative to `host`. `None` for single-label names.
fn second_level(host: &[u8]) -> Option<Range<usize>> {
    let last_dot = host.iter().rposition(|&b| b == b'.')?;
    if last_dot == 0 {
        return None;
    }
    let start = host[..last_dot]
        .iter()
        .rposition(|&b| b == b'.')
        .map_or(0, |d| d + 1);
    Some(start..last_dot)
}

/// Resolves one split position against a request of `len` bytes. Markers the
/// request does not have, and results outside `1..len` (a split at 0 or at
/// the end splits nothing), give `None`.
pub fn resolve(pos: SplitPos, payload: &[u8], marks: &Landmarks) -> Option<usize> {
    let len = payload.len();
    let offset = i64::from(pos.offset);
    let base: i64 = match pos.marker {
        Marker::Absolute if offset < 0 => len as i64,
        Marker::Absolute => 0,
        Marker::Method => marks.method? as i64,
        Marker::Host => marks.host.as_ref()?.start as i64,
        Marker::EndHost => marks.host.as_ref()?.end as i64,
        Marker::SniExt => marks.sni_ext? as i64,
        Marker::Sld | Marker::EndSld | Marker::MidSld => {
            let host = marks.host.as_ref()?;
            let sld = second_level(payload.get(host.clone())?)?;
            let at = host.start + sld.start;
            let sld_len = sld.len();
            (match pos.marker {
                Marker::Sld => at,
                Marker::EndSld => at + sld_len,
                _ if sld_len == 1 => at + 1,
                _ => at + sld_len / 2,
            }) as i64
        }
    };
    let at = base + offset;
    (at > 0 && at < len as i64).then_some(at as usize)
}

/// All positions of `list` that resolve, sorted and without duplicates
/// (`multisplit`/`multidisorder`).
pub fn split_points(list: &[SplitPos], payload: &[u8], marks: &Landmarks) -> Vec<usize> {
    let mut points: Vec<usize> = list
        .iter()
        .filter_map(|&p| resolve(p, payload, marks))
        .collect();
    points.sort_unstable();
    points.dedup();
    points
}

/// The one position `fakedsplit`/`fakeddisorder` use: the first relative
/// marker that resolves, else the first absolute one, else 1 (nfqws' rule).
/// `None` only when the request is too short to split at all.
pub fn single_split_point(list: &[SplitPos], payload: &[u8], marks: &Landmarks) -> Option<usize> {
    let relative = list.iter().filter(|p| p.marker != Marker::Absolute);
    let absolute = list.iter().filter(|p| p.marker == Marker::Absolute);
    relative
        .chain(absolute)
        .find_map(|&p| resolve(p, payload, marks))
        .or_else(|| (payload.len() > 1).then_some(1))
}

#[cfg(test)]
#[path = "locate/tests.rs"]
mod tests;
