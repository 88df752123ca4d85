//! What a task does: the executor and its settings, shared by `TaskRun.spec.task`
//! and `Schedule.spec.task`.
//!
//! A discriminated union: `executor` names the executor and the block of the
//! same name (`shell:`, `ansible:`, `terraform:`) holds its settings; the
//! other blocks must be absent.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::repository::{Repository, check_relative_path};
use crate::common::{EnvVar, validate_env};
use crate::runner::Executor;
use crate::validate::{ArgList, FieldErrors};

/// Longest accepted `timeoutSeconds`: one week.
pub const MAX_TIMEOUT_SECONDS: u32 = 7 * 24 * 3600;

/// One unit of work for a runner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Task {
    /// `shell`, `ansible` or `terraform`; the block of the same name holds its settings.
    pub executor: Executor,
    /// Settings for `executor: shell`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<ShellTask>,
    /// Settings for `executor: ansible`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ansible: Option<AnsibleTask>,
    /// Settings for `executor: terraform`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terraform: Option<TerraformTask>,
    /// Git repository checked out into the run's working directory before the task starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<Repository>,
    /// Environment variables for the task (on top of the Runner's `env`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Seconds after which the run and all its child processes are killed and
    /// the run `Failed` with reason `Timeout`. Default: `3600`; at most 604800 (a week).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
}

fn default_timeout() -> u32 {
    3600
}

/// Runs a program directly (no shell, no word splitting), or a script through
/// `sh -c` when `script` is used. Exactly one of `command` and `script`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShellTask {
    /// Program and arguments, e.g. `["echo", "hello"]`. The program is looked up in `PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<ArgList>,
    /// A shell script run with `sh -c` (pipes, `&&`, variables), e.g. `date && uptime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
}

/// Runs `ansible-playbook`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnsibleTask {
    /// Playbook path, relative to the working directory (the repository root when
    /// `repository` is set), e.g. `site.yml`.
    pub playbook: String,
    /// Inventory: a path, or a comma-separated host list ending in `,`. Default: `localhost,`
    /// with a local connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<String>,
    /// Extra variables (`--extra-vars`), e.g. `{release: "1.4.2"}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_vars: BTreeMap<String, String>,
}

/// Runs `terraform init`, then `plan` or `apply`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TerraformTask {
    /// Directory with the configuration, relative to the working directory. Default: `.`.
    #[serde(default = "default_dir")]
    pub dir: String,
    /// `plan` (show changes) or `apply` (make them, with `-auto-approve`). Default: `plan`.
    #[serde(default)]
    pub action: TerraformAction,
    /// Input variables (`-var name=value`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
}

fn default_dir() -> String {
    ".".into()
}

/// What `terraform` does after `init`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TerraformAction {
    /// `terraform plan`: show what would change.
    #[default]
    Plan,
    /// `terraform apply -auto-approve`: make the changes.
    Apply,
}

impl Task {
    /// Cross-field checks; `path` is the task's field path (`spec.task`).
    pub fn validate(&self, path: &str, errors: &mut FieldErrors) {
        let blocks = [
            (Executor::Shell, "shell", self.shell.is_some()),
            (Executor::Ansible, "ansible", self.ansible.is_some()),
            (Executor::Terraform, "terraform", self.terraform.is_some()),
        ];
        for (executor, name, present) in blocks {
            if executor == self.executor && !present {
                let example = match executor {
                    Executor::Shell => "`shell: {command: [echo, hello]}`",
                    Executor::Ansible => "`ansible: {playbook: site.yml}`",
                    Executor::Terraform => "`terraform: {dir: ., action: plan}`",
                };
                errors.push(
                    format!("{path}.{name}"),
                    format!("`executor: {name}` needs the `{name}:` block, e.g. {example}"),
                );
            }
        }
        for (executor, name, present) in blocks {
            if executor != self.executor && present {
                errors.push(
                    format!("{path}.{name}"),
                    format!(
                        "`{name}` settings are set but `executor` is `{}`; remove the block or change `executor`",
                        executor_name(self.executor)
                    ),
                );
            }
        }
        if let Some(shell) = &self.shell {
            match (&shell.command, &shell.script) {
                (Some(_), Some(_)) => errors.push(
                    format!("{path}.shell"),
                    "both `command` and `script` are set; keep `command` (a program and its arguments, no shell) or `script` (run by `sh -c`)",
                ),
                (None, None) => errors.push(
                    format!("{path}.shell"),
                    "neither `command` nor `script` is set; write e.g. `command: [echo, hello]` or `script: date && uptime`",
                ),
                (None, Some(script)) if script.trim().is_empty() || script.contains('\0') => errors.push(
                    format!("{path}.shell.script"),
                    "the script is empty or contains a NUL byte; write the commands to run, e.g. `date && uptime`",
                ),
                _ => {}
            }
        }
        if let Some(ansible) = &self.ansible
            && let Err(message) = check_relative_path(&ansible.playbook, "`site.yml`")
        {
            errors.push(format!("{path}.ansible.playbook"), message);
        }
        if let Some(ansible) = &self.ansible
            && let Some(inventory) = &ansible.inventory
            && inventory.starts_with('-')
        {
            errors.push(
                format!("{path}.ansible.inventory"),
                format!("`{inventory}` starts with `-`, which ansible would read as an option; write a path or a host list such as `web1,web2,`"),
            );
        }
        if let Some(terraform) = &self.terraform
            && let Err(message) = check_relative_path(&terraform.dir, "`.` or `infra/`")
        {
            errors.push(format!("{path}.terraform.dir"), message);
        }
        if let Some(repo) = &self.repository {
            repo.validate(&format!("{path}.repository"), errors);
        }
        if self.timeout_seconds == 0 || self.timeout_seconds > MAX_TIMEOUT_SECONDS {
            errors.push(
                format!("{path}.timeoutSeconds"),
                format!(
                    "{} is out of range; write 1 to {MAX_TIMEOUT_SECONDS} seconds, e.g. 600",
                    self.timeout_seconds
                ),
            );
        }
        validate_env(&self.env, &format!("{path}.env"), errors);
    }
}

