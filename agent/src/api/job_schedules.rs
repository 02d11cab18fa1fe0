//! Job schedules: add, get, list, update (PATCH, PUT), disable, enable, terminate,
//! delete, and the jobs of one. Handlers read the store and validate; every change goes
//! to the timer (`job_schedule::JobSchedules`), which alone writes schedules.

use super::entity::{self, seg};
use super::{require_json, ApiError, AppState, Pairs};
use crate::job_schedule::{Change, ScheduleError};
use crate::store::StoredSchedule;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Json;
use berth_proto::job_schedule::{self, JobScheduleView};
use berth_proto::load;

/// A refused request as Batch answers it.
fn refused(e: ScheduleError) -> ApiError {
    match e {
        ScheduleError::NotFound(_) => not_found(),
        ScheduleError::Exists(what) => ApiError::JobScheduleExists(format!(
            "{what} already exists; a job schedule's id must be unused by jobs and job schedules."
        )),
        ScheduleError::Completed(_) => ApiError::JobScheduleCompleted(
            "The specified job schedule is already in a completed state.".into(),
        ),
        ScheduleError::Terminating(_) => ApiError::JobScheduleBeingTerminated(
            "The specified job schedule is being terminated.".into(),
        ),
        ScheduleError::Deleting(_) => {
            ApiError::JobScheduleBeingDeleted("The specified job schedule is being deleted.".into())
        }
        e @ (ScheduleError::Store(_) | ScheduleError::Stopped) => ApiError::internal(e),
    }
}

fn not_found() -> ApiError {
    ApiError::JobScheduleNotFound("The specified job schedule does not exist.".into())
}

fn find(s: &AppState, id: &str) -> Result<StoredSchedule, ApiError> {
    s.store.schedule(id)?.ok_or_else(not_found)
}

/// The first problem, as Batch's 400 naming the property.
fn invalid(problems: Vec<berth_proto::validate::Problem>) -> Result<(), ApiError> {
    match problems.into_iter().next() {
        Some(p) => Err(ApiError::InvalidPropertyValue(format!(
            "{}: {}",
            p.path, p.message
        ))),
        None => Ok(()),
    }
}

fn schedule_path(id: &str) -> String {
    format!("/jobschedules/{}", seg(id))
}

/// Checks the conditional headers of a change to schedule `id`.
fn check_write(s: &AppState, id: &str, h: &HeaderMap, method: &Method) -> Result<(), ApiError> {
    entity::check_write(h, method, &find(s, id)?.view())
}

fn utf8(body: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(body)
        .map_err(|_| ApiError::InvalidRequestBody("the body is not UTF-8".into()))
}

/// `POST /jobschedules`: Batch's `JobScheduleAddParameter`; 201.
pub async fn add(
    State(s): State<AppState>,
    h: HeaderMap,
    super::Body(body): super::Body,
) -> Result<Response, ApiError> {
    require_json(&h)?;
    let mut l = load::job_schedule("request body", utf8(&body)?)
        .map_err(|e| ApiError::InvalidRequestBody(e.to_string()))?;
    l.warnings.iter().for_each(|w| tracing::warn!("{w}"));
    let spec = l.items.remove(0).1;
    invalid(job_schedule::validate(&spec, &s.rt.pool))?;
    let id = spec.id.clone();
    s.schedules.add(spec).await.map_err(refused)?;
    let view = find(&s, &id)?.view();
    entity::created(&h, &view, &schedule_path(&id))
}

/// Job schedules as a Batch list: `$filter`, `$select`, `maxresults`, `odata.nextLink`.
pub async fn list(
    State(s): State<AppState>,
    h: HeaderMap,
    q: Pairs,
) -> Result<Json<serde_json::Value>, ApiError> {
    let q = super::list::ListQuery::parse(q.0, &berth_proto::odata::JOB_SCHEDULES)?;
    let base = entity::base_url(&h);
    let items = s
        .store
        .schedules()?
        .iter()
        .enumerate()
        .map(|(i, sch)| {
            let view: JobScheduleView = sch.view();
            let e = entity::item(&view, &base, &schedule_path(&sch.spec.id))?;
            Ok((i64::try_from(i).unwrap_or(i64::MAX), sch.spec.id.clone(), e))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(q.page(items, &h, "/jobschedules", "jobschedules")))
}

/// `GET` (and `HEAD`, Batch's exists check) `/jobschedules/{schedule}`, with `$select`;
/// conditional.
pub async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    h: HeaderMap,
    q: Pairs,
) -> Result<Response, ApiError> {
    let view = find(&s, &id)?.view();
    let path = schedule_path(&view.spec.id);
    entity::answer(
        &h,
        &method,
        &view,
        &path,
        "jobschedules",
        super::select_of(&q)?,
    )
}

