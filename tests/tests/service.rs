//! `berth service` on a real PostgreSQL, as the real binary: migrations under two
//! replicas starting together, pools, jobs and tasks through the client API with Batch's
//! errors, the client guard, a database outage (503 `ServerBusy`, then recovery), TLS.
//! No engine and no agent: what happens on nodes is the node protocol's tests'.

use berth_tests::postgres::Postgres;
use berth_tests::service::Service;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or("")
}

fn message(v: &Value) -> &str {
    v["message"]["value"].as_str().unwrap_or("")
}

/// Waits until `GET path` answers 200 (the schema is migrated, the database reachable).
fn wait_ok(s: &Service, path: &str, limit: Duration) -> Value {
    let t = Instant::now();
    loop {
        let (st, v) = s.req("GET", path, None);
        if st == 200 {
            return v;
        }
        assert!(t.elapsed() < limit, "GET {path}: {st} {v}\n{}", s.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pool(id: &str, slots: i32) -> Value {
    json!({
        "id": id,
        "taskSlotsPerNode": slots,
        "virtualMachineConfiguration": {"containerConfiguration": {"type": "dockerCompatible", "containerImageNames": ["busybox"]}},
        "startTask": {"commandLine": "true"},
        "userAccounts": [{"name": "worker", "password": "never-shown"}],
        "taskSchedulingPolicy": {"nodeFillType": "pack"},
        "berthLeaseProfile": "fast"
    })
}

/// Two replicas started together migrate once, and each sees what the other wrote:
/// pools, jobs, tasks, with Batch's errors naming the field.
#[test]
fn two_replicas_share_one_schema_and_one_state() {
    let pg = Postgres::start();
    let a = Service::start(&pg.url);
    let b = Service::start(&pg.url);
    wait_ok(&a, "/pools", Duration::from_secs(20));
    wait_ok(&b, "/pools", Duration::from_secs(20));
    assert_eq!(
        pg.psql("SELECT version FROM schema_migrations ORDER BY version")
            .trim(),
        "1\n2\n3"
    );

    // Pools.
    let (st, v) = a.req("POST", "/pools", Some(&pool("Pool1", 2)));
    assert_eq!(st, 201, "{v}");
    let (st, v) = b.req("POST", "/pools", Some(&pool("pool1", 1)));
    assert_eq!((st, code(&v)), (409, "PoolExists"), "{v}");
    let (st, v) = a.req("POST", "/pools", Some(&json!({"id": "bad id!"})));
    assert_eq!((st, code(&v)), (400, "InvalidPropertyValue"));
    assert!(message(&v).starts_with("$.id"), "{v}");
    let p = b.json("/pools/POOL1");
    assert_eq!(p["id"], "Pool1");
    assert_eq!(p["state"], "active");
    assert_eq!(p["taskSlotsPerNode"], 2);
    assert_eq!(p["taskSchedulingPolicy"]["nodeFillType"], "pack");
    assert_eq!(p["berthLeaseProfile"], "fast");
    assert_eq!(p["currentDedicatedNodes"], 0);
    assert_eq!(p["userAccounts"][0]["name"], "worker");
    assert!(!p.to_string().contains("never-shown"), "{p}");
    assert_eq!(
        pg.psql("SELECT heartbeat_ms, requeue_ms, node_fill_type FROM pools")
            .trim(),
        "1000|15000|pack"
    );
    assert_eq!(b.json("/pools")["value"].as_array().unwrap().len(), 1);
    let (st, v) = a.req("GET", "/pools/none", None);
    assert_eq!((st, code(&v)), (404, "PoolNotFound"));

    // Jobs: the pool must exist.
    let (st, v) = a.req(
        "POST",
        "/jobs",
        Some(&json!({"id": "j", "poolInfo": {"poolId": "none"}})),
    );
    assert_eq!((st, code(&v)), (400, "InvalidPropertyValue"));
    assert!(message(&v).contains("poolInfo.poolId"), "{v}");
    let (st, v) = a.req("POST", "/jobs", Some(&json!({"id": "j"})));
    assert_eq!(st, 400);
    assert!(message(&v).contains("poolInfo.poolId"), "{v}");
    let job = json!({"id": "J1", "poolInfo": {"poolId": "pool1"}, "usesTaskDependencies": true,
                     "onAllTasksComplete": "terminatejob", "priority": 5});
    assert_eq!(a.req("POST", "/jobs", Some(&job)).0, 201);
    let (st, v) = b.req("POST", "/jobs", Some(&job));
    assert_eq!((st, code(&v)), (409, "JobExists"));
    assert_eq!(b.json("/jobs/j1")["state"], "active");
    let (st, v) = a.req("DELETE", "/pools/pool1", None);
    assert_eq!((st, code(&v)), (409, "PoolNotEmpty"), "{v}");

    // Tasks: requiredSlots must fit a node; dependencies wait; collections answer per task.
    let (st, v) = b.req(
        "POST",
        "/jobs/j1/tasks",
        Some(&json!({"id": "big", "commandLine": "x", "requiredSlots": 3})),
    );
    assert_eq!((st, code(&v)), (400, "InvalidPropertyValue"));
    assert!(message(&v).contains("requiredSlots"), "{v}");
    let (st, v) = a.req(
        "POST",
        "/jobs/j1/tasks",
        Some(&json!({"id": "t1", "commandLine": "x", "requiredSlots": 2})),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = b.req(
        "POST",
        "/jobs/j1/addtaskcollection",
        Some(&json!({"value": [
            {"id": "t2", "commandLine": "x", "dependsOn": {"taskIds": ["t1", "t3"]}},
            {"id": "t1", "commandLine": "x"},
            {"id": "t3", "commandLine": "x"},
            // The same id twice in one call (ids are case-insensitive): the second exists.
            {"id": "T3", "commandLine": "x"}
        ]})),
    );
    assert_eq!(st, 200, "{v}");
    let statuses: Vec<&str> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["success", "clienterror", "success", "clienterror"]
    );
    assert_eq!(v["value"][1]["error"]["code"], "TaskExists");
    assert_eq!(v["value"][3]["error"]["code"], "TaskExists");
    // t1 and t3 are claimable, at the job's priority; t2 waits on both.
    assert_eq!(
        pg.psql("SELECT t.id, r.job_priority, r.required_slots FROM ready r JOIN tasks t ON t.seq = r.task_seq ORDER BY t.seq").trim(),
        "t1|5|2\nt3|5|1"
    );
    assert_eq!(
        pg.psql("SELECT waiting_on FROM tasks WHERE id = 't2'")
            .trim(),
        "2"
    );
    let active = a.json("/jobs/j1/tasks?$filter=state%20eq%20'active'");
    assert_eq!(active["value"].as_array().unwrap().len(), 3);
    let counts = b.json("/jobs/J1/taskcounts");
    assert_eq!(counts["taskCounts"]["active"], 3);
    assert_eq!(counts["taskSlotCounts"]["active"], 4);
    // Batch's whole filter grammar (not only `state`); an unknown property is refused.
    let none = a.json("/jobs/j1/tasks?$filter=id%20eq%20'x'");
    assert_eq!(none["value"].as_array().unwrap().len(), 0);
    let (st, v) = a.req("GET", "/jobs/j1/tasks?$filter=nope%20eq%20'x'", None);
    assert_eq!((st, code(&v)), (400, "InvalidQueryParameterValue"));

    // Priority changes reach the ready set; disable takes the job's tasks out of it.
    assert_eq!(
        a.req("PATCH", "/jobs/j1", Some(&json!({"priority": 100})))
            .0,
        200
    );
    assert_eq!(
        pg.psql("SELECT DISTINCT job_priority FROM ready").trim(),
        "100"
    );
    assert_eq!(
        b.req(
            "POST",
            "/jobs/j1/disable",
            Some(&json!({"disableTasks": "requeue"}))
        )
        .0,
        202
    );
    assert_eq!(a.json("/jobs/j1")["state"], "disabled");
    assert_eq!(pg.psql("SELECT count(*) FROM ready").trim(), "0");
    let (st, v) = a.req(
        "POST",
        "/jobs/j1/tasks",
        Some(&json!({"id": "t9", "commandLine": "x"})),
    );
    assert_eq!((st, code(&v)), (409, "JobDisabled"));
    assert_eq!(a.req("POST", "/jobs/j1/enable", None).0, 202);
    assert_eq!(pg.psql("SELECT count(*) FROM ready").trim(), "2");

    // Terminating the tasks completes them; the last one ends the job (AllTasksComplete).
    for t in ["t1", "t3", "t2"] {
        let (st, v) = b.req("POST", &format!("/jobs/j1/tasks/{t}/terminate"), None);
        assert_eq!(st, 204, "{t}: {v}");
    }
    let t1 = a.json("/jobs/j1/tasks/t1");
    assert_eq!(t1["state"], "completed");
    assert_eq!(t1["executionInfo"]["failureInfo"]["code"], "TaskEnded");
    let (st, v) = a.req("POST", "/jobs/j1/tasks/t1/terminate", None);
    assert_eq!((st, code(&v)), (409, "TaskCompleted"));
    let j = b.json("/jobs/j1");
    assert_eq!(j["state"], "completed", "{j}");
    assert_eq!(j["executionInfo"]["terminateReason"], "AllTasksComplete");
    assert_eq!(
        a.json("/jobs?$filter=state%20eq%20'completed'")["value"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A job that is terminated by request; then deleted, and the pool with it.
    let job2 = json!({"id": "j2", "poolInfo": {"poolId": "Pool1"}});
    assert_eq!(a.req("POST", "/jobs", Some(&job2)).0, 201);
    assert_eq!(
        a.req(
            "POST",
            "/jobs/j2/tasks",
            Some(&json!({"id": "a", "commandLine": "x"}))
        )
        .0,
        201
    );
    assert_eq!(
        b.req(
            "POST",
            "/jobs/j2/terminate",
            Some(&json!({"terminateReason": "enough"}))
        )
        .0,
        202
    );
    let j2 = a.json("/jobs/j2");
    assert_eq!(
        (
            j2["state"].as_str(),
            j2["executionInfo"]["terminateReason"].as_str()
        ),
        (Some("completed"), Some("enough"))
    );
    assert_eq!(a.json("/jobs/j2/tasks/a")["state"], "completed");
    assert_eq!(b.req("DELETE", "/jobs/j2/tasks/a", None).0, 200);
    assert_eq!(b.req("DELETE", "/jobs/j2", None).0, 202);
    let (st, v) = a.req("GET", "/jobs/j2", None);
    assert_eq!((st, code(&v)), (404, "JobNotFound"));
    assert_eq!(b.req("DELETE", "/jobs/j1", None).0, 202);
    let counts = a.json("/nodecounts");
    assert_eq!(counts["value"][0]["poolId"], "Pool1");
    assert_eq!(counts["value"][0]["dedicated"]["total"], 0);
    assert_eq!(a.req("DELETE", "/pools/pool1", None).0, 202);
    let (st, _) = b.req("GET", "/pools/pool1", None);
    assert_eq!(st, 404);
}

/// The client guard: no token, a wrong one, the enrolment secret: 401 with Batch's body;
/// unknown paths and methods get Batch's 404 and 405 bodies.
#[test]
fn clients_need_a_client_token() {
    let pg = Postgres::start();
    let s = Service::start(&pg.url);
    wait_ok(&s, "/pools", Duration::from_secs(20));
    for token in [
        None,
        Some("wrong-token-0123456789"),
        Some(berth_tests::service::ENROLMENT_SECRET),
    ] {
        let (st, v) = s.req_as(token, "GET", "/pools", None);
        assert_eq!((st, code(&v)), (401, "AuthenticationFailed"), "{token:?}");
        let (st, _) = s.req_as(token, "POST", "/pools", Some(&pool("p", 1)));
        assert_eq!(st, 401);
    }
    // SharedKey where the service has no account keys: refused as any other stranger.
    let (st, _, body) = s.raw(
        None,
        "GET",
        &format!("/pools?api-version={}", berth_agent::api::API_VERSION),
        &["Authorization: SharedKey berth:c2lnbmF0dXJl"],
        None,
    );
    assert_eq!(st, 401, "{body}");
    assert_eq!(pg.psql("SELECT count(*) FROM pools").trim(), "0");
    let (st, v) = s.req("GET", "/no/such/path", None);
    assert_eq!((st, code(&v)), (404, "ResourceNotFound"));
    let (st, v) = s.req("PUT", "/pools", None);
    assert_eq!((st, code(&v)), (405, "UnsupportedHttpVerb"));
}

/// PostgreSQL away: 503 `ServerBusy` (also before the first migration), and the service
/// serves again once it is back, without a restart of its own.
#[test]
fn a_database_outage_is_503_then_recovers() {
    let pg = Postgres::start();
    pg.stop();
    let mut s = Service::start(&pg.url);
    let (st, v) = s.req("GET", "/pools", None);
    assert_eq!((st, code(&v)), (503, "ServerBusy"), "{v}");
    pg.restart();
    wait_ok(&s, "/pools", Duration::from_secs(20));
    assert_eq!(s.req("POST", "/pools", Some(&pool("p", 1))).0, 201);
    pg.stop();
    let (st, v) = s.req("GET", "/pools/p", None);
    assert_eq!((st, code(&v)), (503, "ServerBusy"), "{v}");
    pg.restart();
    assert_eq!(wait_ok(&s, "/pools/p", Duration::from_secs(20))["id"], "p");
    // SIGTERM: a clean stop.
    assert!(s.stop().success(), "{}", s.log());
}

/// TLS: the certificate and key given are served; plain HTTP needs --insecure-http.
#[test]
fn tls_is_served_and_plain_http_is_explicit() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=berth-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert_s = cert.to_str().unwrap();
    let key_s = key.to_str().unwrap();
    let s = Service::start_with(
        &pg.url,
        &["--tls-cert", cert_s, "--tls-key", key_s],
        Some(&cert),
    );
    assert!(s.url.starts_with("https://"));
    wait_ok(&s, "/pools", Duration::from_secs(20));
    // Plain HTTP on the TLS port is no answer.
    let plain = std::process::Command::new("curl")
        .args(["-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(s.url.replace("https://", "http://") + "/pools")
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");
    // Neither TLS nor --insecure-http: refused at start, naming the flags.
    let out = std::process::Command::new(berth_tests::berth_bin())
        .args([
            "service",
            "--database-url",
            &pg.url,
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--tls-cert") && err.contains("--insecure-http"),
        "{err}"
    );
}

/// A task on a node (as a claim leaves it: attempt live, slots taken, out of `ready`),
/// written straight into the tables: the node protocol is not needed to test what the
/// client's transitions do to tasks that run. The node's heartbeat is set an hour ahead:
/// no one heartbeats for it, and the fast profile's sweeper must not find it lapsed (and
/// count its tasks elsewhere) however slowly a loaded machine runs the test.
fn put_on_node(pg: &Postgres, job: &str, task: &str, attempt: i64) {
    pg.psql(&format!(
        "INSERT INTO nodes (pool_id, id, epoch, token_hash, state, report, slots, used_slots, last_heartbeat, state_transition_time)
           SELECT 'p', 'n1', 1, '\\x00', 'running', '{{}}', 4, 0, now() + interval '1 hour', now()
           WHERE NOT EXISTS (SELECT 1 FROM nodes WHERE id = 'n1');
         INSERT INTO attempts (id, task_seq, pool_id, node_id, epoch, required_slots)
           SELECT {attempt}, seq, 'p', 'n1', 1, 1 FROM tasks WHERE job_id = '{job}' AND id = '{task}';
         UPDATE nodes SET used_slots = used_slots + 1 WHERE id = 'n1';
         UPDATE jobs SET running = running + 1 WHERE id = '{job}' AND max_parallel >= 0;
         DELETE FROM ready WHERE task_seq = (SELECT seq FROM tasks WHERE job_id = '{job}' AND id = '{task}');
         UPDATE tasks SET state = 'running', current_attempt = {attempt}, node_id = 'n1',
             view = jsonb_set(view, '{{state}}', '\"running\"')
           WHERE job_id = '{job}' AND id = '{task}';"
    ));
}

/// The node's completion report, as the node protocol records it, then the job-end hook
/// in the same transaction (in-process, on the same database).
async fn complete_on_node(url: &str, job: &str, task: &str, exit_code: i64) {
    let db = berth_agent::service::db::Db::new(url).unwrap();
    let mut c = db.conn().await.unwrap();
    let tx = c.transaction().await.unwrap();
    let row = tx
        .query_one(
            "SELECT seq, view, current_attempt FROM tasks WHERE job_id = $1 AND id = $2",
            &[&job, &task],
        )
        .await
        .unwrap();
    let (seq, attempt): (i64, i64) = (row.get(0), row.get(2));
    let mut view: berth_proto::TaskView = serde_json::from_value(row.get(1)).unwrap();
    view.state = berth_proto::TaskState::Completed;
    view.execution_info = Some(serde_json::from_value(json!({
        "exitCode": exit_code, "retryCount": 0, "requeueCount": 0,
        "result": if exit_code == 0 { "success" } else { "failure" },
        "failureInfo": if exit_code == 0 { Value::Null } else { json!({"category": "usererror", "code": "FailureExitCode", "message": "m"}) },
    })).unwrap());
    let v = serde_json::to_value(&view).unwrap();
    tx.execute(
        "UPDATE tasks SET state = 'completed', view = $2, current_attempt = NULL WHERE seq = $1",
        &[&seq, &v],
    )
    .await
    .unwrap();
    tx.execute(
        "UPDATE attempts SET state = 'completed', pending_command = NULL WHERE id = $1",
        &[&attempt],
    )
    .await
    .unwrap();
    tx.execute(
        "UPDATE jobs SET running = running - 1 WHERE id = $1 AND max_parallel >= 0",
        &[&job],
    )
    .await
    .unwrap();
    tx.execute(
        "UPDATE nodes SET used_slots = used_slots - 1 WHERE id = 'n1'",
        &[],
    )
    .await
    .unwrap();
    berth_agent::service::job_end::after_task_completed(&tx, &view)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// What the client's job and task transitions do to tasks on nodes: terminate asks the
/// node and the job completes on its report; a failed task's jobAction ends its job;
/// disable with requeue takes a running task back (requeueCount 1, the node told to drop
/// it, its slot freed).
#[tokio::test(flavor = "multi_thread")]
async fn transitions_of_tasks_on_nodes() {
    let pg = Postgres::start();
    let s = Service::start(&pg.url);
    wait_ok(&s, "/pools", Duration::from_secs(20));
    assert_eq!(s.req("POST", "/pools", Some(&pool("p", 4))).0, 201);

    // Terminate: the running task is the node's to end; the job waits for its report.
    assert_eq!(
        s.req(
            "POST",
            "/jobs",
            Some(&json!({"id": "a", "poolInfo": {"poolId": "p"}}))
        )
        .0,
        201
    );
    for t in ["r", "q"] {
        assert_eq!(
            s.req(
                "POST",
                "/jobs/a/tasks",
                Some(&json!({"id": t, "commandLine": "x"}))
            )
            .0,
            201
        );
    }
    put_on_node(&pg, "a", "r", 101);
    assert_eq!(s.req("POST", "/jobs/a/terminate", None).0, 202);
    assert_eq!(s.json("/jobs/a")["state"], "terminating");
    assert_eq!(s.json("/jobs/a/tasks/q")["state"], "completed");
    assert_eq!(
        pg.psql("SELECT pending_command FROM attempts WHERE id = 101")
            .trim(),
        "terminate"
    );
    complete_on_node(&pg.url, "a", "r", 137).await;
    let a = s.json("/jobs/a");
    assert_eq!(
        (
            a["state"].as_str(),
            a["executionInfo"]["terminateReason"].as_str()
        ),
        (Some("completed"), Some("UserTerminate"))
    );

    // A failed task whose job performs exit options' jobAction (default: terminate).
    let job = json!({"id": "b", "poolInfo": {"poolId": "p"}, "onTaskFailure": "performexitoptionsjobaction"});
    assert_eq!(s.req("POST", "/jobs", Some(&job)).0, 201);
    for t in ["f", "w"] {
        assert_eq!(
            s.req(
                "POST",
                "/jobs/b/tasks",
                Some(&json!({"id": t, "commandLine": "x"}))
            )
            .0,
            201
        );
    }
    put_on_node(&pg, "b", "f", 102);
    complete_on_node(&pg.url, "b", "f", 3).await;
    let b = s.json("/jobs/b");
    assert_eq!(
        (
            b["state"].as_str(),
            b["executionInfo"]["terminateReason"].as_str()
        ),
        (Some("completed"), Some("TaskFailed")),
        "{b}"
    );
    let (st, v) = s.req("POST", "/jobs/b/tasks/f/reactivate", None);
    assert_eq!((st, code(&v)), (409, "JobCompleted"));
    assert_eq!(
        s.json("/jobs/b/tasks/w")["executionInfo"]["failureInfo"]["code"],
        "TaskEnded"
    );

    // Disable with requeue: the running task is active again, out of `ready` until enabled.
    assert_eq!(
        s.req(
            "POST",
            "/jobs",
            Some(&json!({"id": "c", "poolInfo": {"poolId": "p"}}))
        )
        .0,
        201
    );
    assert_eq!(
        s.req(
            "POST",
            "/jobs/c/tasks",
            Some(&json!({"id": "t", "commandLine": "x"}))
        )
        .0,
        201
    );
    put_on_node(&pg, "c", "t", 103);
    let (st, v) = s.req(
        "POST",
        "/jobs/c/disable",
        Some(&json!({"disableTasks": "requeue"})),
    );
    assert_eq!(st, 202, "{v}");
    let t = s.json("/jobs/c/tasks/t");
    assert_eq!(
        (
            t["state"].as_str(),
            t["executionInfo"]["requeueCount"].as_i64()
        ),
        (Some("active"), Some(1)),
        "{t}"
    );
    assert_eq!(s.json("/jobs/c")["state"], "disabled");
    assert_eq!(
        pg.psql("SELECT state, pending_command FROM attempts WHERE id = 103")
            .trim(),
        "requeued|fence"
    );
    assert_eq!(
        pg.psql("SELECT used_slots FROM nodes WHERE id = 'n1'")
            .trim(),
        "0"
    );
    assert_eq!(
        pg.psql("SELECT running FROM jobs WHERE id = 'c'").trim(),
        "0"
    );
    assert_eq!(s.req("POST", "/jobs/c/enable", None).0, 202);
    assert_eq!(
        pg.psql("SELECT count(*) FROM ready WHERE job_id = 'c'")
            .trim(),
        "1"
    );

    // Reactivate: a failed task is active and claimable again; a successful one is not.
    let g = json!({"id": "g", "commandLine": "x",
        "environmentSettings": [{"name": "BERTH_GPUS", "value": "2"}]});
    assert_eq!(s.req("POST", "/jobs/c/tasks", Some(&g)).0, 201);
    let gpus =
        pg.psql("SELECT r.gpus FROM ready r JOIN tasks t ON t.seq = r.task_seq WHERE t.id = 'g'");
    assert_eq!(gpus.trim(), "2");
    put_on_node(&pg, "c", "g", 105);
    complete_on_node(&pg.url, "c", "g", 1).await;
    let (st, v) = s.req("POST", "/jobs/c/tasks/g/reactivate", None);
    assert_eq!(st, 204, "{v}");
    let g = s.json("/jobs/c/tasks/g");
    assert_eq!(g["state"], "active", "{g}");
    assert_eq!(g["executionInfo"]["requeueCount"], 1, "{g}");
    let ready = pg.psql("SELECT count(*) FROM ready WHERE job_id = 'c'");
    assert_eq!(ready.trim(), "2");
    put_on_node(&pg, "c", "g", 106);
    complete_on_node(&pg.url, "c", "g", 0).await;
    let (st, v) = s.req("POST", "/jobs/c/tasks/g/reactivate", None);
    assert_eq!((st, code(&v)), (409, "TaskSucceeded"));

    // A task deleted while on a node gives its slot back.
    put_on_node(&pg, "c", "t", 104);
    assert_eq!(s.req("DELETE", "/jobs/c/tasks/t", None).0, 200);
    assert_eq!(
        pg.psql("SELECT used_slots FROM nodes WHERE id = 'n1'")
            .trim(),
        "0"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM attempts WHERE id = 104")
            .trim(),
        "0"
    );
    assert_eq!(s.json("/nodecounts")["value"][0]["dedicated"]["running"], 1);
    assert_eq!(s.json("/pools/p")["currentDedicatedNodes"], 1);
}

/// Registry passwords reach the node that pulls with them (the enrolment's pool, a claim's
/// task) and no client: the client API's pool and task show none.
#[test]
fn registry_passwords_reach_nodes_and_no_client() {
    let pg = Postgres::start();
    let s = Service::start(&pg.url);
    wait_ok(&s, "/pools", Duration::from_secs(30));
    let registry = json!({"registryServer": "127.0.0.1:5000", "username": "u",
                          "password": "pool-registry-password"});
    let mut p = pool("preg", 1);
    p["virtualMachineConfiguration"]["containerConfiguration"]["containerRegistries"] =
        json!([registry]);
    assert_eq!(s.req("POST", "/pools", Some(&p)).0, 201);
    let job = json!({"id": "jreg", "poolInfo": {"poolId": "preg"}});
    assert_eq!(s.req("POST", "/jobs", Some(&job)).0, 201);
    let task = json!({"id": "t", "commandLine": "true", "containerSettings": {
        "imageName": "127.0.0.1:5000/app", "registry": {"registryServer": "127.0.0.1:5000",
        "username": "u", "password": "task-registry-password"}}});
    let (st, v) = s.req("POST", "/jobs/jreg/tasks", Some(&task));
    assert_eq!(st, 201, "{v}");
    for path in [
        "/pools/preg",
        "/pools",
        "/jobs/jreg/tasks/t",
        "/jobs/jreg/tasks",
    ] {
        let shown = s.json(path).to_string();
        assert!(!shown.contains("registry-password"), "{path}: {shown}");
    }
    let prefix = berth_proto::node_protocol::PREFIX;
    let enrol = json!({"poolId": "preg", "nodeId": "n1", "agentVersion": "t"});
    let (st, v) = s.req_as(
        Some(berth_tests::service::ENROLMENT_SECRET),
        "POST",
        &format!("{prefix}/enrol"),
        Some(&enrol),
    );
    assert_eq!(st, 200, "{v}");
    assert!(v.to_string().contains("pool-registry-password"), "{v}");
    let (token, epoch) = (
        v["nodeToken"].as_str().unwrap().to_string(),
        v["epoch"].clone(),
    );
    let node = json!({"id": "n1", "poolId": "preg", "state": "idle",
        "schedulingState": "enabled", "stateTransitionTime": "2026-01-01T00:00:00Z",
        "nodeAgentInfo": {"version": "t", "lastUpdateTime": "2026-01-01T00:00:00Z"}});
    let hb = json!({"epoch": epoch, "node": node, "running": []});
    assert_eq!(
        s.req_as(
            Some(&token),
            "POST",
            &format!("{prefix}/heartbeat"),
            Some(&hb)
        )
        .0,
        200
    );
    let claim = json!({"epoch": epoch, "freeSlots": 1, "freeGpus": 0, "waitMs": 2000});
    let (st, v) = s.req_as(
        Some(&token),
        "POST",
        &format!("{prefix}/claim"),
        Some(&claim),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["claims"].as_array().map(Vec::len), Some(1), "{v}");
    assert!(v.to_string().contains("task-registry-password"), "{v}");
}

/// A response header's value (names match without regard to case).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// The service answers with the agent's API conventions (issue 26): `api-version`
/// required and checked on Batch's paths (not on the node protocol's), `request-id` on
/// every answer and the `client-request-id` echo, Batch's 405 body, `Location` and
/// `DataServiceId` on create, ETag and Last-Modified with the conditional headers (412
/// `ConditionNotMet`, 304), and lists with Batch's `$filter`, `$select`, `maxresults` and
/// `odata.nextLink`.
#[test]
fn the_service_speaks_the_agents_api_conventions() {
    use berth_tests::service::CLIENT_TOKEN;
    let pg = Postgres::start();
    let s = Service::start(&pg.url);
    wait_ok(&s, "/pools", Duration::from_secs(20));
    assert_eq!(s.req("POST", "/pools", Some(&pool("p", 2))).0, 201);
    let t = Some(CLIENT_TOKEN);
    let v = berth_agent::api::API_VERSION;
    let parse = |b: &str| serde_json::from_str::<Value>(b).unwrap_or(Value::Null);

    // api-version: required, checked; a request-id on the refusal too.
    let (st, head, body) = s.raw(t, "GET", "/jobs", &[], None);
    assert_eq!(
        (st, code(&parse(&body))),
        (400, "MissingRequiredQueryParameter")
    );
    assert!(header(&head, "request-id").is_some(), "{head}");
    let (st, _, body) = s.raw(t, "GET", "/jobs?api-version=2019-01-01.8.0", &[], None);
    assert_eq!(
        (st, code(&parse(&body))),
        (400, "InvalidQueryParameterValue")
    );
    // The node protocol needs none (its token is checked instead).
    let (st, _, body) = s.raw(
        None,
        "POST",
        "/nodeagent/v1/heartbeat",
        &[],
        Some(&json!({})),
    );
    assert_eq!((st, code(&parse(&body))), (401, "AuthenticationFailed"));
    // A method the path does not allow: Batch's 405 body.
    let (st, head, body) = s.raw(t, "PUT", &format!("/jobs?api-version={v}"), &[], None);
    assert_eq!((st, code(&parse(&body))), (405, "UnsupportedHttpVerb"));
    assert!(header(&head, "request-id").is_some(), "{head}");

    // Create: Location and DataServiceId, ETag; the client's request id echoed.
    let job = json!({"id": "j1", "poolInfo": {"poolId": "p"}});
    let (st, head, _) = s.raw(
        t,
        "POST",
        &format!("/jobs?api-version={v}"),
        &[
            "client-request-id: 8c2b6d6e-0000-4000-8000-000000000001",
            "return-client-request-id: true",
        ],
        Some(&job),
    );
    assert_eq!(st, 201, "{head}");
    assert_eq!(
        header(&head, "client-request-id"),
        Some("8c2b6d6e-0000-4000-8000-000000000001")
    );
    assert_eq!(
        header(&head, "location"),
        Some(format!("{}/jobs/j1", s.url).as_str())
    );
    assert_eq!(header(&head, "dataserviceid"), header(&head, "location"));
    assert!(
        header(&head, "etag").is_some_and(|e| e.starts_with("0x")),
        "{head}"
    );

    // Get: ETag and Last-Modified; url and eTag in the body; 304 when the client has it.
    let (st, head, body) = s.raw(t, "GET", &format!("/jobs/j1?api-version={v}"), &[], None);
    assert_eq!(st, 200);
    let etag = header(&head, "etag").unwrap().to_string();
    assert!(header(&head, "last-modified").is_some(), "{head}");
    let body = parse(&body);
    assert_eq!(body["eTag"], etag.as_str());
    assert_eq!(body["url"], format!("{}/jobs/j1", s.url).as_str());
    let (st, _, _) = s.raw(
        t,
        "GET",
        &format!("/jobs/j1?api-version={v}"),
        &[&format!("If-None-Match: {etag}")],
        None,
    );
    assert_eq!(st, 304);

    // Conditional writes: a stale If-Match is 412 and changes nothing.
    let patch = json!({"priority": 5});
    let path = format!("/jobs/j1?api-version={v}");
    let (st, _, body) = s.raw(
        t,
        "PATCH",
        &path,
        &["If-Match: 0x0000000000000000"],
        Some(&patch),
    );
    assert_eq!((st, code(&parse(&body))), (412, "ConditionNotMet"));
    let (st, _, body) = s.raw(
        t,
        "POST",
        &format!("/jobs/j1/disable?api-version={v}"),
        &["If-Match: 0x0000000000000000"],
        Some(&json!({"disableTasks": "wait"})),
    );
    assert_eq!((st, code(&parse(&body))), (412, "ConditionNotMet"));
    assert_eq!(s.json("/jobs/j1")["state"], "active");
    let (st, head, _) = s.raw(
        t,
        "PATCH",
        &path,
        &[&format!("If-Match: {etag}")],
        Some(&patch),
    );
    assert_eq!(st, 200, "{head}");
    assert_ne!(
        header(&head, "etag"),
        Some(etag.as_str()),
        "a change, a new ETag"
    );
    assert_eq!(s.json("/jobs/j1")["priority"], 5);

    // Lists: Batch's $filter (typed, refused by name), $select, maxresults and paging.
    for i in 1..=5 {
        let (st, head, _) = s.raw(
            t,
            "POST",
            &format!("/jobs/j1/tasks?api-version={v}"),
            &[],
            Some(&json!({"id": format!("t{i}"), "commandLine": "x"})),
        );
        assert_eq!(st, 201);
        assert_eq!(
            header(&head, "location"),
            Some(format!("{}/jobs/j1/tasks/t{i}", s.url).as_str())
        );
    }
    let page = s.json("/jobs/j1/tasks?$filter=state%20eq%20'active'%20and%20id%20ne%20't2'&$select=id,state&maxresults=2");
    let ids = |p: &Value| -> Vec<String> {
        p["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&page), ["t1", "t3"]);
    assert_eq!(page["value"][0], json!({"id": "t1", "state": "active"}));
    let mut seen = ids(&page);
    let mut next = page["odata.nextLink"].as_str().map(str::to_string);
    while let Some(link) = next {
        let rest = link.strip_prefix(&s.url).expect("a link to this service");
        let p = s.json(rest);
        seen.extend(ids(&p));
        next = p["odata.nextLink"].as_str().map(str::to_string);
    }
    assert_eq!(seen, ["t1", "t3", "t4", "t5"]);
    let jobs = s.json("/jobs?$filter=id%20eq%20'J1'%20and%20priority%20ge%205");
    assert_eq!(jobs["value"].as_array().unwrap().len(), 1, "{jobs}");
    let (st, v) = s.req("GET", "/jobs?$filter=nope%20eq%201", None);
    assert_eq!((st, code(&v)), (400, "InvalidQueryParameterValue"));
    assert!(message(&v).contains("nope"), "{v}");
    let (st, v) = s.req("GET", "/jobs/j1/tasks?maxresults=0", None);
    assert_eq!((st, code(&v)), (400, "InvalidQueryParameterValue"));

    // Pools and nodes take the same list options and conditional requests.
    let av = berth_agent::api::API_VERSION;
    assert_eq!(s.req("POST", "/pools", Some(&pool("q", 1))).0, 201);
    let pools = s.json("/pools?maxresults=1&$select=id");
    assert_eq!(pools["value"], json!([{"id": "p"}]), "{pools}");
    let link = pools["odata.nextLink"].as_str().expect("a second page");
    let rest = s.json(link.strip_prefix(&s.url).unwrap());
    assert_eq!(rest["value"], json!([{"id": "q"}]), "{rest}");
    let one = s.json("/pools?$filter=id%20eq%20'Q'%20and%20state%20eq%20'active'");
    assert_eq!(ids(&one), ["q"]);
    let (st, head, _) = s.raw(t, "GET", &format!("/pools/p?api-version={av}"), &[], None);
    assert_eq!(st, 200);
    let etag = header(&head, "etag")
        .expect("an ETag on a pool")
        .to_string();
    assert!(
        pools["value"][0].get("eTag").is_none(),
        "$select keeps only what was asked"
    );
    let (st, _, _) = s.raw(
        t,
        "GET",
        &format!("/pools/p?api-version={av}"),
        &[&format!("If-None-Match: {etag}")],
        None,
    );
    assert_eq!(st, 304);
    put_on_node(&pg, "j1", "t1", 901);
    let nodes = s.json(
        "/pools/p/nodes?$filter=state%20eq%20'running'%20and%20schedulingState%20eq%20'enabled'",
    );
    assert_eq!(ids(&nodes), ["n1"], "{nodes}");
    assert_eq!(
        nodes["value"][0]["url"],
        format!("{}/pools/p/nodes/n1", s.url)
    );
    let none = s.json("/pools/p/nodes?$filter=state%20eq%20'idle'");
    assert_eq!(ids(&none), Vec::<String>::new());
    let (st, e) = s.req("GET", "/pools/p/nodes?$filter=flavour%20eq%201", None);
    assert_eq!((st, code(&e)), (400, "InvalidQueryParameterValue"), "{e}");
    let (st, head, _) = s.raw(
        t,
        "GET",
        &format!("/pools/p/nodes/n1?api-version={av}"),
        &[],
        None,
    );
    assert_eq!(st, 200);
    assert!(header(&head, "etag").is_some(), "{head}");
}

/// The Python SDK 14.x, unchanged, with `SharedKeyCredentials` against the service (account
/// name and two keys, the second in use: a rotation): a pool, a job on it, a task, a signed
/// `$filter`; a wrong key gets Batch's 403 `AuthenticationFailed`, and no key reaches the log.
#[test]
fn the_python_sdk_signs_with_shared_key_against_the_service() {
    use base64::Engine;
    let python = berth_tests::workspace().join(".tools/azure-batch-14/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/install-deps.sh",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let key = |name: &str, byte: u8| {
        let k = base64::engine::general_purpose::STANDARD.encode([byte; 64]);
        let f = dir.path().join(name);
        std::fs::write(&f, format!("{k}\n")).unwrap();
        (k, f.display().to_string())
    };
    let (old, old_file) = key("key1", 1);
    let (new, new_file) = key("key2", 2);
    let (wrong, _) = key("key3", 3);
    let pg = Postgres::start();
    let s = Service::start_with(
        &pg.url,
        &[
            "--insecure-http",
            "--account-name",
            "berthsvc",
            "--account-key-file",
            &old_file,
            "--account-key-file",
            &new_file,
        ],
        None,
    );
    wait_ok(&s, "/pools", Duration::from_secs(20));
    let out = std::process::Command::new(&python)
        .arg(berth_tests::workspace().join("tests/sdk/service_sharedkey.py"))
        .args([s.url.as_str(), "berthsvc", &new, &wrong])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK failed: {stderr}\n{}",
        s.log()
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["pool"], json!(["skpool", 2]), "{seen}");
    assert_eq!(seen["jobs"], json!(["skjob"]), "{seen}");
    assert_eq!(seen["task"], "active", "{seen}");
    assert_eq!(
        seen["wrong_key"],
        json!([403, "AuthenticationFailed"]),
        "{seen}"
    );
    // Bearer tokens still work beside the keys.
    assert_eq!(s.json("/jobs/skjob")["id"], "skjob");
    let log = s.log();
    for k in [&old, &new, &wrong] {
        assert!(!log.contains(k.as_str()), "a key reached the log");
    }
}

/// The CLI against a service (`--service`, `--token-file`), as the README's "CLI against a
/// service" and the pool demo use it: pools, jobs and tasks, each answered by the service.
#[test]
fn the_cli_drives_a_service() {
    let pg = Postgres::start();
    let s = Service::start(&pg.url);
    wait_ok(&s, "/pools", Duration::from_secs(20));
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{}\n", berth_tests::service::CLIENT_TOKEN)).unwrap();
    let file = |name: &str, v: Value| {
        let p = dir.path().join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let cli = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(berth_tests::berth_bin())
            .args(args)
            .env("BERTH_SERVICE", &s.url)
            .env("BERTH_TOKEN_FILE", &token)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "berth {args:?}: {text}{err}");
        text
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let pool = file("pool.json", pool("clipool", 2));
    cli(&[&os("pool"), &os("add"), pool.as_os_str()]);
    assert!(cli(&[&os("pool"), &os("list")]).contains("clipool"));
    let job = file(
        "job.json",
        json!({"id": "clijob", "poolInfo": {"poolId": "clipool"}}),
    );
    cli(&[&os("job"), &os("add"), job.as_os_str()]);
    let task = file("task.json", json!({"id": "t1", "commandLine": "true"}));
    cli(&[
        &os("task"),
        &os("add"),
        &os("--job"),
        &os("clijob"),
        task.as_os_str(),
    ]);
    assert!(cli(&[&os("task"), &os("list"), &os("--job"), &os("clijob")]).contains("t1"));
    assert!(cli(&[&os("job"), &os("list")]).contains("clijob"));
}
