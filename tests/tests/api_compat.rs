//! What Batch's SDKs read and send, through `berth agent`: `$filter` (Batch's grammar,
//! refused by name), `$select`, `maxresults` paging by `odata.nextLink`, `odata.metadata`;
//! `request-id` and `client-request-id`; `ETag`, `Last-Modified` and the conditional
//! headers; `Location` and `DataServiceId` on create; `api-version` required and checked;
//! 405 with Batch's body.

use berth_tests::agent::{versioned, Agent};
use berth_tests::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The response header `name` (lower case) of a raw response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn ids(list: &Value) -> Vec<String> {
    list["value"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// A GET's body as JSON, asserting 200.
fn get(a: &Agent, path: &str) -> Value {
    a.json(path)
}

/// Every id of a list, following `odata.nextLink` as the SDKs do (the link as given).
fn all_pages(a: &Agent, first: &str) -> (Vec<String>, usize) {
    let mut page = get(a, first);
    let mut seen = ids(&page);
    let mut pages = 1;
    while let Some(next) = page["odata.nextLink"].as_str() {
        let path = next
            .strip_prefix("http://berth")
            .unwrap_or_else(|| panic!("{next}"));
        page = get(a, path);
        seen.extend(ids(&page));
        pages += 1;
    }
    (seen, pages)
}

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["code"].as_str().unwrap_or("").to_string()
}

/// Jobs need no engine: filters, select, paging, and the errors naming the problem.
#[test]
fn job_lists_filter_select_and_page() {
    let n = TestNode::new("compatjobs");
    let a = Agent::start(&n);
    for i in 0..7 {
        let job = json!({"id": format!("job-{i}"), "priority": i * 100});
        assert_eq!(a.req("POST", "/jobs", Some(&job)).0, 201);
    }
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "other"}))).0, 201);
    assert_eq!(
        a.req("POST", "/jobs/job-6/terminate", Some(&json!({}))).0,
        202
    );

    // Batch's grammar: comparisons, and/or/not, parentheses, startswith, datetimes.
    let q = |f: &str| {
        let path = format!(
            "/jobs?$filter={}",
            f.replace(' ', "%20").replace('\'', "%27")
        );
        let mut v = ids(&get(&a, &path));
        v.sort();
        v
    };
    assert_eq!(q("id eq 'job-3'"), ["job-3"]);
    assert_eq!(q("id eq 'JOB-3'"), ["job-3"], "ids ignore case");
    assert_eq!(
        q("priority ge 400 and state eq 'active'"),
        ["job-4", "job-5"]
    );
    assert_eq!(q("priority lt 100 or id eq 'other'"), ["job-0", "other"]);
    assert_eq!(q("not startswith(id, 'job-')"), ["other"]);
    assert_eq!(q("state eq 'completed'"), ["job-6"]);
    assert_eq!(
        q("(state eq 'completed' or priority eq 500) and startswith(id,'job')"),
        ["job-5", "job-6"]
    );
    assert_eq!(q("creationTime gt datetime'2000-01-01T00:00:00Z'").len(), 8);
    assert_eq!(q("creationTime lt 2000-01-01T00:00:00Z").len(), 0);

    // Refused with Batch's 400, naming the problem.
    for (f, says) in [
        ("nosuch eq 'x'", "unknown property 'nosuch' for jobs"),
        ("state eq 'done'", "'done' is not a value of 'state'"),
        (
            "priority eq",
            "at position 11: expected a property or a value",
        ),
        (
            "id eq 'x' id",
            "at position 10: expected a logical operator",
        ),
    ] {
        let path = format!(
            "/jobs?$filter={}",
            f.replace(' ', "%20").replace('\'', "%27")
        );
        let (st, b) = a.req("GET", &path, None);
        assert_eq!(st, 400, "{f}: {b}");
        assert_eq!(error_code(&b), "InvalidQueryParameterValue", "{b}");
        assert!(b.contains(says), "{f}: {b}");
    }

    // $select and odata.metadata; url, eTag and lastModified on every item.
    let all = get(&a, "/jobs");
    assert_eq!(all["odata.metadata"], "http://berth/$metadata#jobs");
    let first = &all["value"][0];
    assert_eq!(first["url"], "http://berth/jobs/job-0", "{first}");
    assert!(first["eTag"].as_str().unwrap().starts_with("0x"), "{first}");
    assert!(first["lastModified"].is_string(), "{first}");
    let sel = get(&a, "/jobs?$select=id,state&$filter=id%20eq%20'job-1'");
    assert_eq!(sel["value"][0], json!({"id": "job-1", "state": "active"}));

    // maxresults pages through odata.nextLink, which keeps the filter.
    let (seen, pages) = all_pages(&a, "/jobs?maxresults=3");
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 8);
    let (seen, pages) = all_pages(
        &a,
        "/jobs?maxresults=2&$filter=startswith(id,%27job-%27)%20and%20priority%20gt%20100",
    );
    assert_eq!(
        (seen, pages),
        (
            vec!["job-2", "job-3", "job-4", "job-5", "job-6"]
                .into_iter()
                .map(String::from)
                .collect(),
            3
        )
    );
    for bad in [
        "maxresults=0",
        "maxresults=1001",
        "maxresults=x",
        "$skiptoken=%21",
    ] {
        let (st, b) = a.req("GET", &format!("/jobs?{bad}"), None);
        assert_eq!(
            (st, error_code(&b)),
            (400, "InvalidQueryParameterValue".into()),
            "{bad}: {b}"
        );
    }
    // The CLI follows the links too (its list is every job).
    let out = std::process::Command::new(berth_bin())
        .args(["job", "list", "--json", "--socket"])
        .arg(&a.sock)
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(listed.as_array().map(Vec::len), Some(8), "{listed}");
}

