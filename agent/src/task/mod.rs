//! ONE TASK, in the order its data flows:
//! plan (pure) -> run_options (pure) -> create (pure) -> run (engine) -> logs -> exit (pure)
//! -> report. `run_task` wraps attempts in the `maxTaskRetryCount` loop.

pub mod container_user;
pub mod crash;
pub mod create;
pub mod exit;
pub mod host;
pub mod launch;
pub mod logs;
#[cfg(test)]
mod on_fake;
pub mod oom;
pub mod plan;
pub mod policy;
pub mod run;
pub mod run_options;

use crate::engine::SharedEngine;
use crate::image::store::ImageStore;
use berth_proto::{ExecutionInfo, PoolSpec, TaskResult};
use berth_proto::{FailureCode, FailureInfo, NameValuePair};
use chrono::Utc;
use create::ContainerIdentity;
use plan::{NodeFacts, TaskPlan};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What every task run needs: the engine, this node, the pool, and the image store.
pub struct NodeContext {
    pub engine: SharedEngine,
    pub node: NodeFacts,
    pub pool: PoolSpec,
    pub images: Arc<ImageStore>,
    /// The node's reported state.
    pub status: crate::node::NodeStatus,
    /// How long a stopped task gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// The node's GPUs and RDMA devices, and which task holds which GPU.
    pub gpus: Arc<crate::gpu::Gpus>,
    /// Counters for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The `containerRunOptions` this node refuses.
    pub policy: policy::Policy,
    /// The most bytes kept of each of a container task's stdout.txt and stderr.txt.
    pub output_limit: Option<u64>,
    /// The `--pids-limit` of a container whose run options set none (`default_pids_limit`).
    pub pids_limit: Option<i64>,
    /// Cancelled when berth itself stops its tasks (Ctrl-C, SIGTERM with `on_shutdown =
    /// "stop"`), before their own tokens: it tells such a stop from a terminate, since a
    /// task stopped by a shutdown keeps an exit it made by itself.
    pub stopping: CancellationToken,
    /// Every task runner (tasks, start task, job tasks): drained before the process exits
    /// (`shutdown::drain`).
    pub tasks: tokio_util::task::TaskTracker,
    /// Finished containers being removed in the background (on `tasks`).
    pub removals: Arc<run::Removals>,
    /// Job tokens for tasks that ask for one; set once the daemon's TCP API listens.
    pub job_tokens: std::sync::OnceLock<Arc<crate::node::job_token::Issuer>>,
    /// The image pulls for the node view (`imagePulls`), fed by `images`' observer.
    pub pulls: Arc<crate::image::board::PullBoard>,
}

impl NodeContext {
    /// A runtime on `engine` for a node rooted at `node_root` with Batch's defaults (no
    /// registries, GPUs, policy or output limit): the unit tests' and node simulations'
    /// runtime, on [`crate::engine::Fake`].
    pub fn on_engine(
        engine: crate::engine::SharedEngine,
        node_root: &std::path::Path,
    ) -> NodeContext {
        let pool = PoolSpec::default_for_run();
        let node = NodeFacts {
            node_id: "fake-node".into(),
            pool_id: pool.id.clone(),
            account_name: "berth".into(),
            layout: crate::node::NodeLayout::new(node_root),
        };
        NodeContext {
            images: Arc::new(ImageStore::new(engine.clone(), vec![])),
            status: crate::node::NodeStatus::new(&node.node_id, &pool.id),
            engine,
            node,
            pool,
            stop_grace: Duration::from_secs(10),
            gpus: Arc::new(crate::gpu::Gpus::none()),
            metrics: Default::default(),
            policy: Default::default(),
            output_limit: None,
            pids_limit: None,
            stopping: Default::default(),
            tasks: Default::default(),
            removals: Default::default(),
            job_tokens: Default::default(),
            pulls: Default::default(),
        }
    }
}

/// Why an attempt was stopped before its process ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// `maxWallClockTime` passed.
    TimedOut,
    /// The task was terminated.
    Cancelled,
    /// berth itself stops (see `NodeContext::stopping`).
    ShutDown,
}

/// Resolves when the attempt must stop: at the wall-clock deadline or on cancellation.
pub(crate) async fn stop_requested(
    rt: &NodeContext,
    deadline: Option<tokio::time::Instant>,
    cancel: &CancellationToken,
) -> Stop {
    let wall_clock = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = wall_clock => Stop::TimedOut,
        // berth cancels `stopping` before the tasks' own tokens.
        _ = cancel.cancelled() => if rt.stopping.is_cancelled() {
            Stop::ShutDown
        } else {
            Stop::Cancelled
        },
    }
}

