//! Task output on a real engine: `stdout.txt`/`stderr.txt` hold exactly the bytes the
//! process wrote (binary, not UTF-8, NUL, CR), whatever the engine's log driver and its
//! rotation, since berth reads the container's own stream; the engine's words never land
//! in a task's file; and where berth has to take output from the engine's log store (an
//! agent restart) and the store no longer holds it, the task says so.

use berth_tests::agent::Agent;
use berth_tests::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// What the engine writes into an output stream when reading its log store fails
/// (`docker logs` prints it as "error from daemon in stream: Error grabbing logs: ...").
const ENGINE_WORDS: [&str; 4] = [
    "Error grabbing logs",
    "Error running logs job",
    "error from daemon",
    "Error response from daemon",
];

fn sha(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

/// `got` is `want`, byte for byte; a failure says where they part (not megabytes of both).
fn same_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        let at = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: {} bytes (sha256 {}), want {} bytes (sha256 {}); they differ from byte {at}",
            got.len(),
            sha(got),
            want.len(),
            sha(want)
        );
    }
}

/// No file under the node root holds the engine's own words.
fn no_engine_text(n: &TestNode) {
    for w in ENGINE_WORDS {
        let hits = n.files_containing(w);
        assert!(hits.is_empty(), "{w:?} in {hits:?}");
    }
}

