//! Pool mode as the tests drive it: a real PostgreSQL ([`crate::postgres`]), one or more
//! real `berth service` processes ([`crate::service`]), and real `berth agent --service`
//! processes, each with its own node id, node root and socket, all on the one test engine.
#![allow(clippy::disallowed_types)]

use crate::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::service::{Service, CLIENT_TOKEN, ENROLMENT_SECRET};

/// What pool-mode scenarios ask of a service beyond single requests.
impl Service {
    /// Waits until the service has its schema (it answers 503 until then).
    pub fn wait_ready(&self) -> &Self {
        let t0 = Instant::now();
        while self.req("GET", "/pools", None).0 != 200 {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the service never got ready: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self
    }

    /// GET `path`; (status, body as text).
    pub fn get(&self, path: &str) -> (u16, String) {
        self.text("GET", path, None)
    }

    /// POST that must answer 2xx.
    pub fn post_ok(&self, path: &str, body: &Value) {
        let (st, b) = self.req("POST", path, Some(body));
        assert!((200..300).contains(&st), "POST {path}: {st} {b}");
    }

    /// Adds a container pool with `slots` per node and `extra` fields merged in (berth's
    /// fast lease profile unless `extra` says otherwise).
    pub fn add_pool(&self, id: &str, slots: u32, extra: Value) {
        let mut pool = json!({"id": id, "taskSlotsPerNode": slots,
            "virtualMachineConfiguration": {"containerConfiguration": {"type": "dockerCompatible"}},
            "berthLeaseProfile": "fast"});
        if let (Some(p), Some(e)) = (pool.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        self.post_ok("/pools", &pool);
    }

    pub fn task(&self, job: &str, task: &str) -> Value {
        self.json(&format!("/jobs/{job}/tasks/{task}"))
    }

    /// Waits until `job` has at least `n` tasks, all completed (limit in seconds); names
    /// the ones left when it gives up.
    pub fn wait_completed(&self, job: &str, n: usize, limit: u64) -> Vec<Value> {
        let t0 = Instant::now();
        loop {
            let tasks = self.json(&format!("/jobs/{job}/tasks"))["value"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let done = tasks.iter().filter(|t| t["state"] == "completed").count();
            if tasks.len() >= n && done == tasks.len() {
                return tasks;
            }
            if t0.elapsed() > Duration::from_secs(limit) {
                let left: Vec<String> = tasks
                    .iter()
                    .filter(|t| t["state"] != "completed")
                    .map(|t| format!("{} {} {}", t["id"], t["state"], t["dependsOn"]))
                    .collect();
                panic!(
                    "{job}: {done} of {} tasks completed after {limit} s; left: {left:?}",
                    tasks.len()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the pool has `n` nodes in `state`.
    pub fn wait_nodes(&self, pool: &str, state: &str, n: usize) -> Vec<Value> {
        let t0 = Instant::now();
        loop {
            let nodes = self.json(&format!("/pools/{pool}/nodes"))["value"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let hit: Vec<Value> = nodes
                .iter()
                .filter(|n| n["state"] == state)
                .cloned()
                .collect();
            if hit.len() >= n {
                return hit;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{pool}: {} nodes {state}, wanted {n}: {nodes:?}",
                hit.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `berth agent` joined to a pool through one or more service replicas; killed on drop.
pub struct PoolAgent {
    pub child: Child,
    pub node: TestNode,
    pub log: PathBuf,
}

impl PoolAgent {
    /// Starts the agent for `pool` against `services` (their URLs, in order).
    pub fn start(name: &str, pool: &str, services: &[String]) -> PoolAgent {
        let node = TestNode::new(name);
        let secret = secret_file(&node.dir, "enrol", ENROLMENT_SECRET);
        // The node's own API token: its TCP API (port chosen by the kernel) is where the
        // service reads the node's files from.
        let token = secret_file(&node.dir, "token", "node-api-token-0123456789abcdef");
        let config = node.dir.path().join("berth.toml");
        std::fs::write(
            &config,
            format!(
                "service = {services:?}\npool_id = {pool:?}\nenrolment_secret_file = {:?}\n\
                 tcp_address = \"127.0.0.1:0\"\ntoken_file = {:?}\n",
                secret.display().to_string(),
                token.display().to_string()
            ),
        )
        .unwrap();
        let log = node.dir.path().join("agent.log");
        let child = Command::new(berth_bin())
            .args(["agent", "--config"])
            .arg(&config)
            .args(["--engine", &node.engine, "--node-id", &node.node_id])
            .arg("--node-root")
            .arg(node.root())
            .arg("--socket")
            .arg(node.dir.path().join("berth.sock"))
            .env("RUST_LOG", "berth_agent=debug,info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        PoolAgent { child, node, log }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).unwrap();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PoolAgent {
    fn drop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
        self.child.kill().ok();
        self.child.wait().ok();
        if std::thread::panicking() {
            eprintln!(
                "--- agent log {} ---\n{}",
                self.node.node_id,
                tail(&self.log_text())
            );
        }
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// A secret in a file of mode 0600 (berth refuses one others can read).
pub fn secret_file(dir: &tempfile::TempDir, name: &str, secret: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.path().join(name);
    std::fs::write(&p, secret).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}
