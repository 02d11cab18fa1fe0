//! Tasks on the service: add one, add a collection (at most 100, per-task results, one
//! transaction), get, list (Batch's `$filter`, `$select`, `maxresults` and paging, as the
//! agent answers them: `api::tasks::listing`), terminate, reactivate, delete; entities
//! with ETag and Last-Modified, writes under `If-Match` and the other conditions.
//!
//! Dependencies: each `dependsOn` id (ranges expanded) is a `task_deps` row; the task's
//! `waiting_on` counts those not yet satisfied (a dependency that completed successfully,
//! or failed with `dependencyAction: satisfy`, is satisfied; one not added yet is not).
//! The dependency rows already there are read `FOR SHARE`, so a completion recorded at the
//! same time either is seen here or, waiting for this transaction, sees the new
//! `task_deps` rows when it releases its dependents.

use super::{find_job, find_pool, first_problem, Lock, Sql};
use crate::api::entity;
use crate::api::job_state::{check as check_job, JobOp};
use crate::api::{require_json, select_of, task_path, ApiError, Body, Pairs};
use crate::service::db::Cached;
use crate::service::db::DbError;
use crate::service::job_end;
use crate::service::state::ServiceState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Json;
use berth_proto::{load, validate, JobView, PoolSpec, TaskResult, TaskSpec, TaskState, TaskView};
use chrono::Utc;
use deadpool_postgres::GenericClient;

/// Batch's limit for one add-collection call.
pub const MAX_COLLECTION: usize = crate::api::MAX_COLLECTION;

fn parse_tasks(body: &Bytes) -> Result<Vec<(String, TaskSpec)>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::InvalidRequestBody("the body is not UTF-8".into()))?;
    let l = load::tasks("request body", text)
        .map_err(|e| ApiError::InvalidRequestBody(e.to_string()))?;
    l.warnings.iter().for_each(|w| tracing::warn!("{w}"));
    Ok(l.items)
}

/// Whether a completed task satisfies the tasks that depend on it: its exitConditions'
/// `dependencyAction` for its outcome (by default, satisfied by a success), as the
/// standalone scheduler and a completion (`attempts::complete`) decide.
pub(crate) fn satisfies(t: &TaskView) -> bool {
    crate::schedule::pending::dependency(Some(t)) == Some(true)
}

