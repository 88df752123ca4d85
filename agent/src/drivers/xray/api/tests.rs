//! Tests against a real xray (from `make env`), one fresh process per test,
//! plus the pure parsing of counter names.
#![allow(clippy::unwrap_used, reason = "tests")]

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use veil_crds::protocol_server::VlessFlow;
use veil_crds::wire::SecretValue;

use super::*;

const INBOUND: &str = "vless-in";

/// How long xray may take to open its API port.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running xray with its API on loopback; killed when dropped.
struct Xray {
    child: Child,
    api: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Xray {
    /// Starts xray with an empty VLESS inbound [`INBOUND`], the Handler and
    /// Stats services on `api.listen`, and per-user counters at level 0.
    async fn start() -> Self {
        Self::start_at(SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))).await
    }

    /// As [`start`](Self::start), with the API on `api`.
    async fn start_at(api: SocketAddr) -> Self {
        let binary = xray_binary();
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({
            "log": {"loglevel": "warning"},
            "api": {"tag": "api", "listen": api.to_string(), "services": ["HandlerService", "StatsService"]},
            "stats": {},
            "policy": {"levels": {"0": {"statsUserUplink": true, "statsUserDownlink": true}}},
            "inbounds": [{
                "tag": INBOUND, "listen": "127.0.0.1", "port": free_port(), "protocol": "vless",
                "settings": {"clients": [], "decryption": "none"}
            }],
            "outbounds": [{"protocol": "freedom", "tag": "direct"}]
        });
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = dir.path().join("xray.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(&binary)
            .arg("run")
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut xray = Self {
            child,
            api,
            log,
            _dir: dir,
        };
        xray.wait_for_api().await;
        xray
    }

    async fn wait_for_api(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "xray exited ({status}) before its API listened:\n{}",
                    self.log()
                );
            }
            if tokio::net::TcpStream::connect(self.api).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "xray's API did not listen on {} within {STARTUP_TIMEOUT:?}:\n{}",
                self.api,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn client(&self) -> XrayApi {
        XrayApi::connect(self.api).await.unwrap()
    }
}