/// Every response has a request-id; client-request-id is echoed only when asked.
#[test]
fn request_ids_and_client_request_ids() {
    let n = TestNode::new("compatids");
    let a = Agent::start(&n);
    let (st, head, _) = a.request("GET", "/jobs", &[]);
    assert_eq!(st, 200);
    let id = header(&head, "request-id").unwrap_or_else(|| panic!("{head}"));
    assert_eq!((id.len(), &id[14..15]), (36, "4"), "a UUID v4: {id}");
    let (_, head2, _) = a.request("GET", "/nosuchpath", &[]);
    assert_ne!(header(&head2, "request-id"), Some(id), "{head2}");
    let mine = "9f6c1c4e-0000-4000-8000-000000000001";
    let (_, head, _) = a.request(
        "GET",
        "/jobs",
        &[
            ("client-request-id", mine),
            ("return-client-request-id", "true"),
        ],
    );
    assert_eq!(header(&head, "client-request-id"), Some(mine), "{head}");
    let (_, head, _) = a.request("GET", "/jobs", &[("client-request-id", mine)]);
    assert_eq!(header(&head, "client-request-id"), None, "{head}");
    // Errors have one too, and berth's own paths.
    let (st, head, _) = a.request("GET", "/jobs/none", &[]);
    assert_eq!(st, 404);
    assert!(header(&head, "request-id").is_some(), "{head}");
    let (_, head, _) = a.exact("GET", "/node", &[], b"");
    assert!(header(&head, "request-id").is_some(), "{head}");
}

