//! Pool mode's node protocol against a real PostgreSQL: the service's routes run
//! in-process (the library's `node_api::router` and client routes without their guard,
//! the LISTEN loop and the lease sweeper)
//! and the tests are simulated nodes speaking HTTP. Pools, jobs and tasks are written with
//! SQL as the client REST would write them.

use berth_agent::service::{db, node_api, state, sweep, wake};
use berth_tests::postgres::Postgres;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "enrol-secret-for-tests";
const PROXY_SECRET: &str = "proxy-secret-for-tests";

/// One service on a fresh PostgreSQL.
struct Svc {
    pg: Postgres,
    base: String,
    http: reqwest::Client,
    cancel: CancellationToken,
}

impl Svc {
    async fn start() -> Svc {
        let pg = Postgres::start();
        let db = db::Db::new(&pg.url).unwrap();
        db::migrate::run(&db).await.unwrap();
        let st = state::ServiceState {
            db,
            settings: Arc::new(state::Settings {
                client_tokens: vec!["client".into()],
                enrolment_secret: SECRET.into(),
                proxy_secret: PROXY_SECRET.into(),
                ..Default::default()
            }),
            wake: Arc::new(wake::Wake::default()),
        };
        let cancel = CancellationToken::new();
        tokio::spawn(wake::listen(
            pg.url.clone(),
            st.wake.clone(),
            cancel.clone(),
        ));
        tokio::spawn(sweep::run(pg.url.clone(), cancel.clone()));
        let app = node_api::router()
            .merge(berth_agent::service::api::router())
            .merge(berth_agent::service::api::nodes::router())
            .with_state(st);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let c = cancel.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { c.cancelled().await })
                .await
                .ok();
        });
        // The listener is up when a notice sent now wakes a claim; give it a moment.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Svc {
            pg,
            base,
            http: reqwest::Client::new(),
            cancel,
        }
    }

    /// A pool of `slots` slots per node; `timers` (unknown, requeue) in ms.
    fn pool(&self, id: &str, slots: i32, fill: &str, timers: (i64, Option<i64>)) {
        let spec = json!({"id": id, "taskSlotsPerNode": slots});
        let requeue = timers.1.map_or("NULL".to_string(), |v| v.to_string());
        self.pg.psql(&format!(
            "INSERT INTO pools (id, id_key, spec, task_slots_per_node, node_fill_type,
                                heartbeat_ms, unknown_ms, self_fence_ms, requeue_ms)
             VALUES ('{id}', lower('{id}'), '{spec}', {slots}, '{fill}', 1000, {}, NULL, {requeue})",
            timers.0
        ));
    }

    fn job(&self, id: &str, pool: &str, priority: i32, max_parallel: i32) {
        let view = json!({"id": id, "poolInfo": {"poolId": pool}, "priority": priority,
            "maxParallelTasks": max_parallel, "state": "active",
            "stateTransitionTime": "2026-01-01T00:00:00Z", "creationTime": "2026-01-01T00:00:00Z"});
        self.pg.psql(&format!(
            "INSERT INTO jobs (id, id_key, pool_id, priority, max_parallel, state, view)
             VALUES ('{id}', lower('{id}'), '{pool}', {priority}, {max_parallel}, 'active', '{view}')"
        ));
    }

    /// A task of `slots` slots depending on `deps`; ready (and notified) when it has none.
    fn task(&self, job: &str, id: &str, slots: i32, deps: &[&str]) {
        let view = json!({"id": id, "commandLine": "true", "jobId": job, "state": "active",
            "requiredSlots": slots,
            "stateTransitionTime": "2026-01-01T00:00:00Z", "creationTime": "2026-01-01T00:00:00Z"});
        let mut sql = format!(
            "INSERT INTO tasks (job_id, id, id_key, state, required_slots, view, waiting_on)
             VALUES ('{job}', '{id}', lower('{id}'), 'active', {slots}, '{view}', {});",
            deps.len()
        );
        for d in deps {
            sql += &format!(
                "INSERT INTO task_deps (job_id, task_key, depends_on_key)
                 VALUES ('{job}', lower('{id}'), lower('{d}'));"
            );
        }
        if deps.is_empty() {
            sql += &format!(
                "INSERT INTO ready (task_seq, pool_id, job_id, job_priority, job_seq, required_slots)
                 SELECT t.seq, p.id, j.id, j.priority, j.seq, t.required_slots
                 FROM tasks t JOIN jobs j ON j.id = t.job_id JOIN pools p ON p.id_key = lower(j.pool_id)
                 WHERE t.job_id = '{job}' AND t.id = '{id}';
                 SELECT pg_notify('berth_ready', (SELECT lower(pool_id) FROM jobs WHERE id = '{job}'));"
            );
        }
        self.pg.psql(&sql);
    }

    /// Runs `sql` in a psql session of its own, which holds its locks through the
    /// `pg_sleep` it must contain; returns once that sleep runs (the locks are taken).
    async fn hold(&self, sql: &str) -> std::process::Child {
        let child = std::process::Command::new("psql")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.pg.url,
                "-c",
                sql,
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while self.one("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'") != "1"
        {
            assert!(t0.elapsed() < Duration::from_secs(10), "no lock taken");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child
    }

    /// One value of one row.
    fn one(&self, sql: &str) -> String {
        self.pg.psql(sql).trim().to_string()
    }

    fn task_view(&self, job: &str, id: &str) -> Value {
        serde_json::from_str(&self.one(&format!(
            "SELECT view FROM tasks WHERE job_id = '{job}' AND id = '{id}'"
        )))
        .unwrap()
    }

    async fn post(&self, path: &str, bearer: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!(
                "{}{}{path}",
                self.base,
                berth_proto::node_protocol::PREFIX
            ))
            .bearer_auth(bearer)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn enrol(&self, pool: &str, node: &str) -> Node {
        let (s, v) = self
            .post(
                "/enrol",
                SECRET,
                &json!({"poolId": pool, "nodeId": node, "agentVersion": "test"}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let n = Node {
            id: node.into(),
            pool: pool.into(),
            token: v["nodeToken"].as_str().unwrap().into(),
            epoch: v["epoch"].as_i64().unwrap(),
        };
        assert_eq!(self.heartbeat(&n, "idle", &[]).await.0, 200);
        n
    }

    async fn heartbeat(&self, n: &Node, state: &str, running: &[i64]) -> (u16, Value) {
        self.heartbeat_pulling(n, state, running, json!([])).await
    }

    /// A heartbeat with berth's `imagePulls` (as the agent's `GET /node` shows them).
    async fn heartbeat_pulling(
        &self,
        n: &Node,
        state: &str,
        running: &[i64],
        pulls: Value,
    ) -> (u16, Value) {
        let node = json!({"id": n.id, "poolId": n.pool, "state": state,
            "schedulingState": "enabled", "stateTransitionTime": "2026-01-01T00:00:00Z",
            "nodeAgentInfo": {"version": "test", "lastUpdateTime": "2026-01-01T00:00:00Z"}});
        self.post(
            "/heartbeat",
            &n.token,
            &json!({"epoch": n.epoch, "node": node, "running": running, "imagePulls": pulls}),
        )
        .await
    }

    /// The attempts claimed and their task ids.
    async fn claim(&self, n: &Node, free: u32, wait_ms: u64) -> Vec<(i64, String)> {
        let (s, v) = self
            .post(
                "/claim",
                &n.token,
                &json!({"epoch": n.epoch, "freeSlots": free, "waitMs": wait_ms}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["claims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["attempt"].as_i64().unwrap(),
                    c["task"]["id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    async fn complete(
        &self,
        n: &Node,
        attempt: i64,
        job: &str,
        task: &str,
        result: &str,
    ) -> (u16, Value) {
        let view = json!({"id": task, "commandLine": "true", "jobId": job, "state": "completed",
            "stateTransitionTime": "2026-01-01T00:00:01Z", "creationTime": "2026-01-01T00:00:00Z",
            "poolAttempt": attempt,
            "executionInfo": {"retryCount": 0, "requeueCount": 0, "result": result,
                              "exitCode": if result == "success" { 0 } else { 1 }},
            "nodeInfo": {"poolId": n.pool, "nodeId": n.id, "taskRootDirectory": "/x"}});
        self.post(
            "/report",
            &n.token,
            &json!({"epoch": n.epoch, "attempt": attempt, "jobId": job, "taskId": task,
                    "event": "completed", "task": view}),
        )
        .await
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct Node {
    id: String,
    pool: String,
    token: String,
    epoch: i64,
}

fn ids(claims: &[(i64, String)]) -> Vec<&str> {
    claims.iter().map(|c| c.1.as_str()).collect()
}

/// Enrolment needs the secret; the token it gives works until the node enrols again, and
/// a forged or superseded token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enrol_gives_a_token_that_only_its_epoch_may_use() {
    let svc = Svc::start().await;
    svc.pool("P1", 2, "spread", (5000, Some(15000)));
    let (s, v) = svc
        .post(
            "/enrol",
            "wrong",
            &json!({"poolId": "p1", "nodeId": "n1", "agentVersion": "t"}),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (401, Some("AuthenticationFailed")));
    let (s, v) = svc
        .post(
            "/enrol",
            SECRET,
            &json!({"poolId": "nope", "nodeId": "n1", "agentVersion": "t"}),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (404, Some("PoolNotFound")));
    let (s, v) = svc
        .post(
            "/enrol",
            SECRET,
            &json!({"poolId": "p1", "nodeId": "bad id", "agentVersion": "t"}),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("InvalidPropertyValue")));

    let n = svc.enrol("p1", "n1").await;
    assert_eq!(
        svc.one("SELECT pool_id || '/' || state FROM nodes"),
        "P1/idle"
    );
    let forged = Node {
        token: format!("{}.AAAA", n.epoch),
        ..Node {
            id: n.id.clone(),
            pool: n.pool.clone(),
            token: String::new(),
            epoch: n.epoch,
        }
    };
    let (s, v) = svc.heartbeat(&forged, "idle", &[]).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("AuthenticationFailed")));

    let again = svc.enrol("P1", "n1").await;
    assert!(again.epoch > n.epoch);
    let (s, v) = svc.heartbeat(&n, "idle", &[]).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("NodeSuperseded")));
    assert_eq!(svc.heartbeat(&again, "idle", &[]).await.0, 200);
}

/// A claim takes the highest-priority job's tasks first, then job and task order; skips
/// what does not fit the free slots; holds a job to its maxParallelTasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_honour_priority_slots_and_max_parallel() {
    let svc = Svc::start().await;
    svc.pool("p", 4, "pack", (5000, Some(15000)));
    svc.job("low", "p", 0, -1);
    svc.job("high", "p", 10, 1);
    for t in ["a1", "a2"] {
        svc.task("low", t, 1, &[]);
    }
    svc.task("low", "big", 3, &[]);
    svc.task("high", "b1", 1, &[]);
    svc.task("high", "b2", 1, &[]);
    let n = svc.enrol("p", "n1").await;
    let got = svc.claim(&n, 4, 0).await;
    // b2 waits for b1 (maxParallelTasks 1); big (3 slots) no longer fits after b1, a1.
    assert_eq!(ids(&got), ["b1", "a1", "a2"]);
    assert_eq!(svc.one("SELECT used_slots FROM nodes"), "3");
    assert_eq!(
        svc.one("SELECT state FROM tasks WHERE id = 'b1'"),
        "preparing"
    );
    assert!(
        svc.claim(&n, 1, 0).await.is_empty(),
        "b2 is held by maxParallelTasks"
    );
    let b1 = got[0].0;
    assert_eq!(svc.complete(&n, b1, "high", "b1", "success").await.0, 200);
    assert_eq!(ids(&svc.claim(&n, 2, 0).await), ["b2"]);
    assert_eq!(svc.one("SELECT running FROM jobs WHERE id = 'high'"), "1");
    let done = svc.task_view("high", "b1");
    assert_eq!(done["state"], "completed");
    assert!(done.get("poolAttempt").is_none());
    // A completion sent again counts once.
    assert_eq!(svc.complete(&n, b1, "high", "b1", "success").await.0, 200);
    assert_eq!(svc.one("SELECT running FROM jobs WHERE id = 'high'"), "1");
}

/// spread gives each asking node one task in turn; pack fills the lowest-id node first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spread_and_pack_over_three_nodes() {
    let svc = Svc::start().await;
    svc.pool("s", 2, "spread", (5000, Some(15000)));
    svc.pool("k", 2, "pack", (5000, Some(15000)));
    svc.job("js", "s", 0, -1);
    svc.job("jk", "k", 0, -1);
    let mut spread = vec![];
    let mut pack = vec![];
    for i in 1..=3 {
        spread.push(svc.enrol("s", &format!("n{i}")).await);
        pack.push(svc.enrol("k", &format!("n{i}")).await);
    }
    // Every node asks once, so the turn rule counts it.
    for n in spread.iter().chain(&pack) {
        assert!(svc.claim(n, 2, 0).await.is_empty());
    }
    for i in 0..3 {
        svc.task("js", &format!("t{i}"), 1, &[]);
        svc.task("jk", &format!("t{i}"), 1, &[]);
    }
    assert_eq!(svc.claim(&spread[0], 2, 0).await.len(), 1);
    assert!(
        svc.claim(&spread[0], 1, 0).await.is_empty(),
        "others hold fewer"
    );
    assert_eq!(svc.claim(&spread[1], 2, 0).await.len(), 1);
    assert_eq!(svc.claim(&spread[2], 2, 0).await.len(), 1);
    assert_eq!(
        svc.one(
            "SELECT string_agg(used_slots::text, ',' ORDER BY id) FROM nodes WHERE pool_id = 's'"
        ),
        "1,1,1"
    );

    assert!(
        svc.claim(&pack[1], 2, 0).await.is_empty(),
        "n1 is first in line"
    );
    assert_eq!(svc.claim(&pack[0], 2, 0).await.len(), 2);
    assert!(svc.claim(&pack[2], 2, 0).await.is_empty(), "n2 before n3");
    assert_eq!(svc.claim(&pack[1], 2, 0).await.len(), 1);
    assert_eq!(
        svc.one(
            "SELECT string_agg(used_slots::text, ',' ORDER BY id) FROM nodes WHERE pool_id = 'k'"
        ),
        "2,1,0"
    );
}

