//! Executors: which program a task needs, and the processes it becomes.
//!
//! Pure apart from looking tools up: [`steps`] turns a task into argument
//! lists and settings, and never spawns, writes or logs anything. Decisions
//! made here (documented on each function): extra vars travel as one JSON
//! object, ansible's host key checking is left on, `tofu` is preferred over
//! `terraform`, and output is colourless for the log.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use veil_crds::runner::Executor;
use veil_crds::task_run::{AnsibleTask, ShellTask, Task, TerraformAction, TerraformTask};
use veil_crds::wire::Capability;

use super::session::Step;
use super::{TaskContext, TaskError};
use crate::capabilities::{find_on_path, is_executable_file};

/// Terraform binaries in order of preference: OpenTofu is what `make env`
/// builds and is open source; `terraform` is used when it is all the node has.
pub const TERRAFORM_BINARIES: &[&str] = &["tofu", "terraform"];

/// Inventory hosts that mean "this machine": an inventory of only these gets
/// `-c local` (no SSH to ourselves).
const LOCAL_HOSTS: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// Extra vars for a local-only inventory (given before the task's own, which
/// may override it).
const LOCAL_INTERPRETER: &str = r#"{"ansible_python_interpreter":"{{ ansible_playbook_python }}"}"#;

/// Where the node's tools are: its capabilities first, then `PATH`.
pub(super) struct Tools<'a> {
    node: &'a str,
    capabilities: &'a [Capability],
    search_path: OsString,
}

impl<'a> Tools<'a> {
    pub(super) fn new(ctx: &'a TaskContext, search_path: OsString) -> Self {
        Self {
            node: &ctx.node,
            capabilities: &ctx.capabilities,
            search_path,
        }
    }

    /// The first of `names` the node has, as an absolute path: a capability
    /// whose path is still an executable file, else a `PATH` match.
    ///
    /// # Errors
    ///
    /// [`TaskError::ExecutorMissing`] naming the node and the tool(s).
    pub(super) fn resolve(&self, names: &[&str]) -> Result<PathBuf, TaskError> {
        for name in names {
            let known = self
                .capabilities
                .iter()
                .filter(|c| c.name == *name)
                .map(|c| PathBuf::from(&c.path))
                .find(|p| is_executable_file(p));
            if let Some(path) = known.or_else(|| find_on_path(name, &self.search_path)) {
                return Ok(path);
            }
        }
        Err(TaskError::ExecutorMissing {
            node: self.node.to_owned(),
            tool: names.join(" or "),
            searched: format!(
                "not among its capabilities, not on PATH={}",
                self.search_path.to_string_lossy()
            ),
        })
    }
}

fn shell_of(task: &Task) -> Result<&ShellTask, TaskError> {
    task.shell
        .as_ref()
        .ok_or_else(|| TaskError::InvalidTask("`executor: shell` without a `shell:` block".into()))
}

fn ansible_of(task: &Task) -> Result<&AnsibleTask, TaskError> {
    task.ansible.as_ref().ok_or_else(|| {
        TaskError::InvalidTask("`executor: ansible` without an `ansible:` block".into())
    })
}

fn terraform_of(task: &Task) -> Result<&TerraformTask, TaskError> {
    task.terraform.as_ref().ok_or_else(|| {
        TaskError::InvalidTask("`executor: terraform` without a `terraform:` block".into())
    })
}

/// The program the task runs, checked before anything is created: `sh` for
/// a script, the command's program (a bare name must be on the node; a path
/// containing `/` is taken relative to the work dir and checked at spawn,
/// since it may come from the repository), `ansible-playbook`, or the first
/// of [`TERRAFORM_BINARIES`].
///
/// # Errors
///
/// [`TaskError::ExecutorMissing`], or [`TaskError::InvalidTask`] when the
/// executor's block is absent.
pub(super) fn resolve_program(task: &Task, tools: &Tools<'_>) -> Result<OsString, TaskError> {
    let path = match task.executor {
        Executor::Shell => {
            let shell = shell_of(task)?;
            match (&shell.command, &shell.script) {
                (Some(command), _) => {
                    let program = command.as_slice().first().map_or("", String::as_str);
                    if program.contains('/') {
                        return Ok(program.into());
                    }
                    tools.resolve(&[program])?
                }
                (None, Some(_)) => tools.resolve(&["sh"])?,
                (None, None) => {
                    return Err(TaskError::InvalidTask(
                        "`shell:` has neither `command` nor `script`".into(),
                    ));
                }
            }
        }
        Executor::Ansible => tools.resolve(&["ansible-playbook"])?,
        Executor::Terraform => tools.resolve(TERRAFORM_BINARIES)?,
    };
    Ok(path.into_os_string())
}

/// The terraform plugin cache shared by the runs under `base`.
pub(super) fn plugin_cache_dir(base: &Path) -> PathBuf {
    base.join(".cache").join("terraform-plugins")
}

/// The processes of `task`, run in `run_dir` with `program` (from
/// [`resolve_program`]).
///
/// - shell: the command's argv as is, or `sh -c SCRIPT`;
/// - ansible: `ansible-playbook PLAYBOOK -i INVENTORY [-c local] [-e JSON]`;
/// - terraform: `init`, then `plan` or `apply -auto-approve`, in `dir`.
///
/// # Errors
///
/// [`TaskError::InvalidTask`] when the executor's block is absent.
pub(super) fn steps(
    task: &Task,
    program: OsString,
    run_dir: &Path,
    base: &Path,
    utf8_locale: bool,
) -> Result<Vec<Step>, TaskError> {
    match task.executor {
        Executor::Shell => Ok(vec![shell_step(shell_of(task)?, program, run_dir)]),
        Executor::Ansible => Ok(vec![ansible_step(
            ansible_of(task)?,
            program,
            run_dir,
            utf8_locale,
        )]),
        Executor::Terraform => Ok(terraform_steps(
            terraform_of(task)?,
            &program,
            run_dir,
            base,
        )),
    }
}

