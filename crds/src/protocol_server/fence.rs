//! The fence around a node: destinations that a protocol server's users
//! (and a Reality `dest`) may not reach unless `spec.allowCidrs` opens them.
//!
//! The fenced ranges are the node itself (loopback, `0.0.0.0/8`, `::`),
//! private networks (RFC 1918, CGNAT, IPv6 ULA), link-local addresses
//! (cloud metadata at `169.254.169.254`, `fe80::/10`), multicast and the
//! reserved IPv4 block. [`blocked_ranges`] is the list the agent renders into
//! xray's routing; [`fenced_destination`] checks a literal address or the
//! name `localhost`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::validate::Cidr;

/// Every fenced range with what it is, in the order xray gets them.
pub const FENCED: &[(&str, &str)] = &[
    ("0.0.0.0/8", "the node itself"),
    ("10.0.0.0/8", "private network"),
    ("100.64.0.0/10", "carrier-grade NAT"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private network"),
    ("192.168.0.0/16", "private network"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "the node itself"),
    ("::1/128", "loopback"),
    ("fc00::/7", "unique local, private network"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
];

/// Why `ip` is fenced (`"loopback"`, `"private network"`, …), or `None` when it is
/// a public address. IPv4-mapped IPv6 addresses count as IPv4.
pub fn fence_reason(ip: IpAddr) -> Option<&'static str> {
    fenced_ranges()
        .find(|(cidr, _)| cidr.contains(ip))
        .map(|(_, what)| what)
}

/// A destination that the fence refuses: a fenced address not covered by
/// `allow`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fenced {
    /// The address (`127.0.0.1` for the name `localhost`).
    pub address: IpAddr,
    /// What kind of range it is in (`"loopback"`, `"private network"`, …).
    pub what: &'static str,
}

/// Checks a destination host: a literal IP address (`[…]` brackets allowed)
/// or a name. The name `localhost` (and `*.localhost`, with or without a
/// final dot) means `127.0.0.1` and `::1`; other names are not resolved
/// here (the agent's xray resolves them before it connects). `Some` when the
/// host is fenced and `allow` does not cover it.
pub fn fenced_destination(host: &str, allow: &[Cidr]) -> Option<Fenced> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let addresses: Vec<IpAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![ip.to_canonical()],
        Err(_) if is_localhost(bare) => vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
        Err(_) => return None,
    };
    addresses.into_iter().find_map(|address| {
        let what = fence_reason(address)?;
        (!allow.iter().any(|cidr| cidr.contains(address))).then_some(Fenced { address, what })
    })
}

