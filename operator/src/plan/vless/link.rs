//! `vless://` share links, as VLESS clients (v2rayN, Nekobox, Shadowrocket,
//! Hiddify, …) import them:
//!
//! `vless://ID@HOST:PORT?encryption=none&flow=FLOW&security=reality&sni=SNI&fp=FP&pbk=PUBKEY&sid=SHORTID&spx=%2F&type=tcp#REMARK`
//!
//! `flow` is left out for flow `none`. A link is a credential: it is built
//! for the credentials API only, never logged or put in a status.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use veil_crds::protocol_server::{Fingerprint, VlessFlow};

use super::server_status::host_port;

/// Characters percent-encoded in query values and the remark: everything
/// but RFC 3986 unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Everything a link holds.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkParts<'a> {
    /// The user's UUID.
    pub id: &'a str,
    /// Host name or IP address (IPv6 without brackets is fine).
    pub host: &'a str,
    pub port: u16,
    pub flow: VlessFlow,
    /// SNI: the server's first `serverNames` entry.
    pub server_name: &'a str,
    pub fingerprint: Fingerprint,
    /// Reality public key (base64url).
    pub public_key: &'a str,
    /// The server's first `shortIds` entry (may be empty).
    pub short_id: &'a str,
    /// The name clients show (the key's name).
    pub remark: &'a str,
}

/// The `vless://` link.
pub fn vless_link(parts: &LinkParts<'_>) -> String {
    let encode = |text: &str| utf8_percent_encode(text, COMPONENT).to_string();
    let mut query = vec![("encryption", "none".to_owned())];
    if parts.flow != VlessFlow::None {
        query.push(("flow", encode(parts.flow.as_str())));
    }
    query.extend([
        ("security", "reality".to_owned()),
        ("sni", encode(parts.server_name)),
        ("fp", fingerprint_name(parts.fingerprint).to_owned()),
        ("pbk", encode(parts.public_key)),
        ("sid", encode(parts.short_id)),
        ("spx", encode("/")),
        ("type", "tcp".to_owned()),
    ]);
    let query: Vec<String> = query
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    format!(
        "vless://{}@{}?{}#{}",
        encode(parts.id),
        host_port(parts.host, parts.port),
        query.join("&"),
        encode(parts.remark)
    )
}

/// A fingerprint as written in specs and links.
fn fingerprint_name(fingerprint: Fingerprint) -> &'static str {
    match fingerprint {
        Fingerprint::Chrome => "chrome",
        Fingerprint::Firefox => "firefox",
        Fingerprint::Safari => "safari",
        Fingerprint::Ios => "ios",
        Fingerprint::Android => "android",
        Fingerprint::Edge => "edge",
        Fingerprint::Random => "random",
        Fingerprint::Randomized => "randomized",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> LinkParts<'static> {
        LinkParts {
            id: "7d6a1b0e-3c1f-4b8e-9a57-2f0c1e5d9b41",
            host: "vpn.example.com",
            port: 443,
            flow: VlessFlow::XtlsRprxVision,
            server_name: "www.microsoft.com",
            fingerprint: Fingerprint::Chrome,
            public_key: "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo",
            short_id: "6ba85179e30d4fc2",
            remark: "alice",
        }
    }

    #[test]
    fn a_link_has_every_reality_parameter() {
        assert_eq!(
            vless_link(&parts()),
            "vless://7d6a1b0e-3c1f-4b8e-9a57-2f0c1e5d9b41@vpn.example.com:443?encryption=none&flow=xtls-rprx-vision&security=reality&sni=www.microsoft.com&fp=chrome&pbk=hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo&sid=6ba85179e30d4fc2&spx=%2F&type=tcp#alice"
        );
    }

    #[test]
    fn flow_none_is_left_out_ipv6_is_bracketed_and_the_remark_encoded() {
        let link = vless_link(&LinkParts {
            flow: VlessFlow::None,
            host: "2001:db8::7",
            short_id: "",
            remark: "bob & co/é",
            ..parts()
        });
        assert!(!link.contains("flow="), "{link}");
        assert!(link.contains("@[2001:db8::7]:443?"), "{link}");
        assert!(link.contains("&sid=&"), "{link}");
        assert!(link.ends_with("#bob%20%26%20co%2F%C3%A9"), "{link}");
    }
}
