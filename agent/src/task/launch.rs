//! ONE LAUNCH PATH for every kind of task (regular tasks, the start task, job preparation
//! and release): resolve the user, plan, prepare the directories, run the attempts, record
//! the retention deadline. What fails before any attempt maps to Batch's failure codes
//! here, once, so a start task and a task get the same code for the same cause.

use super::plan::{PlanError, TaskPlan};
use super::{failed_before_start, prepare_dirs, run_task, NodeContext, Resume};
use crate::error_chain::{chain, Chain};
use crate::node::{users, ResolvedUser, UserError};
use berth_proto::{ExecutionInfo, FailureCode, NodeGpu, UserIdentity};
use tokio_util::sync::CancellationToken;

/// Plans a task for its resolved user (pure).
pub type Planner<'a> = Box<dyn FnOnce(ResolvedUser) -> Result<TaskPlan, PlanError> + Send + 'a>;

/// What to launch.
pub struct Launch<'a> {
    /// For the logs: "task", "start task", "job preparation task", ...
    pub what: &'static str,
    /// The task's `userIdentity` (none: the pool's default non-admin auto-user).
    pub identity: Option<UserIdentity>,
    pub plan: Planner<'a>,
    /// The GPUs the task gets.
    pub gpus: Vec<NodeGpu>,
    /// A new task starts from a clean directory; the start task, job tasks and a task
    /// taken over keep theirs.
    pub fresh: bool,
    /// The attempt an earlier agent process started, to be taken over.
    pub resume: Option<Resume>,
    /// Told the retry count as each retry begins (the daemon records it).
    pub on_retry: &'a (dyn Fn(i32) + Sync),
}

/// Why a task could not reach its first attempt, as Batch's failure code.
fn before_start(e: &LaunchError) -> FailureCode {
    match e {
        LaunchError::User(_) | LaunchError::Resolve(_) => FailureCode::Unknown,
        LaunchError::Plan(_) => FailureCode::ContainerInvalidSettings,
        // A full disk, or a file the task planted (TaskFileRefused): the task's directory
        // could not be made ready.
        LaunchError::Dirs { source, .. } => {
            super::exit::file_code(source, FailureCode::ResourceDirectoryCreateFailed)
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum LaunchError {
    #[error(transparent)]
    User(#[from] UserError),
    #[error("resolving the task's user stopped")]
    Resolve(#[source] tokio::task::JoinError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{}", path.display())]
    Dirs {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Launches `l` to its final execution info.
pub async fn launch(rt: &NodeContext, l: Launch<'_>, cancel: &CancellationToken) -> ExecutionInfo {
    let what = l.what;
    let resume = l.resume;
    let plan = match prepare(rt, l.identity, l.plan, l.gpus, l.fresh && resume.is_none()).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %Chain(&e), "the {what} cannot start");
            return failed_before_start(before_start(&e), chain(&e));
        }
    };
    if !plan.gpus.is_empty() {
        tracing::info!(gpus = ?plan.gpus.iter().map(|g| g.index).collect::<Vec<_>>(), "GPUs given");
    }
    tracing::info!("{what} started");
    let info = run_task(rt, &plan, cancel, resume, l.on_retry).await;
    tracing::info!(exit_code = ?info.exit_code, result = ?info.result,
        failure = ?info.failure_info.as_ref().map(|f| &f.code), "{what} completed");
    if let Some(keep) = plan.retention {
        if let Err(e) = crate::node::retention::record(&rt.node.layout, &plan.task_dir, keep) {
            tracing::warn!(error = %e, "could not record the retention deadline");
        }
    }
    info
}

async fn prepare(
    rt: &NodeContext,
    identity: Option<UserIdentity>,
    plan: Planner<'_>,
    gpus: Vec<NodeGpu>,
    fresh: bool,
) -> Result<TaskPlan, LaunchError> {
    let pool = rt.pool.clone();
    // Resolving may create the user on the host: blocking work.
    let user = tokio::task::spawn_blocking(move || users::resolve(identity.as_ref(), &pool))
        .await
        .map_err(LaunchError::Resolve)??;
    let mut plan = plan(user)?;
    plan.gpus = gpus;
    prepare_dirs(&plan, fresh).map_err(|source| LaunchError::Dirs {
        path: plan.task_dir.clone(),
        source,
    })?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(errno: i32) -> LaunchError {
        LaunchError::Dirs {
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    #[test]
    fn failures_before_the_first_attempt_have_one_code_each() {
        let cases = [
            (
                LaunchError::User(UserError::UnknownPoolUser { name: "u".into() }),
                "Unknown",
            ),
            (
                LaunchError::Plan(unsplittable()),
                "ContainerInvalidSettings",
            ),
            (dirs(libc::ENOSPC), "DiskFull"),
            (dirs(libc::EACCES), "ResourceDirectoryCreateFailed"),
        ];
        for (e, code) in cases {
            assert_eq!(before_start(&e).as_str(), code, "{e}");
        }
    }

    fn unsplittable() -> PlanError {
        PlanError::CommandLine(shell_words::split("echo 'x").unwrap_err())
    }

    /// The task's failure message is the whole chain, each cause once; each level keeps
    /// the error below it as its source.
    #[test]
    fn failures_before_the_first_attempt_keep_their_causes() {
        use std::error::Error;
        let e = LaunchError::from(unsplittable());
        let parse = e.source().unwrap();
        assert!(parse.downcast_ref::<shell_words::ParseError>().is_some());
        assert_eq!(
            chain(&e),
            "commandLine cannot be split into words: missing closing quote"
        );

        let errno = nix::errno::Errno::EIO;
        let e = LaunchError::from(UserError::Lookup {
            name: "u".into(),
            source: errno,
        });
        assert_eq!(
            e.source().unwrap().downcast_ref::<nix::errno::Errno>(),
            Some(&errno),
            "the user's lookup error is the original errno"
        );
        assert_eq!(
            chain(&e),
            format!("cannot look up host user \"u\": {errno}")
        );
        assert_eq!(chain(&e).matches(&errno.to_string()).count(), 1);

        let e = dirs(libc::ENOSPC);
        let text = chain(&e);
        assert!(text.starts_with("/x: "), "{text}");
        assert_eq!(text.matches("No space left").count(), 1, "{text}");
    }
}
