//! Checks that types alone cannot express: Batch's id rules, value ranges, and the rules
//! that tie tasks to their job and pool. Every problem names its JSON path and says what
//! is accepted; all problems are reported, not just the first. Fields berth refuses come
//! from one place, the field table ([`crate::fields`]).

use crate::common::{
    ContainerHostDataPath, ContainerWorkingDirectory, EnvironmentSetting, TaskContainerSettings,
    UserIdentity,
};
use crate::files::{OutputFile, ResourceFile};
use crate::id::check_id;
use crate::image_ref::ImageRef;
use crate::job::{JobReleaseTask, JobSpec};
use crate::pool::{PoolSpec, StartTask};
use crate::task::TaskSpec;
use std::collections::HashMap;

/// One validation problem at a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Every refused field present in `spec` (of table shape `shape`, at `path`), from the
/// field table alone: `is not supported: <reason>`.
fn refused<T: serde::Serialize>(p: &mut Problems, path: &str, shape: &str, spec: &T) {
    // Serializing a spec cannot fail: its maps all have string keys.
    let Ok(v) = serde_json::to_value(spec) else {
        return;
    };
    for (at, reason) in crate::fields::refused_in(path, shape, &v) {
        p.add(at, format!("is not supported: {reason}"));
    }
}

/// Batch's limit on the combined length of `dependsOn.taskIds`.
const MAX_DEPENDENCY_CHARS: usize = 64_000;

/// A NUL byte can reach neither a process (argv, environment) nor the engine.
fn no_nul(p: &mut Problems, path: String, s: &str) -> bool {
    if s.contains('\0') {
        p.add(path, "must not contain NUL characters");
        return false;
    }
    true
}

fn env(p: &mut Problems, path: &str, list: &[EnvironmentSetting]) {
    for (i, e) in list.iter().enumerate() {
        if e.name.is_empty() || e.name.contains('=') || e.name.contains('\0') {
            p.add(
                format!("{path}[{i}].name"),
                format!(
                    "{:?} is not a valid variable name (non-empty, no '=' or NUL)",
                    e.name
                ),
            );
        }
        if e.value.as_deref().is_some_and(|v| v.contains('\0')) {
            p.add(
                format!("{path}[{i}].value"),
                "must not contain NUL characters",
            );
        }
    }
}

fn container(p: &mut Problems, path: &str, c: &TaskContainerSettings) {
    if no_nul(p, format!("{path}.imageName"), &c.image_name) {
        if let Err(e) = ImageRef::parse(&c.image_name) {
            p.add(format!("{path}.imageName"), e);
        }
    }
    if let Some(o) = &c.container_run_options {
        no_nul(p, format!("{path}.containerRunOptions"), o);
    }
    if let Some(mounts) = &c.container_host_batch_bind_mounts {
        let has_task = mounts
            .iter()
            .any(|m| m.source == ContainerHostDataPath::Task);
        if !has_task
            && c.working_directory != Some(ContainerWorkingDirectory::ContainerImageDefault)
        {
            p.add(
                format!("{path}.workingDirectory"),
                "must be \"containerImageDefault\" when containerHostBatchBindMounts does not mount \"Task\"",
            );
        }
    }
}

fn identity(p: &mut Problems, path: &str, u: &UserIdentity, pool: &PoolSpec) {
    match (&u.username, &u.auto_user) {
        (Some(_), Some(_)) => p.add(path, "give either username or autoUser, not both"),
        (Some(name), None) if pool.user(name).is_none() => p.add(
            format!("{path}.username"),
            format!("{name:?} is not one of the pool's userAccounts"),
        ),
        _ => {}
    }
}

fn retry_count(p: &mut Problems, path: &str, n: Option<i32>) {
    if let Some(n) = n {
        if n < -1 {
            p.add(
                path,
                format!("{n} is not accepted; use -1 (unlimited) or a count >= 0"),
            );
        }
    }
}

/// An `http://` or `https://` URL with a host; the message never repeats the URL's query.
fn http_url(p: &mut Problems, path: String, u: &crate::common::SecretUrl) {
    let s = u.expose();
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        _ if s.contains('\0') || s.chars().any(char::is_whitespace) => {
            p.add(path, "must not contain NUL or whitespace characters")
        }
        Some(r) if !r.is_empty() && !r.starts_with(['/', '?', '#']) => {}
        _ => p.add(
            path,
            format!(
                "{} is not an http:// or https:// URL with a host",
                u.redacted()
            ),
        ),
    }
}

