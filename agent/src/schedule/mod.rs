//! WHEN tasks run: FIFO within the job, as task slots free up (`taskSlotsPerNode`,
//! `requiredSlots`), after their dependencies (`dependsOn`) succeeded. `task` decides HOW.
//! `berth run` uses this; the daemon will feed the same scheduler.

pub mod job_tasks;
#[cfg(test)]
mod on_fake;
pub mod queue;

use crate::gpu::{self, Reservation};
use crate::task::{self, plan, NodeContext};
use berth_proto::{ExecutionInfo, FailureCode, JobSpec, TaskResult, TaskSpec, TaskState, TaskView};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::JoinSet;
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

/// Reserves the task's GPUs (`BERTH_GPUS` from the task, else the job; else the node's
/// default share).
pub(crate) fn gpu_gate(rt: &NodeContext, job: &JobSpec, spec: &TaskSpec) -> GpuGate {
    let request = spec
        .environment_settings
        .iter()
        .chain(job.common_environment_settings.iter())
        .find(|e| e.name == gpu::assign::REQUEST_ENV)
        .map(|e| e.value.clone().unwrap_or_default());
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
pub(crate) async fn run_one(
    rt: Arc<NodeContext>,
    job: JobSpec,
    spec: TaskSpec,
    gpus: Reservation,
    cancel: CancellationToken,
    resume: Option<task::Resume>,
    on_retry: &(dyn Fn(i32) + Sync),
) -> ExecutionInfo {
    use tracing::Instrument;
    let span = tracing::info_span!("task", job = %job.id, task = %spec.id);
    async move {
        if plan::needs_container_settings(&spec, &rt.pool) {
            return task::failed_before_start(
                FailureCode::ContainerTaskSettingsNotFound,
                "the pool runs containers and the task has no containerSettings".into(),
            );
        }
        let launch = task::launch::Launch {
            what: "task",
            identity: spec.user_identity.clone(),
            plan: Box::new(|user| plan::task(&spec, &job, &rt.node, user)),
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

/// Runs the tasks of `job`: its preparation task first (before the first task; with
/// `waitForSuccess`, a failure leaves every task `active`, not started), then the tasks,
/// then its release task. Tasks whose dependencies failed stay `active` (as in Batch)
/// with a note saying why.
pub async fn run_job(
    rt: Arc<NodeContext>,
    job: &JobSpec,
    tasks: Vec<TaskSpec>,
    cancel: CancellationToken,
) -> JobReport {
    use job_tasks::Which;
    let mut reports: Vec<TaskReport> = tasks
        .iter()
        .map(|t| TaskReport::active(&rt, job, t.clone(), None))
        .collect();
    let mut preparation = None;
    let mut prep_beside = None;
    let mut prep_failed = false;
    if let Some(p) = &job.job_preparation_task {
        if !tasks.is_empty() && !cancel.is_cancelled() {
            if p.wait_for_success() {
                let info = job_tasks::run(rt.clone(), job, Which::Preparation, &cancel).await;
                prep_failed = info.result != Some(TaskResult::Success);
                preparation = Some(info);
            } else {
                let (rt, job, cancel) = (rt.clone(), job.clone(), cancel.clone());
                let tracker = rt.tasks.clone();
                prep_beside = Some(tokio::spawn(tracker.track_future(async move {
                    job_tasks::run(rt, &job, Which::Preparation, &cancel).await
                })));
            }
        }
    }
    let prep_ran = job.job_preparation_task.is_some() && !tasks.is_empty();
    let index: HashMap<String, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.to_ascii_lowercase(), i))
        .collect();
    let deps: Vec<Vec<usize>> = tasks
        .iter()
        .map(|t| {
            t.depends_on
                .as_ref()
                .map(|d| {
                    d.all_ids()
                        .iter()
                        .filter_map(|id| index.get(&id.to_ascii_lowercase()).copied())
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let total_slots = rt.pool.task_slots();
    let mut free = total_slots;
    let mut pending: Vec<usize> = if prep_failed {
        for r in &mut reports {
            r.note = Some(
                "not started: the job preparation task failed (JobPreparationTaskFailed)".into(),
            );
        }
        vec![]
    } else {
        (0..tasks.len()).collect()
    };
    let mut running: JoinSet<(usize, ExecutionInfo)> = JoinSet::new();

    loop {
        if !cancel.is_cancelled() {
            let mut i = 0;
            while i < pending.len() {
                let idx = pending[i];
                let done_ok = |d: &usize| {
                    reports[*d].view.state == TaskState::Completed
                        && reports[*d]
                            .view
                            .execution_info
                            .as_ref()
                            .and_then(|e| e.result)
                            == Some(TaskResult::Success)
                };
                let blocked_by = deps[idx]
                    .iter()
                    .find(|d| reports[**d].view.state == TaskState::Completed && !done_ok(d))
                    .copied();
                if let Some(d) = blocked_by {
                    reports[idx].note =
                        Some(format!("blocked: dependency {:?} failed", tasks[d].id));
                    pending.remove(i);
                    continue;
                }
                let slots = tasks[idx].required_slots();
                if deps[idx].iter().all(done_ok) && slots <= free {
                    let gpus = match gpu_gate(&rt, job, &tasks[idx]) {
                        GpuGate::Go(r) => r,
                        GpuGate::Wait => {
                            i += 1;
                            continue;
                        }
                        GpuGate::Refuse(info) => {
                            pending.remove(i);
                            let r = &mut reports[idx].view;
                            r.state = TaskState::Completed;
                            r.state_transition_time = Utc::now();
                            r.execution_info = Some(*info);
                            continue;
                        }
                    };
                    free -= slots;
                    pending.remove(i);
                    let r = &mut reports[idx].view;
                    r.state = TaskState::Running;
                    r.state_transition_time = Utc::now();
                    running.spawn(rt.tasks.track_future({
                        let (rt, job, spec, cancel) =
                            (rt.clone(), job.clone(), tasks[idx].clone(), cancel.clone());
                        async move {
                            let info =
                                run_one(rt.clone(), job, spec, gpus.clone(), cancel, None, &|_| {})
                                    .await;
                            rt.gpus.release(&gpus);
                            (idx, info)
                        }
                    }));
                    continue;
                }
                i += 1;
            }
        }
        rt.status.set_busy(!running.is_empty());
        let Some(joined) = running.join_next().await else {
            break;
        };
        match joined {
            Ok((idx, info)) => {
                free += tasks[idx].required_slots();
                let r = &mut reports[idx].view;
                r.state = TaskState::Completed;
                r.state_transition_time = Utc::now();
                r.execution_info = Some(info);
            }
            Err(e) => tracing::error!(error = %e, "a task runner panicked"),
        }
    }
    rt.status.set_busy(false);
    if let Some(h) = prep_beside {
        match h.await {
            Ok(info) => preparation = Some(info),
            Err(e) => tracing::error!(error = %e, "the job preparation task's runner failed"),
        }
    }
    let mut release = None;
    if prep_ran && job.job_release_task.is_some() {
        if cancel.is_cancelled() {
            tracing::warn!("berth was stopped: the job release task is not run");
        } else {
            release = Some(job_tasks::run(rt.clone(), job, Which::Release, &cancel).await);
        }
    }
    for idx in pending {
        if reports[idx].note.is_none() {
            reports[idx].note = Some(if cancel.is_cancelled() {
                "not started: berth was stopped".into()
            } else {
                "not started".into()
            });
        }
    }
    JobReport {
        tasks: reports,
        preparation,
        release,
    }
}
