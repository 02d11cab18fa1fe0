//! Pool mode at scale (spec `pool-mode.md` §6), on simulated nodes (`berth_tests::sim`:
//! the real member code on fake engines, the real service in-process, a real PostgreSQL).
//! Prints each figure beside its target; asserts no timing.
//!
//! - dispatch latency: one task at a time added to an idle pool, from the add's answer
//!   to its container's start (goal 1);
//! - DB writes per idle node: transactions that wrote (transaction ids assigned: a row
//!   lock counts as a write), commits and rows written over an idle interval, on the
//!   default lease profile (`BERTH_SCALE_IDLE_PROFILE`) (goal 8);
//! - adding alone: `addtaskcollection` (100 per call) to a pool with no nodes (goal 3);
//! - add -> claim -> complete throughput at each pool size, containers that exit at once
//!   (goal 2), with the node protocol's requests per task (goal 8).
//!
//! `cargo bench -p berth-tests --bench pool_scale`; sizes: `BERTH_SCALE_IDLE_NODES` (100),
//! `BERTH_SCALE_SAMPLES` (100), `BERTH_SCALE_IDLE_SECS` (20), `BERTH_SCALE_NODES`
//! (comma-separated pool sizes, `10,200`), `BERTH_SCALE_TASKS` (2000), `BERTH_SCALE_SLOTS` (4),
//! `BERTH_SCALE_ADD_TASKS` (5000), `BERTH_SCALE_ADD_STREAMS` (calls at a time, 1); `BERTH_SCALE_STATEMENTS=N` prints the statements that
//! took the most database time (see `statements`).

use berth_tests::env_usize;
use berth_tests::sim::{Config, Sim, IMAGE};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    adding().await;
    idle_pool().await;
    let sizes = std::env::var("BERTH_SCALE_NODES").unwrap_or_else(|_| "10,200".into());
    for n in sizes.split(',').filter_map(|s| s.trim().parse().ok()) {
        throughput(n).await;
    }
}

fn config(nodes: usize, slots: u32) -> Config {
    Config {
        nodes,
        slots,
        tasks: 0,
        run_ms: (0, 0),
        fail_pct: 0,
        seed: 1,
        profile: "fast",
    }
}

/// What the service's database did so far.
#[derive(Clone, Copy)]
struct DbStats {
    /// Transactions committed, read-only ones included.
    commits: f64,
    /// Rows inserted, updated and deleted in berth's tables.
    rows: f64,
    /// Transaction ids assigned: the transactions that wrote (a row lock included).
    xids: f64,
}

impl std::ops::Sub for DbStats {
    type Output = DbStats;
    fn sub(self, o: DbStats) -> DbStats {
        DbStats {
            commits: self.commits - o.commits,
            rows: self.rows - o.rows,
            xids: self.xids - o.xids,
        }
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// The service's database's counters now.
async fn db_stats(sim: &Sim) -> DbStats {
    // The snapshot's xmax is the next id to be assigned; reading it assigns none.
    let s = sim
        .sql(
            "SELECT pg_stat_force_next_flush();
             SELECT xact_commit,
                    (SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables),
                    pg_snapshot_xmax(pg_current_snapshot())::text::bigint
             FROM pg_stat_database WHERE datname = current_database()",
        )
        .await;
    let line = s.lines().rfind(|l| l.contains('|')).unwrap();
    let v: Vec<f64> = line.split('|').map(|f| f.trim().parse().unwrap()).collect();
    DbStats {
        commits: v[0],
        rows: v[1],
        xids: v[2],
    }
}

fn diff(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    b.iter()
        .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0)))
        .collect()
}

async fn adding() {
    let tasks = env_usize("BERTH_SCALE_ADD_TASKS", 5000);
    let streams = env_usize("BERTH_SCALE_ADD_STREAMS", 1);
    let sim = Sim::start(config(0, 1)).await;
    let d0 = db_stats(&sim).await;
    let rss0 = rss_kib("VmRSS");
    let t0 = Instant::now();
    sim.add_tasks_parallel(0, tasks, streams).await;
    let took = t0.elapsed();
    let d = db_stats(&sim).await - d0;
    println!(
        "adding {tasks} tasks by addtaskcollection (100 per call, {streams} call(s) at a time), no nodes: {:.0} tasks/s ({:.1} s; target 10^6 in <= 120 s, 8,333/s); {:.2} commits, {:.1} rows written per task; bench process (service in it) RSS {} MiB before, peak {} MiB",
        tasks as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        d.commits / tasks as f64,
        d.rows / tasks as f64,
        rss0 / 1024,
        rss_kib("VmHWM") / 1024,
    );
    sim.shutdown().await;
}

