//! VLESS planning rules, tested in memory from YAML with an injected `now`.
#![allow(clippy::unwrap_used, reason = "tests fail loudly by design")]

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use veil_crds::common::WorkloadPhase;
use veil_crds::kind::Kind;
use veil_crds::object::ObjectKey;
use veil_crds::wire::{FailedUser, RegisterRequest, ServerAssignment, ServerId, ServerReport};

use super::*;
use crate::agents::NodeObservation;
use crate::plan::tests::{snapshot, uids};
use crate::plan::{Plan, PlanInputs, Statuses, plan};
use crate::world::{GenerationBook, World};

mod incremental;
mod keys;
mod servers;
mod traffic;

/// RFC 7748 §6.1 (Alice): a private key and its public key, base64url.
const PRIVATE: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo";
const PUBLIC: &str = "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo";

/// Two edge nodes and one other, and the server's Secret (a macro, so
/// that constants can be built from it with `concat!`).
macro_rules! nodes_and_secret {
    () => {
        "
apiVersion: veil.dev/v1alpha1
kind: VeilNode
metadata: {name: edge-1}
spec: {labels: {role: edge}}
---
apiVersion: veil.dev/v1alpha1
kind: VeilNode
metadata: {name: edge-2}
spec: {labels: {role: edge}}
---
apiVersion: veil.dev/v1alpha1
kind: VeilNode
metadata: {name: other}
---
apiVersion: v1
kind: Secret
metadata: {name: edge-reality}
stringData: {privateKey: dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo}
"
    };
}
use nodes_and_secret;

/// Two edge nodes and one other, the server, its Secret.
const BASE: &str = concat!(
    nodes_and_secret!(),
    "---
apiVersion: veil.dev/v1alpha1
kind: ProtocolServer
metadata: {name: edge-vless}
spec:
  nodeSelector: {matchLabels: {role: edge}}
  protocol: vless
  port: 443
  vless:
    reality:
      privateKeySecretRef: {name: edge-reality, key: privateKey}
      dest: www.microsoft.com:443
      serverNames: [www.microsoft.com]
      shortIds: ['', 6ba85179e30d4fc2]
"
);

const ALICE_ID: &str = "7d6a1b0e-3c1f-4b8e-9a57-2f0c1e5d9b41";
const BOB_ID: &str = "0f3c2a9e-1b4d-4c6e-8a2f-5d7e9b1c3a60";

/// A VlessKey on `edge-vless` with extra spec lines (indented two spaces).
fn key(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: veil.dev/v1alpha1\nkind: VlessKey\nmetadata: {{name: {name}}}\nspec:\n  serverRef: {{name: edge-vless}}\n{spec}"
    )
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// Everything `plan` reads, built up by a test.
struct Case {
    book: GenerationBook,
    world: World,
    nodes: BTreeMap<String, NodeObservation>,
    secrets: GeneratedSecrets,
    traffic: TrafficState,
    /// The statuses of the previous pass (see [`Case::settle`]).
    previous: Statuses,
    /// The memo of the previous pass.
    memo: crate::plan::StatusMemo,
    /// The incremental planner, stepped with every plan.
    planner: std::cell::RefCell<crate::plan::Planner>,
    /// The last uid [`Case::edit`] gave out.
    uids: u32,
    /// The source snapshot of the last [`Case::edit`].
    source: crate::source::SourceSnapshot,
    now: DateTime<Utc>,
}

impl Case {
    fn new(yaml: &str, now: DateTime<Utc>) -> Case {
        let mut book = GenerationBook::default();
        let (world, _) = book.build_world(&snapshot(yaml), now, uids());
        Case {
            book,
            world,
            nodes: BTreeMap::new(),
            secrets: GeneratedSecrets::default(),
            traffic: TrafficState::default(),
            previous: Statuses::new(),
            memo: Default::default(),
            planner: Default::default(),
            uids: 100,
            source: Default::default(),
            now,
        }
    }

    /// The source now holds `yaml`: objects new since are created at `now`.
    /// Objects whose document did not change are handed over as the same
    /// allocation, as the dir source does for an unchanged file.
    fn edit(&mut self, yaml: &str) {
        let mut n = self.uids;
        let source = crate::plan::tests::snapshot_after(&self.source, yaml);
        let (world, _) = self.book.build_world(&source, self.now, || {
            n += 1;
            format!("uid-{n}")
        });
        self.uids = n;
        self.world = world;
        self.source = source;
    }

