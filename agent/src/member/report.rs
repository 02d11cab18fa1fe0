//! The reporter: sends the journal's reports to the service in order, those queued
//! together in one call (`/reports`, one transaction), each call until the service
//! answers; what an earlier process left unacknowledged goes first. A
//! Running report whose attempt's end is already queued is not sent (the end says more). A
//! report refused with `AttemptFenced` fences the attempt here (its container killed
//! and removed, its local task forgotten).

use super::client::ClientError;
use super::journal::{Note, Pending};
use super::{Member, CALL_TIMEOUT};
use berth_proto::node_protocol::{
    Report, Reports, ReportsReply, FENCED, MAX_REPORTS, MAX_REPORTS_BYTES,
};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Runs until the agent stops.
pub async fn run(m: Arc<Member>, mut notes: mpsc::UnboundedReceiver<Note>) {
    let mut queue: VecDeque<Note> = m
        .ledger
        .pending
        .list()
        .into_iter()
        .map(|(path, p)| {
            if p.is_end() {
                m.ledger.end_queued();
            }
            Note::Report(Some(path), Box::new(p))
        })
        .collect();
    loop {
        if queue.is_empty() {
            tokio::select! {
                n = notes.recv() => match n {
                    Some(n) => queue.push_back(n),
                    None => return,
                },
                _ = m.stop.cancelled() => return,
            }
        }
        while let Ok(n) = notes.try_recv() {
            queue.push_back(n);
        }
        // The reports at the front, in order, up to a Forget (which must follow them).
        let mut batch = vec![];
        let mut bytes = 0;
        while batch.len() < MAX_REPORTS
            && bytes < MAX_REPORTS_BYTES
            && matches!(queue.front(), Some(Note::Report(..)))
        {
            let Some(Note::Report(path, p)) = queue.pop_front() else {
                break;
            };
            if ended_later(&queue, &p) {
                // A task that ended before its Running report left: the end carries
                // everything Running would, so one write is saved.
                tracing::debug!(attempt = p.attempt, "running report folded into its end");
                if let Some(path) = path {
                    std::fs::remove_file(&path).ok();
                }
                continue;
            }
            bytes += serde_json::to_vec(&p.event).map_or(0, |v| v.len());
            batch.push((path, *p));
        }
        if !batch.is_empty() {
            let ends = batch.iter().filter(|(_, p)| p.is_end()).count();
            send_all(&m, batch).await;
            for _ in 0..ends {
                m.ledger.end_done();
            }
            continue;
        }
        if let Some(Note::Forget { job, task, attempt }) = queue.pop_front() {
            m.forget(&job, &task);
            m.ledger.forgotten(attempt);
        }
    }
}

/// Sends `batch` in one `/reports` call (one transaction in the service), or a lone
/// report by `/report`; a batch the service refuses whole (a service without `/reports`,
/// one report it cannot read) goes one by one, so that only a bad one is dropped.
async fn send_all(m: &Arc<Member>, batch: Vec<(Option<PathBuf>, Pending)>) {
    if batch.len() == 1 {
        let (path, p) = batch.into_iter().next().expect("one report");
        return send(m, path, p).await;
    }
    let body = |epoch| Reports {
        reports: batch
            .iter()
            .map(|(_, p)| Report {
                epoch,
                attempt: p.attempt,
                job_id: p.job_id.clone(),
                task_id: p.task_id.clone(),
                event: p.event.clone(),
            })
            .collect(),
    };
    let r: Result<ReportsReply, _> = post_enrolled(m, "/reports", body).await;
    match r {
        Ok(reply) => {
            for (path, p) in batch {
                if reply.fenced.contains(&p.attempt) {
                    tracing::warn!(attempt = p.attempt, job = %p.job_id, task = %p.task_id, "the service no longer counts this attempt");
                    m.fence(p.attempt, None).await;
                } else {
                    tracing::debug!(attempt = p.attempt, "report acknowledged");
                }
                if let Some(path) = path {
                    std::fs::remove_file(&path).ok();
                }
            }
        }
        Err(ClientError::Stopped) => {}
        Err(e) => {
            tracing::debug!(error = %e, reports = batch.len(), "reports refused together; sending them one by one");
            for (path, p) in batch {
                send(m, path, p).await;
            }
        }
    }
}

/// Posts `body(epoch)` to `path` until the service answers, waiting (with backoff) while
/// a newer enrolment is on its way (the heartbeat re-enrols); `Stopped` once the agent
/// stops.
async fn post_enrolled<B: serde::Serialize, R: serde::de::DeserializeOwned>(
    m: &Member,
    path: &str,
    body: impl Fn(i64) -> B,
) -> Result<R, ClientError> {
    let mut delay = crate::backoff::Backoff::new(
        std::time::Duration::from_millis(250),
        std::time::Duration::from_secs(5),
    );
    loop {
        let r = m
            .client
            .post_until_answered(path, || m.token(), &body(m.epoch()), CALL_TIMEOUT, &m.stop)
            .await;
        match r {
            Err(e)
                if e.is(berth_proto::node_protocol::SUPERSEDED) || e.is("AuthenticationFailed") =>
            {
                if !delay.sleep(&m.stop).await {
                    return Err(ClientError::Stopped);
                }
            }
            other => return other,
        }
    }
}

/// Whether `p` is a Running report whose attempt's end is queued behind it.
fn ended_later(queue: &VecDeque<Note>, p: &Pending) -> bool {
    !p.is_end()
        && queue
            .iter()
            .any(|n| matches!(n, Note::Report(_, q) if q.attempt == p.attempt && q.is_end()))
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
    let r: Result<serde_json::Value, _> = post_enrolled(m, "/report", body).await;
    match r {
        Ok(_) => tracing::debug!(attempt, "report acknowledged"),
        Err(ClientError::Stopped) => return,
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

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::node_protocol::{AttemptId, ReportEvent};

    fn note(attempt: AttemptId, event: ReportEvent) -> Note {
        Note::Report(
            None,
            Box::new(Pending {
                attempt,
                job_id: "j".into(),
                task_id: format!("t{attempt}"),
                event,
            }),
        )
    }

    fn running(attempt: AttemptId) -> Pending {
        let task = serde_json::from_value(serde_json::json!({
            "id": "t", "commandLine": "true", "jobId": "j", "state": "running",
            "stateTransitionTime": "2026-01-01T00:00:00Z", "creationTime": "2026-01-01T00:00:00Z"}))
        .unwrap();
        Pending {
            attempt,
            job_id: "j".into(),
            task_id: format!("t{attempt}"),
            event: ReportEvent::Running { task },
        }
    }

    #[test]
    fn a_running_report_is_folded_only_into_its_own_attempts_end() {
        let abandoned = |a| note(a, ReportEvent::Abandoned { reason: "r".into() });
        let queue: VecDeque<Note> = [abandoned(2)].into();
        assert!(!ended_later(&queue, &running(1)), "another attempt's end");
        assert!(ended_later(&queue, &running(2)));
        let r = running(3);
        let queue: VecDeque<Note> = [note(3, r.event.clone())].into();
        assert!(!ended_later(&queue, &r), "only a Running queued");
        // An end is never folded away.
        let queue: VecDeque<Note> = [abandoned(4)].into();
        let Note::Report(_, end) = abandoned(4) else {
            unreachable!()
        };
        assert!(!ended_later(&queue, &end));
    }
}
