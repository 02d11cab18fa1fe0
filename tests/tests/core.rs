//! berth core on a real engine: each test is a scenario a Batch user would run.

use berth_tests::*;
use serde_json::{json, Value};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

fn detail<'a>(t: &'a Value, name: &str) -> Option<&'a str> {
    t["executionInfo"]["failureInfo"]["details"]
        .as_array()?
        .iter()
        .find(|d| d["name"] == name)?["value"]
        .as_str()
}

fn host_uid(name: &str) -> (u32, u32) {
    let u = nix::unistd::User::from_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("no user {name}"));
    (u.uid.as_raw(), u.gid.as_raw())
}

/// The README's seed sample: `output.txt` holds `hello world`; the table says success;
/// no container is left, although `--rm` is only a hint to berth.
#[test]
fn seed_sample_writes_hello_world() {
    let n = TestNode::new("seed");
    let out = n
        .command()
        .arg(workspace().join("examples/sampletask.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        n.read("berthjob", "sampletask", "wd/output.txt"),
        "hello world\n"
    );
    assert!(
        stdout.contains("sampletask") && stdout.contains("completed") && stdout.contains("success"),
        "{stdout}"
    );
    assert!(n.containers_left().is_empty());
}

/// Every AZ_BATCH_* variable reaches the container; job < task < `-e` < berth's own.
#[test]
fn environment_and_precedence() {
    let n = TestNode::new("env");
    let job = n.file("job.json", &json!({"id": "envjob", "commonEnvironmentSettings": [{"name": "A", "value": "job"}, {"name": "B", "value": "job"}]}));
    let mut t = task("envtask", "env", "-e C=flag -e AZ_BATCH_TASK_ID=spoof");
    t["environmentSettings"] = json!([{"name": "B", "value": "task"}, {"name": "C", "value": "task"}, {"name": "SPACED", "value": "a b  c"}]);
    let r = n.run(&["--job", job.to_str().unwrap()], &t);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let env = n.read("envjob", "envtask", "stdout.txt");
    let root = n.root().display().to_string();
    let td = n.task_dir("envjob", "envtask").display().to_string();
    for want in [
        "A=job".to_string(),
        "B=task".into(),
        "C=flag".into(),
        "SPACED=a b  c".into(),
        "AZ_BATCH_TASK_ID=envtask".into(),
        "AZ_BATCH_JOB_ID=envjob".into(),
        "AZ_BATCH_POOL_ID=berthpool".into(),
        format!("AZ_BATCH_NODE_ID={}", n.node_id),
        format!("AZ_BATCH_NODE_ROOT_DIR={root}"),
        format!("AZ_BATCH_NODE_SHARED_DIR={root}/shared"),
        format!("AZ_BATCH_NODE_STARTUP_DIR={root}/startup"),
        format!("AZ_BATCH_TASK_DIR={td}"),
        format!("AZ_BATCH_TASK_WORKING_DIR={td}/wd"),
        "AZ_BATCH_TASK_USER=_azbatch".into(),
        "AZ_BATCH_TASK_USER_IDENTITY=PoolNonAdmin".into(),
    ] {
        assert!(env.lines().any(|l| l == want), "missing {want:?} in\n{env}");
    }
}

/// Default wd, `containerImageDefault` (image WORKDIR), and `--workdir` winning.
#[test]
fn working_directory_modes() {
    let n = TestNode::new("wd");
    let mut image_default = json!({"id": "imgdefault", "commandLine": "-c pwd", "containerSettings": {
        "imageName": "berth/entrypoint", "containerRunOptions": "--network none --entrypoint /bin/sh", "workingDirectory": "containerImageDefault"}});
    image_default["containerSettings"]["workingDirectory"] = json!("containerImageDefault");
    let r = n.run(
        &["--slots", "3"],
        &json!([
            task("default", "pwd", ""),
            image_default,
            task("flag", "pwd", "--workdir /tmp")
        ]),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        n.read("berthjob", "default", "stdout.txt").trim(),
        n.task_dir("berthjob", "default")
            .join("wd")
            .display()
            .to_string()
    );
    assert_eq!(
        n.read("berthjob", "imgdefault", "stdout.txt").trim(),
        "/app"
    );
    assert_eq!(n.read("berthjob", "flag", "stdout.txt").trim(), "/tmp");
}

/// Non-admin runs as the `_azbatch` uid and owns its files on the host; admin runs as
/// root; named pool users get their uid:gid; `--user` wins.
#[test]
fn user_mapping_and_file_ownership() {
    let n = TestNode::new("users");
    let pool = n.file("pool.json", &json!({"id": "userpool", "taskSlotsPerNode": 4,
        "virtualMachineConfiguration": {"containerConfiguration": {"type": "dockerCompatible"}},
        "userAccounts": [{"name": "berthtestuser", "password": "unused-secret", "linuxUserConfiguration": {"uid": 4242, "gid": 4343}}]}));
    let cmd = "/bin/sh -c 'id -u; id -g; touch $AZ_BATCH_TASK_WORKING_DIR/made'";
    let mut admin = task("admin", cmd, "");
    admin["userIdentity"] = json!({"autoUser": {"scope": "pool", "elevationLevel": "admin"}});
    let mut named = task("named", cmd, "");
    named["userIdentity"] = json!({"username": "berthtestuser"});
    let r = n.run(
        &["--pool", pool.to_str().unwrap()],
        &json!([
            task("nonadmin", cmd, ""),
            admin,
            named,
            task("flag", cmd, "--user 1234:1235")
        ]),
    );
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(
        !r.stdout.contains("unused-secret") && !r.stderr.contains("unused-secret"),
        "passwords never reach output"
    );
    let (uid, gid) = host_uid("_azbatch");
    let check = |t: &str, want: (u32, u32)| {
        assert_eq!(
            n.read("berthjob", t, "stdout.txt"),
            format!("{}\n{}\n", want.0, want.1),
            "{t}"
        );
        let m = std::fs::metadata(n.task_dir("berthjob", t).join("wd/made")).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            want,
            "{t}: owner of the file on the host"
        );
    };
    check("nonadmin", (uid, gid));
    check("admin", (0, 0));
    check("named", (4242, 4343));
    check("flag", (1234, 1235));
    let m = std::fs::metadata(n.task_dir("berthjob", "nonadmin").join("wd")).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (uid, gid),
        "the task's wd belongs to its user"
    );
    assert_eq!(
        r.task("admin")["userIdentity"]["autoUser"]["elevationLevel"],
        "admin"
    );
}

