//! Links and special files a task plants in its own directory, against the agent, which
//! runs as root: it never follows them, never opens a FIFO, never writes a file that has
//! another name elsewhere, and never serves a file it did not open beneath the task
//! directory. Each task below runs as a non-root user in a container, plants on its first
//! attempt and exits non-zero so that berth retries it.

use berth_tests::agent::Agent;
use berth_tests::*;
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A root-owned file with this content and mode, as the test leaves it.
fn victim(p: &Path, text: &str, mode: u32) -> PathBuf {
    std::fs::write(p, text).unwrap();
    std::os::unix::fs::chown(p, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    p.to_path_buf()
}

/// Content, owner and mode are what `victim` made.
fn untouched(p: &Path, text: &str, mode: u32) {
    let md = std::fs::symlink_metadata(p).unwrap();
    assert_eq!(
        std::fs::read_to_string(p).unwrap(),
        text,
        "{}: content changed",
        p.display()
    );
    assert_eq!(
        (md.uid(), md.gid()),
        (0, 0),
        "{}: owner changed",
        p.display()
    );
    assert_eq!(
        md.permissions().mode() & 0o7777,
        mode,
        "{}: mode changed",
        p.display()
    );
}

/// A task that runs `plant` (in its task directory) on its first attempt and fails, and
/// prints `second` on the next one. With the engine's log store berth opens the output
/// files after the exit as an append does (the append path); without one (`--log-driver
/// none`) the retry creates them again (the create, truncate and chown path).
fn planting(id: &str, plant: &str, options: &str) -> Value {
    let cmd = format!(
        "/bin/sh -c 'cd $AZ_BATCH_TASK_DIR; if [ ! -e wd/once ]; then touch wd/once; {plant}; exit 3; fi; echo second'"
    );
    let mut t = task(id, &cmd, options);
    t["constraints"] = json!({"maxTaskRetryCount": 1});
    t
}

/// The task's failure message (`failureInfo.details[Message]`).
fn failure(t: &Value) -> String {
    t["executionInfo"]["failureInfo"]["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["value"].as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn links_fifos_and_hard_links_planted_as_output_files_are_refused() {
    let n = TestNode::new("links");
    let agent = Agent::start(&n);
    agent.wait_node("idle");
    let outside = victim(&n.dir.path().join("outside"), "host file\n", 0o644);
    let outside_err = victim(&n.dir.path().join("outside-err"), "host err\n", 0o644);
    // A hard link needs the same filesystem, and (fs.protected_hardlinks) a file the task
    // may read and write: a world-writable root file in the shared directory.
    let shared = n.root().join("shared/victim");
    let shared = victim(&shared, "shared file\n", 0o666);
    assert_eq!(
        agent.req("POST", "/jobs", Some(&json!({"id": "lj"}))).0,
        201
    );
    let outside_retry = victim(&n.dir.path().join("outside-retry"), "host retry\n", 0o644);
    let tasks = [
        (
            "retry",
            format!(
                "rm -f stdout.txt; busybox ln -s {} stdout.txt",
                outside_retry.display()
            ),
            "symbolic link",
            "--log-driver none",
        ),
        (
            "symlink",
            format!(
                "rm -f stdout.txt stderr.txt; busybox ln -s {} stdout.txt; busybox ln -s {} stderr.txt",
                outside.display(),
                outside_err.display()
            ),
            "symbolic link",
            "",
        ),
        (
            "hardlink",
            format!("rm -f stdout.txt; busybox ln {} stdout.txt", shared.display()),
            "hard link",
            "",
        ),
        (
            "fifo",
            "rm -f stdout.txt; busybox mkfifo stdout.txt".into(),
            "FIFO",
            "",
        ),
    ];
    for (id, plant, _, options) in &tasks {
        let (st, b) = agent.req(
            "POST",
            "/jobs/lj/tasks",
            Some(&planting(id, plant, options)),
        );
        assert_eq!(st, 201, "{b}");
    }
    let ended: Vec<Value> = tasks
        .iter()
        .map(|(id, _, _, _)| agent.wait_state_for("lj", id, "completed", Duration::from_secs(90)))
        .collect();
    untouched(&outside_retry, "host retry\n", 0o644);
    untouched(&outside, "host file\n", 0o644);
    untouched(&outside_err, "host err\n", 0o644);
    untouched(&shared, "shared file\n", 0o666);
    for ((id, _, found, _), t) in tasks.iter().zip(&ended) {
        eprintln!("{id}: {}", t["executionInfo"]);
        assert_eq!(t["executionInfo"]["result"], "failure", "{id}: {t}");
        let msg = failure(t);
        assert!(
            msg.contains("stdout.txt") && msg.contains(found),
            "{id}: the failure names the file and what was found: {msg}"
        );
        let f = &t["executionInfo"]["failureInfo"];
        assert_eq!(
            (f["category"].as_str(), f["code"].as_str()),
            (Some("usererror"), Some("TaskFileRefused")),
            "{id}: what the task planted is its own fault: {t}"
        );
    }
    assert_eq!(agent.term(), Some(0));
    assert!(n.containers_left().is_empty());
}

/// The file API against a task that keeps swapping `wd/f` between a regular file and a
/// link to a root-only secret outside the node root: thousands of reads (whole, ranges,
/// HEAD, listings) never return the secret. `BERTH_RACE_READS` sets the count.
#[test]
fn the_file_api_never_serves_a_link_swapped_in_during_the_read() {
    let n = TestNode::new("race");
    let agent = Agent::start(&n);
    agent.wait_node("idle");
    let secret_text = "TOPSECRET-0123456789-host-only\n";
    let secret = victim(&n.dir.path().join("secret"), secret_text, 0o600);
    assert_eq!(
        agent.req("POST", "/jobs", Some(&json!({"id": "rj"}))).0,
        201
    );
    let swap = format!(
        "/bin/sh -c 'cd $AZ_BATCH_TASK_WORKING_DIR; echo public > f; while :; do echo public > r; busybox mv -f r f; busybox ln -s {} l; busybox mv -f l f; done'",
        secret.display()
    );
    let (st, b) = agent.req("POST", "/jobs/rj/tasks", Some(&task("swapper", &swap, "")));
    assert_eq!(st, 201, "{b}");
    agent.wait_state("rj", "swapper", "running");
    let t0 = Instant::now();
    while !n.task_dir("rj", "swapper").join("wd/f").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the swapper never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let reads = env_usize("BERTH_RACE_READS", 3000);
    let path = "/jobs/rj/tasks/swapper/files/wd/f";
    let secret_len = secret_text.len().to_string();
    let (mut leaks, mut served, mut refused) = (0, 0, 0);
    let t0 = Instant::now();
    for i in 0..reads {
        let (leaked, ok) = match i % 4 {
            0 => {
                let (st, b) = agent.req("GET", path, None);
                (b.contains("TOPSECRET"), st == 200)
            }
            1 => {
                let (st, b) = agent.get_with(path, &[("ocp-range", "bytes=0-8")]);
                (b.contains("TOPSEC"), st == 200)
            }
            2 => {
                let (st, head) = agent.head(path);
                let len = head.lines().find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                });
                (len.as_deref() == Some(secret_len.as_str()), st == 200)
            }
            _ => {
                let (st, b) = agent.req("GET", "/jobs/rj/tasks/swapper/files?recursive=true", None);
                let v: Value = serde_json::from_str(&b).unwrap_or_default();
                let f = v["value"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["name"] == "wd/f");
                let len = f.map(|e| e["properties"]["contentLength"].to_string());
                (len.as_deref() == Some(secret_len.as_str()), st == 200)
            }
        };
        leaks += usize::from(leaked);
        if ok {
            served += 1;
        } else {
            refused += 1;
        }
    }
    eprintln!(
        "race: {reads} reads in {:.1} s: {served} answered 200, {refused} refused, {leaks} returned the secret",
        t0.elapsed().as_secs_f64()
    );
    assert!(served > 0, "the regular file was never served");
    assert_eq!(
        agent
            .req("POST", "/jobs/rj/tasks/swapper/terminate", None)
            .0,
        204
    );
    agent.wait_state("rj", "swapper", "completed");
    assert_eq!(
        leaks, 0,
        "the API returned the secret {leaks} times in {reads} reads"
    );
    assert_eq!(agent.term(), Some(0));
}