fn file(n: &TestNode, task: &str, name: &str) -> Vec<u8> {
    let p = n.task_dir("berthjob", task).join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The case `tests/cases/binary-output`: random bytes, Latin-1 text with CR and NUL, and
/// the same random bytes with no log store at all.
#[test]
fn binary_output_case_is_byte_exact() {
    let n = TestNode::new("binout");
    let case = workspace().join("tests/cases/binary-output/tasks.json");
    let tasks: Value = serde_json::from_slice(&std::fs::read(case).unwrap()).unwrap();
    let r = n.run(&["--slots", "3"], &tasks);
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    for id in ["random", "control"] {
        let t = r.task(id);
        assert!(t["executionInfo"].get("outputTruncated").is_none(), "{t}");
        let rand = file(&n, id, "wd/rand.bin");
        assert_eq!(rand.len(), 65536, "{id}");
        same_bytes(
            &format!("{id} stdout.txt"),
            &file(&n, id, "stdout.txt"),
            &rand,
        );
        same_bytes(
            &format!("{id} stderr.txt"),
            &file(&n, id, "stderr.txt"),
            b"",
        );
    }
    same_bytes(
        "latin1 stdout.txt",
        &file(&n, "latin1", "stdout.txt"),
        b"caf\xe9 cr\r\nnul\x00end\n",
    );
    same_bytes(
        "latin1 stderr.txt",
        &file(&n, "latin1", "stderr.txt"),
        b"err-\xff\xfe",
    );
    no_engine_text(&n);
    assert!(n.containers_left().is_empty());
}

/// Runs one task writing 4 MiB of random bytes to stdout and its first MiB to stderr
/// under these run options (a log driver and its rotation); every byte must be in the
/// files. Returns false (after saying why) when the engine cannot use the driver here.
fn exact_under(tag: &str, options: &str) -> bool {
    let n = TestNode::new(tag);
    let t = task(
        "big",
        "/bin/sh -c 'head -c 4194304 /dev/urandom > rand.bin; cat rand.bin; head -c 1048576 rand.bin >&2'",
        options,
    );
    let r = n.run(&[], &json!([t]));
    let t = r.task("big");
    let info = &t["executionInfo"];
    let message = info["failureInfo"]["details"][0]["value"]
        .as_str()
        .unwrap_or("");
    if info["failureInfo"]["code"] == "ContainerInvalidSettings" && message.contains("journald") {
        eprintln!("{tag}: skipped, the engine cannot use this log driver here: {message}");
        return false;
    }
    assert_eq!(r.code, Some(0), "{t}\n{}", r.stderr);
    assert!(info.get("outputTruncated").is_none(), "{t}");
    let rand = file(&n, "big", "wd/rand.bin");
    assert_eq!(rand.len(), 4 << 20);
    same_bytes(
        &format!("{tag}: stdout.txt"),
        &file(&n, "big", "stdout.txt"),
        &rand,
    );
    same_bytes(
        &format!("{tag}: stderr.txt"),
        &file(&n, "big", "stderr.txt"),
        &rand[..1 << 20],
    );
    no_engine_text(&n);
    assert!(n.containers_left().is_empty());
    true
}

/// json-file rotating every kilobyte, two files kept: the store holds 2 KiB of 5 MiB.
#[test]
fn json_file_rotating_every_kilobyte_loses_no_byte() {
    assert!(exact_under(
        "jsonrot",
        "--log-driver json-file --log-opt max-size=1k --log-opt max-file=2"
    ));
}

/// The `local` driver (binary records, compressed rotation) with a small max-size.
#[test]
fn local_driver_with_a_small_max_size_loses_no_byte() {
    assert!(exact_under(
        "localrot",
        "--log-driver local --log-opt max-size=10k --log-opt max-file=2"
    ));
}

/// No log store at all.
#[test]
fn no_log_driver_loses_no_byte() {
    assert!(exact_under("nolog", "--log-driver none"));
}

/// journald, where the engine can reach a journal (else the test says why it did not run).
#[test]
fn journald_loses_no_byte_where_the_engine_has_it() {
    exact_under("journald", "--log-driver journald");
}

/// Text output under json-file rotation: the engine's "Error grabbing logs" that a log
/// store reader meets at a rotation never becomes part of the task's output.
#[test]
fn the_engines_words_never_reach_a_tasks_file() {
    let n = TestNode::new("engwords");
    let opts = "--log-opt max-size=1k --log-opt max-file=2";
    let t = task(
        "text",
        "/bin/sh -c 'head -c 1048576 /dev/urandom | od -x > dump.txt; cat dump.txt; cat dump.txt >&2'",
        opts,
    );
    let r = n.run(&[], &json!([t]));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    no_engine_text(&n);
    let dump = file(&n, "text", "wd/dump.txt");
    same_bytes("stdout.txt", &file(&n, "text", "stdout.txt"), &dump);
    same_bytes("stderr.txt", &file(&n, "text", "stderr.txt"), &dump);
}

/// A container that wrote while no agent ran, under a log store that kept only its last
/// 2 KiB: the next agent cannot have those bytes, and says so (`outputTruncated` and a
/// line naming the cause) instead of reporting a whole output.
#[test]
fn output_lost_to_a_rotated_store_during_a_restart_is_reported() {
    let n = TestNode::new("lostgap");
    let mut a = Agent::start(&n);
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "j"}))).0, 201);
    let t = task(
        "gap",
        "/bin/sh -c 'echo before; touch ready; while [ ! -e go ]; do sleep 0.1; done; head -c 1048576 /dev/urandom | od -x; echo after'",
        "--log-opt max-size=1k --log-opt max-file=2",
    );
    assert_eq!(a.req("POST", "/jobs/j/tasks", Some(&t)).0, 201);
    let wd = n.root().join("workitems/j/job-1/gap/wd");
    let t0 = Instant::now();
    while !wd.join("ready").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the task did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    a.child.kill().unwrap(); // SIGKILL: the container runs on with nobody reading it
    a.child.wait().unwrap();
    drop(a);
    std::fs::write(wd.join("go"), "").unwrap();
    let t0 = Instant::now();
    while docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=berth.node={}", n.node_id),
    ])
    .stdout
    .iter()
    .any(|b| !b.is_ascii_whitespace())
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the task did not end"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let a = Agent::start(&n);
    let done = a.wait_state("j", "gap", "completed");
    let info = &done["executionInfo"];
    assert_eq!(info["result"], "success", "{done}");
    assert_eq!(info["outputTruncated"], json!(["stdout.txt"]), "{done}");
    let out = std::fs::read(n.root().join("workitems/j/job-1/gap/stdout.txt")).unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("before\n"),
        "{}",
        &out[..out.len().min(200)]
    );
    let last = out.trim_end().lines().last().unwrap_or("");
    assert!(
        last.starts_with("[berth: stdout.txt may be incomplete: ") && last.contains("log"),
        "{last}"
    );
    for w in ENGINE_WORDS {
        assert!(!out.contains(w), "{w:?} in stdout.txt");
    }
    assert_eq!(a.term(), Some(0));
    assert!(n.containers_left().is_empty());
}
