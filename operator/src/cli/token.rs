//! `veil-operator token create|list|revoke`: node tokens for agents.
//!
//! Works on the store directly (SQLite file or PostgreSQL), so it runs next
//! to a running operator. A token is printed once and stored only as a hash.
//!
//! With `--kube` (Kubernetes mode), `create` and `revoke` write or delete
//! the node's own token Secret in the operator's namespace instead
//! ([`cluster`]): every replica accepts what it holds. This is for agents
//! outside the cluster; agents of the DaemonSet use their pod's
//! ServiceAccount token and need none.

mod cluster;

use std::path::PathBuf;

use chrono::Utc;
use veil_agent::join::JoinValue;
use veil_agent::trust::CaPin;
use veil_crds::validate::DnsName;

use crate::admin::{generate_token, hash_token};
use crate::leader::operator_namespace;
use crate::node_tokens::{NODE_TOKEN_SECRET_TYPE, token_secret_name};
use crate::store::{Store, StoreError, StoreTarget};

use super::DEFAULT_DATA_DIR;

/// Where the store is (same flags as `run`).
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Data directory holding the SQLite database.
    #[arg(long, env = "VEIL_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// PostgreSQL URL, when the operator uses PostgreSQL.
    #[arg(long, env = "VEIL_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// Where tokens go in Kubernetes mode.
#[derive(Debug, clap::Args)]
pub struct KubeArgs {
    /// Kubernetes mode: write the node's Secret `veil-node-token-NODE`
    /// (type `veil.dev/node-token`) in the operator's namespace instead of
    /// the store (for agents outside the cluster).
    #[arg(long)]
    pub kube: bool,
    /// With --kube: the kubeconfig to use (its current context). Default:
    /// KUBECONFIG, ~/.kube/config, then the in-cluster service account.
    #[arg(long, requires = "kube")]
    pub kubeconfig: Option<PathBuf>,
    /// With --kube: the operator's namespace. Default: POD_NAMESPACE, else
    /// `veil-system`.
    #[arg(long, requires = "kube")]
    pub namespace: Option<String>,
    /// With --kube: the operator's TLS Secret (its `--tls-secret`), whose
    /// `ca.crt` the printed join value pins.
    #[arg(long, requires = "kube", default_value = "veil-operator-tls")]
    pub tls_secret: String,
}

/// What goes into a join value besides the token.
#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// The operator URL agents use, e.g. `https://203.0.113.5:7070`.
    /// Default: DATA_DIR/operator.url, written by the running operator
    /// (from --advertise-url or --listen); none when neither is known.
    #[arg(long)]
    pub url: Option<String>,
    /// The operator's CA certificate, whose SHA-256 agents pin. Default:
    /// the one the operator serves under (DATA_DIR/tls-secret/ca.crt with
    /// --tls-secret, else DATA_DIR/tls/ca.crt, the CA it made).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

/// `token` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token for one node and print its join value once: the
    /// operator's URL, the token and the SHA-256 of the operator's CA
    /// certificate (`veil-join-v1.…`; keep it in the agent's --token-file).
    ///
    /// With --kube the token goes into the Secret `veil-node-token-NODE`
    /// under the node's name (a node's previous token there is replaced).
    Create {
        /// Node name the token is bound to (the agent's --node).
        #[arg(long)]
        node: String,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        kube: KubeArgs,
        #[command(flatten)]
        join: JoinArgs,
    },
    /// List tokens (ids, nodes, creation and revocation times; never the tokens).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a token by id (or, with --kube, a node's token by node name);
    /// the agent using it gets 401 from then on.
    Revoke {
        /// Token id as shown by `token list`.
        #[arg(required_unless_present = "kube", conflicts_with = "kube")]
        id: Option<String>,
        /// With --kube: the node whose Secret `veil-node-token-NODE` is deleted.
        #[arg(long, requires = "kube", required_if_eq("kube", "true"))]
        node: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        kube: KubeArgs,
    },
}

