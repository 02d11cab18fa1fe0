//! The job fields berth uses (`JobAddParameter` subset).

use crate::common::{batch_enum, EnvironmentSetting, TaskContainerSettings, UserIdentity};
use crate::duration::IsoDuration;
use crate::node::StartTaskInfo;
use crate::task::TaskConstraints;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `jobPreparationTask` (spec §2.9): runs on a node before the first task of the job there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobPreparationTask {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub command_line: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_settings: Option<TaskContainerSettings>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_files: Vec<crate::files::ResourceFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_settings: Vec<EnvironmentSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<TaskConstraints>,
    /// Batch's default is `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_success: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_identity: Option<UserIdentity>,
    /// Batch's default is `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_on_node_reboot_after_success: Option<bool>,
}

impl JobPreparationTask {
    pub const DEFAULT_ID: &'static str = "jobpreparation";
    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or(Self::DEFAULT_ID)
    }
    pub fn wait_for_success(&self) -> bool {
        self.wait_for_success.unwrap_or(true)
    }
    pub fn rerun_on_node_reboot_after_success(&self) -> bool {
        self.rerun_on_node_reboot_after_success.unwrap_or(true)
    }
}

/// `jobReleaseTask` (spec §2.9): runs when the job ends, on each node that ran its
/// preparation task; takes no task slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobReleaseTask {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub command_line: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_settings: Option<TaskContainerSettings>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_files: Vec<crate::files::ResourceFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_settings: Vec<EnvironmentSetting>,
    /// Default and maximum: 15 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wall_clock_time: Option<IsoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_time: Option<IsoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_identity: Option<UserIdentity>,
}

impl JobReleaseTask {
    pub const DEFAULT_ID: &'static str = "jobrelease";
    /// Batch's default and maximum `maxWallClockTime` for a release task.
    pub const MAX_WALL_CLOCK: Duration = Duration::from_secs(15 * 60);
    pub fn id(&self) -> &str {
        self.id.as_deref().unwrap_or(Self::DEFAULT_ID)
    }
    /// The wall-clock limit: the one given, else 15 minutes (never more).
    pub fn max_wall_clock(&self) -> Duration {
        self.max_wall_clock_time
            .as_ref()
            .and_then(|d| d.limit())
            .map_or(Self::MAX_WALL_CLOCK, |d| d.min(Self::MAX_WALL_CLOCK))
    }
}

/// `jobPreparationTaskExecutionInfo` / `jobReleaseTaskExecutionInfo` (spec §3.6): the start
/// task's record (state `running` | `completed`, times, exit code, failure, retries,
/// result) plus where the task's directory is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobTaskExecutionInfo {
    #[serde(flatten)]
    pub run: StartTaskInfo,
    pub task_root_directory: String,
}

/// One node's entry in `GET /jobs/{job}/jobpreparationandreleasetaskstatus`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobPrepReleaseStatus {
    pub pool_id: String,
    pub node_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_preparation_task_execution_info: Option<JobTaskExecutionInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_release_task_execution_info: Option<JobTaskExecutionInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobConstraints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wall_clock_time: Option<IsoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_task_retry_count: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub common_environment_settings: Vec<EnvironmentSetting>,
    #[serde(default)]
    pub uses_task_dependencies: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<JobConstraints>,
    /// -1000 (lowest) to 1000 (highest), default 0: a higher job's tasks start first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// The most tasks of the job that run at once on the node; -1 (default) or absent:
    /// no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_tasks: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_info: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_all_tasks_complete: Option<OnAllTasksComplete>,
    /// Whether a task's `exitConditions` `jobAction` is carried out (default `noaction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_task_failure: Option<OnTaskFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_preparation_task: Option<JobPreparationTask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_release_task: Option<JobReleaseTask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_manager_task: Option<JobManagerTask>,
}

impl JobSpec {
    /// The job `berth run` uses when no `--job` file is given.
    pub fn default_for_run() -> Self {
        JobSpec {
            id: "berthjob".into(),
            ..Default::default()
        }
    }

    /// The job's default `maxTaskRetryCount` (Batch: 0).
    pub fn max_task_retry_count(&self) -> i32 {
        self.constraints
            .as_ref()
            .and_then(|c| c.max_task_retry_count)
            .unwrap_or(0)
    }
}

crate::common::batch_enum!(
    /// Job states berth uses (spec §3: `active`, `terminating`, `completed`, `deleting`).
    JobState {
        Active => "active",
        Disabling => "disabling",
        Disabled => "disabled",
        Enabling => "enabling",
        Terminating => "terminating",
        Completed => "completed",
        Deleting => "deleting",
    }
);

/// `jobManagerTask` (Batch's `JobManagerTask`): a task created with the job, first in
/// its queue. `runExclusive` (default true) has it run alone on the node; with
/// `killJobOnCompletion` (default true) its end terminates the job (`JMComplete`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobManagerTask {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub command_line: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_settings: Option<TaskContainerSettings>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_files: Vec<crate::files::ResourceFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_files: Vec<crate::files::OutputFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_settings: Vec<EnvironmentSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<TaskConstraints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_slots: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_job_on_completion: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_identity: Option<UserIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_exclusive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_token_settings: Option<crate::task::AuthenticationTokenSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_low_priority_node: Option<bool>,
}