/// `GET /jobschedules/{schedule}/jobs`: the jobs it created that still exist, as a
/// Batch list of jobs.
pub async fn jobs(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
    q: Pairs,
) -> Result<Json<serde_json::Value>, ApiError> {
    let sch = find(&s, &id)?;
    let jobs: Vec<_> = s
        .store
        .jobs()?
        .into_iter()
        .filter(|j| job_schedule::is_job_of(&j.spec.id, &sch.spec.id))
        .collect();
    let path = format!("{}/jobs", schedule_path(&sch.spec.id));
    super::jobs::listing(jobs, q.0, &h, &path)
}

/// `PATCH /jobschedules/{schedule}`: changes what the body gives.
pub async fn patch(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
    super::Body(body): super::Body,
) -> Result<StatusCode, ApiError> {
    update(s, &id, &h, &body, false).await
}

/// `PUT /jobschedules/{schedule}`: replaces `schedule`, `jobSpecification` (both
/// required) and `metadata` (cleared when left out).
pub async fn put(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
    super::Body(body): super::Body,
) -> Result<StatusCode, ApiError> {
    update(s, &id, &h, &body, true).await
}

async fn update(
    s: AppState,
    id: &str,
    h: &HeaderMap,
    body: &[u8],
    replace: bool,
) -> Result<StatusCode, ApiError> {
    require_json(h)?;
    let method = if replace { Method::PUT } else { Method::PATCH };
    check_write(&s, id, h, &method)?;
    let mut l = load::job_schedule_update("request body", utf8(body)?)
        .map_err(|e| ApiError::InvalidRequestBody(e.to_string()))?;
    l.warnings.iter().for_each(|w| tracing::warn!("{w}"));
    let u = l.items.remove(0).1;
    if replace {
        for (given, name) in [
            (u.schedule.is_some(), "schedule"),
            (u.job_specification.is_some(), "jobSpecification"),
        ] {
            if !given {
                return Err(ApiError::MissingRequiredProperty(format!(
                    "$.{name}: a job schedule update (PUT) must give schedule and jobSpecification"
                )));
            }
        }
    }
    if let Some(sch) = &u.schedule {
        invalid(job_schedule::validate_schedule(sch))?;
    }
    if let Some(j) = &u.job_specification {
        invalid(job_schedule::validate_job_specification(j, &s.rt.pool))?;
    }
    let change = Change {
        schedule: u.schedule,
        job_specification: u.job_specification,
        metadata: if replace {
            Some(u.metadata.unwrap_or_default())
        } else {
            u.metadata
        },
    };
    s.schedules.update(id, change).await.map_err(refused)?;
    Ok(StatusCode::OK)
}

/// `POST /jobschedules/{schedule}/disable`: no job is created until it is enabled; 204.
pub async fn disable(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Result<StatusCode, ApiError> {
    check_write(&s, &id, &h, &Method::POST)?;
    s.schedules.disable(&id).await.map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /jobschedules/{schedule}/enable`; 204.
pub async fn enable(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Result<StatusCode, ApiError> {
    check_write(&s, &id, &h, &Method::POST)?;
    s.schedules.enable(&id).await.map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /jobschedules/{schedule}/terminate`: no more jobs, the active one terminated;
/// 202.
pub async fn terminate(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Result<StatusCode, ApiError> {
    check_write(&s, &id, &h, &Method::POST)?;
    s.schedules.terminate(&id).await.map_err(refused)?;
    Ok(StatusCode::ACCEPTED)
}

/// `DELETE /jobschedules/{schedule}`: the schedule and its jobs go; 202.
pub async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
    h: HeaderMap,
) -> Result<StatusCode, ApiError> {
    check_write(&s, &id, &h, &Method::DELETE)?;
    s.schedules.delete(&id).await.map_err(refused)?;
    Ok(StatusCode::ACCEPTED)
}
