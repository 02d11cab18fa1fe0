//! The member over the fake engine and a tiny fake service (an axum router serving the
//! node protocol from memory): commands (terminate, scheduling state, end job), no
//! claim while scheduling is disabled, and a newer enrolment (`NodeSuperseded`) that
//! fences every attempt and enrols again.

use super::client::Client;
use super::start::{self, Joined};
use crate::config::OnShutdown;
use crate::engine::fake::{Fake, Script};
use crate::schedule::queue::Scheduler;
use crate::store::{sqlite::SqliteStore, Store};
use crate::task::create::labels;
use crate::task::NodeContext;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use berth_proto::node_protocol::*;
use berth_proto::{JobView, NodeState, TaskView};
use serde_json::json;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "docker.io/library/busybox:latest";

#[derive(Default)]
struct Svc {
    claims: VecDeque<Claim>,
    commands: Vec<NodeCommand>,
    reports: Vec<Report>,
    enrolments: i64,
    /// The next heartbeat is answered 409 NodeSuperseded.
    supersede: bool,
    /// Claim polls so far.
    polls: usize,
    /// The `leaseAgeMs` heartbeats are answered with.
    lease_age_ms: u64,
}

type Shared = Arc<Mutex<Svc>>;

async fn heartbeat(State(s): State<Shared>, Json(_): Json<Heartbeat>) -> Response {
    let mut f = s.lock().unwrap();
    if std::mem::take(&mut f.supersede) {
        // Another agent enrolled with this node id: epoch 1 is stale from now on.
        f.enrolments += 1;
        let body = json!({"code": SUPERSEDED, "message": {"value": "newer"}});
        return (http::StatusCode::CONFLICT, Json(body)).into_response();
    }
    let commands = std::mem::take(&mut f.commands);
    Json(HeartbeatReply {
        commands,
        lease_age_ms: f.lease_age_ms,
    })
    .into_response()
}

async fn claim(State(s): State<Shared>, Json(c): Json<ClaimRequest>) -> Response {
    s.lock().unwrap().polls += 1;
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
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    Json(ClaimReply::default()).into_response()
}

fn router(s: Shared) -> Router {
    Router::new()
        .route(
            "/nodeagent/v1/enrol",
            post(
                |State(s): State<Shared>, Json(r): Json<EnrolRequest>| async move {
                    let epoch = {
                        let mut f = s.lock().unwrap();
                        f.enrolments += 1;
                        f.enrolments
                    };
                    Json(enrolled(&r.pool_id, epoch))
                },
            ),
        )
        .route("/nodeagent/v1/heartbeat", post(heartbeat))
        .route("/nodeagent/v1/claim", post(claim))
        .route(
            "/nodeagent/v1/report",
            post(
                |State(s): State<Shared>, Json(r): Json<Report>| async move {
                    let mut f = s.lock().unwrap();
                    if r.epoch < f.enrolments {
                        let body = json!({"code": SUPERSEDED, "message": {"value": "newer"}});
                        return (http::StatusCode::CONFLICT, Json(body)).into_response();
                    }
                    f.reports.push(r);
                    Json(json!({})).into_response()
                },
            ),
        )
        .with_state(s)
}

/// The timers of these tests: no self-fence unless a test sets one.
const TIMERS: Timers = Timers {
    heartbeat_ms: 100,
    unknown_ms: 1_000,
    self_fence_ms: None,
    requeue_ms: None,
};

fn enrolled(pool: &str, epoch: i64) -> EnrolResponse {
    EnrolResponse {
        node_token: format!("token-{epoch}"),
        epoch,
        pool: serde_json::from_value(json!({"id": pool, "taskSlotsPerNode": 2})).unwrap(),
        timers: TIMERS,
        proxy_token: Some(format!("proxy-{epoch}")),
    }
}

