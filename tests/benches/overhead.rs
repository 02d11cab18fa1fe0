//! Per-task overhead of berth against raw Engine API calls, measured in the same run:
//!
//! * raw:        bollard create -> start -> wait -> remove of a `true` container
//! * berth task: berth's whole task path (plan, run options, create body, create, attach,
//!   start, wait, output files, inspect, report) for the same container; its removal runs
//!   in the background, off the path
//! * berth task + removal: the same, until the container is also gone (the path as it was
//!   when removal was on it)
//! * berth run:  the `berth run` process with N such tasks on one slot, per task
//!
//! Prints medians and ratios against raw. Run: `cargo bench -p berth-tests`.
#![allow(clippy::disallowed_types)]

use berth_agent::engine::{Docker, SharedEngine};
use berth_agent::node::users;
use berth_agent::task::{self, plan, NodeContext};
use berth_proto::{load, JobSpec};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const N: usize = 15;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn raw_once(engine: &Docker, i: usize) -> Duration {
    let d = engine.raw();
    let start = Instant::now();
    let name = format!("berth-bench-raw-{}-{i}", std::process::id());
    berth_tests::raw_true_container(d, &name).await;
    start.elapsed()
}

fn main() {
    let host = berth_tests::engine_host();
    berth_tests::images();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let docker = Docker::connect(Some(host)).await.unwrap();
        let engine: SharedEngine = Arc::new(docker.clone());
        let dir = tempfile::tempdir().unwrap();
        let mut runtime = NodeContext::on_engine(engine.clone(), &dir.path().join("root"));
        runtime.node.node_id = format!("bench-{}", std::process::id());
        runtime.node.pool_id = "benchpool".into();
        runtime.stop_grace = Duration::from_secs(2);
        runtime.node.layout.prepare().unwrap();
        let pool = runtime.pool.clone();
        let job = JobSpec::default_for_run();
        let user = users::resolve(None, &pool).unwrap();
        // Warm up both paths once.
        raw_once(&docker, 999).await;
        let mut raw = Vec::new();
        let mut berth = Vec::new();
        let mut removed = Vec::new();
        for i in 0..N {
            raw.push(raw_once(&docker, i).await);
            let json = format!(r#"{{"id":"b{i}","commandLine":"true","containerSettings":{{"imageName":"myimage","containerRunOptions":"--network none"}}}}"#);
            let spec = load::tasks("bench", &json).unwrap().items.remove(0).1;
            let start = Instant::now();
            let p = plan::task(&spec, &job, &runtime.node, user.clone()).unwrap();
            task::prepare_dirs(&p, true).unwrap();
            let info = task::run_task(&runtime, &p, &CancellationToken::new(), None, &|_| {}).await;
            berth.push(start.elapsed());
            runtime.removals.idle().await;
            removed.push(start.elapsed());
            assert_eq!(info.exit_code, Some(0));
        }
        let (r, b, rm) = (median(raw), median(berth), median(removed));
        println!("raw Engine API create/start/wait/remove: median {:>7.1} ms", r.as_secs_f64() * 1e3);
        println!("berth task path (same container):        median {:>7.1} ms  ratio {:.2}x  overhead {:+.1} ms", b.as_secs_f64() * 1e3, b.as_secs_f64() / r.as_secs_f64(), (b.as_secs_f64() - r.as_secs_f64()) * 1e3);
        println!("berth task path + its removal:           median {:>7.1} ms  ratio {:.2}x  overhead {:+.1} ms", rm.as_secs_f64() * 1e3, rm.as_secs_f64() / r.as_secs_f64(), (rm.as_secs_f64() - r.as_secs_f64()) * 1e3);

        // The whole `berth run` process, N tasks on one slot.
        let tasks: Vec<String> = (0..N).map(|i| format!(r#"{{"id":"p{i}","commandLine":"true","containerSettings":{{"imageName":"myimage","containerRunOptions":"--network none"}}}}"#)).collect();
        let f = dir.path().join("tasks.json");
        std::fs::write(&f, format!("[{}]", tasks.join(","))).unwrap();
        let start = Instant::now();
        let out = std::process::Command::new(berth_tests::berth_bin())
            .args(["run", "--engine", host, "--node-id", &format!("benchrun-{}", std::process::id()), "--node-root"])
            .arg(dir.path().join("root2")).arg(&f).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let per = start.elapsed() / N as u32;
        println!("berth run process, {N} tasks on 1 slot:   per task {:>7.1} ms  ratio {:.2}x", per.as_secs_f64() * 1e3, per.as_secs_f64() / r.as_secs_f64());
    });
}
