//! The join value `veil-operator token create` prints: everything an agent
//! needs to reach and trust the operator, in one string.
//!
//! Format: `veil-join-v1.` followed by the unpadded base64url encoding of a
//! JSON object
//!
//! ```json
//! {"url": "https://203.0.113.5:7070", "token": "veil_node_…", "caCertHash": "sha256:…"}
//! ```
//!
//! `url` is absent when the operator's address is not known (then the agent
//! needs `--operator`); `caCertHash` is absent only for an operator that
//! serves plain HTTP. The value holds the node token: treat it as a secret
//! (its `Debug` form hides the token).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::trust::CaPin;

/// Prefix of every join value (the version is part of it).
pub const JOIN_PREFIX: &str = "veil-join-v1.";

/// Why a join value cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "not a join value: it must start with `{JOIN_PREFIX}` (print one with `veil-operator token create --node NODE`)"
    )]
    Prefix,
    #[error("the join value is damaged ({0}); copy it again in full")]
    Damaged(String),
    #[error("the join value's CA hash: {0}")]
    Pin(#[from] crate::trust::TrustError),
}

/// A decoded join value.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinValue {
    /// Operator base URL, when known.
    pub url: Option<String>,
    /// The node token (secret).
    pub token: String,
    /// SHA-256 of the operator's CA certificate.
    pub ca_pin: Option<CaPin>,
}

impl std::fmt::Debug for JoinValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinValue")
            .field("url", &self.url)
            .field("ca_pin", &self.ca_pin)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Wire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_cert_hash: Option<String>,
}

impl JoinValue {
    /// Whether `text` looks like a join value (rather than a bare token).
    pub fn is_join_value(text: &str) -> bool {
        text.trim().starts_with(JOIN_PREFIX)
    }

    /// Decodes `veil-join-v1.<base64url JSON>`.
    pub fn parse(text: &str) -> Result<JoinValue, JoinError> {
        let encoded = text
            .trim()
            .strip_prefix(JOIN_PREFIX)
            .ok_or(JoinError::Prefix)?;
        let json = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|e| JoinError::Damaged(format!("not base64url: {e}")))?;
        // serde_json's message names the field, never the token's value.
        let wire: Wire = serde_json::from_slice(&json)
            .map_err(|e| JoinError::Damaged(format!("not the expected JSON: {e}")))?;
        if wire.token.trim().is_empty() {
            return Err(JoinError::Damaged("no token".to_owned()));
        }
        let ca_pin = wire.ca_cert_hash.as_deref().map(CaPin::parse).transpose()?;
        Ok(JoinValue {
            url: wire.url,
            token: wire.token,
            ca_pin,
        })
    }

    /// Encodes the value.
    pub fn encode(&self) -> String {
        let wire = Wire {
            url: self.url.clone(),
            token: self.token.clone(),
            ca_cert_hash: self.ca_pin.map(|pin| pin.to_string()),
        };
        // Serializing strings cannot fail.
        let json = serde_json::to_vec(&wire).unwrap_or_default();
        format!("{JOIN_PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin() -> CaPin {
        CaPin::of_der(b"a CA certificate")
    }

    #[test]
    fn a_join_value_round_trips() {
        let value = JoinValue {
            url: Some("https://203.0.113.5:7070".to_owned()),
            token: "veil_node_secret".to_owned(),
            ca_pin: Some(pin()),
        };
        let text = value.encode();
        assert!(text.starts_with(JOIN_PREFIX));
        assert!(!text.contains('='), "unpadded: {text}");
        assert_eq!(JoinValue::parse(&format!("  {text}\n")).unwrap(), value);
    }

    #[test]
    fn url_and_pin_are_optional() {
        let value = JoinValue {
            url: None,
            token: "t".to_owned(),
            ca_pin: None,
        };
        assert_eq!(JoinValue::parse(&value.encode()).unwrap(), value);
    }

    #[test]
    fn debug_hides_the_token() {
        let value = JoinValue {
            url: None,
            token: "veil_node_secret".to_owned(),
            ca_pin: Some(pin()),
        };
        assert!(!format!("{value:?}").contains("secret"));
    }

    #[test]
    fn damaged_values_are_refused_with_a_reason() {
        assert!(matches!(
            JoinValue::parse("veil_node_abc"),
            Err(JoinError::Prefix)
        ));
        let error = JoinValue::parse("veil-join-v1.!!!").unwrap_err();
        assert!(error.to_string().contains("not base64url"), "{error}");
        let bad_pin = format!(
            "{JOIN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(br#"{"token":"t","caCertHash":"md5:00"}"#)
        );
        let error = JoinValue::parse(&bad_pin).unwrap_err();
        assert!(error.to_string().contains("sha256:"), "{error}");
        let no_token = format!(
            "{JOIN_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(br#"{"token":" "}"#)
        );
        assert!(JoinValue::parse(&no_token).is_err());
    }
}
