//! Job schedules (`JobScheduleAddParameter`, and `CloudJobSchedule` as berth reports it):
//! when a schedule creates jobs (`schedule`), and what each job is (`jobSpecification`).
//! The jobs a schedule creates are named `{schedule}:job-{N}`, N from 1: the one place a
//! job id holds a `:` (Batch reserves it for them; a job added by id cannot have one).

use crate::common::{batch_enum, EnvironmentSetting};
use crate::duration::IsoDuration;
use crate::job::{
    JobConstraints, JobPreparationTask, JobReleaseTask, JobSpec, OnAllTasksComplete, OnTaskFailure,
};
use crate::pool::PoolSpec;
use crate::status::NameValuePair;
use crate::validate::Problem;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Batch's shortest `recurrenceInterval` and `startWindow`.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);

/// Batch's `terminateReason` for a job whose schedule was terminated.
pub const TERMINATE_JOB_SCHEDULE: &str = "TerminateJobSchedule";

/// `schedule`: when jobs are created. All absent: one job, now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// The first job is due then (absent: at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_not_run_until: Option<DateTime<Utc>>,
    /// No job is created after it; the schedule then completes once its job has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_not_run_after: Option<DateTime<Utc>>,
    /// How long after its due time a job may still be created (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_window: Option<IsoDuration>,
    /// The time between two jobs' due times (absent: one job only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence_interval: Option<IsoDuration>,
}

impl Schedule {
    /// `startWindow`; `None`: no limit (absent or Batch's unlimited value).
    pub fn start_window(&self) -> Option<Duration> {
        self.start_window.and_then(|d| d.limit())
    }

    /// `recurrenceInterval`; `None`: the schedule does not recur (an unlimited interval
    /// never comes round either).
    pub fn recurrence(&self) -> Option<Duration> {
        self.recurrence_interval.and_then(|d| d.limit())
    }
}

/// `jobSpecification`: a job without its id, which each run gets from the schedule. The
/// same fields as [`JobSpec`]; [`JobSpecification::job`] lists them all, so a field added
/// to `JobSpec` fails to compile there until it is added here too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpecification {
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
    pub max_parallel_tasks: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_info: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_all_tasks_complete: Option<OnAllTasksComplete>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_task_failure: Option<OnTaskFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_preparation_task: Option<JobPreparationTask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_release_task: Option<JobReleaseTask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_manager_task: Option<crate::job::JobManagerTask>,
}

impl JobSpecification {
    /// The job named `id` this specification describes.
    pub fn job(&self, id: String) -> JobSpec {
        let s = self.clone();
        JobSpec {
            id,
            display_name: s.display_name,
            common_environment_settings: s.common_environment_settings,
            uses_task_dependencies: s.uses_task_dependencies,
            constraints: s.constraints,
            priority: s.priority,
            max_parallel_tasks: s.max_parallel_tasks,
            pool_info: s.pool_info,
            on_all_tasks_complete: s.on_all_tasks_complete,
            on_task_failure: s.on_task_failure,
            job_preparation_task: s.job_preparation_task,
            job_release_task: s.job_release_task,
            job_manager_task: s.job_manager_task,
        }
    }
}

/// `JobScheduleAddParameter`: what a client sends to add a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobScheduleSpec {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub schedule: Schedule,
    pub job_specification: JobSpecification,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata: Vec<NameValuePair>,
}

/// `JobSchedulePatchParameter` and `JobScheduleUpdateParameter`: PATCH changes what it
/// gives; PUT must give `schedule` and `jobSpecification`, and clears `metadata` it leaves
/// out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobScheduleUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_specification: Option<JobSpecification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Vec<NameValuePair>>,
}

impl JobScheduleUpdate {
    /// The properties an update may give.
    pub const FIELDS: &'static [&'static str] = &["schedule", "jobSpecification", "metadata"];
}

batch_enum!(
    /// `JobScheduleState`.
    JobScheduleState {
        Active => "active",
        Completed => "completed",
        Disabled => "disabled",
        Terminating => "terminating",
        Deleting => "deleting",
    }
);

/// `recentJob`: the last job the schedule created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentJob {
    pub id: String,
    /// The job's path in this API (`/jobs/{id}`): a node has no account URL.
    pub url: String,
}

impl RecentJob {
    pub fn new(id: &str) -> RecentJob {
        RecentJob {
            id: id.to_string(),
            url: format!("/jobs/{id}"),
        }
    }
}

/// `JobScheduleExecutionInformation`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobScheduleExecutionInfo {
    /// When the next job is due; only while the schedule is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<DateTime<Utc>>,
    /// Absent until the schedule has created a job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_job: Option<RecentJob>,
    /// When the schedule completed; only once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
}

/// A job schedule as berth reports it (`CloudJobSchedule`, the fields a node knows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobScheduleView {
    #[serde(flatten)]
    pub spec: JobScheduleSpec,
    pub state: JobScheduleState,
    pub state_transition_time: DateTime<Utc>,
    pub creation_time: DateTime<Utc>,
    /// When an update last changed it; absent when never updated (its `Last-Modified` is
    /// the latest of this and its other times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<DateTime<Utc>>,
    pub execution_info: JobScheduleExecutionInfo,
}

/// The id of the `n`th job (from 1) of schedule `schedule`.
pub fn job_id(schedule: &str, n: u64) -> String {
    format!("{schedule}:job-{n}")
}

/// A schedule's job id split into the schedule's id and the job's name (`job-N`); `None`
/// for a job added by id.
pub fn split_job_id(id: &str) -> Option<(&str, &str)> {
    id.split_once(':')
}

/// Whether job `job` belongs to schedule `schedule` (ids compared as Batch does, without
/// regard to case).
pub fn is_job_of(job: &str, schedule: &str) -> bool {
    split_job_id(job).is_some_and(|(s, _)| s.eq_ignore_ascii_case(schedule))
}

