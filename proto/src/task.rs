//! `TaskAddParameter`: a task as users write it for `az batch task create --json-file`.

use crate::common::{EnvironmentSetting, TaskContainerSettings, UserIdentity};
use crate::duration::IsoDuration;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskConstraints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wall_clock_time: Option<IsoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_time: Option<IsoDuration>,
    /// `-1` means unlimited; absent means the job's value (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_task_retry_count: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskIdRange {
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDependencies {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_id_ranges: Vec<TaskIdRange>,
}

impl TaskDependencies {
    /// Every task id this task waits for, ranges expanded.
    pub fn all_ids(&self) -> Vec<String> {
        let mut ids = self.task_ids.clone();
        for r in &self.task_id_ranges {
            ids.extend((r.start..=r.end).map(|i| i.to_string()));
        }
        ids
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub command_line: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_settings: Option<TaskContainerSettings>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub environment_settings: Vec<EnvironmentSetting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<TaskConstraints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_slots: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_identity: Option<UserIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<TaskDependencies>,
    // Known Batch fields that later stages of berth handle; kept verbatim so that `--json`
    // echoes them and validation can say what is not supported yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_files: Vec<crate::files::ResourceFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_files: Vec<crate::files::OutputFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_instance_settings: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_package_references: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_conditions: Option<crate::exit::ExitConditions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_info: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_token_settings: Option<AuthenticationTokenSettings>,
}

impl TaskSpec {
    pub fn required_slots(&self) -> u32 {
        self.required_slots.unwrap_or(1).max(1) as u32
    }
}

crate::common::batch_enum!(
    /// `authenticationTokenSettings.access`: what the task's token may do.
    AccessScope {
        Job => "job",
    }
);

/// `authenticationTokenSettings`: the task gets `AZ_BATCH_AUTHENTICATION_TOKEN`, good for
/// its own job's operations only, and `AZ_BATCH_ACCOUNT_URL`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationTokenSettings {
    #[serde(default)]
    pub access: Vec<AccessScope>,
}

impl TaskSpec {
    /// Whether the task asked for a token for its job.
    pub fn wants_job_token(&self) -> bool {
        self.authentication_token_settings
            .as_ref()
            .is_some_and(|a| a.access.contains(&AccessScope::Job))
    }
}
