//! Durable state of the daemon, behind one narrow interface (a later issue adds PostgreSQL
//! for pool-wide mode). Callers write before they act: a task is `running` in the store
//! before its container starts, so a restarted agent knows what it may have left behind.

pub mod sqlite;

use berth_proto::{JobTaskExecutionInfo, JobView, TaskState, TaskView};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} not found")]
    NotFound(String),
    /// The database, or the disk under it, failed.
    #[error("state store")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored task that no longer reads as what was written.
    #[error("state store: task row {seq}")]
    Row {
        seq: i64,
        #[source]
        source: serde_json::Error,
    },
}

/// A task in the store: its view and its place in the queue (insertion order).
#[derive(Debug, Clone)]
pub struct StoredTask {
    pub seq: i64,
    pub view: TaskView,
}

/// What the scheduler needs to know of a queued task to decide whether it may start.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueHead {
    pub seq: i64,
    pub job_id: String,
    pub id: String,
    pub required_slots: u32,
    pub depends_on: Option<berth_proto::TaskDependencies>,
}

/// What this node knows of a job's preparation and release tasks.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobOnNode {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preparation: Option<JobTaskExecutionInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<JobTaskExecutionInfo>,
    /// The boot (`/proc/sys/kernel/random/boot_id`) the preparation task last ran in: a
    /// reboot reruns it when `rerunOnNodeRebootAfterSuccess` says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

pub trait Store: Send + Sync {
    fn add_job(&self, job: &JobView) -> Result<(), StoreError>;
    fn put_job(&self, job: &JobView) -> Result<(), StoreError>;
    fn job(&self, id: &str) -> Result<Option<JobView>, StoreError>;
    fn jobs(&self) -> Result<Vec<JobView>, StoreError>;
    /// Deletes the job, its tasks and its `JobOnNode`.
    fn delete_job(&self, id: &str) -> Result<(), StoreError>;
    fn job_on_node(&self, job: &str) -> Result<Option<JobOnNode>, StoreError>;
    fn put_job_on_node(&self, job: &str, v: &JobOnNode) -> Result<(), StoreError>;

    /// Adds tasks to a job, all or none; fails on an id already used (case-insensitive).
    fn add_tasks(&self, tasks: &[TaskView]) -> Result<Vec<i64>, StoreError>;
    fn put_task(&self, task: &TaskView) -> Result<(), StoreError>;
    fn task(&self, job: &str, id: &str) -> Result<Option<StoredTask>, StoreError>;
    /// A job's tasks in queue order, optionally only those in `state`.
    fn tasks(&self, job: &str, state: Option<TaskState>) -> Result<Vec<StoredTask>, StoreError>;
    /// Every task in these states, across jobs, in queue order.
    fn tasks_in(&self, states: &[TaskState]) -> Result<Vec<StoredTask>, StoreError>;
    fn delete_task(&self, job: &str, id: &str) -> Result<(), StoreError>;
    /// Up to `limit` active tasks queued after `after` (a `seq`), in queue order, only
    /// what the scheduler decides on; of the jobs in `jobs` (lower-case ids) when given.
    /// Paged so that a pass that fills the slots early reads a few rows, not every
    /// queued task.
    fn active_queue(
        &self,
        after: i64,
        limit: usize,
        jobs: Option<&[String]>,
    ) -> Result<Vec<QueueHead>, StoreError>;
    /// How many tasks are in each state (states with none are left out).
    fn count_by_state(&self) -> Result<Vec<(String, u64)>, StoreError>;
}
