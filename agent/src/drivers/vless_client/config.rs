//! The client programs' config files for one VLESS Strategy: a SOCKS5
//! inbound on `127.0.0.1:PORT` (no auth; only this node reaches it) and
//! one VLESS outbound to the link's server. Pure: JSON out, nothing
//! written. The files hold the link's id, so the driver writes them 0600.
//!
//! Field names follow each program's documented config format (xray-core
//! `inbounds`/`outbounds` with `streamSettings.realitySettings`; sing-box
//! `inbounds`/`outbounds` with `tls.reality`).

use serde_json::{Value, json};

use super::link::{Security, VlessLink};

/// xray-core's config.
pub fn xray(link: &VlessLink, socks_port: u16) -> Value {
    let mut user = json!({"id": link.id, "encryption": "none"});
    if !link.flow.is_empty() {
        user["flow"] = json!(link.flow);
    }
    let mut stream = json!({"network": "tcp"});
    match &link.security {
        Security::None => {}
        Security::Tls => {
            stream["security"] = json!("tls");
            stream["tlsSettings"] = json!({
                "serverName": link.server_name,
                "fingerprint": link.fingerprint,
            });
        }
        Security::Reality {
            public_key,
            short_id,
        } => {
            stream["security"] = json!("reality");
            stream["realitySettings"] = json!({
                "serverName": link.server_name,
                "fingerprint": link.fingerprint,
                "publicKey": public_key,
                "shortId": short_id,
            });
        }
    }
    json!({
        "log": {"loglevel": "warning"},
        "inbounds": [{
            "tag": "socks",
            "listen": "127.0.0.1",
            "port": socks_port,
            "protocol": "socks",
            "settings": {"auth": "noauth", "udp": false},
        }],
        "outbounds": [{
            "tag": "vless",
            "protocol": "vless",
            "settings": {"vnext": [{"address": link.host, "port": link.port, "users": [user]}]},
            "streamSettings": stream,
        }],
    })
}

/// sing-box's config.
pub fn sing_box(link: &VlessLink, socks_port: u16) -> Value {
    let mut outbound = json!({
        "type": "vless",
        "tag": "vless",
        "server": link.host,
        "server_port": link.port,
        "uuid": link.id,
    });
    if !link.flow.is_empty() {
        outbound["flow"] = json!(link.flow);
    }
    let tls = |extra: Option<Value>| {
        let mut tls = json!({
            "enabled": true,
            "server_name": link.server_name,
            "utls": {"enabled": true, "fingerprint": link.fingerprint},
        });
        if let Some(reality) = extra {
            tls["reality"] = reality;
        }
        tls
    };
    match &link.security {
        Security::None => {}
        Security::Tls => outbound["tls"] = tls(None),
        Security::Reality {
            public_key,
            short_id,
        } => {
            outbound["tls"] = tls(Some(json!({
                "enabled": true,
                "public_key": public_key,
                "short_id": short_id,
            })));
        }
    }
    json!({
        "log": {"level": "warn"},
        "inbounds": [{
            "type": "socks",
            "tag": "socks",
            "listen": "127.0.0.1",
            "listen_port": socks_port,
        }],
        "outbounds": [outbound],
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn link(security: &str) -> VlessLink {
        VlessLink::parse(&format!(
            "vless://0b6e5c2a-3f4d-4e1b-9a8c-7d6e5f4a3b2c@198.18.2.9:8443?flow=xtls-rprx-vision&{security}&sni=allowed.test&fp=chrome&type=tcp"
        ))
        .unwrap()
    }

    #[test]
    fn xray_gets_a_local_socks_inbound_and_a_reality_outbound() {
        let config = xray(&link("security=reality&pbk=PUB&sid=ab"), 10808);
        let inbound = &config["inbounds"][0];
        assert_eq!(inbound["listen"], "127.0.0.1");
        assert_eq!(inbound["port"], 10808);
        assert_eq!(inbound["protocol"], "socks");
        let outbound = &config["outbounds"][0];
        let server = &outbound["settings"]["vnext"][0];
        assert_eq!(server["address"], "198.18.2.9");
        assert_eq!(server["port"], 8443);
        assert_eq!(server["users"][0]["flow"], "xtls-rprx-vision");
        let stream = &outbound["streamSettings"];
        assert_eq!(stream["security"], "reality");
        assert_eq!(stream["realitySettings"]["publicKey"], "PUB");
        assert_eq!(stream["realitySettings"]["shortId"], "ab");
        assert_eq!(stream["realitySettings"]["serverName"], "allowed.test");
    }

    #[test]
    fn sing_box_gets_the_same_server_in_its_own_words() {
        let config = sing_box(&link("security=reality&pbk=PUB&sid=ab"), 10809);
        assert_eq!(config["inbounds"][0]["type"], "socks");
        assert_eq!(config["inbounds"][0]["listen_port"], 10809);
        let outbound = &config["outbounds"][0];
        assert_eq!(outbound["server"], "198.18.2.9");
        assert_eq!(outbound["server_port"], 8443);
        assert_eq!(outbound["uuid"], "0b6e5c2a-3f4d-4e1b-9a8c-7d6e5f4a3b2c");
        assert_eq!(outbound["tls"]["reality"]["public_key"], "PUB");
        assert_eq!(outbound["tls"]["utls"]["fingerprint"], "chrome");

        let plain = sing_box(&link("security=none"), 10809);
        assert!(plain["outbounds"][0].get("tls").is_none());
        let tls = xray(&link("security=tls"), 10808);
        assert_eq!(tls["outbounds"][0]["streamSettings"]["security"], "tls");
    }
}
