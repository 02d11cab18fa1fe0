//! `berth agent` as the tests drive it: started on a test node with a pool of 4 slots,
//! spoken to with raw HTTP/1.0 over its Unix socket.
#![allow(clippy::disallowed_types)]

use crate::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Batch API version the tests send (Batch requires one on every request).
pub const API_VERSION: &str = "2024-07-01.20.0";

/// `path` with `api-version`, unless it has one.
pub fn versioned(path: &str) -> String {
    if path.contains("api-version=") {
        return path.to_string();
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}api-version={API_VERSION}")
}

/// `berth agent` on a test node, reached over its Unix socket; killed on drop (its log
/// tail printed when the test failed).
pub struct Agent {
    pub child: Child,
    pub sock: PathBuf,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(n: &TestNode) -> Agent {
        Agent::start_with(n, &[])
    }

    pub fn start_with(n: &TestNode, env: &[(&str, &str)]) -> Agent {
        Agent::start_full(n, env, Path::new("/dev/null"))
    }

    pub fn start_full(n: &TestNode, env: &[(&str, &str)], config: &Path) -> Agent {
        let pool = json!({"id": "agentpool", "taskSlotsPerNode": 4,
            "virtualMachineConfiguration": {"containerConfiguration": {"type": "dockerCompatible"}}});
        Agent::start_pool(n, env, config, &pool)
    }

    /// The agent with a pool of the test's own (users, start task, slots).
    pub fn start_pool(n: &TestNode, env: &[(&str, &str)], config: &Path, pool: &Value) -> Agent {
        let sock = n.dir.path().join("berth.sock");
        let pool = n.file("agentpool.json", pool);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.dir.path().join("agent.log"))
            .unwrap();
        let child = Command::new(berth_bin())
            .args(["agent", "--config"])
            .arg(config)
            .args([
                "--engine",
                &n.engine,
                "--node-id",
                &n.node_id,
                "--node-root",
            ])
            .arg(n.root())
            .arg("--socket")
            .arg(&sock)
            .arg("--pool")
            .arg(&pool)
            .stdout(Stdio::null())
            .envs(env.iter().copied())
            .stderr(log)
            .spawn()
            .unwrap();
        let a = Agent {
            child,
            sock,
            log: n.dir.path().join("agent.log"),
        };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if a.sock.exists() && a.req("GET", "/node", None).0 == 200 {
                return a;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the agent did not answer on {}", a.sock.display());
    }

    /// One HTTP/1.0 request (`api-version` added); returns (status, body).
    pub fn raw(&self, method: &str, path: &str, ctype: &str, body: &[u8]) -> (u16, String) {
        let path = versioned(path);
        // Status 0: nothing answers (not started yet, or killed).
        let Ok(mut s) = UnixStream::connect(&self.sock) else {
            return (0, String::new());
        };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let head = format!("{method} {path} HTTP/1.0\r\nHost: berth\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n", body.len());
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).ok();
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

    /// A body-less request with extra headers (`api-version` added); returns (status,
    /// response head, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, String) {
        self.exact(method, &versioned(path), headers, b"")
    }

    /// One request exactly as given (no `api-version` added), with extra headers and a
    /// body; returns (status, response head, body).
    pub fn exact(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String, String) {
        let Ok(mut s) = UnixStream::connect(&self.sock) else {
            return (0, String::new(), String::new());
        };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut head = format!("{method} {path} HTTP/1.0\r\nHost: berth\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).ok();
        let mut out = vec![];
        // A connection cut short still has its head.
        s.read_to_end(&mut out).ok();
        let text = String::from_utf8_lossy(&out).to_string();
        let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (status, head.to_string(), body.to_string())
    }

    /// GET with extra headers; returns (status, body).
    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let (st, _, b) = self.request("GET", path, headers);
        (st, b)
    }

    /// HEAD; returns (status, response head).
    pub fn head(&self, path: &str) -> (u16, String) {
        let (st, h, _) = self.request("HEAD", path, &[]);
        (st, h)
    }

    pub fn req(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let b = body.map(|v| v.to_string()).unwrap_or_default();
        self.raw(
            method,
            path,
            "application/json; odata=minimalmetadata",
            b.as_bytes(),
        )
    }

    pub fn json(&self, path: &str) -> Value {
        let (st, b) = self.req("GET", path, None);
        assert_eq!(st, 200, "{path}: {b}");
        serde_json::from_str(&b).unwrap()
    }

    /// Every item of the list at `path`, following `odata.nextLink` page after page (a
    /// page holds 1000 at most), as the SDKs do.
    pub fn list(&self, path: &str) -> Vec<Value> {
        let mut page = self.json(path);
        let mut all = page["value"].as_array().cloned().unwrap_or_default();
        while let Some(next) = page["odata.nextLink"].as_str() {
            let rel = next
                .strip_prefix("http://berth")
                .unwrap_or(next)
                .to_string();
            page = self.json(&rel);
            all.extend(page["value"].as_array().cloned().unwrap_or_default());
        }
        all
    }

    pub fn wait_state(&self, job: &str, task: &str, state: &str) -> Value {
        self.wait_state_for(job, task, state, Duration::from_secs(60))
    }

    pub fn wait_state_for(&self, job: &str, task: &str, state: &str, limit: Duration) -> Value {
        let t0 = Instant::now();
        loop {
            let t = self.json(&format!("/jobs/{job}/tasks/{task}"));
            if t["state"] == state {
                return t;
            }
            assert!(t0.elapsed() < limit, "{task} never reached {state}: {t}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the node to reach `state` (60 s at most).
    pub fn wait_node(&self, state: &str) -> Value {
        let t0 = Instant::now();
        loop {
            let node = self.json("/node");
            if node["state"] == state {
                return node;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the node never reached {state}: {node}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// After SIGKILL: the socket file may stay, but nothing answers on it.
    pub fn json_after_kill_is_gone(&self) {
        assert!(UnixStream::connect(&self.sock).is_err());
    }

    pub fn term(mut self) -> Option<i32> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.child.wait().unwrap().code()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        // A failed test shows what the agent said.
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- agent log (last 40 lines) ---");
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
    }
}