/// The distinct (lower-case) ids `spec` depends on.
fn dependency_keys(spec: &TaskSpec) -> Vec<String> {
    let mut keys: Vec<String> = spec
        .depends_on
        .as_ref()
        .map(|d| d.all_ids())
        .unwrap_or_default()
        .into_iter()
        .map(|k| k.to_ascii_lowercase())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The whole GPUs a task asks for by number (`BERTH_GPUS=N`), which a node must have
/// free to claim it; 0 otherwise (the node's own share rules apply when it runs).
fn gpus_asked(spec: &TaskSpec) -> i32 {
    spec.environment_settings
        .iter()
        .find(|e| e.name == crate::gpu::assign::REQUEST_ENV)
        .and_then(|e| e.value.as_deref()?.trim().parse::<i32>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(0)
}

/// A task that passed its checks, as it will be stored.
struct Checked {
    view: TaskView,
    /// The view with its secrets, as stored.
    stored: serde_json::Value,
    /// The distinct (lower-case) ids it depends on.
    deps: Vec<String>,
}

/// Checks one task against its job and pool (no database): the task as it will be stored.
fn check_task(
    job: &JobView,
    pool: &PoolSpec,
    path: &str,
    spec: TaskSpec,
) -> Result<Checked, ApiError> {
    if let Some(code) = validate::id_taken_by_job_task(&spec.id, &job.spec) {
        let message = format!(
            "{path}.id: {:?} is the id of the job's preparation or release task.",
            spec.id
        );
        return Err(if code == "TaskIdSameAsJobPreparationTask" {
            ApiError::TaskIdSameAsJobPreparationTask(message)
        } else {
            ApiError::TaskIdSameAsJobReleaseTask(message)
        });
    }
    first_problem(validate::task(path, &spec, &job.spec, pool))?;
    let deps = dependency_keys(&spec);
    let now = Utc::now();
    let view = TaskView {
        spec,
        job_id: job.spec.id.clone(),
        state: TaskState::Active,
        state_transition_time: now,
        creation_time: now,
        execution_info: None,
        node_info: None,
        pool_attempt: None,
    };
    // Stored whole, registry passwords included (the nodes need them); every read for a
    // client goes through the types, which hide them.
    let stored = berth_proto::common::with_secrets_revealed(|| serde_json::to_value(&view))
        .map_err(ApiError::internal)?;
    Ok(Checked { view, stored, deps })
}

fn task_exists(id: &str) -> ApiError {
    ApiError::TaskExists(format!("The specified task {id:?} already exists."))
}

/// Checks `items` and inserts those that pass, in a few statements whatever their number
/// (one multi-row insert of the tasks, one of their dependencies, one into `ready`): each
/// item's own outcome in order, and whether any task became claimable (the caller wakes
/// the pool once, `job_end::wake_pool`). An `Err` is a database failure: the transaction
/// is lost, and every add with it.
async fn insert_tasks(
    c: &(impl GenericClient + Cached),
    job: &JobView,
    pool: &PoolSpec,
    items: Vec<(String, TaskSpec)>,
) -> Result<(Vec<Result<TaskView, ApiError>>, bool), ApiError> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<Result<Checked, ApiError>> = items
        .into_iter()
        .map(|(path, spec)| {
            let t = check_task(job, pool, &path, spec)?;
            // A second task of one id in the same call: as if the first were there.
            if !seen.insert(t.view.spec.id.to_ascii_lowercase()) {
                return Err(task_exists(&t.view.spec.id));
            }
            Ok(t)
        })
        .collect();
    let good: Vec<&Checked> = out.iter().filter_map(|t| t.as_ref().ok()).collect();
    if good.is_empty() {
        return Ok((out.into_iter().map(|t| t.map(|t| t.view)).collect(), false));
    }
    // Which dependencies are satisfied already; read `FOR SHARE` (see the module's note).
    let all_deps: Vec<&String> = good.iter().flat_map(|t| &t.deps).collect();
    let mut satisfied = std::collections::HashSet::new();
    if !all_deps.is_empty() {
        let rows = c
            .query(
                "SELECT id_key, view FROM tasks WHERE job_id = $1 AND id_key = ANY($2) FOR SHARE",
                &[&job.spec.id, &all_deps],
            )
            .await
            .sql()?;
        for r in rows {
            if satisfies(&super::stored::<TaskView>(r.get(1), "task")?) {
                satisfied.insert(r.get::<_, String>(0));
            }
        }
    }
    let waiting: Vec<i32> = good
        .iter()
        .map(|t| t.deps.iter().filter(|d| !satisfied.contains(*d)).count() as i32)
        .collect();
    let ids: Vec<&str> = good.iter().map(|t| t.view.spec.id.as_str()).collect();
    let slots: Vec<i32> = good
        .iter()
        .map(|t| t.view.spec.required_slots() as i32)
        .collect();
    let gpus: Vec<i32> = good.iter().map(|t| gpus_asked(&t.view.spec)).collect();
    let views: Vec<&serde_json::Value> = good.iter().map(|t| &t.stored).collect();
    let inserted: std::collections::HashMap<String, i64> = c
        .query(
            "INSERT INTO tasks (job_id, id, id_key, state, required_slots, gpus, view, waiting_on)
             SELECT $1, t.id, lower(t.id), 'active', t.slots, t.gpus, t.view, t.waiting
             FROM unnest($2::text[], $3::int[], $4::int[], $5::jsonb[], $6::int[])
                  AS t(id, slots, gpus, view, waiting)
             ON CONFLICT (job_id, id_key) DO NOTHING RETURNING id_key, seq",
            &[&job.spec.id, &ids, &slots, &gpus, &views, &waiting],
        )
        .await
        .sql()?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let key = |t: &Checked| t.view.spec.id.to_ascii_lowercase();
    let (mut dep_tasks, mut dep_keys, mut claimable) = (vec![], vec![], vec![]);
    for (t, w) in good.iter().zip(&waiting) {
        let Some(seq) = inserted.get(&key(t)) else {
            continue;
        };
        if *w == 0 {
            claimable.push(*seq);
        }
        for d in &t.deps {
            dep_tasks.push(key(t));
            dep_keys.push(d.as_str());
        }
    }
    if !dep_tasks.is_empty() {
        c.execute(
            "INSERT INTO task_deps (job_id, task_key, depends_on_key)
             SELECT $1, t.k, t.d FROM unnest($2::text[], $3::text[]) AS t(k, d)
             ON CONFLICT DO NOTHING",
            &[&job.spec.id, &dep_tasks, &dep_keys],
        )
        .await
        .sql()?;
    }
    let ready = !claimable.is_empty() && job_end::enqueue(c, &job.spec.id, &claimable).await? > 0;
    for t in &mut out {
        if let Ok(c) = t {
            if !inserted.contains_key(&key(c)) {
                *t = Err(task_exists(&c.view.spec.id));
            }
        }
    }
    Ok((out.into_iter().map(|t| t.map(|t| t.view)).collect(), ready))
}

pub async fn add(
    State(s): State<ServiceState>,
    Path(job): Path<String>,
    h: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    require_json(&h)?;
    let mut items = parse_tasks(&body)?;
    if items.len() != 1 || body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::InvalidRequestBody(
            "add task takes one task object; use addtaskcollection for several".into(),
        ));
    }
    let (path, spec) = items.remove(0);
    let mut c = s.db.conn().await?;
    let tx = c.transaction().await.sql()?;
    let j = find_job(&tx, &job, Lock::Share).await?;
    check_job(j.view.state, JobOp::AddTask)?;
    let (_, pool, _) = find_pool(&tx, &j.pool_id).await?;
    let (mut done, ready) = insert_tasks(&tx, &j.view, &pool, vec![(path, spec)]).await?;
    let view = done.remove(0)?;
    if ready {
        job_end::wake_pool(&tx, &j.view.spec.id).await?;
    }
    tx.commit().await.sql()?;
    entity::created(&h, &view, &task_path(&view))
}

