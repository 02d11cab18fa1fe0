//! The claim: which ready tasks a node takes now (pool-mode design notes, section 5).
//! One short transaction: the node's turn (spread or pack), the ready rows in order
//! (job priority, job creation, task order) that fit its free slots and GPUs, locked with
//! `FOR UPDATE SKIP LOCKED` so concurrent claims never wait on each other, each job's
//! `maxParallelTasks` checked by a conditional update, then the attempt rows.

use super::attempts::NodeRef;
use super::db::DbError;
use crate::service::db::Cached;
use berth_proto::node_protocol::Claim;
use deadpool_postgres::Transaction;

/// How the pool spreads its tasks over nodes (`taskSchedulingPolicy.nodeFillType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillType {
    /// Even: a node holds back while less-used nodes can take every ready task.
    Spread,
    /// The busiest node that still has room takes as many as fit; the others wait.
    Pack,
}

impl FillType {
    pub fn parse(s: &str) -> FillType {
        if s == "pack" {
            FillType::Pack
        } else {
            FillType::Spread
        }
    }
}

/// A node that may be given work, as the turn rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node_id: String,
    pub used_slots: i32,
    /// Slots it can take now: the service's count, capped by what the node last said.
    pub free: i32,
}

/// How many tasks `me` takes now (0: not its turn), given the other eligible nodes of its
/// pool (idle or running, scheduling enabled, lease live, asking for work) and `ready`,
/// the claimable tasks that fit it. Pure, for table tests.
///
/// Spread: a node holds back only while the nodes with fewer slots in use can take every
/// ready task themselves; otherwise it takes its share (`ready` over the asking nodes),
/// so a long queue fills every node at once and a short one lands one task per node.
/// Pack: the busiest node that still has room (ties: lowest id) takes all that fits.
pub fn my_turn(fill: FillType, me: &Candidate, others: &[Candidate], ready: i64) -> i64 {
    if me.free <= 0 || ready <= 0 {
        return 0;
    }
    // A node that cannot take anything holds no one back.
    let open: Vec<&Candidate> = others.iter().filter(|o| o.free > 0).collect();
    match fill {
        FillType::Spread => {
            let ahead: i64 = open
                .iter()
                .filter(|o| o.used_slots < me.used_slots)
                .map(|o| i64::from(o.free))
                .sum();
            if ahead >= ready {
                return 0;
            }
            let nodes = open.len() as i64 + 1;
            let share = (ready + nodes - 1) / nodes;
            share.clamp(1, i64::from(me.free))
        }
        FillType::Pack => {
            let first = !open.iter().any(|o| {
                o.used_slots > me.used_slots
                    || (o.used_slots == me.used_slots && o.node_id < me.node_id)
            });
            if first {
                i64::from(me.free)
            } else {
                0
            }
        }
    }
}

/// What the node says it can take now.
#[derive(Debug, Clone, Copy)]
pub struct Room {
    pub free_slots: i32,
    pub free_gpus: i32,
}

/// What one claim took, and what it saw.
#[derive(Debug, Default)]
pub struct Claimed {
    /// The tasks taken; empty when nothing fits or it is not the node's turn.
    pub claims: Vec<Claim>,
    /// The claimable tasks that fit the node's free slots before it took any (at most
    /// 10,000); 1 when it did not count them (the node may not claim now), as there may be.
    pub ready: i64,
}

impl Claimed {
    fn none(ready: i64) -> Claimed {
        Claimed {
            claims: vec![],
            ready,
        }
    }
}

