//! `berth agent` through its Unix-socket API, over raw HTTP: jobs, tasks, collections,
//! filters, files, terminate, reactivate, delete, node; bad requests refused while the
//! agent keeps serving; SIGTERM exits cleanly and the state survives a restart.

use berth_tests::agent::Agent;
use berth_tests::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn ctask(id: &str, cmd: &str) -> Value {
    task(id, cmd, "")
}

#[test]
fn api_surface_and_bad_requests() {
    let n = TestNode::new("agentapi");
    let a = Agent::start(&n);
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "j1"}))).0, 201);
    assert_eq!(
        a.req("POST", "/jobs", Some(&json!({"id": "J1"}))).0,
        409,
        "job ids are case-insensitive"
    );
    let (st, _) = a.req(
        "POST",
        "/jobs/j1/tasks",
        Some(&ctask("hello", "/bin/sh -c 'echo hello; echo oops >&2'")),
    );
    assert_eq!(st, 201);
    let (st, b) = a.req(
        "POST",
        "/jobs/j1/addtaskcollection",
        Some(&json!({"value": [ctask("sleeper", "sleep 60"), ctask("hello", "true"), {"id": "bad/id", "commandLine": "x"}, ctask("fails", "/bin/sh -c 'exit 3'")]})),
    );
    assert_eq!(st, 200, "{b}");
    let results: Value = serde_json::from_str(&b).unwrap();
    let status = |id: &str| {
        results["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["taskId"] == id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("sleeper"), "success");
    assert_eq!(status("hello"), "clienterror");
    assert_eq!(status("bad/id"), "clienterror");
    let hello = a.wait_state("j1", "hello", "completed");
    assert_eq!(hello["executionInfo"]["exitCode"], 0);
    let failed = a.wait_state("j1", "fails", "completed");
    assert_eq!(
        failed["executionInfo"]["failureInfo"]["code"],
        "FailureExitCode"
    );
    let sleeper = a.wait_state("j1", "sleeper", "running");
    let info = &sleeper["executionInfo"];
    assert!(
        info["startTime"].is_string() && info["endTime"].is_null(),
        "a running task shows when it started: {sleeper}"
    );

    let running = a.json("/jobs/j1/tasks?$filter=state%20eq%20'running'");
    assert_eq!(running["value"].as_array().unwrap().len(), 1);
    let done = a.json("/jobs/j1/tasks?$filter=state%20ne%20'running'");
    assert_eq!(done["value"].as_array().unwrap().len(), 2);
    assert_eq!(
        a.req("GET", "/jobs/j1/tasks?$filter=state%20eq%20'done'", None)
            .0,
        400
    );

    let files = a.json("/jobs/j1/tasks/hello/files?recursive=true");
    let names: Vec<&str> = files["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"stdout.txt") && names.contains(&"wd"),
        "{names:?}"
    );
    assert_eq!(
        a.req("GET", "/jobs/j1/tasks/hello/files/stdout.txt", None),
        (200, "hello\n".into())
    );
    assert_eq!(
        a.req("GET", "/jobs/j1/tasks/hello/files/stderr.txt", None)
            .1,
        "oops\n"
    );
    for escape in [
        "/jobs/j1/tasks/hello/files/..%2F..%2F..%2Fberth%2Fstate.db",
        "/jobs/j1/tasks/hello/files/%2Fetc%2Fpasswd",
        "/jobs/j1/tasks/hello/files/wd%2F..%2F..%2Fx",
    ] {
        let (st, b) = a.req("GET", escape, None);
        assert_eq!(st, 400, "{escape}: {b}");
    }
    assert_eq!(
        a.req("GET", "/jobs/j1/tasks/hello/files/nothere.txt", None)
            .0,
        404
    );

    // Terminate the running task; reactivate the failed one (it runs again).
    assert_eq!(
        a.req("POST", "/jobs/j1/tasks/sleeper/terminate", None).0,
        204
    );
    let t = a.wait_state("j1", "sleeper", "completed");
    assert_eq!(t["executionInfo"]["failureInfo"]["code"], "TaskEnded");
    assert_eq!(
        a.req("POST", "/jobs/j1/tasks/sleeper/terminate", None).0,
        409
    );
    assert_eq!(
        a.req("POST", "/jobs/j1/tasks/hello/reactivate", None).0,
        409,
        "succeeded tasks are not reactivated"
    );
    assert_eq!(
        a.req("POST", "/jobs/j1/tasks/fails/reactivate", None).0,
        204
    );
    let again = a.wait_state("j1", "fails", "completed");
    assert_eq!(again["executionInfo"]["requeueCount"], 1);

    // Bad requests: each refused with Batch's error body, the agent still serving.
    let (st, b) = a.raw("POST", "/jobs", "text/plain", b"{\"id\":\"x\"}");
    assert_eq!(st, 415, "{b}");
    let (st, b) = a.raw("POST", "/jobs", "application/json", b"{\"id\":");
    assert_eq!(st, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["code"],
        "InvalidRequestBody"
    );
    let big = vec![b' '; (1 << 20) + 10];
    assert_eq!(
        a.raw("POST", "/jobs/j1/tasks", "application/json", &big).0,
        413
    );
    let (st, b) = a.req("POST", "/jobs", Some(&json!({"id": "../etc"})));
    assert_eq!(st, 400, "{b}");
    let (st, b) = a.req(
        "POST",
        "/jobs/j1/tasks",
        Some(&json!({"id": "a/b", "commandLine": "x"})),
    );
    assert_eq!(st, 400, "{b}");
    assert!(b.contains("InvalidPropertyValue"), "{b}");
    let (st, b) = a.req("GET", "/jobs/nojob/tasks/x", None);
    assert_eq!(
        (
            st,
            serde_json::from_str::<Value>(&b).unwrap()["code"].clone()
        ),
        (404, json!("JobNotFound"))
    );
    let many: Vec<Value> = (0..101).map(|i| ctask(&format!("m{i}"), "true")).collect();
    assert_eq!(
        a.req(
            "POST",
            "/jobs/j1/addtaskcollection",
            Some(&json!({"value": many}))
        )
        .0,
        413
    );

    // Delete a task (its files go), then the job.
    assert_eq!(a.req("DELETE", "/jobs/j1/tasks/hello", None).0, 200);
    assert!(!n.task_dir("j1", "hello").exists());
    assert_eq!(a.req("GET", "/jobs/j1/tasks/hello", None).0, 404);
    let node = a.json("/node");
    assert_eq!(node["id"], n.node_id.as_str());
    assert_eq!(a.req("DELETE", "/jobs/j1", None).0, 202);
    assert_eq!(a.req("GET", "/jobs/j1", None).0, 404);
    assert_eq!(a.term(), Some(0), "SIGTERM exits cleanly");
    assert!(n.containers_left().is_empty());
}

/// A field berth refuses (README, "Fields") is Batch's 400 `InvalidPropertyValue` naming
/// its JSON path, for a job, a task and a task of a collection, and nothing is stored; a
/// pool with one keeps the agent from starting (exit 2).
#[test]
fn refused_fields_in_the_daemon() {
    let n = TestNode::new("agentrefused");
    let a = Agent::start(&n);
    let refused = |(st, b): (u16, String), path: &str| {
        assert_eq!(st, 400, "{b}");
        let e: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(e["code"], "InvalidPropertyValue", "{b}");
        let m = e["message"]["value"].as_str().unwrap();
        assert!(m.starts_with(&format!("{path}: is not supported: ")), "{m}");
    };
    refused(
        a.req(
            "POST",
            "/jobs",
            Some(&json!({"id": "rj", "jobPreparationTask": {"commandLine": "true",
                "containerSettings": {"imageName": "myimage", "registry": {"identityReference": {"resourceId": "/mi"}}}}})),
        ),
        "$.jobPreparationTask.containerSettings.registry.identityReference",
    );
    assert_eq!(a.req("GET", "/jobs/rj", None).0, 404);
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "rj"}))).0, 201);
    let mut token = ctask("token", "true");
    token["multiInstanceSettings"] = json!({"numberOfInstances": 2});
    refused(
        a.req("POST", "/jobs/rj/tasks", Some(&token)),
        "$.multiInstanceSettings",
    );
    assert_eq!(a.req("GET", "/jobs/rj/tasks/token", None).0, 404);
    let (st, b) = a.req(
        "POST",
        "/jobs/rj/addtaskcollection",
        Some(&json!({"value": [ctask("fine", "true"), token]})),
    );
    assert_eq!(st, 200, "{b}");
    let results: Value = serde_json::from_str(&b).unwrap();
    let r = &results["value"][1];
    assert_eq!(
        (&r["taskId"], &r["status"]),
        (&json!("token"), &json!("clienterror")),
        "{b}"
    );
    assert_eq!(r["error"]["code"], "InvalidPropertyValue", "{b}");
    assert!(
        r["error"]["message"]["value"]
            .as_str()
            .unwrap()
            .starts_with("$.value[1].multiInstanceSettings: is not supported"),
        "{b}"
    );
    assert_eq!(
        a.wait_state("rj", "fine", "completed")["executionInfo"]["exitCode"],
        0
    );
    assert_eq!(a.req("GET", "/jobs/rj/tasks/token", None).0, 404);

    assert_eq!(a.term(), Some(0));

    let pool = n.file(
        "refusedpool.json",
        &json!({"id": "rp", "virtualMachineConfiguration": {"containerConfiguration": {
            "containerRegistries": [{"registryServer": "myacr.azurecr.io", "identityReference": {"resourceId": "/mi"}}]}}}),
    );
    let out = Command::new(berth_bin())
        .args(["agent", "--config", "/dev/null", "--socket"])
        .arg(n.dir.path().join("other.sock"))
        .arg("--pool")
        .arg(&pool)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("$.virtualMachineConfiguration.containerConfiguration.containerRegistries[0].identityReference: is not supported"),
        "{err}"
    );
}

