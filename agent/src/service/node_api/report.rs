//! `POST {PREFIX}/report`, `/adopt` and `/leave`: what a node says about its attempts.
//! Every change is fenced by the attempt id (`service::attempts`): a report for an
//! attempt that is not current is 409 `AttemptFenced` and changes nothing.

use super::{json, Caller};
use crate::api::{ApiError, Body};
use crate::service::attempts::{self, Completion, Requeue};
use crate::service::db::Cached;
use crate::service::db::DbError;
use crate::service::metrics;
use crate::service::state::ServiceState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use berth_proto::node_protocol::{
    AdoptReply, AdoptRequest, LeaveRequest, Report, ReportEvent, Reports, ReportsReply, MAX_REPORTS,
};

/// `POST /report`: one report, recorded as `/reports` records each; 409 `AttemptFenced`
/// when its attempt is not current.
pub async fn report(
    State(st): State<ServiceState>,
    caller: Caller,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    let r: Report = json(&body)?;
    let fenced = recorded(&st, &caller, std::slice::from_ref(&r)).await?;
    if !fenced.is_empty() {
        return Err(ApiError::AttemptFenced(format!(
            "attempt {} of task {} of job {} is no longer current; kill and remove its container",
            r.attempt, r.task_id, r.job_id
        )));
    }
    Ok(StatusCode::OK)
}

/// `POST /reports`: the node's reports in one transaction, in order within each job; the
/// reply names those whose attempts are not current. Superseded as `/report` is.
pub async fn reports(
    State(st): State<ServiceState>,
    caller: Caller,
    Body(body): Body,
) -> Result<Json<ReportsReply>, ApiError> {
    let r: Reports = json(&body)?;
    if r.reports.len() > MAX_REPORTS {
        return Err(ApiError::InvalidPropertyValue(format!(
            "reports has {} reports; at most {MAX_REPORTS} are accepted in one call",
            r.reports.len()
        )));
    }
    let fenced = recorded(&st, &caller, &r.reports).await?;
    Ok(Json(ReportsReply { fenced }))
}

/// Records `reports` of the caller's epoch ([`record_all`]); a transaction that met
/// another one (a deadlock with a client's terminate, which locks in its own order) is
/// PostgreSQL's to break, and the loser here simply runs again, twice at most. The
/// attempts not current (counted in the metrics), or 409 when the caller is superseded.
async fn recorded(
    st: &ServiceState,
    caller: &Caller,
    reports: &[Report],
) -> Result<Vec<i64>, ApiError> {
    for r in reports {
        caller.check_epoch(r.epoch)?;
    }
    let mut tries = 0;
    let outcome = loop {
        tries += 1;
        match record_all(st, caller, reports).await {
            Err(e) if tries < 3 && is_conflict(&e) => continue,
            other => break other?,
        }
    };
    let fenced = outcome.ok_or_else(|| caller.superseded())?;
    for r in reports {
        if fenced.contains(&r.attempt) {
            metrics::fenced();
        } else if let ReportEvent::Abandoned { reason } = &r.event {
            tracing::info!(attempt = r.attempt, node = %caller.node.node_id, %reason,
                "attempt abandoned by its node");
        }
    }
    Ok(fenced)
}

/// Whether a transaction failed only for meeting another one (deadlock, serialisation):
/// worth running again.
fn is_conflict(e: &DbError) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(e, DbError::Query(q) if q.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    }))
}

/// Records `reports` in one transaction, under the node's row lock and only while the
/// caller's enrolment is the node's: the fenced attempts (which wrote nothing), or None
/// when the node was enrolled again (or removed) since the token was checked.
async fn record_all(
    st: &ServiceState,
    caller: &Caller,
    reports: &[Report],
) -> Result<Option<Vec<i64>>, DbError> {
    let mut conn = st.db.node_conn().await?;
    let tx = conn.transaction().await?;
    if !attempts::lock_node_at(&tx, &caller.node, caller.epoch).await? {
        return Ok(None);
    }
    // Grouped by job, in order within each: a report can lock its job's row, and two
    // batches that took two jobs in opposite orders would deadlock. One attempt's reports
    // are of one job, so their order holds.
    let mut ordered: Vec<&Report> = reports.iter().collect();
    ordered.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    let mut fenced = vec![];
    for r in ordered {
        if !record_in(&tx, caller, r).await? {
            fenced.push(r.attempt);
        }
    }
    tx.commit().await?;
    Ok(Some(fenced))
}

