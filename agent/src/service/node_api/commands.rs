//! The commands a node is owed now, put in heartbeat and claim replies. Each is derived
//! from the database every time (never queued), so it repeats until the node's reports
//! show it done, and every one is idempotent on the node.

use super::Caller;
use crate::service::db::Cached;
use crate::service::db::DbError;
use berth_proto::node_protocol::{AttemptId, NodeCommand};

/// The commands for `caller`. `running` (the attempts the node says it runs, when it said)
/// gets a `Fence` for each that is not live and current on this node, unless this node
/// completed it; `reported_enabled`
/// (the scheduling state the node reports) gets a `SchedulingState` when it differs.
pub async fn owed(
    c: &impl Cached,
    caller: &Caller,
    running: Option<&[AttemptId]>,
    reported_enabled: Option<bool>,
) -> Result<Vec<NodeCommand>, DbError> {
    let (pool, node) = (&caller.node.pool_id, &caller.node.node_id);
    let mut out = vec![];
    if let Some(running) = running.filter(|r| !r.is_empty()) {
        let stale = c
            .query_cached(
                "SELECT a FROM unnest($3::bigint[]) a
                 WHERE NOT EXISTS (
                     SELECT 1 FROM attempts x JOIN tasks t ON t.seq = x.task_seq
                     WHERE x.id = a AND x.state = 'live' AND t.current_attempt = x.id
                       AND x.pool_id = $1 AND x.node_id = $2)
                   -- Completed by this node's own report, which may have overtaken the
                   -- heartbeat that still lists it: nothing to fence, and fencing it
                   -- would make the node forget the task's files.
                   AND NOT EXISTS (
                     SELECT 1 FROM attempts x
                     WHERE x.id = a AND x.state = 'completed'
                       AND x.pool_id = $1 AND x.node_id = $2)",
                &[pool, node, &running],
            )
            .await?;
        out.extend(
            stale
                .iter()
                .map(|r| NodeCommand::Fence { attempt: r.get(0) }),
        );
    }
    let terminate = c
        .query_cached(
            "SELECT id FROM attempts
             WHERE pool_id = $1 AND node_id = $2 AND state = 'live'
               AND pending_command = 'terminate'",
            &[pool, node],
        )
        .await?;
    out.extend(
        terminate
            .iter()
            .map(|r| NodeCommand::Terminate { attempt: r.get(0) }),
    );
    // Delivered once: a node that missed it runs the release when it next hears of the
    // job's end (or never, as Batch's release on a lost node).
    let ended = c
        .query_cached(
            "UPDATE job_nodes jn SET end_sent = true FROM jobs j
             WHERE jn.pool_id = $1 AND jn.node_id = $2 AND NOT jn.end_sent
               AND j.id = jn.job_id AND j.state IN ('completed', 'deleting')
             RETURNING j.id",
            &[pool, node],
        )
        .await?;
    out.extend(
        ended
            .iter()
            .map(|r| NodeCommand::EndJob { job_id: r.get(0) }),
    );
    let n = c
        .query_opt_cached(
            "SELECT scheduling_state = 'enabled', removed FROM nodes
             WHERE pool_id = $1 AND id = $2",
            &[pool, node],
        )
        .await?;
    if let Some(n) = n {
        let enabled: bool = n.get(0);
        if reported_enabled.is_some_and(|r| r != enabled) {
            out.push(NodeCommand::SchedulingState { enabled });
        }
        if n.get::<_, bool>(1) {
            out.push(NodeCommand::Remove);
        }
    }
    Ok(out)
}
