//! The node's scheduler, one for the daemon and `berth run` alike, shaped as an actor:
//! a `Scheduler` handle sends requests (wake, job ending, end a task, wait until
//! settled) to one loop, `Queue::run`, that owns the queue's state (what runs, which
//! jobs release) and is the only one that starts tasks. The queue itself is the `Store`:
//! the daemon's SQLite database, or the run-only store `berth run` fills from its files;
//! pool mode gives it another. At start the loop takes over what an earlier agent
//! process left running (`recover`). FIFO by submission order across jobs, as slots free
//! up, after dependencies succeeded. Every state change is written to the store before
//! the loop acts on it. A job's preparation task runs before its first task here (that
//! task is `preparing` meanwhile, holding its slots); its release task runs once the
//! job is terminated or deleted and none of its tasks runs any more.

use super::job_tasks::{self, Gate, Which};
use super::{gpu_gate, run_one, GpuGate};
use crate::backoff::Backoff;
use crate::config::OnShutdown;
use crate::error_chain::Chain;
use crate::gpu::Reservation;
use crate::store::{JobOnNode, Store, StoreError, StoredTask};
use crate::task::create::labels;
use crate::task::{self, NodeContext};
use berth_proto::exit::JobAction;
use berth_proto::{
    ExecutionInfo, FailureCode, JobSpec, JobState, JobView, TaskResult, TaskState, TaskView,
};
use chrono::Utc;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod job_end;
mod record;
mod recover;

type Key = (String, String);

/// What a runner in the loop's set returns, so the loop alone updates its state.
enum Done {
    /// A task ended (or went back to the queue): its key, the slots it gives back, and
    /// what its end does to its job.
    Task(Key, u32, Option<JobEnd>),
    /// A preparation task that ran beside the tasks (`waitForSuccess: false`).
    Preparation,
    /// A job's release task ended (lower-case job id).
    Release(String),
}

/// Sleeps until `deadline` (a job's `maxWallClockTime`).
async fn wall_clock(deadline: Option<&(tokio::time::Instant, String)>) {
    match deadline {
        Some((at, _)) => tokio::time::sleep_until(*at).await,
        None => std::future::pending().await,
    }
}

/// What one scheduling pass remembers across its levels.
#[derive(Default)]
struct Pass {
    /// Each dependency's answer (many tasks often wait on the same one).
    deps: HashMap<Key, Option<bool>>,
    /// Each job once: its state and its preparation record.
    jobs: HashMap<String, Option<(JobView, Option<JobOnNode>)>>,
    /// Tasks running per job (lower-case id), for `maxParallelTasks`.
    running: HashMap<String, u32>,
}

/// What a task's end does to its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobEnd {
    /// Its `exitConditions` `jobAction` (the job carries such actions out).
    Action(JobAction),
    /// It was the job manager task, with `killJobOnCompletion`.
    ManagerDone,
}

/// Queued tasks read per page in a scheduling pass.
const QUEUE_PAGE: usize = 256;

fn key(job: &str, task: &str) -> Key {
    (job.to_ascii_lowercase(), task.to_ascii_lowercase())
}

