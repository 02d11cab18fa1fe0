//! The agent SIGKILLed in the middle of attempts, then restarted on the same node: no task
//! runs twice unseen. Each task's command appends `job/task` to one file in the node's
//! shared directory, so the test counts the real runs of each task; a task that ran more
//! than once must show each extra run in its `retryCount` + `requeueCount`.
//!
//! `kill_at_each_step_of_an_attempt` kills the agent at each step of an attempt in turn
//! (the test-only `BERTH_TEST_CRASH_AT` hook, `agent/src/task/crash.rs`), `BERTH_CRASH_ROUNDS`
//! times (3 by default); `kill_at_random_times` kills it from outside at random moments
//! while short tasks stream through, `BERTH_CRASH_CYCLES` times (10 by default;
//! `BERTH_CRASH_SEED` repeats a run).

use berth_agent::task::crash::{Point, ENV};
use berth_tests::agent::Agent;
use berth_tests::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

/// A task that notes each of its runs in `<shared>/ran`. A `flaky` one fails its first
/// run and is retried (`maxTaskRetryCount` 3), so kills also land on later attempts.
fn recorded(id: &str, flaky: bool) -> Value {
    let check = if flaky {
        r#"; [ "$(grep -cx "$r" $AZ_BATCH_NODE_SHARED_DIR/ran)" -ge 2 ]"#
    } else {
        ""
    };
    let mut t = task(
        id,
        &format!("/bin/sh -c 'r=$AZ_BATCH_JOB_ID/$AZ_BATCH_TASK_ID; echo $r >> $AZ_BATCH_NODE_SHARED_DIR/ran{check}'"),
        "",
    );
    // Admin: the shared directory is writable by its owner only.
    t["userIdentity"] = json!({"autoUser": {"scope": "pool", "elevationLevel": "admin"}});
    t["constraints"] = json!({"maxTaskRetryCount": 3});
    t
}

/// Adds the tasks to `job`; every fourth one is flaky.
fn add(a: &Agent, job: &str, ids: &[String]) {
    let (st, b) = a.req("POST", "/jobs", Some(&json!({"id": job})));
    assert!(st == 201 || st == 409, "{b}");
    let body = json!({"value": ids.iter().enumerate().map(|(i, id)| recorded(id, i % 4 == 3)).collect::<Vec<_>>()});
    let (st, b) = a.req(
        "POST",
        &format!("/jobs/{job}/addtaskcollection"),
        Some(&body),
    );
    assert_eq!(st, 200, "{b}");
}

/// How many times each `job/task` ran.
fn runs(n: &TestNode) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for l in std::fs::read_to_string(n.root().join("shared/ran"))
        .unwrap_or_default()
        .lines()
    {
        *m.entry(l.to_string()).or_insert(0) += 1;
    }
    m
}

