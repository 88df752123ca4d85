//! IP address ranges in CIDR notation (`10.0.0.0/8`, `fd00::/8`).

use std::net::IpAddr;

use super::{InvalidValue, string_newtype};

/// An IPv4 or IPv6 range written `ADDRESS/PREFIX` with no host bits set
/// (`10.0.0.0/8`, `127.0.0.2/32`, `fd00:1::/32`). IPv4-mapped IPv6 ranges
/// (`::ffff:a.b.c.d/…`) are refused: write the IPv4 form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    text: String,
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDRESS/PREFIX`.
    pub fn parse(text: &str) -> Result<Cidr, InvalidValue> {
        let fix = "write an address range like `10.0.0.0/8`, `127.0.0.2/32` or `fd00::/8`";
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| InvalidValue::new(format!("`{text}` has no `/PREFIX`"), fix))?;
        let network: IpAddr = address
            .parse()
            .map_err(|_| InvalidValue::new(format!("`{address}` is not an IP address"), fix))?;
        if let IpAddr::V6(v6) = network
            && v6.to_ipv4_mapped().is_some()
        {
            return Err(InvalidValue::new(
                format!("`{text}` is an IPv4-mapped IPv6 range"),
                "write the IPv4 range instead, e.g. `127.0.0.2/32`",
            ));
        }
        let bits = family_bits(network);
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| u32::from(*p) <= bits)
            .ok_or_else(|| {
                InvalidValue::new(
                    format!("`/{prefix}` is not a prefix length from 0 to {bits}"),
                    fix,
                )
            })?;
        let cidr = Cidr {
            text: text.to_owned(),
            network,
            prefix,
        };
        if cidr.first() != as_u128(network) {
            return Err(InvalidValue::new(
                format!("`{text}` has host bits set"),
                format!(
                    "write the range's first address, `{}/{prefix}`",
                    from_u128(network, cidr.first())
                ),
            ));
        }
        Ok(cidr)
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The range's first address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True when `ip` (IPv4-mapped IPv6 counts as IPv4) lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4()
            && (self.first()..=self.last()).contains(&as_u128(ip))
    }

    /// First address as a number in its family's space.
    pub(crate) fn first(&self) -> u128 {
        as_u128(self.network) & !self.host_mask()
    }

    /// Last address as a number in its family's space.
    pub(crate) fn last(&self) -> u128 {
        self.first() | self.host_mask()
    }

    fn host_mask(&self) -> u128 {
        span(family_bits(self.network) - u32::from(self.prefix))
    }

    /// The range `first..=last` (inclusive, in the family of `like`) as the
    /// fewest CIDR blocks, each `ADDRESS/PREFIX`.
    pub(crate) fn blocks(like: IpAddr, mut first: u128, last: u128) -> Vec<String> {
        let bits = family_bits(like);
        let mut blocks = Vec::new();
        loop {
            // The largest aligned block starting at `first` that ends by `last`.
            let mut size_bits = first.trailing_zeros().min(bits);
            while size_bits > 0 && first.saturating_add(span(size_bits)) > last {
                size_bits -= 1;
            }
            let end = first.saturating_add(span(size_bits));
            blocks.push(format!("{}/{}", from_u128(like, first), bits - size_bits));
            if end >= last {
                return blocks;
            }
            first = end + 1;
        }
    }
}

/// The last offset of a block of `2^bits` addresses.
fn span(bits: u32) -> u128 {
    1u128.checked_shl(bits).map_or(u128::MAX, |b| b - 1)
}

fn family_bits(ip: IpAddr) -> u32 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn as_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(like: IpAddr, value: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(u32::try_from(value).unwrap_or(u32::MAX).into()),
        IpAddr::V6(_) => IpAddr::V6(value.into()),
    }
}

string_newtype!(
    Cidr,
    expecting = "an address range such as `10.0.0.0/8` or `fd00::/8`",
    schema = { "type": "string", "pattern": "^[0-9A-Fa-f:.]+/[0-9]{1,3}$" }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_with_clear_errors() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.200.1.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        let host_bits = Cidr::parse("10.1.2.3/8").unwrap_err().to_string();
        assert!(host_bits.contains("`10.0.0.0/8`"), "{host_bits}");
        assert!(
            Cidr::parse("10.0.0.0")
                .unwrap_err()
                .to_string()
                .contains("no `/PREFIX`")
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("::/129").is_err());
        assert!(Cidr::parse("example.com/8").is_err());
        assert!(Cidr::parse("::ffff:127.0.0.0/104").is_err());
    }

    #[test]
    fn ranges_split_into_fewest_blocks() {
        let v4: IpAddr = "0.0.0.0".parse().unwrap();
        let c = Cidr::parse("127.0.0.0/8").unwrap();
        assert_eq!(Cidr::blocks(v4, c.first(), c.last()), ["127.0.0.0/8"]);
        // 127.0.0.0 – 127.0.0.1 and 127.0.0.3 – 127.255.255.255.
        let two = Cidr::parse("127.0.0.2/32").unwrap().first();
        assert_eq!(Cidr::blocks(v4, c.first(), two - 1), ["127.0.0.0/31"]);
        let above = Cidr::blocks(v4, two + 1, c.last());
        assert_eq!(above.first().unwrap(), "127.0.0.3/32");
        assert_eq!(above.last().unwrap(), "127.128.0.0/9");
        assert_eq!(above.len(), 23);
        let v6: IpAddr = "::".parse().unwrap();
        assert_eq!(Cidr::blocks(v6, 0, u128::MAX), ["::/0"]);
        assert_eq!(Cidr::blocks(v4, 0, u128::from(u32::MAX)), ["0.0.0.0/0"]);
    }
}
