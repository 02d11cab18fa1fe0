//! Jobs: add, get, list, terminate, delete.

use super::entity::{self, seg};
use super::{find_job, require_json, ApiError, AppState, Pairs};
use crate::error_chain::Chain;
use crate::schedule::job_tasks;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Json;
use berth_proto::{load, validate, JobPrepReleaseStatus, JobState, JobView, TaskState};
use chrono::Utc;

pub async fn add(
    State(s): State<AppState>,
    h: HeaderMap,
    super::Body(body): super::Body,
) -> Result<Response, ApiError> {
    require_json(&h)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::InvalidRequestBody("the body is not UTF-8".into()))?;
    let mut l =
        load::job("request body", text).map_err(|e| ApiError::InvalidRequestBody(e.to_string()))?;
    l.warnings.iter().for_each(|w| tracing::warn!("{w}"));
    let spec = l.items.remove(0).1;
    if let Some(p) = validate::job(&spec, &s.rt.pool).into_iter().next() {
        return Err(ApiError::InvalidPropertyValue(format!(
            "{}: {}",
            p.path, p.message
        )));
    }
    let slots = s.rt.pool.task_slots();
    let wants_token = spec
        .job_manager_task
        .as_ref()
        .is_some_and(|m| m.task_spec(slots).wants_job_token());
    if wants_token && s.rt.job_tokens.get().is_none() {
        return Err(ApiError::InvalidPropertyValue(
            "$.jobManagerTask.authenticationTokenSettings: this agent serves no TCP API for a job token to be used at; set tcp_address and token_file".into(),
        ));
    }
    if s.store.schedule(&spec.id)?.is_some() {
        // Both would own `workitems/<id>`.
        return Err(ApiError::JobExists(format!(
            "The id {:?} is a job schedule's; a job cannot have it.",
            spec.id
        )));
    }
    let job = JobView::new(spec);
    match s.store.add_job(&job) {
        Ok(()) => {
            // The job manager task is created with the job, first in its queue.
            if let Some(m) = &job.spec.job_manager_task {
                let t = m.task_spec(s.rt.pool.task_slots());
                let view = crate::schedule::TaskReport::active(&s.rt, &job.spec, t, None).view;
                if let Err(e) = s.store.add_tasks(std::slice::from_ref(&view)) {
                    s.store.delete_job(&job.spec.id).ok();
                    return Err(e.into());
                }
            }
            s.sched.job_changed(&job.spec.id);
            entity::created(&h, &job, &format!("/jobs/{}", seg(&job.spec.id)))
        }
        Err(crate::store::StoreError::Exists(_)) => Err(ApiError::JobExists(format!(
            "The specified job {:?} already exists.",
            job.spec.id
        ))),
        Err(e) => Err(e.into()),
    }
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
    on_all_tasks_complete: Option<berth_proto::OnAllTasksComplete>,
    #[serde(default)]
    constraints: Option<berth_proto::job::JobConstraints>,
    #[serde(default)]
    pool_info: Option<serde_json::Value>,
}

/// `PATCH /jobs/{job}`: changes the properties given, leaves the rest.
pub async fn patch(
    State(s): State<AppState>,
    Path(job): Path<String>,
    h: HeaderMap,
    super::Body(body): super::Body,
) -> Result<Response, ApiError> {
    update(s, &job, &h, &body, false).await
}

/// `PUT /jobs/{job}`: replaces every updatable property; one left out goes back to its
/// default (`poolInfo` is required, as in Batch).
pub async fn put(
    State(s): State<AppState>,
    Path(job): Path<String>,
    h: HeaderMap,
    super::Body(body): super::Body,
) -> Result<Response, ApiError> {
    update(s, &job, &h, &body, true).await
}