    /// A Ready agent on `node`, registered with `address`.
    fn agent(&mut self, node: &str, address: &str) -> &mut Case {
        let registration: RegisterRequest = serde_json::from_value(serde_json::json!({
            "node": node, "os": "linux", "arch": "x86_64", "agentVersion": "test",
            "address": address,
        }))
        .unwrap();
        self.nodes.insert(
            node.to_owned(),
            NodeObservation {
                applied_revision: 7,
                ..NodeObservation::registered(registration, self.now, self.now)
            },
        );
        self
    }

    /// `node`'s agent reports the server (replacing what it reported before).
    fn report(&mut self, node: &str, report: ServerReport) -> &mut Case {
        let observation = self.nodes.get_mut(node).unwrap();
        observation.servers = vec![report];
        observation.servers_reported_at = Some(self.now);
        self
    }

    /// Plans, and keeps the statuses as the next pass's previous ones.
    fn settle(&mut self) -> Plan {
        let plan = self.plan();
        self.previous = plan.statuses.clone();
        self.memo = plan.memo.clone();
        plan
    }

    fn uid(&self, kind: Kind, name: &str) -> String {
        let key = ObjectKey::new(kind, "default", name);
        self.world.objects[&key].object.meta().uid.clone().unwrap()
    }

    /// Plans with the memo of the last [`Case::settle`], and checks that
    /// planning without one, and the incremental planner, give the very
    /// same plan (every VLESS test is also a test that neither the memo nor
    /// incremental planning ever changes a status).
    fn plan(&self) -> Plan {
        let runs = crate::records::RunStates::new();
        let times = BTreeMap::new();
        let inputs = |memo| PlanInputs {
            world: &self.world,
            previous: &self.previous,
            nodes: &self.nodes,
            runs: &runs,
            now: self.now,
            node_timeout: TimeDelta::seconds(30),
            last_schedule_times: &times,
            secrets: &self.secrets,
            traffic: &self.traffic,
            memo,
        };
        let with_memo = plan(&inputs(Some(&self.memo)));
        let without = plan(&inputs(None));
        let texts = |plan: &Plan| {
            plan.statuses
                .iter()
                .map(|(key, raw)| (key.clone(), raw.get().to_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            texts(&with_memo),
            texts(&without),
            "the memo changed a status"
        );
        assert_eq!(with_memo.phase_counts, without.phase_counts);
        let stepped = self.planner.borrow_mut().step(&inputs(Some(&self.memo)));
        crate::plan::tests::assert_same_plan(&stepped, &without);
        // The next pass sees the incremental planner's statuses as its
        // previous ones, as in the controller: its kept keys are exercised.
        stepped
    }
}

fn server_id() -> ServerId {
    ServerId {
        namespace: "default".into(),
        name: "edge-vless".into(),
    }
}

/// A Running report of `edge-vless` with `hash` applied.
fn running(hash: &str) -> ServerReport {
    ServerReport {
        server: server_id(),
        phase: WorkloadPhase::Running,
        pid: Some(4242),
        version: Some("26.3.27".into()),
        users: 2,
        connections: 5,
        restarts: 1,
        applied_users_hash: Some(hash.into()),
        ..ServerReport::default()
    }
}

/// The servers assigned to `node`.
fn servers_of<'p>(plan: &'p Plan, node: &str) -> &'p [ServerAssignment] {
    plan.assignments
        .get(node)
        .map_or(&[], |a| a.servers.as_slice())
}

/// Emails in `node`'s assignment of `edge-vless`.
fn emails(plan: &Plan, node: &str) -> Vec<String> {
    servers_of(plan, node)
        .iter()
        .flat_map(|s| s.vless.users.iter().map(|u| u.email.clone()))
        .collect()
}

fn status(plan: &Plan, kind: Kind, name: &str) -> Value {
    let raw = &plan.statuses[&ObjectKey::new(kind, "default", name)];
    serde_json::from_str(raw.get()).unwrap()
}

fn key_status(plan: &Plan, name: &str) -> Value {
    status(plan, Kind::VlessKey, name)
}

fn server_status(plan: &Plan) -> Value {
    status(plan, Kind::ProtocolServer, "edge-vless")
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

/// The hash of `edge-vless`'s user set in `plan` (same on every node).
fn hash_of(plan: &Plan) -> String {
    servers_of(plan, "edge-1")[0].vless.users_hash.clone()
}

fn failed(email: &str, message: &str) -> FailedUser {
    FailedUser {
        email: email.into(),
        message: message.into(),
    }
}
