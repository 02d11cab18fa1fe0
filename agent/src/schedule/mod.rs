//! WHEN tasks run: FIFO within the job, as task slots free up (`taskSlotsPerNode`,
//! `requiredSlots`), after their dependencies (`dependsOn`) succeeded. `task` decides HOW.
//! `berth run` uses this; the daemon will feed the same scheduler.

pub mod job_tasks;
#[cfg(test)]
mod on_fake;
pub mod pending;
pub mod queue;

use crate::gpu::{self, Reservation};
use crate::task::{self, plan, NodeContext};
use berth_proto::{ExecutionInfo, FailureCode, JobSpec, TaskResult, TaskSpec, TaskState, TaskView};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A task's final view plus, when it never ran, why.
#[derive(Debug, Clone)]
pub struct TaskReport {
    pub view: TaskView,
    pub note: Option<String>,
}

impl TaskReport {
    /// A task that is queued (`active`) and has not run.
    pub fn active(rt: &NodeContext, job: &JobSpec, spec: TaskSpec, note: Option<String>) -> Self {
        let now = Utc::now();
        let task_root_directory = rt
            .node
            .layout
            .task_dir(&job.id, &spec.id)
            .to_string_lossy()
            .into_owned();
        TaskReport {
            view: TaskView {
                spec,
                job_id: job.id.clone(),
                state: TaskState::Active,
                state_transition_time: now,
                creation_time: now,
                execution_info: None,
                node_info: Some(berth_proto::status::NodeInfo {
                    pool_id: rt.node.pool_id.clone(),
                    node_id: rt.node.node_id.clone(),
                    task_root_directory,
                }),
                pool_attempt: None,
            },
            note,
        }
    }
}

/// Whether a task whose slots are free may start: its GPUs, if it needs any, must be free.
pub(crate) enum GpuGate {
    Go(Reservation),
    Wait,
    /// The task can never get what it asks for; it ends with this.
    Refuse(Box<ExecutionInfo>),
}

/// The task's `BERTH_GPUS` (from the task, else the job), if set.
pub(crate) fn gpu_request(job: &JobSpec, spec: &TaskSpec) -> Option<String> {
    spec.environment_settings
        .iter()
        .chain(job.common_environment_settings.iter())
        .find(|e| e.name == gpu::assign::REQUEST_ENV)
        .map(|e| e.value.clone().unwrap_or_default())
}

/// Reserves the task's GPUs (`BERTH_GPUS` from the task, else the job; else the node's
/// default share).
pub(crate) fn gpu_gate(rt: &NodeContext, job: &JobSpec, spec: &TaskSpec) -> GpuGate {
    let request = gpu_request(job, spec);
    match rt.gpus.reserve(
        request.as_deref(),
        spec.required_slots(),
        rt.pool.task_slots(),
    ) {
        Ok(Some(r)) => GpuGate::Go(r),
        Ok(None) => GpuGate::Wait,
        Err(msg) => GpuGate::Refuse(Box::new(task::failed_before_start(
            FailureCode::GpuRequestInvalid,
            msg,
        ))),
    }
}

/// Runs one task from spec to final execution info: user, plan, directories, attempts.
/// A pool task's `poolAttempt` labels its containers.
pub(crate) async fn run_one(
    rt: Arc<NodeContext>,
    view: berth_proto::JobView,
    task: &TaskView,
    gpus: Reservation,
    cancel: CancellationToken,
    resume: Option<task::Resume>,
    on_retry: &(dyn Fn(i32) + Sync),
) -> ExecutionInfo {
    use tracing::Instrument;
    let (spec, pool_attempt) = (task.spec.clone(), task.pool_attempt);
    let (job, job_created) = (view.spec, view.creation_time);
    let span = tracing::info_span!("task", job = %job.id, task = %spec.id);
    async move {
        // A token good for this job's operations, and where to use it.
        let token_env = match (spec.wants_job_token(), rt.job_tokens.get()) {
            (false, _) => vec![],
            (true, Some(issuer)) => issuer
                .env(&job.id, job_created)
                .into_iter()
                .map(|(k, v)| (k, v.expose().to_string()))
                .collect(),
            (true, None) => {
                return task::failed_before_start(
                    FailureCode::ContainerInvalidSettings,
                    "authenticationTokenSettings asks for a job token, and this agent serves no TCP API to use it at (set tcp_address and token_file)".into(),
                )
            }
        };
        if plan::needs_container_settings(&spec, &rt.pool) {
            return task::failed_before_start(
                FailureCode::ContainerTaskSettingsNotFound,
                "the pool runs containers and the task has no containerSettings".into(),
            );
        }
        let launch = task::launch::Launch {
            what: "task",
            identity: spec.user_identity.clone(),
            plan: Box::new(|user| {
                plan::task(&spec, &job, &rt.node, user).map(|mut p| {
                    p.batch_env.extend(token_env);
                    p.pool_attempt = pool_attempt;
                    p
                })
            }),
            gpus: rt.gpus.devices(&gpus),
            fresh: true,
            // A task taken over after an agent restart keeps its directory and output.
            resume,
            on_retry,
        };
        let began = std::time::Instant::now();
        let info = task::launch::launch(&rt, launch, &cancel).await;
        rt.metrics.task_done(
            info.result == Some(TaskResult::Success),
            began.elapsed().as_secs_f64(),
        );
        info
    }
    .instrument(span)
    .await
}

/// What `run_job` did: the tasks' final reports in input order, and the job's
/// preparation and release tasks when they ran.
#[derive(Debug)]
pub struct JobReport {
    pub tasks: Vec<TaskReport>,
    pub preparation: Option<ExecutionInfo>,
    pub release: Option<ExecutionInfo>,
}

