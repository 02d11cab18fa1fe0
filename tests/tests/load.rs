//! Many short tasks through the daemon with every slot busy: none lost, none run twice,
//! no container or file descriptor leaked, memory flat after the run.
//! `BERTH_LOAD_TASKS` sets how many: 200 by default (CI), 10000 for the full run
//! (`BERTH_LOAD_TASKS=10000 cargo test -p berth-tests --test load -- --nocapture`).

use berth_tests::agent::Agent;
use berth_tests::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// One value of the agent's `/metrics` text.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn many_short_tasks_lose_nothing_and_leak_nothing() {
    let total = env_usize("BERTH_LOAD_TASKS", 200);
    let n = TestNode::new("load");
    let a = Agent::start(&n);
    a.wait_node("idle");
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "load"}))).0, 201);
    let admin = json!({"autoUser": {"scope": "pool", "elevationLevel": "admin"}});
    // Every run appends its id to one file: a task run twice shows up there twice.
    let cmd = "/bin/sh -c 'echo $AZ_BATCH_TASK_ID >> $AZ_BATCH_NODE_SHARED_DIR/ran; echo $AZ_BATCH_TASK_ID'";
    let mk = |id: String| {
        let mut t = task(&id, cmd, "");
        t["userIdentity"] = admin.clone();
        t
    };
    let add = |ids: Vec<String>| {
        let body = json!({"value": ids.into_iter().map(mk).collect::<Vec<_>>()});
        let (st, b) = a.req("POST", "/jobs/load/addtaskcollection", Some(&body));
        assert_eq!(st, 200, "{b}");
        let r: Value = serde_json::from_str(&b).unwrap();
        assert!(
            r["value"]
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v["status"] == "success"),
            "{b}"
        );
    };
    let completed = || {
        let (_, m) = a.req("GET", "/metrics", None);
        (
            metric(&m, "berth_tasks{state=\"completed\"}"),
            metric(&m, "berth_slots_used"),
        )
    };

    // Warm up, so connections, threads and caches exist before the baseline.
    let warm = 8;
    add((0..warm).map(|i| format!("w{i}")).collect());
    let t0 = Instant::now();
    while completed().0 < warm as u64 {
        assert!(t0.elapsed() < Duration::from_secs(120), "warm-up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = a.child.id();
    let (fds0, (rss0, _)) = (open_fds(pid), memory_kib(pid));
    assert!(n.containers_left().is_empty());

    let t0 = Instant::now();
    for start in (0..total).step_by(100) {
        add((start..total.min(start + 100))
            .map(|i| format!("t{i}"))
            .collect());
    }
    let (rss_queued, _) = memory_kib(pid);
    let mut busiest = 0;
    let limit = Duration::from_secs(120 + 2 * total as u64);
    loop {
        let (done, used) = completed();
        busiest = busiest.max(used);
        if done >= (warm + total) as u64 {
            break;
        }
        assert!(t0.elapsed() < limit, "{done} of {} done", warm + total);
        std::thread::sleep(Duration::from_millis(250));
    }
    let took = t0.elapsed();
    // Let the last removals and connections settle before counting.
    std::thread::sleep(Duration::from_secs(1));
    let (fds1, (rss1, hwm1)) = (open_fds(pid), memory_kib(pid));

    let tasks = a.list("/jobs/load/tasks");
    let ours: Vec<&Value> = tasks
        .iter()
        .filter(|t| t["id"].as_str().unwrap().starts_with('t'))
        .collect();
    assert_eq!(ours.len(), total, "none lost");
    for t in &ours {
        let e = &t["executionInfo"];
        assert_eq!(t["state"], "completed", "{t}");
        assert_eq!(e["result"], "success", "{t}");
        assert_eq!(
            (e["exitCode"].as_i64(), e["retryCount"].as_i64()),
            (Some(0), Some(0)),
            "{t}"
        );
    }
    let ran = std::fs::read_to_string(n.root().join("shared/ran")).unwrap();
    let runs: Vec<&str> = ran.lines().filter(|l| l.starts_with('t')).collect();
    let distinct: HashSet<&str> = runs.iter().copied().collect();
    assert_eq!(distinct.len(), total, "every task ran");
    assert_eq!(runs.len(), total, "none ran twice");
    let spot = format!("t{}", total / 2);
    assert_eq!(n.read("load", &spot, "stdout.txt"), format!("{spot}\n"));

    let containers = n.containers().len();
    eprintln!(
        "{total} tasks in {:.1} s ({:.1} tasks/s), slots busy at most {busiest} of 4; \
         lost 0, run twice 0; containers left {containers}; fds {fds0} -> {fds1}; \
         agent RSS {rss0} KiB before, {rss_queued} KiB with the queue full, {rss1} KiB after (peak {hwm1} KiB)",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
    );
    assert_eq!(containers, 0, "no container left");
    assert_eq!(busiest, 4, "every slot was busy");
    assert!(fds1 <= fds0 + 2, "file descriptors {fds0} -> {fds1}");
    assert!(
        rss1 < rss0 + 32 * 1024,
        "memory after the run: {rss0} -> {rss1} KiB"
    );
    assert_eq!(a.term(), Some(0));
}
