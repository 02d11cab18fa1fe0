//! Pool mode end to end: a real PostgreSQL, real `berth service` replicas and three real
//! `berth agent --service` processes (distinct node ids and roots) on the real engine.
//! Pools use berth's fast lease profile (heartbeat 1 s, unknown 5 s, self-fence 10 s,
//! requeue 15 s) so that node loss is seen within a test's time.

use berth_tests::pool::{PoolAgent, Service, CLIENT_TOKEN, ENROLMENT_SECRET};
use berth_tests::postgres::Postgres;
use berth_tests::task;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A service and `n` agents joined to pool `pool` (`slots` per node, `extra` pool fields),
/// every node idle.
fn pool_of(n: usize, pool: &str, slots: u32, extra: Value) -> (Postgres, Service, Vec<PoolAgent>) {
    let pg = Postgres::start();
    let svc = Service::start(&pg.url);
    svc.wait_ready();
    svc.add_pool(pool, slots, extra);
    let agents: Vec<PoolAgent> = (0..n)
        .map(|i| PoolAgent::start(&format!("{pool}n{i}"), pool, std::slice::from_ref(&svc.url)))
        .collect();
    svc.wait_nodes(pool, "idle", n);
    (pg, svc, agents)
}

fn add_job(svc: &Service, job: &str, pool: &str, extra: Value) {
    let mut j = json!({"id": job, "poolInfo": {"poolId": pool}});
    if let (Some(o), Some(e)) = (j.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    svc.post_ok("/jobs", &j);
}

fn add_tasks(svc: &Service, job: &str, tasks: Vec<Value>) {
    for chunk in tasks.chunks(100) {
        svc.post_ok(
            &format!("/jobs/{job}/addtaskcollection"),
            &json!({ "value": chunk }),
        );
    }
}

fn sh(id: &str, script: &str) -> Value {
    task(id, &format!("/bin/sh -c '{script}'"), "")
}

fn node_of(t: &Value) -> String {
    t["nodeInfo"]["nodeId"].as_str().unwrap_or("").to_string()
}

fn time(t: &Value, k: &str) -> chrono::DateTime<chrono::Utc> {
    t["executionInfo"][k]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{k} missing: {t}"))
}

#[test]
fn sixty_tasks_spread_over_three_nodes_with_dependencies_across_them() {
    let (_pg, svc, agents) = pool_of(3, "p60", 2, json!({}));
    add_job(&svc, "j60", "p60", json!({"usesTaskDependencies": true}));
    let mut tasks: Vec<Value> = (0..60)
        .map(|i| sh(&format!("t{i}"), "echo $AZ_BATCH_NODE_ID"))
        .collect();
    // A chain across nodes: d2 waits for d1, d3 for d2; each may land anywhere.
    tasks.push(sh("d1", "sleep 1"));
    let mut d2 = sh("d2", "test -c /dev/null");
    d2["dependsOn"] = json!({"taskIds": ["d1"]});
    let mut d3 = sh("d3", "true");
    d3["dependsOn"] = json!({"taskIds": ["d2", "t0"]});
    tasks.push(d2);
    tasks.push(d3);
    add_tasks(&svc, "j60", tasks);
    let done = svc.wait_completed("j60", 63, 240);
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for t in &done {
        assert_eq!(t["executionInfo"]["result"], "success", "{t}");
        *per_node.entry(node_of(t)).or_default() += 1;
    }
    let ids: BTreeSet<String> = agents.iter().map(|a| a.node.node_id.clone()).collect();
    assert_eq!(
        per_node.keys().cloned().collect::<BTreeSet<_>>(),
        ids,
        "every node ran some: {per_node:?}"
    );
    // The task's own output says where it ran, as nodeInfo does.
    let t5 = svc.task("j60", "t5");
    let (st, out) = svc.get("/jobs/j60/tasks/t5/files/stdout.txt");
    assert_eq!(st, 200, "{out}");
    assert_eq!(out.trim(), node_of(&t5));
    let by = |id: &str| done.iter().find(|t| t["id"] == id).unwrap().clone();
    assert!(time(&by("d2"), "startTime") >= time(&by("d1"), "endTime"));
    assert!(time(&by("d3"), "startTime") >= time(&by("d2"), "endTime"));
    let counts = svc.json("/jobs/j60/taskcounts");
    assert_eq!(counts["taskCounts"]["succeeded"], 63, "{counts}");
}

#[test]
fn priority_then_creation_order_and_max_parallel_tasks() {
    let (_pg, svc, _agents) = pool_of(1, "pprio", 1, json!({}));
    add_job(&svc, "block", "pprio", json!({}));
    add_tasks(&svc, "block", vec![sh("b", "sleep 2")]);
    // While the one slot is busy: a low job first, then a high one.
    add_job(&svc, "low", "pprio", json!({"priority": 0}));
    add_tasks(
        &svc,
        "low",
        (0..2).map(|i| sh(&format!("l{i}"), "true")).collect(),
    );
    add_job(&svc, "high", "pprio", json!({"priority": 100}));
    add_tasks(
        &svc,
        "high",
        (0..2).map(|i| sh(&format!("h{i}"), "true")).collect(),
    );
    let low = svc.wait_completed("low", 2, 120);
    let high = svc.wait_completed("high", 2, 120);
    let last_high = high.iter().map(|t| time(t, "startTime")).max().unwrap();
    let first_low = low.iter().map(|t| time(t, "startTime")).min().unwrap();
    assert!(last_high <= first_low, "high before low: {high:?} {low:?}");
}

#[test]
fn max_parallel_tasks_holds_across_nodes() {
    let (_pg, svc, _agents) = pool_of(3, "ppar", 2, json!({}));
    add_job(&svc, "par", "ppar", json!({"maxParallelTasks": 1}));
    add_tasks(
        &svc,
        "par",
        (0..4).map(|i| sh(&format!("m{i}"), "sleep 1")).collect(),
    );
    let mut spans: Vec<_> = svc
        .wait_completed("par", 4, 120)
        .iter()
        .map(|t| (time(t, "startTime"), time(t, "endTime")))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "two tasks ran at once: {spans:?}");
    }
}

