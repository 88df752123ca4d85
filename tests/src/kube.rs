//! A real Kubernetes control plane for tests: `etcd` and `kube-apiserver`
//! (built by `make env`) on free loopback ports, with Veil's CRDs installed.
//!
//! [`TestCluster::start`] generates a CA and serving certificate, a static
//! admin token (group `system:masters`), service-account signing keys and a
//! kubeconfig in a temp dir; starts etcd with its data there; starts the API
//! server with RBAC authorization; waits for `/readyz`; applies
//! `manifests/crds/` and waits until every CRD is Established. Each wait is
//! bounded and fails with the tail of the process's log.
//!
//! [`TestCluster::start_controller_manager`] adds `kube-controller-manager`
//! with the garbage collector and the namespace controller, for tests of
//! what the cluster does with `ownerReferences`; without it nothing acts on
//! them.
//!
//! Every process is killed (by PID) when the cluster is dropped, and — for
//! a cluster that is never dropped, like [`TestCluster::shared`] — by a
//! watcher process as soon as the test process exits. Missing binaries fail
//! the test with "run `make env`"; nothing is skipped.

mod files;
mod pods;
mod processes;

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

pub use files::ADMIN_USER;
use files::ClusterFiles;
use processes::{NotReady, binary, check_output, kill, port_taken, terminate, wait_ready};

use crate::process::free_port;

/// How long etcd may take to report healthy.
const ETCD_READY: Duration = Duration::from_secs(60);
/// How long the API server may take to answer `/readyz` with 200 (its
/// first start bootstraps RBAC roles and priority levels).
const APISERVER_READY: Duration = Duration::from_secs(120);
/// How long `kubectl wait` waits for the CRDs to be Established.
const CRDS_ESTABLISHED: &str = "60s";
/// How long the controller manager may take to answer `/healthz` with 200.
const CONTROLLER_MANAGER_READY: Duration = Duration::from_secs(60);
/// Grace before SIGKILL when the API server is stopped.
const APISERVER_STOP_GRACE: Duration = Duration::from_secs(15);
/// Attempts at starting a process whose free port was taken meanwhile.
const PORT_ATTEMPTS: usize = 3;

/// A running etcd + kube-apiserver with Veil's CRDs.
pub struct TestCluster {
    dir: PathBuf,
    files: ClusterFiles,
    port: u16,
    etcd_url: String,
    processes: Mutex<Processes>,
    /// Held open until drop; its EOF tells the watcher to clean up.
    _watcher: ChildStdin,
}

#[derive(Default)]
struct Processes {
    etcd: Option<Child>,
    apiserver: Option<Child>,
    controller_manager: Option<Child>,
}

impl TestCluster {
    /// Starts a new cluster (see the module docs).
    ///
    /// # Panics
    /// If any part does not start, with the reason and the process's log.
    pub async fn start() -> TestCluster {
        match TestCluster::try_start().await {
            Ok(cluster) => cluster,
            Err(error) => panic!("starting the test Kubernetes cluster: {error:#}"),
        }
    }

