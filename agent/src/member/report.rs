//! The reporter: sends the journal's reports to the service, one at a time, each until
//! the service answers; what an earlier process left unacknowledged goes first. A
//! report refused with `AttemptFenced` fences the attempt here (its container killed
//! and removed, its local task forgotten).

use super::journal::{Note, Pending};
use super::{Member, CALL_TIMEOUT};
use berth_proto::node_protocol::{Report, FENCED};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Runs until the agent stops.
pub async fn run(m: Arc<Member>, mut notes: mpsc::UnboundedReceiver<Note>) {
    for (path, p) in m.ledger.pending.list() {
        send(&m, Some(path), p).await;
    }
    loop {
        let note = tokio::select! {
            n = notes.recv() => n,
            _ = m.stop.cancelled() => None,
        };
        match note {
            Some(Note::Report(path, p)) => send(&m, path, *p).await,
            Some(Note::Forget { job, task, attempt }) => {
                m.forget(&job, &task);
                m.ledger.forgotten(attempt);
            }
            None => return,
        }
    }
}

async fn send(m: &Arc<Member>, path: Option<PathBuf>, p: Pending) {
    let attempt = p.attempt;
    let body = |epoch| Report {
        epoch,
        attempt,
        job_id: p.job_id.clone(),
        task_id: p.task_id.clone(),
        event: p.event.clone(),
    };
    let mut delay = crate::backoff::Backoff::new(
        std::time::Duration::from_millis(250),
        std::time::Duration::from_secs(5),
    );
    let r = loop {
        let r: Result<serde_json::Value, _> = m
            .client
            .post_until_answered(
                "/report",
                || m.token(),
                &body(m.epoch()),
                CALL_TIMEOUT,
                &m.stop,
            )
            .await;
        match r {
            // A newer enrolment is on its way (the heartbeat re-enrols): wait for it.
            Err(e)
                if e.is(berth_proto::node_protocol::SUPERSEDED) || e.is("AuthenticationFailed") =>
            {
                if !delay.sleep(&m.stop).await {
                    return;
                }
            }
            other => break other,
        }
    };
    match r {
        Ok(_) => tracing::debug!(attempt, "report acknowledged"),
        Err(super::client::ClientError::Stopped) => return,
        Err(e) if e.is(FENCED) => {
            tracing::warn!(attempt, job = %p.job_id, task = %p.task_id, "the service no longer counts this attempt");
            m.fence(attempt, None).await;
        }
        Err(e) => {
            tracing::error!(attempt, error = %e, "the service refused a report; dropped");
        }
    }
    if let Some(path) = path {
        std::fs::remove_file(&path).ok();
    }
}
