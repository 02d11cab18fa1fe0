//! The daemon's scheduler choosing what runs (slots, required slots, FIFO, dependencies,
//! paging, job preparation gating, GPUs), over a real SQLite store with the fake engine:
//! what `tests/tests/agent.rs` shows on a real engine in minutes, here in a second. Tasks
//! "run" on tokio's paused clock; the fake's call log says what started in which order.

use super::queue::{Queue, Scheduler};
use crate::config::OnShutdown;
use crate::engine::fake::{Fake, Script};
use crate::store::{sqlite::SqliteStore, Store};
use crate::task::NodeContext;
use berth_proto::{JobState, JobView, NodeState, TaskState, TaskView};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "docker.io/library/busybox:latest";

struct Daemon {
    _dir: tempfile::TempDir,
    fake: Fake,
    rt: Arc<NodeContext>,
    store: Arc<SqliteStore>,
    sched: Scheduler,
    queue: std::sync::Mutex<Option<Queue>>,
    cancel: CancellationToken,
}

fn daemon(fake: &Fake, slots: i32, adjust: impl FnOnce(&mut NodeContext)) -> Daemon {
    daemon_after(fake, slots, adjust, |_| {})
}

/// A daemon started after `before` left the store and the engine as an earlier agent
/// process would have.
fn daemon_after(
    fake: &Fake,
    slots: i32,
    adjust: impl FnOnce(&mut NodeContext),
    before: impl FnOnce(&Daemon),
) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    fake.add_image(IMAGE, &[]);
    let mut rt = NodeContext::on_engine(Arc::new(fake.clone()), &dir.path().join("root"));
    rt.pool.task_slots_per_node = Some(slots);
    adjust(&mut rt);
    rt.node.layout.prepare().unwrap();
    rt.status.set_state(NodeState::Idle);
    let rt = Arc::new(rt);
    let store = Arc::new(SqliteStore::open(&dir.path().join("state.db")).unwrap());
    let (sched, queue) = Scheduler::new(rt.clone(), store.clone());
    let cancel = CancellationToken::new();
    let d = Daemon {
        _dir: dir,
        fake: fake.clone(),
        rt,
        store,
        sched,
        queue: std::sync::Mutex::new(Some(queue)),
        cancel,
    };
    before(&d);
    let queue = d.queue.lock().unwrap().take().unwrap();
    tokio::spawn(queue.run(d.cancel.clone(), OnShutdown::Stop));
    d
}

impl Daemon {
    fn job(&self, job: Value) {
        self.store
            .add_job(&JobView::new(serde_json::from_value(job).unwrap()))
            .unwrap();
    }

    /// Queues tasks of `job` in this order.
    fn tasks(&self, job: &str, tasks: Vec<Value>) {
        let spec = self.store.job(job).unwrap().unwrap().spec;
        let views: Vec<TaskView> = tasks
            .into_iter()
            .map(|mut t| {
                t["containerSettings"] = json!({"imageName": IMAGE});
                t["commandLine"] = json!("/bin/true");
                let spec_t = serde_json::from_value(t).unwrap();
                crate::schedule::TaskReport::active(&self.rt, &spec, spec_t, None).view
            })
            .collect();
        self.store.add_tasks(&views).unwrap();
        self.sched.wake();
    }

    fn state(&self, job: &str, task: &str) -> (TaskState, Option<i64>) {
        let t = self.store.task(job, task).unwrap().unwrap().view;
        (t.state, t.execution_info.and_then(|i| i.exit_code))
    }

