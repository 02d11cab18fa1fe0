//! The daemon's scheduler: the same task path as `berth run` (`run_one`), fed from the
//! store instead of a file. At start it takes over what an earlier agent process left
//! running (`recover`). FIFO by submission order across jobs, as slots free up,
//! after dependencies succeeded. Every state change is written to the store before the
//! scheduler acts on it. A job's preparation task runs before its first task here (that
//! task is `preparing` meanwhile, holding its slots); its release task runs once the
//! job is terminated or deleted and none of its tasks runs any more.

use super::job_tasks::{self, Gate, Which};
use super::{gpu_gate, run_one, GpuGate};
use crate::backoff::Backoff;
use crate::config::OnShutdown;
use crate::error_chain::Chain;
use crate::gpu::Reservation;
use crate::store::{JobOnNode, Store, StoredTask};
use crate::task::create::labels;
use crate::task::{self, NodeContext};
use berth_proto::{
    ExecutionInfo, FailureCode, JobSpec, JobState, JobView, TaskResult, TaskState, TaskView,
};
use chrono::Utc;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod job_end;
mod recover;

type Key = (String, String);
/// What a runner in the scheduler's set returns: the task it ran (none for preparation
/// beside the tasks and for release) and the slots it gives back.
type Done = (Option<Key>, u32);

/// Queued tasks read per page in a scheduling pass.
const QUEUE_PAGE: usize = 256;

fn key(job: &str, task: &str) -> Key {
    (job.to_ascii_lowercase(), task.to_ascii_lowercase())
}

