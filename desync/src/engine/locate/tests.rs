use super::*;
use crate::engine::fake::client_hello;

fn pos(marker: Marker, offset: i32) -> SplitPos {
    SplitPos { marker, offset }
}

/// Offset of `needle` in `hay`, found independently of the parser.
fn offset_of(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

fn complete(payload: &[u8]) -> (Proto, Landmarks) {
    match scan(payload) {
        Scan::Complete(p, m) => (p, m),
        other => panic!("expected a complete request, got {other:?}"),
    }
}

const HTTP_REQ: &[u8] =
    b"GET /path HTTP/1.1\r\nUser-Agent: x\r\nhOsT: www.Example.com:8080\r\nAccept: */*\r\n\r\n";

#[test]
fn scan_classifies_payloads() {
    let hello = client_hello("www.example.com", 600);
    let cases: Vec<(&str, Vec<u8>, Scan)> = vec![
        (
            "tls first segment",
            hello[..300].to_vec(),
            Scan::Incomplete {
                proto: Proto::Tls,
                needed: Some(hello.len()),
            },
        ),
        (
            "http without header end",
            b"POST /x HTTP/1.1\r\nHost: a.b\r\n".to_vec(),
            Scan::Incomplete {
                proto: Proto::Http,
                needed: None,
            },
        ),
        (
            "ssh banner",
            b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
            Scan::Unknown,
        ),
        (
            "tls alert record",
            vec![21, 3, 3, 0, 2, 2, 40],
            Scan::Unknown,
        ),
        (
            "server hello",
            vec![22, 3, 3, 0, 40, 2, 0, 0, 36],
            Scan::Unknown,
        ),
        (
            "lower-case method",
            b"get / HTTP/1.1\r\n\r\n".to_vec(),
            Scan::Unknown,
        ),
        ("empty", Vec::new(), Scan::Unknown),
    ];
    for (name, payload, want) in cases {
        assert_eq!(scan(&payload), want, "{name}");
    }
}

#[test]
fn tls_landmarks_point_at_the_sni() {
    for sni in ["www.example.com", "a.b", "blocked.test", "x"] {
        let hello = client_hello(sni, 517);
        let (proto, marks) = complete(&hello);
        assert_eq!(proto, Proto::Tls);
        let at = offset_of(&hello, sni.as_bytes());
        assert_eq!(marks.host, Some(at..at + sni.len()), "{sni}");
        // SNI extension data: list length (2), type (1), name length (2), name.
        assert_eq!(marks.sni_ext, Some(at - 5), "{sni}");
        assert_eq!(marks.method, None);
        assert_eq!(
            host_name(&hello, &(at..at + sni.len())).as_deref(),
            Some(sni)
        );
    }
}

#[test]
fn tls_without_sni_is_complete_with_no_host() {
    // A ClientHello whose only extension is not server_name.
    let mut body = vec![3, 3];
    body.extend([0; 32]);
    body.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend([0, 5, 0x00, 0x2b, 0, 1, 4]);
    let mut hs = vec![1, 0, 0, body.len() as u8];
    hs.extend(&body);
    let mut rec = vec![22, 3, 1, 0, hs.len() as u8];
    rec.extend(&hs);
    assert_eq!(complete(&rec), (Proto::Tls, Landmarks::default()));
}

#[test]
fn truncated_extension_gives_no_host() {
    let mut hello = client_hello("www.example.com", 517);
    // Claim a longer SNI name than the extension holds.
    let at = offset_of(&hello, b"www.example.com");
    hello[at - 1] = 200;
    assert_eq!(complete(&hello).1.host, None);
}

#[test]
fn http_landmarks_point_at_the_host_header_value() {
    let (proto, marks) = complete(HTTP_REQ);
    assert_eq!(proto, Proto::Http);
    let at = offset_of(HTTP_REQ, b"www.Example.com:8080");
    assert_eq!(marks.method, Some(0));
    assert_eq!(marks.host, Some(at..at + "www.Example.com:8080".len()));
    assert_eq!(marks.sni_ext, None);
    let host = marks.host.expect("host");
    assert_eq!(
        host_name(HTTP_REQ, &host).as_deref(),
        Some("www.example.com")
    );
}

#[test]
fn every_listed_method_is_http() {
    for m in [
        "GET /", "POST /", "HEAD /", "OPTIONS ", "PUT /", "DELETE /", "CONNECT ", "TRACE /",
    ] {
        let req = format!("{m}x HTTP/1.1\r\nHost: h.example\r\n\r\n");
        assert_eq!(complete(req.as_bytes()).0, Proto::Http, "{m}");
    }
}

#[test]
fn markers_resolve_to_absolute_offsets() {
    let hello = client_hello("www.example.com", 517);
    let marks = complete(&hello).1;
    let host = offset_of(&hello, b"www.example.com");
    let sld = host + 4; // "example"
    let len = hello.len();
    let cases = [
        (pos(Marker::Absolute, 1), Some(1)),
        (pos(Marker::Absolute, 100), Some(100)),
        (pos(Marker::Absolute, -10), Some(len - 10)),
        (pos(Marker::Absolute, 0), None),
        (pos(Marker::Absolute, len as i32), None),
        (pos(Marker::Absolute, -(len as i32)), None),
        (pos(Marker::Host, 0), Some(host)),
        (pos(Marker::Host, 2), Some(host + 2)),
        (pos(Marker::EndHost, 0), Some(host + 15)),
        (pos(Marker::EndHost, -2), Some(host + 13)),
        (pos(Marker::Sld, 0), Some(sld)),
        (pos(Marker::EndSld, 0), Some(sld + 7)),
        (pos(Marker::MidSld, 0), Some(sld + 3)),
        (pos(Marker::MidSld, 1), Some(sld + 4)),
        (pos(Marker::SniExt, 1), Some(host - 4)),
        (pos(Marker::Method, 2), None),
    ];
    for (p, want) in cases {
        assert_eq!(resolve(p, &hello, &marks), want, "{p:?}");
    }
}

#[test]
fn sld_markers_follow_the_second_label_from_the_right() {
    // (host, sld start within host, sld length)
    let cases = [
        ("example.com", Some((0, 7))),
        ("a.b.c.example.org", Some((6, 7))),
        ("x.io", Some((0, 1))),
        ("localhost", None),
    ];
    for (name, want) in cases {
        let req = format!("GET / HTTP/1.1\r\nHost: {name}\r\n\r\n");
        let req = req.as_bytes();
        let marks = complete(req).1;
        let host = offset_of(req, name.as_bytes());
        let got = (
            resolve(pos(Marker::Sld, 0), req, &marks),
            resolve(pos(Marker::EndSld, 0), req, &marks),
            resolve(pos(Marker::MidSld, 0), req, &marks),
        );
        let want = want.map(|(s, l)| {
            let mid = if l == 1 { 1 } else { l / 2 };
            (Some(host + s), Some(host + s + l), Some(host + s + mid))
        });
        assert_eq!(got, want.unwrap_or((None, None, None)), "{name}");
    }
}

#[test]
fn http_method_marker_and_missing_sni_marker() {
    let marks = complete(HTTP_REQ).1;
    assert_eq!(resolve(pos(Marker::Method, 2), HTTP_REQ, &marks), Some(2));
    assert_eq!(resolve(pos(Marker::Method, 0), HTTP_REQ, &marks), None);
    assert_eq!(resolve(pos(Marker::SniExt, 1), HTTP_REQ, &marks), None);
}

#[test]
fn unknown_payloads_resolve_only_numbers() {
    let data = [7u8; 50];
    let marks = Landmarks::default();
    let list = [
        pos(Marker::Host, 1),
        pos(Marker::Absolute, 10),
        pos(Marker::Absolute, -5),
    ];
    assert_eq!(split_points(&list, &data, &marks), vec![10, 45]);
}

#[test]
fn split_points_are_sorted_deduplicated_and_in_range() {
    let hello = client_hello("www.example.com", 517);
    let marks = complete(&hello).1;
    let host = offset_of(&hello, b"www.example.com");
    let list = [
        pos(Marker::MidSld, 0),
        pos(Marker::Absolute, 1),
        pos(Marker::Host, 7), // same as midsld: www. + exa
        pos(Marker::Absolute, 5000),
        pos(Marker::Method, 0),
        pos(Marker::Absolute, 1),
    ];
    assert_eq!(split_points(&list, &hello, &marks), vec![1, host + 7]);
}

/// (name, payload, landmarks, positions, expected point)
type SingleCase<'a> = (
    &'a str,
    &'a [u8],
    &'a Landmarks,
    Vec<SplitPos>,
    Option<usize>,
);

