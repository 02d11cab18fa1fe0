//! Pool mode at scale without Docker: the real service ([`berth_agent::service::server`],
//! in-process, on a fixed loopback port so it can be restarted) on a real PostgreSQL, and
//! N simulated agents in this process. Each agent runs the REAL member code (enrol,
//! heartbeat, long-poll claims, journal, reports, the local scheduler) over its own fake
//! engine, with its own node id, node root and SQLite store, on a current-thread tokio
//! runtime of its own thread: a kill drops that runtime (no leave, nothing more sent) and
//! takes the engine down with it; a freeze blocks the thread, as `SIGSTOP` would, while its
//! fake containers run on.
//!
//! Fake containers run for a time drawn from the seed and the task id; some fail their
//! first run (exit 1, retried once). Every container run is kept by its engine
//! ([`berth_agent::engine::fake::Run`]) and judged by [`check`].
//!
//! Tunables (environment): `BERTH_SIM_NODES`, `BERTH_SIM_SLOTS`, `BERTH_SIM_TASKS`,
//! `BERTH_SIM_RUN_MS` (`MIN-MAX`, each task's run time), `BERTH_SIM_FAIL_PCT` (tasks whose
//! first run fails), `BERTH_SIM_SEED` (replays a run's durations and fault schedule; each
//! run prints its seed).
#![allow(clippy::disallowed_types)]

pub mod check;
pub mod faults;
pub mod proxy;

use crate::postgres::Postgres;
use berth_agent::config::OnShutdown;
use berth_agent::engine::fake::{Fake, Script};
use berth_agent::member::client::Client;
use berth_agent::member::enrol;
use berth_agent::member::start::{self, Joined};
use berth_agent::schedule::queue::Scheduler;
use berth_agent::service::config::{ServiceConfig, Transport};
use berth_agent::service::state::Settings;
use berth_agent::store::{sqlite::SqliteStore, Store};
use berth_agent::task::create::labels;
use berth_agent::task::NodeContext;
use berth_proto::node_protocol::EnrolRequest;
use berth_proto::NodeState;
use check::{RunRec, TaskEnd, Verdict};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const CLIENT_TOKEN: &str = "sim-client-token";
pub const SECRET: &str = "sim-enrolment-secret";
pub const IMAGE: &str = "docker.io/library/busybox:latest";
pub const POOL: &str = "sim";
/// Every task's `maxTaskRetryCount` (the first run of `fail_pct` of them fails).
pub const MAX_RETRIES: i64 = 1;

/// The run's size and seed.
#[derive(Debug, Clone)]
pub struct Config {
    pub nodes: usize,
    pub slots: u32,
    pub tasks: usize,
    /// Each task's run time, drawn in `[min, max]` ms.
    pub run_ms: (u64, u64),
    /// Percent of tasks whose first run exits 1 (retried once: `maxTaskRetryCount` 1).
    pub fail_pct: u64,
    pub seed: u64,
    /// The pool's `berthLeaseProfile` (`fast`: R = 15 s).
    pub profile: &'static str,
}

impl Config {
    /// `nodes` x `slots`, `tasks` tasks that exit at once and never fail, seed 0, the fast
    /// lease profile: a base for `Config { field: .., ..Config::sized(..) }`.
    pub fn sized(nodes: usize, slots: u32, tasks: usize) -> Config {
        Config {
            nodes,
            slots,
            tasks,
            run_ms: (0, 0),
            fail_pct: 0,
            seed: 0,
            profile: "fast",
        }
    }

    /// `defaults`, overridden by the `BERTH_SIM_*` variables; the seed from the clock
    /// unless `BERTH_SIM_SEED` replays one.
    pub fn from_env(defaults: Config) -> Config {
        let n = |k: &str, d: u64| crate::env_usize(k, d as usize) as u64;
        let run_ms = std::env::var("BERTH_SIM_RUN_MS")
            .ok()
            .and_then(|v| {
                let (a, b) = v.split_once('-')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .unwrap_or(defaults.run_ms);
        let seed = std::env::var("BERTH_SIM_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        Config {
            nodes: n("BERTH_SIM_NODES", defaults.nodes as u64) as usize,
            slots: n("BERTH_SIM_SLOTS", defaults.slots as u64) as u32,
            tasks: n("BERTH_SIM_TASKS", defaults.tasks as u64) as usize,
            run_ms,
            fail_pct: n("BERTH_SIM_FAIL_PCT", defaults.fail_pct),
            seed,
            profile: defaults.profile,
        }
    }
}

/// splitmix64: a small seeded generator (the schedule must replay from one number).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi.saturating_sub(lo) + 1)
    }
}

