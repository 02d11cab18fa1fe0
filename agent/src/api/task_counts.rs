//! `GET /jobs/{job}/taskcounts`: Batch's `TaskCountsResult` for one job, the shape the
//! service answers (`taskCounts` and `taskSlotCounts`), so that a client (the web view's
//! jobs page) counts a job's tasks in one call rather than by listing them.

use super::{find_job, ApiError, AppState};
use axum::extract::{Path, State};
use axum::Json;
use berth_proto::TaskResult;
use serde_json::{json, Value};

pub async fn get(
    State(s): State<AppState>,
    Path(job): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let j = find_job(&s, &job)?;
    let tasks = s.store.tasks(&j.spec.id, None)?;
    let (tasks, slots) = counts(tasks.iter().map(|t| {
        let ok = t.view.execution_info.as_ref().and_then(|x| x.result) == Some(TaskResult::Success);
        (
            t.view.state.as_str(),
            ok,
            1,
            u64::from(t.view.spec.required_slots()),
        )
    }));
    Ok(Json(
        json!({ "taskCounts": tasks, "taskSlotCounts": slots }),
    ))
}

/// Batch's counts of `(state, succeeded, tasks, slots)` groups (a task alone is a group
/// of one): `running` includes `preparing`; `succeeded` and `failed` split `completed` by
/// result. (Tasks, slots.) The service passes its SQL groups.
pub(crate) fn counts<'a>(
    groups: impl IntoIterator<Item = (&'a str, bool, u64, u64)>,
) -> (Value, Value) {
    let mut n = [0u64; 5];
    let mut sl = [0u64; 5];
    for (state, ok, count, slots) in groups {
        let mut add = |i: usize| {
            n[i] += count;
            sl[i] += slots;
        };
        match state {
            "active" => add(0),
            "preparing" | "running" => add(1),
            _ => {
                add(2);
                add(if ok { 3 } else { 4 });
            }
        }
    }
    let obj = |v: [u64; 5]| json!({"active": v[0], "running": v[1], "completed": v[2], "succeeded": v[3], "failed": v[4]});
    (obj(n), obj(sl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_and_slot_counts() {
        let (t, s) = counts([
            ("active", false, 3, 3),
            ("preparing", false, 1, 2),
            ("running", false, 2, 2),
            ("completed", true, 4, 4),
            ("completed", false, 1, 1),
        ]);
        assert_eq!(
            t,
            json!({"active": 3, "running": 3, "completed": 5, "succeeded": 4, "failed": 1})
        );
        assert_eq!(s["running"], 4);
    }
}