#[test]
fn single_split_point_prefers_relative_markers() {
    let hello = client_hello("www.example.com", 517);
    let marks = complete(&hello).1;
    let host = offset_of(&hello, b"www.example.com");
    let http = complete(HTTP_REQ).1;
    let none = Landmarks::default();
    let cases: Vec<SingleCase> = vec![
        (
            "relative wins over an earlier number",
            &hello,
            &marks,
            vec![pos(Marker::Absolute, 5), pos(Marker::Host, 1)],
            Some(host + 1),
        ),
        (
            "unresolvable relative falls back to the number",
            &hello,
            &marks,
            vec![pos(Marker::Method, 2), pos(Marker::Absolute, 5)],
            Some(5),
        ),
        (
            "method+2 for http",
            HTTP_REQ,
            &http,
            vec![
                pos(Marker::Method, 2),
                pos(Marker::MidSld, 0),
                pos(Marker::Absolute, 5),
            ],
            Some(2),
        ),
        (
            "nothing resolves: position 1",
            &hello,
            &marks,
            vec![pos(Marker::Absolute, 9999)],
            Some(1),
        ),
        ("one byte cannot be split", b"x", &none, vec![], None),
    ];
    for (name, data, m, list, want) in cases {
        assert_eq!(single_split_point(&list, data, m), want, "{name}");
    }
}
