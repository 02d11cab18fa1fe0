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
