//! What berth reports about a task: Batch's `BatchTask` GET shape.

use crate::common::batch_enum;
use crate::failure::{FailureCategory, FailureCode};
use crate::task::TaskSpec;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

batch_enum!(
    TaskState {
        Active => "active",
        Preparing => "preparing",
        Running => "running",
        Completed => "completed",
    }
);

batch_enum!(
    TaskResult {
        Success => "success",
        Failure => "failure",
    }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameValuePair {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureInfo {
    pub category: FailureCategory,
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<NameValuePair>,
}

impl FailureInfo {
    /// A failure with the code's standard category and message, plus details.
    pub fn new(code: FailureCode, details: Vec<NameValuePair>) -> Self {
        let (category, message) = code.category_and_message();
        FailureInfo {
            category,
            code: code.as_str().to_string(),
            message: message.into(),
            details,
        }
    }

    pub fn detail(&self, name: &str) -> Option<&str> {
        self.details
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// `docker inspect` status (`created`, `running`, `exited`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
    /// Present only when a process ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_info: Option<ContainerInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_info: Option<FailureInfo>,
    pub retry_count: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_retry_time: Option<DateTime<Utc>>,
    pub requeue_count: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    /// berth's own: the output files that reached the node's task output limit (each
    /// holds a marker line where the rest was dropped). Batch has no such limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_truncated: Vec<String>,
    /// berth's own (pool mode): how often the task's node was lost under it and the service
    /// ran it again elsewhere (Batch's internal retry, counted in neither `retryCount` nor
    /// `requeueCount`). Absent when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub system_retry_count: i32,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub pool_id: String,
    pub node_id: String,
    pub task_root_directory: String,
}

/// A task as berth reports it: the spec as given plus its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    #[serde(flatten)]
    pub spec: TaskSpec,
    pub job_id: String,
    pub state: TaskState,
    pub state_transition_time: DateTime<Utc>,
    pub creation_time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_info: Option<ExecutionInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_info: Option<NodeInfo>,
    /// berth's own, pool mode only: the service's attempt this node runs the task as
    /// (`node_protocol::AttemptId`). Set on the agent's local copy of a claimed task; the
    /// service never shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_attempt: Option<i64>,
}