#[test]
fn state_survives_a_restart() {
    let n = TestNode::new("agentstate");
    let a = Agent::start(&n);
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "keep"}))).0, 201);
    assert_eq!(
        a.req(
            "POST",
            "/jobs/keep/tasks",
            Some(&ctask("one", "/bin/sh -c 'echo kept'"))
        )
        .0,
        201
    );
    a.wait_state("keep", "one", "completed");
    assert_eq!(a.term(), Some(0));
    let db = n.root().join("berth/state.db");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&db).unwrap().permissions().mode() & 0o077,
        0,
        "the store is private"
    );
    assert_eq!(
        std::fs::metadata(Path::new(&db).parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o077,
        0
    );
    let a = Agent::start(&n);
    let t = a.json("/jobs/keep/tasks/one");
    assert_eq!(t["executionInfo"]["result"], "success");
    assert_eq!(
        a.req("GET", "/jobs/keep/tasks/one/files/stdout.txt", None)
            .1,
        "kept\n"
    );
    assert_eq!(
        a.req("POST", "/jobs/keep/tasks", Some(&ctask("one", "true")))
            .0,
        409
    );
    assert_eq!(a.term(), Some(0));
}

/// The CLI client against a running agent: jobs, tasks (one and a collection), list with a
/// state filter, show, logs, `logs -f` following a task to its end, terminate, node show,
/// delete; and the messages when no agent listens or the socket is not ours.
#[test]
fn cli_client() {
    let n = TestNode::new("agentcli");
    let a = Agent::start(&n);
    let cli = |args: &[&str]| {
        let out = Command::new(berth_bin())
            .args(args)
            .arg("--socket")
            .arg(&a.sock)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let job = n.file("clijob.json", &json!({"id": "clijob"}));
    let (code, out, err) = cli(&["job", "add", job.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, _, err) = cli(&["job", "add", job.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("JobExists"), "{err}");

    let one = n.file("one.json", &ctask("hello", "echo hello from berth"));
    let (code, out, err) = cli(&["task", "add", "--job", "clijob", one.to_str().unwrap()]);
    assert_eq!((code, out.trim()), (Some(0), "task hello added"), "{err}");
    let many = n.file(
        "many.json",
        &json!([
            ctask("slow", "/bin/sh -c 'for i in 1 2 3 4 5; do echo line $i; sleep 0.4; done'"),
            ctask("sleeper", "sleep 300"),
            {"id": "bad id!", "commandLine": "true"},
        ]),
    );
    let (code, out, _) = cli(&["task", "add", "--job", "clijob", many.to_str().unwrap()]);
    assert_eq!(code, Some(1), "one task was refused: {out}");
    assert!(
        out.contains("task slow added") && out.contains("task sleeper added"),
        "{out}"
    );
    assert!(out.contains("task bad id! NOT added"), "{out}");

    // `logs -f` follows the slow task from wherever it is to its end, and gets every line.
    let (code, out, err) = cli(&["task", "logs", "--job", "clijob", "slow", "-f"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "line 1\nline 2\nline 3\nline 4\nline 5\n");
    a.wait_state("clijob", "hello", "completed");
    let (_, out, _) = cli(&["task", "logs", "--job", "clijob", "hello"]);
    assert_eq!(out, "hello from berth\n");

    let (code, out, _) = cli(&["task", "list", "--job", "clijob", "--state", "completed"]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("TASK") && out.contains("hello") && out.contains("slow"),
        "{out}"
    );
    assert!(!out.contains("sleeper"), "{out}");
    let (_, out, _) = cli(&["task", "list", "--job", "clijob", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    let (_, out, _) = cli(&["task", "show", "--job", "clijob", "hello", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["executionInfo"]["exitCode"], 0);

    a.wait_state("clijob", "sleeper", "running");
    let (code, out, _) = cli(&["node", "show"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(": running"), "{out}");
    let (code, _, err) = cli(&["task", "terminate", "--job", "clijob", "sleeper"]);
    assert_eq!(code, Some(0), "{err}");
    let t = a.wait_state("clijob", "sleeper", "completed");
    assert_eq!(t["executionInfo"]["failureInfo"]["code"], "TaskEnded");

    // Prometheus text on the same API.
    let (st, m) = a.req("GET", "/metrics", None);
    assert_eq!(st, 200);
    for line in [
        "berth_tasks{state=\"completed\"} 3",
        "berth_task_duration_seconds_count{result=\"success\"} 2",
        "berth_task_duration_seconds_count{result=\"failure\"} 1",
        "berth_slots_total 4",
        "berth_slots_used 0",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} not in\n{m}");
    }

    let (code, out, _) = cli(&["job", "list"]);
    assert_eq!(code, Some(0));
    assert!(
        out.lines()
            .any(|l| l.starts_with("clijob") && l.contains("active")),
        "{out}"
    );
    let (code, _, _) = cli(&["job", "delete", "clijob"]);
    assert_eq!(code, Some(0));
    let (code, _, err) = cli(&["job", "show", "clijob"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("JobNotFound"), "{err}");

    // No agent there.
    let out = Command::new(berth_bin())
        .args(["node", "show", "--socket"])
        .arg(n.dir.path().join("absent.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the berth agent is not running"), "{err}");
    // A user outside the socket's group.
    if nix::unistd::Uid::effective().is_root() {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(berth_bin())
            .args(["node", "show", "--socket"])
            .arg(&a.sock)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert!(
            err.contains("permission denied") && err.contains("group berth"),
            "{err}"
        );
    }
    assert_eq!(a.term(), Some(0));
}

/// `kill -9` of the agent while tasks run: the restarted agent takes over the containers
/// still running, collects the ones that exited while it was down, runs the queued ones,
/// and no task runs twice or loses a byte of output.
#[test]
fn kill_9_and_restart_loses_nothing() {
    let n = TestNode::new("agentkill");
    let runs = n.dir.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&runs, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mount = format!("-v {}:/runs", runs.display());
    // Each task notes its start in /runs/<id>: a task run twice would have two lines.
    let t = |id: &str, script: &str| {
        task(
            id,
            &format!("/bin/sh -c 'echo start >> /runs/{id}; {script}'"),
            &mount,
        )
    };
    let tasks = json!([
        t(
            "long",
            "for i in $(seq 1 30); do echo out $i; echo err $i >&2; sleep 0.1; done"
        ),
        t("quick", "sleep 1; echo quick done"),
        t("fails", "sleep 1; echo failing; exit 3"),
        t("sleeper", "sleep 6; echo slept"),
        t("queued1", "echo hi 1"),
        t("queued2", "echo hi 2"),
    ]);
    let mut a = Agent::start(&n);
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "kj"}))).0, 201);
    let (st, body) = a.req(
        "POST",
        "/jobs/kj/addtaskcollection",
        Some(&json!({"value": tasks})),
    );
    assert_eq!(st, 200, "{body}");
    for id in ["long", "quick", "fails", "sleeper"] {
        a.wait_state("kj", id, "running");
    }
    // Let every container start and write something.
    let t0 = Instant::now();
    while !["long", "quick", "fails", "sleeper"]
        .iter()
        .all(|id| runs.join(id).exists())
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "tasks did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    a.child.kill().unwrap(); // SIGKILL
    a.child.wait().unwrap();
    assert_eq!(
        a.json_after_kill_is_gone(),
        (),
        "the socket no longer answers"
    );
    // quick and fails end while no agent runs.
    std::thread::sleep(Duration::from_millis(2500));
    drop(a);
    let a = Agent::start(&n);
    let mut done = std::collections::HashMap::new();
    for id in ["long", "quick", "fails", "sleeper", "queued1", "queued2"] {
        done.insert(id, a.wait_state("kj", id, "completed"));
    }
    for id in done.keys() {
        let starts = std::fs::read_to_string(runs.join(id)).unwrap();
        assert_eq!(starts, "start\n", "{id} ran once");
    }
    let file = |id: &str, f: &str| {
        a.req("GET", &format!("/jobs/kj/tasks/{id}/files/{f}"), None)
            .1
    };
    let want_out: String = (1..=30).map(|i| format!("out {i}\n")).collect();
    let want_err: String = (1..=30).map(|i| format!("err {i}\n")).collect();
    assert_eq!(file("long", "stdout.txt"), want_out);
    assert_eq!(file("long", "stderr.txt"), want_err);
    assert_eq!(file("quick", "stdout.txt"), "quick done\n");
    assert_eq!(file("sleeper", "stdout.txt"), "slept\n");
    assert_eq!(file("queued2", "stdout.txt"), "hi 2\n");
    for id in ["long", "quick", "sleeper", "queued1", "queued2"] {
        let e = &done[id]["executionInfo"];
        assert_eq!(e["result"], "success", "{id}: {e}");
        assert_eq!(e["exitCode"], 0, "{id}");
        assert_eq!(e["retryCount"], 0, "{id}");
    }
    let f = &done["fails"]["executionInfo"];
    assert_eq!(f["exitCode"], 3, "{f}");
    assert_eq!(f["failureInfo"]["code"], "FailureExitCode");
    assert_eq!(file("fails", "stdout.txt"), "failing\n");
    // The taken-over tasks keep their real start time, from before the kill.
    let long_start = done["long"]["executionInfo"]["startTime"]
        .as_str()
        .unwrap()
        .to_string();
    let queued_start = done["queued1"]["executionInfo"]["startTime"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(long_start < queued_start, "{long_start} {queued_start}");
    assert!(n.containers_left().is_empty(), "every container removed");
    assert_eq!(a.term(), Some(0));
}

/// `on_shutdown = "leave"`: SIGTERM ends the agent at once and leaves the task's container
/// running; the next agent takes it over, and the task ends once with all its output.
#[test]
fn leave_on_shutdown_then_take_over() {
    let n = TestNode::new("agentleave");
    let a = Agent::start_with(&n, &[("BERTH_ON_SHUTDOWN", "leave")]);
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "lj"}))).0, 201);
    let t = ctask(
        "counter",
        "/bin/sh -c 'for i in $(seq 1 20); do echo n $i; sleep 0.1; done'",
    );
    assert_eq!(a.req("POST", "/jobs/lj/tasks", Some(&t)).0, 201);
    a.wait_state("lj", "counter", "running");
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    assert_eq!(a.term(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(n.containers().len(), 1, "the container was left running");
    let a = Agent::start(&n);
    let done = a.wait_state("lj", "counter", "completed");
    assert_eq!(done["executionInfo"]["result"], "success", "{done}");
    let want: String = (1..=20).map(|i| format!("n {i}\n")).collect();
    assert_eq!(
        a.req("GET", "/jobs/lj/tasks/counter/files/stdout.txt", None)
            .1,
        want
    );
    assert!(n.containers_left().is_empty());
    assert_eq!(a.term(), Some(0));
}

/// TCP only with a token: refused without it and with a wrong one (401), served with the
/// right one; and an agent asked for TCP with no token file does not start.
#[test]
fn tcp_needs_the_bearer_token() {
    let n = TestNode::new("agenttcp");
    let token = "s3cret-token-0123456789";
    let tf = n.dir.path().join("token");
    std::fs::write(&tf, format!("{token}\n")).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let a = Agent::start_with(
        &n,
        &[
            ("BERTH_TCP_ADDRESS", addr.as_str()),
            ("BERTH_TOKEN_FILE", tf.to_str().unwrap()),
        ],
    );
    let get = |auth: Option<&str>| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let h = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        write!(s, "GET /node HTTP/1.0\r\nHost: berth\r\n{h}\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        (out.get(9..12).unwrap_or("").to_string(), out)
    };
    let (st, body) = get(None);
    assert_eq!(st, "401", "{body}");
    assert!(body.contains("AuthenticationFailed"), "{body}");
    assert_eq!(get(Some("Bearer wrong-token-0123456789")).0, "401");
    assert_eq!(get(Some(&format!("Bearer {token}x"))).0, "401");
    assert_eq!(get(Some(&format!("Basic {token}"))).0, "401");
    let (st, body) = get(Some(&format!("Bearer {token}")));
    assert_eq!(st, "200", "{body}");
    assert!(body.contains("\"poolId\""), "{body}");
    // The token never reaches the log.
    let log = std::fs::read_to_string(n.dir.path().join("agent.log")).unwrap();
    assert!(!log.contains(token));
    assert_eq!(a.term(), Some(0));

    let out = Command::new(berth_bin())
        .args(["agent", "--config", "/dev/null", "--socket"])
        .arg(n.dir.path().join("other.sock"))
        .env("BERTH_TCP_ADDRESS", &addr)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token_file is not"), "{err}");
}

/// `dependsOn` in the daemon: a dependent starts only after its dependency succeeded; one
/// whose dependency failed stays active; many tasks on one dependency do not slow the scan,
/// and pages of blocked tasks do not hide a runnable one behind them.
#[test]
fn dependencies_in_the_daemon() {
    let n = TestNode::new("agentdeps");
    let a = Agent::start(&n);
    let job = json!({"id": "dj", "usesTaskDependencies": true});
    assert_eq!(a.req("POST", "/jobs", Some(&job)).0, 201);
    let dep = |mut t: Value, on: &str| {
        t["dependsOn"] = json!({"taskIds": [on]});
        t
    };
    let tasks = vec![
        ctask("first", "/bin/sh -c 'sleep 1; date +%s > /dev/null'"),
        dep(ctask("second", "echo after first"), "first"),
        ctask("broken", "/bin/sh -c 'exit 1'"),
        dep(ctask("orphan", "echo never"), "broken"),
    ];
    // More blocked tasks than one page of the scheduler's queue read sit between the
    // first tasks and `w*`: a pass must read on past them.
    let blocked = (0..3).map(|b| {
        (0..100)
            .map(|i| dep(ctask(&format!("b{b}-{i}"), "echo never"), "broken"))
            .collect::<Vec<_>>()
    });
    let w = (0..50).map(|i| dep(ctask(&format!("w{i}"), "true"), "second"));
    for batch in std::iter::once(tasks).chain(blocked).chain([w.collect()]) {
        let (st, body) = a.req(
            "POST",
            "/jobs/dj/addtaskcollection",
            Some(&json!({"value": batch})),
        );
        assert_eq!(st, 200, "{body}");
    }
    let first = a.wait_state("dj", "first", "completed");
    let second = a.wait_state("dj", "second", "completed");
    assert!(
        second["executionInfo"]["startTime"].as_str() >= first["executionInfo"]["endTime"].as_str(),
        "{first}\n{second}"
    );
    for i in 0..50 {
        assert_eq!(
            a.wait_state("dj", &format!("w{i}"), "completed")["executionInfo"]["result"],
            "success"
        );
    }
    a.wait_state("dj", "broken", "completed");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        a.json("/jobs/dj/tasks/orphan")["state"],
        "active",
        "blocked by a failed dependency"
    );
    assert_eq!(a.json("/jobs/dj/tasks/b2-99")["state"], "active");
    assert_eq!(a.term(), Some(0));
}

