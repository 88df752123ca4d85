#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use proptest::prelude::*;

use super::*;
use crate::protocol_server::VlessFlow;
use crate::wire::SecretValue;

fn id(name: &str) -> ServerId {
    ServerId {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn user(email: &str, uuid: &str) -> VlessUser {
    VlessUser {
        email: email.into(),
        id: SecretValue(uuid.into()),
        flow: VlessFlow::XtlsRprxVision,
    }
}

fn server(name: &str, port: u16, users: Vec<VlessUser>) -> ServerAssignment {
    let users = Users::from(users);
    ServerAssignment {
        server: id(name),
        listen: "0.0.0.0".into(),
        port,
        allow_cidrs: Vec::new(),
        vless: VlessAssignment {
            private_key: SecretValue("private-key".into()),
            dest: "www.example.com:443".into(),
            server_names: vec!["www.example.com".into()],
            short_ids: vec!["ab".into()],
            policy: None,
            users_hash: users.hash(),
            users,
        },
    }
}

fn assignment(revision: u64, servers: Vec<ServerAssignment>) -> Assignment {
    Assignment {
        node: "edge-1".into(),
        revision,
        servers,
        ..Assignment::default()
    }
}

/// Users `u0..u{n}` with ids derived from their number.
fn users(n: usize) -> Vec<VlessUser> {
    (0..n)
        .map(|i| user(&format!("u{i:06}"), &format!("id-{i}")))
        .collect()
}

#[test]
fn one_user_added_among_many_is_one_user_in_the_delta() {
    let before = assignment(1, vec![server("edge", 443, users(1000))]);
    let mut more = users(1000);
    more.push(user("new@example.com", "id-new"));
    let after = assignment(2, vec![server("edge", 443, more)]);
    let delta = diff(&before, &after);
    assert_eq!(delta.from, 1);
    assert_eq!(delta.revision, 2);
    assert!(delta.tasks.is_none() && delta.strategies.is_none());
    assert_eq!(delta.servers.len(), 1);
    let change = &delta.servers[0];
    assert!(change.settings.is_none(), "settings did not change");
    assert_eq!(
        change.upserted_users,
        vec![user("new@example.com", "id-new")]
    );
    assert!(change.removed_users.is_empty());
    let mut applied = before.clone();
    apply(&mut applied, &delta).unwrap();
    assert_eq!(applied, after);
}

#[test]
fn removed_changed_and_new_users_servers_and_settings_round_trip() {
    let before = assignment(
        5,
        vec![
            server("a", 443, vec![user("x", "1"), user("y", "2")]),
            server("gone", 8443, vec![user("z", "3")]),
        ],
    );
    let after = assignment(
        9,
        vec![
            server("a", 444, vec![user("x", "1-rotated"), user("w", "4")]),
            server("b", 443, vec![user("x", "5")]),
        ],
    );
    let delta = diff(&before, &after);
    assert_eq!(delta.removed_servers, vec![id("gone")]);
    let a = &delta.servers[0];
    assert_eq!(a.server, id("a"));
    assert_eq!(a.settings.as_ref().unwrap().port, 444, "the port changed");
    assert!(a.settings.as_ref().unwrap().vless.users.is_empty());
    assert_eq!(
        a.upserted_users,
        vec![user("w", "4"), user("x", "1-rotated")]
    );
    assert_eq!(a.removed_users, vec!["y".to_owned()]);
    let b = &delta.servers[1];
    assert!(b.settings.is_some(), "a new server comes with its settings");
    let mut applied = before.clone();
    apply(&mut applied, &delta).unwrap();
    assert_eq!(applied, after);
}

#[test]
fn an_unchanged_assignment_is_an_empty_delta() {
    let a = assignment(3, vec![server("edge", 443, users(10))]);
    let mut b = a.clone();
    b.revision = 4;
    let delta = diff(&a, &b);
    assert_eq!(
        delta,
        AssignmentDelta {
            from: 3,
            revision: 4,
            ..AssignmentDelta::default()
        }
    );
}

#[test]
fn a_delta_for_another_revision_is_refused() {
    let before = assignment(1, vec![server("edge", 443, users(3))]);
    let after = assignment(2, vec![server("edge", 443, users(4))]);
    let delta = diff(&before, &after);
    let mut other = before.clone();
    other.revision = 7;
    assert_eq!(
        apply(&mut other, &delta),
        Err(DeltaError::WrongBase { have: 7, from: 1 })
    );
}

#[test]
fn a_base_that_differs_from_the_operators_is_caught_by_the_fingerprint() {
    let before = assignment(1, vec![server("edge", 443, users(3))]);
    let after = assignment(2, vec![server("edge", 443, users(4))]);
    let delta = diff(&before, &after);
    // The agent's copy lost a user (a bug, a hand-edited file): the rebuilt
    // set is not the operator's, and the agent must not run it.
    let mut drifted = before.clone();
    drifted.servers[0].vless.users.remove("u000000");
    let error = apply(&mut drifted, &delta).unwrap_err();
    assert!(
        matches!(error, DeltaError::UsersHash { ref server, .. } if *server == id("edge")),
        "{error}"
    );
}

#[test]
fn a_new_server_without_settings_is_refused() {
    let before = assignment(1, Vec::new());
    let delta = AssignmentDelta {
        from: 1,
        revision: 2,
        servers: vec![ServerDelta {
            server: id("edge"),
            settings: None,
            upserted_users: Vec::new(),
            removed_users: Vec::new(),
            users_hash: Users::new().hash(),
        }],
        ..AssignmentDelta::default()
    };
    let mut applied = before;
    assert_eq!(
        apply(&mut applied, &delta),
        Err(DeltaError::NewServerWithoutSettings(id("edge")))
    );
}

#[test]
fn deltas_resolve_in_order_and_need_a_base() {
    let r1 = assignment(1, vec![server("edge", 443, users(2))]);
    let r2 = assignment(2, vec![server("edge", 443, users(3))]);
    let r3 = assignment(3, vec![server("edge", 443, users(1))]);
    let update = AssignmentUpdate::Deltas(vec![diff(&r1, &r2), diff(&r2, &r3)]);
    assert_eq!(update.clone().resolve(Some(r1)).unwrap(), r3);
    assert_eq!(update.resolve(None), Err(DeltaError::NoBase));
    let full = AssignmentUpdate::Full(r3.clone());
    assert_eq!(full.resolve(None).unwrap(), r3);
}

#[test]
fn one_key_added_at_100000_users_is_a_few_hundred_bytes_on_the_wire() {
    let before = assignment(1, vec![server("edge", 443, users(100_000))]);
    let mut more = users(100_000);
    more.push(user(
        "new@example.com",
        "6f1d3c1e-8f9a-4a57-9a51-1d2b3c4d5e6f",
    ));
    let after = assignment(2, vec![server("edge", 443, more)]);
    let whole = serde_json::to_vec(&AssignmentUpdate::Full(after.clone())).unwrap();
    let delta = serde_json::to_vec(&AssignmentUpdate::Deltas(vec![diff(&before, &after)])).unwrap();
    assert!(delta.len() < 512, "{} bytes", delta.len());
    assert!(whole.len() > 1_000_000, "{} bytes", whole.len());
}

#[test]
fn the_wire_form_names_the_variant() {
    let update = AssignmentUpdate::Deltas(Vec::new());
    assert_eq!(serde_json::to_string(&update).unwrap(), r#"{"deltas":[]}"#);
    let full: AssignmentUpdate =
        serde_json::from_str(r#"{"full":{"node":"n","revision":3}}"#).unwrap();
    assert!(matches!(full, AssignmentUpdate::Full(a) if a.revision == 3));
}

/// A random assignment: up to 4 servers out of 5 names, each with up to 12
/// users out of 16 emails, ids out of 3 and both flows, and one of 2 ports.
fn any_assignment() -> impl Strategy<Value = Assignment> {
    let user = (0..16u8, 0..3u8, any::<bool>()).prop_map(|(email, id, vision)| VlessUser {
        email: format!("user-{email:02}"),
        id: SecretValue(format!("id-{id}")),
        flow: if vision {
            VlessFlow::XtlsRprxVision
        } else {
            VlessFlow::None
        },
    });
    let server = (
        0..5u8,
        prop_oneof![Just(443u16), Just(8443u16)],
        proptest::collection::vec(user, 0..12),
    )
        .prop_map(|(name, port, mut users)| {
            users.sort_by(|a, b| a.email.cmp(&b.email));
            users.dedup_by(|a, b| a.email == b.email);
            server(&format!("s{name}"), port, users)
        });
    (1..1000u64, proptest::collection::vec(server, 0..4)).prop_map(|(revision, mut servers)| {
        servers.sort_by(|a, b| a.server.cmp(&b.server));
        servers.dedup_by(|a, b| a.server == b.server);
        assignment(revision, servers)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever two assignments are, applying the delta between them to
    /// the first gives the second, and the delta names no user twice.
    #[test]
    fn applying_the_diff_gives_the_new_assignment(old in any_assignment(), new in any_assignment()) {
        let delta = diff(&old, &new);
        let mut applied = old.clone();
        apply(&mut applied, &delta).unwrap();
        prop_assert_eq!(&applied, &new);
        for change in &delta.servers {
            let mut emails: Vec<&str> = change.upserted_users.iter().map(|u| u.email.as_str())
                .chain(change.removed_users.iter().map(String::as_str)).collect();
            let all = emails.len();
            emails.sort_unstable();
            emails.dedup();
            prop_assert_eq!(emails.len(), all);
        }
    }
}
