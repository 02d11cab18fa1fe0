//! The daemon's scheduler: the same task path as `berth run` (`run_one`), fed from the
//! store instead of a file. At start it takes over what an earlier agent process left
//! running (`recover`). FIFO by submission order across jobs, as slots free up,
//! after dependencies succeeded. Every state change is written to the store before the
//! scheduler acts on it.

use super::{gpu_gate, run_one, GpuGate};
use crate::config::OnShutdown;
use crate::gpu::Reservation;
use crate::store::{Store, StoredTask};
use crate::task::create::labels;
use crate::task::{self, Runtime};
use berth_proto::{FailureCode, JobSpec, JobState, TaskResult, TaskState, TaskView};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

type Key = (String, String);

fn key(job: &str, task: &str) -> Key {
    (job.to_ascii_lowercase(), task.to_ascii_lowercase())
}

pub struct Scheduler {
    rt: Arc<Runtime>,
    store: Arc<dyn Store>,
    wake: Notify,
    /// Running tasks and the token that stops each.
    running: Mutex<HashMap<Key, CancellationToken>>,
}

impl Scheduler {
    pub fn new(rt: Arc<Runtime>, store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Scheduler {
            rt,
            store,
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
        })
    }

    /// Something changed (a task was added, a slot may be free): look at the queue again.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn running_count(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Stops a running task; false if it was not running here.
    pub fn stop(&self, job: &str, task: &str) -> bool {
        match self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key(job, task))
        {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    /// Whether the dependencies all completed successfully; `None` when one failed (the
    /// task then stays active, blocked, as in Batch). `seen` remembers each dependency's
    /// answer for one scan: many tasks often wait on the same one.
    fn deps_ready(
        &self,
        job: &str,
        deps: Option<&berth_proto::TaskDependencies>,
        seen: &mut HashMap<Key, Option<bool>>,
    ) -> Option<bool> {
        let Some(d) = deps else {
            return Some(true);
        };
        for id in d.all_ids() {
            let answer =
                *seen
                    .entry(key(job, &id))
                    .or_insert_with(|| match self.store.task(job, &id) {
                        Ok(Some(dep)) if dep.view.state == TaskState::Completed => {
                            if dep.view.execution_info.as_ref().and_then(|e| e.result)
                                == Some(TaskResult::Success)
                            {
                                Some(true)
                            } else {
                                None
                            }
                        }
                        _ => Some(false),
                    });
            if answer != Some(true) {
                return answer;
            }
        }
        Some(true)
    }

    /// Marks `t` running in the store, then starts it. False when it did not start (it
    /// waits for GPUs, or its job is no longer active).
    fn launch(self: &Arc<Self>, st: StoredTask, set: &mut JoinSet<(Key, u32)>) -> bool {
        let mut view = st.view;
        let job = match self.store.job(&view.job_id) {
            Ok(Some(j)) if j.state == JobState::Active => j,
            _ => return false,
        };
        let gpus = match gpu_gate(&self.rt, &job.spec, &view.spec) {
            GpuGate::Go(r) => r,
            GpuGate::Wait => return false,
            GpuGate::Refuse(info) => {
                view.state = TaskState::Completed;
                view.state_transition_time = Utc::now();
                view.execution_info = Some(info);
                if let Err(e) = self.store.put_task(&view) {
                    tracing::error!(error = %e, "cannot record the task's end");
                }
                return false;
            }
        };
        view.state = TaskState::Running;
        view.state_transition_time = Utc::now();
        if let Err(e) = self.store.put_task(&view) {
            tracing::error!(job = %view.job_id, task = %view.spec.id, error = %e, "cannot record the task as running; not starting it");
            self.rt.gpus.release(&gpus);
            return false;
        }
        self.spawn(view, job.spec, gpus, None, set);
        true
    }

    /// Runs `view` (already `running` in the store) and records its completion.
    fn spawn(
        self: &Arc<Self>,
        view: TaskView,
        job: JobSpec,
        gpus: Reservation,
        resume: Option<task::Resume>,
        set: &mut JoinSet<(Key, u32)>,
    ) {
        let k = key(&view.job_id, &view.spec.id);
        let token = CancellationToken::new();
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k.clone(), token.clone());
        let slots = view.spec.required_slots();
        let requeues = view
            .execution_info
            .as_ref()
            .map(|e| e.requeue_count)
            .unwrap_or(0);
        let me = self.clone();
        set.spawn(async move {
            let mut info = run_one(
                me.rt.clone(),
                job,
                view.spec.clone(),
                gpus.clone(),
                token,
                resume,
            )
            .await;
            me.rt.gpus.release(&gpus);
            info.requeue_count = requeues;
            // The task may have been deleted meanwhile: then there is nothing to record.
            if let Ok(Some(mut now)) = me.store.task(&view.job_id, &view.spec.id) {
                now.view.state = TaskState::Completed;
                now.view.state_transition_time = Utc::now();
                now.view.execution_info = Some(info);
                if let Err(e) = me.store.put_task(&now.view) {
                    tracing::error!(error = %e, "cannot record the task's completion");
                }
            }
            (k, slots)
        });
    }

    /// What an earlier agent process left. Each task the store has `running` is matched
    /// with its newest container (by labels): one that ran is taken over (followed if
    /// running, collected if it exited meanwhile); a task with no container that never
    /// started goes back to the queue; one whose container is gone after it started ends
    /// failed, because its exit code is lost. No task runs twice. Task containers that
    /// match no running task are removed. Returns the slots the taken-over tasks use.
    async fn recover(self: &Arc<Self>, set: &mut JoinSet<(Key, u32)>) -> u32 {
        let rt = &self.rt;
        let containers = match rt
            .engine
            .list_labelled(&[
                (labels::MANAGED, "true"),
                (labels::NODE, &rt.node.node_id),
                (labels::KIND, "task"),
            ])
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot list this node's containers; tasks left running are not recovered");
                vec![]
            }
        };
        let left = self
            .store
            .tasks_in(&[TaskState::Running, TaskState::Preparing])
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot read the tasks left running");
                vec![]
            });
        let label = |c: &bollard::models::ContainerSummary, k: &str| -> String {
            c.labels
                .as_ref()
                .and_then(|l| l.get(k))
                .cloned()
                .unwrap_or_default()
        };
        let mut used = 0;
        let mut adopted: Vec<String> = vec![];
        for st in left {
            let view = st.view;
            let (job_id, task_id) = (view.job_id.clone(), view.spec.id.clone());
            let newest = containers
                .iter()
                .filter(|c| {
                    label(c, labels::JOB).eq_ignore_ascii_case(&job_id)
                        && label(c, labels::TASK).eq_ignore_ascii_case(&task_id)
                })
                .max_by_key(|c| label(c, labels::ATTEMPT).parse::<u32>().unwrap_or(0));
            let job = self.store.job(&job_id).ok().flatten();
            match (newest, job) {
                (Some(c), Some(job))
                    if c.state.as_ref().map(|s| s.to_string()).as_deref() != Some("created") =>
                {
                    let id = c.id.clone().unwrap_or_default();
                    let started = rt.engine.inspect(&id).await.ok().and_then(|s| s.started_at);
                    let attempt = label(c, labels::ATTEMPT).parse().unwrap_or(0);
                    let uuids = label(c, labels::GPUS);
                    let gpus = rt
                        .gpus
                        .reserve_uuids(uuids.split(',').filter(|u| !u.is_empty()));
                    tracing::info!(job = %job_id, task = %task_id, container = %id, attempt, "taking over a task the earlier agent ran");
                    adopted.push(id.clone());
                    used += view.spec.required_slots();
                    let resume = task::Resume {
                        container_id: id,
                        attempt,
                        started,
                    };
                    self.spawn(view, job.spec, gpus, Some(resume), set);
                }
                (newest, _) => {
                    let ran = newest.is_none()
                        && rt
                            .node
                            .layout
                            .task_dir(&job_id, &task_id)
                            .join(crate::task::logs::STDOUT)
                            .exists();
                    let mut view = view;
                    view.state_transition_time = Utc::now();
                    if ran {
                        tracing::warn!(job = %job_id, task = %task_id, "task's container is gone after the agent restarted; its exit code is lost");
                        let mut info = task::failed_before_start(
                            FailureCode::TaskEnded,
                            "the agent stopped while this task ran and its container was gone when it came back: the exit code is lost; the task is not run again".into(),
                        );
                        if let Some(f) = info.failure_info.as_mut() {
                            f.category = berth_proto::FailureCategory::ServerError;
                        }
                        view.state = TaskState::Completed;
                        view.execution_info = Some(info);
                    } else {
                        tracing::info!(job = %job_id, task = %task_id, "task never started before the agent stopped; queued again");
                        view.state = TaskState::Active;
                    }
                    if let Err(e) = self.store.put_task(&view) {
                        tracing::error!(error = %e, "cannot record the task's state");
                    }
                }
            }
        }
        for c in containers {
            let Some(id) = c.id else { continue };
            if !adopted.contains(&id) {
                tracing::info!(container = %id, names = ?c.names, "removing a container no running task owns");
                if let Err(e) = rt.engine.remove(&id).await {
                    tracing::warn!(container = %id, error = %e, "could not remove it");
                }
            }
        }
        used
    }

    /// Runs until `cancel`; then stops starting tasks and, per `on_shutdown`, stops the
    /// running ones (their containers are removed, the tasks end `TaskEnded`), waits for
    /// them, or leaves them running for the next agent process to take over.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken, on_shutdown: OnShutdown) {
        let total = self.rt.pool.task_slots();
        let mut set: JoinSet<(Key, u32)> = JoinSet::new();
        let mut used = self.recover(&mut set).await;
        loop {
            if !cancel.is_cancelled() && self.rt.status.state().schedulable() {
                match self.store.active_queue() {
                    Ok(queue) => {
                        let mut seen = HashMap::new();
                        for head in queue {
                            if used >= total {
                                break;
                            }
                            let slots = head.required_slots;
                            if used + slots > total {
                                continue;
                            }
                            if self.deps_ready(&head.job_id, head.depends_on.as_ref(), &mut seen)
                                != Some(true)
                            {
                                continue;
                            }
                            // The whole task is read only for one about to start.
                            let Ok(Some(st)) = self.store.task(&head.job_id, &head.id) else {
                                continue;
                            };
                            if st.view.state == TaskState::Active && self.launch(st, &mut set) {
                                used += slots;
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot read the task queue"),
                }
            }
            self.rt.status.set_busy(!set.is_empty());
            self.rt
                .metrics
                .slots_used
                .store(used, std::sync::atomic::Ordering::Relaxed);
            tokio::select! {
                _ = self.wake.notified(), if !cancel.is_cancelled() => {}
                done = set.join_next(), if !set.is_empty() => {
                    if let Some(Ok((k, slots))) = done {
                        self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&k);
                        used = used.saturating_sub(slots);
                    }
                }
                _ = cancel.cancelled(), if !cancel.is_cancelled() => match on_shutdown {
                    OnShutdown::Stop => {
                        for t in self.running.lock().unwrap_or_else(|p| p.into_inner()).values() {
                            t.cancel();
                        }
                    }
                    OnShutdown::Continue => {}
                    // Dropping the runners leaves their containers running and the
                    // tasks `running` in the store: `recover` takes them over.
                    OnShutdown::Leave => {
                        tracing::info!(running = set.len(), "leaving running tasks to the next agent");
                        break;
                    }
                },
                else => break,
            }
            if cancel.is_cancelled() && set.is_empty() {
                break;
            }
        }
    }
}
