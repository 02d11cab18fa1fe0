//! SIGTERM to `berth agent` in each `on_shutdown` mode, with real containers running:
//! `leave` exits at once and the next agent takes the task over, `stop` stops the tasks
//! and records how each really ended, `continue` waits for them.

use berth_tests::agent::Agent;
use berth_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// A task that says `ready` once running, then waits for the file `go` in its working
/// directory (so the test decides when it ends), then exits with `code`.
fn gated(id: &str, code: i32) -> Value {
    task(
        id,
        &format!(
            "/bin/sh -c 'echo ready; while [ ! -f go ]; do sleep 0.1; done; echo done; exit {code}'"
        ),
        "",
    )
}

/// Waits until the task's stdout.txt holds `what` (the process runs and got that far).
fn wait_output(n: &TestNode, job: &str, task: &str, what: &str) {
    let f = n.task_dir(job, task).join("stdout.txt");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&f)
        .unwrap_or_default()
        .contains(what)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{task} never printed {what:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM, then up to `limit` for the agent to exit: its exit code (None if it was still
/// running, then it is killed) and how long it took.
fn term_within(mut a: Agent, limit: Duration) -> (Option<i32>, Duration) {
    let t0 = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    while t0.elapsed() < limit {
        if let Some(st) = a.child.try_wait().unwrap() {
            return (st.code(), t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (None, t0.elapsed())
}

fn log_of(n: &TestNode) -> String {
    std::fs::read_to_string(n.dir.path().join("agent.log")).unwrap()
}

fn container_state(id: &str) -> String {
    let out = docker(&["inspect", "-f", "{{.State.Status}}", id]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `leave` (the packaged default): the agent exits within a second or two while its task
/// runs on, says which task and container it leaves, stops and removes nothing; the next
/// agent takes the container over and the task ends with its own exit code and output.
#[test]
fn leave_exits_at_once_and_the_next_agent_takes_over() {
    let n = TestNode::new("shutleave");
    let a = Agent::start_with(&n, &[("BERTH_ON_SHUTDOWN", "leave")]);
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "sl"}))).0, 201);
    assert_eq!(
        a.req("POST", "/jobs/sl/tasks", Some(&gated("long", 7))).0,
        201
    );
    wait_output(&n, "sl", "long", "ready");
    let id = n.containers().pop().expect("the task's container");

    let (code, took) = term_within(a, Duration::from_secs(10));
    let go = n.task_dir("sl", "long").join("wd").join("go");
    if code.is_none() {
        // Let the task end so that the agent, killed on drop, leaves nothing waiting.
        std::fs::write(&go, "").unwrap();
    }
    eprintln!("leave: the agent exited {code:?} {took:?} after SIGTERM");
    assert_eq!(code, Some(0), "the agent did not exit within {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(
        container_state(&id),
        "running",
        "the task's container runs on"
    );
    let log = log_of(&n);
    assert!(
        !log.contains("being stopped and removed"),
        "leave stops nothing: {log}"
    );
    let left = log
        .lines()
        .find(|l| l.contains("task left running for the next agent"))
        .unwrap_or_else(|| panic!("no line names what was left: {log}"));
    assert!(
        left.contains("long") && left.contains(&id[..12]),
        "the line names the task and its container: {left}"
    );

    let a = Agent::start_with(&n, &[("BERTH_ON_SHUTDOWN", "leave")]);
    a.wait_state("sl", "long", "running");
    std::fs::write(&go, "").unwrap();
    let done = a.wait_state("sl", "long", "completed");
    let info = &done["executionInfo"];
    assert_eq!(info["exitCode"], 7, "{done}");
    assert_eq!(info["failureInfo"]["code"], "FailureExitCode", "{done}");
    assert_eq!(n.read("sl", "long", "stdout.txt"), "ready\ndone\n");
    assert!(
        n.containers_left().is_empty(),
        "the taken-over container is removed"
    );
    let (code, took) = term_within(a, Duration::from_secs(10));
    assert_eq!(code, Some(0), "{took:?}");
}

/// `stop`: every running task is stopped. One that handles SIGTERM and exits 0 within
/// the stop grace succeeded (its real exit wins); one that ignores it is killed and ends
/// `TaskEnded` with the kill's exit code. Both are recorded before the agent exits, and
/// no container is left.
#[test]
fn stop_records_how_each_task_really_ended() {
    let n = TestNode::new("shutstop");
    let a = Agent::start_with(&n, &[("BERTH_ON_SHUTDOWN", "stop")]);
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "ss"}))).0, 201);
    let polite = task(
        "polite",
        "/bin/sh -c 'trap \"echo bye; exit 0\" TERM; echo ready; while true; do sleep 0.1; done'",
        "",
    );
    // A shell as PID 1 ignores SIGTERM without a trap: the stop ends in SIGKILL (137).
    let deaf = task(
        "deaf",
        "/bin/sh -c 'echo ready; while true; do sleep 0.1; done'",
        "--stop-timeout 1",
    );
    assert_eq!(a.req("POST", "/jobs/ss/tasks", Some(&polite)).0, 201);
    assert_eq!(a.req("POST", "/jobs/ss/tasks", Some(&deaf)).0, 201);
    wait_output(&n, "ss", "polite", "ready");
    wait_output(&n, "ss", "deaf", "ready");

    let (code, took) = term_within(a, Duration::from_secs(30));
    eprintln!("stop: the agent exited {code:?} {took:?} after SIGTERM");
    assert_eq!(code, Some(0));
    assert!(
        n.containers_left().is_empty(),
        "stop removes the containers"
    );
    assert!(log_of(&n).contains("being stopped and removed"));

    let a = Agent::start(&n);
    let polite = a.json("/jobs/ss/tasks/polite");
    let info = &polite["executionInfo"];
    assert_eq!(polite["state"], "completed", "{polite}");
    assert_eq!(info["result"], "success", "{polite}");
    assert_eq!(info["exitCode"], 0, "{polite}");
    assert!(info.get("failureInfo").is_none(), "{polite}");
    assert_eq!(n.read("ss", "polite", "stdout.txt"), "ready\nbye\n");
    let deaf = a.json("/jobs/ss/tasks/deaf");
    let info = &deaf["executionInfo"];
    assert_eq!(info["result"], "failure", "{deaf}");
    assert_eq!(info["exitCode"], 137, "{deaf}");
    assert_eq!(info["failureInfo"]["code"], "TaskEnded", "{deaf}");
    assert_eq!(a.term(), Some(0));
}