/// A heartbeat that changes nothing writes nothing while the recorded renewal is younger
/// than `unknownMs / 2 - heartbeatMs` (here 5,000 / 2 - 1,000 ms), and says how old that
/// renewal is; one that changes the node, or comes later, renews at once (age 0). The
/// row's `xmin` shows whether it was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unchanged_heartbeats_renew_the_lease_every_other_beat() {
    let svc = Svc::start().await;
    svc.pool("p", 1, "spread", (5000, Some(15000)));
    let n = svc.enrol("p", "n1").await;
    let version = || svc.one("SELECT xmin FROM nodes WHERE id = 'n1'");
    let v0 = version();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, reply) = svc.heartbeat(&n, "idle", &[]).await;
    assert_eq!(s, 200, "{reply}");
    let age = reply["leaseAgeMs"].as_u64().unwrap();
    assert!((250..1500).contains(&age), "{reply}");
    assert_eq!(version(), v0, "an unchanged heartbeat wrote the node");

    // A change is written at once.
    let (_, reply) = svc.heartbeat(&n, "running", &[]).await;
    assert_eq!(reply["leaseAgeMs"], 0, "{reply}");
    let v1 = version();
    assert_ne!(v1, v0);
    assert_eq!(
        svc.one("SELECT state FROM nodes WHERE id = 'n1'"),
        "running"
    );

    // Past the window, an unchanged one renews.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (_, reply) = svc.heartbeat(&n, "running", &[]).await;
    assert_eq!(reply["leaseAgeMs"], 0, "{reply}");
    assert_ne!(version(), v1);
}