    /// One cluster for the whole test process, started on first use. Tests
    /// that stop or restart the API server should start their own instead.
    ///
    /// # Panics
    /// Like [`TestCluster::start`], in every test that asks after a failure.
    pub async fn shared() -> &'static TestCluster {
        static SHARED: tokio::sync::OnceCell<Result<TestCluster, String>> =
            tokio::sync::OnceCell::const_new();
        let cluster = SHARED
            .get_or_init(|| async {
                TestCluster::try_start()
                    .await
                    .map_err(|error| format!("{error:#}"))
            })
            .await;
        match cluster {
            Ok(cluster) => cluster,
            Err(message) => panic!("starting the test Kubernetes cluster: {message}"),
        }
    }

    async fn try_start() -> Result<TestCluster> {
        // Fail before creating anything when `make env` has not run.
        for name in ["etcd", "kube-apiserver", "kubectl"] {
            binary(name)?;
        }
        let dir = tempfile::Builder::new()
            .prefix("veil-test-kube-")
            .tempdir()
            .context("creating the cluster's temp dir")?
            .keep();
        let watcher = processes::spawn_watcher(&dir)?;
        let port = free_port();
        let files = files::write_all(&dir, &format!("https://127.0.0.1:{port}"))?;
        let mut cluster = TestCluster {
            dir,
            files,
            port,
            etcd_url: String::new(),
            processes: Mutex::new(Processes::default()),
            _watcher: watcher,
        };
        cluster.start_etcd().await?;
        cluster.start_first_apiserver().await?;
        cluster.install_crds()?;
        Ok(cluster)
    }

    /// The kubeconfig (admin token, CA, server URL) for `kubectl --kubeconfig`.
    pub fn kubeconfig(&self) -> &Path {
        &self.files.kubeconfig
    }

    /// `https://127.0.0.1:PORT`; the same across API server restarts.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The admin's bearer token (user [`ADMIN_USER`], group `system:masters`).
    pub fn token(&self) -> &str {
        &self.files.token
    }

    /// The CA certificate (PEM file) the API server's certificate is signed by.
    pub fn ca_cert(&self) -> &Path {
        &self.files.ca_cert
    }

    /// `http://127.0.0.1:PORT` of etcd.
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// The temp dir holding keys, logs and etcd's data; removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the API server logged so far (all its runs).
    pub fn apiserver_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kube-apiserver.log")).unwrap_or_default()
    }

    /// Runs `kubectl --kubeconfig <this cluster> ARGS` and returns its output.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command(args)
            .output()
            .expect("running kubectl")
    }

    /// `kubectl` with this cluster's kubeconfig and `args`, not started
    /// (for a long-running `--watch`).
    pub fn kubectl_command(&self, args: &[&str]) -> std::process::Command {
        let kubectl = binary("kubectl").expect("kubectl from `make env`");
        let mut command = std::process::Command::new(kubectl);
        command
            .arg("--kubeconfig")
            .arg(&self.files.kubeconfig)
            .args(args);
        command
    }

    /// Like [`TestCluster::kubectl`], but panics with stderr unless it
    /// succeeds; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args);
        if let Err(error) = check_output(&format!("kubectl {}", args.join(" ")), &output) {
            panic!("{error:#}");
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `kubectl get ARGS -o json` (ARGS may name a namespace), or `None`
    /// when the object does not exist; any other failure panics with
    /// kubectl's message.
    pub fn get_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend(["-o", "json"]);
        let output = self.kubectl(&all);
        if output.status.success() {
            return Some(serde_json::from_slice(&output.stdout).expect("kubectl printed JSON"));
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("NotFound"), "kubectl {all:?}: {stderr}");
        None
    }

    /// A `veil-operator run --source kube` against this cluster, watching
    /// `namespace` only, with Lease identity `pod_name` (its Lease in
    /// `namespace` too) and a fresh, empty data dir.
    pub async fn operator(&self, namespace: &str, pod_name: &str) -> crate::process::Operator {
        let unused = tempfile::tempdir().expect("temp dir");
        crate::process::Operator::start_with(
            unused.path(),
            crate::process::OperatorOptions {
                source: Some("kube".into()),
                extra_args: vec![
                    "--kubeconfig".into(),
                    self.kubeconfig().display().to_string(),
                    "--namespace".into(),
                    namespace.into(),
                ],
                env: vec![
                    ("POD_NAME".into(), pod_name.into()),
                    ("POD_NAMESPACE".into(), namespace.into()),
                ],
                ..crate::process::OperatorOptions::default()
            },
        )
        .await
    }

    /// A replica of a several-replica operator: like
    /// [`TestCluster::operator`], on the shared PostgreSQL database
    /// `database_url`, and first given a Pod `pod_name` (IP 127.0.0.1, where
    /// every test process listens) of the ReplicaSet `replica_set`, which
    /// wants 2 replicas — what its peers check before forwarding to it.
    pub async fn replica(
        &self,
        namespace: &str,
        replica_set: &str,
        pod_name: &str,
        database_url: &str,
    ) -> crate::process::Operator {
        self.replica_pod(namespace, replica_set, 2, pod_name, "127.0.0.1");
        let unused = tempfile::tempdir().expect("temp dir");
        crate::process::Operator::start_with(
            unused.path(),
            crate::process::OperatorOptions {
                source: Some("kube".into()),
                database_url: Some(database_url.to_owned()),
                extra_args: vec![
                    "--kubeconfig".into(),
                    self.kubeconfig().display().to_string(),
                    "--namespace".into(),
                    namespace.into(),
                ],
                env: vec![
                    ("POD_NAME".into(), pod_name.into()),
                    ("POD_NAMESPACE".into(), namespace.into()),
                ],
                ..crate::process::OperatorOptions::default()
            },
        )
        .await
    }

    /// A client authenticated as the admin; a new one per call, so it
    /// belongs to the caller's tokio runtime.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.files.kubeconfig)
            .expect("reading kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("a client config from the kubeconfig");
        kube::Client::try_from(config).expect("a kube client")
    }

    /// What the controller manager logged so far.
    pub fn controller_manager_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kube-controller-manager.log")).unwrap_or_default()
    }

    /// Starts `kube-controller-manager` (garbage collector and namespace
    /// controller, no leader election) against this cluster on a free
    /// loopback port, and waits until its `/healthz` answers 200. It is
    /// killed with the cluster. The garbage collector builds its graph of
    /// owners in the background after that, so a test waits for its effect
    /// with a deadline rather than assuming it is immediate.
    ///
    /// # Panics
    /// If it is already running, its binary is missing (run `make env`), or
    /// it does not become healthy.
    pub async fn start_controller_manager(&self) {
        assert!(
            self.lock().controller_manager.is_none(),
            "the controller manager is already running"
        );
        if let Err(error) = self.try_start_controller_manager().await {
            panic!("starting kube-controller-manager: {error:#}");
        }
    }

    async fn try_start_controller_manager(&self) -> Result<()> {
        let log = self.dir.join("kube-controller-manager.log");
        let mut last = anyhow!("no attempt made");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let command = processes::controller_manager_command(&self.files, port)?;
            let child = processes::spawn_logged(command, &log)?;
            {
                let mut processes = self.lock();
                processes.controller_manager = Some(child);
                self.record_pids(&processes);
            }
            let http = self.https_client()?;
            let healthz = format!("https://127.0.0.1:{port}/healthz");
            let result = wait_ready(
                "kube-controller-manager",
                &log,
                CONTROLLER_MANAGER_READY,
                || exit_status(&mut self.lock().controller_manager),
                || async {
                    http.get(&healthz)
                        .send()
                        .await
                        .is_ok_and(|response| response.status().is_success())
                },
            )
            .await;
            match result {
                Ok(()) => return Ok(()),
                Err(NotReady::Exited(error)) if port_taken(&error) => last = error,
                Err(error) => return Err(error.into_error()),
            }
        }
        Err(last)
    }

    /// Stops the API server (SIGTERM, SIGKILL after a grace period); etcd
    /// keeps running. Does nothing when it is not running.
    pub fn stop_apiserver(&self) {
        let mut processes = self.lock();
        if let Some(mut child) = processes.apiserver.take() {
            terminate(&mut child, APISERVER_STOP_GRACE);
        }
        self.record_pids(&processes);
    }

    /// Starts the API server again on the same port, with the same
    /// certificates and token, and waits until it is ready.
    ///
    /// # Panics
    /// If it is already running, or does not become ready.
    pub async fn start_apiserver(&self) {
        assert!(
            self.lock().apiserver.is_none(),
            "the API server is already running"
        );
        if let Err(error) = self.spawn_apiserver().await {
            panic!("restarting the API server: {:#}", error.into_error());
        }
    }

    /// [`TestCluster::stop_apiserver`], then [`TestCluster::start_apiserver`].
    pub async fn restart_apiserver(&self) {
        self.stop_apiserver();
        self.start_apiserver().await;
    }

    fn lock(&self) -> MutexGuard<'_, Processes> {
        self.processes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record_pids(&self, processes: &Processes) {
        let pids: Vec<u32> = [
            &processes.etcd,
            &processes.apiserver,
            &processes.controller_manager,
        ]
        .into_iter()
        .flatten()
        .map(Child::id)
        .collect();
        // Without the file the watcher kills nothing; the children still die on drop.
        let _ = processes::write_pids(&self.dir, &pids);
    }

    /// Starts etcd on free ports, retrying when a port was taken meanwhile.
    async fn start_etcd(&mut self) -> Result<()> {
        let log = self.dir.join("etcd.log");
        let mut last = anyhow!("no attempt made");
        for _ in 0..PORT_ATTEMPTS {
            let client_port = free_port();
            let command = processes::etcd_command(&self.dir, client_port, free_port())?;
            let child = processes::spawn_logged(command, &log)?;
            {
                let mut processes = self.lock();
                processes.etcd = Some(child);
                self.record_pids(&processes);
            }
            let url = format!("http://127.0.0.1:{client_port}");
            let http = reqwest::Client::new();
            let health = format!("{url}/health");
            let result = wait_ready(
                "etcd",
                &log,
                ETCD_READY,
                || exit_status(&mut self.lock().etcd),
                || async {
                    match http.get(&health).send().await {
                        Ok(response) if response.status().is_success() => response
                            .text()
                            .await
                            .is_ok_and(|body| body.contains("\"true\"")),
                        _ => false,
                    }
                },
            )
            .await;
            match result {
                Ok(()) => {
                    self.etcd_url = url;
                    return Ok(());
                }
                Err(NotReady::Exited(error)) if port_taken(&error) => last = error,
                Err(error) => return Err(error.into_error()),
            }
        }
        Err(last)
    }

    /// The first API server start: on a free port, retried on a new port
    /// (and kubeconfig) when the port was taken meanwhile.
    async fn start_first_apiserver(&mut self) -> Result<()> {
        for attempt in 1..=PORT_ATTEMPTS {
            match self.spawn_apiserver().await {
                Ok(()) => return Ok(()),
                Err(NotReady::Exited(error)) if port_taken(&error) && attempt < PORT_ATTEMPTS => {
                    self.port = free_port();
                    self.files = files::write_all(&self.dir, &self.server_url())?;
                }
                Err(error) => return Err(error.into_error()),
            }
        }
        Err(anyhow!("no attempt made"))
    }

    /// Spawns the API server on `self.port` and waits for `/readyz`.
    async fn spawn_apiserver(&self) -> std::result::Result<(), NotReady> {
        let log = self.dir.join("kube-apiserver.log");
        let command =
            processes::apiserver_command(&self.dir, &self.files, &self.etcd_url, self.port)
                .map_err(NotReady::TimedOut)?;
        let child = processes::spawn_logged(command, &log).map_err(NotReady::TimedOut)?;
        {
            let mut processes = self.lock();
            processes.apiserver = Some(child);
            self.record_pids(&processes);
        }
        let http = self.https_client().map_err(NotReady::TimedOut)?;
        let readyz = format!("{}/readyz", self.server_url());
        wait_ready(
            "kube-apiserver",
            &log,
            APISERVER_READY,
            || exit_status(&mut self.lock().apiserver),
            || async {
                http.get(&readyz)
                    .bearer_auth(&self.files.token)
                    .send()
                    .await
                    .is_ok_and(|response| response.status().is_success())
            },
        )
        .await
    }

    /// An HTTPS client that trusts this cluster's CA only.
    fn https_client(&self) -> Result<reqwest::Client> {
        let pem = std::fs::read(&self.files.ca_cert).context("reading the CA certificate")?;
        let ca = reqwest::Certificate::from_pem(&pem).context("parsing the CA certificate")?;
        reqwest::Client::builder()
            .add_root_certificate(ca)
            .tls_built_in_root_certs(false)
            .timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTPS client")
    }

    /// Applies `manifests/crds/*.yaml` (server-side) and waits until each
    /// CRD is Established.
    fn install_crds(&self) -> Result<()> {
        let dir = crds_dir();
        let mut names = Vec::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path
                .extension()
                .is_some_and(|extension| extension == "yaml")
                && let Some(stem) = path.file_stem().and_then(|stem| stem.to_str())
            {
                names.push(format!("crd/{stem}"));
            }
        }
        anyhow::ensure!(!names.is_empty(), "no CRDs in {}", dir.display());
        let dir_arg = dir.display().to_string();
        let apply = self.kubectl(&["apply", "--server-side", "-f", &dir_arg]);
        check_output("kubectl apply -f manifests/crds/", &apply)?;
        let timeout = format!("--timeout={CRDS_ESTABLISHED}");
        let mut wait = vec!["wait", "--for=condition=Established", timeout.as_str()];
        wait.extend(names.iter().map(String::as_str));
        // A CRD read before the API server gave it any status makes
        // `kubectl wait` fail at once ("accessor error: <nil>") instead of
        // waiting: ask again, a bounded number of times.
        let mut output = self.kubectl(&wait);
        for _ in 0..20 {
            let early = String::from_utf8_lossy(&output.stderr).contains("accessor error");
            if output.status.success() || !early {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            output = self.kubectl(&wait);
        }
        check_output("kubectl wait for the CRDs", &output)
    }
}

/// `manifests/crds/` of this workspace.
pub fn crds_dir() -> PathBuf {
    workspace_root().join("manifests/crds")
}

/// The workspace root (the parent of the `tests` crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// `Some(status)` once the process in `slot` has exited (or is gone).
fn exit_status(slot: &mut Option<Child>) -> Option<String> {
    match slot.as_mut().map(Child::try_wait) {
        Some(Ok(None)) => None,
        Some(Ok(Some(status))) => Some(status.to_string()),
        Some(Err(error)) => Some(error.to_string()),
        None => Some("not running".to_owned()),
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let mut processes = self.lock();
        // Nothing left for the watcher to kill: these PIDs may be reused.
        let _ = processes::write_pids(&self.dir, &[]);
        if let Some(mut child) = processes.controller_manager.take() {
            kill(&mut child);
        }
        if let Some(mut child) = processes.apiserver.take() {
            kill(&mut child);
        }
        if let Some(mut child) = processes.etcd.take() {
            kill(&mut child);
        }
        drop(processes);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A tool `make env` builds into `$VEIL_CACHE/bin` (`kubectl`, `helm`, …);
/// an error saying to run `make env` when it is missing.
pub fn env_tool(name: &str) -> Result<PathBuf> {
    processes::binary(name)
}