/// `continue`: the agent starts nothing new but waits for its running task to end by
/// itself, records it, then exits; the log says it waits rather than stops.
#[test]
fn continue_waits_for_running_tasks() {
    let n = TestNode::new("shutcont");
    let a = Agent::start_with(&n, &[("BERTH_ON_SHUTDOWN", "continue")]);
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "sc"}))).0, 201);
    assert_eq!(
        a.req("POST", "/jobs/sc/tasks", Some(&gated("work", 0))).0,
        201
    );
    wait_output(&n, "sc", "work", "ready");
    let go = n.task_dir("sc", "work").join("wd").join("go");
    let pid = a.child.id();
    let opener = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        // Still running while its task runs.
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        std::fs::write(&go, "").unwrap();
        alive
    });
    let (code, took) = term_within(a, Duration::from_secs(30));
    assert!(
        opener.join().unwrap(),
        "the agent exited before its task ended"
    );
    eprintln!("continue: the agent exited {code:?} {took:?} after SIGTERM");
    assert_eq!(code, Some(0));
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(n.containers_left().is_empty());
    let log = log_of(&n);
    assert!(!log.contains("being stopped and removed"), "{log}");
    assert!(log.contains("waiting for 1 running task"), "{log}");

    let a = Agent::start(&n);
    let t = a.json("/jobs/sc/tasks/work");
    assert_eq!(t["executionInfo"]["result"], "success", "{t}");
    assert_eq!(n.read("sc", "work", "stdout.txt"), "ready\ndone\n");
    assert_eq!(a.term(), Some(0));
}