fn resource_files(p: &mut Problems, path: &str, list: &[ResourceFile]) {
    for (i, f) in list.iter().enumerate() {
        let at = format!("{path}.resourceFiles[{i}]");
        let sources = [
            f.auto_storage_container_name.is_some(),
            f.storage_container_url.is_some(),
            f.http_url.is_some(),
        ];
        match sources.iter().filter(|s| **s).count() {
            1 => {}
            0 => p.add(
                &at,
                "needs one source: httpUrl, storageContainerUrl (or autoStorageContainerName)",
            ),
            _ => p.add(
                &at,
                "has more than one source; give exactly one of httpUrl, storageContainerUrl, autoStorageContainerName",
            ),
        }
        if let Some(u) = &f.http_url {
            http_url(p, format!("{at}.httpUrl"), u);
            if f.file_path.as_deref().is_none_or(str::is_empty) {
                p.add(
                    format!("{at}.filePath"),
                    "is required with httpUrl: the file's path relative to the task working directory",
                );
            }
            if f.blob_prefix.is_some() {
                p.add(
                    format!("{at}.blobPrefix"),
                    "is only allowed with storageContainerUrl",
                );
            }
        }
        if let Some(u) = &f.storage_container_url {
            http_url(p, format!("{at}.storageContainerUrl"), u);
        }
        if let Some(fp) = &f.file_path {
            if let Err(e) = crate::files::contained_path(fp) {
                p.add(format!("{at}.filePath"), e);
            }
        }
        if let Some(b) = &f.blob_prefix {
            no_nul(p, format!("{at}.blobPrefix"), b);
        }
        if let Some(m) = &f.file_mode {
            if let Err(e) = crate::files::parse_mode(m) {
                p.add(format!("{at}.fileMode"), e);
            }
        }
    }
}

fn output_files(p: &mut Problems, path: &str, list: &[OutputFile]) {
    for (i, f) in list.iter().enumerate() {
        let at = format!("{path}.outputFiles[{i}]");
        if f.file_pattern.trim().is_empty() {
            p.add(format!("{at}.filePattern"), "must not be empty");
        } else if no_nul(p, format!("{at}.filePattern"), &f.file_pattern) {
            if let Err(e) = glob_syntax(&f.file_pattern) {
                p.add(format!("{at}.filePattern"), e);
            }
        }
        let Some(c) = &f.destination.container else {
            p.add(
                format!("{at}.destination.container"),
                "is required: berth uploads to a blob container (containerUrl with a SAS)",
            );
            continue;
        };
        http_url(
            p,
            format!("{at}.destination.container.containerUrl"),
            &c.container_url,
        );
        if let Some(bp) = &c.path {
            if no_nul(p, format!("{at}.destination.container.path"), bp) && bp.starts_with('/') {
                p.add(
                    format!("{at}.destination.container.path"),
                    "must not start with '/': it is a blob name or prefix inside the container",
                );
            }
        }
        for (j, h) in c.upload_headers.iter().enumerate() {
            let ok_name = !h.name.is_empty()
                && h.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b));
            if !ok_name {
                p.add(
                    format!("{at}.destination.container.uploadHeaders[{j}].name"),
                    format!("{:?} is not an HTTP header name", h.name),
                );
            }
            if h.value
                .as_deref()
                .is_some_and(|v| v.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f))
            {
                p.add(
                    format!("{at}.destination.container.uploadHeaders[{j}].value"),
                    "must not contain control characters",
                );
            }
        }
    }
}

/// The glob syntax berth matches with (`glob::Pattern`, which the agent uses too).
fn glob_syntax(pattern: &str) -> Result<(), String> {
    glob::Pattern::new(pattern).map(|_| ()).map_err(|e| {
        format!(
            "{pattern:?} is not a valid pattern: {} (at character {})",
            e.msg, e.pos
        )
    })
}

