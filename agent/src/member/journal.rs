//! The member's hook into the local scheduler: a `Store` decorator that forwards every
//! call to the node's SQLite store and, when a claimed task (one with `poolAttempt`)
//! is written `running`/`preparing` or `completed`, journals a report for the service
//! and hands it to the reporter. The scheduler needs no change.
//!
//! Pending reports are files (`<node root>/berth/pool-reports/<attempt>.<order>-<event>.json`),
//! written before `put_task` returns and removed once the service answered, so a
//! completion not yet acknowledged is sent again after an agent restart.

use crate::store::{JobOnNode, QueueHead, Store, StoreError, StoredSchedule, StoredTask};
use berth_proto::node_protocol::{AttemptId, ReportEvent};
use berth_proto::{JobView, TaskState, TaskView};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};

/// A report not yet acknowledged: a `node_protocol::Report` less the epoch, which is
/// the one current when it is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    pub attempt: AttemptId,
    pub job_id: String,
    pub task_id: String,
    #[serde(flatten)]
    pub event: ReportEvent,
}

impl Pending {
    /// Whether it says how the attempt ended (Completed, Abandoned).
    pub fn is_end(&self) -> bool {
        !matches!(self.event, ReportEvent::Running { .. })
    }

    /// Sent in this order per attempt: running before how it ended.
    fn order(&self) -> (u8, &'static str) {
        match self.event {
            ReportEvent::Running { .. } => (1, "running"),
            ReportEvent::Completed { .. } => (2, "completed"),
            ReportEvent::Abandoned { .. } => (3, "abandoned"),
        }
    }
}

/// What the journal tells the reporter.
#[derive(Debug)]
pub enum Note {
    /// Send this report (its file, when it could be written).
    Report(Option<PathBuf>, Box<Pending>),
    /// A fenced attempt's local task has ended: forget it.
    Forget {
        job: String,
        task: String,
        attempt: AttemptId,
    },
}

/// The pending reports' directory.
pub struct Pendings {
    dir: PathBuf,
}

impl Pendings {
    /// Reports under `dir` (made if missing).
    pub fn open(dir: &Path) -> std::io::Result<Pendings> {
        std::fs::create_dir_all(dir)?;
        Ok(Pendings { dir: dir.into() })
    }

    /// Writes `p` durably (a temporary file, synced, renamed); returns its path.
    pub fn write(&self, p: &Pending) -> std::io::Result<PathBuf> {
        use std::io::Write;
        let (n, what) = p.order();
        let path = self.dir.join(format!("{}.{n}-{what}.json", p.attempt));
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(p).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Every pending report, by attempt, then running before completed/abandoned.
    pub fn list(&self) -> Vec<(PathBuf, Pending)> {
        let mut out = vec![];
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for e in rd.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path).map(|b| serde_json::from_slice::<Pending>(&b)) {
                Ok(Ok(p)) => out.push((path, p)),
                _ => {
                    tracing::warn!(file = %path.display(), "an unreadable pending report; dropped");
                    std::fs::remove_file(&path).ok();
                }
            }
        }
        out.sort_by_key(|(_, p)| (p.attempt, p.order().0));
        out
    }

    /// Drops every pending report of `attempt`.
    pub fn remove_attempt(&self, attempt: AttemptId) {
        for (path, p) in self.list() {
            if p.attempt == attempt {
                std::fs::remove_file(&path).ok();
            }
        }
    }

    /// Attempts with a completion or an abandonment not yet acknowledged.
    pub fn ended(&self) -> HashSet<AttemptId> {
        self.list()
            .into_iter()
            .filter(|(_, p)| !matches!(p.event, ReportEvent::Running { .. }))
            .map(|(_, p)| p.attempt)
            .collect()
    }
}

/// What the journal, the reporter, the claim loop and fencing share.
pub struct Ledger {
    pub pending: Pendings,
    /// Attempts this node gave up: their local ends are not reported.
    pub fenced: Mutex<HashSet<AttemptId>>,
    /// Attempts whose `running` was journalled, with the `retryCount` it carried: a
    /// local retry is reported again, so the service's view counts it even if the node
    /// is lost before the attempt ends (the next attempt goes on from that count).
    running_sent: Mutex<std::collections::HashMap<AttemptId, i32>>,
    /// Signalled when a local task completes or is forgotten: a slot may be free.
    pub freed: Notify,
    /// Ends (Completed, Abandoned) handed to the reporter and not yet answered: the
    /// service still counts their slots as used.
    ends_unanswered: std::sync::atomic::AtomicUsize,
    /// Signalled when the reporter had an end answered (or gave it up).
    pub end_answered: Notify,
    notes: mpsc::UnboundedSender<Note>,
}