/// True for `localhost`, `*.localhost` and either with a final dot
/// (RFC 6761: they all mean the node itself).
pub fn is_localhost(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// The fenced ranges minus `allow`, as the fewest `ADDRESS/PREFIX` blocks:
/// what xray's routing sends to the blackhole.
pub fn blocked_ranges(allow: &[Cidr]) -> Vec<String> {
    let mut blocks = Vec::new();
    for (fenced, _) in fenced_ranges() {
        // Pieces of `fenced` still blocked, as inclusive number ranges.
        let mut pieces = vec![(fenced.first(), fenced.last())];
        for hole in allow
            .iter()
            .filter(|c| c.network().is_ipv4() == fenced.network().is_ipv4())
        {
            pieces = pieces
                .into_iter()
                .flat_map(|(first, last)| subtract(first, last, hole.first(), hole.last()))
                .collect();
        }
        for (first, last) in pieces {
            blocks.extend(Cidr::blocks(fenced.network(), first, last));
        }
    }
    blocks
}

/// `first..=last` without `hole_first..=hole_last`: zero, one or two ranges.
fn subtract(first: u128, last: u128, hole_first: u128, hole_last: u128) -> Vec<(u128, u128)> {
    if hole_last < first || hole_first > last {
        return vec![(first, last)];
    }
    let mut left = Vec::with_capacity(2);
    if hole_first > first {
        left.push((first, hole_first - 1));
    }
    if hole_last < last {
        left.push((hole_last + 1, last));
    }
    left
}

fn fenced_ranges() -> impl Iterator<Item = (Cidr, &'static str)> {
    FENCED
        .iter()
        .filter_map(|(text, what)| Cidr::parse(text).ok().map(|cidr| (cidr, *what)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    #[test]
    fn every_fenced_range_parses() {
        assert_eq!(fenced_ranges().count(), FENCED.len());
    }

    #[test]
    fn node_private_and_metadata_addresses_are_fenced() {
        for (host, what) in [
            ("127.0.0.1", "loopback"),
            ("127.1.2.3", "loopback"),
            ("0.0.0.0", "the node itself"),
            ("10.20.30.40", "private network"),
            ("172.31.255.255", "private network"),
            ("192.168.1.1", "private network"),
            ("169.254.169.254", "link-local (cloud metadata)"),
            ("100.100.100.200", "carrier-grade NAT"),
            ("[::1]", "loopback"),
            ("::", "the node itself"),
            ("fd00:ec2::254", "unique local, private network"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("localhost", "loopback"),
            ("LocalHost.", "loopback"),
            ("api.localhost", "loopback"),
        ] {
            let fenced = fenced_destination(host, &[]);
            assert_eq!(fenced.map(|f| f.what), Some(what), "{host}");
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "www.microsoft.com",
            "notlocalhost",
        ] {
            assert_eq!(fenced_destination(public, &[]), None, "{public}");
        }
    }

    #[test]
    fn allow_cidrs_open_exactly_what_they_cover() {
        let allow = cidrs(&["127.0.0.2/32", "10.1.0.0/16"]);
        assert_eq!(fenced_destination("127.0.0.2", &allow), None);
        assert_eq!(fenced_destination("10.1.200.3", &allow), None);
        assert!(fenced_destination("127.0.0.1", &allow).is_some());
        assert!(fenced_destination("10.2.0.1", &allow).is_some());
        // `localhost` is 127.0.0.1 and ::1: both must be allowed.
        assert!(fenced_destination("localhost", &cidrs(&["127.0.0.1/32"])).is_some());
        assert_eq!(
            fenced_destination("localhost", &cidrs(&["127.0.0.0/8", "::1/128"])),
            None
        );
    }

    #[test]
    fn blocked_ranges_leave_out_only_allowed_holes() {
        let all: Vec<String> = FENCED.iter().map(|(c, _)| (*c).to_owned()).collect();
        assert_eq!(blocked_ranges(&[]), all);
        let blocked = blocked_ranges(&cidrs(&["127.0.0.2/32", "10.0.0.0/8", "8.8.8.0/24"]));
        assert!(!blocked.contains(&"10.0.0.0/8".to_owned()));
        assert!(!blocked.iter().any(|b| b.starts_with("10.")), "{blocked:?}");
        assert!(blocked.contains(&"127.0.0.0/31".to_owned()));
        assert!(blocked.contains(&"127.0.0.3/32".to_owned()));
        assert!(blocked.contains(&"127.128.0.0/9".to_owned()));
        assert!(blocked.contains(&"::1/128".to_owned()));
        // Every address of the fenced ranges is blocked except the holes.
        let blocked = cidrs(&blocked.iter().map(String::as_str).collect::<Vec<_>>());
        for probe in [
            "127.0.0.1",
            "127.0.0.3",
            "127.255.255.255",
            "169.254.169.254",
            "::1",
        ] {
            let ip: IpAddr = probe.parse().unwrap();
            assert!(blocked.iter().any(|c| c.contains(ip)), "{probe}");
        }
        for open in ["127.0.0.2", "10.9.8.7", "8.8.8.8"] {
            let ip: IpAddr = open.parse().unwrap();
            assert!(!blocked.iter().any(|c| c.contains(ip)), "{open}");
        }
    }
}
