//! Pool mode's recovery and history goals (spec `pool-mode.md` §6), on simulated nodes
//! (`berth_tests::sim`: the real member code on fake engines, the real service in-process,
//! a real PostgreSQL). Prints each figure beside its target; asserts no timing.
//!
//! - requeue after node loss (goal 4): one long task on a pool of spare nodes; the node
//!   running it goes silent (its runtime dropped with its containers, nothing more sent,
//!   as with `SIGKILL` of a VM) or leaves gracefully (as on `SIGTERM`); the time from then
//!   to the next attempt's container start on another node. Profiles `fast` (R = 15 s,
//!   target <= 20 s), `graceful` (a leave on the fast profile, target <= 2 s) and
//!   `default` (R = 120 s, target <= R + 5 s = 125 s);
//! - claim time with many finished tasks kept and a long open transaction (goal 7):
//!   `BERTH_CLAIM_FINISHED` completed tasks (with their attempts) written into the job,
//!   then a session holds a transaction open (the xmin horizon pinned) while tasks flow
//!   and single tasks are added one at a time; per window, the claim transactions' p99
//!   (the service's `berth_service_claim_seconds` histogram: the bucket bound it falls
//!   in) and dispatch latency (add answered -> container start, which holds one claim).
//!
//! `cargo bench -p berth-tests --bench pool_recovery`; `BERTH_RECOVERY` (which parts,
//! comma-separated: `fast,graceful,default,claim`; default all but `default`, whose one
//! sample takes over two minutes), `BERTH_RECOVERY_SAMPLES` (3, losses per profile),
//! `BERTH_CLAIM_FINISHED` (100000; reference 1000000), `BERTH_CLAIM_HOLD_S` (60;
//! reference 600), `BERTH_CLAIM_CHURN` (tasks added per second meanwhile, 20),
//! `BERTH_CLAIM_WINDOW_S` (10).

use berth_tests::env_usize;
use berth_tests::sim::check::Violation;
use berth_tests::sim::{Config, Sim};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let parts = std::env::var("BERTH_RECOVERY").unwrap_or_else(|_| "fast,graceful,claim".into());
    for part in parts.split(',').map(str::trim) {
        match part {
            "fast" => requeue("fast", false, 20.0).await,
            "graceful" => requeue("fast", true, 2.0).await,
            "default" => requeue("default", false, 125.0).await,
            "claim" => claim_with_history().await,
            "" => {}
            other => panic!("BERTH_RECOVERY: unknown part {other:?}"),
        }
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// One task that runs for an hour on a pool of `samples + 1` one-slot nodes; `samples`
/// times, the node running it is lost (or leaves) and the next attempt's start elsewhere
/// is timed.
async fn requeue(profile: &'static str, graceful: bool, target_s: f64) {
    let samples = env_usize("BERTH_RECOVERY_SAMPLES", 3);
    let sim = Arc::new(
        Sim::start(Config {
            run_ms: (3_600_000, 3_600_000),
            profile,
            ..Config::sized(samples + 1, 1, 1)
        })
        .await,
    );
    sim.add_tasks(0, 1).await;
    let how = if graceful { "leaves" } else { "goes silent" };
    let mut secs = vec![];
    let mut seen = 0;
    for _ in 0..samples {
        // The run now going: the one after those seen.
        let (run, i) = sim.nth_run(seen, Duration::from_secs(300)).await;
        seen += 1;
        // Settled first: a task well under way. A leave in the instant a container starts
        // is `pool_sim`'s `a_leave_as_a_container_starts_stops_it_first`.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = sim.clone();
        let lost = Instant::now();
        let lost_s = lost.duration_since(sim.epoch).as_secs_f64();
        // Not awaited first: the next attempt is timed from the loss, whatever the agent
        // still does on its way out.
        let out = tokio::task::spawn_blocking(move || {
            if graceful {
                s.agents[i].leave()
            } else {
                s.agents[i].kill()
            }
        });
        let (next, _) = sim.nth_run(seen, Duration::from_secs(300)).await;
        assert_ne!(next.node, run.node);
        if tokio::time::timeout(Duration::from_secs(30), out)
            .await
            .is_err()
        {
            println!("  {profile}: node {} did not stop within 30 s", run.node);
        }
        secs.push(next.start - lost_s);
        println!(
            "  {profile}: node {} {how} -> attempt {} starts on {} after {:.2} s",
            run.node,
            next.attempt,
            next.node,
            next.start - lost_s
        );
    }
    let kind = if graceful {
        "graceful leave (fast profile)".to_string()
    } else {
        format!("silent node loss, {profile} profile")
    };
    println!(
        "requeue after {kind}, {samples} losses (node {how} -> next attempt's container start elsewhere): median {:.2} s, max {:.2} s (target <= {target_s:.0} s)",
        pct(&mut secs.clone(), 0.5),
        pct(&mut secs, 1.0),
    );
    // The one task is still running, so "lost" and one "still running" are expected;
    // overlaps are not.
    let v = sim.verdict().await;
    println!("  checker: {}", v.summary());
    for x in &v.violations {
        if let Violation::Overlap { a, b, .. } = x {
            println!(
                "  overlap: attempt {} on {} ({:.2} s - {:?}) and attempt {} on {} ({:.2} s - {:?})",
                a.attempt, a.node, a.start, a.end, b.attempt, b.node, b.start, b.end
            );
        }
    }
    sim.shutdown().await;
}

/// The claim histogram's cumulative buckets `(le seconds, count)` now, `+Inf` last.
async fn claim_buckets(sim: &Sim) -> Vec<(f64, f64)> {
    let (st, body) = sim.client("GET", "/metrics", None).await;
    assert_eq!(st, 200, "GET /metrics: {body}");
    let text = body.as_str().unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("berth_service_claim_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, rest) = l.split_once("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, rest.trim().parse().ok()?))
        })
        .collect()
}