/// Batch's `terminateReason` for a job whose manager task completed with
/// `killJobOnCompletion`.
pub const TERMINATE_JM_COMPLETE: &str = "JMComplete";

impl JobManagerTask {
    pub fn kills_job(&self) -> bool {
        self.kill_job_on_completion.unwrap_or(true)
    }

    /// The task berth queues for it: `runExclusive` takes every slot of the node.
    pub fn task_spec(&self, slots_per_node: u32) -> crate::task::TaskSpec {
        let exclusive = self.run_exclusive.unwrap_or(true);
        crate::task::TaskSpec {
            id: self.id.clone(),
            display_name: self.display_name.clone(),
            command_line: self.command_line.clone(),
            container_settings: self.container_settings.clone(),
            environment_settings: self.environment_settings.clone(),
            constraints: self.constraints.clone(),
            required_slots: if exclusive {
                i32::try_from(slots_per_node).ok()
            } else {
                self.required_slots
            },
            user_identity: self.user_identity.clone(),
            resource_files: self.resource_files.clone(),
            output_files: self.output_files.clone(),
            authentication_token_settings: self.authentication_token_settings.clone(),
            ..Default::default()
        }
    }
}

batch_enum!(
    /// `onTaskFailure`: what a failed task does to its job (`performexitoptionsjobaction`:
    /// the task's `exitConditions` `jobAction`, default `terminate` on failure).
    OnTaskFailure {
        NoAction => "noaction",
        PerformExitOptionsJobAction => "performexitoptionsjobaction",
    }
);

batch_enum!(
    /// `onAllTasksComplete`: what the job does once all its tasks completed.
    OnAllTasksComplete {
        NoAction => "noaction",
        TerminateJob => "terminatejob",
    }
);

batch_enum!(
    /// `disableTasks` of a job disable: what happens to the job's running tasks.
    /// `requeue`: stopped and queued again (`requeueCount` + 1), to run once the job is
    /// enabled; `terminate`: stopped and completed `TaskEnded`; `wait`: left to finish.
    DisableJobOption {
        Requeue => "requeue",
        Terminate => "terminate",
        Wait => "wait",
    }
);

impl JobSpec {
    /// `priority`, default 0.
    pub fn priority(&self) -> i32 {
        self.priority.unwrap_or(0)
    }

    /// `maxParallelTasks` as a cap; `None`: no limit.
    pub fn parallel_cap(&self) -> Option<u32> {
        self.max_parallel_tasks
            .filter(|n| *n >= 0)
            .map(|n| n as u32)
    }

    /// Whether tasks' `jobAction`s are carried out.
    pub fn performs_exit_job_actions(&self) -> bool {
        self.on_task_failure == Some(OnTaskFailure::PerformExitOptionsJobAction)
    }
}

/// Batch's `terminateReason` for a job ended by a task's `jobAction: terminate`.
pub const TERMINATE_TASK_FAILED: &str = "TaskFailed";
/// Batch's `terminateReason` for a job whose tasks all completed (`onAllTasksComplete`).
pub const TERMINATE_ALL_TASKS_COMPLETE: &str = "AllTasksComplete";
/// Batch's `terminateReason` for a job past its `constraints.maxWallClockTime`.
pub const TERMINATE_MAX_WALL_CLOCK: &str = "MaxWallClockTimeExpiry";
/// Batch's `terminateReason` for a job terminated by request without a reason.
pub const TERMINATE_USER: &str = "UserTerminate";

/// `JobExecutionInformation`: when the job started and ended, and why it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobExecutionInfo {
    pub start_time: chrono::DateTime<chrono::Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<chrono::DateTime<chrono::Utc>>,
    /// `UserTerminate`, `TaskFailed` or the reason a terminate request gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminate_reason: Option<String>,
}

/// A job as berth reports it (Batch's `BatchJob` GET shape, the fields a node knows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    #[serde(flatten)]
    pub spec: JobSpec,
    pub state: JobState,
    pub state_transition_time: chrono::DateTime<chrono::Utc>,
    pub creation_time: chrono::DateTime<chrono::Utc>,
    /// Absent only for jobs an older berth stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_info: Option<JobExecutionInfo>,
    /// When an update (PATCH, PUT) last changed the job; its `Last-Modified` is the latest
    /// of this and its other times. Absent for jobs never updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

impl JobView {
    /// A new active job, started now.
    pub fn new(spec: JobSpec) -> JobView {
        let now = chrono::Utc::now();
        JobView {
            spec,
            state: JobState::Active,
            state_transition_time: now,
            creation_time: now,
            execution_info: Some(JobExecutionInfo {
                start_time: now,
                ..Default::default()
            }),
            last_modified: None,
        }
    }

    /// Records the job's end: `Completed` now, keeping a reason given before.
    pub fn complete(&mut self) {
        let now = chrono::Utc::now();
        self.state = JobState::Completed;
        self.state_transition_time = now;
        let info = self.execution_info.get_or_insert_with(|| JobExecutionInfo {
            start_time: self.creation_time,
            ..Default::default()
        });
        info.end_time = Some(now);
    }

    /// Records why the job is being terminated (the first reason stays).
    pub fn terminated_because(&mut self, reason: &str) {
        let created = self.creation_time;
        let info = self.execution_info.get_or_insert_with(|| JobExecutionInfo {
            start_time: created,
            ..Default::default()
        });
        info.terminate_reason
            .get_or_insert_with(|| reason.to_string());
    }
}
