//! The timer over a real SQLite store and the scheduler on the fake engine, driven pass by
//! pass at chosen times (`Timer::pass(now)`), so a day of schedule takes no time.

use super::*;
use crate::config::OnShutdown;
use crate::engine::fake::Fake;
use crate::store::sqlite::SqliteStore;
use berth_proto::NodeState;
use chrono::TimeDelta;
use serde_json::{json, Value};

struct Node {
    dir: tempfile::TempDir,
    rt: Arc<NodeContext>,
    store: Arc<SqliteStore>,
    sched: Scheduler,
    cancel: CancellationToken,
}

fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let rt = NodeContext::on_engine(Arc::new(Fake::new()), &dir.path().join("root"));
    rt.node.layout.prepare().unwrap();
    rt.status.set_state(NodeState::Idle);
    let rt = Arc::new(rt);
    let store = Arc::new(SqliteStore::open(&dir.path().join("state.db")).unwrap());
    let (sched, queue) = Scheduler::new(rt.clone(), store.clone());
    let cancel = CancellationToken::new();
    tokio::spawn(queue.run(cancel.clone(), OnShutdown::Stop));
    Node {
        dir,
        rt,
        store,
        sched,
        cancel,
    }
}

impl Node {
    /// A timer as a new agent process starts it: over the store reopened from its file.
    fn timer(&self) -> Timer {
        let store = Arc::new(SqliteStore::open(&self.dir.path().join("state.db")).unwrap());
        Timer::new(self.rt.clone(), store, self.sched.clone()).1
    }

    fn schedule(&self, id: &str) -> StoredSchedule {
        self.store.schedule(id).unwrap().unwrap()
    }

    /// The schedule's jobs' ids, in the order they were created.
    fn jobs(&self, schedule: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .store
            .jobs()
            .unwrap()
            .into_iter()
            .map(|j| j.spec.id)
            .filter(|j| job_schedule::is_job_of(j, schedule))
            .collect();
        ids.sort_by_key(|j| j.rsplit('-').next().unwrap().parse::<u64>().unwrap());
        ids
    }

