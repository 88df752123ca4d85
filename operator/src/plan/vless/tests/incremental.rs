//! The incremental planner against the reference: random histories of key
//! and server edits, agent registrations, heartbeats and reports (current,
//! old and unknown user sets, refused users), traffic, persisted baselines
//! and generated ids, clock steps across expiries, periods and the node
//! timeout, and statuses replaced from outside (as Kubernetes adoption
//! does). After every step [`Case::plan`] checks that the incremental plan
//! equals the plan from scratch in every status (VeilNodes, servers, keys,
//! and a Runner with a TaskRun placed on the same nodes), assignment,
//! baseline and wake time.

use proptest::prelude::*;

use crate::records::TrafficBaselineRecord;

use super::*;

/// Servers a key may name: two that come and go, a somnytoo one, none.
const SERVERS: [&str; 4] = ["edge-vless", "alt", "tunnel", "missing"];
const EMAILS: [&str; 3] = ["a@x", "A@x", "b@x"];
const KEYS: usize = 5;
const NODES: [&str; 2] = ["edge-1", "edge-2"];

#[derive(Clone, Debug)]
struct KeySpec {
    server: usize,
    email: Option<usize>,
    given_id: bool,
    enabled: bool,
    /// Seconds after the start of the history.
    expires: Option<i64>,
    limit: bool,
    period: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ServerState {
    Absent,
    Vless,
    Somnytoo,
}

#[derive(Clone, Copy, Debug)]
enum Applied {
    Current,
    Previous,
    Unknown,
}

#[derive(Clone, Debug)]
enum Op {
    Key(usize, Option<KeySpec>),
    Server(usize, ServerState),
    Heartbeat(usize),
    Report {
        node: usize,
        server: usize,
        applied: Applied,
        running: bool,
        refused: Vec<usize>,
    },
    Traffic(usize, u64),
    /// Another leader stored a different baseline for key `.0` (one it
    /// had, or one this operator proposed and could not store).
    ForeignBaseline(usize, i64),
    /// This pass's baselines and ids are not stored (a follower, a failed write).
    Lag,
    Clock(i64),
    StalePrevious(usize),
}

fn key_spec() -> impl Strategy<Value = KeySpec> {
    (
        0..SERVERS.len(),
        proptest::option::of(0..EMAILS.len()),
        any::<bool>(),
        prop::bool::weighted(0.8),
        proptest::option::weighted(0.3, prop::sample::select(vec![30i64, 120, 3600])),
        prop::bool::weighted(0.3),
        0..3usize,
    )
        .prop_map(
            |(server, email, given_id, enabled, expires, limit, period)| KeySpec {
                server: if server == 0 || server == 1 {
                    server
                } else {
                    server % 4
                },
                email,
                given_id,
                enabled,
                expires,
                limit,
                period,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS, proptest::option::weighted(0.85, key_spec())).prop_map(|(i, s)| Op::Key(i, s)),
        1 => (0..2usize, prop::sample::select(vec![ServerState::Absent, ServerState::Vless, ServerState::Somnytoo]))
            .prop_map(|(i, s)| Op::Server(i, s)),
        2 => (0..NODES.len()).prop_map(Op::Heartbeat),
        4 => (
            0..NODES.len(),
            0..2usize,
            prop::sample::select(vec![Applied::Current, Applied::Current, Applied::Previous, Applied::Unknown]),
            prop::bool::weighted(0.85),
            proptest::collection::vec(0..KEYS, 0..2),
        )
            .prop_map(|(node, server, applied, running, refused)| Op::Report { node, server, applied, running, refused }),
        2 => (0..KEYS, 1..800u64).prop_map(|(i, b)| Op::Traffic(i, b)),
        1 => Just(Op::Lag),
        1 => (0..KEYS, 0..300i64).prop_map(|(i, b)| Op::ForeignBaseline(i, b)),
        2 => prop::sample::select(vec![1i64, 20, 45, 3600, 86_400]).prop_map(Op::Clock),
        1 => (0..KEYS).prop_map(Op::StalePrevious),
    ]
}

/// The model a history edits; its YAML is the source.
struct Model {
    keys: [Option<KeySpec>; KEYS],
    servers: [ServerState; 2],
    start: DateTime<Utc>,
}

impl Model {
    fn yaml(&self) -> String {
        let mut yaml = String::from(BASE_NODES);
        for (i, state) in self.servers.iter().enumerate() {
            let name = SERVERS[i];
            match state {
                ServerState::Absent => {}
                ServerState::Vless => yaml.push_str(&vless_server(name)),
                ServerState::Somnytoo => yaml.push_str(&somnytoo_server(name)),
            }
        }
        yaml.push_str(&somnytoo_server("tunnel"));
        for (i, spec) in self.keys.iter().enumerate() {
            let Some(spec) = spec else { continue };
            yaml.push_str(&format!(
                "---\napiVersion: veil.dev/v1alpha1\nkind: VlessKey\nmetadata: {{name: k{i}}}\nspec:\n  serverRef: {{name: {}}}\n  enabled: {}\n",
                SERVERS[spec.server],
                spec.enabled,
            ));
            if let Some(email) = spec.email {
                yaml.push_str(&format!("  email: '{}'\n", EMAILS[email]));
            }
            if spec.given_id {
                yaml.push_str(&format!("  id: {}\n", [ALICE_ID, BOB_ID][i % 2]));
            }
            if let Some(after) = spec.expires {
                let at = self.start + TimeDelta::seconds(after);
                yaml.push_str(&format!(
                    "  expiresAt: '{}'\n",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ));
            }
            if spec.limit {
                yaml.push_str("  trafficLimitBytes: 1000\n");
                let period = ["never", "daily", "monthly"][spec.period];
                yaml.push_str(&format!("  trafficResetPeriod: {period}\n"));
            }
        }
        yaml
    }