/// Validates a pool on its own.
pub fn pool(pool: &PoolSpec) -> Vec<Problem> {
    let mut p = Problems::default();
    refused(&mut p, "$", crate::fields::POOL, pool);
    if let Err(e) = check_id(&pool.id) {
        p.add("$.id", e);
    }
    if let Some(n) = pool.task_slots_per_node {
        if !(1..=256).contains(&n) {
            p.add(
                "$.taskSlotsPerNode",
                format!("{n} is out of range; accepted: 1 to 256"),
            );
        }
    }
    if let Some(cc) = pool.container_configuration() {
        for (i, name) in cc.container_image_names.iter().enumerate() {
            if let Err(e) = ImageRef::parse(name) {
                p.add(format!("$.virtualMachineConfiguration.containerConfiguration.containerImageNames[{i}]"), e);
            }
        }
    }
    let mut seen = HashMap::new();
    for (i, u) in pool.user_accounts.iter().enumerate() {
        let path = format!("$.userAccounts[{i}]");
        let valid = !u.name.is_empty()
            && u.name.chars().count() <= 20
            && u.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            && !u.name.starts_with('-');
        if !valid {
            p.add(
                format!("{path}.name"),
                format!("{:?} is not accepted: 1-20 letters, digits, '_', '-' or '.', not starting with '-'", u.name),
            );
        }
        if seen.insert(u.name.to_ascii_lowercase(), i).is_some() {
            p.add(
                format!("{path}.name"),
                format!("{:?} appears twice", u.name),
            );
        }
        if let Some(l) = &u.linux_user_configuration {
            if l.uid.is_some() != l.gid.is_some() {
                p.add(
                    format!("{path}.linuxUserConfiguration"),
                    "give both uid and gid, or neither",
                );
            }
            if l.uid == Some(0) || l.gid == Some(0) {
                p.add(
                    format!("{path}.linuxUserConfiguration"),
                    "uid and gid 0 are root's; use elevationLevel \"admin\" instead",
                );
            }
        }
    }
    if let Some(st) = &pool.start_task {
        start_task(&mut p, "$.startTask", st, pool);
    }
    p.0
}

fn start_task(p: &mut Problems, path: &str, st: &StartTask, pool: &PoolSpec) {
    no_nul(p, format!("{path}.commandLine"), &st.command_line);
    if let Some(c) = &st.container_settings {
        container(p, &format!("{path}.containerSettings"), c);
    } else if st.command_line.trim().is_empty() {
        p.add(
            format!("{path}.commandLine"),
            "must not be empty for a start task that runs on the host",
        );
    }
    env(
        p,
        &format!("{path}.environmentSettings"),
        &st.environment_settings,
    );
    if let Some(u) = &st.user_identity {
        identity(p, &format!("{path}.userIdentity"), u, pool);
    }
    retry_count(
        p,
        &format!("{path}.maxTaskRetryCount"),
        st.max_task_retry_count,
    );
    resource_files(p, path, &st.resource_files);
}

/// A job preparation or release task's shared fields.
#[allow(clippy::too_many_arguments)]
fn job_task(
    p: &mut Problems,
    path: &str,
    id: Option<&String>,
    command_line: &str,
    c: Option<&TaskContainerSettings>,
    e: &[EnvironmentSetting],
    u: Option<&UserIdentity>,
    pool: &PoolSpec,
) {
    if let Some(id) = id {
        if let Err(e) = check_id(id) {
            p.add(format!("{path}.id"), e);
        }
    }
    no_nul(p, format!("{path}.commandLine"), command_line);
    match c {
        Some(c) => container(p, &format!("{path}.containerSettings"), c),
        None if command_line.trim().is_empty() => p.add(
            format!("{path}.commandLine"),
            "must not be empty for a task without containerSettings",
        ),
        None => {}
    }
    env(p, &format!("{path}.environmentSettings"), e);
    if let Some(u) = u {
        identity(p, &format!("{path}.userIdentity"), u, pool);
    }
}

/// `exitConditions` against its job (spec §2.5): a `dependencyAction` needs
/// `usesTaskDependencies`, a `jobAction` needs `onTaskFailure` `performexitoptionsjobaction`
/// (Batch refuses both with 400); ranges must run upwards.
fn exit_conditions(p: &mut Problems, path: &str, e: &crate::exit::ExitConditions, job: &JobSpec) {
    use crate::exit::ExitOptions;
    let mut options: Vec<(String, &ExitOptions)> = vec![];
    for (i, m) in e.exit_codes.iter().enumerate() {
        options.push((
            format!("{path}.exitCodes[{i}].exitOptions"),
            &m.exit_options,
        ));
    }
    for (i, r) in e.exit_code_ranges.iter().enumerate() {
        if r.end < r.start {
            p.add(
                format!("{path}.exitCodeRanges[{i}]"),
                format!(
                    "start {} is above end {}; a range is start..end, inclusive",
                    r.start, r.end
                ),
            );
        }
        options.push((
            format!("{path}.exitCodeRanges[{i}].exitOptions"),
            &r.exit_options,
        ));
    }
    for (name, o) in [
        ("preProcessingError", &e.pre_processing_error),
        ("fileUploadError", &e.file_upload_error),
        ("default", &e.default),
    ] {
        if let Some(o) = o {
            options.push((format!("{path}.{name}"), o));
        }
    }
    for (at, o) in options {
        if o.dependency_action.is_some() && !job.uses_task_dependencies {
            p.add(
                format!("{at}.dependencyAction"),
                format!(
                    "TaskDependenciesNotSpecifiedOnJob: job {:?} does not set usesTaskDependencies",
                    job.id
                ),
            );
        }
        match o.job_action {
            Some(_) if !job.performs_exit_job_actions() => p.add(
                format!("{at}.jobAction"),
                format!(
                    "job {:?} does not set onTaskFailure to performexitoptionsjobaction, so a jobAction would have no effect (Batch refuses it too)",
                    job.id
                ),
            ),
            _ => {}
        }
    }
}

