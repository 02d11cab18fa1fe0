//! Jobs on the service: add (on an existing pool), get, list (Batch's `$filter`,
//! `$select`, `maxresults` and paging), patch and put (priority, maxParallelTasks,
//! onAllTasksComplete, ...), disable, enable, terminate, delete. The job state rules and
//! the answers' shapes (ETag, conditions, Location) are the standalone agent's
//! (`api::job_state`, `api::entity`); the transitions themselves are `service::job_end`'s.

use super::{find_job, find_pool, first_problem, is_unique_violation, Lock, Sql};
use crate::api::entity::{self, seg};
use crate::api::job_state::{check, JobOp};
use crate::api::{require_json, select_of, ApiError, Body, Pairs};
use crate::service::db::Cached;
use crate::service::db::DbError;
use crate::service::job_end;
use crate::service::state::ServiceState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Json;
use berth_proto::{
    load, validate, DisableJobOption, JobSpec, JobView, OnAllTasksComplete, PoolSpec,
};
use deadpool_postgres::GenericClient;

/// The pool a job names (`poolInfo.poolId`), which must exist and take jobs.
async fn job_pool(
    c: &(impl GenericClient + Cached),
    spec: &JobSpec,
) -> Result<(String, PoolSpec), ApiError> {
    let Some(id) = spec
        .pool_info
        .as_ref()
        .and_then(|p| p.get("poolId"))
        .and_then(|p| p.as_str())
    else {
        return Err(ApiError::InvalidPropertyValue(
            "$.poolInfo.poolId: a job on the service must name its pool".into(),
        ));
    };
    match find_pool(c, id).await {
        Ok((id, spec, state)) if state == "active" => Ok((id, spec)),
        Ok((id, ..)) => Err(ApiError::PoolBeingDeleted(format!(
            "$.poolInfo.poolId: pool {id:?} is being deleted"
        ))),
        Err(ApiError::PoolNotFound(_)) => Err(ApiError::InvalidPropertyValue(format!(
            "$.poolInfo.poolId: there is no pool {id:?}"
        ))),
        Err(e) => Err(e),
    }
}

pub async fn add(
    State(s): State<ServiceState>,
    h: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    require_json(&h)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::InvalidRequestBody("the body is not UTF-8".into()))?;
    let mut l =
        load::job("request body", text).map_err(|e| ApiError::InvalidRequestBody(e.to_string()))?;
    l.warnings.iter().for_each(|w| tracing::warn!("{w}"));
    let spec = l.items.remove(0).1;
    let c = s.db.conn().await?;
    let (pool_id, pool) = job_pool(&c, &spec).await?;
    first_problem(validate::job(&spec, &pool))?;
    if spec.job_manager_task.is_some() {
        return Err(ApiError::InvalidPropertyValue(
            "$.jobManagerTask: is not supported by berth service yet; add the task to the job instead".into(),
        ));
    }
    let job = JobView::new(spec);
    let view = berth_proto::common::with_secrets_revealed(|| serde_json::to_value(&job))
        .map_err(ApiError::internal)?;
    let r = c
        .execute(
            "INSERT INTO jobs (id, id_key, pool_id, priority, max_parallel, state, view)
             VALUES ($1, lower($1), $2, $3, $4, 'active', $5)",
            &[
                &job.spec.id,
                &pool_id,
                &job.spec.priority(),
                &job.spec.parallel_cap().map_or(-1, |n| n as i32),
                &view,
            ],
        )
        .await;
    match r {
        Ok(_) => entity::created(&h, &job, &job_path(&job)),
        Err(e) if is_unique_violation(&e) => Err(ApiError::JobExists(format!(
            "The specified job {:?} already exists.",
            job.spec.id
        ))),
        Err(e) => Err(DbError::Query(e).into()),
    }
}

/// A job's URL path.
fn job_path(j: &JobView) -> String {
    format!("/jobs/{}", seg(&j.spec.id))
}

/// `GET` (and `HEAD`) `/jobs/{job}`, with `$select`; conditional.
pub async fn get(
    State(s): State<ServiceState>,
    Path(job): Path<String>,
    method: Method,
    h: HeaderMap,
    q: Pairs,
) -> Result<Response, ApiError> {
    let c = s.db.conn().await?;
    let j = find_job(&c, &job, Lock::None).await?.view;
    entity::answer(&h, &method, &j, &job_path(&j), "jobs", select_of(&q)?)
}

