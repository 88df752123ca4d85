//! Real `veil-operator` processes for end-to-end tests.
//!
//! Binaries come from the cargo target dir the tests were built into (`make
//! test` builds them first); `VEIL_OPERATOR_BIN` overrides the path. Every
//! process is killed when its handle drops, and its log is kept in the
//! handle's temp dir so a failing test can print it.
//!
//! Operators serve HTTPS as they do by default: a `dir:` operator with the
//! CA it makes in its data dir, a `kube` one with one CA shared by every
//! operator of the test process ([`shared_kube_tls`], as replicas share a
//! Secret) unless its arguments name its own `--tls-secret`. The harness's clients, the CLI and agents trust that CA.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Path of a workspace binary (`veil-operator`, `veil-agent`, `veil-bench`).
///
/// Looks next to the running test executable (`target/<profile>/deps/..`),
/// so tests built with `--release` use release binaries.
pub fn binary(name: &str) -> PathBuf {
    let env = format!("{}_BIN", name.to_ascii_uppercase().replace('-', "_"));
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current test executable");
    let mut dir = exe.parent().expect("executable dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the workspace binaries first (`make build` or `cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running `veil-operator run` (a `dir:` source by default) with its own data dir.
pub struct Operator {
    child: Option<Child>,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// The watched directory (`dir:` source); `None` for other sources.
    pub source_dir: Option<PathBuf>,
    /// `--database-url`, when it runs on PostgreSQL.
    pub database_url: Option<String>,
    _tmp: Option<tempfile::TempDir>,
    /// The CA certificate the operator serves under.
    pub ca_file: PathBuf,
    /// A client trusting [`Operator::ca_file`], once that exists.
    http: Option<reqwest::Client>,
}

/// How to start an operator.
#[derive(Clone, Debug, Default)]
pub struct OperatorOptions {
    /// Reuse this data dir (to test restarts); a fresh temp dir when `None`.
    pub data_dir: Option<PathBuf>,
    /// `--database-url` (PostgreSQL).
    pub database_url: Option<String>,
    /// Extra arguments after `run`.
    pub extra_args: Vec<String>,
    /// Listen on this port (to restart an operator at the same address); a free one when `None`.
    pub port: Option<u16>,
    /// `--source` instead of `dir:<source_dir>`, e.g. `kube` (pass
    /// `--kubeconfig` in `extra_args`).
    pub source: Option<String>,
    /// Extra environment, e.g. `POD_NAME` (the leader-election identity).
    pub env: Vec<(String, String)>,
}

impl Operator {
    /// Starts an operator on `source_dir` and waits until `/readyz` answers 200.
    pub async fn start(source_dir: &Path) -> Operator {
        Operator::start_with(source_dir, OperatorOptions::default()).await
    }

    /// Starts an operator with options and waits until it is ready.
    pub async fn start_with(source_dir: &Path, options: OperatorOptions) -> Operator {
        let (tmp, data_dir) = match options.data_dir {
            Some(dir) => (None, dir),
            None => {
                let tmp = tempfile::tempdir().expect("temp dir");
                let dir = tmp.path().join("data");
                (Some(tmp), dir)
            }
        };
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let port = options.port.unwrap_or_else(free_port);
        let log_path = data_dir.join(format!("operator-{port}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let mut command = Command::new(binary("veil-operator"));
        let own_secret = options.extra_args.iter().any(|a| a == "--tls-secret");
        let mut tls_args = Vec::new();
        let ca_file = if own_secret {
            data_dir.join("tls-secret").join("ca.crt")
        } else if options.source.is_some() {
            let shared = shared_kube_tls();
            for (flag, file) in [
                ("--tls-cert", "tls.crt"),
                ("--tls-key", "tls.key"),
                ("--tls-ca", "ca.crt"),
            ] {
                tls_args.push(flag.to_owned());
                tls_args.push(shared.join(file).display().to_string());
            }
            shared.join("ca.crt")
        } else {
            data_dir.join("tls").join("ca.crt")
        };
        command
            .arg("run")
            .args(&tls_args)
            .arg("--source")
            .arg(
                options
                    .source
                    .clone()
                    .unwrap_or_else(|| format!("dir:{}", source_dir.display())),
            )
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&options.extra_args)
            .env("RUST_LOG", "info")
            .envs(options.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        if let Some(url) = &options.database_url {
            command.arg("--database-url").arg(url);
        }
        let child = command.spawn().expect("spawn veil-operator");
        let mut operator = Operator {
            child: Some(child),
            url: format!("https://127.0.0.1:{port}"),
            data_dir,
            log_path,
            source_dir: options.source.is_none().then(|| source_dir.to_path_buf()),
            database_url: options.database_url.clone(),
            _tmp: tmp,
            ca_file,
            http: None,
        };
        operator.wait_ready(Duration::from_secs(30)).await;
        operator
    }

    async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("veil-operator exited early ({status}):\n{}", self.log());
            }
            if self.http.is_none() && self.ca_file.exists() {
                self.http = Some(client_trusting(&self.ca_file));
                known_cas()
                    .lock()
                    .expect("CA list")
                    .push(self.ca_file.clone());
            }
            if let Some(http) = &self.http
                && let Ok(response) = http.get(format!("{}/readyz", self.url)).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "veil-operator not ready within {timeout:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// An HTTP client that trusts this operator's CA (and no other).
    pub fn client(&self) -> reqwest::Client {
        self.http
            .clone()
            .unwrap_or_else(|| client_trusting(&self.ca_file))
    }

    /// A raw TLS connection to the API, verified against this operator's
    /// CA, for tests that write requests by hand.
    pub async fn tls_stream(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let addr: std::net::SocketAddr = self
            .url
            .trim_start_matches("https://")
            .parse()
            .expect("an https://IP:PORT operator URL");
        let tls = veil_agent::trust::Trust::ca_file(&self.ca_file)
            .and_then(|trust| trust.rustls_config())
            .expect("a TLS client for the operator's CA");
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the operator");
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
            .connect(
                rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
                tcp,
            )
            .await
            .expect("TLS handshake with the operator")
    }

    /// What the operator logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// One sample of a metric in the operator's `/metrics` (`name` may
    /// include labels), or `None` when it cannot be read.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self
            .client()
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// The admin token the operator wrote into its data dir.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .expect("admin.token in the data dir")
            .trim()
            .to_owned()
    }

    /// `GET path` with the admin token; returns status and JSON body.
    pub async fn api(&self, path: &str) -> (u16, Value) {
        let response = self
            .client()
            .get(format!("{}{path}", self.url))
            .bearer_auth(self.token())
            .send()
            .await
            .expect("operator reachable");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Objects of `kind` in every namespace, with status.
    pub async fn objects(&self, kind: &str) -> Vec<Value> {
        let (status, body) = self.api(&format!("/v1/objects/{kind}")).await;
        assert_eq!(status, 200, "list {kind}: {body}");
        body["items"].as_array().cloned().unwrap_or_default()
    }

    /// One object by name (any namespace), if present; filtered by the
    /// server, so polling one object stays cheap next to thousands.
    pub async fn object(&self, kind: &str, name: &str) -> Option<Value> {
        let (status, body) = self.api(&format!("/v1/objects/{kind}?name={name}")).await;
        assert_eq!(status, 200, "get {kind} {name}: {body}");
        body["items"].as_array()?.first().cloned()
    }

    /// The source's load errors.
    pub async fn errors(&self) -> Vec<Value> {
        let (status, body) = self.api("/v1/errors").await;
        assert_eq!(status, 200, "errors: {body}");
        body["errors"].as_array().cloned().unwrap_or_default()
    }

    /// Polls `check` every 10 ms until it returns `Some`, or panics after `timeout` with the log.
    pub async fn eventually<T, F, Fut>(&self, what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}\noperator log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs the `veil-operator` CLI against this operator (`get …` etc.).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(binary("veil-operator"))
            .args(args)
            .env("VEIL_SERVER", &self.url)
            .env("VEIL_TOKEN_FILE", self.data_dir.join("admin.token"))
            .env("VEIL_CA_FILE", &self.ca_file)
            .output()
            .expect("run veil-operator CLI")
    }

    /// Sends SIGKILL and waits for the process to end.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (graceful stop) and waits up to 10 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
    }
}

/// SIGTERM, then SIGKILL if `child` has not exited within `grace`.
pub fn terminate(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Operator {
    /// Declares `node`'s VeilNode with `labels` (`key=value`) in the
    /// watched directory, as its owner would: selectors match these labels,
    /// never the ones an agent reports. Panics for a non-`dir:` source
    /// (apply the VeilNode to the cluster there).
    pub fn declare_node_labels(&self, node: &str, labels: &[&str]) {
        let dir = self.source_dir.as_ref().unwrap_or_else(|| {
            panic!("declare node labels for {node}: the operator has no dir: source; apply a VeilNode with spec.labels instead")
        });
        let mut yaml = format!(
            "apiVersion: veil.dev/v1alpha1\nkind: VeilNode\nmetadata:\n  name: {node}\nspec:\n  labels:\n"
        );
        for label in labels {
            let (key, value) = label.split_once('=').expect("labels are key=value");
            yaml.push_str(&format!("    {key}: {value:?}\n"));
        }
        let path = dir.join(format!("veilnode-{node}.yaml"));
        let tmp = dir.join(format!(".veilnode-{node}.yaml.tmp~"));
        std::fs::write(&tmp, yaml).expect("write the VeilNode");
        std::fs::rename(&tmp, &path).expect("publish the VeilNode");
    }

    /// `veil-operator token create --node NODE` against this operator's
    /// store; the token (taken out of the printed join value).
    pub fn create_token(&self, node: &str) -> String {
        let join = self.create_join(node);
        veil_agent::join::JoinValue::parse(&join)
            .expect("token create prints a join value")
            .token
    }

    /// `veil-operator token create --node NODE`: the join value it prints.
    pub fn create_join(&self, node: &str) -> String {
        let data_dir = self.data_dir.display().to_string();
        let ca_file = self.ca_file.display().to_string();
        let mut args = vec![
            "token",
            "create",
            "--node",
            node,
            "--data-dir",
            &data_dir,
            "--ca-file",
            &ca_file,
        ];
        if let Some(url) = &self.database_url {
            args.extend(["--database-url", url]);
        }
        let out = self.cli(&args);
        assert!(
            out.status.success(),
            "token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// A running `veil-agent`.
pub struct Agent {
    child: Option<Child>,
    pub node: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Agent {
    /// Starts an agent for `node` against `operator`, with a fresh token and data dir.
    pub fn start(operator: &Operator, node: &str, labels: &[&str]) -> Agent {
        let token = operator.create_token(node);
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("agent");
        Agent::start_in(operator, node, labels, &token, tmp, data_dir)
    }

    /// Starts an agent with a given token and data dir (to restart one).
    pub fn start_in(
        operator: &Operator,
        node: &str,
        labels: &[&str],
        token: &str,
        tmp: tempfile::TempDir,
        data_dir: PathBuf,
    ) -> Agent {
        Agent::spawn(
            operator,
            node,
            labels,
            token,
            tmp,
            data_dir,
            &AgentOptions::default(),
        )
    }

    /// Starts an agent with a fresh token and data dir, and `options`.
    pub fn start_with(
        operator: &Operator,
        node: &str,
        labels: &[&str],
        options: &AgentOptions,
    ) -> Agent {
        let token = operator.create_token(node);
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("agent");
        Agent::spawn(operator, node, labels, &token, tmp, data_dir, options)
    }

    /// Restarts an agent on the data dir and token of a killed one.
    pub fn restart(
        operator: &Operator,
        node: &str,
        labels: &[&str],
        killed: (tempfile::TempDir, PathBuf),
        options: &AgentOptions,
    ) -> Agent {
        let (tmp, data_dir) = killed;
        let token = std::fs::read_to_string(data_dir.join("node.token")).expect("token file");
        Agent::spawn(operator, node, labels, &token, tmp, data_dir, options)
    }

    fn spawn(
        operator: &Operator,
        node: &str,
        labels: &[&str],
        token: &str,
        tmp: tempfile::TempDir,
        data_dir: PathBuf,
        options: &AgentOptions,
    ) -> Agent {
        std::fs::create_dir_all(&data_dir).expect("agent data dir");
        let token_file = data_dir.join("node.token");
        std::fs::write(&token_file, token).expect("token file");
        Agent::spawn_with_token_file(operator, node, labels, &token_file, tmp, data_dir, options)
    }

    /// Starts an agent reading its token from `token_file`, which may not
    /// exist yet (the agent waits for it, as a DaemonSet pod waits for its
    /// node's key in the mounted Secret).
    pub fn start_with_token_file(operator: &Operator, node: &str, token_file: &Path) -> Agent {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("agent");
        std::fs::create_dir_all(&data_dir).expect("agent data dir");
        Agent::spawn_with_token_file(
            operator,
            node,
            &[],
            token_file,
            tmp,
            data_dir,
            &AgentOptions::default(),
        )
    }

    fn spawn_with_token_file(
        operator: &Operator,
        node: &str,
        labels: &[&str],
        token_file: &Path,
        tmp: tempfile::TempDir,
        data_dir: PathBuf,
        options: &AgentOptions,
    ) -> Agent {
        if !labels.is_empty() {
            operator.declare_node_labels(node, labels);
        }
        // Task processes run as an unprivileged user and must pass through
        // the temp dir to their work dirs under `<data dir>/runs` (the
        // agent makes the data dir itself 0711); 0711 lets them pass, not list.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711))
                .expect("temp dir mode");
        }
        let log_path = data_dir.join("agent.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("agent log");
        let program = options
            .binary
            .clone()
            .unwrap_or_else(|| binary("veil-agent"));
        let mut command = match &options.netns {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", namespace]).arg(program);
                command
            }
            None => Command::new(program),
        };
        command
            .arg("--operator")
            .arg(options.operator_url.as_deref().unwrap_or(&operator.url))
            .arg("--node")
            .arg(node)
            .arg("--token-file")
            .arg(token_file)
            .arg("--ca-file")
            .arg(&operator.ca_file)
            .arg("--data-dir")
            .arg(&data_dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for label in &options.reported_labels {
            command.arg("--label").arg(label);
        }
        match &options.path {
            Some(path) => {
                command.env("PATH", path);
            }
            None => {
                // xray from `make env`, also when tests run without `make`.
                let inherited = std::env::var("PATH").unwrap_or_default();
                if let Some(xray) = crate::xray::xray_dir() {
                    command.env("PATH", format!("{}:{inherited}", xray.display()));
                }
            }
        }
        for (name, value) in &options.env {
            command.env(name, value);
        }
        let child = command.spawn().expect("spawn veil-agent");
        Agent {
            child: Some(child),
            node: node.to_owned(),
            data_dir,
            log_path,
            _tmp: tmp,
        }
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL, like a crash; returns the temp dir so the agent can be
    /// restarted on the same data. The xray it ran keeps running.
    pub fn kill(mut self) -> (tempfile::TempDir, PathBuf) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let tmp = std::mem::replace(&mut self._tmp, tempfile::tempdir().expect("temp dir"));
        (tmp, self.data_dir.clone())
    }

    /// SIGTERM (a graceful stop, as `systemctl stop`) and waits up to 10 s;
    /// returns the temp dir so the agent can be restarted on the same data.
    /// The xray it ran keeps running.
    pub fn stop(mut self) -> (tempfile::TempDir, PathBuf) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
        let tmp = std::mem::replace(&mut self._tmp, tempfile::tempdir().expect("temp dir"));
        (tmp, self.data_dir.clone())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(5));
            // xray outlives the agent by design; a test leaves none behind.
            stop_left_xray(&self.data_dir.join("servers"));
        }
    }
}

/// Kills every xray recorded as running under an xray driver's data dir
/// (`<agent data dir>/servers`: one `*/state.json` per server), if the pid
/// is still that process.
pub fn stop_left_xray(servers_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(servers_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read(entry.path().join("state.json")) else {
            continue;
        };
        let Ok(record) = serde_json::from_slice::<Value>(&text) else {
            continue;
        };
        let (Some(pid), Some(start_time)) = (
            record["pid"].as_u64().and_then(|p| u32::try_from(p).ok()),
            record["start_time"].as_u64(),
        ) else {
            continue;
        };
        let recorded = veil_agent::drivers::xray::process::Identity { pid, start_time };
        if recorded.is_alive() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

impl Agent {
    /// Starts an agent whose processes see only `path` as PATH (to hide tools).
    pub fn start_with_path(operator: &Operator, node: &str, labels: &[&str], path: &str) -> Agent {
        let token = operator.create_token(node);
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("agent");
        let options = AgentOptions {
            path: Some(path.to_owned()),
            ..AgentOptions::default()
        };
        Agent::spawn(operator, node, labels, &token, tmp, data_dir, &options)
    }
}

/// How to start an agent.
#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    /// The agent's whole `PATH` (to hide tools); default: the test's `PATH`
    /// with the xray of `make env` in front.
    pub path: Option<String>,
    /// Extra environment, e.g. `VEIL_STATS_INTERVAL=1s`.
    pub env: Vec<(String, String)>,
    /// Labels the agent reports with `--label` (shown in status only; node
    /// selectors match the VeilNode's labels, the `labels` of `Agent::start*`).
    pub reported_labels: Vec<String>,
    /// `--operator` when not the operator's own URL (a proxy in front of it).
    pub operator_url: Option<String>,
    /// The agent executable; default: the workspace's `veil-agent`.
    pub binary: Option<PathBuf>,
    /// Start it with `ip netns exec NAMESPACE` (that namespace's network
    /// and `/etc/netns/NAMESPACE/hosts` as its hosts file).
    pub netns: Option<String>,
}

/// A reqwest client trusting only the CA certificate in `ca_file`.
pub fn client_trusting(ca_file: &Path) -> reqwest::Client {
    veil_agent::trust::Trust::ca_file(ca_file)
        .and_then(|trust| trust.http_client(reqwest::Client::builder()))
        .expect("a client trusting the operator's CA")
}

/// The CA and serving certificate (127.0.0.1, localhost) every `kube`
/// operator of this test process serves, like replicas mounting one
/// `tls.crt`/`tls.key`/`ca.crt` Secret: `ca.crt`, `tls.crt`, `tls.key` in
/// the returned directory (kept until the process ends).
pub fn shared_kube_tls() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "veil test replicas CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("serving key");
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let cert = CertificateParams::new(names)
            .expect("serving params")
            .signed_by(&key, &issuer)
            .expect("serving certificate");
        std::fs::write(dir.join("ca.crt"), ca.pem()).expect("ca.crt");
        std::fs::write(dir.join("tls.crt"), format!("{}{}", cert.pem(), ca.pem()))
            .expect("tls.crt");
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("tls.key");
        dir
    })
    .clone()
}

fn known_cas() -> &'static std::sync::Mutex<Vec<PathBuf>> {
    static CAS: std::sync::OnceLock<std::sync::Mutex<Vec<PathBuf>>> = std::sync::OnceLock::new();
    CAS.get_or_init(Default::default)
}

/// A reqwest client trusting the CA of every operator this test process
/// started so far (for tests that build requests by URL); prefer
/// [`Operator::client`], which trusts that operator's only.
pub fn test_client() -> reqwest::Client {
    let mut certs = Vec::new();
    for path in known_cas().lock().expect("CA list").iter() {
        if let Ok(veil_agent::trust::Trust::CaFile(found)) = veil_agent::trust::Trust::ca_file(path)
        {
            certs.extend(found);
        }
    }
    let trust = if certs.is_empty() {
        veil_agent::trust::Trust::Plaintext
    } else {
        veil_agent::trust::Trust::CaFile(certs)
    };
    trust
        .http_client(reqwest::Client::builder())
        .expect("a client trusting the test operators' CAs")
}
