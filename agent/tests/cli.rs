//! The `berth` binary's command line, without an engine: input errors exit 2 and name the
//! file, the JSON path and what is accepted. (Also makes `cargo test --workspace` build
//! the binary that the engine tests in `tests/` drive.)

use std::process::Command;

fn berth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_berth"))
}

#[test]
fn help_lists_run() {
    let out = berth().arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("run"));
}

#[test]
fn invalid_input_exits_2_and_names_file_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.json");
    std::fs::write(&f, r#"[{"id":"ok","commandLine":"x","containerSettings":{"imageName":"i"}},
        {"id":"bad id!","commandLine":"x","containerSettings":{"imageName":"i"},"constraints":{"maxTaskRetryCount":-5}}]"#).unwrap();
    let out = berth()
        .args(["run", "--engine", "unix:///nonexistent.sock", "--node-root"])
        .arg(dir.path())
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.json: $[1].id:"), "{err}");
    assert!(
        err.contains("$[1].constraints.maxTaskRetryCount: -5"),
        "{err}"
    );
    assert!(err.contains("nothing was run"), "{err}");
}

#[test]
fn missing_file_and_bad_json_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.json");
    std::fs::write(&f, "{not json").unwrap();
    let out = berth()
        .args(["run", "--node-root"])
        .arg(dir.path())
        .arg(&f)
        .arg(dir.path().join("missing.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not valid JSON"), "{err}");
    assert!(err.contains("missing.json: cannot read"), "{err}");
}

#[test]
fn dependency_cycles_and_unknown_ids_are_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (j, t) = (dir.path().join("job.json"), dir.path().join("t.json"));
    std::fs::write(&j, r#"{"id":"j","usesTaskDependencies":true}"#).unwrap();
    std::fs::write(&t, r#"[{"id":"a","commandLine":"x","containerSettings":{"imageName":"i"},"dependsOn":{"taskIds":["b"]}},
        {"id":"b","commandLine":"x","containerSettings":{"imageName":"i"},"dependsOn":{"taskIds":["a","zz"]}},
        {"id":"A","commandLine":"x","containerSettings":{"imageName":"i"}}]"#).unwrap();
    let out = berth()
        .args(["run", "--node-root"])
        .arg(dir.path())
        .arg("--job")
        .arg(&j)
        .arg(&t)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cycle: a -> b -> a"), "{err}");
    assert!(
        err.contains("task \"zz\" is not among the tasks given"),
        "{err}"
    );
    assert!(err.contains("TaskExists"), "{err}");
}

#[test]
fn pool_start_bad_pool_exits_2_and_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pool.json");
    std::fs::write(&f, r#"{"id":"p","virtualMachineConfiguration":{"containerConfiguration":{"type":"dockerCompatible","containerImageNames":["bad.host/X"]}}}"#).unwrap();
    let out = berth()
        .args([
            "pool",
            "start",
            "--engine",
            "unix:///nonexistent.sock",
            "--node-root",
        ])
        .arg(dir.path())
        .arg("--pool")
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("containerImageNames[0]"), "{err}");
    let out = berth()
        .args(["pool", "start", "--pull-timeout", "5x", "--pool"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown unit"));
}

/// Each line of `err` that shows an error: `berth: ...` and its `  caused by: ...` lines.
fn error_lines(err: &str) -> Vec<&str> {
    err.lines()
        .filter(|l| l.starts_with("berth: ") || l.starts_with("  caused by: "))
        .collect()
}

/// No error text shows twice: no line repeats another, or ends with what another says.
fn assert_each_cause_once(err: &str) {
    let lines: Vec<&str> = error_lines(err)
        .into_iter()
        .map(|l| {
            l.trim_start_matches("berth: ")
                .trim_start_matches("  caused by: ")
        })
        .collect();
    for (i, a) in lines.iter().enumerate() {
        for b in &lines[i + 1..] {
            assert!(
                !a.ends_with(b) && !b.ends_with(a),
                "{a:?} and {b:?}:\n{err}"
            );
        }
    }
}

#[test]
fn an_unreachable_engine_prints_what_failed_then_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.json");
    std::fs::write(
        &f,
        r#"{"id":"t","commandLine":"true","containerSettings":{"imageName":"busybox"}}"#,
    )
    .unwrap();
    // A socket file nothing listens on: an engine that stopped and left its socket.
    let sock = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let engine = format!("unix://{}", sock.display());
    let out = berth()
        .args(["run", "--engine", &engine, "--node-root"])
        .arg(dir.path().join("root"))
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines = error_lines(&err);
    assert_eq!(
        lines.first(),
        Some(&"berth: the Docker engine is unavailable"),
        "{err}"
    );
    assert_eq!(
        lines.get(1),
        Some(&&*format!("  caused by: {engine}")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  caused by: ") && l.contains("refused")),
        "the socket's own error is there: {err}"
    );
    assert_eq!(
        err.matches("Docker engine is unavailable").count(),
        1,
        "{err}"
    );
    assert_eq!(err.matches("refused").count(), 1, "{err}");
    assert!(err.contains("start Docker"), "and what to do: {err}");
    assert_each_cause_once(&err);
}

#[test]
fn a_missing_file_prints_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let enoent = std::io::Error::from_raw_os_error(libc::ENOENT).to_string();
    // The client reads the files before it asks the agent.
    let out = berth()
        .args(["task", "add", "--job", "j", "--socket"])
        .arg(dir.path().join("none.sock"))
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        error_lines(&err),
        [
            format!("berth: {}: cannot read", missing.display()),
            format!("  caused by: {enoent}")
        ],
        "{err}"
    );
    // `berth run` lists every problem of its input, each with its cause, once.
    let out = berth()
        .args(["run", "--node-root"])
        .arg(dir.path())
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("missing.json: cannot read: {enoent}")),
        "{err}"
    );
    assert_eq!(err.matches(&enoent).count(), 1, "{err}");
}
