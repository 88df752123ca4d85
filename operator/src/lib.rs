//! The Veil operator: reconciles desired state from a watched YAML directory
//! or a Kubernetes API server into statuses, assignments and stored state.
//!
//! Data flow (design §3): a [`source`] publishes snapshots → [`world`] holds
//! the desired objects with their generations → [`plan`] (pure) computes
//! statuses → [`controller`] writes only what changed through a [`sink`]
//! (the [`store`] in dir mode, the cluster in Kubernetes mode) and
//! publishes a read view that the [`api`] serves to `veil-operator get`.

pub mod admin;
pub mod agents;
pub mod api;
pub mod backoff;
pub mod cli;
pub mod controller;
pub mod credential_secrets;
pub mod leader;
pub mod metrics;
pub mod node_tokens;
pub mod notify;
pub mod plan;
pub mod private_fs;
pub mod probe_history;
pub mod records;
pub mod report_scope;
pub mod runs;
pub mod schedule;
pub mod sink;
pub mod source;
pub mod store;
pub mod tls;
pub mod traffic;
pub mod view;
pub mod world;