/// The pulls a node reports in its heartbeat show on the service's node view while they
/// run (each change of bytes written), and are gone once the node reports none; a repeat
/// of the same pulls is an unchanged heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn image_pulls_in_heartbeats_show_on_the_node_view() {
    let svc = Svc::start().await;
    svc.pool("p", 1, "spread", (5000, Some(15000)));
    let n = svc.enrol("p", "n1").await;
    let pull = |bytes: u64| {
        json!([{"image": "reg.local/big:1", "state": "pulling", "attempt": 1,
            "layersDone": 0, "layers": 2, "bytes": bytes, "totalBytes": 1000,
            "startTime": "2026-01-01T00:00:00Z"}])
    };
    let shown = || async {
        let (s, v) = svc.rest("GET", "/pools/p/nodes/n1", None).await;
        assert_eq!(s, 200, "{v}");
        v["imagePulls"].clone()
    };
    assert_eq!(shown().await, Value::Null);
    let version = || svc.one("SELECT xmin FROM nodes WHERE id = 'n1'");
    for bytes in [10, 500] {
        let v0 = version();
        let (s, reply) = svc.heartbeat_pulling(&n, "idle", &[], pull(bytes)).await;
        assert_eq!(s, 200, "{reply}");
        assert_ne!(version(), v0, "a pull's progress was not written");
        assert_eq!(shown().await, pull(bytes));
    }
    let v1 = version();
    svc.heartbeat_pulling(&n, "idle", &[], pull(500)).await;
    assert_eq!(version(), v1, "the same pulls wrote the node again");
    // In the list too.
    let (_, list) = svc.rest("GET", "/pools/p/nodes", None).await;
    assert_eq!(list["value"][0]["imagePulls"], pull(500), "{list}");
    svc.heartbeat(&n, "idle", &[]).await;
    assert_eq!(shown().await, Value::Null);
}

/// A heartbeat sent before the node's own completion report was recorded still lists
/// the attempt: it is not fenced (the node would forget the task and its files), while
/// an attempt lost to the node is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_heartbeat_overtaken_by_its_completion_fences_nothing() {
    let svc = Svc::start().await;
    svc.pool("p", 2, "spread", (5000, Some(15000)));
    svc.job("j", "p", 0, -1);
    svc.task("j", "t", 1, &[]);
    let n = svc.enrol("p", "n1").await;
    let [(attempt, _)] = &svc.claim(&n, 1, 0).await[..] else {
        panic!("one claim")
    };
    let (s, body) = svc.complete(&n, *attempt, "j", "t", "success").await;
    assert_eq!(s, 200, "{body}");
    let (s, reply) = svc.heartbeat(&n, "running", &[*attempt, 999_999]).await;
    assert_eq!(s, 200, "{reply}");
    assert_eq!(
        reply["commands"],
        json!([{"command": "fence", "attempt": 999_999}]),
        "{reply}"
    );
}

/// A job without maxParallelTasks is not written by its claims and ends (that one row
/// would be the hottest of all); given a cap while tasks run, it counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_a_capped_job_counts_its_running_tasks() {
    let svc = Svc::start().await;
    svc.pool("p", 2, "spread", (5000, Some(15000)));
    svc.job("j", "p", 0, -1);
    for t in ["t1", "t2", "t3"] {
        svc.task("j", t, 1, &[]);
    }
    let n = svc.enrol("p", "n1").await;
    let version = || svc.one("SELECT xmin FROM jobs WHERE id = 'j'");
    let v0 = version();
    let got = svc.claim(&n, 2, 0).await;
    assert_eq!(ids(&got), ["t1", "t2"]);
    let (s, body) = svc.complete(&n, got[0].0, "j", "t1", "success").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(version(), v0, "an uncapped job's row was written");

    let (s, body) = svc
        .rest("PATCH", "/jobs/j", Some(json!({"maxParallelTasks": 1})))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(svc.one("SELECT running FROM jobs WHERE id = 'j'"), "1");
    assert!(
        svc.claim(&n, 1, 0).await.is_empty(),
        "t2 runs: the cap is met"
    );
    let (s, body) = svc.complete(&n, got[1].0, "j", "t2", "success").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(svc.one("SELECT running FROM jobs WHERE id = 'j'"), "0");
    assert_eq!(ids(&svc.claim(&n, 1, 0).await), ["t3"]);
    assert_eq!(svc.one("SELECT running FROM jobs WHERE id = 'j'"), "1");
}

/// A node silent past the requeue time loses its attempts to another node as an
/// internal retry (systemRetryCount 1, requeueCount 0); its late report is fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_node_is_requeued_and_its_late_report_fenced() {
    let svc = Svc::start().await;
    svc.pool("p", 1, "spread", (600, Some(1500)));
    svc.job("j", "p", 0, -1);
    svc.task("j", "t", 1, &[]);
    let lost = svc.enrol("p", "lost").await;
    let got = svc.claim(&lost, 1, 0).await;
    assert_eq!(ids(&got), ["t"]);
    let live = svc.enrol("p", "live").await;
    // The live node asks and heartbeats; the lost one stays silent.
    let t0 = Instant::now();
    let mut again = vec![];
    while again.is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "not requeued in time"
        );
        svc.heartbeat(&live, "idle", &[]).await;
        again = svc.claim(&live, 1, 300).await;
    }
    assert_eq!(ids(&again), ["t"]);
    assert_eq!(
        svc.one("SELECT state FROM nodes WHERE id = 'lost'"),
        "unknown"
    );
    let v = svc.task_view("j", "t");
    assert_eq!(v["executionInfo"]["systemRetryCount"], 1, "{v}");
    assert_eq!(v["executionInfo"]["requeueCount"], 0, "{v}");
    assert_eq!(
        svc.one(&format!(
            "SELECT state FROM attempts WHERE id = {}",
            got[0].0
        )),
        "lost"
    );

    let (s, body) = svc.complete(&lost, got[0].0, "j", "t", "success").await;
    assert_eq!((s, body["code"].as_str()), (409, Some("AttemptFenced")));
    // Its heartbeat, naming the old attempt, is told to fence it; the new one counts.
    let (s, reply) = svc.heartbeat(&lost, "running", &[got[0].0]).await;
    assert_eq!(s, 200);
    assert_eq!(
        reply["commands"][0],
        json!({"command": "fence", "attempt": got[0].0})
    );
    assert_eq!(
        svc.complete(&live, again[0].0, "j", "t", "success").await.0,
        200
    );
    assert_eq!(svc.one("SELECT state FROM tasks"), "completed");
}

