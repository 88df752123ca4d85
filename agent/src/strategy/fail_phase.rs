//! Where a probe failed: stable names shown in status (`failPhase`) and
//! logs, so users and dashboards can match on them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The class of a failed probe (design §4d). The serialised form and
/// [`Display`](fmt::Display) are the variant names and never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailPhase {
    /// The target's name did not resolve.
    DnsError,
    /// No answer to the TCP SYN in time.
    ConnectTimeout,
    /// The connection was refused (RST to the SYN).
    ConnectRefused,
    /// The connection was reset right after the ClientHello.
    ResetAtHello,
    /// Nothing came back after the ClientHello.
    SilentDropAtHello,
    /// The TLS handshake ended with an alert.
    TlsAlert,
    /// The certificate did not verify (possibly a man in the middle).
    CertError,
    /// The body stalled after 14–22 KB (the "16–20 KB" freeze).
    Stall16K,
    /// The body stalled elsewhere.
    Stall,
    /// The connection was reset while the body was arriving.
    ResetMidStream,
    /// A block page or a redirect to another domain came back.
    Blockpage,
    /// An HTTP status that does not count as a pass (e.g. 451).
    HttpStatus,
    /// The whole probe took longer than `timeout`.
    Timeout,
}

impl FailPhase {
    /// Every phase, in declaration order.
    pub const ALL: [FailPhase; 13] = [
        FailPhase::DnsError,
        FailPhase::ConnectTimeout,
        FailPhase::ConnectRefused,
        FailPhase::ResetAtHello,
        FailPhase::SilentDropAtHello,
        FailPhase::TlsAlert,
        FailPhase::CertError,
        FailPhase::Stall16K,
        FailPhase::Stall,
        FailPhase::ResetMidStream,
        FailPhase::Blockpage,
        FailPhase::HttpStatus,
        FailPhase::Timeout,
    ];

    /// The stable name, e.g. `SilentDropAtHello`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailPhase::DnsError => "DnsError",
            FailPhase::ConnectTimeout => "ConnectTimeout",
            FailPhase::ConnectRefused => "ConnectRefused",
            FailPhase::ResetAtHello => "ResetAtHello",
            FailPhase::SilentDropAtHello => "SilentDropAtHello",
            FailPhase::TlsAlert => "TlsAlert",
            FailPhase::CertError => "CertError",
            FailPhase::Stall16K => "Stall16K",
            FailPhase::Stall => "Stall",
            FailPhase::ResetMidStream => "ResetMidStream",
            FailPhase::Blockpage => "Blockpage",
            FailPhase::HttpStatus => "HttpStatus",
            FailPhase::Timeout => "Timeout",
        }
    }
}

impl fmt::Display for FailPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_and_display_use_the_stable_names() {
        let names = [
            "DnsError",
            "ConnectTimeout",
            "ConnectRefused",
            "ResetAtHello",
            "SilentDropAtHello",
            "TlsAlert",
            "CertError",
            "Stall16K",
            "Stall",
            "ResetMidStream",
            "Blockpage",
            "HttpStatus",
            "Timeout",
        ];
        for (phase, name) in FailPhase::ALL.into_iter().zip(names) {
            assert_eq!(phase.to_string(), name);
            assert_eq!(
                serde_json::to_string(&phase).unwrap(),
                format!("\"{name}\"")
            );
            let back: FailPhase = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(back, phase);
        }
    }
}
