//! The web view end to end: a real agent on the real engine serves `/ui/` on its TCP
//! listener, and headless Chromium (driven by `tests/ui/e2e.mjs` with playwright-core)
//! logs in, sees the node, follows a task's stdout live, terminates it, reads a failed
//! task's failureInfo, and is refused a forged action and a read-only token's action.
//! Then `berth service` with three agents: the view shows the three nodes. Screenshots of
//! each page land in `target/ui-screenshots/`.

use berth_tests::agent::Agent;
use berth_tests::pool::{PoolAgent, Service, CLIENT_TOKEN};
use berth_tests::postgres::Postgres;
use berth_tests::*;
use serde_json::json;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "ui-full-token-0123456789";
const RO_TOKEN: &str = "ui-view-token-0123456789";

/// playwright-core as scripts/install-deps.sh puts it, and Debian's Chromium: missing
/// tools are a failure, never a silent skip.
fn tools() -> PathBuf {
    let dir = workspace().join(".tools/ui-tests");
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .exists(),
        "{} has no playwright-core: run ./scripts/install-deps.sh",
        dir.display()
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run ./scripts/install-deps.sh (Debian's chromium)"
    );
    dir
}

/// One HTTP/1.0 request on TCP; returns (status, head, body).
fn tcp(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    write!(s, "{head}Content-Length: 0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).ok();
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (h, b) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (status, h.to_string(), b.to_string())
}

fn start_agent(n: &TestNode) -> (Agent, String) {
    let tf = n.dir.path().join("token");
    std::fs::write(&tf, format!("{TOKEN}\n")).unwrap();
    let ro = n.dir.path().join("read-only-tokens");
    std::fs::write(&ro, format!("# viewers\n{RO_TOKEN}\n")).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let a = Agent::start_with(
        n,
        &[
            ("BERTH_TCP_ADDRESS", addr.as_str()),
            ("BERTH_TOKEN_FILE", tf.to_str().unwrap()),
            ("BERTH_READ_ONLY_TOKEN_FILE", ro.to_str().unwrap()),
        ],
    );
    (a, addr)
}

/// The server's side of the rules, over plain HTTP: the login sets the cookie, the cookie
/// reads, actions need the CSRF header, the read-only token only reads.
#[test]
fn cookie_csrf_and_read_only_rules_over_http() {
    let n = TestNode::new("uirules");
    let (a, addr) = start_agent(&n);
    let v = |p: &str| agent::versioned(p);
    // The pages hold no data: the index without a session goes to the login.
    let (st, head, _) = tcp(&addr, "GET", "/ui/", &[]);
    assert_eq!(st, 303, "{head}");
    assert!(head.contains("location: /ui/login"), "{head}");
    let (st, _, body) = tcp(&addr, "GET", "/ui/login", &[]);
    assert_eq!(st, 200);
    assert!(body.contains("name=\"token\""), "{body}");
    assert!(!body.contains(TOKEN));
    assert_eq!(tcp(&addr, "GET", "/ui/app.js", &[]).0, 200);
    // The API itself still wants a credential.
    assert_eq!(tcp(&addr, "GET", &v("/jobs"), &[]).0, 401);

    // A cookie reads; an action with it needs the session's CSRF value.
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "r"}))).0, 201);
    let cookie = format!("berth_session={}", TOKEN.replace('-', "%2D"));
    let (st, _, body) = tcp(&addr, "GET", &v("/jobs/r"), &[("Cookie", &cookie)]);
    assert_eq!(st, 200, "{body}");
    let (st, _, body) = tcp(&addr, "GET", "/ui/session", &[("Cookie", &cookie)]);
    assert_eq!(st, 200, "{body}");
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (s["mode"].as_str(), s["access"].as_str()),
        (Some("agent"), Some("full"))
    );
    assert!(
        !body.contains(TOKEN),
        "the session answer shows the token: {body}"
    );
    let csrf = s["csrf"].as_str().unwrap().to_string();
    let (st, _, body) = tcp(&addr, "POST", &v("/jobs/r/disable"), &[("Cookie", &cookie)]);
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("x-berth-csrf"), "{body}");
    let (st, _, _) = tcp(
        &addr,
        "POST",
        &v("/jobs/r/disable"),
        &[("Cookie", &cookie), ("x-berth-csrf", &"0".repeat(64))],
    );
    assert_eq!(st, 403);
    assert_eq!(a.json("/jobs/r")["state"], "active");
    let (st, _, body) = tcp(
        &addr,
        "DELETE",
        &v("/jobs/r"),
        &[("Cookie", &cookie), ("x-berth-csrf", &csrf)],
    );
    assert_eq!(st, 202, "{body}");

    // The read-only token: reads with the header or the cookie; every action is 403.
    let bearer = format!("Bearer {RO_TOKEN}");
    assert_eq!(
        tcp(&addr, "GET", "/node", &[("Authorization", &bearer)]).0,
        200
    );
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "k"}))).0, 201);
    let (st, _, body) = tcp(
        &addr,
        "POST",
        &v("/jobs/k/disable"),
        &[("Authorization", &bearer)],
    );
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("read-only"), "{body}");
    let ro_cookie = format!("berth_session={RO_TOKEN}");
    let (_, _, body) = tcp(&addr, "GET", "/ui/session", &[("Cookie", &ro_cookie)]);
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["access"], "readOnly");
    let ro_csrf = s["csrf"].as_str().unwrap().to_string();
    let (st, _, _) = tcp(
        &addr,
        "DELETE",
        &v("/jobs/k"),
        &[("Cookie", &ro_cookie), ("x-berth-csrf", &ro_csrf)],
    );
    assert_eq!(st, 403);
    assert_eq!(a.json("/jobs/k")["state"], "active");

    // Login: a wrong token is 401; the right one sets the cookie and goes to the view.
    let login = |t: &str, origin: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        let body = format!("token={t}");
        write!(s, "POST /ui/login HTTP/1.0\r\nHost: {addr}\r\nOrigin: {origin}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).ok();
        out
    };
    let here = format!("http://{addr}");
    let out = login(TOKEN, "https://elsewhere.example");
    assert!(
        out.starts_with("HTTP/1.0 403"),
        "a login from another site: {out}"
    );
    assert!(!out.to_ascii_lowercase().contains("set-cookie"), "{out}");
    let out = login("wrong-token-0123456789", &here);
    assert!(out.starts_with("HTTP/1.0 401"), "{out}");
    assert!(!out.to_ascii_lowercase().contains("set-cookie"), "{out}");
    let out = login(TOKEN, &here);
    assert!(out.starts_with("HTTP/1.0 303"), "{out}");
    let lower = out.to_ascii_lowercase();
    assert!(
        lower.contains("set-cookie: berth_session=")
            && lower.contains("httponly")
            && lower.contains("samesite=strict")
            && lower.contains("path=/"),
        "{out}"
    );
    assert_eq!(a.term(), Some(0));
}