/// Claims what `node` may take now.
pub async fn claim(
    tx: &Transaction<'_>,
    node: &NodeRef,
    epoch: i64,
    room: Room,
) -> Result<Claimed, DbError> {
    // The node's own row, locked: two claims of one node never overbook it.
    let Some(me) = tx
        .query_opt_cached(
            "SELECT n.used_slots, n.slots, n.gpus - n.used_gpus, p.node_fill_type,
                    n.state IN ('idle', 'running') AND n.scheduling_state = 'enabled'
                      AND NOT n.removed
             FROM nodes n JOIN pools p ON p.id = n.pool_id
             WHERE n.pool_id = $1 AND n.id = $2 AND n.epoch = $3
             FOR UPDATE OF n",
            &[&node.pool_id, &node.node_id, &epoch],
        )
        .await?
    else {
        return Ok(Claimed::none(1));
    };
    let (used, slots, gpus_left, fill, schedulable): (i32, i32, i32, String, bool) =
        (me.get(0), me.get(1), me.get(2), me.get(3), me.get(4));
    if !schedulable {
        return Ok(Claimed::none(1));
    }
    let fill = FillType::parse(&fill);
    let others: Vec<Candidate> = tx
        .query_cached(
            "SELECT n.id, n.used_slots,
                    LEAST(n.slots - n.used_slots, COALESCE(n.poll_free_slots, n.slots))
             FROM nodes n JOIN pools p ON p.id = n.pool_id
             WHERE n.pool_id = $1 AND n.id <> $2
               AND n.state IN ('idle', 'running') AND n.scheduling_state = 'enabled'
               AND NOT n.removed
               AND n.last_heartbeat > now() - p.unknown_ms * interval '1 millisecond'
               AND n.poll_until > now() - interval '3 seconds'",
            &[&node.pool_id, &node.node_id],
        )
        .await?
        .iter()
        .map(|r| Candidate {
            node_id: r.get(0),
            used_slots: r.get(1),
            free: r.get(2),
        })
        .collect();
    let me = Candidate {
        node_id: node.node_id.clone(),
        used_slots: used,
        free: room.free_slots.min(slots - used),
    };
    let mut free = room.free_slots.min(slots - used);
    // The claimable tasks that could fit this node (bounded: the rule needs no more).
    let ready: i64 = tx
        .query_one_cached(
            "SELECT count(*) FROM (SELECT 1 FROM ready r WHERE r.pool_id = $1
                 AND r.required_slots <= $2 LIMIT 10000) x",
            &[&node.pool_id, &free],
        )
        .await?
        .get(0);
    let want = my_turn(fill, &me, &others, ready);
    if want == 0 {
        return Ok(Claimed::none(ready));
    }
    // The pick must walk `ready_order` in order and stop at its LIMIT. `ready` swings from
    // empty to 10^5 rows between two autovacuum analyses (a minute apart), and a plan made
    // on stale statistics sorted every ready row and scanned `jobs` once per row: 5-8 ms a
    // claim with 10^3 rows, the service's costliest statement. Reset after the pick.
    tx.batch_execute(
        "SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off; \
         SET LOCAL enable_seqscan = off",
    )
    .await?;
    // A node that reported no GPUs yet claims only GPU-less tasks.
    let mut free_gpus = room.free_gpus.min(gpus_left.max(0));
    let rows = tx
        .query_cached(
            "WITH picked AS (
                 SELECT r.task_seq, r.job_id, r.required_slots, r.gpus, j.max_parallel >= 0 AS capped
                 FROM ready r JOIN jobs j ON j.id = r.job_id
                 WHERE r.pool_id = $1 AND r.required_slots <= $2 AND r.gpus <= $3
                   AND j.state = 'active' AND (j.max_parallel < 0 OR j.running < j.max_parallel)
                 ORDER BY r.job_priority DESC, r.job_seq, r.task_seq
                 LIMIT $4
                 FOR UPDATE OF r SKIP LOCKED)
             SELECT task_seq, job_id, required_slots, gpus, capped FROM picked",
            &[&node.pool_id, &free, &free_gpus, &(want * 4)],
        )
        .await?;
    // Back to the defaults: the statements after this one, and those the connection's
    // cache plans for other calls (a heartbeat's commands), are planned as usual.
    tx.batch_execute("RESET enable_sort; RESET enable_bitmapscan; RESET enable_seqscan")
        .await?;
    let mut claims = vec![];
    for r in rows {
        if claims.len() as i64 >= want {
            break;
        }
        let (seq, job_id, need, need_gpus, capped): (i64, String, i32, i32, bool) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        if need > free || need_gpus > free_gpus {
            continue;
        }
        // Only a job with maxParallelTasks counts its running tasks: every claim and end
        // of one job would otherwise update that one row, whose dead versions pile up
        // while any transaction holds the horizon back (spec goal 7). Either way the job
        // row is locked, so a concurrent disable or terminate sees this attempt.
        // A cap changed since the pick is caught by each statement's own condition.
        let job = if capped {
            tx.query_opt_cached(
                "UPDATE jobs SET running = running + 1
                 WHERE id = $1 AND state = 'active' AND max_parallel >= 0
                   AND running < max_parallel
                 RETURNING view",
                &[&job_id],
            )
            .await?
        } else {
            tx.query_opt_cached(
                "SELECT view FROM jobs WHERE id = $1 AND state = 'active' AND max_parallel < 0
                 FOR SHARE",
                &[&job_id],
            )
            .await?
        };
        let Some(job) = job else { continue };
        let attempt: i64 = tx
            .query_one_cached(
                "INSERT INTO attempts (task_seq, pool_id, node_id, epoch, required_slots, gpus)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[
                    &seq,
                    &node.pool_id,
                    &node.node_id,
                    &epoch,
                    &need,
                    &need_gpus,
                ],
            )
            .await?
            .get(0);
        // The claim carries the task as it was (active); the service shows it preparing.
        let task = tx
            .query_one_cached(
                "UPDATE tasks t SET state = 'preparing', current_attempt = $2, node_id = $3,
                        view = jsonb_set(jsonb_set(t.view, '{state}', '\"preparing\"'),
                                         '{stateTransitionTime}', to_jsonb($4::text)),
                        last_modified = now()
                 FROM tasks old WHERE t.seq = $1 AND old.seq = t.seq
                 RETURNING old.view",
                &[&seq, &attempt, &node.node_id, &now_text()],
            )
            .await?;
        tx.execute_cached("DELETE FROM ready WHERE task_seq = $1", &[&seq])
            .await?;
        tx.execute_cached(
            "INSERT INTO job_nodes (job_id, pool_id, node_id) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&job_id, &node.pool_id, &node.node_id],
        )
        .await?;
        let job = serde_json::from_value(job.get(0)).map_err(|source| DbError::Row {
            what: "job view",
            source,
        })?;
        let task = serde_json::from_value(task.get(0)).map_err(|source| DbError::Row {
            what: "task view",
            source,
        })?;
        free -= need;
        free_gpus -= need_gpus;
        tx.execute_cached(
            "UPDATE nodes SET used_slots = used_slots + $3, used_gpus = used_gpus + $4
             WHERE pool_id = $1 AND id = $2",
            &[&node.pool_id, &node.node_id, &need, &need_gpus],
        )
        .await?;
        claims.push(Claim { attempt, job, task });
    }
    Ok(Claimed { claims, ready })
}

