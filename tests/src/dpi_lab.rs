//! The standard DPI lab: a [`Topology`], the HTTPS/HTTP test site in [s],
//! the DPI simulator in [d], and curl in [c] whose verdict is read with the
//! simulator's decisions about that very connection (curl reports its
//! local address, the simulator's log names each flow).

use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use crate::dpi_sim::{DpiSim, DpiSimOptions};
use crate::netns::Topology;
use crate::process::AgentOptions;
use crate::test_site::TestSite;

/// The simulator's reason for a segment holding only part of a name.
pub const PARTIAL: &str = "name not entirely inside this segment";

/// Namespaces, site and simulator; all removed on drop.
pub struct DpiLab {
    pub topology: Topology,
    pub site: TestSite,
    pub sim: DpiSim,
}

/// What one curl run in [c] gave.
#[derive(Debug)]
pub struct Fetch {
    /// curl's exit code (0: the transfer completed).
    pub exit: i32,
    /// `%{http_code}` (`000` when no response came).
    pub status: String,
    /// The connection's client address (`%{local_ip}`/`%{local_port}`).
    pub client: Option<SocketAddr>,
    pub body: Vec<u8>,
    pub stderr: String,
}

impl Fetch {
    /// Whether curl got a 200.
    pub fn ok(&self) -> bool {
        self.exit == 0 && self.status == "200"
    }
}

impl DpiLab {
    /// A new topology with the site and a simulator at `level`.
    pub fn new(level: u8) -> DpiLab {
        DpiLab::with_topology(Topology::new(), level)
    }

    /// The site and a simulator at `level` on `topology`.
    pub fn with_topology(topology: Topology, level: u8) -> DpiLab {
        DpiLab::with_options(
            topology,
            DpiSimOptions {
                level,
                ..DpiSimOptions::default()
            },
        )
    }

    /// The site and a simulator started with `options` on `topology`.
    pub fn with_options(topology: Topology, options: DpiSimOptions) -> DpiLab {
        let site = TestSite::start(&topology.server, &[]);
        let sim = DpiSim::start(&topology, options);
        DpiLab {
            topology,
            site,
            sim,
        }
    }

    /// How Strategy tests start an agent in [c]: through `ip netns exec`
    /// (so `blocked.test` resolves from [c]'s hosts file), its probes
    /// trusting the site's CA, logging JSON (whose timestamps tests read).
    pub fn agent_options(&self) -> AgentOptions {
        AgentOptions {
            netns: Some(self.topology.client.name().to_owned()),
            env: vec![
                (
                    "VEIL_PROBE_CA_FILE".into(),
                    self.site.ca_pem.display().to_string(),
                ),
                ("VEIL_LOG_FORMAT".into(), "json".into()),
            ],
            ..AgentOptions::default()
        }
    }

    /// curl in [c] (names from [c]'s hosts file, the test CA trusted,
    /// 10 s at most unless `extra` says otherwise).
    pub fn curl(&self, url: &str, extra: &[&str]) -> Fetch {
        let output = self
            .topology
            .client
            .command("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&self.site.ca_pem)
            .args(["-w", "\n%{http_code} %{local_ip} %{local_port}"])
            .args(extra)
            .arg(url)
            .output()
            .expect("curl");
        let stdout = output.stdout;
        let split = stdout.iter().rposition(|&b| b == b'\n').unwrap_or(0);
        let trailer = String::from_utf8_lossy(&stdout[(split + 1).min(stdout.len())..]);
        let mut words = trailer.split_whitespace();
        let status = words.next().unwrap_or("").to_string();
        let client = match (words.next(), words.next()) {
            (Some(ip), Some(port)) => ip
                .parse::<IpAddr>()
                .ok()
                .zip(port.parse::<u16>().ok())
                .map(|(ip, port)| SocketAddr::new(ip, port)),
            _ => None,
        };
        Fetch {
            exit: output.status.code().unwrap_or(-1),
            status,
            client,
            body: stdout[..split].to_vec(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The simulator's decisions about `fetch`'s connection.
    pub fn flow_decisions(&self, fetch: &Fetch) -> Vec<Value> {
        let client = fetch
            .client
            .unwrap_or_else(|| panic!("curl reported no local address: {fetch:?}"));
        let prefix = format!("{client} -> ");
        self.sim
            .decisions()
            .into_iter()
            .filter(|d| d["flow"].as_str().is_some_and(|f| f.starts_with(&prefix)))
            .collect()
    }

    /// 200, and the simulator saw the ClientHello only in parts.
    pub fn assert_desynced(&self, url: &str) {
        let fetch = self.curl(url, &[]);
        let decisions = self.flow_decisions(&fetch);
        assert!(
            fetch.exit == 0 && fetch.status == "200",
            "{url}: {fetch:?}\n{decisions:?}"
        );
        assert!(
            decisions.iter().any(|d| d["reason"] == PARTIAL),
            "{url} was not split: {decisions:?}"
        );
    }

    /// 200, and the simulator read the whole name in one segment.
    pub fn assert_untouched_pass(&self, url: &str, name: &str) {
        let fetch = self.curl(url, &[]);
        let decisions = self.flow_decisions(&fetch);
        assert!(
            fetch.exit == 0 && fetch.status == "200",
            "{url}: {fetch:?}\n{decisions:?}"
        );
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        assert_eq!(decisions[0]["sni"], name, "{decisions:?}");
    }

    /// Reset by the simulator, which read the whole name in one segment.
    pub fn assert_blocked(&self, url: &str) {
        let fetch = self.curl(url, &[]);
        let decisions = self.flow_decisions(&fetch);
        assert!(
            fetch.exit != 0 && fetch.stderr.to_lowercase().contains("reset"),
            "{url}: {fetch:?}\n{decisions:?}"
        );
        assert!(
            decisions
                .iter()
                .any(|d| d["verdict"] == "block" && d["sni"] == "blocked.test"),
            "{decisions:?}"
        );
    }
}