/// ETag and Last-Modified on GETs, honoured by If-Match and friends; Location and
/// DataServiceId on creates.
#[test]
fn etags_and_conditional_requests() {
    let n = TestNode::new("compatetag");
    let a = Agent::start(&n);
    let body = json!({"id": "cj", "priority": 1}).to_string();
    let (st, head, _) = a.exact(
        "POST",
        &versioned("/jobs"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(st, 201, "{head}");
    assert_eq!(
        header(&head, "location"),
        Some("http://berth/jobs/cj"),
        "{head}"
    );
    assert_eq!(
        header(&head, "dataserviceid"),
        Some("http://berth/jobs/cj"),
        "{head}"
    );
    let created_tag = header(&head, "etag").unwrap().to_string();

    let (st, head, b) = a.request("GET", "/jobs/cj", &[]);
    assert_eq!(st, 200);
    let etag = header(&head, "etag").unwrap().to_string();
    assert_eq!(etag, created_tag);
    let last = header(&head, "last-modified").unwrap().to_string();
    assert!(last.ends_with(" GMT"), "{last}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["eTag"], etag.as_str());
    assert_eq!(v["url"], "http://berth/jobs/cj");
    assert_eq!(v["odata.metadata"], "http://berth/$metadata#jobs/@Element");

    // A GET the client already has: 304, no body.
    let (st, _, b) = a.request("GET", "/jobs/cj", &[("If-None-Match", &etag)]);
    assert_eq!((st, b.as_str()), (304, ""));
    let (st, _, _) = a.request("GET", "/jobs/cj", &[("If-Modified-Since", &last)]);
    assert_eq!(st, 304);
    let (st, _, _) = a.request("GET", "/jobs/cj", &[("If-None-Match", "0x0")]);
    assert_eq!(st, 200);
    let (st, _, b) = a.request("GET", "/jobs/cj?$select=id,priority", &[]);
    assert_eq!(
        (
            st,
            serde_json::from_str::<Value>(&b).unwrap()["priority"].clone()
        ),
        (200, json!(1))
    );

    // A PATCH with a stale ETag: 412 ConditionNotMet, nothing changed.
    let patch = |tag: &str, priority: i32| {
        let body = json!({"priority": priority}).to_string();
        a.exact(
            "PATCH",
            &versioned("/jobs/cj"),
            &[("Content-Type", "application/json"), ("If-Match", tag)],
            body.as_bytes(),
        )
    };
    let (st, head, _) = patch(&etag, 5);
    assert_eq!(st, 200, "{head}");
    let new_tag = header(&head, "etag").unwrap().to_string();
    assert_ne!(new_tag, etag, "a write changes the ETag");
    let (st, _, b) = patch(&etag, 9);
    assert_eq!((st, error_code(&b)), (412, "ConditionNotMet".into()), "{b}");
    assert_eq!(get(&a, "/jobs/cj")["priority"], 5);
    let (st, _, b) = a.exact(
        "POST",
        &versioned("/jobs/cj/disable"),
        &[
            ("Content-Type", "application/json"),
            ("If-Unmodified-Since", "Sat, 01 Jan 2000 00:00:00 GMT"),
        ],
        br#"{"disableTasks":"wait"}"#,
    );
    assert_eq!((st, error_code(&b)), (412, "ConditionNotMet".into()), "{b}");
    let (st, _, b) = a.exact(
        "DELETE",
        &versioned("/jobs/cj"),
        &[("If-Match", "0x1234")],
        b"",
    );
    assert_eq!((st, error_code(&b)), (412, "ConditionNotMet".into()), "{b}");
    let (st, _, _) = a.exact(
        "DELETE",
        &versioned("/jobs/cj"),
        &[("If-Match", &new_tag)],
        b"",
    );
    assert_eq!(st, 202);

    // Job schedules: the same headers.
    let sch = json!({"id": "cs", "schedule": {"recurrenceInterval": "PT1H", "doNotRunUntil": "2999-01-01T00:00:00Z"},
                     "jobSpecification": {}})
    .to_string();
    let (st, head, b) = a.exact(
        "POST",
        &versioned("/jobschedules"),
        &[("Content-Type", "application/json")],
        sch.as_bytes(),
    );
    assert_eq!(st, 201, "{b}");
    assert_eq!(
        header(&head, "location"),
        Some("http://berth/jobschedules/cs")
    );
    let (_, head, _) = a.request("GET", "/jobschedules/cs", &[]);
    let tag = header(&head, "etag").unwrap().to_string();
    let (st, _, _) = a.request("GET", "/jobschedules/cs", &[("If-None-Match", &tag)]);
    assert_eq!(st, 304);
    // An update moves Last-Modified on (HTTP dates have whole seconds).
    let (_, head, _) = a.request("GET", "/jobschedules/cs", &[]);
    let before = header(&head, "last-modified").unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1100));
    let patch = |body: &[u8]| {
        a.exact(
            "PATCH",
            &versioned("/jobschedules/cs"),
            &[
                ("Content-Type", "application/json"),
                ("If-Unmodified-Since", &before),
            ],
            body,
        )
    };
    let (st, _, b) = patch(br#"{"metadata": [{"name": "k", "value": "v"}]}"#);
    assert_eq!(st, 200, "{b}");
    let (st, _, b) = patch(br#"{"metadata": []}"#);
    assert_eq!((st, error_code(&b)), (412, "ConditionNotMet".into()), "{b}");
    let (st, _, b) = a.exact(
        "POST",
        &versioned("/jobschedules/cs/disable"),
        &[("If-Match", "0x0")],
        b"",
    );
    assert_eq!((st, error_code(&b)), (412, "ConditionNotMet".into()), "{b}");
    let list = get(
        &a,
        "/jobschedules?$filter=state%20eq%20%27active%27&$select=id",
    );
    assert_eq!(list["value"], json!([{"id": "cs"}]));
}

/// api-version: required on Batch's paths and checked; berth's own paths need none; a
/// method a path does not allow is 405 with Batch's body.
#[test]
fn api_versions_and_methods() {
    let n = TestNode::new("compatversion");
    let a = Agent::start(&n);
    let (st, _, b) = a.exact("GET", "/jobs", &[], b"");
    assert_eq!(
        (st, error_code(&b)),
        (400, "MissingRequiredQueryParameter".into()),
        "{b}"
    );
    assert!(b.contains("api-version"), "{b}");
    let (st, _, b) = a.exact("GET", "/jobs?api-version=2012-01-01.1.0", &[], b"");
    assert_eq!(
        (st, error_code(&b)),
        (400, "InvalidQueryParameterValue".into()),
        "{b}"
    );
    assert!(b.contains("2012-01-01.1.0"), "{b}");
    for v in [
        "2023-05-01.17.0",
        "2024-02-01.19.0",
        "2024-07-01.20.0",
        "2025-06-01",
    ] {
        let (st, _, b) = a.exact("GET", &format!("/jobs?api-version={v}"), &[], b"");
        assert_eq!(st, 200, "{v}: {b}");
    }
    assert_eq!(a.exact("GET", "/node", &[], b"").0, 200);
    assert_eq!(a.exact("GET", "/metrics", &[], b"").0, 200);

    let (st, head, b) = a.request("PUT", "/jobs", &[]);
    assert_eq!(
        (st, error_code(&b)),
        (405, "UnsupportedHttpVerb".into()),
        "{b}"
    );
    assert!(header(&head, "allow").is_some(), "{head}");
    let (st, _, b) = a.request("DELETE", "/jobs/x/tasks", &[]);
    assert_eq!(
        (st, error_code(&b)),
        (405, "UnsupportedHttpVerb".into()),
        "{b}"
    );
}

/// Task lists on a real engine: filters on executionInfo, paging, select; a task's
/// files as a Batch list, and a file's Batch headers.
#[test]
fn task_lists_filter_on_execution_info() {
    images();
    let n = TestNode::new("compattasks");
    let a = Agent::start(&n);
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "tj"}))).0, 201);
    let tasks: Vec<Value> = (0..5)
        .map(|i| {
            task(
                &format!("t{i}"),
                &format!("/bin/sh -c 'exit {}'", i % 3),
                "",
            )
        })
        .collect();
    let (st, b) = a.req(
        "POST",
        "/jobs/tj/addtaskcollection",
        Some(&json!({"value": tasks})),
    );
    assert_eq!(st, 200, "{b}");
    let t0 = Instant::now();
    while ids(&get(
        &a,
        "/jobs/tj/tasks?$filter=state%20eq%20%27completed%27",
    ))
    .len()
        < 5
    {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the tasks never completed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let q = |f: &str| {
        let mut v = ids(&get(
            &a,
            &format!(
                "/jobs/tj/tasks?$filter={}",
                f.replace(' ', "%20").replace('\'', "%27")
            ),
        ));
        v.sort();
        v
    };
    assert_eq!(q("executionInfo/exitCode eq 0"), ["t0", "t3"]);
    assert_eq!(
        q("executionInfo/exitCode gt 0 and executionInfo/exitCode le 1"),
        ["t1", "t4"]
    );
    assert_eq!(q("executionInfo/result eq 'failure'"), ["t1", "t2", "t4"]);
    assert_eq!(
        q("executionInfo/endTime ge executionInfo/startTime").len(),
        5
    );
    let (st, b) = a.req(
        "GET",
        "/jobs/tj/tasks?$filter=executionInfo/exitCode%20eq%20%27x%27",
        None,
    );
    assert_eq!(st, 400, "{b}");
    assert!(b.contains("'executionInfo/exitCode' is an integer"), "{b}");
    let (seen, pages) = all_pages(&a, "/jobs/tj/tasks?maxresults=2&$select=id");
    assert_eq!((seen.len(), pages), (5, 3));
    let page = get(&a, "/jobs/tj/tasks?maxresults=2&$select=id");
    assert_eq!(page["odata.metadata"], "http://berth/$metadata#tasks");
    assert_eq!(page["value"][0], json!({"id": "t0"}));
    // A task's files: a Batch list too, and Batch's file headers.
    let files = get(
        &a,
        "/jobs/tj/tasks/t0/files?$filter=startswith(name,%27std%27)&maxresults=1",
    );
    assert_eq!(files["value"][0]["name"], "stderr.txt", "{files}");
    assert_eq!(
        files["value"][0]["url"],
        "http://berth/jobs/tj/tasks/t0/files/stderr.txt"
    );
    let next = files["odata.nextLink"].as_str().unwrap();
    let rest = get(&a, next.strip_prefix("http://berth").unwrap());
    assert_eq!(rest["value"][0]["name"], "stdout.txt", "{rest}");
    assert!(rest.get("odata.nextLink").is_none(), "{rest}");
    let (st, head, _) = a.request("GET", "/jobs/tj/tasks/t0/files/stdout.txt", &[]);
    assert_eq!(st, 200, "{head}");
    assert_eq!(
        header(&head, "ocp-batch-file-url"),
        Some("http://berth/jobs/tj/tasks/t0/files/stdout.txt")
    );
    assert!(header(&head, "ocp-batch-file-mode").is_some(), "{head}");
    assert!(
        header(&head, "ocp-creation-time").is_some_and(|t| t.ends_with(" GMT")),
        "{head}"
    );
    assert!(header(&head, "last-modified").is_some(), "{head}");

    let (st, head, _) = a.request("GET", "/jobs/tj/tasks/t0", &[]);
    assert_eq!(st, 200);
    let tag = header(&head, "etag").unwrap().to_string();
    let (st, _, b) = a.exact(
        "POST",
        &versioned("/jobs/tj/tasks/t1/reactivate"),
        &[("If-Match", &tag)],
        b"",
    );
    assert_eq!(
        (st, error_code(&b)),
        (412, "ConditionNotMet".into()),
        "t0's tag is not t1's: {b}"
    );
}

