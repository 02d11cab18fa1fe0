//! The Docker engine going away under berth, on engines these tests own: restarted while
//! tasks run (containers killed with it, or kept by live restore), and down when the
//! daemon starts or while it idles.

use berth_tests::agent::Agent;
use berth_tests::engine::PrivateEngine;
use berth_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spawn_run(n: &TestNode, tasks: &Value) -> Child {
    let f = n.file("tasks.json", tasks);
    n.command()
        .args(["--slots", "2", "--json"])
        .arg(&f)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(c: Child) -> RunResult {
    let out = c.wait_with_output().unwrap();
    RunResult {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn node_on(name: &str, pe: &PrivateEngine) -> TestNode {
    let mut n = TestNode::new(name);
    n.engine = pe.host();
    n
}

/// Containers left on the engine once pending removals are over (up to 10 s).
fn leftover(pe: &PrivateEngine) -> String {
    let t0 = Instant::now();
    loop {
        let left = String::from_utf8_lossy(&pe.docker(&["ps", "-aq"]).stdout)
            .trim()
            .to_string();
        if left.is_empty() || t0.elapsed() > Duration::from_secs(10) {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Without live restore a stopping engine kills its containers: the attempt fails with
/// `EngineUnavailable` (a server error), is retried while `maxTaskRetryCount` allows, and
/// the dead container is removed once the engine is back.
#[test]
fn engine_restart_fails_and_retries_tasks_whose_containers_died() {
    let mut pe = PrivateEngine::new("restart", &["--shutdown-timeout=1"]);
    pe.start();
    let n = node_on("enginerestart", &pe);
    let shared = n.root().join("shared");
    let mut retried = task(
        "retried",
        "/bin/sh -c 'if [ -e $AZ_BATCH_NODE_SHARED_DIR/one ]; then echo second; else touch $AZ_BATCH_NODE_SHARED_DIR/one; echo first; sleep 60; fi'",
        "",
    );
    retried["constraints"] = json!({"maxTaskRetryCount": 1});
    let once = task(
        "once",
        "/bin/sh -c 'touch $AZ_BATCH_NODE_SHARED_DIR/two; echo running; sleep 60'",
        "",
    );
    let run = spawn_run(&n, &json!([retried, once]));
    wait_for("both containers to run", Duration::from_secs(60), || {
        shared.join("one").exists() && shared.join("two").exists()
    });
    pe.stop();
    std::thread::sleep(Duration::from_secs(2));
    pe.start();
    let back = Instant::now();
    let r = finish(run);
    let settled = back.elapsed();
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    let t = r.task("retried");
    assert_eq!(t["executionInfo"]["result"], "success", "{t}\n{}", r.stderr);
    assert_eq!(t["executionInfo"]["retryCount"], 1, "{t}");
    assert_eq!(n.read("berthjob", "retried", "stdout.txt").trim(), "second");
    let t = r.task("once");
    let f = &t["executionInfo"]["failureInfo"];
    assert_eq!(f["code"], "EngineUnavailable", "{t}");
    assert_eq!(f["category"], "servererror", "{t}");
    assert!(
        f["details"][0]["value"]
            .as_str()
            .unwrap()
            .contains("the Docker engine stopped while the task ran"),
        "{t}"
    );
    assert_eq!(n.read("berthjob", "once", "stdout.txt"), "running\n");
    assert_eq!(leftover(&pe), "", "containers left on the engine");
    println!(
        "engine restart: 2 tasks, 2 containers killed, 1 retried to success, 1 failed EngineUnavailable, settled {:.1} s after the engine was back",
        settled.as_secs_f64()
    );
}

/// With live restore the container outlives the engine's restart: berth waits for the
/// engine, follows the same container again, and the task ends as if nothing happened,
/// its output complete and not doubled.
#[test]
fn live_restore_keeps_the_task() {
    let mut pe = PrivateEngine::new("live", &["--live-restore"]);
    pe.start();
    let n = node_on("liverestore", &pe);
    let shared = n.root().join("shared");
    let t = task(
        "kept",
        "/bin/sh -c 'echo before; touch $AZ_BATCH_NODE_SHARED_DIR/up; while [ ! -e $AZ_BATCH_NODE_SHARED_DIR/go ]; do sleep 0.2; done; echo after; exit 7'",
        "",
    );
    let run = spawn_run(&n, &json!([t]));
    wait_for("the container to run", Duration::from_secs(60), || {
        shared.join("up").exists()
    });
    pe.stop();
    std::thread::sleep(Duration::from_secs(2));
    pe.start();
    // The container must still be running when told to finish.
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(shared.join("go"), "").unwrap();
    let r = finish(run);
    let t = r.task("kept");
    assert_eq!(t["executionInfo"]["exitCode"], 7, "{t}\n{}", r.stderr);
    assert_eq!(
        t["executionInfo"]["failureInfo"]["code"], "FailureExitCode",
        "{t}"
    );
    assert_eq!(t["executionInfo"]["retryCount"], 0, "{t}");
    assert_eq!(n.read("berthjob", "kept", "stdout.txt"), "before\nafter\n");
    assert!(
        r.stderr
            .contains("the engine is back and the container still runs"),
        "{}",
        r.stderr
    );
    assert_eq!(leftover(&pe), "", "containers left on the engine");
}

fn node_errors(a: &Agent) -> Vec<String> {
    a.json("/node")["errors"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|x| x["code"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The daemon started before its engine answers, waits with its API up and the node
/// `starting` (error `EngineUnavailable`), then starts the pool and runs the queued task;
/// an engine that goes away later makes the idle node `unusable` until it is back.
#[test]
fn daemon_waits_for_the_engine() {
    let mut pe = PrivateEngine::new("daemon", &[]);
    let n = node_on("enginedown", &pe);
    // The socket exists but nothing listens (a socket unit whose dockerd is down).
    drop(std::os::unix::net::UnixListener::bind(pe.socket()).unwrap());
    let a = Agent::start_full(&n, &[], Path::new("/dev/null"));
    let node = a.json("/node");
    assert_eq!(node["state"], "starting", "{node}");
    wait_for(
        "the engine error on the node",
        Duration::from_secs(20),
        || node_errors(&a) == ["EngineUnavailable"],
    );
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "ej"}))).0, 201);
    let st = a
        .req(
            "POST",
            "/jobs/ej/tasks",
            Some(&task("first", "echo first", "")),
        )
        .0;
    assert_eq!(st, 201);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(a.json("/jobs/ej/tasks/first")["state"], "active");

    pe.start();
    let t = a.wait_state("ej", "first", "completed");
    assert_eq!(t["executionInfo"]["result"], "success", "{t}");
    assert!(node_errors(&a).is_empty());
    assert_eq!(a.json("/node")["state"], "idle");

    pe.stop();
    wait_for(
        "the node to become unusable",
        Duration::from_secs(30),
        || a.json("/node")["state"] == "unusable",
    );
    assert_eq!(node_errors(&a), ["EngineUnavailable"]);
    let st = a
        .req(
            "POST",
            "/jobs/ej/tasks",
            Some(&task("second", "echo second", "")),
        )
        .0;
    assert_eq!(st, 201);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        a.json("/jobs/ej/tasks/second")["state"],
        "active",
        "not started while the engine is away"
    );
    pe.start();
    let t = a.wait_state("ej", "second", "completed");
    assert_eq!(t["executionInfo"]["result"], "success", "{t}");
    assert!(node_errors(&a).is_empty());
    assert_eq!(a.term(), Some(0));
}

/// Without even the engine's socket file the daemon waits for it instead of exiting,
/// and comes up when the engine does.
#[test]
fn daemon_waits_for_the_engine_socket() {
    let mut pe = PrivateEngine::new("nosock", &[]);
    let n = node_on("nosocket", &pe);
    let a = std::thread::scope(|s| {
        let starter = s.spawn(|| {
            std::thread::sleep(Duration::from_secs(4));
            pe.start();
        });
        let a = Agent::start_full(&n, &[], Path::new("/dev/null"));
        starter.join().unwrap();
        a
    });
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(
        log.contains("waiting for the Docker engine's socket"),
        "{log}"
    );
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "sj"}))).0, 201);
    assert_eq!(
        a.req("POST", "/jobs/sj/tasks", Some(&task("t", "echo hi", "")))
            .0,
        201
    );
    let t = a.wait_state("sj", "t", "completed");
    assert_eq!(t["executionInfo"]["result"], "success", "{t}");
    assert_eq!(a.term(), Some(0));
}