pub async fn add_collection(
    State(s): State<ServiceState>,
    Path(job): Path<String>,
    h: HeaderMap,
    Body(body): Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_json(&h)?;
    let items = parse_tasks(&body)?;
    if items.len() > MAX_COLLECTION {
        return Err(ApiError::RequestBodyTooLarge(format!(
            "{} tasks in one call; at most {MAX_COLLECTION}",
            items.len()
        )));
    }
    let mut c = s.db.conn().await?;
    let tx = c.transaction().await.sql()?;
    let j = find_job(&tx, &job, Lock::Share).await?;
    check_job(j.view.state, JobOp::AddTask)?;
    let (_, pool, _) = find_pool(&tx, &j.pool_id).await?;
    let ids: Vec<String> = items.iter().map(|(_, t)| t.id.clone()).collect();
    let (done, queued) = insert_tasks(&tx, &j.view, &pool, items).await?;
    let results: Vec<serde_json::Value> = ids
        .iter()
        .zip(done)
        .map(|(id, outcome)| match outcome {
            Ok(_) => serde_json::json!({"status": "success", "taskId": id}),
            Err(e) => serde_json::json!({
                "status": "clienterror",
                "taskId": id,
                "error": crate::api::error_body(e.code(), &e.message()),
            }),
        })
        .collect();
    // One wake for the whole collection, not one per task.
    if queued {
        job_end::wake_pool(&tx, &j.view.spec.id).await?;
    }
    tx.commit().await.sql()?;
    Ok(Json(serde_json::json!({ "value": results })))
}

