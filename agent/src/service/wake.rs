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
