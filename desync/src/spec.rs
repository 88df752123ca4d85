//! The parsed form of an nfqws v1 command line: global settings and the
//! profiles in order (nfqws: the first profile whose filters match a flow
//! wins; a flow no profile matches passes untouched).
//!
//! The parser (`args`) builds these; the packet engine reads them. Values
//! here are already checked: ports in range, positions well formed, fake
//! payloads non-empty, files readable at parse time.

use std::net::IpAddr;
use std::path::PathBuf;

/// A whole command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub globals: Globals,
    /// In command-line order; index 0 is the first profile.
    pub profiles: Vec<Profile>,
}

/// Process-wide settings (the agent sets these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Globals {
    /// NFQUEUE number (`--qnum`).
    pub qnum: u16,
    /// Mark put on every packet the engine emits, so capture rules skip
    /// them (`--dpi-desync-fwmark`, default `0x40000000`).
    pub fwmark: u32,
    /// `--dry-run`: check everything, then exit 0 without binding the queue.
    pub dry_run: bool,
    /// `--debug` (any level): log decisions.
    pub debug: bool,
    /// `--version`: print the version and exit.
    pub version: bool,
    /// Other agent-owned options, verbatim as `--name[=value]`, in command-line
    /// order. Only [`crate::args::ParseMode::Process`] keeps any.
    pub agent_owned: Vec<String>,
}

impl Default for Globals {
    fn default() -> Self {
        Globals {
            qnum: 0,
            fwmark: DEFAULT_FWMARK,
            dry_run: false,
            debug: false,
            version: false,
            agent_owned: Vec::new(),
        }
    }
}

/// zapret's default `--dpi-desync-fwmark`.
pub const DEFAULT_FWMARK: u32 = 0x4000_0000;

/// One profile: which flows it takes and what it does to them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// 1-based position on the command line (nfqws numbers profiles from 1;
    /// error messages use it).
    pub number: usize,
    /// `--filter-l3=ipv4|ipv6`; `None` = both.
    pub l3: Option<IpFamily>,
    /// `--filter-tcp`; `None` = this profile takes no TCP (unless no port
    /// filter is given at all, which nfqws treats as "any").
    pub tcp: Option<PortFilter>,
    /// `--filter-udp`.
    pub udp: Option<PortFilter>,
    /// `--filter-l7`; empty = any protocol.
    pub l7: Vec<L7>,
    /// Host name lists (`--hostlist*`).
    pub hosts: HostFilter,
    /// Address lists (`--ipset*`).
    pub ips: IpFilter,
    pub desync: Desync,
    /// Arguments only real nfqws/winws implement, verbatim as
    /// `--name[=value]` in command-line order (external-only options, and
    /// built-in options whose value leaves the built-in subset, such as
    /// `--dpi-desync=fake,ipfrag2` or `--dpi-desync-fooling=md5sig`). Always
    /// empty when parsed in [`crate::args::ParseMode::Builtin`].
    pub external: Vec<String>,
}

/// IP version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

/// A port filter: `80,443,1000-2000`, `*` (every port), `~…` (every port but).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortFilter {
    /// `~`: match ports *not* in `ranges`.
    pub negate: bool,
    /// Inclusive ranges; `*` is `[(0, 65535)]`.
    pub ranges: Vec<(u16, u16)>,
}

impl PortFilter {
    /// Whether `port` passes the filter.
    pub fn matches(&self, port: u16) -> bool {
        let inside = self.ranges.iter().any(|&(lo, hi)| lo <= port && port <= hi);
        inside != self.negate
    }
}

/// Application protocols `--filter-l7` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L7 {
    Http,
    Tls,
    Quic,
    Wireguard,
    Dht,
    Discord,
    Stun,
    Unknown,
}

/// Host lists. A profile with any include list takes only flows whose host
/// name is known and listed; with none it takes every host (minus excludes).
/// Domains are lower-case; `^name` in a list means "this name, not its
/// subdomains".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFilter {
    pub include_files: Vec<PathBuf>,
    pub include_domains: Vec<String>,
    pub exclude_files: Vec<PathBuf>,
    pub exclude_domains: Vec<String>,
}

impl HostFilter {
    /// Whether the profile restricts hosts (and so must wait for the host name).
    pub fn has_include(&self) -> bool {
        !self.include_files.is_empty() || !self.include_domains.is_empty()
    }
}

