//! Compute nodes through the service (Batch's `/pools/{id}/nodes...`): list with Batch's
//! list options, get, disable and enable scheduling, remove nodes; and `/metrics`.
//! Each node is shown as Batch's ComputeNode: what the node last reported, with the
//! service's own word on state, scheduling, slots and lease. Client authentication is the
//! server's (a layer around every client route).

use crate::api::{select_of, ApiError, Body, Pairs};
use crate::service::attempts::{self, Requeue};
use crate::service::db::DbError;
use crate::service::metrics;
use crate::service::state::ServiceState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The nodes routes, the file proxy and `/metrics`.
pub fn router() -> Router<ServiceState> {
    Router::new()
        .route("/pools/{pool}/nodes", get(list))
        .route("/pools/{pool}/nodes/{node}", get(show))
        .route(
            "/pools/{pool}/nodes/{node}/disablescheduling",
            post(disable),
        )
        .route("/pools/{pool}/nodes/{node}/enablescheduling", post(enable))
        .route("/pools/{pool}/removenodes", post(remove))
        .merge(super::files::router())
        .route("/metrics", get(metrics::metrics))
}

/// The columns [`view`] reads, in order.
const COLUMNS: &str = "n.id, n.pool_id, n.state, n.scheduling_state, n.report,
    n.state_transition_time, n.used_slots, p.mass_loss_brake,
    (SELECT count(*) FROM attempts a WHERE a.pool_id = n.pool_id AND a.node_id = n.id
       AND a.state = 'live'),
    (SELECT count(*) FROM attempts a WHERE a.pool_id = n.pool_id AND a.node_id = n.id)";

/// A node row as Batch's ComputeNode.
fn view(r: &tokio_postgres::Row) -> Value {
    let mut v: Value = r.get(4);
    let state: String = r.get(2);
    let scheduling: String = r.get(3);
    let running: i64 = r.get(8);
    // Batch's `offline`: scheduling disabled and nothing left running.
    let shown = if scheduling == "disabled" && running == 0 && state == "idle" {
        "offline".to_string()
    } else {
        state
    };
    let o = v
        .as_object_mut()
        .expect("a stored node report is an object");
    o.insert("id".into(), json!(r.get::<_, String>(0)));
    o.insert("poolId".into(), json!(r.get::<_, String>(1)));
    o.insert("state".into(), json!(shown));
    o.insert("schedulingState".into(), json!(scheduling));
    o.insert(
        "stateTransitionTime".into(),
        json!(r.get::<_, chrono::DateTime<chrono::Utc>>(5)),
    );
    o.insert("runningTasksCount".into(), json!(running));
    o.insert("runningTaskSlotsCount".into(), json!(r.get::<_, i32>(6)));
    o.insert("totalTasksRun".into(), json!(r.get::<_, i64>(9)));
    if r.get::<_, bool>(7) {
        let errors = o.entry("errors").or_insert_with(|| json!([]));
        if let Some(e) = errors.as_array_mut() {
            e.push(json!({"code": "MassNodeLoss",
                "message": "berth: too many of this pool's nodes lost contact at once; \
                            their tasks are not requeued until they return or are removed"}));
        }
    }
    v
}

/// The pool's canonical id; 404 `PoolNotFound`.
async fn pool_id(c: &tokio_postgres::Client, pool: &str) -> Result<String, ApiError> {
    c.query_opt("SELECT id FROM pools WHERE id_key = lower($1)", &[&pool])
        .await
        .map_err(DbError::from)?
        .map(|r| r.get(0))
        .ok_or_else(|| ApiError::PoolNotFound(format!("pool {pool} does not exist")))
}

/// A node's path: `/pools/{pool}/nodes/{node}`.
fn node_path(pool: &str, node: &str) -> String {
    use crate::api::entity::seg;
    format!("/pools/{}/nodes/{}", seg(pool), seg(node))
}

/// The pool's nodes by id, with Batch's list options (`$filter`, `$select`, paging).
async fn list(
    State(st): State<ServiceState>,
    Path(pool): Path<String>,
    h: HeaderMap,
    q: Pairs,
) -> Result<Json<Value>, ApiError> {
    let conn = st.db.conn().await?;
    let pool = pool_id(&conn, &pool).await?;
    let rows = conn
        .query(
            &format!(
                "SELECT {COLUMNS} FROM nodes n JOIN pools p ON p.id = n.pool_id
                 WHERE n.pool_id = $1 ORDER BY n.id"
            ),
            &[&pool],
        )
        .await
        .map_err(DbError::from)?;
    let nodes = rows
        .iter()
        .map(|r| {
            let v = view(r);
            let id = v["id"].as_str().unwrap_or("").to_string();
            (id.clone(), node_path(&pool, &id), v)
        })
        .collect();
    let list = format!("/pools/{}/nodes", crate::api::entity::seg(&pool));
    let schema = &berth_proto::odata::NODES;
    Ok(Json(crate::api::list::of_views(
        nodes,
        q.0,
        &h,
        schema,
        (&list, "nodes"),
    )?))
}