fn claim_of(attempt: AttemptId, job: &JobView, id: &str) -> Claim {
    let task: TaskView = serde_json::from_value(json!({
        "id": id, "commandLine": "/bin/true", "jobId": job.spec.id, "state": "active",
        "stateTransitionTime": chrono::Utc::now(), "creationTime": chrono::Utc::now(),
        "containerSettings": {"imageName": IMAGE},
    }))
    .unwrap();
    Claim {
        attempt,
        job: job.clone(),
        task,
    }
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn event(s: &Shared, attempt: AttemptId, what: &str) -> Option<Report> {
    s.lock()
        .unwrap()
        .reports
        .iter()
        .find(|r| r.attempt == attempt && serde_json::to_value(&r.event).unwrap()["event"] == what)
        .cloned()
}

/// A member joined to the fake service, over the fake engine (containers run an hour).
struct Node {
    rt: Arc<NodeContext>,
    store: Arc<dyn Store>,
    m: Arc<super::Member>,
    stop: CancellationToken,
    queue_stop: CancellationToken,
    q: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn start(s: &Shared, timers: Timers) -> Node {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let app = router(s.clone());
        tokio::spawn(async move { axum::serve(l, app).await });

        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new();
        fake.add_image(IMAGE, &[]);
        fake.script(|_, _| Script::exits(0, Duration::from_secs(3600)));
        let mut rt = NodeContext::on_engine(Arc::new(fake.clone()), &dir.path().join("root"));
        let joined = Joined {
            client: Client::new(vec![url]).unwrap(),
            secret: "s".into(),
            request: EnrolRequest {
                pool_id: "p".into(),
                node_id: rt.node.node_id.clone(),
                file_address: None,
                agent_version: "0".into(),
            },
            response: EnrolResponse {
                timers,
                ..enrolled("p", 1)
            },
        };
        s.lock().unwrap().enrolments = 1;
        rt.pool.task_slots_per_node = Some(2);
        rt.node.layout.prepare().unwrap();
        rt.status.set_state(NodeState::Idle);
        let rt = Arc::new(rt);
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let (store, ledger, notes) = start::journal(&rt, inner).unwrap();
        let (sched, queue) = Scheduler::new(rt.clone(), store.clone());
        let stop = CancellationToken::new();
        let m = start::member(
            joined,
            rt.clone(),
            store.clone(),
            sched,
            ledger,
            stop.clone(),
        );
        let queue_stop = CancellationToken::new();
        let q = tokio::spawn(queue.run(queue_stop.clone(), OnShutdown::Stop));
        assert!(start::begin(&m, notes).await);
        Node {
            rt,
            store,
            m,
            stop,
            queue_stop,
            q,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.queue_stop.cancel();
        self.q.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_scheduling_state_and_a_newer_enrolment() {
    let s: Shared = Default::default();
    let node = Node::start(&s, TIMERS).await;
    let (rt, store, m) = (node.rt.clone(), node.store.clone(), node.m.clone());
    assert!(m.proxy.is("proxy-1"));

    let job = JobView::new(serde_json::from_value(json!({"id": "j"})).unwrap());
    s.lock()
        .unwrap()
        .claims
        .extend([claim_of(1, &job, "a"), claim_of(2, &job, "b")]);
    until("both running", || {
        event(&s, 1, "running").is_some() && event(&s, 2, "running").is_some()
    })
    .await;

    // Terminate: the task ends TaskEnded and is reported as usual.
    s.lock()
        .unwrap()
        .commands
        .push(NodeCommand::Terminate { attempt: 1 });
    until("a's completion", || event(&s, 1, "completed").is_some()).await;
    let Some(Report {
        event: ReportEvent::Completed { task },
        ..
    }) = event(&s, 1, "completed")
    else {
        unreachable!()
    };
    let code = task
        .execution_info
        .and_then(|i| i.failure_info)
        .map(|f| f.code);
    assert_eq!(code.as_deref(), Some("TaskEnded"));

    // Disabled: a free slot claims nothing until enabled again.
    s.lock()
        .unwrap()
        .commands
        .push(NodeCommand::SchedulingState { enabled: false });
    until("scheduling disabled", || {
        rt.status.get().scheduling_state == "disabled"
    })
    .await;
    // A poll already open when it was disabled ends (the service gives a disabled node
    // nothing); no new one starts.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let polls = s.lock().unwrap().polls;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(s.lock().unwrap().polls, polls, "polled while disabled");
    s.lock().unwrap().claims.push_back(claim_of(3, &job, "c"));
    s.lock()
        .unwrap()
        .commands
        .push(NodeCommand::SchedulingState { enabled: true });
    until("c running", || event(&s, 3, "running").is_some()).await;

    // A newer enrolment owns the node id: everything is fenced, abandoned, enrolled again.
    s.lock().unwrap().supersede = true;
    until("b and c abandoned", || {
        event(&s, 2, "abandoned").is_some() && event(&s, 3, "abandoned").is_some()
    })
    .await;
    assert_eq!(s.lock().unwrap().enrolments, 3, "enrolled again");
    // The new enrolment's file-proxy credential replaces the old one.
    assert!(m.proxy.is("proxy-3") && !m.proxy.is("proxy-1"));
    assert_eq!(event(&s, 3, "abandoned").unwrap().epoch, 3);
    for a in ["2", "3"] {
        let left = rt
            .engine
            .list_labelled(&[(labels::POOL_ATTEMPT, a)])
            .await
            .unwrap();
        assert!(left.is_empty(), "attempt {a}'s container is left: {left:?}");
    }
    until("b and c forgotten", || {
        store.task("j", "b").unwrap().is_none() && store.task("j", "c").unwrap().is_none()
    })
    .await;
    assert!(event(&s, 2, "completed").is_none() && event(&s, 3, "completed").is_none());

    // The job ended in the service: ended here, then forgotten.
    s.lock()
        .unwrap()
        .commands
        .push(NodeCommand::EndJob { job_id: "j".into() });
    until("the job forgotten", || store.job("j").unwrap().is_none()).await;
    node.stop().await;
}

/// The self-fence counts from the lease renewal the service recorded (the reply's
/// `leaseAgeMs`), not from the answered heartbeat: answered every 100 ms, but with a
/// renewal 3.5 s old, a 3 s self-fence fences the running task at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_fence_counts_from_the_recorded_renewal() {
    let s: Shared = Default::default();
    let node = Node::start(
        &s,
        Timers {
            self_fence_ms: Some(3_000),
            ..TIMERS
        },
    )
    .await;
    let job = JobView::new(serde_json::from_value(json!({"id": "j"})).unwrap());
    s.lock().unwrap().claims.push_back(claim_of(1, &job, "a"));
    until("a running", || event(&s, 1, "running").is_some()).await;
    // Heartbeats answered with a fresh renewal keep it running.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert!(!node
        .m
        .self_fenced
        .load(std::sync::atomic::Ordering::Relaxed));
    s.lock().unwrap().lease_age_ms = 3_500;
    until("self-fenced", || {
        node.m
            .self_fenced
            .load(std::sync::atomic::Ordering::Relaxed)
    })
    .await;
    until("a abandoned", || event(&s, 1, "abandoned").is_some()).await;
    node.stop().await;
}
