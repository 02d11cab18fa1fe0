//! `berth agent --service URL --pool ID` on the real engine, against a fake service in
//! this test (axum on 127.0.0.1, the node protocol served from memory, fast timers): the
//! agent enrols, runs what it claims, reports `running` and `completed` with the right
//! attempts, labels the containers with their attempt; a `fence` command kills a running
//! one, and a service that stops answering past the self-fence time gets the node to kill
//! its own container and report it `abandoned` once the service answers again.
#![allow(clippy::disallowed_types)]

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use berth_proto::node_protocol::*;
use berth_proto::{JobView, TaskView};
use berth_tests::agent::Agent;
use berth_tests::*;
use serde_json::json;
use std::collections::VecDeque;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the fake service holds and records.
#[derive(Default)]
struct Fake {
    /// Answer every call 503 while set (the service or its database away).
    down: bool,
    claims: VecDeque<Claim>,
    commands: Vec<NodeCommand>,
    reports: Vec<Report>,
    heartbeats: Vec<Heartbeat>,
    enrolled: Vec<EnrolRequest>,
    /// What `adopt` answers is still current, and what it was asked.
    current: Vec<AttemptId>,
    adopt_asked: Vec<AdoptRequest>,
    /// `leave` calls.
    left: usize,
    /// Attempts whose containers `leave` looks for, and how many of theirs were still
    /// running at each `leave`.
    watch: Vec<AttemptId>,
    running_at_leave: Vec<usize>,
}

type Shared = Arc<Mutex<Fake>>;

const TOKEN: &str = "node-token-1";
/// What the service's file proxy sends to the agent's TCP file API.
const PROXY: &str = "proxy-credential-0123456789";

