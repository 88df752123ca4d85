#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use super::*;
use crate::protocol_server::VlessFlow;
use crate::wire::SecretValue;
use proptest::prelude::*;

fn user(email: &str, id: &str, flow: VlessFlow) -> VlessUser {
    VlessUser {
        email: email.into(),
        id: SecretValue(id.into()),
        flow,
    }
}

#[test]
fn users_hash_is_short_and_covers_email_id_and_flow() {
    let base = [user("a", "1", VlessFlow::XtlsRprxVision)];
    let hash = users_hash(&base);
    assert_eq!(hash.len(), 16);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(hash, users_hash(&base), "stable");
    for changed in [
        user("b", "1", VlessFlow::XtlsRprxVision),
        user("a", "2", VlessFlow::XtlsRprxVision),
        user("a", "1", VlessFlow::None),
    ] {
        assert_ne!(users_hash(&[changed]), hash);
    }
    assert_ne!(users_hash(&[]), hash);
    // Fields are delimited: moving a character between them is a change.
    assert_ne!(
        users_hash(&[user("ab", "c", VlessFlow::None)]),
        users_hash(&[user("a", "bc", VlessFlow::None)])
    );
}

#[test]
fn a_replaced_user_changes_the_fingerprint_and_putting_it_back_restores_it() {
    let mut set: Users = vec![
        user("a", "1", VlessFlow::None),
        user("b", "2", VlessFlow::None),
    ]
    .into();
    let before = set.hash();
    let old = set.insert(user("a", "9", VlessFlow::None));
    assert_eq!(old, Some(user("a", "1", VlessFlow::None)));
    assert_eq!(set.len(), 2);
    assert_ne!(set.hash(), before);
    set.insert(user("a", "1", VlessFlow::None));
    assert_eq!(set.hash(), before);
    assert_eq!(set.remove("b"), Some(user("b", "2", VlessFlow::None)));
    assert_eq!(set.remove("b"), None);
    assert_eq!(set.hash(), users_hash(&[user("a", "1", VlessFlow::None)]));
}

#[test]
fn the_wire_form_is_a_list_sorted_by_email_and_duplicates_are_refused() {
    let set: Users = vec![
        user("b", "2", VlessFlow::None),
        user("a", "1", VlessFlow::XtlsRprxVision),
    ]
    .into();
    let json = serde_json::to_value(&set).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"email": "a", "id": "1", "flow": "xtls-rprx-vision"},
            {"email": "b", "id": "2", "flow": "none"}
        ])
    );
    let back: Users = serde_json::from_value(json).unwrap();
    assert_eq!(back, set);
    let twice = serde_json::json!([
        {"email": "a", "id": "1", "flow": "none"},
        {"email": "a", "id": "2", "flow": "none"}
    ]);
    let err = serde_json::from_value::<Users>(twice)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"a\" appears twice"), "{err}");
    assert!(!err.contains('2'), "no id in the message: {err}");
}

#[test]
fn changes_between_a_large_set_and_one_derived_from_it_list_only_the_changes() {
    let big: Users = (0..10_000)
        .map(|i| user(&format!("u{i:05}"), &format!("id{i}"), VlessFlow::None))
        .collect();
    let mut next = big.clone();
    next.insert(user("u00042", "new", VlessFlow::None));
    next.insert(user("zz", "z", VlessFlow::None));
    next.remove("u00007");
    let (upserted, removed) = big.changes_to(&next);
    assert_eq!(
        upserted,
        vec![
            user("u00042", "new", VlessFlow::None),
            user("zz", "z", VlessFlow::None)
        ]
    );
    assert_eq!(removed, vec!["u00007".to_owned()]);
    assert_ne!(big, next);
    assert_eq!(big, big.clone());
}

fn arb_users() -> impl Strategy<Value = Vec<VlessUser>> {
    prop::collection::vec(("[a-e]{1,2}", "[0-3]", any::<bool>()), 0..12).prop_map(|v| {
        v.into_iter()
            .map(|(email, id, vision)| {
                let flow = if vision {
                    VlessFlow::XtlsRprxVision
                } else {
                    VlessFlow::None
                };
                user(&email, &id, flow)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The kept fingerprint is the one computed over the set, whatever
    /// order users came in and were replaced; equal sets are equal.
    #[test]
    fn the_kept_fingerprint_matches_the_set(a in arb_users(), b in arb_users()) {
        let mut set: Users = a.iter().cloned().collect();
        for u in &b {
            set.insert(u.clone());
        }
        prop_assert_eq!(set.hash(), users_hash(set.iter()));
        let mut reversed: Vec<VlessUser> = set.iter().cloned().collect();
        reversed.reverse();
        let rebuilt: Users = reversed.into_iter().collect();
        prop_assert_eq!(&rebuilt, &set);
        prop_assert_eq!(rebuilt.hash(), set.hash());
        let other: Users = b.into_iter().collect();
        let (upserted, removed) = set.changes_to(&other);
        let mut patched = set.clone();
        for email in &removed {
            patched.remove(email);
        }
        for u in upserted {
            patched.insert(u);
        }
        prop_assert_eq!(patched.hash(), other.hash());
        prop_assert_eq!(patched, other);
    }
}
