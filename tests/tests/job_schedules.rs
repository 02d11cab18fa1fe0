//! Job schedules through `berth agent` on a real engine: a 1-minute recurrence over agent
//! restarts (each run's job once, on time, also a run that came due while no agent
//! ran); a schedule's job running a task in a container, then terminate and delete; the
//! CLI; bad input refused naming the field.

use berth_tests::agent::Agent;
use berth_tests::*;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .with_timezone(&Utc)
}

/// The ids of the jobs schedule `id` created that still exist.
fn jobs_of(a: &Agent, id: &str) -> Vec<String> {
    let v = a.json(&format!("/jobschedules/{id}/jobs"));
    let mut ids: Vec<String> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Waits (at most `limit`) for `job` to exist; returns it.
fn wait_job(a: &Agent, job: &str, limit: Duration) -> Value {
    let t0 = Instant::now();
    loop {
        let (st, b) = a.req("GET", &format!("/jobs/{job}"), None);
        if st == 200 {
            return serde_json::from_str(&b).unwrap();
        }
        assert!(t0.elapsed() < limit, "{job} never came: {st} {b}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (60 s at most) for schedule `id` to be in `state`.
fn wait_schedule(a: &Agent, id: &str, state: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let (st, b) = a.req("GET", &format!("/jobschedules/{id}"), None);
        let v: Value = serde_json::from_str(&b).unwrap_or_default();
        if st == 200 && v["state"] == state {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{id} never became {state}: {st} {b}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sleep_until(t: DateTime<Utc>) {
    if let Ok(d) = (t - Utc::now()).to_std() {
        std::thread::sleep(d);
    }
}

/// A 1-minute recurrence over two agent restarts: the first job at once; a restart
/// before the next due time creates nothing twice, and job-2 comes at its time; a run
/// that comes due while no agent runs is created once when the next one starts.
#[test]
fn a_one_minute_schedule_over_agent_restarts() {
    let n = TestNode::new("schedrestart");
    let a = Agent::start(&n);
    let s = json!({"id": "every", "schedule": {"recurrenceInterval": "PT1M"},
        "jobSpecification": {"onAllTasksComplete": "terminatejob"}});
    let (st, b) = a.req("POST", "/jobschedules", Some(&s));
    assert_eq!(st, 201, "{b}");
    let job1 = wait_job(&a, "every:job-1", Duration::from_secs(10));
    let sch = a.json("/jobschedules/every");
    assert_eq!(sch["state"], "active");
    assert_eq!(sch["executionInfo"]["recentJob"]["id"], "every:job-1");
    let created = time(&sch["creationTime"]);
    let next = time(&sch["executionInfo"]["nextRunTime"]);
    assert_eq!(next, created + chrono::Duration::seconds(60), "{sch}");
    assert!(time(&job1["creationTime"]) >= created);
    // No task, terminatejob: the job ends at once, as Batch's does.
    let job1 = wait_job_state(&a, "every:job-1", "completed");
    assert_eq!(job1["executionInfo"]["terminateReason"], "AllTasksComplete");

    // Restart well before job-2 is due.
    assert_eq!(a.term(), Some(0));
    let a = Agent::start(&n);
    assert_eq!(jobs_of(&a, "every"), vec!["every:job-1"], "nothing twice");
    assert_eq!(
        time(&a.json("/jobschedules/every")["executionInfo"]["nextRunTime"]),
        next
    );
    let job2 = wait_job(&a, "every:job-2", Duration::from_secs(90));
    let at = time(&job2["creationTime"]);
    assert!(
        at >= next && at < next + chrono::Duration::seconds(10),
        "job-2 created at {at}, due at {next}"
    );
    assert_eq!(jobs_of(&a, "every"), vec!["every:job-1", "every:job-2"]);
    let sch = a.json("/jobschedules/every");
    assert_eq!(sch["executionInfo"]["recentJob"]["id"], "every:job-2");
    let next3 = time(&sch["executionInfo"]["nextRunTime"]);
    assert_eq!(next3, next + chrono::Duration::seconds(60));

    // Down across job-3's due time: created once, when the agent is back.
    wait_job_state(&a, "every:job-2", "completed");
    assert_eq!(a.term(), Some(0));
    sleep_until(next3 + chrono::Duration::seconds(3));
    let a = Agent::start(&n);
    let job3 = wait_job(&a, "every:job-3", Duration::from_secs(15));
    assert!(time(&job3["creationTime"]) > next3 + chrono::Duration::seconds(3));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        jobs_of(&a, "every"),
        vec!["every:job-1", "every:job-2", "every:job-3"],
        "each run once"
    );
    assert_eq!(
        time(&a.json("/jobschedules/every")["executionInfo"]["nextRunTime"]),
        next3 + chrono::Duration::seconds(60),
        "the next run stays on the schedule's grid"
    );
    assert_eq!(a.term(), Some(0));
}

fn wait_job_state(a: &Agent, job: &str, state: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let j = a.json(&format!("/jobs/{job}"));
        if j["state"] == state {
            return j;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{job} never became {state}: {j}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A schedule's job is a job like any: a task added to it runs in a container (named and
/// laid out as Batch does, `workitems/<schedule>/job-1`); terminate ends the job
/// (`TerminateJobSchedule`) and completes the schedule; delete takes its jobs and files.
/// The CLI shows and lists schedules.
#[test]
fn a_schedules_job_runs_tasks_then_terminate_and_delete() {
    let n = TestNode::new("schedjob");
    let a = Agent::start(&n);
    let cli = |args: &[&str]| {
        let out = Command::new(berth_bin())
            .args(args)
            .arg("--socket")
            .arg(&a.sock)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let file = n.file(
        "sched.json",
        &json!({"id": "work", "schedule": {}, "jobSpecification": {"priority": 5},
            "metadata": [{"name": "team", "value": "a"}]}),
    );
    let (code, out, err) = cli(&["jobschedule", "add", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    let job = wait_job(&a, "work:job-1", Duration::from_secs(10));
    assert_eq!(job["priority"], 5);
    let (st, b) = a.req(
        "POST",
        "/jobs/work:job-1/tasks",
        Some(&task("t1", "/bin/sh -c 'echo $AZ_BATCH_JOB_ID; pwd'", "")),
    );
    assert_eq!(st, 201, "{b}");
    let t = a.wait_state("work:job-1", "t1", "completed");
    assert_eq!(t["executionInfo"]["exitCode"], 0, "{t}");
    let wd = n.root().join("workitems/work/job-1/t1/wd");
    assert_eq!(
        a.req("GET", "/jobs/work:job-1/tasks/t1/files/stdout.txt", None)
            .1,
        format!("work:job-1\n{}\n", wd.display())
    );

    let (code, out, _) = cli(&["jobschedule", "list"]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with("SCHEDULE") && out.contains("work") && out.contains("work:job-1"),
        "{out}"
    );
    let (code, out, _) = cli(&["jobschedule", "show", "work", "--json"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["metadata"][0]["value"], "a");
    assert_eq!(
        v["state"], "active",
        "one job only: active until it completes"
    );
    assert!(v["executionInfo"].get("nextRunTime").is_none(), "{v}");

    let (code, out, err) = cli(&["jobschedule", "terminate", "work"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let v = wait_schedule(&a, "work", "completed");
    assert!(v["executionInfo"]["endTime"].is_string(), "{v}");
    let job = a.json("/jobs/work:job-1");
    assert_eq!(job["state"], "completed");
    assert_eq!(
        job["executionInfo"]["terminateReason"],
        "TerminateJobSchedule"
    );
    let (code, _, err) = cli(&["jobschedule", "terminate", "work"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("JobScheduleCompleted"), "{err}");

    let (code, out, err) = cli(&["jobschedule", "delete", "work"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let t0 = Instant::now();
    while a.req("GET", "/jobschedules/work", None).0 != 404 {
        assert!(t0.elapsed() < Duration::from_secs(30), "never deleted");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(a.req("GET", "/jobs/work:job-1", None).0, 404);
    assert!(!n.root().join("workitems/work").exists());
    let (code, _, err) = cli(&["jobschedule", "show", "work"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("JobScheduleNotFound"), "{err}");
    assert_eq!(a.term(), Some(0));
}

/// Bad schedules and requests are refused with Batch's codes, naming the field.
#[test]
fn bad_schedules_are_refused() {
    let n = TestNode::new("schedbad");
    let a = Agent::start(&n);
    let refused = |method: &str, path: &str, body: Value, status: u16, code: &str, names: &str| {
        let (st, b) = a.req(method, path, Some(&body));
        let v: Value = serde_json::from_str(&b).unwrap_or_default();
        assert_eq!(
            (st, v["code"].as_str()),
            (status, Some(code)),
            "{body}: {b}"
        );
        let msg = v["message"]["value"].as_str().unwrap_or_default();
        assert!(msg.contains(names), "{body}: {msg}");
    };
    let sched = |s: Value| json!({"id": "s", "schedule": s, "jobSpecification": {}});
    refused(
        "POST",
        "/jobschedules",
        sched(json!({"recurrenceInterval": "PT30S"})),
        400,
        "InvalidPropertyValue",
        "$.schedule.recurrenceInterval: PT30S is shorter than the minimum, PT1M",
    );
    refused(
        "POST",
        "/jobschedules",
        sched(json!({"startWindow": "PT10S"})),
        400,
        "InvalidPropertyValue",
        "$.schedule.startWindow",
    );
    refused(
        "POST",
        "/jobschedules",
        json!({"id": "s", "schedule": {}, "jobSpecification": {"maxParallelTasks": 0}}),
        400,
        "InvalidPropertyValue",
        "$.jobSpecification.maxParallelTasks",
    );
    refused(
        "POST",
        "/jobschedules",
        json!({"id": "a:b", "schedule": {}, "jobSpecification": {}}),
        400,
        "InvalidPropertyValue",
        "$.id",
    );
    refused(
        "POST",
        "/jobschedules",
        json!({"id": "s", "schedule": {}}),
        400,
        "InvalidRequestBody",
        "jobSpecification",
    );
    // Batch keeps ':' for the jobs of schedules.
    refused(
        "POST",
        "/jobs",
        json!({"id": "s:job-1"}),
        400,
        "InvalidPropertyValue",
        "$.id",
    );
    // A job and a schedule never share an id: both would own workitems/<id>.
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "taken"}))).0, 201);
    let taken = json!({"id": "TAKEN", "schedule": {"doNotRunUntil": "2099-01-01T00:00:00Z"},
        "jobSpecification": {}});
    refused(
        "POST",
        "/jobschedules",
        taken,
        409,
        "JobScheduleExists",
        "job",
    );
    let later = json!({"id": "later", "schedule": {"doNotRunUntil": "2099-01-01T00:00:00Z",
        "recurrenceInterval": "PT1M"}, "jobSpecification": {}});
    assert_eq!(a.req("POST", "/jobschedules", Some(&later)).0, 201);
    refused(
        "POST",
        "/jobschedules",
        later,
        409,
        "JobScheduleExists",
        "later",
    );
    refused(
        "POST",
        "/jobs",
        json!({"id": "Later"}),
        409,
        "JobExists",
        "job schedule",
    );
    let v = a.json("/jobschedules/later");
    assert_eq!(v["executionInfo"]["nextRunTime"], "2099-01-01T00:00:00Z");
    assert!(v["executionInfo"].get("recentJob").is_none(), "{v}");
    assert_eq!(
        a.json("/jobschedules")["value"].as_array().unwrap().len(),
        1
    );

    // Updates: PATCH names what it cannot change; PUT needs schedule and jobSpecification.
    refused(
        "PATCH",
        "/jobschedules/later",
        json!({"displayName": "x"}),
        400,
        "InvalidRequestBody",
        "$.displayName",
    );
    refused(
        "PATCH",
        "/jobschedules/later",
        json!({"schedule": {"recurrenceInterval": "PT59S"}}),
        400,
        "InvalidPropertyValue",
        "$.schedule.recurrenceInterval",
    );
    refused(
        "PUT",
        "/jobschedules/later",
        json!({"schedule": {}}),
        400,
        "MissingRequiredProperty",
        "jobSpecification",
    );
    let (st, b) = a.req(
        "PATCH",
        "/jobschedules/later",
        Some(&json!({"schedule": {"doNotRunUntil": "2098-01-01T00:00:00Z", "recurrenceInterval": "PT2M"},
            "metadata": [{"name": "k", "value": "v"}]})),
    );
    assert_eq!(st, 200, "{b}");
    let v = a.json("/jobschedules/later");
    assert_eq!(v["executionInfo"]["nextRunTime"], "2098-01-01T00:00:00Z");
    assert_eq!(v["schedule"]["recurrenceInterval"], "PT2M");
    assert_eq!(v["metadata"][0]["name"], "k");
    let (st, b) = a.req(
        "PUT",
        "/jobschedules/later",
        Some(&json!({"schedule": {"doNotRunUntil": "2097-01-01T00:00:00Z"}, "jobSpecification": {"priority": 3}})),
    );
    assert_eq!(st, 200, "{b}");
    let v = a.json("/jobschedules/later");
    assert!(
        v.get("metadata").is_none(),
        "PUT clears metadata left out: {v}"
    );
    assert_eq!(v["jobSpecification"]["priority"], 3);

    // Disable and enable: 204; disabled, no next run is reported.
    assert_eq!(a.req("POST", "/jobschedules/later/disable", None).0, 204);
    let v = a.json("/jobschedules/later");
    assert_eq!(v["state"], "disabled");
    assert!(v["executionInfo"].get("nextRunTime").is_none(), "{v}");
    assert_eq!(a.req("POST", "/jobschedules/later/enable", None).0, 204);
    assert_eq!(a.json("/jobschedules/later")["state"], "active");

    for (method, path) in [
        ("GET", "/jobschedules/nope"),
        ("GET", "/jobschedules/nope/jobs"),
        ("POST", "/jobschedules/nope/disable"),
        ("POST", "/jobschedules/nope/terminate"),
        ("DELETE", "/jobschedules/nope"),
    ] {
        let (st, b) = a.req(method, path, None);
        assert_eq!(st, 404, "{method} {path}: {b}");
        assert!(b.contains("JobScheduleNotFound"), "{b}");
    }
    assert_eq!(a.head("/jobschedules/later").0, 200, "Batch's exists check");
    assert_eq!(a.head("/jobschedules/nope").0, 404);
    assert_eq!(a.term(), Some(0));
}
