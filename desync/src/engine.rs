//! The built-in nfqws-compatible NFQUEUE engine.

pub mod fake;
pub mod locate;
pub mod packet;
#[cfg(test)]
mod testutil;
pub mod transform;
