//! Enrolment (the enrolment secret buys a node token, an epoch, the pool and its
//! timers) and adoption after a restart (only attempts the service still counts keep
//! their containers and local tasks).

use super::client::{Client, ClientError};
use super::{kill_attempt, Member, Session, CALL_TIMEOUT};
use crate::error_chain::Chain;
use crate::store::Store;
use crate::task::create::labels;
use crate::task::NodeContext;
use berth_proto::node_protocol::{
    AdoptReply, AdoptRequest, AttemptId, EnrolRequest, EnrolResponse,
};
use berth_proto::TaskState;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Reads the enrolment secret: the file's first line, trimmed, not empty.
pub fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("enrolment_secret_file {}: {e}", path.display()))?;
    let s = text.lines().next().unwrap_or("").trim();
    if s.is_empty() {
        return Err(format!("enrolment_secret_file {}: empty", path.display()));
    }
    Ok(s.to_string())
}

/// Enrols, trying again while the service cannot be reached or does not know the pool
/// yet; `Err` when it refuses otherwise (a wrong secret) or `stop` fires (`None` inside).
pub async fn enrol(
    client: &Client,
    secret: &str,
    req: &EnrolRequest,
    stop: &CancellationToken,
) -> Result<EnrolResponse, Option<ClientError>> {
    let mut delay = crate::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
    let mut said = false;
    loop {
        let r = client
            .post_until_answered("/enrol", || secret.to_string(), req, CALL_TIMEOUT, stop)
            .await;
        match r {
            Ok(resp) => return Ok(resp),
            Err(ClientError::Stopped) => return Err(None),
            Err(e) if e.is("PoolNotFound") => {
                if !said {
                    tracing::warn!(pool = %req.pool_id, "the service has no such pool yet; waiting for it");
                    said = true;
                }
                if !delay.sleep(stop).await {
                    return Err(None);
                }
            }
            Err(e) => return Err(Some(e)),
        }
    }
}

/// Enrols again (after `NodeSuperseded`) and takes the new session; `None` when the
/// agent stops or the service refuses (the agent then stops too).
pub async fn again(m: &Member) -> Option<()> {
    match enrol(&m.client, &m.secret, &m.enrol, &m.stop).await {
        Ok(resp) => {
            tracing::info!(epoch = resp.epoch, "enrolled again");
            m.proxy.set(resp.proxy_token);
            *m.session.write().unwrap_or_else(|p| p.into_inner()) = Session {
                token: resp.node_token,
                epoch: resp.epoch,
            };
            Some(())
        }
        Err(Some(e)) => {
            tracing::error!(error = %e, "the service refused to enrol this node again; stopping");
            m.stop.cancel();
            None
        }
        Err(None) => None,
    }
}

/// After a restart, before the local scheduler recovers anything: asks the service which
/// attempts found here (local tasks not completed, containers labelled with an attempt)
/// are still current, and kills and removes the containers and forgets the local tasks
/// of the others, so that none runs twice. False when the agent stopped first.
pub async fn adopt(
    client: &Client,
    session: &Session,
    rt: &NodeContext,
    store: &dyn Store,
    stop: &CancellationToken,
) -> bool {
    let local = store
        .tasks_in(&[TaskState::Active, TaskState::Preparing, TaskState::Running])
        .unwrap_or_else(|e| {
            tracing::error!(error = %Chain(&e), "cannot read the local tasks");
            vec![]
        });
    let containers = rt
        .engine
        .list_labelled(&[(labels::MANAGED, "true"), (labels::NODE, &rt.node.node_id)])
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %Chain(&e), "cannot list this node's containers");
            vec![]
        });
    let mut found: BTreeSet<AttemptId> = local.iter().filter_map(|t| t.view.pool_attempt).collect();
    found.extend(
        containers
            .iter()
            .filter_map(|c| c.label(labels::POOL_ATTEMPT).parse::<AttemptId>().ok()),
    );
    // Asked even when nothing was found: the service then requeues what this node had.
    let req = AdoptRequest {
        epoch: session.epoch,
        attempts: found.iter().copied().collect(),
    };
    let token = session.token.clone();
    let reply: AdoptReply = match client
        .post_until_answered("/adopt", || token.clone(), &req, CALL_TIMEOUT, stop)
        .await
    {
        Ok(r) => r,
        Err(ClientError::Stopped) => return false,
        Err(e) => {
            // Without an answer nothing may be adopted: a stale attempt could run twice.
            tracing::error!(error = %e, "the service did not say which attempts are current; giving them all up");
            AdoptReply { current: vec![] }
        }
    };
    for a in found.iter().filter(|a| !reply.current.contains(a)) {
        tracing::warn!(
            attempt = a,
            "an attempt left by the earlier agent is no longer current: removing it"
        );
        kill_attempt(rt, *a).await;
        for t in local.iter().filter(|t| t.view.pool_attempt == Some(*a)) {
            store.delete_task(&t.view.job_id, &t.view.spec.id).ok();
        }
    }
    true
}
