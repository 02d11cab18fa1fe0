//! Pools: add, get, list, delete. A pool is Batch's `PoolAddParameter` (as
//! `berth_proto::PoolSpec` reads it) plus `taskSchedulingPolicy.nodeFillType` and berth's
//! `berthLeaseProfile`. The spec is stored whole, secrets included (nodes need the
//! registry passwords and user accounts); views redact them.
//!
//! Delete: refused (409 `PoolNotEmpty`) while a job on the pool has not completed. A pool
//! without nodes goes at once; one with nodes turns `deleting`, its nodes are told
//! `Remove` (node protocol), and the row goes with its last node ([`remove_if_drained`]).

use super::{find_pool, first_problem, is_unique_violation, Sql};
use crate::api::{require_json, select_of, ApiError, Body, Pairs};
use crate::service::db::Cached;
use crate::service::state::ServiceState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Json;
use berth_proto::node_protocol::Timers;
use berth_proto::pool::LeaseProfile;
use berth_proto::{load, validate, PoolSpec};
use deadpool_postgres::GenericClient;
use serde_json::{json, Value};

/// The lease timers of a profile.
pub fn timers(p: LeaseProfile) -> Timers {
    match p {
        LeaseProfile::Default => Timers::DEFAULT,
        LeaseProfile::Fast => Timers::FAST,
        LeaseProfile::Keep => Timers {
            self_fence_ms: None,
            requeue_ms: None,
            ..Timers::DEFAULT
        },
    }
}

pub(crate) async fn add(
    State(s): State<ServiceState>,
    h: HeaderMap,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    require_json(&h)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::InvalidRequestBody("the body is not UTF-8".into()))?;
    let mut l = load::pool("request body", text)
        .map_err(|e| ApiError::InvalidRequestBody(e.to_string()))?;
    l.warnings.iter().for_each(|w| tracing::warn!("{w}"));
    let spec = l.items.remove(0).1;
    first_problem(validate::pool(&spec))?;
    let t = timers(spec.lease_profile());
    let stored = berth_proto::common::with_secrets_revealed(|| serde_json::to_value(&spec))
        .map_err(ApiError::internal)?;
    let c = s.db.conn().await?;
    let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let r = c
        .execute(
            "INSERT INTO pools (id, id_key, spec, task_slots_per_node, node_fill_type,
                                heartbeat_ms, unknown_ms, self_fence_ms, requeue_ms)
             VALUES ($1, lower($1), $2, $3, $4, $5, $6, $7, $8)",
            &[
                &spec.id,
                &stored,
                &(spec.task_slots() as i32),
                &spec.node_fill_type().as_str(),
                &ms(t.heartbeat_ms),
                &ms(t.unknown_ms),
                &t.self_fence_ms.map(ms),
                &t.requeue_ms.map(ms),
            ],
        )
        .await;
    match r {
        Ok(_) => Ok(StatusCode::CREATED),
        Err(e) if is_unique_violation(&e) => Err(ApiError::PoolExists(format!(
            "The specified pool {:?} already exists.",
            spec.id
        ))),
        Err(e) => Err(crate::service::db::DbError::Query(e).into()),
    }
}

const VIEW_SQL: &str = "SELECT p.spec, p.state, p.creation_time, p.last_modified,
        (SELECT count(*) FROM nodes n WHERE n.pool_id = p.id)
     FROM pools p";

/// Batch's pool GET shape: the spec (secrets left out) with every default filled in, plus
/// `state`, times and `currentDedicatedNodes` (the nodes enrolled now).
fn view(row: &tokio_postgres::Row) -> Result<Value, ApiError> {
    let spec: PoolSpec = super::stored(row.get(0), "pool")?;
    let mut v = serde_json::to_value(&spec).map_err(ApiError::internal)?;
    let created: chrono::DateTime<chrono::Utc> = row.get(2);
    let modified: chrono::DateTime<chrono::Utc> = row.get(3);
    let nodes: i64 = row.get(4);
    if let Value::Object(m) = &mut v {
        m.insert("state".into(), json!(row.get::<_, String>(1)));
        m.insert("creationTime".into(), json!(created));
        m.insert("lastModified".into(), json!(modified));
        m.insert("allocationState".into(), json!("steady"));
        m.insert("taskSlotsPerNode".into(), json!(spec.task_slots()));
        m.insert(
            "taskSchedulingPolicy".into(),
            json!({"nodeFillType": spec.node_fill_type()}),
        );
        m.insert("berthLeaseProfile".into(), json!(spec.lease_profile()));
        m.insert("currentDedicatedNodes".into(), json!(nodes));
        m.insert("currentLowPriorityNodes".into(), json!(0));
    }
    Ok(v)
}