/// Why a token command failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("invalid node name `{0}`: {1}")]
    NodeName(String, String),
    #[error("no active token with id `{0}` (see `veil-operator token list`)")]
    NotFound(String),
    #[error("Kubernetes: {0}")]
    Connect(#[from] crate::source::kube::ConnectError),
    #[error("Secret {namespace}/{secret}: {source}")]
    Kube {
        namespace: String,
        secret: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "Secret {namespace}/{secret} has type `{found}`, but the operator reads only Secrets of type `{NODE_TOKEN_SECRET_TYPE}` and a type cannot change: delete it and create the token again"
    )]
    WrongSecretType {
        namespace: String,
        secret: String,
        found: String,
    },
    #[error("Secret {namespace}/{secret} kept changing under us; try again")]
    Conflicts { namespace: String, secret: String },
    #[error("Secret {namespace}/{secret} does not exist: there is no token for node `{node}`")]
    NoClusterToken {
        node: String,
        namespace: String,
        secret: String,
    },
    #[error(
        "the CA certificate {0}: {1} (start the operator once so that it makes its CA, or pass --ca-file)"
    )]
    Ca(PathBuf, String),
    #[error(
        "Secret {namespace}/{secret}, the operator's TLS Secret, is absent or holds no `ca.crt`: start the operator with `--tls-secret {secret}` first (it creates the Secret), or pass --ca-file with the CA agents should trust; no token was written"
    )]
    NoClusterCa { namespace: String, secret: String },
}

/// The join value for `token`: URL and CA pin from `args` or the data dir.
fn join_value(
    args: &JoinArgs,
    data_dir: &std::path::Path,
    token: String,
) -> Result<String, TokenError> {
    let url = match &args.url {
        Some(url) => Some(url.trim_end_matches('/').to_owned()),
        None => std::fs::read_to_string(data_dir.join(super::tls_args::URL_FILE))
            .ok()
            .map(|url| url.trim().to_owned())
            .filter(|url| !url.is_empty()),
    };
    let ca_file = args
        .ca_file
        .clone()
        .unwrap_or_else(|| crate::tls::pki::served_ca_path(data_dir));
    let plaintext = url.as_deref().is_some_and(|url| url.starts_with("http://"));
    let ca_pin = match crate::tls::read_certs(&ca_file) {
        Ok(certs) => certs.first().map(|der| CaPin::of_der(der)),
        // An operator serving plain HTTP has no CA to pin.
        Err(_) if plaintext && args.ca_file.is_none() => None,
        Err(error) => return Err(TokenError::Ca(ca_file, error.to_string())),
    };
    if url.is_none() {
        eprintln!(
            "the join value names no operator URL (no --url, no {}): give the agent --operator https://HOST:PORT too",
            data_dir.join(super::tls_args::URL_FILE).display()
        );
    }
    Ok(JoinValue { url, token, ca_pin }.encode())
}

/// `token create --kube`: the join value for an agent outside the cluster,
/// pinning `--ca-file` or the `ca.crt` of the operator's TLS Secret. Read
/// before the token is written, so a missing CA writes nothing.
async fn cluster_join_value(
    args: &JoinArgs,
    kube: &KubeArgs,
    api: &kube::Api<k8s_openapi::api::core::v1::Secret>,
    namespace: &str,
) -> Result<impl FnOnce(String) -> String, TokenError> {
    let ca_pin = match &args.ca_file {
        Some(path) => {
            let certs = crate::tls::read_certs(path)
                .map_err(|error| TokenError::Ca(path.clone(), error.to_string()))?;
            certs.first().map(|der| CaPin::of_der(der))
        }
        None => {
            let pem = cluster::tls_ca(api, namespace, &kube.tls_secret)
                .await?
                .ok_or_else(|| TokenError::NoClusterCa {
                    namespace: namespace.to_owned(),
                    secret: kube.tls_secret.clone(),
                })?;
            use rustls::pki_types::pem::PemObject as _;
            let der = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                .next()
                .and_then(Result::ok)
                .ok_or_else(|| TokenError::NoClusterCa {
                    namespace: namespace.to_owned(),
                    secret: kube.tls_secret.clone(),
                })?;
            Some(CaPin::of_der(&der))
        }
    };
    let url = args
        .url
        .as_ref()
        .map(|url| url.trim_end_matches('/').to_owned());
    if url.is_none() {
        eprintln!(
            "the join value names no operator URL (no --url): give the agent --operator https://HOST:PORT too"
        );
    }
    Ok(move |token| JoinValue { url, token, ca_pin }.encode())
}