fn shell_step(shell: &ShellTask, program: OsString, run_dir: &Path) -> Step {
    match (&shell.command, &shell.script) {
        (Some(command), _) => {
            let argv = command.as_slice();
            let label = argv.first().cloned().unwrap_or_default();
            let mut step = Step::new(label, program, run_dir.to_path_buf());
            step.args = argv.iter().skip(1).map(OsString::from).collect();
            step
        }
        (None, script) => {
            let mut step = Step::new("sh -c SCRIPT", program, run_dir.to_path_buf());
            step.args = vec!["-c".into(), script.clone().unwrap_or_default().into()];
            step
        }
    }
}

/// Ansible decisions: the inventory defaults to `localhost,`; an inventory of
/// only local hosts runs with `-c local` and the controller's Python (like
/// ansible's implicit localhost; interpreter discovery can pick a broken
/// shim). Extra vars go as one JSON object so
/// values with spaces, `=` or quotes arrive as written (ansible's `k=v` form
/// splits on spaces). Host key checking is left as ansible's default (on):
/// turning it off would let anyone on the path impersonate a managed host;
/// set `ANSIBLE_HOST_KEY_CHECKING=False` in the task's `env` to opt out.
/// Output is colourless and unbuffered so lines reach the log as printed;
/// ansible refuses to start without a UTF-8 locale, so `LC_ALL=C.UTF-8` is
/// set when the run has none.
fn ansible_step(
    ansible: &AnsibleTask,
    program: OsString,
    run_dir: &Path,
    utf8_locale: bool,
) -> Step {
    let mut step = Step::new(
        format!("ansible-playbook {}", ansible.playbook),
        program,
        run_dir.to_path_buf(),
    );
    let inventory = ansible.inventory.as_deref().unwrap_or("localhost,");
    step.args = vec![
        ansible.playbook.clone().into(),
        "-i".into(),
        inventory.into(),
    ];
    if is_local_inventory(inventory) {
        // What ansible does for its implicit localhost: run modules with the
        // controller's own Python, not one "discovered" on the machine.
        step.args.extend([
            "-c".into(),
            "local".into(),
            "-e".into(),
            LOCAL_INTERPRETER.into(),
        ]);
    }
    if !ansible.extra_vars.is_empty() {
        let json = serde_json::to_string(&ansible.extra_vars).unwrap_or_default();
        step.args.extend(["-e".into(), json.into()]);
    }
    step.required_paths.push(run_dir.join(&ansible.playbook));
    let temp = run_dir.join(".veil-tmp").join("ansible");
    step.env = vec![
        ("ANSIBLE_NOCOLOR".into(), "1".into()),
        ("ANSIBLE_FORCE_COLOR".into(), "0".into()),
        ("ANSIBLE_RETRY_FILES_ENABLED".into(), "0".into()),
        ("ANSIBLE_LOCAL_TEMP".into(), temp.into_os_string()),
        ("PYTHONUNBUFFERED".into(), "1".into()),
    ];
    if !utf8_locale {
        step.env.push(("LC_ALL".into(), "C.UTF-8".into()));
    }
    step
}

/// A comma-separated host list naming only this machine.
fn is_local_inventory(inventory: &str) -> bool {
    inventory.contains(',')
        && inventory
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .all(|h| LOCAL_HOSTS.contains(&h))
}

/// Terraform decisions: `-input=false` everywhere and `TF_IN_AUTOMATION=1`
/// (nothing may prompt), `-no-color` for the log, one plugin cache per
/// work root so providers are downloaded once, no update check. State is
/// whatever the configuration's backend says: a local state file is removed
/// with the work dir, so real configurations need a remote backend.
fn terraform_steps(
    terraform: &TerraformTask,
    program: &OsString,
    run_dir: &Path,
    base: &Path,
) -> Vec<Step> {
    let binary = Path::new(program).file_name().map_or_else(
        || "terraform".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    let dir = if terraform.dir == "." {
        run_dir.to_path_buf()
    } else {
        run_dir.join(&terraform.dir)
    };
    let env: Vec<(String, OsString)> = vec![
        ("TF_IN_AUTOMATION".into(), "1".into()),
        ("TF_INPUT".into(), "0".into()),
        ("CHECKPOINT_DISABLE".into(), "1".into()),
        (
            "TF_PLUGIN_CACHE_DIR".into(),
            plugin_cache_dir(base).into_os_string(),
        ),
    ];
    let mut init = Step::new(format!("{binary} init"), program.clone(), dir.clone());
    init.args = ["init", "-input=false", "-no-color"]
        .map(OsString::from)
        .to_vec();
    init.env = env.clone();
    let (verb, flags): (&str, &[&str]) = match terraform.action {
        TerraformAction::Plan => ("plan", &["-input=false", "-no-color"]),
        TerraformAction::Apply => ("apply", &["-auto-approve", "-input=false", "-no-color"]),
    };
    let mut action = Step::new(format!("{binary} {verb}"), program.clone(), dir);
    action.args = std::iter::once(verb)
        .chain(flags.iter().copied())
        .map(OsString::from)
        .collect();
    for (name, value) in &terraform.vars {
        action
            .args
            .extend(["-var".into(), format!("{name}={value}").into()]);
    }
    action.env = env;
    vec![init, action]
}

#[cfg(test)]
mod tests;
