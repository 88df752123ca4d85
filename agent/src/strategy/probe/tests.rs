//! Pure parts of the probe runner, table-style; probes against local
//! servers are in `tests/local.rs`.

use std::time::Duration;

use super::classify::{Ending, Observed, STALL_16K_STREAM_BYTES, Stage, classify, stall_window};
use super::http::{BodyDecoder, Framing, HttpError, ResponseHead, parse_head, request};
use super::url::{ProbeUrl, Scheme, same_site};
use super::*;

mod local;

const KIB: u64 = 1024;

fn seen(stage: Stage, ending: Ending, server_bytes: u64) -> Observed {
    Observed {
        stage,
        ending,
        server_bytes,
    }
}

fn answered(status: u16, off_site_redirect: bool) -> Ending {
    Ending::Answered {
        status,
        off_site_redirect,
    }
}

#[test]
fn classification_table() {
    use Ending as E;
    use FailPhase as F;
    use Stage as S;
    let table: &[(Observed, Option<FailPhase>)] = &[
        (seen(S::Response, answered(200, false), 900), None),
        (seen(S::Response, answered(204, false), 900), None),
        (seen(S::Response, answered(301, false), 900), None),
        (
            seen(S::Response, answered(302, true), 900),
            Some(F::Blockpage),
        ),
        (
            seen(S::Response, answered(451, false), 900),
            Some(F::Blockpage),
        ),
        (
            seen(S::Response, answered(403, false), 900),
            Some(F::HttpStatus),
        ),
        (
            seen(S::Response, answered(503, false), 900),
            Some(F::HttpStatus),
        ),
        (
            seen(S::Response, answered(101, false), 900),
            Some(F::HttpStatus),
        ),
        (seen(S::Resolve, E::DnsFailed, 0), Some(F::DnsError)),
        (seen(S::Connect, E::Deadline, 0), Some(F::ConnectTimeout)),
        (seen(S::Connect, E::OtherIo, 0), Some(F::ConnectTimeout)),
        (seen(S::Connect, E::Refused, 0), Some(F::ConnectRefused)),
        (seen(S::Handshake, E::Reset, 0), Some(F::ResetAtHello)),
        (seen(S::Handshake, E::Closed, 0), Some(F::ResetAtHello)),
        (seen(S::Handshake, E::Reset, 1200), Some(F::ResetAtHello)),
        (
            seen(S::Handshake, E::Deadline, 0),
            Some(F::SilentDropAtHello),
        ),
        (seen(S::Handshake, E::Deadline, 100), Some(F::Timeout)),
        (seen(S::Handshake, E::TlsAlert, 7), Some(F::TlsAlert)),
        (seen(S::Handshake, E::CertInvalid, 3000), Some(F::CertError)),
        (
            seen(S::Response, E::Reset, 40 * KIB),
            Some(F::ResetMidStream),
        ),
        (
            seen(S::Response, E::Closed, 3 * KIB),
            Some(F::ResetMidStream),
        ),
        (seen(S::Response, E::TlsAlert, 3 * KIB), Some(F::TlsAlert)),
        (seen(S::Response, E::Stalled, 13 * KIB), Some(F::Stall)),
        (seen(S::Response, E::Stalled, 14 * KIB), Some(F::Stall16K)),
        (seen(S::Response, E::Stalled, 18 * KIB), Some(F::Stall16K)),
        (seen(S::Response, E::Stalled, 22 * KIB), Some(F::Stall16K)),
        (seen(S::Response, E::Stalled, 22 * KIB + 1), Some(F::Stall)),
        (seen(S::Response, E::Deadline, 18 * KIB), Some(F::Timeout)),
        (seen(S::Response, E::Malformed, 500), Some(F::HttpStatus)),
    ];
    for (observed, expected) in table {
        assert_eq!(classify(*observed), *expected, "{observed:?}");
    }
}

