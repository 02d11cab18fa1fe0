//! `GET /jobs/{job}/taskcounts`: Batch's `TaskCountsResult` for one job, the shape the
//! service answers (`taskCounts` and `taskSlotCounts`), so that a client (the web view's
//! jobs page) counts a job's tasks in one call rather than by listing them.

use super::{find_job, ApiError, AppState};
use axum::extract::{Path, State};
use axum::Json;
use berth_proto::{TaskResult, TaskState, TaskView};
use serde_json::{json, Value};

pub async fn get(
    State(s): State<AppState>,
    Path(job): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let j = find_job(&s, &job)?;
    let tasks = s.store.tasks(&j.spec.id, None)?;
    let (tasks, slots) = counts(tasks.iter().map(|t| &t.view));
    Ok(Json(
        json!({ "taskCounts": tasks, "taskSlotCounts": slots }),
    ))
}

/// Batch's counts: `running` includes `preparing`; `succeeded` and `failed` split
/// `completed` by result. (Tasks, slots.)
fn counts<'a>(tasks: impl Iterator<Item = &'a TaskView>) -> (Value, Value) {
    let mut n = [0u64; 5];
    let mut sl = [0u64; 5];
    for t in tasks {
        let slots = u64::from(t.spec.required_slots());
        let mut add = |i: usize| {
            n[i] += 1;
            sl[i] += slots;
        };
        match t.state {
            TaskState::Active => add(0),
            TaskState::Preparing | TaskState::Running => add(1),
            TaskState::Completed => {
                add(2);
                let ok =
                    t.execution_info.as_ref().and_then(|x| x.result) == Some(TaskResult::Success);
                add(if ok { 3 } else { 4 });
            }
        }
    }
    let obj = |v: [u64; 5]| json!({"active": v[0], "running": v[1], "completed": v[2], "succeeded": v[3], "failed": v[4]});
    (obj(n), obj(sl))
}