/// The bucket bound the `p` quantile of the claims between two scrapes falls in, and how
/// many claims there were.
fn bucket_quantile(a: &[(f64, f64)], b: &[(f64, f64)], p: f64) -> (f64, f64) {
    let d: Vec<(f64, f64)> = b.iter().zip(a).map(|(b, a)| (b.0, b.1 - a.1)).collect();
    let n = d.last().map_or(0.0, |x| x.1);
    let le = d
        .iter()
        .find(|(_, c)| *c >= p * n)
        .map_or(f64::NAN, |x| x.0);
    (le, n)
}

/// `n` completed tasks (with one completed attempt each) written into job `j` beside the
/// real completed task `t0000000`, as copies of it, in chunks of 100,000 rows.
async fn keep_finished(sim: &Sim, n: usize) {
    for first in (0..n).step_by(100_000) {
        let last = (first + 100_000).min(n) - 1;
        sim.sql(&format!(
            "WITH t AS (
               INSERT INTO tasks (job_id, id, id_key, state, required_slots, view)
               SELECT s.job_id, 'f' || lpad(g::text, 8, '0'), 'f' || lpad(g::text, 8, '0'),
                      s.state, s.required_slots,
                      jsonb_set(s.view, '{{id}}', to_jsonb('f' || lpad(g::text, 8, '0')))
               FROM tasks s, generate_series({first}, {last}) g
               WHERE s.job_id = 'j' AND s.id = 't0000000'
               RETURNING seq)
             INSERT INTO attempts (task_seq, pool_id, node_id, epoch, state, required_slots,
                                   claimed_at, ended_at)
             SELECT t.seq, a.pool_id, a.node_id, a.epoch, a.state, a.required_slots,
                    a.claimed_at, a.ended_at
             FROM t, attempts a JOIN tasks s ON s.seq = a.task_seq
             WHERE s.job_id = 'j' AND s.id = 't0000000'"
        ))
        .await;
    }
    for t in ["tasks", "attempts"] {
        sim.sql(&format!("VACUUM ANALYZE {t}")).await;
    }
}

