//! The job fields berth uses (`JobAddParameter` subset).

use crate::common::EnvironmentSetting;
use crate::duration::IsoDuration;
use serde::{Deserialize, Serialize};

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_info: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_all_tasks_complete: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_task_failure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_preparation_task: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_release_task: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_manager_task: Option<serde_json::Value>,
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

/// A job as berth reports it (Batch's `BatchJob` GET shape, the fields a node knows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    #[serde(flatten)]
    pub spec: JobSpec,
    pub state: JobState,
    pub state_transition_time: chrono::DateTime<chrono::Utc>,
    pub creation_time: chrono::DateTime<chrono::Utc>,
}
