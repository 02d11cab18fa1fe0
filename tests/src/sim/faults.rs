//! A fault schedule drawn from a seed, and its runner. Each fault is printed with its
//! time as it happens; the same seed draws the same schedule (the interleaving with the
//! agents' own timing is the machine's, not the seed's).

use super::proxy::Cut;
use super::{Rng, Sim};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Agent `i` dies abruptly with its containers.
    Kill(usize),
    /// Agent `i` stops for this long (every task of it), its containers running on.
    Freeze(usize, Duration),
    /// Agent `i`'s way to the service is cut (its connections reset and refused, or
    /// stalled) for this long; the agent and its containers run on.
    Cut(usize, Cut, Duration),
    /// A session holds a transaction open (a snapshot, and a transaction id: the xmin
    /// horizon stays put and no dead row can be vacuumed) for this long.
    OpenTransaction(Duration),
    /// PostgreSQL stops (fast shutdown) and starts again at once.
    PgRestart,
    /// PostgreSQL stays down this long.
    PgOutage(Duration),
    /// The service stops (its drain) and starts again.
    ServiceRestart,
}

/// What a schedule holds: how many of each fault, over which window.
#[derive(Debug, Clone, Default)]
pub struct Mix {
    pub kills: usize,
    pub freezes: usize,
    /// A freeze lasts `[min, max]`; keep `max` under the requeue time R (fast: 15 s).
    pub freeze: (Duration, Duration),
    /// Cuts, each a drop or a stall (even odds) of `[min, max]`.
    pub cuts: usize,
    pub cut: (Duration, Duration),
    pub open_transactions: usize,
    pub open_transaction: Duration,
    pub pg_restarts: usize,
    pub service_restarts: usize,
    /// Faults fall in `[0, window]` after the start.
    pub window: Duration,
}

/// A schedule of `mix` over `nodes` agents, sorted by time: each agent gets at most one
/// fault (a frozen agent is never killed: the kill would wait for it to thaw).
pub fn schedule(seed: u64, nodes: usize, mix: &Mix) -> Vec<(Duration, Fault)> {
    let mut rng = Rng::new(seed ^ 0x5eed_fa17);
    let mut pick = (0..nodes).collect::<Vec<_>>();
    // A seeded shuffle: who is hit.
    for i in (1..pick.len()).rev() {
        pick.swap(i, rng.range(0, i as u64) as usize);
    }
    let mut who = pick.into_iter();
    let ms = mix.window.as_millis() as u64;
    let at = |rng: &mut Rng| Duration::from_millis(rng.range(0, ms));
    let within = |rng: &mut Rng, (lo, hi): (Duration, Duration)| {
        Duration::from_millis(rng.range(lo.as_millis() as u64, hi.as_millis() as u64))
    };
    let mut v = vec![];
    for _ in 0..mix.kills {
        if let Some(i) = who.next() {
            v.push((at(&mut rng), Fault::Kill(i)));
        }
    }
    for _ in 0..mix.freezes {
        if let Some(i) = who.next() {
            let d = within(&mut rng, mix.freeze);
            v.push((at(&mut rng), Fault::Freeze(i, d)));
        }
    }
    for _ in 0..mix.cuts {
        if let Some(i) = who.next() {
            let how = if rng.next_u64().is_multiple_of(2) {
                Cut::Drop
            } else {
                Cut::Stall
            };
            let d = within(&mut rng, mix.cut);
            v.push((at(&mut rng), Fault::Cut(i, how, d)));
        }
    }
    for _ in 0..mix.open_transactions {
        v.push((at(&mut rng), Fault::OpenTransaction(mix.open_transaction)));
    }
    for _ in 0..mix.pg_restarts {
        v.push((at(&mut rng), Fault::PgRestart));
    }
    for _ in 0..mix.service_restarts {
        v.push((at(&mut rng), Fault::ServiceRestart));
    }
    v.sort_by_key(|(t, _)| *t);
    v
}

/// Runs `faults` against `sim`, each at its time after `t0`.
pub async fn run(sim: Arc<Sim>, t0: Instant, faults: Vec<(Duration, Fault)>) {
    for (at, f) in faults {
        tokio::time::sleep_until((t0 + at).into()).await;
        eprintln!("sim: {:>7.2} s  {f:?}", t0.elapsed().as_secs_f64());
        match f {
            Fault::Kill(i) => {
                let s = sim.clone();
                tokio::task::spawn_blocking(move || s.agents[i].kill())
                    .await
                    .unwrap();
            }
            Fault::Freeze(i, d) => sim.agents[i].freeze(d),
            Fault::Cut(i, how, d) => sim.proxy.cut(i, how, d),
            Fault::OpenTransaction(d) => {
                sim.hold_transaction(d);
            }
            Fault::PgRestart => {
                let pg = sim.pg.clone();
                tokio::task::spawn_blocking(move || {
                    pg.stop();
                    pg.restart();
                })
                .await
                .unwrap();
            }
            Fault::PgOutage(d) => {
                let pg = sim.pg.clone();
                tokio::task::spawn_blocking(move || pg.stop())
                    .await
                    .unwrap();
                tokio::time::sleep(d).await;
                let pg = sim.pg.clone();
                tokio::task::spawn_blocking(move || pg.restart())
                    .await
                    .unwrap();
            }
            Fault::ServiceRestart => sim.restart_service().await,
        }
        eprintln!("sim: {:>7.2} s  done", t0.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_one_schedule_each_agent_hit_once() {
        let mix = Mix {
            kills: 3,
            freezes: 3,
            freeze: (Duration::from_secs(2), Duration::from_secs(12)),
            cuts: 3,
            cut: (Duration::from_secs(10), Duration::from_secs(14)),
            pg_restarts: 1,
            service_restarts: 1,
            open_transactions: 1,
            open_transaction: Duration::from_secs(20),
            window: Duration::from_secs(10),
        };
        let a = schedule(7, 10, &mix);
        assert_eq!(a, schedule(7, 10, &mix));
        assert_ne!(a, schedule(8, 10, &mix));
        assert_eq!(a.len(), 12);
        let hit: Vec<usize> = a
            .iter()
            .filter_map(|(_, f)| match f {
                Fault::Kill(i) | Fault::Freeze(i, _) | Fault::Cut(i, ..) => Some(*i),
                _ => None,
            })
            .collect();
        let unique: std::collections::BTreeSet<_> = hit.iter().collect();
        assert_eq!(unique.len(), 9);
        assert!(a.windows(2).all(|w| w[0].0 <= w[1].0));
    }
}
