//! Pool mode's dispatch figures, on a real PostgreSQL, `berth service` and `berth agent
//! --service` processes and the real engine (spec pool-mode.md, section 6, goal 1):
//!
//! * dispatch latency: on an idle pool of 3 agents (2 slots each, fast lease profile), N
//!   `true` tasks added one at a time, each after the last completed; for each, the time
//!   from the add request's 2xx answer (committed) to the engine's container `create` event
//!   of that task (`docker events`, nanosecond timestamps; one machine, one clock). p50 and
//!   p99 beside the targets (p50 <= 20 ms, p99 <= 100 ms).
//! * per-task overhead: M `true` tasks one after another through a standalone `berth
//!   agent` (one slot) and through the pool (one agent, one slot), alternating, each timed
//!   from its add to its `completed` state as read through the API (both polled every
//!   10 ms); medians and the ratio pool / standalone.
//! * agent memory: after those tasks, `VmRSS` (and the peak) of the standalone agent and
//!   of the pool member, and their difference (target: the member +<= 20 MiB).
//!
//! Prints, never asserts timings. Run: `cargo build --release -p berth-agent && cargo bench
//! -p berth-tests --bench pool` (env BERTH_BENCH_N = N, default 30; BERTH_BENCH_M = M,
//! default 20).
#![allow(clippy::disallowed_types)]

use berth_tests::agent::Agent;
use berth_tests::pool::{PoolAgent, Service, CLIENT_TOKEN};
use berth_tests::postgres::Postgres;
use berth_tests::{engine_host, env_usize as env, memory_kib, task, TestNode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often a task's state is read while waiting for it to complete.
const POLL: Duration = Duration::from_millis(10);

/// Nanoseconds since the epoch now (the clock the engine's events use).
fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// `docker events` for the `create` of containers of one job: (task id, event time in ns
/// since the epoch) as they come; the child is killed on drop.
struct Creates {
    child: Child,
    rx: Receiver<(String, i128)>,
    seen: HashMap<String, i128>,
}

impl Creates {
    fn watch(job: &str) -> Creates {
        let mut child = Command::new("docker")
            .args(["-H", engine_host(), "events", "--filter", "type=container"])
            .args(["--filter", "event=create", "--filter"])
            .arg(format!("label=berth.job={job}"))
            .args([
                "--format",
                r#"{{.TimeNano}} {{index .Actor.Attributes "berth.task"}}"#,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker CLI");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let mut f = line.split_whitespace();
                let (Some(ns), Some(task)) = (f.next(), f.next()) else {
                    continue;
                };
                if let Ok(ns) = ns.parse::<i128>() {
                    if tx.send((task.to_string(), ns)).is_err() {
                        return;
                    }
                }
            }
        });
        Creates {
            child,
            rx,
            seen: HashMap::new(),
        }
    }

    /// The create time of `task`'s first container, waiting up to `limit`.
    fn of(&mut self, task: &str, limit: Duration) -> i128 {
        let t0 = Instant::now();
        loop {
            if let Some(ns) = self.seen.get(task) {
                return *ns;
            }
            let left = limit.saturating_sub(t0.elapsed());
            assert!(!left.is_zero(), "no create event for {task} in {limit:?}");
            if let Ok((t, ns)) = self.rx.recv_timeout(left) {
                self.seen.entry(t).or_insert(ns);
            }
        }
    }
}

