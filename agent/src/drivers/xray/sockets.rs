//! The server's TCP connections as the kernel sees them, and closing some.
//!
//! Counting reads `/proc/net/tcp{,6}` (no process per tick). Closing uses
//! the kernel's socket-destroy operation through `ss -K` from iproute2
//! (`CONFIG_INET_DIAG_DESTROY`, root or `CAP_NET_ADMIN`): the socket is
//! reset on xray's side, xray ends the session and the client sees the
//! connection close. Only sockets matching the server's port *and* a tracked
//! client `ip:port` are touched, so other users sharing an IP keep theirs.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::supervisor::{self, Exit, ProcessSpec};

/// Client addresses in one `ss` invocation (its filter is one argument).
const PEERS_PER_CALL: usize = 128;

/// Why connections could not be closed.
#[derive(Debug, thiserror::Error)]
pub enum SocketsError {
    #[error("cannot run `ss -K` to close connections (install iproute2): {0}")]
    Spawn(#[source] supervisor::SupervisorError),
    #[error("`ss -K` failed ({exit:?}): {message}")]
    Failed { exit: Exit, message: String },
}

/// Client addresses of the established TCP connections to local `port`.
///
/// # Errors
/// When `/proc/net/tcp` cannot be read (not Linux, or no procfs).
pub fn established_peers(port: u16) -> std::io::Result<HashSet<SocketAddr>> {
    let mut peers = HashSet::new();
    let v4 = std::fs::read_to_string("/proc/net/tcp")?;
    parse_proc_net_tcp(&v4, port, false, &mut peers);
    // IPv6 may be disabled; its absence is not an error.
    if let Ok(v6) = std::fs::read_to_string("/proc/net/tcp6") {
        parse_proc_net_tcp(&v6, port, true, &mut peers);
    }
    Ok(peers)
}

/// Closes the established connections from `peers` to local `port`; returns
/// how many sockets were destroyed.
///
/// # Errors
/// When `ss` is missing or fails (e.g. no `CAP_NET_ADMIN`).
pub async fn destroy(port: u16, peers: &[SocketAddr]) -> Result<usize, SocketsError> {
    let mut destroyed = 0;
    for chunk in peers.chunks(PEERS_PER_CALL) {
        let filter = filter(port, chunk);
        let spec = ProcessSpec::new("ss")
            .pass_env("PATH")
            .args(["-K", "-H", "-tn", "state", "established"])
            .arg(filter)
            .timeout(Duration::from_secs(10));
        let done = supervisor::run_once(spec, CancellationToken::new())
            .await
            .map_err(SocketsError::Spawn)?;
        if !done.exit.success() {
            let message = done
                .recent_lines
                .iter()
                .map(|line| line.text.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(SocketsError::Failed {
                exit: done.exit,
                message,
            });
        }
        destroyed += done
            .recent_lines
            .iter()
            .filter(|l| !l.text.trim().is_empty())
            .count();
    }
    Ok(destroyed)
}

/// `( sport = :PORT ) and ( dst A:P or dst B:Q … )` in `ss`'s filter syntax.
fn filter(port: u16, peers: &[SocketAddr]) -> String {
    let peers: Vec<String> = peers
        .iter()
        .map(|peer| match peer {
            SocketAddr::V4(v4) => format!("dst {}:{}", v4.ip(), v4.port()),
            SocketAddr::V6(v6) => format!("dst [{}]:{}", v6.ip(), v6.port()),
        })
        .collect();
    format!("( sport = :{port} ) and ( {} )", peers.join(" or "))
}

/// Adds the remote ends of ESTABLISHED (state `01`) sockets whose local
/// port is `port` from one `/proc/net/tcp`-format table.
fn parse_proc_net_tcp(table: &str, port: u16, v6: bool, into: &mut HashSet<SocketAddr>) {
    for line in table.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(_slot), Some(local), Some(remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if state != "01" {
            continue;
        }
        let Some((_, local_port)) = local.rsplit_once(':') else {
            continue;
        };
        if u16::from_str_radix(local_port, 16) != Ok(port) {
            continue;
        }
        if let Some(peer) = parse_address(remote, v6) {
            into.insert(peer);
        }
    }
}

/// `0100007F:D6DE` (v4) or 32 hex digits `:PORT` (v6), in the kernel's
/// host-order-per-32-bit-word layout.
fn parse_address(text: &str, v6: bool) -> Option<SocketAddr> {
    let (ip, port) = text.rsplit_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = if v6 {
        if ip.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for word in 0..4 {
            let value = u32::from_str_radix(&ip[word * 8..word * 8 + 8], 16).ok()?;
            bytes[word * 4..word * 4 + 4].copy_from_slice(&value.to_le_bytes());
        }
        let addr = Ipv6Addr::from(bytes);
        // A v4 client of a dual-stack socket appears as ::ffff:a.b.c.d.
        match addr.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(addr),
        }
    } else {
        let value = u32::from_str_radix(ip, 16).ok()?;
        IpAddr::V4(Ipv4Addr::from(value.to_le_bytes()))
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn parses_established_v4_sockets_of_one_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:4A04 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
           1: 0100007F:4A04 0100007F:D6DE 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1\n\
           2: 0100007F:D6DE 0100007F:4A04 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1\n";
        let mut peers = HashSet::new();
        parse_proc_net_tcp(table, 0x4A04, false, &mut peers);
        assert_eq!(peers, HashSet::from(["127.0.0.1:55006".parse().unwrap()]));
    }

    #[test]
    fn parses_v6_and_v4_mapped_addresses() {
        assert_eq!(
            parse_address("00000000000000000000000001000000:0050", true),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(
            parse_address("0000000000000000FFFF00000100007F:0050", true),
            Some("127.0.0.1:80".parse().unwrap())
        );
    }

    #[test]
    fn filter_names_each_connection() {
        let peers = [
            "127.0.0.1:5000".parse().unwrap(),
            "[::1]:6000".parse().unwrap(),
        ];
        assert_eq!(
            filter(443, &peers),
            "( sport = :443 ) and ( dst 127.0.0.1:5000 or dst [::1]:6000 )"
        );
    }

    #[tokio::test]
    async fn destroys_exactly_the_named_connection() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut doomed = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (_doomed_server, _) = listener.accept().await.unwrap();
        let mut kept = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (_kept_server, _) = listener.accept().await.unwrap();
        let open = established_peers(port).unwrap();
        assert!(open.contains(&doomed.local_addr().unwrap()));
        assert!(open.contains(&kept.local_addr().unwrap()));

        let n = destroy(port, &[doomed.local_addr().unwrap()])
            .await
            .unwrap();
        assert_eq!(n, 1);
        let mut buf = [0u8; 1];
        // The destroyed socket's peer sees a reset or end of stream.
        let read = doomed.read(&mut buf).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let still_open = established_peers(port).unwrap();
        assert!(still_open.contains(&kept.local_addr().unwrap()));
        assert!(!still_open.contains(&doomed.local_addr().unwrap()));
        // The other connection is untouched: a read would block.
        let pending = tokio::time::timeout(Duration::from_millis(100), kept.read(&mut buf)).await;
        assert!(pending.is_err(), "kept connection closed: {pending:?}");
    }
}