    /// The email key `i` goes by, and the server its traffic counts on.
    fn user(&self, i: usize) -> Option<(String, String)> {
        let spec = self.keys[i].as_ref()?;
        let email = spec
            .email
            .map_or_else(|| format!("default.k{i}"), |e| EMAILS[e].to_owned());
        Some((format!("default/{}", SERVERS[spec.server]), email))
    }
}

/// The nodes and the Secret of the other VLESS tests, a Runner and a TaskRun.
const BASE_NODES: &str = concat!(
    nodes_and_secret!(),
    "---
apiVersion: veil.dev/v1alpha1
kind: Runner
metadata: {name: deploy}
spec:
  nodeSelector: {matchLabels: {role: edge}}
  executors: [shell]
---
apiVersion: veil.dev/v1alpha1
kind: TaskRun
metadata: {name: backup}
spec: {task: {executor: shell, shell: {command: [date]}}}
"
);

/// A ProtocolServer document with these spec lines (indented two spaces).
fn server(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: veil.dev/v1alpha1\nkind: ProtocolServer\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

fn vless_server(name: &str) -> String {
    server(
        name,
        "  nodeSelector: {matchLabels: {role: edge}}
  protocol: vless
  port: 443
  vless:
    reality:
      privateKeySecretRef: {name: edge-reality, key: privateKey}
      dest: www.microsoft.com:443
      serverNames: [www.microsoft.com]
",
    )
}

fn somnytoo_server(name: &str) -> String {
    server(
        name,
        "  protocol: somnytoo
  port: 9000
  somnytoo:
    pskSecretRef: {name: psk, key: psk}
",
    )
}

/// The user-set hash `plan` assigns `server` on `node`.
fn assigned_hash(plan: Option<&Plan>, node: &str, server: &str) -> Option<String> {
    plan?
        .assignments
        .get(node)?
        .servers
        .iter()
        .find(|s| s.server.name == server)
        .map(|s| s.vless.users_hash.clone())
}

/// Runs one history; every plan inside checks incremental == full.
fn run(ops: Vec<Op>) {
    let start = at("2026-11-30T23:59:00Z");
    let mut model = Model {
        keys: Default::default(),
        servers: [ServerState::Vless, ServerState::Absent],
        start,
    };
    let mut case = Case::new(&model.yaml(), start);
    let mut last = case.settle();
    let mut before: Option<Plan> = None;
    for op in ops {
        let op_text = format!("{op:?}");
        let lag = matches!(op, Op::Lag);
        match op {
            Op::Key(i, spec) => model.keys[i] = spec,
            Op::Server(i, state) => model.servers[i] = state,
            Op::Heartbeat(node) => heartbeat(&mut case, NODES[node]),
            Op::Report {
                node,
                server,
                applied,
                running,
                refused,
            } => {
                let name = NODES[node];
                if !case.nodes.contains_key(name) {
                    case.agent(name, "203.0.113.1");
                }
                let hash = match applied {
                    Applied::Current => assigned_hash(Some(&last), name, SERVERS[server]),
                    Applied::Previous => assigned_hash(before.as_ref(), name, SERVERS[server]),
                    Applied::Unknown => Some("0123456789abcdef".to_owned()),
                };
                let failed_users = refused
                    .iter()
                    .filter_map(|&i| model.user(i))
                    .map(|(_, email)| failed(&email, "refused"))
                    .collect();
                let report = ServerReport {
                    server: ServerId {
                        namespace: "default".into(),
                        name: SERVERS[server].into(),
                    },
                    phase: if running {
                        WorkloadPhase::Running
                    } else {
                        WorkloadPhase::Failed
                    },
                    applied_users_hash: hash,
                    failed_users,
                    ..ServerReport::default()
                };
                let now = case.now;
                let observation = case.nodes.get_mut(name).unwrap();
                observation.servers.retain(|s| s.server != report.server);
                observation.servers.push(report);
                observation.servers.sort_by(|a, b| a.server.cmp(&b.server));
                observation.servers_reported_at = Some(now);
                observation.last_seen = now;
            }
            Op::Traffic(i, bytes) => {
                if let Some((server, email)) = model.user(i) {
                    case.traffic.add(&server, &email, bytes, bytes / 2);
                    case.traffic.see((server, email), case.now);
                }
            }
            Op::Lag => {}
            Op::ForeignBaseline(i, uplink) => {
                let key = ObjectKey::new(Kind::VlessKey, "default", &format!("k{i}"));
                let uid = case
                    .world
                    .objects
                    .get(&key)
                    .and_then(|o| o.object.meta().uid.clone());
                let stored = uid
                    .as_ref()
                    .and_then(|uid| case.traffic.baseline(uid).cloned());
                // Or, where the last pass's proposal was not stored (a
                // lag), another leader stored its own for that period.
                let proposed = || {
                    let uid = uid.as_ref()?;
                    last.traffic_baselines
                        .iter()
                        .find(|b| &b.key_uid == uid)
                        .cloned()
                };
                if let Some(baseline) = stored.or_else(proposed) {
                    case.traffic
                        .put_baseline(TrafficBaselineRecord { uplink, ..baseline });
                }
            }
            Op::Clock(seconds) => case.now += TimeDelta::seconds(seconds),
            Op::StalePrevious(i) => {
                let key = ObjectKey::new(Kind::VlessKey, "default", &format!("k{i}"));
                if let Some(old) = before.as_ref().and_then(|p| p.statuses.get(&key)) {
                    let text = old.get().to_owned();
                    let copy = serde_json::value::RawValue::from_string(text).unwrap();
                    case.previous.insert(key, std::sync::Arc::from(copy));
                }
            }
        }
        case.edit(&model.yaml());
        before = Some(std::mem::replace(&mut last, case.settle()));
        if !lag {
            persist(&mut case, &last);
        }
        if std::env::var("DEBUG_STEPS").is_ok() {
            for (key, raw) in last
                .statuses
                .range(ObjectKey::new(Kind::VlessKey, "", "")..)
            {
                eprintln!("{op_text} {}: {}", key.name, raw.get());
            }
        }
    }
}

fn heartbeat(case: &mut Case, node: &str) {
    if case.nodes.contains_key(node) {
        let now = case.now;
        case.nodes.get_mut(node).unwrap().last_seen = now;
    } else {
        case.agent(node, "203.0.113.1");
    }
}

/// What the leading controller does after a pass: store the baselines,
/// drop stale ones, generate the ids keys wait for.
fn persist(case: &mut Case, plan: &Plan) {
    for baseline in &plan.traffic_baselines {
        case.traffic.put_baseline(baseline.clone());
    }
    for uid in &plan.stale_baselines {
        case.traffic.remove_baseline(uid);
    }
    for (_, object) in case.world.of_kind(Kind::VlessKey) {
        let uid = object.object.meta().uid.clone().unwrap();
        let n = case.secrets.vless_ids.len();
        case.secrets
            .vless_ids
            .entry(uid)
            .or_insert_with(|| format!("00000000-0000-4000-8000-{n:012}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// After every step of a random history the incremental plan equals
    /// the plan from scratch.
    #[test]
    fn incremental_planning_equals_the_full_plan(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops);
    }
}

/// A key's proposed baseline replaced by another leader's before this
/// operator's next pass: the key counts from the stored one (a proposal
/// stored as made resolves nothing again; one stored otherwise does).
#[test]
fn a_baseline_stored_otherwise_than_proposed_resolves_the_key_again() {
    let daily = KeySpec {
        server: 0,
        email: Some(1),
        given_id: true,
        enabled: true,
        expires: None,
        limit: true,
        period: 1,
    };
    run(vec![
        Op::Key(0, Some(daily)),
        Op::Traffic(0, 500),
        // A new day: the key proposes a baseline of its 750 bytes so far.
        Op::Clock(86_400),
        Op::ForeignBaseline(0, 10),
        Op::Heartbeat(0),
    ]);
}
