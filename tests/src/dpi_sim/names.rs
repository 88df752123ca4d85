//! What name a client's bytes ask for: the SNI of a TLS ClientHello (parsed
//! with `tls-parser`) or the `Host` of an HTTP request, and whether it is on
//! the block list.
//!
//! Scans take whatever bytes the caller has — one segment (level 1) or the
//! first record of a reassembled stream (level 2) — and only report a name
//! that lies *entirely* inside them, like a DPI box looking at those bytes.

use tls_parser::{SNIType, TlsExtension, parse_tls_extensions, parse_tls_record_header};

/// The protocol a scan recognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tls,
    Http,
}

impl Proto {
    /// The decision log's key for the name: `sni` or `host`.
    pub fn name_key(self) -> &'static str {
        match self {
            Proto::Tls => "sni",
            Proto::Http => "host",
        }
    }
}

/// The result of scanning some bytes for a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scan {
    /// Neither a TLS ClientHello nor an HTTP request starts here.
    Other,
    /// A ClientHello/request starts here but its name (or its end) is not
    /// inside these bytes.
    Partial(Proto),
    /// The whole ClientHello/request header is here and carries no name.
    NoName(Proto),
    /// The name, lower-cased, without a trailing dot or port.
    Name(Proto, String),
}

/// TLS record type of handshake messages, and the ClientHello message type.
const HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 0x01;
/// Record (5) + handshake (4) headers.
const HEADERS_LEN: usize = 9;

/// Scans bytes that start where a client's stream (or one of its segments)
/// starts.
pub fn scan(bytes: &[u8]) -> Scan {
    match bytes.first() {
        Some(&HANDSHAKE) => scan_client_hello(bytes),
        Some(b) if b.is_ascii_uppercase() => scan_http(bytes),
        _ => Scan::Other,
    }
}

/// The length of the first TLS record (header included) when `bytes` start
/// with a handshake record header, else `None`.
pub fn first_record_len(bytes: &[u8]) -> Option<usize> {
    if bytes.first() != Some(&HANDSHAKE) {
        return None;
    }
    let (_, header) = parse_tls_record_header(bytes).ok()?;
    Some(5 + usize::from(header.len))
}

/// The end of an HTTP request header (`\r\n\r\n` included) when present.
pub fn http_header_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

/// A ClientHello, possibly truncated: fixed fields are walked by hand (they
/// are needed to find the extensions), the extensions are parsed with
/// `tls-parser`, which stops at the first incomplete one.
fn scan_client_hello(bytes: &[u8]) -> Scan {
    let Ok((_, header)) = parse_tls_record_header(bytes) else {
        return if bytes.len() < 5 {
            Scan::Partial(Proto::Tls)
        } else {
            Scan::Other
        };
    };
    if header.version.0 >> 8 != 3 {
        return Scan::Other;
    }
    let record_end = (5 + usize::from(header.len)).min(bytes.len());
    let record = &bytes[..record_end];
    if record.len() < HEADERS_LEN {
        return Scan::Partial(Proto::Tls);
    }
    if record[5] != CLIENT_HELLO {
        return Scan::Other;
    }
    let body = &record[HEADERS_LEN..];
    // version (2) + random (32), then session id, cipher suites, compression.
    let mut at = 34;
    for width in [1, 2, 1] {
        let Some(len) = length_at(body, at, width) else {
            return Scan::Partial(Proto::Tls);
        };
        at += width + len;
    }
    let Some(extensions_len) = length_at(body, at, 2) else {
        return Scan::Partial(Proto::Tls);
    };
    let extensions_start = at + 2;
    let extensions_end = extensions_start + extensions_len;
    let available = &body[extensions_start.min(body.len())..extensions_end.min(body.len())];
    let Ok((_, extensions)) = parse_tls_extensions(available) else {
        return Scan::Partial(Proto::Tls);
    };
    for extension in extensions {
        if let TlsExtension::SNI(names) = extension {
            let name = names
                .iter()
                .find(|(kind, _)| *kind == SNIType::HostName)
                .map(|(_, name)| normalise(&String::from_utf8_lossy(name)));
            return match name {
                Some(name) => Scan::Name(Proto::Tls, name),
                None => Scan::NoName(Proto::Tls),
            };
        }
    }
    if body.len() >= extensions_end {
        Scan::NoName(Proto::Tls)
    } else {
        Scan::Partial(Proto::Tls)
    }
}

/// A big-endian length of `width` bytes at `at`, if present.
fn length_at(bytes: &[u8], at: usize, width: usize) -> Option<usize> {
    let field = bytes.get(at..at + width)?;
    Some(field.iter().fold(0, |acc, b| acc << 8 | usize::from(*b)))
}

/// An HTTP request: a method token, a space, then headers; the `Host` line
/// counts only when its end (`\r\n`) is inside `bytes`.
fn scan_http(bytes: &[u8]) -> Scan {
    let method_len = bytes.iter().take_while(|b| b.is_ascii_uppercase()).count();
    match bytes.get(method_len) {
        Some(b' ') if method_len <= 16 => {}
        None if method_len <= 16 => return Scan::Partial(Proto::Http),
        _ => return Scan::Other,
    }
    let header_end = http_header_end(bytes);
    let head = &bytes[..header_end.unwrap_or(bytes.len())];
    let mut lines = head.split(|b| *b == b'\n').skip(1).peekable();
    while let Some(line) = lines.next() {
        // The last piece has no `\n` after it: it may be cut.
        let complete = lines.peek().is_some();
        let text = String::from_utf8_lossy(line);
        if let Some((key, value)) = text.split_once(':')
            && key.eq_ignore_ascii_case("host")
            && complete
        {
            return Scan::Name(Proto::Http, normalise(strip_port(value.trim())));
        }
    }
    if header_end.is_some() {
        Scan::NoName(Proto::Http)
    } else {
        Scan::Partial(Proto::Http)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host;
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Names to block: each matches itself and its subdomains.
#[derive(Clone, Debug, Default)]
pub struct Blocklist {
    names: Vec<String>,
}

impl Blocklist {
    pub fn new(names: impl IntoIterator<Item = String>) -> Blocklist {
        Blocklist {
            names: names.into_iter().map(|n| normalise(&n)).collect(),
        }
    }

    /// The listed name that `name` falls under, if any.
    pub fn matching(&self, name: &str) -> Option<&str> {
        self.names
            .iter()
            .find(|listed| {
                name == listed.as_str()
                    || name
                        .strip_suffix(listed.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            })
            .map(String::as_str)
    }
}

#[cfg(test)]
#[path = "names_tests.rs"]
mod tests;
