//! POOL START: node directories -> leftovers cleaned -> images prefetched -> start task ->
//! node ready. The node moves `starting` -> (`waitingforstarttask`) -> `idle`; a failure
//! leaves it in the spec's state (§4): `unusable` with a node error per image that could not
//! be prefetched, `starttaskfailed` (with `startTaskInfo`) when a `waitForSuccess` start
//! task fails.

pub mod engine_health;

use crate::error_chain::{chain, Chain};
use crate::node::retention;
use crate::task::create::labels;
use crate::task::{self, plan, NodeContext};
use berth_proto::{
    ExecutionInfo, NameValuePair, NodeError, NodeImage, NodeState, StartTaskInfo, TaskResult,
};
use futures_util::StreamExt;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What pool start leaves besides the node's state (which is in `NodeContext::status`).
#[derive(Debug)]
pub struct PoolStart {
    /// A start task without `waitForSuccess` runs beside the tasks.
    pub background_start_task: Option<tokio::task::JoinHandle<ExecutionInfo>>,
}

/// Removes containers a previous berth process on this node left behind; with
/// `keep_tasks`, task containers stay for the daemon to take over.
pub async fn clean_leftovers(rt: &NodeContext, keep_tasks: bool) -> usize {
    let list = match rt
        .engine
        .list_labelled(&[(labels::MANAGED, "true"), (labels::NODE, &rt.node.node_id)])
        .await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %Chain(&e), "could not list leftover containers");
            return 0;
        }
    };
    let mut n = 0;
    for c in list {
        if keep_tasks && c.label(labels::KIND) == "task" {
            continue;
        }
        {
            let id = c.id;
            tracing::info!(container = %id, names = ?c.names, "removing a container left by an earlier berth run");
            match rt.engine.remove(&id).await {
                Ok(()) => n += 1,
                Err(e) => {
                    tracing::warn!(container = %id, error = %Chain(&e), "could not remove leftover container")
                }
            }
        }
    }
    n
}

/// Pulls every `containerImageNames` entry, `concurrency` at a time; returns a node error
/// for each image that could not be made present (and lists every image on the node).
async fn prefetch(rt: &NodeContext, concurrency: usize) -> Vec<NodeError> {
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
        .buffered(concurrency.max(1))
        .collect()
        .await;
    let mut errors = vec![];
    let mut images = vec![];
    for (image, r) in results {
        match r {
            Ok(()) => images.push(NodeImage {
                image,
                state: "ready".into(),
                message: None,
            }),
            Err(e) => {
                let (_, message) = e.code().category_and_message();
                let details = chain(&e);
                errors.push(NodeError {
                    code: e.code().as_str().into(),
                    message: message.into(),
                    error_details: vec![
                        NameValuePair {
                            name: "ContainerImage".into(),
                            value: image.clone(),
                        },
                        NameValuePair {
                            name: "Message".into(),
                            value: details.clone(),
                        },
                    ],
                });
                images.push(NodeImage {
                    image,
                    state: "failed".into(),
                    message: Some(details),
                });
            }
        }
    }
    rt.status.update(|n| n.images = images);
    errors
}

async fn run_start_task(rt: Arc<NodeContext>, cancel: CancellationToken) -> ExecutionInfo {
    let st = rt.pool.start_task.clone().unwrap_or_default();
    let launch = task::launch::Launch {
        what: "start task",
        identity: st.user_identity.clone(),
        plan: Box::new(|user| plan::start_task(&st, &rt.node, user)),
        // The start task sees every GPU; it holds none, so tasks beside it get theirs.
        gpus: rt.gpus.inventory.gpus.clone(),
        // The start task's directory is reused on every run; only its wd is guaranteed.
        fresh: false,
        resume: None,
        on_retry: &|_| {},
    };
    task::launch::launch(&rt, launch, &cancel).await
}

/// Brings the node up for `rt.pool`; the outcome is `rt.status`. `keep_tasks`: the
/// daemon takes over task containers an earlier process left, so they are not removed.
pub async fn start(
    rt: Arc<NodeContext>,
    cancel: CancellationToken,
    prefetch_concurrency: usize,
    keep_tasks: bool,
) -> std::io::Result<PoolStart> {
    rt.status.set_state(NodeState::Starting);
    rt.node.layout.prepare()?;
    match retention::sweep(&rt.node.layout) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            removed = n,
            "removed task directories past their retention time"
        ),
        Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
    }
    clean_leftovers(&rt, keep_tasks).await;
    let errors = prefetch(&rt, prefetch_concurrency).await;
    if !errors.is_empty() {
        errors.into_iter().for_each(|e| rt.status.add_error(e));
        rt.status.set_state(NodeState::Unusable);
        return Ok(PoolStart {
            background_start_task: None,
        });
    }
    let Some(st) = rt.pool.start_task.clone() else {
        rt.status.set_state(NodeState::Idle);
        return Ok(PoolStart {
            background_start_task: None,
        });
    };
    rt.status
        .update(|n| n.start_task_info = Some(StartTaskInfo::running(chrono::Utc::now())));
    let record = |rt: &NodeContext, info: &ExecutionInfo| {
        rt.status
            .update(|n| n.start_task_info = Some(StartTaskInfo::completed(info)));
    };
    if st.wait_for_success.unwrap_or(true) {
        rt.status.set_state(NodeState::WaitingForStartTask);
        let info = run_start_task(rt.clone(), cancel).await;
        record(&rt, &info);
        rt.status
            .set_state(if info.result == Some(TaskResult::Success) {
                NodeState::Idle
            } else {
                NodeState::StartTaskFailed
            });
        Ok(PoolStart {
            background_start_task: None,
        })
    } else {
        rt.status.set_state(NodeState::Idle);
        let bg = rt.clone();
        let h = tokio::spawn(rt.tasks.track_future(async move {
            let info = run_start_task(bg.clone(), cancel).await;
            record(&bg, &info);
            info
        }));
        Ok(PoolStart {
            background_start_task: Some(h),
        })
    }
}
