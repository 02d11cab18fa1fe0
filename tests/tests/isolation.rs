//! Tasks kept apart, checked from inside containers with real attempts: a non-admin task
//! of one user cannot read or write another user's task directory, cannot write the
//! startup directory an admin start task filled, and cannot see the agent's state. An
//! admin task making the same attempts succeeds, so each denial is the rule at work and
//! not a broken probe. `containerHostBatchBindMounts` hides every other path.

use berth_tests::agent::Agent;
use berth_tests::*;
use serde_json::json;

/// Each attempt prints `NAME allowed` or `NAME denied`.
const PROBE: &str = r#"R=$AZ_BATCH_NODE_ROOT_DIR
A=$R/workitems/berthjob/job-1/a
try() { if sh -c "$2" >/dev/null 2>&1; then echo "$1 allowed"; else echo "$1 denied"; fi; }
try read-other-wd "cat $A/wd/secret"
try read-other-stdout "cat $A/stdout.txt"
try list-other "ls $A"
try write-other "touch $A/wd/planted"
try read-startup "cat $R/startup/wd/tool"
try write-startup "touch $R/startup/wd/planted"
try list-state "ls $R/berth"
try read-state "cat $R/berth/state.db"
try write-own "touch $AZ_BATCH_TASK_WORKING_DIR/mine"
"#;

fn probe_task(
    id: &str,
    identity: serde_json::Value,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut t = task(
        id,
        "/bin/sh -c '/bin/sh $AZ_BATCH_NODE_SHARED_DIR/probe.sh'",
        "",
    );
    t["userIdentity"] = identity;
    if let Some(m) = extra.as_object() {
        for (k, v) in m {
            t["containerSettings"][k] = v.clone();
        }
    }
    t
}

fn verdicts(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Asserts that each of `names` got `want` in the probe output `v` of `who`.
fn expect(v: &std::collections::BTreeMap<String, String>, who: &str, want: &str, names: &[&str]) {
    for name in names {
        assert_eq!(
            v.get(*name).map(String::as_str),
            Some(want),
            "{who}: {name} in {v:?}"
        );
    }
}

#[test]
fn tasks_cannot_reach_other_tasks_the_startup_dir_or_the_agent_state() {
    let n = TestNode::new("iso");
    let pool = json!({"id": "isopool", "taskSlotsPerNode": 4,
        "virtualMachineConfiguration": {"containerConfiguration": {"type": "dockerCompatible", "containerImageNames": ["myimage"]}},
        "userAccounts": [
            {"name": "berthiso_a", "linuxUserConfiguration": {"uid": 4301, "gid": 4301}},
            {"name": "berthiso_b", "linuxUserConfiguration": {"uid": 4302, "gid": 4302}}],
        "startTask": {"commandLine": "/bin/sh -c 'echo tool > $AZ_BATCH_NODE_STARTUP_DIR/wd/tool'",
            "waitForSuccess": true,
            "userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": "admin"}},
            "containerSettings": {"imageName": "myimage", "containerRunOptions": "--network none"}}});
    let agent = Agent::start_pool(&n, &[], std::path::Path::new("/dev/null"), &pool);
    agent.wait_node("idle");
    std::fs::write(n.root().join("shared/probe.sh"), PROBE).unwrap();
    assert!(
        n.root().join("berth/state.db").exists(),
        "the agent's store is where the probes look"
    );
    assert_eq!(
        agent
            .req("POST", "/jobs", Some(&json!({"id": "berthjob"})))
            .0,
        201
    );
    let add = |t: serde_json::Value| {
        let id = t["id"].as_str().unwrap().to_string();
        let (st, b) = agent.req("POST", "/jobs/berthjob/tasks", Some(&t));
        assert_eq!(st, 201, "{b}");
        let done = agent.wait_state("berthjob", &id, "completed");
        assert_eq!(done["executionInfo"]["result"], "success", "{done}");
    };

    // The victim: user A leaves a secret (mode 0644, as a task's umask makes it) in its wd.
    let mut a = task(
        "a",
        "/bin/sh -c 'echo secret > $AZ_BATCH_TASK_WORKING_DIR/secret; echo a-out'",
        "",
    );
    a["userIdentity"] = json!({"username": "berthiso_a"});
    add(a);
    let admin = json!({"autoUser": {"scope": "pool", "elevationLevel": "admin"}});
    add(probe_task(
        "b",
        json!({"username": "berthiso_b"}),
        json!({}),
    ));
    add(probe_task("root", admin.clone(), json!({})));
    add(probe_task(
        "narrow",
        admin,
        json!({"containerHostBatchBindMounts": [{"source": "Task"}, {"source": "Shared", "isReadOnly": true}]}),
    ));

    let b = verdicts(&n.read("berthjob", "b", "stdout.txt"));
    eprintln!("user B: {b:?}");
    let b_denied = [
        "read-other-wd",
        "read-other-stdout",
        "list-other",
        "write-other",
        "write-startup",
        "list-state",
        "read-state",
    ];
    expect(&b, "user B's task", "denied", &b_denied);
    expect(
        &b,
        "user B's task",
        "allowed",
        &["read-startup", "write-own"],
    );

    // The same attempts as root succeed: the probes work.
    let root = verdicts(&n.read("berthjob", "root", "stdout.txt"));
    eprintln!("admin: {root:?}");
    assert_eq!(root.len(), 9);
    assert!(root.values().all(|v| v == "allowed"), "{root:?}");

    // Mounting only the task's own directory (and the shared one, for the probe) hides
    // the rest even from root.
    let narrow = verdicts(&n.read("berthjob", "narrow", "stdout.txt"));
    eprintln!("admin, Task mount only: {narrow:?}");
    let narrow_denied = [
        "read-other-wd",
        "list-other",
        "read-startup",
        "write-startup",
        "list-state",
        "read-state",
    ];
    expect(&narrow, "Task mount only", "denied", &narrow_denied);
    expect(&narrow, "Task mount only", "allowed", &["write-own"]);

    // What B tried to plant is not there, and the secret is intact.
    let a_wd = n.task_dir("berthjob", "a").join("wd");
    assert_eq!(
        std::fs::read_to_string(a_wd.join("secret")).unwrap(),
        "secret\n"
    );
    assert_eq!(agent.term(), Some(0));
    assert!(n.containers_left().is_empty());
}
