//! Out-of-memory detection from the kernel's own count, not only the engine's flag.
//!
//! Docker's `State.OOMKilled` misses kills on cgroup v2 (moby#38352, nomad#13119), and exit
//! code 137 means any SIGKILL. While the container runs, berth reads the `oom_kill` counter
//! of the container's memory cgroup (v1 `memory.oom_control`, v2 `memory.events`) every few
//! milliseconds and keeps the highest value seen; the cgroup disappears when the container
//! exits, so the counter must be read while it lives.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(20);

/// What the kernel said about one container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OomReading {
    /// Processes the kernel's OOM killer killed in the container's cgroup.
    pub kills: u64,
    /// Whether the counter could be read at all.
    pub probed: bool,
}

/// A running probe; `finish` stops it and returns the reading. Dropping it (an attempt
/// abandoned when the agent leaves its tasks running) stops it too: the runtime waits for
/// blocking threads at exit, and this one would otherwise poll until the container ends.
pub struct OomProbe {
    kills: Arc<AtomicU64>,
    probed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

/// Finds the file holding `oom_kill` for the process `pid`'s memory cgroup.
fn counter_file(pid: i64) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    // cgroup v1: "N:memory:/docker/<id>"; v2 (or hybrid unified): "0::/system.slice/docker-<id>.scope".
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        if ctrls.split(',').any(|c| c == "memory") {
            let f = PathBuf::from(format!("/sys/fs/cgroup/memory{path}/memory.oom_control"));
            if f.exists() {
                return Some(f);
            }
        }
    }
    for line in text.lines() {
        if let Some(path) = line.strip_prefix("0::") {
            for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                let f = PathBuf::from(format!("{base}{path}/memory.events"));
                if f.exists() {
                    return Some(f);
                }
            }
        }
    }
    None
}

fn read_kills(f: &PathBuf) -> Option<u64> {
    let text = std::fs::read_to_string(f).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

impl OomProbe {
    /// Starts watching the container whose init process is `pid`.
    pub fn start(pid: Option<i64>) -> OomProbe {
        let kills = Arc::new(AtomicU64::new(0));
        let probed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let file = pid.and_then(counter_file);
        let handle = file.map(|f| {
            let (kills, probed, stop) = (kills.clone(), probed.clone(), stop.clone());
            tokio::task::spawn_blocking(move || loop {
                match read_kills(&f) {
                    Some(n) => {
                        probed.store(true, Ordering::Relaxed);
                        kills.fetch_max(n, Ordering::Relaxed);
                    }
                    // The cgroup is gone: the container has exited.
                    None => return,
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(POLL);
            })
        });
        OomProbe {
            kills,
            probed,
            stop,
            handle,
        }
    }

    pub async fn finish(mut self) -> OomReading {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            if let Err(e) = h.await {
                tracing::debug!(error = %e, "OOM probe ended abnormally");
            }
        }
        OomReading {
            kills: self.kills.load(Ordering::Relaxed),
            probed: self.probed.load(Ordering::Relaxed),
        }
    }
}

impl Drop for OomProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
