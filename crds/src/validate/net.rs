//! Network values: ports, http(s) URLs, VLESS user ids.

use std::fmt;

use super::{InvalidValue, string_newtype};

/// A TCP/UDP port, 1–65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(u16);

impl Port {
    /// Checks a number.
    pub fn new(number: i64) -> Result<Port, InvalidValue> {
        match u16::try_from(number) {
            Ok(port) if port > 0 => Ok(Port(port)),
            _ => Err(InvalidValue::new(
                format!("port {number} is out of range"),
                "write a port number from 1 to 65535, e.g. 443",
            )),
        }
    }

    /// The port number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> serde::Deserialize<'de> for Port {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number from 1 to 65535")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Port, E> {
                Port::new(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Port, E> {
                Port::new(i64::try_from(v).unwrap_or(i64::MAX)).map_err(E::custom)
            }
        }
        de.deserialize_u64(V)
    }
}

impl serde::Serialize for Port {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

impl schemars::JsonSchema for Port {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Port".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "integer", "format": "int32", "minimum": 1, "maximum": 65535 })
    }
}

/// An absolute `http://` or `https://` URL with a host (webhooks, probe targets,
/// git repositories over https).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HttpUrl(String);

impl HttpUrl {
    /// Parses a URL.
    pub fn parse(text: &str) -> Result<HttpUrl, InvalidValue> {
        let fix = "write an absolute http(s) URL, e.g. `https://example.com/path`";
        let rest = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
            .ok_or_else(|| {
                InvalidValue::new(
                    format!("`{text}` does not start with http:// or https://"),
                    fix,
                )
            })?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        let host = match host.rsplit_once(':') {
            Some((h, port)) if !h.ends_with(']') || host.starts_with('[') => {
                if !port.is_empty() && port.parse::<u16>().map_or(true, |p| p == 0) {
                    return Err(InvalidValue::new(
                        format!("`{text}` has an invalid port"),
                        fix,
                    ));
                }
                h
            }
            _ => host,
        };
        if host.is_empty() {
            return Err(InvalidValue::new(format!("`{text}` has no host"), fix));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidValue::new(
                format!("`{}` contains whitespace", text.escape_debug()),
                "percent-encode spaces as %20",
            ));
        }
        Ok(HttpUrl(text.to_owned()))
    }

    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_newtype!(
    HttpUrl,
    expecting = "an http(s) URL such as `https://example.com/`",
    schema = { "type": "string", "format": "uri", "pattern": "^https?://[^\\s/?#]+([/?#]\\S*)?$" }
);

/// A VLESS user id (a UUID). A credential: `Debug` and `Display` show only its
/// first 8 characters; [`VlessId::uuid`] gives the whole value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlessId(uuid::Uuid);

impl VlessId {
    /// Parses a UUID. The error never contains the value (it is a credential).
    pub fn parse(text: &str) -> Result<VlessId, InvalidValue> {
        uuid::Uuid::try_parse(text.trim()).map(VlessId).map_err(|_| {
            InvalidValue::new(
                format!("the id ({} characters, not shown) is not a UUID", text.chars().count()),
                "write 32 hex digits in the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (e.g. from `uuidgen`), or leave `id` out to have one generated",
            )
        })
    }

    /// A new random id.
    pub fn generate() -> VlessId {
        VlessId(uuid::Uuid::new_v4())
    }

    /// The whole id. Handle as a secret.
    pub fn uuid(&self) -> uuid::Uuid {
        self.0
    }

    /// The first 8 characters, safe for logs and status.
    pub fn masked(&self) -> String {
        let mut text = self.0.hyphenated().to_string();
        text.truncate(8);
        text.push('…');
        text
    }

    fn hyphenated(&self) -> String {
        self.0.hyphenated().to_string()
    }
}

impl fmt::Debug for VlessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VlessId({})", self.masked())
    }
}

impl fmt::Display for VlessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl<'de> serde::Deserialize<'de> for VlessId {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = VlessId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a UUID written as a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<VlessId, E> {
                VlessId::parse(v).map_err(E::custom)
            }
            // Any other scalar: refuse without echoing it (it may be a credential).
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<VlessId, E> {
                Err(E::custom(
                    "the id must be a quoted UUID string, not a number",
                ))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<VlessId, E> {
                Err(E::custom(
                    "the id must be a quoted UUID string, not a number",
                ))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<VlessId, E> {
                Err(E::custom(
                    "the id must be a quoted UUID string, not a number",
                ))
            }
        }
        de.deserialize_str(V)
    }
}

impl serde::Serialize for VlessId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hyphenated())
    }
}

impl schemars::JsonSchema for VlessId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "VlessId".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "uuid" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_bounded() {
        assert!(Port::new(0).is_err());
        assert!(Port::new(70000).is_err());
        assert_eq!(Port::new(443).unwrap().get(), 443);
    }

    #[test]
    fn urls_need_scheme_and_host() {
        assert!(HttpUrl::parse("https://example.com/x?y=1").is_ok());
        assert!(HttpUrl::parse("http://127.0.0.1:8080").is_ok());
        assert!(HttpUrl::parse("ftp://example.com").is_err());
        assert!(HttpUrl::parse("https:///path").is_err());
        assert!(HttpUrl::parse("https://a b").is_err());
    }

    #[test]
    fn vless_ids_never_show_the_value() {
        let e = VlessId::parse("secret-not-a-uuid").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
        let id = VlessId::parse("7d6a1b0e-3c1f-4b8e-9a57-2f0c1e5d9b41").unwrap();
        assert_eq!(format!("{id:?}"), "VlessId(7d6a1b0e…)");
    }
}
