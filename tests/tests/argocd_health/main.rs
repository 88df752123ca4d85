//! The Argo CD health checks of `examples/gitops/argocd/` run by a real Lua
//! interpreter (Lua 5.4 through `mlua`) on the statuses the operator writes:
//! every kind, every outcome, with the exact status and message Argo CD
//! would show. Argo CD runs them with gopher-lua (Lua 5.1, every number a
//! float), so each case runs twice — integers as Lua integers, then as
//! floats — and the scripts are checked for syntax and functions Lua 5.1
//! lacks. `argocd-cm.yaml` must carry each script unchanged
//! (`VEIL_UPDATE_GITOPS=1` rewrites it from the scripts).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeMap;
use std::path::PathBuf;

use mlua::{Lua, Table, Value as LuaValue};
use serde_json::Value;
use veil_crds::kind::Kind;
use veil_e2e::kube::workspace_root;

mod cases;

use cases::{Case, common_cases, kind_cases};

fn gitops_dir() -> PathBuf {
    workspace_root().join("examples/gitops/argocd")
}

fn script(kind: Kind) -> String {
    let path = gitops_dir().join(format!("health/{}.lua", kind.as_str()));
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// JSON as Argo CD hands it to a script; `floats` makes every number a
/// float, as gopher-lua does.
fn to_lua(lua: &Lua, value: &Value, floats: bool) -> LuaValue {
    match value {
        Value::Null => LuaValue::Nil,
        Value::Bool(b) => LuaValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) if !floats => LuaValue::Integer(i),
            _ => LuaValue::Number(n.as_f64().unwrap()),
        },
        Value::String(s) => LuaValue::String(lua.create_string(s).unwrap()),
        Value::Array(items) => {
            let table = lua.create_table().unwrap();
            for (i, item) in items.iter().enumerate() {
                table.raw_set(i + 1, to_lua(lua, item, floats)).unwrap();
            }
            LuaValue::Table(table)
        }
        Value::Object(fields) => {
            let table = lua.create_table().unwrap();
            for (key, item) in fields {
                table
                    .raw_set(key.as_str(), to_lua(lua, item, floats))
                    .unwrap();
            }
            LuaValue::Table(table)
        }
    }
}

/// Runs `kind`'s health script on `object`: (`hs.status`, `hs.message`).
fn health(kind: Kind, object: &Value, floats: bool) -> (String, String) {
    let lua = Lua::new();
    lua.globals()
        .set("obj", to_lua(&lua, object, floats))
        .unwrap();
    let hs: Table = lua
        .load(script(kind))
        .set_name(format!("{}.lua", kind.as_str()))
        .eval()
        .unwrap_or_else(|error| panic!("{}.lua failed: {error}", kind.as_str()));
    (hs.get("status").unwrap(), hs.get("message").unwrap())
}

#[test]
fn every_kind_has_a_health_script_for_every_outcome() {
    let mut failures = Vec::new();
    let mut outcomes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for kind in Kind::VEIL {
        let cases: Vec<Case> = common_cases(kind)
            .into_iter()
            .chain(kind_cases(kind))
            .collect();
        for case in &cases {
            for floats in [false, true] {
                let (status, message) = health(kind, &case.object, floats);
                if (status.as_str(), message.as_str()) != (case.status, case.message.as_str()) {
                    failures.push(format!(
                        "{} / {} (numbers as {}): got {status} {message:?}, want {} {:?}",
                        kind.as_str(),
                        case.name,
                        if floats { "floats" } else { "integers" },
                        case.status,
                        case.message
                    ));
                }
            }
            outcomes.entry(kind.as_str()).or_default().push(case.status);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every kind was asked for each outcome it can give.
    for (kind, seen) in outcomes {
        for outcome in ["Healthy", "Progressing", "Degraded"] {
            assert!(seen.contains(&outcome), "{kind}: no {outcome} case");
        }
    }
}

/// Lua 5.2+ syntax and functions that gopher-lua (Lua 5.1) does not have.
const NOT_IN_LUA_51: [&str; 12] = [
    "//",
    "goto",
    "::",
    "<<",
    ">>",
    "&",
    "math.tointeger",
    "math.type",
    "utf8.",
    "string.pack",
    "table.unpack",
    "table.move",
];

#[test]
fn health_scripts_use_only_lua_51() {
    for kind in Kind::VEIL {
        let script = script(kind);
        for (number, line) in script.lines().enumerate() {
            let code = line.split("--").next().unwrap_or_default();
            for token in NOT_IN_LUA_51 {
                assert!(
                    !code.contains(token),
                    "{}.lua:{}: `{token}` is not Lua 5.1 (Argo CD runs gopher-lua): {line}",
                    kind.as_str(),
                    number + 1
                );
            }
            // `~` only as part of `~=` (Lua 5.3's bitwise not/xor otherwise).
            let stray_tilde = code
                .match_indices('~')
                .any(|(i, _)| !code[i..].starts_with("~="));
            assert!(
                !stray_tilde && !code.contains('|'),
                "{}.lua:{}: bitwise operator (Lua 5.3+): {line}",
                kind.as_str(),
                number + 1
            );
        }
    }
}

/// The ConfigMap snippet with every script under its Argo CD key.
fn argocd_cm() -> String {
    let mut out = String::from(
        "# Argo CD health checks for Veil's kinds: merge into the argocd-cm ConfigMap\n\
         # (see ../README.md). Written from health/*.lua by\n\
         # `VEIL_UPDATE_GITOPS=1 cargo test -p veil-e2e --test argocd_health`;\n\
         # edit the scripts, not this file.\n\
         apiVersion: v1\n\
         kind: ConfigMap\n\
         metadata:\n  name: argocd-cm\n  namespace: argocd\n  labels:\n    \
         app.kubernetes.io/name: argocd-cm\n    app.kubernetes.io/part-of: argocd\n\
         data:\n",
    );
    for kind in Kind::VEIL {
        out.push_str(&format!(
            "  resource.customizations.health.veil.dev_{}: |\n",
            kind.as_str()
        ));
        for line in script(kind).lines() {
            if line.is_empty() {
                out.push('\n');
            } else {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    out
}

#[test]
fn argocd_cm_carries_every_script_unchanged() {
    let path = gitops_dir().join("argocd-cm.yaml");
    let expected = argocd_cm();
    if std::env::var_os("VEIL_UPDATE_GITOPS").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        written == expected,
        "{} is not the scripts in health/: run `VEIL_UPDATE_GITOPS=1 cargo test -p veil-e2e --test argocd_health`",
        path.display()
    );
    // And YAML reads each key back as exactly the script.
    let config: Value = serde_yaml_ng::from_str(&written).unwrap();
    let data = config["data"].as_object().unwrap();
    assert_eq!(data.len(), Kind::VEIL.len(), "{:?}", data.keys());
    for kind in Kind::VEIL {
        let key = format!("resource.customizations.health.veil.dev_{}", kind.as_str());
        assert_eq!(data[&key].as_str(), Some(script(kind).as_str()), "{key}");
    }
}
