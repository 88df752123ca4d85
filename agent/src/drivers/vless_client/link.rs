//! `vless://` share links as the agent reads them: the form v2rayN and the
//! operator write (`vless://ID@HOST:PORT?security=reality&sni=…&pbk=…#NAME`).
//! A link is a credential: errors name the part that is wrong, never the
//! link or the id.

use percent_encoding::percent_decode_str;

/// Why a link cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    #[error("the link does not start with `vless://`")]
    Scheme,
    #[error("the link has no `ID@` user part")]
    NoId,
    #[error("the link's user id is not a UUID")]
    BadId,
    #[error("the link has no `HOST:PORT`")]
    NoAddress,
    #[error("the link's port is not a number from 1 to 65535")]
    BadPort,
    #[error("the link's `security` is `{0}`; Veil's clients speak `reality`, `tls` or `none`")]
    Security(String),
    #[error("the link's transport `type` is `{0}`; Veil's clients speak `tcp`")]
    Transport(String),
    #[error("a reality link needs `pbk` (the server's public key)")]
    NoPublicKey,
}

/// How the connection to the server is secured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Security {
    None,
    Tls,
    Reality {
        public_key: String,
        short_id: String,
    },
}

/// What a client needs from a link.
#[derive(Clone, PartialEq, Eq)]
pub struct VlessLink {
    pub id: String,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `xtls-rprx-vision`, or empty.
    pub flow: String,
    pub security: Security,
    /// SNI (empty: none given).
    pub server_name: String,
    /// uTLS fingerprint (`chrome` when none is given).
    pub fingerprint: String,
}

impl std::fmt::Debug for VlessLink {
    /// Without the id: a link is a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VlessLink")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .finish_non_exhaustive()
    }
}

impl VlessLink {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<VlessLink, LinkError> {
        let rest = text
            .trim()
            .strip_prefix("vless://")
            .ok_or(LinkError::Scheme)?;
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        let (id, address) = authority.rsplit_once('@').ok_or(LinkError::NoId)?;
        let id = decode(id);
        if uuid::Uuid::parse_str(&id).is_err() {
            return Err(LinkError::BadId);
        }
        let (host, port) = split_host_port(address)?;
        let params: Vec<(String, String)> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (name.to_owned(), decode(value))
            })
            .collect();
        let param = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let transport = param("type");
        if !transport.is_empty() && transport != "tcp" && transport != "raw" {
            return Err(LinkError::Transport(transport));
        }
        let security = match param("security").as_str() {
            "" | "none" => Security::None,
            "tls" => Security::Tls,
            "reality" => {
                let public_key = param("pbk");
                if public_key.is_empty() {
                    return Err(LinkError::NoPublicKey);
                }
                Security::Reality {
                    public_key,
                    short_id: param("sid"),
                }
            }
            other => return Err(LinkError::Security(other.to_owned())),
        };
        let fingerprint = match param("fp") {
            fp if fp.is_empty() => "chrome".to_owned(),
            fp => fp,
        };
        Ok(VlessLink {
            id,
            host,
            port,
            flow: param("flow"),
            security,
            server_name: param("sni"),
            fingerprint,
        })
    }
}

fn decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// `host:port` or `[v6]:port`.
fn split_host_port(address: &str) -> Result<(String, u16), LinkError> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or(LinkError::NoAddress)?;
        (host, port)
    } else {
        address.rsplit_once(':').ok_or(LinkError::NoAddress)?
    };
    if host.is_empty() {
        return Err(LinkError::NoAddress);
    }
    let port: u16 = port.parse().map_err(|_| LinkError::BadPort)?;
    if port == 0 {
        return Err(LinkError::BadPort);
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    const ID: &str = "0b6e5c2a-3f4d-4e1b-9a8c-7d6e5f4a3b2c";

    #[test]
    fn a_reality_link_as_the_operator_writes_it() {
        let link = VlessLink::parse(&format!(
            "vless://{ID}@198.18.2.9:8443?encryption=none&flow=xtls-rprx-vision&security=reality&sni=allowed.test&fp=firefox&pbk=PUB_key-1&sid=ab12&spx=%2F&type=tcp#alice%20phone"
        ))
        .unwrap();
        assert_eq!(link.id, ID);
        assert_eq!((link.host.as_str(), link.port), ("198.18.2.9", 8443));
        assert_eq!(link.flow, "xtls-rprx-vision");
        assert_eq!(link.server_name, "allowed.test");
        assert_eq!(link.fingerprint, "firefox");
        assert_eq!(
            link.security,
            Security::Reality {
                public_key: "PUB_key-1".into(),
                short_id: "ab12".into()
            }
        );
        assert!(!format!("{link:?}").contains(ID), "Debug shows no id");
    }

    #[test]
    fn ipv6_tls_and_plain_links() {
        let link = VlessLink::parse(&format!(
            "vless://{ID}@[fd00::1]:443?security=tls&sni=a.test"
        ))
        .unwrap();
        assert_eq!((link.host.as_str(), link.port), ("fd00::1", 443));
        assert_eq!(link.security, Security::Tls);
        assert_eq!(link.fingerprint, "chrome");
        let plain = VlessLink::parse(&format!("vless://{ID}@example.test:80")).unwrap();
        assert_eq!(plain.security, Security::None);
    }

    #[test]
    fn bad_links_say_which_part_is_wrong_without_the_id() {
        let cases = [
            ("http://x".to_owned(), LinkError::Scheme),
            ("vless://example.test:443".to_owned(), LinkError::NoId),
            (
                "vless://not-a-uuid@example.test:443".to_owned(),
                LinkError::BadId,
            ),
            (format!("vless://{ID}@example.test"), LinkError::NoAddress),
            (format!("vless://{ID}@example.test:0"), LinkError::BadPort),
            (
                format!("vless://{ID}@example.test:443?security=xtls"),
                LinkError::Security("xtls".into()),
            ),
            (
                format!("vless://{ID}@example.test:443?type=ws"),
                LinkError::Transport("ws".into()),
            ),
            (
                format!("vless://{ID}@example.test:443?security=reality&sni=a"),
                LinkError::NoPublicKey,
            ),
        ];
        for (text, expected) in cases {
            let error = VlessLink::parse(&text).unwrap_err();
            assert_eq!(error, expected, "{text}");
            assert!(!error.to_string().contains(ID));
        }
    }
}
