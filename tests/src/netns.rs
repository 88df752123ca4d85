//! Network namespaces for end-to-end tests: uniquely named per test, joined
//! by veth pairs, removed on drop.
//!
//! Every namespace this module creates is called `veil-t-<pid>-<n>-<role>`
//! (`<pid>` the test process, `<n>` a per-process counter), so tests running
//! in parallel never share one, and leftovers of a crashed run (a prefix
//! match whose pid is dead) are deleted the first time a namespace is
//! created. Namespaces are never touched unless their name has that prefix.
//!
//! Test veths get checksum offload off in both directions (so a packet with
//! a bad checksum really is dropped by the receiver instead of being marked
//! "checked" by the veth) and no GRO/GSO (so segments stay as sent), and
//! optionally a small MTU.
//!
//! Needs root, `ip` (iproute2), `ethtool` and `iptables` (`make env`).

use std::ffi::OsStr;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

mod topology;

pub use topology::{DEFAULT_NAMES, Topology, TopologyBuilder};

/// Prefix of every namespace this module creates.
pub const PREFIX: &str = "veil-t-";

static NEXT: AtomicU32 = AtomicU32::new(0);
static LEFTOVERS: Once = Once::new();

/// A network namespace owned by one test; deleted (with its veths and its
/// `/etc/netns/<name>` directory) on drop.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates `veil-t-<pid>-<n>-<role>` with `lo` up. `role` is a short
    /// word (`c`, `d`, `s`, …) that makes `ip netns list` readable.
    pub fn create(role: &str) -> Namespace {
        LEFTOVERS.call_once(remove_leftovers);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}-{role}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Namespace { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name (for `ip netns exec`, `ip -n`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside this namespace (`ip netns exec`),
    /// with `/etc/netns/<name>/hosts` bind-mounted over `/etc/hosts`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `program args…` inside the namespace; panics with its output
    /// unless it exits 0.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        run(self.command(program).args(args))
    }

    /// `ip -n <name> args…`; panics unless it succeeds.
    pub fn ip(&self, args: &[&str]) -> Output {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Sets a sysctl inside the namespace (`net.ipv4.ip_forward`, …).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")]);
    }

    /// Writes `/etc/netns/<name>/hosts`: `localhost` plus one line per
    /// entry, seen by every command started through [`Namespace::command`].
    pub fn set_hosts(&self, entries: &[(IpAddr, Vec<String>)]) {
        let dir = self.etc_dir();
        fs::create_dir_all(&dir).expect("create /etc/netns/<ns>");
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (addr, names) in entries {
            text.push_str(&format!("{addr} {}\n", names.join(" ")));
        }
        fs::write(dir.join("hosts"), text).expect("write /etc/netns/<ns>/hosts");
    }

    /// Turns off checksum offload (tx and rx), TSO/GSO/GRO on `dev`.
    pub fn disable_offloads(&self, dev: &str) {
        let status = self
            .command("ethtool")
            .args(["-K", dev, "tx", "off", "rx", "off", "tso", "off"])
            .args(["gso", "off", "gro", "off"])
            .output()
            .expect("ip netns exec ethtool");
        assert!(
            status.status.success(),
            "ethtool -K {dev} in {} failed (is Debian's ethtool installed? `make env`): {}",
            self.name,
            String::from_utf8_lossy(&status.stderr)
        );
    }

    /// Runs `f` on a fresh thread that has joined this namespace: sockets it
    /// creates live in the namespace. (Name resolution there does not use
    /// `/etc/netns/<name>/hosts`; connect by address.)
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = Path::new("/var/run/netns").join(&self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let file = fs::File::open(&path).expect("open the namespace file");
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .expect("setns into the test namespace");
                    f()
                })
                .join()
                .expect("the thread inside the namespace panicked")
        })
    }

    /// Runs the future `make` returns to completion on a current-thread
    /// runtime inside this namespace ([`Namespace::enter`]): the processes
    /// it starts and the sockets it opens live there.
    pub fn block_on<T: Send, F: std::future::Future<Output = T>>(
        &self,
        make: impl FnOnce() -> F + Send,
    ) -> T {
        self.enter(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime inside the namespace")
                .block_on(make())
        })
    }

    fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
        let _ = fs::remove_dir_all(self.etc_dir());
    }
}

/// Creates a veth pair: `a_dev` in `a`, `b_dev` in `b`, both up, offloads
/// off, with `mtu` when given.
pub fn veth(a: &Namespace, a_dev: &str, b: &Namespace, b_dev: &str, mtu: Option<u32>) {
    a.ip(&[
        "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", &b.name,
    ]);
    for (ns, dev) in [(a, a_dev), (b, b_dev)] {
        if let Some(mtu) = mtu {
            ns.ip(&["link", "set", dev, "mtu", &mtu.to_string()]);
        }
        ns.disable_offloads(dev);
        ns.ip(&["link", "set", dev, "up"]);
    }
}

/// A veth pair from the test's own (host) namespace into `ns`: `host_dev`
/// stays here, `ns_dev` goes into `ns`; both up, with the given addresses
/// (`10.9.8.1/30`). The host end is deleted on drop (deleting `ns` removes
/// it too, a moment later).
#[derive(Debug)]
pub struct HostVeth {
    host_dev: String,
}

impl HostVeth {
    /// Creates the pair. `host_dev` must be unique on the host (at most 15
    /// characters): derive it from the test's pid.
    pub fn create(
        ns: &Namespace,
        host_dev: &str,
        host_addr: &str,
        ns_dev: &str,
        ns_addr: &str,
    ) -> HostVeth {
        run(Command::new("ip").args([
            "link", "add", host_dev, "type", "veth", "peer", "name", ns_dev, "netns", &ns.name,
        ]));
        let veth = HostVeth {
            host_dev: host_dev.to_owned(),
        };
        run(Command::new("ip").args(["addr", "add", host_addr, "dev", host_dev]));
        run(Command::new("ip").args(["link", "set", host_dev, "up"]));
        ns.ip(&["addr", "add", ns_addr, "dev", ns_dev]);
        ns.ip(&["link", "set", ns_dev, "up"]);
        veth
    }
}

impl Drop for HostVeth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "delete", &self.host_dev])
            .output();
    }
}

/// Runs a command, panicking with its stderr unless it exits 0.
fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Deletes `veil-t-<pid>-…` namespaces and `/etc/netns` dirs whose pid is
/// not running (left by a crashed or killed test run). Runs once per process
/// before the first [`Namespace::create`]. Processes still running in such a
/// namespace are not killed (they keep a detached, unreachable copy of it).
pub fn remove_leftovers() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let listed = String::from_utf8_lossy(&output.stdout).into_owned();
    let names = listed
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(String::from);
    let etc = fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned());
    for name in names.chain(etc) {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let _ = Command::new("ip").args(["netns", "delete", &name]).output();
        let _ = fs::remove_dir_all(Path::new("/etc/netns").join(&name));
    }
}
