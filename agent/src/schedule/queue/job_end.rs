//! JOB END: a job being terminated or deleted gets its release task once none of its
//! tasks runs any more, then completes or goes (`end_jobs`, `finish_job`).

use super::*;
use berth_proto::exit::JobAction;

impl Queue {
    /// Terminates an active job (see `Scheduler::terminate_job`); a job already ending or
    /// completed is left as it is.
    pub(super) fn terminate_job(&mut self, id: &str, reason: &str) -> Result<(), StoreError> {
        let store = self.sh.store.clone();
        let Some(mut job) = store.job(id)? else {
            return Ok(());
        };
        if !matches!(
            job.state,
            JobState::Active | JobState::Disabling | JobState::Disabled | JobState::Enabling
        ) {
            return Ok(());
        }
        let rec = store.job_on_node(id)?;
        job.terminated_because(reason);
        if job_tasks::release_pending(&job.spec, rec.as_ref()) {
            job.state = JobState::Terminating;
            job.state_transition_time = Utc::now();
        } else {
            job.complete();
        }
        store.put_job(&job)?;
        for t in store.tasks(id, None)? {
            if t.view.state == TaskState::Completed {
                continue;
            }
            let k = key(&t.view.job_id, &t.view.spec.id);
            match self.running.get(&k) {
                Some(token) => token.cancel(),
                None => self.sh.end_active(&k)?,
            }
        }
        self.ending = true;
        Ok(())
    }

    /// A task's `exitConditions` `jobAction` (its job carries such actions out):
    /// `terminate` ends the job with `terminateReason` `TaskFailed`; `disable` disables
    /// it with `requeue`, as Batch does.
    pub(super) fn job_action(&mut self, id: &str, action: JobAction) {
        let done = match action {
            JobAction::None => return,
            JobAction::Terminate => {
                tracing::warn!(job = %id, reason = berth_proto::job::TERMINATE_TASK_FAILED, "a task's exit conditions terminate its job");
                self.terminate_job(id, berth_proto::job::TERMINATE_TASK_FAILED)
            }
            JobAction::Disable => {
                tracing::warn!(job = %id, "a task's exit conditions disable its job");
                self.disable_job(id, berth_proto::DisableJobOption::Requeue)
            }
        };
        if let Err(e) = done {
            tracing::error!(job = %id, error = %Chain(&e), "cannot carry out the task's jobAction");
        }
    }

    /// The job manager task completed and its job ends with it (`killJobOnCompletion`,
    /// `terminateReason` `JMComplete`), its other tasks with it.
    pub(super) fn manager_done(&mut self, id: &str) {
        tracing::info!(job = %id, "the job manager task completed: the job ends (killJobOnCompletion)");
        if let Err(e) = self.terminate_job(id, berth_proto::job::TERMINATE_JM_COMPLETE) {
            tracing::error!(job = %id, error = %Chain(&e), "cannot terminate the job");
        }
    }

    /// Disables an active job (see `Scheduler::disable_job`); one disabling or disabled
    /// already is left as it is.
    pub(super) fn disable_job(
        &mut self,
        id: &str,
        how: berth_proto::DisableJobOption,
    ) -> Result<(), StoreError> {
        use berth_proto::DisableJobOption as How;
        let store = self.sh.store.clone();
        let Some(mut job) = store.job(id)? else {
            return Ok(());
        };
        if job.state != JobState::Active {
            return Ok(());
        }
        job.state = JobState::Disabling;
        job.state_transition_time = Utc::now();
        store.put_job(&job)?;
        self.levels = None;
        let lower = id.to_ascii_lowercase();
        for (k, token) in self.running.iter().filter(|((j, _), _)| *j == lower) {
            match how {
                How::Wait => {}
                How::Terminate => token.cancel(),
                How::Requeue => {
                    self.sh
                        .requeue
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(k.clone());
                    token.cancel();
                }
            }
        }
        self.disabled_once_idle(id);
        Ok(())
    }

    /// A `disabling` job none of whose tasks runs any more is `disabled`.
    pub(super) fn disabled_once_idle(&mut self, id: &str) {
        let lower = id.to_ascii_lowercase();
        if self.running.keys().any(|(j, _)| *j == lower) {
            return;
        }
        let Ok(Some(mut job)) = self.sh.store.job(id) else {
            return;
        };
        if job.state != JobState::Disabling {
            return;
        }
        job.state = JobState::Disabled;
        job.state_transition_time = Utc::now();
        if let Err(e) = self.sh.store.put_job(&job) {
            tracing::error!(job = %id, error = %Chain(&e), "cannot record the job as disabled");
        }
    }

    /// Enables a disabled or disabling job: `active` again (Batch's `enabling` lasts no
    /// longer than this write on one node).
    pub(super) fn enable_job(&mut self, id: &str) -> Result<(), StoreError> {
        let Some(mut job) = self.sh.store.job(id)? else {
            return Ok(());
        };
        if !matches!(job.state, JobState::Disabled | JobState::Disabling) {
            return Ok(());
        }
        job.state = JobState::Active;
        job.state_transition_time = Utc::now();
        self.sh.store.put_job(&job)?;
        self.levels = None;
        Ok(())
    }

