//! `POST {PREFIX}/heartbeat`: renews the node's lease, stores how it is, and answers the
//! commands it is owed.

use super::{commands, json, Caller};
use crate::api::{ApiError, Body};
use crate::service::db::Cached;
use crate::service::db::DbError;
use crate::service::state::ServiceState;
use axum::extract::State;
use axum::Json;
use berth_proto::node_protocol::{Heartbeat, HeartbeatReply};

pub async fn heartbeat(
    State(st): State<ServiceState>,
    caller: Caller,
    Body(body): Body,
) -> Result<Json<HeartbeatReply>, ApiError> {
    let hb: Heartbeat = json(&body)?;
    caller.check_epoch(hb.epoch)?;
    let file_address = super::usable_file_address(&caller.node.node_id, hb.file_address.as_deref());
    let state = hb.node.state.to_string();
    let gpus = hb.node.gpus.as_ref().map_or(0, |g| g.devices.len() as i32);
    let mut report = serde_json::to_value(&hb.node).map_err(ApiError::internal)?;
    // berth's `imagePulls` ride in the report, where the node view reads them.
    if let (false, Some(o)) = (hb.image_pulls.is_empty(), report.as_object_mut()) {
        o.insert("imagePulls".into(), hb.image_pulls.into());
    }
    let mut conn = st.db.node_conn().await?;
    let tx = conn.transaction().await.map_err(DbError::from)?;
    // A heartbeat that changes nothing renews the lease only once the recorded renewal is
    // older than `unknownMs / 2 - heartbeatMs`: an idle node writes about every other
    // heartbeat (spec goal: <= 0.2 writes/s per idle node), and a live node's recorded
    // renewal is never near `unknownMs` old. The reply says how old it is, and the node
    // counts its self-fence from that renewal, so the margin to requeue stays whole.
    // Otherwise, only while the caller's enrolment is the node's (this update is the node
    // row's lock), the node's own state, except that the service's word wins while it
    // removes the node.
    let row = tx
        .query_opt_cached(
            "WITH cur AS (
                 SELECT n.pool_id, n.id,
                        n.report = $4 AND n.gpus = $5
                          AND n.file_address IS NOT DISTINCT FROM COALESCE($6, n.file_address)
                          AND n.state = CASE WHEN n.removed THEN 'leavingpool' ELSE $3 END
                          AND n.last_heartbeat > now()
                              - (p.unknown_ms / 2 - p.heartbeat_ms) * interval '1 millisecond'
                          -- A job end to deliver: marked sent under the node's lock.
                          AND NOT EXISTS (
                              SELECT 1 FROM job_nodes jn JOIN jobs j ON j.id = jn.job_id
                              WHERE jn.pool_id = n.pool_id AND jn.node_id = n.id
                                AND NOT jn.end_sent AND j.state IN ('completed', 'deleting'))
                          AS fresh,
                        n.last_heartbeat
                 FROM nodes n JOIN pools p ON p.id = n.pool_id
                 WHERE n.pool_id = $1 AND n.id = $2 AND n.epoch = $7),
             renewed AS (
                 UPDATE nodes SET last_heartbeat = now(), report = $4, gpus = $5,
                     file_address = COALESCE($6, nodes.file_address),
                     state_transition_time = CASE WHEN nodes.state = $3 OR nodes.removed
                                                  THEN nodes.state_transition_time ELSE now() END,
                     state = CASE WHEN nodes.removed THEN 'leavingpool' ELSE $3 END
                 FROM cur
                 WHERE nodes.pool_id = cur.pool_id AND nodes.id = cur.id AND NOT cur.fresh
                   -- Checked again on the row as locked: an enrolment may have committed.
                   AND nodes.epoch = $7
                 RETURNING nodes.last_heartbeat)
             SELECT cur.fresh OR EXISTS (SELECT 1 FROM renewed),
                    GREATEST(0, (extract(epoch FROM now() - COALESCE(
                        (SELECT last_heartbeat FROM renewed), cur.last_heartbeat)) * 1000))::bigint
             FROM cur",
            &[
                &caller.node.pool_id,
                &caller.node.node_id,
                &state,
                &report,
                &gpus,
                &file_address,
                &caller.epoch,
            ],
        )
        .await
        .map_err(DbError::from)?;
    // A heartbeat that wrote nothing read the epoch in its snapshot: it is ordered before
    // any enrolment that commits meanwhile, and changes nothing that one would own.
    let Some(row) = row.filter(|r| r.get::<_, bool>(0)) else {
        return Err(caller.superseded());
    };
    let lease_age_ms = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
    let enabled = hb.node.scheduling_state == "enabled";
    let commands = commands::owed(&tx, &caller, Some(&hb.running), Some(enabled)).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(HeartbeatReply {
        commands,
        lease_age_ms,
    }))
}