/// Records `r` in `tx` (the node's row locked): whether it counted. One that did not
/// (its attempt is not current) wrote nothing.
async fn record_in(
    tx: &deadpool_postgres::Transaction<'_>,
    caller: &Caller,
    r: &Report,
) -> Result<bool, DbError> {
    let view = |task: &berth_proto::TaskView| {
        serde_json::to_value(task).map_err(|source| DbError::Row {
            what: "reported task view",
            source,
        })
    };
    Ok(match &r.event {
        ReportEvent::Running { task } => {
            attempts::running(tx, &caller.node, r.attempt, view(task)?).await?
        }
        ReportEvent::Completed { task } => {
            match attempts::complete(tx, &caller.node, r.attempt, view(task)?).await? {
                Completion::Done(_) | Completion::Repeated => true,
                Completion::Fenced => false,
            }
        }
        ReportEvent::Abandoned { .. } => {
            let mine = tx
                .query_opt_cached(
                    "SELECT 1 FROM attempts WHERE id = $1 AND pool_id = $2 AND node_id = $3",
                    &[&r.attempt, &caller.node.pool_id, &caller.node.node_id],
                )
                .await?
                .is_some();
            if mine && attempts::requeue(tx, r.attempt, Requeue::Lost).await? {
                metrics::requeued(1);
            }
            // Giving up an attempt that already ended is no conflict.
            mine
        }
    })
}

/// Which of the attempts a restarted agent found are still live and current here.
pub async fn adopt(
    State(st): State<ServiceState>,
    caller: Caller,
    Body(body): Body,
) -> Result<Json<AdoptReply>, ApiError> {
    let req: AdoptRequest = json(&body)?;
    caller.check_epoch(req.epoch)?;
    let mut conn = st.db.node_conn().await?;
    let tx = conn.transaction().await.map_err(DbError::from)?;
    caller.lock(&tx).await?;
    let current: Vec<i64> = tx
        .query_cached(
            "SELECT x.id FROM attempts x JOIN tasks t ON t.seq = x.task_seq
             WHERE x.id = ANY($3) AND x.state = 'live' AND t.current_attempt = x.id
               AND x.pool_id = $1 AND x.node_id = $2
             ORDER BY x.id",
            &[&caller.node.pool_id, &caller.node.node_id, &req.attempts],
        )
        .await
        .map_err(DbError::from)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // What the node no longer has (its containers and journal lost them) goes back to the
    // queue now, as an internal retry.
    let gone: Vec<i64> = tx
        .query_cached(
            "SELECT id FROM attempts
             WHERE pool_id = $1 AND node_id = $2 AND state = 'live' AND NOT (id = ANY($3))",
            &[&caller.node.pool_id, &caller.node.node_id, &current],
        )
        .await
        .map_err(DbError::from)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for a in &gone {
        attempts::requeue(&tx, *a, Requeue::Lost).await?;
    }
    tx.commit().await.map_err(DbError::from)?;
    if !gone.is_empty() {
        metrics::requeued(gone.len() as u64);
        tracing::info!(pool = %caller.node.pool_id, node = %caller.node.node_id,
            requeued = gone.len(), "attempts a restarted node no longer has were requeued");
    }
    Ok(Json(AdoptReply { current }))
}

/// A graceful stop: the node's live attempts go back to the queue at once
/// (`requeueCount` + 1) and the node leaves the pool (its row goes, as Batch forgets a
/// removed node; its token then answers `NodeSuperseded`).
pub async fn leave(
    State(st): State<ServiceState>,
    caller: Caller,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    let req: LeaveRequest = json(&body)?;
    caller.check_epoch(req.epoch)?;
    let mut conn = st.db.node_conn().await?;
    let tx = conn.transaction().await.map_err(DbError::from)?;
    caller.lock(&tx).await?;
    let n = leave_pool(&tx, &caller.node.pool_id, &caller.node.node_id).await?;
    tx.commit().await.map_err(DbError::from)?;
    metrics::requeued(n);
    tracing::info!(pool = %caller.node.pool_id, node = %caller.node.node_id, requeued = n,
        "node left the pool");
    Ok(StatusCode::OK)
}

/// Requeues `node`'s live attempts (graceful) and removes the node; how many were requeued.
pub async fn leave_pool(
    tx: &deadpool_postgres::Transaction<'_>,
    pool: &str,
    node: &str,
) -> Result<u64, DbError> {
    attempts::lock_node(tx, pool, node).await?;
    let live: Vec<i64> = tx
        .query_cached(
            "SELECT id FROM attempts WHERE pool_id = $1 AND node_id = $2 AND state = 'live'
             ORDER BY id FOR UPDATE",
            &[&pool, &node],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for a in &live {
        attempts::requeue(tx, *a, Requeue::Graceful).await?;
    }
    // A node gone counts as released for every job it ran.
    tx.execute_cached(
        "DELETE FROM job_nodes WHERE pool_id = $1 AND node_id = $2",
        &[&pool, &node],
    )
    .await?;
    tx.execute_cached(
        "DELETE FROM nodes WHERE pool_id = $1 AND id = $2",
        &[&pool, &node],
    )
    .await?;
    Ok(live.len() as u64)
}