/// Address lists, same shape as [`HostFilter`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpFilter {
    pub include_files: Vec<PathBuf>,
    pub include: Vec<Cidr>,
    pub exclude_files: Vec<PathBuf>,
    pub exclude: Vec<Cidr>,
}

/// An address with a prefix length (`192.0.2.0/24`, `2001:db8::/32`; a bare
/// address is a full-length prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// What the profile does to a matching flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desync {
    /// `fake` in `--dpi-desync`: send fake request(s) before the real one.
    pub fake: bool,
    /// The splitting mode in `--dpi-desync`, if any.
    pub split: Option<SplitMode>,
    /// `--dpi-desync-split-pos` (default `2` as in nfqws).
    pub split_pos: Vec<SplitPos>,
    /// `--dpi-desync-ttl` (IPv4) for fakes; `None` = the original TTL.
    pub ttl: Option<u8>,
    /// `--dpi-desync-ttl6` (hop limit for IPv6 fakes); `None` = `ttl`.
    pub ttl6: Option<u8>,
    /// `--dpi-desync-fooling`.
    pub fooling: Fooling,
    /// `--dpi-desync-badseq-increment` (default -10000).
    pub badseq_increment: i32,
    /// `--dpi-desync-repeats` (default 1): how many times each fake is sent.
    pub repeats: u32,
    /// `--dpi-desync-fake-tls` payload; `None` = the built-in default.
    pub fake_tls: Option<Vec<u8>>,
    /// `--dpi-desync-fake-http` payload; `None` = the built-in default.
    pub fake_http: Option<Vec<u8>>,
    /// `--dpi-desync-cutoff`: stop desyncing a flow after this point.
    pub cutoff: Option<Limit>,
    /// `--dpi-desync-start`: start desyncing a flow at this point.
    pub start: Option<Limit>,
    /// `--dpi-desync-any-protocol`: desync payloads that are neither TLS nor HTTP.
    pub any_protocol: bool,
}

impl Default for Desync {
    fn default() -> Self {
        Desync {
            fake: false,
            split: None,
            split_pos: vec![SplitPos {
                marker: Marker::Absolute,
                offset: 2,
            }],
            ttl: None,
            ttl6: None,
            fooling: Fooling::default(),
            badseq_increment: -10000,
            repeats: 1,
            fake_tls: None,
            fake_http: None,
            cutoff: None,
            start: None,
            any_protocol: false,
        }
    }
}

impl Desync {
    /// Whether the profile changes packets at all (`--dpi-desync` given).
    pub fn is_active(&self) -> bool {
        self.fake || self.split.is_some()
    }
}

/// Splitting modes (aliases resolved by the parser: `split2` → `multisplit`,
/// `disorder2` → `multidisorder`, `split` → `fakedsplit`, `disorder` → `fakeddisorder`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitMode {
    /// Send the request in parts, in order.
    Multisplit,
    /// Send the request in parts, last part first.
    Multidisorder,
    /// Split in two, each part surrounded by fakes of the same size.
    Fakedsplit,
    /// Like `Fakedsplit`, second part first.
    Fakeddisorder,
}

/// A split position: a marker plus an offset. `Absolute` with a negative
/// offset counts from the end of the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitPos {
    pub marker: Marker,
    pub offset: i32,
}

/// Position markers nfqws resolves inside a TLS ClientHello or HTTP request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// A plain number.
    Absolute,
    /// Start of the HTTP method (`method`).
    Method,
    /// First byte of the host name (`host`).
    Host,
    /// Byte after the host name (`endhost`).
    EndHost,
    /// First byte of the second-level domain (`sld`).
    Sld,
    /// Byte after the second-level domain (`endsld`).
    EndSld,
    /// Middle of the second-level domain (`midsld`).
    MidSld,
    /// Start of the SNI extension (`sniext`).
    SniExt,
}

/// `--dpi-desync-fooling` methods the built-in engine implements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fooling {
    /// Fakes carry a wrong TCP checksum (the server drops them).
    pub badsum: bool,
    /// Fakes carry a sequence number off by `badseq_increment`.
    pub badseq: bool,
}

/// `--dpi-desync-cutoff/-start` values: `nN` packets, `dN` data packets, `sN` relative sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Packets(u32),
    DataPackets(u32),
    Seq(u32),
}
