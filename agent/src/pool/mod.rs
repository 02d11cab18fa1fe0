//! POOL START: node directories -> leftovers cleaned -> images prefetched -> start task ->
//! node ready. A failure leaves the node in the spec's state (§4): `unusable` when an image
//! cannot be prefetched, `starttaskfailed` when a `waitForSuccess` start task fails.

pub mod images;

use crate::node::users;
use crate::schedule::retention;
use crate::task::create::labels;
use crate::task::{self, plan, Runtime};
use berth_proto::{ExecutionInfo, FailureCode, NameValuePair, TaskResult};
use futures_util::StreamExt;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Node states berth reports (spec §4.1 wire values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Idle,
    Unusable,
    StartTaskFailed,
}

impl NodeState {
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeState::Idle => "idle",
            NodeState::Unusable => "unusable",
            NodeState::StartTaskFailed => "starttaskfailed",
        }
    }
}

/// A node error (spec §4.4).
#[derive(Debug, Clone)]
pub struct NodeError {
    pub code: String,
    pub message: String,
    pub details: Vec<NameValuePair>,
}

#[derive(Debug)]
pub struct PoolStart {
    pub state: NodeState,
    pub errors: Vec<NodeError>,
    pub start_task_info: Option<ExecutionInfo>,
    /// A start task without `waitForSuccess` runs beside the tasks.
    pub background_start_task: Option<tokio::task::JoinHandle<ExecutionInfo>>,
}

/// Removes containers a previous berth process on this node left behind.
pub async fn clean_leftovers(rt: &Runtime) -> usize {
    let list = match rt
        .engine
        .list_labelled(&[(labels::MANAGED, "true"), (labels::NODE, &rt.node.node_id)])
        .await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "could not list leftover containers");
            return 0;
        }
    };
    let mut n = 0;
    for c in list {
        if let Some(id) = c.id {
            tracing::info!(container = %id, names = ?c.names, "removing a container left by an earlier berth run");
            match rt.engine.remove(&id).await {
                Ok(()) => n += 1,
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "could not remove leftover container")
                }
            }
        }
    }
    n
}

/// Pulls every `containerImageNames` entry, a few at a time.
async fn prefetch(rt: &Runtime, concurrency: usize) -> Vec<NodeError> {
    let names = rt
        .pool
        .container_configuration()
        .map(|c| c.container_image_names.clone())
        .unwrap_or_default();
    let results: Vec<_> = futures_util::stream::iter(names)
        .map(|image| async move {
            let r = rt
                .images
                .ensure(&image, None, task::run_options::PullPolicy::Missing, None)
                .await;
            (image, r)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results
        .into_iter()
        .filter_map(|(image, r)| r.err().map(|e| (image, e)))
        .map(|(image, e)| NodeError {
            code: FailureCode::ContainerInvalidImage.as_str().into(),
            message: "One or more container images specified are invalid".into(),
            details: vec![
                NameValuePair {
                    name: "ContainerImage".into(),
                    value: image,
                },
                NameValuePair {
                    name: "Message".into(),
                    value: e.message,
                },
            ],
        })
        .collect()
}

async fn run_start_task(rt: Arc<Runtime>, cancel: CancellationToken) -> ExecutionInfo {
    let st = rt.pool.start_task.clone().unwrap_or_default();
    let fail = |m: String| task::failed_before_start(FailureCode::Unknown, m);
    let ident = st.user_identity.clone();
    let pool = rt.pool.clone();
    let user =
        match tokio::task::spawn_blocking(move || users::resolve(ident.as_ref(), &pool)).await {
            Ok(Ok(u)) => u,
            Ok(Err(e)) => return fail(e.to_string()),
            Err(e) => return fail(e.to_string()),
        };
    let plan = match plan::start_task(&st, &rt.node, user) {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()),
    };
    // The start task's directory is reused on every run; only its wd is guaranteed.
    if let Err(e) = task::prepare_dirs(&plan, false) {
        return fail(format!("{}: {e}", plan.task_dir.display()));
    }
    tracing::info!("start task started");
    let info = task::run_task(&rt, &plan, &cancel).await;
    tracing::info!(exit_code = ?info.exit_code, result = ?info.result, "start task completed");
    info
}

/// Brings the node up for `rt.pool`.
pub async fn start(
    rt: Arc<Runtime>,
    cancel: CancellationToken,
    prefetch_concurrency: usize,
) -> std::io::Result<PoolStart> {
    rt.node.layout.prepare()?;
    match retention::sweep(&rt.node.layout) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            removed = n,
            "removed task directories past their retention time"
        ),
        Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
    }
    clean_leftovers(&rt).await;
    let errors = prefetch(&rt, prefetch_concurrency).await;
    if !errors.is_empty() {
        return Ok(PoolStart {
            state: NodeState::Unusable,
            errors,
            start_task_info: None,
            background_start_task: None,
        });
    }
    let Some(st) = rt.pool.start_task.clone() else {
        return Ok(PoolStart {
            state: NodeState::Idle,
            errors,
            start_task_info: None,
            background_start_task: None,
        });
    };
    if st.wait_for_success.unwrap_or(true) {
        let info = run_start_task(rt.clone(), cancel).await;
        let state = if info.result == Some(TaskResult::Success) {
            NodeState::Idle
        } else {
            NodeState::StartTaskFailed
        };
        Ok(PoolStart {
            state,
            errors,
            start_task_info: Some(info),
            background_start_task: None,
        })
    } else {
        let h = tokio::spawn(run_start_task(rt.clone(), cancel));
        Ok(PoolStart {
            state: NodeState::Idle,
            errors,
            start_task_info: None,
            background_start_task: Some(h),
        })
    }
}
