//! Admin and node tokens (hashes only).

use chrono::{Duration, Utc};
use veil_operator::store::StoreError;

use crate::Fixture;

pub async fn admin_token_hash_is_set_then_replaced(fixture: &Fixture) {
    let store = fixture.open().await;
    assert_eq!(store.admin_token_hash().await.expect("read"), None);
    store.set_admin_token_hash("first").await.expect("set");
    assert_eq!(
        store.admin_token_hash().await.expect("read").as_deref(),
        Some("first")
    );
    store.set_admin_token_hash("second").await.expect("replace");
    assert_eq!(
        store.admin_token_hash().await.expect("read").as_deref(),
        Some("second")
    );
}

pub async fn node_tokens_authenticate_their_node_until_revoked(fixture: &Fixture) {
    let store = fixture.open().await;
    let before = Utc::now() - Duration::seconds(1);
    store
        .create_node_token("edge-1", "hash-a", "id-a")
        .await
        .expect("create");
    store
        .create_node_token("edge-1", "hash-b", "id-b")
        .await
        .expect("create");
    store
        .create_node_token("edge-0", "hash-c", "id-c")
        .await
        .expect("create");

    assert_eq!(
        store
            .node_for_token_hash("hash-a")
            .await
            .expect("a")
            .as_deref(),
        Some("edge-1")
    );
    assert_eq!(
        store
            .node_for_token_hash("hash-c")
            .await
            .expect("c")
            .as_deref(),
        Some("edge-0")
    );
    assert_eq!(
        store.node_for_token_hash("unknown").await.expect("unknown"),
        None
    );

    let tokens = store.node_tokens().await.expect("list");
    let listed: Vec<_> = tokens
        .iter()
        .map(|t| (t.node.as_str(), t.id.as_str()))
        .collect();
    assert_eq!(
        listed,
        [("edge-0", "id-c"), ("edge-1", "id-a"), ("edge-1", "id-b")]
    );
    assert!(
        tokens
            .iter()
            .all(|t| t.created_at > before && t.revoked_at.is_none())
    );

    assert!(store.revoke_node_token("id-a").await.expect("revoke"));
    assert_eq!(store.node_for_token_hash("hash-a").await.expect("a"), None);
    assert_eq!(
        store
            .node_for_token_hash("hash-b")
            .await
            .expect("b")
            .as_deref(),
        Some("edge-1")
    );
    // Revoking again, or an unknown id, changes nothing.
    assert!(!store.revoke_node_token("id-a").await.expect("revoke again"));
    assert!(
        !store
            .revoke_node_token("no-such-id")
            .await
            .expect("revoke unknown")
    );

    let tokens = store.node_tokens().await.expect("list");
    let revoked: Vec<_> = tokens
        .iter()
        .filter(|t| t.revoked_at.is_some())
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(revoked, ["id-a"]);
    let revoked_at = tokens[1].revoked_at.expect("revoked");
    assert!(revoked_at >= tokens[1].created_at);
}

pub async fn duplicate_token_id_or_hash_is_rejected(fixture: &Fixture) {
    let store = fixture.open().await;
    store
        .create_node_token("edge-1", "hash-a", "id-a")
        .await
        .expect("create");
    store.revoke_node_token("id-a").await.expect("revoke");

    let same_id = store.create_node_token("edge-2", "hash-b", "id-a").await;
    assert!(
        matches!(same_id, Err(StoreError::DuplicateToken { .. })),
        "{same_id:?}"
    );
    // A revoked token's hash stays taken: it can never authenticate again.
    let same_hash = store.create_node_token("edge-2", "hash-a", "id-b").await;
    assert!(
        matches!(same_hash, Err(StoreError::DuplicateToken { .. })),
        "{same_hash:?}"
    );
    assert_eq!(store.node_tokens().await.expect("list").len(), 1);
}
