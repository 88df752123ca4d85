//! `veil-operator get`: reads objects from a running operator and prints
//! them like `kubectl get` (same columns as the CRDs' printer columns).

use std::path::PathBuf;

use clap::ValueEnum;
use serde_json::Value;
use veil_agent::trust::{Trust, check_url};
use veil_crds::kind::Kind;

use super::DEFAULT_DATA_DIR;
use super::{probe_rounds, table};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The table with extra columns.
    Wide,
    Yaml,
    Json,
}

/// Arguments of `get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Kind: singular, plural or short name (vlesskeys, vlesskey, vk).
    pub kind: String,
    /// Only the object with this name.
    pub name: Option<String>,
    /// Namespace to list (namespaced kinds).
    #[arg(
        short,
        long,
        default_value = "default",
        conflicts_with = "all_namespaces"
    )]
    pub namespace: String,
    /// List objects of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format: wide, yaml or json (default: a table). `get strategy
    /// NAME -o wide` adds the samples of each node's last probe round.
    #[arg(short, long, value_enum)]
    pub output: Option<Output>,
    #[command(flatten)]
    pub connection: Connection,
}

/// How to reach a running operator's admin API.
#[derive(Debug, clap::Args)]
pub struct Connection {
    /// Operator API address (`https://` unless given).
    #[arg(long, env = "VEIL_SERVER", default_value = "https://127.0.0.1:7070")]
    pub server: String,
    /// File holding the admin token (written by the operator at first start).
    #[arg(long, env = "VEIL_TOKEN_FILE", default_value_os_t = default_token_file())]
    pub token_file: PathBuf,
    /// The operator's CA certificate (PEM); the server must verify against
    /// it. Default: the CA the operator made in its data dir.
    #[arg(long, env = "VEIL_CA_FILE", default_value_os_t = default_ca_file())]
    pub ca_file: PathBuf,
    /// Allow `http://` to a non-loopback server: the admin token crosses
    /// the network in clear.
    #[arg(long, env = "VEIL_INSECURE_PLAINTEXT")]
    pub insecure_plaintext: bool,
}

impl Connection {
    /// `GET path` (with query) with the admin token; the JSON body of a success.
    pub async fn request(&self, path_and_query: &str) -> Result<Value, GetError> {
        let token =
            std::fs::read_to_string(&self.token_file).map_err(|source| GetError::Token {
                path: self.token_file.clone(),
                source,
            })?;
        let base = if self.server.contains("://") {
            self.server.clone()
        } else {
            format!("https://{}", self.server)
        };
        let client = self.client(&base)?;
        let connect = |source: reqwest::Error| GetError::Connect {
            server: self.server.clone(),
            reason: veil_agent::trust::error_chain(&source),
        };
        let response = client
            .get(format!("{}{path_and_query}", base.trim_end_matches('/')))
            .bearer_auth(token.trim())
            .send()
            .await
            .map_err(connect)?;
        let status = response.status();
        let body: Value = response.json().await.map_err(connect)?;
        if !status.is_success() {
            let message = body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no message")
                .to_owned();
            return Err(GetError::Api {
                status: status.as_u16(),
                message,
            });
        }
        Ok(body)
    }
}

impl Connection {
    /// A client for `base` that trusts only the operator's CA (`http://`
    /// only to loopback unless --insecure-plaintext); checked before the
    /// token is sent anywhere.
    fn client(&self, base: &str) -> Result<reqwest::Client, GetError> {
        let trust = if base.starts_with("https://") {
            Trust::ca_file(&self.ca_file).map_err(|e| GetError::Trust(e.to_string()))?
        } else {
            Trust::Plaintext
        };
        check_url(base, &trust, self.insecure_plaintext)
            .map_err(|e| GetError::Trust(e.to_string()))?;
        trust
            .http_client(reqwest::Client::builder())
            .map_err(|e| GetError::Trust(e.to_string()))
    }
}

fn default_ca_file() -> PathBuf {
    crate::tls::pki::served_ca_path(std::path::Path::new(DEFAULT_DATA_DIR))
}

fn default_token_file() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR).join(crate::admin::TOKEN_FILE)
}

/// Why `get` failed.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("unknown kind `{0}`; try one of: {1}")]
    UnknownKind(String, String),
    #[error(
        "cannot read the admin token from {path}: {source} (run this in the operator's working directory, or pass --token-file)"
    )]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot reach the operator at {server}: {reason} (is `veil-operator run` up? see --server and --ca-file)"
    )]
    Connect { server: String, reason: String },
    #[error("{0} (see --ca-file)")]
    Trust(String),
    #[error("the operator answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("{kind} \"{name}\" not found")]
    NotFound { kind: String, name: String },
}

/// Runs `get`.
pub async fn get(args: GetArgs) -> Result<(), GetError> {
    let kind = Kind::from_cli_name(&args.kind).ok_or_else(|| {
        let names: Vec<String> = Kind::ALL
            .iter()
            .map(|k| {
                let mut names = vec![k.plural().to_owned()];
                names.extend(k.short_names().iter().map(|s| (*s).to_owned()));
                names.join("/")
            })
            .collect();
        GetError::UnknownKind(args.kind.clone(), names.join(", "))
    })?;
    let items = fetch(&args, kind).await?;
    if let Some(name) = &args.name
        && items.is_empty()
    {
        return Err(GetError::NotFound {
            kind: kind.plural().to_owned(),
            name: name.clone(),
        });
    }
    let single = args.name.is_some();
    match args.output {
        Some(Output::Json) => {
            let doc = if single {
                items[0].clone()
            } else {
                list_doc(items)
            };
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Some(Output::Yaml) => {
            let doc = if single {
                items[0].clone()
            } else {
                list_doc(items)
            };
            print!("{}", serde_yaml_ng::to_string(&doc).unwrap_or_default());
        }
        Some(Output::Wide) | None => {
            let wide = args.output == Some(Output::Wide);
            if items.is_empty() {
                eprintln!("No resources found.");
            } else {
                let namespaced_view = args.all_namespaces && kind.namespaced();
                print!(
                    "{}",
                    table::render(kind, &items, wide, namespaced_view, chrono::Utc::now())
                );
                if wide
                    && kind == Kind::Strategy
                    && let Some(name) = &args.name
                {
                    let rounds = args
                        .connection
                        .request(&format!("/v1/probes/strategies/{}/{name}", args.namespace))
                        .await?;
                    let rounds = rounds["rounds"].as_array().cloned().unwrap_or_default();
                    print!("{}", probe_rounds::render(&rounds));
                }
            }
        }
    }
    Ok(())
}

fn list_doc(items: Vec<Value>) -> Value {
    serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items })
}

async fn fetch(args: &GetArgs, kind: Kind) -> Result<Vec<Value>, GetError> {
    let mut query = Vec::new();
    if !args.all_namespaces && kind.namespaced() {
        query.push(format!("namespace={}", args.namespace));
    }
    if let Some(name) = &args.name {
        query.push(format!("name={name}"));
    }
    let body = args
        .connection
        .request(&format!(
            "/v1/objects/{}?{}",
            kind.plural(),
            query.join("&")
        ))
        .await?;
    Ok(body
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}
