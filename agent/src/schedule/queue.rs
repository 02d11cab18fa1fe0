//! The daemon's scheduler: the same task path as `berth run` (`run_one`), fed from the
//! store instead of a file. FIFO by submission order across jobs, as slots free up,
//! after dependencies succeeded. Every state change is written to the store before the
//! scheduler acts on it.

use super::{gpu_gate, run_one, GpuGate};
use crate::store::{Store, StoredTask};
use crate::task::{self, Runtime};
use berth_proto::{FailureCode, JobState, TaskResult, TaskState, TaskView};
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

    /// Whether `t`'s dependencies all completed successfully; `None` when one failed (the
    /// task then stays active, blocked, as in Batch).
    fn deps_ready(&self, t: &TaskView) -> Option<bool> {
        let Some(d) = &t.spec.depends_on else {
            return Some(true);
        };
        for id in d.all_ids() {
            match self.store.task(&t.job_id, &id) {
                Ok(Some(dep)) if dep.view.state == TaskState::Completed => {
                    if dep.view.execution_info.as_ref().and_then(|e| e.result)
                        != Some(TaskResult::Success)
                    {
                        return None;
                    }
                }
                _ => return Some(false),
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
                job.spec,
                view.spec.clone(),
                gpus.clone(),
                token,
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
        true
    }

    /// Tasks left `running` by an earlier agent process. Until restart recovery lands,
    /// they end as failed with a clear message rather than run a second time.
    fn settle_leftovers(&self) {
        let Ok(left) = self
            .store
            .tasks_in(&[TaskState::Running, TaskState::Preparing])
        else {
            return;
        };
        for mut t in left {
            tracing::warn!(job = %t.view.job_id, task = %t.view.spec.id, "task was running when the agent stopped");
            let mut info = task::failed_before_start(
                FailureCode::TaskEnded,
                "the agent restarted while this task ran; it is not run again".into(),
            );
            if let Some(f) = info.failure_info.as_mut() {
                f.category = berth_proto::FailureCategory::ServerError;
            }
            t.view.state = TaskState::Completed;
            t.view.state_transition_time = Utc::now();
            t.view.execution_info = Some(info);
            if let Err(e) = self.store.put_task(&t.view) {
                tracing::error!(error = %e, "cannot record the task's end");
            }
        }
    }

    /// Runs until `cancel`; then stops starting tasks and, when `stop_running`, stops the
    /// running ones too (their containers are removed, the tasks end `TaskEnded`).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken, stop_running: bool) {
        self.settle_leftovers();
        let total = self.rt.pool.task_slots();
        let mut used = 0u32;
        let mut set: JoinSet<(Key, u32)> = JoinSet::new();
        loop {
            if !cancel.is_cancelled() && self.rt.status.state().schedulable() {
                match self.store.tasks_in(&[TaskState::Active]) {
                    Ok(queue) => {
                        for st in queue {
                            if used >= total {
                                break;
                            }
                            let slots = st.view.spec.required_slots();
                            if used + slots > total {
                                continue;
                            }
                            if self.deps_ready(&st.view) != Some(true) {
                                continue;
                            }
                            if self.launch(st, &mut set) {
                                used += slots;
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot read the task queue"),
                }
            }
            self.rt.status.set_busy(!set.is_empty());
            tokio::select! {
                _ = self.wake.notified(), if !cancel.is_cancelled() => {}
                done = set.join_next(), if !set.is_empty() => {
                    if let Some(Ok((k, slots))) = done {
                        self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&k);
                        used = used.saturating_sub(slots);
                    }
                }
                _ = cancel.cancelled(), if !cancel.is_cancelled() => {
                    if stop_running {
                        for t in self.running.lock().unwrap_or_else(|p| p.into_inner()).values() {
                            t.cancel();
                        }
                    }
                }
                else => break,
            }
            if cancel.is_cancelled() && set.is_empty() {
                break;
            }
        }
    }
}