/// `priority` and `maxParallelTasks` (Batch's ranges); also checked on job update.
pub fn job_limits_problems(priority: Option<i32>, max_parallel: Option<i32>) -> Vec<Problem> {
    let mut p = Problems::default();
    job_limits(&mut p, priority, max_parallel);
    p.0
}

fn job_limits(p: &mut Problems, priority: Option<i32>, max_parallel: Option<i32>) {
    if let Some(n) = priority.filter(|n| !(-1000..=1000).contains(n)) {
        p.add(
            "$.priority",
            format!("{n} is out of range; use -1000 to 1000"),
        );
    }
    if let Some(n) = max_parallel.filter(|n| *n == 0 || *n < -1) {
        p.add(
            "$.maxParallelTasks",
            format!("{n} is not accepted; use -1 (no limit) or 1 or more"),
        );
    }
}

/// Validates a job against the pool it runs on (users named by its preparation and
/// release tasks must exist there).
pub fn job(job: &JobSpec, pool: &PoolSpec) -> Vec<Problem> {
    let mut p = Problems::default();
    refused(&mut p, "$", crate::fields::JOB, job);
    if let Err(e) = check_id(&job.id) {
        p.add("$.id", e);
    }
    p.0.extend(job_fields(job, pool));
    p.0
}

/// Validates a job's fields but its id: a job stored already (its id was checked when
/// it was added), or a job schedule's `jobSpecification`, whose jobs' ids hold a `:`.
pub fn job_fields(job: &JobSpec, pool: &PoolSpec) -> Vec<Problem> {
    let mut p = Problems::default();
    env(
        &mut p,
        "$.commonEnvironmentSettings",
        &job.common_environment_settings,
    );
    if let Some(c) = &job.constraints {
        retry_count(
            &mut p,
            "$.constraints.maxTaskRetryCount",
            c.max_task_retry_count,
        );
    }
    job_limits(&mut p, job.priority, job.max_parallel_tasks);
    if let Some(t) = &job.job_preparation_task {
        let path = "$.jobPreparationTask";
        job_task(
            &mut p,
            path,
            t.id.as_ref(),
            &t.command_line,
            t.container_settings.as_ref(),
            &t.environment_settings,
            t.user_identity.as_ref(),
            pool,
        );
        if let Some(c) = &t.constraints {
            retry_count(
                &mut p,
                &format!("{path}.constraints.maxTaskRetryCount"),
                c.max_task_retry_count,
            );
        }
        resource_files(&mut p, path, &t.resource_files);
    }
    if let Some(t) = &job.job_release_task {
        let path = "$.jobReleaseTask";
        if job.job_preparation_task.is_none() {
            p.add(path, "is allowed only together with a jobPreparationTask");
        }
        job_task(
            &mut p,
            path,
            t.id.as_ref(),
            &t.command_line,
            t.container_settings.as_ref(),
            &t.environment_settings,
            t.user_identity.as_ref(),
            pool,
        );
        if let Some(prep) = &job.job_preparation_task {
            if prep.id().eq_ignore_ascii_case(t.id()) {
                p.add(
                    format!("{path}.id"),
                    format!(
                        "{:?} is also the jobPreparationTask's id; give them different ids",
                        t.id()
                    ),
                );
            }
        }
        if let Some(d) = t.max_wall_clock_time.as_ref() {
            if d.limit().is_none_or(|d| d > JobReleaseTask::MAX_WALL_CLOCK) {
                p.add(
                    format!("{path}.maxWallClockTime"),
                    format!("{} is longer than the maximum, PT15M", d.to_iso()),
                );
            }
        }
        resource_files(&mut p, path, &t.resource_files);
    }
    if let Some(m) = &job.job_manager_task {
        // Checked as the task berth queues for it; refused fields were checked above.
        let spec = m.task_spec(pool.task_slots());
        p.0.extend(
            task("$.jobManagerTask", &spec, job, pool)
                .into_iter()
                .filter(|q| !q.message.starts_with("is not supported")),
        );
    }
    p.0
}

