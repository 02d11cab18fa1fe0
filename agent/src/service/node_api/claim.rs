//! `POST {PREFIX}/claim`: the long poll. Tries a claim at once, then again whenever the
//! pool's ready set may have grown (`Wake`, fed by PostgreSQL's NOTIFY) and every second
//! (the safety net for lost notifications and for spread/pack turns), until something is
//! claimed or `waitMs` (at most 30 s) passes. No transaction is held while it waits.
//! A notice wakes one waiting claim; a woken claim passes the wake on for the work it
//! left (see `service::wake`).

use super::{commands, json, Caller};
use crate::api::{ApiError, Body};
use crate::service::claim::{self, Room};
use crate::service::db::Cached;
use crate::service::db::DbError;
use crate::service::metrics;
use crate::service::state::ServiceState;
use axum::extract::State;
use berth_proto::node_protocol::{ClaimReply, ClaimRequest};
use std::time::{Duration, Instant};

/// The longest a claim waits.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting claim looks again without being woken.
const RECHECK: Duration = Duration::from_secs(1);

pub async fn claim(
    State(st): State<ServiceState>,
    caller: Caller,
    Body(body): Body,
) -> Result<axum::response::Response, ApiError> {
    let req: ClaimRequest = json(&body)?;
    caller.check_epoch(req.epoch)?;
    let wait = Duration::from_millis(req.wait_ms).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let room = Room {
        free_slots: i32::try_from(req.free_slots).unwrap_or(i32::MAX),
        free_gpus: i32::try_from(req.free_gpus).unwrap_or(i32::MAX),
    };
    let wake = st.wake.pool(&caller.node.pool_id);
    let poll_until = chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
    let mut first = true;
    // Whether this look follows a wake (not the first look, not the timer).
    let mut woken_up = false;
    // The notice this claim last passed an unused wake on for.
    let mut passed = None;
    loop {
        // Registered before the look, so a task made ready meanwhile still wakes us.
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let started = Instant::now();
        let mut conn = st.db.node_conn().await?;
        if !first && !woken_up && tokio::time::Instant::now() < deadline {
            // The timer's look: a read first, so an idle node's wait writes nothing (its
            // locked look below takes the node row, a write). Work that fits it is rare
            // here: a notice or a passed-on wake has most often come first.
            let any: bool = conn
                .query_one_cached(
                    "SELECT EXISTS (SELECT 1 FROM ready WHERE pool_id = $1 AND required_slots <= $2)",
                    &[&caller.node.pool_id, &room.free_slots],
                )
                .await
                .map_err(DbError::from)?
                .get(0);
            if !any {
                drop(conn);
                let next = (tokio::time::Instant::now() + RECHECK).min(deadline);
                woken_up = tokio::select! {
                    _ = &mut woken => true,
                    _ = tokio::time::sleep_until(next) => false,
                };
                continue;
            }
        }
        let tx = conn.transaction().await.map_err(DbError::from)?;
        caller.lock(&tx).await?;
        if first {
            // One write per poll: spread/pack count this node as asking until then.
            tx.execute_cached(
                "UPDATE nodes SET poll_until = $3, last_poll = now(), poll_free_slots = $4
                 WHERE pool_id = $1 AND id = $2",
                &[
                    &caller.node.pool_id,
                    &caller.node.node_id,
                    &poll_until,
                    &room.free_slots,
                ],
            )
            .await
            .map_err(DbError::from)?;
        }
        let claim::Claimed { claims, ready } =
            claim::claim(&tx, &caller.node, caller.epoch, room).await?;
        let done = !claims.is_empty() || tokio::time::Instant::now() >= deadline;
        let commands = if done {
            commands::owed(&tx, &caller, None, None).await?
        } else {
            vec![]
        };
        tx.commit().await.map_err(DbError::from)?;
        drop(conn);
        if woken_up {
            // After the commit, so the next claim sees what this one took.
            let left = ready - claims.len() as i64;
            if claims.is_empty() {
                if left > 0 {
                    // Not this node's turn, or nothing fit it: someone else's wake.
                    wake.pass(&mut passed);
                }
            } else {
                wake.more(left);
            }
        }
        if !claims.is_empty() {
            metrics::claimed(claims.len() as u64, started.elapsed());
        }
        if done {
            return super::to_node(&ClaimReply { claims, commands });
        }
        first = false;
        let next = (tokio::time::Instant::now() + RECHECK).min(deadline);
        woken_up = tokio::select! {
            _ = woken => true,
            _ = tokio::time::sleep_until(next) => false,
        };
    }
}