/// `GET` (and `HEAD`) `/pools/{pool}/nodes/{node}`, with `$select`; conditional.
async fn show(
    State(st): State<ServiceState>,
    Path((pool, node)): Path<(String, String)>,
    method: Method,
    h: HeaderMap,
    q: Pairs,
) -> Result<Response, ApiError> {
    let conn = st.db.conn().await?;
    let pool = pool_id(&conn, &pool).await?;
    let row = conn
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM nodes n JOIN pools p ON p.id = n.pool_id
                 WHERE n.pool_id = $1 AND n.id = $2"
            ),
            &[&pool, &node],
        )
        .await
        .map_err(DbError::from)?
        .ok_or_else(|| not_found(&pool, &node))?;
    let mut v = view(&row);
    let id = v["id"].as_str().unwrap_or(&node).to_string();
    let recent = recent_tasks(&conn, &pool, &id, &h).await?;
    if !recent.is_empty() {
        v["recentTasks"] = Value::Array(recent);
    }
    let at = node_path(&pool, &id);
    crate::api::entity::answer(&h, &method, &v, &at, "nodes", select_of(&q)?)
}

/// A node's `recentTasks` (Batch's `TaskInformation`), each task once: those with an
/// attempt live on the node, then those of its [`RECENT_COMPLETED`] latest ended attempts,
/// newest first. `taskState` is the task's own now (a task requeued from here may be
/// `active` or running elsewhere); `executionInfo` is shown only while the task's latest
/// run is this node's. Only a node's GET lists them, not the pool's node list, which
/// would read every node's attempts.
///
/// [`RECENT_COMPLETED`]: crate::api::RECENT_COMPLETED
async fn recent_tasks(
    c: &tokio_postgres::Client,
    pool: &str,
    node: &str,
    h: &HeaderMap,
) -> Result<Vec<Value>, ApiError> {
    use crate::api::entity::seg;
    let limit = crate::api::RECENT_COMPLETED as i64;
    let rows = c
        .query(
            "WITH recent AS (
                (SELECT task_seq, id, true AS live FROM attempts
                  WHERE pool_id = $1 AND node_id = $2 AND state = 'live')
                UNION ALL
                (SELECT task_seq, id, false FROM attempts
                  WHERE pool_id = $1 AND node_id = $2 AND state <> 'live'
                  ORDER BY id DESC LIMIT $3)
             ), each AS (
                SELECT task_seq, max(id) AS id, bool_or(live) AS live FROM recent GROUP BY task_seq
             )
             SELECT t.job_id, t.id, t.state,
                    CASE WHEN t.node_id = $2 THEN t.view -> 'executionInfo' END
               FROM each e JOIN tasks t ON t.seq = e.task_seq
              ORDER BY e.live DESC, e.id DESC",
            &[&pool, &node, &limit],
        )
        .await
        .map_err(DbError::from)?;
    let base = crate::api::entity::base_url(h);
    Ok(rows
        .iter()
        .map(|r| {
            let (job, task): (String, String) = (r.get(0), r.get(1));
            let mut i = json!({
                "taskUrl": format!("{base}/jobs/{}/tasks/{}", seg(&job), seg(&task)),
                "jobId": job,
                "taskId": task,
                "taskState": r.get::<_, String>(2),
            });
            match r.get::<_, Option<Value>>(3) {
                None | Some(Value::Null) => {}
                Some(e) => i["executionInfo"] = e,
            }
            i
        })
        .collect())
}

fn not_found(pool: &str, node: &str) -> ApiError {
    ApiError::NodeNotFound(format!("node {node} is not in pool {pool}"))
}

/// What happens to a node's running tasks when it is disabled or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunningTasks {
    /// Killed and run again elsewhere (`requeueCount` + 1).
    Requeue,
    /// Ended now, completed with Batch's terminated failure.
    Terminate,
    /// Left to finish.
    TaskCompletion,
}

/// Batch's option value (`requeue`, `terminate`, `taskcompletion`, and for removal
/// `retaineddata`, which berth treats as `taskcompletion`); `field` names it in errors.
pub fn parse_option(v: Option<&Value>, field: &str) -> Result<RunningTasks, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(RunningTasks::Requeue),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "requeue" => Ok(RunningTasks::Requeue),
            "terminate" => Ok(RunningTasks::Terminate),
            "taskcompletion" | "retaineddata" => Ok(RunningTasks::TaskCompletion),
            _ => Err(ApiError::InvalidPropertyValue(format!(
                "{field} {s:?} is not one of requeue, terminate, taskcompletion"
            ))),
        },
        Some(other) => Err(ApiError::InvalidPropertyValue(format!(
            "{field} must be a string, not {other}"
        ))),
    }
}

