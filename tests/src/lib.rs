//! Helpers for Veil's end-to-end tests.
pub mod process;

pub mod kube;
pub mod postgres;
pub mod standin;
pub mod wait;
pub mod xray;