/// A job's preparation task runs once, before the job's first task, which is `preparing`
/// meanwhile while later tasks of the job wait; the tasks see its directory; terminate runs
/// the release task, then the job completes. A failed preparation keeps the job's tasks
/// active. An agent killed during preparation reruns it and the task runs once.
#[test]
fn job_preparation_and_release_in_the_daemon() {
    let n = TestNode::new("agentprep");
    let shared = n.root().join("shared");
    let lines = |name: &str| -> Vec<String> {
        std::fs::read_to_string(shared.join(name))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    };
    let sh = |cmd: &str| format!("/bin/sh -c '{cmd}'");
    let container = json!({"imageName": "myimage", "containerRunOptions": "--network none"});
    let job = |id: &str, prep: &str, release: &str| {
        json!({"id": id,
            "jobPreparationTask": {"commandLine": sh(prep), "containerSettings": container},
            "jobReleaseTask": {"commandLine": sh(release), "containerSettings": container}})
    };
    let mut a = Agent::start(&n);
    let wait_job = |a: &Agent, id: &str, state: &str| {
        let t0 = Instant::now();
        loop {
            let j = a.json(&format!("/jobs/{id}"));
            if j["state"] == state {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{id} never {state}: {j}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    let pj = job(
        "pj",
        "sleep 2; echo $AZ_BATCH_TASK_ID >> $AZ_BATCH_NODE_SHARED_DIR/pj-prep; echo prepared > $AZ_BATCH_TASK_WORKING_DIR/data",
        "cat $AZ_BATCH_JOB_PREP_WORKING_DIR/data >> $AZ_BATCH_NODE_SHARED_DIR/pj-release",
    );
    assert_eq!(a.req("POST", "/jobs", Some(&pj)).0, 201);
    let status = a.json("/jobs/pj/jobpreparationandreleasetaskstatus");
    assert_eq!(status["value"], json!([]), "not run before any task");
    let (st, body) = a.req(
        "POST",
        "/jobs/pj/tasks",
        Some(&ctask("JobPreparation", "true")),
    );
    assert_eq!(st, 409, "{body}");
    assert!(body.contains("TaskIdSameAsJobPreparationTask"), "{body}");

    let tasks: Vec<Value> = (1..=3)
        .map(|i| {
            ctask(
                &format!("t{i}"),
                "/bin/sh -c 'cat $AZ_BATCH_JOB_PREP_WORKING_DIR/data'",
            )
        })
        .collect();
    let (st, body) = a.req(
        "POST",
        "/jobs/pj/addtaskcollection",
        Some(&json!({"value": tasks})),
    );
    assert_eq!(st, 200, "{body}");
    a.wait_state("pj", "t1", "preparing");
    assert_eq!(
        a.json("/jobs/pj/tasks/t2")["state"],
        "active",
        "the job's other tasks wait for its preparation"
    );
    for i in 1..=3 {
        let t = a.wait_state("pj", &format!("t{i}"), "completed");
        assert_eq!(t["executionInfo"]["result"], "success", "{t}");
        assert_eq!(
            n.read("pj", &format!("t{i}"), "stdout.txt").trim(),
            "prepared"
        );
    }
    assert_eq!(
        lines("pj-prep"),
        ["jobpreparation"],
        "prepared once, as task jobpreparation"
    );
    let status = a.json("/jobs/pj/jobpreparationandreleasetaskstatus");
    let prep = &status["value"][0]["jobPreparationTaskExecutionInfo"];
    assert_eq!(prep["state"], "completed", "{status}");
    assert_eq!(prep["result"], "success", "{status}");
    assert_eq!(prep["exitCode"], 0, "{status}");
    assert!(prep["taskRootDirectory"]
        .as_str()
        .unwrap()
        .ends_with("/workitems/pj/job-1/jobpreparation"));
    assert_eq!(status["value"][0]["nodeId"], n.node_id.as_str());
    assert!(status["value"][0]["jobReleaseTaskExecutionInfo"].is_null());
    // Batch's list query, as on the service.
    let none = a.json(
        "/jobs/pj/jobpreparationandreleasetaskstatus?%24filter=jobPreparationTaskExecutionInfo%2Fstate%20eq%20%27running%27",
    );
    assert_eq!(none["value"], json!([]), "{none}");
    let sel = a.json("/jobs/pj/jobpreparationandreleasetaskstatus?%24select=nodeId");
    assert_eq!(sel["value"], json!([{"nodeId": n.node_id}]), "{sel}");

    let out = Command::new(berth_bin())
        .args(["job", "show", "pj", "--socket"])
        .arg(&a.sock)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("job preparation task: completed, success, exit code 0"),
        "{text}"
    );

    // Batch's terminate body: a reason of the user's own.
    let reason = json!({"terminateReason": "enough for today"});
    assert_eq!(a.req("POST", "/jobs/pj/terminate", Some(&reason)).0, 202);
    wait_job(&a, "pj", "completed");
    assert_eq!(lines("pj-release"), ["prepared"]);
    let info = &a.json("/jobs/pj")["executionInfo"];
    assert_eq!(info["terminateReason"], "enough for today", "{info}");
    assert!(info["endTime"].is_string() && info["startTime"].is_string());
    let status = a.json("/jobs/pj/jobpreparationandreleasetaskstatus");
    let rel = &status["value"][0]["jobReleaseTaskExecutionInfo"];
    assert_eq!(rel["result"], "success", "{status}");
    assert!(rel["taskRootDirectory"]
        .as_str()
        .unwrap()
        .ends_with("/jobrelease"));
    // Delete after terminate: the release task does not run again.
    assert_eq!(a.req("DELETE", "/jobs/pj", None).0, 202);
    assert_eq!(a.req("GET", "/jobs/pj", None).0, 404);
    assert_eq!(lines("pj-release"), ["prepared"]);

    // A failed preparation: the tasks stay active; release still runs at the end.
    let fj = job(
        "fj",
        "exit 5",
        "echo released >> $AZ_BATCH_NODE_SHARED_DIR/fj-release",
    );
    assert_eq!(a.req("POST", "/jobs", Some(&fj)).0, 201);
    assert_eq!(
        a.req("POST", "/jobs/fj/tasks", Some(&ctask("f1", "true")))
            .0,
        201
    );
    let t0 = Instant::now();
    let status = loop {
        let s = a.json("/jobs/fj/jobpreparationandreleasetaskstatus");
        if s["value"][0]["jobPreparationTaskExecutionInfo"]["state"] == "completed" {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{s}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let prep = &status["value"][0]["jobPreparationTaskExecutionInfo"];
    assert_eq!(prep["exitCode"], 5, "{status}");
    assert_eq!(prep["failureInfo"]["code"], "FailureExitCode", "{status}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        a.wait_state("fj", "f1", "active")["executionInfo"],
        Value::Null
    );
    // Deleting runs the release task first, then the job goes.
    assert_eq!(a.req("DELETE", "/jobs/fj", None).0, 202);
    let t0 = Instant::now();
    while a.req("GET", "/jobs/fj", None).0 != 404 {
        assert!(t0.elapsed() < Duration::from_secs(60), "fj never deleted");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(lines("fj-release"), ["released"]);
    assert!(!n.root().join("workitems/fj").exists());

    // No preparation task: Batch's 409.
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "plain"}))).0, 201);
    let (st, body) = a.req(
        "GET",
        "/jobs/plain/jobpreparationandreleasetaskstatus",
        None,
    );
    assert_eq!(st, 409);
    assert!(body.contains("JobPreparationTaskNotSpecified"), "{body}");

    // Killed while preparing: the next agent prepares again and runs the task once.
    let kj = job(
        "kj",
        "sleep 3; echo done >> $AZ_BATCH_NODE_SHARED_DIR/kj-prep",
        "true",
    );
    assert_eq!(a.req("POST", "/jobs", Some(&kj)).0, 201);
    let once = ctask(
        "k1",
        "/bin/sh -c 'echo ran >> $AZ_BATCH_NODE_SHARED_DIR/kj-task'",
    );
    assert_eq!(a.req("POST", "/jobs/kj/tasks", Some(&once)).0, 201);
    a.wait_state("kj", "k1", "preparing");
    a.child.kill().unwrap(); // SIGKILL
    a.child.wait().unwrap();
    drop(a);
    let a = Agent::start(&n);
    let t = a.wait_state("kj", "k1", "completed");
    assert_eq!(t["executionInfo"]["result"], "success", "{t}");
    assert_eq!(
        lines("kj-prep"),
        ["done"],
        "the cut-off preparation never finished"
    );
    assert_eq!(lines("kj-task"), ["ran"]);
    assert!(n.containers_left().is_empty(), "{:?}", n.containers());
    assert_eq!(a.term(), Some(0));
}