    /// Waits (real time, at most 20 s) until every listed task is completed.
    async fn until_completed(&self, job: &str, tasks: &[&str]) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tasks
            .iter()
            .any(|t| self.state(job, t).0 != TaskState::Completed)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "not all completed: {:?}",
                tasks
                    .iter()
                    .map(|t| (t, self.state(job, t)))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The tasks in the order their containers were created (first attempts).
    fn started(&self) -> Vec<String> {
        self.fake
            .calls()
            .into_iter()
            .filter(|c| c.op == "create")
            // berth.<node>.<job>.<task>.<attempt>
            .filter(|c| c.target.ends_with(".0"))
            .filter_map(|c| c.target.split('.').nth(3).map(str::to_string))
            .filter(|t| t != "jobpreparation")
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn t(id: &str) -> Value {
    json!({"id": id})
}

#[tokio::test(start_paused = true)]
async fn tasks_start_in_queue_order_and_never_exceed_the_slots() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(10)));
    let d = daemon(&f, 3, |_| {});
    d.job(json!({"id": "j"}));
    let ids: Vec<String> = (1..=9).map(|i| format!("t{i}")).collect();
    d.tasks("j", ids.iter().map(|i| t(i)).collect());
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    d.until_completed("j", &refs).await;
    // Tasks that start together create their containers in any order; the batches, each
    // as long as one task's run, follow the queue.
    let mut batches: Vec<Vec<String>> = d.started().chunks(3).map(<[String]>::to_vec).collect();
    batches.iter_mut().for_each(|b| b.sort());
    let want: Vec<Vec<String>> = ids.chunks(3).map(<[String]>::to_vec).collect();
    assert_eq!(batches, want, "FIFO");
    assert_eq!(f.peak_running(), 3, "all slots used, never more");
    assert!(f.containers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_task_needing_more_slots_waits_for_them_and_runs_alone() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(10)));
    let d = daemon(&f, 4, |_| {});
    d.job(json!({"id": "j"}));
    let mut big = t("t2");
    big["requiredSlots"] = json!(4);
    d.tasks("j", vec![t("t1"), big, t("t3")]);
    d.until_completed("j", &["t1", "t2", "t3"]).await;
    // t2 needs the whole node: it waits for t1, and t3, which fits beside t1, backfills
    // (as `berth run` does); t2 then runs alone.
    let started = d.started();
    assert_eq!(
        started.last().map(String::as_str),
        Some("t2"),
        "{started:?}"
    );
    assert_eq!(f.peak_running(), 2);
    let info = |id: &str| {
        d.store
            .task("j", id)
            .unwrap()
            .unwrap()
            .view
            .execution_info
            .unwrap()
    };
    let t2_start = info("t2").start_time.unwrap();
    for other in ["t1", "t3"] {
        assert!(
            info(other).end_time.unwrap() <= t2_start,
            "t2 ran beside {other}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn dependencies_wait_for_success_and_a_failed_one_blocks() {
    let f = Fake::new();
    f.script(|name, _| {
        let code = if name.contains(".t2.") { 1 } else { 0 };
        Script::exits(code, Duration::from_secs(5))
    });
    let d = daemon(&f, 4, |_| {});
    d.job(json!({"id": "j", "usesTaskDependencies": true}));
    let mut t3 = t("t3");
    t3["dependsOn"] = json!({"taskIds": ["t1"]});
    let mut t4 = t("t4");
    t4["dependsOn"] = json!({"taskIds": ["t2"]});
    d.tasks("j", vec![t3, t4, t("t1"), t("t2")]);
    d.until_completed("j", &["t1", "t2", "t3"]).await;
    let mut started = d.started();
    // t1 and t2 start together, in either order; t3 only after t1 succeeded.
    started[..2].sort();
    assert_eq!(
        started,
        vec!["t1", "t2", "t3"],
        "order in the queue does not beat dependencies"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        d.state("j", "t4").0,
        TaskState::Active,
        "blocked by failed t2"
    );
    assert_eq!(d.state("j", "t2"), (TaskState::Completed, Some(1)));
}

#[tokio::test(start_paused = true)]
async fn runnable_tasks_behind_pages_of_blocked_ones_still_start() {
    let f = Fake::new();
    f.script(|name, _| {
        Script::exits(
            if name.contains(".x.") { 1 } else { 0 },
            Duration::from_secs(1),
        )
    });
    let d = daemon(&f, 2, |_| {});
    d.job(json!({"id": "j", "usesTaskDependencies": true}));
    let mut tasks = vec![json!({"id": "x"})];
    for i in 0..600 {
        tasks.push(json!({"id": format!("b{i}"), "dependsOn": {"taskIds": ["x"]}}));
    }
    tasks.push(t("t1"));
    tasks.push(t("t2"));
    d.tasks("j", tasks);
    d.until_completed("j", &["x", "t1", "t2"]).await;
    assert_eq!(d.state("j", "b599").0, TaskState::Active);
}

#[tokio::test(start_paused = true)]
async fn a_job_preparation_task_runs_first_and_its_failure_holds_the_tasks() {
    let f = Fake::new();
    f.script(|name, _| {
        let code = if name.contains(".bad.jobpreparation.") {
            2
        } else {
            0
        };
        Script::exits(code, Duration::from_secs(3))
    });
    let d = daemon(&f, 2, |_| {});
    let prep = json!({"commandLine": "/bin/true", "containerSettings": {"imageName": IMAGE}});
    d.job(json!({"id": "good", "jobPreparationTask": prep}));
    d.job(json!({"id": "bad", "jobPreparationTask": prep}));
    d.tasks("good", vec![t("t1")]);
    d.until_completed("good", &["t1"]).await;
    let creates: Vec<String> = f
        .calls()
        .into_iter()
        .filter(|c| c.op == "create")
        .map(|c| c.target)
        .collect();
    assert!(creates[0].contains("jobpreparation"), "{creates:?}");
    d.tasks("bad", vec![t("t9")]);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        d.state("bad", "t9").0,
        TaskState::Active,
        "a failed preparation (waitForSuccess) keeps the job's tasks from starting"
    );
    assert!(!d.started().contains(&"t9".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_node_that_is_not_schedulable_starts_nothing_until_it_is() {
    let f = Fake::new();
    let d = daemon(&f, 2, |_| {});
    d.rt.status.set_state(NodeState::Unusable);
    d.job(json!({"id": "j"}));
    d.tasks("j", vec![t("t1")]);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(d.state("j", "t1").0, TaskState::Active);
    assert_eq!(f.count("create"), 0);
    d.rt.status.set_state(NodeState::Idle);
    d.sched.wake();
    d.until_completed("j", &["t1"]).await;
}

#[tokio::test(start_paused = true)]
async fn tasks_that_fail_are_retried_by_the_scheduler_path_too() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(4, Duration::from_secs(1)));
    let d = daemon(&f, 1, |_| {});
    d.job(json!({"id": "j"}));
    let mut t1 = t("t1");
    t1["constraints"] = json!({"maxTaskRetryCount": 2});
    d.tasks("j", vec![t1]);
    d.until_completed("j", &["t1"]).await;
    let v = d.store.task("j", "t1").unwrap().unwrap().view;
    let info = v.execution_info.unwrap();
    assert_eq!((info.exit_code, info.retry_count), (Some(4), 2));
    assert_eq!(f.count("create"), 3);
}

/// What an earlier agent process left: job `j` with task `t1` recorded `running`, its task
/// directory with (empty) output files when `ran`.
fn left_running(d: &Daemon, ran: bool) {
    d.job(json!({"id": "j"}));
    let spec = d.store.job("j").unwrap().unwrap().spec;
    let t = serde_json::from_value(json!({"id": "t1", "commandLine": "/bin/true",
        "containerSettings": {"imageName": IMAGE}}))
    .unwrap();
    let mut view = crate::schedule::TaskReport::active(&d.rt, &spec, t, None).view;
    d.store.add_tasks(std::slice::from_ref(&view)).unwrap();
    view.state = TaskState::Running;
    d.store.put_task(&view).unwrap();
    if ran {
        let dir = d.rt.node.layout.task_dir("j", "t1");
        std::fs::create_dir_all(dir.join("wd")).unwrap();
        for f in [crate::task::logs::STDOUT, crate::task::logs::STDERR] {
            std::fs::write(dir.join(f), "").unwrap();
        }
    }
}

/// Task `t1`'s first container as the earlier agent left it, with the labels berth gives
/// it: started and running `script`, or created and never started.
fn t1_container(d: &Daemon, script: Script, started: bool) {
    use crate::task::create::labels;
    let node = d.rt.node.node_id.clone();
    let l = [
        (labels::MANAGED, "true"),
        (labels::NODE, node.as_str()),
        (labels::KIND, "task"),
        (labels::JOB, "j"),
        (labels::TASK, "t1"),
        (labels::ATTEMPT, "0"),
    ];
    let name = "berth.fake-node.j.t1.0";
    if started {
        d.fake.run_detached(name, &l, script);
    } else {
        d.fake.left_created(name, &l, script);
    }
}

fn requeues(d: &Daemon) -> i32 {
    let v = d.store.task("j", "t1").unwrap().unwrap().view;
    v.execution_info.map_or(0, |e| e.requeue_count)
}

#[tokio::test(start_paused = true)]
async fn recovery_takes_over_a_running_container_and_collects_its_exit() {
    let f = Fake::new();
    let d = daemon_after(
        &f,
        2,
        |_| {},
        |d| {
            left_running(d, true);
            t1_container(
                d,
                Script::exits(5, Duration::from_secs(30)).with_output(b"before\n", b""),
                true,
            );
        },
    );
    d.until_completed("j", &["t1"]).await;
    assert_eq!(d.state("j", "t1"), (TaskState::Completed, Some(5)));
    assert_eq!(f.count("create"), 0, "taken over, not run again");
    assert_eq!(requeues(&d), 0);
    assert!(f.containers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn recovery_collects_a_container_that_exited_while_no_agent_ran() {
    let f = Fake::new();
    let d = daemon_after(
        &f,
        2,
        |_| {},
        |d| {
            left_running(d, true);
            t1_container(d, Script::exits(3, Duration::ZERO), true);
        },
    );
    d.until_completed("j", &["t1"]).await;
    assert_eq!(d.state("j", "t1"), (TaskState::Completed, Some(3)));
    assert_eq!(f.count("create"), 0);
}

#[tokio::test(start_paused = true)]
async fn recovery_requeues_a_container_never_started_and_counts_it() {
    let f = Fake::new();
    let d = daemon_after(
        &f,
        2,
        |_| {},
        |d| {
            left_running(d, true);
            // Created by the earlier agent; its start never came.
            t1_container(d, Script::default(), false);
        },
    );
    d.until_completed("j", &["t1"]).await;
    assert_eq!(d.state("j", "t1"), (TaskState::Completed, Some(0)));
    assert_eq!(requeues(&d), 1, "the extra attempt shows");
    assert_eq!(f.count("start"), 1, "run once, by this agent");
}

#[tokio::test(start_paused = true)]
async fn recovery_requeues_a_task_with_no_container_and_no_output() {
    let f = Fake::new();
    let d = daemon_after(&f, 2, |_| {}, |d| left_running(d, false));
    d.until_completed("j", &["t1"]).await;
    assert_eq!(d.state("j", "t1"), (TaskState::Completed, Some(0)));
    assert_eq!(requeues(&d), 1);
    assert_eq!(f.count("create"), 1);
}

#[tokio::test(start_paused = true)]
async fn recovery_ends_a_task_whose_container_is_gone_after_it_ran() {
    let f = Fake::new();
    let d = daemon_after(&f, 2, |_| {}, |d| left_running(d, true));
    d.until_completed("j", &["t1"]).await;
    let v = d.store.task("j", "t1").unwrap().unwrap().view;
    let info = v.execution_info.unwrap();
    assert_eq!(
        info.failure_info.map(|f| f.code).as_deref(),
        Some("TaskEnded")
    );
    assert_eq!(
        f.count("create"),
        0,
        "not run again: it may have run to its end"
    );
}

/// A node with two GPUs (exposed by device requests) and four slots.
fn two_gpus(rt: &mut NodeContext) {
    let gpu = |i: u32| berth_proto::NodeGpu {
        index: i,
        uuid: format!("GPU-{i}"),
        name: "fake".into(),
        memory_bytes: 1 << 30,
        minor_number: i,
        mig_enabled: false,
    };
    let inventory = crate::gpu::Inventory {
        gpus: vec![gpu(0), gpu(1)],
        ..Default::default()
    };
    rt.gpus = Arc::new(crate::gpu::Gpus::new(
        inventory,
        crate::gpu::Exposure::DeviceRequests,
        None,
    ));
}

fn asking_gpus(id: &str, gpus: &str) -> Value {
    json!({"id": id, "environmentSettings": [{"name": "BERTH_GPUS", "value": gpus}]})
}

#[tokio::test(start_paused = true)]
async fn the_gpu_gate_holds_a_task_until_its_gpus_are_free_and_refuses_too_many() {
    let f = Fake::new();
    // Which GPU UUIDs each task's create body asked the engine for.
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, Vec<String>)>::new()));
    let s = seen.clone();
    f.script(move |name, body| {
        let ids = body
            .host_config
            .as_ref()
            .and_then(|h| h.device_requests.as_ref())
            .into_iter()
            .flatten()
            .flat_map(|r| r.device_ids.clone().unwrap_or_default())
            .collect();
        let task = name.split('.').nth(3).unwrap_or_default().to_string();
        s.lock().unwrap().push((task, ids));
        Script::exits(0, Duration::from_secs(10))
    });
    let d = daemon(&f, 4, two_gpus);
    d.job(json!({"id": "j"}));
    // t1 takes both GPUs; t2 waits for one though slots are free; t3 asks for none and
    // runs beside t1; t4 asks for more than the node has and fails without running.
    d.tasks(
        "j",
        vec![
            asking_gpus("t1", "2"),
            asking_gpus("t2", "1"),
            asking_gpus("t3", "0"),
            asking_gpus("t4", "3"),
        ],
    );
    d.until_completed("j", &["t1", "t2", "t3", "t4"]).await;
    let info = |id: &str| {
        d.store
            .task("j", id)
            .unwrap()
            .unwrap()
            .view
            .execution_info
            .unwrap()
    };
    assert!(info("t2").start_time.unwrap() >= info("t1").end_time.unwrap());
    assert!(info("t3").start_time.unwrap() < info("t1").end_time.unwrap());
    let t4 = info("t4");
    assert_eq!(
        t4.failure_info.as_ref().map(|f| f.code.as_str()),
        Some("GpuRequestInvalid"),
        "{t4:?}"
    );
    assert!(!d.started().contains(&"t4".to_string()));
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("t1".into(), vec!["GPU-0".into(), "GPU-1".into()]),
            ("t2".into(), vec!["GPU-0".into()]),
            ("t3".into(), vec![]),
        ]
    );
    // Every reservation went back.
    assert!(d.rt.gpus.reserve(Some("2"), 1, 4).unwrap().is_some());
}

