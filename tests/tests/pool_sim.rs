//! Pool mode under faults, at CI size, without Docker: simulated agents running the real
//! member code over fake engines against the real service on a real PostgreSQL
//! (`berth_tests::sim`). Agents are killed and frozen, PostgreSQL and the service are
//! restarted while tasks run; the checker then finds no task run twice at once, none lost,
//! each ended once, every extra run explained by a counter. Sizes and seed by
//! `BERTH_SIM_*` (see `sim.rs`); the seed is printed for a replay.

use berth_tests::sim::faults::{self, Mix};
use berth_tests::sim::{Config, Sim};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Kills, freezes (under R), a PostgreSQL restart and a service restart while a few hundred
/// tasks run on a few dozen nodes: the checker passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_lose_nothing_and_run_nothing_twice_at_once() {
    let cfg = Config::from_env(Config {
        nodes: 30,
        slots: 2,
        tasks: 300,
        run_ms: (300, 2500),
        fail_pct: 10,
        seed: 0,
    });
    let mix = Mix {
        kills: 2,
        freezes: 3,
        freeze: (Duration::from_secs(2), Duration::from_secs(12)),
        pg_restarts: 1,
        service_restarts: 1,
        window: Duration::from_secs(8),
    };
    let schedule = faults::schedule(cfg.seed, cfg.nodes, &mix);
    eprintln!("sim: schedule {schedule:?}");
    let sim = Arc::new(Sim::start(cfg.clone()).await);
    let t0 = Instant::now();
    let faults = tokio::spawn(faults::run(sim.clone(), t0, schedule));
    sim.add_tasks(0, cfg.tasks).await;
    faults.await.unwrap();
    let done = sim.wait_done(Duration::from_secs(90)).await;
    let took = t0.elapsed();
    let v = sim.verdict().await;
    eprintln!(
        "sim: all completed: {done} after {took:.1?}; {}",
        v.summary()
    );
    sim.shutdown().await;
    assert!(v.ok(), "seed {}: {:#?}", cfg.seed, v.violations);
    assert!(done, "seed {}: not every task completed", cfg.seed);
}