/// Batch's error code when a task id is the job's preparation or release task id.
pub fn id_taken_by_job_task(id: &str, job: &JobSpec) -> Option<&'static str> {
    if let Some(t) = &job.job_preparation_task {
        if t.id().eq_ignore_ascii_case(id) {
            return Some("TaskIdSameAsJobPreparationTask");
        }
    }
    if let Some(t) = &job.job_release_task {
        if t.id().eq_ignore_ascii_case(id) {
            return Some("TaskIdSameAsJobReleaseTask");
        }
    }
    None
}

/// Validates one task against its job and pool. `path` is where the task sits in its file.
pub fn task(path: &str, t: &TaskSpec, job: &JobSpec, pool: &PoolSpec) -> Vec<Problem> {
    let mut p = Problems::default();
    refused(&mut p, path, crate::fields::TASK, t);
    if let Err(e) = check_id(&t.id) {
        p.add(format!("{path}.id"), e);
    }
    if let Some(code) = id_taken_by_job_task(&t.id, job) {
        p.add(
            format!("{path}.id"),
            format!(
                "{code}: {:?} is the id of the job's {}",
                t.id,
                if code == "TaskIdSameAsJobPreparationTask" {
                    "jobPreparationTask"
                } else {
                    "jobReleaseTask"
                }
            ),
        );
    }
    if let Some(d) = &t.display_name {
        if d.chars().count() > 1024 {
            p.add(
                format!("{path}.displayName"),
                "is longer than 1024 characters",
            );
        }
    }
    no_nul(&mut p, format!("{path}.commandLine"), &t.command_line);
    match &t.container_settings {
        Some(c) => container(&mut p, &format!("{path}.containerSettings"), c),
        None if t.command_line.trim().is_empty() => p.add(
            format!("{path}.commandLine"),
            "must not be empty for a task without containerSettings",
        ),
        None => {}
    }
    env(
        &mut p,
        &format!("{path}.environmentSettings"),
        &t.environment_settings,
    );
    if let Some(c) = &t.constraints {
        retry_count(
            &mut p,
            &format!("{path}.constraints.maxTaskRetryCount"),
            c.max_task_retry_count,
        );
    }
    if let Some(n) = t.required_slots {
        if n < 1 {
            p.add(
                format!("{path}.requiredSlots"),
                format!("{n} is not accepted; use 1 or more"),
            );
        } else if n as u32 > pool.task_slots() {
            // Batch accepts this and the task never runs; berth says so up front.
            p.add(
                format!("{path}.requiredSlots"),
                format!("{n} is more than the pool's taskSlotsPerNode ({}), so the task could never run", pool.task_slots()),
            );
        }
    }
    if let Some(u) = &t.user_identity {
        identity(&mut p, &format!("{path}.userIdentity"), u, pool);
    }
    if let Some(e) = &t.exit_conditions {
        exit_conditions(&mut p, &format!("{path}.exitConditions"), e, job);
    }
    if let Some(d) = &t.depends_on {
        if !job.uses_task_dependencies {
            p.add(
                format!("{path}.dependsOn"),
                format!(
                    "TaskDependenciesNotSpecifiedOnJob: job {:?} does not set usesTaskDependencies",
                    job.id
                ),
            );
        }
        let total: usize = d.task_ids.iter().map(|s| s.len()).sum();
        if total > MAX_DEPENDENCY_CHARS {
            p.add(
                format!("{path}.dependsOn.taskIds"),
                format!(
                    "TaskDependencyListTooLong: {total} characters, at most {MAX_DEPENDENCY_CHARS}"
                ),
            );
        }
        for (i, id) in d.task_ids.iter().enumerate() {
            if let Err(e) = check_id(id) {
                p.add(format!("{path}.dependsOn.taskIds[{i}]"), e);
            } else if id.eq_ignore_ascii_case(&t.id) {
                p.add(
                    format!("{path}.dependsOn.taskIds[{i}]"),
                    "a task cannot depend on itself",
                );
            }
        }
        for (i, r) in d.task_id_ranges.iter().enumerate() {
            if r.start < 0 || r.end < r.start {
                p.add(
                    format!("{path}.dependsOn.taskIdRanges[{i}]"),
                    format!(
                        "start {} and end {} must satisfy 0 <= start <= end",
                        r.start, r.end
                    ),
                );
            } else if r.end - r.start >= 10_000 {
                p.add(
                    format!("{path}.dependsOn.taskIdRanges[{i}]"),
                    "spans more than 10000 ids",
                );
            }
        }
    }
    resource_files(&mut p, path, &t.resource_files);
    output_files(&mut p, path, &t.output_files);
    p.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load;

    fn t(json: &str) -> TaskSpec {
        load::tasks("f", json).unwrap().items.remove(0).1
    }

    fn msgs(v: Vec<Problem>) -> Vec<String> {
        v.into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn exit_conditions_need_what_their_job_must_set() {
        let task = t(r#"{"id":"a","commandLine":"x","exitConditions":{
            "exitCodes":[{"code":3,"exitOptions":{"dependencyAction":"satisfy","jobAction":"terminate"}}],
            "exitCodeRanges":[{"start":5,"end":4,"exitOptions":{}}],
            "default":{"jobAction":"disable"}}}"#);
        let plain = JobSpec {
            id: "j".into(),
            ..Default::default()
        };
        let pool = PoolSpec::default_for_run();
        assert_eq!(
            msgs(super::task("$", &task, &plain, &pool)),
            vec![
                "$.exitConditions.exitCodeRanges[0]: start 5 is above end 4; a range is start..end, inclusive",
                "$.exitConditions.exitCodes[0].exitOptions.dependencyAction: TaskDependenciesNotSpecifiedOnJob: job \"j\" does not set usesTaskDependencies",
                "$.exitConditions.exitCodes[0].exitOptions.jobAction: job \"j\" does not set onTaskFailure to performexitoptionsjobaction, so a jobAction would have no effect (Batch refuses it too)",
                "$.exitConditions.default.jobAction: job \"j\" does not set onTaskFailure to performexitoptionsjobaction, so a jobAction would have no effect (Batch refuses it too)",
            ]
        );
        let acting: JobSpec = serde_json::from_str(
            r#"{"id":"j","usesTaskDependencies":true,"onTaskFailure":"performExitOptionsJobAction"}"#,
        )
        .unwrap();
        assert_eq!(
            msgs(super::task("$", &task, &acting, &pool)),
            vec![
                "$.exitConditions.exitCodeRanges[0]: start 5 is above end 4; a range is start..end, inclusive",
            ]
        );
        // A wrong value names what is accepted.
        let bad = load::tasks(
            "f",
            r#"{"id":"a","commandLine":"x","exitConditions":{"default":{"dependencyAction":"wait"}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("satisfy, block"), "{bad}");
    }

    /// A refused field anywhere in a task, a job or a pool is a problem at its JSON path,
    /// with the table's reason; the same spec without it has none.
    #[test]
    fn refused_fields_are_problems_at_their_paths() {
        let pool = PoolSpec::default_for_run();
        let job = JobSpec::default_for_run();
        let task = t(
            r#"{"id":"a","commandLine":"x","multiInstanceSettings":{"numberOfInstances":2},
            "containerSettings":{"imageName":"busybox","registry":{"username":"u","identityReference":{"resourceId":"r"}}}}"#,
        );
        assert_eq!(
            msgs(super::task("$.value[1]", &task, &job, &pool)),
            [
                "$.value[1].containerSettings.registry.identityReference: is not supported: berth has no managed identity; give username and password",
                "$.value[1].multiInstanceSettings: is not supported: a berth node runs each task on itself alone; multi-instance (MPI) tasks span several nodes",
            ]
        );
        let fine = t(
            r#"{"id":"a","commandLine":"x","displayName":"d","affinityInfo":{"affinityId":"n"},
            "applicationPackageReferences":[],"multiInstanceSettings":null}"#,
        );
        assert!(super::task("$", &fine, &job, &pool).is_empty());

        let bad_job = j(r#"{"id":"j","jobPreparationTask":{"commandLine":"true",
                "containerSettings":{"imageName":"busybox","registry":{"identityReference":{}}}},
            "jobReleaseTask":{"commandLine":"true","resourceFiles":[{"httpUrl":"https://a/b","filePath":"b","identityReference":{}}]},
            "jobManagerTask":{"id":"m","commandLine":"x","containerSettings":{"imageName":"busybox","registry":{"identityReference":{}}}}}"#);
        assert_eq!(
            msgs(super::job(&bad_job, &pool))
                .iter()
                .map(|m| m.split(": is not supported").next().unwrap())
                .collect::<Vec<_>>(),
            [
                "$.jobPreparationTask.containerSettings.registry.identityReference",
                "$.jobReleaseTask.resourceFiles[0].identityReference",
                "$.jobManagerTask.containerSettings.registry.identityReference",
            ]
        );

        let bad_pool: PoolSpec = load::pool(
            "p",
            r#"{"id":"p","virtualMachineConfiguration":{"containerConfiguration":{"type":"dockerCompatible",
                "containerRegistries":[{"registryServer":"r","identityReference":{}}]}},
            "startTask":{"commandLine":"true","resourceFiles":[{"autoStorageContainerName":"c"}]}}"#,
        )
        .unwrap()
        .items
        .remove(0)
        .1;
        assert_eq!(
            msgs(super::pool(&bad_pool)),
            [
                "$.virtualMachineConfiguration.containerConfiguration.containerRegistries[0].identityReference: is not supported: berth has no managed identity; give username and password",
                "$.startTask.resourceFiles[0].autoStorageContainerName: is not supported: a berth node has no linked storage account; use storageContainerUrl with a SAS",
            ]
        );
    }

    #[test]
    fn good_task_passes() {
        let task = t(r#"{"id":"a","commandLine":"","containerSettings":{"imageName":"busybox"}}"#);
        assert!(super::task(
            "$",
            &task,
            &JobSpec::default_for_run(),
            &PoolSpec::default_for_run()
        )
        .is_empty());
    }

    #[test]
    fn task_files_are_checked() {
        let task = t(r#"{"id":"f","commandLine":"x",
            "resourceFiles":[
              {"httpUrl":"https://a/b?sig=SECRET"},
              {"httpUrl":"ftp://a/b?sig=SECRET","filePath":"ok","blobPrefix":"p"},
              {"storageContainerUrl":"https://a/c","httpUrl":"https://a/b","filePath":"x"},
              {"autoStorageContainerName":"c"},
              {"filePath":"x"},
              {"storageContainerUrl":"https://a/c","filePath":"../up","fileMode":"999"},
              {"storageContainerUrl":"https://a/c?sig=1","filePath":"fine/dir","fileMode":"0755","blobPrefix":"p/"}],
            "outputFiles":[
              {"filePattern":"","destination":{"container":{"containerUrl":"https://a/c"}}},
              {"filePattern":"a[b","destination":{}},
              {"filePattern":"**/*.txt","destination":{"container":{"containerUrl":"nope","path":"/abs",
                "uploadHeaders":[{"name":"bad name","value":"v"},{"name":"x-ms-meta-a","value":"a\nb"}]}},
               "uploadOptions":{"uploadCondition":"taskSuccess"}},
              {"filePattern":"../std*.txt","destination":{"container":{"containerUrl":"https://a/c?sig=1","path":"p"}}}]}"#);
        let m = msgs(super::task(
            "$",
            &task,
            &JobSpec::default_for_run(),
            &PoolSpec::default_for_run(),
        ));
        let want = [
            "$.resourceFiles[0].filePath: is required with httpUrl",
            "$.resourceFiles[1].httpUrl: ftp://a/b?<redacted> is not an http:// or https:// URL",
            "$.resourceFiles[1].blobPrefix: is only allowed with storageContainerUrl",
            "$.resourceFiles[2]: has more than one source",
            "$.resourceFiles[3].autoStorageContainerName: is not supported",
            "$.resourceFiles[4]: needs one source",
            "$.resourceFiles[5].filePath: \"../up\" has a \"..\" component",
            "$.resourceFiles[5].fileMode: \"999\" is not an octal file mode",
            "$.outputFiles[0].filePattern: must not be empty",
            "$.outputFiles[1].filePattern: \"a[b\" is not a valid pattern",
            "$.outputFiles[1].destination.container: is required",
            "$.outputFiles[2].destination.container.containerUrl: nope is not an http",
            "$.outputFiles[2].destination.container.path: must not start with '/'",
            "$.outputFiles[2].destination.container.uploadHeaders[0].name: \"bad name\" is not an HTTP header name",
            "$.outputFiles[2].destination.container.uploadHeaders[1].value: must not contain control characters",
        ];
        for w in want {
            assert!(
                m.iter().any(|x| x.starts_with(w)),
                "missing {w:?} in {m:#?}"
            );
        }
        assert_eq!(m.len(), want.len(), "{m:#?}");
        assert!(!m.iter().any(|x| x.contains("SECRET")));
    }

    #[test]
    fn bad_values_are_named() {
        let task = t(r#"{"id":"a b","commandLine":"x","requiredSlots":4,
            "constraints":{"maxTaskRetryCount":-2},
            "environmentSettings":[{"name":"A=B","value":"1"}],
            "userIdentity":{"username":"nobody"},
            "dependsOn":{"taskIds":["a b"]},
            "containerSettings":{"imageName":"Bad/Name"}}"#);
        let m = msgs(super::task(
            "$",
            &task,
            &JobSpec::default_for_run(),
            &PoolSpec::default_for_run(),
        ));
        let joined = m.join("\n");
        for want in [
            "$.id:",
            "$.requiredSlots: 4 is more than the pool's taskSlotsPerNode (1)",
            "$.constraints.maxTaskRetryCount: -2",
            "$.environmentSettings[0].name",
            "$.userIdentity.username: \"nobody\"",
            "$.dependsOn: TaskDependenciesNotSpecifiedOnJob",
            "$.dependsOn.taskIds[0]",
            "$.containerSettings.imageName",
        ] {
            assert!(joined.contains(want), "missing {want:?} in\n{joined}");
        }
    }

    #[test]
    fn pool_rules() {
        let p: PoolSpec = load::pool(
            "p",
            r#"{"id":"p","taskSlotsPerNode":0,
            "userAccounts":[{"name":"u","password":"x","linuxUserConfiguration":{"uid":5}}]}"#,
        )
        .unwrap()
        .items
        .remove(0)
        .1;
        let m = msgs(pool(&p)).join("\n");
        assert!(m.contains("$.taskSlotsPerNode: 0 is out of range"), "{m}");
        assert!(
            m.contains("$.userAccounts[0].linuxUserConfiguration: give both"),
            "{m}"
        );
    }

    fn j(json: &str) -> JobSpec {
        load::job("j", json).unwrap().items.remove(0).1
    }

    #[test]
    fn job_preparation_and_release_rules() {
        let pool = PoolSpec::default_for_run();
        let ok = j(r#"{"id":"j","jobPreparationTask":{"commandLine":"true"},
            "jobReleaseTask":{"commandLine":"true","maxWallClockTime":"PT15M"}}"#);
        assert!(job(&ok, &pool).is_empty());
        assert_eq!(
            ok.job_preparation_task.as_ref().unwrap().id(),
            "jobpreparation"
        );
        assert_eq!(ok.job_release_task.as_ref().unwrap().id(), "jobrelease");
        assert!(ok.job_preparation_task.as_ref().unwrap().wait_for_success());

        let bad = j(r#"{"id":"j",
            "jobPreparationTask":{"id":"same","commandLine":" ",
                "constraints":{"maxTaskRetryCount":-3},
                "userIdentity":{"username":"ghost"}},
            "jobReleaseTask":{"id":"SAME","commandLine":"x","maxWallClockTime":"PT16M"}}"#);
        let m = msgs(job(&bad, &pool)).join("\n");
        for want in [
            "$.jobPreparationTask.commandLine: must not be empty",
            "$.jobPreparationTask.constraints.maxTaskRetryCount: -3",
            "$.jobPreparationTask.userIdentity.username: \"ghost\"",
            "$.jobReleaseTask.id: \"SAME\" is also the jobPreparationTask's id",
            "$.jobReleaseTask.maxWallClockTime: PT16M is longer than the maximum, PT15M",
        ] {
            assert!(m.contains(want), "missing {want:?} in\n{m}");
        }

        let alone = j(r#"{"id":"j","jobReleaseTask":{"commandLine":"x"}}"#);
        assert_eq!(
            msgs(job(&alone, &pool)),
            ["$.jobReleaseTask: is allowed only together with a jobPreparationTask"]
        );

        let task = t(r#"{"id":"JobPreparation","commandLine":"x"}"#);
        let m = msgs(super::task("$", &task, &ok, &pool)).join("\n");
        assert!(m.contains("$.id: TaskIdSameAsJobPreparationTask"), "{m}");
        assert_eq!(
            id_taken_by_job_task("jobrelease", &ok),
            Some("TaskIdSameAsJobReleaseTask")
        );
        assert_eq!(id_taken_by_job_task("t1", &ok), None);
    }
}
