//! The built-in nfqws-compatible NFQUEUE engine.

pub mod fake;
pub mod locate;
