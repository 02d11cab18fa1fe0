//! Counts: a job's tasks (`GET /jobs/{job}/taskcounts`, Batch's `TaskCountsResult`) and
//! each pool's nodes by state (`GET /nodecounts`, Batch's `PoolNodeCounts`).

use super::{find_job, Lock, Sql};
use crate::api::ApiError;
use crate::service::state::ServiceState;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Map, Value};

/// Batch's task counts and slot counts: `running` includes `preparing`; `succeeded` and
/// `failed` split `completed` by result.
pub async fn tasks(
    State(s): State<ServiceState>,
    Path(job): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = s.db.conn().await?;
    let j = find_job(&c, &job, Lock::None).await?;
    let rows = c
        .query(
            "SELECT state, view->'executionInfo'->>'result' = 'success', count(*), sum(required_slots)::bigint
             FROM tasks WHERE job_id = $1 GROUP BY 1, 2",
            &[&j.view.spec.id],
        )
        .await
        .sql()?;
    let groups: Vec<(String, bool, i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get::<_, Option<bool>>(1).unwrap_or(false),
                r.get(2),
                r.get::<_, Option<i64>>(3).unwrap_or(0),
            )
        })
        .collect();
    let (tasks, slots) = task_counts(&groups);
    Ok(Json(
        json!({ "taskCounts": tasks, "taskSlotCounts": slots }),
    ))
}

/// `(state, succeeded, tasks, slots)` groups -> the two Batch count objects.
fn task_counts(groups: &[(String, bool, i64, i64)]) -> (Value, Value) {
    let mut n = [0i64; 5];
    let mut sl = [0i64; 5];
    for (state, ok, count, slots) in groups {
        let mut add = |i: usize| {
            n[i] += count;
            sl[i] += slots;
        };
        match state.as_str() {
            "active" => add(0),
            "preparing" | "running" => add(1),
            _ => {
                add(2);
                add(if *ok { 3 } else { 4 });
            }
        }
    }
    let obj = |v: [i64; 5]| json!({"active": v[0], "running": v[1], "completed": v[2], "succeeded": v[3], "failed": v[4]});
    (obj(n), obj(sl))
}

/// Batch's node count keys, by the node state each counts.
const NODE_STATES: &[(&str, &str)] = &[
    ("creating", "creating"),
    ("starting", "starting"),
    ("waitingforstarttask", "waitingForStartTask"),
    ("starttaskfailed", "startTaskFailed"),
    ("idle", "idle"),
    ("running", "running"),
    ("offline", "offline"),
    ("unusable", "unusable"),
    ("unknown", "unknown"),
    ("leavingpool", "leavingPool"),
    ("rebooting", "rebooting"),
    ("reimaging", "reimaging"),
    ("preempted", "preempted"),
    ("deallocated", "deallocated"),
    ("deallocating", "deallocating"),
    ("upgradingos", "upgradingOS"),
];

/// The counts object of `(state, count)` pairs, every key present, with `total`.
fn node_counts(pairs: &[(String, i64)]) -> Value {
    let mut m = Map::new();
    for (_, key) in NODE_STATES {
        m.insert((*key).into(), json!(0));
    }
    let mut total = 0;
    for (state, n) in pairs {
        total += n;
        if let Some((_, key)) = NODE_STATES
            .iter()
            .find(|(s, _)| s.eq_ignore_ascii_case(state))
        {
            m.insert((*key).into(), json!(n));
        }
    }
    m.insert("total".into(), json!(total));
    Value::Object(m)
}

/// `GET /nodecounts`: every pool, its nodes by state (all dedicated: berth has no
/// low-priority nodes).
pub async fn nodes(State(s): State<ServiceState>) -> Result<Json<Value>, ApiError> {
    let c = s.db.conn().await?;
    let pools = c
        .query("SELECT id FROM pools ORDER BY creation_time, id", &[])
        .await
        .sql()?;
    let rows = c
        .query(
            "SELECT pool_id, state, count(*) FROM nodes GROUP BY 1, 2",
            &[],
        )
        .await
        .sql()?;
    let value: Vec<Value> = pools
        .iter()
        .map(|p| {
            let id: String = p.get(0);
            let pairs: Vec<(String, i64)> = rows
                .iter()
                .filter(|r| r.get::<_, String>(0) == id)
                .map(|r| (r.get(1), r.get(2)))
                .collect();
            json!({"poolId": id, "dedicated": node_counts(&pairs), "lowPriority": node_counts(&[])})
        })
        .collect();
    Ok(Json(json!({ "value": value })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_and_slot_counts() {
        let (t, s) = task_counts(&[
            ("active".into(), false, 3, 3),
            ("preparing".into(), false, 1, 2),
            ("running".into(), false, 2, 2),
            ("completed".into(), true, 4, 4),
            ("completed".into(), false, 1, 1),
        ]);
        assert_eq!(
            t,
            json!({"active": 3, "running": 3, "completed": 5, "succeeded": 4, "failed": 1})
        );
        assert_eq!(s["running"], 4);
    }

    #[test]
    fn node_counts_have_every_state_and_a_total() {
        let v = node_counts(&[("idle".into(), 2), ("starttaskfailed".into(), 1)]);
        assert_eq!(
            (v["idle"].clone(), v["startTaskFailed"].clone()),
            (json!(2), json!(1))
        );
        assert_eq!(v["total"], 3);
        assert_eq!(v["running"], 0);
    }
}
