//! The parts of a probe URL the runner needs (scheme, host, port, request
//! target) and the "same site" rule for redirects. Only what
//! `veil_crds::validate::HttpUrl` accepts has to parse here.

use super::ProbeError;

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

/// A parsed `http(s)://[user@]host[:port][/path][?query][#fragment]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProbeUrl {
    pub scheme: Scheme,
    /// The host without brackets, lower case (`example.com`, `::1`).
    pub host: String,
    pub port: u16,
    /// Path and query as sent in the request line (`/` when empty); the
    /// fragment is never sent.
    pub target: String,
}

impl ProbeUrl {
    pub(crate) fn parse(url: &str) -> Result<ProbeUrl, ProbeError> {
        let bad = |why: &str| ProbeError::Url {
            url: url.to_string(),
            reason: why.to_string(),
        };
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            return Err(bad("not http:// or https://"));
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let tail = tail.split('#').next().unwrap_or_default();
        let target = match tail {
            "" => "/".to_string(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_string(),
        };
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let default_port = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let (host, port) = if let Some(inner) = host_port.strip_prefix('[') {
            let (host, after) = inner.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("text after `]`")),
            };
            (host, port)
        } else {
            match host_port.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (host_port, None),
            }
        };
        let port = match port {
            None | Some("") => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("invalid port"))?,
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(ProbeUrl {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            target,
        })
    }

    /// The `Host` header value: the host, bracketed when IPv6, with the port
    /// unless it is the scheme's default.
    pub(crate) fn host_header(&self) -> String {
        let host = if self.host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = matches!(
            (self.scheme, self.port),
            (Scheme::Http, 80) | (Scheme::Https, 443)
        );
        if default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Whether a redirect to `location` stays on `host`'s site: a relative
/// location, the same host, or one host a subdomain of the other
/// (`youtube.com` → `www.youtube.com` and back). Anything else is a
/// redirect to another domain, which DPI uses for block pages.
pub(crate) fn same_site(host: &str, location: &str) -> bool {
    let location = location.trim();
    let rest = if let Some(rest) = location.strip_prefix("//") {
        rest
    } else if let Some((scheme, rest)) = location.split_once("://")
        && !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        rest
    } else {
        return true;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let other = if let Some(inner) = host_port.strip_prefix('[') {
        inner.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    let a = host.trim_end_matches('.').to_ascii_lowercase();
    let b = other.trim_end_matches('.').to_ascii_lowercase();
    a == b || a.ends_with(&format!(".{b}")) || b.ends_with(&format!(".{a}"))
}
