//! Job schedules: the jobs they create and when. One loop, the [`Timer`], alone writes
//! them: the API asks it through a [`JobSchedules`] handle (add, update, disable, enable,
//! terminate, delete), and between requests it sleeps until the next due time across the
//! schedules. Each pass asks the pure [`timing::step`] what a schedule does now, and a
//! run's job is added with the run counted in ONE store transaction, so an agent stopped
//! or killed at any point neither creates a run's job twice nor loses it; a run that came
//! due while no agent ran is created at the next start while its start window lasts, and
//! skipped (logged, counted) after. New jobs then take the path of `POST /jobs`: stored,
//! then `Scheduler::job_changed`.
//!
//! A job's completion reaches no one here: while a schedule waits for its job (to create
//! the next one, to complete, to be terminated or deleted) the timer looks again every
//! [`POLL`].

pub mod timing;

use crate::error_chain::Chain;
use crate::schedule::queue::Scheduler;
use crate::store::{Store, StoreError, StoredSchedule};
use crate::task::NodeContext;
use berth_proto::job_schedule::{self, TERMINATE_JOB_SCHEDULE};
use berth_proto::{
    JobScheduleSpec, JobScheduleState, JobSpecification, JobState, JobView, NameValuePair,
    Schedule, TaskState,
};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use timing::Step;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How soon the timer looks again at a schedule that waits for one of its jobs.
pub const POLL: Duration = Duration::from_secs(2);

/// The longest the timer sleeps: a wall clock set forward is noticed within it.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Why a request about a job schedule was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("the job schedule {0:?} does not exist")]
    NotFound(String),
    /// What holds the id: `job schedule "x"` or `job "x"`.
    #[error("{0} already exists")]
    Exists(String),
    #[error("the job schedule {0:?} has completed")]
    Completed(String),
    #[error("the job schedule {0:?} is being terminated")]
    Terminating(String),
    #[error("the job schedule {0:?} is being deleted")]
    Deleting(String),
    #[error(transparent)]
    Store(StoreError),
    #[error("the job schedule timer has stopped")]
    Stopped,
}

impl From<StoreError> for ScheduleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists(what) => ScheduleError::Exists(what),
            e => ScheduleError::Store(e),
        }
    }
}

/// What an update changes; `None` leaves a property as it is (PATCH). PUT gives all
/// three (`metadata` empty when left out).
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub schedule: Option<Schedule>,
    pub job_specification: Option<JobSpecification>,
    pub metadata: Option<Vec<NameValuePair>>,
}

type Reply<T> = oneshot::Sender<Result<T, ScheduleError>>;

enum Request {
    Add(Box<JobScheduleSpec>, Reply<()>),
    Update(String, Box<Change>, Reply<()>),
    Disable(String, Reply<()>),
    Enable(String, Reply<()>),
    Terminate(String, Reply<()>),
    Delete(String, Reply<()>),
}

/// The handle to the [`Timer`]: cheap to clone, held by the API. Each request is answered
/// once the timer has recorded it.
#[derive(Clone)]
pub struct JobSchedules {
    tx: mpsc::UnboundedSender<Request>,
}