#[test]
fn stall_window_is_half_the_timeout_at_most_five_seconds() {
    assert_eq!(stall_window(Duration::from_secs(4)), Duration::from_secs(2));
    assert_eq!(
        stall_window(Duration::from_secs(10)),
        Duration::from_secs(5)
    );
    assert_eq!(
        stall_window(Duration::from_secs(60)),
        Duration::from_secs(5)
    );
    assert_eq!(STALL_16K_STREAM_BYTES, 14_336..=22_528);
}

#[test]
fn urls_give_host_port_and_request_target() {
    let cases = [
        (
            "https://Example.com",
            Scheme::Https,
            "example.com",
            443,
            "/",
        ),
        (
            "http://example.com:8080/a?b=1#frag",
            Scheme::Http,
            "example.com",
            8080,
            "/a?b=1",
        ),
        (
            "https://user@example.com?x",
            Scheme::Https,
            "example.com",
            443,
            "/?x",
        ),
        (
            "https://[2001:db8::1]:8443/p",
            Scheme::Https,
            "2001:db8::1",
            8443,
            "/p",
        ),
        (
            "https://127.0.0.1/bytes/10",
            Scheme::Https,
            "127.0.0.1",
            443,
            "/bytes/10",
        ),
    ];
    for (text, scheme, host, port, target) in cases {
        let url = ProbeUrl::parse(text).unwrap();
        assert_eq!(
            (url.scheme, url.host.as_str(), url.port, url.target.as_str()),
            (scheme, host, port, target),
            "{text}"
        );
    }
    for bad in ["ftp://x/", "https://", "https://x:0/", "https://[::1/"] {
        assert!(ProbeUrl::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_request_is_a_plain_get_that_closes() {
    let url = ProbeUrl::parse("https://example.com:8443/bytes/5?x=1").unwrap();
    assert_eq!(
        String::from_utf8(request(&url)).unwrap(),
        "GET /bytes/5?x=1 HTTP/1.1\r\nHost: example.com:8443\r\nUser-Agent: veil-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    let url = ProbeUrl::parse("https://[::1]/").unwrap();
    assert!(
        String::from_utf8(request(&url))
            .unwrap()
            .contains("\r\nHost: [::1]\r\n")
    );
}

#[test]
fn redirects_within_the_site_are_not_block_pages() {
    let cases = [
        ("example.com", "/elsewhere", true),
        ("example.com", "https://example.com/x", true),
        ("example.com", "https://www.example.com/", true),
        ("www.example.com", "//example.com:443/", true),
        ("example.com", "https://EXAMPLE.com./", true),
        ("example.com", "http://warning.rt.ru/?id=1", false),
        ("example.com", "https://notexample.com/", false),
        ("example.com", "https://[::1]/", false),
    ];
    for (host, location, same) in cases {
        assert_eq!(same_site(host, location), same, "{host} → {location}");
    }
}

fn head(text: &str) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    parse_head(text.as_bytes())
}

#[test]
fn response_heads_give_status_location_and_framing() {
    let (parsed, len) = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nbody")
        .unwrap()
        .unwrap();
    assert_eq!(
        parsed,
        ResponseHead {
            status: 200,
            location: None,
            framing: Framing::Length(12)
        }
    );
    assert_eq!(len, 39);
    let cases = [
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
            200,
            Framing::Chunked,
        ),
        ("HTTP/1.0 200 OK\r\nServer: x\r\n\r\n", 200, Framing::Close),
        (
            "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
            204,
            Framing::Empty,
        ),
        ("HTTP/1.1 304 Not Modified\r\n\r\n", 304, Framing::Empty),
        ("HTTP/1.1 100 Continue\r\n\r\n", 100, Framing::Empty),
        (
            "HTTP/1.1 451\r\ncontent-length: 0\r\n\r\n",
            451,
            Framing::Length(0),
        ),
    ];
    for (text, status, framing) in cases {
        let (parsed, _) = head(text).unwrap().unwrap();
        assert_eq!(
            (parsed.status, parsed.framing),
            (status, framing),
            "{text:?}"
        );
    }
    let (redirect, _) = head("HTTP/1.1 302 Found\r\nLocation:  http://block.example/ \r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(redirect.location.as_deref(), Some("http://block.example/"));
}

#[test]
fn incomplete_and_malformed_heads() {
    assert_eq!(head("HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
    assert!(matches!(
        head("SSH-2.0-OpenSSH\r\n\r\n"),
        Err(HttpError::StatusLine(_))
    ));
    assert!(matches!(
        head("HTTP/1.1 2000 OK\r\n\r\n"),
        Err(HttpError::StatusLine(_))
    ));
    assert!(matches!(
        head("HTTP/1.1 200 OK\r\nno colon\r\n\r\n"),
        Err(HttpError::HeaderLine(_))
    ));
    assert!(matches!(
        head("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
        Err(HttpError::ContentLength(_))
    ));
    let endless = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(http::MAX_HEAD));
    assert_eq!(head(&endless), Err(HttpError::HeadTooLong));
}

/// Feeds `bytes` in pieces of `step` bytes.
fn decode(framing: Framing, bytes: &[u8], step: usize) -> Result<BodyDecoder, HttpError> {
    let mut body = BodyDecoder::new(framing);
    for piece in bytes.chunks(step) {
        body.feed(piece)?;
    }
    Ok(body)
}

#[test]
fn content_length_bodies_end_after_their_length() {
    for step in [1, 3, 100] {
        let body = decode(Framing::Length(5), b"hel", step).unwrap();
        assert_eq!(
            (body.body_bytes, body.is_done(), body.close_completes()),
            (3, false, false)
        );
        let body = decode(Framing::Length(5), b"hello, and more", step).unwrap();
        assert_eq!((body.body_bytes, body.is_done()), (5, true));
    }
    assert!(BodyDecoder::new(Framing::Length(0)).is_done());
    assert!(BodyDecoder::new(Framing::Empty).is_done());
}

#[test]
fn chunked_bodies_count_only_data() {
    let wire = b"5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: x\r\n\r\nleftover";
    for step in [1, 2, 7, wire.len()] {
        let body = decode(Framing::Chunked, wire, step).unwrap();
        assert_eq!((body.body_bytes, body.is_done()), (31, true), "step {step}");
    }
    let body = decode(Framing::Chunked, b"4\r\nwiki\r\n5\r\npe", 1).unwrap();
    assert_eq!((body.body_bytes, body.is_done()), (6, false));
    let body = decode(Framing::Chunked, b"3\nabc\n0\n\n", 1).unwrap();
    assert_eq!(
        (body.body_bytes, body.is_done()),
        (3, true),
        "bare LFs are tolerated"
    );
    for bad in [
        &b"zz\r\n"[..],
        b"\r\n",
        b"3\r\nabcX",
        b"ffffffffffffffffff\r\n",
    ] {
        assert_eq!(
            decode(Framing::Chunked, bad, 1).unwrap_err(),
            HttpError::Chunked,
            "{bad:?}"
        );
    }
}

#[test]
fn close_delimited_bodies_end_when_the_server_closes() {
    let body = decode(Framing::Close, &[0u8; 5000], 1000).unwrap();
    assert_eq!(
        (body.body_bytes, body.is_done(), body.close_completes()),
        (5000, false, true)
    );
}

#[test]
fn stun_binding_request_has_the_rfc_8489_header() {
    let a = stun_binding_request();
    let b = stun_binding_request();
    assert_eq!(a.len(), 20);
    assert_eq!(a[0..2], [0x00, 0x01], "Binding request");
    assert_eq!(a[2..4], [0x00, 0x00], "no attributes");
    assert_eq!(a[4..8], [0x21, 0x12, 0xA4, 0x42], "magic cookie");
    assert_ne!(a[8..20], b[8..20], "random transaction ids");
}