/// `log_level` from the config file applies at start, and again on SIGHUP without a restart.
#[test]
fn sighup_applies_the_log_level() {
    let n = TestNode::new("agenthup");
    let cfg = n.dir.path().join("berth.toml");
    std::fs::write(&cfg, "log_level = \"warn\"\n").unwrap();
    let a = Agent::start_full(&n, &[], &cfg);
    let log = || std::fs::read_to_string(n.dir.path().join("agent.log")).unwrap();
    assert!(
        !log().contains("API listening"),
        "warn hides info lines:\n{}",
        log()
    );
    std::fs::write(&cfg, "log_level = \"info\"\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let t0 = Instant::now();
    while !log().contains("SIGHUP: log level applied") {
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(&cfg, "log_level = \"loud\"\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    while !log().contains("SIGHUP: log level not applied") {
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        log().contains("is not accepted: error, warn, info"),
        "{}",
        log()
    );
    assert_eq!(a.req("GET", "/node", None).0, 200, "still serving");
    assert_eq!(a.term(), Some(0));
}

/// Task files through the daemon: the task is stored with its SAS URLs (the scheduler
/// reads it back from the store before running it), downloads and uploads work, and the
/// API never shows a SAS.
#[test]
fn task_files_in_the_daemon() {
    let az = berth_tests::azurite::Azurite::start();
    az.create_container("iofiles");
    az.put_blob("iofiles", "in.txt", b"from blob\n");
    let n = TestNode::new("agentfiles");
    let a = Agent::start(&n);
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "fj"}))).0, 201);
    let mut t = ctask("copy", "/bin/sh -c 'tr a-z A-Z < in.txt > out.txt'");
    t["resourceFiles"] =
        json!([{"httpUrl": az.blob_url("iofiles", "in.txt", "r"), "filePath": "in.txt"}]);
    t["outputFiles"] = json!([{"filePattern": "out.txt",
        "destination": {"container": {"containerUrl": az.container_url("iofiles", "rwc"), "path": "result/out.txt"}},
        "uploadOptions": {"uploadCondition": "taskSuccess"}}]);
    let (st, body) = a.req("POST", "/jobs/fj/tasks", Some(&t));
    assert_eq!(st, 201, "{body}");
    let done = a.wait_state("fj", "copy", "completed");
    assert_eq!(done["executionInfo"]["result"], "success", "{done}");
    assert_eq!(
        az.get_blob("iofiles", "result/out.txt").unwrap(),
        b"FROM BLOB\n"
    );
    let shown = a.req("GET", "/jobs/fj/tasks/copy", None).1;
    assert!(!shown.contains("sig="), "{shown}");
    assert!(shown.contains("/iofiles/in.txt?<redacted>"), "{shown}");
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(!log.contains("sig="), "a SAS reached the agent's log");
    assert_eq!(a.term(), Some(0));
}