impl JobSchedules {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, ScheduleError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(make(reply))
            .map_err(|_| ScheduleError::Stopped)?;
        answer.await.unwrap_or(Err(ScheduleError::Stopped))
    }

    /// Adds a schedule (validated already), active; its first run is due at
    /// `doNotRunUntil`, or now. `Exists` when a schedule or a job has its id.
    pub async fn add(&self, spec: JobScheduleSpec) -> Result<(), ScheduleError> {
        self.ask(|r| Request::Add(Box::new(spec), r)).await
    }

    /// Changes a schedule that has not completed; jobs created already keep their
    /// specification. A new `schedule` counts from the last run.
    pub async fn update(&self, id: &str, change: Change) -> Result<(), ScheduleError> {
        self.ask(|r| Request::Update(id.to_string(), Box::new(change), r))
            .await
    }

    /// No job is created until the schedule is enabled (its active job runs on).
    pub async fn disable(&self, id: &str) -> Result<(), ScheduleError> {
        self.ask(|r| Request::Disable(id.to_string(), r)).await
    }

    /// A disabled schedule creates jobs again (runs that came due meanwhile follow the
    /// start window's rule).
    pub async fn enable(&self, id: &str) -> Result<(), ScheduleError> {
        self.ask(|r| Request::Enable(id.to_string(), r)).await
    }

    /// The schedule creates no more jobs, its active job is terminated
    /// (`TerminateJobSchedule`); it is `terminating` until that job has completed, then
    /// `completed`.
    pub async fn terminate(&self, id: &str) -> Result<(), ScheduleError> {
        self.ask(|r| Request::Terminate(id.to_string(), r)).await
    }

    /// The schedule creates no more jobs and is `deleting` while its jobs are deleted
    /// (their running tasks stopped, release tasks run); then it goes, with
    /// `workitems/<schedule>`.
    pub async fn delete(&self, id: &str) -> Result<(), ScheduleError> {
        self.ask(|r| Request::Delete(id.to_string(), r)).await
    }
}

/// When the timer must look again.
#[derive(Debug, Default, PartialEq)]
struct Wake {
    /// The earliest time something is due.
    at: Option<DateTime<Utc>>,
    /// A schedule waits for one of its jobs, or a store write failed: look again after
    /// [`POLL`].
    poll: bool,
}