/// When many nodes lapse together nothing is requeued and the pool is braked, until
/// enough come back; then the rest are requeued.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mass_loss_brake_holds_until_nodes_return() {
    let svc = Svc::start().await;
    svc.pool("p", 1, "spread", (500, Some(1500)));
    svc.job("j", "p", 0, -1);
    let mut nodes = vec![];
    for i in 0..4 {
        svc.task("j", &format!("t{i}"), 1, &[]);
        let n = svc.enrol("p", &format!("n{i}")).await;
        assert_eq!(svc.claim(&n, 1, 0).await.len(), 1);
        nodes.push(n);
    }
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(svc.one("SELECT mass_loss_brake FROM pools"), "t");
    let (_, v) = svc.rest("GET", "/pools/p/nodes/n0", None).await;
    assert_eq!(v["state"], "unknown");
    assert_eq!(v["errors"][0]["code"], "MassNodeLoss", "{v}");
    assert_eq!(
        svc.one("SELECT count(*) FROM attempts WHERE state = 'live'"),
        "4"
    );
    // Two come back: two lapsed of four is under the brake's three.
    for n in &nodes[..2] {
        let running: Vec<i64> = vec![];
        assert_eq!(svc.heartbeat(n, "running", &running).await.0, 200);
    }
    let t0 = Instant::now();
    while svc.one("SELECT count(*) FROM attempts WHERE state = 'lost'") != "2" {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "not requeued after the brake"
        );
        for n in &nodes[..2] {
            svc.heartbeat(n, "running", &[]).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(svc.one("SELECT mass_loss_brake FROM pools"), "f");
    assert_eq!(svc.one("SELECT count(*) FROM ready"), "2");
}

/// A leaving node's attempts are requeued at once and counted in requeueCount.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leave_requeues_with_requeue_count() {
    let svc = Svc::start().await;
    svc.pool("p", 2, "pack", (5000, Some(15000)));
    svc.job("j", "p", 0, -1);
    svc.task("j", "a", 1, &[]);
    svc.task("j", "b", 1, &[]);
    let n = svc.enrol("p", "n1").await;
    assert_eq!(svc.claim(&n, 2, 0).await.len(), 2);
    let (s, _) = svc
        .post("/leave", &n.token, &json!({"epoch": n.epoch}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(svc.one("SELECT count(*) FROM nodes"), "0");
    assert_eq!(svc.one("SELECT count(*) FROM ready"), "2");
    assert_eq!(svc.one("SELECT running FROM jobs"), "0");
    let v = svc.task_view("j", "a");
    assert_eq!(
        (v["state"].as_str(), &v["executionInfo"]["requeueCount"]),
        (Some("active"), &json!(1))
    );
    assert!(v["executionInfo"].get("systemRetryCount").is_none());
    let (s, v) = svc.heartbeat(&n, "idle", &[]).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("NodeSuperseded")));
}

/// A dependent becomes claimable when its dependency succeeds, and not when it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dependents_are_released_by_success_only() {
    let svc = Svc::start().await;
    svc.pool("p", 4, "pack", (5000, Some(15000)));
    svc.job("j", "p", 0, -1);
    svc.task("j", "a", 1, &[]);
    svc.task("j", "b", 1, &["a"]);
    svc.task("j", "c", 1, &[]);
    svc.task("j", "d", 1, &["c"]);
    let n1 = svc.enrol("p", "n1").await;
    let got = svc.claim(&n1, 4, 0).await;
    assert_eq!(ids(&got), ["a", "c"]);
    assert_eq!(
        svc.complete(&n1, got[1].0, "j", "c", "failure").await.0,
        200
    );
    assert!(
        svc.claim(&n1, 4, 0).await.is_empty(),
        "d waits on a failed c"
    );
    assert_eq!(
        svc.complete(&n1, got[0].0, "j", "a", "success").await.0,
        200
    );
    assert_eq!(ids(&svc.claim(&n1, 4, 0).await), ["b"]);
    assert_eq!(
        svc.one("SELECT state || waiting_on FROM tasks WHERE id = 'd'"),
        "active1"
    );
    // The job ends: the node that ran its tasks hears it once.
    svc.pg.psql("UPDATE jobs SET state = 'completed'");
    let (_, v) = svc.heartbeat(&n1, "idle", &[]).await;
    assert_eq!(v["commands"], json!([{"command": "endJob", "jobId": "j"}]));
    let (_, v) = svc.heartbeat(&n1, "idle", &[]).await;
    assert_eq!(v["commands"], json!([]));
}

/// `/reports` records a node's reports in one call, in order: a Running then the end of
/// one attempt, another's end, and one whose attempt is not current, which is named in
/// the answer and changes nothing; a report over the limit, or of another epoch, is
/// refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_in_one_call_are_recorded_in_order_and_name_the_fenced() {
    let svc = Svc::start().await;
    svc.pool("p", 4, "pack", (5000, Some(15000)));
    svc.job("j", "p", 0, -1);
    for t in ["a", "b", "c"] {
        svc.task("j", t, 1, &[]);
    }
    let n = svc.enrol("p", "n1").await;
    let got = svc.claim(&n, 3, 0).await;
    assert_eq!(ids(&got), ["a", "b", "c"]);
    // c's attempt is requeued behind the node's back: its end no longer counts.
    svc.pg.psql(&format!(
        "UPDATE attempts SET state = 'requeued' WHERE id = {};
         UPDATE tasks SET current_attempt = NULL, state = 'active' WHERE id = 'c'",
        got[2].0
    ));
    let view = |task: &str, state: &str, attempt: i64| {
        json!({"id": task, "commandLine": "true", "jobId": "j", "state": state,
            "stateTransitionTime": "2026-01-01T00:00:01Z", "creationTime": "2026-01-01T00:00:00Z",
            "poolAttempt": attempt,
            "executionInfo": {"retryCount": 0, "requeueCount": 0, "result": "success", "exitCode": 0},
            "nodeInfo": {"poolId": "p", "nodeId": "n1", "taskRootDirectory": "/x"}})
    };
    let report = |(attempt, task): &(i64, String), event: &str| {
        json!({"epoch": n.epoch, "attempt": attempt, "jobId": "j", "taskId": task,
               "event": event, "task": view(task, event, *attempt)})
    };
    let body = json!({"reports": [
        report(&got[0], "running"), report(&got[0], "completed"),
        report(&got[1], "completed"), report(&got[2], "completed")]});
    let (s, v) = svc.post("/reports", &n.token, &body).await;
    assert_eq!((s, &v["fenced"]), (200, &json!([got[2].0])), "{v}");
    assert_eq!(
        svc.one("SELECT string_agg(id || '=' || state, ',' ORDER BY id) FROM tasks"),
        "a=completed,b=completed,c=active"
    );
    // a's and b's slots given back; c's stays, taken away above by SQL alone.
    assert_eq!(svc.one("SELECT used_slots FROM nodes"), "1");

    let many: Vec<Value> = (0..65).map(|_| report(&got[0], "completed")).collect();
    let (s, v) = svc
        .post("/reports", &n.token, &json!({"reports": many}))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("InvalidPropertyValue")),
        "{v}"
    );
    let mut stale = report(&got[1], "completed");
    stale["epoch"] = json!(n.epoch - 1);
    let (s, _) = svc
        .post(
            "/reports",
            &n.token,
            &json!({"reports": [report(&got[0], "completed"), stale]}),
        )
        .await;
    assert_eq!(s, 409);
}

