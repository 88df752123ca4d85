//! From what a probe observed to its [`FailPhase`]: a pure function over
//! [`Observed`], so every rule is pinned by a table test.

use std::ops::RangeInclusive;
use std::time::Duration;

use super::super::FailPhase;

/// Server bytes on the connection (TCP payload, TLS handshake and record
/// framing included) at which a stall counts as the "16–20 KB" freeze:
/// 14–22 KiB, Flowseal's window. TSPU-like DPI counts the server's stream
/// from its first byte and freezes after 16–20 KB; a segment in flight at
/// the freeze may be lost, and Flowseal's wider window leaves room for that.
/// Body bytes would be a poor measure: they arrive in whole TLS records, so
/// at a freeze after 16–20 KB of stream a client has decrypted anywhere
/// from 0 to 20 KB of body, depending on the server's record sizes.
pub const STALL_16K_STREAM_BYTES: RangeInclusive<u64> = 14 * 1024..=22 * 1024;

/// The longest a stall may last before it counts: `min(timeout / 2, 5 s)`
/// (design §4d), so a stall is told from a slow but moving download.
pub fn stall_window(timeout: Duration) -> Duration {
    (timeout / 2).min(Duration::from_secs(5))
}

/// How far a probe got before it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Looking the name up.
    Resolve,
    /// TCP connect.
    Connect,
    /// TLS handshake, from the ClientHello on.
    Handshake,
    /// Request sent; reading the response head and body.
    Response,
}

/// How a probe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The name did not resolve.
    DnsFailed,
    /// `ECONNREFUSED`.
    Refused,
    /// `ECONNRESET` (or a broken pipe / aborted connection).
    Reset,
    /// The server closed (FIN) before the probe had what it needed.
    Closed,
    /// Another socket error (e.g. network unreachable).
    OtherIo,
    /// The peer sent a TLS alert, or broke the TLS protocol.
    TlsAlert,
    /// The certificate did not verify against the trusted roots.
    CertInvalid,
    /// The response was not HTTP/1.x.
    Malformed,
    /// No server byte arrived for the [`stall_window`].
    Stalled,
    /// The overall `timeout` passed.
    Deadline,
    /// A whole head came back; `status` decides.
    Answered {
        status: u16,
        /// A `Location` pointing at another site.
        off_site_redirect: bool,
    },
}

/// The facts the verdict is drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub stage: Stage,
    pub ending: Ending,
    /// Server bytes received on the connection so far (see
    /// [`STALL_16K_STREAM_BYTES`]).
    pub server_bytes: u64,
}

/// `None` for a pass, else where the probe failed.
///
/// An answered probe passes on 2xx and on a 3xx that stays on the site
/// (the caller only reports `Answered` with a passing status once the body
/// rule is met). 451 and a redirect to another site are `Blockpage`; any
/// other status is `HttpStatus`. A reset or a close is `ResetAtHello`
/// before the TLS handshake completed and `ResetMidStream` after it.
/// Nothing from the server after the ClientHello until the deadline is
/// `SilentDropAtHello`; a deadline with some answer is `Timeout`.
pub fn classify(o: Observed) -> Option<FailPhase> {
    use Ending as E;
    use FailPhase as F;
    use Stage as S;
    Some(match (o.stage, o.ending) {
        (_, E::Answered { status: 451, .. }) => F::Blockpage,
        (
            _,
            E::Answered {
                status,
                off_site_redirect,
            },
        ) => match status {
            200..=299 => return None,
            300..=399 if off_site_redirect => F::Blockpage,
            300..=399 => return None,
            _ => F::HttpStatus,
        },
        (_, E::DnsFailed) => F::DnsError,
        (_, E::Refused) => F::ConnectRefused,
        (S::Resolve | S::Connect, E::Deadline | E::OtherIo | E::Reset | E::Closed) => {
            F::ConnectTimeout
        }
        (S::Handshake, E::Deadline) if o.server_bytes == 0 => F::SilentDropAtHello,
        (_, E::Deadline) => F::Timeout,
        (_, E::TlsAlert) => F::TlsAlert,
        (_, E::CertInvalid) => F::CertError,
        (S::Handshake, E::Reset | E::Closed | E::OtherIo) => F::ResetAtHello,
        (_, E::Reset | E::Closed | E::OtherIo) => F::ResetMidStream,
        (_, E::Stalled) if STALL_16K_STREAM_BYTES.contains(&o.server_bytes) => F::Stall16K,
        (_, E::Stalled) => F::Stall,
        (_, E::Malformed) => F::HttpStatus,
    })
}