async fn open(args: &StoreArgs) -> Result<Store, TokenError> {
    let target = StoreTarget::parse(args.database_url.as_deref(), &args.data_dir)?;
    Ok(Store::open(&target).await?)
}

/// Runs a token subcommand, printing its result on stdout.
pub async fn token(command: TokenCommand) -> Result<(), TokenError> {
    match command {
        TokenCommand::Create {
            node, kube, join, ..
        } if kube.kube => {
            DnsName::parse(&node).map_err(|e| TokenError::NodeName(node.clone(), e.to_string()))?;
            let namespace = operator_namespace(kube.namespace.clone());
            let api = cluster::secrets(kube.kubeconfig.as_deref(), &namespace).await?;
            let join_value = cluster_join_value(&join, &kube, &api, &namespace).await?;
            let token = generate_token("veil_node_");
            let changed = cluster::put_token(&api, &namespace, &node, &token).await?;
            if changed == cluster::Changed::Replaced {
                eprintln!(
                    "replaced the previous token of node {node}: an agent still using it gets 401 until it reads the new one"
                );
            }
            eprintln!(
                "token for node {node} stored in Secret {namespace}/{} under key {node}; its join value (a secret, shown once; keep it in that agent's --token-file):",
                token_secret_name(&node)
            );
            println!("{}", join_value(token));
        }
        TokenCommand::Revoke {
            node: Some(node),
            kube,
            ..
        } if kube.kube => {
            let namespace = operator_namespace(kube.namespace);
            let api = cluster::secrets(kube.kubeconfig.as_deref(), &namespace).await?;
            cluster::remove_token(&api, &namespace, &node).await?;
            println!(
                "token of node {node} revoked: Secret {namespace}/{} deleted at {}",
                token_secret_name(&node),
                crate::world::timestamp(Utc::now())
            );
        }
        TokenCommand::Create {
            node, store, join, ..
        } => {
            DnsName::parse(&node).map_err(|e| TokenError::NodeName(node.clone(), e.to_string()))?;
            let token = generate_token("veil_node_");
            // Before the token is stored: a missing CA loses nothing.
            let value = join_value(&join, &store.data_dir, token.clone())?;
            let store = open(&store).await?;
            let id = generate_token("")[..12].to_owned();
            store
                .create_node_token(&node, &hash_token(&token), &id)
                .await?;
            eprintln!(
                "join value of token {id} for node {node} (a secret, shown once; keep it in the agent's --token-file):"
            );
            println!("{value}");
        }
        TokenCommand::List { store } => {
            let store = open(&store).await?;
            println!("{:<14}{:<32}{:<22}REVOKED", "ID", "NODE", "CREATED");
            for record in store.node_tokens().await? {
                let revoked = record
                    .revoked_at
                    .map(crate::world::timestamp)
                    .unwrap_or_else(|| "-".to_owned());
                println!(
                    "{:<14}{:<32}{:<22}{revoked}",
                    record.id,
                    record.node,
                    crate::world::timestamp(record.created_at)
                );
            }
        }
        TokenCommand::Revoke { id, store, .. } => {
            // clap requires the id without --kube and the node with it.
            let id = id.unwrap_or_default();
            let store = open(&store).await?;
            if !store.revoke_node_token(&id).await? {
                return Err(TokenError::NotFound(id));
            }
            println!(
                "token {id} revoked at {}",
                crate::world::timestamp(Utc::now())
            );
        }
    }
    Ok(())
}
