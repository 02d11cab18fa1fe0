//! A task's whole run (`run_task`: pull, create, start, wait, output, exit, retries,
//! remove, takeover) on the fake engine, with tokio's clock paused: the paths that real
//! engines reach only in slow or rare scenarios (a wall clock of an hour, an engine that
//! goes away mid-task) in milliseconds. Each has a real-engine twin in `tests/`.

use super::*;
use crate::engine::fake::{Fake, LogStore, Script};
use crate::engine::EngineError;
use crate::node::ResolvedUser;
use berth_proto::{JobSpec, TaskSpec};
use logs::Gap;
use serde_json::json;
use tokio::time::Instant;

const IMAGE: &str = "docker.io/library/busybox:latest";

struct Node {
    _dir: tempfile::TempDir,
    rt: NodeContext,
    fake: Fake,
}

fn node(fake: &Fake) -> Node {
    let dir = tempfile::tempdir().unwrap();
    fake.add_image(IMAGE, &[]);
    let rt = NodeContext::on_engine(Arc::new(fake.clone()), dir.path());
    rt.node.layout.prepare().unwrap();
    Node {
        _dir: dir,
        rt,
        fake: fake.clone(),
    }
}

/// A container task `id` with `extra` fields merged in.
fn plan(n: &Node, id: &str, extra: serde_json::Value) -> TaskPlan {
    let mut t = json!({"id": id, "commandLine": "/bin/true",
        "containerSettings": {"imageName": IMAGE}});
    if let (Some(t), Some(extra)) = (t.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            t.insert(k.clone(), v.clone());
        }
    }
    let spec: TaskSpec = serde_json::from_value(t).unwrap();
    let job = JobSpec {
        id: "j".into(),
        ..Default::default()
    };
    let user = ResolvedUser {
        name: "_azbatch".into(),
        uid: 4399,
        gid: 4398,
        admin: false,
        identity: "PoolNonAdmin".into(),
    };
    let plan = plan::task(&spec, &job, &n.rt.node, user).unwrap();
    prepare_dirs(&plan, true).unwrap();
    plan
}

/// The output files the earlier agent process had opened before it stopped.
fn earlier_output_files(p: &TaskPlan) {
    for f in [logs::STDOUT, logs::STDERR] {
        std::fs::write(p.task_dir.join(f), "").unwrap();
    }
}

async fn run(n: &Node, p: &TaskPlan) -> ExecutionInfo {
    settled(
        n,
        run_task(&n.rt, p, &CancellationToken::new(), None, &|_| {}).await,
    )
    .await
}

/// `info` once the attempt's container is removed (that happens in the background).
async fn settled(n: &Node, info: ExecutionInfo) -> ExecutionInfo {
    n.rt.removals.idle().await;
    info
}

fn code(info: &ExecutionInfo) -> &str {
    info.failure_info.as_ref().map_or("", |f| f.code.as_str())
}

fn read(p: &TaskPlan, name: &str) -> String {
    std::fs::read_to_string(p.task_dir.join(name)).unwrap()
}

/// The container goes after the task's result is known; a second attempt of the same name
/// (a reactivated task) is created only once that removal is over.
#[tokio::test(start_paused = true)]
async fn the_container_is_removed_after_the_result_and_before_its_name_is_reused() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(1)));
    let n = node(&f);
    let p = plan(&n, "again", json!({}));
    let cancel = CancellationToken::new();
    let first = run_task(&n.rt, &p, &cancel, None, &|_| {}).await;
    assert_eq!(first.result, Some(TaskResult::Success));
    assert_eq!(
        n.fake.count("remove"),
        0,
        "not yet: it runs in the background"
    );
    let second = run_task(&n.rt, &p, &cancel, None, &|_| {}).await;
    assert_eq!(second.result, Some(TaskResult::Success));
    n.rt.removals.idle().await;
    let ops: Vec<&str> = n
        .fake
        .calls()
        .iter()
        .map(|c| c.op)
        .filter(|op| ["create", "remove"].contains(op))
        .collect();
    assert_eq!(ops, ["create", "remove", "create", "remove"]);
    assert!(n.fake.containers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_task_that_exits_zero_succeeds_keeps_its_output_and_leaves_no_container() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(5)).with_output(b"hello\n", b"warn\n"));
    let n = node(&f);
    let p = plan(&n, "ok", json!({}));
    let info = run(&n, &p).await;
    assert_eq!(info.result, Some(TaskResult::Success));
    assert_eq!(info.exit_code, Some(0));
    assert!(info.failure_info.is_none());
    assert_eq!(read(&p, logs::STDOUT), "hello\n");
    assert_eq!(read(&p, logs::STDERR), "warn\n");
    assert!(n.fake.containers().is_empty(), "removed after the exit");
    let ops: Vec<&str> = n.fake.calls().iter().map(|c| c.op).collect();
    let at = |op| ops.iter().position(|o| *o == op).unwrap();
    assert!(at("create") < at("start") && at("start") < at("wait") && at("wait") < at("remove"));
}

