//! Value syntaxes of nfqws v1 options, parsed without any file access:
//! port filters, protocol lists, desync modes, split positions, fooling,
//! limits, integers, hex strings, addresses. Each function accepts what
//! nfqws accepts (stricter only where nfqws would silently misread, e.g.
//! trailing garbage after a number) and says what it expected otherwise.

use std::net::IpAddr;

use crate::spec::{Cidr, IpFamily, L7, Limit, Marker, PortFilter, SplitPos};

/// Why a value was refused; the message says what is expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("empty value")]
    Empty,
    #[error("`{item}` is not a port filter item; expected PORT, LOW-HIGH (0..65535) or `*`")]
    Ports { item: String },
    #[error(
        "`~` must negate a single port or range (nfqws ORs the items, so `~` in a list of several matches almost every port)"
    )]
    NegatedList,
    #[error("`{item}` is not an L3 protocol; expected ipv4 and/or ipv6")]
    L3 { item: String },
    #[error(
        "`{item}` is not an L7 protocol; expected http, tls, quic, wireguard, dht, discord, stun or unknown"
    )]
    L7 { item: String },
    #[error(
        "`{mode}` is not a desync mode; modes: fake, fakeknown, rst, rstack, synack, syndata, multisplit, multidisorder, fakedsplit, fakeddisorder, hostfakesplit, ipfrag1, ipfrag2, hopbyhop, destopt, udplen, tamper"
    )]
    DesyncMode { mode: String },
    #[error(
        "invalid mode combination: {reason}; write [synack|syndata,]FIRST[,SECOND] with at most one fake-like mode (fake, fakeknown, rst, rstack, hopbyhop, destopt, ipfrag1) followed by one split mode"
    )]
    DesyncCombo { reason: String },
    #[error(
        "`{item}` is not a split position; expected N or -N (not 0) or MARKER[+N|-N] with MARKER one of method, host, endhost, sld, endsld, midsld, sniext"
    )]
    SplitPos { item: String },
    #[error("too many split positions (nfqws allows {max} per profile)")]
    TooManySplitPos { max: usize },
    #[error("expected an integer in {min}..={max}")]
    Range { min: i64, max: i64 },
    #[error(
        "`{item}` is not a fooling method; expected none, md5sig, ts, badseq, badsum, datanoack, hopbyhop or hopbyhop2"
    )]
    Fooling { item: String },
    #[error("expected [n|d|s]N: packets (n, default), data packets (d) or relative sequence (s)")]
    Limit,
    #[error("expected a signed decimal or signed 0xHEX 32-bit integer")]
    Signed32,
    #[error("expected 0x followed by an even, non-zero number of hex digits (at most {max} bytes)")]
    Hex { max: usize },
    #[error(
        "expected 0xHEX, PATH, @PATH or +OFFSET@PATH (and `!` or `!+OFFSET` for the built-in TLS fake)"
    )]
    Payload,
    #[error("`{item}` is not an address or CIDR (192.0.2.0/24, 2001:db8::/32)")]
    Cidr { item: String },
    #[error("`{item}` is not a domain name")]
    Domain { item: String },
    #[error("expected 0 or 1")]
    Bool,
    #[error("expected a non-zero decimal or 0xHEX 32-bit integer")]
    Fwmark,
}

/// `--filter-tcp`/`--filter-udp`: `80,443,1000-2000`, `*`, `~80`.
pub fn parse_ports(value: &str) -> Result<PortFilter, ValueError> {
    if value.is_empty() {
        return Err(ValueError::Empty);
    }
    let items: Vec<&str> = value.split(',').collect();
    let mut filter = PortFilter::default();
    for item in &items {
        let body = match item.strip_prefix('~') {
            Some(rest) if items.len() == 1 => {
                filter.negate = true;
                rest
            }
            Some(_) => return Err(ValueError::NegatedList),
            None => item,
        };
        let bad = || ValueError::Ports {
            item: (*item).to_owned(),
        };
        let range = if body == "*" && !filter.negate {
            (0, u16::MAX)
        } else if let Some((lo, hi)) = body.split_once('-') {
            let (lo, hi) = (port(lo).ok_or_else(bad)?, port(hi).ok_or_else(bad)?);
            if lo > hi {
                return Err(bad());
            }
            (lo, hi)
        } else {
            let p = port(body).ok_or_else(bad)?;
            (p, p)
        };
        filter.ranges.push(range);
    }
    Ok(filter)
}

