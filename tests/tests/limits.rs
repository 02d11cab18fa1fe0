//! Resource bounds and disk faults on the real engine: the per-task output limit, a huge
//! line without a newline (the agent's memory stays flat), and a node root that fills up
//! while a task writes (the task fails `DiskFull`, the agent and its store stay whole,
//! and work resumes once there is space again).

use berth_tests::agent::Agent;
use berth_tests::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn marker(name: &str, limit: u64) -> String {
    format!("\n[berth: {name} reached this node's task output limit of {limit} bytes; the rest was dropped]\n")
}

#[test]
fn output_past_the_limit_is_dropped_with_a_marker() {
    let n = TestNode::new("outcap");
    let limit: u64 = 1 << 20;
    let mut endless = task("endless", r#"/bin/sh -c 'tr "\000" x < /dev/zero'"#, "");
    endless["constraints"] = json!({"maxWallClockTime": "PT3S"});
    let r = n.run(
        &["--task-output-limit", "1M"],
        &json!([
            task(
                "big",
                r#"/bin/sh -c 'head -c 8388608 /dev/zero | tr "\000" x; echo done >&2'"#,
                ""
            ),
            endless,
            task("small", "/bin/sh -c 'echo hi'", ""),
        ]),
    );
    assert_eq!(
        r.code,
        Some(1),
        "endless fails on its wall clock: {}",
        r.stderr
    );

    let big = r.task("big");
    assert_eq!(big["executionInfo"]["result"], "success", "{big}");
    assert_eq!(
        big["executionInfo"]["outputTruncated"],
        json!(["stdout.txt"])
    );
    let out = std::fs::read(n.task_dir("berthjob", "big").join("stdout.txt")).unwrap();
    let (kept, mark) = out.split_at(limit as usize);
    assert!(kept.iter().all(|&b| b == b'x'));
    assert_eq!(String::from_utf8_lossy(mark), marker("stdout.txt", limit));
    assert_eq!(n.read("berthjob", "big", "stderr.txt"), "done\n");

    // An endless writer: the file stops at the limit however long it runs.
    let e = r.task("endless");
    assert_eq!(e["executionInfo"]["failureInfo"]["code"], "TaskEnded");
    assert_eq!(e["executionInfo"]["outputTruncated"], json!(["stdout.txt"]));
    let len = std::fs::metadata(n.task_dir("berthjob", "endless").join("stdout.txt"))
        .unwrap()
        .len();
    assert_eq!(len, limit + marker("stdout.txt", limit).len() as u64);

    let small = r.task("small");
    assert!(small["executionInfo"].get("outputTruncated").is_none());
    assert_eq!(n.read("berthjob", "small", "stdout.txt"), "hi\n");
    assert!(n.containers_left().is_empty());
}

/// A task writing one line of `BERTH_BIG_LINE_MB` MiB (64 here, 1024 for the full run)
/// with no newline: every byte lands in stdout.txt, and the agent's peak memory grows by
/// far less than the line.
#[test]
fn a_huge_line_without_a_newline_keeps_memory_flat() {
    let mb = env_usize("BERTH_BIG_LINE_MB", 64) as u64;
    let n = TestNode::new("bigline");
    let a = Agent::start_with(&n, &[("BERTH_TASK_OUTPUT_LIMIT", "0")]);
    a.wait_node("idle");
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "j"}))).0, 201);
    // A first task warms the agent up (connections, the store, the runtime's threads).
    a.req(
        "POST",
        "/jobs/j/tasks",
        Some(&task("warm", "/bin/sh -c 'echo warm'", "")),
    );
    a.wait_state("j", "warm", "completed");
    let pid = a.child.id();
    let (rss0, hwm0) = memory_kib(pid);
    let cmd = format!(
        r#"/bin/sh -c 'head -c {} /dev/zero | tr "\000" x'"#,
        mb << 20
    );
    let t0 = Instant::now();
    a.req("POST", "/jobs/j/tasks", Some(&task("line", &cmd, "")));
    let done = a.wait_state_for("j", "line", "completed", Duration::from_secs(600));
    let took = t0.elapsed();
    assert_eq!(done["executionInfo"]["result"], "success", "{done}");
    let (rss1, hwm1) = memory_kib(pid);
    let path = n.root().join("workitems/j/job-1/line/stdout.txt");
    let len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(len, mb << 20, "every byte of the line");
    let mut f = std::fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut newlines = 0;
    while let Ok(k) = std::io::Read::read(&mut f, &mut buf) {
        if k == 0 {
            break;
        }
        newlines += buf[..k].iter().filter(|&&b| b != b'x').count();
    }
    assert_eq!(newlines, 0, "only the line's own bytes");
    eprintln!(
        "a {mb} MiB line in {:.1} s: agent RSS {} -> {} KiB, peak {} -> {} KiB",
        took.as_secs_f64(),
        rss0,
        rss1,
        hwm0,
        hwm1
    );
    assert!(
        hwm1 < hwm0 + 32 * 1024,
        "the agent's peak memory grew by {} KiB for a {mb} MiB line",
        hwm1 - hwm0
    );
    assert_eq!(a.term(), Some(0));
    assert!(n.containers_left().is_empty());
}

/// A tmpfs mounted on the node root for the test, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size_mb: u64) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_mb}m,mode=755"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {} (needs root)", at.display());
        SmallDisk(at.to_path_buf())
    }

    fn free(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.0).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status()
            .ok();
    }
}

