//! Rendering the full xray configuration of one server.
//!
//! The config has one VLESS+Reality inbound (tag [`INBOUND_TAG`]) holding
//! every user, the gRPC API on loopback only, per-user traffic stats and the
//! policy of the spec. [`Rendered::infra_hash`] fingerprints everything but
//! the users: xray is restarted only when it changes; user changes go through
//! the API.
//!
//! Users are fenced off the node (see [`routing`]): destinations in the
//! fenced ranges (loopback, private, link-local, CGNAT, ULA, …) minus the
//! server's `allowCidrs` go to the blackhole, and so does anything whose
//! address is not known.

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use veil_crds::protocol_server::XrayPolicy;
use veil_crds::protocol_server::fence;
use veil_crds::validate::Cidr;
use veil_crds::wire::{ServerAssignment, VlessUser};

/// Tag of the VLESS inbound users are added to.
pub const INBOUND_TAG: &str = "vless-in";
/// Tag of the blackhole outbound: the default, and where fenced traffic goes.
pub const BLOCK_TAG: &str = "block";
/// Tag of the freedom outbound: public destinations.
pub const DIRECT_TAG: &str = "direct";

/// A rendered config: the JSON document and its fingerprint without users.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The complete config, users included (holds secrets: write it 0600).
    pub document: Vec<u8>,
    /// Hex SHA-256 of the config rendered with no users.
    pub infra_hash: String,
}

/// Renders the config for `server` with its API on `127.0.0.1:api_port` and
/// exactly `users` in the inbound.
pub fn render(server: &ServerAssignment, api_port: u16, users: &[&VlessUser]) -> Rendered {
    let mut infra = config(server, api_port);
    let infra_hash = hex_sha256(&serde_json::to_vec(&infra).unwrap_or_default());
    let document =
        serde_json::to_vec_pretty(&Document::new(&mut infra, server, users)).unwrap_or_default();
    Rendered {
        document,
        infra_hash,
    }
}

/// Everything but the users (the inbound's `clients` is empty): what
/// [`Rendered::infra_hash`] fingerprints.
fn config(server: &ServerAssignment, api_port: u16) -> Value {
    let vless = &server.vless;
    json!({
        // Access lines go to stdout (the driver reads them to know which
        // connection belongs to which user); errors to stderr.
        "log": { "loglevel": "warning", "access": "", "error": "/dev/stderr", "dnsLog": false },
        "api": {
            "tag": "api",
            "listen": format!("127.0.0.1:{api_port}"),
            "services": ["HandlerService", "StatsService"],
        },
        "stats": {},
        "policy": { "levels": { "0": policy_level(vless.policy.as_ref()) } },
        "inbounds": [{
            "tag": INBOUND_TAG,
            "listen": server.listen,
            "port": server.port,
            "protocol": "vless",
            "settings": { "clients": [], "decryption": "none" },
            "streamSettings": {
                "network": "tcp",
                "security": "reality",
                "realitySettings": {
                    "show": false,
                    "dest": vless.dest,
                    "xver": 0,
                    "serverNames": vless.server_names,
                    "privateKey": vless.private_key.expose(),
                    "shortIds": vless.short_ids,
                },
            },
            "sniffing": { "enabled": false },
        }],
        "routing": routing(&server.allow_cidrs),
        // The first outbound is the default: a connection no rule sends
        // elsewhere (a name that did not resolve) is closed.
        "outbounds": [
            { "protocol": "blackhole", "tag": BLOCK_TAG },
            { "protocol": "freedom", "tag": DIRECT_TAG },
        ],
    })
}

/// The whole document: the parts of [`config`] with the users serialized
/// straight from the assignment (100,000 users never become a JSON tree).
/// Fields in the order a JSON tree would print them.
#[derive(Serialize)]
struct Document<'a> {
    api: Value,
    inbounds: [Inbound<'a>; 1],
    log: Value,
    outbounds: Value,
    policy: Value,
    routing: Value,
    stats: Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Inbound<'a> {
    listen: &'a str,
    port: u16,
    protocol: &'static str,
    settings: Settings<'a>,
    sniffing: Value,
    stream_settings: Value,
    tag: &'static str,
}

#[derive(Serialize)]
struct Settings<'a> {
    clients: Vec<Client<'a>>,
    decryption: &'static str,
}

#[derive(Serialize)]
struct Client<'a> {
    email: &'a str,
    flow: &'static str,
    id: &'a str,
    level: u8,
}

