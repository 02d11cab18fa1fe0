//! One cancellation tree: SIGINT/SIGTERM cancel the root token. What running tasks then do
//! is the caller's to say: `berth run` stops (and removes) their containers; the daemon
//! follows `on_shutdown` (stop them, wait for them, or leave them to the next agent). When
//! tasks are stopped, `NodeContext::stopping` is cancelled, and every task's own token is its
//! child, so none is missed. Every task runner is tracked (`NodeContext::tasks`), and the
//! process drains them with a deadline before it exits, so none outlives the agent unseen.

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long an exiting agent waits for task runners still winding down (a stop's grace
/// is spent before this: the runners only save the end and remove the container).
pub const DRAIN: Duration = Duration::from_secs(30);

/// Closes `tasks` and waits up to `deadline` for the runners still in it. Returns how
/// many were still running at the deadline (logged; their containers stay for the next
/// agent, which takes them over).
pub async fn drain(tasks: &TaskTracker, deadline: Duration) -> usize {
    tasks.close();
    if tokio::time::timeout(deadline, tasks.wait()).await.is_ok() {
        return 0;
    }
    let left = tasks.len();
    tracing::warn!(
        left,
        secs = deadline.as_secs(),
        "task runners still running at exit; the next agent takes their containers over"
    );
    left
}

/// Cancels `token` on the first SIGINT or SIGTERM, logging `consequence` (what happens to
/// running tasks) with it.
pub fn cancel_on_signals(token: CancellationToken, consequence: &'static str) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        let signal = tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::warn!(signal, "stopping: {consequence}");
        token.cancel();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_runners_up_to_its_deadline() {
        let tasks = TaskTracker::new();
        tasks.spawn(tokio::time::sleep(Duration::from_secs(5)));
        assert_eq!(drain(&tasks, Duration::from_secs(10)).await, 0);
        let tasks = TaskTracker::new();
        tasks.spawn(tokio::time::sleep(Duration::from_secs(3600)));
        assert_eq!(drain(&tasks, Duration::from_secs(10)).await, 1);
    }
}
