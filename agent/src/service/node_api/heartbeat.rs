//! `POST {PREFIX}/heartbeat`: renews the node's lease, stores how it is, and answers the
//! commands it is owed.

use super::{commands, json, Caller};
use crate::api::{ApiError, Body};
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
    let report = serde_json::to_value(&hb.node).map_err(ApiError::internal)?;
    let mut conn = st.db.node_conn().await?;
    let tx = conn.transaction().await.map_err(DbError::from)?;
    // The node's own state, except that the service's word wins while it removes the node.
    // Only while the caller's enrolment is the node's (this update is the node row's lock).
    let n = tx
        .execute(
            "UPDATE nodes SET last_heartbeat = now(), report = $4, gpus = $5,
                file_address = COALESCE($6, file_address),
                state_transition_time = CASE WHEN state = $3 OR removed
                                             THEN state_transition_time ELSE now() END,
                state = CASE WHEN removed THEN 'leavingpool' ELSE $3 END
         WHERE pool_id = $1 AND id = $2 AND epoch = $7",
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
    if n == 0 {
        return Err(caller.superseded());
    }
    let enabled = hb.node.scheduling_state == "enabled";
    let commands = commands::owed(&tx, &caller, Some(&hb.running), Some(enabled)).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(HeartbeatReply { commands }))
}