#[tokio::test(start_paused = true)]
async fn ending_a_queued_task_completes_it_and_it_never_starts() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(10)));
    let d = daemon(&f, 1, |_| {});
    d.job(json!({"id": "j"}));
    d.tasks("j", vec![t("t1"), t("t2")]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // t1 runs, t2 waits for the slot: ending both stops one and completes the other.
    d.sched.end("j", "t2").await.unwrap();
    assert_eq!(d.state("j", "t2").0, TaskState::Completed);
    assert!(!d.sched.stop("j", "t2").await, "t2 never ran");
    d.sched.end("j", "t1").await.unwrap();
    d.until_completed("j", &["t1", "t2"]).await;
    for id in ["t1", "t2"] {
        let v = d.store.task("j", id).unwrap().unwrap().view;
        let code = v
            .execution_info
            .and_then(|i| i.failure_info)
            .map(|f| f.code);
        assert_eq!(code.as_deref(), Some("TaskEnded"), "{id}");
    }
    assert_eq!(d.started(), vec!["t1".to_string()]);
}

#[tokio::test(start_paused = true)]
async fn settled_answers_only_once_everything_sent_before_has_run() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(5)));
    let d = daemon(&f, 2, |_| {});
    d.job(json!({"id": "j"}));
    d.sched.settled().await;
    // Queued and announced just before the question: the answer waits for all of them.
    d.tasks("j", vec![t("t1"), t("t2"), t("t3")]);
    d.sched.settled().await;
    for id in ["t1", "t2", "t3"] {
        assert_eq!(d.state("j", id).0, TaskState::Completed, "{id}");
    }
    // A terminated job's end is part of the queue settling.
    let mut j = d.store.job("j").unwrap().unwrap();
    j.state = JobState::Terminating;
    d.store.put_job(&j).unwrap();
    d.sched.job_ending();
    d.sched.settled().await;
    assert_eq!(
        d.store.job("j").unwrap().unwrap().state,
        JobState::Completed
    );
}

