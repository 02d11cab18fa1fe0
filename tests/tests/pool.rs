//! Pool start against a real registry (Debian's docker-registry with htpasswd users) and a
//! real engine: prefetch, credentials from the pool, the task and a Docker config, retries,
//! limits, one pull for many tasks, node state and the start task.

use berth_tests::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A password that breaks bollard's standard-base64 X-Registry-Auth without berth's fix.
const PASSWORD: &str = "abc>>>def?/+";

fn pool(images: &[&str], registries: Value) -> Value {
    json!({"id": "regpool", "taskSlotsPerNode": 8,
        "virtualMachineConfiguration": {"containerConfiguration": {
            "type": "dockerCompatible", "containerImageNames": images, "containerRegistries": registries}}})
}

fn registry(addr: &str, user: &str, password: &str) -> Value {
    json!({"registryServer": addr, "username": user, "password": password})
}

fn rmi(image: &str) {
    docker(&["rmi", "-f", image]);
}

fn assert_no_secret(n: &TestNode, r: &RunResult, secret: &str) {
    assert!(
        !r.stdout.contains(secret),
        "secret in stdout:\n{}",
        r.stdout
    );
    assert!(
        !r.stderr.contains(secret),
        "secret in stderr:\n{}",
        r.stderr
    );
    assert_eq!(
        n.files_containing(secret),
        Vec::<std::path::PathBuf>::new(),
        "secret in files"
    );
}

