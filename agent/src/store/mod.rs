//! Durable state of the daemon, behind one narrow interface (a later issue adds PostgreSQL
//! for pool-wide mode). Callers write before they act: a task is `running` in the store
//! before its container starts, so a restarted agent knows what it may have left behind.

pub mod sqlite;

use berth_proto::job_schedule::{JobScheduleExecutionInfo, RecentJob};
use berth_proto::{
    JobScheduleSpec, JobScheduleState, JobScheduleView, JobTaskExecutionInfo, JobView, TaskState,
    TaskView,
};
use chrono::{DateTime, Utc};

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

/// A job schedule and what its timer has done: the Batch object is [`StoredSchedule::view`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSchedule {
    pub spec: JobScheduleSpec,
    pub state: JobScheduleState,
    pub state_transition_time: DateTime<Utc>,
    pub creation_time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
    /// When the next run is due (one not yet created or skipped); `None`: no run left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_due: Option<DateTime<Utc>>,
    /// The due time of the last run created or skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_due: Option<DateTime<Utc>>,
    /// Jobs created so far: the next is `{id}:job-{created + 1}`.
    #[serde(default)]
    pub created: u64,
    /// Runs that could not be created in time (start window passed, next run due).
    #[serde(default)]
    pub skipped: u64,
    /// The last job created (it may have been deleted since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_job: Option<String>,
    /// When an update (PATCH, PUT) last changed it (part of its `Last-Modified`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<DateTime<Utc>>,
}

impl StoredSchedule {
    /// A schedule added at `now`, active, its first run due at `first_due`.
    pub fn new(spec: JobScheduleSpec, now: DateTime<Utc>, first_due: DateTime<Utc>) -> Self {
        StoredSchedule {
            spec,
            state: JobScheduleState::Active,
            state_transition_time: now,
            creation_time: now,
            end_time: None,
            next_due: Some(first_due),
            last_due: None,
            created: 0,
            skipped: 0,
            recent_job: None,
            last_modified: None,
        }
    }

    /// Moves to `state` at `now` (a completed schedule gets its `endTime`).
    pub fn set_state(&mut self, state: JobScheduleState, now: DateTime<Utc>) {
        self.state = state;
        self.state_transition_time = now;
        if state == JobScheduleState::Completed {
            self.end_time = Some(now);
        }
    }

    /// The schedule as Batch reports it: `nextRunTime` only while active and a run is
    /// left before `doNotRunAfter`, `endTime` only once completed.
    pub fn view(&self) -> JobScheduleView {
        let before_deadline = |t: &DateTime<Utc>| {
            self.spec
                .schedule
                .do_not_run_after
                .is_none_or(|after| *t < after)
        };
        JobScheduleView {
            spec: self.spec.clone(),
            state: self.state,
            state_transition_time: self.state_transition_time,
            creation_time: self.creation_time,
            last_modified: self.last_modified,
            execution_info: JobScheduleExecutionInfo {
                next_run_time: self
                    .next_due
                    .filter(|_| self.state == JobScheduleState::Active)
                    .filter(before_deadline),
                recent_job: self.recent_job.as_deref().map(RecentJob::new),
                end_time: self
                    .end_time
                    .filter(|_| self.state == JobScheduleState::Completed),
            },
        }
    }
}

pub trait Store: Send + Sync {
    /// Adds a job; fails with `Exists` on an id a job or a job schedule already has (a
    /// schedule's jobs live in `workitems/<schedule>`, where a job of that id would too).
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
    /// Up to `limit` of a job's tasks queued after `after` (a `seq`), in queue order,
    /// only those in `state` when given: one slice of a task list, read without the rest.
    fn tasks_after(
        &self,
        job: &str,
        state: Option<TaskState>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredTask>, StoreError>;
    /// Every task in these states, across jobs, in queue order.
    fn tasks_in(&self, states: &[TaskState]) -> Result<Vec<StoredTask>, StoreError>;
    /// Up to `limit` completed tasks, across jobs, the latest completed first (by
    /// `stateTransitionTime`): the node's recent tasks.
    fn recently_completed(&self, limit: usize) -> Result<Vec<StoredTask>, StoreError>;
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

    /// Adds a job schedule; fails with `Exists` on an id a schedule or a job already has.
    fn add_schedule(&self, s: &StoredSchedule) -> Result<(), StoreError>;
    fn put_schedule(&self, s: &StoredSchedule) -> Result<(), StoreError>;
    fn schedule(&self, id: &str) -> Result<Option<StoredSchedule>, StoreError>;
    /// Every job schedule, in the order they were added.
    fn schedules(&self) -> Result<Vec<StoredSchedule>, StoreError>;
    /// Deletes the schedule alone (its jobs are deleted as jobs first).
    fn delete_schedule(&self, id: &str) -> Result<(), StoreError>;
    /// A schedule's run: adds the job it creates and writes the schedule (which counts
    /// the run), in one transaction, so that a crash can neither create a run's job twice
    /// nor lose it. `Exists` if the job's id is taken; nothing is written then.
    fn add_schedule_job(
        &self,
        s: &StoredSchedule,
        job: &JobView,
        tasks: &[TaskView],
    ) -> Result<(), StoreError>;
}
