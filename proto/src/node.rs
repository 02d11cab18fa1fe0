//! What berth reports about its node: Batch's `BatchNode` GET shape (spec §4), limited to
//! the fields a single node knows.

use crate::common::batch_enum;
use crate::status::{ContainerInfo, ExecutionInfo, FailureInfo, NameValuePair, TaskResult};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

batch_enum!(
    /// Node states (spec §4.1). berth moves through `starting` -> (`waitingforstarttask`) ->
    /// `idle`/`running`, or ends in `unusable` / `starttaskfailed`.
    NodeState {
        Idle => "idle",
        Rebooting => "rebooting",
        Reimaging => "reimaging",
        Running => "running",
        Unusable => "unusable",
        Creating => "creating",
        Starting => "starting",
        WaitingForStartTask => "waitingforstarttask",
        StartTaskFailed => "starttaskfailed",
        Unknown => "unknown",
        LeavingPool => "leavingpool",
        Offline => "offline",
        Preempted => "preempted",
    }
);

impl NodeState {
    /// Whether tasks may be scheduled in this state.
    pub fn schedulable(&self) -> bool {
        matches!(self, NodeState::Idle | NodeState::Running)
    }
}

batch_enum!(
    StartTaskState {
        Running => "running",
        Completed => "completed",
    }
);

/// A node error (spec §4.4): `{code, message, errorDetails}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_details: Vec<NameValuePair>,
}

impl NodeError {
    pub fn detail(&self, name: &str) -> Option<&str> {
        self.error_details
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }
}

/// `startTaskInfo` (spec §4.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartTaskInfo {
    pub state: StartTaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_info: Option<ContainerInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_info: Option<FailureInfo>,
    pub retry_count: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_retry_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
}

impl StartTaskInfo {
    /// The start task's record once it has ended (or could not start).
    pub fn completed(e: &ExecutionInfo) -> Self {
        StartTaskInfo {
            state: StartTaskState::Completed,
            start_time: e.start_time,
            end_time: e.end_time,
            exit_code: e.exit_code,
            container_info: e.container_info.clone(),
            failure_info: e.failure_info.clone(),
            retry_count: e.retry_count,
            last_retry_time: e.last_retry_time,
            result: e.result,
        }
    }

    /// The execution info this record holds (the reverse of [`StartTaskInfo::completed`]).
    pub fn execution_info(&self) -> ExecutionInfo {
        ExecutionInfo {
            start_time: self.start_time,
            end_time: self.end_time,
            exit_code: self.exit_code,
            container_info: self.container_info.clone(),
            failure_info: self.failure_info.clone(),
            retry_count: self.retry_count,
            last_retry_time: self.last_retry_time,
            result: self.result,
            ..Default::default()
        }
    }

    pub fn running(start: DateTime<Utc>) -> Self {
        StartTaskInfo {
            state: StartTaskState::Running,
            start_time: Some(start),
            end_time: None,
            exit_code: None,
            container_info: None,
            failure_info: None,
            retry_count: 0,
            last_retry_time: None,
            result: None,
        }
    }
}

/// One image on the node as berth knows it (not a Batch field: `berth` extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeImage {
    pub image: String,
    /// `ready` or `failed`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The node as `berth pool start --json` and `berth node show --json` print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComputeNode {
    pub id: String,
    pub pool_id: String,
    pub state: NodeState,
    pub scheduling_state: String,
    pub state_transition_time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_task_info: Option<StartTaskInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<NodeError>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<NodeImage>,
    /// berth's addition: the node's GPUs, absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<NodeGpus>,
    pub node_agent_info: NodeAgentInfo,
}

/// The GPUs berth found with NVML at start, and how it gives them to containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeGpus {
    pub driver_version: String,
    /// e.g. `13.0`.
    pub cuda_version: String,
    /// `deviceRequests`, `runtime`, `manual` or `off`.
    pub exposure: String,
    pub devices: Vec<NodeGpu>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeGpu {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_bytes: u64,
    /// N in `/dev/nvidiaN`.
    pub minor_number: u32,
    pub mig_enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAgentInfo {
    pub version: String,
    pub last_update_time: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let n = ComputeNode {
            id: "n1".into(),
            pool_id: "p".into(),
            state: NodeState::WaitingForStartTask,
            scheduling_state: "enabled".into(),
            state_transition_time: chrono::DateTime::UNIX_EPOCH,
            start_task_info: Some(StartTaskInfo::running(chrono::DateTime::UNIX_EPOCH)),
            errors: vec![NodeError {
                code: "ContainerInvalidImage".into(),
                message: "m".into(),
                error_details: vec![NameValuePair {
                    name: "ContainerImage".into(),
                    value: "x".into(),
                }],
            }],
            images: vec![],
            gpus: None,
            node_agent_info: NodeAgentInfo {
                version: "0".into(),
                last_update_time: chrono::DateTime::UNIX_EPOCH,
            },
        };
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(v["state"], "waitingforstarttask");
        assert_eq!(v["startTaskInfo"]["state"], "running");
        assert_eq!(v["startTaskInfo"]["retryCount"], 0);
        assert_eq!(v["errors"][0]["errorDetails"][0]["name"], "ContainerImage");
        assert_eq!(v["schedulingState"], "enabled");
        let back: ComputeNode = serde_json::from_value(v).unwrap();
        assert_eq!(back, n);
        assert!("STARTTASKFAILED".parse::<NodeState>().unwrap() == NodeState::StartTaskFailed);
        assert!(!NodeState::Unusable.schedulable());
    }
}
