//! Job-level transitions of the service, and the consequences of a task's end:
//! exit conditions' `jobAction`, `onTaskFailure`, `onAllTasksComplete`. Everything here runs
//! inside the caller's transaction, on the job row locked first (`FOR UPDATE`), so two
//! replicas never decide a job's end twice; a completion that decides nothing about its
//! job holds the row only `FOR KEY SHARE` ([`after_task_completed`]).
//!
//! Live attempts (a task `preparing` or `running` on a node) end only by their node's
//! report: terminate asks the node (`attempts.pending_command = 'terminate'`, delivered
//! by the node protocol) and the job settles ([`settle`]) when the last report arrives:
//! `terminating` -> `completed`, `disabling` -> `disabled`, `deleting` -> gone (once every
//! node that ran a task of it heard `EndJob`: `job_nodes.end_sent`).

use super::db::DbError;
use crate::service::db::Cached;
use berth_proto::exit::{self, JobAction};
use berth_proto::{
    DisableJobOption, ExecutionInfo, FailureCode, JobState, JobView, OnAllTasksComplete,
    TaskResult, TaskState, TaskView,
};
use chrono::Utc;

/// After `task` (now completed) was written in `tx`: ends or disables its job when the
/// job's settings say so, and settles a job that was waiting for its tasks to stop.
pub async fn after_task_completed(
    tx: &deadpool_postgres::Transaction<'_>,
    task: &TaskView,
) -> Result<(), DbError> {
    // Most completions decide nothing about their job (see `quiet`): those hold its row
    // only `FOR KEY SHARE`, which waits for a change of the job (made `FOR UPDATE`) but
    // not for each other, so a job's completions do not queue on its row one commit at a
    // time. The unlocked read chooses; a job that changed in between is locked again
    // `FOR UPDATE`, which can deadlock with another completion doing the same at that
    // instant (PostgreSQL ends one; the report is tried again, `is_conflict`).
    let peek = read_job(tx, &task.job_id, "").await?;
    if peek.as_ref().is_some_and(|j| quiet(j, task)) {
        match read_job(tx, &task.job_id, "FOR KEY SHARE").await? {
            Some(j) if !quiet(&j, task) => {}
            _ => return Ok(()),
        }
    }
    let Some(mut job) = lock_job(tx, &task.job_id).await? else {
        return Ok(());
    };
    let before = job.clone();
    let open = matches!(
        job.state,
        JobState::Active | JobState::Disabling | JobState::Disabled | JobState::Enabling
    );
    if open {
        let info = task.execution_info.clone().unwrap_or_default();
        if info.result == Some(TaskResult::Failure) && job.spec.performs_exit_job_actions() {
            let outcome = exit::Outcome::of(&info);
            match exit::actions(task.spec.exit_conditions.as_ref(), outcome).job {
                JobAction::None => {}
                JobAction::Terminate => {
                    tracing::warn!(job = %job.spec.id, task = %task.spec.id, "a task's exit conditions terminate its job");
                    terminate_job(tx, &mut job, berth_proto::job::TERMINATE_TASK_FAILED).await?;
                }
                JobAction::Disable => {
                    tracing::warn!(job = %job.spec.id, task = %task.spec.id, "a task's exit conditions disable its job");
                    disable_job(tx, &mut job, DisableJobOption::Requeue).await?;
                }
            }
        }
    }
    let still_open = matches!(
        job.state,
        JobState::Active | JobState::Disabling | JobState::Disabled | JobState::Enabling
    );
    if still_open
        && job.spec.on_all_tasks_complete == Some(OnAllTasksComplete::TerminateJob)
        && !any_task_open(tx, &job.spec.id).await?
    {
        terminate_job(tx, &mut job, berth_proto::job::TERMINATE_ALL_TASKS_COMPLETE).await?;
    }
    // Most completions change nothing of the job: its row is written only when they do
    // (a completion per task would otherwise rewrite the job's row every time).
    if settle_state(tx, &mut job).await? && job != before {
        put_job(tx, &job).await?;
    }
    Ok(())
}

/// Whether `task`'s completion leaves `job` as it is: the job is active, no task's end
/// ends it (`onAllTasksComplete` is not `terminatejob`), and this task's outcome asks for
/// no job action.
fn quiet(job: &JobView, task: &TaskView) -> bool {
    let failed = task
        .execution_info
        .as_ref()
        .is_some_and(|i| i.result == Some(TaskResult::Failure));
    job.state == JobState::Active
        && job.spec.on_all_tasks_complete != Some(OnAllTasksComplete::TerminateJob)
        && !(failed && job.spec.performs_exit_job_actions())
}

