//! The lease sweeper (pool-mode design notes, section 3). Every replica runs [`run`]; the
//! one holding a session advisory lock on its own connection sweeps, every second:
//! nodes unheard for `unknown_ms` show `unknown` (no new work); nodes unheard for
//! `requeue_ms` lose their live attempts, requeued as Batch's internal retry
//! (`systemRetryCount`), unless the mass-loss brake holds. The "keep" profile (no
//! `requeue_ms`) never requeues.
//!
//! Two guards keep an outage of the control plane from requeueing a pool: a replica that
//! becomes the sweeper first extends every lease to now (as Nomad does on a leader
//! change), and the brake: when more than a quarter of a pool's nodes (and at least 3)
//! hold live attempts past `unknown_ms`, nothing of that pool is requeued, every node of
//! the pool shows a `MassNodeLoss` error, until nodes come back or are removed.

use super::attempts::{self, Requeue};
use super::db::DbError;
use crate::backoff::Backoff;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The advisory lock whose holder sweeps ("berti" in ASCII; migrations use "berth").
const LOCK: i64 = 0x0062_6572_7469;
/// How often the sweeper looks.
const PERIOD: Duration = Duration::from_secs(1);

/// Whether the brake holds for a pool of `total` nodes of which `lapsed` hold live
/// attempts past the unknown time.
pub fn brake_holds(total: i64, lapsed: i64) -> bool {
    lapsed >= 3 && lapsed * 4 > total
}

/// Sweeps while this replica holds the lock; competes for it otherwise. Returns when
/// `cancel` fires.
pub async fn run(url: String, cancel: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    loop {
        let connected = tokio::select! {
            r = tokio_postgres::connect(&url, tokio_postgres::NoTls) => r,
            _ = cancel.cancelled() => return,
        };
        match connected {
            Ok((mut client, conn)) => {
                // The lock lives as long as this connection; dropping the client ends both.
                let driver = tokio::spawn(conn);
                backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
                let e = hold_and_sweep(&mut client, &cancel).await;
                drop(client);
                driver.abort();
                match e {
                    None => return,
                    Some(e) => tracing::warn!(error = %crate::error_chain::chain(&e),
                        "lease sweeper lost its database connection"),
                }
            }
            Err(e) => tracing::debug!(error = %e, "lease sweeper cannot connect"),
        }
        if !backoff.sleep(&cancel).await {
            return;
        }
    }
}

/// Competes for the lock and sweeps while held; the error that ended the connection, or
/// None when cancelled.
async fn hold_and_sweep(
    client: &mut tokio_postgres::Client,
    cancel: &CancellationToken,
) -> Option<DbError> {
    let mut holding = false;
    loop {
        let step = async {
            if !holding {
                holding = client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK])
                    .await?
                    .get(0);
                if holding {
                    let n = client
                        .execute(
                            "UPDATE nodes SET last_heartbeat = now() WHERE last_heartbeat < now()",
                            &[],
                        )
                        .await?;
                    tracing::info!(
                        nodes = n,
                        "this replica sweeps node leases; every lease extended to now"
                    );
                }
            }
            if holding {
                sweep(client).await?;
            }
            Ok::<_, DbError>(())
        };
        if let Err(e) = step.await {
            if e.is_unavailable() {
                return Some(e);
            }
            tracing::warn!(error = %crate::error_chain::chain(&e), "lease sweep failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = cancel.cancelled() => return None,
        }
    }
}

/// One sweep over every pool: the unknown marks, then each pool's requeues in a
/// transaction of its own.
pub async fn sweep(client: &mut tokio_postgres::Client) -> Result<(), DbError> {
    let unknown = client
        .query(
            "UPDATE nodes n SET state = 'unknown', state_transition_time = now()
             FROM pools p
             WHERE p.id = n.pool_id AND n.state <> 'unknown'
               AND n.last_heartbeat < now() - p.unknown_ms * interval '1 millisecond'
             RETURNING n.pool_id, n.id",
            &[],
        )
        .await?;
    for r in &unknown {
        tracing::warn!(pool = %r.get::<_, String>(0), node = %r.get::<_, String>(1),
            "node unheard past its lease: unknown, no new work goes to it");
    }
    let pools = client
        .query(
            "SELECT p.id, p.mass_loss_brake, p.requeue_ms,
                    (SELECT count(*) FROM nodes n WHERE n.pool_id = p.id),
                    (SELECT count(*) FROM nodes n
                     WHERE n.pool_id = p.id
                       AND n.last_heartbeat < now() - p.unknown_ms * interval '1 millisecond'
                       AND EXISTS (SELECT 1 FROM attempts a WHERE a.pool_id = n.pool_id
                                   AND a.node_id = n.id AND a.state = 'live'))
             FROM pools p WHERE p.requeue_ms IS NOT NULL",
            &[],
        )
        .await?;
    for p in pools {
        let (pool, braked, requeue_ms, total, lapsed): (String, bool, i64, i64, i64) =
            (p.get(0), p.get(1), p.get(2), p.get(3), p.get(4));
        let brake = brake_holds(total, lapsed);
        let tx = client.transaction().await?;
        if brake != braked {
            tx.execute(
                "UPDATE pools SET mass_loss_brake = $2 WHERE id = $1",
                &[&pool, &brake],
            )
            .await?;
            if brake {
                tracing::error!(%pool, lapsed, total,
                    "mass node loss: {lapsed} of {total} nodes lapsed together; nothing is requeued until they return or are removed");
            } else {
                tracing::warn!(%pool, lapsed, total, "mass-loss brake released");
            }
        }
        if brake {
            tx.commit().await?;
            continue;
        }
        // Node rows first (the lock order of `attempts`); a node busy in another
        // transaction (its late report) is taken at the next sweep.
        let due: Vec<i64> = tx
            .query(
                "WITH lapsed AS (
                     SELECT n.pool_id, n.id FROM nodes n
                     WHERE n.pool_id = $1
                       AND n.last_heartbeat < now() - $2::bigint * interval '1 millisecond'
                     ORDER BY n.id
                     FOR UPDATE SKIP LOCKED)
                 SELECT a.id FROM attempts a
                 JOIN lapsed n ON n.pool_id = a.pool_id AND n.id = a.node_id
                 WHERE a.state = 'live'
                 ORDER BY a.id",
                &[&pool, &requeue_ms],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for a in &due {
            attempts::requeue(&tx, *a, Requeue::Lost).await?;
        }
        if !due.is_empty() {
            tracing::warn!(%pool, attempts = due.len(),
                "node leases lapsed: their attempts requeued (internal retry)");
            super::metrics::requeued(due.len() as u64);
        }
        tx.commit().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_brake_needs_more_than_a_quarter_and_three() {
        let cases = [
            (3, 1, false),
            (3, 3, true),
            (8, 2, false),
            (8, 3, true),
            (12, 3, false),
            (13, 4, true),
            (100, 25, false),
            (100, 26, true),
            (2, 2, false),
        ];
        for (total, lapsed, want) in cases {
            assert_eq!(brake_holds(total, lapsed), want, "{lapsed} of {total}");
        }
    }
}
