//! The Docker engine as the node sees it. At start the daemon waits for the engine
//! instead of exiting, its API up and the node `starting` with an `EngineUnavailable`
//! error saying why. Later a probe every few seconds turns a ready node `unusable` (no
//! task starts) while the engine is away, and back, scheduler woken, when it answers.
//! Running tasks see the loss on their own: their wait breaks off (`task::run`).

use crate::backoff::Backoff;
use crate::error_chain::{chain, Chain};
use crate::task::NodeContext;
use berth_proto::{NameValuePair, NodeError, NodeState};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The node error's code while the engine is away.
pub const CODE: &str = "EngineUnavailable";

/// How often the running node's engine is probed.
const PROBE_EVERY: Duration = Duration::from_secs(3);

fn away_error(rt: &NodeContext, why: &str) -> NodeError {
    NodeError {
        code: CODE.into(),
        message: format!("The Docker engine at {} does not answer", rt.engine.host()),
        error_details: vec![NameValuePair {
            name: "Message".into(),
            value: why.into(),
        }],
    }
}

/// Puts the node's engine error in place (replacing an older one) or takes it away.
fn set_error(rt: &NodeContext, error: Option<NodeError>) {
    rt.status.update(|n| {
        n.errors.retain(|e| e.code != CODE);
        n.errors.extend(error);
    });
}

/// Waits until the engine answers and the API version is agreed, retrying with backoff
/// (0.5 s doubling to 15 s). Returns false when cancelled first.
pub async fn wait_at_start(rt: &NodeContext, cancel: &CancellationToken) -> bool {
    let mut delay = Backoff::new(Duration::from_millis(500), Duration::from_secs(15));
    let mut said = false;
    loop {
        match rt.engine.negotiate().await {
            Ok(()) => {
                if said {
                    tracing::info!(engine = %rt.engine.host(), "the Docker engine answers");
                    set_error(rt, None);
                }
                return true;
            }
            Err(e) => {
                if !said {
                    tracing::warn!(engine = %rt.engine.host(), error = %Chain(&e), "waiting for the Docker engine");
                    said = true;
                }
                set_error(rt, Some(away_error(rt, &chain(&e))));
            }
        }
        if !delay.sleep(cancel).await {
            return false;
        }
    }
}

/// Probes the engine until `cancel`. A ready node (`idle`/`running`) whose engine stops
/// answering becomes `unusable`, and `idle` again (then `wake`) when it answers; a node in
/// another state only gets the error shown.
pub async fn watch(rt: &NodeContext, wake: impl Fn(), cancel: CancellationToken) {
    let mut made_unusable = false;
    let mut away = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = cancel.cancelled() => return,
        }
        match rt.engine.probe().await {
            Ok(()) if away => {
                away = false;
                tracing::info!(engine = %rt.engine.host(), "the Docker engine answers again");
                // A restarted engine may be another version.
                if let Err(e) = rt.engine.negotiate().await {
                    tracing::warn!(error = %Chain(&e), "API version not agreed again");
                }
                set_error(rt, None);
                if made_unusable && rt.status.state() == NodeState::Unusable {
                    rt.status.set_state(NodeState::Idle);
                }
                made_unusable = false;
                wake();
            }
            Ok(()) => {}
            Err(e) => {
                if !away {
                    tracing::error!(engine = %rt.engine.host(), error = %Chain(&e), "the Docker engine stopped answering; no task starts until it does");
                    away = true;
                }
                set_error(rt, Some(away_error(rt, &chain(&e))));
                if rt.status.state().schedulable() {
                    rt.status.set_state(NodeState::Unusable);
                    made_unusable = true;
                }
            }
        }
    }
}
