//! zapret v1 (`nfqws`/`winws`) arguments and Veil's built-in engine.
//!
//! - [`options`]: every nfqws v1 option Veil knows, with its arity, scope
//!   (global or per profile) and class (agent-owned, supported by the
//!   built-in engine, or external-only). One table serves validation in
//!   `veil-crds`, the built-in engine's parser and the test stand-in.
//! - [`spec`]: the parsed profile model (filters, lists, desync settings)
//!   shared by the parser and the packet engine.
//! - [`args`]: the parser (argv → [`spec::Config`]) in four modes: built-in
//!   engine, external nfqws profile, Strategy validation, whole nfqws process.
//! - [`lists`]: hostlist/ipset files, matchers and reload on change.
//! - [`dry_run`]: parse and load everything once, and summarise.
//!
//! With the `engine` feature (default) the crate also holds the packet
//! engine `veil-agent desync` runs.

pub mod args;
pub mod dry_run;
pub mod lists;
pub mod options;
pub mod spec;

#[cfg(feature = "engine")]
pub mod engine;
