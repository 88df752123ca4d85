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