impl<'a> Document<'a> {
    /// Takes the parts of `infra` (which is left emptied) and adds `users`.
    fn new(
        infra: &mut Value,
        server: &'a ServerAssignment,
        users: &[&'a VlessUser],
    ) -> Document<'a> {
        let mut take = |key: &str| infra.get_mut(key).map(Value::take).unwrap_or(Value::Null);
        let mut inbound = take("inbounds")
            .get_mut(0)
            .map(Value::take)
            .unwrap_or(Value::Null);
        let mut part = |key: &str| inbound.get_mut(key).map(Value::take).unwrap_or(Value::Null);
        let inbound = Inbound {
            listen: &server.listen,
            port: server.port,
            protocol: "vless",
            settings: Settings {
                clients: users
                    .iter()
                    .map(|user| Client {
                        email: &user.email,
                        flow: user.flow.xray_name(),
                        id: user.id.expose(),
                        level: 0,
                    })
                    .collect(),
                decryption: "none",
            },
            sniffing: part("sniffing"),
            stream_settings: part("streamSettings"),
            tag: INBOUND_TAG,
        };
        Document {
            api: take("api"),
            inbounds: [inbound],
            log: take("log"),
            outbounds: take("outbounds"),
            policy: take("policy"),
            routing: take("routing"),
            stats: take("stats"),
        }
    }
}

/// The fence in xray's routing (xray 26.3 semantics):
///
/// 1. destinations in the fenced ranges minus `allow` go to the blackhole
///    (plain CIDRs: no `geoip.dat` needed);
/// 2. so do the name `localhost` and its subdomains, unless `allow` covers
///    `127.0.0.1`;
/// 3. any other IP address goes out through freedom.
///
/// `domainStrategy: IPIfNonMatch` makes xray resolve a requested *name*
/// when no rule matched it as a name, and match its addresses again: a
/// name resolving to a fenced address is blocked (if any of its addresses
/// is fenced), and one that does not resolve matches nothing and falls to
/// the default outbound, the blackhole.
pub fn routing(allow: &[Cidr]) -> Value {
    let mut rules = vec![json!({
        "type": "field",
        "ruleTag": "fence",
        "ip": fence::blocked_ranges(allow),
        "outboundTag": BLOCK_TAG,
    })];
    if fence::fenced_destination("localhost", allow).is_some() {
        rules.push(json!({
            "type": "field",
            "ruleTag": "fence-localhost",
            "domain": ["domain:localhost"],
            "outboundTag": BLOCK_TAG,
        }));
    }
    rules.push(json!({
        "type": "field",
        "ruleTag": "public",
        "ip": ["0.0.0.0/0", "::/0"],
        "outboundTag": DIRECT_TAG,
    }));
    json!({ "domainStrategy": "IPIfNonMatch", "rules": rules })
}

fn policy_level(policy: Option<&XrayPolicy>) -> Value {
    let mut level = json!({
        "statsUserUplink": true,
        "statsUserDownlink": true,
        "statsUserOnline": true,
    });
    let Some(policy) = policy else {
        return level;
    };
    let seconds = [
        ("handshake", &policy.handshake),
        ("connIdle", &policy.conn_idle),
        ("uplinkOnly", &policy.uplink_only),
        ("downlinkOnly", &policy.downlink_only),
    ];
    if let Value::Object(map) = &mut level {
        for (name, value) in seconds {
            if let Some(duration) = value {
                map.insert(name.into(), duration.as_std().as_secs().into());
            }
        }
        if let Some(kib) = policy.buffer_size {
            map.insert("bufferSize".into(), kib.into());
        }
    }
    level
}