fn port(s: &str) -> Option<u16> {
    digits(s)?.parse().ok()
}

/// `s` if it is a non-empty run of ASCII digits.
fn digits(s: &str) -> Option<&str> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

/// `--filter-l3=ipv4,ipv6`; `None` = both families.
pub fn parse_l3(value: &str) -> Result<Option<IpFamily>, ValueError> {
    let (mut v4, mut v6) = (false, false);
    for item in value.split(',') {
        match item {
            "ipv4" => v4 = true,
            "ipv6" => v6 = true,
            _ => {
                return Err(ValueError::L3 {
                    item: item.to_owned(),
                });
            }
        }
    }
    Ok(match (v4, v6) {
        (true, false) => Some(IpFamily::V4),
        (false, true) => Some(IpFamily::V6),
        _ => None,
    })
}

/// `--filter-l7=http,tls,...` (duplicates dropped, order kept).
pub fn parse_l7(value: &str) -> Result<Vec<L7>, ValueError> {
    let mut out = Vec::new();
    for item in value.split(',') {
        let proto = match item {
            "http" => L7::Http,
            "tls" => L7::Tls,
            "quic" => L7::Quic,
            "wireguard" => L7::Wireguard,
            "dht" => L7::Dht,
            "discord" => L7::Discord,
            "stun" => L7::Stun,
            "unknown" => L7::Unknown,
            _ => {
                return Err(ValueError::L7 {
                    item: item.to_owned(),
                });
            }
        };
        if !out.contains(&proto) {
            out.push(proto);
        }
    }
    Ok(out)
}

/// Every nfqws v1 desync mode (aliases resolved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DesyncMode {
    Fake,
    FakeKnown,
    Rst,
    RstAck,
    SynAck,
    SynData,
    Multisplit,
    Multidisorder,
    FakedSplit,
    FakedDisorder,
    HostFakeSplit,
    IpFrag1,
    IpFrag2,
    HopByHop,
    DestOpt,
    UdpLen,
    Tamper,
}

impl DesyncMode {
    /// The mode for a name, resolving nfqws's aliases (`split2` → multisplit,
    /// `disorder2` → multidisorder, `split` → fakedsplit, `disorder` → fakeddisorder).
    pub fn from_name(name: &str) -> Option<DesyncMode> {
        use DesyncMode::*;
        Some(match name {
            "fake" => Fake,
            "fakeknown" => FakeKnown,
            "rst" => Rst,
            "rstack" => RstAck,
            "synack" => SynAck,
            "syndata" => SynData,
            "multisplit" | "split2" => Multisplit,
            "multidisorder" | "disorder2" => Multidisorder,
            "fakedsplit" | "split" => FakedSplit,
            "fakeddisorder" | "disorder" => FakedDisorder,
            "hostfakesplit" => HostFakeSplit,
            "ipfrag1" => IpFrag1,
            "ipfrag2" => IpFrag2,
            "hopbyhop" => HopByHop,
            "destopt" => DestOpt,
            "udplen" => UdpLen,
            "tamper" => Tamper,
            _ => return None,
        })
    }

    /// Phase 0: runs on the SYN, before the data phases.
    fn is_zero_phase(self) -> bool {
        matches!(self, DesyncMode::SynAck | DesyncMode::SynData)
    }

    /// Fake-like modes that may precede a split mode.
    fn is_first_phase(self) -> bool {
        use DesyncMode::*;
        matches!(
            self,
            Fake | FakeKnown | Rst | RstAck | HopByHop | DestOpt | IpFrag1
        )
    }
}

/// A parsed `--dpi-desync`: `[zero,]first[,second]`. A single mode that can
/// only be a second phase (a split mode, ipfrag2, udplen, tamper) is in `second`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DesyncPhases {
    pub zero: Option<DesyncMode>,
    pub first: Option<DesyncMode>,
    pub second: Option<DesyncMode>,
}

