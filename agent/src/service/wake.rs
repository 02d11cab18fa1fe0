//! Wakes long-polling claims when a pool's ready set may have grown. PostgreSQL's
//! `NOTIFY berth_ready, '<pool>'` reaches every replica; each replica turns it into a
//! [`PoolWake`] per pool. Notifications are lost while the listener reconnects, so claims
//! also re-check on a slow timer (the safety net).
//!
//! A notice wakes one waiting claim, not all: on a large idle pool, waking every claim for
//! one new task made them all race through the `ready` table at once. The woken claim
//! passes the wake on ([`PoolWake::more`], [`PoolWake::pass`]) when work it could not take
//! is left, so a long queue still reaches every node, and one that was not its turn
//! (spread/pack) hands the wake to the next waiter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The channel tasks-became-claimable notices travel on; the payload is the pool id.
pub const CHANNEL: &str = "berth_ready";

/// The most waiters one claim wakes for the work it left (more would only queue up).
const MAX_PASS: i64 = 256;

/// The waiting claims of one pool.
#[derive(Default)]
pub struct PoolWake {
    notify: Notify,
    /// Notices so far: a claim passes a not-for-me wake on once per notice, so a wake
    /// that no waiter here can use dies out instead of circling.
    notices: AtomicU64,
}

impl PoolWake {
    /// Resolves when this claim is woken. Register it (`enable`) before looking, so a
    /// wake given meanwhile is kept.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// The number of notices so far (compare to decide whether a wake was passed on yet).
    pub fn notice(&self) -> u64 {
        self.notices.load(Ordering::Relaxed)
    }

    /// Wakes up to `n` more waiters (capped at 256): work a claim saw but left.
    pub fn more(&self, n: i64) {
        for _ in 0..n.clamp(0, MAX_PASS) {
            self.notify.notify_one();
        }
    }

    /// Hands a wake this claim could not use to the next waiter, at most once per notice
    /// per claim: `passed` holds the notice it last passed on.
    pub fn pass(&self, passed: &mut Option<u64>) {
        let now = self.notice();
        if *passed != Some(now) {
            *passed = Some(now);
            self.notify.notify_one();
        }
    }
}

#[derive(Default)]
pub struct Wake {
    pools: Mutex<HashMap<String, Arc<PoolWake>>>,
}

impl Wake {
    /// The waiting claims of `pool` (lower-case id), made on first use.
    pub fn pool(&self, pool: &str) -> Arc<PoolWake> {
        let mut m = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(pool.to_ascii_lowercase()).or_default().clone()
    }

    /// A notice for `pool`: wakes one waiting claim (it passes the wake on as needed).
    pub fn ready(&self, pool: &str) {
        let p = self.pool(pool);
        p.notices.fetch_add(1, Ordering::Relaxed);
        p.notify.notify_one();
    }

    /// Wakes every claim waiting on `pool` (a node's turn may have changed, not the
    /// ready set: no waiter can tell which one it is for).
    pub fn everyone(&self, pool: &str) {
        let p = self.pool(pool);
        p.notices.fetch_add(1, Ordering::Relaxed);
        p.notify.notify_waiters();
    }

    /// Wakes every claim of every pool (after the listener reconnected: notices sent
    /// while it was away are lost).
    pub fn all(&self) {
        let m = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        for p in m.values() {
            p.notices.fetch_add(1, Ordering::Relaxed);
            p.notify.notify_waiters();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;

    /// How many of `waiters` were woken (each polled once).
    fn woken(waiters: &mut [std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>]) -> usize {
        use std::future::Future;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut n = 0;
        for w in waiters {
            if w.as_mut().poll(&mut cx).is_ready() {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn a_notice_wakes_one_claim_and_a_claim_passes_an_unused_wake_once() {
        let wake = Wake::default();
        let p = wake.pool("P");
        let (a, b, c) = (p.notified(), p.notified(), p.notified());
        let (mut a, mut b, mut c) = (pin!(a), pin!(b), pin!(c));
        for w in [&mut a, &mut b, &mut c] {
            w.as_mut().enable();
        }
        wake.ready("p");
        assert_eq!(woken(&mut [a.as_mut(), b.as_mut(), c.as_mut()]), 1);
        let mut passed = None;
        p.pass(&mut passed);
        p.pass(&mut passed);
        let all = woken(&mut [a.as_mut(), b.as_mut(), c.as_mut()]);
        assert_eq!(all, 2, "passed on once per notice");
    }

    #[test]
    fn work_left_wakes_as_many_claims() {
        let wake = Wake::default();
        let p = wake.pool("p");
        let mut ws: Vec<_> = (0..4).map(|_| Box::pin(p.notified())).collect();
        for w in &mut ws {
            w.as_mut().enable();
        }
        p.more(2);
        let mut pins: Vec<_> = ws.iter_mut().map(|w| w.as_mut()).collect();
        assert_eq!(woken(&mut pins), 2);
        wake.everyone("p");
        assert_eq!(woken(&mut pins), 4);
    }
}
