//! `TaskRun`: one execution of a task on one runner node — made by a
//! `Schedule`, or applied by hand like a Job.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, impl_object_status, is_false};
use crate::runner::RunnerSelector;
use crate::validate::{FieldError, FieldErrors, Rfc3339};

mod repository;
mod task;

pub use repository::{
    Repository, check_ref, check_relative_path, check_url, git_allowed_protocols,
};
pub use task::{AnsibleTask, MAX_TIMEOUT_SECONDS, ShellTask, Task, TerraformAction, TerraformTask};

/// One execution of a task.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "veil.dev",
    version = "v1alpha1",
    kind = "TaskRun",
    doc = "One execution of a task (shell, ansible or terraform) on a runner node, made by a Schedule or applied by hand like a Job.",
    plural = "taskruns",
    shortname = "tr",
    category = "veil",
    namespaced,
    status = "TaskRunStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskRunSpec {
    /// What to run.
    pub task: Task,
    /// Which runners may take the run. Default: any runner allowing the executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_selector: Option<RunnerSelector>,
    /// `true` stops the run (the whole process tree is killed) and ends it
    /// `Cancelled`; a run that has not started never starts. Default: `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cancel: bool,
}

impl TaskRunSpec {
    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = FieldErrors::default();
        self.task.validate("spec.task", &mut errors);
        if let Some(selector) = &self.runner_selector {
            selector.validate("spec.runnerSelector", &mut errors);
        }
        errors.into_result()
    }
}

/// Lifecycle of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaskRunPhase {
    /// Waiting for a runner with free capacity; the `Ready` condition says why.
    #[default]
    Pending,
    /// Executing on `status.node`.
    Running,
    /// Exited with code 0.
    Succeeded,
    /// Exited non-zero, timed out, could not start, or its node was lost (`reason`).
    Failed,
    /// Stopped by `spec.cancel: true`.
    Cancelled,
}

impl TaskRunPhase {
    /// Whether the run has ended.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TaskRunPhase::Succeeded | TaskRunPhase::Failed | TaskRunPhase::Cancelled
        )
    }
}

/// Observed state of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskRunStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions (`Ready` is `True` once the run succeeded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Cancelled`.
    #[serde(default)]
    pub phase: TaskRunPhase,
    /// Why the run is in this phase, in CamelCase: `Unschedulable`, `NonZeroExit`,
    /// `Timeout`, `NodeLost`, `ExecutorMissing`, `Cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail for `reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `VeilNode` the run was placed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The `Runner` whose capacity the run uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// `true` when the run's Runner has `runAsRoot`: its processes run as
    /// root, not as the node's unprivileged task user.
    #[serde(default, skip_serializing_if = "is_false")]
    pub run_as_root: bool,
    /// When the process started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Rfc3339>,
    /// When the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Rfc3339>,
    /// Exit code of the process (absent when it was killed by a signal or never started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The last lines of output (stdout and stderr); the full log is served by
    /// `veil-operator logs taskrun NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_tail: Vec<String>,
}

impl_object_status!(TaskRunStatus);