/// `--user` by name, group and mixed forms: berth resolves it from the image's own
/// `/etc/passwd` and `/etc/group` as the engine does (`id` inside agrees), the task writes
/// its `wd` as that uid:gid, and its directories are no wider open than a numeric
/// user's. A name or group the image lacks fails before start, naming it.
#[test]
fn container_users_by_name_and_group() {
    use std::os::unix::fs::PermissionsExt;
    let n = TestNode::new("named");
    let cmd = "/bin/sh -c 'id -u; id -g; touch $AZ_BATCH_TASK_WORKING_DIR/made'";
    // The image: appuser 2100 (primary group appgroup 2200), othergroup 2300.
    let cases = [
        ("name", "appuser", (2100, 2200)),
        ("namegroup", "appuser:appgroup", (2100, 2200)),
        ("nameother", "appuser:othergroup", (2100, 2300)),
        ("namegid", "appuser:2400", (2100, 2400)),
        ("uidgroup", "2000:othergroup", (2000, 2300)),
        ("uid", "2100", (2100, 2200)),
        ("numeric", "2000:2000", (2000, 2000)),
    ];
    let mut tasks: Vec<Value> = cases
        .iter()
        .map(|(id, user, _)| task(id, cmd, &format!("--user {user}")))
        .collect();
    // /etc/passwd is a relative link in this image: followed inside the container.
    tasks.push(
        json!({"id": "linked", "commandLine": cmd, "containerSettings": {
        "imageName": "berth/entrypoint",
        "containerRunOptions": "--network none --entrypoint '' --user appuser"}}),
    );
    tasks.push(task("ghost", cmd, "--user ghost"));
    tasks.push(task("ghostgroup", cmd, "--user appuser:ghosts"));
    let r = n.run(&["--slots", "4"], &json!(tasks));
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    let mode = |m: &std::fs::Metadata| m.permissions().mode() & 0o777;
    for (id, user, want) in cases.iter().chain([&("linked", "appuser", (2100, 2200))]) {
        let t = r.task(id);
        assert_eq!(
            t["executionInfo"]["result"], "success",
            "--user {user}: {t}"
        );
        assert_eq!(
            n.read("berthjob", id, "stdout.txt"),
            format!("{}\n{}\n", want.0, want.1),
            "--user {user}: the engine's uid:gid"
        );
        let dir = n.task_dir("berthjob", id);
        for (path, m) in [
            ("wd/made", None),
            ("wd", Some(0o770)),
            ("", Some(0o750)),
            ("stdout.txt", None),
        ] {
            let meta = std::fs::metadata(dir.join(path)).unwrap();
            assert_eq!(
                (meta.uid(), meta.gid()),
                *want,
                "--user {user}: owner of {path:?}"
            );
            if let Some(m) = m {
                assert_eq!(
                    mode(&meta),
                    m,
                    "--user {user}: mode of {path:?}, as for a numeric user"
                );
            }
        }
    }
    for (id, name) in [
        ("ghost", "user \"ghost\""),
        ("ghostgroup", "group \"ghosts\""),
    ] {
        let t = r.task(id);
        assert_eq!(
            t["executionInfo"]["failureInfo"]["code"], "ContainerInvalidSettings",
            "{t}"
        );
        let message = detail(&t, "Message").unwrap_or_default();
        assert!(
            message.contains("containerRunOptions: --user") && message.contains(name),
            "{message}"
        );
        assert!(
            t["executionInfo"]["exitCode"].is_null(),
            "never started: {t}"
        );
        assert!(!n.task_dir("berthjob", id).join("wd/made").exists());
    }
    assert!(n.containers_left().is_empty());
}