fn executor_name(executor: Executor) -> &'static str {
    match executor {
        Executor::Shell => "shell",
        Executor::Ansible => "ansible",
        Executor::Terraform => "terraform",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn errors_of(task: serde_json::Value) -> Vec<(String, String)> {
        let task: Task = serde_json::from_value(task).unwrap();
        let mut errors = FieldErrors::default();
        task.validate("spec.task", &mut errors);
        errors
            .into_result()
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.path, e.message))
            .collect()
    }

    fn with_repository(repository: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "executor": "shell",
            "shell": {"command": ["true"]},
            "repository": repository,
        })
    }

    #[test]
    fn each_unsafe_repository_is_refused_naming_its_field() {
        let cases = [
            (
                serde_json::json!({"url": "ext::sh -c touch% /tmp/pwned"}),
                "spec.task.repository.url",
                "ext::",
            ),
            (
                serde_json::json!({"url": "file:///srv/repo.git"}),
                "spec.task.repository.url",
                "allowInsecure",
            ),
            (
                serde_json::json!({"url": "http://mirror.lan/r.git"}),
                "spec.task.repository.url",
                "allowInsecure",
            ),
            (
                serde_json::json!({"url": "git://mirror.lan/r.git"}),
                "spec.task.repository.url",
                "allowInsecure",
            ),
            (
                serde_json::json!({"url": "--upload-pack=touch /tmp/x"}),
                "spec.task.repository.url",
                "not a git URL",
            ),
            (
                serde_json::json!({"url": "https://h/r.git", "ref": "--upload-pack=touch /tmp/x"}),
                "spec.task.repository.ref",
                "starts with `-`",
            ),
        ];
        for (repository, path, words) in cases {
            let errors = errors_of(with_repository(repository.clone()));
            assert!(
                errors.iter().any(|(p, m)| p == path && m.contains(words)),
                "{repository}: {errors:?}"
            );
        }
    }

    #[test]
    fn insecure_urls_pass_with_allow_insecure_but_ext_never_does() {
        for url in ["file:///srv/r.git", "http://h/r.git", "git://h/r.git"] {
            let errors = errors_of(with_repository(
                serde_json::json!({"url": url, "allowInsecure": true}),
            ));
            assert!(errors.is_empty(), "{url}: {errors:?}");
        }
        let errors = errors_of(with_repository(
            serde_json::json!({"url": "ext::sh -c id", "allowInsecure": true}),
        ));
        assert_eq!(errors.len(), 1, "{errors:?}");
        for url in ["https://h/r.git", "ssh://git@h/r.git", "git@h:org/r.git"] {
            assert!(errors_of(with_repository(serde_json::json!({"url": url}))).is_empty());
        }
    }

    #[test]
    fn playbook_inventory_and_terraform_dir_starting_with_a_dash_are_refused() {
        let errors = errors_of(serde_json::json!({
            "executor": "ansible",
            "ansible": {"playbook": "--syntax-check", "inventory": "--list-hosts"},
        }));
        for path in ["spec.task.ansible.playbook", "spec.task.ansible.inventory"] {
            assert!(
                errors.iter().any(|(p, m)| p == path && m.contains("`-`")),
                "{path}: {errors:?}"
            );
        }
        let errors = errors_of(serde_json::json!({
            "executor": "terraform",
            "terraform": {"dir": "-chdir=/etc"},
        }));
        assert!(
            errors
                .iter()
                .any(|(p, m)| p == "spec.task.terraform.dir" && m.contains("`-`")),
            "{errors:?}"
        );
    }
}