pub struct Scheduler {
    rt: Arc<NodeContext>,
    store: Arc<dyn Store>,
    wake: Notify,
    /// Running tasks and the token that stops each.
    running: Mutex<HashMap<Key, CancellationToken>>,
    /// Jobs whose release task runs now.
    releasing: Mutex<HashSet<String>>,
    /// Jobs whose blocked tasks were already logged.
    blocked: Mutex<HashSet<String>>,
    /// Cancelled when the agent shuts down (tells a shutdown from a terminate).
    shutdown: CancellationToken,
    boot_id: String,
    /// Whether `end_jobs` has something to look at: it reads every job, so it runs only
    /// after a terminate or delete, and while an ending job still waits for its tasks.
    ending: AtomicBool,
    /// True while nothing runs and the last pass started nothing: the queue has settled
    /// (`berth run` ends its job then).
    idle: tokio::sync::watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Scheduler {
    pub fn new(rt: Arc<NodeContext>, store: Arc<dyn Store>) -> Arc<Self> {
        // A shutdown is berth stopping its tasks: attempts then keep an exit of their own.
        let shutdown = rt.stopping.clone();
        Arc::new(Scheduler {
            rt,
            store,
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            releasing: Mutex::new(HashSet::new()),
            blocked: Mutex::new(HashSet::new()),
            shutdown,
            boot_id: job_tasks::boot_id(),
            // Jobs an earlier process left terminating or deleting are looked at once.
            ending: AtomicBool::new(true),
            idle: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Follows whether the queue has settled: nothing runs, and nothing more could start.
    pub fn idle(&self) -> tokio::sync::watch::Receiver<bool> {
        self.idle.subscribe()
    }

    /// A job is being terminated or deleted: look at ending jobs again (`end_jobs`).
    pub fn job_ending(&self) {
        self.ending.store(true, Ordering::Relaxed);
        self.wake();
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

    /// Marks `t` running (or `preparing`, when the job's preparation task runs first) in
    /// the store, then starts it. False when it did not start (it waits for GPUs).
    fn launch(
        self: &Arc<Self>,
        st: StoredTask,
        job: &JobView,
        prepare: bool,
        set: &mut JoinSet<Done>,
    ) -> bool {
        let mut view = st.view;
        let gpus = match gpu_gate(&self.rt, &job.spec, &view.spec) {
            GpuGate::Go(r) => r,
            GpuGate::Wait => return false,
            GpuGate::Refuse(info) => {
                view.state = TaskState::Completed;
                view.state_transition_time = Utc::now();
                view.execution_info = Some(*info);
                if let Err(e) = self.store.put_task(&view) {
                    tracing::error!(error = %Chain(&e), "cannot record the task's end");
                }
                return false;
            }
        };
        view.state = if prepare {
            TaskState::Preparing
        } else {
            TaskState::Running
        };
        view.state_transition_time = Utc::now();
        if let Err(e) = self.store.put_task(&view) {
            tracing::error!(job = %view.job_id, task = %view.spec.id, error = %Chain(&e), "cannot record the task as running; not starting it");
            self.rt.gpus.release(&gpus);
            return false;
        }
        self.spawn(view, job.spec.clone(), gpus, None, set);
        true
    }

    /// Changes the job's `JobOnNode` record in the store; false (logged) if it could not.
    fn record(&self, job: &str, what: &str, change: impl FnOnce(&mut JobOnNode)) -> bool {
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
    fn preparation_started(&self, job: &JobSpec) -> bool {
        self.record(&job.id, "the job preparation task's start", |rec| {
            rec.preparation = Some(job_tasks::started(&self.rt, job, Which::Preparation));
            rec.boot_id = Some(self.boot_id.clone());
        })
    }

    /// Runs the job's preparation task and records how it ended; `None` when it was
    /// stopped (it counts as never run, so it runs again).
    async fn prepare(&self, job: &JobSpec, token: &CancellationToken) -> Option<bool> {
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

    /// The job's preparation task beside its tasks (`waitForSuccess: false`).
    fn spawn_preparation(self: &Arc<Self>, job: JobSpec, set: &mut JoinSet<Done>) {
        let me = self.clone();
        let token = self.shutdown.child_token();
        set.spawn(self.rt.tasks.track_future(async move {
            me.prepare(&job, &token).await;
            (None, 0)
        }));
    }

    /// Runs `view` (already `running` in the store) and records its completion.
    fn spawn(
        self: &Arc<Self>,
        view: TaskView,
        job: JobSpec,
        gpus: Reservation,
        resume: Option<task::Resume>,
        set: &mut JoinSet<Done>,
    ) {
        let k = key(&view.job_id, &view.spec.id);
        // A child of `stopping`: a stopping agent stops every task, a terminate one.
        let token = self.shutdown.child_token();
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
        // A task `requeue` sent back after its retries began goes on from that attempt.
        let resume = resume.or_else(|| {
            let retries = view.execution_info.as_ref().map_or(0, |e| e.retry_count);
            u32::try_from(retries)
                .ok()
                .filter(|a| *a > 0)
                .map(task::Resume::Attempt)
        });
        let me = self.clone();
        set.spawn(self.rt.tasks.track_future(async move {
            let mut view = view;
            if view.state == TaskState::Preparing {
                let outcome = me.prepare(&job, &token).await;
                if outcome != Some(true) {
                    me.rt.gpus.release(&gpus);
                    let now = me.store.task(&view.job_id, &view.spec.id).ok().flatten();
                    if let Some(mut now) = now {
                        now.view.state_transition_time = Utc::now();
                        if outcome.is_none() && !me.shutdown.is_cancelled() {
                            // Terminated while its job was being prepared.
                            now.view.state = TaskState::Completed;
                            now.view.execution_info = Some(task::failed_before_start(
                                FailureCode::TaskEnded,
                                "Task was ended by user request.".into(),
                            ));
                        } else {
                            // Preparation failed (Batch: the task may go to another node)
                            // or the agent stops: the task never started.
                            now.view.state = TaskState::Active;
                        }
                        if let Err(e) = me.store.put_task(&now.view) {
                            tracing::error!(error = %Chain(&e), "cannot record the task's state");
                        }
                    }
                    return (Some(k), slots);
                }
                view.state = TaskState::Running;
                view.state_transition_time = Utc::now();
                if let Err(e) = me.store.put_task(&view) {
                    tracing::error!(error = %Chain(&e), "cannot record the task as running");
                }
            }
            let retried = {
                let (me, job, task) = (me.clone(), view.job_id.clone(), view.spec.id.clone());
                move |retries: i32| me.record_retry(&job, &task, retries)
            };
            let mut info = run_one(
                me.rt.clone(),
                job,
                view.spec.clone(),
                gpus.clone(),
                token,
                resume,
                &retried,
            )
            .await;
            me.rt.gpus.release(&gpus);
            info.requeue_count = requeues;
            me.record_end(&view.job_id, &view.spec.id, info).await;
            (Some(k), slots)
        }));
    }

    /// Records that a running task begins retry `retries`: should the agent die before
    /// the task ends, the next one still counts the attempts that ran.
    fn record_retry(&self, job: &str, task: &str, retries: i32) {
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
    async fn record_end(&self, job: &str, task: &str, info: ExecutionInfo) {
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

    /// One scheduling pass: starts queued tasks in queue order while slots are free.
    /// Reads the queue a page at a time and stops once the slots are full, so a pass
    /// costs what it starts, not what is queued. Returns the slots now used.
    fn start_what_fits(
        self: &Arc<Self>,
        mut used: u32,
        total: u32,
        set: &mut JoinSet<Done>,
    ) -> u32 {
        let mut after = 0;
        let mut seen = HashMap::new();
        // Each job once per scan: its state and its preparation record.
        let mut jobs: HashMap<String, Option<(JobView, Option<JobOnNode>)>> = HashMap::new();
        while used < total {
            let queue = match self.store.active_queue(after, QUEUE_PAGE) {
                Ok(q) => q,
                Err(e) => {
                    tracing::error!(error = %Chain(&e), "cannot read the task queue");
                    break;
                }
            };
            let last_page = queue.len() < QUEUE_PAGE;
            for head in queue {
                after = head.seq;
                if used >= total {
                    break;
                }
                let slots = head.required_slots;
                if used + slots > total {
                    continue;
                }
                if self.deps_ready(&head.job_id, head.depends_on.as_ref(), &mut seen) != Some(true)
                {
                    continue;
                }
                let entry = jobs
                    .entry(head.job_id.to_ascii_lowercase())
                    .or_insert_with(|| {
                        let job = self.store.job(&head.job_id).ok().flatten()?;
                        let rec = self.store.job_on_node(&job.spec.id).ok().flatten();
                        Some((job, rec))
                    });
                let Some((job, rec)) = entry else { continue };
                if job.state != JobState::Active {
                    continue;
                }
                let gate = job_tasks::gate(&job.spec, rec.as_ref(), &self.boot_id);
                match gate {
                    Gate::Wait => continue,
                    Gate::Blocked => {
                        if lock(&self.blocked).insert(job.spec.id.to_ascii_lowercase()) {
                            tracing::warn!(job = %job.spec.id, code = "JobPreparationTaskFailed", "the job's tasks stay active: its preparation task failed on this node");
                        }
                        continue;
                    }
                    Gate::Go | Gate::Prepare => {}
                }
                // The whole task is read only for one about to start.
                let Ok(Some(st)) = self.store.task(&head.job_id, &head.id) else {
                    continue;
                };
                if st.view.state != TaskState::Active {
                    continue;
                }
                let waits = job
                    .spec
                    .job_preparation_task
                    .as_ref()
                    .is_some_and(|p| p.wait_for_success());
                if gate == Gate::Prepare {
                    if !self.preparation_started(&job.spec) {
                        continue;
                    }
                    *rec = self.store.job_on_node(&job.spec.id).ok().flatten();
                    if !waits {
                        self.spawn_preparation(job.spec.clone(), set);
                    }
                }
                let job = job.clone();
                if self.launch(st, &job, gate == Gate::Prepare && waits, set) {
                    used += slots;
                } else if gate == Gate::Prepare && waits {
                    // It waits for GPUs: nobody prepares the job yet.
                    self.record(
                        &job.spec.id,
                        "the job preparation task as not started",
                        |r| {
                            r.preparation = None;
                        },
                    );
                    jobs.remove(&head.job_id.to_ascii_lowercase());
                }
            }
            if last_page {
                break;
            }
        }
        used
    }

    /// Runs until `cancel`; then stops starting tasks and, per `on_shutdown`, stops the
    /// running ones (their containers are removed, the tasks end `TaskEnded`), waits for
    /// them, or leaves them running for the next agent process to take over.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken, on_shutdown: OnShutdown) {
        let total = self.rt.pool.task_slots();
        let mut set: JoinSet<Done> = JoinSet::new();
        let mut used = self.recover(&mut set).await;
        loop {
            if !cancel.is_cancelled() {
                self.end_jobs(&mut set);
            }
            if !cancel.is_cancelled() && self.rt.status.state().schedulable() {
                used = self.start_what_fits(used, total, &mut set);
            }
            self.rt.status.set_busy(!set.is_empty());
            self.rt.metrics.slots_used.store(used, Ordering::Relaxed);
            self.idle
                .send_replace(set.is_empty() && !self.ending.load(Ordering::Relaxed));
            tokio::select! {
                _ = self.wake.notified(), if !cancel.is_cancelled() => {}
                done = set.join_next(), if !set.is_empty() => {
                    if let Some(Ok((k, slots))) = done {
                        if let Some(k) = k {
                            lock(&self.running).remove(&k);
                        }
                        used = used.saturating_sub(slots);
                    }
                }
                _ = cancel.cancelled(), if !cancel.is_cancelled() => match on_shutdown {
                    OnShutdown::Stop => {
                        self.shutdown.cancel();
                        for t in lock(&self.running).values() {
                            t.cancel();
                        }
                    }
                    OnShutdown::Continue => {
                        tracing::info!("waiting for {} running task(s) to end", self.running_count());
                    }
                    // Dropping the runners leaves their containers running and the
                    // tasks `running` in the store: `recover` takes them over.
                    OnShutdown::Leave => {
                        self.log_left().await;
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
