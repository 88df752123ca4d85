//! zapret v1 (`nfqws`/`winws`) arguments and Veil's built-in engine.
//!
//! - [`options`]: every nfqws v1 option Veil knows, with its arity, scope
//!   (global or per profile) and class (agent-owned, supported by the
//!   built-in engine, or external-only). One table serves validation in
//!   `veil-crds`, the built-in engine's parser and the test stand-in.
//! - [`spec`]: the parsed profile model (filters, lists, desync settings)
//!   shared by the parser and the packet engine.
//!
//! With the `engine` feature (default) the crate also holds the packet
//! engine `veil-agent desync` runs.

pub mod options;
pub mod spec;

#[cfg(feature = "engine")]
pub mod engine;
