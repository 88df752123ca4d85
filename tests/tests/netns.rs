//! The netns helper: namespaces are unique, removed on drop, and leftovers
//! of dead test processes are removed by prefix.

use std::path::Path;
use std::process::Command;

use veil_e2e::netns::{self, Namespace, Topology};

fn listed() -> String {
    let output = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn topology_namespaces_and_hosts_files_are_removed_on_drop() {
    let topology = Topology::new();
    let names: Vec<String> = [&topology.client, &topology.router, &topology.server]
        .iter()
        .map(|ns| ns.name().to_string())
        .collect();
    let pid = std::process::id();
    for name in &names {
        assert!(
            name.starts_with(&format!("{}{pid}-", netns::PREFIX)),
            "{name}"
        );
        assert!(listed().contains(name.as_str()));
    }
    let hosts = std::fs::read_to_string(format!("/etc/netns/{}/hosts", names[0])).unwrap();
    assert!(
        hosts.contains("198.18.2.2 blocked.test sub.blocked.test allowed.test"),
        "{hosts}"
    );
    drop(topology);
    let after = listed();
    for name in &names {
        assert!(!after.contains(name.as_str()), "{name} left behind");
        assert!(!Path::new("/etc/netns").join(name).exists());
    }
}

#[test]
fn leftovers_of_dead_processes_are_removed_and_live_ones_kept() {
    // No process has this pid (above the kernel's pid_max limit).
    let dead = format!("{}999999999-0-c", netns::PREFIX);
    Command::new("ip")
        .args(["netns", "add", &dead])
        .status()
        .unwrap();
    std::fs::create_dir_all(Path::new("/etc/netns").join(&dead)).unwrap();
    let live = Namespace::create("live");
    netns::remove_leftovers();
    let after = listed();
    assert!(!after.contains(dead.as_str()), "{after}");
    assert!(!Path::new("/etc/netns").join(&dead).exists());
    assert!(after.contains(live.name()), "{after}");
}

#[test]
fn builder_sets_the_mtu_and_extra_addresses_and_hosts() {
    let extra = std::net::Ipv4Addr::new(198, 18, 2, 3);
    let topology = Topology::builder()
        .mtu(1280)
        .server_address(extra)
        .host("vless.test", extra.into())
        .build();
    for (ns, dev) in [
        (&topology.client, "to-d"),
        (&topology.router, "to-c"),
        (&topology.router, "to-s"),
        (&topology.server, "to-d"),
    ] {
        let link = ns.ip(&["link", "show", dev]);
        let text = String::from_utf8_lossy(&link.stdout);
        assert!(text.contains("mtu 1280"), "{text}");
    }
    let addresses = topology.server.ip(&["-4", "addr", "show", "to-d"]);
    assert!(String::from_utf8_lossy(&addresses.stdout).contains("198.18.2.3/24"));
    let hosts =
        std::fs::read_to_string(format!("/etc/netns/{}/hosts", topology.client.name())).unwrap();
    assert!(hosts.contains("198.18.2.3 vless.test"), "{hosts}");
}