impl Drop for Creates {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A pool of `nodes` agents with `slots` each, all idle, and a job on it.
fn pool(svc: &Service, id: &str, nodes: usize, slots: u32, job: &str) -> Vec<PoolAgent> {
    svc.add_pool(id, slots, json!({}));
    let agents: Vec<PoolAgent> = (0..nodes)
        .map(|i| PoolAgent::start(&format!("{id}n{i}"), id, std::slice::from_ref(&svc.url)))
        .collect();
    svc.wait_nodes(id, "idle", nodes);
    svc.post_ok("/jobs", &json!({"id": job, "poolInfo": {"poolId": id}}));
    agents
}

/// Adds one task to the service; returns the time of the 2xx answer (ns since the epoch).
fn add_pool_task(svc: &Service, job: &str, t: &Value) -> i128 {
    let path = berth_tests::agent::versioned(&format!("/jobs/{job}/tasks"));
    let (st, b) = post(&svc.url, &path, t);
    let at = now_ns();
    assert!((200..300).contains(&st), "add {}: {st} {b}", t["id"]);
    at
}

/// One POST over a plain TCP connection with the client token, in this process (a curl
/// process would add its own start and exit to the time measured); (status, body).
fn post(url: &str, path: &str, body: &Value) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let body = body.to_string();
    let head = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {CLIENT_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
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

/// Polls `state` (a task's JSON) until it says completed; panics after a minute.
fn wait_completed(what: &str, mut state: impl FnMut() -> Value) -> Value {
    let t0 = Instant::now();
    loop {
        let t = state();
        if t["state"] == "completed" {
            assert_eq!(t["executionInfo"]["result"], "success", "{what}: {t}");
            return t;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{what}: {t}");
        std::thread::sleep(POLL);
    }
}

/// The value at fraction `q` (0..=1) of the sorted samples (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    quantile(&v, 0.5)
}

fn main() {
    let n = env("BERTH_BENCH_N", 30);
    let m = env("BERTH_BENCH_M", 20);
    berth_tests::images();
    let pg = Postgres::start();
    let svc = Service::start(&pg.url);
    svc.wait_ready();
    let tag = std::process::id();

    // 1. Dispatch latency on an idle 3-node pool.
    let job = format!("lat{tag}");
    let agents = pool(&svc, "benchlat", 3, 2, &job);
    let mut creates = Creates::watch(&job);
    let mut lat_ms = Vec::new();
    // Three warm-up tasks (one per node under spread) also prove the event stream is live.
    for i in 0..n + 3 {
        let id = format!("t{i}");
        let added = add_pool_task(&svc, &job, &task(&id, "true", ""));
        let created = creates.of(&id, Duration::from_secs(60));
        if i >= 3 {
            lat_ms.push((created - added) as f64 / 1e6);
        }
        wait_completed(&id, || svc.task(&job, &id));
        // Completed is reported before the agent is back in its claim poll: let it settle,
        // so the next task finds the pool idle.
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(creates);
    drop(agents);
    lat_ms.sort_by(f64::total_cmp);
    println!(
        "dispatch latency, add answered -> container create, idle pool of 3 nodes x 2 slots, {n} tasks:"
    );
    println!(
        "  p50 {:>7.1} ms  (target <= 20 ms)   p99 {:>7.1} ms  (target <= 100 ms)   min {:.1} ms  max {:.1} ms",
        quantile(&lat_ms, 0.5),
        quantile(&lat_ms, 0.99),
        lat_ms[0],
        lat_ms[lat_ms.len() - 1]
    );

    // 2. Per-task overhead: a standalone agent against a one-node pool, one slot each.
    let node = TestNode::new("benchsolo");
    let solo = Agent::start_pool(
        &node,
        &[],
        std::path::Path::new("/dev/null"),
        &json!({"id": "agentpool", "taskSlotsPerNode": 1,
            "virtualMachineConfiguration": {"containerConfiguration": {"type": "dockerCompatible"}}}),
    );
    solo.wait_node("idle");
    let (st, b) = solo.req("POST", "/jobs", Some(&json!({"id": "solo"})));
    assert_eq!(st, 201, "{b}");
    let pjob = format!("ovh{tag}");
    let _one = pool(&svc, "benchone", 1, 1, &pjob);
    let (mut solo_ms, mut pool_ms) = (Vec::new(), Vec::new());
    // One warm-up task each, then alternate so that drift on the machine hits both alike.
    for i in 0..m + 1 {
        let id = format!("o{i}");
        let t = task(&id, "true", "");
        let t0 = Instant::now();
        let (st, b) = solo.req("POST", "/jobs/solo/tasks", Some(&t));
        assert_eq!(st, 201, "{b}");
        wait_completed(&id, || solo.json(&format!("/jobs/solo/tasks/{id}")));
        let s = t0.elapsed();
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        add_pool_task(&svc, &pjob, &t);
        wait_completed(&id, || svc.task(&pjob, &id));
        let p = t0.elapsed();
        std::thread::sleep(Duration::from_millis(100));
        if i > 0 {
            solo_ms.push(s.as_secs_f64() * 1e3);
            pool_ms.push(p.as_secs_f64() * 1e3);
        }
    }
    // 3. Agent memory after those tasks: the same binary as a standalone agent (its own
    // API and store) and as a pool member (spec §6 goal 8: +<= 20 MiB).
    let mib = |pid: u32| {
        let (rss, peak) = memory_kib(pid);
        (rss as f64 / 1024.0, peak as f64 / 1024.0)
    };
    let ((s_rss, s_peak), (p_rss, p_peak)) = (mib(solo.child.id()), mib(_one[0].child.id()));
    let (s, p) = (median(solo_ms), median(pool_ms));
    println!("per-task add -> completed, {m} `true` tasks one after another on one slot:");
    println!("  standalone agent  median {s:>7.1} ms");
    println!(
        "  pool (1 node)     median {p:>7.1} ms   ratio pool/standalone {:.2}x  overhead {:+.1} ms",
        p / s,
        p - s
    );
    println!("agent RSS after {} tasks on one slot:", m + 1);
    println!(
        "  standalone {s_rss:.1} MiB (peak {s_peak:.1})   pool member {p_rss:.1} MiB (peak {p_peak:.1})   delta {:+.1} MiB (target <= +20 MiB)",
        p_rss - s_rss
    );
}