/// Applies `opt` to the node's live attempts; how many were requeued.
async fn apply(
    tx: &tokio_postgres::Transaction<'_>,
    pool: &str,
    node: &str,
    opt: RunningTasks,
) -> Result<u64, DbError> {
    let live: Vec<i64> = tx
        .query(
            "SELECT id FROM attempts WHERE pool_id = $1 AND node_id = $2 AND state = 'live'
             ORDER BY id FOR UPDATE",
            &[&pool, &node],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut n = 0;
    for a in live {
        match opt {
            RunningTasks::Requeue => {
                if attempts::requeue(tx, a, Requeue::Graceful).await? {
                    n += 1;
                }
            }
            RunningTasks::Terminate => attempts::ask_terminate(tx, a).await?,
            RunningTasks::TaskCompletion => {}
        }
    }
    Ok(n)
}

fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequestBody(e.to_string()))
}

async fn disable(
    State(st): State<ServiceState>,
    Path((pool, node)): Path<(String, String)>,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    let b = body_json(&body)?;
    let opt = parse_option(
        b.get("nodeDisableSchedulingOption"),
        "nodeDisableSchedulingOption",
    )?;
    let mut conn = st.db.conn().await?;
    let pool = pool_id(&conn, &pool).await?;
    let tx = conn.transaction().await.map_err(DbError::from)?;
    let found = tx
        .execute(
            "UPDATE nodes SET scheduling_state = 'disabled' WHERE pool_id = $1 AND id = $2",
            &[&pool, &node],
        )
        .await
        .map_err(DbError::from)?;
    if found == 0 {
        return Err(not_found(&pool, &node));
    }
    let n = apply(&tx, &pool, &node, opt).await?;
    tx.commit().await.map_err(DbError::from)?;
    metrics::requeued(n);
    Ok(StatusCode::OK)
}

async fn enable(
    State(st): State<ServiceState>,
    Path((pool, node)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let conn = st.db.conn().await?;
    let pool = pool_id(&conn, &pool).await?;
    let found = conn
        .execute(
            "UPDATE nodes SET scheduling_state = 'enabled' WHERE pool_id = $1 AND id = $2",
            &[&pool, &node],
        )
        .await
        .map_err(DbError::from)?;
    if found == 0 {
        return Err(not_found(&pool, &node));
    }
    // The node may claim now: wake every waiting claim of its pool (one wake could
    // reach another node's).
    st.wake.everyone(&pool);
    Ok(StatusCode::OK)
}

/// Batch's limit on `nodeList`.
const MAX_REMOVE: usize = 100;

async fn remove(
    State(st): State<ServiceState>,
    Path(pool): Path<String>,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    let b = body_json(&body)?;
    let list: Vec<String> = match b.get("nodeList") {
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= MAX_REMOVE => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                ApiError::InvalidPropertyValue("nodeList must hold node ids (strings)".into())
            })?,
        Some(_) => {
            return Err(ApiError::InvalidPropertyValue(format!(
                "nodeList must hold 1 to {MAX_REMOVE} node ids"
            )))
        }
        None => return Err(ApiError::MissingRequiredProperty("nodeList".into())),
    };
    let opt = parse_option(b.get("nodeDeallocationOption"), "nodeDeallocationOption")?;
    let mut conn = st.db.conn().await?;
    let pool = pool_id(&conn, &pool).await?;
    let tx = conn.transaction().await.map_err(DbError::from)?;
    let mut requeued = 0;
    for node in &list {
        let state: String = tx
            .query_opt(
                "UPDATE nodes SET removed = true, scheduling_state = 'disabled'
                 WHERE pool_id = $1 AND id = $2
                 RETURNING state",
                &[&pool, node],
            )
            .await
            .map_err(DbError::from)?
            .ok_or_else(|| not_found(&pool, node))?
            .get(0);
        if state == "unknown" {
            // No agent will come to leave: the node goes now, its tasks back to the queue.
            requeued += crate::service::node_api::leave_pool(&tx, &pool, node).await?;
            continue;
        }
        requeued += apply(&tx, &pool, node, opt).await?;
        tx.execute(
            "UPDATE nodes SET state = 'leavingpool', state_transition_time = now()
             WHERE pool_id = $1 AND id = $2",
            &[&pool, node],
        )
        .await
        .map_err(DbError::from)?;
    }
    tx.commit().await.map_err(DbError::from)?;
    metrics::requeued(requeued);
    Ok(StatusCode::ACCEPTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_to_requeue_and_name_their_field() {
        assert_eq!(parse_option(None, "f").unwrap(), RunningTasks::Requeue);
        assert_eq!(
            parse_option(Some(&json!("TaskCompletion")), "f").unwrap(),
            RunningTasks::TaskCompletion
        );
        assert_eq!(
            parse_option(Some(&json!("terminate")), "f").unwrap(),
            RunningTasks::Terminate
        );
        let e = parse_option(Some(&json!("later")), "nodeDeallocationOption").unwrap_err();
        assert!(e.message().contains("nodeDeallocationOption"));
    }
}
