//! The standard DPI test shape:
//!
//! ```text
//! [c] client ──veth── [d] router (ip_forward=1, DPI simulator) ──veth── [s] servers
//! ```
//!
//! Addresses come from the benchmarking range 198.18.0.0/15 and the ULA
//! prefix `fd00:7665:696c::/48`; they exist only inside the namespaces.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Namespace, veth};

/// The names every client hosts file maps to [`Topology::SERVER_V4`].
pub const DEFAULT_NAMES: [&str; 3] = ["blocked.test", "sub.blocked.test", "allowed.test"];

/// Three namespaces joined as client ─ router ─ servers, deleted on drop.
///
/// Interfaces: `[c] to-d` ─ `to-c [d] to-s` ─ `to-d [s]`. Default routes in
/// [c] and [s] point at [d]; [d] forwards IPv4 and IPv6.
#[derive(Debug)]
pub struct Topology {
    pub client: Namespace,
    pub router: Namespace,
    pub server: Namespace,
}

/// Options for [`Topology`]: MTU, extra server addresses, extra host names.
#[derive(Clone, Debug, Default)]
pub struct TopologyBuilder {
    mtu: Option<u32>,
    server_addresses: Vec<Ipv4Addr>,
    hosts: Vec<(IpAddr, String)>,
}

impl TopologyBuilder {
    /// MTU of every veth (e.g. 1280 so a large ClientHello spans two segments).
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    /// One more IPv4 address on [s] (inside 198.18.2.0/24), e.g. for a
    /// second server such as `vless.test`.
    pub fn server_address(mut self, addr: Ipv4Addr) -> Self {
        self.server_addresses.push(addr);
        self
    }

    /// One more `/etc/hosts` line in [c]: `name` resolves to `addr`.
    pub fn host(mut self, name: &str, addr: IpAddr) -> Self {
        self.hosts.push((addr, name.to_string()));
        self
    }

    /// Creates the namespaces, veths, addresses, routes and hosts files.
    pub fn build(self) -> Topology {
        let topology = Topology {
            client: Namespace::create("c"),
            router: Namespace::create("d"),
            server: Namespace::create("s"),
        };
        let (c, d, s) = (&topology.client, &topology.router, &topology.server);
        veth(c, "to-d", d, "to-c", self.mtu);
        veth(d, "to-s", s, "to-d", self.mtu);

        let v4 = |addr: Ipv4Addr| format!("{addr}/24");
        let v6 = |addr: Ipv6Addr| format!("{addr}/64");
        c.ip(&["addr", "add", &v4(Topology::CLIENT_V4), "dev", "to-d"]);
        d.ip(&[
            "addr",
            "add",
            &v4(Topology::ROUTER_CLIENT_SIDE_V4),
            "dev",
            "to-c",
        ]);
        d.ip(&[
            "addr",
            "add",
            &v4(Topology::ROUTER_SERVER_SIDE_V4),
            "dev",
            "to-s",
        ]);
        s.ip(&["addr", "add", &v4(Topology::SERVER_V4), "dev", "to-d"]);
        for extra in &self.server_addresses {
            s.ip(&["addr", "add", &v4(*extra), "dev", "to-d"]);
        }
        // `nodad`: the addresses are usable at once instead of after DAD.
        for (ns, addr, dev) in [
            (c, Topology::CLIENT_V6, "to-d"),
            (d, Topology::ROUTER_CLIENT_SIDE_V6, "to-c"),
            (d, Topology::ROUTER_SERVER_SIDE_V6, "to-s"),
            (s, Topology::SERVER_V6, "to-d"),
        ] {
            ns.ip(&["addr", "add", &v6(addr), "dev", dev, "nodad"]);
        }
        let via4 = |addr: Ipv4Addr| addr.to_string();
        let via6 = |addr: Ipv6Addr| addr.to_string();
        c.ip(&[
            "route",
            "add",
            "default",
            "via",
            &via4(Topology::ROUTER_CLIENT_SIDE_V4),
        ]);
        s.ip(&[
            "route",
            "add",
            "default",
            "via",
            &via4(Topology::ROUTER_SERVER_SIDE_V4),
        ]);
        c.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &via6(Topology::ROUTER_CLIENT_SIDE_V6),
        ]);
        s.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &via6(Topology::ROUTER_SERVER_SIDE_V6),
        ]);
        d.sysctl("net.ipv4.ip_forward", "1");
        d.sysctl("net.ipv6.conf.all.forwarding", "1");

        let server = IpAddr::V4(Topology::SERVER_V4);
        let mut entries = vec![(server, DEFAULT_NAMES.map(String::from).to_vec())];
        for (addr, name) in self.hosts {
            entries.push((addr, vec![name]));
        }
        c.set_hosts(&entries);
        topology
    }
}

impl Topology {
    pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
    pub const ROUTER_CLIENT_SIDE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
    pub const ROUTER_SERVER_SIDE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
    pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
    pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x7665, 0x696c, 1, 0, 0, 0, 2);
    pub const ROUTER_CLIENT_SIDE_V6: Ipv6Addr =
        Ipv6Addr::new(0xfd00, 0x7665, 0x696c, 1, 0, 0, 0, 1);
    pub const ROUTER_SERVER_SIDE_V6: Ipv6Addr =
        Ipv6Addr::new(0xfd00, 0x7665, 0x696c, 2, 0, 0, 0, 1);
    pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x7665, 0x696c, 2, 0, 0, 0, 2);

    /// The standard topology with default options.
    pub fn new() -> Topology {
        Topology::builder().build()
    }

    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    /// Sends every packet arriving at [d] (raw PREROUTING, IPv4 and IPv6) to
    /// NFQUEUE `queue`, **without** `--queue-bypass`: while nothing is bound
    /// to the queue, [d] forwards nothing. Idempotent.
    pub fn queue_router_traffic(&self, queue: u16) {
        let queue = queue.to_string();
        for iptables in ["iptables", "ip6tables"] {
            let rule = ["PREROUTING", "-j", "NFQUEUE", "--queue-num", queue.as_str()];
            let present = self
                .router
                .command(iptables)
                .args(["-w", "-t", "raw", "-C"])
                .args(rule)
                .output()
                .unwrap_or_else(|e| {
                    panic!("{iptables} (Debian package iptables, `make env`): {e}")
                });
            if !present.status.success() {
                let mut args = vec!["-w", "-t", "raw", "-A"];
                args.extend(rule);
                self.router.exec(iptables, &args);
            }
        }
    }
}

impl Default for Topology {
    fn default() -> Self {
        Topology::new()
    }
}