/// The Python SDK 14.x (`azure-batch==14.2.0`, msrest), unchanged, with a bearer token on
/// the TCP API: jobs added, a filtered list paged one job at a time through
/// `odata.nextLink`, `eTag`/`lastModified`/`url`, a stale `If-Match` refused, a bad filter
/// refused by name. `scripts/install-deps.sh` makes its virtual environment.
#[test]
fn the_python_sdk_lists_filtered_jobs_with_a_token() {
    let python = workspace().join(".tools/azure-batch-14/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/install-deps.sh (it installs azure-batch 14.2.0 there)",
        python.display()
    );
    let n = TestNode::new("compatsdk");
    let token = "sdk-token-0123456789abcdef";
    let tf = n.dir.path().join("token");
    std::fs::write(&tf, format!("{token}\n")).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let _a = Agent::start_with(
        &n,
        &[
            ("BERTH_TCP_ADDRESS", addr.as_str()),
            ("BERTH_TOKEN_FILE", tf.to_str().unwrap()),
        ],
    );
    let out = std::process::Command::new(&python)
        .arg(workspace().join("tests/sdk/batch14.py"))
        .arg(format!("http://{addr}"))
        .arg(token)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the SDK failed: {stderr}");
    let seen: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(
        seen["listed"],
        json!([["sdk-2", 20], ["sdk-3", 30], ["sdk-4", 40]]),
        "{seen}"
    );
    let etag = seen["etag"].as_str().unwrap();
    assert!(etag.starts_with("0x"), "{seen}");
    assert_eq!(seen["etag_header"], etag);
    assert!(seen["last_modified"].is_string(), "{seen}");
    assert_eq!(seen["url"], format!("http://{addr}/jobs/sdk-1"));
    assert_eq!(
        seen["request_id"].as_str().map(str::len),
        Some(36),
        "{seen}"
    );
    assert_eq!(seen["stale_patch"], "ConditionNotMet", "{seen}");
    assert_eq!(seen["priority_after"], 99);
    assert_eq!(seen["bad_filter"], "InvalidQueryParameterValue");
    assert!(
        seen["bad_filter_message"]
            .as_str()
            .unwrap()
            .contains("unknown property 'nosuch' for jobs"),
        "{seen}"
    );
    assert_eq!(
        seen["after_delete"],
        json!(["sdk-0", "sdk-1", "sdk-2", "sdk-3", "sdk-4"])
    );
}

