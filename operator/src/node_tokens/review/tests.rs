use k8s_openapi::api::authentication::v1::UserInfo;

use super::*;

fn config() -> ReviewConfig {
    ReviewConfig {
        audience: DEFAULT_AGENT_AUDIENCE.to_owned(),
        service_account: ServiceAccountRef {
            namespace: "veil-system".to_owned(),
            name: "veil-agent".to_owned(),
        },
    }
}

fn mk_status(
    authenticated: bool,
    audiences: &[&str],
    user: &str,
    extra: &[(&str, &str)],
) -> TokenReviewStatus {
    TokenReviewStatus {
        authenticated: Some(authenticated),
        audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
        error: None,
        user: Some(UserInfo {
            username: Some(user.to_owned()),
            extra: Some(
                extra
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
                    .collect(),
            ),
            ..UserInfo::default()
        }),
    }
}

const AGENT: &str = "system:serviceaccount:veil-system:veil-agent";
const BOUND: [(&str, &str); 3] = [
    (NODE_NAME_EXTRA, "edge-1"),
    (POD_NAME_EXTRA, "veil-agent-x7"),
    (POD_UID_EXTRA, "uid-1"),
];

#[test]
fn a_pod_bound_agent_token_names_the_pods_node() {
    let status = mk_status(true, &[DEFAULT_AGENT_AUDIENCE], AGENT, &BOUND);
    assert_eq!(
        judge(&status, &config()),
        Ok(AgentPod {
            node: "edge-1".into(),
            pod: "veil-agent-x7".into(),
            pod_uid: "uid-1".into(),
        })
    );
}

#[test]
fn every_other_answer_is_refused_with_its_reason() {
    let mut invalid = mk_status(false, &[], "", &[]);
    invalid.error = Some("token has expired".into());
    let cases = [
        (invalid, "not valid: token has expired", false),
        (
            mk_status(true, &["https://kubernetes.default.svc"], AGENT, &BOUND),
            "not for audience `veil.dev/agent`",
            false,
        ),
        (
            mk_status(
                true,
                &[DEFAULT_AGENT_AUDIENCE],
                "system:serviceaccount:veil-system:default",
                &BOUND,
            ),
            "is not the agent ServiceAccount `system:serviceaccount:veil-system:veil-agent`",
            true,
        ),
        (
            mk_status(
                true,
                &[DEFAULT_AGENT_AUDIENCE],
                AGENT,
                &[(POD_NAME_EXTRA, "p")],
            ),
            "not bound to a Pod on a node",
            true,
        ),
        (
            mk_status(true, &[DEFAULT_AGENT_AUDIENCE], AGENT, &[]),
            "not bound to a Pod on a node",
            true,
        ),
    ];
    for (status, reason, forbidden) in cases {
        let refusal = judge(&status, &config()).unwrap_err();
        assert!(refusal.to_string().contains(reason), "{refusal}");
        assert_eq!(refusal.is_forbidden(), forbidden, "{refusal}");
    }
}

#[test]
fn only_jwt_shaped_tokens_are_sent_for_review() {
    assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln-_x"));
    for other in [
        "veil_node_abcdef",
        "eyJ.a",
        "eyJa..c",
        "eyJa.b.c.d",
        "eyJa.b c.d",
        "abc.def.ghi",
    ] {
        assert!(!looks_like_jwt(other), "{other}");
    }
}

#[test]
fn an_accepted_token_is_cached_no_longer_than_it_lives() {
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":1000}"#);
    let token = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.sig");
    assert_eq!(expires_at(&token), Some(1000));
    assert_eq!(expires_at("veil_node_x"), None);
    assert_eq!(accepted_ttl(Some(1000), 997), Duration::from_secs(3));
    assert_eq!(accepted_ttl(Some(1000), 2000), Duration::ZERO);
    assert_eq!(accepted_ttl(Some(100_000), 0), ACCEPTED_TTL);
    assert_eq!(accepted_ttl(None, 0), ACCEPTED_TTL);
}

#[test]
fn service_accounts_parse_with_or_without_a_namespace() {
    assert_eq!(
        ServiceAccountRef::parse("ns:sa", "veil-system").user_name(),
        "system:serviceaccount:ns:sa"
    );
    assert_eq!(
        ServiceAccountRef::parse("veil-agent", "veil-system").user_name(),
        AGENT
    );
}
