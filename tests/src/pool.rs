//! Pool mode as the tests drive it: a real PostgreSQL ([`crate::postgres`]), one or more
//! real `berth service` processes on loopback (plain HTTP, asked for explicitly), and real
//! `berth agent --service` processes, each with its own node id, node root and socket, all
//! on the one test engine. Spoken to with raw HTTP/1.0 over TCP and a client token.
#![allow(clippy::disallowed_types)]

use crate::postgres::Postgres;
use crate::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The client token and the enrolment secret every test pool uses.
pub const TOKEN: &str = "client-token-0123456789abcdef";
pub const SECRET: &str = "enrolment-secret-0123456789abcdef";

/// One `berth service` replica; killed on drop.
pub struct Service {
    pub child: Child,
    pub addr: String,
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Service {
    /// Starts a replica on a free port against `pg`; waits until it answers.
    pub fn start(pg: &Postgres) -> Service {
        let dir = tempfile::Builder::new()
            .prefix("berth-service-")
            .tempdir()
            .unwrap();
        let token = secret_file(&dir, "token", TOKEN);
        let secret = secret_file(&dir, "enrol", SECRET);
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.path().join("service.log");
        let child = Command::new(berth_bin())
            .args(["service", "--database-url", &pg.url, "--listen", &addr])
            .arg("--insecure-http")
            .arg("--token-file")
            .arg(&token)
            .arg("--enrolment-secret-file")
            .arg(&secret)
            .env("RUST_LOG", "berth_agent=debug,info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let s = Service {
            child,
            addr,
            log,
            dir,
        };
        let t = Instant::now();
        while s.get("/pools").0 != 200 {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "the service did not answer on {}: {}",
                s.addr,
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One request with the client token; (status, body).
    pub fn req(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        http(&self.addr, method, path, Some(TOKEN), body)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.req("GET", path, None)
    }

    pub fn json(&self, path: &str) -> Value {
        let (st, b) = self.get(path);
        assert_eq!(st, 200, "GET {path}: {b}");
        serde_json::from_str(&b).unwrap()
    }

    /// POST that must answer 2xx.
    pub fn post_ok(&self, path: &str, body: &Value) {
        let (st, b) = self.req("POST", path, Some(body));
        assert!((200..300).contains(&st), "POST {path}: {st} {b}");
    }

    /// Adds a container pool with `slots` per node and `extra` fields merged in.
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

    /// Waits until every listed task of `job` is completed (limit in seconds).
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

impl Drop for Service {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        if std::thread::panicking() {
            eprintln!(
                "--- service log {} ---\n{}",
                self.addr,
                tail(&self.log_text())
            );
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
        let secret = secret_file(&node.dir, "enrol", SECRET);
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

/// One HTTP/1.0 request over TCP; (status, body). Status 0: nothing answered.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json; odata=minimalmetadata\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    if s.write_all(head.as_bytes()).is_err() || s.write_all(body.as_bytes()).is_err() {
        return (0, String::new());
    }
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
