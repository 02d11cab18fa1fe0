//! The daemon's throughput and footprint, against raw Engine API calls in the same run:
//!
//! * raw:   N `true` containers through bollard (create -> start -> wait -> remove), S at once
//! * berth: N `true` tasks added to `berth agent` (S slots) through its API, in collections
//!   of 100, timed from the first add until the store has them all completed
//!
//! Prints tasks per second for both and the ratio, the agent's CPU seconds per task, its
//! idle RSS (after pool start), its peak RSS over the run, and its RSS with Q tasks queued
//! (they wait on a dependency that does not finish; the job is terminated afterwards).
//!
//! Run: `cargo build --release -p berth-agent && cargo bench -p berth-tests --bench
//! throughput` (env BERTH_BENCH_TASKS = N, default 1000; BERTH_BENCH_SLOTS = S, default 4;
//! BERTH_BENCH_QUEUED = Q, default 10000).
#![allow(clippy::disallowed_types)]

use berth_tests::{berth_bin, engine_host, env_usize as env, images};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One HTTP/1.0 request on the agent's socket: (status, body).
fn req(sock: &Path, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return (0, String::new());
    };
    let b = body.map(|v| v.to_string()).unwrap_or_default();
    let path = berth_tests::agent::versioned(path);
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: berth\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        b.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(b.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (
        status,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

fn metric(sock: &Path, line_start: &str) -> u64 {
    let (_, text) = req(sock, "GET", "/metrics", None);
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0)
}

/// VmRSS or VmHWM of a process, in KiB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start_matches(':')
                .trim()
                .trim_end_matches(" kB")
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    ticks as f64 / hz
}

async fn raw(n: usize, slots: usize) -> Duration {
    let d = bollard::Docker::connect_with_socket(
        engine_host().trim_start_matches("unix://"),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .unwrap();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let workers: Vec<_> = (0..slots)
        .map(|_| {
            let (d, next) = (d.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let name = format!("berth-bench-tp-{}-{i}", std::process::id());
                    berth_tests::raw_true_container(&d, &name).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    t.elapsed()
}

fn add_tasks(sock: &Path, job: &str, tasks: Vec<Value>) {
    for chunk in tasks.chunks(100) {
        let (st, body) = req(
            sock,
            "POST",
            &format!("/jobs/{job}/addtaskcollection"),
            Some(&json!({ "value": chunk })),
        );
        assert_eq!(st, 200, "{body}");
        assert!(!body.contains("clienterror"), "{body}");
    }
}

fn true_task(id: String) -> Value {
    json!({"id": id, "commandLine": "true",
        "containerSettings": {"imageName": "myimage", "containerRunOptions": "--network none"}})
}

fn main() {
    let n = env("BERTH_BENCH_TASKS", 1000);
    let slots = env("BERTH_BENCH_SLOTS", 4);
    let queued = env("BERTH_BENCH_QUEUED", 10000);
    images();
    let dir = tempfile::tempdir().unwrap();
    let sock: PathBuf = dir.path().join("berth.sock");
    let pool = dir.path().join("pool.json");
    std::fs::write(
        &pool,
        json!({"id": "benchpool", "taskSlotsPerNode": slots,
            "virtualMachineConfiguration": {"containerConfiguration": {"type": "dockerCompatible"}}})
        .to_string(),
    )
    .unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    eprintln!("raw: {n} containers, {slots} at a time...");
    let raw_time = rt.block_on(raw(n, slots));

    let mut agent = Command::new(berth_bin())
        .args([
            "agent",
            "--config",
            "/dev/null",
            "--engine",
            engine_host(),
            "--node-id",
        ])
        .arg(format!("bench-{}", std::process::id()))
        .arg("--node-root")
        .arg(dir.path().join("root"))
        .arg("--socket")
        .arg(&sock)
        .arg("--pool")
        .arg(&pool)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = agent.id();
    let t = Instant::now();
    while req(&sock, "GET", "/node", None).0 != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the agent did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let idle_kib = proc_kib(pid, "VmRSS");

    eprintln!("berth: {n} tasks through the agent's API...");
    assert_eq!(
        req(&sock, "POST", "/jobs", Some(&json!({"id": "tp"}))).0,
        201
    );
    let cpu0 = cpu_secs(pid);
    let t = Instant::now();
    add_tasks(
        &sock,
        "tp",
        (0..n).map(|i| true_task(format!("t{i}"))).collect(),
    );
    let done = "berth_tasks{state=\"completed\"} ";
    while metric(&sock, done) < n as u64 {
        assert!(
            t.elapsed() < Duration::from_secs(3600),
            "tasks did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let berth_time = t.elapsed();
    let cpu = cpu_secs(pid) - cpu0;
    let ok = metric(
        &sock,
        "berth_task_duration_seconds_count{result=\"success\"} ",
    );
    assert_eq!(ok, n as u64, "every task succeeded");
    let run_peak_kib = proc_kib(pid, "VmHWM");

    eprintln!("berth: {queued} tasks queued behind a dependency...");
    assert_eq!(
        req(
            &sock,
            "POST",
            "/jobs",
            Some(&json!({"id": "q", "usesTaskDependencies": true}))
        )
        .0,
        201
    );
    let mut gate = true_task("gate".into());
    gate["commandLine"] = json!("sleep 600");
    add_tasks(&sock, "q", vec![gate]);
    let waiting: Vec<Value> = (0..queued)
        .map(|i| {
            let mut t = true_task(format!("w{i}"));
            t["dependsOn"] = json!({"taskIds": ["gate"]});
            t
        })
        .collect();
    let tq = Instant::now();
    add_tasks(&sock, "q", waiting);
    let add_secs = tq.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let queued_kib = proc_kib(pid, "VmRSS");
    let queued_peak_kib = proc_kib(pid, "VmHWM");
    let active = metric(&sock, "berth_tasks{state=\"active\"} ");
    assert_eq!(req(&sock, "POST", "/jobs/q/terminate", None).0, 202);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    agent.wait().ok();

    let per_sec = |d: Duration| n as f64 / d.as_secs_f64();
    let mib = |k: u64| k as f64 / 1024.0;
    println!("throughput, {n} `true` tasks, {slots} slots (same run):");
    println!(
        "  raw engine API   {:8.2} s  {:7.1} tasks/s",
        raw_time.as_secs_f64(),
        per_sec(raw_time)
    );
    println!(
        "  berth agent      {:8.2} s  {:7.1} tasks/s",
        berth_time.as_secs_f64(),
        per_sec(berth_time)
    );
    println!(
        "  berth / raw      {:8.2}x",
        per_sec(berth_time) / per_sec(raw_time)
    );
    println!(
        "  agent CPU        {:8.2} ms per task",
        cpu * 1000.0 / n as f64
    );
    println!("footprint (agent process):");
    println!("  idle RSS             {:6.1} MiB", mib(idle_kib));
    println!("  peak RSS, {n} tasks  {:6.1} MiB", mib(run_peak_kib));
    println!(
        "  RSS with {active} queued  {:6.1} MiB (peak {:.1} MiB; adding them took {add_secs:.1} s)",
        mib(queued_kib),
        mib(queued_peak_kib)
    );
}