impl Ledger {
    pub fn new(pending: Pendings) -> (Arc<Ledger>, mpsc::UnboundedReceiver<Note>) {
        let (notes, rx) = mpsc::unbounded_channel();
        let l = Ledger {
            pending,
            fenced: Default::default(),
            running_sent: Default::default(),
            freed: Notify::new(),
            ends_unanswered: Default::default(),
            end_answered: Notify::new(),
            notes,
        };
        (Arc::new(l), rx)
    }

    pub fn is_fenced(&self, a: AttemptId) -> bool {
        self.fenced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&a)
    }

    /// `a` is gone from this node: nothing of it is written any more.
    pub fn forgotten(&self, a: AttemptId) {
        self.fenced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&a);
    }

    /// Marks `a` fenced; false if it already was.
    pub fn fence(&self, a: AttemptId) -> bool {
        self.fenced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(a)
    }

    /// Ends handed to the reporter and not yet answered.
    pub fn ends_unanswered(&self) -> usize {
        self.ends_unanswered
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Counts an end the reporter is about to send (one from an earlier process as well).
    pub fn end_queued(&self) {
        self.ends_unanswered
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The reporter is done with an end: answered, refused or dropped.
    pub fn end_done(&self) {
        self.ends_unanswered
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.end_answered.notify_waiters();
    }

    /// Journals `p` and hands it to the reporter.
    pub fn report(&self, p: Pending) {
        if p.is_end() {
            self.end_queued();
        }
        let path = match self.pending.write(&p) {
            Ok(path) => Some(path),
            Err(e) => {
                tracing::error!(attempt = p.attempt, error = %e, "cannot journal a report; it is sent but not kept across a restart");
                None
            }
        };
        self.notes.send(Note::Report(path, Box::new(p))).ok();
    }

    /// What a write of `t` means for the service.
    fn written(&self, t: &TaskView) {
        if t.state == TaskState::Completed {
            self.freed.notify_one();
        }
        let Some(attempt) = t.pool_attempt else {
            return;
        };
        if self.is_fenced(attempt) {
            if t.state == TaskState::Completed {
                let (job, task) = (t.job_id.clone(), t.spec.id.clone());
                self.notes.send(Note::Forget { job, task, attempt }).ok();
            }
            return;
        }
        let event = match t.state {
            TaskState::Running | TaskState::Preparing => {
                let retries = t.execution_info.as_ref().map_or(0, |e| e.retry_count);
                let before = self
                    .running_sent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(attempt, retries);
                if before == Some(retries) {
                    return;
                }
                ReportEvent::Running { task: t.clone() }
            }
            TaskState::Completed => {
                self.running_sent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&attempt);
                ReportEvent::Completed { task: t.clone() }
            }
            // Back in the local queue after it began (its job's preparation failed here):
            // it is given back, for another node to run.
            TaskState::Active => {
                let began = self
                    .running_sent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&attempt)
                    .is_some();
                if !began {
                    return;
                }
                self.fence(attempt);
                let (job, task) = (t.job_id.clone(), t.spec.id.clone());
                self.notes.send(Note::Forget { job, task, attempt }).ok();
                ReportEvent::Abandoned {
                    reason: "the task went back to the node's queue (its job preparation task failed here)".into(),
                }
            }
        };
        self.report(Pending {
            attempt,
            job_id: t.job_id.clone(),
            task_id: t.spec.id.clone(),
            event,
        });
    }
}

/// The decorator: `inner` plus the journal.
pub struct Journal {
    pub inner: Arc<dyn Store>,
    pub ledger: Arc<Ledger>,
}