/// The pages in headless Chromium against the agent, as a person uses them.
#[test]
fn web_view_in_chromium() {
    tools();
    let n = TestNode::new("uiweb");
    let (a, addr) = start_agent(&n);
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "web"}))).0, 201);
    let live = task("live", "/bin/sh -c 'echo hello; sleep 300'", "");
    assert_eq!(a.req("POST", "/jobs/web/tasks", Some(&live)).0, 201);
    let fails = task("fails", "/bin/sh -c 'echo oops >&2; exit 3'", "");
    assert_eq!(a.req("POST", "/jobs/web/tasks", Some(&fails)).0, 201);
    // A task whose image comes from a registry: the node page shows its pull.
    let reg = TestRegistry::start();
    let pulled = reg.push_unique("ui/pulled");
    let mut from_reg = task("pulled", "true", "");
    from_reg["containerSettings"]["imageName"] = json!(pulled);
    assert_eq!(a.req("POST", "/jobs/web/tasks", Some(&from_reg)).0, 201);
    // A job with preparation and release tasks, one task run.
    let sh = json!({"imageName": "myimage", "containerRunOptions": "--network none"});
    let prep = json!({"id": "prep",
        "jobPreparationTask": {"commandLine": "/bin/sh -c true", "containerSettings": sh},
        "jobReleaseTask": {"commandLine": "/bin/sh -c true", "containerSettings": sh}});
    assert_eq!(a.req("POST", "/jobs", Some(&prep)).0, 201);
    assert_eq!(
        a.req("POST", "/jobs/prep/tasks", Some(&task("one", "true", "")))
            .0,
        201
    );
    // A job of 31 tasks for paging: 30 wait on `gate`, which sleeps.
    let many = json!({"id": "many", "usesTaskDependencies": true});
    assert_eq!(a.req("POST", "/jobs", Some(&many)).0, 201);
    let mut tasks = vec![task("gate", "sleep 300", "")];
    for i in 0..30 {
        let mut t = task(&format!("t{i:02}"), "true", "");
        t["dependsOn"] = json!({"taskIds": ["gate"]});
        tasks.push(t);
    }
    let (st, b) = a.req(
        "POST",
        "/jobs/many/addtaskcollection",
        Some(&json!({ "value": tasks })),
    );
    assert_eq!(st, 200, "{b}");
    // 10^4 tasks waiting on a gate: the job page's load is timed (printed, not asserted).
    let big = json!({"id": "big", "usesTaskDependencies": true});
    assert_eq!(a.req("POST", "/jobs", Some(&big)).0, 201);
    let gate = task("gate", "sleep 300", "");
    assert_eq!(a.req("POST", "/jobs/big/tasks", Some(&gate)).0, 201);
    for chunk in 0..100 {
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let mut t = task(&format!("b{:05}", chunk * 100 + i), "true", "");
                t["dependsOn"] = json!({"taskIds": ["gate"]});
                t
            })
            .collect();
        let (st, b) = a.req(
            "POST",
            "/jobs/big/addtaskcollection",
            Some(&json!({ "value": tasks })),
        );
        assert_eq!(st, 200, "{b}");
    }
    // An output past the pane's 256 KiB tail.
    assert_eq!(a.req("POST", "/jobs", Some(&json!({"id": "out"}))).0, 201);
    let long = task(
        "long",
        "/bin/sh -c 'yes 0123456789abcdef | head -c 400000; echo; echo END'",
        "",
    );
    assert_eq!(a.req("POST", "/jobs/out/tasks", Some(&long)).0, 201);
    a.wait_state("web", "fails", "completed");
    a.wait_state("web", "live", "running");
    a.wait_state("out", "long", "completed");
    a.wait_state("prep", "one", "completed");
    a.wait_state("web", "pulled", "completed");

    browser_script(
        "e2e.mjs",
        &[
            ("BERTH_URL", format!("http://{addr}")),
            ("BERTH_TOKEN", TOKEN.into()),
            ("BERTH_RO_TOKEN", RO_TOKEN.into()),
            ("BERTH_NODE_ID", n.node_id.clone()),
            ("BERTH_PULLED", pulled.clone()),
        ],
    );
    // Batch's task counts, which the jobs page shows.
    let c = a.json("/jobs/big/taskcounts");
    assert_eq!(c["taskCounts"]["active"], 10000, "{c}");
    assert_eq!(c["taskCounts"]["running"], 1, "{c}");
    let c = a.json("/jobs/web/taskcounts");
    assert_eq!(c["taskCounts"]["failed"], 2, "{c}");
    assert_eq!(c["taskSlotCounts"]["completed"], 3, "{c}");
    // Terminated from the page.
    let t = a.json("/jobs/web/tasks/live");
    assert_eq!(t["state"], "completed", "{t}");
    // No token in what the pages were served.
    let (_, _, js) = tcp(&addr, "GET", "/ui/app.js", &[]);
    assert!(!js.contains(TOKEN) && !js.contains(RO_TOKEN));
    assert_eq!(a.term(), Some(0));
}

