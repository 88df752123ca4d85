//! A running `veil-dpi-sim` on a topology's router, for tests: started with
//! the router's traffic queued to it, killed on drop.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::DEFAULT_QUEUE;
use crate::netns::Topology;
use crate::process::binary;

/// How to start the simulator.
#[derive(Clone, Debug)]
pub struct DpiSimOptions {
    pub level: u8,
    /// Blocked names (each with its subdomains).
    pub block: Vec<String>,
    /// Blocked server addresses (throttled at level 3).
    pub block_addresses: Vec<std::net::IpAddr>,
    pub queue: u16,
}

impl Default for DpiSimOptions {
    /// Level 0, `blocked.test` blocked, queue 100.
    fn default() -> Self {
        DpiSimOptions {
            level: 0,
            block: vec!["blocked.test".into()],
            block_addresses: Vec::new(),
            queue: DEFAULT_QUEUE,
        }
    }
}

/// `veil-dpi-sim` running in [d]; killed on drop.
#[derive(Debug)]
pub struct DpiSim {
    child: Child,
    control: PathBuf,
    log: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl DpiSim {
    /// Queues the router's traffic ([`Topology::queue_router_traffic`]) and
    /// starts the simulator there; returns once it answers on its control
    /// socket (so the queue is bound).
    pub fn start(topology: &Topology, options: DpiSimOptions) -> DpiSim {
        topology.queue_router_traffic(options.queue);
        let dir = tempfile::tempdir().expect("temp dir");
        let control = dir.path().join("control.sock");
        let log = dir.path().join("decisions.jsonl");
        let stderr = dir.path().join("stderr.log");
        let mut command = topology.router.command(binary("veil-dpi-sim"));
        command
            .args(["--queue", &options.queue.to_string()])
            .args(["--level", &options.level.to_string()])
            .arg("--log")
            .arg(&log)
            .arg("--control")
            .arg(&control);
        for name in &options.block {
            command.args(["--block", name]);
        }
        for address in &options.block_addresses {
            command.args(["--block-address", &address.to_string()]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start veil-dpi-sim");
        let mut sim = DpiSim {
            child,
            control,
            log,
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while sim.request("level").is_none() {
            if let Ok(Some(status)) = sim.child.try_wait() {
                panic!("veil-dpi-sim exited ({status}): {}", sim.stderr_text());
            }
            assert!(
                Instant::now() < deadline,
                "veil-dpi-sim did not answer within 10 s: {}",
                sim.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sim
    }

    /// Switches the level at run time; panics unless the simulator agrees.
    pub fn set_level(&self, level: u8) {
        let reply = self.request(&format!("level {level}"));
        assert_eq!(
            reply.as_deref(),
            Some(format!("ok {level}").as_str()),
            "setting level {level}"
        );
    }

    /// The current level.
    pub fn level(&self) -> u8 {
        self.request("level")
            .and_then(|reply| reply.parse().ok())
            .expect("the simulator reports its level")
    }

    /// One control command and its reply line; `None` when the simulator
    /// does not answer.
    pub fn request(&self, line: &str) -> Option<String> {
        let mut stream = UnixStream::connect(&self.control).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        writeln!(stream, "{line}").ok()?;
        let mut reply = String::new();
        BufReader::new(stream).read_line(&mut reply).ok()?;
        let reply = reply.trim().to_string();
        (!reply.is_empty()).then_some(reply)
    }

    /// Every decision logged so far (lines with a `verdict`), oldest first.
    pub fn decisions(&self) -> Vec<Value> {
        self.log_lines()
            .into_iter()
            .filter(|line| line.get("verdict").is_some())
            .collect()
    }

    /// Every JSON line of the log (decisions and level changes).
    pub fn log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The decision log's path.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the simulator (the queue stays, so [d] forwards nothing).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the simulator wrote to stderr.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for DpiSim {
    fn drop(&mut self) {
        self.kill();
    }
}