/// A number from `seed` and `s` (a task's run time must not depend on who runs it).
fn hash(seed: u64, s: &str) -> u64 {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    Rng::new(h).next_u64()
}

/// What each fake container does: its task's run time; its task's first run fails for
/// `fail_pct` percent of tasks.
fn scripter(
    cfg: &Config,
    failed: Arc<Mutex<HashSet<String>>>,
) -> impl Fn(&str, &bollard::models::ContainerCreateBody) -> Script + Send + Clone + 'static {
    let (seed, (lo, hi), pct) = (cfg.seed, cfg.run_ms, cfg.fail_pct);
    move |_name, body| {
        let l = body.labels.clone().unwrap_or_default();
        let task = format!(
            "{}/{}",
            l.get(labels::JOB).cloned().unwrap_or_default(),
            l.get(labels::TASK).cloned().unwrap_or_default()
        );
        let h = hash(seed, &task);
        let ms = lo + h % (hi.saturating_sub(lo) + 1);
        let fails = (h >> 32) % 100 < pct && failed.lock().unwrap().insert(task);
        Script::exits(i64::from(fails), Duration::from_millis(ms))
    }
}

// === impl Agent ===

/// One simulated agent: its thread, runtime and fake engine.
pub struct Agent {
    pub node_id: String,
    pub fake: Fake,
    handle: tokio::runtime::Handle,
    kill: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// The member's stop: cancelled, the agent leaves as on `SIGTERM`.
    stop: CancellationToken,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts an agent joining `pool` at `url` (enrolment retries until the service answers).
    pub fn spawn(url: &str, node_id: &str, fake: Fake) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("berth-sim-")
            .tempdir()
            .unwrap();
        let (htx, hrx) = std::sync::mpsc::channel();
        let (ktx, krx) = tokio::sync::oneshot::channel::<()>();
        let stop = CancellationToken::new();
        let (url, id, f, root, s) = (
            url.to_string(),
            node_id.to_string(),
            fake.clone(),
            dir.path().to_path_buf(),
            stop.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("sim-{node_id}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    // Its blocking threads told apart from the service's workers (CPU
                    // per thread name: the agents' share and the service's).
                    .thread_name("sim-agent-blk")
                    .build()
                    .unwrap();
                htx.send(rt.handle().clone()).unwrap();
                rt.block_on(async move {
                    tokio::select! {
                        _ = member(url, id, f, root, s) => {}
                        _ = krx => {}
                    }
                });
                // A kill: every task of this agent is dropped unpolled.
                rt.shutdown_background();
            })
            .unwrap();
        Agent {
            node_id: node_id.to_string(),
            fake,
            handle: hrx.recv().unwrap(),
            kill: Mutex::new(Some(ktx)),
            stop,
            thread: Mutex::new(Some(thread)),
            _dir: dir,
        }
    }

    /// Kills the agent abruptly (no leave, nothing more sent); its containers die with
    /// it, as with a lost VM.
    pub fn kill(&self) {
        if let Some(k) = self.kill.lock().unwrap().take() {
            k.send(()).ok();
        }
        if let Some(t) = self.thread.lock().unwrap().take() {
            t.join().ok();
        }
        self.fake.set_up(false, false);
    }

    /// Stops the agent as `SIGTERM` does: it tells the service it leaves (which requeues
    /// its attempts at once), stops its containers and ends; returns when it has.
    pub fn leave(&self) {
        self.stop.cancel();
        if let Some(t) = self.thread.lock().unwrap().take() {
            t.join().ok();
        }
        self.kill.lock().unwrap().take();
    }

    /// Stops the agent's every task for `d` (its thread blocks, as under `SIGSTOP`); its
    /// containers run on.
    pub fn freeze(&self, d: Duration) {
        self.handle.spawn(async move { std::thread::sleep(d) });
    }

    pub fn alive(&self) -> bool {
        self.kill.lock().unwrap().is_some()
    }
}

