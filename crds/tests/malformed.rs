//! Malformed inputs, each refused with the field path, the line (and column
//! where known), and a message that says what to change.

use std::time::{Duration, Instant};

use veil_crds::document::{DocumentError, Limits, parse_documents};

/// One malformed input and what its first error must say.
struct Case {
    name: &'static str,
    text: String,
    path: &'static str,
    line: usize,
    /// Expected column, when the parser knows it.
    column: Option<usize>,
    /// Every one of these must appear in the message.
    says: &'static [&'static str],
}

const V: &str = "apiVersion: veil.dev/v1alpha1";

/// A document of `kind` named `name` with `spec` lines (already indented by 2);
/// the spec's first line is line 6.
fn doc(kind: &str, name: &str, spec: &str) -> String {
    format!("{V}\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

const SERVER: &str = "  protocol: vless\n  port: 443\n  vless:\n    reality: {dest: \"www.microsoft.com:443\", serverNames: [www.microsoft.com]}\n";
const SHELL_TASK: &str = "  task:\n    executor: shell\n    shell:\n      command: [date]\n";

fn case(
    name: &'static str,
    text: String,
    path: &'static str,
    line: usize,
    column: Option<usize>,
    says: &'static [&'static str],
) -> Case {
    Case {
        name,
        text,
        path,
        line,
        column,
        says,
    }
}

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    vec![
        case(
            "unknown top-level field",
            format!("{V}\nkind: VeilNode\nmetadata:\n  name: n\nspce: {{}}\n"),
            "spce",
            5,
            Some(7),
            &[
                "unknown top-level field `spce`",
                "Move it under `spec` or remove it",
            ],
        ),
        case(
            "unknown spec field with typo",
            doc("ProtocolServer", "edge", "  protocl: vless\n  port: 443\n"),
            "spec.protocl",
            6,
            Some(3),
            &["unknown field `protocl`", "did you mean `protocol`"],
        ),
        case(
            "unknown nested field",
            doc(
                "ProtocolServer",
                "edge",
                &SERVER.replace("dest:", "dst: x, dest:"),
            ),
            "spec.vless.reality.dst",
            9,
            None,
            &["unknown field `dst`", "did you mean `dest`"],
        ),
        case(
            "unknown metadata field",
            format!("{V}\nkind: VeilNode\nmetadata:\n  name: n\n  lables: {{a: b}}\n"),
            "metadata.lables",
            5,
            Some(11),
            &["unknown field `lables`", "labels"],
        ),
        case(
            "typo in enum value",
            doc(
                "Schedule",
                "s",
                &format!("  schedule: \"* * * * *\"\n  concurrencyPolicy: Forbidd\n{SHELL_TASK}"),
            ),
            "spec.concurrencyPolicy",
            7,
            Some(22),
            &[
                "`Forbidd`",
                "did you mean `Forbid`",
                "`Allow`, `Forbid`, `Replace`",
            ],
        ),
        case(
            "lower-case protocol enum typo",
            doc("ProtocolServer", "edge", "  protocol: Vless\n  port: 443\n"),
            "spec.protocol",
            6,
            Some(13),
            &["did you mean `vless`"],
        ),
        case(
            "cron with six fields",
            doc(
                "Schedule",
                "s",
                &format!("  schedule: \"0 */5 * * * *\"\n{SHELL_TASK}"),
            ),
            "spec.schedule",
            6,
            Some(13),
            &[
                "6 fields",
                "seconds",
                "MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK",
            ],
        ),
        case(
            "cron garbage",
            doc(
                "Schedule",
                "s",
                &format!("  schedule: every minute\n{SHELL_TASK}"),
            ),
            "spec.schedule",
            6,
            Some(13),
            &["2 fields", "*/5 * * * *"],
        ),
        case(
            "cron value out of range",
            doc(
                "Schedule",
                "s",
                &format!("  schedule: \"61 * * * *\"\n{SHELL_TASK}"),
            ),
            "spec.schedule",
            6,
            Some(13),
            &["not a valid cron expression", "five fields"],
        ),
        case(
            "unknown cron macro",
            doc(
                "Schedule",
                "s",
                &format!("  schedule: \"@often\"\n{SHELL_TASK}"),
            ),
            "spec.schedule",
            6,
            Some(13),
            &["not a known cron macro", "@hourly"],
        ),
        case(
            "bad time zone",
            doc(
                "Schedule",
                "s",
                &format!("  schedule: \"@daily\"\n  timeZone: Moscow\n{SHELL_TASK}"),
            ),
            "spec.timeZone",
            7,
            Some(13),
            &["`Moscow` is not an IANA time zone", "Europe/Moscow"],
        ),
        case(
            "bad uuid, value not echoed",
            doc(
                "VlessKey",
                "alice",
                "  serverRef: {name: edge}\n  id: hunter2-secret\n",
            ),
            "spec.id",
            7,
            Some(7),
            &["not a UUID", "xxxxxxxx-xxxx"],
        ),
        case(
            "port zero",
            doc("ProtocolServer", "edge", &SERVER.replace("443\n", "0\n")),
            "spec.port",
            7,
            Some(9),
            &["port 0 is out of range", "1 to 65535"],
        ),
        case(
            "port too large",
            doc(
                "ProtocolServer",
                "edge",
                &SERVER.replace("443\n", "70000\n"),
            ),
            "spec.port",
            7,
            Some(9),
            &["port 70000 is out of range", "1 to 65535"],
        ),
        case(
            "port as text",
            doc(
                "ProtocolServer",
                "edge",
                &SERVER.replace("443\n", "https\n"),
            ),
            "spec.port",
            7,
            Some(9),
            &["port number from 1 to 65535"],
        ),
        case(
            "bad duration",
            doc(
                "ProtocolServer",
                "edge",
                &format!("{SERVER}    policy: {{connIdle: 5 minutes}}\n"),
            ),
            "spec.vless.policy.connIdle",
            10,
            None,
            &["without a unit", "`30s`"],
        ),
        case(
            "duration without unit",
            doc(
                "Strategy",
                "s",
                "  engine: vless\n  vless: {keyRef: {name: k}}\n  probes:\n    targets: [{url: \"https://example.com/\"}]\n    interval: 300\n",
            ),
            "spec.probes.interval",
            10,
            Some(15),
            &["without a unit", "`5m`"],
        ),
        case(
            "bad DNS name in reference",
            doc("VlessKey", "alice", "  serverRef: {name: Edge_Server}\n"),
            "spec.serverRef.name",
            6,
            None,
            &["upper-case", "lower-case letters"],
        ),
        case(
            "upper-case object name",
            doc("VeilNode", "Edge1", "  cordoned: true\n"),
            "metadata.name",
            4,
            Some(9),
            &["upper-case", "e.g. `edge-1`"],
        ),
        case(
            "missing name",
            format!("{V}\nkind: VeilNode\nmetadata:\n  labels: {{a: b}}\n"),
            "metadata.name",
            4,
            None,
            &["`metadata.name` is required"],
        ),
        case(
            "missing required spec field",
            doc("VlessKey", "alice", "  email: a@example.com\n"),
            "spec.serverRef",
            6,
            None,
            &["`serverRef` is required"],
        ),
        case(
            "missing spec",
            format!("{V}\nkind: VlessKey\nmetadata:\n  name: alice\n"),
            "spec",
            1,
            None,
            &["`spec` is required"],
        ),
        case(
            "bad selector operator",
            doc(
                "Runner",
                "r",
                "  nodeSelector:\n    matchExpressions:\n      - {key: role, operator: Equals, values: [a]}\n",
            ),
            "spec.nodeSelector.matchExpressions[0].operator",
            8,
            None,
            &["`Equals`", "`In`, `NotIn`, `Exists`, `DoesNotExist`"],
        ),
        case(
            "In without values",
            doc(
                "Runner",
                "r",
                "  nodeSelector:\n    matchExpressions:\n      - key: role\n        operator: In\n",
            ),
            "spec.nodeSelector.matchExpressions[0].values",
            8,
            None,
            &["needs at least one value", "values: [edge]"],
        ),
        case(
            "Exists with values",
            doc(
                "Runner",
                "r",
                "  nodeSelector:\n    matchExpressions:\n      - key: role\n        operator: Exists\n        values: [a]\n",
            ),
            "spec.nodeSelector.matchExpressions[0].values",
            10,
            None,
            &["takes no values", "remove `values`"],
        ),
        case(
            "bad label key in selector",
            doc(
                "Runner",
                "r",
                "  nodeSelector:\n    matchLabels: {\"bad key\": x}\n",
            ),
            "spec.nodeSelector.matchLabels.bad key",
            7,
            None,
            &["not a valid label key", "veil.dev/role"],
        ),
        case(
            "wrong apiVersion",
            "apiVersion: veil.dev/v1\nkind: VeilNode\nmetadata:\n  name: n\n".into(),
            "apiVersion",
            1,
            Some(13),
            &["not served", "apiVersion: veil.dev/v1alpha1"],
        ),
        case(
            "unknown kind",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n".into(),
            "kind",
            2,
            Some(7),
            &[
                "kind `ConfigMap` (v1) is not read by Veil",
                "supported: VeilNode",
            ],
        ),
        case(
            "kind in wrong case",
            format!("{V}\nkind: vlesskey\nmetadata:\n  name: k\n"),
            "kind",
            2,
            Some(7),
            &["Did you mean `VlessKey`"],
        ),
        case(
            "bad base64 in Secret, value not echoed",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  token: \"s3cr3t!!\"\n"
                .into(),
            "data.token",
            6,
            Some(10),
            &["`token` is not valid base64", "stringData"],
        ),
        case(
            "number in stringData, value not echoed",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  pin: 123456\n"
                .into(),
            "stringData.pin",
            6,
            Some(8),
            &["must be a string", "quote it"],
        ),
        case(
            "unknown Secret field",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nspec: {}\n".into(),
            "spec",
            5,
            Some(7),
            &["unknown top-level field `spec`", "`stringData`"],
        ),
        case(
            "bad webhook URL",
            doc(
                "Schedule",
                "s",
                &format!(
                    "  schedule: \"@daily\"\n{SHELL_TASK}  notify:\n    webhooks: [{{url: \"hooks.example.com/x\"}}]\n"
                ),
            ),
            "spec.notify.webhooks[0].url",
            12,
            None,
            &[
                "does not start with http:// or https://",
                "https://example.com/path",
            ],
        ),
        case(
            "bad probe URL",
            doc(
                "Strategy",
                "s",
                "  engine: vless\n  vless: {keyRef: {name: k}}\n  probes:\n    targets:\n      - url: \"ftp://example.com\"\n",
            ),
            "spec.probes.targets[0].url",
            10,
            Some(14),
            &["http:// or https://"],
        ),
        case(
            "negative history limit",
            doc(
                "Schedule",
                "s",
                &format!("  schedule: \"@daily\"\n  successfulJobsHistoryLimit: -1\n{SHELL_TASK}"),
            ),
            "spec.successfulJobsHistoryLimit",
            7,
            Some(31),
            &["integer `-1`", "whole number from 0 up"],
        ),
        case(
            "negative traffic limit",
            doc(
                "VlessKey",
                "k",
                "  serverRef: {name: edge}\n  trafficLimitBytes: -5\n",
            ),
            "spec.trafficLimitBytes",
            7,
            Some(22),
            &["integer `-5`", "whole number of bytes from 0 up"],
        ),
        case(
            "runAt not RFC 3339",
            doc(
                "Schedule",
                "s",
                &format!("  runAt: \"2026-03-01 03:00\"\n{SHELL_TASK}"),
            ),
            "spec.runAt",
            6,
            Some(10),
            &["not an RFC 3339 timestamp", "2026-03-01T00:00:00Z"],
        ),
        case(
            "both schedule and runAt",
            doc(
                "Schedule",
                "s",
                &format!("  schedule: \"@daily\"\n  runAt: \"2026-03-01T00:00:00Z\"\n{SHELL_TASK}"),
            ),
            "spec.runAt",
            7,
            Some(10),
            &["both `schedule` and `runAt`", "keep"],
        ),
        case(
            "neither schedule nor runAt",
            doc("Schedule", "s", SHELL_TASK),
            "spec.schedule",
            6,
            None,
            &[
                "neither `schedule` nor `runAt`",
                "schedule: \"*/5 * * * *\"",
            ],
        ),
        case(
            "shell task with command and script",
            doc(
                "TaskRun",
                "t",
                "  task:\n    executor: shell\n    shell:\n      command: [date]\n      script: date\n",
            ),
            "spec.task.shell",
            9,
            None,
            &["both `command` and `script`", "keep `command`"],
        ),
        case(
            "executor block missing",
            doc(
                "TaskRun",
                "t",
                "  task:\n    executor: ansible\n    shell: {command: [date]}\n",
            ),
            "spec.task.ansible",
            7,
            None,
            &["`executor: ansible` needs the `ansible:` block", "playbook"],
        ),
        case(
            "empty args",
            doc(
                "TaskRun",
                "t",
                "  task:\n    executor: shell\n    shell:\n      command: []\n",
            ),
            "spec.task.shell.command",
            9,
            Some(16),
            &["the list is empty", "[\"echo\""],
        ),
        case(
            "NUL in args",
            doc(
                "TaskRun",
                "t",
                "  task:\n    executor: shell\n    shell:\n      command: [\"echo\", \"a\\0b\"]\n",
            ),
            "spec.task.shell.command",
            9,
            Some(16),
            &["NUL byte", "remove"],
        ),
        case(
            "env with value and secretKeyRef",
            doc(
                "TaskRun",
                "t",
                &format!(
                    "{SHELL_TASK}    env:\n      - {{name: A, value: x, secretKeyRef: {{name: s, key: k}}}}\n"
                ),
            ),
            "spec.task.env[0]",
            11,
            None,
            &["both `value` and `secretKeyRef`", "exactly one"],
        ),
        case(
            "placeholder without hostlist",
            doc(
                "Strategy",
                "s",
                "  engine: zapret\n  zapret:\n    args: [\"--hostlist={hostlist:ru}\", --filter-tcp=443]\n",
            ),
            "spec.zapret.args[0]",
            8,
            None,
            &["`{hostlist:ru}` names no entry", "add `{name: ru"],
        ),
        case(
            "agent-owned zapret option",
            doc(
                "Strategy",
                "s",
                "  engine: zapret\n  zapret:\n    args: [--filter-tcp=443, --qnum=200]\n",
            ),
            "spec.zapret.args[1]",
            8,
            None,
            &["`--qnum`", "the agent sets this option itself", "remove it"],
        ),
        case(
            "zapret profile without a port filter",
            doc(
                "Strategy",
                "s",
                "  engine: zapret\n  zapret:\n    args: [--dpi-desync=multisplit]\n",
            ),
            "spec.zapret.args",
            8,
            None,
            &["needs --filter-tcp or --filter-udp"],
        ),
        case(
            "zapret file given as a path on the node",
            doc(
                "Strategy",
                "s",
                "  engine: zapret\n  zapret:\n    args: [--filter-tcp=443, --dpi-desync=fake, --dpi-desync-fake-tls=/etc/shadow]\n",
            ),
            "spec.zapret.args[2]",
            8,
            None,
            &["names a file on the node", "`{file:NAME}`"],
        ),
        case(
            "TLS versions on a plain http url",
            doc(
                "Strategy",
                "s",
                "  engine: vless\n  vless: {keyRef: {name: k}}\n  probes:\n    targets:\n      - url: \"http://example.com/\"\n        tls: [\"1.2\"]\n",
            ),
            "spec.probes.targets[0].tls",
            11,
            None,
            &["`https://` urls only"],
        ),
        case(
            "a TLS version listed twice",
            doc(
                "Strategy",
                "s",
                "  engine: vless\n  vless: {keyRef: {name: k}}\n  probes:\n    targets:\n      - url: \"https://example.com/\"\n        tls: [\"1.3\", 1.3]\n",
            ),
            "spec.probes.targets[0].tls[1]",
            11,
            None,
            &["`1.3` is listed twice"],
        ),
        case(
            "an unknown TLS version",
            doc(
                "Strategy",
                "s",
                "  engine: vless\n  vless: {keyRef: {name: k}}\n  probes:\n    targets:\n      - url: \"https://example.com/\"\n        tls: [\"1.1\"]\n",
            ),
            "spec.probes.targets[0].tls[0]",
            11,
            None,
            &["\"1.2\", \"1.3\" or \"auto\""],
        ),
        case(
            "failover without probes",
            doc(
                "Strategy",
                "s",
                "  engine: vless\n  vless: {keyRef: {name: k}}\n  failover: {backups: [other]}\n",
            ),
            "spec.failover",
            8,
            None,
            &["failover needs probes", "add `probes:"],
        ),
        case(
            "scoring weights not adding to 1",
            doc(
                "Strategy",
                "s",
                "  engine: vless\n  vless: {keyRef: {name: k}}\n  scoring:\n    weights: {successRate: 0.9}\n",
            ),
            "spec.scoring.weights",
            9,
            None,
            &["add up to", "0.5, 0.3, 0.15, 0.05"],
        ),
        case(
            "engine block for the other engine",
            doc(
                "Strategy",
                "s",
                "  engine: zapret\n  vless: {keyRef: {name: k}}\n",
            ),
            "spec.zapret",
            6,
            None,
            &["`engine: zapret` needs a `zapret:` block"],
        ),
        case(
            "reality short id not hex",
            doc(
                "ProtocolServer",
                "edge",
                &SERVER.replace("serverNames", "shortIds: [zz], serverNames"),
            ),
            "spec.vless.reality.shortIds[0]",
            9,
            None,
            &["not a short id", "hex digits"],
        ),
        case(
            "reality dest on loopback",
            doc(
                "ProtocolServer",
                "edge",
                &SERVER.replace("www.microsoft.com:443", "127.0.0.1:10085"),
            ),
            "spec.vless.reality.dest",
            9,
            None,
            &["`127.0.0.1:10085` is fenced off", "loopback", "www.microsoft.com:443", "spec.allowCidrs", "`127.0.0.1/32`"],
        ),
        case(
            "reality dest at cloud metadata",
            doc(
                "ProtocolServer",
                "edge",
                &SERVER.replace("www.microsoft.com:443", "169.254.169.254:80"),
            ),
            "spec.vless.reality.dest",
            9,
            None,
            &["cloud metadata", "spec.allowCidrs"],
        ),
        case(
            "reality dest localhost, allowCidrs elsewhere",
            doc(
                "ProtocolServer",
                "edge",
                &format!("  allowCidrs: [127.0.0.2/32]\n{}", SERVER.replace("www.microsoft.com:443", "localhost:8443")),
            ),
            "spec.vless.reality.dest",
            10,
            None,
            &["`localhost:8443` is fenced off", "127.0.0.1: loopback"],
        ),
        case(
            "reality dest in a private IPv6 network",
            doc(
                "ProtocolServer",
                "edge",
                &SERVER.replace("www.microsoft.com:443", "[fd00::5]:443"),
            ),
            "spec.vless.reality.dest",
            9,
            None,
            &["fd00::5: unique local"],
        ),
        case(
            "allowCidrs with host bits",
            doc("ProtocolServer", "edge", &format!("  allowCidrs: [10.1.2.3/8]\n{SERVER}")),
            "spec.allowCidrs[0]",
            6,
            None,
            &["host bits set", "`10.0.0.0/8`"],
        ),
        case(
            "allowCidrs without prefix",
            doc("ProtocolServer", "edge", &format!("  allowCidrs: [127.0.0.2]\n{SERVER}")),
            "spec.allowCidrs[0]",
            6,
            None,
            &["no `/PREFIX`", "`127.0.0.2/32`"],
        ),
        case(
            "email with >>>",
            doc(
                "VlessKey",
                "k",
                "  serverRef: {name: edge}\n  email: \"a>>>b\"\n",
            ),
            "spec.email",
            7,
            Some(10),
            &["`>>>`", "without spaces"],
        ),
        case(
            "duplicate keys in a mapping",
            doc("VeilNode", "n", "  cordoned: true\n  cordoned: false\n"),
            "",
            7,
            Some(3),
            &["duplicate key `cordoned`", "keep one"],
        ),
        case(
            "tab indentation",
            format!("{V}\nkind: VeilNode\nmetadata:\n  name: n\nspec:\n\tcordoned: true\n"),
            "",
            6,
            Some(1),
            &["invalid YAML", "tabs", "indent with spaces"],
        ),
        case(
            "unclosed bracket",
            format!("{V}\nkind: VeilNode\nmetadata: {{name: n\n"),
            "",
            4,
            None,
            &["invalid YAML", "close quotes and brackets"],
        ),
        case(
            "wrong type for a boolean",
            doc("VeilNode", "n", "  cordoned: maybe\n"),
            "spec.cordoned",
            6,
            Some(13),
            &["`true` or `false`"],
        ),
        case(
            "document is a list",
            "- a\n- b\n".into(),
            "",
            1,
            None,
            &["must be a mapping with `apiVersion`"],
        ),
        case(
            "missing kind",
            "apiVersion: v1\nmetadata:\n  name: x\n".into(),
            "kind",
            1,
            None,
            &["`kind` is missing", "kind: VlessKey"],
        ),
        case(
            "error in the second document names its line",
            format!(
                "{V}\nkind: VeilNode\nmetadata:\n  name: a\n---\n{V}\nkind: VeilNode\nmetadata:\n  name: b\nspec:\n  cordoned: 3\n"
            ),
            "spec.cordoned",
            11,
            Some(13),
            &["`true` or `false`"],
        ),
        case(
            "same object twice",
            format!(
                "{V}\nkind: VeilNode\nmetadata:\n  name: a\n---\n{V}\nkind: VeilNode\nmetadata:\n  name: a\n"
            ),
            "metadata.name",
            6,
            None,
            &["defined twice", "first at line 1"],
        ),
        case(
            "timeout out of range",
            doc(
                "TaskRun",
                "t",
                &format!("{SHELL_TASK}    timeoutSeconds: 0\n"),
            ),
            "spec.task.timeoutSeconds",
            10,
            Some(21),
            &["out of range", "1 to 604800"],
        ),
        case(
            "somnytoo limits out of order",
            doc(
                "ProtocolServer",
                "p",
                "  protocol: somnytoo\n  port: 9000\n  somnytoo:\n    pskSecretRef: {name: psk, key: psk}\n    congestion: {minLimit: 500, initialLimit: 100}\n",
            ),
            "spec.somnytoo.congestion",
            10,
            None,
            &["minLimit ≤ initialLimit ≤ maxLimit"],
        ),
    ]
}

