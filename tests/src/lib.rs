//! Helpers for Veil's end-to-end tests.
pub mod process;

pub mod refusing_proxy;

pub mod desync_engine;
pub mod dpi_lab;
pub mod dpi_sim;
pub mod kube;
pub mod netns;
pub mod postgres;
pub mod standin;
pub mod test_site;
pub mod tls_client;
pub mod tmpfs;
pub mod wait;
pub mod xray;
pub mod zapret_agent;