/// Waits (60 s at most) for job `id` to be in `state`; returns it.
fn job_in(a: &Agent, id: &str, state: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let j = a.json(&format!("/jobs/{id}"));
        if j["state"] == state {
            return j;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{id} never {state}: {j}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Job priority orders what starts on the node; PATCH and PUT change it with Batch's
/// rules; `onAllTasksComplete: terminatejob` ends a job once its tasks completed.
#[test]
fn job_priority_updates_and_automatic_end() {
    let n = TestNode::new("jobprio");
    let a = Agent::start(&n);
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "busy"}))).0, 201);
    // Every slot held by one task until the test says go; the others queue.
    let mut hold = ctask(
        "hold",
        "/bin/sh -c 'while [ ! -e $AZ_BATCH_NODE_SHARED_DIR/go ]; do sleep 0.1; done'",
    );
    hold["requiredSlots"] = json!(4);
    assert_eq!(a.req("POST", "/jobs/busy/tasks", Some(&hold)).0, 201);
    a.wait_state("busy", "hold", "running");
    let stamp = "/bin/sh -c 'echo $AZ_BATCH_JOB_ID >> $AZ_BATCH_NODE_SHARED_DIR/order'";
    // Each takes the whole node too, so they run one after the other.
    let whole = |id: &str, cmd: &str| {
        let mut t = ctask(id, cmd);
        t["requiredSlots"] = json!(4);
        t
    };
    for job in ["low", "high"] {
        assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": job}))).0, 201);
        assert_eq!(
            a.req(
                "POST",
                &format!("/jobs/{job}/tasks"),
                Some(&whole("t", stamp))
            )
            .0,
            201
        );
    }
    // Raised while both wait: high starts first though it was queued last.
    assert_eq!(
        a.req("PATCH", "/jobs/high", Some(&json!({"priority": 10})))
            .0,
        200
    );
    assert_eq!(a.json("/jobs/high")["priority"], 10);
    std::fs::write(n.root().join("shared/go"), "").unwrap();
    a.wait_state("low", "t", "completed");
    a.wait_state("high", "t", "completed");
    let order = std::fs::read_to_string(n.root().join("shared/order")).unwrap();
    assert_eq!(order, "high\nlow\n", "priority 10 runs before priority 0");

    // Batch's rules on updates, each naming the property.
    let (st, b) = a.req("PATCH", "/jobs/low", Some(&json!({"priority": 2000})));
    assert_eq!(st, 400);
    assert!(
        b.contains("$.priority") && b.contains("-1000 to 1000"),
        "{b}"
    );
    let (st, b) = a.req("PUT", "/jobs/low", Some(&json!({"priority": 1})));
    assert_eq!(st, 400);
    assert!(
        b.contains("MissingRequiredProperty") && b.contains("poolInfo"),
        "{b}"
    );
    let (st, b) = a.req("PATCH", "/jobs/low", Some(&json!({"displayName": "x"})));
    assert_eq!(st, 400);
    assert!(b.contains("displayName"), "{b}");
    let put = json!({"poolInfo": {"poolId": "agentpool"}, "maxParallelTasks": 2, "onAllTasksComplete": "terminatejob"});
    assert_eq!(a.req("PUT", "/jobs/low", Some(&put)).0, 200);
    // Its only task had completed: the job ends at once.
    let low = job_in(&a, "low", "completed");
    assert_eq!(
        low["executionInfo"]["terminateReason"], "AllTasksComplete",
        "{low}"
    );
    assert_eq!(low["maxParallelTasks"], 2);

    // Switched on while a task runs: the job ends when that task completes.
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "auto"}))).0, 201);
    assert_eq!(
        a.req("POST", "/jobs/auto/tasks", Some(&ctask("t", "sleep 2")))
            .0,
        201
    );
    a.wait_state("auto", "t", "running");
    let on = json!({"onAllTasksComplete": "terminatejob"});
    assert_eq!(a.req("PATCH", "/jobs/auto", Some(&on)).0, 200);
    assert_eq!(a.json("/jobs/auto")["state"], "active", "a task still runs");
    let (st, b) = a.req(
        "PATCH",
        "/jobs/auto",
        Some(&json!({"onAllTasksComplete": "noaction"})),
    );
    assert_eq!(st, 400, "{b}");
    assert!(b.contains("cannot be turned back"), "{b}");
    let j = job_in(&a, "auto", "completed");
    assert_eq!(
        j["executionInfo"]["terminateReason"], "AllTasksComplete",
        "{j}"
    );
    assert_eq!(a.json("/jobs/auto/tasks/t")["executionInfo"]["exitCode"], 0);
    // As in Batch, a job added with it and no task completes at once.
    let empty = json!({"id": "empty", "onAllTasksComplete": "terminatejob"});
    assert_eq!(a.req("POST", "/jobs", Some(&empty)).0, 201);
    job_in(&a, "empty", "completed");
}

