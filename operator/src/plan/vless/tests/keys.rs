//! Keys: ids, emails, lifecycle, per-node state, wake-ups.

use super::*;

fn now() -> DateTime<Utc> {
    at("2026-11-23T12:00:00Z")
}

fn alice(extra: &str) -> String {
    key("alice", &format!("  id: {ALICE_ID}\n{extra}"))
}

#[test]
fn a_key_without_id_uses_the_generated_one_and_waits_for_it() {
    let mut case = Case::new(&format!("{BASE}{}", key("carol", "")), now());
    case.agent("edge-1", "203.0.113.1");
    let waiting = case.plan();
    assert!(emails(&waiting, "edge-1").is_empty());
    let status = key_status(&waiting, "carol");
    assert_eq!(status["phase"], "Pending");
    assert_eq!(condition(&status, "Reconciling")["reason"], "IdPending");

    let uid = case.uid(Kind::VlessKey, "carol");
    case.secrets.vless_ids.insert(uid, BOB_ID.to_owned());
    let plan = case.plan();
    let users: Vec<_> = servers_of(&plan, "edge-1")[0].vless.users.iter().collect();
    assert_eq!(users[0].email, "default.carol");
    assert_eq!(users[0].id.expose(), BOB_ID);
    let status = key_status(&plan, "carol");
    assert_eq!(status["idPrefix"], &BOB_ID[..8]);
    assert_eq!(status["credentialsSecret"], "carol-vless");
    assert_eq!(status["email"], "default.carol");
}

#[test]
fn the_later_of_two_keys_with_one_email_is_an_error_naming_the_earlier() {
    let first = format!("{BASE}{}", alice("  email: shared\n"));
    let mut case = Case::new(&first, now());
    case.agent("edge-1", "203.0.113.1");
    case.now += TimeDelta::minutes(1);
    // `zed` comes later, `aaron` sorts first by name: creation time decides.
    let both = format!(
        "{first}{}",
        key("aaron", &format!("  id: {BOB_ID}\n  email: shared\n"))
    );
    case.edit(&both);
    let plan = case.plan();
    assert_eq!(emails(&plan, "edge-1"), ["shared"]);
    assert_eq!(
        servers_of(&plan, "edge-1")[0]
            .vless
            .users
            .iter()
            .next()
            .unwrap()
            .id
            .expose(),
        ALICE_ID,
        "the earlier key keeps working"
    );
    let aaron = key_status(&plan, "aaron");
    assert_eq!(aaron["phase"], "Error");
    let stalled = condition(&aaron, "Stalled");
    assert_eq!(stalled["reason"], "DuplicateEmail");
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains("VlessKey alice")
    );
    assert_ne!(key_status(&plan, "alice")["phase"], "Error");
}

#[test]
fn emails_differing_only_in_case_are_one_email_as_in_xray() {
    let first = format!("{BASE}{}", alice("  email: Shared@Example.com\n"));
    let mut case = Case::new(&first, now());
    case.agent("edge-1", "203.0.113.1");
    case.now += TimeDelta::minutes(1);
    let both = format!(
        "{first}{}",
        key(
            "aaron",
            &format!("  id: {BOB_ID}\n  email: shared@example.com\n")
        )
    );
    case.edit(&both);
    let plan = case.plan();
    assert_eq!(emails(&plan, "edge-1"), ["Shared@Example.com"]);
    let aaron = key_status(&plan, "aaron");
    assert_eq!(aaron["phase"], "Error");
    assert_eq!(condition(&aaron, "Stalled")["reason"], "DuplicateEmail");
}

#[test]
fn keys_created_together_keep_an_email_by_name() {
    let yaml = format!(
        "{BASE}{}{}",
        key("b", &format!("  id: {BOB_ID}\n  email: same\n")),
        alice("  email: same\n").replace("name: alice", "name: a")
    );
    let plan = Case::new(&yaml, now()).plan();
    assert_eq!(key_status(&plan, "b")["phase"], "Error");
    assert_ne!(key_status(&plan, "a")["phase"], "Error");
}