/// A job's tasks in the order they were added, as the agent lists them and as it reads
/// them: only the slices its page needs (after where the previous page ended, in the state
/// a `$filter` requires), each active task with its `berthPendingReason`.
pub async fn list(
    State(s): State<ServiceState>,
    Path(job): Path<String>,
    h: HeaderMap,
    q: Pairs,
) -> Result<Json<serde_json::Value>, ApiError> {
    let c = s.db.conn().await?;
    let j = find_job(&c, &job, Lock::None).await?;
    let id = &j.view.spec.id;
    let q = crate::api::list::ListQuery::parse(q.0, &berth_proto::odata::TASKS)?;
    let state = q.required_eq("state");
    let pending = super::pending::Pending::read(&c, &j.view).await?;
    let base = entity::base_url(&h);
    let item = |r: &tokio_postgres::Row| -> Result<_, ApiError> {
        let t = super::stored::<TaskView>(r.get(1), "task")?;
        let mut e = entity::item(&t, &base, &task_path(&t))?;
        if let Some(o) = e.as_object_mut() {
            o.extend(pending.fields(&t, r.get(2)));
        }
        Ok((r.get::<_, i64>(0), t.spec.id, e))
    };
    let found = match q.resume_id() {
        Some(last) => c
            .query_opt(
                "SELECT seq, view, waiting_on FROM tasks WHERE job_id = $1 AND id_key = lower($2)",
                &[id, &last],
            )
            .await
            .sql()?
            .map(|r| item(&r))
            .transpose()?,
        None => None,
    };
    let mut pager = q.pager(found);
    while let Some((after, n)) = pager.want() {
        let rows = c
            .query(
                "SELECT seq, view, waiting_on FROM tasks WHERE job_id = $1 AND seq > $2 \
                 AND ($3::text IS NULL OR state = $3) ORDER BY seq LIMIT $4",
                &[id, &after, &state, &i64::try_from(n).unwrap_or(i64::MAX)],
            )
            .await
            .sql()?;
        pager.take(rows.iter().map(item).collect::<Result<_, _>>()?);
    }
    let path = format!("/jobs/{}/tasks", entity::seg(id));
    Ok(Json(pager.body(&h, &path, "tasks")))
}

/// A task row: `seq`, view, live attempt.
struct TaskRow {
    seq: i64,
    view: TaskView,
    attempt: Option<i64>,
}

async fn find_task(
    c: &(impl GenericClient + Cached),
    job_id: &str,
    id: &str,
    lock: bool,
) -> Result<TaskRow, ApiError> {
    let sql = if lock {
        "SELECT seq, view, current_attempt FROM tasks WHERE job_id = $1 AND id_key = lower($2) FOR UPDATE"
    } else {
        "SELECT seq, view, current_attempt FROM tasks WHERE job_id = $1 AND id_key = lower($2)"
    };
    let r = c
        .query_opt(sql, &[&job_id, &id])
        .await
        .sql()?
        .ok_or_else(|| {
            ApiError::TaskNotFound(format!("The specified task {id:?} does not exist."))
        })?;
    Ok(TaskRow {
        seq: r.get(0),
        view: super::stored(r.get(1), "task")?,
        attempt: r.get(2),
    })
}

/// `GET` (and `HEAD`) `/jobs/{job}/tasks/{task}`, with `$select`; conditional.
pub async fn get(
    State(s): State<ServiceState>,
    Path((job, id)): Path<(String, String)>,
    method: Method,
    h: HeaderMap,
    q: Pairs,
) -> Result<Response, ApiError> {
    let c = s.db.conn().await?;
    let j = find_job(&c, &job, Lock::None).await?;
    let row = find_task(&c, &j.view.spec.id, &id, false).await?;
    let t = row.view;
    // Only an active task has a reason: the others need not gather one.
    let extra = if t.state == TaskState::Active {
        let waiting_on: i32 = c
            .query_one("SELECT waiting_on FROM tasks WHERE seq = $1", &[&row.seq])
            .await
            .sql()?
            .get(0);
        super::pending::Pending::read(&c, &j.view)
            .await?
            .fields(&t, waiting_on)
    } else {
        serde_json::Map::new()
    };
    entity::answer_with(
        &h,
        &method,
        &t,
        (&task_path(&t), "tasks"),
        select_of(&q)?,
        extra,
    )
}

