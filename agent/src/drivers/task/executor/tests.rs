//! Table tests for tool resolution and the argument lists of each executor.
#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::ffi::OsString;
use std::path::Path;

use serde_json::json;
use veil_crds::task_run::Task;

use super::*;

fn mk_task(value: serde_json::Value) -> Task {
    serde_json::from_value(value).unwrap()
}

fn args(step: &Step) -> Vec<String> {
    step.args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

fn env<'a>(step: &'a Step, name: &str) -> Option<&'a OsString> {
    step.env
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

fn plan(task: &Task, program: &str) -> Vec<Step> {
    steps(
        task,
        program.into(),
        Path::new("/runs/ns/r-1"),
        Path::new("/runs"),
        true,
    )
    .unwrap()
}

#[test]
fn shell_command_is_the_argv_without_a_shell() {
    let task =
        mk_task(json!({"executor": "shell", "shell": {"command": ["echo", "a b", "$HOME"]}}));
    let steps = plan(&task, "/bin/echo");
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].program, "/bin/echo");
    assert_eq!(args(&steps[0]), ["a b", "$HOME"]);
    assert_eq!(steps[0].dir, Path::new("/runs/ns/r-1"));
}

#[test]
fn shell_script_runs_through_sh_dash_c() {
    let task = mk_task(json!({"executor": "shell", "shell": {"script": "date && uptime"}}));
    let steps = plan(&task, "/bin/sh");
    assert_eq!(args(&steps[0]), ["-c", "date && uptime"]);
}

#[test]
fn ansible_defaults_to_local_localhost_and_passes_vars_as_json() {
    let task = mk_task(json!({"executor": "ansible", "ansible": {
        "playbook": "site.yml", "extraVars": {"msg": "hello world", "n": "1"}}}));
    let steps = plan(&task, "/venv/bin/ansible-playbook");
    assert_eq!(
        args(&steps[0]),
        [
            "site.yml",
            "-i",
            "localhost,",
            "-c",
            "local",
            "-e",
            LOCAL_INTERPRETER,
            "-e",
            r#"{"msg":"hello world","n":"1"}"#
        ]
    );
    assert_eq!(
        steps[0].required_paths,
        [Path::new("/runs/ns/r-1/site.yml")]
    );
    assert_eq!(env(&steps[0], "ANSIBLE_NOCOLOR").unwrap(), "1");
    assert!(
        env(&steps[0], "ANSIBLE_HOST_KEY_CHECKING").is_none(),
        "host key checking stays on"
    );
    assert!(env(&steps[0], "LC_ALL").is_none());
}

#[test]
fn ansible_uses_ssh_for_remote_inventories_and_forces_utf8_when_needed() {
    for (inventory, local) in [
        ("localhost,", true),
        ("127.0.0.1, localhost", true),
        ("web1,localhost,", false),
        ("hosts.ini", false),
    ] {
        let task = mk_task(
            json!({"executor": "ansible", "ansible": {"playbook": "p.yml", "inventory": inventory}}),
        );
        let steps = steps(&task, "ap".into(), Path::new("/r"), Path::new("/"), false).unwrap();
        assert_eq!(
            args(&steps[0]).contains(&"local".to_owned()),
            local,
            "{inventory}"
        );
        assert_eq!(env(&steps[0], "LC_ALL").unwrap(), "C.UTF-8");
    }
}

#[test]
fn terraform_inits_then_applies_in_its_dir_with_vars() {
    let task = mk_task(json!({"executor": "terraform", "terraform": {
        "dir": "infra", "action": "apply", "vars": {"name": "x y"}}}));
    let steps = plan(&task, "/cache/bin/tofu");
    let labels: Vec<&str> = steps.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, ["tofu init", "tofu apply"]);
    assert_eq!(args(&steps[0]), ["init", "-input=false", "-no-color"]);
    assert_eq!(
        args(&steps[1]),
        [
            "apply",
            "-auto-approve",
            "-input=false",
            "-no-color",
            "-var",
            "name=x y"
        ]
    );
    for step in &steps {
        assert_eq!(step.dir, Path::new("/runs/ns/r-1/infra"));
        assert_eq!(env(step, "TF_IN_AUTOMATION").unwrap(), "1");
        assert_eq!(
            env(step, "TF_PLUGIN_CACHE_DIR").unwrap(),
            "/runs/.cache/terraform-plugins"
        );
    }
}

#[test]
fn terraform_plan_is_the_default_action() {
    let task = mk_task(json!({"executor": "terraform", "terraform": {}}));
    let steps = plan(&task, "/usr/bin/terraform");
    assert_eq!(steps[1].label, "terraform plan");
    assert_eq!(steps[1].dir, Path::new("/runs/ns/r-1"));
}

#[test]
fn missing_block_is_an_invalid_task() {
    let task = mk_task(json!({"executor": "ansible", "shell": {"command": ["true"]}}));
    let result = steps(&task, "x".into(), Path::new("/r"), Path::new("/"), true);
    assert!(matches!(result, Err(TaskError::InvalidTask(_))));
}

#[cfg(unix)]
#[test]
fn tools_prefer_capabilities_then_path_and_name_the_node_when_missing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let exe = |name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    };
    let listed = exe("listed-terraform");
    let on_path = exe("tofu");
    let mut ctx = TaskContext::new("edge-1", "/runs");
    ctx.capabilities.push(Capability {
        name: "terraform".into(),
        version: None,
        path: listed.to_string_lossy().into_owned(),
    });
    let tools = Tools::new(&ctx, dir.path().as_os_str().to_owned());
    assert_eq!(
        tools.resolve(TERRAFORM_BINARIES).unwrap(),
        on_path,
        "tofu is preferred"
    );
    assert_eq!(tools.resolve(&["terraform"]).unwrap(), listed);
    let missing = tools.resolve(&["ansible-playbook"]).unwrap_err();
    let message = missing.to_string();
    assert_eq!(missing.reason(), "ExecutorMissing");
    assert!(
        message.contains("`ansible-playbook`") && message.contains("`edge-1`"),
        "{message}"
    );
}