#[test]
fn a_key_for_a_missing_or_somnytoo_server_is_an_error() {
    let yaml = format!(
        "{BASE}{}{}
---
apiVersion: veil.dev/v1alpha1
kind: ProtocolServer
metadata: {{name: relay}}
spec:
  protocol: somnytoo
  port: 9000
  somnytoo:
    pskSecretRef: {{name: relay-psk, key: psk}}
",
        alice("").replace("name: edge-vless", "name: nowhere"),
        key("bob", &format!("  id: {BOB_ID}\n")).replace("name: edge-vless", "name: relay"),
    );
    let plan = Case::new(&yaml, now()).plan();
    let alice = key_status(&plan, "alice");
    assert_eq!(alice["phase"], "Error");
    assert_eq!(condition(&alice, "Stalled")["reason"], "ServerNotFound");
    assert!(
        condition(&alice, "Ready")["message"]
            .as_str()
            .unwrap()
            .contains("ProtocolServer nowhere not found")
    );
    let bob = key_status(&plan, "bob");
    assert_eq!(bob["phase"], "Error");
    assert_eq!(condition(&bob, "Stalled")["reason"], "ServerNotVless");
    assert!(emails(&plan, "edge-1").is_empty());
}

#[test]
fn disabled_expired_and_over_limit_keys_leave_the_assignment() {
    let yaml = format!(
        "{BASE}{}{}{}{}",
        alice(""),
        key(
            "dis",
            "  id: 11111111-1111-4111-8111-111111111111\n  enabled: false\n"
        ),
        key(
            "exp",
            "  id: 22222222-2222-4222-8222-222222222222\n  expiresAt: '2026-11-23T12:00:00Z'\n"
        ),
        key(
            "lim",
            "  id: 33333333-3333-4333-8333-333333333333\n  trafficLimitBytes: 1000\n"
        ),
    );
    let mut case = Case::new(&yaml, now());
    case.agent("edge-1", "203.0.113.1");
    case.traffic
        .add("default/edge-vless", "default.lim", 600, 400);
    let lim_uid = case.uid(Kind::VlessKey, "lim");
    // A baseline from the key's creation (never resets): all 1000 bytes count.
    case.traffic
        .put_baseline(crate::records::TrafficBaselineRecord {
            key_uid: lim_uid,
            server: "default/edge-vless".into(),
            email: "default.lim".into(),
            period_start: now(),
            uplink: 0,
            downlink: 0,
        });
    let plan = case.plan();
    assert_eq!(emails(&plan, "edge-1"), ["default.alice"]);
    assert_eq!(key_status(&plan, "dis")["phase"], "Disabled");
    assert_eq!(
        key_status(&plan, "exp")["phase"],
        "Expired",
        "now >= expiresAt"
    );
    let lim = key_status(&plan, "lim");
    assert_eq!(lim["phase"], "LimitExceeded");
    assert_eq!(lim["trafficBytes"], 1000);
    let ready = condition(&lim, "Ready");
    assert_eq!(ready["status"], "False");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("1000 of 1000 bytes")
    );
    for name in ["dis", "exp", "lim"] {
        let status = key_status(&plan, name);
        assert_eq!(condition(&status, "Stalled")["status"], "False", "{name}");
        assert_eq!(
            condition(&status, "Reconciling")["status"],
            "False",
            "{name}"
        );
    }
    assert_eq!(server_status(&plan)["users"], 1);
}

#[test]
fn an_expiring_key_wakes_the_controller_at_its_expiry_and_then_leaves() {
    let yaml = format!(
        "{BASE}{}{}",
        alice("  expiresAt: '2026-11-23T12:00:05Z'\n"),
        key(
            "later",
            &format!("  id: {BOB_ID}\n  expiresAt: '2026-12-01T00:00:00Z'\n")
        ),
    );
    let mut case = Case::new(&yaml, now());
    case.agent("edge-1", "203.0.113.1");
    let plan = case.plan();
    assert_eq!(plan.wake_at, Some(at("2026-11-23T12:00:05Z")));
    assert_eq!(emails(&plan, "edge-1"), ["default.alice", "default.later"]);

    case.now = at("2026-11-23T12:00:05Z");
    let plan = case.plan();
    assert_eq!(emails(&plan, "edge-1"), ["default.later"]);
    assert_eq!(key_status(&plan, "alice")["phase"], "Expired");
    assert_eq!(plan.wake_at, Some(at("2026-12-01T00:00:00Z")));
}

#[test]
fn a_key_is_active_once_every_node_reports_its_user_set_applied() {
    let mut case = Case::new(&format!("{BASE}{}", alice("")), now());
    case.agent("edge-1", "203.0.113.1")
        .agent("edge-2", "203.0.113.2");
    let plan = case.plan();
    let status = key_status(&plan, "alice");
    assert_eq!(status["phase"], "Pending", "no report yet");
    assert_eq!(status["nodes"][0]["phase"], "Pending");

    let hash = hash_of(&plan);
    case.report("edge-1", running(&hash));
    case.report("edge-2", running("an-older-set"));
    let status = key_status(&case.plan(), "alice");
    assert_eq!(status["phase"], "Pending");
    assert_eq!(status["nodes"][0]["phase"], "Running");
    assert!(
        status["nodes"][0].get("appliedRevision").is_none(),
        "per-key entries carry nothing that changes with other keys"
    );
    assert_eq!(status["nodes"][1]["phase"], "Pending");
    let message = condition(&status, "Ready")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("live on 1 of 2") && message.contains("edge-2"),
        "{message}"
    );

    case.report("edge-2", running(&hash));
    let status = key_status(&case.plan(), "alice");
    assert_eq!(status["phase"], "Active");
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(status["observedGeneration"], 1);
}

