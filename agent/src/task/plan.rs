//! TaskSpec + JobSpec + PoolSpec + node facts -> [`TaskPlan`]: everything about one task
//! attempt that does not depend on the user's docker flags. Pure.

use crate::node::{NodeLayout, ResolvedUser};
use berth_proto::{
    ContainerHostDataPath, ContainerRegistry, ContainerWorkingDirectory, EnvironmentSetting,
    JobPreparationTask, JobReleaseTask, JobSpec, PoolSpec, StartTask, TaskContainerSettings,
    TaskSpec,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Facts about this node that end up in task environments and container labels.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub node_id: String,
    pub pool_id: String,
    pub account_name: String,
    pub layout: NodeLayout,
}

/// Which kind of Batch task this is; it decides the directories and the env set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskKind {
    Task {
        job_id: String,
        task_id: String,
    },
    /// A job's preparation task; `task_id` is its id (default `jobpreparation`).
    JobPreparation {
        job_id: String,
        task_id: String,
    },
    /// A job's release task; `task_id` is its id (default `jobrelease`).
    JobRelease {
        job_id: String,
        task_id: String,
    },
    StartTask,
}

impl TaskKind {
    /// The job and task ids, for every kind but the start task.
    pub fn job_task(&self) -> Option<(&str, &str)> {
        match self {
            TaskKind::Task { job_id, task_id }
            | TaskKind::JobPreparation { job_id, task_id }
            | TaskKind::JobRelease { job_id, task_id } => Some((job_id, task_id)),
            TaskKind::StartTask => None,
        }
    }
}

/// A host directory bind-mounted at the same path inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMount {
    pub path: PathBuf,
    pub read_only: bool,
}

/// The container half of a plan.
#[derive(Debug, Clone)]
pub struct ContainerPlan {
    pub image: String,
    pub registry: Option<ContainerRegistry>,
    pub run_options: String,
    /// `None`: the image's WORKDIR (`containerImageDefault`).
    pub working_dir: Option<PathBuf>,
    pub mounts: Vec<BatchMount>,
}

#[derive(Debug, Clone)]
pub struct TaskPlan {
    pub kind: TaskKind,
    pub task_dir: PathBuf,
    pub wd: PathBuf,
    /// Job `commonEnvironmentSettings` overridden by task `environmentSettings`, in order.
    pub user_env: Vec<(String, String)>,
    /// What berth itself sets (`AZ_BATCH_*`); it wins over everything the user sets.
    pub batch_env: Vec<(String, String)>,
    pub user: ResolvedUser,
    /// The command line split like a shell, with no shell added; empty for "image default".
    pub command: Vec<String>,
    pub container: Option<ContainerPlan>,
    pub max_wall_clock: Option<Duration>,
    /// `-1` means unlimited.
    pub max_retries: i32,
    pub retention: Option<Duration>,
    /// The GPUs this task may use; the scheduler sets them.
    pub gpus: Vec<berth_proto::NodeGpu>,
    /// Downloaded into `wd` before the first attempt.
    pub resource_files: Vec<berth_proto::ResourceFile>,
    /// Uploaded after the last attempt.
    pub output_files: Vec<berth_proto::OutputFile>,
    /// Pool mode: the service's attempt id, put on the containers as a label.
    pub pool_attempt: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("commandLine cannot be split into words")]
    CommandLine(#[source] shell_words::ParseError),
}

/// Batch's default task retention: 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

fn merge_env(layers: &[&[EnvironmentSetting]]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for layer in layers {
        for e in *layer {
            let v = e.value.clone().unwrap_or_default();
            match out.iter_mut().find(|(k, _)| *k == e.name) {
                Some(slot) => slot.1 = v,
                None => out.push((e.name.clone(), v)),
            }
        }
    }
    out
}

fn split_command(line: &str) -> Result<Vec<String>, PlanError> {
    if line.trim().is_empty() {
        return Ok(Vec::new());
    }
    shell_words::split(line).map_err(PlanError::CommandLine)
}

