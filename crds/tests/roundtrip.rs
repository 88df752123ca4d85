//! Every kind round-trips YAML → types → YAML → types unchanged, with and
//! without a full status.

use std::path::PathBuf;

use veil_crds::document::{Limits, parse_documents};
use veil_crds::object::Object;

fn examples() -> Vec<Object> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/standalone");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("examples") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("read");
            let parsed = parse_documents(&text, "default", &Limits::default()).expect("parses");
            out.extend(parsed.into_iter().map(|p| p.object));
        }
    }
    out
}

/// Serialises an object to YAML and parses it back through the public parser.
fn through_yaml(object: &Object) -> Object {
    let yaml = serde_yaml_ng::to_string(&object.to_value()).expect("serialise");
    let mut parsed = parse_documents(&yaml, "default", &Limits::default())
        .unwrap_or_else(|e| panic!("re-parse of\n{yaml}\nfailed: {e:?}"));
    assert_eq!(parsed.len(), 1);
    parsed.remove(0).object
}

#[test]
fn every_kind_round_trips_through_yaml() {
    for object in examples() {
        let once = through_yaml(&object);
        let twice = through_yaml(&once);
        assert_eq!(object.to_value(), once.to_value(), "{}", object.key());
        assert_eq!(once.to_value(), twice.to_value(), "{}", object.key());
    }
}

macro_rules! status_round_trip {
    ($name:ident, $ty:ty, $yaml:expr) => {
        #[test]
        fn $name() {
            let status: $ty = serde_yaml_ng::from_str($yaml).expect("status parses");
            let yaml = serde_yaml_ng::to_string(&status).expect("serialise");
            let again: $ty = serde_yaml_ng::from_str(&yaml).expect("re-parse");
            assert_eq!(status, again);
            let empty: $ty = serde_yaml_ng::from_str("{}").expect("empty status parses");
            assert_eq!(empty, <$ty>::default());
        }
    };
}

const CONDITIONS: &str = "observedGeneration: 3\nconditions:\n- {type: Ready, status: \"True\", reason: Running, message: ok, lastTransitionTime: \"2026-01-01T00:00:00Z\", observedGeneration: 3}\n";

status_round_trip!(
    veil_node_status,
    veil_crds::veil_node::VeilNodeStatus,
    &format!(
        "{CONDITIONS}os: linux\narch: x86_64\nagentVersion: 0.1.0\naddress: 10.0.0.5\nlastHeartbeat: \"2026-01-01T00:00:00Z\"\ncapabilities: [{{name: xray, version: 25.3.6, path: /usr/bin/xray}}]\nworkloads: {{protocolServers: 1, vlessUsers: 10, strategies: 2, runningTasks: 0}}\n"
    )
);
status_round_trip!(
    protocol_server_status,
    veil_crds::protocol_server::ProtocolServerStatus,
    &format!(
        "{CONDITIONS}desiredNodes: 2\nreadyNodes: 1\nusers: 5\npublicKey: abc\nnodes: [{{node: a, phase: Running, pid: 42, version: 25.3.6, endpoint: \"1.2.3.4:443\", users: 5, connections: 3}}]\n"
    )
);
status_round_trip!(
    vless_key_status,
    veil_crds::vless_key::VlessKeyStatus,
    &format!(
        "{CONDITIONS}phase: Active\nemail: a@b\nidPrefix: 7d6a1b0e\nuplinkBytes: 10\ndownlinkBytes: 20\ntrafficBytes: 30\ncredentialsSecret: alice-vless\nnodes: [{{node: a, phase: Running, appliedRevision: 4}}]\n"
    )
);
status_round_trip!(
    strategy_status,
    veil_crds::strategy::StrategyStatus,
    &format!(
        "{CONDITIONS}desiredNodes: 1\nactiveNodes: 1\nnodes: [{{node: a, phase: Running, active: true, score: 0.93, successRate: 1.0, criticalSuccessRate: 1.0, latencyMs: 80, jitterMs: 5, restarts: 0}}]\n"
    )
);
status_round_trip!(
    runner_status,
    veil_crds::runner::RunnerStatus,
    &format!(
        "{CONDITIONS}readyNodes: 1\ncapacity: 2\nrunning: 1\nsucceeded: 10\nfailed: 1\nnodes: [{{node: a, phase: Running, capacity: 2, running: 1, missingExecutors: [ansible]}}]\n"
    )
);
status_round_trip!(
    schedule_status,
    veil_crds::schedule::ScheduleStatus,
    &format!(
        "{CONDITIONS}phase: Active\nlastScheduleTime: \"2026-01-01T00:00:00Z\"\nactive: [heartbeat-29000000]\nactiveCount: 1\nlastResult: Succeeded\n"
    )
);
status_round_trip!(
    task_run_status,
    veil_crds::task_run::TaskRunStatus,
    &format!(
        "{CONDITIONS}phase: Failed\nreason: NonZeroExit\nnode: a\nexitCode: 2\nlogTail: [\"line 1\", \"line 2\"]\n"
    )
);