/// A completion releases dependents as its task's exitConditions say, as the standalone
/// scheduler does: a failure whose exit code says `satisfy` releases them; a success
/// whose exit code 0 says `block` does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dependents_are_released_by_the_exit_conditions() {
    let svc = Svc::start().await;
    svc.pool("p", 4, "pack", (5000, Some(15000)));
    svc.job("j", "p", 0, -1);
    svc.task("j", "e", 1, &[]);
    svc.task("j", "f", 1, &["e"]);
    svc.task("j", "g", 1, &[]);
    svc.task("j", "h", 1, &["g"]);
    svc.pg.psql(
        r#"UPDATE tasks SET view = jsonb_set(view, '{exitConditions}',
             '{"exitCodes":[{"code":1,"exitOptions":{"dependencyAction":"satisfy"}}]}')
           WHERE id = 'e';
           UPDATE tasks SET view = jsonb_set(view, '{exitConditions}',
             '{"exitCodes":[{"code":0,"exitOptions":{"dependencyAction":"block"}}]}')
           WHERE id = 'g';"#,
    );
    let n1 = svc.enrol("p", "n1").await;
    let got = svc.claim(&n1, 4, 0).await;
    assert_eq!(ids(&got), ["e", "g"]);
    assert_eq!(
        svc.complete(&n1, got[1].0, "j", "g", "success").await.0,
        200
    );
    assert_eq!(
        svc.complete(&n1, got[0].0, "j", "e", "failure").await.0,
        200
    );
    assert_eq!(ids(&svc.claim(&n1, 4, 0).await), ["f"]);
    assert_eq!(
        svc.one("SELECT state || waiting_on FROM tasks WHERE id = 'h'"),
        "active1"
    );
}