impl Stop {
    /// How the attempt ended, once the stopped process's exit code is known.
    pub(crate) fn finished(
        self,
        code: Option<i64>,
        container: Option<berth_proto::ContainerInfo>,
    ) -> exit::Finished {
        match self {
            Stop::TimedOut => exit::Finished::TimedOut { code, container },
            Stop::Cancelled => exit::Finished::Cancelled { code, container },
            Stop::ShutDown => exit::Finished::ShutDown { code, container },
        }
    }
}

/// Modes of a task's directory and working directory (owner and group only).
pub const PRIVATE_DIR: u32 = 0o750;
pub const PRIVATE_WD: u32 = 0o770;

/// The execution info of a task that failed before any process ran.
pub fn failed_before_start(code: FailureCode, message: String) -> ExecutionInfo {
    let now = chrono::Utc::now();
    ExecutionInfo {
        start_time: Some(now),
        end_time: Some(now),
        failure_info: Some(FailureInfo::new(
            code,
            vec![NameValuePair {
                name: "Message".into(),
                value: message,
            }],
        )),
        result: Some(TaskResult::Failure),
        ..Default::default()
    }
}

/// `--user` of a container task's run options (bad options fail the attempt later).
fn user_option(plan: &TaskPlan) -> Option<String> {
    let c = plan.container.as_ref()?;
    run_options::parse(&c.run_options).ok()?.user
}

/// Whom a task's directories and output files belong to: the uid:gid a `--user` resolves
/// to takes them over, since the container writes as that uid (Batch pitfall #6); else
/// the task's non-admin user. None when berth is not root (it cannot chown), or for
/// admin without a `--user`.
pub fn files_owner(plan: &TaskPlan, user: Option<(u32, u32)>) -> Option<crate::files::Owner> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    match user {
        Some((uid, gid)) => Some(crate::files::Owner { uid, gid }),
        None => crate::files::Owner::of(&plan.user),
    }
}

/// Gives the task directory, `wd` and `certs` to `owner`, through descriptors (a link
/// the task left in their place is refused, never followed).
pub fn give_dirs(plan: &TaskPlan, owner: crate::files::Owner) -> std::io::Result<()> {
    let task_dir = task_files(plan)?;
    let wd = task_dir.dir(wd_name(plan))?;
    let certs = task_dir.dir("certs")?;
    for d in [&task_dir, &wd, &certs] {
        d.chown(owner.uid, owner.gid)?;
    }
    Ok(())
}

/// `wd`'s name inside the task directory.
fn wd_name(plan: &TaskPlan) -> &str {
    plan.wd
        .strip_prefix(&plan.task_dir)
        .ok()
        .and_then(|p| p.to_str())
        .unwrap_or("wd")
}

/// The task's directory, opened for [`crate::node::Beneath`] operations (its parent is the
/// agent's).
pub fn task_files(plan: &TaskPlan) -> Result<crate::node::Beneath, crate::node::BeneathError> {
    crate::node::Beneath::open(&plan.task_dir)
}

/// Creates the task directory and `wd`, with their modes and owner. The task directory's
/// parent is the agent's (`workitems/<job>/job-1`, the node root); everything below it is
/// the task's, so it is reached through [`crate::node::Beneath`] and changed through
/// descriptors: a link the task left in place of `wd` is refused, never chowned.
pub fn prepare_dirs(plan: &TaskPlan, fresh: bool) -> std::io::Result<()> {
    use crate::node::Beneath;
    let (Some(parent), Some(name)) = (
        plan.task_dir.parent(),
        plan.task_dir.file_name().and_then(|n| n.to_str()),
    ) else {
        return Err(std::io::Error::other(format!(
            "{}: not a task directory",
            plan.task_dir.display()
        )));
    };
    crate::node::layout::make_agent_dirs(parent, 0o755)?;
    let parent = Beneath::open(parent)?;
    if fresh {
        // A task id reused in a later `berth run` starts from a clean directory.
        parent.remove_tree(name)?;
    }
    let (task_dir, _) = parent.make_dir(name, 0o700)?;
    let (wd, _) = task_dir.make_dir(wd_name(plan), 0o700)?;
    let (certs, _) = task_dir.make_dir("certs", 0o755)?;
    // A task's directory is its user's (and that user's group's) alone: another user's
    // task cannot read its output or files. Start, preparation and release tasks stay
    // readable by all: tasks use what they installed. A `--user` that only the image can
    // resolve (a name, a uid without a group) is the task user's until the attempt has
    // created its container and resolved it there (`run::attempt`).
    let known = user_option(plan)
        .and_then(|u| container_user::parse(&u).ok())
        .and_then(|u| u.numeric());
    let (dir_mode, wd_mode) = match plan.kind {
        plan::TaskKind::Task { .. } => (PRIVATE_DIR, PRIVATE_WD),
        _ => (0o755, 0o775),
    };
    task_dir.chmod(dir_mode)?;
    wd.chmod(wd_mode)?;
    if let Some(o) = files_owner(plan, known) {
        for d in [&task_dir, &wd, &certs] {
            d.chown(o.uid, o.gid)?;
        }
    }
    Ok(())
}