/// The command line is the COMMAND (arguments to the image's ENTRYPOINT); "" runs the
/// image default; `--entrypoint` replaces the ENTRYPOINT, `--entrypoint ""` resets it.
#[test]
fn entrypoint_cases() {
    let n = TestNode::new("entry");
    let t = |id: &str, cmd: &str, opts: &str| json!({"id": id, "commandLine": cmd, "containerSettings": {"imageName": "berth/entrypoint", "containerRunOptions": format!("--network none {opts}")}});
    let r = n.run(
        &["--slots", "4"],
        &json!([
            t("imagedefault", "", ""),
            t("args", "a 'b  c' \"d\"", ""),
            t("replaced", "replaced ep", "--entrypoint /bin/echo"),
            t("reset", "/bin/echo reset", "--entrypoint ''"),
        ]),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        n.read("berthjob", "imagedefault", "stdout.txt"),
        "entrypoint: default-cmd\n"
    );
    assert_eq!(
        n.read("berthjob", "args", "stdout.txt"),
        "entrypoint: a b  c d\n"
    );
    assert_eq!(
        n.read("berthjob", "replaced", "stdout.txt"),
        "replaced ep\n"
    );
    assert_eq!(n.read("berthjob", "reset", "stdout.txt"), "reset\n");
}