/// One HTTP/1.0 request over TCP to `base` (`http://host:port`); (status, body).
fn http(base: &str, method: &str, path: &str, token: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    // The agent's API requires Batch's api-version, as the service's proxy sends it.
    let path = berth_tests::agent::versioned(path);
    let head = format!("{method} {path} HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut out = vec![];
    s.read_to_end(&mut out).ok();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn refused(status: StatusCode, code: &str) -> Response {
    let body = json!({"code": code, "message": {"lang": "en-US", "value": code}});
    (status, Json(body)).into_response()
}

/// 503 while down; 401 without the node token.
fn gate(s: &Shared, h: &axum::http::HeaderMap, token: &str) -> Option<Response> {
    if s.lock().unwrap().down {
        return Some(refused(StatusCode::SERVICE_UNAVAILABLE, "ServerBusy"));
    }
    let auth = h.get("authorization").and_then(|v| v.to_str().ok());
    (auth != Some(&format!("Bearer {token}")))
        .then(|| refused(StatusCode::UNAUTHORIZED, "AuthenticationFailed"))
}

async fn enrol(
    State(s): State<Shared>,
    h: axum::http::HeaderMap,
    Json(r): Json<EnrolRequest>,
) -> Response {
    if let Some(no) = gate(&s, &h, "the-secret") {
        return no;
    }
    let epoch = {
        let mut f = s.lock().unwrap();
        f.enrolled.push(r.clone());
        f.enrolled.len() as i64
    };
    let pool = serde_json::from_value(json!({"id": r.pool_id, "taskSlotsPerNode": 2,
        "virtualMachineConfiguration": {"containerConfiguration": {"type": "dockerCompatible"}}}))
    .unwrap();
    Json(EnrolResponse {
        node_token: TOKEN.into(),
        epoch,
        pool,
        timers: Timers {
            heartbeat_ms: 300,
            unknown_ms: 1_000,
            self_fence_ms: Some(3_000),
            requeue_ms: Some(5_000),
        },
        proxy_token: Some(PROXY.into()),
    })
    .into_response()
}

async fn heartbeat(
    State(s): State<Shared>,
    h: axum::http::HeaderMap,
    Json(b): Json<Heartbeat>,
) -> Response {
    if let Some(no) = gate(&s, &h, TOKEN) {
        return no;
    }
    let mut f = s.lock().unwrap();
    f.heartbeats.push(b);
    let commands = std::mem::take(&mut f.commands);
    Json(HeartbeatReply {
        commands,
        ..Default::default()
    })
    .into_response()
}

async fn claim(
    State(s): State<Shared>,
    h: axum::http::HeaderMap,
    Json(c): Json<ClaimRequest>,
) -> Response {
    if let Some(no) = gate(&s, &h, TOKEN) {
        return no;
    }
    // A short long poll: the test hands out work in its own time.
    for _ in 0..10 {
        {
            let mut f = s.lock().unwrap();
            if !f.claims.is_empty() {
                let n = (c.free_slots as usize).min(f.claims.len());
                let claims = f.claims.drain(..n).collect();
                return Json(ClaimReply {
                    claims,
                    commands: vec![],
                })
                .into_response();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Json(ClaimReply::default()).into_response()
}

async fn report(
    State(s): State<Shared>,
    h: axum::http::HeaderMap,
    Json(r): Json<Report>,
) -> Response {
    if let Some(no) = gate(&s, &h, TOKEN) {
        return no;
    }
    s.lock().unwrap().reports.push(r);
    Json(json!({})).into_response()
}

async fn adopt(
    State(s): State<Shared>,
    h: axum::http::HeaderMap,
    Json(a): Json<AdoptRequest>,
) -> Response {
    if let Some(no) = gate(&s, &h, TOKEN) {
        return no;
    }
    let mut f = s.lock().unwrap();
    let current = a
        .attempts
        .iter()
        .copied()
        .filter(|x| f.current.contains(x))
        .collect();
    f.adopt_asked.push(a);
    Json(AdoptReply { current }).into_response()
}

async fn leave(State(s): State<Shared>, h: axum::http::HeaderMap) -> Response {
    if let Some(no) = gate(&s, &h, TOKEN) {
        return no;
    }
    let watch = s.lock().unwrap().watch.clone();
    let running = watch.iter().map(|a| running_of(*a).len()).sum();
    let mut f = s.lock().unwrap();
    f.left += 1;
    f.running_at_leave.push(running);
    Json(json!({})).into_response()
}

/// Serves the fake on a thread of its own; its URL.
fn serve(s: Shared) -> String {
    let app = Router::new()
        .route("/nodeagent/v1/enrol", post(enrol))
        .route("/nodeagent/v1/heartbeat", post(heartbeat))
        .route("/nodeagent/v1/claim", post(claim))
        .route("/nodeagent/v1/report", post(report))
        .route("/nodeagent/v1/adopt", post(adopt))
        .route("/nodeagent/v1/leave", post(leave))
        .with_state(s);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    url
}

fn claim_of(attempt: AttemptId, job: &JobView, id: &str, command: &str) -> Claim {
    let task: TaskView = serde_json::from_value(json!({
        "id": id, "commandLine": command, "jobId": job.spec.id, "state": "active",
        "stateTransitionTime": chrono::Utc::now(), "creationTime": chrono::Utc::now(),
        "containerSettings": {"imageName": "myimage", "containerRunOptions": "--network none"},
    }))
    .unwrap();
    Claim {
        attempt,
        job: job.clone(),
        task,
    }
}

/// Waits until `check` holds over the fake's records.
fn wait_for(s: &Shared, what: &str, limit: Duration, check: impl Fn(&Fake) -> bool) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if check(&s.lock().unwrap()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn reported(f: &Fake, attempt: AttemptId, event: &str) -> Option<Report> {
    f.reports
        .iter()
        .find(|r| r.attempt == attempt && serde_json::to_value(&r.event).unwrap()["event"] == event)
        .cloned()
}

/// Container ids labelled with `attempt`.
fn containers_of(attempt: AttemptId) -> Vec<String> {
    listed(attempt, "-aq")
}

/// The running containers of `attempt`.
fn running_of(attempt: AttemptId) -> Vec<String> {
    listed(attempt, "-q")
}

/// `docker ps FLAGS` of `attempt`'s containers.
fn listed(attempt: AttemptId, flags: &str) -> Vec<String> {
    let out = docker(&[
        "ps",
        flags,
        "--filter",
        &format!("label={ATTEMPT_LABEL}={attempt}"),
    ]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn wait_containers(attempt: AttemptId, present: bool, limit: Duration) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if containers_of(attempt).is_empty() != present {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("attempt {attempt}'s container: expected present={present}");
}

fn start_agent(n: &TestNode, url: &str) -> Agent {
    let secret = n.dir.path().join("secret");
    std::fs::write(&secret, "the-secret\n").unwrap();
    let token = n.dir.path().join("token");
    std::fs::write(&token, "agent-token-0123456789\n").unwrap();
    let sock = n.dir.path().join("berth.sock");
    let log_path = n.dir.path().join("agent.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(berth_bin())
        .args([
            "agent",
            "--config",
            "/dev/null",
            "--engine",
            &n.engine,
            "--node-id",
            &n.node_id,
        ])
        .arg("--node-root")
        .arg(n.root())
        .arg("--socket")
        .arg(&sock)
        .args(["--service", url, "--pool", "fakepool"])
        .env("BERTH_ENROLMENT_SECRET_FILE", &secret)
        .env("BERTH_TCP_ADDRESS", "127.0.0.1:0")
        .env("BERTH_TOKEN_FILE", &token)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Agent {
        child,
        sock,
        log: log_path,
    }
}

#[test]
fn a_member_runs_claims_reports_them_and_fences_itself() {
    let n = TestNode::new("member");
    let s: Shared = Default::default();
    let url = serve(s.clone());
    let job = JobView::new(
        serde_json::from_value(json!({"id": "mjob", "poolInfo": {"poolId": "fakepool"},
            "onAllTasksComplete": "terminatejob"}))
        .unwrap(),
    );
    s.lock().unwrap().claims.extend([
        claim_of(101, &job, "quick", "sh -c 'echo hi'"),
        claim_of(102, &job, "long", "sleep 300"),
    ]);
    let agent = start_agent(&n, &url);

    // Enrolled, both run; the quick one is reported with its attempt, its output kept.
    wait_for(
        &s,
        "the quick task's completion",
        Duration::from_secs(60),
        |f| reported(f, 101, "completed").is_some() && reported(f, 102, "running").is_some(),
    );
    {
        let f = s.lock().unwrap();
        assert_eq!(f.enrolled[0].pool_id, "fakepool");
        assert_eq!(f.enrolled[0].node_id, n.node_id);
        assert!(
            reported(&f, 101, "running").is_some(),
            "running before completed"
        );
        let Some(Report {
            event: ReportEvent::Completed { task },
            job_id,
            task_id,
            epoch,
            ..
        }) = reported(&f, 101, "completed")
        else {
            unreachable!()
        };
        assert_eq!(
            (job_id.as_str(), task_id.as_str(), epoch),
            ("mjob", "quick", 1)
        );
        let info = task.execution_info.unwrap();
        assert_eq!(info.exit_code, Some(0), "{info:?}");
        assert_eq!(task.pool_attempt, Some(101));
        assert_eq!(task.node_info.unwrap().node_id, n.node_id);
    }
    let out = std::fs::read_to_string(n.task_dir("mjob", "quick").join("stdout.txt")).unwrap();
    assert_eq!(out, "hi\n");
    // The service's proxy reads task and node files at the address the heartbeat gives,
    // and nothing else; berth's own state is never a node file.
    wait_for(&s, "a file address", Duration::from_secs(10), |f| {
        f.heartbeats
            .last()
            .is_some_and(|h| h.file_address.is_some())
    });
    let files = s
        .lock()
        .unwrap()
        .heartbeats
        .last()
        .unwrap()
        .file_address
        .clone()
        .unwrap();
    let (st, body) = http(
        &files,
        "GET",
        "/jobs/mjob/tasks/quick/files/stdout.txt",
        PROXY,
    );
    assert_eq!((st, body.as_str()), (200, "hi\n"));
    let node_files = format!("/pools/fakepool/nodes/{}/files", n.node_id);
    let (st, body) = http(
        &files,
        "GET",
        &format!("{node_files}/workitems/mjob/job-1/quick/stdout.txt"),
        PROXY,
    );
    assert_eq!((st, body.as_str()), (200, "hi\n"));
    let (st, body) = http(&files, "GET", &node_files, PROXY);
    assert_eq!(st, 200, "{body}");
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&body).unwrap()["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.contains(&"workitems".to_string()) && !names.contains(&"berth".to_string()),
        "{names:?}"
    );
    assert_eq!(
        http(
            &files,
            "GET",
            &format!("{node_files}/berth/state.db"),
            PROXY
        )
        .0,
        404
    );
    assert_eq!(
        http(&files, "GET", "/jobs", PROXY).0,
        403,
        "the proxy reads files only"
    );
    assert_eq!(
        http(
            &files,
            "GET",
            "/jobs/mjob/tasks/quick/files/stdout.txt",
            "forged-credential-0000"
        )
        .0,
        401
    );
    // The running one's container carries its attempt; heartbeats name it.
    wait_containers(102, true, Duration::from_secs(10));
    wait_for(
        &s,
        "a heartbeat naming attempt 102",
        Duration::from_secs(10),
        |f| {
            f.heartbeats
                .last()
                .is_some_and(|h| h.running.contains(&102))
        },
    );

    // A fence command kills it, and its end is never reported.
    s.lock()
        .unwrap()
        .commands
        .push(NodeCommand::Fence { attempt: 102 });
    wait_containers(102, false, Duration::from_secs(15));
    wait_for(
        &s,
        "heartbeats without attempt 102",
        Duration::from_secs(10),
        |f| {
            f.heartbeats
                .last()
                .is_some_and(|h| !h.running.contains(&102))
        },
    );

    // Another claim runs; then the service goes away past the self-fence time.
    s.lock()
        .unwrap()
        .claims
        .push_back(claim_of(103, &job, "long2", "sleep 300"));
    wait_for(&s, "attempt 103 running", Duration::from_secs(30), |f| {
        reported(f, 103, "running").is_some()
    });
    wait_containers(103, true, Duration::from_secs(10));
    let down = Instant::now();
    s.lock().unwrap().down = true;
    wait_containers(103, false, Duration::from_secs(20));
    let took = down.elapsed();
    assert!(
        took >= Duration::from_millis(2_500),
        "fenced itself after {took:?}, before F"
    );
    std::thread::sleep(Duration::from_secs(1));
    s.lock().unwrap().down = false;
    wait_for(&s, "attempt 103 abandoned", Duration::from_secs(20), |f| {
        reported(f, 103, "abandoned").is_some()
    });
    {
        let f = s.lock().unwrap();
        assert!(
            reported(&f, 102, "completed").is_none(),
            "a fenced attempt's end is not reported"
        );
        assert!(
            reported(&f, 103, "completed").is_none(),
            "a self-fenced attempt's end is not reported"
        );
    }
    // SIGTERM: the node leaves (the service requeues), then stops.
    assert_eq!(agent.term(), Some(0));
    assert_eq!(s.lock().unwrap().left, 1);
}

/// SIGTERM while a task runs: the node stops its container (here: kills it, past the
/// leave's bound, `sleep` ignoring SIGTERM) before it tells the service it leaves, since
/// the service requeues the task at once and its next attempt must not run beside it.
#[test]
fn a_leaving_member_stops_its_containers_before_it_tells_the_service() {
    let n = TestNode::new("member-leave");
    let s: Shared = Default::default();
    let url = serve(s.clone());
    let job = JobView::new(serde_json::from_value(json!({"id": "ljob"})).unwrap());
    {
        let mut f = s.lock().unwrap();
        f.claims.push_back(claim_of(301, &job, "long", "sleep 300"));
        f.watch = vec![301];
    }
    let agent = start_agent(&n, &url);
    wait_for(&s, "attempt 301 running", Duration::from_secs(60), |f| {
        reported(f, 301, "running").is_some()
    });
    let t = Instant::now();
    while running_of(301).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "attempt 301 never ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(agent.term(), Some(0));
    let f = s.lock().unwrap();
    assert_eq!(
        f.running_at_leave,
        [0],
        "containers still running when the node left"
    );
    assert!(
        reported(&f, 301, "completed").is_none(),
        "a left attempt's end is not reported"
    );
}

#[test]
fn a_restarted_member_adopts_only_the_attempts_still_current() {
    let n = TestNode::new("member-restart");
    let s: Shared = Default::default();
    let url = serve(s.clone());
    let job = JobView::new(serde_json::from_value(json!({"id": "rjob"})).unwrap());
    {
        let mut f = s.lock().unwrap();
        f.claims.extend([
            claim_of(201, &job, "kept", "sh -c 'sleep 5; echo done'"),
            claim_of(202, &job, "stale", "sleep 300"),
        ]);
        f.current = vec![201];
    }
    let mut agent = start_agent(&n, &url);
    wait_for(&s, "both running", Duration::from_secs(60), |f| {
        reported(f, 201, "running").is_some() && reported(f, 202, "running").is_some()
    });
    wait_containers(201, true, Duration::from_secs(10));
    wait_containers(202, true, Duration::from_secs(10));
    // The agent dies; its containers run on.
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    drop(agent);
    let agent = start_agent(&n, &url);
    wait_for(
        &s,
        "the kept attempt's completion",
        Duration::from_secs(60),
        |f| reported(f, 201, "completed").is_some(),
    );
    wait_containers(202, false, Duration::from_secs(10));
    {
        let f = s.lock().unwrap();
        assert_eq!(f.enrolled.len(), 2);
        // Asked at every start, with nothing the first time, so that the service can
        // requeue what a node no longer has.
        assert_eq!(
            (f.adopt_asked[0].epoch, f.adopt_asked[0].attempts.len()),
            (1, 0)
        );
        let asked = f
            .adopt_asked
            .iter()
            .find(|a| a.epoch == 2)
            .expect("asked after the restart");
        assert_eq!(asked.attempts, vec![201, 202]);
        let Some(Report {
            event: ReportEvent::Completed { task },
            epoch,
            ..
        }) = reported(&f, 201, "completed")
        else {
            unreachable!()
        };
        assert_eq!(epoch, 2);
        assert_eq!(task.execution_info.unwrap().exit_code, Some(0));
        assert!(
            reported(&f, 202, "completed").is_none(),
            "the stale attempt is not reported"
        );
    }
    let out = std::fs::read_to_string(n.task_dir("rjob", "kept").join("stdout.txt")).unwrap();
    assert_eq!(out, "done\n");
    // Removed from the pool: the node leaves and the agent exits 0.
    s.lock().unwrap().commands.push(NodeCommand::Remove);
    let mut agent = agent;
    let t = Instant::now();
    let status = loop {
        if let Some(st) = agent.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the agent did not exit"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0));
    assert_eq!(s.lock().unwrap().left, 1);
}