/// A pool's path: `/pools/{id}`.
fn pool_path(v: &Value) -> String {
    format!(
        "/pools/{}",
        crate::api::entity::seg(v["id"].as_str().unwrap_or(""))
    )
}

/// `GET` (and `HEAD`) `/pools/{pool}`, with `$select`; conditional, as the agent's.
pub(crate) async fn get(
    State(s): State<ServiceState>,
    Path(pool): Path<String>,
    method: Method,
    h: HeaderMap,
    q: Pairs,
) -> Result<Response, ApiError> {
    let c = s.db.conn().await?;
    let row = c
        .query_opt(&format!("{VIEW_SQL} WHERE p.id_key = lower($1)"), &[&pool])
        .await
        .sql()?
        .ok_or_else(|| {
            ApiError::PoolNotFound(format!("The specified pool {pool:?} does not exist."))
        })?;
    let v = view(&row)?;
    crate::api::entity::answer(&h, &method, &v, &pool_path(&v), "pools", select_of(&q)?)
}

/// Pools in creation order, with Batch's list options (`$filter`, `$select`, paging).
pub(crate) async fn list(
    State(s): State<ServiceState>,
    h: HeaderMap,
    q: Pairs,
) -> Result<Json<Value>, ApiError> {
    let c = s.db.conn().await?;
    let rows = c
        .query(&format!("{VIEW_SQL} ORDER BY p.creation_time, p.id"), &[])
        .await
        .sql()?;
    let pools = rows
        .iter()
        .map(|r| {
            let v = view(r)?;
            Ok((v["id"].as_str().unwrap_or("").to_string(), pool_path(&v), v))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let (h, schema) = (&h, &berth_proto::odata::POOLS);
    Ok(Json(crate::api::list::of_views(
        pools,
        q.0,
        h,
        schema,
        ("/pools", "pools"),
    )?))
}

pub(crate) async fn delete(
    State(s): State<ServiceState>,
    Path(pool): Path<String>,
) -> Result<StatusCode, ApiError> {
    let mut c = s.db.conn().await?;
    let tx = c.transaction().await.sql()?;
    let (id, _, _) = find_pool(&tx, &pool).await?;
    tx.execute("SELECT 1 FROM pools WHERE id = $1 FOR UPDATE", &[&id])
        .await
        .sql()?;
    let open: i64 = tx
        .query_one(
            "SELECT count(*) FROM jobs WHERE pool_id = $1 AND state <> 'completed'",
            &[&id],
        )
        .await
        .sql()?
        .get(0);
    if open > 0 {
        return Err(ApiError::PoolNotEmpty(format!(
            "pool {id:?} has {open} job(s) not completed; terminate or delete them first"
        )));
    }
    tx.execute(
        "UPDATE pools SET state = 'deleting', last_modified = now() WHERE id = $1",
        &[&id],
    )
    .await
    .sql()?;
    remove_if_drained(&tx, &id).await?;
    tx.commit().await.sql()?;
    Ok(StatusCode::ACCEPTED)
}

/// Removes pool `id` if it is `deleting` and has no node left; whoever removes a node of
/// a deleting pool calls it. True when the pool went.
pub async fn remove_if_drained(
    c: &(impl GenericClient + Cached),
    id: &str,
) -> Result<bool, ApiError> {
    let n = c
        .execute(
            "DELETE FROM pools p WHERE p.id = $1 AND p.state = 'deleting'
               AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.pool_id = p.id)",
            &[&id],
        )
        .await
        .sql()?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_never_fences_nor_requeues() {
        let k = timers(LeaseProfile::Keep);
        assert_eq!((k.self_fence_ms, k.requeue_ms), (None, None));
        assert_eq!(timers(LeaseProfile::Fast), Timers::FAST);
        assert_eq!(timers(LeaseProfile::Default), Timers::DEFAULT);
    }
}
