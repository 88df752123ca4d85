//! The Veil node agent.

pub mod supervisor;