/// Jobs in creation order, as the agent lists them (`$filter`, `$select`, paging).
pub async fn list(
    State(s): State<ServiceState>,
    h: HeaderMap,
    q: Pairs,
) -> Result<Json<serde_json::Value>, ApiError> {
    let c = s.db.conn().await?;
    let rows = c
        .query("SELECT view FROM jobs ORDER BY seq", &[])
        .await
        .sql()?;
    let jobs = rows
        .into_iter()
        .map(|r| super::stored::<JobView>(r.get(0), "job"))
        .collect::<Result<Vec<_>, _>>()?;
    crate::api::job_listing(jobs, q.0, &h, "/jobs")
}

/// The job properties Batch lets a running job change (`JobPatchParameter`,
/// `JobUpdateParameter`) that berth keeps. Anything else is refused by name.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JobUpdate {
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default)]
    max_parallel_tasks: Option<i32>,
    #[serde(default)]
    on_all_tasks_complete: Option<OnAllTasksComplete>,
    #[serde(default)]
    constraints: Option<berth_proto::job::JobConstraints>,
    #[serde(default)]
    pool_info: Option<serde_json::Value>,
}

/// `PATCH /jobs/{job}`: changes the properties given, leaves the rest.
pub async fn patch(
    State(s): State<ServiceState>,
    Path(job): Path<String>,
    h: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    update(s, &job, &h, &body, false).await
}

/// `PUT /jobs/{job}`: replaces every updatable property; one left out goes back to its
/// default (`poolInfo` is required, as in Batch).
pub async fn put(
    State(s): State<ServiceState>,
    Path(job): Path<String>,
    h: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    update(s, &job, &h, &body, true).await
}

async fn update(
    s: ServiceState,
    job: &str,
    h: &HeaderMap,
    body: &[u8],
    replace: bool,
) -> Result<Response, ApiError> {
    require_json(h)?;
    let u: JobUpdate = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidRequestBody(format!("job update: {e}")))?;
    let mut c = s.db.conn().await?;
    let tx = c.transaction().await.sql()?;
    let mut j = find_job(&tx, job, Lock::Update).await?;
    let method = if replace { Method::PUT } else { Method::PATCH };
    entity::check_write(h, &method, &j.view)?;
    check(j.view.state, JobOp::Update)?;
    if replace && u.pool_info.is_none() {
        return Err(ApiError::MissingRequiredProperty(
            "$.poolInfo: a job update (PUT) must give poolInfo".into(),
        ));
    }
    first_problem(validate::job_limits_problems(
        u.priority,
        u.max_parallel_tasks,
    ))?;
    let auto_end = Some(OnAllTasksComplete::TerminateJob);
    let spec = &mut j.view.spec;
    let wanted = if replace {
        u.on_all_tasks_complete
    } else {
        u.on_all_tasks_complete.or(spec.on_all_tasks_complete)
    };
    if spec.on_all_tasks_complete == auto_end && wanted != auto_end {
        return Err(ApiError::InvalidPropertyValue(
            "$.onAllTasksComplete: once terminatejob, it cannot be turned back to noaction".into(),
        ));
    }
    if replace {
        spec.priority = u.priority;
        spec.max_parallel_tasks = u.max_parallel_tasks;
        spec.constraints = u.constraints;
    } else {
        spec.priority = u.priority.or(spec.priority);
        spec.max_parallel_tasks = u.max_parallel_tasks.or(spec.max_parallel_tasks);
        spec.constraints = u.constraints.or(spec.constraints.take());
    }
    spec.on_all_tasks_complete = wanted;
    if let Some(p) = u.pool_info {
        // A job stays on its pool: the pool's nodes hold its tasks.
        let same = p
            .get("poolId")
            .and_then(|v| v.as_str())
            .is_some_and(|id| id.eq_ignore_ascii_case(&j.pool_id));
        if !same {
            return Err(ApiError::InvalidPropertyValue(format!(
                "$.poolInfo.poolId: a job cannot move to another pool; it is on {:?}",
                j.pool_id
            )));
        }
        spec.pool_info = Some(p);
    }
    let (_, pool, _) = find_pool(&tx, &j.pool_id).await?;
    first_problem(validate::job_fields(&j.view.spec, &pool))?;
    j.view.last_modified = Some(chrono::Utc::now());
    job_end::put_job(&tx, &j.view).await?;
    tx.commit().await.sql()?;
    entity::changed(h, StatusCode::OK, Some(&j.view), &job_path(&j.view))
}

