//! `veil-operator token create|list|revoke`: node tokens for agents.
//!
//! Works on the store directly (SQLite file or PostgreSQL), so it runs next
//! to a running operator. A token is printed once and stored only as a hash.

use std::path::PathBuf;

use chrono::Utc;
use veil_crds::validate::DnsName;

use crate::admin::{generate_token, hash_token};
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

/// `token` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token for one node and print it once (store it in the agent's --token-file).
    Create {
        /// Node name the token is bound to (the agent's --node).
        #[arg(long)]
        node: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List tokens (ids, nodes, creation and revocation times; never the tokens).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a token by id; the agent using it gets 401 from then on.
    Revoke {
        /// Token id as shown by `token list`.
        id: String,
        #[command(flatten)]
        store: StoreArgs,
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
}

async fn open(args: &StoreArgs) -> Result<Store, TokenError> {
    let target = StoreTarget::parse(args.database_url.as_deref(), &args.data_dir)?;
    Ok(Store::open(&target).await?)
}

/// Runs a token subcommand, printing its result on stdout.
pub async fn token(command: TokenCommand) -> Result<(), TokenError> {
    match command {
        TokenCommand::Create { node, store } => {
            DnsName::parse(&node).map_err(|e| TokenError::NodeName(node.clone(), e.to_string()))?;
            let store = open(&store).await?;
            let token = generate_token("veil_node_");
            let id = generate_token("")[..12].to_owned();
            store
                .create_node_token(&node, &hash_token(&token), &id)
                .await?;
            eprintln!(
                "token {id} for node {node} (shown once; keep it in the agent's --token-file):"
            );
            println!("{token}");
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
        TokenCommand::Revoke { id, store } => {
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