/// Where a task's run picks up after an agent restart.
#[derive(Debug, Clone)]
pub enum Resume {
    /// The container an earlier agent process started, taken over instead of started.
    Container {
        container_id: String,
        attempt: u32,
        /// When it started: the wall clock counts from there.
        started: Option<chrono::DateTime<Utc>>,
    },
    /// A new container at this attempt: the one a restart cut off before its process
    /// started runs again, and the attempts before it stay counted as retries. The task's
    /// directory and resource files are kept.
    Attempt(u32),
}

/// Runs a planned task through all its attempts and returns its final execution info.
/// With `resume`, the first attempt is that container, taken over, or that attempt.
/// `on_retry` hears each retry's count as it begins (the daemon records it, so an agent
/// restart that loses the rest still counts the attempts that ran).
pub async fn run_task(
    rt: &NodeContext,
    plan: &TaskPlan,
    cancel: &CancellationToken,
    resume: Option<Resume>,
    on_retry: &(dyn Fn(i32) + Sync),
) -> ExecutionInfo {
    let mut info = ExecutionInfo::default();
    // Resource files come once, before the first attempt; a resumed task has them.
    if resume.is_none() && !plan.resource_files.is_empty() {
        if let Err(e) = download_resources(plan, cancel).await {
            let details = e.details();
            tracing::warn!(code = %e.code, "resource files failed: {details}");
            return failed_before_start(e.code, details);
        }
    }
    let (mut attempt, mut adopt) = match resume {
        None => (0, None),
        Some(Resume::Attempt(a)) => (a, None),
        Some(Resume::Container {
            container_id,
            attempt,
            started,
        }) => (attempt, Some((container_id, started))),
    };
    info.retry_count = i32::try_from(attempt).unwrap_or(i32::MAX);
    loop {
        let mut start = tokio::time::Instant::now();
        info.start_time = Some(Utc::now());
        if let Some(began) = adopt.as_ref().and_then(|(_, started)| *started) {
            let ran = (Utc::now() - began).to_std().unwrap_or_default();
            start = start.checked_sub(ran).unwrap_or(start);
            info.start_time = Some(began);
        }
        info.end_time = None;
        info.exit_code = None;
        info.failure_info = None;
        info.container_info = None;
        info.result = None;
        let deadline = plan.max_wall_clock.and_then(|d| start.checked_add(d));
        let finished = match &plan.container {
            Some(_) if adopt.is_some() => {
                let (id, _) = adopt.take().unwrap_or_else(|| unreachable!());
                tracing::info!(container = %id, attempt, "taking over the container an earlier agent started");
                run::adopt(rt, plan, &id, deadline, cancel).await
            }
            Some(_) => {
                let who = ContainerIdentity {
                    node_id: rt.node.node_id.clone(),
                    pool_id: rt.node.pool_id.clone(),
                    attempt,
                    pool_attempt: plan.pool_attempt,
                };
                run::attempt(rt, plan, &who, deadline, cancel).await
            }
            None => host::attempt(rt, plan, deadline, cancel).await,
        };
        let outcome = exit::outcome(finished);
        info.end_time = Some(Utc::now());
        if plan.container.is_some() {
            info.output_truncated = logs::truncated(&plan.task_dir, rt.output_limit);
        }
        info.exit_code = outcome.exit_code;
        info.container_info = outcome.container;
        let retries_left =
            plan.max_retries == -1 || i64::from(info.retry_count) < i64::from(plan.max_retries);
        if outcome.failure.is_some() && outcome.retryable && retries_left && !cancel.is_cancelled()
        {
            tracing::info!(retry = info.retry_count + 1, exit_code = ?info.exit_code, "task failed; retrying");
            info.retry_count += 1;
            info.last_retry_time = Some(Utc::now());
            on_retry(info.retry_count);
            attempt += 1;
            continue;
        }
        info.failure_info = outcome.failure;
        // Outputs go up after the last attempt, unless berth itself is stopping.
        if !plan.output_files.is_empty() && !cancel.is_cancelled() {
            upload_outputs(plan, &mut info).await;
        }
        info.result = Some(if info.failure_info.is_some() {
            TaskResult::Failure
        } else {
            TaskResult::Success
        });
        return info;
    }
}

async fn download_resources(
    plan: &TaskPlan,
    cancel: &CancellationToken,
) -> Result<(), crate::files::FileError> {
    let t = crate::files::Transfers::shared()?;
    let owner = crate::files::Owner::of(&plan.user);
    let wd = task_files(plan)
        .and_then(|d| d.dir(wd_name(plan)))
        .map_err(|e| {
            crate::files::resources::beneath_error(FailureCode::ResourceDirectoryCreateFailed, e)
        })?;
    let done =
        crate::files::resources::download(t, &plan.resource_files, &wd, owner, cancel).await?;
    tracing::info!(
        files = done.files,
        bytes = done.bytes,
        "resource files downloaded"
    );
    Ok(())
}