    /// A job with `onAllTasksComplete: terminatejob` whose tasks all completed (none
    /// queued, none running here) ends with `terminateReason` `AllTasksComplete`.
    pub(super) fn all_tasks_complete(&mut self, id: &str) {
        let Ok(Some(job)) = self.sh.store.job(id) else {
            return;
        };
        if job.state != JobState::Active
            || job.spec.on_all_tasks_complete != Some(berth_proto::OnAllTasksComplete::TerminateJob)
        {
            return;
        }
        let lower = id.to_ascii_lowercase();
        if self.running.keys().any(|(j, _)| *j == lower) {
            return;
        }
        match self
            .sh
            .store
            .active_queue(0, 1, Some(std::slice::from_ref(&lower)))
        {
            Ok(q) if q.is_empty() => {}
            Ok(_) => return,
            Err(e) => {
                tracing::error!(job = %id, error = %Chain(&e), "cannot read the job's queue");
                return;
            }
        }
        tracing::info!(job = %id, "all the job's tasks completed: it ends (onAllTasksComplete)");
        if let Err(e) = self.terminate_job(id, berth_proto::job::TERMINATE_ALL_TASKS_COMPLETE) {
            tracing::error!(job = %id, error = %Chain(&e), "cannot terminate the job");
        }
    }

    /// Jobs whose `constraints.maxWallClockTime` passed before this process could time
    /// them (created long ago, or an agent restart) end now.
    pub(super) fn past_deadline(&mut self) {
        while let Some((at, id)) = self.deadline.clone() {
            if at > tokio::time::Instant::now() {
                return;
            }
            if !self.wall_clock_expired(&id) {
                // Tried again at the next pass.
                return;
            }
            self.levels();
        }
    }

    /// The job passed its `constraints.maxWallClockTime`: it ends with `terminateReason`
    /// `MaxWallClockTimeExpiry`, its running tasks stopped. False if that could not be
    /// recorded.
    pub(super) fn wall_clock_expired(&mut self, id: &str) -> bool {
        tracing::warn!(job = %id, "the job passed its maxWallClockTime: it ends");
        let ended = self.terminate_job(id, berth_proto::job::TERMINATE_MAX_WALL_CLOCK);
        if let Err(e) = &ended {
            tracing::error!(job = %id, error = %Chain(e), "cannot terminate the job");
        }
        self.levels = None;
        ended.is_ok()
    }

    /// Jobs being terminated or deleted: once none of their tasks runs, their release task
    /// runs (if preparation ran here), then the job completes or is deleted.
    pub(super) fn end_jobs(&mut self) {
        if !std::mem::take(&mut self.ending) {
            return;
        }
        let jobs = match self.sh.store.jobs() {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %Chain(&e), "cannot read the jobs");
                return;
            }
        };
        for job in jobs {
            if !matches!(job.state, JobState::Terminating | JobState::Deleting) {
                continue;
            }
            let lower = job.spec.id.to_ascii_lowercase();
            if self.releasing.contains(&lower) {
                continue;
            }
            if self.running.keys().any(|(j, _)| *j == lower) {
                // Again when its tasks have stopped (each end wakes the loop).
                self.ending = true;
                continue;
            }
            let rec = self.sh.store.job_on_node(&job.spec.id).ok().flatten();
            if !job_tasks::release_pending(&job.spec, rec.as_ref()) {
                self.sh.finish_job(&job.spec.id);
                continue;
            }
            if !self
                .sh
                .record(&job.spec.id, "the job release task's start", |rec| {
                    rec.release = Some(job_tasks::started(&self.sh.rt, &job.spec, Which::Release));
                })
            {
                continue;
            }
            self.releasing.insert(lower.clone());
            let me = self.sh.clone();
            self.set.spawn(self.sh.rt.tasks.track_future(async move {
                // Only a shutdown (`on_shutdown = stop`) stops it; it then runs again at
                // the next start.
                let token = me.shutdown.child_token();
                let info = job_tasks::run(me.rt.clone(), &job.spec, Which::Release, &token).await;
                let stopped = me.shutdown.is_cancelled();
                me.record(&job.spec.id, "the job release task's end", |rec| {
                    rec.release = (!stopped)
                        .then(|| job_tasks::ended(&me.rt, &job.spec, Which::Release, &info));
                });
                if !stopped {
                    me.finish_job(&job.spec.id);
                }
                Done::Release(lower)
            }));
        }
    }
}

impl Shared {
    /// A terminating job completes; a deleting one goes, with its files.
    pub(super) fn finish_job(&self, id: &str) {
        let Ok(Some(mut job)) = self.store.job(id) else {
            return;
        };
        let result = match job.state {
            JobState::Deleting => {
                let dir = self.rt.node.layout.job_files(&job.spec.id);
                if let Err(e) = crate::node::beneath::remove_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %Chain(&e), "could not remove the job's files");
                }
                self.store.delete_job(id)
            }
            JobState::Terminating => {
                job.complete();
                self.store.put_job(&job)
            }
            _ => return,
        };
        if let Err(e) = result {
            tracing::error!(job = %id, error = %Chain(&e), "cannot record the job's end");
        }
    }
}