async fn update(
    s: AppState,
    job: &str,
    h: &HeaderMap,
    body: &[u8],
    replace: bool,
) -> Result<Response, ApiError> {
    require_json(h)?;
    let mut j = find_job(&s, job)?;
    let method = if replace { Method::PUT } else { Method::PATCH };
    entity::check_write(h, &method, &j)?;
    let u: JobUpdate = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidRequestBody(format!("job update: {e}")))?;
    super::job_state::check(j.state, super::job_state::JobOp::Update)?;
    if replace && u.pool_info.is_none() {
        return Err(ApiError::MissingRequiredProperty(
            "$.poolInfo: a job update (PUT) must give poolInfo".into(),
        ));
    }
    if let Some(p) = validate::job_limits_problems(u.priority, u.max_parallel_tasks)
        .into_iter()
        .next()
    {
        return Err(ApiError::InvalidPropertyValue(format!(
            "{}: {}",
            p.path, p.message
        )));
    }
    let auto_end = Some(berth_proto::OnAllTasksComplete::TerminateJob);
    let wanted = if replace {
        u.on_all_tasks_complete
    } else {
        u.on_all_tasks_complete.or(j.spec.on_all_tasks_complete)
    };
    if j.spec.on_all_tasks_complete == auto_end && wanted != auto_end {
        return Err(ApiError::InvalidPropertyValue(
            "$.onAllTasksComplete: once terminatejob, it cannot be turned back to noaction".into(),
        ));
    }
    let spec = &mut j.spec;
    if replace {
        spec.priority = u.priority;
        spec.max_parallel_tasks = u.max_parallel_tasks;
        spec.on_all_tasks_complete = u.on_all_tasks_complete;
        spec.constraints = u.constraints;
        spec.pool_info = u.pool_info;
    } else {
        spec.priority = u.priority.or(spec.priority);
        spec.max_parallel_tasks = u.max_parallel_tasks.or(spec.max_parallel_tasks);
        spec.on_all_tasks_complete = wanted;
        spec.constraints = u.constraints.or(spec.constraints.take());
        spec.pool_info = u.pool_info.or(spec.pool_info.take());
    }
    // The id was checked when the job was added (a job schedule's has a `:`).
    if let Some(p) = validate::job_fields(&j.spec, &s.rt.pool).into_iter().next() {
        return Err(ApiError::InvalidPropertyValue(format!(
            "{}: {}",
            p.path, p.message
        )));
    }
    j.last_modified = Some(Utc::now());
    s.store.put_job(&j)?;
    s.sched.job_changed(&j.spec.id);
    entity::changed(
        h,
        StatusCode::OK,
        Some(&j),
        &format!("/jobs/{}", seg(&j.spec.id)),
    )
}

/// Batch's job disable body: `{"disableTasks": "requeue" | "terminate" | "wait"}`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DisableBody {
    disable_tasks: Option<berth_proto::DisableJobOption>,
}

