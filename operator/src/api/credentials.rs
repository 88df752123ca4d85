//! `GET /v1/credentials/vlesskeys/{namespace}/{name}`: a VlessKey's id and
//! `vless://` link, for `veil-operator link` (admin token only).
//!
//! In dir mode this is where the credentials of the Secret named in
//! `status.credentialsSecret` are served from: the id comes from the key's
//! spec or the store (generated), the Reality public key and the node
//! endpoints from the server's status. Answers are never cached (`no-store`)
//! and nothing here is logged.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};
use veil_crds::protocol_server::{Protocol, ProtocolServerStatus};

use super::ApiState;
use crate::plan::vless::VLESS_ID_SCOPE;
use crate::plan::vless::link::{LinkParts, vless_link};

/// The key's id and link, or 404 (no such key) / 409 (not usable yet, and why).
pub async fn vless_key(
    State(state): State<ApiState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let view = state.view.borrow().clone();
    let key_ref = ObjectKey::new(Kind::VlessKey, &namespace, &name);
    let Some(Object::VlessKey(key)) = view.world.objects.get(&key_ref).map(|o| &o.object) else {
        return answer(
            StatusCode::NOT_FOUND,
            format!("vlesskey \"{name}\" not found in namespace {namespace}"),
        );
    };
    let server_name = key.spec.server_ref.name.as_str();
    let server_ref = ObjectKey::new(Kind::ProtocolServer, &namespace, server_name);
    let server = match view.world.objects.get(&server_ref).map(|o| &o.object) {
        Some(Object::ProtocolServer(server)) if server.spec.protocol == Protocol::Vless => server,
        Some(_) => {
            return answer(
                StatusCode::CONFLICT,
                format!("ProtocolServer {server_name} is not a `protocol: vless` server"),
            );
        }
        None => {
            return answer(
                StatusCode::CONFLICT,
                format!("ProtocolServer {server_name} not found in namespace {namespace}"),
            );
        }
    };
    let Some(vless) = &server.spec.vless else {
        return answer(
            StatusCode::CONFLICT,
            format!("ProtocolServer {server_name} has no `vless` settings"),
        );
    };
    let id = match &key.spec.id {
        Some(id) => id.uuid().hyphenated().to_string(),
        None => {
            let uid = key.metadata.uid.as_deref().unwrap_or_default();
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
    let status: ProtocolServerStatus = view
        .statuses
        .get(&server_ref)
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or_default();
    let Some(public_key) = status.public_key.as_deref() else {
        return answer(
            StatusCode::CONFLICT,
            format!(
                "ProtocolServer {server_name} has no Reality public key yet; see its Ready condition"
            ),
        );
    };
    let host = vless.public_address.clone().or_else(|| {
        status
            .nodes
            .iter()
            .find_map(|node| node.endpoint.as_deref().map(endpoint_host))
    });
    let Some(host) = host else {
        return answer(
            StatusCode::CONFLICT,
            format!(
                "no address is known for ProtocolServer {server_name}: set spec.vless.publicAddress, or start its nodes' agents with an address"
            ),
        );
    };
    let reality = &vless.reality;
    let link = vless_link(&LinkParts {
        id: &id,
        host: &host,
        port: server.spec.port.get(),
        flow: key.spec.flow.unwrap_or(vless.flow),
        server_name: reality.server_names.first().map_or("", String::as_str),
        fingerprint: reality.fingerprint,
        public_key,
        short_id: reality.short_ids.first().map_or("", String::as_str),
        remark: &name,
    });
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "id": id, "link": link })),
    )
        .into_response()
}

/// The host of a `host:port` endpoint (brackets of an IPv6 address removed).
fn endpoint_host(endpoint: &str) -> String {
    let host = endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

fn answer(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