#[tokio::test(start_paused = true)]
async fn a_failing_task_is_retried_up_to_its_limit_in_a_new_container_each_time() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(3, Duration::from_secs(1)));
    let n = node(&f);
    let p = plan(
        &n,
        "fails",
        json!({"constraints": {"maxTaskRetryCount": 2}}),
    );
    let info = run(&n, &p).await;
    assert_eq!(info.exit_code, Some(3));
    assert_eq!(info.retry_count, 2);
    assert_eq!(code(&info), "FailureExitCode");
    assert_eq!(n.fake.count("create"), 3);
    let names: std::collections::BTreeSet<String> = n
        .fake
        .calls()
        .into_iter()
        .filter(|c| c.op == "create")
        .map(|c| c.target)
        .collect();
    assert_eq!(names.len(), 3, "each attempt has its own name: {names:?}");
    assert!(n.fake.containers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_wall_clock_stops_a_task_at_its_limit() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(3600)));
    let n = node(&f);
    let p = plan(
        &n,
        "slow",
        json!({"constraints": {"maxWallClockTime": "PT10S", "maxTaskRetryCount": 3}}),
    );
    let t = Instant::now();
    let info = run(&n, &p).await;
    assert_eq!(code(&info), "TaskEnded");
    assert_eq!(info.retry_count, 0, "a timeout is not retried");
    assert!(t.elapsed() >= Duration::from_secs(10) && t.elapsed() < Duration::from_secs(60));
    assert!(n.fake.count("stop") >= 1);
    assert!(n.fake.containers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancelling_stops_and_removes_the_container() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(3600)));
    let n = node(&f);
    let p = plan(&n, "cancelled", json!({}));
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        c2.cancel();
    });
    let info = settled(&n, run_task(&n.rt, &p, &cancel, None, &|_| {}).await).await;
    assert_eq!(code(&info), "TaskEnded");
    assert_eq!(info.exit_code, Some(143), "the stopped process's own code");
    assert!(n.fake.containers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_image_the_registry_does_not_have_fails_before_any_container() {
    let f = Fake::new();
    f.pulls_succeed(false);
    let n = node(&f);
    let p = plan(
        &n,
        "noimage",
        json!({"containerSettings": {"imageName": "docker.io/library/nothere:1"}}),
    );
    let info = run(&n, &p).await;
    assert_eq!(code(&info), "ContainerInvalidImage");
    assert_eq!(n.fake.count("create"), 0);
}

#[tokio::test(start_paused = true)]
async fn an_engine_that_times_out_at_create_is_the_engines_fault() {
    let f = Fake::new();
    f.fail_next(
        "create",
        EngineError::Timeout {
            op: "create",
            secs: 300,
        },
    );
    let n = node(&f);
    let p = plan(&n, "slowengine", json!({}));
    let info = run(&n, &p).await;
    assert_eq!(code(&info), "ContainerMiscError");
}

#[tokio::test(start_paused = true)]
async fn a_start_the_engine_refuses_is_invalid_settings_and_the_container_goes() {
    let f = Fake::new();
    f.fail_next(
        "start",
        EngineError::Refused {
            status: 400,
            message: "OCI runtime create failed: exec: \"/bin/nope\": not found".into(),
        },
    );
    let n = node(&f);
    let p = plan(&n, "badstart", json!({}));
    let info = run(&n, &p).await;
    assert_eq!(code(&info), "ContainerInvalidSettings");
    assert!(
        n.fake.containers().is_empty(),
        "removed although it never ran"
    );
}

#[tokio::test(start_paused = true)]
async fn a_container_that_survives_an_engine_restart_is_followed_to_its_real_exit() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(7, Duration::from_secs(60)).with_output(b"done\n", b""));
    let n = node(&f);
    let p = plan(&n, "survivor", json!({}));
    let f2 = f.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        f2.set_up(false, true);
        tokio::time::sleep(Duration::from_secs(5)).await;
        f2.set_up(true, true);
    });
    let info = run(&n, &p).await;
    assert_eq!(info.exit_code, Some(7), "{:?}", info.failure_info);
    assert_eq!(code(&info), "FailureExitCode");
    assert_eq!(read(&p, logs::STDOUT), "done\n");
    assert!(info.output_truncated.is_empty(), "the store lined up");
    assert!(n.fake.containers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_container_that_dies_with_its_engine_ends_the_attempt_engine_unavailable() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(60)));
    let n = node(&f);
    let p = plan(&n, "victim", json!({}));
    let f2 = f.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        f2.set_up(false, false);
        tokio::time::sleep(Duration::from_secs(5)).await;
        f2.set_up(true, false);
    });
    let info = run(&n, &p).await;
    assert_eq!(code(&info), "EngineUnavailable", "{:?}", info.failure_info);
    assert!(n.fake.containers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_engine_that_never_comes_back_fails_the_task_after_the_outage_limit() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(60)));
    let n = node(&f);
    let p = plan(&n, "abandoned", json!({}));
    let f2 = f.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        f2.set_up(false, true);
    });
    let t = Instant::now();
    let info = run(&n, &p).await;
    assert_eq!(code(&info), "EngineUnavailable", "{:?}", info.failure_info);
    assert!(
        t.elapsed() >= Duration::from_secs(600),
        "waited {:?}",
        t.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn an_earlier_agents_running_container_is_taken_over_to_its_exit() {
    let f = Fake::new();
    let n = node(&f);
    let p = plan(&n, "adopted", json!({}));
    earlier_output_files(&p);
    let id = f.run_detached(
        "earlier",
        &[],
        Script::exits(5, Duration::from_secs(30)).with_output(b"from before\n", b""),
    );
    let resume = Resume::Container {
        container_id: id,
        attempt: 0,
        started: None,
    };
    let info = settled(
        &n,
        run_task(&n.rt, &p, &CancellationToken::new(), Some(resume), &|_| {}).await,
    )
    .await;
    assert_eq!(info.exit_code, Some(5));
    assert_eq!(n.fake.count("create"), 0, "taken over, not started again");
    assert_eq!(n.fake.count("start"), 0);
    assert_eq!(read(&p, logs::STDOUT), "from before\n");
    assert!(info.output_truncated.is_empty(), "the store lined up");
    assert!(n.fake.containers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_earlier_agents_exited_container_is_collected() {
    let f = Fake::new();
    let n = node(&f);
    let p = plan(&n, "collected", json!({}));
    earlier_output_files(&p);
    let id = f.run_detached("earlier", &[], Script::exits(0, Duration::ZERO));
    let resume = Resume::Container {
        container_id: id,
        attempt: 1,
        started: None,
    };
    let info = settled(
        &n,
        run_task(&n.rt, &p, &CancellationToken::new(), Some(resume), &|_| {}).await,
    )
    .await;
    assert_eq!(info.exit_code, Some(0));
    assert_eq!(info.retry_count, 1, "the attempt number carries over");
    assert!(n.fake.containers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_oom_kill_the_engine_reports_is_named_in_the_failure() {
    let f = Fake::new();
    f.script(|_, _| Script {
        oom_killed: true,
        ..Script::exits(0, Duration::from_secs(2))
    });
    let n = node(&f);
    let p = plan(&n, "oom", json!({}));
    let info = run(&n, &p).await;
    assert_eq!(info.exit_code, Some(137));
    let details = &info.failure_info.as_ref().unwrap().details;
    let detail = |k: &str| {
        details
            .iter()
            .find(|d| d.name == k)
            .map(|d| d.value.as_str())
    };
    assert_eq!(detail("OutOfMemory"), Some("true"));
    assert_eq!(detail("OutOfMemorySource"), Some("engine"));
}

#[tokio::test(start_paused = true)]
async fn output_past_the_nodes_limit_is_dropped_with_one_marker() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(1)).with_output(b"0123456789", b"ok"));
    let mut n = node(&f);
    n.rt.output_limit = Some(4);
    let p = plan(&n, "chatty", json!({}));
    let info = run(&n, &p).await;
    assert_eq!(
        read(&p, logs::STDOUT),
        format!("0123{}", logs::marker(logs::STDOUT, 4))
    );
    assert_eq!(read(&p, logs::STDERR), "ok");
    assert_eq!(info.output_truncated, vec![logs::STDOUT.to_string()]);
}

/// An image's users and groups, as the engine reads them at start.
const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\nappuser:x:2100:2200::/home/app:/bin/sh\n";
const GROUP: &[u8] = b"root:x:0:\nappgroup:x:2200:\nother:x:2300:\n";

fn with_user(user: &str) -> serde_json::Value {
    json!({"containerSettings": {"imageName": IMAGE, "containerRunOptions": format!("--user {user}")}})
}

/// Owner and mode of `path`.
fn owner(path: &std::path::Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o777)
}

/// Every form of `--user` is resolved from the container's own files, and the task's
/// directories and output files are that uid:gid's (and no one else's) before it starts.
#[tokio::test(start_paused = true)]
async fn a_user_given_by_name_owns_its_directories_before_start() {
    let f = Fake::new();
    f.add_file(IMAGE, "/etc/passwd", PASSWD)
        .add_file(IMAGE, "/etc/group", GROUP);
    let n = node(&f);
    let root = nix::unistd::Uid::effective().is_root();
    for (i, (user, ids)) in [
        ("appuser", (2100, 2200)),
        ("appuser:appgroup", (2100, 2200)),
        ("appuser:other", (2100, 2300)),
        ("appuser:31", (2100, 31)),
        ("2000:appgroup", (2000, 2200)),
        ("2100", (2100, 2200)),
        ("4321", (4321, 0)),
    ]
    .into_iter()
    .enumerate()
    {
        let p = plan(&n, &format!("user{i}"), with_user(user));
        let seen = Arc::new(std::sync::Mutex::new(vec![]));
        let (dirs, at_start) = ((p.task_dir.clone(), p.wd.clone()), seen.clone());
        f.on_start(move |_| {
            let mut v = at_start.lock().unwrap();
            v.push(owner(&dirs.0));
            v.push(owner(&dirs.1));
            v.push(owner(&dirs.0.join(logs::STDOUT)));
        });
        let info = run(&n, &p).await;
        assert_eq!(code(&info), "", "--user {user}: {info:?}");
        let seen = seen.lock().unwrap().clone();
        let (uid, gid) = if root { ids } else { (seen[0].0, seen[0].1) };
        assert_eq!(
            seen,
            vec![
                (uid, gid, PRIVATE_DIR),
                (uid, gid, PRIVATE_WD),
                (uid, gid, 0o644)
            ],
            "--user {user}: task dir, wd and stdout.txt as the container starts"
        );
    }
    assert!(n.fake.containers().is_empty());
}

/// A user or group the image does not have fails before start, naming it; the created
/// container is removed.
#[tokio::test(start_paused = true)]
async fn a_user_the_image_does_not_have_fails_before_start() {
    let f = Fake::new();
    f.add_file(IMAGE, "/etc/passwd", PASSWD)
        .add_file(IMAGE, "/etc/group", GROUP);
    let n = node(&f);
    for (i, (user, missing)) in [
        ("ghost", "no user \"ghost\""),
        ("ghost:appgroup", "no user \"ghost\""),
        ("appuser:ghosts", "no group \"ghosts\""),
        ("2100:ghosts", "no group \"ghosts\""),
    ]
    .into_iter()
    .enumerate()
    {
        let p = plan(&n, &format!("missing{i}"), with_user(user));
        let info = run(&n, &p).await;
        assert_eq!(code(&info), "ContainerInvalidSettings", "--user {user}");
        let message = &info.failure_info.as_ref().unwrap().details[0].value;
        assert!(
            message.starts_with(&format!("containerRunOptions: --user {user}: "))
                && message.contains(missing),
            "{message}"
        );
        assert_eq!(info.retry_count, 0, "not retried");
    }
    assert_eq!(n.fake.count("start"), 0, "nothing started");
    assert_eq!(n.fake.count("create"), n.fake.count("remove"));
    assert!(
        n.fake.containers().is_empty(),
        "the created containers are removed"
    );
}

/// An image without /etc/passwd: a name fails, a uid runs with gid 0; a uid:gid, or no
/// `--user` at all, reads nothing from the container.
#[tokio::test(start_paused = true)]
async fn without_the_images_files_only_numbers_resolve() {
    let f = Fake::new();
    let n = node(&f);
    let info = run(&n, &plan(&n, "name", with_user("appuser"))).await;
    assert_eq!(code(&info), "ContainerInvalidSettings");
    assert!(
        info.failure_info.as_ref().unwrap().details[0]
            .value
            .ends_with("(it has no /etc/passwd)"),
        "{info:?}"
    );
    let p = plan(&n, "uid", with_user("2000"));
    assert_eq!(code(&run(&n, &p).await), "");
    if nix::unistd::Uid::effective().is_root() {
        assert_eq!(owner(&p.wd), (2000, 0, PRIVATE_WD));
    }
    let reads = n.fake.count("read_file");
    assert_eq!(
        code(&run(&n, &plan(&n, "ids", with_user("2000:2001"))).await),
        ""
    );
    assert_eq!(code(&run(&n, &plan(&n, "plain", json!({}))).await), "");
    assert_eq!(n.fake.count("read_file"), reads, "numbers need no file");
}

fn ops(n: &Node, op: &str) -> usize {
    n.fake.count(op)
}

/// The container's own stream is the output, whatever its log store holds (here: bytes a
/// json-file store would have rewritten); the store is never read on this path.
#[tokio::test(start_paused = true)]
async fn the_output_is_the_containers_own_stream_never_its_log_store() {
    let f = Fake::new();
    f.script(|_, _| Script {
        log: LogStore::Holds {
            stdout: "caf\u{FFFD}\n".into(),
            stderr: vec![],
        },
        ..Script::exits(0, Duration::from_secs(1)).with_output(b"caf\xe9\n", b"\x00\xff")
    });
    let n = node(&f);
    let p = plan(&n, "exact", json!({}));
    let info = run(&n, &p).await;
    assert_eq!(info.result, Some(TaskResult::Success));
    assert_eq!(
        std::fs::read(p.task_dir.join(logs::STDOUT)).unwrap(),
        b"caf\xe9\n"
    );
    assert_eq!(
        std::fs::read(p.task_dir.join(logs::STDERR)).unwrap(),
        b"\x00\xff"
    );
    assert!(info.output_truncated.is_empty());
    assert_eq!((ops(&n, "attach"), ops(&n, "logs")), (1, 0));
}

/// A stream that breaks off (the engine's error inside it) is completed from a log store
/// that lines up with what the files hold: whole output, no gap, no engine words.
#[tokio::test(start_paused = true)]
async fn a_broken_stream_is_completed_from_a_store_that_lines_up() {
    let f = Fake::new();
    f.script(|_, _| Script {
        live_breaks_after: Some(3),
        ..Script::exits(0, Duration::from_secs(1)).with_output(b"hello world\n", b"err\n")
    });
    let n = node(&f);
    let p = plan(&n, "mended", json!({}));
    let info = run(&n, &p).await;
    assert_eq!(read(&p, logs::STDOUT), "hello world\n");
    assert_eq!(read(&p, logs::STDERR), "err\n");
    assert!(info.output_truncated.is_empty());
    assert_eq!(ops(&n, "logs"), 1);
}

/// The same break with a store that was rotated (it holds only the end): berth cannot
/// have the bytes in between, and says so in the file and in `outputTruncated`; the
/// engine's words are in neither.
#[tokio::test(start_paused = true)]
async fn a_broken_stream_and_a_rotated_store_say_the_output_may_be_incomplete() {
    let f = Fake::new();
    f.script(|_, _| Script {
        live_breaks_after: Some(3),
        log: LogStore::Holds {
            stdout: b"world\n".to_vec(),
            stderr: b"err\n".to_vec(),
        },
        ..Script::exits(0, Duration::from_secs(1)).with_output(b"hello world\n", b"err\n")
    });
    let n = node(&f);
    let p = plan(&n, "rotated", json!({}));
    let info = run(&n, &p).await;
    assert_eq!(
        info.result,
        Some(TaskResult::Success),
        "the exit code decides"
    );
    assert_eq!(
        read(&p, logs::STDOUT),
        format!("hel{}", logs::gap_line(logs::STDOUT, Gap::Differs))
    );
    assert_eq!(read(&p, logs::STDERR), "err\n", "stderr's store lines up");
    assert_eq!(info.output_truncated, vec![logs::STDOUT.to_string()]);
    assert!(!read(&p, logs::STDOUT).contains("grabbing"));
}

/// Without a log store, a stream that breaks off leaves both files unvouched for.
#[tokio::test(start_paused = true)]
async fn a_broken_stream_without_a_store_says_so() {
    let f = Fake::new();
    f.script(|_, _| Script {
        live_breaks_after: Some(3),
        log: LogStore::Unreadable,
        ..Script::exits(0, Duration::from_secs(1)).with_output(b"hello world\n", b"")
    });
    let n = node(&f);
    let p = plan(
        &n,
        "nolog",
        json!({"containerSettings": {"imageName": IMAGE, "containerRunOptions": "--log-driver none"}}),
    );
    let info = run(&n, &p).await;
    assert_eq!(
        read(&p, logs::STDOUT),
        format!("hel{}", logs::gap_line(logs::STDOUT, Gap::NoStore))
    );
    assert_eq!(info.output_truncated.len(), 2);
    assert_eq!(ops(&n, "logs"), 0, "no store to read");
}

/// A taken-over container's output comes from its log store (the only source of what
/// it wrote while no agent ran), lined up with the files: here the store was rotated, so
/// the new agent appends nothing it cannot place, and says so.
#[tokio::test(start_paused = true)]
async fn a_takeover_from_a_rotated_store_says_the_output_may_be_incomplete() {
    let f = Fake::new();
    let n = node(&f);
    let p = plan(&n, "gap", json!({}));
    std::fs::write(p.task_dir.join(logs::STDOUT), "before\n").unwrap();
    std::fs::write(p.task_dir.join(logs::STDERR), "").unwrap();
    let id = f.run_detached(
        "earlier",
        &[],
        Script {
            log: LogStore::Holds {
                stdout: b"e\nafter\n".to_vec(),
                stderr: vec![],
            },
            ..Script::exits(0, Duration::ZERO).with_output(b"before\nmiddle\nafter\n", b"")
        },
    );
    let resume = Resume::Container {
        container_id: id,
        attempt: 0,
        started: None,
    };
    let info = settled(
        &n,
        run_task(&n.rt, &p, &CancellationToken::new(), Some(resume), &|_| {}).await,
    )
    .await;
    assert_eq!(info.exit_code, Some(0));
    assert!(ops(&n, "logs") >= 1, "the store is the only source here");
    assert_eq!(
        read(&p, logs::STDOUT),
        format!("before\n{}", logs::gap_line(logs::STDOUT, Gap::Differs))
    );
    assert_eq!(info.output_truncated, vec![logs::STDOUT.to_string()]);
    assert!(n.fake.containers().is_empty());
}

/// A running container taken over whose store cannot be lined up: that stream comes from
/// the container's own stream for the rest (the fake's carries only what is still to
/// come), the other from the store; the gap is said.
#[tokio::test(start_paused = true)]
async fn a_takeover_reads_a_stream_the_store_cannot_place_live() {
    let f = Fake::new();
    let n = node(&f);
    let p = plan(&n, "live", json!({}));
    std::fs::write(p.task_dir.join(logs::STDOUT), "before\n").unwrap();
    std::fs::write(p.task_dir.join(logs::STDERR), "e1\n").unwrap();
    let id = f.run_detached(
        "earlier",
        &[],
        Script {
            log: LogStore::Holds {
                stdout: b"rotated\n".to_vec(),
                stderr: b"e1\ne2\n".to_vec(),
            },
            ..Script::exits(3, Duration::from_secs(30)).with_output(b"after\n", b"")
        },
    );
    let resume = Resume::Container {
        container_id: id,
        attempt: 0,
        started: None,
    };
    let info = settled(
        &n,
        run_task(&n.rt, &p, &CancellationToken::new(), Some(resume), &|_| {}).await,
    )
    .await;
    assert_eq!(info.exit_code, Some(3));
    assert_eq!(ops(&n, "attach"), 1);
    assert_eq!(
        read(&p, logs::STDOUT),
        format!(
            "before\nafter\n{}",
            logs::gap_line(logs::STDOUT, Gap::Differs)
        )
    );
    assert_eq!(read(&p, logs::STDERR), "e1\ne2\n");
    assert_eq!(info.output_truncated, vec![logs::STDOUT.to_string()]);
}

/// No log store: what a taken-over container wrote while no agent ran is gone.
#[tokio::test(start_paused = true)]
async fn a_takeover_without_a_store_says_what_is_lost() {
    let f = Fake::new();
    let n = node(&f);
    let p = plan(
        &n,
        "nostore",
        json!({"containerSettings": {"imageName": IMAGE, "containerRunOptions": "--log-driver none"}}),
    );
    earlier_output_files(&p);
    let id = f.run_detached(
        "earlier",
        &[],
        Script {
            log: LogStore::Unreadable,
            ..Script::exits(0, Duration::ZERO).with_output(b"lost\n", b"")
        },
    );
    let resume = Resume::Container {
        container_id: id,
        attempt: 0,
        started: None,
    };
    let info = settled(
        &n,
        run_task(&n.rt, &p, &CancellationToken::new(), Some(resume), &|_| {}).await,
    )
    .await;
    assert_eq!(info.exit_code, Some(0));
    assert_eq!(
        info.output_truncated.len(),
        2,
        "{:?}",
        info.output_truncated
    );
    assert!(read(&p, logs::STDERR).contains("--log-driver none"));
}

/// The engine is asked once whether an image is present, not for every task; an image
/// removed since (a prune) fails the create, and is then fetched again, once.
#[tokio::test(start_paused = true)]
async fn an_image_seen_once_is_not_asked_for_again_until_it_is_gone() {
    let f = Fake::new();
    let n = node(&f);
    for id in ["one", "two"] {
        let info = run(&n, &plan(&n, id, json!({}))).await;
        assert_eq!(info.result, Some(TaskResult::Success), "{id}");
    }
    assert_eq!(ops(&n, "image_present"), 1);
    f.remove_image(IMAGE);
    let info = run(&n, &plan(&n, "pruned", json!({}))).await;
    assert_eq!(
        info.result,
        Some(TaskResult::Success),
        "{:?}",
        info.failure_info
    );
    assert_eq!((ops(&n, "image_present"), ops(&n, "pull")), (2, 1));
    assert_eq!(
        ops(&n, "create"),
        4,
        "one create failed, then again after the pull"
    );
    f.remove_image(IMAGE).pulls_succeed(false);
    let info = run(&n, &plan(&n, "gone", json!({}))).await;
    assert_eq!(code(&info), "ContainerInvalidImage");
}

/// A link the task puts in place of its stdout.txt while it runs fails it at the end of
/// that attempt, `TaskFileRefused`, and the link's target is not touched.
#[tokio::test(start_paused = true)]
async fn an_output_file_swapped_for_a_link_fails_the_attempt() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(10)).with_output(b"out\n", b""));
    let n = node(&f);
    let p = plan(&n, "swapped", json!({}));
    let victim = n._dir.path().join("victim");
    std::fs::write(&victim, "host\n").unwrap();
    let (out, target) = (p.task_dir.join(logs::STDOUT), victim.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        std::fs::remove_file(&out).unwrap();
        std::os::unix::fs::symlink(&target, &out).unwrap();
    });
    let info = run(&n, &p).await;
    assert_eq!(code(&info), "TaskFileRefused", "{:?}", info.failure_info);
    assert_eq!(info.exit_code, Some(0), "the exit code is kept");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host\n");
    assert!(n.fake.containers().is_empty());
}
