//! Cheap refusals for the agent and admin APIs: a limit on failed
//! authentications per client address, and the store's node tokens kept in
//! memory so that unknown tokens cost no database query.
//!
//! - [`FailedAuthLimit`]: a token bucket per client IP address. Each failed
//!   authentication takes one token; while a bucket is empty, requests from
//!   that address whose token is not already known to be good are answered
//!   429 before any lookup. A known-good token is never limited, so an agent
//!   behind the same address as a flooder keeps working.
//! - [`StoreTokenCache`]: hash → node of every unrevoked store token. A
//!   token it does not know triggers a reload, but reloads are coalesced
//!   (at most one per [`RELOAD_INTERVAL`]; requests that miss wait for the
//!   next one), so a flood of random tokens costs a few queries per second
//!   at most. A hit is still confirmed in the store, so `token revoke`
//!   takes effect on the very next request.
//!
//! Tokens are looked up by their SHA-256 hash: the time a lookup takes can
//! only reveal something about a hash, never about a token, and the match
//! is confirmed with a constant-time comparison ([`hashes_equal`]).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::http::Extensions;

use crate::admin::hashes_equal;
use crate::store::{Store, StoreError};

/// Failed authentications an address may make in a burst.
pub const FAILED_AUTH_BURST: f64 = 20.0;
/// Failed authentications per second an address regains.
pub const FAILED_AUTH_PER_SECOND: f64 = 1.0;
/// Addresses tracked at most; beyond, full buckets are forgotten first and
/// then every other new address shares one bucket.
const MAX_ADDRESSES: usize = 10_000;
/// At most one reload of the store's tokens per this interval.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(250);

/// The client address of a request (its TCP peer), or an unspecified
/// address when the server did not record it.
pub fn client_ip(extensions: &Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let gained = now.duration_since(self.at).as_secs_f64() * FAILED_AUTH_PER_SECOND;
        self.tokens = (self.tokens + gained).min(FAILED_AUTH_BURST);
        self.at = now;
    }
}

/// Failed authentications per client address (token buckets).
#[derive(Default)]
pub struct FailedAuthLimit {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl FailedAuthLimit {
    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, Bucket>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `ip` may try an unknown token now (its bucket is not empty).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut buckets = self.lock();
        match buckets.get_mut(&ip) {
            Some(bucket) => {
                bucket.refill(now);
                bucket.tokens >= 1.0
            }
            None => true,
        }
    }

    /// Records a failed authentication from `ip`; returns true when this
    /// failure emptied its bucket (log it once, not for every refusal).
    pub fn failed(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut buckets = self.lock();
        if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&ip) {
            buckets.retain(|_, b| {
                b.refill(now);
                b.tokens < FAILED_AUTH_BURST
            });
        }
        let key = if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&ip) {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            ip
        };
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: FAILED_AUTH_BURST,
            at: now,
        });
        bucket.refill(now);
        let before = bucket.tokens;
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        before >= 1.0 && bucket.tokens < 1.0
    }
}

/// The store's unrevoked node tokens, by hash, in memory.
#[derive(Default)]
pub struct StoreTokenCache {
    nodes: RwLock<HashMap<String, String>>,
    /// When the last reload started (`None`: never).
    reloaded: tokio::sync::Mutex<Option<Instant>>,
}

impl StoreTokenCache {
    /// The node of `hash` if the cache holds it (no query).
    pub fn cached(&self, hash: &str) -> Option<String> {
        let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
        nodes
            .get_key_value(hash)
            .filter(|(stored, _)| hashes_equal(stored, hash))
            .map(|(_, node)| node.clone())
    }

    /// Drops `hash` (found revoked), so it is limited like any unknown token.
    pub fn forget(&self, hash: &str) {
        self.nodes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(hash);
    }

    /// The node of `hash`, reloading the cache when it does not know it
    /// (coalesced: at most one reload per [`RELOAD_INTERVAL`], shared by
    /// every request that missed before it started).
    pub async fn find(&self, store: &Store, hash: &str) -> Result<Option<String>, StoreError> {
        if let Some(node) = self.cached(hash) {
            return Ok(Some(node));
        }
        let asked = Instant::now();
        let mut reloaded = self.reloaded.lock().await;
        let stale = reloaded.is_none_or(|started| started < asked);
        if stale {
            if let Some(started) = *reloaded {
                tokio::time::sleep_until((started + RELOAD_INTERVAL).into()).await;
            }
            let started = Instant::now();
            let all = store.active_node_token_hashes().await?;
            *self.nodes.write().unwrap_or_else(|p| p.into_inner()) = all.into_iter().collect();
            *reloaded = Some(started);
        }
        drop(reloaded);
        Ok(self.cached(hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_limited_after_its_burst_and_others_are_not() {
        let limit = FailedAuthLimit::default();
        let flooder: IpAddr = "192.0.2.1"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let other: IpAddr = "192.0.2.2"
            .parse()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut emptied = 0;
        for _ in 0..(FAILED_AUTH_BURST as usize) {
            assert!(limit.allows(flooder));
            emptied += usize::from(limit.failed(flooder));
        }
        assert_eq!(emptied, 1, "the emptying failure is reported once");
        assert!(!limit.allows(flooder));
        assert!(limit.allows(other));
    }
}