/// `--dpi-desync=[phase0,]phase1[,phase2]` with nfqws's combination rules.
pub fn parse_desync(value: &str) -> Result<DesyncPhases, ValueError> {
    if value.is_empty() {
        return Err(ValueError::Empty);
    }
    let mut modes = Vec::new();
    for name in value.split(',') {
        let mode = DesyncMode::from_name(name).ok_or_else(|| ValueError::DesyncMode {
            mode: name.to_owned(),
        })?;
        modes.push(mode);
    }
    let combo = |reason: &str| ValueError::DesyncCombo {
        reason: reason.to_owned(),
    };
    let mut phases = DesyncPhases::default();
    let mut rest = modes.as_slice();
    if let [zero, tail @ ..] = rest
        && zero.is_zero_phase()
    {
        phases.zero = Some(*zero);
        rest = tail;
    }
    match rest {
        [] if phases.zero.is_some() => {}
        [only] if only.is_zero_phase() => return Err(combo("synack/syndata may only come first")),
        [only] if only.is_first_phase() => phases.first = Some(*only),
        [only] => phases.second = Some(*only),
        [first, second] => {
            if !first.is_first_phase() {
                return Err(combo(&format!(
                    "`{}` cannot be followed by another mode",
                    name_of(value, modes.len() - 2)
                )));
            }
            if second.is_first_phase() || second.is_zero_phase() {
                return Err(combo(&format!(
                    "`{}` cannot be a second phase",
                    name_of(value, modes.len() - 1)
                )));
            }
            phases.first = Some(*first);
            phases.second = Some(*second);
        }
        _ => return Err(combo("too many modes")),
    }
    Ok(phases)
}

fn name_of(value: &str, i: usize) -> &str {
    value.split(',').nth(i).unwrap_or(value)
}

/// The most split positions one profile may have (nfqws `MAX_SPLITS`).
pub const MAX_SPLIT_POS: usize = 64;

/// `--dpi-desync-split-pos=1,midsld,-10,host+1,sniext+1`.
pub fn parse_split_pos_list(value: &str) -> Result<Vec<SplitPos>, ValueError> {
    let out = value
        .split(',')
        .map(parse_split_pos)
        .collect::<Result<Vec<_>, _>>()?;
    if out.len() > MAX_SPLIT_POS {
        return Err(ValueError::TooManySplitPos { max: MAX_SPLIT_POS });
    }
    Ok(out)
}

fn parse_split_pos(item: &str) -> Result<SplitPos, ValueError> {
    let bad = || ValueError::SplitPos {
        item: item.to_owned(),
    };
    if let Some(offset) = int16(item) {
        return if offset == 0 {
            Err(bad())
        } else {
            Ok(SplitPos {
                marker: Marker::Absolute,
                offset,
            })
        };
    }
    let split = item.find(['+', '-']).unwrap_or(item.len());
    let (name, offset) = item.split_at(split);
    let marker = match name {
        "method" => Marker::Method,
        "host" => Marker::Host,
        "endhost" => Marker::EndHost,
        "sld" => Marker::Sld,
        "endsld" => Marker::EndSld,
        "midsld" => Marker::MidSld,
        "sniext" => Marker::SniExt,
        _ => return Err(bad()),
    };
    let offset = if offset.is_empty() {
        0
    } else {
        int16(offset).ok_or_else(bad)?
    };
    Ok(SplitPos { marker, offset })
}

/// A signed 16-bit integer with an optional sign (nfqws positions are int16).
fn int16(s: &str) -> Option<i32> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    digits(body)?;
    let v: i32 = s.parse().ok()?;
    (i32::from(i16::MIN)..=i32::from(i16::MAX))
        .contains(&v)
        .then_some(v)
}

/// An unsigned decimal integer in `min..=max`.
pub fn parse_range(value: &str, min: u32, max: u32) -> Result<u32, ValueError> {
    let err = ValueError::Range {
        min: i64::from(min),
        max: i64::from(max),
    };
    let v: u32 = digits(value)
        .and_then(|d| d.parse().ok())
        .ok_or(err.clone())?;
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(err)
    }
}

/// `--dpi-desync-ttl`/`-ttl6`: 1..255.
pub fn parse_ttl(value: &str) -> Result<u8, ValueError> {
    let v = parse_range(value, 1, 255)?;
    u8::try_from(v).map_err(|_| ValueError::Range { min: 1, max: 255 })
}

/// Every nfqws fooling method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoolingMethod {
    None,
    Md5Sig,
    Ts,
    BadSeq,
    BadSum,
    DataNoAck,
    HopByHop,
    HopByHop2,
}