/// Runs `tests/ui/<script>` with node and `env`; it must print `all ok`.
fn browser_script(script: &str, env: &[(&str, String)]) {
    let tools = tools();
    let shots = workspace().join("target/ui-screenshots");
    let out = Command::new("node")
        .arg(workspace().join("tests/ui").join(script))
        .env("BERTH_UI_SHOTS", &shots)
        .env("BERTH_UI_TOOLS", &tools)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("node (Node.js) runs the browser script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("all ok"),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    eprintln!("screenshots in {}", shots.display());
}

/// `berth service` with three agents: the view shows the pool's three nodes, a task's
/// output read through the service, a job's preparation runs merged from its nodes, a
/// node's image pulls, and refuses a read-only token's node action.
#[test]
fn service_web_view_with_three_agents() {
    tools();
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("viewers");
    std::fs::write(&ro, format!("{RO_TOKEN}\n")).unwrap();
    let svc = Service::start_with(
        &pg.url,
        &[
            "--insecure-http",
            "--read-only-token-file",
            ro.to_str().unwrap(),
        ],
        None,
    );
    svc.wait_ready();
    svc.add_pool("webpool", 2, json!({}));
    let agents: Vec<PoolAgent> = (0..3)
        .map(|i| {
            PoolAgent::start(
                &format!("webpooln{i}"),
                "webpool",
                std::slice::from_ref(&svc.url),
            )
        })
        .collect();
    svc.wait_nodes("webpool", "idle", 3);
    svc.post_ok(
        "/jobs",
        &json!({"id": "pj", "poolInfo": {"poolId": "webpool"}}),
    );
    svc.post_ok("/jobs/pj/tasks", &task("hi", "/bin/sh -c 'echo hello'", ""));
    // A task whose image comes from a registry: its node's page shows the pull.
    let reg = TestRegistry::start();
    let pulled = reg.push_unique("ui/svcpulled");
    let mut from_reg = task("pulled", "true", "");
    from_reg["containerSettings"]["imageName"] = json!(pulled);
    svc.post_ok("/jobs/pj/tasks", &from_reg);
    svc.wait_completed("pj", 2, 90);
    let pull_node = svc.task("pj", "pulled")["nodeInfo"]["nodeId"]
        .as_str()
        .unwrap()
        .to_string();
    // A task that waits for one never added: the view says why.
    svc.post_ok(
        "/jobs",
        &json!({"id": "pw", "poolInfo": {"poolId": "webpool"}, "usesTaskDependencies": true}),
    );
    let mut w = task("w", "true", "");
    w["dependsOn"] = json!({"taskIds": ["never"]});
    svc.post_ok("/jobs/pw/tasks", &w);
    // A job with preparation and release tasks whose three tasks each fill a node.
    let sh = json!({"imageName": "myimage", "containerRunOptions": "--network none"});
    svc.post_ok(
        "/jobs",
        &json!({"id": "pp", "poolInfo": {"poolId": "webpool"},
            "jobPreparationTask": {"commandLine": "/bin/sh -c true", "containerSettings": sh},
            "jobReleaseTask": {"commandLine": "/bin/sh -c true", "containerSettings": sh}}),
    );
    for i in 0..3 {
        let mut t = task(&format!("p{i}"), "sleep 2", "");
        t["requiredSlots"] = json!(2);
        svc.post_ok("/jobs/pp/tasks", &t);
    }
    let ran_on = prepared_nodes(&svc);
    let ids: Vec<String> = agents.iter().map(|a| a.node.node_id.clone()).collect();
    browser_script(
        "pool.mjs",
        &[
            ("BERTH_URL", svc.url.clone()),
            ("BERTH_TOKEN", CLIENT_TOKEN.into()),
            ("BERTH_RO_TOKEN", RO_TOKEN.into()),
            ("BERTH_NODE_IDS", ids.join(",")),
            ("BERTH_PREP_NODES", ran_on.join(",")),
            ("BERTH_PULLED", pulled),
            ("BERTH_PULL_NODE", pull_node),
        ],
    );
    // A node that cannot answer is left out, and named in the log; the others still are.
    let gone = agents.iter().find(|a| a.node.node_id == ran_on[0]).unwrap();
    gone.signal(nix::sys::signal::Signal::SIGKILL);
    let list = svc.json("/jobs/pp/jobpreparationandreleasetaskstatus");
    assert_eq!(node_ids(&list), ran_on[1..], "{list}");
    let log = svc.log();
    assert!(
        log.lines()
            .any(|l| l.contains("left out") && l.contains(&ran_on[0])),
        "{log}"
    );
}

/// The `nodeId`s of a list of preparation and release statuses.
fn node_ids(list: &serde_json::Value) -> Vec<String> {
    list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["nodeId"].as_str().unwrap().to_string())
        .collect()
}