/// The member as `berth agent --service` runs it, minus the node's own API and pool start
/// (no start task, no images to prefetch in a sim): enrol, journal, scheduler, member,
/// begin, and the queue until the agent is stopped.
async fn member(
    url: String,
    node_id: String,
    fake: Fake,
    root: std::path::PathBuf,
    stop: CancellationToken,
) {
    let client = Client::new(vec![url]).unwrap();
    let request = EnrolRequest {
        pool_id: POOL.into(),
        node_id: node_id.clone(),
        file_address: None,
        agent_version: "sim".into(),
    };
    let Ok(response) = enrol::enrol(&client, SECRET, &request, &stop).await else {
        panic!("{node_id}: enrolment refused");
    };
    let mut rt = NodeContext::on_engine(Arc::new(fake), &root.join("root"));
    rt.pool = response.pool.clone();
    rt.node.node_id = node_id.clone();
    rt.node.pool_id = POOL.into();
    rt.status = berth_agent::node::NodeStatus::new(&node_id, POOL);
    rt.stop_grace = Duration::from_secs(1);
    rt.node.layout.prepare().unwrap();
    rt.status.set_state(NodeState::Idle);
    let rt = Arc::new(rt);
    let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(&root.join("state.db")).unwrap());
    let (store, ledger, notes) = start::journal(&rt, inner).unwrap();
    let (sched, queue) = Scheduler::new(rt.clone(), store.clone());
    let joined = Joined {
        client,
        secret: SECRET.into(),
        request,
        response,
    };
    let m = start::member(joined, rt, store, sched, ledger, stop.clone());
    let (queue_stop, queue_ended) = (CancellationToken::new(), CancellationToken::new());
    let q = tokio::spawn(queue.run(queue_stop.clone(), OnShutdown::Stop));
    let leaving = if start::begin(&m, notes).await {
        Some(start::stop_gracefully(m, queue_stop, queue_ended.clone()))
    } else {
        queue_stop.cancel();
        None
    };
    q.await.ok();
    queue_ended.cancel();
    if let Some(l) = leaving {
        l.await.ok();
    }
}

// === impl Sim ===

/// The service, its database and the agents.
pub struct Sim {
    pub cfg: Config,
    pub pg: Arc<Postgres>,
    /// `http://127.0.0.1:PORT`, the same across service restarts.
    pub url: String,
    /// The agents' way to the service: through [`proxy`], a listener per agent (agent
    /// `i`'s is cut by `proxy.cut(i, ..)`), which counts their requests.
    pub proxy: proxy::Proxy,
    pub requests: proxy::Counts,
    /// Every container start: (container name, when), for dispatch latency.
    pub starts: Arc<Mutex<Vec<(String, Instant)>>>,
    port: u16,
    service: Mutex<Option<(CancellationToken, tokio::task::JoinHandle<()>)>>,
    pub http: reqwest::Client,
    pub agents: Vec<Agent>,
    /// Time zero of the records.
    pub epoch: Instant,
    failed: Arc<Mutex<HashSet<String>>>,
    /// (job, task) of every task added.
    pub added: Mutex<Vec<(String, String)>>,
}