impl Wake {
    fn until(&mut self, t: Option<DateTime<Utc>>) {
        self.at = match (self.at, t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// The loop that creates the schedules' jobs and alone writes the schedules.
pub struct Timer {
    rt: Arc<NodeContext>,
    store: Arc<dyn Store>,
    sched: Scheduler,
    rx: mpsc::UnboundedReceiver<Request>,
}

impl Timer {
    /// A timer over `store` whose jobs go to `sched`: the handle, and the loop to run.
    pub fn new(
        rt: Arc<NodeContext>,
        store: Arc<dyn Store>,
        sched: Scheduler,
    ) -> (JobSchedules, Timer) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            JobSchedules { tx },
            Timer {
                rt,
                store,
                sched,
                rx,
            },
        )
    }

    /// Runs until `stop`: takes requests, and creates each schedule's jobs when due.
    pub async fn run(mut self, stop: CancellationToken) {
        self.recover();
        let mut open = true;
        while !stop.is_cancelled() {
            let now = Utc::now();
            let wake = self.pass(now).await;
            let mut sleep = wake
                .at
                .map_or(MAX_SLEEP, |at| (at - now).to_std().unwrap_or_default())
                .min(MAX_SLEEP);
            if wake.poll {
                sleep = sleep.min(POLL);
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                req = self.rx.recv(), if open => match req {
                    Some(req) => {
                        self.handle(req, Utc::now());
                        while let Ok(req) = self.rx.try_recv() {
                            self.handle(req, Utc::now());
                        }
                    }
                    None => open = false,
                },
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// What an earlier process may have left: a job it created whose `job_changed` it
    /// did not send (a job of `onAllTasksComplete: terminatejob` and no task then never
    /// completes).
    fn recover(&self) {
        match self.store.schedules() {
            Ok(all) => {
                for s in all
                    .iter()
                    .filter(|s| s.state != JobScheduleState::Completed)
                {
                    if let Some(job) = &s.recent_job {
                        self.sched.job_changed(job);
                    }
                }
            }
            Err(e) => tracing::error!(error = %Chain(&e), "cannot read the job schedules"),
        }
    }

    fn handle(&mut self, req: Request, now: DateTime<Utc>) {
        // An asker that went away needs no answer.
        match req {
            Request::Add(spec, reply) => {
                reply.send(self.add(*spec, now)).ok();
            }
            Request::Update(id, change, reply) => {
                reply.send(self.update(&id, *change, now)).ok();
            }
            Request::Disable(id, reply) => {
                reply.send(self.switch(&id, false, now)).ok();
            }
            Request::Enable(id, reply) => {
                reply.send(self.switch(&id, true, now)).ok();
            }
            Request::Terminate(id, reply) => {
                let r = self.end(&id, JobScheduleState::Terminating, now);
                reply.send(r).ok();
            }
            Request::Delete(id, reply) => {
                let r = self.end(&id, JobScheduleState::Deleting, now);
                reply.send(r).ok();
            }
        }
    }

    fn add(&self, spec: JobScheduleSpec, now: DateTime<Utc>) -> Result<(), ScheduleError> {
        let first = timing::first_due(&spec.schedule, now);
        let s = StoredSchedule::new(spec, now, first);
        self.store.add_schedule(&s)?;
        tracing::info!(schedule = %s.spec.id, first_run = %first, "job schedule added");
        Ok(())
    }

    /// The schedule `id`, or `NotFound`.
    fn find(&self, id: &str) -> Result<StoredSchedule, ScheduleError> {
        self.store
            .schedule(id)?
            .ok_or_else(|| ScheduleError::NotFound(id.to_string()))
    }

    /// Refuses a change to a schedule that has ended or is ending.
    fn changeable(s: &StoredSchedule) -> Result<(), ScheduleError> {
        let id = s.spec.id.clone();
        match s.state {
            JobScheduleState::Completed => Err(ScheduleError::Completed(id)),
            JobScheduleState::Terminating => Err(ScheduleError::Terminating(id)),
            JobScheduleState::Deleting => Err(ScheduleError::Deleting(id)),
            JobScheduleState::Active | JobScheduleState::Disabled => Ok(()),
        }
    }

    fn update(&self, id: &str, c: Change, now: DateTime<Utc>) -> Result<(), ScheduleError> {
        let mut s = self.find(id)?;
        Self::changeable(&s)?;
        if let Some(sched) = c.schedule {
            s.spec.schedule = sched;
            // A schedule that has not run yet starts over from now.
            s.next_due = timing::next_due(&s.spec.schedule, s.last_due, now);
        }
        if let Some(j) = c.job_specification {
            s.spec.job_specification = j;
        }
        if let Some(m) = c.metadata {
            s.spec.metadata = m;
        }
        s.last_modified = Some(now);
        self.store.put_schedule(&s)?;
        Ok(())
    }

    /// Disables (`enable` false) or enables a schedule; one already so is left as it is.
    fn switch(&self, id: &str, enable: bool, now: DateTime<Utc>) -> Result<(), ScheduleError> {
        let mut s = self.find(id)?;
        Self::changeable(&s)?;
        let (from, to) = if enable {
            (JobScheduleState::Disabled, JobScheduleState::Active)
        } else {
            (JobScheduleState::Active, JobScheduleState::Disabled)
        };
        if s.state == from {
            s.set_state(to, now);
            self.store.put_schedule(&s)?;
            tracing::info!(schedule = %s.spec.id, state = %to, "job schedule {}", if enable { "enabled" } else { "disabled" });
        }
        Ok(())
    }

    /// Terminates or deletes a schedule: it creates no more jobs from now on; the passes
    /// end its jobs.
    fn end(&self, id: &str, to: JobScheduleState, now: DateTime<Utc>) -> Result<(), ScheduleError> {
        let mut s = self.find(id)?;
        match (s.state, to) {
            (JobScheduleState::Deleting, _) => Err(ScheduleError::Deleting(s.spec.id)),
            (JobScheduleState::Terminating, JobScheduleState::Terminating) => {
                Err(ScheduleError::Terminating(s.spec.id))
            }
            (JobScheduleState::Completed, JobScheduleState::Terminating) => {
                Err(ScheduleError::Completed(s.spec.id))
            }
            _ => {
                s.set_state(to, now);
                self.store.put_schedule(&s)?;
                tracing::info!(schedule = %s.spec.id, state = %to, "job schedule ending");
                Ok(())
            }
        }
    }

    /// Looks at every schedule at `now`: creates what is due, skips what is too late,
    /// completes, terminates or deletes. Says when to look again.
    async fn pass(&self, now: DateTime<Utc>) -> Wake {
        let mut wake = Wake::default();
        match self.store.schedules() {
            Ok(all) => {
                for s in all {
                    self.advance(s, now, &mut wake).await;
                }
            }
            Err(e) => {
                tracing::error!(error = %Chain(&e), "cannot read the job schedules");
                wake.poll = true;
            }
        }
        wake
    }

    /// The schedule's last job, if it still exists.
    fn recent(&self, s: &StoredSchedule) -> Result<Option<JobView>, StoreError> {
        match &s.recent_job {
            Some(id) => self.store.job(id),
            None => Ok(None),
        }
    }

    async fn advance(&self, mut s: StoredSchedule, now: DateTime<Utc>, wake: &mut Wake) {
        let id = s.spec.id.clone();
        let failed = |wake: &mut Wake, what: &str, e: &(dyn std::error::Error + 'static)| {
            tracing::error!(schedule = %id, error = %Chain(e), "{what}");
            wake.poll = true;
        };
        let recent = match self.recent(&s) {
            Ok(j) => j,
            Err(e) => return failed(wake, "cannot read the schedule's last job", &e),
        };
        match s.state {
            JobScheduleState::Active => self.run_due(s, recent, now, wake),
            JobScheduleState::Disabled | JobScheduleState::Completed => {}
            JobScheduleState::Terminating => match recent {
                Some(job) if job.state != JobState::Completed => {
                    wake.poll = true;
                    if matches!(
                        job.state,
                        JobState::Active
                            | JobState::Disabling
                            | JobState::Disabled
                            | JobState::Enabling
                    ) {
                        if let Err(e) = self
                            .sched
                            .terminate_job(&job.spec.id, TERMINATE_JOB_SCHEDULE)
                            .await
                        {
                            failed(wake, "cannot terminate the schedule's job", &e);
                        }
                    }
                }
                _ => {
                    s.set_state(JobScheduleState::Completed, now);
                    match self.store.put_schedule(&s) {
                        Ok(()) => tracing::info!(schedule = %id, "job schedule terminated"),
                        Err(e) => failed(wake, "cannot record the schedule's end", &e),
                    }
                }
            },
            JobScheduleState::Deleting => {
                if let Err(e) = self.delete_jobs(&s, wake).await {
                    failed(wake, "cannot delete the schedule's jobs", &e);
                }
            }
        }
    }

    /// An active schedule's runs at `now`, until it waits or completes.
    fn run_due(
        &self,
        mut s: StoredSchedule,
        mut recent: Option<JobView>,
        now: DateTime<Utc>,
        wake: &mut Wake,
    ) {
        let id = s.spec.id.clone();
        loop {
            let state = timing::State {
                next_due: s.next_due,
                job_active: recent
                    .as_ref()
                    .is_some_and(|j| j.state != JobState::Completed),
            };
            let mut next = s.clone();
            match timing::step(&s.spec.schedule, state, now) {
                Step::Wait { until, on_job } => {
                    wake.until(until);
                    wake.poll |= on_job;
                    return;
                }
                Step::Complete => {
                    next.set_state(JobScheduleState::Completed, now);
                    if let Err(e) = self.store.put_schedule(&next) {
                        tracing::error!(schedule = %id, error = %Chain(&e), "cannot record the schedule's end");
                        wake.poll = true;
                    } else {
                        tracing::info!(schedule = %id, "job schedule completed: no run left");
                    }
                    return;
                }
                Step::Skip {
                    count,
                    last,
                    next: after,
                } => {
                    tracing::warn!(schedule = %id, runs = count, last_due = %last, "job schedule run(s) skipped: not created within the start window or the interval");
                    next.skipped += count;
                    next.last_due = Some(last);
                    next.next_due = after;
                    if let Err(e) = self.store.put_schedule(&next) {
                        tracing::error!(schedule = %id, error = %Chain(&e), "cannot record the skipped run");
                        wake.poll = true;
                        return;
                    }
                }
                Step::Create { due, next: after } => {
                    next.created += 1;
                    next.last_due = Some(due);
                    next.next_due = after;
                    let job_id = job_schedule::job_id(&id, next.created);
                    let spec = s.spec.job_specification.job(job_id.clone());
                    if let Some(p) = berth_proto::validate::job_fields(&spec, &self.rt.pool)
                        .into_iter()
                        .next()
                    {
                        // The pool changed since the schedule was added.
                        tracing::error!(schedule = %id, job = %job_id, problem = %format!("{}: {}", p.path, p.message), "job schedule run skipped: its jobSpecification does not fit this pool");
                        next.created -= 1;
                        next.skipped += 1;
                        if let Err(e) = self.store.put_schedule(&next) {
                            tracing::error!(schedule = %id, error = %Chain(&e), "cannot record the skipped run");
                            wake.poll = true;
                            return;
                        }
                    } else {
                        next.recent_job = Some(job_id.clone());
                        let job = JobView::new(spec);
                        // Its job manager task, created with it, as `POST /jobs` does.
                        let manager: Vec<_> = job
                            .spec
                            .job_manager_task
                            .iter()
                            .map(|m| {
                                let t = m.task_spec(self.rt.pool.task_slots());
                                crate::schedule::TaskReport::active(&self.rt, &job.spec, t, None)
                                    .view
                            })
                            .collect();
                        match self.store.add_schedule_job(&next, &job, &manager) {
                            Ok(()) => {
                                tracing::info!(schedule = %id, job = %job_id, due = %due, "job schedule created its job");
                                self.sched.job_changed(&job_id);
                                recent = Some(job);
                            }
                            Err(StoreError::Exists(what)) => {
                                // Not this run's: counted, and the next number is tried.
                                tracing::error!(schedule = %id, job = %job_id, "{what} already exists; the run takes the next number");
                                let mut counted = s.clone();
                                counted.created += 1;
                                if let Err(e) = self.store.put_schedule(&counted) {
                                    tracing::error!(schedule = %id, error = %Chain(&e), "cannot record the schedule");
                                    wake.poll = true;
                                    return;
                                }
                                next = counted;
                            }
                            Err(e) => {
                                tracing::error!(schedule = %id, job = %job_id, error = %Chain(&e), "cannot create the schedule's job; trying again");
                                wake.poll = true;
                                return;
                            }
                        }
                    }
                }
            }
            s = next;
        }
    }

    /// A deleting schedule's jobs are deleted as `DELETE /jobs/{job}` does, through the
    /// scheduler (running tasks stopped, release tasks run, files removed); once none is
    /// left, the schedule goes, with `workitems/<schedule>`.
    async fn delete_jobs(&self, s: &StoredSchedule, wake: &mut Wake) -> Result<(), StoreError> {
        let id = &s.spec.id;
        let jobs: Vec<JobView> = self
            .store
            .jobs()?
            .into_iter()
            .filter(|j| job_schedule::is_job_of(&j.spec.id, id))
            .collect();
        if jobs.is_empty() {
            self.store.delete_schedule(id)?;
            let dir = self.rt.node.layout.schedule_dir(id);
            // Its jobs' tasks owned what was inside: removed without following links.
            if let Err(e) = crate::node::beneath::remove_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %Chain(&e), "could not remove the schedule's files");
            }
            tracing::info!(schedule = %id, "job schedule deleted");
            return Ok(());
        }
        wake.poll = true;
        for mut j in jobs.into_iter().filter(|j| j.state != JobState::Deleting) {
            j.state = JobState::Deleting;
            j.state_transition_time = Utc::now();
            self.store.put_job(&j)?;
            for t in self.store.tasks(&j.spec.id, None)? {
                if t.view.state != TaskState::Completed {
                    self.sched.end(&t.view.job_id, &t.view.spec.id).await?;
                }
            }
        }
        self.sched.job_ending();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
