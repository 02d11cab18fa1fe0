//! The node's pool and the node itself on Batch's pool paths: a standalone agent is a pool
//! of one dedicated node (the pool file's id, or the pool it joined). `GET /pools[/{pool}]`,
//! `GET /pools/{pool}/nodes[/{node}]` and `GET /nodecounts` (Batch's List Pool Node
//! Counts), in Batch's shapes (`CloudPool`, `ComputeNode`, `PoolNodeCounts`).

use super::entity::{self, seg};
use super::{counts, select_of, ApiError, AppState, Pairs};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::Json;
use berth_proto::TaskState;
use serde_json::{json, Value};

/// When this agent began serving its pool: its pool's and its node's `creationTime` and
/// `allocationTime`.
fn since(s: &AppState) -> chrono::DateTime<chrono::Utc> {
    s.rt.status.get().node_agent_info.last_update_time
}

/// The pool as Batch's `CloudPool`: its specification, steady with this one node.
fn pool_view(s: &AppState) -> Result<Value, ApiError> {
    let mut v = entity::json(&s.rt.pool)?;
    let t = since(s);
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), json!(s.rt.node.pool_id));
        for (k, x) in [
            ("state", json!("active")),
            ("allocationState", json!("steady")),
            ("creationTime", json!(t)),
            ("stateTransitionTime", json!(t)),
            ("allocationStateTransitionTime", json!(t)),
            ("taskSlotsPerNode", json!(s.rt.pool.task_slots())),
            ("currentDedicatedNodes", json!(1)),
            ("currentLowPriorityNodes", json!(0)),
            ("targetDedicatedNodes", json!(1)),
            ("targetLowPriorityNodes", json!(0)),
            ("enableAutoScale", json!(false)),
            ("enableInterNodeCommunication", json!(false)),
        ] {
            o.insert(k.into(), x);
        }
    }
    Ok(v)
}

/// How many completed tasks a node's `recentTasks` lists, after those running.
pub const RECENT_COMPLETED: usize = 10;

/// This node as Batch's `ComputeNode`: its reported state, with the task counts Batch adds,
/// its `recentTasks` (Batch's `TaskInformation`: every task preparing or running, then the
/// [`RECENT_COMPLETED`] latest completed) and berth's `imagePulls`.
pub(super) fn node_view(s: &AppState, h: &HeaderMap) -> Result<Value, ApiError> {
    let running = s
        .store
        .tasks_in(&[TaskState::Preparing, TaskState::Running])?;
    let slots: u32 = running.iter().map(|t| t.view.spec.required_slots()).sum();
    let ended = s.store.recently_completed(RECENT_COMPLETED)?;
    let base = entity::base_url(h);
    let recent: Vec<Value> = running
        .iter()
        .chain(&ended)
        .map(|t| {
            let v = &t.view;
            let mut i = json!({
                "taskUrl": format!("{base}/jobs/{}/tasks/{}", seg(&v.job_id), seg(&v.spec.id)),
                "jobId": v.job_id,
                "taskId": v.spec.id,
                "taskState": v.state.as_str(),
            });
            if let Some(e) = &v.execution_info {
                i["executionInfo"] = json!(e);
            }
            i
        })
        .collect();
    let mut v = entity::json(&s.rt.status.get())?;
    let pulls = s.rt.pulls.snapshot();
    if let Some(o) = v.as_object_mut() {
        o.insert("isDedicated".into(), json!(true));
        o.insert("allocationTime".into(), json!(since(s)));
        o.insert("runningTasksCount".into(), json!(running.len()));
        o.insert("runningTaskSlotsCount".into(), json!(slots));
        if !recent.is_empty() {
            o.insert("recentTasks".into(), Value::Array(recent));
        }
        if let Some(size) = &s.rt.pool.vm_size {
            o.insert("vmSize".into(), json!(size));
        }
        if !pulls.is_empty() {
            o.insert("imagePulls".into(), entity::json(&pulls)?);
        }
    }
    Ok(v)
}