fn s(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The `AZ_BATCH_*` set (spec §5.1) for a task in `task_dir`; `prep_dir` is the job's
/// preparation task directory, given to every task of a job that has one but itself.
fn batch_env(
    node: &NodeFacts,
    kind: &TaskKind,
    task_dir: &std::path::Path,
    wd: &std::path::Path,
    user: &ResolvedUser,
    prep_dir: Option<&std::path::Path>,
) -> Vec<(String, String)> {
    let l = &node.layout;
    let mut env = vec![
        (
            "AZ_BATCH_ACCOUNT_NAME".to_string(),
            node.account_name.clone(),
        ),
        ("AZ_BATCH_POOL_ID".into(), node.pool_id.clone()),
        ("AZ_BATCH_NODE_ID".into(), node.node_id.clone()),
        ("AZ_BATCH_NODE_IS_DEDICATED".into(), "true".into()),
        ("AZ_BATCH_NODE_ROOT_DIR".into(), s(l.root())),
        ("AZ_BATCH_NODE_SHARED_DIR".into(), s(&l.shared())),
        ("AZ_BATCH_NODE_STARTUP_DIR".into(), s(&l.startup())),
        (
            "AZ_BATCH_NODE_STARTUP_WORKING_DIR".into(),
            s(&l.startup_wd()),
        ),
        ("AZ_BATCH_NODE_MOUNTS_DIR".into(), s(&l.fsmounts())),
        ("AZ_BATCH_TASK_DIR".into(), s(task_dir)),
        ("AZ_BATCH_TASK_WORKING_DIR".into(), s(wd)),
        (
            "AZ_BATCH_CERTIFICATES_DIR".into(),
            s(&task_dir.join("certs")),
        ),
        (
            "AZ_BATCH_TASK_RESERVED_EPHEMERAL_DISK_SPACE_BYTES".into(),
            "1000000".into(),
        ),
        ("AZ_BATCH_TASK_USER".into(), user.name.clone()),
        ("AZ_BATCH_TASK_USER_IDENTITY".into(), user.identity.clone()),
    ];
    if let Some((job_id, task_id)) = kind.job_task() {
        env.push(("AZ_BATCH_JOB_ID".into(), job_id.to_string()));
        env.push(("AZ_BATCH_TASK_ID".into(), task_id.to_string()));
    }
    if let Some(d) = prep_dir {
        env.push(("AZ_BATCH_JOB_PREP_DIR".into(), s(d)));
        env.push(("AZ_BATCH_JOB_PREP_WORKING_DIR".into(), s(&d.join("wd"))));
    }
    env
}

/// Mounts for `containerHostBatchBindMounts`, and the env vars whose paths are not mounted
/// (which Batch removes from the task's environment).
fn batch_mounts(
    c: &TaskContainerSettings,
    node: &NodeFacts,
    task_dir: &std::path::Path,
    prep_dir: Option<&std::path::Path>,
) -> (Vec<BatchMount>, Vec<&'static str>) {
    let l = &node.layout;
    let Some(list) = &c.container_host_batch_bind_mounts else {
        return (
            vec![BatchMount {
                path: l.root().to_path_buf(),
                read_only: false,
            }],
            Vec::new(),
        );
    };
    let mut mounts = Vec::new();
    let mut chosen = Vec::new();
    for m in list {
        chosen.push(m.source);
        let paths = match m.source {
            ContainerHostDataPath::Shared => vec![l.shared()],
            ContainerHostDataPath::Startup => vec![l.startup()],
            ContainerHostDataPath::VfsMounts => vec![l.fsmounts()],
            ContainerHostDataPath::Task => vec![task_dir.to_path_buf()],
            ContainerHostDataPath::JobPrep => {
                prep_dir.map(|d| d.to_path_buf()).into_iter().collect()
            }
            ContainerHostDataPath::Applications => vec![l.applications()],
        };
        mounts.extend(paths.into_iter().map(|path| BatchMount {
            path,
            read_only: m.is_read_only,
        }));
    }
    // With a list, the node root itself is never mounted: no variable may point there.
    let mut dropped = vec!["AZ_BATCH_NODE_ROOT_DIR"];
    let vars: &[(ContainerHostDataPath, &[&'static str])] = &[
        (ContainerHostDataPath::Shared, &["AZ_BATCH_NODE_SHARED_DIR"]),
        (
            ContainerHostDataPath::Startup,
            &[
                "AZ_BATCH_NODE_STARTUP_DIR",
                "AZ_BATCH_NODE_STARTUP_WORKING_DIR",
            ],
        ),
        (
            ContainerHostDataPath::VfsMounts,
            &["AZ_BATCH_NODE_MOUNTS_DIR"],
        ),
        (
            ContainerHostDataPath::Task,
            &[
                "AZ_BATCH_TASK_DIR",
                "AZ_BATCH_TASK_WORKING_DIR",
                "AZ_BATCH_CERTIFICATES_DIR",
            ],
        ),
        (
            ContainerHostDataPath::JobPrep,
            &["AZ_BATCH_JOB_PREP_DIR", "AZ_BATCH_JOB_PREP_WORKING_DIR"],
        ),
    ];
    for (src, names) in vars {
        if !chosen.contains(src) {
            dropped.extend_from_slice(names);
        }
    }
    (mounts, dropped)
}

#[allow(clippy::too_many_arguments)]
fn build(
    kind: TaskKind,
    task_dir: PathBuf,
    wd: PathBuf,
    command_line: &str,
    container: Option<&TaskContainerSettings>,
    env_layers: &[&[EnvironmentSetting]],
    user: ResolvedUser,
    node: &NodeFacts,
    max_wall_clock: Option<Duration>,
    max_retries: i32,
    retention: Option<Duration>,
    prep_dir: Option<PathBuf>,
) -> Result<TaskPlan, PlanError> {
    let prep_dir = prep_dir.as_deref();
    let mut batch_env = batch_env(node, &kind, &task_dir, &wd, &user, prep_dir);
    let container = container.map(|c| {
        let (mounts, dropped) = batch_mounts(c, node, &task_dir, prep_dir);
        batch_env.retain(|(k, _)| !dropped.contains(&k.as_str()));
        ContainerPlan {
            image: c.image_name.clone(),
            registry: c.registry.clone(),
            run_options: c.container_run_options.clone().unwrap_or_default(),
            working_dir: match c
                .working_directory
                .unwrap_or(ContainerWorkingDirectory::TaskWorkingDirectory)
            {
                ContainerWorkingDirectory::TaskWorkingDirectory => Some(wd.clone()),
                ContainerWorkingDirectory::ContainerImageDefault => None,
            },
            mounts,
        }
    });
    Ok(TaskPlan {
        kind,
        command: split_command(command_line)?,
        user_env: merge_env(env_layers),
        batch_env,
        user,
        container,
        task_dir,
        wd,
        max_wall_clock,
        max_retries,
        retention,
        gpus: vec![],
        resource_files: vec![],
        output_files: vec![],
        pool_attempt: None,
    })
}

/// Plans a regular task of `job`.
pub fn task(
    t: &TaskSpec,
    job: &JobSpec,
    node: &NodeFacts,
    user: ResolvedUser,
) -> Result<TaskPlan, PlanError> {
    let task_dir = node.layout.task_dir(&job.id, &t.id);
    let c = t.constraints.clone().unwrap_or_default();
    build(
        TaskKind::Task {
            job_id: job.id.clone(),
            task_id: t.id.clone(),
        },
        task_dir.clone(),
        task_dir.join("wd"),
        &t.command_line,
        t.container_settings.as_ref(),
        &[&job.common_environment_settings, &t.environment_settings],
        user,
        node,
        c.max_wall_clock_time.and_then(|d| d.limit()),
        c.max_task_retry_count
            .unwrap_or_else(|| job.max_task_retry_count()),
        c.retention_time
            .map(|d| d.limit())
            .unwrap_or(Some(DEFAULT_RETENTION)),
        prep_dir(job, node),
    )
    .map(|p| TaskPlan {
        resource_files: t.resource_files.clone(),
        output_files: t.output_files.clone(),
        ..p
    })
}

/// The job's preparation task directory, when it has one.
fn prep_dir(job: &JobSpec, node: &NodeFacts) -> Option<PathBuf> {
    job.job_preparation_task
        .as_ref()
        .map(|p| node.layout.task_dir(&job.id, p.id()))
}

/// Plans a job's preparation task: `workitems/<job>/job-1/<id>`. Its directory stays as
/// long as the job (the job's tasks read it), so it has no retention of its own.
pub fn job_preparation(
    t: &JobPreparationTask,
    job: &JobSpec,
    node: &NodeFacts,
    user: ResolvedUser,
) -> Result<TaskPlan, PlanError> {
    let task_dir = node.layout.task_dir(&job.id, t.id());
    let c = t.constraints.clone().unwrap_or_default();
    build(
        TaskKind::JobPreparation {
            job_id: job.id.clone(),
            task_id: t.id().to_string(),
        },
        task_dir.clone(),
        task_dir.join("wd"),
        &t.command_line,
        t.container_settings.as_ref(),
        &[&job.common_environment_settings, &t.environment_settings],
        user,
        node,
        c.max_wall_clock_time.and_then(|d| d.limit()),
        c.max_task_retry_count.unwrap_or(0),
        None,
        None,
    )
    .map(|p| with_resources(p, &t.resource_files))
}

/// Plans a job's release task: at most 15 minutes, no retries, retention 7 days unless set.
pub fn job_release(
    t: &JobReleaseTask,
    job: &JobSpec,
    node: &NodeFacts,
    user: ResolvedUser,
) -> Result<TaskPlan, PlanError> {
    let task_dir = node.layout.task_dir(&job.id, t.id());
    build(
        TaskKind::JobRelease {
            job_id: job.id.clone(),
            task_id: t.id().to_string(),
        },
        task_dir.clone(),
        task_dir.join("wd"),
        &t.command_line,
        t.container_settings.as_ref(),
        &[&job.common_environment_settings, &t.environment_settings],
        user,
        node,
        Some(t.max_wall_clock()),
        0,
        t.retention_time
            .as_ref()
            .map(|d| d.limit())
            .unwrap_or(Some(DEFAULT_RETENTION)),
        prep_dir(job, node),
    )
    .map(|p| with_resources(p, &t.resource_files))
}

/// Plans the pool's start task: it runs in `startup/`, without job or task ids.
pub fn start_task(
    st: &StartTask,
    node: &NodeFacts,
    user: ResolvedUser,
) -> Result<TaskPlan, PlanError> {
    build(
        TaskKind::StartTask,
        node.layout.startup(),
        node.layout.startup_wd(),
        &st.command_line,
        st.container_settings.as_ref(),
        &[&st.environment_settings],
        user,
        node,
        None,
        st.max_task_retry_count.unwrap_or(0),
        None,
        None,
    )
    .map(|p| with_resources(p, &st.resource_files))
}

fn with_resources(plan: TaskPlan, files: &[berth_proto::ResourceFile]) -> TaskPlan {
    TaskPlan {
        resource_files: files.to_vec(),
        ..plan
    }
}

/// Whether a task can run on this pool: a container pool needs `containerSettings`.
pub fn needs_container_settings(t: &TaskSpec, pool: &PoolSpec) -> bool {
    pool.container_configuration().is_some() && t.container_settings.is_none()
}

/// The final environment: user layers, then `-e` flags, then berth's own variables, which
/// nothing overrides. `-e NAME` without a value copies NAME from the task's environment
/// (never from berth's own process). Returns the list and notes about overridden names.
pub fn final_env(plan: &TaskPlan, option_env: &[String]) -> (Vec<String>, Vec<String>) {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut notes = Vec::new();
    let mut set = |k: &str, v: String, map: &mut BTreeMap<String, String>| {
        if map.insert(k.to_string(), v).is_none() {
            order.push(k.to_string());
        }
    };
    for (k, v) in &plan.user_env {
        set(k, v.clone(), &mut map);
    }
    let known: BTreeMap<String, String> = plan
        .user_env
        .iter()
        .chain(plan.batch_env.iter())
        .cloned()
        .collect();
    let mut unset = Vec::new();
    for e in option_env {
        match e.split_once('=') {
            Some((k, v)) => set(k, v.to_string(), &mut map),
            None => match known.get(e) {
                Some(v) => set(e, v.clone(), &mut map),
                None => unset.push(e.clone()),
            },
        }
    }
    for (k, v) in &plan.batch_env {
        if map.get(k).is_some_and(|old| old != v) {
            notes.push(format!(
                "{k} is set by berth; the task's own value was replaced"
            ));
        }
        set(k, v.clone(), &mut map);
    }
    let mut out: Vec<String> = order.iter().map(|k| format!("{k}={}", map[k])).collect();
    // `-e NAME` with no value anywhere: passed as-is, which leaves NAME unset in the container.
    out.extend(unset);
    (out, notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::load;

    pub(crate) fn node() -> NodeFacts {
        NodeFacts {
            node_id: "n1".into(),
            pool_id: "p1".into(),
            account_name: "berth".into(),
            layout: NodeLayout::new("/nr"),
        }
    }
    pub(crate) fn user() -> ResolvedUser {
        ResolvedUser {
            name: "_azbatch".into(),
            uid: 999,
            gid: 998,
            admin: false,
            identity: "PoolNonAdmin".into(),
        }
    }
    fn t(json: &str) -> TaskSpec {
        load::tasks("f", json).unwrap().items.remove(0).1
    }

    #[test]
    fn env_precedence_job_task_flag_berth() {
        let job = JobSpec {
            id: "j".into(),
            common_environment_settings: vec![
                EnvironmentSetting {
                    name: "A".into(),
                    value: Some("job".into()),
                },
                EnvironmentSetting {
                    name: "B".into(),
                    value: Some("job".into()),
                },
                EnvironmentSetting {
                    name: "AZ_BATCH_TASK_ID".into(),
                    value: Some("spoof".into()),
                },
            ],
            ..Default::default()
        };
        let task = t(
            r#"{"id":"t","commandLine":"x","containerSettings":{"imageName":"i"},
            "environmentSettings":[{"name":"B","value":"task"},{"name":"C","value":"task"},{"name":"E"}]}"#,
        );
        let plan = super::task(&task, &job, &node(), user()).unwrap();
        let (env, notes) = final_env(&plan, &["C=flag".into(), "A".into(), "NOPE".into()]);
        let get = |k: &str| {
            env.iter()
                .find_map(|e| e.strip_prefix(&format!("{k}=")).map(str::to_string))
        };
        assert_eq!(
            get("A").as_deref(),
            Some("job"),
            "-e A copies the task env value"
        );
        assert_eq!(get("B").as_deref(), Some("task"), "task overrides job");
        assert_eq!(get("C").as_deref(), Some("flag"), "-e overrides task");
        assert_eq!(get("E").as_deref(), Some(""), "missing value is empty");
        assert_eq!(
            get("AZ_BATCH_TASK_ID").as_deref(),
            Some("t"),
            "berth's vars win"
        );
        assert_eq!(
            get("AZ_BATCH_TASK_WORKING_DIR").as_deref(),
            Some("/nr/workitems/j/job-1/t/wd")
        );
        assert_eq!(get("AZ_BATCH_JOB_ID").as_deref(), Some("j"));
        assert!(env.contains(&"NOPE".to_string()));
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn working_directory_modes_and_mounts() {
        let job = JobSpec::default_for_run();
        let p = super::task(
            &t(r#"{"id":"t","commandLine":"","containerSettings":{"imageName":"i"}}"#),
            &job,
            &node(),
            user(),
        )
        .unwrap();
        let c = p.container.unwrap();
        assert_eq!(
            c.working_dir,
            Some(PathBuf::from("/nr/workitems/berthjob/job-1/t/wd"))
        );
        assert_eq!(
            c.mounts,
            vec![BatchMount {
                path: "/nr".into(),
                read_only: false
            }]
        );
        assert!(
            p.command.is_empty(),
            "empty commandLine runs the image default"
        );

        let p = super::task(&t(r#"{"id":"t","commandLine":"/bin/sh -c 'echo a  b'","containerSettings":{"imageName":"i",
            "workingDirectory":"containerImageDefault","containerHostBatchBindMounts":[{"source":"Shared","isReadOnly":true}]}}"#), &job, &node(), user()).unwrap();
        assert_eq!(p.command, vec!["/bin/sh", "-c", "echo a  b"]);
        let c = p.container.unwrap();
        assert_eq!(c.working_dir, None);
        assert_eq!(
            c.mounts,
            vec![BatchMount {
                path: "/nr/shared".into(),
                read_only: true
            }]
        );
        assert!(
            !p.batch_env
                .iter()
                .any(|(k, _)| k == "AZ_BATCH_TASK_WORKING_DIR"),
            "unmounted paths lose their vars"
        );
        for gone in ["AZ_BATCH_CERTIFICATES_DIR", "AZ_BATCH_NODE_ROOT_DIR"] {
            assert!(
                !p.batch_env.iter().any(|(k, _)| k == gone),
                "{gone} points where nothing is mounted"
            );
        }
        assert!(p
            .batch_env
            .iter()
            .any(|(k, _)| k == "AZ_BATCH_NODE_SHARED_DIR"));
    }

    #[test]
    fn start_task_has_no_job_or_task_id() {
        let st = StartTask {
            command_line: "echo hi".into(),
            ..Default::default()
        };
        let p = start_task(&st, &node(), user()).unwrap();
        assert_eq!(p.wd, PathBuf::from("/nr/startup/wd"));
        assert!(!p
            .batch_env
            .iter()
            .any(|(k, _)| k == "AZ_BATCH_JOB_ID" || k == "AZ_BATCH_TASK_ID"));
    }

    #[test]
    fn job_preparation_and_release_directories_env_and_mounts() {
        let job: JobSpec = serde_json::from_value(serde_json::json!({"id": "j",
            "jobPreparationTask": {"id": "prep", "commandLine": "p",
                "constraints": {"maxTaskRetryCount": 2}},
            "jobReleaseTask": {"commandLine": "r", "maxWallClockTime": "PT1H"}}))
        .unwrap();
        let env = |p: &TaskPlan, k: &str| {
            p.batch_env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        let prep = job_preparation(
            job.job_preparation_task.as_ref().unwrap(),
            &job,
            &node(),
            user(),
        )
        .unwrap();
        assert_eq!(prep.wd, PathBuf::from("/nr/workitems/j/job-1/prep/wd"));
        assert_eq!(env(&prep, "AZ_BATCH_TASK_ID").as_deref(), Some("prep"));
        assert_eq!(env(&prep, "AZ_BATCH_JOB_PREP_DIR"), None, "not for itself");
        assert_eq!((prep.max_retries, prep.retention), (2, None));
        let rel = job_release(
            job.job_release_task.as_ref().unwrap(),
            &job,
            &node(),
            user(),
        )
        .unwrap();
        assert_eq!(env(&rel, "AZ_BATCH_TASK_ID").as_deref(), Some("jobrelease"));
        assert_eq!(
            env(&rel, "AZ_BATCH_JOB_PREP_WORKING_DIR").as_deref(),
            Some("/nr/workitems/j/job-1/prep/wd")
        );
        assert_eq!(
            rel.max_wall_clock,
            Some(Duration::from_secs(900)),
            "capped at 15 minutes"
        );
        assert_eq!(rel.max_retries, 0);
        let mut t = t(
            r#"{"id":"a","commandLine":"x","containerSettings":{"imageName":"i",
            "containerHostBatchBindMounts":[{"source":"Task"},{"source":"JobPrep","isReadOnly":true}]}}"#,
        );
        let p = task(&t, &job, &node(), user()).unwrap();
        assert_eq!(
            env(&p, "AZ_BATCH_JOB_PREP_DIR").as_deref(),
            Some("/nr/workitems/j/job-1/prep")
        );
        assert_eq!(
            p.container.unwrap().mounts[1],
            BatchMount {
                path: "/nr/workitems/j/job-1/prep".into(),
                read_only: true
            }
        );
        // Without the JobPrep mount, the variables pointing there are dropped.
        t.container_settings
            .as_mut()
            .unwrap()
            .container_host_batch_bind_mounts = Some(vec![serde_json::from_value(
            serde_json::json!({"source": "Task"}),
        )
        .unwrap()]);
        let p = task(&t, &job, &node(), user()).unwrap();
        assert_eq!(env(&p, "AZ_BATCH_JOB_PREP_DIR"), None);
    }

    #[test]
    fn retries_and_retention_defaults() {
        let mut job = JobSpec::default_for_run();
        job.constraints = Some(berth_proto::job::JobConstraints {
            max_task_retry_count: Some(3),
            ..Default::default()
        });
        let p = super::task(&t(r#"{"id":"t","commandLine":"x"}"#), &job, &node(), user()).unwrap();
        assert_eq!(p.max_retries, 3);
        assert_eq!(p.retention, Some(DEFAULT_RETENTION));
        let p = super::task(&t(r#"{"id":"t","commandLine":"x","constraints":{"maxTaskRetryCount":-1,"retentionTime":"PT1S","maxWallClockTime":"PT2S"}}"#), &job, &node(), user()).unwrap();
        assert_eq!(
            (p.max_retries, p.retention, p.max_wall_clock),
            (
                -1,
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(2))
            )
        );
    }
}