/// A waiting claim returns soon after a task is added (NOTIFY, not the 1 s re-check).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_poll_returns_when_a_task_is_added() {
    let svc = Arc::new(Svc::start().await);
    svc.pool("p", 1, "spread", (5000, Some(15000)));
    svc.job("j", "p", 0, -1);
    let n = svc.enrol("p", "n1").await;
    let mut worst = Duration::ZERO;
    for i in 0..3 {
        let s = svc.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let node = Node {
            id: n.id.clone(),
            pool: n.pool.clone(),
            token: n.token.clone(),
            epoch: n.epoch,
        };
        let poll = tokio::spawn(async move {
            let got = s.claim(&node, 1, 10_000).await;
            tx.send(Instant::now()).ok();
            got
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        let id = format!("t{i}");
        let s = svc.clone();
        let added = tokio::task::spawn_blocking(move || {
            s.task("j", &id, 1, &[]);
            Instant::now()
        })
        .await
        .unwrap();
        let got = poll.await.unwrap();
        let answered = rx.await.unwrap();
        assert_eq!(got.len(), 1);
        let lag = answered.saturating_duration_since(added);
        worst = worst.max(lag);
        assert_eq!(
            svc.complete(&n, got[0].0, "j", &got[0].1, "success")
                .await
                .0,
            200
        );
    }
    println!("long poll answered {worst:?} after the add committed (worst of 3)");
    assert!(worst < Duration::from_millis(500), "{worst:?}");
}

impl Svc {
    async fn rest(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// A node's GET lists its recent tasks (Batch's `recentTasks`): those live on it first,
/// then those whose attempts ended, newest first, at most ten, each task once; the list of
/// nodes leaves them out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nodes_recent_tasks_are_its_live_then_its_ended_attempts() {
    let svc = Svc::start().await;
    svc.pool("p", 2, "pack", (5000, Some(15000)));
    svc.job("j", "p", 0, -1);
    for i in 0..13 {
        svc.task("j", &format!("t{i:02}"), 1, &[]);
    }
    let n1 = svc.enrol("p", "n1").await;
    svc.enrol("p", "n2").await;
    let recent = |v: &Value| -> Vec<(String, String)> {
        v["recentTasks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        let s = |k: &str| i[k].as_str().unwrap().to_string();
                        (s("taskId"), s("taskState"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    // t00 completes; t01 and t02 are live.
    let first = svc.claim(&n1, 1, 0).await;
    assert_eq!(
        svc.complete(&n1, first[0].0, "j", "t00", "success").await.0,
        200
    );
    let live = svc.claim(&n1, 2, 0).await;
    assert_eq!(ids(&live), ["t01", "t02"]);
    let (s, v) = svc.rest("GET", "/pools/p/nodes/n1", None).await;
    assert_eq!(s, 200, "{v}");
    let st = |id: &str, state: &str| (id.to_string(), state.to_string());
    assert_eq!(
        recent(&v),
        [
            st("t02", "preparing"),
            st("t01", "preparing"),
            st("t00", "completed")
        ],
        "{v}"
    );
    let done = &v["recentTasks"][2];
    assert_eq!(
        (
            &done["executionInfo"]["exitCode"],
            done["executionInfo"]["result"].as_str()
        ),
        (&json!(0), Some("success"))
    );
    assert!(
        done["taskUrl"]
            .as_str()
            .unwrap()
            .ends_with("/jobs/j/tasks/t00"),
        "{done}"
    );
    let (_, v) = svc.rest("GET", "/pools/p/nodes/n2", None).await;
    assert!(v.get("recentTasks").is_none(), "n2 ran nothing: {v}");
    let (_, v) = svc.rest("GET", "/pools/p/nodes", None).await;
    assert!(v["value"][0].get("recentTasks").is_none(), "{v}");

    // Requeued from here: listed among the ended, as the task is now (active), without
    // an executionInfo of this node's.
    assert_eq!(
        svc.rest("POST", "/pools/p/nodes/n1/disablescheduling", None)
            .await
            .0,
        200
    );
    let (_, v) = svc.rest("GET", "/pools/p/nodes/n1", None).await;
    assert_eq!(
        recent(&v),
        [
            st("t02", "active"),
            st("t01", "active"),
            st("t00", "completed")
        ],
        "{v}"
    );
    assert!(v["recentTasks"][0].get("executionInfo").is_none(), "{v}");

    // Eleven more ended attempts: only the ten newest are listed, each task once.
    assert_eq!(
        svc.rest("POST", "/pools/p/nodes/n1/enablescheduling", None)
            .await
            .0,
        200
    );
    for _ in 0..6 {
        for (a, id) in svc.claim(&n1, 2, 0).await {
            assert_eq!(svc.complete(&n1, a, "j", &id, "success").await.0, 200);
        }
    }
    let (_, v) = svc.rest("GET", "/pools/p/nodes/n1", None).await;
    let got = recent(&v);
    assert_eq!(got.len(), 10, "{v}");
    assert!(got.iter().all(|(_, s)| s == "completed"), "{v}");
    let mut ids: Vec<&str> = got.iter().map(|(i, _)| i.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "each task once: {v}");
}

/// Nodes through the client REST: list with $filter, get, disable scheduling with each
/// option, enable, removenodes; and the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_rest_disable_enable_and_remove() {
    let svc = Svc::start().await;
    svc.pool("p", 3, "pack", (5000, Some(15000)));
    svc.job("j", "p", 0, -1);
    for t in ["a", "b", "c"] {
        svc.task("j", t, 1, &[]);
    }
    let n1 = svc.enrol("p", "n1").await;
    let n2 = svc.enrol("p", "n2").await;
    let got = svc.claim(&n1, 3, 0).await;
    assert_eq!(ids(&got), ["a", "b", "c"]);

    let (s, v) = svc.rest("GET", "/pools/P/nodes", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"].as_array().unwrap().len(), 2);
    assert_eq!(v["value"][0]["runningTasksCount"], 3);
    assert_eq!(v["value"][0]["runningTaskSlotsCount"], 3);
    let (_, v) = svc
        .rest(
            "GET",
            "/pools/p/nodes?$filter=state%20eq%20'unknown'%20or%20state%20eq%20'idle'",
            None,
        )
        .await;
    assert_eq!(v["value"].as_array().unwrap().len(), 2, "{v}");
    let (s, v) = svc
        .rest("GET", "/pools/p/nodes?$filter=state%20eq%20'nap'", None)
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("InvalidQueryParameterValue"))
    );
    let (s, v) = svc.rest("GET", "/pools/p/nodes/n9", None).await;
    assert_eq!((s, v["code"].as_str()), (404, Some("NodeNotFound")));

    // taskcompletion: the attempts stay; terminate: the node is told; requeue: back in the queue.
    let disable = |opt: &str| Some(json!({"nodeDisableSchedulingOption": opt}));
    assert_eq!(
        svc.rest(
            "POST",
            "/pools/p/nodes/n1/disablescheduling",
            disable("taskcompletion")
        )
        .await
        .0,
        200
    );
    assert_eq!(
        svc.one("SELECT count(*) FROM attempts WHERE state = 'live'"),
        "3"
    );
    let (_, v) = svc
        .heartbeat(&n1, "running", &[got[0].0, got[1].0, got[2].0])
        .await;
    assert_eq!(
        v["commands"],
        json!([{"command": "schedulingState", "enabled": false}])
    );
    assert_eq!(
        svc.rest(
            "POST",
            "/pools/p/nodes/n1/disablescheduling",
            disable("terminate")
        )
        .await
        .0,
        200
    );
    let (_, v) = svc
        .heartbeat(&n1, "running", &[got[0].0, got[1].0, got[2].0])
        .await;
    assert_eq!(
        v["commands"][0],
        json!({"command": "terminate", "attempt": got[0].0}),
        "{v}"
    );
    assert_eq!(
        svc.complete(&n1, got[0].0, "j", "a", "failure").await.0,
        200
    );
    let (s, v) = svc
        .rest(
            "POST",
            "/pools/p/nodes/n1/disablescheduling",
            disable("later"),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("InvalidPropertyValue")));
    assert_eq!(
        svc.rest("POST", "/pools/p/nodes/n1/disablescheduling", None)
            .await
            .0,
        200
    );
    assert_eq!(svc.one("SELECT count(*) FROM ready"), "2");
    assert_eq!(svc.task_view("j", "b")["executionInfo"]["requeueCount"], 1);
    assert!(
        svc.claim(&n1, 3, 0).await.is_empty(),
        "a disabled node claims nothing"
    );
    let (_, v) = svc.rest("GET", "/pools/p/nodes/n1", None).await;
    assert_eq!(
        (v["state"].as_str(), v["schedulingState"].as_str()),
        (Some("running"), Some("disabled"))
    );
    assert_eq!(
        svc.rest("POST", "/pools/p/nodes/n1/enablescheduling", None)
            .await
            .0,
        200
    );
    assert_eq!(svc.claim(&n1, 3, 0).await.len(), 2);

    // removenodes: the node is told to leave; its tasks go back at once.
    let (s, v) = svc
        .rest(
            "POST",
            "/pools/p/removenodes",
            Some(json!({"nodeList": []})),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("InvalidPropertyValue")));
    let (s, _) = svc
        .rest(
            "POST",
            "/pools/p/removenodes",
            Some(json!({"nodeList": ["n1"], "nodeDeallocationOption": "requeue"})),
        )
        .await;
    assert_eq!(s, 202);
    assert_eq!(svc.one("SELECT count(*) FROM ready"), "2");
    let (_, v) = svc.heartbeat(&n1, "idle", &[]).await;
    assert!(
        v["commands"]
            .as_array()
            .unwrap()
            .contains(&json!({"command": "remove"})),
        "{v}"
    );
    assert_eq!(
        svc.one("SELECT state FROM nodes WHERE id = 'n1'"),
        "leavingpool"
    );
    assert_eq!(
        svc.post("/leave", &n1.token, &json!({"epoch": n1.epoch}))
            .await
            .0,
        200
    );
    assert_eq!(svc.claim(&n2, 3, 0).await.len(), 2);

    let r = svc
        .http
        .get(format!("{}/metrics", svc.base))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(
        text.contains("berth_service_tasks{pool=\"p\",state=\"preparing\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("berth_service_nodes{pool=\"p\",state=\"idle\"} 1"),
        "{text}"
    );
    assert!(text.contains("berth_service_claim_seconds_count"), "{text}");
}

/// A task's files are read through the service from the node that ran it, with the
/// node's proxy credential (of its current enrolment, never stored) and the range passed
/// on; a node that cannot answer is 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn task_files_are_proxied_to_the_owning_node() {
    use axum::http::HeaderMap;
    let svc = Svc::start().await;
    svc.pool("p", 1, "spread", (5000, Some(15000)));
    svc.job("j", "p", 0, -1);
    svc.task("j", "t", 1, &[]);
    // The node's file API: answers with what it was asked.
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let s2 = seen.clone();
    let agent = axum::Router::new().route(
        "/jobs/{job}/tasks/{task}/files/{*path}",
        axum::routing::get(move |uri: axum::http::Uri, h: HeaderMap| {
            let seen = s2.clone();
            async move {
                let auth = h
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string());
                let range = h.get("ocp-range").map(|v| v.to_str().unwrap().to_string());
                seen.lock()
                    .unwrap()
                    .push(format!("{uri} {auth:?} {range:?}"));
                ([("content-type", "application/octet-stream")], "llo")
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, agent).await.ok() });

    let svc = &svc;
    let enrol_at = |addr: String| async move {
        let body = json!({"poolId": "p", "nodeId": "n1", "agentVersion": "t", "fileAddress": addr});
        let (s, v) = svc.post("/enrol", SECRET, &body).await;
        assert_eq!(s, 200, "{v}");
        v
    };
    let v = enrol_at(addr.clone()).await;
    let proxy = v["proxyToken"].as_str().unwrap().to_string();
    let n = Node {
        id: "n1".into(),
        pool: "p".into(),
        token: v["nodeToken"].as_str().unwrap().into(),
        epoch: v["epoch"].as_i64().unwrap(),
    };
    svc.heartbeat(&n, "idle", &[]).await;
    let (s, v) = svc
        .rest("GET", "/jobs/j/tasks/t/files/stdout.txt", None)
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("TaskFilesUnavailable")),
        "not run yet"
    );
    assert_eq!(svc.claim(&n, 1, 0).await.len(), 1);
    let r = svc
        .http
        .get(format!("{}/jobs/j/tasks/t/files/stdout.txt?x=1", svc.base))
        .header("ocp-range", "bytes=2-4")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), "llo");
    assert_eq!(
        seen.lock().unwrap().clone(),
        [format!(
            "/jobs/j/tasks/t/files/stdout.txt?x=1&api-version={} Some(\"Bearer {proxy}\") Some(\"bytes=2-4\")",
            berth_agent::api::API_VERSION
        )]
    );
    let (s, v) = svc
        .rest("GET", "/jobs/j/tasks/nope/files/stdout.txt", None)
        .await;
    assert_eq!((s, v["code"].as_str()), (404, Some("TaskNotFound")));
    let (s, v) = svc.rest("GET", "/pools/p/nodes/n1/files/x", None).await;
    assert_eq!(
        s, 404,
        "the fake agent has no node files: its 404 passes through ({v})"
    );
    // The credential is derived, not stored; the node's next enrolment gets a new one,
    // and the proxy shows the new one from then on.
    assert_eq!(
        svc.one(
            "SELECT count(*) FROM information_schema.columns
             WHERE table_name = 'enrolments' AND column_name = 'proxy_token'"
        ),
        "0"
    );
    let again = enrol_at(addr).await["proxyToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(again, proxy);
    let (s, _) = svc
        .rest("GET", "/jobs/j/tasks/t/files/stdout.txt", None)
        .await;
    assert_eq!(s, 200);
    let last = seen.lock().unwrap().last().cloned().unwrap();
    assert!(last.contains(&format!("Bearer {again}\"")), "{last}");
    svc.pg.psql("UPDATE nodes SET state = 'unknown'");
    let (s, v) = svc
        .rest("GET", "/jobs/j/tasks/t/files/stdout.txt", None)
        .await;
    assert_eq!((s, v["code"].as_str()), (409, Some("TaskFilesUnavailable")));
    let (s, v) = svc.rest("GET", "/pools/p/nodes/n1/files/x", None).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("NodeNotReady")));
}

