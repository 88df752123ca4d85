//! `make cluster`: the tests' Kubernetes control plane for a person — real
//! etcd, kube-apiserver and kube-controller-manager (garbage collector and
//! namespace controller) from `make env` on loopback, Veil's CRDs
//! installed — running until Ctrl-C (or SIGTERM), then stopped and removed.
//!
//! `veil-cluster [--kubeconfig PATH]` also copies the kubeconfig to PATH
//! (removed again on exit), so it can be found at a fixed place.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use veil_e2e::kube::TestCluster;

#[tokio::main]
async fn main() -> Result<()> {
    let copy_to = kubeconfig_arg()?;
    eprintln!("starting etcd and kube-apiserver …");
    let cluster = TestCluster::start().await;
    eprintln!("starting kube-controller-manager (garbage collector, namespaces) …");
    cluster.start_controller_manager().await;
    let kubeconfig = match &copy_to {
        Some(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::copy(cluster.kubeconfig(), path)
                .with_context(|| format!("copying the kubeconfig to {}", path.display()))?;
            std::path::absolute(path).unwrap_or_else(|_| path.clone())
        }
        None => cluster.kubeconfig().to_path_buf(),
    };
    let version = cluster.kubectl_ok(&["version"]);
    println!("API server: {}", cluster.server_url());
    println!("kubeconfig: {}", kubeconfig.display());
    println!("{}", version.trim_end());
    println!();
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get crds");
    println!();
    println!("Ctrl-C stops it and removes its data.");

    wait_for_stop().await?;
    eprintln!("stopping …");
    drop(cluster);
    if let Some(path) = copy_to {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// `--kubeconfig PATH`, if given; any other argument is an error.
fn kubeconfig_arg() -> Result<Option<PathBuf>> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next(), args.next()) {
        (None, _, _) => Ok(None),
        (Some("--kubeconfig"), Some(path), None) => Ok(Some(PathBuf::from(path))),
        _ => bail!("usage: veil-cluster [--kubeconfig PATH]"),
    }
}

/// Returns on Ctrl-C (SIGINT) or SIGTERM.
async fn wait_for_stop() -> Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("listening for Ctrl-C"),
        _ = terminate.recv() => Ok(()),
    }
}
