//! The built-in nfqws-compatible NFQUEUE engine.

pub mod desyncer;
pub mod fake;
pub mod flow;
pub mod locate;
pub mod packet;
pub mod profile;
#[cfg(test)]
mod testutil;
pub mod transform;