fn hex_sha256(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use veil_crds::protocol_server::VlessFlow;
    use veil_crds::wire::{SecretValue, ServerId, VlessAssignment};

    fn server() -> ServerAssignment {
        ServerAssignment {
            server: ServerId {
                namespace: "default".into(),
                name: "edge".into(),
            },
            listen: "127.0.0.1".into(),
            port: 8443,
            allow_cidrs: vec![],
            vless: VlessAssignment {
                private_key: SecretValue("cHJpdmF0ZQ".into()),
                dest: "127.0.0.1:9443".into(),
                server_names: vec!["dest.test".into()],
                short_ids: vec![String::new()],
                policy: None,
                users: Default::default(),
                users_hash: String::new(),
            },
        }
    }

    fn user(email: &str) -> VlessUser {
        VlessUser {
            email: email.into(),
            id: SecretValue("6f2a1c3e-0000-4000-8000-000000000001".into()),
            flow: VlessFlow::XtlsRprxVision,
        }
    }

    #[test]
    fn users_do_not_change_the_infra_hash() {
        let alice = user("alice");
        let bob = user("bob");
        let a = render(&server(), 10085, &[&alice]);
        let b = render(&server(), 10085, &[&alice, &bob]);
        assert_eq!(a.infra_hash, b.infra_hash);
        assert_ne!(a.document, b.document);
        let doc: Value = serde_json::from_slice(&b.document).unwrap();
        assert_eq!(doc["inbounds"][0]["settings"]["clients"][1]["email"], "bob");
    }

    #[test]
    fn the_document_is_the_infra_config_with_the_users_added() {
        let alice = user("alice");
        let document = render(&server(), 10085, &[&alice]).document;
        let parsed: Value = serde_json::from_slice(&document).unwrap();
        let mut expected = config(&server(), 10085);
        expected["inbounds"][0]["settings"]["clients"] = json!([{
            "email": "alice",
            "flow": alice.flow.xray_name(),
            "id": alice.id.expose(),
            "level": 0,
        }]);
        assert_eq!(parsed, expected);
    }

    #[test]
    fn settings_change_the_infra_hash() {
        let a = render(&server(), 10085, &[]);
        let mut other = server();
        other.vless.server_names.push("www.example.com".into());
        assert_ne!(a.infra_hash, render(&other, 10085, &[]).infra_hash);
        assert_ne!(a.infra_hash, render(&server(), 10086, &[]).infra_hash);
    }

    #[test]
    fn api_listens_on_loopback_only() {
        let doc: Value = serde_json::from_slice(&render(&server(), 10085, &[]).document).unwrap();
        assert_eq!(doc["api"]["listen"], "127.0.0.1:10085");
    }

    fn rendered(server: &ServerAssignment) -> Value {
        serde_json::from_slice(&render(server, 10085, &[]).document).unwrap()
    }

    #[test]
    fn fenced_destinations_go_to_the_blackhole_which_is_the_default() {
        let doc = rendered(&server());
        assert_eq!(doc["outbounds"][0]["tag"], BLOCK_TAG, "default outbound");
        assert_eq!(doc["outbounds"][0]["protocol"], "blackhole");
        assert_eq!(doc["outbounds"][1]["protocol"], "freedom");
        let routing = &doc["routing"];
        assert_eq!(routing["domainStrategy"], "IPIfNonMatch");
        let rules = routing["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 3, "{routing}");
        assert_eq!(rules[0]["outboundTag"], BLOCK_TAG);
        let blocked: Vec<&str> = rules[0]["ip"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for range in [
            "127.0.0.0/8",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "169.254.0.0/16",
            "100.64.0.0/10",
            "0.0.0.0/8",
            "::1/128",
            "fc00::/7",
            "fe80::/10",
        ] {
            assert!(blocked.contains(&range), "{range} not blocked: {blocked:?}");
        }
        assert!(blocked.iter().all(|b| !b.starts_with("geoip:")));
        assert_eq!(rules[1]["domain"], json!(["domain:localhost"]));
        assert_eq!(rules[1]["outboundTag"], BLOCK_TAG);
        assert_eq!(rules[2]["ip"], json!(["0.0.0.0/0", "::/0"]));
        assert_eq!(rules[2]["outboundTag"], DIRECT_TAG);
    }

    #[test]
    fn allow_cidrs_open_exactly_their_hole_and_change_the_infra_hash() {
        let mut allowed = server();
        allowed.allow_cidrs = vec!["127.0.0.2/32".parse().unwrap()];
        let doc = rendered(&allowed);
        let blocked = doc["routing"]["rules"][0]["ip"].as_array().unwrap();
        assert!(blocked.contains(&json!("127.0.0.0/31")));
        assert!(blocked.contains(&json!("127.0.0.3/32")));
        assert!(!blocked.contains(&json!("127.0.0.0/8")));
        assert!(!blocked.contains(&json!("127.0.0.2/32")));
        assert!(blocked.contains(&json!("10.0.0.0/8")));
        // `localhost` stays blocked: it means 127.0.0.1, not 127.0.0.2.
        assert_eq!(
            doc["routing"]["rules"][1]["domain"],
            json!(["domain:localhost"])
        );
        assert_ne!(
            render(&allowed, 10085, &[]).infra_hash,
            render(&server(), 10085, &[]).infra_hash
        );

        let mut loopback = server();
        loopback.allow_cidrs = vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let rules = rendered(&loopback)["routing"]["rules"].clone();
        assert_eq!(
            rules.as_array().unwrap().len(),
            2,
            "no localhost rule: {rules}"
        );
    }

    #[test]
    fn policy_fields_are_whole_seconds() {
        let mut s = server();
        s.vless.policy = Some(XrayPolicy {
            handshake: Some("4s".parse().unwrap()),
            conn_idle: Some("5m".parse().unwrap()),
            buffer_size: Some(4),
            ..XrayPolicy::default()
        });
        let doc: Value = serde_json::from_slice(&render(&s, 1, &[]).document).unwrap();
        let level = &doc["policy"]["levels"]["0"];
        assert_eq!(level["handshake"], 4);
        assert_eq!(level["connIdle"], 300);
        assert_eq!(level["bufferSize"], 4);
        assert_eq!(level["statsUserUplink"], true);
    }
}
