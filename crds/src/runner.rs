//! `Runner`: task-execution capacity on selected nodes, and the selector
//! TaskRuns and Schedules use to pick runners.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    Condition, EnvVar, LabelSelector, LabelSelectorRequirement, WorkloadPhase, impl_object_status,
    is_false, validate_env,
};
use crate::validate::{DnsLabel, FieldError, FieldErrors, LabelKey, LabelValue};

/// Task-execution capacity on the nodes its `nodeSelector` picks.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "veil.dev",
    version = "v1alpha1",
    kind = "Runner",
    doc = "Task-execution capacity on selected nodes: how many task runs at once, which executors, tags that runnerSelectors match.",
    plural = "runners",
    shortname = "rn",
    category = "veil",
    namespaced,
    status = "RunnerStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunnerSpec {
    /// Which `VeilNode`s offer this capacity. Default: every node.
    #[serde(default, skip_serializing_if = "LabelSelector::is_empty")]
    pub node_selector: LabelSelector,
    /// Most task runs executing at once on each selected node. Default: `1`.
    #[serde(default = "default_parallel")]
    pub max_parallel_tasks: u32,
    /// Free-form tags a `runnerSelector.tags` can ask for (e.g. `[deploy, linux]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<DnsLabel>,
    /// Executors this runner accepts: `shell`, `ansible`, `terraform`. The node
    /// must also have the tool (see the VeilNode's capabilities). Default: `[shell]`.
    #[serde(default = "default_executors")]
    pub executors: Vec<Executor>,
    /// Absolute directory under which each run gets its own working directory.
    /// Default: `runs/` in the agent's data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<String>,
    /// Environment variables given to every task run here (the task's own `env` wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Run this Runner's tasks as root (the agent's own user) instead of the
    /// node's unprivileged task user (`veil-agent --task-user`). A root task
    /// can read the agent's token, journal and xray configs: grant it only to
    /// Runners whose TaskRuns are trusted like the node's administrator. Shown
    /// in the Runner's and each TaskRun's status. Default: `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub run_as_root: bool,
}

fn default_parallel() -> u32 {
    1
}

fn default_executors() -> Vec<Executor> {
    vec![Executor::Shell]
}

/// The program that runs a task.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    /// A program with arguments (no shell), or a script run by `sh -c` when asked for.
    Shell,
    /// `ansible-playbook` with an inventory and extra variables.
    Ansible,
    /// `terraform` (or OpenTofu): `init`, then `plan` or `apply`.
    Terraform,
}

impl RunnerSpec {
    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = FieldErrors::default();
        self.node_selector
            .validate("spec.nodeSelector", &mut errors);
        if self.max_parallel_tasks == 0 {
            errors.push(
                "spec.maxParallelTasks",
                "0 would never run anything; write at least 1 (or remove the Runner)",
            );
        }
        if self.executors.is_empty() {
            errors.push(
                "spec.executors",
                "no executor listed; write e.g. `[shell]` or remove the field for the default",
            );
        }
        if let Some(dir) = &self.work_dir
            && !(dir.starts_with('/')
                || dir.get(1..3) == Some(":\\")
                || dir.get(1..3) == Some(":/"))
        {
            errors.push(
                "spec.workDir",
                format!("`{dir}` is not an absolute path; write e.g. `/var/lib/veil/runs`"),
            );
        }
        validate_env(&self.env, "spec.env", &mut errors);
        errors.into_result()
    }
}

/// Picks the runners a task may run on: the Runner's labels must match
/// `matchLabels`/`matchExpressions`, and it must have every tag in `tags`.
/// An empty selector accepts every runner with the task's executor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunnerSelector {
    /// Labels of the `Runner` object that must be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<LabelKey, LabelValue>,
    /// Set-based requirements on the `Runner` object's labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
    /// Tags the Runner must all have (`spec.tags`), e.g. `[deploy]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<DnsLabel>,
}

impl RunnerSelector {
    /// The label part as a [`LabelSelector`].
    pub fn labels(&self) -> LabelSelector {
        LabelSelector {
            match_labels: self.match_labels.clone(),
            match_expressions: self.match_expressions.clone(),
        }
    }

    /// Whether a Runner with these labels and tags is picked.
    pub fn matches(&self, labels: &BTreeMap<String, String>, tags: &[DnsLabel]) -> bool {
        self.labels().matches(labels) && self.tags.iter().all(|t| tags.contains(t))
    }

    /// Checks the label requirements (`path` is the selector's field path).
    pub fn validate(&self, path: &str, errors: &mut FieldErrors) {
        self.labels().validate(path, errors);
    }
}

/// Observed capacity and work of the runner.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunnerStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions (`Ready`: at least one selected node is Ready).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `true` when `spec.runAsRoot` makes this Runner's tasks run as root.
    #[serde(default, skip_serializing_if = "is_false")]
    pub run_as_root: bool,
    /// Selected nodes that are Ready.
    #[serde(default)]
    pub ready_nodes: u32,
    /// Task slots on Ready nodes (`maxParallelTasks` × ready nodes).
    #[serde(default)]
    pub capacity: u32,
    /// Task runs executing now.
    #[serde(default)]
    pub running: u32,
    /// Task runs that succeeded here (since the operator started keeping history).
    #[serde(default)]
    pub succeeded: u32,
    /// Task runs that failed here.
    #[serde(default)]
    pub failed: u32,
    /// Per-node capacity and counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<RunnerNodeStatus>,
}

impl_object_status!(RunnerStatus);

/// The runner on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunnerNodeStatus {
    /// Name of the `VeilNode`.
    #[serde(default)]
    pub node: String,
    /// `Running` when the node is Ready and accepts tasks.
    #[serde(default)]
    pub phase: WorkloadPhase,
    /// Why the node does not accept tasks (not Ready, cordoned, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Task slots on this node.
    #[serde(default)]
    pub capacity: u32,
    /// Task runs executing on this node now.
    #[serde(default)]
    pub running: u32,
    /// Task runs that succeeded on this node.
    #[serde(default)]
    pub succeeded: u32,
    /// Task runs that failed on this node.
    #[serde(default)]
    pub failed: u32,
    /// Executors the runner allows but the node lacks the tool for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_executors: Vec<Executor>,
}
