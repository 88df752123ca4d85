//! Veil's `veil.dev/v1alpha1` API: every type that crosses a process boundary.
//!
//! - one module per kind (spec, status, printer columns, semantic validation);
//! - [`common`]: shapes shared by kinds (conditions, selectors, secret references);
//! - [`validate`]: "parse, don't validate" newtypes (cron, UUID, port, duration, DNS-1123 names, …);
//! - [`object`]: the closed set of objects Veil reads, keyed by [`object::ObjectKey`];
//! - [`document`]: YAML/JSON text → objects, with line/column/field-path errors;
//! - [`crd`]: CustomResourceDefinitions generated from these types;
//! - [`reality`]: Reality x25519 keys (derivation, generation).
//!
//! This crate does no I/O.

pub mod common;
pub mod crd;
pub mod document;
pub mod kind;
pub mod object;
pub mod printer;
pub mod validate;

pub mod protocol_server;
pub mod reality;
pub mod runner;
pub mod schedule;
pub mod strategy;
pub mod task_run;
pub mod veil_node;
pub mod vless_key;

pub mod wire;

/// API group of every Veil kind.
pub const GROUP: &str = "veil.dev";
/// API version of every Veil kind.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in YAML.
pub const API_VERSION: &str = "veil.dev/v1alpha1";
