//! The controller against a real SQLite store: generated credentials,
//! assignments with servers, clock-driven wake-ups.
#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use chrono::TimeZone;
use veil_crds::wire::RegisterRequest;

use serde_json::Value;
use veil_crds::reality;

use super::*;
use crate::plan::tests::snapshot;
use crate::plan::vless::{REALITY_KEY_SCOPE, VLESS_ID_SCOPE};
use crate::store::StoreTarget;

const OBJECTS: &str = "
apiVersion: veil.dev/v1alpha1
kind: ProtocolServer
metadata: {name: edge-vless}
spec:
  protocol: vless
  port: 8443
  vless:
    reality:
      dest: www.microsoft.com:443
      serverNames: [www.microsoft.com]
---
apiVersion: veil.dev/v1alpha1
kind: VlessKey
metadata: {name: bob}
spec:
  serverRef: {name: edge-vless}
  expiresAt: '2026-11-23T12:00:30Z'
";

struct Fixture {
    store: Store,
    agents: Arc<Agents>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreTarget::Sqlite(dir.path().join("veil.db")))
            .await
            .unwrap();
        Fixture {
            store,
            agents: Arc::new(Agents::default()),
            _dir: dir,
        }
    }

    /// A controller as `run` starts it (a restart when called again).
    async fn controller(&self) -> (Controller, watch::Receiver<Arc<View>>) {
        let metrics = Arc::new(Metrics::new());
        let (view, views) = watch::channel(Arc::new(View::default()));
        let controller = Controller::start(
            self.store.clone(),
            self.agents.clone(),
            Arc::new(RunBook::load(self.store.clone()).await.unwrap()),
            Arc::new(
                TrafficBook::load(self.store.clone(), metrics.clone())
                    .await
                    .unwrap(),
            ),
            std::time::Duration::from_secs(30),
            view,
            metrics,
        )
        .await
        .unwrap();
        (controller, views)
    }
}

fn source(yaml: &str, version: u64) -> SourceSnapshot {
    SourceSnapshot {
        version,
        ..snapshot(yaml)
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn public_key(views: &watch::Receiver<Arc<View>>) -> Value {
    let view = views.borrow().clone();
    let key = ObjectKey::new(Kind::ProtocolServer, "default", "edge-vless");
    let status: Value = serde_json::from_str(view.statuses[&key].get()).unwrap();
    status["publicKey"].clone()
}

#[tokio::test]
async fn generated_credentials_are_made_once_kept_across_restarts_and_dropped_with_their_object() {
    let fixture = Fixture::new().await;
    let (mut controller, views) = fixture.controller().await;
    controller
        .reconcile(&source(OBJECTS, 1), now())
        .await
        .unwrap();
    let ids = fixture
        .store
        .generated_values(VLESS_ID_SCOPE)
        .await
        .unwrap();
    let keys = fixture
        .store
        .generated_values(REALITY_KEY_SCOPE)
        .await
        .unwrap();
    assert_eq!((ids.len(), keys.len()), (1, 1));
    let public = public_key(&views);
    assert_eq!(
        public,
        reality::public_key(&keys[0].1).unwrap(),
        "status shows the generated key's public half"
    );
    let id_prefix = {
        let view = views.borrow().clone();
        let key = ObjectKey::new(Kind::VlessKey, "default", "bob");
        let status: Value = serde_json::from_str(view.statuses[&key].get()).unwrap();
        status["idPrefix"].clone()
    };
    assert_eq!(id_prefix, &ids[0].1[..8]);

    let (mut restarted, views) = fixture.controller().await;
    restarted
        .reconcile(&source(OBJECTS, 1), now())
        .await
        .unwrap();
    assert_eq!(public_key(&views), public, "the same key after a restart");
    assert_eq!(
        fixture
            .store
            .generated_values(VLESS_ID_SCOPE)
            .await
            .unwrap(),
        ids
    );

    restarted.reconcile(&source("", 2), now()).await.unwrap();
    assert!(
        fixture
            .store
            .generated_values(VLESS_ID_SCOPE)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        fixture
            .store
            .generated_values(REALITY_KEY_SCOPE)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_node_gets_the_server_and_the_controller_wakes_for_the_expiry() {
    let fixture = Fixture::new().await;
    let registration: RegisterRequest = serde_json::from_value(serde_json::json!({
        "node": "edge-1", "os": "linux", "arch": "x86_64", "agentVersion": "t"
    }))
    .unwrap();
    fixture.agents.register(registration, now());
    let assignment = fixture.agents.subscribe("edge-1");
    let (mut controller, _views) = fixture.controller().await;
    let before = tokio::time::Instant::now();
    controller
        .reconcile(&source(OBJECTS, 1), now())
        .await
        .unwrap();
    let wake = controller.wake_at.unwrap();
    assert!(
        wake >= before + std::time::Duration::from_secs(30)
            && wake <= tokio::time::Instant::now() + std::time::Duration::from_secs(31),
        "woken at bob's expiry, 30 s after `now`"
    );
    let assigned = assignment.borrow().clone();
    assert_eq!(assigned.servers.len(), 1);
    assert_eq!(assigned.servers[0].vless.users.len(), 1);
    let revision = assigned.revision;

    let expired = now() + chrono::TimeDelta::seconds(30);
    controller
        .reconcile(&source(OBJECTS, 1), expired)
        .await
        .unwrap();
    let assigned = assignment.borrow().clone();
    assert!(
        assigned.servers[0].vless.users.is_empty(),
        "the expired key left"
    );
    assert!(assigned.revision > revision);
}