/// The job `id` (exact id, as tasks and attempts name it), locked; None when it is gone.
pub(crate) async fn lock_job(c: &impl Cached, id: &str) -> Result<Option<JobView>, DbError> {
    read_job(c, id, "FOR UPDATE").await
}

/// The job `id` read with `lock` (`FOR UPDATE`, `FOR KEY SHARE`, or "" for none).
async fn read_job(c: &impl Cached, id: &str, lock: &str) -> Result<Option<JobView>, DbError> {
    let Some(row) = c
        .query_opt_cached(
            &format!("SELECT view FROM jobs WHERE id = $1 {lock}"),
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    serde_json::from_value(row.get(0))
        .map(Some)
        .map_err(|source| DbError::Row {
            what: "job",
            source,
        })
}

/// Writes `job`'s view and the columns read from it; `ready` rows keep the job's priority.
pub(crate) async fn put_job(c: &impl Cached, job: &JobView) -> Result<(), DbError> {
    let view = berth_proto::common::with_secrets_revealed(|| serde_json::to_value(job)).map_err(
        |source| DbError::Row {
            what: "job",
            source,
        },
    )?;
    let priority = job.spec.priority();
    c.execute_cached(
        // `running` is kept only while the job has a cap: counted afresh when it gets one.
        "UPDATE jobs SET view = $2, state = $3, priority = $4, max_parallel = $5, last_modified = now(),
             running = CASE WHEN $5 < 0 THEN 0
                            WHEN max_parallel >= 0 THEN running
                            ELSE (SELECT count(*) FROM attempts a JOIN tasks t ON t.seq = a.task_seq
                                  WHERE a.state = 'live' AND t.job_id = $1)::int END
         WHERE id = $1",
        &[
            &job.spec.id,
            &view,
            &job.state.as_str(),
            &priority,
            &job.spec.parallel_cap().map_or(-1, |n| n as i32),
        ],
    )
    .await?;
    c.execute_cached(
        "UPDATE ready SET job_priority = $2 WHERE job_id = $1 AND job_priority <> $2",
        &[&job.spec.id, &priority],
    )
    .await?;
    Ok(())
}

/// Whether a task of job `id` has not completed.
async fn any_task_open(c: &impl Cached, id: &str) -> Result<bool, DbError> {
    Ok(c.query_one_cached(
        "SELECT EXISTS (SELECT 1 FROM tasks WHERE job_id = $1 AND state <> 'completed')",
        &[&id],
    )
    .await?
    .get(0))
}

/// Whether a task of job `id` has a live attempt on a node.
async fn any_live(c: &impl Cached, id: &str) -> Result<bool, DbError> {
    Ok(c.query_one_cached(
        "SELECT EXISTS (SELECT 1 FROM tasks WHERE job_id = $1 AND current_attempt IS NOT NULL)",
        &[&id],
    )
    .await?
    .get(0))
}

/// The execution info of a task ended before it ran (Batch's terminated task).
pub(crate) fn ended_info(previous: Option<&ExecutionInfo>) -> ExecutionInfo {
    let mut info = crate::task::failed_before_start(
        FailureCode::TaskEnded,
        "Task was ended by user request.".into(),
    );
    if let Some(p) = previous {
        info.requeue_count = p.requeue_count;
        info.retry_count = p.retry_count;
    }
    info
}

/// Completes task row `seq` (now `active`, not on a node) as terminated, out of `ready`.
/// Returns its view.
pub(crate) async fn end_active_task(
    c: &impl Cached,
    seq: i64,
    mut view: TaskView,
) -> Result<TaskView, DbError> {
    view.state = TaskState::Completed;
    view.state_transition_time = Utc::now();
    view.execution_info = Some(ended_info(view.execution_info.as_ref()));
    let v = berth_proto::common::with_secrets_revealed(|| serde_json::to_value(&view)).map_err(
        |source| DbError::Row {
            what: "task",
            source,
        },
    )?;
    c.execute_cached("DELETE FROM ready WHERE task_seq = $1", &[&seq])
        .await?;
    c.execute_cached(
        "UPDATE tasks SET state = 'completed', view = $2, last_modified = now() WHERE seq = $1",
        &[&seq, &v],
    )
    .await?;
    Ok(view)
}

/// Asks the nodes to end every live attempt of job `id` (Batch's task terminate).
async fn terminate_live(c: &impl Cached, id: &str) -> Result<(), DbError> {
    c.execute_cached(
        "UPDATE attempts SET pending_command = 'terminate'
         WHERE state = 'live' AND pending_command IS NULL
           AND id IN (SELECT current_attempt FROM tasks WHERE job_id = $1 AND current_attempt IS NOT NULL)",
        &[&id],
    )
    .await?;
    Ok(())
}

/// Ends every task of the job that is not on a node now, and asks the nodes to end the
/// others; nothing of the job stays claimable.
async fn end_tasks(c: &impl Cached, id: &str) -> Result<(), DbError> {
    c.execute_cached("DELETE FROM ready WHERE job_id = $1", &[&id])
        .await?;
    let rows = c
        .query_cached(
            "SELECT seq, view FROM tasks WHERE job_id = $1 AND state = 'active' AND current_attempt IS NULL",
            &[&id],
        )
        .await?;
    for r in rows {
        let view: TaskView = serde_json::from_value(r.get(1)).map_err(|source| DbError::Row {
            what: "task",
            source,
        })?;
        end_active_task(c, r.get(0), view).await?;
    }
    terminate_live(c, id).await
}

/// Terminates an open job (`terminateReason` `reason`, the first one kept): its tasks end,
/// and it completes once none runs on a node. A job already ending is left as it is.
pub(crate) async fn terminate_job(
    c: &impl Cached,
    job: &mut JobView,
    reason: &str,
) -> Result<(), DbError> {
    if !matches!(
        job.state,
        JobState::Active | JobState::Disabling | JobState::Disabled | JobState::Enabling
    ) {
        return Ok(());
    }
    job.terminated_because(reason);
    job.state = JobState::Terminating;
    job.state_transition_time = Utc::now();
    end_tasks(c, &job.spec.id).await?;
    settle(c, job).await
}

/// Marks the job deleting: its tasks end as on terminate; the row goes once none runs and
/// every node that ran a task of it heard `EndJob` ([`settle`]).
pub(crate) async fn delete_job(c: &impl Cached, job: &mut JobView) -> Result<(), DbError> {
    job.state = JobState::Deleting;
    job.state_transition_time = Utc::now();
    end_tasks(c, &job.spec.id).await?;
    settle(c, job).await
}

/// Disables an active job: none of its tasks is claimable until it is enabled; its
/// running tasks are requeued (`requeueCount` + 1; the node is told to drop them),
/// terminated, or left to finish (`wait`).
pub(crate) async fn disable_job(
    c: &impl Cached,
    job: &mut JobView,
    how: DisableJobOption,
) -> Result<(), DbError> {
    if job.state != JobState::Active && job.state != JobState::Enabling {
        return Ok(());
    }
    let id = job.spec.id.clone();
    job.state = JobState::Disabling;
    job.state_transition_time = Utc::now();
    c.execute_cached("DELETE FROM ready WHERE job_id = $1", &[&id])
        .await?;
    match how {
        DisableJobOption::Wait => {}
        DisableJobOption::Terminate => terminate_live(c, &id).await?,
        DisableJobOption::Requeue => requeue_live(c, &id).await?,
    }
    settle(c, job).await
}

/// Takes every live attempt of job `id` back: the attempt is `requeued` (its node told to
/// fence it), the task `active` again with one more `requeueCount`, its slots freed.
/// Not put in `ready`: the caller decides whether the job takes work now.
async fn requeue_live(c: &impl Cached, id: &str) -> Result<(), DbError> {
    let rows = c
        .query_cached(
            "UPDATE attempts a SET state = 'requeued', ended_at = now(), pending_command = 'fence'
             FROM tasks t
             WHERE t.job_id = $1 AND t.current_attempt = a.id AND a.state = 'live'
             RETURNING a.task_seq, a.pool_id, a.node_id, a.required_slots, a.gpus",
            &[&id],
        )
        .await?;
    for r in rows {
        let seq: i64 = r.get(0);
        let (pool, node): (String, String) = (r.get(1), r.get(2));
        let (slots, gpus): (i32, i32) = (r.get(3), r.get(4));
        c.execute_cached(
            "UPDATE nodes SET used_slots = greatest(used_slots - $3, 0), used_gpus = greatest(used_gpus - $4, 0)
             WHERE pool_id = $1 AND id = $2",
            &[&pool, &node, &slots, &gpus],
        )
        .await?;
        c.execute_cached(
            "UPDATE jobs SET running = greatest(running - 1, 0) WHERE id = $1 AND max_parallel >= 0",
            &[&id],
        )
        .await?;
        let row = c
            .query_one_cached("SELECT view FROM tasks WHERE seq = $1", &[&seq])
            .await?;
        let mut view: TaskView =
            serde_json::from_value(row.get(0)).map_err(|source| DbError::Row {
                what: "task",
                source,
            })?;
        let count = view
            .execution_info
            .as_ref()
            .map_or(0, |e| e.requeue_count)
            .saturating_add(1);
        view.state = TaskState::Active;
        view.state_transition_time = Utc::now();
        view.execution_info = Some(ExecutionInfo {
            requeue_count: count,
            ..Default::default()
        });
        view.node_info = None;
        let v = berth_proto::common::with_secrets_revealed(|| serde_json::to_value(&view))
            .map_err(|source| DbError::Row {
                what: "task",
                source,
            })?;
        c.execute_cached(
            "UPDATE tasks SET state = 'active', view = $2, current_attempt = NULL, node_id = NULL,
                 requeue_count = requeue_count + 1, last_modified = now()
             WHERE seq = $1",
            &[&seq, &v],
        )
        .await?;
    }
    Ok(())
}

/// Enables a disabled job: its claimable tasks enter `ready` again.
pub(crate) async fn enable_job(c: &impl Cached, job: &mut JobView) -> Result<(), DbError> {
    if !matches!(job.state, JobState::Disabled | JobState::Disabling) {
        return Ok(());
    }
    job.state = JobState::Active;
    job.state_transition_time = Utc::now();
    put_job(c, job).await?;
    make_ready(c, &job.spec.id, None).await
}

/// Puts the claimable tasks of job `id` (all, or the one row `seq`) into `ready` and
/// wakes the pool's claims: a task is claimable when `active`, waiting on nothing, not on
/// a node, and its job `active`.
pub(crate) async fn make_ready(c: &impl Cached, id: &str, seq: Option<i64>) -> Result<(), DbError> {
    let one = seq.map(|s| [s]);
    if queue(c, id, one.as_ref().map(|s| &s[..])).await? > 0 {
        wake_pool(c, id).await?;
    }
    Ok(())
}

/// [`make_ready`] of the tasks `seqs`, without the wake: how many rows went into `ready`.
/// A transaction that queues many tasks (`addtaskcollection`) wakes the pool once, with
/// [`wake_pool`].
pub(crate) async fn enqueue(c: &impl Cached, id: &str, seqs: &[i64]) -> Result<u64, DbError> {
    queue(c, id, Some(seqs)).await
}

/// Puts job `id`'s claimable tasks (those of `seqs`, or all) into `ready`.
async fn queue(c: &impl Cached, id: &str, seqs: Option<&[i64]>) -> Result<u64, DbError> {
    Ok(c.execute_cached(
        "INSERT INTO ready (task_seq, pool_id, job_id, job_priority, job_seq, required_slots, gpus)
         SELECT t.seq, j.pool_id, j.id, j.priority, j.seq, t.required_slots, t.gpus
         FROM tasks t JOIN jobs j ON j.id = t.job_id
         WHERE t.job_id = $1 AND ($2::bigint[] IS NULL OR t.seq = ANY($2))
           AND t.state = 'active' AND t.waiting_on = 0 AND t.current_attempt IS NULL
           AND j.state = 'active'
         ON CONFLICT (task_seq) DO NOTHING",
        &[&id, &seqs],
    )
    .await?)
}

/// Wakes the claims waiting on job `id`'s pool: a `NOTIFY` sent when the transaction
/// commits (PostgreSQL folds equal notices of one transaction into one).
pub(crate) async fn wake_pool(c: &impl Cached, id: &str) -> Result<(), DbError> {
    c.execute_cached(
        "SELECT pg_notify($1, lower(pool_id)) FROM jobs WHERE id = $2",
        &[&super::wake::CHANNEL, &id],
    )
    .await?;
    Ok(())
}

/// Moves a job that waited for its tasks on: `terminating` -> `completed`, `disabling` ->
/// `disabled` once none runs; `deleting` -> deleted once none runs and every node that ran
/// a task of it heard `EndJob`. Writes the job (unless deleted). Whoever marks
/// `job_nodes.end_sent` calls this again (with the job locked) so a deleting job goes.
pub async fn settle(c: &impl Cached, job: &mut JobView) -> Result<(), DbError> {
    if settle_state(c, job).await? {
        put_job(c, job).await?;
    }
    Ok(())
}

/// [`settle`] without the write: moves `job` on; false when it was deleted.
async fn settle_state(c: &impl Cached, job: &mut JobView) -> Result<bool, DbError> {
    let id = job.spec.id.clone();
    let busy = any_live(c, &id).await?;
    match job.state {
        JobState::Terminating if !busy => job.complete(),
        JobState::Disabling if !busy => {
            job.state = JobState::Disabled;
            job.state_transition_time = Utc::now();
        }
        JobState::Deleting if !busy => {
            let unsent: bool = c
                .query_one_cached(
                    "SELECT EXISTS (SELECT 1 FROM job_nodes WHERE job_id = $1 AND NOT end_sent)",
                    &[&id],
                )
                .await?
                .get(0);
            if !unsent {
                c.execute_cached("DELETE FROM jobs WHERE id = $1", &[&id])
                    .await?;
                return Ok(false);
            }
        }
        _ => {}
    }
    Ok(true)
}