#[test]
fn a_user_refused_by_xray_is_failed_on_that_node_with_its_message() {
    let mut case = Case::new(&format!("{BASE}{}", alice("")), now());
    case.agent("edge-1", "203.0.113.1");
    let hash = hash_of(&case.plan());
    let mut report = running(&hash);
    report.failed_users = vec![failed("default.alice", "xray: invalid user")];
    case.report("edge-1", report);
    let status = key_status(&case.plan(), "alice");
    assert_eq!(status["phase"], "Error");
    assert_eq!(status["nodes"][0]["phase"], "Failed");
    assert_eq!(status["nodes"][0]["message"], "xray: invalid user");
    assert_eq!(condition(&status, "Stalled")["reason"], "RefusedByServer");
}

#[test]
fn a_removed_user_is_stopped_once_the_node_applied_the_set_without_it() {
    let yaml = format!("{BASE}{}", alice("  enabled: false\n"));
    let mut case = Case::new(&yaml, now());
    case.agent("edge-1", "203.0.113.1");
    let plan = case.plan();
    assert_eq!(key_status(&plan, "alice")["nodes"][0]["phase"], "Pending");
    let hash = hash_of(&plan);
    assert_eq!(hash, users_hash(&[]), "an empty set");
    case.report("edge-1", running(&hash));
    let status = key_status(&case.plan(), "alice");
    assert_eq!(status["phase"], "Disabled");
    assert_eq!(status["nodes"][0]["phase"], "Stopped");
}

#[test]
fn adding_a_key_leaves_the_others_live_while_it_is_applied() {
    let two = format!(
        "{BASE}{}{}",
        alice(""),
        key("bob", &format!("  id: {BOB_ID}\n"))
    );
    let mut case = Case::new(&two, now());
    case.agent("edge-1", "203.0.113.1")
        .agent("edge-2", "203.0.113.2");
    let first = hash_of(&case.settle());
    case.report("edge-1", running(&first))
        .report("edge-2", running(&first));
    let plan = case.settle();
    assert_eq!(key_status(&plan, "alice")["phase"], "Active");
    assert_eq!(key_status(&plan, "bob")["phase"], "Active");

    // Carol's addition is in flight: the agent still reports the old set.
    let carol_id = "3b9d0c1e-5f7a-4e2b-8c6d-9a1f0e2d4c75";
    case.edit(&format!(
        "{two}{}",
        key("carol", &format!("  id: {carol_id}\n"))
    ));
    let plan = case.settle();
    let second = hash_of(&plan);
    assert_ne!(first, second);
    assert_eq!(
        key_status(&plan, "alice")["phase"],
        "Active",
        "alice stays live"
    );
    assert_eq!(key_status(&plan, "bob")["phase"], "Active");
    assert_eq!(key_status(&plan, "carol")["phase"], "Pending");
    // Nothing in the others' status depends on the set: it is unchanged text.
    let alice_key = ObjectKey::new(Kind::VlessKey, "default", "alice");
    let before = case.previous[&alice_key].get().to_owned();

    case.report("edge-1", running(&second))
        .report("edge-2", running(&second));
    let plan = case.settle();
    assert_eq!(key_status(&plan, "carol")["phase"], "Active");
    assert_eq!(
        plan.statuses[&alice_key].get(),
        before,
        "alice's status text is unchanged"
    );
}

#[test]
fn a_changed_key_waits_for_its_own_change_to_be_applied() {
    let one = format!("{BASE}{}", alice(""));
    let mut case = Case::new(&one, now());
    case.agent("edge-1", "203.0.113.1")
        .agent("edge-2", "203.0.113.2");
    let first = hash_of(&case.settle());
    case.report("edge-1", running(&first))
        .report("edge-2", running(&first));
    assert_eq!(key_status(&case.settle(), "alice")["phase"], "Active");
    // A new flow for alice: her entry changes, so she is not kept live.
    case.edit(&format!("{BASE}{}", alice("  flow: none\n")));
    let plan = case.settle();
    assert_ne!(hash_of(&plan), first);
    assert_eq!(key_status(&plan, "alice")["phase"], "Pending");
}