#[test]
fn a_full_node_root_fails_the_task_and_work_resumes() {
    let n = TestNode::new("diskfull");
    let disk = SmallDisk::mount(&n.root(), 48);
    let a = Agent::start(&n);
    a.wait_node("idle");
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "j"}))).0, 201);

    // Leave 8 MiB free, then write 64 MiB of output.
    let filler = n.root().join("filler");
    let fill = disk.free() - (8 << 20);
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();
    a.req(
        "POST",
        "/jobs/j/tasks",
        Some(&task("fill", "/bin/sh -c 'head -c 67108864 /dev/zero'", "")),
    );
    // The store may not be able to record the end while the disk is full: the agent keeps
    // trying. Space comes back once the task has ended (or the agent says it is stuck).
    let t0 = Instant::now();
    let mut blocked = false;
    loop {
        let t = a.json("/jobs/j/tasks/fill");
        if t["state"] == "completed" {
            break;
        }
        let log = std::fs::read_to_string(&a.log).unwrap_or_default();
        if log.contains("cannot record the task's completion") {
            blocked = true;
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(90), "{t}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::remove_file(&filler).unwrap();
    let t = a.wait_state("j", "fill", "completed");
    eprintln!(
        "store blocked while the disk was full: {blocked}; settled in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let info = &t["executionInfo"];
    assert_eq!(info["result"], "failure", "{t}");
    assert_eq!(info["failureInfo"]["code"], "DiskFull", "{t}");
    assert_eq!(info["failureInfo"]["category"], "servererror");
    let msg = info["failureInfo"]["details"][0]["value"].as_str().unwrap();
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(
        info["exitCode"].is_number(),
        "berth stopped the container: {t}"
    );
    let kept = std::fs::metadata(n.root().join("workitems/j/job-1/fill/stdout.txt"))
        .unwrap()
        .len();
    assert!(kept > 0 && kept < 64 << 20, "{kept}");

    // Space is back: the next task runs.
    a.req(
        "POST",
        "/jobs/j/tasks",
        Some(&task("after", "/bin/sh -c 'echo ok'", "")),
    );
    let after = a.wait_state("j", "after", "completed");
    assert_eq!(after["executionInfo"]["result"], "success", "{after}");
    assert_eq!(n.read("j", "after", "stdout.txt"), "ok\n");

    // The store is whole: a new agent process reads both records back as they were.
    assert_eq!(a.term(), Some(0));
    let a = Agent::start(&n);
    let again = a.json("/jobs/j/tasks/fill");
    assert_eq!(again["executionInfo"]["failureInfo"]["code"], "DiskFull");
    assert_eq!(
        a.json("/jobs/j/tasks/after")["executionInfo"]["result"],
        "success"
    );
    assert_eq!(a.term(), Some(0));
    assert!(n.containers_left().is_empty());
    drop(disk);
}

/// A task that starts 200 processes, then says how many it got and how many live in its
/// container (itself included), and its cgroup's `pids.max`. Only shell builtins run once
/// the forking stops, so the report needs no process of its own.
fn forker(id: &str, options: &str) -> serde_json::Value {
    let script = "read max < /sys/fs/cgroup/pids/pids.max 2>/dev/null || read max < /sys/fs/cgroup/pids.max; \
        ( i=0; while [ $i -lt 200 ]; do sleep 60 & i=$((i+1)); echo $i > count; done ) 2>/dev/null; \
        read n < count; set -- /proc/[0-9]*; echo max $max forked $n procs $#; kill -9 -1";
    task(id, &format!("/bin/sh -c '{script}'"), options)
}

/// `(pids.max, processes forked, processes alive)` from a forker's stdout.
fn forked(n: &TestNode, id: &str) -> (String, u32, u32) {
    let out = n.read("berthjob", id, "stdout.txt");
    let w: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        (w.len(), w[0], w[2], w[4]),
        (6, "max", "forked", "procs"),
        "{out}"
    );
    (
        w[1].to_string(),
        w[3].parse().unwrap(),
        w[5].parse().unwrap(),
    )
}

/// The node's default process limit: every container gets it (4096 unless configured);
/// a fork bomb stops there; a task's own `--pids-limit` wins, unless the node forbids
/// raising it, which then fails the task naming the flag.
#[test]
fn the_default_pids_limit_holds_a_fork_bomb() {
    let n = TestNode::new("pids");
    let r = n.run(&[], &json!([forker("plain", "")]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let (max, got, alive) = forked(&n, "plain");
    eprintln!("default: pids.max {max}, forked {got}, alive {alive}");
    assert_eq!(max, "4096", "the node's default applies");
    assert_eq!(got, 200);

    let r = n.run(
        &["--slots", "2", "--default-pids-limit", "64"],
        &json!([forker("capped", ""), forker("own", "--pids-limit 300")]),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let (max, got, alive) = forked(&n, "capped");
    eprintln!("--default-pids-limit 64: pids.max {max}, forked {got}, alive {alive}");
    assert_eq!(max, "64");
    assert!(got < 64 && alive <= 64, "forked {got}, alive {alive}");
    assert!(
        got >= 50,
        "the limit, not something else, stopped it: {got}"
    );
    let (max, got, _) = forked(&n, "own");
    assert_eq!(
        (max.as_str(), got),
        ("300", 200),
        "the task's own limit wins"
    );

    let r = n.run(
        &[
            "--default-pids-limit",
            "64",
            "--forbid-run-options",
            "pids-limit",
        ],
        &json!([
            forker("more", "--pids-limit 300"),
            forker("less", "--pids-limit 32")
        ]),
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let more = r.task("more");
    let fi = &more["executionInfo"]["failureInfo"];
    assert_eq!(fi["code"], "ContainerInvalidSettings", "{more}");
    assert!(
        fi["details"][0]["value"]
            .as_str()
            .unwrap()
            .starts_with("containerRunOptions: --pids-limit: raising the process limit to 300"),
        "{more}"
    );
    let (max, got, _) = forked(&n, "less");
    assert_eq!(max, "32", "a lower limit is always allowed");
    assert!(got < 32);
}