/// `POST .../terminate`: an active task completes now (`TaskEnded`); one on a node is
/// ended by its node (told through the node protocol) and completes on its report.
pub async fn terminate(
    State(s): State<ServiceState>,
    Path((job, id)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let mut c = s.db.conn().await?;
    let tx = c.transaction().await.sql()?;
    let j = find_job(&tx, &job, Lock::Update).await?;
    let t = find_task(&tx, &j.view.spec.id, &id, true).await?;
    entity::check_write(&h, &Method::POST, &t.view)?;
    if t.view.state == TaskState::Completed {
        return Err(ApiError::TaskCompleted(
            "The specified task is already in a completed state.".into(),
        ));
    }
    match t.attempt {
        Some(a) => {
            tx.execute(
                "UPDATE attempts SET pending_command = 'terminate' WHERE id = $1 AND state = 'live'",
                &[&a],
            )
            .await
            .sql()?;
        }
        None => {
            let view = job_end::end_active_task(&tx, t.seq, t.view).await?;
            job_end::after_task_completed(&tx, &view).await?;
        }
    }
    tx.commit().await.sql()?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST .../reactivate`: a task that completed without success is `active` again (one
/// more `requeueCount`), claimable at once when its job is active.
pub async fn reactivate(
    State(s): State<ServiceState>,
    Path((job, id)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let mut c = s.db.conn().await?;
    let tx = c.transaction().await.sql()?;
    let j = find_job(&tx, &job, Lock::Share).await?;
    check_job(j.view.state, JobOp::AddTask)?;
    let mut t = find_task(&tx, &j.view.spec.id, &id, true).await?;
    entity::check_write(&h, &Method::POST, &t.view)?;
    if t.view.state != TaskState::Completed {
        return Err(ApiError::TaskNotCompleted(
            "The specified task is not in a completed state.".into(),
        ));
    }
    let info = t.view.execution_info.take().unwrap_or_default();
    if info.result == Some(TaskResult::Success) {
        return Err(ApiError::TaskSucceeded(
            "The specified task completed successfully and cannot be reactivated.".into(),
        ));
    }
    t.view.state = TaskState::Active;
    t.view.state_transition_time = Utc::now();
    t.view.node_info = None;
    t.view.execution_info = Some(berth_proto::ExecutionInfo {
        requeue_count: info.requeue_count + 1,
        ..Default::default()
    });
    let v = berth_proto::common::with_secrets_revealed(|| serde_json::to_value(&t.view))
        .map_err(ApiError::internal)?;
    tx.execute(
        "UPDATE tasks SET state = 'active', view = $2, requeue_count = requeue_count + 1,
             last_modified = now()
         WHERE seq = $1",
        &[&t.seq, &v],
    )
    .await
    .sql()?;
    job_end::make_ready(&tx, &j.view.spec.id, Some(t.seq)).await?;
    tx.commit().await.sql()?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE`: the task goes, whatever its state; a live attempt goes with it (its slots
/// are freed; its node is fenced when it next reports on it).
pub async fn delete(
    State(s): State<ServiceState>,
    Path((job, id)): Path<(String, String)>,
    h: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let mut c = s.db.conn().await?;
    let tx = c.transaction().await.sql()?;
    let mut j = find_job(&tx, &job, Lock::Update).await?;
    let t = find_task(&tx, &j.view.spec.id, &id, true).await?;
    entity::check_write(&h, &Method::DELETE, &t.view)?;
    if let Some(a) = t.attempt {
        free_attempt(&tx, a, &j.view.spec.id).await?;
    }
    tx.execute(
        "DELETE FROM task_deps WHERE job_id = $1 AND task_key = lower($2)",
        &[&j.view.spec.id, &t.view.spec.id],
    )
    .await
    .sql()?;
    tx.execute("DELETE FROM tasks WHERE seq = $1", &[&t.seq])
        .await
        .sql()?;
    if j.view.state != berth_proto::JobState::Active {
        job_end::settle(&tx, &mut j.view).await?;
    }
    tx.commit().await.sql()?;
    Ok(StatusCode::OK)
}

/// Gives back what live attempt `a` of a job held: its node's slots and GPUs, the job's
/// running count.
async fn free_attempt(
    c: &(impl GenericClient + Cached),
    a: i64,
    job_id: &str,
) -> Result<(), DbError> {
    let Some(r) = c
        .query_opt(
            "SELECT pool_id, node_id, required_slots, gpus FROM attempts WHERE id = $1 AND state = 'live'",
            &[&a],
        )
        .await?
    else {
        return Ok(());
    };
    let (pool, node, slots, gpus): (String, String, i32, i32) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    c.execute(
        "UPDATE nodes SET used_slots = greatest(used_slots - $3, 0), used_gpus = greatest(used_gpus - $4, 0)
         WHERE pool_id = $1 AND id = $2",
        &[&pool, &node, &slots, &gpus],
    )
    .await?;
    c.execute(
        "UPDATE jobs SET running = greatest(running - 1, 0) WHERE id = $1 AND max_parallel >= 0",
        &[&job_id],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_asked_by_number_only() {
        let spec = |v: &str| -> TaskSpec {
            serde_json::from_value(serde_json::json!({"id": "t", "commandLine": "x",
                "environmentSettings": [{"name": "BERTH_GPUS", "value": v}]}))
            .unwrap()
        };
        assert_eq!(gpus_asked(&spec("2")), 2);
        assert_eq!(gpus_asked(&spec("all")), 0);
        assert_eq!(gpus_asked(&spec("0")), 0);
    }

    #[test]
    fn dependency_ids_are_expanded_and_folded() {
        let spec: TaskSpec = serde_json::from_str(
            r#"{"id":"t","commandLine":"x","dependsOn":{"taskIds":["A","a","b"],"taskIdRanges":[{"start":1,"end":3}]}}"#,
        )
        .unwrap();
        assert_eq!(dependency_keys(&spec), vec!["1", "2", "3", "a", "b"]);
    }

    #[test]
    fn what_satisfies_a_dependant() {
        let mut t: TaskView = serde_json::from_value(serde_json::json!({
            "id": "d", "commandLine": "x", "jobId": "j", "state": "completed",
            "stateTransitionTime": "2026-01-01T00:00:00Z", "creationTime": "2026-01-01T00:00:00Z",
            "executionInfo": {"exitCode": 0, "retryCount": 0, "requeueCount": 0, "result": "success"}
        }))
        .unwrap();
        assert!(satisfies(&t));
        let info = t.execution_info.as_mut().unwrap();
        info.exit_code = Some(3);
        info.result = Some(TaskResult::Failure);
        assert!(!satisfies(&t));
        t.spec.exit_conditions = Some(
            serde_json::from_str(
                r#"{"exitCodes":[{"code":3,"exitOptions":{"dependencyAction":"satisfy"}}]}"#,
            )
            .unwrap(),
        );
        assert!(satisfies(&t));
        // An exit code 0 listed with `block` blocks, success as it is.
        let info = t.execution_info.as_mut().unwrap();
        info.exit_code = Some(0);
        info.result = Some(TaskResult::Success);
        assert!(satisfies(&t));
        t.spec.exit_conditions = Some(
            serde_json::from_str(
                r#"{"exitCodes":[{"code":0,"exitOptions":{"dependencyAction":"block"}}]}"#,
            )
            .unwrap(),
        );
        assert!(!satisfies(&t));
        t.spec.exit_conditions = None;
        t.state = TaskState::Running;
        assert!(!satisfies(&t));
    }
}
