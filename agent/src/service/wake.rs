//! Wakes long-polling claims when a pool's ready set may have grown. PostgreSQL's
//! `NOTIFY berth_ready, '<pool>'` reaches every replica; each replica turns it into a
//! tokio `Notify` per pool. Notifications are lost while the listener reconnects, so claims
//! also re-check on a slow timer (the safety net).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The channel tasks-became-claimable notices travel on; the payload is the pool id.
pub const CHANNEL: &str = "berth_ready";

#[derive(Default)]
pub struct Wake {
    pools: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Wake {
    /// The `Notify` of `pool` (lower-case id), made on first use.
    pub fn pool(&self, pool: &str) -> Arc<Notify> {
        let mut m = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(pool.to_ascii_lowercase()).or_default().clone()
    }

    /// Wakes every claim waiting on `pool`.
    pub fn ready(&self, pool: &str) {
        self.pool(pool).notify_waiters();
    }
}

impl Wake {
    /// Wakes every claim of every pool (after the listener reconnected: notices sent
    /// while it was away are lost).
    pub fn all(&self) {
        let m = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        for n in m.values() {
            n.notify_waiters();
        }
    }
}

/// Listens on [`CHANNEL`] with a connection of its own (not from the pool: a LISTEN
/// belongs to its session) and turns each notice into [`Wake::ready`]. Reconnects with
/// the shared backoff while PostgreSQL is away; returns when `cancel` fires.
pub async fn listen(url: String, wake: Arc<Wake>, cancel: tokio_util::sync::CancellationToken) {
    use futures_util::StreamExt;
    let backoff = || {
        crate::backoff::Backoff::new(
            std::time::Duration::from_millis(250),
            std::time::Duration::from_secs(5),
        )
    };
    let mut delay = backoff();
    loop {
        let connected = tokio::select! {
            r = tokio_postgres::connect(&url, tokio_postgres::NoTls) => r,
            _ = cancel.cancelled() => return,
        };
        match connected {
            Ok((client, mut conn)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| conn.poll_message(cx)).boxed();
                let sql = format!("LISTEN {CHANNEL}");
                let listen = client.batch_execute(&sql);
                // The connection must be driven while the LISTEN runs.
                let ok = {
                    tokio::pin!(listen);
                    loop {
                        tokio::select! {
                            r = &mut listen => break r.is_ok(),
                            m = messages.next() => if !matches!(m, Some(Ok(_))) { break false },
                            _ = cancel.cancelled() => return,
                        }
                    }
                };
                if ok {
                    tracing::debug!("listening for ready tasks");
                    delay = backoff();
                    // Whatever was notified while we were away.
                    wake.all();
                    loop {
                        tokio::select! {
                            m = messages.next() => match m {
                                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                                    wake.ready(n.payload());
                                }
                                Some(Ok(_)) => {}
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "ready-task listener lost its connection");
                                    break;
                                }
                                None => break,
                            },
                            _ = cancel.cancelled() => return,
                        }
                    }
                }
                drop(client);
            }
            Err(e) => {
                tracing::debug!(error = %e, "ready-task listener cannot connect");
            }
        }
        if !delay.sleep(&cancel).await {
            return;
        }
    }
}
