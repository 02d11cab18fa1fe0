//! The claim loop: while this node has free slots and may take work, a long poll asks
//! the service for tasks that fit; each claim is written to the local store (the job
//! if absent, the task with its attempt) and the local scheduler is woken. With no
//! free slot it waits for a local task to end (`Ledger::freed`), never polling; with
//! ends not yet answered by the service, for their answers.

use super::Member;
use crate::error_chain::Chain;
use crate::store::StoreError;
use berth_proto::node_protocol::{AttemptId, Claim, ClaimReply, ClaimRequest};
use berth_proto::{ExecutionInfo, JobState, JobView, TaskView};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long the service may hold a claim open.
pub const WAIT: Duration = Duration::from_secs(20);

/// How long a claim waits for the service to answer the ends already reported (a
/// service that does not answer them answers no claim either).
const END_WAIT: Duration = Duration::from_secs(1);

/// Runs until the agent stops.
pub async fn run(m: Arc<Member>) {
    let total = m.rt.pool.task_slots();
    let mut delay =
        crate::backoff::Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        if m.stop.is_cancelled() {
            return;
        }
        let used: u32 = m.live().iter().map(|l| l.3).sum();
        let free = total.saturating_sub(used);
        let node = m.rt.status.get();
        let may = free > 0
            && node.state.schedulable()
            && node.scheduling_state == "enabled"
            && !m.self_fenced.load(Ordering::Relaxed);
        if !may {
            // A task's end, a command, or the slow safety net.
            tokio::select! {
                _ = m.ledger.freed.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = m.stop.cancelled() => return,
            }
            continue;
        }
        // The service counts a slot free once it has recorded the end that freed it: a
        // claim sent before would find no room and wait for the service's re-check.
        let answered = m.ledger.end_answered.notified();
        tokio::pin!(answered);
        answered.as_mut().enable();
        if m.ledger.ends_unanswered() > 0 {
            tokio::select! {
                _ = answered => continue,
                // Asks anyway: the service's own re-check finds the room later.
                _ = tokio::time::sleep(END_WAIT) => {}
                _ = m.stop.cancelled() => return,
            }
        }
        let req = ClaimRequest {
            epoch: m.epoch(),
            free_slots: free,
            free_gpus: m.free_gpus(),
            wait_ms: WAIT.as_millis() as u64,
        };
        let token = m.token();
        let r: Result<ClaimReply, _> = tokio::select! {
            r = m.client.post("/claim", &token, &req, WAIT + Duration::from_secs(10)) => r,
            _ = m.stop.cancelled() => return,
        };
        match r {
            Ok(reply) => {
                delay = crate::backoff::Backoff::new(
                    Duration::from_millis(250),
                    Duration::from_secs(5),
                );
                let n = reply.claims.len();
                for c in reply.claims {
                    accept(&m, c).await;
                }
                if n > 0 {
                    m.sched.wake();
                }
                m.apply(reply.commands).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "claim");
                if !delay.sleep(&m.stop).await {
                    return;
                }
            }
        }
    }
}

/// Writes a claim to the local store; one that cannot be written is given back
/// (`Abandoned`), so the service requeues it.
async fn accept(m: &Member, c: Claim) {
    let (job, task, attempt) = (c.job.spec.id.clone(), c.task.spec.id.clone(), c.attempt);
    tracing::info!(job, task, attempt, "claimed a task");
    let e = match write(m, &c.job, c.task, attempt) {
        Ok(Written::Yes) => return,
        Ok(Written::Busy(old)) => {
            // An older attempt of the same task still runs here: it is stale (the service
            // moved on), and the new one could not be told apart from it in the store.
            tracing::warn!(job, task, attempt, old, "an older attempt of the task still runs here; fencing it and giving the new one back");
            m.fence(old, None).await;
            "an older attempt of the task was still running on the node".to_string()
        }
        Err(e) => {
            tracing::error!(job, task, attempt, error = %Chain(&e), "cannot write the claimed task; giving it back");
            "the node could not record the claim".to_string()
        }
    };
    m.ledger.fence(attempt);
    m.ledger.report(super::journal::Pending {
        attempt,
        job_id: job,
        task_id: task,
        event: berth_proto::node_protocol::ReportEvent::Abandoned { reason: e },
    });
}

enum Written {
    Yes,
    /// Not written: this older attempt of the task is still live here.
    Busy(AttemptId),
}

fn write(
    m: &Member,
    job: &JobView,
    task: TaskView,
    attempt: AttemptId,
) -> Result<Written, StoreError> {
    if let Some(old) = m.store.task(&job.spec.id, &task.spec.id)? {
        match old.view.pool_attempt {
            // The same claim again: it is here already.
            Some(a) if a == attempt => return Ok(Written::Yes),
            Some(a) if old.view.state != berth_proto::TaskState::Completed => {
                return Ok(Written::Busy(a))
            }
            _ => {}
        }
    }
    let local = local_job(job);
    match m.store.job(&job.spec.id)? {
        None => m.store.add_job(&local)?,
        // Ended here earlier and not forgotten yet: active again.
        Some(j) if j.state != JobState::Active => m.store.put_job(&local)?,
        Some(_) => {}
    }
    // An earlier attempt of the task that ended here makes way for this one.
    if m.store.task(&job.spec.id, &task.spec.id)?.is_some() {
        m.store.delete_task(&job.spec.id, &task.spec.id)?;
    }
    m.store.add_tasks(&[local_task(m, &local, task, attempt)])?;
    Ok(Written::Yes)
}

/// The local copy of a service's job: the service makes the job-level decisions
/// (`onAllTasksComplete`, `onTaskFailure`, the job manager, `maxWallClockTime`).
pub fn local_job(job: &JobView) -> JobView {
    let mut spec = job.spec.clone();
    spec.on_all_tasks_complete = None;
    spec.on_task_failure = None;
    spec.job_manager_task = None;
    if let Some(c) = spec.constraints.as_mut() {
        c.max_wall_clock_time = None;
    }
    let mut local = JobView::new(spec);
    local.creation_time = job.creation_time;
    local
}

/// The local copy of a claimed task: queued here, its dependencies already met in the
/// service, its attempt recorded, its counters (requeues, retries) carried over.
fn local_task(m: &Member, job: &JobView, task: TaskView, attempt: AttemptId) -> TaskView {
    let mut spec = task.spec;
    spec.depends_on = None;
    let mut view = crate::schedule::TaskReport::active(&m.rt, &job.spec, spec, None).view;
    view.creation_time = task.creation_time;
    view.pool_attempt = Some(attempt);
    // The retries of earlier attempts count against maxTaskRetryCount here too.
    let (requeues, retries) = task
        .execution_info
        .map_or((0, 0), |e| (e.requeue_count, e.retry_count));
    if requeues > 0 || retries > 0 {
        view.execution_info = Some(ExecutionInfo {
            requeue_count: requeues,
            retry_count: retries,
            ..Default::default()
        });
    }
    view
}
