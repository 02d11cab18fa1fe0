//! The agent as a member of a service's pool (`berth agent --service URL --pool ID`):
//! it enrols (`enrol.rs`), runs the pool the service gives it, heartbeats and fences
//! itself when it cannot (`heartbeat.rs`), claims work into its local SQLite store,
//! where the one local scheduler runs it (`claim.rs`), and reports each claimed task's
//! start and end with its attempt (`journal.rs` hooks the store, `report.rs` sends).
//! The service holds the pool's truth; the local store stays this node's journal.

pub mod claim;
pub mod client;
pub mod enrol;
pub mod heartbeat;
pub mod journal;
#[cfg(test)]
mod on_fake;
pub mod report;
pub mod start;

use crate::error_chain::Chain;
use crate::schedule::queue::Scheduler;
use crate::store::Store;
use crate::task::create::labels;
use crate::task::NodeContext;
use berth_proto::node_protocol::{AttemptId, EnrolRequest, NodeCommand, ReportEvent, Timers};
use berth_proto::TaskState;
use client::Client;
use journal::{Ledger, Pending};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The node credential of the current enrolment.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub epoch: i64,
}

/// Everything the member's loops share.
pub struct Member {
    pub client: Client,
    pub session: RwLock<Session>,
    pub timers: Timers,
    pub rt: Arc<NodeContext>,
    /// The journalled store (the scheduler's).
    pub store: Arc<dyn Store>,
    pub sched: Scheduler,
    pub ledger: Arc<Ledger>,
    /// What re-enrolment sends (after `NodeSuperseded`) and with which secret.
    pub enrol: EnrolRequest,
    pub secret: String,
    /// The service's file-proxy credential of the current enrolment, which the TCP
    /// API's guard accepts for file reads.
    pub proxy: crate::api::ProxyCredential,
    /// The file API's address once the TCP listener is bound (sent in heartbeats).
    pub file_address: OnceLock<String>,
    /// When the last successful heartbeat was sent (monotonic).
    pub last_ok: Mutex<tokio::time::Instant>,
    /// Set while this node has fenced itself and not heard from the service since.
    pub self_fenced: std::sync::atomic::AtomicBool,
    /// Cancelled to stop the agent (SIGTERM, `Remove`).
    pub stop: CancellationToken,
    /// Cancelled once the member began (after pool start and adoption); commands that
    /// come before wait in `early`.
    pub begun: CancellationToken,
    pub early: Mutex<Vec<NodeCommand>>,
}

