//! Which job operations each job state allows (Batch REST: Job - Terminate, Delete,
//! Disable, Enable, Update/Patch, and adding or reactivating tasks), as one pure table,
//! so every handler answers a job in the wrong state with the same Batch error.

use super::ApiError;
use berth_proto::JobState;

/// An operation on a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOp {
    Terminate,
    Delete,
    Disable,
    Enable,
    /// `PATCH`/`PUT /jobs/{job}`.
    Update,
    /// Adding a task, or reactivating one.
    AddTask,
}

/// The Batch error code a job in `state` answers `op` with; `None`: allowed.
pub fn refusal(state: JobState, op: JobOp) -> Option<&'static str> {
    use JobOp::*;
    use JobState::*;
    match (state, op) {
        (Deleting, _) => Some("JobBeingDeleted"),
        (_, Delete) => None,
        (Completed, _) => Some("JobCompleted"),
        (Terminating, _) => Some("JobBeingTerminated"),
        (Disabling | Disabled, AddTask) => Some("JobDisabled"),
        (Active | Enabling | Disabling | Disabled, _) => None,
    }
}

/// `refusal` as the API's error, with Batch's message.
pub fn check(state: JobState, op: JobOp) -> Result<(), ApiError> {
    let Some(code) = refusal(state, op) else {
        return Ok(());
    };
    Err(match code {
        "JobBeingDeleted" => {
            ApiError::JobBeingDeleted("The specified job is being deleted.".into())
        }
        "JobCompleted" => {
            ApiError::JobCompleted("The specified job is already in a completed state.".into())
        }
        "JobBeingTerminated" => {
            ApiError::JobBeingTerminated("The specified job is being terminated.".into())
        }
        _ => ApiError::JobDisabled(format!("The specified job is {state}: enable it first.")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobOp::*;

    #[test]
    fn the_job_state_table() {
        const OPS: [JobOp; 6] = [Terminate, Delete, Disable, Enable, Update, AddTask];
        // One row per state: the answer to each op, in OPS order ("" = allowed).
        let table: &[(JobState, [&str; 6])] = &[
            (JobState::Active, ["", "", "", "", "", ""]),
            (JobState::Enabling, ["", "", "", "", "", ""]),
            (JobState::Disabling, ["", "", "", "", "", "JobDisabled"]),
            (JobState::Disabled, ["", "", "", "", "", "JobDisabled"]),
            (
                JobState::Terminating,
                [
                    "JobBeingTerminated",
                    "",
                    "JobBeingTerminated",
                    "JobBeingTerminated",
                    "JobBeingTerminated",
                    "JobBeingTerminated",
                ],
            ),
            (
                JobState::Completed,
                [
                    "JobCompleted",
                    "",
                    "JobCompleted",
                    "JobCompleted",
                    "JobCompleted",
                    "JobCompleted",
                ],
            ),
            (JobState::Deleting, ["JobBeingDeleted"; 6]),
        ];
        for (state, row) in table {
            for (op, want) in OPS.iter().zip(row) {
                assert_eq!(refusal(*state, *op).unwrap_or(""), *want, "{state} {op:?}");
                let got = check(*state, *op).err().map(|e| e.code());
                assert_eq!(got.unwrap_or(""), *want, "{state} {op:?}");
            }
        }
    }
}