/// Exits with the code its task's id names after `code-` (else 0), after `secs`.
fn exit_by_name(secs: u64) -> impl Fn(&str, &bollard::models::ContainerCreateBody) -> Script {
    move |name, _| {
        let task = name.split('.').nth(3).unwrap_or_default();
        let code = task
            .rsplit_once("code-")
            .and_then(|(_, c)| c.parse().ok())
            .unwrap_or(0);
        // `long` tasks run far longer than the others.
        let secs = if task.contains("long") {
            100 * secs
        } else {
            secs
        };
        Script::exits(code, Duration::from_secs(secs))
    }
}

#[tokio::test(start_paused = true)]
async fn exit_conditions_decide_whether_dependants_run() {
    let f = Fake::new();
    f.script(exit_by_name(1));
    let d = daemon(&f, 2, |_| {});
    d.job(json!({"id": "j", "usesTaskDependencies": true}));
    let with = |id: &str, cond: Value| json!({"id": id, "exitConditions": cond});
    let after = |id: &str, on: &[&str]| json!({"id": id, "dependsOn": {"taskIds": on}});
    d.tasks(
        "j",
        vec![
            with(
                "a-code-3",
                json!({"exitCodes": [{"code": 3, "exitOptions": {"dependencyAction": "satisfy"}}]}),
            ),
            with(
                "b-code-1",
                json!({"default": {"dependencyAction": "satisfy"}}),
            ),
            with(
                "c-code-0",
                json!({"exitCodes": [{"code": 0, "exitOptions": {"dependencyAction": "block"}}]}),
            ),
            with(
                "d-code-5",
                json!({"exitCodeRanges": [{"start": 4, "end": 6, "exitOptions": {"dependencyAction": "satisfy"}}]}),
            ),
            t("e-code-2"),
            after("after-satisfied", &["a-code-3", "b-code-1", "d-code-5"]),
            after("after-blocked", &["c-code-0"]),
            after("after-failed", &["e-code-2"]),
        ],
    );
    d.until_completed("j", &["after-satisfied"]).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        d.state("j", "after-satisfied"),
        (TaskState::Completed, Some(0))
    );
    for blocked in ["after-blocked", "after-failed"] {
        assert_eq!(d.state("j", blocked).0, TaskState::Active, "{blocked}");
        assert!(!d.started().contains(&blocked.to_string()));
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_task_terminates_its_job_when_the_job_performs_exit_actions() {
    let f = Fake::new();
    f.script(exit_by_name(2));
    let d = daemon(&f, 2, |_| {});
    d.job(json!({"id": "j", "onTaskFailure": "performexitoptionsjobaction"}));
    d.job(json!({"id": "k"}));
    d.tasks("j", vec![t("fails-code-2"), t("long-code-0"), t("queued")]);
    d.tasks("k", vec![t("other-code-2")]);
    d.until_completed("j", &["fails-code-2", "long-code-0", "queued"])
        .await;
    d.until_completed("k", &["other-code-2"]).await;
    d.sched.settled().await;
    let job = d.store.job("j").unwrap().unwrap();
    assert_eq!(job.state, JobState::Completed);
    let info = job.execution_info.unwrap();
    assert_eq!(info.terminate_reason.as_deref(), Some("TaskFailed"));
    assert!(info.end_time.is_some());
    // The task running beside it and the one queued end `TaskEnded`.
    for id in ["long-code-0", "queued"] {
        let v = d.store.task("j", id).unwrap().unwrap().view;
        let code = v
            .execution_info
            .and_then(|i| i.failure_info)
            .map(|f| f.code);
        assert_eq!(code.as_deref(), Some("TaskEnded"), "{id}");
    }
    assert!(!d.started().contains(&"queued".to_string()));
    // A job with onTaskFailure noaction (the default) stays active.
    assert_eq!(d.store.job("k").unwrap().unwrap().state, JobState::Active);
}

#[tokio::test(start_paused = true)]
async fn a_higher_priority_jobs_tasks_start_first() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(5)));
    let d = daemon(&f, 1, |_| {});
    d.job(json!({"id": "low"}));
    d.job(json!({"id": "high", "priority": 100}));
    d.job(json!({"id": "lowest", "priority": -5}));
    d.tasks("lowest", vec![t("z1")]);
    d.tasks("low", vec![t("l1"), t("l2")]);
    d.tasks("high", vec![t("h1"), t("h2")]);
    d.until_completed("low", &["l1", "l2"]).await;
    d.until_completed("lowest", &["z1"]).await;
    assert_eq!(d.started(), ["h1", "h2", "l1", "l2", "z1"]);
}