/// Runs the tasks of `job` on the daemon's own scheduler (`queue::Scheduler`), fed from a
/// store of this run alone: its preparation task first (with `waitForSuccess`, a failure
/// leaves every task `active`, not started), then the tasks (slots, FIFO, dependencies,
/// GPUs), then, once the queue has settled, the job ends as a terminate ends it in the
/// daemon and its release task runs. Tasks whose dependencies failed stay `active` (as in
/// Batch) with a note saying why.
pub async fn run_job(
    rt: Arc<NodeContext>,
    job: &JobSpec,
    tasks: Vec<TaskSpec>,
    cancel: CancellationToken,
) -> JobReport {
    use crate::store::Store;
    // The job manager task is created with the job, first in its queue.
    let manager = job
        .job_manager_task
        .as_ref()
        .map(|m| m.task_spec(rt.pool.task_slots()));
    let mut reports: Vec<TaskReport> = manager
        .into_iter()
        .chain(tasks)
        .map(|t| TaskReport::active(&rt, job, t, None))
        .collect();
    // The run's own store, beside the node's state; gone with the run.
    let path = rt
        .node
        .layout
        .volatile()
        .join("berth")
        .join(format!("run-{}.db", std::process::id()));
    let files = |p: &std::path::Path| {
        ["", "-wal", "-shm"].map(|x| std::path::PathBuf::from(format!("{}{x}", p.display())))
    };
    for f in files(&path) {
        std::fs::remove_file(f).ok();
    }
    let view = berth_proto::JobView::new(job.clone());
    let views: Vec<TaskView> = reports.iter().map(|r| r.view.clone()).collect();
    let store = match crate::store::sqlite::SqliteStore::open(&path).and_then(|s| {
        s.add_job(&view)?;
        s.add_tasks(&views)?;
        Ok(s)
    }) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            for r in &mut reports {
                r.note = Some(format!(
                    "not started: the run's store {}: {}",
                    path.display(),
                    crate::error_chain::Chain(&e)
                ));
            }
            return JobReport {
                tasks: reports,
                preparation: None,
                release: None,
            };
        }
    };
    let (sched, queue) = queue::Scheduler::new(rt.clone(), store.clone());
    // `continue`: at the end nothing runs; on Ctrl-C the tasks' own tokens, children of
    // `NodeContext::stopping`, stop them, and the scheduler waits for them.
    let end = cancel.child_token();
    let runner = tokio::spawn(queue.run(end.clone(), crate::config::OnShutdown::Continue));
    tokio::select! {
        _ = sched.settled() => {}
        _ = cancel.cancelled() => {}
    }
    if !cancel.is_cancelled() {
        // The job ends as a terminate ends it in the daemon: its release task runs (when
        // its preparation ran), then it completes. Its blocked tasks stay `active`, as
        // the run reports them. One that ended already (its wall clock, a task's
        // jobAction) is left as it is.
        if let Ok(Some(mut j)) = store.job(&job.id) {
            if j.state == berth_proto::JobState::Active {
                j.state = berth_proto::JobState::Terminating;
                j.state_transition_time = Utc::now();
                if store.put_job(&j).is_ok() {
                    sched.job_ending();
                }
            }
        }
        // Settled again once the release task ran and the job completed.
        tokio::select! {
            _ = sched.settled() => {}
            _ = cancel.cancelled() => {}
        }
    } else {
        tracing::warn!("berth was stopped: the job release task is not run");
    }
    end.cancel();
    if let Err(e) = runner.await {
        tracing::error!(error = %e, "the scheduler failed");
    }
    let stored = store.tasks(&job.id, None).unwrap_or_default();
    let rec = store
        .job_on_node(&job.id)
        .ok()
        .flatten()
        .unwrap_or_default();
    let as_info =
        |t: &Option<berth_proto::JobTaskExecutionInfo>| t.as_ref().map(|t| t.run.execution_info());
    let preparation = as_info(&rec.preparation);
    let prep_failed = job
        .job_preparation_task
        .as_ref()
        .is_some_and(|p| p.wait_for_success())
        && preparation
            .as_ref()
            .is_some_and(|i| i.result != Some(TaskResult::Success));
    let by_id: HashMap<String, TaskView> = stored
        .into_iter()
        .map(|t| (t.view.spec.id.to_ascii_lowercase(), t.view))
        .collect();
    for r in &mut reports {
        if let Some(v) = by_id.get(&r.view.spec.id.to_ascii_lowercase()) {
            r.view = v.clone();
        }
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| {
            r.view.state == TaskState::Completed
                && r.view.execution_info.as_ref().and_then(|e| e.result)
                    != Some(TaskResult::Success)
        })
        .map(|r| r.view.spec.id.as_str())
        .collect();
    let notes: Vec<Option<String>> = reports
        .iter()
        .map(|r| {
            if r.view.state == TaskState::Completed {
                return None;
            }
            let blocked_by = r.view.spec.depends_on.as_ref().and_then(|d| {
                d.all_ids()
                    .into_iter()
                    .find(|id| failed.iter().any(|f| f.eq_ignore_ascii_case(id)))
            });
            Some(if cancel.is_cancelled() {
                "not started: berth was stopped".into()
            } else if prep_failed {
                "not started: the job preparation task failed (JobPreparationTaskFailed)".into()
            } else if let Some(d) = blocked_by {
                format!("blocked: dependency {d:?} failed")
            } else {
                "not started".into()
            })
        })
        .collect();
    for (r, n) in reports.iter_mut().zip(notes) {
        r.note = n;
    }
    drop(store);
    for f in files(&path) {
        std::fs::remove_file(f).ok();
    }
    JobReport {
        tasks: reports,
        preparation,
        release: as_info(&rec.release),
    }
}
