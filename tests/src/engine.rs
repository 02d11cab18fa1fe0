//! A Docker engine a test owns and may stop, restart or never start: its own data root,
//! exec root, pid file, socket and bridge (never `--bridge=none`, which deletes the
//! host's docker0 while another engine runs). Stopped by its PID and cleaned up on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PrivateEngine {
    dir: PathBuf,
    bridge: String,
    flags: Vec<String>,
    child: Option<Child>,
    imaged: bool,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn answers(host: &str) -> bool {
    Command::new("docker")
        .args(["-H", host, "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// SIGTERM to an engine (by its PID), waiting until it has exited (SIGKILL after 60 s).
fn terminate(mut c: Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .ok();
    let t = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            c.kill().ok();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl PrivateEngine {
    /// An engine for test `tag` with extra dockerd `flags`, not started yet.
    pub fn new(tag: &str, flags: &[&str]) -> PrivateEngine {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "a private dockerd needs root"
        );
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/tmp/berth-pe-{tag}-{pid}"));
        std::fs::create_dir_all(&dir).unwrap();
        // Bridge names are at most 15 bytes; each tag of one process gets its own.
        let hash = tag
            .bytes()
            .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619));
        let n = (pid as usize + hash as usize) % 10000;
        let bridge = format!("berthpe{n}");
        ip(&["link", "add", "name", &bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("172.30.{}.1/24", n % 250),
            "dev",
            &bridge,
        ]);
        ip(&["link", "set", &bridge, "up"]);
        PrivateEngine {
            dir,
            bridge,
            flags: flags.iter().map(|s| s.to_string()).collect(),
            child: None,
            imaged: false,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// The `unix://` address berth is given.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Starts the engine and waits until it answers. The test images are built on the
    /// first start, on a side socket no agent watches, so that an agent waiting for this
    /// engine never sees it without them (it would pull them from Docker Hub and fail).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        if !self.imaged {
            let side = format!("unix://{}", self.dir.join("build.sock").display());
            let child = self.spawn(&side);
            self.wait_answers(&side);
            let out = Command::new(crate::workspace().join("examples/build-images.sh"))
                .args(["-H", &side])
                .output()
                .unwrap();
            terminate(child);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            self.imaged = true;
        }
        self.child = Some(self.spawn(&self.host()));
        self.wait_answers(&self.host());
    }

    fn spawn(&self, host: &str) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .unwrap();
        Command::new("setsid")
            .arg("dockerd")
            .arg(format!("--data-root={}", self.dir.join("root").display()))
            .arg(format!("--exec-root={}", self.dir.join("exec").display()))
            .arg(format!(
                "--pidfile={}",
                self.dir.join("docker.pid").display()
            ))
            .arg(format!("--host={host}"))
            .arg(format!("--bridge={}", self.bridge))
            .args(["--iptables=false", "--ip-masq=false"])
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd")
    }

    fn wait_answers(&self, host: &str) {
        let t = Instant::now();
        while !answers(host) {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the private dockerd did not answer within 60 s; see {}",
                self.dir.join("dockerd.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn answers(&self) -> bool {
        answers(&self.host())
    }

    /// SIGTERM to the engine (by its PID), waiting until it has exited.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c);
        }
    }

    /// Leaves the started engine running for the rest of this test process (the harness's
    /// shared engine): a watcher stops it by its PID once the process is gone, then
    /// cleans up as dropping would. Returns its `unix://` address.
    #[allow(
        clippy::zombie_processes,
        reason = "the watcher must outlive this process; init reaps it"
    )]
    pub fn outlive_process(mut self) -> String {
        let child = self.child.take().expect("start it first");
        let watcher = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill {dpid} 2>/dev/null; \
             for i in $(seq 30); do kill -0 {dpid} 2>/dev/null || break; sleep 1; done; \
             {cleanup}",
            pid = std::process::id(),
            dpid = child.id(),
            cleanup = self.cleanup()
        );
        Command::new("setsid")
            .args(["sh", "-c", &watcher])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the engine's watcher");
        let host = self.host();
        // Dropping it would stop the engine now; the watcher owns it.
        std::mem::forget(self);
        host
    }

    /// Shell that removes what the engine leaves once stopped: with live restore its
    /// containerd may outlive it; then its mounts, directory and bridge.
    fn cleanup(&self) -> String {
        format!(
            // `[c]` keeps pkill from matching (and killing) this very shell.
            "pkill -f '[c]ontainerd.*{exec}'; sleep 1; umount -R {root} 2>/dev/null; \
             umount -R {exec} 2>/dev/null; rm -rf {dir}; ip link del {bridge} 2>/dev/null",
            exec = self.dir.join("exec").display(),
            root = self.dir.join("root").display(),
            dir = self.dir.display(),
            bridge = self.bridge
        )
    }

    /// The docker CLI against this engine.
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .args(["-H", &self.host()])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Containers a failed test left behind go with it.
            let ps = self.docker(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ps.stdout).split_whitespace() {
                self.docker(&["rm", "-f", id]);
            }
        }
        self.stop();
        Command::new("sh")
            .arg("-c")
            .arg(self.cleanup())
            .status()
            .ok();
    }
}
