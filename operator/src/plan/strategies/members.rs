//! Each Strategy's engine settings, resolved for agents: hostlists and
//! files read from the Secrets they name, a `vless` Strategy's link made
//! from its VlessKey (or read from its Secret). Secret content and links
//! travel only in the assignment (inside `SecretValue`), never in a status.

use std::collections::BTreeMap;

use base64::Engine as _;
use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};
use veil_crds::strategy::{Engine, FileSource, HostList, VlessEngine, ZapretEngine, ZapretSyntax};
use veil_crds::wire::{
    ResolvedFile, ResolvedHostList, SecretValue, StrategyMember, VlessMember, ZapretMember,
};

use super::groups::{Entry, Roles};
use crate::plan::Statuses;
use crate::plan::vless::share::{endpoint, key_link, key_server};
use crate::plan::vless::{GeneratedSecrets, Problem};
use crate::world::World;

/// Every Strategy's member as agents get it, or why it cannot be built.
pub type Resolved<'a> = BTreeMap<&'a ObjectKey, Result<StrategyMember, Problem>>;

/// What resolving reads besides the Strategies: the world, the statuses
/// last written (a VLESS server's public key and address) and the
/// generated VLESS ids.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub world: &'a World,
    pub previous: &'a Statuses,
    pub secrets: &'a GeneratedSecrets,
}

/// Resolves every Strategy of `roles`.
pub fn resolve<'a>(sources: Sources<'_>, roles: &Roles<'a>) -> Resolved<'a> {
    roles
        .strategies
        .iter()
        .map(|(&key, entry)| (key, member(sources, entry)))
        .collect()
}

fn member(sources: Sources<'_>, entry: &Entry<'_>) -> Result<StrategyMember, Problem> {
    let spec = &entry.object.spec;
    let namespace = &entry.key.namespace;
    let zapret = match (spec.engine, &spec.zapret) {
        (Engine::Zapret, Some(zapret)) => Some(zapret_member(sources.world, namespace, zapret)?),
        _ => None,
    };
    let vless = match (spec.engine, &spec.vless) {
        (Engine::Vless, Some(vless)) => Some(vless_member(sources, namespace, vless)?),
        _ => None,
    };
    Ok(StrategyMember {
        strategy: entry.id.clone(),
        generation: entry.object.metadata.generation.unwrap_or_default(),
        zapret,
        vless,
    })
}

/// A `vless` Strategy's link: its VlessKey's (the same link `veil-operator
/// link` prints) or the one in the Secret of `urlSecretRef`.
fn vless_member(
    sources: Sources<'_>,
    namespace: &str,
    vless: &VlessEngine,
) -> Result<VlessMember, Problem> {
    let link = match (&vless.key_ref, &vless.url_secret_ref) {
        (Some(key), _) => key_link_of(sources, namespace, key.name.as_str())?,
        (None, Some(reference)) => {
            let where_ = "vless.urlSecretRef";
            let name = reference.name.as_str();
            let bytes = secret_bytes(sources.world, namespace, name, &reference.key, where_)?;
            let text = String::from_utf8_lossy(&bytes).trim().to_owned();
            if !text.starts_with("vless://") {
                return Err(stalled(
                    "InvalidVlessLink",
                    format!(
                        "Secret {namespace}/{name} key `{}` ({where_}) does not hold a `vless://` link; put the server's share link there",
                        reference.key
                    ),
                ));
            }
            text
        }
        (None, None) => {
            return Err(stalled(
                "InvalidSpec",
                "`vless` names neither `keyRef` nor `urlSecretRef`".to_owned(),
            ));
        }
    };
    Ok(VlessMember {
        link: SecretValue(link),
        client: vless.client,
        socks_port: vless.socks_port.map(|port| port.get()),
    })
}

/// The link of VlessKey `namespace/name`, or why it has none yet.
fn key_link_of(sources: Sources<'_>, namespace: &str, name: &str) -> Result<String, Problem> {
    let key_ref = ObjectKey::new(Kind::VlessKey, namespace, name);
    let waiting = |message: String| Problem {
        reason: "VlessKeyNotReady",
        message: format!("vless.keyRef: {message}"),
        stalled: false,
    };
    let found = key_server(sources.world, &key_ref).map_err(|e| waiting(e.to_string()))?;
    let endpoint = endpoint(sources.previous, &found.server_key, found.vless)
        .map_err(|e| waiting(e.to_string()))?;
    let id = match &found.key.spec.id {
        Some(id) => id.uuid().hyphenated().to_string(),
        None => found
            .key
            .metadata
            .uid
            .as_deref()
            .and_then(|uid| sources.secrets.vless_ids.get(uid))
            .cloned()
            .ok_or_else(|| waiting(format!("the id of vlesskey {name} is not generated yet")))?,
    };
    Ok(key_link(&found, &endpoint, &id))
}