/// A base64 account key of `byte`s, in a file of mode 0600; (the key, the file).
fn account_key(n: &TestNode, name: &str, byte: u8) -> (String, std::path::PathBuf) {
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;
    let key = base64::engine::general_purpose::STANDARD.encode([byte; 64]);
    let f = n.dir.path().join(name);
    std::fs::write(&f, format!("{key}\n")).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    (key, f)
}

/// The Python SDK 14.x, unchanged, with `SharedKeyCredentials` on the TCP API (no bearer
/// token configured): jobs added, a container task added and polled to its exit code, a
/// filtered list paged by `odata.nextLink` (signed query parameters), `If-None-Match`; the
/// second of two keys (a rotation) works, and a wrong key is Batch's 403
/// `AuthenticationFailed` naming the signature, the key never in the log.
#[test]
fn the_python_sdk_signs_with_shared_key() {
    images();
    let python = workspace().join(".tools/azure-batch-14/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/install-deps.sh",
        python.display()
    );
    let n = TestNode::new("compatsk");
    let (old, old_file) = account_key(&n, "key1", 1);
    let (key, key_file) = account_key(&n, "key2", 2);
    let (wrong, _) = account_key(&n, "key3", 3);
    let files = format!("{},{}", old_file.display(), key_file.display());
    let addr = format!("127.0.0.1:{}", free_port());
    let a = Agent::start_with(
        &n,
        &[
            ("BERTH_TCP_ADDRESS", addr.as_str()),
            ("BERTH_ACCOUNT_NAME", "berthnode"),
            ("BERTH_ACCOUNT_KEY_FILES", files.as_str()),
        ],
    );
    let out = std::process::Command::new(&python)
        .arg(workspace().join("tests/sdk/batch14_sharedkey.py"))
        .args([&format!("http://{addr}"), "berthnode", &key, &wrong])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the SDK failed: {stderr}");
    let seen: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(seen["listed"], json!(["sk-0", "sk-1", "sk-2"]), "{seen}");
    assert_eq!(
        (&seen["task_state"], &seen["exit_code"]),
        (&json!("completed"), &json!(3)),
        "{seen}"
    );
    assert_eq!(seen["not_modified"], 304, "{seen}");
    assert_eq!(seen["pool"], json!(["agentpool", [n.node_id]]), "{seen}");
    assert!(seen["node_state"].is_string(), "{seen}");
    assert_eq!(seen["node_counts"], json!([["agentpool", 1]]), "{seen}");
    assert_eq!(seen["task_counts"], json!([1, 1]), "{seen}");
    assert_eq!(
        seen["wrong_key"],
        json!([403, "AuthenticationFailed"]),
        "{seen}"
    );
    let detail = seen["wrong_key_detail"][0].as_str().unwrap_or("");
    assert!(
        detail.contains("is not the same as any computed signature")
            && detail.contains("/berthnode/jobs\napi-version:"),
        "{seen}"
    );
    let log = std::fs::read_to_string(&a.log).unwrap();
    for k in [&old, &key, &wrong] {
        assert!(!log.contains(k.as_str()), "a key reached the log");
    }
}