/// Now as the views write times (RFC 3339, UTC).
fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, used: i32, slots: i32) -> Candidate {
        Candidate {
            node_id: id.into(),
            used_slots: used,
            free: slots - used,
        }
    }

    #[test]
    fn spread_goes_to_the_least_used_nodes() {
        let cases = [
            // (me, others, ready, how many I take)
            (c("b", 0, 2), vec![c("a", 0, 2)], 1, 1),
            (c("b", 1, 2), vec![c("a", 0, 2)], 1, 0),
            (c("b", 1, 2), vec![c("a", 0, 2)], 2, 0),
            // more ready than the less-used nodes can take: everyone takes a share
            (c("b", 1, 2), vec![c("a", 0, 2)], 3, 1),
            (c("a", 0, 4), vec![c("b", 0, 4), c("c", 0, 4)], 3, 1),
            (c("a", 0, 4), vec![c("b", 0, 4), c("c", 0, 4)], 60, 4),
            (c("a", 0, 2), vec![c("b", 1, 2), c("c", 1, 2)], 1, 1),
            (c("a", 2, 2), vec![], 5, 0),
            (c("a", 0, 2), vec![], 0, 0),
            (c("a", 1, 4), vec![c("b", 1, 4)], 1, 1),
            (
                c("b", 1, 2),
                vec![Candidate {
                    free: 0,
                    ..c("a", 0, 2)
                }],
                1,
                1,
            ),
        ];
        for (me, others, ready, want) in cases {
            assert_eq!(
                my_turn(FillType::Spread, &me, &others, ready),
                want,
                "{me:?} {others:?}"
            );
        }
    }

    #[test]
    fn pack_fills_the_busiest_node_first_ties_to_the_lowest_id() {
        let cases = [
            (c("a", 0, 2), vec![c("b", 0, 2)], 2),
            (c("b", 0, 2), vec![c("a", 0, 2)], 0),
            (c("b", 1, 2), vec![c("a", 0, 2)], 1),
            // a full node no longer holds the others back
            (c("b", 0, 2), vec![c("a", 2, 2)], 2),
            (c("c", 0, 2), vec![c("a", 2, 2), c("b", 1, 2)], 0),
            // a node that says it has no room (its own count) holds no one back
            (
                c("b", 0, 2),
                vec![Candidate {
                    free: 0,
                    ..c("a", 1, 2)
                }],
                2,
            ),
        ];
        for (me, others, want) in cases {
            assert_eq!(
                my_turn(FillType::Pack, &me, &others, 5),
                want,
                "{me:?} {others:?}"
            );
        }
    }
}