/// Private prefetch with pool credentials (a password with `>`, `?`, `/`, `+`), then
/// tasks on the private image: the pool's credentials and a task's own credentials work;
/// a task whose credentials the registry refuses does not get the image already on the node.
#[test]
fn private_registry_prefetch_and_task_credentials() {
    let reg = TestRegistry::with_users(&[("alice", PASSWORD), ("bob", "bob-pass")]);
    let n = TestNode::new("private");
    let image = reg.push_unique("private/app:1");
    let p = pool(&[&image], json!([registry(&reg.addr, "alice", PASSWORD)]));
    let r = n.pool_start(&p, &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let node = r.node();
    assert_eq!(node["state"], "idle");
    assert_eq!(node["images"][0]["state"], "ready");
    assert!(
        r.stderr.contains("pulled image"),
        "progress lines in the log:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("pull layer"),
        "per-layer lines in the log:\n{}",
        r.stderr
    );
    assert_no_secret(&n, &r, PASSWORD);

    let task = |id: &str, reg: Option<Value>| {
        let mut t = json!({"id": id, "commandLine": "/bin/sh -c 'echo ran'",
            "containerSettings": {"imageName": image, "containerRunOptions": "--network none"}});
        if let Some(r) = reg {
            t["containerSettings"]["registry"] = r;
        }
        t
    };
    let pf = n.file("pool.json", &p);
    let tasks = json!([
        task("poolcreds", None),
        task("owncreds", Some(registry(&reg.addr, "bob", "bob-pass"))),
        task("badcreds", Some(registry(&reg.addr, "bob", "wrong"))),
    ]);
    let r = n.run(&["--pool", pf.to_str().unwrap()], &tasks);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(
        r.task("poolcreds")["executionInfo"]["result"],
        "success",
        "{}",
        r.stderr
    );
    assert_eq!(
        r.task("owncreds")["executionInfo"]["result"],
        "success",
        "{}",
        r.stderr
    );
    let bad = r.task("badcreds");
    let f = &bad["executionInfo"]["failureInfo"];
    assert_eq!(f["code"], "ContainerInvalidRegistry", "{bad}");
    assert!(f.to_string().contains("private registry"), "{f}");
    assert!(
        !bad["executionInfo"].to_string().contains("exitCode"),
        "it never ran"
    );
    assert_no_secret(&n, &r, PASSWORD);
    assert_no_secret(&n, &r, "bob-pass");

    // A later run on this node, with no credentials at all, still may not use it.
    let r = n.run(&[], &json!([task("nocreds", None)]));
    let t = r.task("nocreds");
    assert_eq!(
        t["executionInfo"]["failureInfo"]["code"], "ContainerInvalidRegistry",
        "{t}"
    );
    rmi(&image);
}

/// A wrong password leaves the node unusable with the registry's message; nothing secret
/// is printed.
#[test]
fn wrong_password_makes_the_node_unusable() {
    let reg = TestRegistry::with_users(&[("alice", PASSWORD)]);
    let n = TestNode::new("wrongpw");
    let image = reg.push("myimage", "private/wrong:1");
    let wrong = "Wr0ng>>>?/+";
    let r = n.pool_start(
        &pool(&[&image], json!([registry(&reg.addr, "alice", wrong)])),
        &[],
    );
    assert_eq!(r.code, Some(1));
    let node = r.node();
    assert_eq!(node["state"], "unusable", "{node}");
    let e = &node["errors"][0];
    assert_eq!(e["code"], "ContainerInvalidRegistry", "{e}");
    let details = e["errorDetails"].to_string();
    assert!(details.contains(&image), "{details}");
    assert!(
        details.to_lowercase().contains("unauthorized") || details.contains("denied"),
        "{details}"
    );
    assert_no_secret(&n, &r, wrong);
}

/// An image the registry does not have fails at once (no retries) with ContainerInvalidImage.
#[test]
fn unknown_image_fails_at_once() {
    let reg = TestRegistry::start();
    let n = TestNode::new("unknown");
    let image = format!("{}/nobody/here:1", reg.addr);
    let t = Instant::now();
    let r = n.pool_start(&pool(&[&image], json!([])), &[]);
    assert_eq!(r.code, Some(1));
    let node = r.node();
    assert_eq!(node["state"], "unusable");
    assert_eq!(node["errors"][0]["code"], "ContainerInvalidImage");
    assert!(!r.stderr.contains("retrying"), "{}", r.stderr);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

/// A registry that is down when the pull starts and comes up a few seconds later: the
/// retries with backoff get the image.
#[test]
fn registry_down_then_up() {
    let mut reg = TestRegistry::start();
    let n = TestNode::new("downup");
    let image = reg.push("myimage", "later/app:1");
    reg.stop();
    let f = n.file("pool.json", &pool(&[&image], json!([])));
    let child = n
        .pool_start_command(&f)
        .args(["--pull-retries", "6"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    reg.restart();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("retrying"), "{stderr}");
    rmi(&image);
}

/// A registry that accepts connections and never answers: the first-progress limit ends
/// each attempt, and the total limit ends the pull.
#[test]
fn stalled_registry_hits_the_limits() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Hold every connection open without a byte of answer.
    std::thread::spawn(move || {
        let mut held = vec![];
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let n = TestNode::new("stall");
    let image = format!("{addr}/stuck/app:1");
    let p = pool(&[&image], json!([]));
    let t = Instant::now();
    let r = n.pool_start(
        &p,
        &["--pull-first-progress-timeout", "2s", "--pull-retries", "1"],
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let msg = r.node()["errors"][0]["errorDetails"].to_string();
    assert!(
        msg.contains("first progress limit") && msg.contains("after 2 attempts"),
        "{msg}"
    );
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());

    let t = Instant::now();
    let r = n.pool_start(
        &p,
        &[
            "--pull-first-progress-timeout",
            "1m",
            "--pull-timeout",
            "3s",
        ],
    );
    assert_eq!(r.code, Some(1));
    let msg = r.node()["errors"][0]["errorDetails"].to_string();
    assert!(msg.contains("total limit"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
}

/// Many tasks that want one absent image make one pull: the registry sees as many manifest
/// requests as for a single `docker pull`.
#[test]
fn one_pull_for_many_tasks() {
    let reg = TestRegistry::start();
    let n = TestNode::new("dedup");
    let image = reg.push_unique("dedup/app:1");
    let tasks = |k: usize| {
        let t: Vec<Value> = (0..k)
            .map(|i| {
                json!({"id": format!("t{i}"), "commandLine": "true",
                "containerSettings": {"imageName": image, "containerRunOptions": "--network none"}})
            })
            .collect();
        Value::Array(t)
    };
    // The same path with one task gives the count of manifest requests of one pull.
    let before = reg.manifest_requests("dedup/app");
    let r = n.run(&[], &tasks(1));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let one_pull = reg.manifest_requests("dedup/app") - before;
    assert!(one_pull >= 1, "the registry log counts manifest requests");
    rmi(&image);
    let before = reg.manifest_requests("dedup/app");
    let r = n.run(&["--slots", "8"], &tasks(8));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let pulls = r.stderr.matches("pulling image").count();
    assert_eq!(pulls, 1, "{}", r.stderr);
    let eight = reg.manifest_requests("dedup/app") - before;
    assert_eq!(
        eight, one_pull,
        "manifest requests: 8 tasks {eight}, 1 task {one_pull}"
    );
    rmi(&image);
}

/// Credentials from a Docker config: `auths` and a `credHelpers` helper.
#[test]
fn docker_config_credentials() {
    let reg = TestRegistry::with_users(&[("carol", PASSWORD)]);
    let n = TestNode::new("dockercfg");
    let image = reg.push("myimage", "cfg/app:1");
    let p = n.file("pool.json", &pool(&[&image], json!([])));
    let cfg = tempfile::tempdir().unwrap();
    let b64 = {
        let out = std::process::Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(format!("carol:{PASSWORD}").as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    std::fs::write(
        cfg.path().join("config.json"),
        json!({"auths": {reg.addr.clone(): {"auth": b64}}}).to_string(),
    )
    .unwrap();
    rmi(&image);
    let out = n
        .pool_start_command(&p)
        .env("DOCKER_CONFIG", cfg.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rmi(&image);

    // A helper on PATH answers for the registry.
    let bin = tempfile::tempdir().unwrap();
    let helper = bin.path().join("docker-credential-berthtest");
    std::fs::write(
        &helper,
        format!("#!/bin/sh\nread server\necho '{{\"ServerURL\":\"'$server'\",\"Username\":\"carol\",\"Secret\":\"{PASSWORD}\"}}'\n"),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        cfg.path().join("config.json"),
        json!({"credHelpers": {reg.addr.clone(): "berthtest"}}).to_string(),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = n
        .pool_start_command(&p)
        .env("DOCKER_CONFIG", cfg.path())
        .env("PATH", path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains(PASSWORD));
    rmi(&image);

    // Without the config the registry refuses.
    let out = n
        .pool_start_command(&p)
        .env("DOCKER_CONFIG", bin.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// A start task in a container that fails after its retries leaves the node in
/// starttaskfailed with startTaskInfo filled in; one that succeeds leaves it idle.
#[test]
fn start_task_in_a_container_and_node_state() {
    let n = TestNode::new("stnode");
    let p = |cmd: &str| {
        json!({"id": "stpool",
            "virtualMachineConfiguration": {"containerConfiguration": {"type": "dockerCompatible", "containerImageNames": ["myimage"]}},
            "startTask": {"commandLine": cmd, "waitForSuccess": true, "maxTaskRetryCount": 1,
                "containerSettings": {"imageName": "myimage", "containerRunOptions": "--network none"},
                "environmentSettings": [{"name": "GREETING", "value": "hello"}]}})
    };
    let r = n.pool_start(&p("/bin/sh -c 'echo $GREETING from $PWD; exit 3'"), &[]);
    assert_eq!(r.code, Some(1));
    let node = r.node();
    assert_eq!(node["state"], "starttaskfailed", "{node}");
    let st = &node["startTaskInfo"];
    assert_eq!(st["state"], "completed");
    assert_eq!(st["result"], "failure");
    assert_eq!(st["exitCode"], 3);
    assert_eq!(st["retryCount"], 1);
    assert_eq!(st["failureInfo"]["code"], "FailureExitCode");
    let out = std::fs::read_to_string(n.root().join("startup/stdout.txt")).unwrap();
    assert_eq!(
        out.trim(),
        format!("hello from {}", n.root().join("startup/wd").display())
    );

    let r = n.pool_start(&p("/bin/sh -c 'echo $GREETING'"), &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let node = r.node();
    assert_eq!(node["state"], "idle");
    assert_eq!(node["startTaskInfo"]["result"], "success");
    assert_eq!(node["startTaskInfo"]["exitCode"], 0);
    assert!(node["errors"].is_null());
    assert!(r.stderr.contains("to=waitingforstarttask"), "{}", r.stderr);
}

/// A registry host written with upper-case letters is what docker's reference grammar
/// accepts (only the repository path must be lower case): the image is pulled, and the
/// pool's `registryServer` in other case still gives its credentials.
#[test]
fn a_registry_host_in_upper_case_is_pulled_with_its_credentials() {
    let reg = TestRegistry::with_users(&[("alice", PASSWORD)]);
    let n = TestNode::new("upperhost");
    let image = reg.push_unique("team/app:1");
    let port = reg.addr.rsplit_once(':').unwrap().1;
    let path = image.split_once('/').unwrap().1;
    let upper = format!("LocalHost:{port}/{path}");
    let p = pool(
        &[&upper],
        json!([registry(&format!("LOCALHOST:{port}"), "alice", PASSWORD)]),
    );
    let r = n.pool_start(&p, &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(r.node()["images"][0]["state"], "ready", "{}", r.stdout);
    let pf = n.file("pool.json", &p);
    let t = json!({"id": "up", "commandLine": "/bin/sh -c 'cat /nonce >/dev/null && echo ran'",
        "containerSettings": {"imageName": upper, "containerRunOptions": "--network none"}});
    let r = n.run(&["--pool", pf.to_str().unwrap()], &t);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(n.read("berthjob", "up", "stdout.txt"), "ran\n");
    assert_no_secret(&n, &r, PASSWORD);
    rmi(&upper);
    rmi(&image);
}
