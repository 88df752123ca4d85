//! Built-in fake payloads, used when a profile gives no
//! `--dpi-desync-fake-tls`/`--dpi-desync-fake-http`.
//!
//! The fakes name a host under `.invalid` (RFC 6761: never resolves), so a
//! fake that reaches a server by mistake cannot ask for anything real.

use super::locate::Proto;

/// Host name the built-in fakes carry.
pub const FAKE_HOST: &str = "www.veil-fake.invalid";

/// Length of the built-in fake for payloads that are neither TLS nor HTTP
/// (zeros, like nfqws' default unknown-protocol fake).
pub const UNKNOWN_FAKE_LEN: usize = 256;

/// Cipher suites a current browser offers (TLS 1.3 first, then 1.2 ECDHE).
const CIPHER_SUITES: &[u16] = &[
    0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014, 0x009c,
    0x009d, 0x002f, 0x0035,
];

/// The built-in fake for `proto`.
pub fn default_fake(proto: Proto) -> Vec<u8> {
    match proto {
        Proto::Tls => client_hello(FAKE_HOST, 517),
        Proto::Http => http_get(FAKE_HOST),
        Proto::Unknown => vec![0; UNKNOWN_FAKE_LEN],
    }
}

/// A minimal `GET /` for `host`.
pub fn http_get(host: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n\r\n")
        .into_bytes()
}

/// A TLS 1.3-capable ClientHello record for `sni`, padded (RFC 7685) to at
/// least `min_len` bytes in total. Deterministic: the random, session id and
/// key share are fixed patterns, which is all a fake needs.
pub fn client_hello(sni: &str, min_len: usize) -> Vec<u8> {
    let mut ext = Vec::new();
    // server_name: list length, type 0 (host_name), name length, name.
    let name = sni.as_bytes();
    let mut sni_data = Vec::new();
    put_u16(&mut sni_data, (name.len() + 3) as u16);
    sni_data.push(0);
    put_u16(&mut sni_data, name.len() as u16);
    sni_data.extend_from_slice(name);
    put_ext(&mut ext, 0x0000, &sni_data);
    put_ext(&mut ext, 0x0017, &[]); // extended_master_secret
    put_ext(&mut ext, 0xff01, &[0]); // renegotiation_info
    put_ext(&mut ext, 0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]); // groups x25519, p256
    put_ext(&mut ext, 0x000b, &[1, 0]); // ec_point_formats: uncompressed
    put_ext(&mut ext, 0x0010, b"\x00\x0c\x02h2\x08http/1.1"); // ALPN
    put_ext(
        &mut ext,
        0x000d,
        &[0, 8, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, 0x05, 0x03],
    ); // signature_algorithms
    let mut key_share = Vec::new();
    put_u16(&mut key_share, 36);
    put_u16(&mut key_share, 0x001d);
    put_u16(&mut key_share, 32);
    key_share.extend((0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11)));
    put_ext(&mut ext, 0x0033, &key_share);
    put_ext(&mut ext, 0x002b, &[4, 0x03, 0x04, 0x03, 0x03]); // supported_versions

    let mut body = vec![0x03, 0x03]; // legacy_version TLS 1.2
    body.extend((0..32u8).map(|i| i.wrapping_mul(7).wrapping_add(3))); // random
    body.push(32);
    body.extend((0..32u8).map(|i| i.wrapping_mul(13).wrapping_add(5))); // session id
    put_u16(&mut body, (CIPHER_SUITES.len() * 2) as u16);
    for &suite in CIPHER_SUITES {
        put_u16(&mut body, suite);
    }
    body.extend_from_slice(&[1, 0]); // compression: null

    // Record header (5) + handshake header (4) + body + extensions length (2).
    let unpadded = 5 + 4 + body.len() + 2 + ext.len();
    if unpadded + 4 <= min_len {
        put_ext(&mut ext, 0x0015, &vec![0; min_len - unpadded - 4]); // padding
    }
    put_u16(&mut body, ext.len() as u16);
    body.extend_from_slice(&ext);

    let mut hello = vec![1];
    hello.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hello.extend_from_slice(&body);
    let mut record = vec![22, 3, 1];
    put_u16(&mut record, hello.len() as u16);
    record.extend_from_slice(&hello);
    record
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    put_u16(out, kind);
    put_u16(out, data.len() as u16);
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::locate::{Scan, host_name, scan};

    #[test]
    fn built_in_fakes_parse_as_requests_for_the_fake_host() {
        for proto in [Proto::Tls, Proto::Http] {
            let fake = default_fake(proto);
            let Scan::Complete(found, marks) = scan(&fake) else {
                panic!("{proto:?} fake does not parse: {:?}", scan(&fake));
            };
            assert_eq!(found, proto);
            let host = marks.host.expect("fake carries a host");
            assert_eq!(host_name(&fake, &host).as_deref(), Some(FAKE_HOST));
        }
    }

    #[test]
    fn client_hello_is_padded_to_the_requested_size() {
        for min in [300, 517, 1800, 4000] {
            let hello = client_hello("a.example", min);
            assert!(
                hello.len() >= min && hello.len() <= min + 4,
                "{min} -> {}",
                hello.len()
            );
            let record_len = usize::from(u16::from_be_bytes([hello[3], hello[4]]));
            assert_eq!(record_len + 5, hello.len());
        }
    }

    #[test]
    fn unknown_protocol_fake_is_zeros() {
        assert_eq!(default_fake(Proto::Unknown), vec![0; UNKNOWN_FAKE_LEN]);
    }
}
