//! Each Strategy's engine settings, resolved for agents: hostlists and
//! files read from the Secrets they name. Secret content travels only in
//! the assignment (file data inside `SecretValue`), never in a status.

use std::collections::BTreeMap;

use base64::Engine as _;
use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};
use veil_crds::strategy::{Engine, FileSource, HostList, ZapretEngine, ZapretSyntax};
use veil_crds::wire::{ResolvedFile, ResolvedHostList, SecretValue, StrategyMember, ZapretMember};

use super::groups::{Entry, Roles};
use crate::plan::vless::Problem;
use crate::world::World;

/// Every Strategy's member as agents get it, or why it cannot be built.
pub type Resolved<'a> = BTreeMap<&'a ObjectKey, Result<StrategyMember, Problem>>;

/// Resolves every Strategy of `roles`.
pub fn resolve<'a>(world: &World, roles: &Roles<'a>) -> Resolved<'a> {
    roles
        .strategies
        .iter()
        .map(|(&key, entry)| (key, member(world, entry)))
        .collect()
}

fn member(world: &World, entry: &Entry<'_>) -> Result<StrategyMember, Problem> {
    let spec = &entry.object.spec;
    let zapret = match (spec.engine, &spec.zapret) {
        (Engine::Zapret, Some(zapret)) => Some(zapret_member(world, &entry.key.namespace, zapret)?),
        _ => None,
    };
    Ok(StrategyMember {
        strategy: entry.id.clone(),
        generation: entry.object.metadata.generation.unwrap_or_default(),
        zapret,
    })
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
