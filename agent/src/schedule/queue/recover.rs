//! RECOVERY: what an earlier agent process left, taken over at start (`recover`), and
//! what `on_shutdown = "leave"` leaves to the next one (`log_left`).

use super::*;

/// How long recovery lets the engine settle before it decides that a `created` container
/// will not start: a start request sent just before the earlier process died is
/// carried out all the same.
const START_SETTLE: Duration = Duration::from_secs(2);

/// The newest container of a task an earlier process left `running`, as the engine
/// sees it after the settle.
enum Left<'a> {
    /// It started (running, or exited since): taken over.
    Started {
        container: &'a crate::engine::ContainerSummary,
        started: Option<chrono::DateTime<Utc>>,
    },
    /// Created for this attempt, never started.
    NeverStarted { attempt: u32 },
    /// None, or gone meanwhile.
    Gone,
}

/// Asks the engine what became of `c`. When it cannot say, a container listed `created`
/// counts as never started: following it would read an exit that never happened.
async fn left_behind<'a>(rt: &NodeContext, c: &'a crate::engine::ContainerSummary) -> Left<'a> {
    let listed = c.state.clone();
    let (status, started) = match rt.engine.inspect(&c.id).await {
        Ok(s) => (s.status, s.started_at),
        Err(crate::engine::EngineError::NotFound(_)) => return Left::Gone,
        Err(e) => {
            tracing::warn!(container = ?c.id, error = %Chain(&e), "cannot inspect a container the earlier agent left");
            (listed, None)
        }
    };
    if status.as_deref() == Some("created") {
        let attempt = c.label(labels::ATTEMPT).parse().unwrap_or(0);
        Left::NeverStarted { attempt }
    } else {
        Left::Started {
            container: c,
            started,
        }
    }
}

impl Queue {
    /// Says what `on_shutdown = "leave"` leaves: each running task and its container.
    /// The engine gets a moment to answer; the agent's exit does not wait on it.
    pub(super) async fn log_left(&self) {
        let mut left: Vec<Key> = self.running.keys().cloned().collect();
        left.sort();
        if left.is_empty() {
            tracing::info!("no task runs; nothing is left running");
            return;
        }
        let rt = &self.sh.rt;
        let listed = tokio::time::timeout(
            Duration::from_secs(2),
            rt.engine.list_labelled(&[
                (labels::MANAGED, "true"),
                (labels::NODE, &rt.node.node_id),
                (labels::KIND, "task"),
            ]),
        )
        .await;
        let containers = match listed {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::warn!(error = %Chain(&e), "cannot list the task containers left running");
                vec![]
            }
            Err(_) => {
                tracing::warn!("the engine did not list the task containers left running in 2 s");
                vec![]
            }
        };
        let label = |c: &crate::engine::ContainerSummary, k: &str| -> String { c.label(k).into() };
        for (job, task) in &left {
            let newest = containers
                .iter()
                .filter(|c| {
                    label(c, labels::JOB).eq_ignore_ascii_case(job)
                        && label(c, labels::TASK).eq_ignore_ascii_case(task)
                })
                .max_by_key(|c| label(c, labels::ATTEMPT).parse::<u32>().unwrap_or(0));
            match newest {
                Some(c) => tracing::info!(
                    job = %label(c, labels::JOB),
                    task = %label(c, labels::TASK),
                    container = c.id.as_str(),
                    "task left running for the next agent"
                ),
                None => tracing::info!(
                    job = %job,
                    task = %task,
                    "task left for the next agent with no container yet; it is queued again there"
                ),
            }
        }
        tracing::info!(
            tasks = left.len(),
            "leaving: nothing was stopped or removed"
        );
    }
}

impl Shared {
    /// Sends a task an earlier agent process left `running` back to the queue, one more
    /// in its `requeueCount`: the cut-off attempt may have run in part (a start that
    /// came late), so a second run is never silent. It runs again from `attempt`, the
    /// one cut off, so the failed attempts before it stay counted in `retryCount`.
    pub(super) fn requeue(&self, mut view: TaskView, attempt: u32, why: &str) {
        let count = view
            .execution_info
            .as_ref()
            .map_or(0, |e| e.requeue_count)
            .saturating_add(1);
        tracing::warn!(job = %view.job_id, task = %view.spec.id, attempt, requeue_count = count, "{why}; the task goes back to the queue");
        view.state = TaskState::Active;
        view.state_transition_time = Utc::now();
        view.execution_info = Some(ExecutionInfo {
            retry_count: i32::try_from(attempt).unwrap_or(i32::MAX),
            requeue_count: count,
            ..Default::default()
        });
        if let Err(e) = self.store.put_task(&view) {
            tracing::error!(error = %Chain(&e), "cannot record the task's state");
        }
    }
}