fn zapret_member(
    world: &World,
    namespace: &str,
    zapret: &ZapretEngine,
) -> Result<ZapretMember, Problem> {
    if zapret.syntax == ZapretSyntax::V2 {
        return Err(stalled(
            "SyntaxNotSupported",
            "zapret2 arguments (`syntax: v2`) need nfqws2, which Veil does not run yet; write the profile in zapret v1 syntax".to_owned(),
        ));
    }
    let hostlists = zapret
        .hostlists
        .iter()
        .map(|list| hostlist(world, namespace, list))
        .collect::<Result<_, _>>()?;
    let files = zapret
        .files
        .iter()
        .map(|file| file_data(world, namespace, file))
        .collect::<Result<_, _>>()?;
    Ok(ZapretMember {
        args: zapret
            .args
            .as_slice()
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect(),
        syntax: zapret.syntax,
        priority: zapret.priority,
        implementation: zapret.implementation,
        hostlists,
        files,
    })
}

fn hostlist(world: &World, namespace: &str, list: &HostList) -> Result<ResolvedHostList, Problem> {
    let where_ = format!("hostlists `{}`", list.name);
    if list.config_map_key_ref.is_some() {
        return Err(config_maps_unsupported(&where_));
    }
    let (domains, secret) = match &list.secret_key_ref {
        Some(reference) => {
            let bytes = secret_bytes(
                world,
                namespace,
                reference.name.as_str(),
                &reference.key,
                &where_,
            )?;
            let text = String::from_utf8_lossy(&bytes);
            let domains = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_owned)
                .collect();
            (domains, true)
        }
        None => (list.domains.clone(), false),
    };
    Ok(ResolvedHostList {
        name: list.name.as_str().to_owned(),
        domains,
        secret,
    })
}

fn file_data(world: &World, namespace: &str, file: &FileSource) -> Result<ResolvedFile, Problem> {
    let where_ = format!("files `{}`", file.name);
    if file.config_map_key_ref.is_some() {
        return Err(config_maps_unsupported(&where_));
    }
    let (bytes, secret) = match (&file.content, &file.secret_key_ref) {
        (Some(content), _) => (content.as_bytes().to_vec(), false),
        (None, Some(reference)) => (
            secret_bytes(
                world,
                namespace,
                reference.name.as_str(),
                &reference.key,
                &where_,
            )?,
            true,
        ),
        (None, None) => (Vec::new(), false),
    };
    Ok(ResolvedFile {
        name: file.name.as_str().to_owned(),
        data_base64: SecretValue(base64::engine::general_purpose::STANDARD.encode(bytes)),
        secret,
    })
}

/// A Secret key's raw bytes (`data`, else `stringData`).
fn secret_bytes(
    world: &World,
    namespace: &str,
    name: &str,
    key: &str,
    where_: &str,
) -> Result<Vec<u8>, Problem> {
    let object = world
        .objects
        .get(&ObjectKey::new(Kind::Secret, namespace, name));
    let Some(Object::Secret(secret)) = object.map(|o| &*o.object) else {
        return Err(Problem {
            reason: "SecretNotFound",
            message: format!(
                "Secret {namespace}/{name} ({where_}) does not exist yet; create it with key `{key}`"
            ),
            stalled: false,
        });
    };
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.as_bytes().to_vec())
        })
        .ok_or_else(|| {
            stalled(
                "SecretKeyNotFound",
                format!("Secret {namespace}/{name} ({where_}) has no key `{key}`; add it"),
            )
        })
}

fn config_maps_unsupported(where_: &str) -> Problem {
    stalled(
        "ConfigMapNotSupported",
        format!(
            "{where_} names a ConfigMap, which Veil does not read yet; list the content inline or in a Secret (`secretKeyRef`)"
        ),
    )
}

fn stalled(reason: &'static str, message: String) -> Problem {
    Problem {
        reason,
        message,
        stalled: true,
    }
}