/// Request timeout of the short calls (heartbeat, report, adopt, leave).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl Member {
    pub fn token(&self) -> String {
        self.session
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .token
            .clone()
    }

    pub fn epoch(&self) -> i64 {
        self.session.read().unwrap_or_else(|p| p.into_inner()).epoch
    }

    /// Local tasks of claimed attempts not yet completed: (attempt, job, task, slots).
    pub fn live(&self) -> Vec<(AttemptId, String, String, u32)> {
        let states = [TaskState::Active, TaskState::Preparing, TaskState::Running];
        let tasks = self.store.tasks_in(&states).unwrap_or_else(|e| {
            tracing::error!(error = %Chain(&e), "cannot read the local tasks");
            vec![]
        });
        tasks
            .into_iter()
            .filter_map(|t| {
                let a = t.view.pool_attempt?;
                let slots = t.view.spec.required_slots();
                Some((a, t.view.job_id, t.view.spec.id, slots))
            })
            .collect()
    }

    /// Whole GPUs free for new claims: those no task holds, less those the claimed
    /// tasks not started yet will take.
    pub fn free_gpus(&self) -> u32 {
        let free = self.rt.gpus.free();
        if free == 0 {
            return 0;
        }
        let slots = self.rt.pool.task_slots();
        let queued = self
            .store
            .tasks_in(&[TaskState::Active])
            .unwrap_or_default();
        let mut jobs = std::collections::HashMap::new();
        let promised: u32 = queued
            .iter()
            .filter(|t| t.view.pool_attempt.is_some())
            .map(|t| {
                let job = jobs
                    .entry(t.view.job_id.to_ascii_lowercase())
                    .or_insert_with(|| self.store.job(&t.view.job_id).ok().flatten());
                let Some(job) = job else { return 0 };
                let request = crate::schedule::gpu_request(&job.spec, &t.view.spec);
                let need = t.view.spec.required_slots();
                self.rt.gpus.whole_need(request.as_deref(), need, slots)
            })
            .sum();
        free.saturating_sub(promised)
    }

    /// Attempts this node holds for the service: live ones not fenced, plus those whose
    /// end is not yet acknowledged.
    pub fn running(&self) -> Vec<AttemptId> {
        let mut a: Vec<AttemptId> = self
            .live()
            .into_iter()
            .map(|l| l.0)
            .filter(|a| !self.ledger.is_fenced(*a))
            .collect();
        a.extend(self.ledger.pending.ended());
        a.sort_unstable();
        a.dedup();
        a
    }

    /// Gives attempt `a` up: its containers are killed and removed, its local task ends
    /// unreported and is forgotten; `abandon` journals an `Abandoned` report for the
    /// service (a self-fence), otherwise its pending reports are dropped (the service
    /// fenced it).
    pub async fn fence(&self, a: AttemptId, abandon: Option<&str>) {
        let first = self.ledger.fence(a);
        if first {
            tracing::warn!(
                attempt = a,
                reason = abandon.unwrap_or("fenced by the service"),
                "fencing a pool attempt"
            );
        }
        let local = self
            .store
            .tasks_in(&[
                TaskState::Active,
                TaskState::Preparing,
                TaskState::Running,
                TaskState::Completed,
            ])
            .unwrap_or_default()
            .into_iter()
            .find(|t| t.view.pool_attempt == Some(a));
        if let Some(t) = &local {
            if t.view.state == TaskState::Completed {
                self.forget(&t.view.job_id, &t.view.spec.id);
                self.ledger.forgotten(a);
            } else if let Err(e) = self.sched.end(&t.view.job_id, &t.view.spec.id).await {
                tracing::error!(attempt = a, error = %Chain(&e), "cannot end the fenced task");
            }
        }
        kill_attempt(&self.rt, a).await;
        self.ledger.pending.remove_attempt(a);
        if let (Some(reason), true) = (abandon, first) {
            let (job_id, task_id) = local
                .map(|t| (t.view.job_id, t.view.spec.id))
                .unwrap_or_default();
            self.ledger.report(Pending {
                attempt: a,
                job_id,
                task_id,
                event: ReportEvent::Abandoned {
                    reason: reason.into(),
                },
            });
        }
    }

    /// Fences every attempt this node holds (self-fence, a newer enrolment).
    pub async fn fence_all(&self, reason: &str) {
        for (a, ..) in self.live() {
            if !self.ledger.is_fenced(a) {
                self.fence(a, Some(reason)).await;
            }
        }
    }

    /// Drops a local task (the service owns it now).
    pub fn forget(&self, job: &str, task: &str) {
        match self.store.delete_task(job, task) {
            Ok(()) | Err(crate::store::StoreError::NotFound(_)) => {}
            Err(e) => tracing::error!(job, task, error = %Chain(&e), "cannot forget the task"),
        }
    }

    /// Carries out the service's commands, in order.
    pub async fn apply(self: &Arc<Self>, commands: Vec<NodeCommand>) {
        if !self.begun.is_cancelled() {
            // During pool start: nothing runs yet that a command could be about.
            let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
            early.extend(commands);
            return;
        }
        for c in commands {
            match c {
                NodeCommand::Fence { attempt } => self.fence(attempt, None).await,
                NodeCommand::Terminate { attempt } => {
                    if let Some((_, job, task, _)) =
                        self.live().into_iter().find(|l| l.0 == attempt)
                    {
                        tracing::info!(attempt, job, task, "terminating a pool task");
                        if let Err(e) = self.sched.end(&job, &task).await {
                            tracing::error!(attempt, error = %Chain(&e), "cannot end the task");
                        }
                    }
                }
                NodeCommand::EndJob { job_id } => self.end_job(&job_id).await,
                NodeCommand::SchedulingState { enabled } => {
                    let s = if enabled { "enabled" } else { "disabled" };
                    self.rt.status.update(|n| n.scheduling_state = s.into());
                    self.ledger.freed.notify_one();
                }
                NodeCommand::Remove => {
                    tracing::warn!("this node was removed from the pool; leaving");
                    self.stop.cancel();
                }
            }
        }
    }

    /// The job ended in the service: terminate the local copy (its release task runs
    /// where it was prepared), then forget it once completed.
    async fn end_job(self: &Arc<Self>, job: &str) {
        let Ok(Some(view)) = self.store.job(job) else {
            return;
        };
        if view.state == berth_proto::JobState::Completed {
            if let Err(e) = self.store.delete_job(job) {
                tracing::error!(job, error = %Chain(&e), "cannot forget the ended job");
            }
            return;
        }
        if let Err(e) = self.sched.terminate_job(job, "JobEnded").await {
            tracing::error!(job, error = %Chain(&e), "cannot end the job here");
            return;
        }
        // Forgotten once its release task ran (a later EndJob repeats the check).
        let (me, job) = (self.clone(), job.to_string());
        tokio::spawn(async move {
            for _ in 0..600 {
                match me.store.job(&job) {
                    Ok(Some(v)) if v.state != berth_proto::JobState::Completed => {}
                    Ok(Some(_)) => {
                        me.store.delete_job(&job).ok();
                        return;
                    }
                    _ => return,
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    /// Tells the service this node leaves: it requeues the node's attempts at once. Their
    /// containers must be gone first (`start::stop_gracefully`).
    pub async fn leave(&self) {
        let req = berth_proto::node_protocol::LeaveRequest {
            epoch: self.epoch(),
        };
        let r: Result<serde_json::Value, _> = tokio::time::timeout(
            Duration::from_secs(5),
            self.client
                .post("/leave", &self.token(), &req, CALL_TIMEOUT),
        )
        .await
        .unwrap_or_else(|_| Err(client::ClientError::Unavailable("timeout".into())));
        match r {
            Ok(_) => tracing::info!("left the pool"),
            Err(e) => tracing::warn!(error = %e, "could not tell the service this node leaves"),
        }
    }
}

/// Kills and removes this node's containers of attempt `a`.
pub async fn kill_attempt(rt: &NodeContext, a: AttemptId) {
    let a = a.to_string();
    let found = rt
        .engine
        .list_labelled(&[
            (labels::NODE, rt.node.node_id.as_str()),
            (labels::POOL_ATTEMPT, a.as_str()),
        ])
        .await;
    let containers = match found {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(attempt = %a, error = %Chain(&e), "cannot list the attempt's containers");
            return;
        }
    };
    for c in containers {
        if let Err(e) = rt.engine.kill(&c.id, "SIGKILL").await {
            tracing::debug!(container = %c.id, error = %Chain(&e), "kill");
        }
        if let Err(e) = rt.engine.remove(&c.id).await {
            tracing::warn!(container = %c.id, error = %Chain(&e), "cannot remove a fenced attempt's container");
        }
    }
}