/// `pool` names this node's pool, else 404 `PoolNotFound`.
fn check_pool(s: &AppState, pool: &str) -> Result<(), ApiError> {
    if pool.eq_ignore_ascii_case(&s.rt.node.pool_id) {
        Ok(())
    } else {
        Err(ApiError::PoolNotFound(format!(
            "The specified pool {pool:?} does not exist; this node's pool is {:?}.",
            s.rt.node.pool_id
        )))
    }
}

fn pool_path(s: &AppState) -> String {
    format!("/pools/{}", seg(&s.rt.node.pool_id))
}

fn node_path(s: &AppState) -> String {
    format!("{}/nodes/{}", pool_path(s), seg(&s.rt.node.node_id))
}

/// A list of the one entity `view` at `path`, with Batch's list options.
fn one_item_list(
    view: Value,
    id: &str,
    q: Pairs,
    h: &HeaderMap,
    schema: &berth_proto::odata::Schema,
    (path, item_path, metadata): (&str, &str, &str),
) -> Result<Json<Value>, ApiError> {
    let one = vec![(id.to_string(), item_path.to_string(), view)];
    Ok(Json(super::list::of_views(
        one,
        q.0,
        h,
        schema,
        (path, metadata),
    )?))
}

pub async fn list(
    State(s): State<AppState>,
    h: HeaderMap,
    q: Pairs,
) -> Result<Json<Value>, ApiError> {
    let paths = ("/pools", pool_path(&s), "pools");
    one_item_list(
        pool_view(&s)?,
        &s.rt.node.pool_id,
        q,
        &h,
        &berth_proto::odata::POOLS,
        (paths.0, &paths.1, paths.2),
    )
}

/// `GET` (and `HEAD`) `/pools/{pool}`, with `$select`; conditional.
pub async fn get(
    State(s): State<AppState>,
    Path(pool): Path<String>,
    method: Method,
    h: HeaderMap,
    q: Pairs,
) -> Result<Response, ApiError> {
    check_pool(&s, &pool)?;
    let path = pool_path(&s);
    entity::answer(&h, &method, &pool_view(&s)?, &path, "pools", select_of(&q)?)
}

pub async fn nodes(
    State(s): State<AppState>,
    Path(pool): Path<String>,
    h: HeaderMap,
    q: Pairs,
) -> Result<Json<Value>, ApiError> {
    check_pool(&s, &pool)?;
    let list = format!("{}/nodes", pool_path(&s));
    one_item_list(
        node_view(&s, &h)?,
        &s.rt.node.node_id,
        q,
        &h,
        &berth_proto::odata::NODES,
        (&list, &node_path(&s), "nodes"),
    )
}

/// `GET` (and `HEAD`) `/pools/{pool}/nodes/{node}`, with `$select`; conditional.
pub async fn node(
    State(s): State<AppState>,
    Path((pool, node)): Path<(String, String)>,
    method: Method,
    h: HeaderMap,
    q: Pairs,
) -> Result<Response, ApiError> {
    check_pool(&s, &pool)?;
    if !node.eq_ignore_ascii_case(&s.rt.node.node_id) {
        return Err(ApiError::NodeNotFound(format!(
            "The specified node {node:?} does not exist in pool {pool:?}."
        )));
    }
    let path = node_path(&s);
    entity::answer(
        &h,
        &method,
        &node_view(&s, &h)?,
        &path,
        "nodes",
        select_of(&q)?,
    )
}

/// `GET /nodecounts`: the one pool, its one node counted by state.
pub async fn node_counts(State(s): State<AppState>, h: HeaderMap) -> Json<Value> {
    let state = s.rt.status.state();
    Json(json!({
        "odata.metadata": format!("{}/$metadata#poolnodecounts", entity::base_url(&h)),
        "value": [{
            "poolId": s.rt.node.pool_id,
            "dedicated": counts::node_counts(&[(state.as_str(), 1)]),
            "lowPriority": counts::node_counts(&[]),
        }],
    }))
}