/// A restarted agent keeps only the attempts still current on its node; Running reports
/// count only for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adopt_keeps_only_current_attempts() {
    let svc = Svc::start().await;
    svc.pool("p", 2, "pack", (5000, Some(15000)));
    svc.job("j", "p", 0, -1);
    svc.task("j", "a", 1, &[]);
    svc.task("j", "b", 1, &[]);
    let n = svc.enrol("p", "n1").await;
    let got = svc.claim(&n, 2, 0).await;
    assert_eq!(got.len(), 2);
    let (a, b) = (got[0].0, got[1].0);
    assert_eq!(svc.complete(&n, b, "j", "b", "success").await.0, 200);
    let (s, v) = svc
        .post(
            "/adopt",
            &n.token,
            &json!({"epoch": n.epoch, "attempts": [a, b, 999]}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["current"], json!([a]));
    let running = |attempt: i64, task: &str| {
        json!({"epoch": n.epoch, "attempt": attempt, "jobId": "j", "taskId": task,
               "event": "running", "task": {"id": task, "commandLine": "true", "jobId": "j",
               "state": "running", "stateTransitionTime": "2026-01-01T00:00:01Z",
               "creationTime": "2026-01-01T00:00:00Z",
               "executionInfo": {"retryCount": 0, "requeueCount": 0,
                                 "startTime": "2026-01-01T00:00:01Z"}}})
    };
    assert_eq!(svc.post("/report", &n.token, &running(a, "a")).await.0, 200);
    assert_eq!(svc.one("SELECT state FROM tasks WHERE id = 'a'"), "running");
    let (s, v) = svc.post("/report", &n.token, &running(b, "b")).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("AttemptFenced")));
    // A body of another epoch is stale.
    let mut stale = running(a, "a");
    stale["epoch"] = json!(n.epoch - 1);
    assert_eq!(svc.post("/report", &n.token, &stale).await.0, 409);
    // Given up by the node: an internal retry, claimable again at once.
    let abandon = json!({"epoch": n.epoch, "attempt": a, "jobId": "j", "taskId": "a",
                         "event": "abandoned", "reason": "fenced itself"});
    assert_eq!(svc.post("/report", &n.token, &abandon).await.0, 200);
    assert_eq!(
        svc.task_view("j", "a")["executionInfo"]["systemRetryCount"],
        1
    );
    assert_eq!(
        svc.post("/report", &n.token, &abandon).await.0,
        200,
        "said twice"
    );
    assert_eq!(ids(&svc.claim(&n, 2, 0).await), ["a"]);
}

/// PostgreSQL away for longer than the requeue time: calls are 503 ServerBusy meanwhile,
/// and when it returns no lease has lapsed (the sweeper extends them all first).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_requeues_nothing() {
    let svc = Svc::start().await;
    svc.pool("p", 1, "spread", (800, Some(1500)));
    svc.job("j", "p", 0, -1);
    svc.task("j", "t", 1, &[]);
    let n = svc.enrol("p", "n1").await;
    assert_eq!(svc.claim(&n, 1, 0).await.len(), 1);
    svc.pg.stop();
    let (s, v) = svc.heartbeat(&n, "running", &[]).await;
    assert_eq!((s, v["code"].as_str()), (503, Some("ServerBusy")), "{v}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    svc.pg.restart();
    // Silent still, past the requeue time: the sweeper's first act on its new connection
    // is to extend every lease, so its first sweep requeues nothing.
    let t0 = Instant::now();
    while svc.one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted") != "1" {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no sweeper came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(svc.one("SELECT state FROM attempts"), "live");
    // The node heartbeats again.
    while svc.heartbeat(&n, "running", &[]).await.0 != 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the service did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..6 {
        svc.heartbeat(&n, "running", &[]).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(svc.one("SELECT state FROM attempts"), "live");
    assert_eq!(svc.one("SELECT system_retry_count FROM tasks"), "0");
}

/// Four nodes claiming at once over forty tasks: every task is claimed exactly once and
/// spread evenly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_take_each_task_once() {
    let svc = Arc::new(Svc::start().await);
    svc.pool("p", 10, "spread", (5000, Some(15000)));
    svc.job("j", "p", 0, -1);
    let mut nodes = vec![];
    for i in 0..4 {
        let n = svc.enrol("p", &format!("n{i}")).await;
        assert!(svc.claim(&n, 10, 0).await.is_empty());
        nodes.push(n);
    }
    let sql: String = (0..40)
        .map(|i| {
            let view = json!({"id": format!("t{i}"), "commandLine": "true", "jobId": "j",
                "state": "active", "stateTransitionTime": "2026-01-01T00:00:00Z",
                "creationTime": "2026-01-01T00:00:00Z"});
            format!(
                "INSERT INTO tasks (job_id, id, id_key, state, view)
                     VALUES ('j', 't{i}', 't{i}', 'active', '{view}');"
            )
        })
        .collect();
    svc.pg.psql(&format!(
        "{sql} INSERT INTO ready (task_seq, pool_id, job_id, job_priority, job_seq, required_slots)
               SELECT t.seq, 'p', 'j', 0, 1, 1 FROM tasks t;"
    ));
    let mut polls = vec![];
    for n in nodes {
        let s = svc.clone();
        polls.push(tokio::spawn(async move {
            let mut got = vec![];
            let t0 = Instant::now();
            while got.len() < 10 && t0.elapsed() < Duration::from_secs(20) {
                got.extend(s.claim(&n, 10 - got.len() as u32, 200).await);
            }
            got
        }));
    }
    let mut all = vec![];
    for p in polls {
        let got = p.await.unwrap();
        assert_eq!(got.len(), 10, "each node took its share");
        all.extend(got.into_iter().map(|g| g.1));
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 40);
    assert_eq!(svc.one("SELECT count(*) FROM attempts"), "40");
    assert_eq!(svc.one("SELECT count(*) FROM ready"), "0");
}