/// `POST /jobs/{job}/disable`: no task of the job starts until it is enabled.
pub async fn disable(
    State(s): State<AppState>,
    Path(job): Path<String>,
    h: HeaderMap,
    super::Body(body): super::Body,
) -> Result<StatusCode, ApiError> {
    require_json(&h)?;
    let j = find_job(&s, &job)?;
    entity::check_write(&h, &Method::POST, &j)?;
    super::job_state::check(j.state, super::job_state::JobOp::Disable)?;
    let b: DisableBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidRequestBody(format!("job disable: {e}")))?;
    let Some(how) = b.disable_tasks else {
        return Err(ApiError::MissingRequiredProperty(
            "$.disableTasks: give requeue, terminate or wait".into(),
        ));
    };
    s.sched.disable_job(&j.spec.id, how).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /jobs/{job}/enable`: a disabled job's tasks may start again.
pub async fn enable(
    State(s): State<AppState>,
    Path(job): Path<String>,
    h: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let j = find_job(&s, &job)?;
    entity::check_write(&h, &Method::POST, &j)?;
    super::job_state::check(j.state, super::job_state::JobOp::Enable)?;
    s.sched.enable_job(&j.spec.id).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Jobs as a Batch list: `$filter`, `$select`, `maxresults`, `odata.nextLink`.
pub(crate) fn listing(
    jobs: Vec<JobView>,
    q: Vec<(String, String)>,
    h: &HeaderMap,
    path: &str,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = super::list::ListQuery::parse(q, &berth_proto::odata::JOBS)?;
    let base = entity::base_url(h);
    let items = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let e = entity::item(j, &base, &format!("/jobs/{}", seg(&j.spec.id)))?;
            Ok((i64::try_from(i).unwrap_or(i64::MAX), j.spec.id.clone(), e))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(q.page(items, h, path, "jobs")))
}

pub async fn list(
    State(s): State<AppState>,
    h: HeaderMap,
    q: Pairs,
) -> Result<Json<serde_json::Value>, ApiError> {
    listing(s.store.jobs()?, q.0, &h, "/jobs")
}

/// `GET` (and `HEAD`) `/jobs/{job}`, with `$select`; conditional.
pub async fn get(
    State(s): State<AppState>,
    Path(job): Path<String>,
    method: Method,
    h: HeaderMap,
    q: Pairs,
) -> Result<Response, ApiError> {
    let j = find_job(&s, &job)?;
    let path = format!("/jobs/{}", seg(&j.spec.id));
    entity::answer(&h, &method, &j, &path, "jobs", super::select_of(&q)?)
}

/// Ends every task of the job that has not completed (running ones are stopped).
async fn end_tasks(s: &AppState, job: &str) -> Result<(), ApiError> {
    for t in s.store.tasks(job, None)? {
        if t.view.state != TaskState::Completed {
            super::tasks::end(s, &t.view).await?;
        }
    }
    Ok(())
}

/// Whether ending the job must wait for its release task (the scheduler runs it once the
/// job's tasks have stopped, then completes or deletes the job).
fn release_pending(s: &AppState, j: &JobView) -> Result<bool, ApiError> {
    let rec = s.store.job_on_node(&j.spec.id)?;
    Ok(job_tasks::release_pending(&j.spec, rec.as_ref()))
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
    State(s): State<AppState>,
    Path(job): Path<String>,
    h: HeaderMap,
    super::Body(body): super::Body,
) -> Result<StatusCode, ApiError> {
    let j = find_job(&s, &job)?;
    entity::check_write(&h, &Method::POST, &j)?;
    super::job_state::check(j.state, super::job_state::JobOp::Terminate)?;
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
    // The scheduler ends the job's tasks and the job in one step of its loop.
    s.sched.terminate_job(&j.spec.id, &reason).await?;
    Ok(StatusCode::ACCEPTED)
}

pub async fn delete(
    State(s): State<AppState>,
    Path(job): Path<String>,
    h: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let mut j = find_job(&s, &job)?;
    entity::check_write(&h, &Method::DELETE, &j)?;
    super::job_state::check(j.state, super::job_state::JobOp::Delete)?;
    let waits = j.state == JobState::Terminating || release_pending(&s, &j)?;
    j.state = JobState::Deleting;
    j.state_transition_time = Utc::now();
    s.store.put_job(&j)?;
    end_tasks(&s, &job).await?;
    if waits {
        // The release task runs first; the scheduler deletes the job after it.
        s.sched.job_ending();
        return Ok(StatusCode::ACCEPTED);
    }
    s.store.delete_job(&job)?;
    let dir = s.rt.node.layout.job_files(&j.spec.id);
    // Tasks own what is inside: removed without following their links.
    if let Err(e) = crate::node::beneath::remove_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %Chain(&e), "could not remove the job's files");
    }
    Ok(StatusCode::ACCEPTED)
}

/// `GET /jobs/{job}/jobpreparationandreleasetaskstatus`: this node's entry, once the
/// job's preparation task has run here, as Batch's list (`$filter`, `$select`,
/// `maxresults`; the service merges its nodes' entries the same way).
pub async fn prep_release_status(
    State(s): State<AppState>,
    Path(job): Path<String>,
    h: HeaderMap,
    q: Pairs,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = super::list::ListQuery::parse(q.0, &berth_proto::odata::PREP_RELEASE)?;
    let j = find_job(&s, &job)?;
    if j.spec.job_preparation_task.is_none() {
        return Err(ApiError::JobPreparationTaskNotSpecified(
            "The specified job does not have a job preparation task.".into(),
        ));
    }
    let entry = s.store.job_on_node(&j.spec.id)?.and_then(|r| {
        r.preparation.as_ref()?;
        Some(JobPrepReleaseStatus {
            pool_id: s.rt.node.pool_id.clone(),
            node_id: s.rt.node.node_id.clone(),
            job_preparation_task_execution_info: r.preparation,
            job_release_task_execution_info: r.release,
        })
    });
    let items = entry
        .map(|e| {
            let v = serde_json::to_value(&e).map_err(ApiError::internal)?;
            Ok::<_, ApiError>((0, e.node_id, v))
        })
        .transpose()?;
    let path = format!(
        "/jobs/{}/jobpreparationandreleasetaskstatus",
        seg(&j.spec.id)
    );
    Ok(Json(q.page(
        items.into_iter().collect(),
        &h,
        &path,
        "jobpreparationandreleasetaskstatuslist",
    )))
}
