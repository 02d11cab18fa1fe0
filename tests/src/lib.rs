//! Harness for berth's engine tests: a REAL Docker engine, a real registry, the real
//! filesystem and the real `berth` binary.
//!
//! The engine is the one at `BERTH_TEST_DOCKER_HOST`, `DOCKER_HOST` or the default socket
//! when it answers; otherwise (as root with Debian's docker.io installed) the harness starts
//! a private dockerd with its own data root, exec root, pid file, socket and bridge, and a
//! watcher that stops it when the test process exits. Test containers use `--network none`.
//! No engine is a test failure with a clear message, never a silent skip.
#![allow(clippy::disallowed_types)]

pub mod agent;
pub mod azurite;
pub mod engine;
pub mod pool;
pub mod postgres;
pub mod service;
pub mod sim;

use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// A number from the environment (benchmark sizes), else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The workspace root.
/// `VmRSS` and `VmHWM` (the peak) of a process, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// How many file descriptors a process holds.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `berth` binary built by `cargo test --workspace` (the agent's own CLI tests make
/// cargo build it).
pub fn berth_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("berth");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test --workspace` (or `cargo build -p berth-agent`) first",
        bin.display()
    );
    bin
}

fn answers(sock: &str) -> bool {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    if s.write_all(b"GET /_ping HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if n > 12 && buf[..n].starts_with(b"HTTP/1.0 200") || buf[..n].starts_with(b"HTTP/1.1 200"))
}

fn start_private_dockerd() -> String {
    which("dockerd").unwrap_or_else(|| panic!("no Docker engine answers and dockerd is not installed: run scripts/install-deps.sh (installs Debian's docker.io) or set BERTH_TEST_DOCKER_HOST"));
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "no Docker engine answers, and starting a private dockerd needs root"
    );
    let mut pe = engine::PrivateEngine::new("harness", &[]);
    pe.start();
    let host = pe.outlive_process();
    eprintln!("berth-tests: started a private dockerd at {host}");
    host
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// The engine every test uses, as a `unix://` address; started on first use if needed.
pub fn engine_host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        for var in ["BERTH_TEST_DOCKER_HOST", "DOCKER_HOST"] {
            if let Ok(h) = std::env::var(var) {
                if let Some(p) = h.strip_prefix("unix://") {
                    assert!(answers(p), "{var}={h} does not answer");
                }
                return h;
            }
        }
        if answers("/var/run/docker.sock") {
            return "unix:///var/run/docker.sock".into();
        }
        start_private_dockerd()
    })
}

/// Runs the docker CLI against the test engine.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .arg("-H")
        .arg(engine_host())
        .args(args)
        .output()
        .expect("docker CLI")
}