#[tokio::test(start_paused = true)]
async fn max_parallel_tasks_caps_a_job_while_others_use_the_slots() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(5)));
    let d = daemon(&f, 3, |_| {});
    d.job(json!({"id": "capped", "maxParallelTasks": 1}));
    d.job(json!({"id": "free"}));
    d.tasks("capped", vec![t("c1"), t("c2"), t("c3")]);
    d.tasks("free", vec![t("f1"), t("f2")]);
    d.until_completed("capped", &["c1", "c2", "c3"]).await;
    d.until_completed("free", &["f1", "f2"]).await;
    let span = |job: &str, id: &str| {
        let i = d
            .store
            .task(job, id)
            .unwrap()
            .unwrap()
            .view
            .execution_info
            .unwrap();
        (i.start_time.unwrap(), i.end_time.unwrap())
    };
    let c: Vec<_> = ["c1", "c2", "c3"]
        .iter()
        .map(|i| span("capped", i))
        .collect();
    for w in c.windows(2) {
        assert!(w[1].0 >= w[0].1, "capped tasks overlapped: {c:?}");
    }
    // The free job's tasks ran beside the first capped one.
    assert!(span("free", "f2").0 < c[0].1);
    assert_eq!(f.peak_running(), 3);
}

#[tokio::test(start_paused = true)]
async fn on_all_tasks_complete_terminatejob_ends_the_job() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(2)));
    let d = daemon(&f, 2, |_| {});
    d.job(json!({"id": "j", "onAllTasksComplete": "terminatejob"}));
    d.tasks("j", vec![t("t1"), t("t2"), t("t3")]);
    d.until_completed("j", &["t1", "t2", "t3"]).await;
    d.sched.settled().await;
    let j = d.store.job("j").unwrap().unwrap();
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(
        j.execution_info.unwrap().terminate_reason.as_deref(),
        Some("AllTasksComplete")
    );
    // As in Batch, a job with no tasks at all completes at once.
    d.job(json!({"id": "empty", "onAllTasksComplete": "terminatejob"}));
    d.sched.job_changed("empty");
    d.sched.settled().await;
    assert_eq!(
        d.store.job("empty").unwrap().unwrap().state,
        JobState::Completed
    );
    // And without it a job stays active.
    d.job(json!({"id": "kept"}));
    d.tasks("kept", vec![t("k1")]);
    d.until_completed("kept", &["k1"]).await;
    d.sched.settled().await;
    assert_eq!(
        d.store.job("kept").unwrap().unwrap().state,
        JobState::Active
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_past_its_max_wall_clock_time_is_terminated() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(100)));
    let d = daemon(&f, 1, |_| {});
    d.job(json!({"id": "j", "constraints": {"maxWallClockTime": "PT10S"}}));
    d.tasks("j", vec![t("t1"), t("t2")]);
    d.sched.job_changed("j");
    d.until_completed("j", &["t1", "t2"]).await;
    let j = d.store.job("j").unwrap().unwrap();
    assert_eq!(j.state, JobState::Completed);
    let info = j.execution_info.unwrap();
    assert_eq!(
        info.terminate_reason.as_deref(),
        Some("MaxWallClockTimeExpiry")
    );
    let lasted = info.end_time.unwrap() - info.start_time;
    assert!(lasted < chrono::Duration::seconds(20), "{lasted}");
    for id in ["t1", "t2"] {
        let v = d.store.task("j", id).unwrap().unwrap().view;
        let code = v
            .execution_info
            .and_then(|i| i.failure_info)
            .map(|f| f.code);
        assert_eq!(code.as_deref(), Some("TaskEnded"), "{id}");
    }
    assert_eq!(d.started(), ["t1"]);
}