/// What the handle asks of the loop. Requests are handled in the order sent.
enum Request {
    /// Something changed (a task was added, a slot may be free): look at the queue again.
    Wake,
    /// A job is being terminated or deleted: look at ending jobs again.
    JobEnding,
    /// A job was added or updated: one with `onAllTasksComplete: terminatejob` and no
    /// task left to run ends; its priority and limits are read again.
    JobChanged(String),
    /// End a task that has not completed: stop it if it runs, complete an active one
    /// `TaskEnded`. The answer says whether it could be recorded.
    End {
        key: Key,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Terminate an active job for `reason`: its unfinished tasks end, its release task
    /// runs, then it completes.
    TerminateJob {
        job: String,
        reason: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Disable an active job: no task of it starts; its running ones are handled per
    /// `how`; it is `disabled` once none runs.
    DisableJob {
        job: String,
        how: berth_proto::DisableJobOption,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Enable a disabled job: its tasks may start again.
    EnableJob {
        job: String,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Stop a task if it runs here; the answer says whether it ran.
    Stop {
        key: Key,
        reply: oneshot::Sender<bool>,
    },
    /// Answer once the queue has settled after every request sent before this one:
    /// nothing runs, no job is ending, and a pass started nothing.
    Settled(oneshot::Sender<()>),
}

/// The handle to the scheduler's loop: cheap to clone, held by the API, `berth run` and
/// the engine watch. Once the loop has stopped, requests do nothing (`end` still records
/// an active task's end itself: nothing can start it any more).
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::UnboundedSender<Request>,
    sh: Arc<Shared>,
}

/// What the loop and its runners share; it does not change after start.
struct Shared {
    rt: Arc<NodeContext>,
    store: Arc<dyn Store>,
    /// Cancelled when the agent shuts down (tells a shutdown from a terminate).
    shutdown: CancellationToken,
    boot_id: String,
    /// Running tasks a job disable (`requeue`) stopped: their runners queue them again.
    requeue: std::sync::Mutex<HashSet<Key>>,
}

/// The loop and the state only it touches.
pub struct Queue {
    sh: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Request>,
    /// Running tasks and the token that stops each.
    running: HashMap<Key, CancellationToken>,
    /// Jobs whose release task runs now.
    releasing: HashSet<String>,
    /// Jobs whose blocked tasks were already logged.
    blocked: HashSet<String>,
    /// Whether `end_jobs` has something to look at: it reads every job, so it runs only
    /// after a terminate or delete, and while an ending job still waits for its tasks.
    ending: bool,
    /// The runners: tasks, preparation and release tasks.
    set: JoinSet<Done>,
    /// Slots the running tasks hold.
    used: u32,
    /// Waiting for the queue to settle (`Request::Settled`).
    settled: Vec<oneshot::Sender<()>>,
    /// The jobs by priority (`levels`); `None` after anything may have changed them.
    levels: Option<Arc<Vec<Option<Vec<String>>>>>,
    /// The next job to pass its `constraints.maxWallClockTime`, found with `levels`.
    deadline: Option<(tokio::time::Instant, String)>,
}

impl Scheduler {
    /// A scheduler over `store` for the node in `rt`: the handle, and the loop to run
    /// (`Queue::run`), which starts nothing until it runs.
    pub fn new(rt: Arc<NodeContext>, store: Arc<dyn Store>) -> (Scheduler, Queue) {
        // A shutdown is berth stopping its tasks: attempts then keep an exit of their own.
        let shutdown = rt.stopping.clone();
        let sh = Arc::new(Shared {
            rt,
            store,
            shutdown,
            boot_id: job_tasks::boot_id(),
            requeue: Default::default(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Queue {
            sh: sh.clone(),
            rx,
            running: HashMap::new(),
            releasing: HashSet::new(),
            blocked: HashSet::new(),
            // Jobs an earlier process left terminating or deleting are looked at once.
            ending: true,
            set: JoinSet::new(),
            used: 0,
            settled: Vec::new(),
            levels: None,
            deadline: None,
        };
        (Scheduler { tx, sh }, queue)
    }

    /// Something changed (a task was added, a slot may be free): look at the queue again.
    pub fn wake(&self) {
        // A stopped loop has nothing left to wake.
        self.tx.send(Request::Wake).ok();
    }

    /// A job was added or updated (Batch: one with `onAllTasksComplete: terminatejob` and
    /// no task left to run completes at once).
    pub fn job_changed(&self, job: &str) {
        self.tx.send(Request::JobChanged(job.to_string())).ok();
    }

    /// A job is being terminated or deleted: look at ending jobs again (`end_jobs`).
    pub fn job_ending(&self) {
        self.tx.send(Request::JobEnding).ok();
    }

    /// Stops a running task (its runner records `TaskEnded`); false if it was not
    /// running here.
    pub async fn stop(&self, job: &str, task: &str) -> bool {
        let (reply, answer) = oneshot::channel();
        let key = key(job, task);
        if self.tx.send(Request::Stop { key, reply }).is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }

    /// Ends a task that has not completed: a running one is stopped (its runner records
    /// `TaskEnded`), an active one completes at once with `TaskEnded`. Decided by the
    /// loop, so a task cannot start between the check and the record.
    pub async fn end(&self, job: &str, task: &str) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let key = key(job, task);
        if self
            .tx
            .send(Request::End {
                key: key.clone(),
                reply,
            })
            .is_err()
        {
            return self.sh.end_active(&key);
        }
        match answer.await {
            Ok(r) => r,
            // The loop stopped meanwhile: nothing starts tasks any more.
            Err(_) => self.sh.end_active(&key),
        }
    }

    /// Terminates an active job (Batch's job terminate): it becomes `terminating` (or
    /// `completed` at once when no release task is due) with `executionInfo.terminateReason`
    /// `reason`, and every task of it that has not completed ends `TaskEnded`.
    pub async fn terminate_job(&self, job: &str, reason: &str) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let req = Request::TerminateJob {
            job: job.to_string(),
            reason: reason.to_string(),
            reply,
        };
        self.ask(req, answer).await
    }

    /// Disables a job (Batch's job disable): it is `disabling` while tasks of it still
    /// run, then `disabled`; `how` says what happens to those running now.
    pub async fn disable_job(
        &self,
        job: &str,
        how: berth_proto::DisableJobOption,
    ) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = job.to_string();
        self.ask(Request::DisableJob { job, how, reply }, answer)
            .await
    }

    /// Enables a disabled (or disabling) job: it is `active` again.
    pub async fn enable_job(&self, job: &str) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = job.to_string();
        self.ask(Request::EnableJob { job, reply }, answer).await
    }

    async fn ask(
        &self,
        req: Request,
        answer: oneshot::Receiver<Result<(), StoreError>>,
    ) -> Result<(), StoreError> {
        let stopped = || StoreError::Backend("the scheduler has stopped".into());
        if self.tx.send(req).is_err() {
            return Err(stopped());
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Waits until the queue has settled after everything sent before: nothing runs, no
    /// job is ending, and nothing more could start (`berth run` ends its job then).
    /// Returns at once when the loop has stopped.
    pub async fn settled(&self) {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Request::Settled(reply)).is_ok() {
            answer.await.ok();
        }
    }
}

impl Queue {
    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    /// Takes one request; the pass after it looks at the queue again.
    fn handle(&mut self, req: Request) {
        // Any request may follow a change to the jobs (added, updated, ended).
        self.levels = None;
        match req {
            Request::Wake => {}
            Request::JobEnding => self.ending = true,
            Request::JobChanged(job) => self.all_tasks_complete(&job),
            Request::Stop { key, reply } => {
                let ran = self.running.get(&key).inspect(|t| t.cancel()).is_some();
                // An asker that went away needs no answer.
                reply.send(ran).ok();
            }
            Request::End { key, reply } => {
                let r = match self.running.get(&key) {
                    Some(t) => {
                        t.cancel();
                        Ok(())
                    }
                    None => self.sh.end_active(&key),
                };
                reply.send(r).ok();
            }
            Request::TerminateJob { job, reason, reply } => {
                let r = self.terminate_job(&job, &reason);
                reply.send(r).ok();
            }
            Request::DisableJob { job, how, reply } => {
                reply.send(self.disable_job(&job, how)).ok();
            }
            Request::EnableJob { job, reply } => {
                reply.send(self.enable_job(&job)).ok();
            }
            Request::Settled(reply) => self.settled.push(reply),
        }
    }

    /// Marks `t` running (or `preparing`, when the job's preparation task runs first) in
    /// the store, then starts it. False when it did not start (it waits for GPUs).
    fn launch(&mut self, st: StoredTask, job: &JobView, prepare: bool) -> bool {
        let mut view = st.view;
        let gpus = match gpu_gate(&self.sh.rt, &job.spec, &view.spec) {
            GpuGate::Go(r) => r,
            GpuGate::Wait => return false,
            GpuGate::Refuse(info) => {
                view.state = TaskState::Completed;
                view.state_transition_time = Utc::now();
                view.execution_info = Some(*info);
                if let Err(e) = self.sh.store.put_task(&view) {
                    tracing::error!(error = %Chain(&e), "cannot record the task's end");
                } else if job.spec.performs_exit_job_actions() {
                    self.job_action(&view.job_id, record::actions(&view).job);
                }
                return false;
            }
        };
        if prepare {
            view.state = TaskState::Preparing;
            view.state_transition_time = Utc::now();
        } else {
            running(&mut view);
        }
        if let Err(e) = self.sh.store.put_task(&view) {
            tracing::error!(job = %view.job_id, task = %view.spec.id, error = %Chain(&e), "cannot record the task as running; not starting it");
            self.sh.rt.gpus.release(&gpus);
            return false;
        }
        self.spawn(view, job, gpus, None);
        true
    }

    /// The job's preparation task beside its tasks (`waitForSuccess: false`).
    fn spawn_preparation(&mut self, job: JobSpec) {
        let me = self.sh.clone();
        let token = self.sh.shutdown.child_token();
        self.set.spawn(self.sh.rt.tasks.track_future(async move {
            me.prepare(&job, &token).await;
            Done::Preparation
        }));
    }

    /// Runs `view` (already `running` in the store) and records its completion.
    fn spawn(
        &mut self,
        view: TaskView,
        job: &JobView,
        gpus: Reservation,
        resume: Option<task::Resume>,
    ) {
        let job_view = job.clone();
        let job = job.spec.clone();
        let k = key(&view.job_id, &view.spec.id);
        // A child of `stopping`: a stopping agent stops every task, a terminate one.
        let token = self.sh.shutdown.child_token();
        self.running.insert(k.clone(), token.clone());
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
        let me = self.sh.clone();
        self.set.spawn(self.sh.rt.tasks.track_future(async move {
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
                    return Done::Task(k, slots, None);
                }
                running(&mut view);
                if let Err(e) = me.store.put_task(&view) {
                    tracing::error!(error = %Chain(&e), "cannot record the task as running");
                }
            }
            let retried = {
                let (me, job, task) = (me.clone(), view.job_id.clone(), view.spec.id.clone());
                move |retries: i32| me.record_retry(&job, &task, retries)
            };
            let performs = job.performs_exit_job_actions();
            let manager_kills = job
                .job_manager_task
                .as_ref()
                .is_some_and(|m| m.kills_job() && m.id.eq_ignore_ascii_case(&view.spec.id));
            let mut info = run_one(
                me.rt.clone(),
                job_view,
                &view,
                gpus.clone(),
                token,
                resume,
                &retried,
            )
            .await;
            me.rt.gpus.release(&gpus);
            if me.requeue_requested(&k) {
                // Stopped by a job disable with `requeue`: queued again, not ended.
                me.requeue_stopped(&view.job_id, &view.spec.id);
                return Done::Task(k, slots, None);
            }
            info.requeue_count = requeues;
            view.execution_info = Some(info.clone());
            let action = record::actions(&view).job;
            me.record_end(&view.job_id, &view.spec.id, info).await;
            let effect = if performs && action != JobAction::None {
                Some(JobEnd::Action(action))
            } else if manager_kills {
                Some(JobEnd::ManagerDone)
            } else {
                None
            };
            Done::Task(k, slots, effect)
        }));
    }

    /// One scheduling pass: starts queued tasks in queue order while slots are free.
    /// Reads the queue a page at a time and stops once the slots are full, so a pass
    /// costs what it starts, not what is queued. Returns the slots now used.
    fn start_what_fits(&mut self, mut used: u32, total: u32) -> u32 {
        let mut pass = Pass::default();
        for (job, _) in self.running.keys() {
            *pass.running.entry(job.clone()).or_default() += 1;
        }
        let levels = self.levels();
        for level in levels.iter() {
            if used >= total {
                break;
            }
            used = self.start_level(used, total, level.as_deref(), &mut pass);
        }
        used
    }

    /// The active jobs by `priority`, highest first, each level's job keys (lower case);
    /// one level of all jobs (`None`) when they share one priority, the usual case.
    /// Read again only after a request, since only requests change jobs.
    fn levels(&mut self) -> Arc<Vec<Option<Vec<String>>>> {
        if let Some(l) = &self.levels {
            return l.clone();
        }
        let jobs = match self.sh.store.jobs() {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %Chain(&e), "cannot read the jobs");
                return Arc::new(vec![None]);
            }
        };
        let mut by: std::collections::BTreeMap<std::cmp::Reverse<i32>, Vec<String>> =
            Default::default();
        // The earliest `constraints.maxWallClockTime` among active jobs (from creation).
        self.deadline = jobs
            .iter()
            .filter(|j| j.state == JobState::Active)
            .filter_map(|j| {
                let limit = j.spec.constraints.as_ref()?.max_wall_clock_time?.limit()?;
                let at = j.creation_time + chrono::Duration::from_std(limit).ok()?;
                // On the runtime's clock, which timers (and paused tests) follow.
                let left = (at - Utc::now()).to_std().unwrap_or_default();
                Some((tokio::time::Instant::now() + left, j.spec.id.clone()))
            })
            .min();
        for j in jobs.iter().filter(|j| j.state == JobState::Active) {
            by.entry(std::cmp::Reverse(j.spec.priority()))
                .or_default()
                .push(j.spec.id.to_ascii_lowercase());
        }
        let levels = Arc::new(if by.len() <= 1 {
            vec![None]
        } else {
            by.into_values().map(Some).collect()
        });
        self.levels = Some(levels.clone());
        levels
    }

    /// Starts what fits from the queue of the jobs in `level` (all jobs: `None`), in
    /// queue order, backfilling past tasks that cannot start yet.
    fn start_level(
        &mut self,
        mut used: u32,
        total: u32,
        level: Option<&[String]>,
        pass: &mut Pass,
    ) -> u32 {
        let mut after = 0;
        let (seen, jobs) = (&mut pass.deps, &mut pass.jobs);
        while used < total {
            let queue = match self.sh.store.active_queue(after, QUEUE_PAGE, level) {
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
                let job_key = head.job_id.to_ascii_lowercase();
                if self
                    .sh
                    .deps_ready(&head.job_id, head.depends_on.as_ref(), seen)
                    != Some(true)
                {
                    continue;
                }
                let entry = jobs
                    .entry(head.job_id.to_ascii_lowercase())
                    .or_insert_with(|| {
                        let job = self.sh.store.job(&head.job_id).ok().flatten()?;
                        let rec = self.sh.store.job_on_node(&job.spec.id).ok().flatten();
                        Some((job, rec))
                    });
                let Some((job, rec)) = entry else { continue };
                if job.state != JobState::Active {
                    continue;
                }
                let running = pass.running.get(&job_key).copied().unwrap_or(0);
                if job.spec.parallel_cap().is_some_and(|cap| running >= cap) {
                    continue;
                }
                let gate = job_tasks::gate(&job.spec, rec.as_ref(), &self.sh.boot_id);
                match gate {
                    Gate::Wait => continue,
                    Gate::Blocked => {
                        if self.blocked.insert(job.spec.id.to_ascii_lowercase()) {
                            tracing::warn!(job = %job.spec.id, code = "JobPreparationTaskFailed", "the job's tasks stay active: its preparation task failed on this node");
                        }
                        continue;
                    }
                    Gate::Go | Gate::Prepare => {}
                }
                // The whole task is read only for one about to start.
                let Ok(Some(st)) = self.sh.store.task(&head.job_id, &head.id) else {
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
                    if !self.sh.preparation_started(&job.spec) {
                        continue;
                    }
                    *rec = self.sh.store.job_on_node(&job.spec.id).ok().flatten();
                    if !waits {
                        self.spawn_preparation(job.spec.clone());
                    }
                }
                let job = job.clone();
                if self.launch(st, &job, gate == Gate::Prepare && waits) {
                    used += slots;
                    *pass.running.entry(job_key).or_default() += 1;
                } else if gate == Gate::Prepare && waits {
                    // It waits for GPUs: nobody prepares the job yet.
                    self.sh.record(
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
    pub async fn run(mut self, cancel: CancellationToken, on_shutdown: OnShutdown) {
        let total = self.sh.rt.pool.task_slots();
        self.used = self.recover().await;
        let mut open = true;
        // Whether `on_shutdown` was carried out: keyed on this, not on `cancel`, so that a
        // cancel that lands while the loop is between two selects is still acted on (it
        // was not, and a leave then left its containers running).
        let mut shut = false;
        loop {
            if !cancel.is_cancelled() {
                self.end_jobs();
                self.levels();
                self.past_deadline();
            }
            if !cancel.is_cancelled() && self.sh.rt.status.state().schedulable() {
                self.used = self.start_what_fits(self.used, total);
            }
            self.sh.rt.status.set_busy(!self.set.is_empty());
            self.sh
                .rt
                .metrics
                .slots_used
                .store(self.used, Ordering::Relaxed);
            if self.set.is_empty() && !self.ending {
                for w in self.settled.drain(..) {
                    w.send(()).ok();
                }
            }
            tokio::select! {
                req = self.rx.recv(), if open && !cancel.is_cancelled() => match req {
                    Some(req) => {
                        self.handle(req);
                        // Requests that came meanwhile share one pass.
                        while let Ok(req) = self.rx.try_recv() {
                            self.handle(req);
                        }
                    }
                    // Every handle is gone: runners ending still wake the loop.
                    None => open = false,
                },
                done = self.set.join_next(), if !self.set.is_empty() => {
                    match done {
                        Some(Ok(Done::Task(k, slots, action))) => {
                            self.running.remove(&k);
                            self.used = self.used.saturating_sub(slots);
                            match action {
                                Some(JobEnd::Action(a)) => self.job_action(&k.0, a),
                                Some(JobEnd::ManagerDone) => self.manager_done(&k.0),
                                None => self.all_tasks_complete(&k.0),
                            }
                            self.disabled_once_idle(&k.0);
                        }
                        Some(Ok(Done::Release(job))) => {
                            self.releasing.remove(&job);
                        }
                        Some(Ok(Done::Preparation)) | None => {}
                        Some(Err(e)) => {
                            tracing::error!(error = %Chain(&e), "a task runner failed");
                        }
                    }
                }
                _ = wall_clock(self.deadline.as_ref()), if self.deadline.is_some() && !cancel.is_cancelled() => {
                    if let Some((_, job)) = self.deadline.take() {
                        self.wall_clock_expired(&job);
                    }
                }
                _ = cancel.cancelled(), if !shut => match on_shutdown {
                    OnShutdown::Stop => {
                        shut = true;
                        self.sh.shutdown.cancel();
                        for t in self.running.values() {
                            t.cancel();
                        }
                    }
                    OnShutdown::Continue => {
                        shut = true;
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
            if cancel.is_cancelled() && self.set.is_empty() {
                break;
            }
        }
        for w in self.settled.drain(..) {
            w.send(()).ok();
        }
    }
}

/// `view` goes `running` now: Batch shows a running task's start time, and its counters
/// (retries, requeues) stay as they were.
fn running(view: &mut TaskView) {
    view.state = TaskState::Running;
    view.state_transition_time = Utc::now();
    let info = view.execution_info.get_or_insert_with(Default::default);
    info.start_time = Some(view.state_transition_time);
    info.end_time = None;
}