/// Batch's job disable body: `{"disableTasks": "requeue" | "terminate" | "wait"}`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DisableBody {
    disable_tasks: Option<berth_proto::DisableJobOption>,
}

/// `POST /jobs/{job}/disable`: no task of the job is claimed until it is enabled.
pub async fn disable(
    State(s): State<ServiceState>,
    Path(job): Path<String>,
    h: HeaderMap,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    require_json(&h)?;
    let b: DisableBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidRequestBody(format!("job disable: {e}")))?;
    let Some(how) = b.disable_tasks else {
        return Err(ApiError::MissingRequiredProperty(
            "$.disableTasks: give requeue, terminate or wait".into(),
        ));
    };
    change(&s, &job, &h, Change::Disable(how)).await
}

/// `POST /jobs/{job}/enable`: a disabled job's tasks may be claimed again.
pub async fn enable(
    State(s): State<ServiceState>,
    Path(job): Path<String>,
    h: HeaderMap,
) -> Result<StatusCode, ApiError> {
    change(&s, &job, &h, Change::Enable).await
}

/// A change of a job's state, as `service::job_end` makes it.
enum Change<'a> {
    Disable(DisableJobOption),
    Enable,
    Terminate(&'a str),
    Delete,
}

/// Makes `what` to job `id` in one transaction, the job's row locked, once the request's
/// conditions (`If-Match`, ...) and the job state rules allow it: 202.
async fn change(
    s: &ServiceState,
    id: &str,
    h: &HeaderMap,
    what: Change<'_>,
) -> Result<StatusCode, ApiError> {
    let (op, method) = match what {
        Change::Disable(_) => (JobOp::Disable, Method::POST),
        Change::Enable => (JobOp::Enable, Method::POST),
        Change::Terminate(_) => (JobOp::Terminate, Method::POST),
        Change::Delete => (JobOp::Delete, Method::DELETE),
    };
    let mut c = s.db.conn().await?;
    let tx = c.transaction().await.sql()?;
    let mut j = find_job(&tx, id, Lock::Update).await?;
    entity::check_write(h, &method, &j.view)?;
    check(j.view.state, op)?;
    let v = &mut j.view;
    match what {
        Change::Disable(how) => job_end::disable_job(&tx, v, how).await?,
        Change::Enable => job_end::enable_job(&tx, v).await?,
        Change::Terminate(reason) => job_end::terminate_job(&tx, v, reason).await?,
        Change::Delete => job_end::delete_job(&tx, v).await?,
    }
    tx.commit().await.sql()?;
    Ok(StatusCode::ACCEPTED)
}

/// Batch's job terminate body: `{"terminateReason": "..."}`, optional.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct TerminateBody {
    #[serde(default)]
    terminate_reason: Option<String>,
}

/// Batch's limit on `terminateReason`.
const MAX_TERMINATE_REASON: usize = 64;

pub async fn terminate(
    State(s): State<ServiceState>,
    Path(job): Path<String>,
    h: HeaderMap,
    Body(body): Body,
) -> Result<StatusCode, ApiError> {
    let given: TerminateBody = if body.iter().all(u8::is_ascii_whitespace) {
        TerminateBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::InvalidRequestBody(format!("terminate body: {e}")))?
    };
    let reason = match given.terminate_reason {
        Some(r) if r.chars().count() > MAX_TERMINATE_REASON => {
            return Err(ApiError::InvalidPropertyValue(format!(
                "$.terminateReason: {} characters, at most {MAX_TERMINATE_REASON}",
                r.chars().count()
            )))
        }
        Some(r) if !r.trim().is_empty() => r,
        _ => berth_proto::job::TERMINATE_USER.to_string(),
    };
    change(&s, &job, &h, Change::Terminate(&reason)).await
}

pub async fn delete(
    State(s): State<ServiceState>,
    Path(job): Path<String>,
    h: HeaderMap,
) -> Result<StatusCode, ApiError> {
    change(&s, &job, &h, Change::Delete).await
}
