//! Counts: a job's tasks (`GET /jobs/{job}/taskcounts`, Batch's `TaskCountsResult`) and
//! each pool's nodes by state (`GET /nodecounts`, Batch's `PoolNodeCounts`), in the
//! shapes the agent's counts make (`api::task_counts`, `api::counts::node_counts`).

use super::{find_job, Lock, Sql};
use crate::api::counts::node_counts;
use crate::api::ApiError;
use crate::service::state::ServiceState;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

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
    let groups: Vec<(String, bool, u64, u64)> = rows
        .iter()
        .map(|r| {
            let n = |v: i64| u64::try_from(v).unwrap_or(0);
            (
                r.get(0),
                r.get::<_, Option<bool>>(1).unwrap_or(false),
                n(r.get(2)),
                n(r.get::<_, Option<i64>>(3).unwrap_or(0)),
            )
        })
        .collect();
    let (tasks, slots) = crate::api::task_counts(
        groups
            .iter()
            .map(|(s, ok, n, sl)| (s.as_str(), *ok, *n, *sl)),
    );
    Ok(Json(
        json!({ "taskCounts": tasks, "taskSlotCounts": slots }),
    ))
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
            let pairs: Vec<(String, u64)> = rows
                .iter()
                .filter(|r| r.get::<_, String>(0) == id)
                .map(|r| (r.get(1), u64::try_from(r.get::<_, i64>(2)).unwrap_or(0)))
                .collect();
            let pairs: Vec<(&str, u64)> = pairs.iter().map(|(s, n)| (s.as_str(), *n)).collect();
            json!({"poolId": id, "dedicated": node_counts(&pairs), "lowPriority": node_counts(&[])})
        })
        .collect();
    Ok(Json(json!({ "value": value })))
}
