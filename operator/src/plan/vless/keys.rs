//! VlessKeys as planning sees them: the server they belong to, their email,
//! id and flow, their period usage, and whether they are in the server's
//! user set.
//!
//! Rules, in order: a key naming a missing or non-vless server is `Error`;
//! of keys sharing an email on one server, the one created first (then by
//! name) keeps it and the others are `Error`; then `enabled: false` is
//! `Disabled`, `now >= expiresAt` is `Expired`, period usage at or over
//! `trafficLimitBytes` is `LimitExceeded`; every other key is eligible.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use veil_crds::kind::Kind;
use veil_crds::object::{Object, ObjectKey};
use veil_crds::protocol_server::{Protocol, VlessFlow};
use veil_crds::vless_key::VlessKey;

use super::TrafficState;
use super::inputs::GeneratedSecrets;
use super::servers::{Problem, Server};
use super::usage::{PeriodUsage, period_usage};
use crate::records::TrafficBaselineRecord;
use crate::world::World;

/// A VlessKey, resolved.
pub struct Key<'a> {
    pub key: &'a ObjectKey,
    pub object: &'a VlessKey,
    /// The user key in effect: `spec.email` or `<namespace>.<name>`.
    pub email: String,
    /// The server it belongs to, when that is a vless ProtocolServer.
    pub server: Option<&'a ObjectKey>,
    /// The id (hyphenated UUID) when known. A credential.
    pub id: Option<String>,
    pub flow: VlessFlow,
    /// Period usage (keys on a vless server only).
    pub usage: Option<PeriodUsage>,
    pub state: KeyState,
}

/// Where a key stands before node reports are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Cannot be applied (missing server, taken email).
    Error(Problem),
    /// In the user set once the id and the server's keys exist; `Some`
    /// names what it is waiting for.
    Eligible(Option<Problem>),
    Disabled,
    Expired,
    /// Usage reached the limit (bytes) in this period.
    LimitExceeded(u64),
}

/// Every VlessKey of the world, oldest first (creation time, then key), and
/// the baselines to persist for periods that began.
pub fn resolve<'a>(
    world: &'a World,
    servers: &BTreeMap<&'a ObjectKey, Server<'a>>,
    secrets: &GeneratedSecrets,
    traffic: &TrafficState,
    now: DateTime<Utc>,
) -> (Vec<Key<'a>>, Vec<TrafficBaselineRecord>) {
    let mut objects: Vec<(Option<DateTime<Utc>>, &ObjectKey, &VlessKey)> = world
        .of_kind(Kind::VlessKey)
        .filter_map(|(key, object)| match &*object.object {
            Object::VlessKey(vless_key) => Some((created(vless_key), key, &**vless_key)),
            _ => None,
        })
        .collect();
    objects.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));

    let mut holders: HashMap<(&ObjectKey, String), &ObjectKey> = HashMap::new();
    let mut baselines = Vec::new();
    let mut keys = Vec::with_capacity(objects.len());
    for (created, key, object) in objects {
        let server = servers
            .get_key_value(&server_of(key, object))
            .map(|(&server_key, server)| (server_key, server));
        // The first key of a (server, email) pair holds the email.
        let holder = server.map(|(server_key, _)| {
            *holders
                .entry((server_key, email_of(key, object).to_lowercase()))
                .or_insert(key)
        });
        let (resolved, baseline) = resolve_one(
            Subject {
                key,
                object,
                created,
                server,
                holder: holder.filter(|holder| *holder != key),
            },
            world,
            secrets,
            traffic,
            now,
        );
        baselines.extend(baseline);
        keys.push(resolved);
    }
    (keys, baselines)
}

