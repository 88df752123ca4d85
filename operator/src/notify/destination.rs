//! Where webhooks may go. By default a notification never reaches the
//! operator's own host or a private network: Schedule authors choose the
//! URLs, and the operator sits inside the cluster (a blind-POST SSRF
//! otherwise). Refused: loopback, RFC 1918, link-local (cloud metadata),
//! CGNAT, unspecified, broadcast and multicast IPv4; loopback, unspecified,
//! ULA, link-local and multicast IPv6 (and IPv4-mapped forms of the IPv4
//! ones). `--allow-private-webhooks` lifts the rule.
//!
//! Host names are checked after resolution ([`PublicOnly`]), so a name
//! that resolves to 127.0.0.1 is refused too; IP literals are checked
//! before the request ([`refused_literal`]). Redirects are never followed
//! and no proxy is used (a proxy would make the connection elsewhere).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is on the operator's host or a private network.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// The private IP literal `url` names, if it names one.
pub fn refused_literal(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    is_private(ip).then_some(ip)
}

/// A resolver that drops private addresses; a name with nothing else fails.
#[derive(Clone, Copy, Debug, Default)]
pub struct PublicOnly;

/// A name that resolves to private addresses only.
#[derive(Debug, thiserror::Error)]
#[error(
    "the webhook host resolves only to private or loopback addresses (allowed with --allow-private-webhooks)"
)]
pub struct PrivateOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = found.filter(|a| !is_private(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(PrivateOnly) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client for webhooks: no redirects, no proxy and, unless
/// `allow_private`, no private destinations.
pub fn webhook_client(allow_private: bool) -> Result<reqwest::Client, reqwest::Error> {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    let builder = if allow_private {
        builder
    } else {
        builder.dns_resolver(Arc::new(PublicOnly))
    };
    builder.build()
}