/// `--dpi-desync-fooling=badsum,badseq`.
pub fn parse_fooling(value: &str) -> Result<Vec<FoolingMethod>, ValueError> {
    value
        .split(',')
        .map(|item| {
            Ok(match item {
                "none" => FoolingMethod::None,
                "md5sig" => FoolingMethod::Md5Sig,
                "ts" => FoolingMethod::Ts,
                "badseq" => FoolingMethod::BadSeq,
                "badsum" => FoolingMethod::BadSum,
                "datanoack" => FoolingMethod::DataNoAck,
                "hopbyhop" => FoolingMethod::HopByHop,
                "hopbyhop2" => FoolingMethod::HopByHop2,
                _ => {
                    return Err(ValueError::Fooling {
                        item: item.to_owned(),
                    });
                }
            })
        })
        .collect()
}

/// A signed decimal or signed `0xHEX` 32-bit value (`-10000`, `-0x2710`);
/// hex is taken as the 32-bit pattern, as nfqws does.
pub fn parse_signed32(value: &str) -> Result<i32, ValueError> {
    let (negative, body) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    if let Some(hex) = body.strip_prefix("0x") {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ValueError::Signed32);
        }
        let bits = u32::from_str_radix(hex, 16).map_err(|_| ValueError::Signed32)?;
        let v = i32::from_ne_bytes(bits.to_ne_bytes());
        return Ok(if negative { v.wrapping_neg() } else { v });
    }
    digits(body).ok_or(ValueError::Signed32)?;
    value.parse().map_err(|_| ValueError::Signed32)
}

/// `--dpi-desync-cutoff`/`-start`: `n5`, `d3`, `s4000`, `5` (= `n5`).
pub fn parse_limit(value: &str) -> Result<Limit, ValueError> {
    let (kind, number) = match value.as_bytes().first() {
        Some(b'n' | b'd' | b's') => value.split_at(1),
        _ => ("n", value),
    };
    let n: u32 = digits(number)
        .and_then(|d| d.parse().ok())
        .ok_or(ValueError::Limit)?;
    Ok(match kind {
        "d" => Limit::DataPackets(n),
        "s" => Limit::Seq(n),
        _ => Limit::Packets(n),
    })
}

/// An optional `0|1` value: absent = `true`.
pub fn parse_bool01(value: Option<&str>) -> Result<bool, ValueError> {
    match value {
        None | Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(_) => Err(ValueError::Bool),
    }
}

/// Hex digits (after `0x`) to bytes: non-empty, even length, at most `max` bytes.
pub fn parse_hex(digits: &str, max: usize) -> Result<Vec<u8>, ValueError> {
    let err = ValueError::Hex { max };
    if digits.is_empty() || !digits.len().is_multiple_of(2) || digits.len() / 2 > max {
        return Err(err);
    }
    digits
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|_| err.clone())?;
            u8::from_str_radix(s, 16).map_err(|_| err.clone())
        })
        .collect()
}

/// An address or CIDR: `192.0.2.1`, `192.0.2.0/24`, `2001:db8::/32`.
pub fn parse_cidr(item: &str) -> Result<Cidr, ValueError> {
    let bad = || ValueError::Cidr {
        item: item.to_owned(),
    };
    let (addr, prefix) = match item.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (item, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => digits(p)
            .and_then(|d| d.parse::<u8>().ok())
            .filter(|&p| p <= max)
            .ok_or_else(bad)?,
    };
    Ok(Cidr { addr, prefix })
}

/// `--ipset-ip=a,b`: empty items are skipped, like nfqws.
pub fn parse_cidr_list(value: &str) -> Result<Vec<Cidr>, ValueError> {
    value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(parse_cidr)
        .collect()
}

/// `--hostlist-domains=a,^b`: lower-cased, `^` kept, empty items skipped.
pub fn parse_domain_list(value: &str) -> Result<Vec<String>, ValueError> {
    value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|item| {
            let name = item.strip_prefix('^').unwrap_or(item);
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ValueError::Domain {
                    item: item.to_owned(),
                });
            }
            Ok(item.to_ascii_lowercase())
        })
        .collect()
}

/// `--dpi-desync-fwmark`: non-zero decimal or `0xHEX`.
pub fn parse_fwmark(value: &str) -> Result<u32, ValueError> {
    let v = match value.strip_prefix("0x") {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(hex, 16).ok()
        }
        Some(_) => None,
        None => digits(value).and_then(|d| d.parse().ok()),
    };
    v.filter(|&v| v != 0).ok_or(ValueError::Fwmark)
}