/// The agent-restart path: a non-admin task replaces its own `stdout.txt`/`stderr.txt`
/// with links to root-owned host files and runs on; the agent is killed (`kill -9`) and
/// a new one takes the container over. The new agent appends what the engine's log store
/// holds beyond the files: it must refuse the links, leave the targets alone, and end the
/// task with a user error naming `stdout.txt`.
#[test]
fn links_planted_while_no_agent_runs_are_refused_by_the_next_one() {
    let n = TestNode::new("linkrestart");
    let mut agent = Agent::start(&n);
    agent.wait_node("idle");
    let out = victim(&n.dir.path().join("victim-out"), "host out\n", 0o644);
    let err = victim(&n.dir.path().join("victim-err"), "host err\n", 0o644);
    assert_eq!(
        agent.req("POST", "/jobs", Some(&json!({"id": "kj"}))).0,
        201
    );
    let cmd = format!(
        "/bin/sh -c 'cd $AZ_BATCH_TASK_DIR; echo before; echo before >&2; rm -f stdout.txt stderr.txt; busybox ln -s {} stdout.txt; busybox ln -s {} stderr.txt; touch wd/planted; while [ ! -e wd/go ]; do echo tick; echo tock >&2; sleep 1; done; echo after'",
        out.display(),
        err.display()
    );
    let (st, b) = agent.req("POST", "/jobs/kj/tasks", Some(&task("planter", &cmd, "")));
    assert_eq!(st, 201, "{b}");
    agent.wait_state("kj", "planter", "running");
    let wd = n.task_dir("kj", "planter").join("wd");
    let t0 = Instant::now();
    while !wd.join("planted").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the task never planted its links"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.child.kill().unwrap(); // SIGKILL: the container runs on
    agent.child.wait().unwrap();
    assert_eq!(
        n.containers().len(),
        1,
        "the task's container outlives the agent"
    );
    // Output written while no agent runs: the next one has it from the log store.
    std::thread::sleep(Duration::from_secs(2));
    let agent = Agent::start(&n);
    std::fs::write(wd.join("go"), "").unwrap();
    let t = agent.wait_state_for("kj", "planter", "completed", Duration::from_secs(90));
    eprintln!("planter: {}", t["executionInfo"]);
    untouched(&out, "host out\n", 0o644);
    untouched(&err, "host err\n", 0o644);
    let info = &t["executionInfo"];
    assert_eq!(info["result"], "failure", "{t}");
    let msg = failure(&t);
    assert!(
        msg.contains("stdout.txt") && msg.contains("symbolic link"),
        "the failure names the file and what was found: {msg}"
    );
    assert_eq!(
        (
            info["failureInfo"]["category"].as_str(),
            info["failureInfo"]["code"].as_str()
        ),
        (Some("usererror"), Some("TaskFileRefused")),
        "the task's own doing is a user error: {t}"
    );
    assert_eq!(agent.term(), Some(0));
    assert!(n.containers_left().is_empty());
}