/// This process's `field` of `/proc/self/status` (`VmRSS`, `VmHWM`: the peak), KiB.
fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn idle_pool() {
    let nodes = env_usize("BERTH_SCALE_IDLE_NODES", 100);
    let samples = env_usize("BERTH_SCALE_SAMPLES", 100);
    let idle = Duration::from_secs(env_usize("BERTH_SCALE_IDLE_SECS", 20) as u64);
    let profile: &'static str = match std::env::var("BERTH_SCALE_IDLE_PROFILE").as_deref() {
        Ok("fast") => "fast",
        _ => "default",
    };
    let sim = Sim::start(Config {
        profile,
        ..config(nodes, 2)
    })
    .await;
    // Every node long-polling before the first sample.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Database writes and requests of an idle pool.
    let d0 = db_stats(&sim).await;
    let r0 = sim.requests.snapshot();
    tokio::time::sleep(idle).await;
    let d = db_stats(&sim).await - d0;
    let r1 = sim.requests.snapshot();
    let per = |d: f64| d / idle.as_secs_f64() / nodes as f64;
    println!(
        "idle pool, {nodes} nodes, {profile} profile, {:.0} s, per node: {:.3} writing transactions/s (target <= 0.2 writes/s per idle node), {:.3} rows written/s, {:.3} commits/s (reads included); requests {:?}",
        idle.as_secs_f64(),
        per(d.xids),
        per(d.rows),
        per(d.commits),
        diff(&r0, &r1)
    );

    let mut ms = vec![];
    for i in 0..samples {
        let id = format!("d{i:05}");
        let body = json!({"id": id, "commandLine": "/bin/true",
            "containerSettings": {"imageName": IMAGE}});
        let (st, b) = sim.client("POST", "/jobs/j/tasks", Some(&body)).await;
        assert_eq!(st, 201, "{b}");
        let added = Instant::now();
        let needle = format!(".j.{id}.");
        let t0 = Instant::now();
        let started = loop {
            let hit = sim
                .starts
                .lock()
                .unwrap()
                .iter()
                .rfind(|(n, _)| n.contains(&needle))
                .map(|(_, t)| *t);
            if let Some(t) = hit {
                break t;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "{id} never started");
            tokio::time::sleep(Duration::from_micros(500)).await;
        };
        ms.push(started.saturating_duration_since(added).as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "dispatch latency, idle {nodes}-node pool, {samples} tasks one at a time (add answered -> container start): p50 {:.1} ms (target <= 20), p99 {:.1} ms (target <= 100), max {:.1} ms",
        pct(&mut ms, 0.5),
        pct(&mut ms, 0.99),
        pct(&mut ms, 1.0)
    );
    sim.shutdown().await;
}

async fn throughput(nodes: usize) {
    let tasks = env_usize("BERTH_SCALE_TASKS", 2000);
    let slots = env_usize("BERTH_SCALE_SLOTS", 4) as u32;
    let sim = Sim::start(config(nodes, slots)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r0 = sim.requests.snapshot();
    let d0 = db_stats(&sim).await;
    let t0 = Instant::now();
    sim.add_tasks(0, tasks).await;
    let added = t0.elapsed();
    let done = sim.wait_done(Duration::from_secs(600)).await;
    let took = t0.elapsed();
    let d = db_stats(&sim).await - d0;
    let r = diff(&r0, &sim.requests.snapshot());
    let all: u64 = r.values().sum();
    let beats = r.get("heartbeat").copied().unwrap_or(0);
    println!(
        "{nodes} nodes x {slots} slots, {tasks} tasks add -> claim -> complete: {:.0} tasks/s (target >= 2,000 at 200 nodes){}; adding alone {:.0} tasks/s ({:.1} s); {:.2} node requests per task ({:.2} without heartbeats; target <= 3): {r:?}; {:.1} commits, {:.1} writing transactions, {:.1} rows written per task",
        tasks as f64 / took.as_secs_f64(),
        if done { "" } else { " NOT ALL COMPLETED" },
        tasks as f64 / added.as_secs_f64(),
        added.as_secs_f64(),
        all as f64 / tasks as f64,
        (all - beats) as f64 / tasks as f64,
        d.commits / tasks as f64,
        d.xids / tasks as f64,
        d.rows / tasks as f64,
    );
    let v = sim.verdict().await;
    println!("  checker: {}", v.summary());
    statements(&sim).await;
    sim.shutdown().await;
}

/// With `BERTH_SCALE_STATEMENTS=N` (and PostgreSQL started with
/// `BERTH_PG_OPTS="-c shared_preload_libraries=pg_stat_statements"`): the N statements
/// that took the most database time since the pool started, with their calls.
async fn statements(sim: &Sim) {
    let n = env_usize("BERTH_SCALE_STATEMENTS", 0);
    if n == 0 {
        return;
    }
    let top = sim
        .try_sql(&format!(
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
             SELECT round(total_exec_time)::bigint || ' ms, ' || calls || ' calls: ' ||
                    regexp_replace(left(query, 160), '\\s+', ' ', 'g')
             FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT {n}"
        ))
        .await;
    match top {
        Some(t) => println!("  statements by database time:\n{t}"),
        None => println!("  statements: pg_stat_statements is not loaded (BERTH_PG_OPTS)"),
    }
}
