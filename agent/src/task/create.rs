//! TaskPlan + RunOptions -> the `docker create` request. Pure, and golden-tested below.
//!
//! Precedence where the user's flags and berth both set something (documented in the README):
//! * environment: job settings < task settings < `-e` flags < berth's `AZ_BATCH_*` variables;
//! * working directory: `--workdir` wins over `workingDirectory`;
//! * user: `--user` wins over the task's user identity;
//! * mounts: berth's Batch mounts always exist; a `-v`/`--mount` onto the same target is an error;
//! * entrypoint: `--entrypoint` replaces the image's; the command line is always the COMMAND;
//! * labels: `berth.*` is berth's namespace; user labels there are an error;
//! * `--rm` is accepted and has no effect: berth removes every container after saving its
//!   exit code and output;
//! * process limit: `--pids-limit` wins over the node's `default_pids_limit` (the policy
//!   may refuse a higher one before this stage).

use super::plan::{TaskKind, TaskPlan};
use super::run_options::{RunOptions, Volume};
use bollard::models::{ContainerCreateBody, HostConfig};
use std::collections::HashMap;

/// Label keys berth puts on its containers, so that a restarted agent can find them.
pub mod labels {
    pub const PREFIX: &str = "berth.";
    pub const MANAGED: &str = "berth.managed";
    pub const NODE: &str = "berth.node";
    pub const POOL: &str = "berth.pool";
    pub const JOB: &str = "berth.job";
    pub const TASK: &str = "berth.task";
    pub const ATTEMPT: &str = "berth.attempt";
    pub const KIND: &str = "berth.kind";
    /// The UUIDs of the GPUs the task holds, so that a restarted agent gives them back to it.
    pub const GPUS: &str = "berth.gpus";
    /// Pool mode: the service's attempt the container runs (fencing, adoption).
    pub const POOL_ATTEMPT: &str = berth_proto::node_protocol::ATTEMPT_LABEL;
}

/// Who the container belongs to.
#[derive(Debug, Clone)]
pub struct ContainerIdentity {
    pub node_id: String,
    pub pool_id: String,
    /// 0 for the first run, then one more per retry.
    pub attempt: u32,
    /// Pool mode: the service's attempt id (the `berth.pool-attempt` label); none alone.
    pub pool_attempt: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error("containerRunOptions: {flag}: {target:?} is where berth mounts the Batch directory {target:?}; mount elsewhere")]
    MountConflict { flag: String, target: String },
    #[error("containerRunOptions: --label: {key:?} is in berth's own label namespace (berth.*)")]
    ReservedLabel { key: String },
    #[error("the task's containerSettings are missing")]
    NotAContainerTask,
}

/// Docker names allow `[a-zA-Z0-9][a-zA-Z0-9_.-]*`; ids already fit, node ids may not.
fn name_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The fixed container name of one attempt: `berth.<node>.<job>.<task>.<attempt>`.
pub fn container_name(kind: &TaskKind, who: &ContainerIdentity) -> String {
    // Preparation and release ids are task ids no task of the job may use.
    match kind.job_task() {
        Some((job_id, task_id)) => {
            format!(
                "berth.{}.{}.{}.{}",
                name_part(&who.node_id),
                // A schedule's job `s:job-2` (docker refuses `:`): `s.job-2`, which no other
                // job id can spell, since ids have no `.`.
                job_id.replace(':', "."),
                task_id,
                who.attempt
            )
        }
        None => format!("berth.{}.startup.{}", name_part(&who.node_id), who.attempt),
    }
}

pub fn container_labels(kind: &TaskKind, who: &ContainerIdentity) -> HashMap<String, String> {
    let mut l = HashMap::from([
        (labels::MANAGED.to_string(), "true".to_string()),
        (labels::NODE.to_string(), who.node_id.clone()),
        (labels::POOL.to_string(), who.pool_id.clone()),
        (labels::ATTEMPT.to_string(), who.attempt.to_string()),
    ]);
    if let Some(a) = who.pool_attempt {
        l.insert(labels::POOL_ATTEMPT.into(), a.to_string());
    }
    if let Some((job_id, task_id)) = kind.job_task() {
        l.insert(labels::JOB.into(), job_id.to_string());
        l.insert(labels::TASK.into(), task_id.to_string());
    }
    // Only `task` containers are taken over by a restarted agent; the others are rerun.
    let k = match kind {
        TaskKind::Task { .. } => "task",
        TaskKind::JobPreparation { .. } => "jobpreparation",
        TaskKind::JobRelease { .. } => "jobrelease",
        TaskKind::StartTask => "starttask",
    };
    l.insert(labels::KIND.into(), k.into());
    l
}

