//! A job's preparation and release tasks (spec §2.9). Preparation runs on this node before
//! the first task of the job that lands here (`gate` says when); release runs when the job
//! ends, if preparation ran here. Both run like any task (host or container, retries for
//! preparation, a 15-minute cap for release) but take no task slot and are not counted as
//! tasks.

use crate::store::JobOnNode;
use crate::task::{self, plan, NodeContext};
use berth_proto::{
    ExecutionInfo, FailureCode, JobSpec, JobTaskExecutionInfo, StartTaskInfo, TaskResult,
};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Preparation,
    Release,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Preparation => "job preparation task",
            Which::Release => "job release task",
        }
    }
}

/// What a task of a job may do about the job's preparation task on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Nothing to wait for (no preparation task, it succeeded, or the job does not wait).
    Go,
    /// Preparation must run (again) first.
    Prepare,
    /// Preparation is running and the job waits for its success.
    Wait,
    /// Preparation failed and the job waits for success: the job's tasks do not run on this
    /// node (`JobPreparationTaskFailed`); they stay `active`, as in Batch.
    Blocked,
}

/// Pure: the gate for `job` given what this node recorded and the current boot.
/// A preparation that succeeded in an earlier boot runs again when
/// `rerunOnNodeRebootAfterSuccess` (default true); one that failed is not retried.
pub fn gate(job: &JobSpec, rec: Option<&JobOnNode>, boot_id: &str) -> Gate {
    let Some(p) = &job.job_preparation_task else {
        return Gate::Go;
    };
    let Some(info) = rec.and_then(|r| r.preparation.as_ref()) else {
        return Gate::Prepare;
    };
    let waits = p.wait_for_success();
    match (info.run.state, info.run.result) {
        (berth_proto::node::StartTaskState::Running, _) if waits => Gate::Wait,
        (berth_proto::node::StartTaskState::Running, _) => Gate::Go,
        (_, Some(TaskResult::Success)) => {
            let rebooted = rec.and_then(|r| r.boot_id.as_deref()) != Some(boot_id);
            if rebooted && p.rerun_on_node_reboot_after_success() {
                Gate::Prepare
            } else {
                Gate::Go
            }
        }
        _ if waits => Gate::Blocked,
        _ => Gate::Go,
    }
}

/// Whether the job's release task still has to run here: the job has one, preparation ran
/// here, and release has not run yet (it is not rerun on delete after a terminate).
pub fn release_pending(job: &JobSpec, rec: Option<&JobOnNode>) -> bool {
    job.job_release_task.is_some()
        && rec.is_some_and(|r| r.preparation.is_some() && r.release.is_none())
}

/// This boot's id; a reboot changes it.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The record of a job task that has just started.
pub fn started(rt: &NodeContext, job: &JobSpec, which: Which) -> JobTaskExecutionInfo {
    JobTaskExecutionInfo {
        run: StartTaskInfo::running(chrono::Utc::now()),
        task_root_directory: dir(rt, job, which),
    }
}

/// The record of a job task that has ended.
pub fn ended(
    rt: &NodeContext,
    job: &JobSpec,
    which: Which,
    info: &ExecutionInfo,
) -> JobTaskExecutionInfo {
    JobTaskExecutionInfo {
        run: StartTaskInfo::completed(info),
        task_root_directory: dir(rt, job, which),
    }
}

fn dir(rt: &NodeContext, job: &JobSpec, which: Which) -> String {
    let id = match which {
        Which::Preparation => job.job_preparation_task.as_ref().map(|t| t.id()),
        Which::Release => job.job_release_task.as_ref().map(|t| t.id()),
    };
    rt.node
        .layout
        .task_dir(&job.id, id.unwrap_or_default())
        .to_string_lossy()
        .into_owned()
}

