//! JOB END: a job being terminated or deleted gets its release task once none of its
//! tasks runs any more, then completes or goes (`end_jobs`, `finish_job`).

use super::*;

impl Scheduler {
    /// Jobs being terminated or deleted: once none of their tasks runs, their release task
    /// runs (if preparation ran here), then the job completes or is deleted.
    pub(super) fn end_jobs(self: &Arc<Self>, set: &mut JoinSet<Done>) {
        if !self.ending.swap(false, Ordering::Relaxed) {
            return;
        }
        let jobs = match self.store.jobs() {
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
            if lock(&self.releasing).contains(&lower) {
                continue;
            }
            if lock(&self.running).keys().any(|(j, _)| *j == lower) {
                // Again when its tasks have stopped (each end wakes the loop).
                self.ending.store(true, Ordering::Relaxed);
                continue;
            }
            let rec = self.store.job_on_node(&job.spec.id).ok().flatten();
            if !job_tasks::release_pending(&job.spec, rec.as_ref()) {
                self.finish_job(&job.spec.id);
                continue;
            }
            if !self.record(&job.spec.id, "the job release task's start", |rec| {
                rec.release = Some(job_tasks::started(&self.rt, &job.spec, Which::Release));
            }) {
                continue;
            }
            lock(&self.releasing).insert(lower.clone());
            let me = self.clone();
            set.spawn(self.rt.tasks.track_future(async move {
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
                lock(&me.releasing).remove(&lower);
                (None, 0)
            }));
        }
    }

    /// A terminating job completes; a deleting one goes, with its files.
    pub(super) fn finish_job(&self, id: &str) {
        let Ok(Some(mut job)) = self.store.job(id) else {
            return;
        };
        let result = match job.state {
            JobState::Deleting => {
                let dir = self
                    .rt
                    .node
                    .layout
                    .root()
                    .join("workitems")
                    .join(&job.spec.id);
                if let Err(e) = crate::node::beneath::remove_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %Chain(&e), "could not remove the job's files");
                }
                self.store.delete_job(id)
            }
            JobState::Terminating => {
                job.state = JobState::Completed;
                job.state_transition_time = Utc::now();
                self.store.put_job(&job)
            }
            _ => return,
        };
        if let Err(e) = result {
            tracing::error!(job = %id, error = %Chain(&e), "cannot record the job's end");
        }
    }
}
