//! One cancellation tree: SIGINT/SIGTERM cancel the root token. What running tasks then do
//! is the caller's to say: `berth run` stops (and removes) their containers; the daemon
//! follows `on_shutdown` (stop them, wait for them, or leave them to the next agent).

use tokio_util::sync::CancellationToken;

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