/// Checks `schedule` alone (paths under `$.schedule`).
pub fn validate_schedule(s: &Schedule) -> Vec<Problem> {
    let mut p = vec![];
    for (name, d) in [
        ("recurrenceInterval", s.recurrence_interval),
        ("startWindow", s.start_window),
    ] {
        if let Some(d) = d.and_then(|d| d.limit()).filter(|d| *d < MIN_INTERVAL) {
            p.push(Problem {
                path: format!("$.schedule.{name}"),
                message: format!(
                    "{} is shorter than the minimum, PT1M",
                    IsoDuration(Some(d)).to_iso()
                ),
            });
        }
    }
    p
}

/// Checks `jobSpecification` against the pool its jobs run on, with the rules of a job
/// (paths under `$.jobSpecification`).
pub fn validate_job_specification(j: &JobSpecification, pool: &PoolSpec) -> Vec<Problem> {
    crate::validate::job_fields(&j.job(String::new()), pool)
        .into_iter()
        .map(|p| Problem {
            path: format!(
                "$.jobSpecification{}",
                p.path.strip_prefix('$').unwrap_or(&p.path)
            ),
            message: p.message,
        })
        .collect()
}

/// Checks a schedule to add: its id (Batch's rules), `schedule` and `jobSpecification`.
pub fn validate(s: &JobScheduleSpec, pool: &PoolSpec) -> Vec<Problem> {
    let mut p = vec![];
    if let Err(message) = crate::id::check_id(&s.id) {
        p.push(Problem {
            path: "$.id".into(),
            message,
        });
    }
    p.extend(validate_schedule(&s.schedule));
    p.extend(validate_job_specification(&s.job_specification, pool));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> JobScheduleSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn batch_json_in_and_out() {
        let s = spec(serde_json::json!({
            "id": "nightly",
            "schedule": {"doNotRunUntil": "2030-01-01T00:00:00Z", "recurrenceInterval": "PT1H",
                         "startWindow": "PT5M"},
            "jobSpecification": {"priority": 10, "onAllTasksComplete": "terminatejob",
                                 "poolInfo": {"poolId": "p"}},
            "metadata": [{"name": "k", "value": "v"}]
        }));
        assert_eq!(s.schedule.recurrence(), Some(Duration::from_secs(3600)));
        assert_eq!(s.schedule.start_window(), Some(Duration::from_secs(300)));
        let job = s.job_specification.job(job_id(&s.id, 3));
        assert_eq!(job.id, "nightly:job-3");
        assert_eq!(job.priority, Some(10));
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["schedule"]["recurrenceInterval"], "PT1H");
        assert!(back["jobSpecification"].get("id").is_none());
        assert_eq!(spec(back), s);
        // No schedule fields: one job at once; an unlimited interval never recurs.
        let once = spec(serde_json::json!({"id": "o", "schedule": {}, "jobSpecification": {}}));
        assert_eq!(once.schedule.recurrence(), None);
        assert_eq!(once.schedule.start_window(), None);
        let never: Schedule =
            serde_json::from_value(serde_json::json!({"recurrenceInterval": "-1"})).unwrap();
        assert_eq!(never.recurrence(), None);
    }

    #[test]
    fn every_job_field_reaches_the_job() {
        let full = serde_json::json!({
            "displayName": "d", "commonEnvironmentSettings": [{"name": "A", "value": "1"}],
            "usesTaskDependencies": true, "constraints": {"maxTaskRetryCount": 2},
            "priority": 5, "maxParallelTasks": 3, "poolInfo": {"poolId": "p"},
            "onAllTasksComplete": "terminatejob", "onTaskFailure": "performexitoptionsjobaction",
            "jobPreparationTask": {"commandLine": "p"}, "jobReleaseTask": {"commandLine": "r"},
            "jobManagerTask": {"id": "m", "commandLine": "m"}
        });
        let j: JobSpecification = serde_json::from_value(full.clone()).unwrap();
        let mut want = full;
        want["id"] = "s:job-1".into();
        let job: JobSpec = serde_json::from_value(want).unwrap();
        assert_eq!(j.job("s:job-1".into()), job);
    }

    #[test]
    fn job_ids_of_a_schedule() {
        assert_eq!(job_id("s", 12), "s:job-12");
        assert_eq!(split_job_id("s:job-12"), Some(("s", "job-12")));
        assert_eq!(split_job_id("plain"), None);
        assert!(is_job_of("S:job-1", "s"));
        assert!(!is_job_of("s2:job-1", "s"));
        assert!(!is_job_of("s", "s"));
    }

    #[test]
    fn validation_names_the_field() {
        let pool = PoolSpec::default_for_run();
        let bad = spec(serde_json::json!({
            "id": "a:b",
            "schedule": {"recurrenceInterval": "PT30S", "startWindow": "PT59S"},
            "jobSpecification": {"priority": 5000, "commonEnvironmentSettings": [{"name": "", "value": "x"}]}
        }));
        let paths: Vec<String> = validate(&bad, &pool).into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            vec![
                "$.id",
                "$.schedule.recurrenceInterval",
                "$.schedule.startWindow",
                "$.jobSpecification.commonEnvironmentSettings[0].name",
                "$.jobSpecification.priority",
            ]
        );
        let p = validate_schedule(&bad.schedule);
        assert_eq!(p[0].message, "PT30S is shorter than the minimum, PT1M");
        let good = spec(serde_json::json!({
            "id": "ok", "schedule": {"recurrenceInterval": "PT1M", "startWindow": "-1"},
            "jobSpecification": {}
        }));
        assert!(validate(&good, &pool).is_empty());
    }
}