/// Uploads the outputs whose condition holds. An upload failure fails a task whose process
/// succeeded (Batch's `FileUpload*` codes); a task that had already failed keeps its own
/// failure, with the upload's added as a detail. The exit code is never touched.
async fn upload_outputs(plan: &TaskPlan, info: &mut ExecutionInfo) {
    let env: Vec<(String, String)> = plan
        .user_env
        .iter()
        .chain(plan.batch_env.iter())
        .cloned()
        .collect();
    let task = crate::files::outputs::TaskFiles {
        wd: &plan.wd,
        task_dir: &plan.task_dir,
        env: &env,
    };
    let success = info.failure_info.is_none();
    let result = match crate::files::Transfers::shared() {
        Ok(t) => crate::files::outputs::upload(t, &plan.output_files, &task, success).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(Some(done)) => {
            tracing::info!(
                files = done.files,
                bytes = done.bytes,
                "output files uploaded"
            )
        }
        Ok(None) => {}
        Err(e) => {
            let details = e.details();
            tracing::warn!(code = %e.code, "output files failed: {details}");
            let detail = NameValuePair {
                name: "Message".into(),
                value: details.clone(),
            };
            match &mut info.failure_info {
                Some(f) => f.details.push(NameValuePair {
                    name: "FileUploadError".into(),
                    value: format!("{}: {details}", e.code),
                }),
                None => info.failure_info = Some(FailureInfo::new(e.code, vec![detail])),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{NodeLayout, ResolvedUser};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// The task directory's modes and owner, as `prepare_dirs` leaves them, for a task
    /// with these run options.
    fn prepared(root: &std::path::Path, id: &str, run_options: &str) -> (u32, u32, u32) {
        let node = NodeFacts {
            node_id: "n1".into(),
            pool_id: "p1".into(),
            account_name: "berth".into(),
            layout: NodeLayout::new(root),
        };
        let user = ResolvedUser {
            name: "_azbatch".into(),
            uid: 4399,
            gid: 4398,
            admin: false,
            identity: "PoolNonAdmin".into(),
        };
        let spec: berth_proto::TaskSpec = serde_json::from_value(serde_json::json!({
            "id": id, "commandLine": "true",
            "containerSettings": {"imageName": "busybox", "containerRunOptions": run_options}
        }))
        .unwrap();
        let job = berth_proto::JobSpec {
            id: "j".into(),
            ..Default::default()
        };
        let plan = plan::task(&spec, &job, &node, user).unwrap();
        prepare_dirs(&plan, true).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let meta = std::fs::metadata(&plan.wd).unwrap();
        (mode(&plan.task_dir), mode(&plan.wd), meta.uid())
    }

    #[test]
    fn directory_modes_and_owner_follow_the_container_user() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let (dir, wd, _) = prepared(root, "plain", "");
        assert_eq!((dir, wd), (PRIVATE_DIR, PRIVATE_WD));
        // A name (or a uid alone) is resolved in the container: until then the task's
        // user holds the directories, which are never opened to others.
        let (dir, wd, named_uid) = prepared(root, "named", "--user nobody");
        assert_eq!(
            (dir, wd),
            (PRIVATE_DIR, PRIVATE_WD),
            "a named --user opens nothing wider"
        );
        let (dir, wd, uid) = prepared(root, "numeric", "--user 4321:4322");
        assert_eq!((dir, wd), (PRIVATE_DIR, PRIVATE_WD));
        if nix::unistd::Uid::effective().is_root() {
            assert_eq!(uid, 4321, "a numeric --user owns its directories");
            assert_eq!(prepared(root, "own", "").2, 4399);
            assert_eq!(
                named_uid, 4399,
                "the task's user until the container resolves it"
            );
        } else {
            eprintln!("not root: ownership not checked");
        }
    }

    /// The job directories above a task's directory are the agent's: whatever the umask
    /// berth was started with, no task may write them (else it could swap a sibling's
    /// directory, or `job-1` itself, for a link).
    #[test]
    fn job_directories_are_the_agents_whatever_the_umask() {
        use nix::sys::stat::{umask, Mode};
        let root = tempfile::tempdir().unwrap();
        let old = umask(Mode::empty());
        prepared(root.path(), "t", "");
        umask(old);
        let mode = |p: &str| {
            std::fs::metadata(root.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        for d in ["workitems", "workitems/j", "workitems/j/job-1"] {
            assert_eq!(mode(d), 0o755, "{d}: {:o}", mode(d));
        }
    }
}