/// Job disable and enable, through the CLI: a disabled job starts nothing; `requeue`
/// stops its running task and queues it again; enabled, everything runs.
#[test]
fn job_disable_and_enable() {
    let n = TestNode::new("jobdisable");
    let a = Agent::start(&n);
    let cli = |args: &[&str]| {
        let out = Command::new(berth_bin())
            .args(args)
            .arg("--socket")
            .arg(&a.sock)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(
        a.req(
            "POST",
            "/jobs",
            Some(&json!({"id": "dj", "maxParallelTasks": 1}))
        )
        .0,
        201
    );
    // Each run appends a line, so a requeued task shows two.
    let run = "/bin/sh -c 'echo run >> $AZ_BATCH_NODE_SHARED_DIR/$AZ_BATCH_TASK_ID; sleep 3'";
    for id in ["a", "b"] {
        assert_eq!(
            a.req("POST", "/jobs/dj/tasks", Some(&ctask(id, run))).0,
            201
        );
    }
    a.wait_state("dj", "a", "running");
    // Its process ran (the store says `running` just before the container starts).
    let ran = n.root().join("shared").join("a");
    let t0 = Instant::now();
    while !ran.exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "a never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = cli(&["job", "disable", "dj", "--disable-tasks", "requeue"]);
    assert!(out.contains("disabled (requeue)"), "{out}");
    job_in(&a, "dj", "disabled");
    let t = a.wait_state("dj", "a", "active");
    assert_eq!(t["executionInfo"]["requeueCount"], 1, "{t}");
    // A disabled job takes no task and starts none.
    let (st, b) = a.req("POST", "/jobs/dj/tasks", Some(&ctask("c", "true")));
    assert_eq!(st, 409);
    assert!(b.contains("JobDisabled"), "{b}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(a.json("/jobs/dj/tasks/b")["state"], "active");
    // Bad bodies name the property.
    let (st, b) = a.req("POST", "/jobs/dj/disable", Some(&json!({})));
    assert_eq!(st, 400);
    assert!(b.contains("disableTasks"), "{b}");
    cli(&["job", "enable", "dj"]);
    assert_eq!(a.json("/jobs/dj")["state"], "active");
    a.wait_state_for("dj", "a", "completed", Duration::from_secs(60));
    a.wait_state_for("dj", "b", "completed", Duration::from_secs(60));
    let runs = |id: &str| std::fs::read_to_string(n.root().join("shared").join(id)).unwrap();
    assert_eq!(runs("a"), "run\nrun\n", "a ran again after the requeue");
    assert_eq!(runs("b"), "run\n");
    assert!(n.containers_left().is_empty());
}

/// A job manager task, in a container, adds ten tasks to its own job through
/// `AZ_BATCH_ACCOUNT_URL` with its `AZ_BATCH_AUTHENTICATION_TOKEN`, waits for them, and
/// its end ends the job (`JMComplete`). Its token reaches nothing but its own job, and
/// dies with the job.
#[test]
fn a_job_manager_task_adds_tasks_with_its_token() {
    let n = TestNode::new("jobmanager");
    let admin = "admin-token-0123456789abcdef";
    let tf = n.dir.path().join("token");
    std::fs::write(&tf, format!("{admin}\n")).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let a = Agent::start_with(
        &n,
        &[
            ("BERTH_TCP_ADDRESS", addr.as_str()),
            ("BERTH_TOKEN_FILE", tf.to_str().unwrap()),
        ],
    );
    // The manager's script: add w1..w10, then wait until they completed. It keeps its
    // token in its working directory for the test's own checks.
    let script = r#"set -e
echo "$AZ_BATCH_AUTHENTICATION_TOKEN" > token
api="$AZ_BATCH_ACCOUNT_URL/jobs/$AZ_BATCH_JOB_ID"
auth="Authorization: Bearer $AZ_BATCH_AUTHENTICATION_TOKEN"
for i in 1 2 3 4 5 6 7 8 9 10; do
  wget -q -O /dev/null --header "$auth" --header "Content-Type: application/json" \
    --post-data "{\"id\":\"w$i\",\"commandLine\":\"true\",\"containerSettings\":{\"imageName\":\"myimage\",\"containerRunOptions\":\"--network none\"}}" "$api/tasks?api-version=2024-07-01.20.0"
done
n=0
while [ "$(wget -q -O - --header "$auth" "$api/tasks?api-version=2024-07-01.20.0" | grep -o '"state":"completed"' | wc -l)" -lt 10 ]; do
  n=$((n+1)); [ $n -lt 600 ]; sleep 0.1
done
echo added and waited
"#;
    a.wait_node("idle");
    let shared = n.root().join("shared");
    std::fs::write(shared.join("jm.sh"), script).unwrap();
    let jm = json!({"id": "manager", "commandLine": "/bin/sh -c 'exec /bin/sh $AZ_BATCH_NODE_SHARED_DIR/jm.sh'",
        "runExclusive": false,
        "containerSettings": {"imageName": "myimage", "containerRunOptions": "--network host"},
        "authenticationTokenSettings": {"access": ["job"]}});
    let (st, b) = a.req(
        "POST",
        "/jobs",
        Some(&json!({"id": "jmjob", "jobManagerTask": jm})),
    );
    assert_eq!(st, 201, "{b}");
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "other"}))).0, 201);
    let t = a.wait_state_for("jmjob", "manager", "completed", Duration::from_secs(120));
    assert_eq!(
        t["executionInfo"]["exitCode"],
        0,
        "{t}\n{}",
        n.read("jmjob", "manager", "stderr.txt")
    );
    assert_eq!(
        n.read("jmjob", "manager", "stdout.txt"),
        "added and waited\n"
    );
    for i in 1..=10 {
        let w = a.json(&format!("/jobs/jmjob/tasks/w{i}"));
        assert_eq!(w["executionInfo"]["exitCode"], 0, "{w}");
    }
    let j = job_in(&a, "jmjob", "completed");
    assert_eq!(j["executionInfo"]["terminateReason"], "JMComplete", "{j}");

    // Its token: nothing outside its job, and nothing once the job ended.
    let token = std::fs::read_to_string(n.task_dir("jmjob", "manager").join("wd/token")).unwrap();
    let token = token.trim();
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET {} HTTP/1.0\r\nHost: berth\r\nAuthorization: Bearer {token}\r\n\r\n",
            berth_tests::agent::versioned(path)
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.get(9..12).unwrap_or("").to_string()
    };
    assert_eq!(
        get("/jobs/other"),
        "401",
        "the job ended: the token with it"
    );
    let log = std::fs::read_to_string(n.dir.path().join("agent.log")).unwrap();
    assert!(!log.contains(token), "the job token reached the log");
}

