//! `GET /v1/credentials/vlesskeys/{namespace}/{name}`: a VlessKey's id and
//! `vless://` link, for `veil-operator link` (admin token only).
//!
//! In dir mode this is where the credentials of the Secret named in
//! `status.credentialsSecret` are served from (in Kubernetes mode that
//! Secret exists too, with the same link: both come from
//! [`crate::plan::vless::share`]): the id comes from the key's spec or the
//! store (generated, or adopted from the cluster), the Reality public key
//! and the node endpoints from the server's status. Answers are never
//! cached (`no-store`) and nothing here is logged.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use veil_crds::kind::Kind;
use veil_crds::object::ObjectKey;

use super::ApiState;
use crate::plan::vless::VLESS_ID_SCOPE;
use crate::plan::vless::share::{LinkError, endpoint, key_link, key_server};

/// The key's id and link, or 404 (no such key) / 409 (not usable yet, and why).
pub async fn vless_key(
    State(state): State<ApiState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let view = state.view.borrow().clone();
    let key_ref = ObjectKey::new(Kind::VlessKey, &namespace, &name);
    let key = match key_server(&view.world, &key_ref) {
        Ok(key) => key,
        Err(error) => return link_error(&error),
    };
    let id = match &key.key.spec.id {
        Some(id) => id.uuid().hyphenated().to_string(),
        None => {
            let uid = key.key.metadata.uid.as_deref().unwrap_or_default();
            match state.store.generated_value(VLESS_ID_SCOPE, uid).await {
                Ok(Some(id)) => id,
                Ok(None) => {
                    return answer(
                        StatusCode::CONFLICT,
                        "the key's id is not generated yet; try again in a moment".to_owned(),
                    );
                }
                Err(error) => {
                    return answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("state store: {error}"),
                    );
                }
            }
        }
    };
    let endpoint = match endpoint(&view.statuses, &key.server_key, key.vless) {
        Ok(endpoint) => endpoint,
        Err(error) => return link_error(&error),
    };
    let link = key_link(&key, &endpoint, &id);
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "id": id, "link": link })),
    )
        .into_response()
}

fn link_error(error: &LinkError) -> Response {
    let status = match error {
        LinkError::KeyNotFound { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::CONFLICT,
    };
    answer(status, error.to_string())
}

fn answer(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
