//! Credentials ⇄ Secrets, in memory: apply bodies read back as the same
//! content, what a replica adopts, which Secrets a world calls for, and
//! which watch events wake the controller.
#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;
use veil_crds::kind::Kind;
use veil_crds::object::ObjectKey;

use super::convert::{
    CredentialKind, IdSource, ObservedSecret, adopted, apply_body, observe, reality_secret,
    vless_secret,
};
use super::desired::desired_secrets;
use super::watch::apply;
use super::{ID_KEY, LINK_KEY, Observed, PRIVATE_KEY_KEY, PUBLIC_KEY_KEY};
use crate::plan::tests::{snapshot, uids};
use crate::plan::vless::{GeneratedSecrets, TrafficState};
use crate::plan::{PlanInputs, plan};
use crate::world::GenerationBook;

/// RFC 7748 §6.1 (Alice): a private key and its public key, base64url.
const PRIVATE: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo";
const PUBLIC: &str = "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo";
const ALICE_ID: &str = "7d6a1b0e-3c1f-4b8e-9a57-2f0c1e5d9b41";
const BOB_ID: &str = "0f3c2a9e-1b4d-4c6e-8a2f-5d7e9b1c3a60";

fn alice() -> ObjectKey {
    ObjectKey::new(Kind::VlessKey, "team", "alice")
}

/// What the API server would store for `body` (plus `extra` metadata).
fn stored(body: &serde_json::Value, resource_version: &str) -> Secret {
    let mut body = body.clone();
    body["metadata"]["resourceVersion"] = json!(resource_version);
    serde_json::from_value(body).unwrap()
}

fn read_back(body: &serde_json::Value) -> ObservedSecret {
    observe(&stored(body, "1")).unwrap().1
}

#[test]
fn a_vless_secret_is_labelled_typed_owned_and_reads_back_as_written() {
    let desired = vless_secret(
        &alice(),
        "uid-a",
        ALICE_ID,
        IdSource::Generated,
        Some("vless://x"),
    );
    assert_eq!(desired.name, ("team".to_owned(), "alice-vless".to_owned()));
    let body = apply_body(&desired);
    assert_eq!(body["type"], "veil.dev/vless-credentials");
    assert_eq!(
        body["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "veil", "veil.dev/vlesskey": "alice"})
    );
    assert_eq!(
        body["metadata"]["annotations"],
        json!({"veil.dev/id-source": "generated"})
    );
    assert_eq!(
        body["metadata"]["ownerReferences"],
        json!([{"apiVersion": "veil.dev/v1alpha1", "kind": "VlessKey", "name": "alice",
                "uid": "uid-a", "controller": true}])
    );
    // `data` is base64, as the API wants it.
    assert_eq!(
        body["data"][ID_KEY],
        "N2Q2YTFiMGUtM2MxZi00YjhlLTlhNTctMmYwYzFlNWQ5YjQx"
    );
    let seen = read_back(&body);
    assert_eq!(seen.content, desired.content);
    assert_eq!(seen.resource_version.as_deref(), Some("1"));
    assert_eq!(seen.content.data[LINK_KEY], "vless://x");
}

#[test]
fn a_reality_secret_holds_the_key_pair_and_reads_back_as_written() {
    let server = ObjectKey::new(Kind::ProtocolServer, "team", "edge");
    let desired = reality_secret(&server, "uid-s", PRIVATE, PUBLIC);
    assert_eq!(desired.name.1, "edge-reality");
    let body = apply_body(&desired);
    assert_eq!(body["type"], "veil.dev/reality-key");
    assert_eq!(
        body["metadata"]["labels"]["veil.dev/protocolserver"],
        "edge"
    );
    assert_eq!(
        body["metadata"]["ownerReferences"][0]["kind"],
        "ProtocolServer"
    );
    assert!(body["metadata"].get("annotations").is_none());
    let seen = read_back(&body);
    assert_eq!(seen.content, desired.content);
    assert_eq!(seen.content.data[PRIVATE_KEY_KEY], PRIVATE);
    assert_eq!(seen.content.data[PUBLIC_KEY_KEY], PUBLIC);
}

#[test]
fn what_a_person_adds_is_ignored_and_what_they_change_is_a_difference() {
    let desired = vless_secret(&alice(), "uid-a", ALICE_ID, IdSource::Generated, None);
    let mut body = apply_body(&desired);
    body["metadata"]["labels"]["team"] = json!("blue");
    body["metadata"]["annotations"]["note"] = json!("hi");
    body["data"]["extra"] = json!("eA==");
    assert_eq!(read_back(&body).content, desired.content);

    let mut edited = apply_body(&desired);
    edited["data"][ID_KEY] = json!("MA==");
    assert_ne!(read_back(&edited).content, desired.content);
    let mut relabelled = apply_body(&desired);
    relabelled["metadata"]["labels"]["veil.dev/vlesskey"] = json!("bob");
    assert_ne!(read_back(&relabelled).content, desired.content);
    let mut orphaned = apply_body(&desired);
    orphaned["metadata"]["ownerReferences"][0]["controller"] = json!(false);
    let orphaned = read_back(&orphaned);
    assert_eq!(orphaned.content.owner, None);
    assert_ne!(orphaned.content, desired.content);
}

#[test]
fn secrets_of_other_types_are_not_credentials() {
    for secret_type in ["Opaque", "veil.dev/node-token"] {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "x", "namespace": "team",
                         "labels": {"app.kubernetes.io/managed-by": "veil"}},
            "type": secret_type,
            "data": {"id": "eA=="},
        }))
        .unwrap();
        assert!(observe(&secret).is_none(), "{secret_type}");
    }
}