/// Waits until every task of `job` completed; returns them.
fn all_completed(a: &Agent, job: &str, count: usize, limit: Duration) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let tasks = a.list(&format!("/jobs/{job}/tasks"));
        if tasks.len() == count && tasks.iter().all(|t| t["state"] == "completed") {
            return tasks;
        }
        assert!(
            t0.elapsed() < limit,
            "{job}: not all {count} tasks completed: {:?}",
            tasks
                .iter()
                .map(|t| format!("{} {}", t["id"], t["state"]))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a set of tasks did across the kills.
#[derive(Default, Debug)]
struct Tally {
    tasks: usize,
    /// Ran more often than its retries explain.
    twice: usize,
    /// Ran more than once with fewer retries + requeues than extra runs.
    silent: Vec<String>,
    /// Never ran, yet completed successfully.
    phantom: Vec<String>,
    /// Never ran, and ended failed (the start was lost with the agent).
    unrun: usize,
    requeued: usize,
    /// Requeued and retried too.
    requeued_after_retry: usize,
    /// Ended failed for another reason than a lost exit code.
    failed: Vec<String>,
    /// Ended `TaskEnded`: the agent died after removing the container, before recording.
    lost_exit: usize,
}

impl Tally {
    fn add(&mut self, job: &str, tasks: &[Value], ran: &HashMap<String, usize>) {
        for t in tasks {
            let key = format!("{job}/{}", t["id"].as_str().unwrap());
            let e = &t["executionInfo"];
            let times = ran.get(&key).copied().unwrap_or(0);
            let retries = e["retryCount"].as_u64().unwrap() as usize;
            let requeues = e["requeueCount"].as_u64().unwrap() as usize;
            self.tasks += 1;
            if times > 1 + retries {
                self.twice += 1;
            }
            if times > 1 + retries + requeues {
                self.silent.push(format!(
                    "{key} ran {times} times with retryCount {retries} and requeueCount {requeues}"
                ));
            }
            if times == 0 {
                if e["result"] == "success" {
                    self.phantom.push(format!("{key}: {e}"));
                } else {
                    self.unrun += 1;
                }
            }
            if requeues > 0 {
                self.requeued += 1;
                if retries > 0 {
                    self.requeued_after_retry += 1;
                }
            }
            if e["failureInfo"]["code"] == "TaskEnded" {
                self.lost_exit += 1;
            } else if e["result"] != "success" {
                self.failed.push(format!("{key}: {e}"));
            }
        }
    }

    fn line(&self) -> String {
        format!(
            "{} tasks: ran more often than their retries explain {}, of which not in requeueCount {}; never ran {}; requeued {} ({} also retried); exit code lost {}",
            self.tasks,
            self.twice,
            self.silent.len(),
            self.unrun + self.phantom.len(),
            self.requeued,
            self.requeued_after_retry,
            self.lost_exit
        )
    }

    fn ok(&self) -> bool {
        self.silent.is_empty() && self.phantom.is_empty() && self.failed.is_empty()
    }
}

/// Waits for the agent to die; panics if it is still alive after `limit`.
fn dies(a: &mut Agent, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = a.child.try_wait().unwrap() {
            return st;
        }
        assert!(t0.elapsed() < limit, "the agent is still alive");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The task whose attempt reached the crash point, as the dying agent named it.
fn crashed_in(n: &TestNode, p: Point) -> String {
    let log = std::fs::read_to_string(n.dir.path().join("agent.log")).unwrap();
    let mark = format!("dying at {} in ", p.name());
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(&mark))
        .unwrap_or_else(|| panic!("the agent did not say where it died"));
    line.split(&mark).nth(1).unwrap().trim().to_string()
}

/// For each step of an attempt in turn: an agent armed to die at that step gets four
/// tasks (four slots: the first to reach the step kills it, the others are wherever
/// they are), then a plain agent takes over and every task completes. The task that
/// reached the step and the others are counted apart.
#[test]
fn kill_at_each_step_of_an_attempt() {
    let rounds = env_usize("BERTH_CRASH_ROUNDS", 3);
    let n = TestNode::new("crashstep");
    let mut tallies: Vec<(Point, Tally, Tally)> = Point::ALL
        .iter()
        .map(|p| (*p, Tally::default(), Tally::default()))
        .collect();
    let ids: Vec<String> = (0..4).map(|i| format!("t{i}")).collect();
    let t0 = Instant::now();
    for round in 0..rounds {
        for (p, at_step, others) in tallies.iter_mut() {
            let job = format!("{}-{round}", p.name());
            let mut a = Agent::start_with(&n, &[(ENV, p.name())]);
            add(&a, &job, &ids);
            let st = dies(&mut a, Duration::from_secs(60));
            assert_eq!(st.signal(), Some(9), "the agent died at {}: {st}", p.name());
            drop(a);
            let which = crashed_in(&n, *p);
            let a = Agent::start(&n);
            let tasks = all_completed(&a, &job, ids.len(), Duration::from_secs(90));
            let (one, rest): (Vec<Value>, Vec<Value>) = tasks
                .into_iter()
                .partition(|t| format!("{job}/{}", t["id"].as_str().unwrap()) == which);
            assert_eq!(one.len(), 1, "{which} is one of the tasks");
            let ran = runs(&n);
            at_step.add(&job, &one, &ran);
            others.add(&job, &rest, &ran);
            assert_eq!(a.term(), Some(0));
        }
    }
    let report: Vec<String> = tallies
        .iter()
        .map(|(p, t, o)| {
            format!(
                "{}: the task at the step: {}; the others: {}",
                p.name(),
                t.line(),
                o.line()
            )
        })
        .collect();
    eprintln!(
        "{rounds} rounds in {:.1} s\n{}",
        t0.elapsed().as_secs_f64(),
        report.join("\n")
    );
    for (p, t, o) in &tallies {
        assert!(
            t.ok() && o.ok(),
            "killed {}: a silent second run: {:?} {:?} {:?} {:?} {:?} {:?}\n{}",
            p.name(),
            t.silent,
            t.phantom,
            t.failed,
            o.silent,
            o.phantom,
            o.failed,
            report.join("\n")
        );
    }
    assert!(n.containers_left().is_empty(), "every container removed");
}

/// A small xorshift: the test needs varied kill times, not good randomness.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Short tasks stream in while the agent is killed from outside at random moments and
/// restarted; at the end every task completed, and none ran twice unseen.
#[test]
fn kill_at_random_times() {
    let cycles = env_usize("BERTH_CRASH_CYCLES", 10);
    let seed = std::env::var("BERTH_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("BERTH_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let n = TestNode::new("crashrand");
    let per_cycle = 8;
    let t0 = Instant::now();
    for c in 0..cycles {
        let mut a = Agent::start(&n);
        let ids: Vec<String> = (0..per_cycle).map(|i| format!("c{c}-{i}")).collect();
        add(&a, "r", &ids);
        std::thread::sleep(Duration::from_millis(rng.below(2500)));
        a.child.kill().unwrap(); // SIGKILL
        a.child.wait().unwrap();
    }
    let a = Agent::start(&n);
    let total = cycles * per_cycle;
    let tasks = all_completed(&a, "r", total, Duration::from_secs(60 + 2 * total as u64));
    let mut tally = Tally::default();
    tally.add("r", &tasks, &runs(&n));
    eprintln!(
        "{cycles} kills at random times in {:.1} s: {}",
        t0.elapsed().as_secs_f64(),
        tally.line()
    );
    if !tally.ok() {
        // What the agents said of those tasks, across all their lives.
        let log = std::fs::read_to_string(n.dir.path().join("agent.log")).unwrap();
        for bad in tally.silent.iter().chain(&tally.failed) {
            let id = bad.split(' ').next().unwrap().trim_start_matches("r/");
            let id = id.trim_end_matches(':');
            eprintln!("--- {id}");
            for l in log.lines().filter(|l| {
                l.contains(&format!("task={id}"))
                    || l.contains(&format!(".{id}."))
                    || l.contains(&format!("\"{id}\""))
            }) {
                eprintln!("{l}");
            }
        }
    }
    assert!(
        tally.ok(),
        "a silent second run: {:?} {:?} {:?}",
        tally.silent,
        tally.phantom,
        tally.failed
    );
    assert!(n.containers_left().is_empty(), "every container removed");
    assert_eq!(a.term(), Some(0));
}
