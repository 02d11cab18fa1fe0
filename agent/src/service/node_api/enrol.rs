//! `POST {PREFIX}/enrol`: a node joins its pool (or rejoins it after a restart) and gets
//! its token, the pool's configuration and its lease timers.

use super::{bearer, json, token};
use crate::api::{ApiError, Body};
use crate::service::attempts;
use crate::service::db::DbError;
use crate::service::state::ServiceState;
use axum::extract::State;
use axum::http::HeaderMap;
use berth_proto::node::{ComputeNode, NodeAgentInfo, NodeState};
use berth_proto::node_protocol::{EnrolRequest, EnrolResponse, Timers};
use berth_proto::PoolSpec;

pub async fn enrol(
    State(st): State<ServiceState>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<axum::response::Response, ApiError> {
    let secret = bearer(&headers)?;
    if st.settings.enrolment_secret.is_empty()
        || !crate::api::constant_time_eq(secret.as_bytes(), st.settings.enrolment_secret.as_bytes())
    {
        return Err(ApiError::AuthenticationFailed(
            "the enrolment secret is not valid".into(),
        ));
    }
    let req: EnrolRequest = json(&body)?;
    let file_address = super::usable_file_address(&req.node_id, req.file_address.as_deref());
    berth_proto::id::check_id(&req.node_id)
        .map_err(|e| ApiError::InvalidPropertyValue(format!("nodeId {e}")))?;
    let mut conn = st.db.node_conn().await?;
    let tx = conn.transaction().await.map_err(DbError::from)?;
    let pool = tx
        .query_opt(
            "SELECT id, spec, heartbeat_ms, unknown_ms, self_fence_ms, requeue_ms,
                    task_slots_per_node, state
             FROM pools WHERE id_key = lower($1) FOR SHARE",
            &[&req.pool_id],
        )
        .await
        .map_err(DbError::from)?
        .ok_or_else(|| ApiError::PoolNotFound(format!("pool {} does not exist", req.pool_id)))?;
    if pool.get::<_, String>(7) != "active" {
        return Err(ApiError::PoolBeingDeleted(format!(
            "pool {} is being deleted",
            req.pool_id
        )));
    }
    let pool_id: String = pool.get(0);
    let spec: PoolSpec = serde_json::from_value(pool.get(1)).map_err(|source| DbError::Row {
        what: "pool spec",
        source,
    })?;
    let ms = |i: usize| pool.get::<_, i64>(i).max(0) as u64;
    let opt_ms = |i: usize| pool.get::<_, Option<i64>>(i).map(|v| v.max(0) as u64);
    let timers = Timers {
        heartbeat_ms: ms(2),
        unknown_ms: ms(3),
        self_fence_ms: opt_ms(4),
        requeue_ms: opt_ms(5),
    };
    let slots: i32 = pool.get(6);

    let epoch: i64 = tx
        .query_one("SELECT nextval('node_epochs')", &[])
        .await
        .map_err(DbError::from)?
        .get(0);
    let node_token = token::mint(epoch).map_err(ApiError::internal)?;
    attempts::lock_node(&tx, &pool_id, &req.node_id).await?;
    // An agent enrolling again may still have what its older self ran (a restart keeps
    // the containers): those attempts pass to the new enrolment, and its `adopt` says which
    // it has; the rest are requeued then. Nothing is requeued here, so a restart neither
    // loses its tasks nor lets another node start them while their containers live.
    tx.execute(
        "UPDATE attempts SET epoch = $3
         WHERE pool_id = $1 AND node_id = $2 AND state = 'live'",
        &[&pool_id, &req.node_id, &epoch],
    )
    .await
    .map_err(DbError::from)?;
    let now = chrono::Utc::now();
    let report = ComputeNode {
        id: req.node_id.clone(),
        pool_id: pool_id.clone(),
        state: NodeState::Starting,
        scheduling_state: "enabled".into(),
        state_transition_time: now,
        start_task_info: None,
        errors: vec![],
        images: vec![],
        gpus: None,
        node_agent_info: NodeAgentInfo {
            version: req.agent_version.clone(),
            last_update_time: now,
        },
    };
    let report = serde_json::to_value(&report).map_err(ApiError::internal)?;
    let hash = token::hash(&node_token);
    tx.execute(
        "INSERT INTO nodes (pool_id, id, epoch, token_hash, state, report, file_address, slots,
                            last_heartbeat, state_transition_time)
         VALUES ($1, $2, $3, $4, 'starting', $5, $6, $7, now(), now())
         ON CONFLICT (pool_id, id) DO UPDATE SET
             epoch = excluded.epoch, token_hash = excluded.token_hash, state = 'starting',
             report = excluded.report, file_address = excluded.file_address,
             slots = excluded.slots, used_slots = 0, used_gpus = 0, poll_until = NULL,
             last_heartbeat = now(), state_transition_time = now()",
        &[
            &pool_id,
            &req.node_id,
            &epoch,
            &hash,
            &report,
            &file_address,
            &slots,
        ],
    )
    .await
    .map_err(DbError::from)?;
    tx.execute(
        "INSERT INTO enrolments (epoch, pool_id, node_id, token_hash)
         VALUES ($1, $2, $3, $4)",
        &[&epoch, &pool_id, &req.node_id, &hash],
    )
    .await
    .map_err(DbError::from)?;
    tx.commit().await.map_err(DbError::from)?;
    tracing::info!(pool = %pool_id, node = %req.node_id, epoch, "node enrolled");
    super::to_node(&EnrolResponse {
        node_token,
        epoch,
        pool: spec,
        timers,
        proxy_token: Some(token::proxy(
            &st.settings.proxy_key(),
            &pool_id,
            &req.node_id,
            epoch,
        )),
    })
}