/// Runs `openssl` with `args` (split on blanks) in `dir`, asserting success.
fn openssl(dir: &std::path::Path, args: &str) {
    let out = std::process::Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("openssl (Debian's openssl package) runs");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA (`ca.pem`) and two server certificates it signed for 127.0.0.1,
/// `berth-one.{pem,key}` and `berth-two.{pem,key}` (P-256, with the extensions a strict
/// verifier such as Python 3.13's wants).
fn test_certificates(dir: &std::path::Path) {
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(
        dir,
        &format!(
            "req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=berth-test-ca \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
        ),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n",
    )
    .unwrap();
    for name in ["berth-one", "berth-two"] {
        openssl(
            dir,
            &format!("req {ec} -keyout {name}.key -out {name}.csr -subj /CN={name}"),
        );
        openssl(
            dir,
            &format!(
                "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                 -out {name}.pem -days 2 -extfile server.ext"
            ),
        );
    }
}

/// The subject of the certificate `addr` serves.
fn served_subject(addr: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -subject"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `curl` of `path` on `base` trusting only `ca`, with a bearer `token`; (status, body),
/// status 0 when no HTTP answer came.
fn curl(base: &str, ca: &std::path::Path, token: &str, path: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(ca)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("{base}{}", versioned(path)))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The TCP API over TLS (rustls, the certificate and key files of the configuration): an
/// HTTPS client that trusts the test CA is served; plain HTTP on that port gets no answer;
/// after the files are replaced and SIGHUP, new connections get the new certificate.
#[test]
fn tls_on_the_tcp_api_and_a_new_certificate_on_sighup() {
    let n = TestNode::new("compattls");
    let d = n.dir.path();
    test_certificates(d);
    let (cert, key) = (d.join("tls.pem"), d.join("tls.key"));
    std::fs::copy(d.join("berth-one.pem"), &cert).unwrap();
    std::fs::copy(d.join("berth-one.key"), &key).unwrap();
    let token = "tls-token-0123456789abcdef";
    let tf = d.join("token");
    std::fs::write(&tf, format!("{token}\n")).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let a = Agent::start_with(
        &n,
        &[
            ("BERTH_TCP_ADDRESS", addr.as_str()),
            ("BERTH_TOKEN_FILE", tf.to_str().unwrap()),
            ("BERTH_TLS_CERT_FILE", cert.to_str().unwrap()),
            ("BERTH_TLS_KEY_FILE", key.to_str().unwrap()),
        ],
    );
    let base = format!("https://{addr}");
    let ca = d.join("ca.pem");
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "tj"}))).0, 201);
    let (st, body) = curl(&base, &ca, token, "/jobs");
    assert_eq!(st, 200, "{body}");
    assert_eq!(ids(&serde_json::from_str(&body).unwrap()), ["tj"]);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["value"][0]["url"],
        format!("https://{addr}/jobs/tj"),
        "URLs say https"
    );
    assert!(
        served_subject(&addr).contains("berth-one"),
        "{}",
        served_subject(&addr)
    );
    let (st, _) = curl(&format!("http://{addr}"), &ca, token, "/jobs");
    assert_eq!(st, 0, "plain HTTP on the TLS port is not answered");

    // A renewed certificate: the files replaced, then SIGHUP.
    std::fs::copy(d.join("berth-two.pem"), &cert).unwrap();
    std::fs::copy(d.join("berth-two.key"), &key).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let t0 = Instant::now();
    while !served_subject(&addr).contains("berth-two") {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "still served after SIGHUP: {}",
            served_subject(&addr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(curl(&base, &ca, token, "/jobs/tj").0, 200);
    // A broken file on the next SIGHUP keeps the certificate in use.
    std::fs::write(&cert, "not a certificate").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(served_subject(&addr).contains("berth-two"));
    assert_eq!(curl(&base, &ca, token, "/jobs/tj").0, 200);
}

/// The Python SDK 15.x (`azure-batch==15.1.0`, azure-core), unchanged, over HTTPS (its token
/// credential refuses plain HTTP): once with a token credential, once with
/// `AzureNamedKeyCredential` (SharedKey): a job with preparation and release tasks, a task
/// and a task collection polled to completion, a filtered list paged by `odata.nextLink`,
/// a task's files (list, read, properties), the preparation task's status, the pool, node
/// and counts, a terminate and the long-running delete; a wrong key refused.
#[test]
fn the_python_sdk_15_over_https_with_a_token_and_with_shared_key() {
    images();
    let python = workspace().join(".tools/azure-batch-15/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/install-deps.sh (it installs azure-batch 15.1.0 there)",
        python.display()
    );
    let n = TestNode::new("compatsdk15");
    let d = n.dir.path();
    test_certificates(d);
    let token = "sdk15-token-0123456789abcdef";
    let tf = d.join("token");
    std::fs::write(&tf, format!("{token}\n")).unwrap();
    let (key, key_file) = account_key(&n, "key1", 5);
    let (wrong, _) = account_key(&n, "key2", 6);
    let addr = format!("127.0.0.1:{}", free_port());
    let _a = Agent::start_with(
        &n,
        &[
            ("BERTH_TCP_ADDRESS", addr.as_str()),
            ("BERTH_TOKEN_FILE", tf.to_str().unwrap()),
            ("BERTH_ACCOUNT_NAME", "berthnode"),
            ("BERTH_ACCOUNT_KEY_FILES", key_file.to_str().unwrap()),
            (
                "BERTH_TLS_CERT_FILE",
                d.join("berth-one.pem").to_str().unwrap(),
            ),
            (
                "BERTH_TLS_KEY_FILE",
                d.join("berth-one.key").to_str().unwrap(),
            ),
        ],
    );
    let ca = d.join("ca.pem");
    let run = |args: &[&str]| -> Value {
        let out = std::process::Command::new(&python)
            .arg(workspace().join("tests/sdk/batch15.py"))
            .arg(format!("https://{addr}"))
            .arg(&ca)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the SDK failed: {stderr}");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    for (mode, seen) in [
        ("token", run(&["token", token])),
        ("sharedkey", run(&["sharedkey", "berthnode", &key, &wrong])),
    ] {
        let p = format!("b15{mode}-");
        assert_eq!(
            seen["listed"],
            json!([format!("{p}0"), format!("{p}1"), format!("{p}2")]),
            "{seen}"
        );
        assert_eq!(
            (&seen["task_state"], &seen["exit_code"]),
            (&json!("completed"), &json!(4)),
            "{seen}"
        );
        assert_eq!(
            seen["after_delete"],
            json!([format!("{p}0"), format!("{p}1")]),
            "{seen}"
        );
        if mode == "sharedkey" {
            assert_eq!(
                seen["wrong_key"],
                json!([403, "AuthenticationFailed"]),
                "{seen}"
            );
        }
    }
}

/// The node's pool and node on Batch's paths, in Batch's shapes: `/pools` (the one pool),
/// `/pools/{pool}`, `/pools/{pool}/nodes[/{node}]`, `/nodecounts`, and a job's
/// `taskcounts` with its slot counts; list options on the lists, 404s naming what is not
/// here.
#[test]
fn pool_node_and_count_paths() {
    images();
    let n = TestNode::new("compatpools");
    let a = Agent::start(&n);
    let pools = get(&a, "/pools");
    assert_eq!(ids(&pools), ["agentpool"]);
    assert_eq!(pools["odata.metadata"], "http://berth/$metadata#pools");
    let p = &pools["value"][0];
    assert_eq!(
        (&p["state"], &p["allocationState"], &p["taskSlotsPerNode"]),
        (&json!("active"), &json!("steady"), &json!(4)),
        "{p}"
    );
    assert_eq!(p["currentDedicatedNodes"], 1);
    assert_eq!(p["url"], "http://berth/pools/agentpool");
    assert!(p["eTag"].as_str().unwrap().starts_with("0x"), "{p}");
    assert_eq!(
        get(&a, "/pools/AGENTPOOL?$select=id,state"),
        json!({"id": "agentpool", "state": "active", "odata.metadata": "http://berth/$metadata#pools/@Element"})
    );
    assert_eq!(
        ids(&get(&a, "/pools?$filter=id%20eq%20%27other%27")),
        Vec::<String>::new()
    );
    let (st, b) = a.req("GET", "/pools/other", None);
    assert_eq!((st, error_code(&b)), (404, "PoolNotFound".into()), "{b}");

    // Pool start over: the node's state holds still while it is compared with the counts.
    a.wait_node("idle");
    let nodes = get(&a, "/pools/agentpool/nodes");
    assert_eq!(ids(&nodes), [n.node_id.as_str()]);
    let node = &nodes["value"][0];
    assert_eq!(node["isDedicated"], true, "{node}");
    assert_eq!(
        node["url"],
        format!("http://berth/pools/agentpool/nodes/{}", n.node_id)
    );
    let one = get(&a, &format!("/pools/agentpool/nodes/{}", n.node_id));
    assert_eq!(
        (&one["id"], &one["poolId"]),
        (&json!(n.node_id), &json!("agentpool"))
    );
    let (st, b) = a.req("GET", "/pools/agentpool/nodes/other", None);
    assert_eq!((st, error_code(&b)), (404, "NodeNotFound".into()), "{b}");
    let (st, b) = a.req(
        "GET",
        "/pools/agentpool/nodes?$filter=nosuch%20eq%201",
        None,
    );
    assert_eq!(
        (st, error_code(&b)),
        (400, "InvalidQueryParameterValue".into()),
        "{b}"
    );
    let (st, _) = a.req("DELETE", "/pools/agentpool", None);
    assert_eq!(st, 405);

    let counts = get(&a, "/nodecounts");
    let c = &counts["value"][0];
    assert_eq!(c["poolId"], "agentpool", "{counts}");
    assert_eq!(
        (&c["dedicated"]["total"], &c["lowPriority"]["total"]),
        (&json!(1), &json!(0))
    );
    let state = one["state"].as_str().unwrap();
    let key = match state {
        "waitingforstarttask" => "waitingForStartTask",
        "starttaskfailed" => "startTaskFailed",
        s => s,
    };
    assert_eq!(c["dedicated"][key], 1, "{counts}");

    // Task counts: 3 succeeded (one of 2 slots), 1 failed, 1 held by its failed dependency.
    let job = json!({"id": "cj", "usesTaskDependencies": true});
    assert_eq!(a.req("POST", "/jobs", Some(&job)).0, 201);
    let mut two = task("two", "/bin/true", "");
    two["requiredSlots"] = json!(2);
    let mut held = task("held", "/bin/true", "");
    held["dependsOn"] = json!({"taskIds": ["bad"]});
    let tasks = [
        task("a", "/bin/true", ""),
        task("b", "/bin/true", ""),
        two,
        task("bad", "/bin/false", ""),
        held,
    ];
    let (st, b) = a.req(
        "POST",
        "/jobs/cj/addtaskcollection",
        Some(&json!({"value": tasks})),
    );
    assert_eq!(st, 200, "{b}");
    let t0 = Instant::now();
    let counts = loop {
        let c = get(&a, "/jobs/cj/taskcounts");
        if c["taskCounts"]["completed"] == 4 {
            break c;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "{c}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        counts["taskCounts"],
        json!({"active": 1, "running": 0, "completed": 4, "succeeded": 3, "failed": 1})
    );
    assert_eq!(
        counts["taskSlotCounts"],
        json!({"active": 1, "running": 0, "completed": 5, "succeeded": 4, "failed": 1})
    );
    let (st, b) = a.req("GET", "/jobs/nosuch/taskcounts", None);
    assert_eq!((st, error_code(&b)), (404, "JobNotFound".into()), "{b}");
}

/// `az batch` (azure-cli 2.91.0, unchanged) with `--account-name --account-key
/// --account-endpoint` against the agent: a job and a container task created, the task
/// polled to completion, a filtered job list, its files, the pool, the node and the task
/// counts, the job deleted; a wrong key refused with Batch's error.
#[test]
fn az_batch_drives_the_agent_with_an_account_key() {
    images();
    let az = workspace().join(".tools/azure-cli/bin/az");
    assert!(
        az.exists(),
        "{} is missing: run ./scripts/install-deps.sh (it installs azure-cli 2.91.0 there)",
        az.display()
    );
    let n = TestNode::new("compataz");
    let (key, key_file) = account_key(&n, "key1", 7);
    let (wrong, _) = account_key(&n, "key2", 8);
    let addr = format!("127.0.0.1:{}", free_port());
    let _a = Agent::start_with(
        &n,
        &[
            ("BERTH_TCP_ADDRESS", addr.as_str()),
            ("BERTH_ACCOUNT_NAME", "berthnode"),
            ("BERTH_ACCOUNT_KEY_FILES", key_file.to_str().unwrap()),
        ],
    );
    let endpoint = format!("http://{addr}");
    let config = n.dir.path().join("azure");
    // (success, stdout, stderr) of `az batch ARGS` with `key`.
    let run = |key: &str, args: &[&str]| {
        let out = std::process::Command::new(&az)
            .arg("batch")
            .args(args)
            .args(["--account-name", "berthnode", "--account-key", key])
            .args(["--account-endpoint", &endpoint])
            .env("AZURE_CONFIG_DIR", &config)
            .env("AZURE_CORE_COLLECT_TELEMETRY", "no")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let ok = |args: &[&str]| {
        let (done, out, err) = run(&key, args);
        assert!(done, "az batch {args:?}: {err}");
        out
    };
    ok(&["job", "create", "--id", "azj", "--pool-id", "agentpool"]);
    ok(&["job", "create", "--id", "other", "--pool-id", "agentpool"]);
    let task = n.file("task.json", &task("t1", "/bin/sh -c 'echo hi; exit 2'", ""));
    ok(&[
        "task",
        "create",
        "--job-id",
        "azj",
        "--json-file",
        task.to_str().unwrap(),
        "-o",
        "none",
    ]);
    let state = ["task", "show", "--job-id", "azj", "--task-id", "t1"];
    let t0 = Instant::now();
    let shown = loop {
        let v: Value = serde_json::from_str(&ok(&state)).unwrap();
        if v["state"] == "completed" {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "{v}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(shown["executionInfo"]["exitCode"], 2, "{shown}");
    let q = |args: &[&str]| -> Value {
        serde_json::from_str(&ok(args)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    assert_eq!(
        q(&[
            "job",
            "list",
            "--filter",
            "startswith(id,'az')",
            "--query",
            "[].id"
        ]),
        json!(["azj"])
    );
    let files = q(&[
        "task",
        "file",
        "list",
        "--job-id",
        "azj",
        "--task-id",
        "t1",
        "--query",
        "[].name",
    ]);
    assert!(
        files.as_array().unwrap().contains(&json!("stdout.txt")),
        "{files}"
    );
    assert_eq!(
        q(&[
            "pool",
            "show",
            "--pool-id",
            "agentpool",
            "--query",
            "[id, taskSlotsPerNode]"
        ]),
        json!(["agentpool", 4])
    );
    assert_eq!(
        q(&["node", "list", "--pool-id", "agentpool", "--query", "[].id"]),
        json!([n.node_id])
    );
    assert_eq!(
        q(&[
            "job",
            "task-counts",
            "show",
            "--job-id",
            "azj",
            "--query",
            "taskCounts.failed"
        ]),
        json!(1)
    );
    ok(&["job", "delete", "--job-id", "other", "--yes"]);
    let (done, _, err) = run(&wrong, &["job", "list"]);
    assert!(!done);
    assert!(err.contains("AuthenticationFailed"), "{err}");
}
