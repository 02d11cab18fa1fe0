//! `GET /jobs/{job}/jobpreparationandreleasetaskstatus` on the service: each node that
//! ran a task of the job (`job_nodes`) keeps its own preparation and release runs, so
//! the service asks each node's agent for its entry (the same path, with the node's proxy
//! credential, as task files are read: [`super::files`]) and answers the merged list in
//! Batch's shape, ordered by node id, with `$filter`, `$select`, `maxresults` and
//! `odata.nextLink`. A node that cannot answer (offline, gone, refused, or silent for
//! [`ASK_LIMIT`]) is left out and named in a log line (a warning when it was asked and
//! failed): the others' entries still come back.

use super::files::{client, node_address, Target};
use super::{find_job, Lock, Sql};
use crate::api::list::ListQuery;
use crate::api::{ApiError, Pairs};
use crate::service::state::ServiceState;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use berth_proto::JobPrepReleaseStatus;
use futures_util::StreamExt;
use serde_json::Value;
use std::time::Duration;

/// How many nodes are asked at once.
const ASK_AT_ONCE: usize = 32;
/// How long one node may take to answer before it is left out.
const ASK_LIMIT: Duration = Duration::from_secs(10);

/// The handler.
pub(super) async fn status(
    State(st): State<ServiceState>,
    Path(job): Path<String>,
    h: HeaderMap,
    q: Pairs,
) -> Result<Json<Value>, ApiError> {
    let q = ListQuery::parse(q.0, &berth_proto::odata::PREP_RELEASE)?;
    let conn = st.db.conn().await?;
    let row = find_job(&conn, &job, Lock::None).await?;
    if row.view.spec.job_preparation_task.is_none() {
        return Err(ApiError::JobPreparationTaskNotSpecified(
            "The specified job does not have a job preparation task.".into(),
        ));
    }
    let id = row.view.spec.id;
    // By the pool each node ran in: a job moved to another pool keeps its earlier nodes.
    let nodes: Vec<(String, String)> = conn
        .query(
            "SELECT pool_id, node_id FROM job_nodes WHERE job_id = $1 ORDER BY node_id",
            &[&id],
        )
        .await
        .sql()?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let key = st.settings.proxy_key();
    let mut targets = Vec::with_capacity(nodes.len());
    for (pool, node) in nodes {
        match node_address(&conn, &key, &pool, &node).await? {
            Some(t) => targets.push((node, t)),
            None => {
                tracing::info!(job = %id, %node, "preparation status: left out the node, which cannot answer now (offline, unknown or gone)")
            }
        }
    }
    // No database connection is held while the nodes answer, a few at a time, each
    // within ASK_LIMIT.
    drop(conn);
    let asked = targets.into_iter().map(|(node, t)| {
        let id = &id;
        async move {
            let answer = tokio::time::timeout(ASK_LIMIT, ask(id, t))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {ASK_LIMIT:?}")));
            answer.unwrap_or_else(|why| {
                tracing::warn!(job = %id, %node, %why, "preparation status: left out the node's entry");
                vec![]
            })
        }
    });
    let mut entries: Vec<JobPrepReleaseStatus> = futures_util::stream::iter(asked)
        .buffer_unordered(ASK_AT_ONCE)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .flatten()
        .collect();
    entries.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    let items = entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let order = i64::try_from(i).unwrap_or(i64::MAX);
            let v = serde_json::to_value(&e).map_err(ApiError::internal)?;
            Ok((order, e.node_id, v))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let path = format!(
        "/jobs/{}/jobpreparationandreleasetaskstatus",
        crate::api::entity::seg(&id)
    );
    Ok(Json(q.page(
        items,
        &h,
        &path,
        "jobpreparationandreleasetaskstatuslist",
    )))
}

/// The node's own entries for `job`; Err says why there are none.
async fn ask(job: &str, t: Target) -> Result<Vec<JobPrepReleaseStatus>, String> {
    let url = format!(
        "{}/jobs/{}/jobpreparationandreleasetaskstatus?api-version={}",
        t.address.trim_end_matches('/'),
        crate::api::entity::seg(job),
        crate::api::API_VERSION
    );
    let resp = client()
        .get(&url)
        .bearer_auth(&t.token)
        .send()
        .await
        .map_err(|e| {
            format!(
                "its agent did not answer: {}",
                crate::error_chain::chain(&e)
            )
        })?;
    // A node that no longer holds the job has no entry for it.
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(vec![]);
    }
    if !resp.status().is_success() {
        return Err(format!("its agent answered {}", resp.status()));
    }
    #[derive(serde::Deserialize)]
    struct List {
        value: Vec<JobPrepReleaseStatus>,
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("its answer was cut: {e}"))?;
    let list: List =
        serde_json::from_slice(&body).map_err(|e| format!("its answer was not the list: {e}"))?;
    Ok(list.value)
}