/// stdout and stderr land in their files, whole, including output of a fast exit.
#[test]
fn stdout_and_stderr_are_captured() {
    let n = TestNode::new("logs");
    let r = n.run(
        &[],
        &task("out", "/bin/sh -c 'seq 1 20000; echo oops >&2; exit 0'", ""),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let out = n.read("berthjob", "out", "stdout.txt");
    assert_eq!(out.lines().count(), 20000);
    assert!(out.ends_with("19999\n20000\n"));
    assert_eq!(n.read("berthjob", "out", "stderr.txt"), "oops\n");
}

/// maxWallClockTime stops the container and reports TaskEnded with the spec's detail.
#[test]
fn wall_clock_kill() {
    let n = TestNode::new("wallclock");
    let mut t = task("slow", "sleep 300", "");
    t["constraints"] = json!({"maxWallClockTime": "PT2S", "maxTaskRetryCount": 3});
    let start = Instant::now();
    let r = n.run(&[], &t);
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(r.code, Some(1));
    let t = r.task("slow");
    assert_eq!(t["state"], "completed");
    assert_eq!(t["executionInfo"]["result"], "failure");
    assert_eq!(t["executionInfo"]["failureInfo"]["code"], "TaskEnded");
    assert_eq!(t["executionInfo"]["failureInfo"]["category"], "usererror");
    assert_eq!(
        detail(&t, "Message"),
        Some("The maximum execution time configured on the task was exceeded")
    );
    assert_eq!(
        t["executionInfo"]["retryCount"], 0,
        "a timeout is not retried"
    );
    assert!(n.containers_left().is_empty());
}

/// A non-zero exit is retried up to maxTaskRetryCount; the last failure is reported.
#[test]
fn retries() {
    let n = TestNode::new("retries");
    let flaky = "/bin/sh -c 'f=$AZ_BATCH_NODE_SHARED_DIR/count; n=$(cat $f 2>/dev/null || echo 0); n=$((n+1)); echo $n > $f; echo attempt $n; [ $n -ge 3 ]'";
    let mut a = task("flaky", flaky, "");
    a["constraints"] = json!({"maxTaskRetryCount": 5});
    let mut b = task("fails", "/bin/sh -c 'exit 3'", "");
    b["constraints"] = json!({"maxTaskRetryCount": 2});
    let r = n.run(&["--slots", "2"], &json!([a, b]));
    assert_eq!(r.code, Some(1));
    let a = r.task("flaky");
    assert_eq!(a["executionInfo"]["result"], "success");
    assert_eq!(a["executionInfo"]["retryCount"], 2);
    assert!(a["executionInfo"]["lastRetryTime"].is_string());
    assert_eq!(
        n.read("berthjob", "flaky", "stdout.txt"),
        "attempt 3\n",
        "output is the last attempt's"
    );
    let b = r.task("fails");
    assert_eq!(b["executionInfo"]["retryCount"], 2);
    assert_eq!(b["executionInfo"]["exitCode"], 3);
    assert_eq!(b["executionInfo"]["failureInfo"]["code"], "FailureExitCode");
    assert!(
        n.containers_left().is_empty(),
        "every attempt's container is removed"
    );
}

/// dependsOn waits for success; a failed dependency blocks its dependents (they stay active).
#[test]
fn dependencies() {
    let n = TestNode::new("deps");
    let job = n.file(
        "job.json",
        &json!({"id": "depjob", "usesTaskDependencies": true}),
    );
    let mut b = task("b", "/bin/sh -c 'cat $AZ_BATCH_NODE_SHARED_DIR/from-a'", "");
    b["dependsOn"] = json!({"taskIds": ["a"]});
    let mut d = task("d", "true", "");
    d["dependsOn"] = json!({"taskIds": ["c"]});
    let mut r1 = task("1", "true", "");
    r1["dependsOn"] = json!({"taskIdRanges": [{"start": 2, "end": 3}]});
    // b and d come first in the file: order in the file does not beat dependencies.
    let r = n.run(
        &["--job", job.to_str().unwrap(), "--slots", "4"],
        &json!([
            b,
            d,
            r1,
            task(
                "a",
                "/bin/sh -c 'sleep 1; echo from a > $AZ_BATCH_NODE_SHARED_DIR/from-a'",
                ""
            ),
            task("c", "/bin/sh -c 'exit 1'", ""),
            task("2", "true", ""),
            task("3", "true", "")
        ]),
    );
    assert_eq!(r.code, Some(1));
    assert_eq!(n.read("depjob", "b", "stdout.txt"), "from a\n");
    assert_eq!(r.task("b")["executionInfo"]["result"], "success");
    assert_eq!(r.task("1")["executionInfo"]["result"], "success");
    assert_eq!(r.task("d")["state"], "active", "blocked by failed c");
    assert!(r.task("d")["executionInfo"].is_null());
}

/// taskSlotsPerNode bounds concurrency, and requiredSlots takes that many slots.
#[test]
fn slots_bound_concurrency() {
    let n = TestNode::new("slots");
    let cmd = "/bin/sh -c 'S=$AZ_BATCH_NODE_SHARED_DIR; touch $S/run.$AZ_BATCH_TASK_ID; sleep 2; ls $S | grep -c run. ; rm $S/run.$AZ_BATCH_TASK_ID'";
    let mut big = task("big", cmd, "");
    big["requiredSlots"] = json!(3);
    let tasks: Vec<Value> = (0..5)
        .map(|i| task(&format!("t{i}"), cmd, ""))
        .chain([big])
        .collect();
    let r = n.run(&["--slots", "3"], &Value::Array(tasks));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let seen: Vec<u32> = (0..5)
        .map(|i| {
            n.read("berthjob", &format!("t{i}"), "stdout.txt")
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        seen.iter().all(|s| *s <= 3),
        "never more than 3 at once: {seen:?}"
    );
    assert!(
        seen.iter().any(|s| *s >= 2),
        "tasks do run side by side: {seen:?}"
    );
    assert_eq!(
        n.read("berthjob", "big", "stdout.txt").trim(),
        "1",
        "a 3-slot task runs alone"
    );
}

/// Bad run options and engine refusals are ContainerInvalidSettings naming the problem;
/// a task without containerSettings on a container pool is ContainerTaskSettingsNotFound.
#[test]
fn invalid_settings_are_reported() {
    let n = TestNode::new("invalid");
    let root = n.root().display().to_string();
    let no_settings = json!({"id": "nosettings", "commandLine": "true"});
    let r = n.run(
        &["--slots", "5"],
        &json!([
            task("bogus", "true", "--bogus-flag 1"),
            task("named", "true", "--name mine"),
            task("conflict", "true", &format!("-v /tmp:{root}")),
            task("notfound", "/no/such/program", ""),
            no_settings,
        ]),
    );
    assert_eq!(r.code, Some(1));
    let code = |id: &str| {
        r.task(id)["executionInfo"]["failureInfo"]["code"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for id in ["bogus", "named", "conflict", "notfound"] {
        assert_eq!(code(id), "ContainerInvalidSettings", "{id}");
        assert!(
            r.task(id)["executionInfo"]["exitCode"].is_null(),
            "{id}: no process ran"
        );
    }
    assert!(detail(&r.task("bogus"), "Message")
        .unwrap()
        .contains("--bogus-flag"));
    assert!(detail(&r.task("named"), "Message")
        .unwrap()
        .contains("--name"));
    assert!(detail(&r.task("conflict"), "Message")
        .unwrap()
        .contains("--volume"));
    assert!(detail(&r.task("notfound"), "Message")
        .unwrap()
        .contains("/no/such/program"));
    assert_eq!(code("nosettings"), "ContainerTaskSettingsNotFound");
    assert!(n.containers_left().is_empty());
}

/// An image the registry does not have fails at once with ContainerInvalidImage.
#[test]
fn missing_image_is_container_invalid_image() {
    let reg = TestRegistry::start();
    let n = TestNode::new("image");
    let image = format!("{}/nobody/missing:1", reg.addr);
    let t = json!({"id": "img", "commandLine": "true", "containerSettings": {"imageName": image, "containerRunOptions": "--network none"}});
    let start = Instant::now();
    let r = n.run(&[], &t);
    assert_eq!(r.code, Some(1));
    let t = r.task("img");
    assert_eq!(
        t["executionInfo"]["failureInfo"]["code"],
        "ContainerInvalidImage"
    );
    assert_eq!(detail(&t, "ContainerImage"), Some(image.as_str()));
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "a permanent error is not retried: {:?}",
        start.elapsed()
    );
}

/// OOM kills are reported from the kernel's count; a plain SIGKILL (exit 137) is not OOM.
#[test]
fn oom_detected_sigkill_not() {
    let n = TestNode::new("oom");
    let r = n.run(
        &["--slots", "2"],
        &json!([
            // busybox tail buffers a line-less input whole: the container's own process grows until killed.
            task("oom", "tail /dev/zero", "--memory 32m --memory-swap 32m"),
            // With --init the shell is not PID 1, which a namespace's own SIGKILL cannot kill.
            task("sigkill", "/bin/sh -c 'kill -9 $$'", "--memory 32m --init"),
        ]),
    );
    assert_eq!(r.code, Some(1));
    let o = r.task("oom");
    assert_eq!(o["executionInfo"]["exitCode"], 137);
    assert_eq!(o["executionInfo"]["failureInfo"]["code"], "FailureExitCode");
    assert_eq!(detail(&o, "OutOfMemory"), Some("true"), "{o}");
    let k = r.task("sigkill");
    assert_eq!(k["executionInfo"]["exitCode"], 137);
    assert_eq!(detail(&k, "OutOfMemory"), None, "{k}");
}

/// Ctrl-C stops the running container, removes it, and reports the task as ended.
#[test]
fn ctrl_c_stops_and_removes() {
    let n = TestNode::new("ctrlc");
    let f = n.file("t.json", &task("long", "sleep 300", ""));
    let child = n
        .command()
        .arg("--json")
        .arg(&f)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while n.containers_left().is_empty() {
        assert!(Instant::now() < deadline, "the container never appeared");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let start = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["executionInfo"]["failureInfo"]["code"], "TaskEnded");
    assert!(n.containers_left().is_empty(), "the container was removed");
}

/// Containers left by a crashed berth on this node are removed at the next start.
#[test]
fn leftovers_are_cleaned_at_start() {
    let n = TestNode::new("leftover");
    let out = docker(&[
        "create",
        "--network",
        "none",
        "--label",
        "berth.managed=true",
        "--label",
        &format!("berth.node={}", n.node_id),
        "myimage",
        "sleep",
        "300",
    ]);
    assert!(out.status.success());
    assert_eq!(n.containers().len(), 1);
    let r = n.run(&[], &task("t", "true", ""));
    assert_eq!(r.code, Some(0));
    assert!(n.containers_left().is_empty());
}

/// retentionTime: the task directory is removed once it passes; the default keeps it.
#[test]
fn retention_removes_task_directories() {
    let n = TestNode::new("retention");
    let mut gone = task("gone", "true", "");
    gone["constraints"] = json!({"retentionTime": "PT0S"});
    let r = n.run(&["--slots", "2"], &json!([gone, task("kept", "true", "")]));
    assert_eq!(r.code, Some(0));
    assert!(!n.task_dir("berthjob", "gone").exists());
    assert!(n.task_dir("berthjob", "kept").join("stdout.txt").exists());
}

/// A start task on the host runs first and gates the tasks; a failing one leaves the node
/// in starttaskfailed and runs nothing.
#[test]
fn start_task_on_host_gates_tasks() {
    let n = TestNode::new("starttask");
    let pool = |cmd: &str| {
        json!({"id": "stpool", "taskSlotsPerNode": 1,
        "virtualMachineConfiguration": {"containerConfiguration": {"type": "dockerCompatible"}},
        "startTask": {"commandLine": cmd, "waitForSuccess": true, "userIdentity": {"autoUser": {"elevationLevel": "admin"}}}})
    };
    let ok = n.file("pool.json", &pool("/bin/sh -c 'echo ready > $AZ_BATCH_NODE_SHARED_DIR/marker; echo $AZ_BATCH_TASK_WORKING_DIR'"));
    let r = n.run(
        &["--pool", ok.to_str().unwrap()],
        &task(
            "after",
            "/bin/sh -c 'cat $AZ_BATCH_NODE_SHARED_DIR/marker'",
            "",
        ),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(n.root().join("startup/stdout.txt"))
            .unwrap()
            .trim(),
        n.root().join("startup/wd").display().to_string()
    );
    let bad = n.file("pool.json", &pool("/bin/sh -c 'exit 7'"));
    let r = n.run(
        &["--pool", bad.to_str().unwrap()],
        &task("never", "true", ""),
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("starttaskfailed"), "{}", r.stderr);
    assert_eq!(r.task("never")["state"], "active");
}

/// `berth run --job`: the job's preparation task runs before its tasks (which read its
/// working directory), the release task after them; a failed preparation (on the host
/// here) leaves the tasks unstarted and the release task still runs.
#[test]
fn job_preparation_and_release_in_run() {
    let n = TestNode::new("jobprep");
    let container = json!({"imageName": "myimage", "containerRunOptions": "--network none"});
    let log = "$AZ_BATCH_NODE_SHARED_DIR/order";
    let job = n.file(
        "job.json",
        &json!({"id": "rj",
            "jobPreparationTask": {"containerSettings": container,
                "commandLine": format!("/bin/sh -c 'echo prep $AZ_BATCH_TASK_ID >> {log}; echo prepared > $AZ_BATCH_TASK_WORKING_DIR/data; echo ${{AZ_BATCH_JOB_PREP_DIR:-none}}'")},
            "jobReleaseTask": {"containerSettings": container,
                "commandLine": format!("/bin/sh -c 'echo release $AZ_BATCH_TASK_ID $(cat $AZ_BATCH_JOB_PREP_WORKING_DIR/data) >> {log}'")}}),
    );
    let tasks = json!([
        task(
            "a",
            &format!("/bin/sh -c 'cat $AZ_BATCH_JOB_PREP_WORKING_DIR/data; echo task >> {log}'"),
            ""
        ),
        task("b", &format!("/bin/sh -c 'echo task >> {log}'"), ""),
    ]);
    let r = n.run(&["--job", job.to_str().unwrap()], &tasks);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("job preparation task: success, exit code 0"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("job release task: success, exit code 0"),
        "{}",
        r.stderr
    );
    assert_eq!(n.read("rj", "a", "stdout.txt").trim(), "prepared");
    let order = std::fs::read_to_string(n.root().join("shared/order")).unwrap();
    assert_eq!(
        order.lines().collect::<Vec<_>>(),
        [
            "prep jobpreparation",
            "task",
            "task",
            "release jobrelease prepared"
        ]
    );
    assert_eq!(
        n.read("rj", "jobpreparation", "stdout.txt").trim(),
        "none",
        "the preparation task does not get AZ_BATCH_JOB_PREP_DIR"
    );
    assert!(n.containers_left().is_empty());

    let failing = n.file(
        "job.json",
        &json!({"id": "fj",
            "jobPreparationTask": {"commandLine": "/bin/sh -c 'exit 4'"},
            "jobReleaseTask": {"commandLine": "/bin/sh -c 'echo released'"}}),
    );
    let r = n.run(
        &["--job", failing.to_str().unwrap()],
        &json!([task("never", "true", "")]),
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("job preparation task: failure, exit code 4"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("job release task: success"),
        "{}",
        r.stderr
    );
    assert_eq!(r.task("never")["state"], "active");
    assert_eq!(n.read("fj", "jobrelease", "stdout.txt").trim(), "released");

    // A task may not take the preparation task's id; a release task needs a preparation.
    let bad = n.file(
        "job.json",
        &json!({"id": "bj", "jobReleaseTask": {"commandLine": "true"}}),
    );
    let r = n.run(
        &["--job", bad.to_str().unwrap()],
        &json!([task("t", "true", "")]),
    );
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr
            .contains("$.jobReleaseTask: is allowed only together with a jobPreparationTask"),
        "{}",
        r.stderr
    );
    let r = n.run(
        &["--job", job.to_str().unwrap()],
        &json!([task("JOBRELEASE", "true", "")]),
    );
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("TaskIdSameAsJobReleaseTask"),
        "{}",
        r.stderr
    );
}

/// The JSON report has Batch's shape.
#[test]
fn json_report_shape() {
    let n = TestNode::new("shape");
    let r = n.run(&[], &task("shape", "/bin/sh -c 'exit 0'", ""));
    let t = r.task("shape");
    assert_eq!(t["state"], "completed");
    let e = &t["executionInfo"];
    for k in ["startTime", "endTime"] {
        assert!(chrono_like(&e[k]), "{k}: {e}");
    }
    assert_eq!(e["exitCode"], 0);
    assert_eq!(e["result"], "success");
    assert_eq!(
        (e["retryCount"].as_i64(), e["requeueCount"].as_i64()),
        (Some(0), Some(0))
    );
    assert_eq!(e["containerInfo"]["state"], "exited");
    assert_eq!(
        e["containerInfo"]["containerId"].as_str().map(str::len),
        Some(64)
    );
    assert_eq!(t["containerSettings"]["imageName"], "myimage");
    assert_eq!(t["nodeInfo"]["nodeId"], n.node_id);
}

fn chrono_like(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() >= 20 && s.contains('T'))
}

/// The examples in `examples/` run as the README says.
#[test]
fn examples_run() {
    let n = TestNode::new("examples");
    let ex = workspace().join("examples");
    let out = n
        .command()
        .arg("--json")
        .arg("--pool")
        .arg(ex.join("pool.json"))
        .arg("--job")
        .arg(ex.join("job.json"))
        .arg(ex.join("tasks.json"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        n.read("examplejob", "consume", "stdout.txt"),
        "hello from the job\n"
    );
    assert_eq!(
        n.read("examplejob", "entrypoint", "stdout.txt"),
        "entrypoint: arguments to the image entrypoint\n"
    );
    assert_eq!(n.read("examplejob", "asroot", "stdout.txt"), "0\n");
}

/// The node's run-options policy: forbidden options fail the task before any container
/// exists, naming the option and the rule; the same options run with no policy (Batch's
/// default); an unknown rule is an input error listing the accepted ones.
#[test]
fn run_options_policy() {
    let n = TestNode::new("policy");
    let shared = n.root().join("shared");
    let tasks = json!([
        task("priv", "true", "--privileged"),
        task("bind", "cat /hostetc/hostname", "-v /etc:/hostetc:ro"),
        task("hostnet", "true", "--network host"),
        task(
            "inside",
            "ls /data",
            &format!("-v {}:/data", shared.display())
        ),
    ]);
    let r = n.run(
        &[
            "--slots",
            "4",
            "--forbid-run-options",
            "privileged,binds,host-namespaces",
        ],
        &tasks,
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    for (id, flag, rule) in [
        ("priv", "--privileged", "privileged"),
        ("bind", "-v", "binds"),
        ("hostnet", "--network", "host-namespaces"),
    ] {
        let t = r.task(id);
        let fi = &t["executionInfo"]["failureInfo"];
        assert_eq!(fi["code"], "ContainerInvalidSettings", "{id}: {t}");
        let msg = detail(&t, "Message").unwrap_or(fi["message"].as_str().unwrap());
        assert!(
            msg.contains(&format!("containerRunOptions: {flag}: "))
                && msg.contains(&format!("(forbid_run_options: {rule})")),
            "{id}: {msg}"
        );
        assert!(
            t["executionInfo"]["containerInfo"]["containerId"].is_null(),
            "{id}: no container: {t}"
        );
    }
    assert_eq!(
        r.task("inside")["executionInfo"]["exitCode"],
        0,
        "{}",
        r.stderr
    );

    // No policy: the bind from /etc runs, as in Batch.
    let open = n.run(
        &[],
        &json!([task("bind", "cat /hostetc/hostname", "-v /etc:/hostetc:ro")]),
    );
    assert_eq!(open.code, Some(0), "{}", open.stderr);

    let bad = n.run(
        &["--forbid-run-options", "root"],
        &json!([task("x", "true", "")]),
    );
    assert_eq!(bad.code, Some(2), "{}", bad.stderr);
    assert!(
        bad.stderr.contains("\"root\" is not a run-options rule; use privileged, cap-add, host-namespaces, devices, binds, unconfined, pids-limit or all"),
        "{}",
        bad.stderr
    );
}

/// The field case `tests/cases/exitconditions-dependency/`: `dependencyAction` from
/// `exitConditions` decides whether dependants run, not only success.
#[test]
fn exit_conditions_decide_dependencies_case() {
    let n = TestNode::new("exitcond");
    let case = berth_tests::workspace().join("tests/cases/exitconditions-dependency");
    let out = n
        .command()
        .args(["--json", "--slots", "3", "--job"])
        .arg(case.join("job.json"))
        .arg(case.join("tasks.json"))
        .output()
        .unwrap();
    let r = berth_tests::RunResult {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    let sat = r.task("after-satisfied");
    assert_eq!(sat["state"], "completed", "{}", r.stderr);
    assert_eq!(sat["executionInfo"]["result"], "success");
    assert_eq!(n.read("t2depjob", "after-satisfied", "stdout.txt"), "ran\n");
    let blocked = r.task("after-blocked");
    assert_eq!(blocked["state"], "active", "exit 0 listed as block");
    assert!(blocked["executionInfo"].is_null());
    assert_eq!(
        r.task("fails-but-satisfies")["executionInfo"]["exitCode"],
        3
    );
}

/// `jobAction: terminate` (the default for a failure) ends the job when the job's
/// `onTaskFailure` is `performexitoptionsjobaction`: tasks queued behind never run.
#[test]
fn a_failing_task_terminates_its_job_by_its_exit_conditions() {
    let n = TestNode::new("jobaction");
    let job = n.file(
        "job.json",
        &json!({"id": "actjob", "onTaskFailure": "performexitoptionsjobaction"}),
    );
    let mut ok = task("ok", "/bin/sh -c 'exit 4'", "");
    ok["exitConditions"] =
        json!({"exitCodes": [{"code": 4, "exitOptions": {"jobAction": "none"}}]});
    let r = n.run(
        &["--job", job.to_str().unwrap(), "--slots", "1"],
        &json!([
            ok,
            task("fails", "/bin/sh -c 'exit 2'", ""),
            task("never", "true", "")
        ]),
    );
    assert_eq!(r.task("ok")["executionInfo"]["exitCode"], 4, "{}", r.stderr);
    assert_eq!(r.task("fails")["executionInfo"]["exitCode"], 2);
    let never = r.task("never");
    assert_eq!(never["executionInfo"]["failureInfo"]["code"], "TaskEnded");
    assert!(never["executionInfo"]["exitCode"].is_null(), "{never}");
    assert!(!n.task_dir("actjob", "never").join("stdout.txt").exists());
}

/// `maxParallelTasks` caps how many of the job's tasks run at once in `berth run` too.
#[test]
fn max_parallel_tasks_caps_a_job() {
    let n = TestNode::new("maxpar");
    let job = n.file("job.json", &json!({"id": "capjob", "maxParallelTasks": 1}));
    let cmd = "/bin/sh -c 'S=$AZ_BATCH_NODE_SHARED_DIR; touch $S/run.$AZ_BATCH_TASK_ID; sleep 1; ls $S | grep -c run. ; rm $S/run.$AZ_BATCH_TASK_ID'";
    let tasks: Vec<Value> = (0..3).map(|i| task(&format!("t{i}"), cmd, "")).collect();
    let r = n.run(
        &["--job", job.to_str().unwrap(), "--slots", "3"],
        &Value::Array(tasks),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    for i in 0..3 {
        assert_eq!(
            n.read("capjob", &format!("t{i}"), "stdout.txt"),
            "1\n",
            "t{i} ran beside another"
        );
    }
}

/// The job's `constraints.maxWallClockTime` ends it and stops its running task.
#[test]
fn a_job_past_its_wall_clock_ends_with_its_tasks() {
    let n = TestNode::new("jobclock");
    let job = n.file(
        "job.json",
        &json!({"id": "clockjob", "constraints": {"maxWallClockTime": "PT2S"}}),
    );
    let t0 = Instant::now();
    let r = n.run(
        &["--job", job.to_str().unwrap()],
        &json!([task("long", "sleep 60", ""), task("next", "true", "")]),
    );
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    for id in ["long", "next"] {
        let t = r.task(id);
        assert_eq!(
            t["executionInfo"]["failureInfo"]["code"], "TaskEnded",
            "{id}: {t}"
        );
    }
    assert!(n.containers_left().is_empty());
}

/// A field berth refuses (README, "Fields"), in a task, the job or the pool, stops `berth
/// run` before anything runs (exit 2), each named by file and JSON path; the documented
/// no-ops run as if absent.
#[test]
fn refused_fields_stop_the_run() {
    let n = TestNode::new("refused");
    let pool = n.file(
        "pool.json",
        &json!({"id": "rp", "virtualMachineConfiguration": {"containerConfiguration": {
            "type": "dockerCompatible",
            "containerRegistries": [{"registryServer": "myacr.azurecr.io", "identityReference": {"resourceId": "/mi"}}]}}}),
    );
    let job = n.file(
        "job.json",
        &json!({"id": "rj", "jobPreparationTask": {"commandLine": "true",
            "containerSettings": {"imageName": "myimage", "registry": {"identityReference": {"resourceId": "/mi"}}}}}),
    );
    let mut token = task("token", "/bin/sh -c 'echo ran'", "");
    token["multiInstanceSettings"] = json!({"numberOfInstances": 2});
    let tasks = json!([task("plain", "/bin/sh -c 'echo ran'", ""), token]);
    let r = n.run(
        &[
            "--pool",
            pool.to_str().unwrap(),
            "--job",
            job.to_str().unwrap(),
        ],
        &tasks,
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    for needle in [
        "pool.json: $.virtualMachineConfiguration.containerConfiguration.containerRegistries[0].identityReference: is not supported: berth has no managed identity",
        "job.json: $.jobPreparationTask.containerSettings.registry.identityReference: is not supported",
        "tasks.json: $[1].multiInstanceSettings: is not supported: a berth node runs each task on itself alone",
    ] {
        assert!(r.stderr.contains(needle), "{needle}\n{}", r.stderr);
    }
    assert!(!n.root().join("workitems").exists(), "nothing ran");

    let mut noop = task("noop", "/bin/sh -c 'echo ran'", "");
    noop["displayName"] = json!("a label");
    noop["affinityInfo"] = json!({"affinityId": "TVM:elsewhere"});
    noop["multiInstanceSettings"] = Value::Null;
    let r = n.run(&[], &noop);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(n.read("berthjob", "noop", "stdout.txt"), "ran\n");
    assert_eq!(r.task("noop")["displayName"], "a label");
}

/// A job file's `jobManagerTask` runs in `berth run` too: first, alone on the node
/// (`runExclusive`), then the tasks.
#[test]
fn a_job_manager_task_runs_first_in_berth_run() {
    let n = TestNode::new("jmrun");
    let job = n.file(
        "job.json",
        &json!({"id": "jmrunjob", "jobManagerTask": {"id": "manager", "killJobOnCompletion": false,
            "commandLine": "/bin/sh -c 'echo managed'",
            "containerSettings": {"imageName": "myimage", "containerRunOptions": "--network none"}}}),
    );
    let r = n.run(
        &["--job", job.to_str().unwrap(), "--slots", "2"],
        &json!([task("t1", "true", ""), task("t2", "true", "")]),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(n.read("jmrunjob", "manager", "stdout.txt"), "managed\n");
    let end = r.task("manager")["executionInfo"]["endTime"]
        .as_str()
        .unwrap()
        .to_string();
    for t in ["t1", "t2"] {
        let start = r.task(t)["executionInfo"]["startTime"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            start >= end,
            "{t} started at {start}, before the manager ended at {end}"
        );
    }
}
