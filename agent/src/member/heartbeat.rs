//! Heartbeats and the self-fence. Every `heartbeatMs` the node says how it is and which
//! attempts it holds; the reply's commands are carried out. The time of the lease renewal
//! the service last recorded (the answered heartbeat's send time less the reply's
//! `leaseAgeMs`) is kept on the monotonic clock: once more than
//! `selfFenceMs` passed since (F < the service's requeue time R), the node kills its own
//! task containers before anyone else may be given their tasks, and reports them
//! `Abandoned` when the service answers again. `NodeSuperseded` fences at once and
//! enrols again.

use super::{Member, CALL_TIMEOUT};
use berth_proto::node_protocol::{Heartbeat, HeartbeatReply, SUPERSEDED};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Runs until the agent stops.
pub async fn run(m: Arc<Member>) {
    let every = Duration::from_millis(m.timers.heartbeat_ms.max(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = m.stop.cancelled() => return,
        }
        let sent = Instant::now();
        let hb = Heartbeat {
            epoch: m.epoch(),
            node: m.rt.status.get(),
            running: m.running(),
            file_address: m.file_address.get().cloned(),
            image_pulls: m
                .rt
                .pulls
                .snapshot()
                .iter()
                .filter_map(|p| serde_json::to_value(p).ok())
                .collect(),
        };
        let token = m.token();
        let r: Result<HeartbeatReply, _> = tokio::select! {
            r = m.client.post("/heartbeat", &token, &hb, CALL_TIMEOUT.min(every * 3)) => r,
            _ = m.stop.cancelled() => return,
        };
        match r {
            Ok(reply) => {
                if failures > 0 {
                    tracing::info!(failures, "the service answers heartbeats again");
                }
                failures = 0;
                // The lease stands from the renewal the service recorded, which may be an
                // earlier heartbeat's (`leaseAgeMs`).
                let renewed = sent
                    .checked_sub(Duration::from_millis(reply.lease_age_ms))
                    .unwrap_or(sent);
                *m.last_ok.lock().unwrap_or_else(|p| p.into_inner()) = renewed;
                m.self_fenced.store(false, Ordering::Relaxed);
                m.apply(reply.commands).await;
            }
            Err(e) if e.is(SUPERSEDED) => {
                tracing::error!(
                    "a newer enrolment owns this node id: fencing every task and enrolling again"
                );
                m.fence_all("node superseded").await;
                match super::enrol::again(&m).await {
                    Some(()) => {
                        *m.last_ok.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now()
                    }
                    None => return,
                }
            }
            Err(e) => {
                if failures % 10 == 0 {
                    tracing::warn!(error = %e, failures, "heartbeat not answered");
                }
                failures += 1;
            }
        }
    }
}

/// Watches the lease: fences every task of this node once `selfFenceMs` passed since the
/// send time of the last answered heartbeat. Never with the keep profile.
pub async fn watchdog(m: Arc<Member>) {
    let Some(f) = m.timers.self_fence_ms.map(Duration::from_millis) else {
        return;
    };
    let step = (f / 20).clamp(Duration::from_millis(50), Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(step) => {}
            _ = m.stop.cancelled() => return,
        }
        let last = *m.last_ok.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() > f && !m.self_fenced.swap(true, Ordering::Relaxed) {
            tracing::error!(
                since_ms = last.elapsed().as_millis() as u64,
                self_fence_ms = f.as_millis() as u64,
                "no heartbeat answered within the self-fence time: killing this node's pool tasks"
            );
            m.fence_all("self-fenced: the node lost its lease").await;
        }
        // Tasks claimed just before the lease lapsed are fenced as well.
        if m.self_fenced.load(Ordering::Relaxed) {
            m.fence_all("self-fenced: the node lost its lease").await;
        }
    }
}