/// Runs the job's preparation or release task to its end. Like the start task it sees
/// every GPU and holds none.
pub async fn run(
    rt: Arc<NodeContext>,
    job: &JobSpec,
    which: Which,
    cancel: &CancellationToken,
) -> ExecutionInfo {
    use tracing::Instrument;
    let span = match which {
        Which::Preparation => tracing::info_span!("jobpreparation", job = %job.id),
        Which::Release => tracing::info_span!("jobrelease", job = %job.id),
    };
    async move {
        let no_task = || {
            task::failed_before_start(
                FailureCode::Unknown,
                format!("the job has no {}", which.name()),
            )
        };
        let node = &rt.node;
        let (identity, planned): (_, task::launch::Planner<'_>) = match which {
            Which::Preparation => match &job.job_preparation_task {
                Some(t) => (
                    t.user_identity.clone(),
                    Box::new(move |user| plan::job_preparation(t, job, node, user)),
                ),
                None => return no_task(),
            },
            Which::Release => match &job.job_release_task {
                Some(t) => (
                    t.user_identity.clone(),
                    Box::new(move |user| plan::job_release(t, job, node, user)),
                ),
                None => return no_task(),
            },
        };
        let launch = task::launch::Launch {
            what: which.name(),
            identity,
            plan: planned,
            gpus: rt.gpus.inventory.gpus.clone(),
            // Kept between runs, as the start task's: a rerun after a reboot finds its files.
            fresh: false,
            resume: None,
            on_retry: &|_| {},
        };
        task::launch::launch(&rt, launch, cancel).await
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::JobPreparationTask;

    fn job(wait: Option<bool>, rerun: Option<bool>) -> JobSpec {
        JobSpec {
            id: "j".into(),
            job_preparation_task: Some(JobPreparationTask {
                command_line: "true".into(),
                wait_for_success: wait,
                rerun_on_node_reboot_after_success: rerun,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn rec(state: &str, result: Option<TaskResult>, boot: &str) -> JobOnNode {
        let mut run = StartTaskInfo::running(chrono::Utc::now());
        if state == "completed" {
            run.state = berth_proto::node::StartTaskState::Completed;
            run.result = result;
        }
        JobOnNode {
            preparation: Some(JobTaskExecutionInfo {
                run,
                task_root_directory: "/x".into(),
            }),
            release: None,
            boot_id: Some(boot.into()),
        }
    }

    #[test]
    fn gates() {
        use Gate::*;
        let ok = Some(TaskResult::Success);
        let bad = Some(TaskResult::Failure);
        let none = JobSpec::default_for_run();
        let cases: &[(&JobSpec, Option<JobOnNode>, Gate)] = &[
            (&none, None, Go),
            (&job(None, None), None, Prepare),
            (&job(None, None), Some(rec("running", None, "b1")), Wait),
            (
                &job(Some(false), None),
                Some(rec("running", None, "b1")),
                Go,
            ),
            (&job(None, None), Some(rec("completed", ok, "b1")), Go),
            (&job(None, None), Some(rec("completed", ok, "b0")), Prepare),
            (
                &job(None, Some(false)),
                Some(rec("completed", ok, "b0")),
                Go,
            ),
            (&job(None, None), Some(rec("completed", bad, "b1")), Blocked),
            (&job(None, None), Some(rec("completed", bad, "b0")), Blocked),
            (
                &job(Some(false), None),
                Some(rec("completed", bad, "b1")),
                Go,
            ),
        ];
        for (i, (j, r, want)) in cases.iter().enumerate() {
            assert_eq!(gate(j, r.as_ref(), "b1"), *want, "case {i}");
        }
    }

    #[test]
    fn release_runs_once_and_only_after_preparation() {
        let mut j = job(None, None);
        j.job_release_task = Some(Default::default());
        assert!(!release_pending(&j, None));
        let mut r = rec("completed", Some(TaskResult::Failure), "b1");
        assert!(
            release_pending(&j, Some(&r)),
            "even after a failed preparation"
        );
        r.release = r.preparation.clone();
        assert!(!release_pending(&j, Some(&r)));
        assert!(!release_pending(
            &job(None, None),
            Some(&rec("completed", None, "b"))
        ));
    }
}