/// The whole `docker create` request of an attempt, from the plan, the parsed run options,
/// the node's default process limit (`--pids-limit` where the options set none), the
/// task's GPU additions (`gpu::expose::additions`; `Additions::default()` for none) and
/// the image's own `Env` (needed only when GPUs extend the image's library path): [`body`],
/// then the GPUs and the `berth.gpus` label. Pure: the one place a create body is made.
pub fn request(
    plan: &TaskPlan,
    opts: &RunOptions,
    who: &ContainerIdentity,
    pids_default: Option<i64>,
    gpus: &crate::gpu::expose::Additions,
    image_env: &[String],
) -> Result<(ContainerCreateBody, Vec<String>), CreateError> {
    let (mut body, mut notes) = body(plan, opts, who, pids_default)?;
    if *gpus != crate::gpu::expose::Additions::default() {
        notes.extend(crate::gpu::expose::apply(&mut body, gpus, image_env));
    }
    if !plan.gpus.is_empty() {
        let uuids: Vec<&str> = plan.gpus.iter().map(|g| g.uuid.as_str()).collect();
        body.labels
            .get_or_insert_with(Default::default)
            .insert(labels::GPUS.into(), uuids.join(","));
    }
    Ok((body, notes))
}

/// The create body, plus notes worth logging (ignored flags, overridden variables).
/// `pids_default` is the node's `default_pids_limit`.
pub fn body(
    plan: &TaskPlan,
    opts: &RunOptions,
    who: &ContainerIdentity,
    pids_default: Option<i64>,
) -> Result<(ContainerCreateBody, Vec<String>), CreateError> {
    let c = plan
        .container
        .as_ref()
        .ok_or(CreateError::NotAContainerTask)?;
    let mut notes = opts.notes.clone();

    let (env, env_notes) = super::plan::final_env(plan, &opts.env);
    notes.extend(env_notes);

    let mut host: HostConfig = opts.host.clone();
    // The agent removes containers itself after saving the exit code and the output.
    host.auto_remove = Some(false);
    if host.pids_limit.is_none() {
        host.pids_limit = pids_default;
    }

    let batch_targets: Vec<String> = c
        .mounts
        .iter()
        .map(|m| m.path.to_string_lossy().into_owned())
        .collect();
    let same = |t: &str| {
        batch_targets
            .iter()
            .any(|b| b.trim_end_matches('/') == t.trim_end_matches('/'))
    };
    let mut binds: Vec<String> = c
        .mounts
        .iter()
        .map(|m| {
            let p = m.path.to_string_lossy();
            format!("{p}:{p}:{}", if m.read_only { "ro" } else { "rw" })
        })
        .collect();
    let mut anonymous = Vec::new();
    for v in &opts.volumes {
        match v {
            Volume::Bind { spec, target } => {
                if same(target) {
                    return Err(CreateError::MountConflict {
                        flag: "--volume".into(),
                        target: target.clone(),
                    });
                }
                binds.push(spec.clone());
            }
            Volume::Anonymous { target } => {
                if same(target) {
                    return Err(CreateError::MountConflict {
                        flag: "--volume".into(),
                        target: target.clone(),
                    });
                }
                anonymous.push(target.clone());
            }
        }
    }
    for m in &opts.mounts {
        if let Some(t) = &m.target {
            if same(t) {
                return Err(CreateError::MountConflict {
                    flag: "--mount".into(),
                    target: t.clone(),
                });
            }
        }
    }
    host.binds = Some(binds);
    if !opts.mounts.is_empty() {
        host.mounts = Some(opts.mounts.clone());
    }

    let mut labels = container_labels(&plan.kind, who);
    for (k, v) in &opts.labels {
        if k.starts_with(labels::PREFIX) {
            return Err(CreateError::ReservedLabel { key: k.clone() });
        }
        labels.insert(k.clone(), v.clone());
    }

    let working_dir = match (&opts.workdir, &c.working_dir) {
        (Some(w), _) => Some(w.clone()),
        (None, Some(w)) => Some(w.to_string_lossy().into_owned()),
        (None, None) => None,
    };

    let body = ContainerCreateBody {
        image: Some(c.image.clone()),
        cmd: if plan.command.is_empty() {
            None
        } else {
            Some(plan.command.clone())
        },
        // As `docker create --entrypoint X`: one element, not split; "" resets the image's.
        entrypoint: opts.entrypoint.as_ref().map(|e| vec![e.clone()]),
        env: Some(env),
        user: Some(
            opts.user
                .clone()
                .unwrap_or_else(|| plan.user.container_user()),
        ),
        working_dir,
        labels: Some(labels),
        hostname: opts.hostname.clone(),
        domainname: opts.domainname.clone(),
        stop_signal: opts.stop_signal.clone(),
        stop_timeout: opts.stop_timeout,
        volumes: if anonymous.is_empty() {
            None
        } else {
            Some(anonymous)
        },
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        open_stdin: Some(false),
        host_config: Some(host),
        ..Default::default()
    };
    Ok((body, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{NodeLayout, ResolvedUser};
    use crate::task::plan::{self, NodeFacts};
    use crate::task::run_options;
    use berth_proto::{load, JobSpec};

    fn node() -> NodeFacts {
        NodeFacts {
            node_id: "node-1".into(),
            pool_id: "p".into(),
            account_name: "berth".into(),
            layout: NodeLayout::new("/nr"),
        }
    }
    fn who() -> ContainerIdentity {
        ContainerIdentity {
            node_id: "node-1".into(),
            pool_id: "p".into(),
            attempt: 2,
            pool_attempt: None,
        }
    }
    fn user(admin: bool) -> ResolvedUser {
        ResolvedUser {
            name: "_azbatch".into(),
            uid: 999,
            gid: 998,
            admin,
            identity: "PoolNonAdmin".into(),
        }
    }
    fn make(
        task_json: &str,
        admin: bool,
    ) -> Result<(ContainerCreateBody, Vec<String>), CreateError> {
        let t = load::tasks("f", task_json).unwrap().items.remove(0).1;
        let p = plan::task(&t, &JobSpec::default_for_run(), &node(), user(admin)).unwrap();
        let o = run_options::parse(&p.container.as_ref().unwrap().run_options).unwrap();
        body(&p, &o, &who(), Some(4096))
    }

    /// The seed sample becomes exactly this create body (golden, as JSON on the wire).
    #[test]
    fn seed_sample_golden() {
        let (b, notes) = make(r#"{"id":"sampletask","commandLine":"/bin/sh -c \"echo 'hello world' > $AZ_BATCH_TASK_WORKING_DIR/output.txt\"",
            "containerSettings":{"imageName":"myimage","containerRunOptions":"--rm --workdir /"}}"#, false).unwrap();
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["Image"], "myimage");
        assert_eq!(
            v["Cmd"],
            serde_json::json!([
                "/bin/sh",
                "-c",
                "echo 'hello world' > $AZ_BATCH_TASK_WORKING_DIR/output.txt"
            ])
        );
        assert!(
            v.get("Entrypoint").is_none(),
            "the image's ENTRYPOINT is kept"
        );
        assert_eq!(
            v["WorkingDir"], "/",
            "--workdir wins over taskWorkingDirectory"
        );
        assert_eq!(v["User"], "999:998");
        assert_eq!(v["HostConfig"]["Binds"], serde_json::json!(["/nr:/nr:rw"]));
        assert_eq!(v["HostConfig"]["AutoRemove"], false);
        assert_eq!(v["Labels"]["berth.task"], "sampletask");
        assert_eq!(v["Labels"]["berth.attempt"], "2");
        assert!(v["Env"].as_array().unwrap().contains(&serde_json::json!(
            "AZ_BATCH_TASK_WORKING_DIR=/nr/workitems/berthjob/job-1/sampletask/wd"
        )));
        assert!(notes.iter().any(|n| n.contains("--rm")));
        assert_eq!(
            container_name(
                &TaskKind::Task {
                    job_id: "j".into(),
                    task_id: "t".into()
                },
                &who()
            ),
            "berth.node-1.j.t.2"
        );
        assert_eq!(
            container_name(
                &TaskKind::Task {
                    job_id: "nightly:job-3".into(),
                    task_id: "t".into()
                },
                &who()
            ),
            "berth.node-1.nightly.job-3.t.2",
            "a job schedule's job"
        );
    }

    #[test]
    fn defaults_user_admin_and_entrypoint() {
        let (b, _) = make(
            r#"{"id":"t","commandLine":"","containerSettings":{"imageName":"i"}}"#,
            true,
        )
        .unwrap();
        assert_eq!(
            b.user.as_deref(),
            Some("0:0"),
            "admin elevation runs as root"
        );
        assert_eq!(b.cmd, None, "empty commandLine keeps the image's CMD");
        assert_eq!(
            b.working_dir.as_deref(),
            Some("/nr/workitems/berthjob/job-1/t/wd")
        );
        let (b, _) = make(
            r#"{"id":"t","commandLine":"-c 'echo hi'","containerSettings":{"imageName":"i",
            "containerRunOptions":"--entrypoint /bin/sh -u 5:5 -w /tmp"}}"#,
            false,
        )
        .unwrap();
        assert_eq!(b.entrypoint, Some(vec!["/bin/sh".to_string()]));
        assert_eq!(b.cmd, Some(vec!["-c".to_string(), "echo hi".to_string()]));
        assert_eq!(
            b.user.as_deref(),
            Some("5:5"),
            "--user wins over the identity"
        );
        assert_eq!(b.working_dir.as_deref(), Some("/tmp"));
        let (b, _) = make(r#"{"id":"t","commandLine":"","containerSettings":{"imageName":"i","containerRunOptions":"--entrypoint=''",
            "workingDirectory":"containerImageDefault"}}"#, false).unwrap();
        assert_eq!(b.entrypoint, Some(vec![String::new()]));
        assert_eq!(
            b.working_dir, None,
            "containerImageDefault keeps the image WORKDIR"
        );
    }

    #[test]
    fn mount_conflicts_and_reserved_labels() {
        let e = make(r#"{"id":"t","commandLine":"","containerSettings":{"imageName":"i","containerRunOptions":"-v /x:/nr"}}"#, false).unwrap_err();
        assert!(
            matches!(e, CreateError::MountConflict { ref flag, .. } if flag == "--volume"),
            "{e}"
        );
        let e = make(r#"{"id":"t","commandLine":"","containerSettings":{"imageName":"i","containerRunOptions":"--mount type=tmpfs,dst=/nr/"}}"#, false).unwrap_err();
        assert!(matches!(e, CreateError::MountConflict { .. }));
        let (b, _) = make(r#"{"id":"t","commandLine":"","containerSettings":{"imageName":"i","containerRunOptions":"-v /data:/nr/shared/data:ro -l team=x"}}"#, false).unwrap();
        assert_eq!(
            b.host_config.unwrap().binds.unwrap(),
            vec!["/nr:/nr:rw", "/data:/nr/shared/data:ro"]
        );
        assert_eq!(b.labels.unwrap()["team"], "x");
        let e = make(r#"{"id":"t","commandLine":"","containerSettings":{"imageName":"i","containerRunOptions":"-l berth.task=spoof"}}"#, false).unwrap_err();
        assert_eq!(
            e,
            CreateError::ReservedLabel {
                key: "berth.task".into()
            }
        );
    }

    /// The node's default process limit applies unless the task's own options set one;
    /// a task's own (higher, or none: 0/-1) wins here, the policy having allowed it.
    #[test]
    fn pids_limit_default_and_the_tasks_own() {
        let t = |opts: &str| {
            format!(
                r#"{{"id":"t","commandLine":"","containerSettings":{{"imageName":"i","containerRunOptions":"{opts}"}}}}"#
            )
        };
        let pids = |opts: &str, default: Option<i64>| {
            let t = load::tasks("f", &t(opts)).unwrap().items.remove(0).1;
            let p = plan::task(&t, &JobSpec::default_for_run(), &node(), user(false)).unwrap();
            let o = run_options::parse(&p.container.as_ref().unwrap().run_options).unwrap();
            let (b, _) = body(&p, &o, &who(), default).unwrap();
            b.host_config.unwrap().pids_limit
        };
        let cases = [
            ("", Some(4096), Some(4096)),
            ("", None, None),
            ("--pids-limit 64", Some(4096), Some(64)),
            ("--pids-limit 10000", Some(4096), Some(10000)),
            ("--pids-limit -1", Some(4096), Some(-1)),
            ("--pids-limit 0", Some(4096), Some(0)),
            ("--pids-limit 64", None, Some(64)),
        ];
        for (opts, default, want) in cases {
            assert_eq!(pids(opts, default), want, "{opts:?} with {default:?}");
        }
    }
}