impl Sim {
    /// PostgreSQL, the service, a pool (`cfg.profile`) of `cfg.slots` slots per node, job `j`,
    /// and `cfg.nodes` agents, every one idle.
    pub async fn start(cfg: Config) -> Sim {
        eprintln!("sim: {cfg:?} (replay with BERTH_SIM_SEED={})", cfg.seed);
        if let Ok(filter) = std::env::var("BERTH_SIM_LOG") {
            // Every agent and the service log here, each line in its span (node, task).
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init()
                .ok();
        }
        let pg = Arc::new(tokio::task::spawn_blocking(Postgres::start).await.unwrap());
        let port = crate::free_port();
        let proxy = proxy::Proxy::new(format!("127.0.0.1:{port}"));
        let mut sim = Sim {
            requests: proxy.counts.clone(),
            proxy,
            starts: Default::default(),
            failed: Default::default(),
            url: format!("http://127.0.0.1:{port}"),
            port,
            pg,
            service: Mutex::new(None),
            http: reqwest::Client::new(),
            agents: vec![],
            epoch: Instant::now(),
            added: Default::default(),
            cfg,
        };
        sim.start_service();
        let t0 = Instant::now();
        while sim.client("GET", "/pools", None).await.0 != 200 {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the service never got ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sim.post_ok(
            "/pools",
            &json!({"id": POOL, "taskSlotsPerNode": sim.cfg.slots,
                "virtualMachineConfiguration": {"containerConfiguration": {"type": "dockerCompatible"}},
                "berthLeaseProfile": sim.cfg.profile}),
        )
        .await;
        sim.post_ok("/jobs", &json!({"id": "j", "poolInfo": {"poolId": POOL}}))
            .await;
        let script = scripter(&sim.cfg, sim.failed.clone());
        for i in 0..sim.cfg.nodes {
            let fake = Fake::new();
            let starts = sim.starts.clone();
            fake.add_image(IMAGE, &[])
                .script(script.clone())
                .on_start(move |name| {
                    starts
                        .lock()
                        .unwrap()
                        .push((name.to_string(), Instant::now()));
                });
            let (addr, _) = sim.proxy.listen().await;
            sim.agents.push(Agent::spawn(
                &format!("http://{addr}"),
                &format!("n{i:04}"),
                fake,
            ));
        }
        sim.wait_idle(
            sim.cfg.nodes,
            Duration::from_secs(60 + sim.cfg.nodes as u64 / 10),
        )
        .await;
        sim
    }

    /// Starts the in-process service (again) on the sim's port.
    pub fn start_service(&self) {
        let cancel = CancellationToken::new();
        let cfg = ServiceConfig {
            database_url: self.pg.url.clone(),
            listen: format!("127.0.0.1:{}", self.port).parse().unwrap(),
            transport: Transport::Plain,
            settings: Settings {
                client_tokens: vec![CLIENT_TOKEN.into()],
                enrolment_secret: SECRET.into(),
                proxy_secret: "proxy-secret-for-the-simulation".into(),
                ..Default::default()
            },
        };
        let c = cancel.clone();
        let h = tokio::spawn(async move {
            berth_agent::service::server::run(cfg, c).await.unwrap();
        });
        *self.service.lock().unwrap() = Some((cancel, h));
    }

    /// Stops the service (open requests get its drain time) and starts it again.
    pub async fn restart_service(&self) {
        let old = self.service.lock().unwrap().take();
        if let Some((cancel, h)) = old {
            cancel.cancel();
            h.await.ok();
        }
        self.start_service();
    }

    /// Waits until `n` nodes are idle (or running).
    pub async fn wait_idle(&self, n: usize, limit: Duration) {
        let t0 = Instant::now();
        loop {
            let up: usize = self
                .sql("SELECT count(*) FROM nodes WHERE state IN ('idle', 'running')")
                .await
                .trim()
                .parse()
                .unwrap_or(0);
            if up >= n {
                return;
            }
            assert!(
                t0.elapsed() < limit,
                "{up} of {n} nodes idle after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A client REST call; (status, body).
    pub async fn client(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut r = self
            .http
            .request(
                method.parse().unwrap(),
                format!("{}{}", self.url, crate::agent::versioned(path)),
            )
            .bearer_auth(CLIENT_TOKEN);
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json; odata=minimalmetadata")
                .body(b.to_string());
        }
        match r.send().await {
            Ok(resp) => {
                let st = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                (
                    st,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            }
            Err(e) => (0, Value::String(e.to_string())),
        }
    }

    pub async fn post_ok(&self, path: &str, body: &Value) {
        let (st, b) = self.client("POST", path, Some(body)).await;
        assert!((200..300).contains(&st), "POST {path}: {st} {b}");
    }

    /// Adds tasks `first..first+n` to job `j` (100 per `addtaskcollection`, retried while
    /// the service or PostgreSQL is away).
    pub async fn add_tasks(&self, first: usize, n: usize) {
        let ids: Vec<String> = (first..first + n).map(|i| format!("t{i:07}")).collect();
        for chunk in ids.chunks(100) {
            let value: Vec<Value> = chunk
                .iter()
                .map(|id| {
                    json!({"id": id, "commandLine": "/bin/true",
                        "containerSettings": {"imageName": IMAGE},
                        "constraints": {"maxTaskRetryCount": MAX_RETRIES}})
                })
                .collect();
            let body = json!({ "value": value });
            let t0 = Instant::now();
            loop {
                let (st, b) = self
                    .client("POST", "/jobs/j/addtaskcollection", Some(&body))
                    .await;
                if st == 200 {
                    let fine = b["value"]
                        .as_array()
                        .is_some_and(|v| v.iter().all(|r| r["status"] == "success"));
                    assert!(fine, "addtaskcollection: {b}");
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(120),
                    "addtaskcollection: {st} {b}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let mut added = self.added.lock().unwrap();
            added.extend(chunk.iter().map(|id| ("j".to_string(), id.clone())));
        }
    }

    /// Adds tasks `first..first + n` as [`Sim::add_tasks`] does, over `streams` calls at a
    /// time (as the SDKs' `add_collection` with several threads), each stream a contiguous
    /// range in order.
    pub async fn add_tasks_parallel(&self, first: usize, n: usize, streams: usize) {
        let streams = streams.max(1);
        // Whole calls of 100 per stream, so that no call is split.
        let per = n.div_ceil(streams).div_ceil(100) * 100;
        let ranges: Vec<(usize, usize)> = (0..streams)
            .map(|i| (first + i * per, per.min(n.saturating_sub(i * per))))
            .filter(|(_, k)| *k > 0)
            .collect();
        futures_util::future::join_all(ranges.into_iter().map(|(at, k)| self.add_tasks(at, k)))
            .await;
    }

    /// How many of the tasks are completed.
    pub async fn completed(&self) -> Option<usize> {
        self.try_sql("SELECT count(*) FROM tasks WHERE state = 'completed'")
            .await
            .and_then(|s| s.trim().parse().ok())
    }

    /// Waits until every added task is completed; false at `limit`.
    pub async fn wait_done(&self, limit: Duration) -> bool {
        let t0 = Instant::now();
        let n = self.added.lock().unwrap().len();
        while t0.elapsed() < limit {
            if self.completed().await == Some(n) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        false
    }

    /// One psql statement (unaligned, tuples only); panics on an error.
    pub async fn sql(&self, sql: &str) -> String {
        let (pg, sql) = (self.pg.clone(), sql.to_string());
        tokio::task::spawn_blocking(move || pg.psql(&sql))
            .await
            .unwrap()
    }

    /// As [`Sim::sql`], `None` when PostgreSQL is away.
    pub async fn try_sql(&self, sql: &str) -> Option<String> {
        let (pg, sql) = (self.pg.clone(), sql.to_string());
        tokio::task::spawn_blocking(move || pg.try_psql(&sql))
            .await
            .unwrap()
    }

    /// Holds a transaction open for `d` in a session of its own (repeatable read, a
    /// transaction id taken, a read of `tasks`): the xmin horizon stays where it was, so no
    /// row deleted or updated meanwhile can be vacuumed. Returns at once; the handle
    /// answers whether the session held to the end (a PostgreSQL restart ends it early).
    pub fn hold_transaction(&self, d: Duration) -> tokio::task::JoinHandle<bool> {
        let sql = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT txid_current(); \
             SELECT count(*) FROM tasks; SELECT pg_sleep({}); COMMIT;",
            d.as_secs_f64()
        );
        // The command alone, not the server: dropping the sim must still stop PostgreSQL.
        let mut psql = self.pg.psql_command(&sql);
        tokio::task::spawn_blocking(move || psql.output().is_ok_and(|o| o.status.success()))
    }

    /// Adds task `id` to job `j` alone and waits for its container: the time from the
    /// add's answer to the container's start (dispatch latency); `None` if it has not
    /// started within `limit`.
    pub async fn dispatch_one(&self, id: &str, limit: Duration) -> Option<Duration> {
        let body = json!({"id": id, "commandLine": "/bin/true",
            "containerSettings": {"imageName": IMAGE}});
        let (st, b) = self.client("POST", "/jobs/j/tasks", Some(&body)).await;
        assert_eq!(st, 201, "{b}");
        let added = Instant::now();
        loop {
            if let Some(t) = self.started(id) {
                return Some(t.saturating_duration_since(added));
            }
            if added.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }

    /// When the first container of task `id` (of job `j`) started, if it did.
    pub fn started(&self, id: &str) -> Option<Instant> {
        let needle = format!(".j.{id}.");
        let starts = self.starts.lock().unwrap();
        starts
            .iter()
            .find(|(n, _)| n.contains(&needle))
            .map(|(_, t)| *t)
    }

    /// Every container run of every agent, in seconds since [`Sim::epoch`].
    pub fn runs(&self) -> Vec<RunRec> {
        let secs = |t: tokio::time::Instant| {
            t.into_std()
                .checked_duration_since(self.epoch)
                .unwrap_or_default()
                .as_secs_f64()
        };
        let mut v = vec![];
        for a in &self.agents {
            for r in a.fake.runs() {
                let l = |k: &str| r.labels.get(k).cloned().unwrap_or_default();
                v.push(RunRec {
                    job: l(labels::JOB),
                    task: l(labels::TASK),
                    attempt: l(labels::POOL_ATTEMPT).parse().unwrap_or(-1),
                    node: a.node_id.clone(),
                    start: secs(r.started),
                    end: r.ended.map(secs),
                });
            }
        }
        v
    }

    /// The `n`-th container run (0-based, by start) of all agents, waited for (polled
    /// every 2 ms); panics after `limit`. With it, the index of the agent that ran it.
    pub async fn nth_run(&self, n: usize, limit: Duration) -> (RunRec, usize) {
        let t0 = Instant::now();
        loop {
            let mut runs = self.runs();
            runs.sort_by(|a, b| a.start.total_cmp(&b.start));
            if let Some(r) = runs.into_iter().nth(n) {
                let i = self.agents.iter().position(|a| a.node_id == r.node);
                return (r, i.unwrap());
            }
            assert!(t0.elapsed() < limit, "run {n} never started");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Every task as the service ended it.
    pub async fn ends(&self) -> Vec<TaskEnd> {
        let out = self
            .sql(
                "SELECT t.job_id, t.id, t.state,
                        COALESCE((t.view->'executionInfo'->>'retryCount')::bigint, 0),
                        t.requeue_count, t.system_retry_count,
                        (SELECT count(*) FROM attempts a WHERE a.task_seq = t.seq),
                        (SELECT count(*) FROM attempts a WHERE a.task_seq = t.seq
                                                           AND a.state = 'completed')
                 FROM tasks t",
            )
            .await;
        out.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                let n = |i: usize| f[i].parse::<i64>().unwrap();
                TaskEnd {
                    job: f[0].into(),
                    task: f[1].into(),
                    state: f[2].into(),
                    retry_count: n(3),
                    requeue_count: n(4),
                    system_retry_count: n(5),
                    attempts: n(6),
                    completed_attempts: n(7),
                }
            })
            .collect()
    }

    /// The checker's verdict over this run.
    pub async fn verdict(&self) -> Verdict {
        let ends = self.ends().await;
        let added = self.added.lock().unwrap().clone();
        check::check(&added, &self.runs(), &ends, MAX_RETRIES)
    }

    /// Kills every agent still alive, then stops the service.
    pub async fn shutdown(&self) {
        tokio::task::block_in_place(|| self.agents.iter().for_each(Agent::kill));
        let old = self.service.lock().unwrap().take();
        if let Some((cancel, h)) = old {
            cancel.cancel();
            h.await.ok();
        }
    }
}