    /// Waits (real time, 10 s at most) until `job` is in `state`, or gone for `None`.
    async fn job_becomes(&self, job: &str, state: Option<JobState>) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.store.job(job).unwrap().map(|j| j.state);
            if now == state {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{job} is {now:?}, not {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn t0() -> DateTime<Utc> {
    // Whole seconds, as they come back from JSON.
    DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap()
}

fn secs(t: DateTime<Utc>, s: i64) -> DateTime<Utc> {
    t + TimeDelta::seconds(s)
}

fn spec(id: &str, schedule: Value, job: Value) -> JobScheduleSpec {
    serde_json::from_value(json!({"id": id, "schedule": schedule, "jobSpecification": job}))
        .unwrap()
}

/// Jobs that end by themselves: no task, `onAllTasksComplete: terminatejob`.
fn self_ending() -> Value {
    json!({"onAllTasksComplete": "terminatejob"})
}

/// A 1-minute schedule over an agent restart: each run's job is created once, the run
/// due while no agent ran comes when the new one passes its due time, not before.
#[tokio::test]
async fn each_run_once_over_a_restart() {
    let n = node();
    let t = t0();
    let timer = n.timer();
    let sched = json!({"doNotRunUntil": t, "recurrenceInterval": "PT1M"});
    timer.add(spec("every", sched, self_ending()), t).unwrap();
    assert_eq!(
        n.schedule("every").view().execution_info.next_run_time,
        Some(t)
    );
    let wake = timer.pass(t).await;
    assert_eq!(n.jobs("every"), vec!["every:job-1"]);
    assert_eq!(wake.at, Some(secs(t, 60)));
    let s = n.schedule("every");
    assert_eq!(
        s.view().execution_info.recent_job.unwrap().id,
        "every:job-1"
    );
    assert_eq!(s.view().execution_info.next_run_time, Some(secs(t, 60)));
    // Passes before the next due time, from this process and from a restarted one.
    timer.pass(secs(t, 1)).await;
    drop(timer);
    n.job_becomes("every:job-1", Some(JobState::Completed))
        .await;
    let timer = n.timer();
    timer.pass(secs(t, 30)).await;
    assert_eq!(n.jobs("every"), vec!["every:job-1"], "nothing twice");
    timer.pass(secs(t, 61)).await;
    assert_eq!(n.jobs("every"), vec!["every:job-1", "every:job-2"]);
    assert_eq!(
        n.schedule("every").next_due,
        Some(secs(t, 120)),
        "on the grid, not from when it was created"
    );
}

/// At most one active job: a run that comes due while the last job is active waits for
/// it, and is skipped when the next interval begins first.
#[tokio::test]
async fn one_active_job_at_a_time() {
    let n = node();
    let t = t0();
    let timer = n.timer();
    let sched = json!({"doNotRunUntil": t, "recurrenceInterval": "PT1M"});
    timer.add(spec("busy", sched, json!({})), t).unwrap();
    timer.pass(t).await;
    let wake = timer.pass(secs(t, 60)).await;
    assert_eq!(n.jobs("busy"), vec!["busy:job-1"], "job-1 is still active");
    assert!(wake.poll, "it waits for job-1");
    assert_eq!(wake.at, Some(secs(t, 120)), "at most until the next run");
    // The next interval began: that run is skipped, job-1 still active.
    timer.pass(secs(t, 125)).await;
    let s = n.schedule("busy");
    assert_eq!((s.created, s.skipped), (1, 1));
    n.sched.terminate_job("busy:job-1", "done").await.unwrap();
    n.job_becomes("busy:job-1", Some(JobState::Completed)).await;
    timer.pass(secs(t, 130)).await;
    assert_eq!(n.jobs("busy"), vec!["busy:job-1", "busy:job-2"]);
    assert_eq!(n.schedule("busy").last_due, Some(secs(t, 120)));
}

/// Runs that came due while no agent ran: those of intervals that ended are skipped, the
/// current one too once its start window closed; counted, never created late.
#[tokio::test]
async fn missed_runs_are_skipped() {
    let n = node();
    let t = t0();
    let timer = n.timer();
    let sched = json!({"doNotRunUntil": t, "recurrenceInterval": "PT10M", "startWindow": "PT1M"});
    timer.add(spec("late", sched, self_ending()), t).unwrap();
    timer.pass(t).await;
    n.job_becomes("late:job-1", Some(JobState::Completed)).await;
    drop(timer);
    let timer = n.timer();
    let wake = timer.pass(secs(t, 35 * 60)).await;
    let s = n.schedule("late");
    assert_eq!(
        (s.created, s.skipped),
        (1, 3),
        "the runs at 10, 20 and 30 min"
    );
    assert_eq!(s.next_due, Some(secs(t, 40 * 60)));
    assert_eq!(wake.at, s.next_due);
    // Within the window of the next one: created.
    timer.pass(secs(t, 40 * 60 + 59)).await;
    assert_eq!(n.jobs("late"), vec!["late:job-1", "late:job-2"]);
}

/// No recurrence: one job; the schedule completes when it does. `doNotRunAfter`: no job
/// at or after it, and the schedule then completes.
#[tokio::test]
async fn schedules_complete() {
    let n = node();
    let t = t0();
    let timer = n.timer();
    timer.add(spec("once", json!({}), json!({})), t).unwrap();
    let after =
        json!({"doNotRunUntil": t, "doNotRunAfter": secs(t, 90), "recurrenceInterval": "PT1M"});
    timer.add(spec("until", after, self_ending()), t).unwrap();
    timer.pass(t).await;
    timer.pass(secs(t, 60)).await;
    assert_eq!(n.jobs("once"), vec!["once:job-1"]);
    assert_eq!(
        n.schedule("once").state,
        JobScheduleState::Active,
        "its job is active"
    );
    n.sched.terminate_job("once:job-1", "done").await.unwrap();
    n.job_becomes("once:job-1", Some(JobState::Completed)).await;
    n.job_becomes("until:job-1", Some(JobState::Completed))
        .await;
    timer.pass(secs(t, 61)).await;
    assert_eq!(n.jobs("until"), vec!["until:job-1", "until:job-2"]);
    let once = n.schedule("once").view();
    assert_eq!(once.state, JobScheduleState::Completed);
    assert!(once.execution_info.end_time.is_some());
    assert_eq!(
        n.schedule("until").view().execution_info.next_run_time,
        None,
        "the run at 120 s is past doNotRunAfter"
    );
    n.job_becomes("until:job-2", Some(JobState::Completed))
        .await;
    timer.pass(secs(t, 89)).await;
    assert_eq!(n.schedule("until").state, JobScheduleState::Active);
    timer.pass(secs(t, 90)).await;
    assert_eq!(n.schedule("until").state, JobScheduleState::Completed);
    assert_eq!(n.jobs("until").len(), 2);
}

/// Disabled: no job; enabled again, the run whose window is open comes.
#[tokio::test]
async fn disable_and_enable() {
    let n = node();
    let t = t0();
    let timer = n.timer();
    timer
        .add(spec("d", json!({"doNotRunUntil": t}), json!({})), t)
        .unwrap();
    timer.switch("d", false, t).unwrap();
    timer.pass(secs(t, 5)).await;
    assert!(n.jobs("d").is_empty());
    assert_eq!(n.schedule("d").view().execution_info.next_run_time, None);
    timer.switch("d", true, secs(t, 6)).unwrap();
    timer.pass(secs(t, 7)).await;
    assert_eq!(n.jobs("d"), vec!["d:job-1"]);
}

/// Terminate: no more jobs, the active one ends `TerminateJobSchedule`, then the schedule
/// completes; it then refuses changes.
#[tokio::test]
async fn terminate_ends_the_active_job() {
    let n = node();
    let t = t0();
    let timer = n.timer();
    let sched = json!({"doNotRunUntil": t, "recurrenceInterval": "PT1M"});
    timer.add(spec("term", sched, json!({})), t).unwrap();
    timer.pass(t).await;
    timer
        .end("term", JobScheduleState::Terminating, secs(t, 1))
        .unwrap();
    assert!(matches!(
        timer.end("term", JobScheduleState::Terminating, secs(t, 1)),
        Err(ScheduleError::Terminating(_))
    ));
    timer.pass(secs(t, 2)).await;
    n.job_becomes("term:job-1", Some(JobState::Completed)).await;
    let job = n.store.job("term:job-1").unwrap().unwrap();
    assert_eq!(
        job.execution_info.unwrap().terminate_reason.as_deref(),
        Some(TERMINATE_JOB_SCHEDULE)
    );
    timer.pass(secs(t, 120)).await;
    let s = n.schedule("term");
    assert_eq!(s.state, JobScheduleState::Completed);
    assert_eq!(n.jobs("term").len(), 1, "no job after terminate");
    assert!(matches!(
        timer.update("term", Change::default(), secs(t, 121)),
        Err(ScheduleError::Completed(_))
    ));
    assert!(matches!(
        timer.switch("term", true, secs(t, 121)),
        Err(ScheduleError::Completed(_))
    ));
}

/// Delete: the schedule's jobs go (through the scheduler), then the schedule and its
/// work item directory.
#[tokio::test]
async fn delete_takes_its_jobs() {
    let n = node();
    let t = t0();
    let timer = n.timer();
    let sched = json!({"doNotRunUntil": t, "recurrenceInterval": "PT1M"});
    timer.add(spec("del", sched, self_ending()), t).unwrap();
    timer.pass(t).await;
    n.job_becomes("del:job-1", Some(JobState::Completed)).await;
    timer.pass(secs(t, 60)).await;
    let dir = n.rt.node.layout.job_dir("del:job-2");
    std::fs::create_dir_all(&dir).unwrap();
    timer
        .end("del", JobScheduleState::Deleting, secs(t, 61))
        .unwrap();
    assert!(matches!(
        timer.switch("del", false, secs(t, 61)),
        Err(ScheduleError::Deleting(_))
    ));
    let wake = timer.pass(secs(t, 62)).await;
    assert!(wake.poll, "it waits for its jobs to go");
    n.job_becomes("del:job-1", None).await;
    n.job_becomes("del:job-2", None).await;
    assert!(!dir.exists());
    timer.pass(secs(t, 63)).await;
    assert!(n.store.schedule("del").unwrap().is_none());
    assert!(!n.rt.node.layout.schedule_dir("del").exists());
    assert!(matches!(
        timer.switch("del", true, secs(t, 64)),
        Err(ScheduleError::NotFound(_))
    ));
}

/// An update keeps the jobs made; a new `schedule` counts from the last run.
#[tokio::test]
async fn updates() {
    let n = node();
    let t = t0();
    let timer = n.timer();
    let sched = json!({"doNotRunUntil": t, "recurrenceInterval": "PT1M"});
    timer.add(spec("u", sched, self_ending()), t).unwrap();
    timer.pass(t).await;
    let change = Change {
        schedule: Some(serde_json::from_value(json!({"recurrenceInterval": "PT1H"})).unwrap()),
        job_specification: Some(serde_json::from_value(json!({"priority": 7})).unwrap()),
        metadata: None,
    };
    timer.update("u", change, secs(t, 5)).unwrap();
    let s = n.schedule("u");
    assert_eq!(s.next_due, Some(secs(t, 3600)));
    assert_eq!(s.spec.job_specification.priority, Some(7));
    timer.pass(secs(t, 120)).await;
    assert_eq!(n.jobs("u").len(), 1);
    assert!(matches!(
        timer.add(spec("U", json!({}), json!({})), t),
        Err(ScheduleError::Exists(_))
    ));
}

/// A process killed right after it stored a run's job, before telling the scheduler: the
/// next process neither creates that run again nor leaves the job unseen (an empty
/// `terminatejob` job would otherwise stay active and hold the schedule).
#[tokio::test]
async fn a_job_stored_before_a_crash_is_taken_up() {
    let n = node();
    let t = t0();
    let sched = json!({"doNotRunUntil": t, "recurrenceInterval": "PT1M"});
    let first = n.timer();
    first.add(spec("cut", sched, self_ending()), t).unwrap();
    // What the dead process committed: the run and its job, in one transaction.
    let mut s = n.schedule("cut");
    s.created = 1;
    s.recent_job = Some("cut:job-1".into());
    s.last_due = Some(t);
    s.next_due = Some(secs(t, 60));
    let job = JobView::new(s.spec.job_specification.job("cut:job-1".into()));
    n.store.add_schedule_job(&s, &job, &[]).unwrap();
    drop(first);
    let timer = n.timer();
    timer.pass(secs(t, 1)).await;
    assert_eq!(
        n.jobs("cut"),
        vec!["cut:job-1"],
        "the run is not created again"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        n.store.job("cut:job-1").unwrap().unwrap().state,
        JobState::Active,
        "nobody told the scheduler yet"
    );
    timer.recover();
    n.job_becomes("cut:job-1", Some(JobState::Completed)).await;
    timer.pass(secs(t, 60)).await;
    assert_eq!(n.jobs("cut"), vec!["cut:job-1", "cut:job-2"]);
}
