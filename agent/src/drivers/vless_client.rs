//! VLESS Strategies on the agent: a local SOCKS5 port backed by a real
//! client program (xray-core or sing-box), so a node can fall back to a
//! VLESS server when no zapret Strategy gets through (issue 14).
//!
//! - [`link`]: the `vless://` link the operator sends, parsed;
//! - [`config`]: each client's config file for it;
//! - [`clients`]: the supervised client processes, one per assigned
//!   member (backups too: kept warm).

pub mod clients;
pub mod config;
pub mod link;