impl Drop for Xray {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// xray from `make env`: `$VEIL_XRAY`, else `$VEIL_CACHE/bin/xray`, else
/// `~/.cache/veil/bin/xray`; a missing one fails the test.
fn xray_binary() -> PathBuf {
    let path = std::env::var_os("VEIL_XRAY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("VEIL_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/veil")
                })
                .join("bin/xray")
        });
    assert!(
        path.is_file(),
        "xray not found at {}: run `make env` (or set VEIL_XRAY)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A user with a UUID derived from `n`, so each `n` is distinct.
fn mk_user(email: &str, n: u32) -> VlessUser {
    VlessUser {
        email: email.to_owned(),
        id: SecretValue(format!("{n:08x}-1111-4222-8333-444455556666")),
        flow: VlessFlow::XtlsRprxVision,
    }
}

fn sorted(mut emails: Vec<String>) -> Vec<String> {
    emails.sort();
    emails
}

#[tokio::test]
async fn added_user_is_listed() {
    let xray = Xray::start().await;
    let api = xray.client().await;
    api.add_user(INBOUND, &mk_user("alice@example.com", 1))
        .await
        .unwrap();
    let mut plain = mk_user("bob.b@example.com", 2);
    plain.flow = VlessFlow::None;
    api.add_user(INBOUND, &plain).await.unwrap();

    assert_eq!(
        sorted(api.inbound_users(INBOUND).await.unwrap()),
        ["alice@example.com", "bob.b@example.com"]
    );
    assert_eq!(api.inbound_users_count(INBOUND).await.unwrap(), 2);
}

#[tokio::test]
async fn adding_a_present_user_again_succeeds() {
    let xray = Xray::start().await;
    let api = xray.client().await;
    let user = mk_user("alice@example.com", 1);
    api.add_user(INBOUND, &user).await.unwrap();
    api.add_user(INBOUND, &user).await.unwrap();
    // xray compares emails without case.
    api.add_user(INBOUND, &mk_user("ALICE@example.com", 2))
        .await
        .unwrap();
    assert_eq!(
        api.inbound_users(INBOUND).await.unwrap(),
        ["alice@example.com"]
    );
}

#[tokio::test]
async fn removed_user_is_gone() {
    let xray = Xray::start().await;
    let api = xray.client().await;
    api.add_user(INBOUND, &mk_user("alice@example.com", 1))
        .await
        .unwrap();
    api.add_user(INBOUND, &mk_user("bob@example.com", 2))
        .await
        .unwrap();
    api.remove_user(INBOUND, "alice@example.com").await.unwrap();
    assert_eq!(
        api.inbound_users(INBOUND).await.unwrap(),
        ["bob@example.com"]
    );
    assert_eq!(api.inbound_users_count(INBOUND).await.unwrap(), 1);
}

#[tokio::test]
async fn removing_an_absent_user_succeeds() {
    let xray = Xray::start().await;
    let api = xray.client().await;
    api.remove_user(INBOUND, "nobody@example.com")
        .await
        .unwrap();
    api.add_user(INBOUND, &mk_user("alice@example.com", 1))
        .await
        .unwrap();
    api.remove_user(INBOUND, "alice@example.com").await.unwrap();
    api.remove_user(INBOUND, "alice@example.com").await.unwrap();
    assert_eq!(api.inbound_users_count(INBOUND).await.unwrap(), 0);
}

#[tokio::test]
async fn changes_to_a_missing_inbound_fail_permanently() {
    let xray = Xray::start().await;
    let api = xray.client().await;
    let add = api
        .add_user("no-such-inbound", &mk_user("alice@example.com", 1))
        .await
        .unwrap_err();
    let remove = api
        .remove_user("no-such-inbound", "alice@example.com")
        .await
        .unwrap_err();
    let list = api.inbound_users("no-such-inbound").await.unwrap_err();
    for error in [add, remove, list] {
        assert!(!error.is_transient(), "{error}");
        assert!(error.to_string().contains("no-such-inbound"), "{error}");
    }
}

#[tokio::test]
async fn malformed_uuid_is_refused_without_echoing_it() {
    let xray = Xray::start().await;
    let api = xray.client().await;
    let secret = "not-a-uuid-but-a-secret-value-of-many-characters";
    let user = VlessUser {
        email: "alice@example.com".to_owned(),
        id: SecretValue(secret.to_owned()),
        flow: VlessFlow::XtlsRprxVision,
    };
    let error = api.add_user(INBOUND, &user).await.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(secret), "{shown}");
    assert!(shown.contains(REDACTED), "{shown}");
    assert_eq!(api.inbound_users_count(INBOUND).await.unwrap(), 0);
}

#[tokio::test]
async fn empty_email_is_refused_before_sending() {
    let xray = Xray::start().await;
    let api = xray.client().await;
    let error = api.add_user(INBOUND, &mk_user("", 1)).await.unwrap_err();
    assert!(matches!(error, XrayApiError::EmptyEmail), "{error}");
    assert_eq!(api.inbound_users_count(INBOUND).await.unwrap(), 0);
}

#[tokio::test]
async fn thousand_users_apply_pipelined_in_order() {
    let xray = Xray::start().await;
    let api = xray.client().await;
    let emails: Vec<String> = (0..1000).map(|n| format!("user-{n}@example.com")).collect();
    let adds = emails
        .iter()
        .zip(0..)
        .map(|(email, n)| UserOp::Add(mk_user(email, n)))
        .collect();

    let results = api.apply(INBOUND, adds).await;
    assert_eq!(
        results.iter().map(|(email, _)| email).collect::<Vec<_>>(),
        emails.iter().collect::<Vec<_>>()
    );
    assert!(results.iter().all(|(_, result)| result.is_ok()));
    assert_eq!(api.inbound_users_count(INBOUND).await.unwrap(), 1000);
    assert_eq!(
        sorted(api.inbound_users(INBOUND).await.unwrap()),
        sorted(emails.clone())
    );

    let removes = emails
        .iter()
        .map(|email| UserOp::Remove {
            email: email.clone(),
        })
        .collect();
    let results = api.apply(INBOUND, removes).await;
    assert!(results.iter().all(|(_, result)| result.is_ok()));
    assert_eq!(api.inbound_users_count(INBOUND).await.unwrap(), 0);
}