impl Queue {
    /// What an earlier agent process left. Each task the store has `running` is matched
    /// with its newest container (by labels): one that started is taken over (followed if
    /// running, collected if it exited meanwhile); one still `created` once the engine
    /// settled, or none when the task never started, sends the task back to the queue
    /// with its `requeueCount` raised; one whose container is gone after it started ends
    /// failed, because its exit code is lost. No task runs twice unseen. Task containers
    /// that match no running task are removed. Returns the slots the taken-over tasks use.
    pub(super) async fn recover(&mut self) -> u32 {
        let sh = self.sh.clone();
        let rt = &sh.rt;
        // A preparation or release task that was running never completed: it runs again
        // (its container, if any, went with pool start's clean-up).
        for job in sh.store.jobs().unwrap_or_default() {
            let Ok(Some(mut rec)) = sh.store.job_on_node(&job.spec.id) else {
                continue;
            };
            let running = |i: &Option<berth_proto::JobTaskExecutionInfo>| {
                i.as_ref()
                    .is_some_and(|i| i.run.state == berth_proto::node::StartTaskState::Running)
            };
            let before = rec.clone();
            if running(&rec.preparation) {
                rec.preparation = None;
            }
            if running(&rec.release) {
                rec.release = None;
            }
            if rec != before {
                tracing::info!(job = %job.spec.id, "a job preparation or release task was cut off by the agent's stop; it runs again");
                if let Err(e) = sh.store.put_job_on_node(&job.spec.id, &rec) {
                    tracing::error!(error = %Chain(&e), "cannot record it");
                }
            }
        }
        let containers = match rt
            .engine
            .list_labelled(&[
                (labels::MANAGED, "true"),
                (labels::NODE, &rt.node.node_id),
                (labels::KIND, "task"),
            ])
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %Chain(&e), "cannot list this node's containers; tasks left running are not recovered");
                vec![]
            }
        };
        let left = sh
            .store
            .tasks_in(&[TaskState::Running, TaskState::Preparing])
            .unwrap_or_else(|e| {
                tracing::error!(error = %Chain(&e), "cannot read the tasks left running");
                vec![]
            });
        let label = |c: &crate::engine::ContainerSummary, k: &str| -> String { c.label(k).into() };
        // A container still `created` may have a start in flight from the process that
        // died: the engine completes a request whose client is gone. Removing it now would
        // race that start and run the task twice. Let the engine settle, then ask it again
        // (an inspect waits while a start holds the container).
        if containers
            .iter()
            .any(|c| c.state.as_deref() == Some("created"))
        {
            tokio::time::sleep(START_SETTLE).await;
        }
        let mut used = 0;
        let mut adopted: Vec<String> = vec![];
        for st in left {
            let view = st.view;
            let (job_id, task_id) = (view.job_id.clone(), view.spec.id.clone());
            let newest = containers
                .iter()
                .filter(|c| {
                    label(c, labels::JOB).eq_ignore_ascii_case(&job_id)
                        && label(c, labels::TASK).eq_ignore_ascii_case(&task_id)
                })
                .max_by_key(|c| label(c, labels::ATTEMPT).parse::<u32>().unwrap_or(0));
            let found = match newest {
                Some(c) => left_behind(rt, c).await,
                None => Left::Gone,
            };
            let job = sh.store.job(&job_id).ok().flatten();
            match (found, job) {
                (
                    Left::Started {
                        container: c,
                        started,
                    },
                    Some(job),
                ) => {
                    let id = c.id.clone();
                    let attempt = label(c, labels::ATTEMPT).parse().unwrap_or(0);
                    let uuids = label(c, labels::GPUS);
                    let gpus = rt
                        .gpus
                        .reserve_uuids(uuids.split(',').filter(|u| !u.is_empty()));
                    tracing::info!(job = %job_id, task = %task_id, container = %id, attempt, "taking over a task the earlier agent ran");
                    adopted.push(id.clone());
                    used += view.spec.required_slots();
                    let resume = task::Resume::Container {
                        container_id: id,
                        attempt,
                        started,
                    };
                    self.spawn(view, &job, gpus, Some(resume));
                }
                // Removed below, before anything is scheduled: a start that comes later
                // still finds no container to run.
                (Left::NeverStarted { attempt }, _) => sh.requeue(
                    view,
                    attempt,
                    "the task's container was created but not started before the agent stopped",
                ),
                (Left::Started { .. }, None) => {
                    sh.requeue(view, 0, "the task's job is gone from the store")
                }
                (Left::Gone, _) => {
                    let ran = rt
                        .node
                        .layout
                        .task_dir(&job_id, &task_id)
                        .join(crate::task::logs::STDOUT)
                        .symlink_metadata()
                        .is_ok();
                    if !ran {
                        // A create that was in flight may still add a container: it is
                        // never started, and the next attempt's create replaces it.
                        sh.requeue(view, 0, "the task had no container when the agent stopped");
                        continue;
                    }
                    tracing::warn!(job = %job_id, task = %task_id, "task's container is gone after the agent restarted; its exit code is lost");
                    let mut info = task::failed_before_start(
                        FailureCode::TaskEnded,
                        "the agent stopped while this task ran and its container was gone when it came back: the exit code is lost; the task is not run again".into(),
                    );
                    if let Some(f) = info.failure_info.as_mut() {
                        f.category = berth_proto::FailureCategory::ServerError;
                    }
                    // The attempts that ran and the requeues before stay counted.
                    if let Some(e) = &view.execution_info {
                        info.retry_count = e.retry_count;
                        info.last_retry_time = e.last_retry_time;
                        info.requeue_count = e.requeue_count;
                    }
                    let mut view = view;
                    view.state_transition_time = Utc::now();
                    view.state = TaskState::Completed;
                    view.execution_info = Some(info);
                    if let Err(e) = sh.store.put_task(&view) {
                        tracing::error!(error = %Chain(&e), "cannot record the task's state");
                    }
                }
            }
        }
        for c in containers {
            let id = c.id;
            if !adopted.contains(&id) {
                tracing::info!(container = %id, names = ?c.names, "removing a container no running task owns");
                if let Err(e) = rt.engine.remove(&id).await {
                    tracing::warn!(container = %id, error = %Chain(&e), "could not remove it");
                }
            }
        }
        used
    }
}