async fn claim_with_history() {
    let finished = env_usize("BERTH_CLAIM_FINISHED", 100_000);
    let hold = Duration::from_secs(env_usize("BERTH_CLAIM_HOLD_S", 60) as u64);
    let churn = env_usize("BERTH_CLAIM_CHURN", 20);
    let window = Duration::from_secs(env_usize("BERTH_CLAIM_WINDOW_S", 10) as u64);
    let sim = Arc::new(Sim::start(Config::sized(10, 2, 0)).await);
    sim.add_tasks(0, 1).await;
    assert!(sim.wait_done(Duration::from_secs(60)).await);
    let t0 = Instant::now();
    keep_finished(&sim, finished).await;
    println!(
        "claim with history: {finished} finished tasks written in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // Background flow: `churn` tasks a second (each adds, claims, completes: dead rows,
    // which the pinned horizon will keep), from the baseline to the end of the hold.
    let stop = CancellationToken::new();
    let flow = {
        let (sim, stop) = (sim.clone(), stop.clone());
        tokio::spawn(async move {
            let mut next = 1;
            while churn > 0 && !stop.is_cancelled() {
                sim.add_tasks(next, churn).await;
                next += churn;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let mut base = measure(&sim, "no open transaction", window, window).await;

    let held = sim.hold_transaction(hold);
    // The horizon is pinned once the session has its snapshot.
    let t0 = Instant::now();
    let xmin = loop {
        let x = sim
            .sql("SELECT backend_xmin FROM pg_stat_activity WHERE query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()")
            .await;
        if !x.trim().is_empty() {
            break x.trim().to_string();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no open transaction"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let dead0 = dead_tuples(&sim).await;
    let mut all = measure(&sim, "transaction open", hold - t0.elapsed(), window).await;
    stop.cancel();
    flow.await.unwrap();
    let ended = held.await.unwrap();
    println!(
        "claim with {finished} finished tasks kept, {churn} tasks/s flowing: before the open transaction dispatch p50 {:.1} ms, p99 {:.1} ms ({} single tasks); during a {:.0} s open transaction (xmin {xmin}, held to the end: {ended}; dead rows {dead0} -> {}) p50 {:.1} ms, p99 {:.1} ms ({} single tasks); claim p99 target <= 50 ms",
        pct(&mut base, 0.5),
        pct(&mut base, 0.99),
        base.len(),
        hold.as_secs_f64(),
        dead_tuples(&sim).await,
        pct(&mut all, 0.5),
        pct(&mut all, 0.99),
        all.len(),
    );
    sim.shutdown().await;
}

/// For `d`, single tasks added one at a time (50 ms apart); each `window`, a line with the
/// claim transactions' p99 bucket, the dispatch latencies and the dead rows. Every
/// dispatch latency, in ms.
async fn measure(sim: &Sim, label: &str, d: Duration, window: Duration) -> Vec<f64> {
    let start = Instant::now();
    let mut all = vec![];
    while start.elapsed() < d {
        let b0 = claim_buckets(sim).await;
        let (mut ms, mut late) = (vec![], 0);
        let w0 = Instant::now();
        while w0.elapsed() < window && start.elapsed() < d {
            let id = format!("c{:07}", DISPATCHED.fetch_add(1, Relaxed));
            // A task not started in time counts at the limit (and the next one is added).
            let d = sim.dispatch_one(&id, LATE).await;
            late += usize::from(d.is_none());
            ms.push(d.unwrap_or(LATE).as_secs_f64() * 1e3);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (le, n) = bucket_quantile(&b0, &claim_buckets(sim).await, 0.99);
        println!(
            "  {label}, {:>4.0} s: claim transactions {n:.0}, p99 <= {:.0} ms; dispatch of {} single tasks p50 {:.1} ms, p99 {:.1} ms ({late} not started within {LATE:?}, counted at it); dead rows {}",
            start.elapsed().as_secs_f64(),
            le * 1e3,
            ms.len(),
            pct(&mut ms, 0.5),
            pct(&mut ms, 0.99),
            dead_tuples(sim).await,
        );
        all.extend(ms);
    }
    all
}

/// How long a single task's dispatch is waited for.
const LATE: Duration = Duration::from_secs(60);

/// Single tasks added so far (their ids).
static DISPATCHED: AtomicUsize = AtomicUsize::new(0);

/// Dead rows of the service's tables now (`pg_stat_user_tables`).
async fn dead_tuples(sim: &Sim) -> String {
    sim.sql("SELECT pg_stat_force_next_flush(); SELECT sum(n_dead_tup) FROM pg_stat_user_tables")
        .await
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}