#[test]
fn generated_ids_and_keys_are_adopted_by_owner_uid_anything_else_is_not() {
    let server = ObjectKey::new(Kind::ProtocolServer, "team", "edge");
    let bob = ObjectKey::new(Kind::VlessKey, "team", "bob");
    let carol = ObjectKey::new(Kind::VlessKey, "team", "carol");
    let dave = ObjectKey::new(Kind::VlessKey, "team", "dave");
    let upper = ALICE_ID.to_uppercase();
    let secrets = [
        vless_secret(&alice(), "uid-a", &upper, IdSource::Generated, None),
        // spec.id: the Secret only carries it.
        vless_secret(&bob, "uid-b", BOB_ID, IdSource::Spec, None),
        // Not a UUID (edited by hand): the leader rewrites it.
        vless_secret(&carol, "uid-c", "not-a-uuid", IdSource::Generated, None),
        reality_secret(&server, "uid-s", &format!("{PRIVATE}="), PUBLIC),
    ];
    let mut observed: Vec<ObservedSecret> = secrets
        .iter()
        .map(|desired| read_back(&apply_body(desired)))
        .collect();
    // No controller owner: whose would it be?
    let mut ownerless = read_back(&apply_body(&vless_secret(
        &dave,
        "uid-d",
        BOB_ID,
        IdSource::Generated,
        None,
    )));
    ownerless.content.owner = None;
    observed.push(ownerless);

    let adopted = adopted(&observed);
    assert_eq!(
        adopted.vless_ids,
        [("uid-a".to_owned(), ALICE_ID.to_owned())].into(),
        "ids are adopted in their canonical (lowercase) form"
    );
    assert_eq!(
        adopted.reality_keys,
        [("uid-s".to_owned(), PRIVATE.to_owned())].into(),
        "keys are adopted in the form xray reads"
    );
    assert_eq!(
        format!("{adopted:?}"),
        "Adopted { vless_ids: 1, reality_keys: 1 }"
    );
    let debug = format!("{:?}", observed[0]);
    assert!(
        !debug.contains(&upper) && debug.contains("\"id\""),
        "{debug}"
    );
}

#[test]
fn only_changes_of_the_operators_fields_wake_the_controller() {
    let desired = vless_secret(&alice(), "uid-a", ALICE_ID, IdSource::Generated, None);
    let body = apply_body(&desired);
    let mut state = Observed::default();
    let (name, first) = observe(&stored(&body, "1")).unwrap();
    assert!(apply(&mut state, name.clone(), first), "new");
    let (_, echo) = observe(&stored(&body, "2")).unwrap();
    assert!(
        !apply(&mut state, name.clone(), echo),
        "only the version moved"
    );
    assert_eq!(
        state.secrets[&name].resource_version.as_deref(),
        Some("2"),
        "but the version is kept"
    );
    let mut edited = body.clone();
    edited["data"][ID_KEY] = json!("MA==");
    let (_, edited) = observe(&stored(&edited, "3")).unwrap();
    assert!(apply(&mut state, name, edited), "edited");
    assert_eq!(state.version, 2);
}

const WORLD: &str = "
apiVersion: veil.dev/v1alpha1
kind: ProtocolServer
metadata: {name: edge}
spec:
  protocol: vless
  port: 443
  vless:
    publicAddress: vpn.example.com
    reality:
      dest: www.microsoft.com:443
      serverNames: [www.microsoft.com]
      shortIds: [6ba85179e30d4fc2]