fn first_error(c: &Case) -> DocumentError {
    match parse_documents(&c.text, "default", &Limits::default()) {
        Ok(_) => panic!("case `{}` parsed without error:\n{}", c.name, c.text),
        Err(errors) => errors.into_iter().next().expect("at least one error"),
    }
}

#[test]
fn malformed_inputs_name_path_line_and_fix() {
    let cases = cases();
    assert!(cases.len() >= 35, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let e = first_error(c);
        let mut wrong = Vec::new();
        if e.path != c.path {
            wrong.push(format!("path {:?} != {:?}", e.path, c.path));
        }
        if e.line != c.line {
            wrong.push(format!("line {} != {}", e.line, c.line));
        }
        if let Some(col) = c.column
            && e.column != col
        {
            wrong.push(format!("column {} != {col}", e.column));
        }
        for s in c.says {
            if !e.message.contains(s) {
                wrong.push(format!("message lacks {s:?}"));
            }
        }
        let shown = e.to_string();
        if !c.path.is_empty() && !shown.contains(c.path) {
            wrong.push("display lacks the path".into());
        }
        if !shown.starts_with(&format!("line {}", c.line)) {
            wrong.push("display does not start with the line".into());
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {}\n    got: {shown}",
                c.name,
                wrong.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn secret_values_never_appear_in_errors() {
    for (text, secret) in [
        (
            doc(
                "VlessKey",
                "k",
                "  serverRef: {name: edge}\n  id: hunter2-secret\n",
            ),
            "hunter2",
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\ndata:\n  token: \"s3cr3t!!\"\n"
                .to_owned(),
            "s3cr3t",
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  pin: 123456\n"
                .to_owned(),
            "123456",
        ),
    ] {
        let errors = parse_documents(&text, "default", &Limits::default()).expect_err("refused");
        for e in errors {
            assert!(!e.to_string().contains(secret), "{e}");
        }
    }
}

#[test]
fn too_large_text_is_one_error_without_parsing() {
    let limits = Limits {
        max_bytes: 100,
        max_objects: 10,
    };
    let text = "#".repeat(101);
    let errors = parse_documents(&text, "default", &limits).expect_err("refused");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, 0);
    assert!(
        errors[0]
            .message
            .contains("more than the limit of 100 bytes"),
        "{}",
        errors[0]
    );
}

#[test]
fn too_many_documents_are_refused() {
    let limits = Limits {
        max_bytes: 1 << 20,
        max_objects: 3,
    };
    let text = (0..4)
        .map(|i| format!("{V}\nkind: VeilNode\nmetadata:\n  name: n{i}\n"))
        .collect::<Vec<_>>()
        .join("---\n");
    let errors = parse_documents(&text, "default", &limits).expect_err("refused");
    assert!(
        errors[0].message.contains("more than 3 documents"),
        "{}",
        errors[0]
    );
    let three = text
        .split("---\n")
        .take(3)
        .collect::<Vec<_>>()
        .join("---\n");
    assert_eq!(
        parse_documents(&three, "default", &limits)
            .expect("three fit")
            .len(),
        3
    );
}

fn billion_laughs(levels: usize) -> String {
    let mut text = String::from(
        "a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..levels {
        let refs = vec![format!("*a{}", i - 1); 9].join(",");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    text
}

#[test]
fn billion_laughs_fails_fast_with_bounded_memory() {
    // 9^10 ≈ 3.5 billion strings if expanded; it must be refused in well under a second.
    let start = Instant::now();
    let errors =
        parse_documents(&billion_laughs(10), "default", &Limits::default()).expect_err("refused");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        errors[0].message.contains("billion laughs"),
        "{}",
        errors[0]
    );
    // The same inside a spec field of a real kind.
    let text = format!(
        "{V}\nkind: TaskRun\nmetadata:\n  name: t\nx: &x [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\nspec:\n  task:\n    executor: shell\n    shell:\n      command: [{}]\n",
        vec!["*x"; 900].join(",")
    );
    let start = Instant::now();
    assert!(parse_documents(&text, "default", &Limits::default()).is_err());
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn one_bad_document_refuses_the_whole_text_and_lists_every_error() {
    let text = format!(
        "{V}\nkind: VeilNode\nmetadata:\n  name: Bad\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n---\n{V}\nkind: VeilNode\nmetadata:\n  name: good\n"
    );
    let errors = parse_documents(&text, "default", &Limits::default()).expect_err("refused");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!((errors[0].line, errors[1].line), (4, 7));
}

#[test]
fn comments_only_documents_are_skipped_and_namespaces_default() {
    let text = format!(
        "# nothing here\n---\n# still nothing\n---\n{V}\nkind: VlessKey\nmetadata:\n  name: k\nspec:\n  serverRef: {{name: edge}}\n---\n{V}\nkind: VeilNode\nmetadata:\n  name: n\n  namespace: ignored\n"
    );
    let objects = parse_documents(&text, "team-a", &Limits::default()).expect("parses");
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0].line, 5);
    assert_eq!(objects[0].object.key().to_string(), "VlessKey team-a/k");
    assert_eq!(objects[1].object.key().to_string(), "VeilNode n");
    assert_eq!(objects[1].object.meta().namespace, None);
}

#[test]
fn json_parses_through_the_same_path() {
    let text = "{\n\t\"apiVersion\": \"veil.dev/v1alpha1\",\n\t\"kind\": \"VlessKey\",\n\t\"metadata\": {\"name\": \"k\"},\n\t\"spec\": {\"serverRef\": {\"name\": \"edge\"}, \"trafficLimitBytes\": -1}\n}\n";
    let errors = parse_documents(text, "default", &Limits::default()).expect_err("refused");
    assert_eq!(errors[0].path, "spec.trafficLimitBytes");
    assert_eq!(errors[0].line, 5);
}

#[test]
fn status_in_input_is_ignored() {
    let text = format!(
        "{V}\nkind: TaskRun\nmetadata:\n  name: t\nspec:\n{SHELL_TASK}status:\n  phase: Bogus\n"
    );
    let objects = parse_documents(&text, "default", &Limits::default()).expect("status ignored");
    let veil_crds::object::Object::TaskRun(run) = &objects[0].object else {
        panic!("not a TaskRun")
    };
    assert!(run.status.is_none());
}

#[test]
fn five_thousand_objects_parse_quickly() {
    let text = (0..5000)
        .map(|i| format!("{V}\nkind: VlessKey\nmetadata:\n  name: key-{i}\nspec:\n  serverRef: {{name: edge}}\n  email: user{i}@example.com\n  trafficLimitBytes: 1000000\n"))
        .collect::<Vec<_>>()
        .join("---\n");
    let start = Instant::now();
    let objects = parse_documents(&text, "default", &Limits::default()).expect("parses");
    assert_eq!(objects.len(), 5000);
    assert_eq!(objects[4999].line, 4999 * 9 + 1);
    // Generous for debug builds; the release figure goes to docs/benchmarks.md.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    eprintln!("5000 objects parsed in {:?}", start.elapsed());
}
