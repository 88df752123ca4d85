use super::*;

fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, ByteString> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), ByteString(value.to_vec())))
        .collect()
}

/// A Secret's data as test input: `(key, value)` pairs.
type Pairs<'a> = &'a [(&'a str, &'a [u8])];

fn secrets(list: &[(&str, Pairs)]) -> BTreeMap<String, SecretTokens> {
    list.iter()
        .map(|(name, pairs)| ((*name).to_owned(), parse_secret(Some(&data(pairs)))))
        .collect()
}

#[test]
fn a_node_name_key_grants_its_trimmed_token() {
    let parsed = parse_secret(Some(&data(&[("edge-1", b"veil_node_aaa\n")])));
    assert_eq!(
        parsed.nodes,
        BTreeMap::from([("edge-1".to_owned(), hash_token("veil_node_aaa"))])
    );
    assert!(parsed.skipped.is_empty());
    let parsed = parse_secret(Some(&data(&[("edge-2.example", b"  veil_node_bbb  ")])));
    assert_eq!(parsed.nodes["edge-2.example"], hash_token("veil_node_bbb"));
    assert_eq!(parse_secret(None), SecretTokens::default());
}

#[test]
fn a_secret_with_tokens_of_several_nodes_grants_none_of_them() {
    let parsed = parse_secret(Some(&data(&[
        ("edge-1", b"veil_node_aaa"),
        ("edge-2", b"veil_node_bbb"),
        ("Bad_Key", b"veil_node_ccc"),
    ])));
    assert!(parsed.nodes.is_empty());
    let reasons: Vec<String> = parsed.skipped.iter().map(ToString::to_string).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[1].starts_with(
            "key `edge-1` is skipped with every other key: this Secret holds tokens of 2 nodes"
        ),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().all(|r| !r.contains("veil_node_")),
        "{reasons:?}"
    );
}

#[test]
fn invalid_names_and_empty_or_binary_values_are_skipped_without_the_value() {
    let parsed = parse_secret(Some(&data(&[
        ("Edge_1", b"veil_node_secret-value"),
        ("edge-2", b" \n"),
        ("edge-3", &[0xff, 0xfe]),
        ("edge-4", b"veil_node_ok"),
    ])));
    // One valid node key: it is granted, the others are skipped.
    assert_eq!(parsed.nodes.keys().collect::<Vec<_>>(), ["edge-4"]);
    let reasons: Vec<String> = parsed.skipped.iter().map(ToString::to_string).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].starts_with("key `Edge_1` is not a valid node name"));
    assert_eq!(reasons[1], "key `edge-2` holds an empty token");
    assert_eq!(
        reasons[2],
        "key `edge-3` holds a token that is not UTF-8 text"
    );
    assert!(reasons.iter().all(|r| !r.contains("secret-value")));
}

#[test]
fn a_node_with_tokens_in_two_secrets_is_accepted_with_either() {
    let (index, ambiguous) = TokenIndex::build(&secrets(&[
        ("old", &[("edge-1", b"token-a")]),
        ("new", &[("edge-1", b"token-b")]),
        ("other", &[("edge-2", b"token-c")]),
    ]));
    assert!(ambiguous.is_empty());
    assert_eq!(index.len(), 3);
    assert_eq!(index.node_for(&hash_token("token-a")), Some("edge-1"));
    assert_eq!(index.node_for(&hash_token("token-b")), Some("edge-1"));
    assert_eq!(index.node_for(&hash_token("token-c")), Some("edge-2"));
    assert_eq!(index.node_for(&hash_token("token-d")), None);
}

#[test]
fn one_token_under_two_node_names_is_accepted_for_neither() {
    let (index, ambiguous) = TokenIndex::build(&secrets(&[
        ("a", &[("edge-1", b"shared")]),
        ("b", &[("edge-2", b"shared")]),
        ("c", &[("edge-1", b"shared")]),
        ("d", &[("edge-3", b"own")]),
    ]));
    assert_eq!(index.node_for(&hash_token("shared")), None);
    assert_eq!(index.node_for(&hash_token("own")), Some("edge-3"));
    assert_eq!(
        ambiguous,
        [AmbiguousToken {
            holders: vec![
                ("a".into(), "edge-1".into()),
                ("b".into(), "edge-2".into()),
                ("c".into(), "edge-1".into()),
            ]
        }]
    );
}

#[test]
fn lookups_wait_for_the_first_list_and_follow_every_replacement() {
    let tokens = NodeTokens::listing();
    let hash = hash_token("token-a");
    assert_eq!(tokens.lookup(&hash), Lookup::NotListed);
    let (index, _) = TokenIndex::build(&secrets(&[("s", &[("edge-1", b"token-a")])]));
    tokens.replace(index);
    assert_eq!(tokens.clone().lookup(&hash), Lookup::Node("edge-1".into()));
    // The key removed: revoked for the very next lookup.
    tokens.replace(TokenIndex::build(&secrets(&[("s", &[])])).0);
    assert_eq!(tokens.lookup(&hash), Lookup::Unknown);
    assert_eq!(NodeTokens::off().lookup(&hash), Lookup::Unknown);
}

#[test]
fn the_cli_writes_one_secret_per_node_and_replaces_its_token() {
    let (secret, replaced) = with_token(None, "veil-system", "edge-1", "t1");
    assert!(!replaced);
    assert_eq!(
        secret.metadata.name.as_deref(),
        Some("veil-node-token-edge-1")
    );
    assert_eq!(secret.metadata.namespace.as_deref(), Some("veil-system"));
    assert_eq!(secret.type_.as_deref(), Some(NODE_TOKEN_SECRET_TYPE));
    let labels = secret.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[MANAGED_BY.0], MANAGED_BY.1);
    assert_eq!(labels[NODE_LABEL], "edge-1");
    let (secret, replaced) = with_token(Some(secret), "veil-system", "edge-1", "t3");
    assert!(replaced);
    let parsed = parse_secret(secret.data.as_ref());
    assert_eq!(parsed.nodes.len(), 1);
    assert_eq!(parsed.nodes["edge-1"], hash_token("t3"));

    // A hand-made key next to it is dropped, never left to make the Secret
    // hold two nodes.
    let mut secret = secret;
    secret
        .data
        .as_mut()
        .unwrap()
        .insert("edge-2".into(), ByteString(b"t2".to_vec()));
    let (secret, _) = with_token(Some(secret), "veil-system", "edge-1", "t4");
    assert_eq!(
        parse_secret(secret.data.as_ref())
            .nodes
            .keys()
            .collect::<Vec<_>>(),
        ["edge-1"]
    );
}