/// A job token reaches its own job's tasks and nothing else (another job, the node).
#[test]
fn a_job_token_is_refused_outside_its_job() {
    let n = TestNode::new("jobtoken");
    let admin = "admin-token-0123456789abcdef";
    let tf = n.dir.path().join("token");
    std::fs::write(&tf, format!("{admin}\n")).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let a = Agent::start_with(
        &n,
        &[
            ("BERTH_TCP_ADDRESS", addr.as_str()),
            ("BERTH_TOKEN_FILE", tf.to_str().unwrap()),
        ],
    );
    let jm = json!({"id": "manager", "commandLine": "/bin/sh -c 'echo $AZ_BATCH_AUTHENTICATION_TOKEN > token; sleep 30'",
        "containerSettings": {"imageName": "myimage", "containerRunOptions": "--network none"},
        "authenticationTokenSettings": {"access": ["job"]}});
    assert_eq!(
        a.req(
            "POST",
            "/jobs",
            Some(&json!({"id": "mine", "jobManagerTask": jm}))
        )
        .0,
        201
    );
    assert_eq!(
        a.req("POST", "/jobs", Some(&json!({"id": "theirs"}))).0,
        201
    );
    a.wait_state("mine", "manager", "running");
    let file = n.task_dir("mine", "manager").join("wd/token");
    let t0 = Instant::now();
    while !file.exists() {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(100));
    }
    let token = std::fs::read_to_string(&file).unwrap();
    let token = token.trim().to_string();
    let req = |method: &str, path: &str, auth: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let path = berth_tests::agent::versioned(path);
        write!(s, "{method} {path} HTTP/1.0\r\nHost: berth\r\nAuthorization: Bearer {auth}\r\nContent-Length: 0\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        (out.get(9..12).unwrap_or("").to_string(), out)
    };
    assert_eq!(req("GET", "/jobs/mine/tasks", &token).0, "200");
    let (st, body) = req("GET", "/jobs/theirs/tasks", &token);
    assert_eq!(st, "403", "{body}");
    assert!(body.contains("AuthorizationFailure"), "{body}");
    assert_eq!(req("GET", "/node", &token).0, "403");
    assert_eq!(req("POST", "/jobs/mine/terminate", &token).0, "403");
    // A forged token (another signature) is no token at all.
    let forged = format!("{}AA", &token[..token.len() - 2]);
    assert_eq!(req("GET", "/jobs/mine/tasks", &forged).0, "401");
    // The agent's own token still reaches everything.
    assert_eq!(req("GET", "/node", admin).0, "200");
    // Its job ends (killJobOnCompletion): the token goes with it.
    assert_eq!(req("POST", "/jobs/mine/terminate", admin).0, "202");
    job_in(&a, "mine", "completed");
    assert_eq!(req("GET", "/jobs/mine/tasks", &token).0, "401");
}