---
apiVersion: v1
kind: Secret
metadata: {name: own-reality}
stringData: {privateKey: dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo}
---
apiVersion: veil.dev/v1alpha1
kind: ProtocolServer
metadata: {name: own}
spec:
  protocol: vless
  port: 8443
  vless:
    reality:
      privateKeySecretRef: {name: own-reality, key: privateKey}
      dest: www.microsoft.com:443
      serverNames: [www.microsoft.com]
---
apiVersion: veil.dev/v1alpha1
kind: VlessKey
metadata: {name: alice}
spec: {serverRef: {name: edge}}
---
apiVersion: veil.dev/v1alpha1
kind: VlessKey
metadata: {name: bob}
spec: {serverRef: {name: edge}, id: 0f3c2a9e-1b4d-4c6e-8a2f-5d7e9b1c3a60}
---
apiVersion: veil.dev/v1alpha1
kind: VlessKey
metadata: {name: carol}
spec: {serverRef: {name: edge}}
---
apiVersion: veil.dev/v1alpha1
kind: VlessKey
metadata: {name: dave}
spec: {serverRef: {name: own}}
";

#[test]
fn the_world_calls_for_a_secret_per_known_id_and_per_generated_reality_key() {
    let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
    let (world, _) = GenerationBook::default().build_world(&snapshot(WORLD), now, uids());
    let uid = |kind, name| {
        world.objects[&ObjectKey::new(kind, "default", name)]
            .object
            .meta()
            .uid
            .clone()
            .unwrap()
    };
    let (alice_uid, edge_uid) = (
        uid(Kind::VlessKey, "alice"),
        uid(Kind::ProtocolServer, "edge"),
    );
    let dave_uid = uid(Kind::VlessKey, "dave");
    let secrets = GeneratedSecrets {
        vless_ids: [
            (alice_uid.clone(), ALICE_ID.to_owned()),
            (dave_uid, "5b0f1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d".to_owned()),
        ]
        .into_iter()
        .collect(),
        reality_keys: [(edge_uid.clone(), PRIVATE.to_owned())]
            .into_iter()
            .collect(),
    };
    let planned = plan(&PlanInputs {
        world: &world,
        previous: &Default::default(),
        nodes: &BTreeMap::new(),
        runs: &Default::default(),
        now,
        node_timeout: chrono::Duration::seconds(30),
        last_schedule_times: &BTreeMap::new(),
        secrets: &secrets,
        traffic: &TrafficState::default(),
        memo: None,
    });
    let wanted: BTreeMap<String, _> = desired_secrets(&world, &planned.statuses, &secrets)
        .into_iter()
        .map(|desired| (desired.name.1.clone(), desired.content))
        .collect();
    assert_eq!(
        wanted.keys().collect::<Vec<_>>(),
        ["alice-vless", "bob-vless", "dave-vless", "edge-reality"],
        "carol has no id yet; `own`'s key is the user's Secret, never copied"
    );
    let alice = &wanted["alice-vless"];
    assert_eq!(alice.kind, CredentialKind::Vless);
    assert_eq!(alice.owner.as_ref().unwrap().uid, alice_uid);
    assert_eq!(alice.id_source.as_deref(), Some("generated"));
    assert_eq!(alice.data[ID_KEY], ALICE_ID);
    assert_eq!(
        alice.data[LINK_KEY],
        format!(
            "vless://{ALICE_ID}@vpn.example.com:443?encryption=none&flow=xtls-rprx-vision&security=reality&sni=www.microsoft.com&fp=chrome&pbk={PUBLIC}&sid=6ba85179e30d4fc2&spx=%2F&type=tcp#alice"
        )
    );
    let bob = &wanted["bob-vless"];
    assert_eq!(bob.id_source.as_deref(), Some("spec"));
    assert!(bob.data[LINK_KEY].starts_with(&format!("vless://{BOB_ID}@")));
    // `own` has no address: the id, without a link.
    assert!(!wanted["dave-vless"].data.contains_key(LINK_KEY));
    let edge = &wanted["edge-reality"];
    assert_eq!(edge.owner.as_ref().unwrap().uid, edge_uid);
    assert_eq!(edge.data[PRIVATE_KEY_KEY], PRIVATE);
    assert_eq!(edge.data[PUBLIC_KEY_KEY], PUBLIC);
}
