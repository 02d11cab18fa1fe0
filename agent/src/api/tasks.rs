//! Tasks: add one, add a collection (at most 100, per-task results), get, list (Batch's
//! list queries, see `list`), terminate, reactivate, delete.

use super::entity::{self, seg};
use super::find_job;
use super::pending::Pending;
use super::{require_json, ApiError, AppState, Pairs};
use crate::error_chain::Chain;
use crate::store::StoredTask;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Json;
use berth_proto::{load, validate, JobView, TaskSpec, TaskState, TaskView};
use chrono::Utc;

/// Batch's limit for one add-collection call.
pub const MAX_COLLECTION: usize = 100;

fn find(s: &AppState, job: &str, id: &str) -> Result<TaskView, ApiError> {
    s.store
        .task(job, id)?
        .map(|t| t.view)
        .ok_or_else(|| ApiError::TaskNotFound(format!("The specified task {id:?} does not exist.")))
}

/// The job, if it takes tasks now (see `job_state`).
fn active_job(s: &AppState, job: &str) -> Result<JobView, ApiError> {
    let j = find_job(s, job)?;
    super::job_state::check(j.state, super::job_state::JobOp::AddTask)?;
    Ok(j)
}

fn parse_tasks(body: &Bytes) -> Result<Vec<(String, TaskSpec)>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::InvalidRequestBody("the body is not UTF-8".into()))?;
    let l = load::tasks("request body", text)
        .map_err(|e| ApiError::InvalidRequestBody(e.to_string()))?;
    l.warnings.iter().for_each(|w| tracing::warn!("{w}"));
    Ok(l.items)
}

/// A task's URL path.
pub(crate) fn task_path(t: &TaskView) -> String {
    format!("/jobs/{}/tasks/{}", seg(&t.job_id), seg(&t.spec.id))
}

fn new_view(s: &AppState, job: &JobView, spec: TaskSpec) -> TaskView {
    crate::schedule::TaskReport::active(&s.rt, &job.spec, spec, None).view
}

fn check(s: &AppState, job: &JobView, path: &str, t: &TaskSpec) -> Result<(), ApiError> {
    if let Some(code) = validate::id_taken_by_job_task(&t.id, &job.spec) {
        let message = format!(
            "{path}.id: {:?} is the id of the job's preparation or release task.",
            t.id
        );
        return Err(if code == "TaskIdSameAsJobPreparationTask" {
            ApiError::TaskIdSameAsJobPreparationTask(message)
        } else {
            ApiError::TaskIdSameAsJobReleaseTask(message)
        });
    }
    match validate::task(path, t, &job.spec, &s.rt.pool)
        .into_iter()
        .next()
    {
        Some(p) => Err(ApiError::InvalidPropertyValue(format!(
            "{}: {}",
            p.path, p.message
        ))),
        None => Ok(()),
    }
}

pub async fn add(
    State(s): State<AppState>,
    Path(job): Path<String>,
    h: HeaderMap,
    super::Body(body): super::Body,
) -> Result<Response, ApiError> {
    require_json(&h)?;
    let j = active_job(&s, &job)?;
    let mut items = parse_tasks(&body)?;
    if items.len() != 1 || body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::InvalidRequestBody(
            "add task takes one task object; use addtaskcollection for several".into(),
        ));
    }
    let (path, spec) = items.remove(0);
    check(&s, &j, &path, &spec)?;
    let view = new_view(&s, &j, spec);
    match s.store.add_tasks(std::slice::from_ref(&view)) {
        Ok(_) => {
            s.sched.wake();
            entity::created(&h, &view, &task_path(&view))
        }
        Err(crate::store::StoreError::Exists(_)) => Err(ApiError::TaskExists(format!(
            "The specified task {:?} already exists.",
            view.spec.id
        ))),
        Err(e) => Err(e.into()),
    }
}

pub async fn add_collection(
    State(s): State<AppState>,
    Path(job): Path<String>,
    h: HeaderMap,
    super::Body(body): super::Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_json(&h)?;
    let j = active_job(&s, &job)?;
    let items = parse_tasks(&body)?;
    if items.len() > MAX_COLLECTION {
        return Err(ApiError::RequestBodyTooLarge(format!(
            "{} tasks in one call; at most {MAX_COLLECTION}",
            items.len()
        )));
    }
    let mut results = vec![];
    for (path, spec) in items {
        let id = spec.id.clone();
        let outcome = check(&s, &j, &path, &spec).and_then(|()| {
            let view = new_view(&s, &j, spec);
            match s.store.add_tasks(std::slice::from_ref(&view)) {
                Ok(_) => Ok(()),
                Err(crate::store::StoreError::Exists(_)) => Err(ApiError::TaskExists(format!(
                    "The specified task {id:?} already exists."
                ))),
                Err(e) => Err(e.into()),
            }
        });
        results.push(match outcome {
            Ok(()) => serde_json::json!({"status": "success", "taskId": id}),
            Err(e) => serde_json::json!({
                "status": if e.status().is_server_error() { "servererror" } else { "clienterror" },
                "taskId": id,
                "error": super::error::body(e.code(), &e.message()),
            }),
        });
    }
    s.sched.wake();
    Ok(Json(serde_json::json!({"value": results})))
}

