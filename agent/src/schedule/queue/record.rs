//! RECORDS: what the scheduler and its runners read from and write to the store. These
//! need no queue state, so runners share them (`Shared`) while the loop keeps its own.

use super::*;
use berth_proto::exit::{self, Actions};

/// What a completed task's end calls for under its `exitConditions`.
pub(super) fn actions(view: &TaskView) -> Actions {
    let outcome = view
        .execution_info
        .as_ref()
        .map_or(exit::Outcome::Other, exit::Outcome::of);
    exit::actions(view.spec.exit_conditions.as_ref(), outcome)
}

impl Shared {
    /// Whether the dependencies all completed and satisfy their dependants (by default:
    /// succeeded; their `exitConditions` may say otherwise); `None` when one blocks (the
    /// task then stays active, blocked, as in Batch). `seen` remembers each dependency's
    /// answer for one scan: many tasks often wait on the same one.
    pub(super) fn deps_ready(
        &self,
        job: &str,
        deps: Option<&berth_proto::TaskDependencies>,
        seen: &mut HashMap<Key, Option<bool>>,
    ) -> Option<bool> {
        let Some(d) = deps else {
            return Some(true);
        };
        for id in d.all_ids() {
            let answer = *seen.entry(key(job, &id)).or_insert_with(|| {
                let dep = self.store.task(job, &id).ok().flatten();
                match crate::schedule::pending::dependency(dep.as_ref().map(|d| &d.view)) {
                    Some(true) => Some(true),
                    Some(false) => None,
                    None => Some(false),
                }
            });
            if answer != Some(true) {
                return answer;
            }
        }
        Some(true)
    }

    /// Changes the job's `JobOnNode` record in the store; false (logged) if it could not.
    pub(super) fn record(
        &self,
        job: &str,
        what: &str,
        change: impl FnOnce(&mut JobOnNode),
    ) -> bool {
        let mut rec = match self.store.job_on_node(job) {
            Ok(r) => r.unwrap_or_default(),
            Err(e) => {
                tracing::error!(job = %job, error = %Chain(&e), "cannot record {what}");
                return false;
            }
        };
        change(&mut rec);
        if let Err(e) = self.store.put_job_on_node(job, &rec) {
            tracing::error!(job = %job, error = %Chain(&e), "cannot record {what}");
            return false;
        }
        true
    }

    /// Records that the job's preparation task starts now (before it starts).
    pub(super) fn preparation_started(&self, job: &JobSpec) -> bool {
        self.record(&job.id, "the job preparation task's start", |rec| {
            rec.preparation = Some(job_tasks::started(&self.rt, job, Which::Preparation));
            rec.boot_id = Some(self.boot_id.clone());
        })
    }

    /// Runs the job's preparation task and records how it ended; `None` when it was
    /// stopped (it counts as never run, so it runs again).
    pub(super) async fn prepare(&self, job: &JobSpec, token: &CancellationToken) -> Option<bool> {
        let info = job_tasks::run(self.rt.clone(), job, Which::Preparation, token).await;
        let stopped = token.is_cancelled();
        self.record(&job.id, "the job preparation task's end", |rec| {
            rec.preparation =
                (!stopped).then(|| job_tasks::ended(&self.rt, job, Which::Preparation, &info));
        });
        let ok = info.result == Some(TaskResult::Success);
        if !stopped && !ok {
            tracing::warn!(job = %job.id, code = "JobPreparationTaskFailed", "the job preparation task failed on this node; the job's tasks do not run here and stay active");
        }
        (!stopped).then_some(ok)
    }

    /// Records that a running task begins retry `retries`: should the agent die before
    /// the task ends, the next one still counts the attempts that ran.
    pub(super) fn record_retry(&self, job: &str, task: &str, retries: i32) {
        let Ok(Some(mut now)) = self.store.task(job, task) else {
            return;
        };
        if now.view.state != TaskState::Running {
            return;
        }
        let e = now.view.execution_info.get_or_insert_with(Default::default);
        e.retry_count = retries;
        e.last_retry_time = Some(Utc::now());
        if let Err(e) = self.store.put_task(&now.view) {
            tracing::warn!(job, task, error = %Chain(&e), "cannot record the retry");
        }
    }

    /// Records a task's completion. The result is what the task ran for, so a store that
    /// cannot write (a full disk) is tried again, with backoff, until it can; the task's
    /// slot stays taken meanwhile. Only a stopping agent gives up: the next process finds
    /// the task `running` with no container and ends it `TaskEnded`.
    pub(super) async fn record_end(&self, job: &str, task: &str, info: ExecutionInfo) {
        let mut tries = 0u32;
        let mut delay = Backoff::new(Duration::from_millis(500), Duration::from_secs(8));
        loop {
            let e = match self.store.task(job, task) {
                // Deleted meanwhile: there is nothing to record.
                Ok(None) => return,
                Ok(Some(mut now)) => {
                    now.view.state = TaskState::Completed;
                    now.view.state_transition_time = Utc::now();
                    now.view.execution_info = Some(info.clone());
                    match self.store.put_task(&now.view) {
                        Ok(()) => {
                            if tries > 0 {
                                tracing::info!(
                                    job,
                                    task,
                                    tries,
                                    "the task's completion is recorded"
                                );
                            }
                            return;
                        }
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            if self.shutdown.is_cancelled() {
                tracing::error!(job, task, error = %Chain(&e), "cannot record the task's completion; the agent stops");
                return;
            }
            if tries % 20 == 0 {
                tracing::error!(job, task, error = %Chain(&e), tries, "cannot record the task's completion; trying again");
            }
            tries += 1;
            // A shutdown ends the wait; the top of the loop then gives up.
            delay.sleep(&self.shutdown).await;
        }
    }

    /// Completes `key` with `TaskEnded` if it is still active (never started); a task
    /// in any other state is left as it is. Only the loop calls this while it runs.
    pub(super) fn end_active(&self, (job, task): &Key) -> Result<(), StoreError> {
        let Some(mut t) = self.store.task(job, task)? else {
            return Ok(());
        };
        if t.view.state != TaskState::Active {
            return Ok(());
        }
        t.view.state = TaskState::Completed;
        t.view.state_transition_time = Utc::now();
        t.view.execution_info = Some(task::failed_before_start(
            FailureCode::TaskEnded,
            "Task was ended by user request.".into(),
        ));
        self.store.put_task(&t.view)
    }

    /// Whether a job disable asked for `key` to be queued again (asked once).
    pub(super) fn requeue_requested(&self, key: &Key) -> bool {
        self.requeue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
    }

    /// A task stopped by a job disable with `requeue` goes back to `active`, one more in
    /// its `requeueCount`, as a reactivated task does.
    pub(super) fn requeue_stopped(&self, job: &str, task: &str) {
        let Ok(Some(mut now)) = self.store.task(job, task) else {
            return;
        };
        let count = now
            .view
            .execution_info
            .as_ref()
            .map_or(0, |e| e.requeue_count)
            .saturating_add(1);
        now.view.state = TaskState::Active;
        now.view.state_transition_time = Utc::now();
        now.view.execution_info = Some(ExecutionInfo {
            requeue_count: count,
            ..Default::default()
        });
        if let Err(e) = self.store.put_task(&now.view) {
            tracing::error!(job, task, error = %Chain(&e), "cannot queue the task again");
        }
    }
}