/// Waits for job `pp`'s three tasks, then checks the service's merged preparation and
/// release status against the nodes they ran on (Batch's shape, paging, `$filter`); those
/// nodes, sorted.
fn prepared_nodes(svc: &Service) -> Vec<String> {
    let done = svc.wait_completed("pp", 3, 90);
    let mut ran_on: Vec<String> = done
        .iter()
        .map(|t| t["nodeInfo"]["nodeId"].as_str().unwrap().to_string())
        .collect();
    ran_on.sort();
    ran_on.dedup();
    let path = "/jobs/pp/jobpreparationandreleasetaskstatus";
    let list = svc.json(path);
    assert_eq!(node_ids(&list), ran_on, "{list}");
    for e in list["value"].as_array().unwrap() {
        assert_eq!(e["poolId"], "webpool", "{e}");
        let prep = &e["jobPreparationTaskExecutionInfo"];
        assert_eq!(prep["state"], "completed", "{e}");
        assert_eq!(prep["exitCode"], 0, "{e}");
    }
    assert!(list["odata.metadata"]
        .as_str()
        .unwrap()
        .ends_with("#jobpreparationandreleasetaskstatuslist"));
    // One a page: every node once, in order, through odata.nextLink.
    let mut seen = vec![];
    let mut next = Some(format!("{path}?maxresults=1"));
    while let Some(p) = next {
        let page = svc.json(&p);
        assert_eq!(page["value"].as_array().unwrap().len(), 1, "{page}");
        seen.extend(node_ids(&page));
        next = page["odata.nextLink"]
            .as_str()
            .map(|l| l[l.find("/jobs/").unwrap()..].to_string());
    }
    assert_eq!(seen, ran_on);
    let one = svc.json(&format!(
        "{path}?%24filter=nodeId%20eq%20%27{}%27",
        ran_on[0]
    ));
    assert_eq!(node_ids(&one), ran_on[..1], "{one}");
    // A job without a preparation task has no such list.
    let (st, v) = svc.req("GET", "/jobs/pj/jobpreparationandreleasetaskstatus", None);
    assert_eq!(st, 409, "{v}");
    assert_eq!(v["code"], "JobPreparationTaskNotSpecified", "{v}");
    ran_on
}