/// A node's whole user set (10,000) in one batch: every add succeeds and
/// xray lists them all (the time is measured by `make bench`, not here).
#[tokio::test]
async fn ten_thousand_adds_in_one_batch_all_land() {
    let xray = Xray::start().await;
    let api = xray.client().await;
    let adds: Vec<UserOp> = (0..10_000)
        .map(|n| UserOp::Add(mk_user(&format!("user-{n}@example.com"), n)))
        .collect();
    let results = api.apply(INBOUND, adds).await;
    assert!(results.iter().all(|(_, result)| result.is_ok()));
    assert_eq!(api.inbound_users_count(INBOUND).await.unwrap(), 10_000);
    assert_eq!(api.inbound_users(INBOUND).await.unwrap().len(), 10_000);
}

#[tokio::test]
async fn stats_of_a_fresh_server_read_without_error() {
    let xray = Xray::start().await;
    let api = xray.client().await;
    api.add_user(INBOUND, &mk_user("alice@example.com", 1))
        .await
        .unwrap();
    api.query_stats("", false).await.unwrap();
    api.query_stats("", true).await.unwrap();
    // Counters appear with the first byte moved; none has been.
    assert_eq!(api.user_traffic(true).await.unwrap(), []);
    assert_eq!(api.online_users().await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn client_reconnects_after_xray_restarts() {
    let xray = Xray::start().await;
    let api = xray.client().await;
    api.add_user(INBOUND, &mk_user("alice@example.com", 1))
        .await
        .unwrap();
    let addr = xray.api;
    drop(xray);

    let down = api.inbound_users_count(INBOUND).await.unwrap_err();
    assert!(down.is_transient(), "{down:?}");

    let _xray = Xray::start_at(addr).await;
    // The users went with the old process: the driver replays them.
    assert_eq!(api.inbound_users_count(INBOUND).await.unwrap(), 0);
    api.add_user(INBOUND, &mk_user("alice@example.com", 1))
        .await
        .unwrap();
}

#[tokio::test]
async fn nothing_listening_is_a_transient_error() {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let error = XrayApi::connect(addr).await.unwrap_err();
    assert!(error.is_transient(), "{error}");

    let lazy = XrayApi::connect_lazy(addr).unwrap();
    let error = lazy
        .add_user(INBOUND, &mk_user("alice@example.com", 1))
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    let results = lazy
        .apply(
            INBOUND,
            (0..500)
                .map(|n| UserOp::Remove {
                    email: format!("user-{n}@example.com"),
                })
                .collect(),
        )
        .await;
    assert_eq!(results.len(), 500);
    assert!(
        results
            .iter()
            .all(|(_, result)| result.as_ref().is_err_and(XrayApiError::is_transient))
    );
}

#[test]
fn user_counters_come_from_user_traffic_names_only() {
    let stats = [
        ("user>>>a.b@example.com>>>traffic>>>uplink", 10),
        ("user>>>a.b@example.com>>>traffic>>>downlink", 20),
        ("user>>>odd>>>name@x>>>traffic>>>downlink", 7),
        ("user>>>c@example.com>>>traffic>>>uplink", 5),
        ("user>>>c@example.com>>>online", 1),
        ("inbound>>>vless-in>>>traffic>>>uplink", 999),
        ("outbound>>>direct>>>traffic>>>downlink", 999),
        ("user>>>broken", 3),
        ("user>>>neg@example.com>>>traffic>>>uplink", -4),
    ]
    .map(|(name, value)| (name.to_owned(), value));
    let mk = |email: &str, uplink, downlink| UserCounters {
        email: email.to_owned(),
        uplink,
        downlink,
    };
    assert_eq!(
        user_counters(stats),
        [
            mk("a.b@example.com", 10, 20),
            mk("c@example.com", 5, 0),
            mk("neg@example.com", 0, 0),
            mk("odd>>>name@x", 0, 7),
        ]
    );
}

#[test]
fn online_names_yield_emails() {
    assert_eq!(
        online_user_email("user>>>a.b@example.com>>>online"),
        Some("a.b@example.com")
    );
    assert_eq!(online_user_email("inbound>>>x>>>online"), None);
    assert_eq!(online_user_email("user>>>a@b>>>traffic>>>uplink"), None);
}

#[test]
fn vless_user_debug_hides_the_uuid() {
    let user = mk_user("alice@example.com", 0xabcdef);
    let shown = format!("{user:?} {:?}", UserOp::Add(user.clone()));
    assert!(!shown.contains("abcdef"), "{shown}");
}