impl Store for Journal {
    fn add_job(&self, job: &JobView) -> Result<(), StoreError> {
        self.inner.add_job(job)
    }
    fn put_job(&self, job: &JobView) -> Result<(), StoreError> {
        self.inner.put_job(job)
    }
    fn job(&self, id: &str) -> Result<Option<JobView>, StoreError> {
        self.inner.job(id)
    }
    fn jobs(&self) -> Result<Vec<JobView>, StoreError> {
        self.inner.jobs()
    }
    fn delete_job(&self, id: &str) -> Result<(), StoreError> {
        self.inner.delete_job(id)?;
        self.ledger.freed.notify_one();
        Ok(())
    }
    fn job_on_node(&self, job: &str) -> Result<Option<JobOnNode>, StoreError> {
        self.inner.job_on_node(job)
    }
    fn put_job_on_node(&self, job: &str, v: &JobOnNode) -> Result<(), StoreError> {
        self.inner.put_job_on_node(job, v)
    }
    fn add_tasks(&self, tasks: &[TaskView]) -> Result<Vec<i64>, StoreError> {
        self.inner.add_tasks(tasks)
    }
    fn put_task(&self, task: &TaskView) -> Result<(), StoreError> {
        self.inner.put_task(task)?;
        self.ledger.written(task);
        Ok(())
    }
    fn task(&self, job: &str, id: &str) -> Result<Option<StoredTask>, StoreError> {
        self.inner.task(job, id)
    }
    fn tasks(&self, job: &str, state: Option<TaskState>) -> Result<Vec<StoredTask>, StoreError> {
        self.inner.tasks(job, state)
    }
    fn tasks_after(
        &self,
        job: &str,
        state: Option<TaskState>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredTask>, StoreError> {
        self.inner.tasks_after(job, state, after, limit)
    }
    fn tasks_in(&self, states: &[TaskState]) -> Result<Vec<StoredTask>, StoreError> {
        self.inner.tasks_in(states)
    }
    fn recently_completed(&self, limit: usize) -> Result<Vec<StoredTask>, StoreError> {
        self.inner.recently_completed(limit)
    }
    fn delete_task(&self, job: &str, id: &str) -> Result<(), StoreError> {
        self.inner.delete_task(job, id)?;
        self.ledger.freed.notify_one();
        Ok(())
    }
    fn active_queue(
        &self,
        after: i64,
        limit: usize,
        jobs: Option<&[String]>,
    ) -> Result<Vec<QueueHead>, StoreError> {
        self.inner.active_queue(after, limit, jobs)
    }
    fn count_by_state(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.count_by_state()
    }
    fn add_schedule(&self, s: &StoredSchedule) -> Result<(), StoreError> {
        self.inner.add_schedule(s)
    }
    fn put_schedule(&self, s: &StoredSchedule) -> Result<(), StoreError> {
        self.inner.put_schedule(s)
    }
    fn schedule(&self, id: &str) -> Result<Option<StoredSchedule>, StoreError> {
        self.inner.schedule(id)
    }
    fn schedules(&self) -> Result<Vec<StoredSchedule>, StoreError> {
        self.inner.schedules()
    }
    fn delete_schedule(&self, id: &str) -> Result<(), StoreError> {
        self.inner.delete_schedule(id)
    }
    fn add_schedule_job(
        &self,
        s: &StoredSchedule,
        job: &JobView,
        tasks: &[TaskView],
    ) -> Result<(), StoreError> {
        self.inner.add_schedule_job(s, job, tasks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    fn task(attempt: Option<i64>, state: TaskState) -> TaskView {
        let spec =
            serde_json::from_value(serde_json::json!({"id": "t", "commandLine": "true"})).unwrap();
        TaskView {
            spec,
            job_id: "j".into(),
            state,
            state_transition_time: chrono::Utc::now(),
            creation_time: chrono::Utc::now(),
            execution_info: None,
            node_info: None,
            pool_attempt: attempt,
        }
    }

    #[test]
    fn claimed_tasks_are_journalled_once_running_and_once_completed() {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        inner
            .add_job(&JobView::new(
                serde_json::from_value(serde_json::json!({"id": "j"})).unwrap(),
            ))
            .unwrap();
        let (ledger, mut rx) = Ledger::new(Pendings::open(&dir.path().join("p")).unwrap());
        let j = Journal {
            inner,
            ledger: ledger.clone(),
        };
        j.add_tasks(&[task(Some(7), TaskState::Active)]).unwrap();
        j.put_task(&task(Some(7), TaskState::Running)).unwrap();
        j.put_task(&task(Some(7), TaskState::Running)).unwrap();
        j.put_task(&task(Some(7), TaskState::Completed)).unwrap();
        let mut events = vec![];
        while let Ok(Note::Report(path, p)) = rx.try_recv() {
            assert!(path.unwrap().exists());
            events.push(p.order().1);
        }
        assert_eq!(events, ["running", "completed"]);
        let listed: Vec<_> = ledger
            .pending
            .list()
            .into_iter()
            .map(|(_, p)| p.order().1)
            .collect();
        assert_eq!(listed, ["running", "completed"], "kept across a restart");
        assert_eq!(ledger.pending.ended(), HashSet::from([7]));
        // A fenced attempt's end is not reported: the reporter forgets its task.
        ledger.pending.remove_attempt(7);
        assert!(ledger.fence(7));
        j.put_task(&task(Some(7), TaskState::Completed)).unwrap();
        assert!(matches!(rx.try_recv(), Ok(Note::Forget { .. })));
        assert!(ledger.pending.list().is_empty());
        // Back in the local queue after it began: given back.
        j.put_task(&task(Some(8), TaskState::Running)).unwrap();
        j.put_task(&task(Some(8), TaskState::Active)).unwrap();
        let got: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|n| match n {
                Note::Report(_, p) => p.order().1.to_string(),
                Note::Forget { attempt, .. } => format!("forget {attempt}"),
            })
            .collect();
        assert_eq!(got, ["running", "forget 8", "abandoned"]);
        assert!(ledger.is_fenced(8));
        // A local task is not the service's business.
        j.put_task(&task(None, TaskState::Completed)).unwrap();
        assert!(rx.try_recv().is_err());
    }
}