/// One VlessKey to resolve, with what the other keys decide for it.
pub struct Subject<'a, 's> {
    pub key: &'a ObjectKey,
    pub object: &'a VlessKey,
    pub created: Option<DateTime<Utc>>,
    /// Its server, when that is a vless ProtocolServer.
    pub server: Option<(&'a ObjectKey, &'s Server<'a>)>,
    /// The older key on the same server that holds its email, if any.
    pub holder: Option<&'a ObjectKey>,
}

/// The key ProtocolServer `object` names.
pub fn server_of(key: &ObjectKey, object: &VlessKey) -> ObjectKey {
    ObjectKey::new(
        Kind::ProtocolServer,
        &key.namespace,
        object.spec.server_ref.name.as_str(),
    )
}

/// The email in effect: `spec.email` or `<namespace>.<name>`.
pub fn email_of(key: &ObjectKey, object: &VlessKey) -> String {
    object.spec.email.as_ref().map_or_else(
        || format!("{}.{}", key.namespace, key.name),
        |e| e.as_str().to_owned(),
    )
}

/// Resolves one key; the baseline to persist when its period began.
pub fn resolve_one<'a>(
    subject: Subject<'a, '_>,
    world: &World,
    secrets: &GeneratedSecrets,
    traffic: &TrafficState,
    now: DateTime<Utc>,
) -> (Key<'a>, Option<TrafficBaselineRecord>) {
    let Subject {
        key,
        object,
        created,
        server,
        holder,
    } = subject;
    let email = email_of(key, object);
    let uid = object.metadata.uid.as_deref().unwrap_or_default();
    let id = match &object.spec.id {
        Some(id) => Some(id.uuid().hyphenated().to_string()),
        None => secrets.vless_ids.get(uid).cloned(),
    };
    let Some((server_key, server)) = server else {
        let resolved = Key {
            key,
            object,
            email,
            server: None,
            id,
            flow: object.spec.flow.unwrap_or_default(),
            usage: None,
            state: KeyState::Error(missing_server(world, &server_of(key, object))),
        };
        return (resolved, None);
    };
    let flow = object.spec.flow.unwrap_or(server.vless.flow);
    let (usage, baseline) = period_usage(
        object,
        created,
        &server.id.to_string(),
        &email,
        traffic,
        now,
    );
    // xray compares emails without regard to case: `Alice@x` and
    // `alice@x` are one user to it, so they are one email here too.
    let state = match holder {
        Some(holder) => KeyState::Error(duplicate_email(&email, server_key, holder)),
        None => lifecycle(object, &usage, server, id.is_some(), now),
    };
    let resolved = Key {
        key,
        object,
        email,
        server: Some(server_key),
        id,
        flow,
        usage: Some(usage),
        state,
    };
    (resolved, baseline)
}

/// The error of a key whose email an older key on the server holds.
fn duplicate_email(email: &str, server: &ObjectKey, holder: &ObjectKey) -> Problem {
    Problem {
        reason: "DuplicateEmail",
        message: format!(
            "email `{email}` is already used on ProtocolServer {} by VlessKey {} (created earlier; xray ignores case in emails); set a different `email`",
            server.name, holder.name
        ),
        stalled: true,
    }
}

/// Disabled, expired, over the limit, or eligible (and what it waits for).
fn lifecycle(
    object: &VlessKey,
    usage: &PeriodUsage,
    server: &Server<'_>,
    has_id: bool,
    now: DateTime<Utc>,
) -> KeyState {
    if !object.spec.enabled {
        return KeyState::Disabled;
    }
    if object
        .spec
        .expires_at
        .as_ref()
        .is_some_and(|at| now >= at.utc())
    {
        return KeyState::Expired;
    }
    if let Some(limit) = object.spec.traffic_limit_bytes
        && usage.total() >= limit.get()
    {
        return KeyState::LimitExceeded(limit.get());
    }
    let waiting = if !has_id {
        Some(Problem {
            reason: "IdPending",
            message: "waiting for the operator to generate the id".to_owned(),
            stalled: false,
        })
    } else {
        server.reality.as_ref().err().map(|problem| Problem {
            reason: "ServerNotReady",
            message: format!(
                "ProtocolServer {} cannot run: {}",
                server.key.name, problem.message
            ),
            stalled: false,
        })
    };
    KeyState::Eligible(waiting)
}

pub fn missing_server(world: &World, server: &ObjectKey) -> Problem {
    let (reason, message) = match world.objects.get(server).map(|o| &*o.object) {
        Some(Object::ProtocolServer(other)) if other.spec.protocol != Protocol::Vless => (
            "ServerNotVless",
            format!(
                "ProtocolServer {} has `protocol: somnytoo`; VlessKeys need a `protocol: vless` server",
                server.name
            ),
        ),
        _ => (
            "ServerNotFound",
            format!(
                "ProtocolServer {} not found in namespace {}; create it or fix spec.serverRef.name",
                server.name, server.namespace
            ),
        ),
    };
    Problem {
        reason,
        message,
        stalled: true,
    }
}

/// `metadata.creationTimestamp` as a UTC instant.
pub fn created(key: &VlessKey) -> Option<DateTime<Utc>> {
    let time = key.metadata.creation_timestamp.as_ref()?;
    DateTime::parse_from_rfc3339(&time.0.to_string())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
