//! Which open connection belongs to which user.
//!
//! xray keeps established sessions after a user is removed, and its stats
//! API only knows users' IP addresses, which many users share (NAT, one
//! household, every test client on 127.0.0.1). The access log names the
//! client's address *and port* of every accepted request with the user's
//! email, which identifies the TCP connection itself. The tracker indexes
//! those lines so revocation can close exactly that user's connections.
//!
//! Contract: an entry maps a client `ip:port` to the email of the *latest*
//! access line for it (a reused port belongs to its newest connection), and
//! entries whose connection is gone are dropped by [`Tracker::retain`], so
//! memory follows the number of open connections.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

/// An accepted request as read from one access-log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The client end of the connection.
    pub peer: SocketAddr,
    /// The user (xray's `email`).
    pub email: String,
}

/// Parses an xray access-log line such as
/// `2026/11/23 18:03:59.884432 from 127.0.0.1:55022 accepted tcp:127.0.0.1:80 [vless-in >> direct] email: alice`.
/// Returns `None` for any other line (errors, rejected requests, lines without a user).
pub fn parse_access_line(line: &str) -> Option<Accepted> {
    let (_, rest) = line.split_once(" from ")?;
    let (from, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("accepted ")?;
    let (_, email) = rest.rsplit_once(" email: ")?;
    let email = email.trim();
    let from = from
        .strip_prefix("tcp:")
        .or_else(|| from.strip_prefix("udp:"))
        .unwrap_or(from);
    let peer = from.parse().ok()?;
    if email.is_empty() {
        return None;
    }
    Some(Accepted {
        peer,
        email: email.to_owned(),
    })
}

/// The connection index of one server.
#[derive(Debug, Default)]
pub struct Tracker {
    by_peer: HashMap<SocketAddr, String>,
    by_email: HashMap<String, HashSet<SocketAddr>>,
}

impl Tracker {
    /// Records an accepted request.
    pub fn observe(&mut self, accepted: Accepted) {
        if let Some(previous) = self.by_peer.get(&accepted.peer) {
            if *previous == accepted.email {
                return;
            }
            let previous = previous.clone();
            self.forget(&accepted.peer, &previous);
        }
        self.by_email
            .entry(accepted.email.clone())
            .or_default()
            .insert(accepted.peer);
        self.by_peer.insert(accepted.peer, accepted.email);
    }

    /// The client addresses of `email`'s connections.
    pub fn peers_of(&self, email: &str) -> Vec<SocketAddr> {
        let mut peers: Vec<_> = self
            .by_email
            .get(email)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        peers.sort();
        peers
    }

    /// Keeps only connections whose client address is in `open`.
    pub fn retain(&mut self, open: &HashSet<SocketAddr>) {
        let gone: Vec<(SocketAddr, String)> = self
            .by_peer
            .iter()
            .filter(|(peer, _)| !open.contains(peer))
            .map(|(peer, email)| (*peer, email.clone()))
            .collect();
        for (peer, email) in gone {
            self.forget(&peer, &email);
        }
    }

    /// Number of tracked connections.
    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    /// Whether no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }

    fn forget(&mut self, peer: &SocketAddr, email: &str) {
        self.by_peer.remove(peer);
        if let Some(set) = self.by_email.get_mut(email) {
            set.remove(peer);
            if set.is_empty() {
                self.by_email.remove(email);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    const LINE: &str = "2026/11/23 18:03:59.884432 from 127.0.0.1:55022 accepted tcp:127.0.0.1:18900 [vless-in >> direct] email: alice";

    #[test]
    fn parses_the_client_address_and_email() {
        let accepted = parse_access_line(LINE).unwrap();
        assert_eq!(accepted.peer, "127.0.0.1:55022".parse().unwrap());
        assert_eq!(accepted.email, "alice");
    }

    #[test]
    fn parses_prefixed_and_ipv6_addresses_and_dotted_emails() {
        let line = "2026/11/23 18:03:59 from tcp:[::1]:4000 accepted udp:1.1.1.1:53 [vless-in >> direct] email: default.bob@home";
        let accepted = parse_access_line(line).unwrap();
        assert_eq!(accepted.peer, "[::1]:4000".parse().unwrap());
        assert_eq!(accepted.email, "default.bob@home");
    }

    #[test]
    fn ignores_other_lines() {
        assert_eq!(
            parse_access_line("2026/11/23 [Warning] core: Xray 26.3.27 started"),
            None
        );
        assert_eq!(
            parse_access_line(
                "2026/11/23 from 127.0.0.1:1 rejected  proxy/vless/encoding: invalid request user id"
            ),
            None
        );
        assert_eq!(
            parse_access_line("2026/11/23 from 127.0.0.1:1 accepted tcp:x:1 [a >> b]"),
            None
        );
    }

    #[test]
    fn a_reused_port_belongs_to_its_newest_connection() {
        let mut tracker = Tracker::default();
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        tracker.observe(Accepted {
            peer,
            email: "alice".into(),
        });
        tracker.observe(Accepted {
            peer,
            email: "bob".into(),
        });
        assert!(tracker.peers_of("alice").is_empty());
        assert_eq!(tracker.peers_of("bob"), vec![peer]);
        assert_eq!(tracker.len(), 1);
    }

    #[test]
    fn users_behind_one_ip_are_told_apart_by_port() {
        let mut tracker = Tracker::default();
        for (port, email) in [(5000, "alice"), (5001, "bob"), (5002, "alice")] {
            tracker.observe(Accepted {
                peer: SocketAddr::from(([127, 0, 0, 1], port)),
                email: email.into(),
            });
        }
        let ports: Vec<u16> = tracker.peers_of("alice").iter().map(|p| p.port()).collect();
        assert_eq!(ports, vec![5000, 5002]);
    }

    #[test]
    fn retain_drops_closed_connections() {
        let mut tracker = Tracker::default();
        let open: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let closed: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        tracker.observe(Accepted {
            peer: open,
            email: "alice".into(),
        });
        tracker.observe(Accepted {
            peer: closed,
            email: "alice".into(),
        });
        tracker.retain(&HashSet::from([open]));
        assert_eq!(tracker.peers_of("alice"), vec![open]);
        tracker.retain(&HashSet::new());
        assert!(tracker.is_empty());
    }
}
