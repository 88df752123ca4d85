//! Names: DNS-1123 names and labels, Kubernetes label keys and values, xray user keys.

use super::{InvalidValue, string_newtype};

/// Longest DNS-1123 subdomain (object names, hosts).
const MAX_DNS_NAME: usize = 253;
/// Longest DNS-1123 label, label value, or the name part of a label key.
const MAX_DNS_LABEL: usize = 63;

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_DNS_LABEL
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn dns_problem(text: &str, max: usize, dots: bool) -> Option<String> {
    if text.is_empty() {
        return Some("the name is empty".into());
    }
    if text.len() > max {
        return Some(format!(
            "`{text}` is {} characters long, more than {max}",
            text.len()
        ));
    }
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(format!("`{text}` contains upper-case letters"));
    }
    let ok = if dots {
        text.split('.').all(is_dns_label)
    } else {
        is_dns_label(text)
    };
    (!ok).then(|| format!("`{text}` is not a valid DNS-1123 name"))
}

/// A DNS-1123 subdomain: lower-case letters, digits, `-` and `.`, starting and
/// ending with a letter or digit, at most 253 characters (object names, hosts).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsName(String);

impl DnsName {
    /// Parses a DNS-1123 subdomain.
    pub fn parse(text: &str) -> Result<DnsName, InvalidValue> {
        match dns_problem(text, MAX_DNS_NAME, true) {
            None => Ok(DnsName(text.to_owned())),
            Some(problem) => Err(InvalidValue::new(
                problem,
                "use lower-case letters, digits, `-` and `.`, starting and ending with a letter or digit, at most 253 characters (e.g. `edge-1` or `www.example.com`)",
            )),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_newtype!(
    DnsName,
    expecting = "a DNS-1123 name such as `edge-1`",
    schema = {
        "type": "string",
        "maxLength": 253,
        "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    }
);

/// A DNS-1123 label: lower-case letters, digits and `-`, starting and ending
/// with a letter or digit, at most 63 characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsLabel(String);

impl DnsLabel {
    /// Parses a DNS-1123 label.
    pub fn parse(text: &str) -> Result<DnsLabel, InvalidValue> {
        match dns_problem(text, MAX_DNS_LABEL, false) {
            None => Ok(DnsLabel(text.to_owned())),
            Some(problem) => Err(InvalidValue::new(
                problem,
                "use lower-case letters, digits and `-`, starting and ending with a letter or digit, at most 63 characters (e.g. `ru-hosts`)",
            )),
        }
    }

    /// The label.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_newtype!(
    DnsLabel,
    expecting = "a DNS-1123 label such as `ru-hosts`",
    schema = {
        "type": "string",
        "maxLength": 63,
        "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    }
);

/// The name part of a label key, or a label value: letters, digits, `-`, `_`,
/// `.`, starting and ending with a letter or digit.
fn is_label_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A Kubernetes label key: an optional DNS-1123 prefix and `/`, then a name of at
/// most 63 letters, digits, `-`, `_`, `.` starting and ending with a letter or digit
/// (`region`, `veil.dev/role`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelKey(String);

impl LabelKey {
    /// Parses a label key.
    pub fn parse(text: &str) -> Result<LabelKey, InvalidValue> {
        let (prefix, name) = match text.split_once('/') {
            Some((prefix, name)) => (Some(prefix), name),
            None => (None, text),
        };
        let prefix_ok = prefix.is_none_or(|p| dns_problem(p, MAX_DNS_NAME, true).is_none());
        if prefix_ok && name.len() <= MAX_DNS_LABEL && is_label_name(name) {
            Ok(LabelKey(text.to_owned()))
        } else {
            Err(InvalidValue::new(
                format!("`{text}` is not a valid label key"),
                "write a name of at most 63 letters, digits, `-`, `_` or `.` that starts and ends with a letter or digit, optionally prefixed by a DNS name and `/` (e.g. `region` or `veil.dev/role`)",
            ))
        }
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_newtype!(
    LabelKey,
    expecting = "a label key such as `region` or `veil.dev/role`",
    schema = { "type": "string", "maxLength": 317 }
);

/// A Kubernetes label value: empty, or at most 63 letters, digits, `-`, `_`, `.`
/// starting and ending with a letter or digit.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelValue(String);

impl LabelValue {
    /// Parses a label value.
    pub fn parse(text: &str) -> Result<LabelValue, InvalidValue> {
        if text.is_empty() || (text.len() <= MAX_DNS_LABEL && is_label_name(text)) {
            Ok(LabelValue(text.to_owned()))
        } else {
            Err(InvalidValue::new(
                format!("`{text}` is not a valid label value"),
                "write at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit (e.g. `eu-west`), or an empty string",
            ))
        }
    }

    /// The value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_newtype!(
    LabelValue,
    expecting = "a label value such as `eu-west`",
    schema = {
        "type": "string",
        "maxLength": 63,
        "pattern": "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
    }
);

/// Longest xray user key accepted (xray itself has no limit; stats names embed it).
const MAX_EMAIL: usize = 256;

/// The user key xray knows a VLESS user by (its `email` field; stats are named
/// `user>>>EMAIL>>>traffic>>>uplink`). Not necessarily an e-mail address:
/// any non-empty text without whitespace and without `>>>`, at most 256 bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct XrayEmail(String);

impl XrayEmail {
    /// Parses a user key.
    pub fn parse(text: &str) -> Result<XrayEmail, InvalidValue> {
        let problem = if text.is_empty() {
            Some("the user key is empty".to_owned())
        } else if text.len() > MAX_EMAIL {
            Some(format!("the user key is longer than {MAX_EMAIL} bytes"))
        } else if text.chars().any(char::is_whitespace) {
            Some(format!("`{text}` contains whitespace"))
        } else if text.contains(">>>") {
            Some(format!(
                "`{text}` contains `>>>`, which xray uses to separate stats names"
            ))
        } else {
            None
        };
        match problem {
            None => Ok(XrayEmail(text.to_owned())),
            Some(problem) => Err(InvalidValue::new(
                problem,
                "write a short key without spaces, e.g. `alice@example.com` or `team.alice`",
            )),
        }
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

string_newtype!(
    XrayEmail,
    expecting = "a user key such as `alice@example.com`",
    schema = { "type": "string", "minLength": 1, "maxLength": 256, "pattern": "^\\S+$" }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_follow_rfc1123() {
        assert!(DnsName::parse("edge-1.example").is_ok());
        let upper = DnsName::parse("Edge").unwrap_err().to_string();
        assert!(upper.contains("upper-case"), "{upper}");
        assert!(DnsName::parse("-a").is_err());
        assert!(DnsName::parse(&"a".repeat(254)).is_err());
        assert!(DnsLabel::parse("a.b").is_err());
    }

    #[test]
    fn label_keys_and_values_follow_kubernetes() {
        assert!(LabelKey::parse("veil.dev/role").is_ok());
        assert!(LabelKey::parse("Region_1").is_ok());
        assert!(LabelKey::parse("/x").is_err());
        assert!(LabelKey::parse("a b").is_err());
        assert!(LabelValue::parse("").is_ok());
        assert!(LabelValue::parse("-x").is_err());
    }

    #[test]
    fn xray_emails_refuse_separators() {
        assert!(XrayEmail::parse("default.alice").is_ok());
        assert!(XrayEmail::parse("a>>>b").is_err());
        assert!(XrayEmail::parse("a b").is_err());
    }
}
