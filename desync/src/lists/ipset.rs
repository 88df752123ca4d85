//! Address sets (IPv4 and IPv6 prefixes).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use super::{ListError, entries, read_list};
use crate::args::ValueError;
use crate::spec::Cidr;

/// A set of IPv4/IPv6 prefixes. Lookup is one hash lookup per distinct
/// prefix length present, whatever the number of entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpMatcher {
    /// (prefix length, masked networks), one entry per length in use.
    v4: Vec<(u8, HashSet<u32>)>,
    v6: Vec<(u8, HashSet<u128>)>,
    len: usize,
}

impl IpMatcher {
    /// A matcher for the given prefixes.
    pub fn from_cidrs<'a>(cidrs: impl IntoIterator<Item = &'a Cidr>) -> IpMatcher {
        let mut m = IpMatcher::default();
        for c in cidrs {
            m.insert(*c);
        }
        m
    }

    /// Adds a prefix (host bits are ignored).
    pub fn insert(&mut self, cidr: Cidr) {
        let added = match cidr.addr {
            IpAddr::V4(a) => {
                let prefix = cidr.prefix.min(32);
                slot(&mut self.v4, prefix).insert(u32::from(a) & mask4(prefix))
            }
            IpAddr::V6(a) => {
                let prefix = cidr.prefix.min(128);
                slot(&mut self.v6, prefix).insert(u128::from(a) & mask6(prefix))
            }
        };
        self.len += usize::from(added);
    }

    /// Parses a list text (one address or CIDR per line).
    pub fn parse(text: &str, path: &Path) -> Result<IpMatcher, ListError> {
        let mut m = IpMatcher::default();
        for (line, entry) in entries(text) {
            let cidr =
                crate::args::parse_cidr(entry).map_err(|_: ValueError| ListError::BadLine {
                    path: path.to_owned(),
                    line,
                    text: entry.to_owned(),
                    expected: "an address or CIDR",
                })?;
            m.insert(cidr);
        }
        Ok(m)
    }

    /// Reads and parses a list file.
    pub fn load(path: &Path) -> Result<IpMatcher, ListError> {
        IpMatcher::parse(&read_list(path)?, path)
    }

    /// Number of distinct prefixes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set has no prefixes (nfqws then treats it as absent).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `addr` is inside one of the prefixes. An IPv4-mapped IPv6
    /// address is looked up as IPv4.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .iter()
                    .any(|(p, set)| set.contains(&(a & mask4(*p))))
            }
            IpAddr::V6(a) => {
                if let Some(v4) = a.to_ipv4_mapped() {
                    return self.contains(IpAddr::V4(v4));
                }
                let a = u128::from(a);
                self.v6
                    .iter()
                    .any(|(p, set)| set.contains(&(a & mask6(*p))))
            }
        }
    }
}

fn slot<T>(slots: &mut Vec<(u8, HashSet<T>)>, prefix: u8) -> &mut HashSet<T> {
    let i = match slots.iter().position(|(p, _)| *p == prefix) {
        Some(i) => i,
        None => {
            slots.push((prefix, HashSet::new()));
            slots.len() - 1
        }
    };
    &mut slots[i].1
}

fn mask4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_of_both_families() {
        let text = "# nets\n192.0.2.0/24\n198.51.100.7\n2001:db8::/32\n10.1.2.3/8\n0.0.0.0/0x\n";
        let err = IpMatcher::parse(text, Path::new("ips.txt")).unwrap_err();
        assert!(matches!(err, ListError::BadLine { line: 6, .. }), "{err}");

        let m = IpMatcher::parse(&text.replace("0.0.0.0/0x\n", ""), Path::new("ips.txt")).unwrap();
        assert_eq!(m.len(), 4);
        let cases = [
            ("192.0.2.200", true),
            ("192.0.3.1", false),
            ("198.51.100.7", true),
            ("198.51.100.8", false),
            ("10.200.0.1", true),
            ("2001:db8:1::5", true),
            ("2001:db9::1", false),
            ("::ffff:192.0.2.1", true),
        ];
        for (addr, expected) in cases {
            assert_eq!(m.contains(addr.parse().unwrap()), expected, "{addr}");
        }
    }

    #[test]
    fn zero_length_prefix_matches_its_whole_family() {
        let m = IpMatcher::from_cidrs(&[crate::args::parse_cidr("0.0.0.0/0").unwrap()]);
        assert!(m.contains("203.0.113.9".parse().unwrap()));
        assert!(!m.contains("2001:db8::1".parse().unwrap()));
    }
}