/// `exitConditions` through the daemon: a failure listed as `satisfy` lets its dependant
/// run; a job that carries out `jobAction`s is terminated by a failure (`TaskFailed`).
#[test]
fn exit_conditions_in_the_daemon() {
    let n = TestNode::new("agentexit");
    let a = Agent::start(&n);
    let job = json!({"id": "ej", "usesTaskDependencies": true, "onTaskFailure": "performexitoptionsjobaction"});
    assert_eq!(a.req("POST", "/jobs", Some(&job)).0, 201);
    let mut first = ctask("first", "/bin/sh -c 'exit 3'");
    first["exitConditions"] = json!({"exitCodes": [{"code": 3, "exitOptions": {"dependencyAction": "satisfy", "jobAction": "none"}}]});
    let mut then = ctask("then", "/bin/sh -c 'exit 5'");
    then["dependsOn"] = json!({"taskIds": ["first"]});
    let mut last = ctask("last", "true");
    last["dependsOn"] = json!({"taskIds": ["then"]});
    for t in [first, then, last] {
        assert_eq!(a.req("POST", "/jobs/ej/tasks", Some(&t)).0, 201);
    }
    assert_eq!(
        a.wait_state("ej", "then", "completed")["executionInfo"]["exitCode"],
        5
    );
    let j = job_in(&a, "ej", "completed");
    assert_eq!(j["executionInfo"]["terminateReason"], "TaskFailed", "{j}");
    let last = a.json("/jobs/ej/tasks/last");
    assert_eq!(
        last["executionInfo"]["failureInfo"]["code"], "TaskEnded",
        "{last}"
    );
    // A job in the wrong state answers with Batch's code.
    let (st, b) = a.req("POST", "/jobs/ej/tasks", Some(&ctask("late", "true")));
    assert_eq!(st, 409);
    assert!(b.contains("JobCompleted"), "{b}");
}