/// Builds the example images offline (once per test process).
pub fn images() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new(workspace().join("examples/build-images.sh"))
            .args(["-H", engine_host()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "build-images.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A node: its own root directory and node id, so tests run side by side on one engine.
pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub node_id: String,
    /// The engine berth is pointed at (the shared test engine unless a test owns one).
    pub engine: String,
}

/// What one `berth run` did.
#[derive(Debug)]
pub struct RunResult {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl RunResult {
    /// The `--json` output of `pool start` (one node object), parsed.
    pub fn node(&self) -> Value {
        serde_json::from_str::<Value>(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }

    /// The `--json` output, parsed.
    pub fn tasks(&self) -> Vec<Value> {
        serde_json::from_str::<Value>(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
            .as_array()
            .unwrap()
            .clone()
    }
    pub fn task(&self, id: &str) -> Value {
        self.tasks()
            .into_iter()
            .find(|t| t["id"] == id)
            .unwrap_or_else(|| panic!("no task {id} in\n{}", self.stdout))
    }
}

impl TestNode {
    pub fn new(name: &str) -> TestNode {
        images();
        let dir = tempfile::Builder::new()
            .prefix(&format!("berth-{name}-"))
            .tempdir()
            .unwrap();
        // The node root must be traversable by the task users.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        TestNode {
            dir,
            node_id: format!("t-{name}-{}", std::process::id()),
            engine: engine_host().to_string(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn task_dir(&self, job: &str, task: &str) -> PathBuf {
        self.root()
            .join("workitems")
            .join(job)
            .join("job-1")
            .join(task)
    }

    /// Writes a JSON input file and returns its path.
    pub fn file(&self, name: &str, v: &Value) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
        p
    }

    /// The `berth run` command for this node, without the task files.
    pub fn command(&self) -> Command {
        let mut c = Command::new(berth_bin());
        c.args([
            "run",
            "--engine",
            &self.engine,
            "--node-id",
            &self.node_id,
            "--stop-grace",
            "2",
            "--node-root",
        ])
        .arg(self.root());
        c
    }

    /// The `berth pool start --json` command for this node and pool file.
    pub fn pool_start_command(&self, pool: &Path) -> Command {
        let mut c = Command::new(berth_bin());
        c.args([
            "pool",
            "start",
            "--json",
            "--engine",
            &self.engine,
            "--node-id",
            &self.node_id,
            "--node-root",
        ])
        .arg(self.root())
        .arg("--pool")
        .arg(pool);
        c
    }

    /// `berth pool start --json --pool pool.json [extra...]`.
    pub fn pool_start(&self, pool: &Value, extra: &[&str]) -> RunResult {
        let f = self.file("pool.json", pool);
        let out = self.pool_start_command(&f).args(extra).output().unwrap();
        RunResult {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    /// Every file under the node root whose content holds `needle`.
    pub fn files_containing(&self, needle: &str) -> Vec<PathBuf> {
        fn walk(d: &Path, needle: &[u8], hits: &mut Vec<PathBuf>) {
            let Ok(rd) = std::fs::read_dir(d) else { return };
            for e in rd.flatten() {
                let p = e.path();
                match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&p, needle, hits),
                    Ok(t)
                        if t.is_file()
                            && std::fs::read(&p)
                                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                                .unwrap_or(false) =>
                    {
                        hits.push(p);
                    }
                    _ => {}
                }
            }
        }
        let mut hits = vec![];
        walk(&self.root(), needle.as_bytes(), &mut hits);
        hits
    }

    /// `berth run --json [extra...] tasks.json`.
    pub fn run(&self, extra: &[&str], tasks: &Value) -> RunResult {
        let f = self.file("tasks.json", tasks);
        let out = self
            .command()
            .arg("--json")
            .args(extra)
            .arg(&f)
            .output()
            .unwrap();
        RunResult {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    /// Containers of this node still known to the engine.
    pub fn containers(&self) -> Vec<String> {
        let out = docker(&[
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=berth.node={}", self.node_id),
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Containers of this node left once pending removals are over: berth removes a
    /// finished container just after it records the task, so this waits up to 10 s for
    /// none to be left, then answers what is.
    pub fn containers_left(&self) -> Vec<String> {
        let t0 = std::time::Instant::now();
        loop {
            let left = self.containers();
            if left.is_empty() || t0.elapsed() > std::time::Duration::from_secs(10) {
                return left;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn read(&self, job: &str, task: &str, file: &str) -> String {
        let p = self.task_dir(job, task).join(file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        // Never leave containers behind, even when a test fails.
        for id in self.containers() {
            docker(&["rm", "-f", &id]);
        }
    }
}

/// A container task with the given command and run options, on the busybox image.
pub fn task(id: &str, command: &str, options: &str) -> Value {
    serde_json::json!({
        "id": id,
        "commandLine": command,
        "containerSettings": {"imageName": "myimage", "containerRunOptions": format!("--network none {options}")}
    })
}

/// A registry on loopback (Debian's docker-registry), anonymous or with htpasswd (bcrypt)
/// users; it logs every request (for counting pulls) and is stopped on drop.
pub struct TestRegistry {
    pub addr: String,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
    users: Vec<(String, String)>,
}

/// A free loopback port (nothing listens on it once this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestRegistry {
    /// An anonymous registry.
    pub fn start() -> TestRegistry {
        Self::with_users(&[])
    }

    /// A registry that requires one of `users` (name, password).
    pub fn with_users(users: &[(&str, &str)]) -> TestRegistry {
        let mut r = Self::configured(users, free_port());
        r.restart();
        r
    }

    /// A registry that is configured on `port` but not started (see `restart`).
    pub fn configured(users: &[(&str, &str)], port: u16) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{port}");
        let mut auth = String::new();
        if !users.is_empty() {
            let htpasswd = dir.path().join("htpasswd");
            let mut lines = String::new();
            for (u, pw) in users {
                let out = Command::new("htpasswd")
                    .args(["-nbB", u, pw])
                    .output()
                    .expect(
                        "htpasswd (apache2-utils) is not installed: run scripts/install-deps.sh",
                    );
                assert!(out.status.success());
                lines.push_str(String::from_utf8_lossy(&out.stdout).trim());
                lines.push('\n');
            }
            std::fs::write(&htpasswd, lines).unwrap();
            auth = format!(
                "auth: {{htpasswd: {{realm: berth-test, path: {}}}}}\n",
                htpasswd.display()
            );
        }
        std::fs::write(
            dir.path().join("config.yml"),
            format!(
                "version: 0.1\nlog: {{level: info, accesslog: {{disabled: true}}}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: {addr}}}\n{auth}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        TestRegistry {
            addr,
            dir,
            child: None,
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
        }
    }

    /// Starts (again) on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        let bin = which("docker-registry")
            .expect("docker-registry is not installed: run scripts/install-deps.sh");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("docker-registry did not start on {}", self.addr);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// Everything the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Manifest reads for `repo` (GET or HEAD) that the registry answered, any status.
    /// (The registry logs a request after answering it, so a just-finished push's writes
    /// could still be missing; they are not counted.)
    /// The registry logs a request after answering it, so the count is read until it has not
    /// changed for 600 ms.
    pub fn manifest_requests(&self, repo: &str) -> usize {
        let needle = format!("/v2/{repo}/manifests/");
        let count = || {
            self.log()
                .lines()
                .filter(|l| l.contains("response completed") && l.contains(&needle))
                .filter(|l| {
                    l.contains("http.request.method=GET") || l.contains("http.request.method=HEAD")
                })
                .count()
        };
        let (mut last, mut same) = (count(), 0);
        while same < 3 {
            std::thread::sleep(Duration::from_millis(200));
            let now = count();
            same = if now == last { same + 1 } else { 0 };
            last = now;
        }
        last
    }

    /// Builds an image from `myimage` plus a layer no other image has, pushes it as `repo`
    /// and removes it locally, so that a pull must download that layer.
    pub fn push_unique(&self, repo: &str) -> String {
        images();
        let ctx = tempfile::tempdir().unwrap();
        let nonce = format!(
            "{repo} {:?} {}",
            std::time::SystemTime::now(),
            std::process::id()
        );
        std::fs::write(ctx.path().join("nonce"), nonce).unwrap();
        std::fs::write(
            ctx.path().join("Dockerfile"),
            "FROM myimage\nCOPY nonce /nonce\n",
        )
        .unwrap();
        // One tag per repo: tests of one process may push at once.
        let tag = format!(
            "berth-test-unique-{}-{}",
            std::process::id(),
            repo.replace('/', "-")
        );
        let out = Command::new("docker")
            .arg("-H")
            .arg(engine_host())
            .args(["build", "-q", "-t", &tag])
            .arg(ctx.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let full = self.push(&tag, repo);
        docker(&["rmi", &tag]);
        full
    }

    /// Tags a local image as `<addr>/<repo>` and pushes it (logging in first when the
    /// registry has users, with a throwaway client config). Returns the full reference.
    pub fn push(&self, local: &str, repo: &str) -> String {
        let full = format!("{}/{repo}", self.addr);
        let cfg = tempfile::tempdir().unwrap();
        let cli = |args: &[&str], stdin: Option<&str>| {
            let mut c = Command::new("docker");
            c.arg("--config")
                .arg(cfg.path())
                .arg("-H")
                .arg(engine_host())
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut ch = c.spawn().unwrap();
            if let Some(s) = stdin {
                ch.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
            }
            let out = ch.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "docker {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        if let Some((u, p)) = self.users.first() {
            cli(&["login", "-u", u, "--password-stdin", &self.addr], Some(p));
        }
        cli(&["tag", local, &full], None);
        cli(&["push", &full], None);
        cli(&["rmi", &full], None);
        full
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The benches' baseline: one `true` container on `myimage` through raw Engine API calls
/// (create -> start -> wait -> remove), with no berth code in the way.
pub async fn raw_true_container(d: &bollard::Docker, name: &str) {
    use bollard::models::{ContainerCreateBody, HostConfig};
    use bollard::query_parameters::{
        CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
    };
    use futures_util::StreamExt;
    let body = ContainerCreateBody {
        image: Some("myimage".into()),
        cmd: Some(vec!["true".into()]),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = d
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(name).build()),
            body,
        )
        .await
        .unwrap()
        .id;
    d.start_container(&id, None).await.unwrap();
    // The stream sends its request when first polled: after start, so "not-running" (an
    // exited container answers at once).
    let wait = d.wait_container(
        &id,
        Some(
            WaitContainerOptionsBuilder::default()
                .condition("not-running")
                .build(),
        ),
    );
    futures_util::pin_mut!(wait);
    let _ = wait.next().await;
    d.remove_container(
        &id,
        Some(RemoveContainerOptionsBuilder::default().force(true).build()),
    )
    .await
    .unwrap();
}