#[test]
fn spread_puts_tasks_on_distinct_nodes_and_pack_fills_one() {
    for (fill, want_nodes) in [("spread", 3), ("pack", 1)] {
        let pool = format!("p{fill}");
        let (_pg, svc, _agents) = pool_of(
            3,
            &pool,
            4,
            json!({"taskSchedulingPolicy": {"nodeFillType": fill}}),
        );
        add_job(&svc, "fill", &pool, json!({}));
        add_tasks(
            &svc,
            "fill",
            (0..3).map(|i| sh(&format!("f{i}"), "sleep 3")).collect(),
        );
        let nodes: BTreeSet<String> = svc
            .wait_completed("fill", 3, 120)
            .iter()
            .map(node_of)
            .collect();
        assert_eq!(nodes.len(), want_nodes, "{fill}: {nodes:?}");
    }
}

/// The task's run on `node` as the engine saw it: containers labelled with the task.
fn containers_of(node: &PoolAgent) -> Vec<String> {
    node.node.containers()
}

#[test]
fn a_killed_node_s_tasks_complete_elsewhere_as_internal_retries() {
    let (_pg, svc, mut agents) = pool_of(3, "ploss", 1, json!({}));
    add_job(&svc, "loss", "ploss", json!({}));
    add_tasks(
        &svc,
        "loss",
        (0..3).map(|i| sh(&format!("k{i}"), "sleep 4")).collect(),
    );
    // Wait until every node runs one, then lose the first silently.
    let t0 = Instant::now();
    let victim_task = loop {
        let tasks = svc.json("/jobs/loss/tasks")["value"]
            .as_array()
            .cloned()
            .unwrap();
        let running: Vec<&Value> = tasks.iter().filter(|t| t["state"] == "running").collect();
        if running.len() == 3 {
            let t = running
                .iter()
                .find(|t| node_of(t) == agents[0].node.node_id)
                .unwrap();
            break t["id"].as_str().unwrap().to_string();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "never all running: {tasks:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let lost = agents.remove(0);
    lost.signal(nix::sys::signal::Signal::SIGKILL);
    for c in containers_of(&lost) {
        berth_tests::docker(&["rm", "-f", &c]);
    }
    let done = svc.wait_completed("loss", 3, 120);
    let t = done
        .iter()
        .find(|t| t["id"] == victim_task.as_str())
        .unwrap();
    assert_eq!(t["executionInfo"]["result"], "success", "{t}");
    assert_ne!(node_of(t), lost.node.node_id);
    assert_eq!(t["executionInfo"]["systemRetryCount"], 1, "{t}");
    assert_eq!(t["executionInfo"]["retryCount"], 0, "{t}");
    assert_eq!(t["executionInfo"]["requeueCount"], 0, "{t}");
    let node = svc.json(&format!("/pools/ploss/nodes/{}", lost.node.node_id));
    assert_eq!(node["state"], "unknown", "{node}");
}

#[test]
fn a_frozen_node_fences_itself_and_its_late_report_is_refused() {
    let (_pg, svc, mut agents) = pool_of(2, "pfrz", 1, json!({}));
    add_job(&svc, "frz", "pfrz", json!({}));
    // Writes a mark each second: a run that outlives its fence would keep writing.
    add_tasks(&svc, "frz", vec![sh("z", "sleep 25; echo finished")]);
    let t0 = Instant::now();
    let first = loop {
        let t = svc.task("frz", "z");
        if t["state"] == "running" {
            break node_of(&t);
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "never running: {t}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let i = agents.iter().position(|a| a.node.node_id == first).unwrap();
    let frozen = agents.remove(i);
    frozen.signal(nix::sys::signal::Signal::SIGSTOP);
    // Past the requeue time R (15 s): the service gives the task to the other node.
    let t0 = Instant::now();
    loop {
        let t = svc.task("frz", "z");
        if t["state"] == "running" && node_of(&t) != first {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "never requeued: {t}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    frozen.signal(nix::sys::signal::Signal::SIGCONT);
    // Woken past its self-fence time F, the frozen agent kills its own container.
    let t0 = Instant::now();
    while !containers_of(&frozen).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the frozen node kept its container"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let done = svc.wait_completed("frz", 1, 90);
    assert_ne!(node_of(&done[0]), first, "{:?}", done[0]);
    assert_eq!(
        done[0]["executionInfo"]["systemRetryCount"], 1,
        "{:?}",
        done[0]
    );
}

#[test]
fn disable_scheduling_with_each_option_and_remove_a_node() {
    let (_pg, svc, agents) = pool_of(2, "pdis", 1, json!({}));
    let a = agents[0].node.node_id.clone();
    let b = agents[1].node.node_id.clone();
    for (option, want) in [
        ("requeue", "requeue"),
        ("terminate", "terminate"),
        ("taskcompletion", "wait"),
    ] {
        let job = format!("dis{option}");
        add_job(&svc, &job, "pdis", json!({}));
        add_tasks(&svc, &job, vec![sh("x", "sleep 3")]);
        let t0 = Instant::now();
        let on = loop {
            let t = svc.task(&job, "x");
            if t["state"] == "running" {
                break node_of(&t);
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "never running: {t}");
            std::thread::sleep(Duration::from_millis(100));
        };
        svc.post_ok(
            &format!("/pools/pdis/nodes/{on}/disablescheduling"),
            &json!({"nodeDisableSchedulingOption": option}),
        );
        let done = svc.wait_completed(&job, 1, 60);
        let t = &done[0];
        match want {
            "requeue" => {
                assert_eq!(t["executionInfo"]["requeueCount"], 1, "{t}");
                assert_ne!(node_of(t), on, "{t}");
                assert_eq!(t["executionInfo"]["result"], "success", "{t}");
            }
            "terminate" => {
                assert_eq!(t["executionInfo"]["result"], "failure", "{t}");
                assert_eq!(node_of(t), on, "{t}");
            }
            _ => {
                assert_eq!(t["executionInfo"]["result"], "success", "{t}");
                assert_eq!(node_of(t), on, "{t}");
                assert_eq!(t["executionInfo"]["requeueCount"], 0, "{t}");
            }
        }
        let node = svc.json(&format!("/pools/pdis/nodes/{on}"));
        assert_eq!(node["schedulingState"], "disabled", "{node}");
        svc.post_ok(
            &format!("/pools/pdis/nodes/{on}/enablescheduling"),
            &json!({}),
        );
    }
    svc.post_ok(
        "/pools/pdis/removenodes",
        &json!({"nodeList": [a], "nodeDeallocationOption": "requeue"}),
    );
    let t0 = Instant::now();
    loop {
        let nodes = svc.json("/pools/pdis/nodes")["value"]
            .as_array()
            .cloned()
            .unwrap();
        if nodes.iter().all(|n| n["id"] != a.as_str()) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{a} never left: {nodes:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    add_job(&svc, "after", "pdis", json!({}));
    add_tasks(&svc, "after", vec![sh("y", "true")]);
    assert_eq!(node_of(&svc.wait_completed("after", 1, 60)[0]), b);
}

#[test]
fn a_running_task_s_output_is_read_through_the_service() {
    let (_pg, svc, _agents) = pool_of(2, "pout", 1, json!({}));
    add_job(&svc, "out", "pout", json!({}));
    add_tasks(
        &svc,
        "out",
        vec![sh("o", "echo hello-from-the-node; sleep 5")],
    );
    let t0 = Instant::now();
    loop {
        let (st, body) = svc.get("/jobs/out/tasks/o/files/stdout.txt");
        if st == 200 && body.contains("hello-from-the-node") {
            assert_eq!(svc.task("out", "o")["state"], "running");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no output: {st} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    svc.wait_completed("out", 1, 60);
}

#[test]
fn agents_and_clients_carry_on_through_the_other_replica() {
    let pg = Postgres::start();
    let one = Service::start(&pg.url);
    let two = Service::start(&pg.url);
    one.wait_ready();
    two.wait_ready();
    one.add_pool("prep", 1, json!({}));
    let urls = [one.url.clone(), two.url.clone()];
    let _agents: Vec<PoolAgent> = (0..2)
        .map(|i| PoolAgent::start(&format!("rep{i}"), "prep", &urls))
        .collect();
    two.wait_nodes("prep", "idle", 2);
    drop(one);
    add_job(&two, "rep", "prep", json!({}));
    add_tasks(
        &two,
        "rep",
        (0..4).map(|i| sh(&format!("r{i}"), "true")).collect(),
    );
    two.wait_completed("rep", 4, 90);
}

#[test]
fn a_short_postgres_restart_kills_and_requeues_nothing() {
    let (pg, svc, _agents) = pool_of(2, "ppg", 1, json!({}));
    add_job(&svc, "pg", "ppg", json!({}));
    add_tasks(
        &svc,
        "pg",
        (0..2).map(|i| sh(&format!("g{i}"), "sleep 8")).collect(),
    );
    let t0 = Instant::now();
    while svc.json("/jobs/pg/tasks")["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "running")
        .count()
        < 2
    {
        assert!(t0.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(200));
    }
    pg.stop();
    // The service answers, with Batch's 503, while its database is away.
    let (st, body) = svc.get("/jobs/pg");
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("ServerBusy"), "{body}");
    std::thread::sleep(Duration::from_secs(4));
    pg.restart();
    for t in svc.wait_completed("pg", 2, 90) {
        assert_eq!(t["executionInfo"]["result"], "success", "{t}");
        assert_eq!(t["executionInfo"]["requeueCount"], 0, "{t}");
        assert!(
            t["executionInfo"]["systemRetryCount"].as_i64().unwrap_or(0) == 0,
            "{t}"
        );
    }
}

/// The service's own tests (`service.rs`, `service_nodes.rs`) cover each bad request; here
/// the real binary, with a real node enrolled, refuses what a forger would try.
#[test]
fn forged_credentials_and_bad_requests_are_refused() {
    let (_pg, svc, _agents) = pool_of(1, "pbad", 2, json!({}));
    let hb = json!({"epoch": 1, "node": {}, "running": []});
    let p = format!("{}/heartbeat", berth_proto::node_protocol::PREFIX);
    // A made-up node token, the client token and the enrolment secret on the node protocol.
    for token in [
        "1.forged-forged-forged-forged",
        CLIENT_TOKEN,
        ENROLMENT_SECRET,
    ] {
        let (st, b) = svc.req_as(Some(token), "POST", &p, Some(&hb));
        assert!(st == 401 || st == 403, "{token}: {st} {b}");
    }
    // The enrolment secret and no token on the client API.
    assert_eq!(
        svc.req_as(Some(ENROLMENT_SECRET), "GET", "/pools", None).0,
        401
    );
    assert_eq!(svc.req_as(None, "GET", "/pools", None).0, 401);
    // A task asking more slots than a node has, a job on a pool that does not exist.
    add_job(&svc, "big", "pbad", json!({}));
    let mut t = sh("big", "true");
    t["requiredSlots"] = json!(3);
    let (st, b) = svc.req("POST", "/jobs/big/tasks", Some(&t));
    assert_eq!(st, 400, "{b}");
    assert!(b.to_string().contains("requiredSlots"), "{b}");
    let ghost = json!({"id": "j", "poolInfo": {"poolId": "ghost"}});
    let (st, b) = svc.req("POST", "/jobs", Some(&ghost));
    assert_eq!(st, 400, "{b}");
    assert!(b.to_string().contains("ghost"), "{b}");
    // The node still works after all that.
    add_tasks(&svc, "big", vec![sh("ok", "true")]);
    svc.wait_completed("big", 1, 60);
}

#[test]
fn preparation_runs_on_each_node_before_its_first_task_and_release_when_the_job_ends() {
    let (_pg, svc, agents) = pool_of(2, "pprep", 1, json!({}));
    let marks = "/bin/sh -c 'echo $AZ_BATCH_NODE_ID >> $AZ_BATCH_NODE_SHARED_DIR/";
    add_job(
        &svc,
        "prep",
        "pprep",
        json!({
            "onAllTasksComplete": "terminatejob",
            "jobPreparationTask": {"commandLine": format!("{marks}prepared'")},
            "jobReleaseTask": {"commandLine": format!("{marks}released'")},
        }),
    );
    add_tasks(
        &svc,
        "prep",
        (0..4).map(|i| sh(&format!("p{i}"), "sleep 1")).collect(),
    );
    let done = svc.wait_completed("prep", 4, 120);
    let ran: BTreeSet<String> = done.iter().map(node_of).collect();
    assert_eq!(ran.len(), 2, "{ran:?}");
    // The job ends (onAllTasksComplete); each node that ran a task releases it.
    let t0 = Instant::now();
    for a in &agents {
        let shared = a.node.root().join("shared");
        let read = |f: &str| std::fs::read_to_string(shared.join(f)).unwrap_or_default();
        while read("released").is_empty() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{} never released: {:?}",
                a.node.node_id,
                svc.json("/jobs/prep")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(read("prepared").trim(), a.node.node_id, "prepared once");
        assert_eq!(read("released").trim(), a.node.node_id, "released once");
    }
}