#[tokio::test(start_paused = true)]
async fn a_disabled_job_starts_nothing_and_handles_running_tasks_as_asked() {
    use berth_proto::DisableJobOption as How;
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(10)));
    let d = daemon(&f, 6, |_| {});
    for (job, _) in [
        ("rq", How::Requeue),
        ("tm", How::Terminate),
        ("wt", How::Wait),
    ] {
        d.job(json!({"id": job, "maxParallelTasks": 1}));
        d.tasks(job, vec![t("a"), t("b")]);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (job, how) in [
        ("rq", How::Requeue),
        ("tm", How::Terminate),
        ("wt", How::Wait),
    ] {
        assert_eq!(d.state(job, "a").0, TaskState::Running, "{job}");
        d.sched.disable_job(job, how).await.unwrap();
    }
    // Waiting, the job is `disabling` until its running task ends.
    assert_eq!(
        d.store.job("wt").unwrap().unwrap().state,
        JobState::Disabling
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    for job in ["rq", "tm", "wt"] {
        assert_eq!(
            d.store.job(job).unwrap().unwrap().state,
            JobState::Disabled,
            "{job}"
        );
        assert_eq!(
            d.state(job, "b").0,
            TaskState::Active,
            "{job}: nothing starts"
        );
    }
    let info = |job: &str, id: &str| {
        d.store
            .task(job, id)
            .unwrap()
            .unwrap()
            .view
            .execution_info
            .unwrap_or_default()
    };
    // requeue: back in the queue, counted; terminate: ended; wait: ran to its end.
    assert_eq!(d.state("rq", "a").0, TaskState::Active);
    assert_eq!(info("rq", "a").requeue_count, 1);
    assert_eq!(
        info("tm", "a").failure_info.map(|f| f.code).as_deref(),
        Some("TaskEnded")
    );
    assert_eq!(d.state("wt", "a"), (TaskState::Completed, Some(0)));
    for job in ["rq", "tm", "wt"] {
        d.sched.enable_job(job).await.unwrap();
    }
    d.until_completed("rq", &["a", "b"]).await;
    d.until_completed("wt", &["b"]).await;
    d.until_completed("tm", &["b"]).await;
    assert_eq!(d.state("rq", "a"), (TaskState::Completed, Some(0)));
    assert_eq!(d.store.job("rq").unwrap().unwrap().state, JobState::Active);
}

#[tokio::test(start_paused = true)]
async fn a_job_action_disable_requeues_the_jobs_running_tasks() {
    let f = Fake::new();
    f.script(exit_by_name(2));
    let d = daemon(&f, 2, |_| {});
    d.job(json!({"id": "j", "onTaskFailure": "performexitoptionsjobaction"}));
    let mut fails = t("fails-code-3");
    fails["exitConditions"] = json!({"default": {"jobAction": "disable"}});
    d.tasks("j", vec![fails, t("long-code-0"), t("queued")]);
    d.until_completed("j", &["fails-code-3"]).await;
    d.sched.settled().await;
    assert_eq!(d.store.job("j").unwrap().unwrap().state, JobState::Disabled);
    assert_eq!(d.state("j", "long-code-0").0, TaskState::Active, "requeued");
    assert_eq!(d.state("j", "queued").0, TaskState::Active);
}

#[tokio::test(start_paused = true)]
async fn a_job_manager_runs_alone_and_its_end_ends_the_job() {
    let f = Fake::new();
    f.script(|_, _| Script::exits(0, Duration::from_secs(5)));
    let d = daemon(&f, 3, |_| {});
    d.job(
        json!({"id": "j", "jobManagerTask": {"id": "jm", "commandLine": "/bin/true",
        "containerSettings": {"imageName": IMAGE}}}),
    );
    // As the API does: the manager is queued with the job, first.
    let spec = d.store.job("j").unwrap().unwrap().spec;
    let jm = spec.job_manager_task.as_ref().unwrap().task_spec(3);
    let view = crate::schedule::TaskReport::active(&d.rt, &spec, jm, None).view;
    d.store.add_tasks(&[view]).unwrap();
    d.tasks("j", vec![t("t1"), t("t2")]);
    d.until_completed("j", &["jm", "t1", "t2"]).await;
    d.sched.settled().await;
    // runExclusive: the manager held the node; killJobOnCompletion: its end ended the job
    // and the tasks still queued.
    assert_eq!(f.peak_running(), 1);
    assert_eq!(d.started(), ["jm"]);
    let j = d.store.job("j").unwrap().unwrap();
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(
        j.execution_info.unwrap().terminate_reason.as_deref(),
        Some("JMComplete")
    );
    let code = |id: &str| {
        d.store
            .task("j", id)
            .unwrap()
            .unwrap()
            .view
            .execution_info
            .and_then(|i| i.failure_info)
            .map(|f| f.code)
    };
    assert_eq!(code("t1").as_deref(), Some("TaskEnded"));
    assert_eq!(code("jm"), None);
}