/// An agent restarted (enrolling again) keeps the attempts it still has: they pass to its
/// new enrolment, `adopt` keeps what it found, and only what it lost is requeued (an
/// internal retry), then and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_keeps_what_it_still_runs() {
    let svc = Svc::start().await;
    svc.pool("p", 2, "pack", (5000, Some(15000)));
    svc.job("j", "p", 0, -1);
    svc.task("j", "a", 1, &[]);
    svc.task("j", "b", 1, &[]);
    let old = svc.enrol("p", "n1").await;
    let got = svc.claim(&old, 2, 0).await;
    assert_eq!(got.len(), 2);
    let a = got[0].0;
    let n = svc.enrol("p", "n1").await;
    // Enrolling requeued nothing yet: the restarted agent may still run both.
    assert_eq!(svc.one("SELECT count(*) FROM ready"), "0");
    let (s, v) = svc
        .post(
            "/adopt",
            &n.token,
            &json!({"epoch": n.epoch, "attempts": [a]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["current"], json!([a]));
    // b was lost with the old agent: requeued as an internal retry, claimable again.
    assert_eq!(
        svc.task_view("j", "b")["executionInfo"]["systemRetryCount"],
        1
    );
    assert_eq!(svc.task_view("j", "a")["state"], "preparing");
    assert_eq!(svc.complete(&n, a, "j", "a", "success").await.0, 200);
    assert_eq!(ids(&svc.claim(&n, 2, 0).await), ["b"]);
}

/// A burst of client calls that holds every client connection (each stuck behind a lock)
/// delays no heartbeat and no claim: the node protocol has connections of its own. The
/// clients wait a bounded time for a connection and are then answered 503 ServerBusy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_bursts_do_not_starve_heartbeats() {
    let svc = Svc::start().await;
    svc.pool("p", 1, "spread", (5000, Some(15000)));
    svc.job("j", "p", 0, -1);
    let n = svc.enrol("p", "n1").await;
    svc.job("held", "p", 0, -1);
    // Another session holds job `held`'s row: every client update of it waits on the
    // lock, holding its connection, for longer than a client may wait for one.
    let hold = db::CLIENT_WAIT + Duration::from_secs(2);
    let t0 = Instant::now();
    let locker = svc
        .hold(&format!(
            "BEGIN; SELECT 1 FROM jobs WHERE id = 'held' FOR UPDATE; SELECT pg_sleep({}); COMMIT;",
            hold.as_secs_f64()
        ))
        .await;
    let clients: Vec<_> = (0..db::CLIENT_POOL_SIZE * 3)
        .map(|_| {
            let (http, url) = (svc.http.clone(), format!("{}/jobs/held", svc.base));
            tokio::spawn(async move {
                let r = http
                    .patch(url)
                    .header("content-type", "application/json")
                    .body(r#"{"priority": 1}"#)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let v: Value = serde_json::from_str(&r.text().await.unwrap_or_default())
                    .unwrap_or(Value::Null);
                (status, v["code"].as_str().map(str::to_string))
            })
        })
        .collect();
    // Every client connection is taken (its query waits on the lock).
    while svc
        .one("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
        .parse::<usize>()
        .unwrap()
        < db::CLIENT_POOL_SIZE
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "clients not stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        let t = Instant::now();
        let (s, v) = svc.heartbeat(&n, "idle", &[]).await;
        assert_eq!(s, 200, "{v}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a heartbeat took {:?} behind the clients",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    svc.task("j", "t", 1, &[]);
    let t = Instant::now();
    assert_eq!(ids(&svc.claim(&n, 1, 2000).await), ["t"]);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(
        t0.elapsed() < db::CLIENT_WAIT,
        "the node calls ran while the clients waited"
    );
    let mut answers = vec![];
    for c in clients {
        answers.push(c.await.unwrap());
    }
    let busy = answers
        .iter()
        .filter(|a| *a == &(503, Some("ServerBusy".to_string())))
        .count();
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    assert_eq!(busy + ok, answers.len(), "{answers:?}");
    assert!(busy > 0, "no client wait was bounded: {answers:?}");
    assert!(locker.wait_with_output().unwrap().status.success());
}

/// A call whose token was checked before a newer enrolment committed writes nothing: the
/// epoch is checked again under the node's row lock, inside the call's transaction. Here
/// another session holds that lock while the old agent's completion and heartbeat wait on
/// it, then moves the node to a new epoch (as an enrolment does) and commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enrolment_committed_meanwhile_fences_calls_in_flight() {
    let svc = Svc::start().await;
    svc.pool("p", 1, "spread", (5000, Some(15000)));
    svc.job("j", "p", 0, -1);
    svc.task("j", "t", 1, &[]);
    let n = svc.enrol("p", "n1").await;
    let [(attempt, _)] = &svc.claim(&n, 1, 0).await[..] else {
        panic!("one claim")
    };
    let t0 = Instant::now();
    let locker = svc
        .hold(
            "BEGIN; SELECT 1 FROM nodes WHERE id = 'n1' FOR UPDATE; SELECT pg_sleep(3);
             UPDATE nodes SET epoch = epoch + 1000 WHERE id = 'n1'; COMMIT;",
        )
        .await;
    let (report, beat) = tokio::join!(svc.complete(&n, *attempt, "j", "t", "success"), async {
        // Sent once the completion waits on the lock.
        while svc.one("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'") == "0"
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        svc.heartbeat(&n, "running", &[]).await
    });
    assert!(
        t0.elapsed() > Duration::from_secs(2),
        "the calls did not wait"
    );
    assert!(locker.wait_with_output().unwrap().status.success());
    assert_eq!(
        (report.0, report.1["code"].as_str()),
        (409, Some("NodeSuperseded")),
        "{}",
        report.1
    );
    assert_eq!(
        (beat.0, beat.1["code"].as_str()),
        (409, Some("NodeSuperseded")),
        "{}",
        beat.1
    );
    assert_eq!(
        svc.one("SELECT state FROM tasks WHERE id = 't'"),
        "preparing"
    );
    assert_eq!(svc.one("SELECT state FROM attempts"), "live");
    assert_eq!(svc.one("SELECT state FROM nodes"), "idle");
}