/// `GET /jobs/{job}/tasks`: reads from the store only the slices its page needs (the
/// tasks in the state a `$filter` requires, after where the previous page ended).
pub async fn list(
    State(s): State<AppState>,
    Path(job): Path<String>,
    h: HeaderMap,
    q: Pairs,
) -> Result<Json<serde_json::Value>, ApiError> {
    let j = find_job(&s, &job)?;
    let q = super::list::ListQuery::parse(q.0, &berth_proto::odata::TASKS)?;
    // A state no task can be in matches nothing; the filter says so on each task read.
    let state = q
        .required_eq("state")
        .and_then(|v| v.parse::<TaskState>().ok());
    let base = entity::base_url(&h);
    let pending = Pending::new(&s, j.clone())?;
    let item = |t: StoredTask| -> Result<_, ApiError> {
        let mut e = entity::item(&t.view, &base, &task_path(&t.view))?;
        pending.annotate(&t.view, &mut e)?;
        Ok((t.seq, t.view.spec.id, e))
    };
    let path = format!("/jobs/{}/tasks", seg(&j.spec.id));
    let body = q.page_from(
        |id| s.store.task(&job, id)?.map(item).transpose(),
        |after, n| {
            s.store
                .tasks_after(&job, state, after, n)?
                .into_iter()
                .map(item)
                .collect()
        },
        (&h, &path, "tasks"),
    )?;
    Ok(Json(body))
}

/// `GET` (and `HEAD`) `/jobs/{job}/tasks/{task}`, with `$select`; conditional.
pub async fn get(
    State(s): State<AppState>,
    Path((job, id)): Path<(String, String)>,
    method: Method,
    h: HeaderMap,
    q: Pairs,
) -> Result<Response, ApiError> {
    let j = find_job(&s, &job)?;
    let t = find(&s, &job, &id)?;
    // Only an active task has a reason: the others need not gather one.
    let extra = match t.state {
        TaskState::Active => Pending::new(&s, j)?.fields(&t)?,
        _ => serde_json::Map::new(),
    };
    entity::answer_with(
        &h,
        &method,
        &t,
        (&task_path(&t), "tasks"),
        super::select_of(&q)?,
        extra,
    )
}

/// Ends a task that has not completed: a running one is stopped (its runner records
/// `TaskEnded`), an active one completes at once with `TaskEnded`. The scheduler decides
/// which, so the task cannot start in between.
pub(crate) async fn end(s: &AppState, t: &TaskView) -> Result<(), ApiError> {
    Ok(s.sched.end(&t.job_id, &t.spec.id).await?)
}

pub async fn terminate(
    State(s): State<AppState>,
    Path((job, id)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<StatusCode, ApiError> {
    find_job(&s, &job)?;
    let t = find(&s, &job, &id)?;
    entity::check_write(&h, &Method::POST, &t)?;
    if t.state == TaskState::Completed {
        return Err(ApiError::TaskCompleted(
            "The specified task is already in a completed state.".into(),
        ));
    }
    end(&s, &t).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn reactivate(
    State(s): State<AppState>,
    Path((job, id)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<StatusCode, ApiError> {
    active_job(&s, &job)?;
    let mut t = find(&s, &job, &id)?;
    entity::check_write(&h, &Method::POST, &t)?;
    if t.state != TaskState::Completed {
        return Err(ApiError::TaskNotCompleted(
            "The specified task is not in a completed state.".into(),
        ));
    }
    if t.execution_info.as_ref().and_then(|e| e.result) == Some(berth_proto::TaskResult::Success) {
        return Err(ApiError::TaskSucceeded(
            "The specified task completed successfully and cannot be reactivated.".into(),
        ));
    }
    let requeues = t
        .execution_info
        .as_ref()
        .map(|e| e.requeue_count)
        .unwrap_or(0);
    t.state = TaskState::Active;
    t.state_transition_time = Utc::now();
    t.execution_info = Some(berth_proto::ExecutionInfo {
        requeue_count: requeues + 1,
        ..Default::default()
    });
    s.store.put_task(&t)?;
    s.sched.wake();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete(
    State(s): State<AppState>,
    Path((job, id)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<StatusCode, ApiError> {
    find_job(&s, &job)?;
    let t = find(&s, &job, &id)?;
    entity::check_write(&h, &Method::DELETE, &t)?;
    s.sched.stop(&t.job_id, &t.spec.id).await;
    s.store.delete_task(&job, &id)?;
    let dir = s.rt.node.layout.task_dir(&t.job_id, &t.spec.id);
    // The task owns what is inside: removed without following its links.
    if let Err(e) = crate::node::beneath::remove_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %Chain(&e), "could not remove the task's files");
    }
    Ok(StatusCode::OK)
}
