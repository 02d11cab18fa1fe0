//! One attempt of a task that runs on the host (a start task without containerSettings, or
//! a task on a pool without a container configuration): no shell, the task's user, its
//! working directory and environment, output into the task directory.

use super::exit::Finished;
use super::plan::TaskPlan;
use super::{logs, stop_requested, NodeContext};
use crate::error_chain::Chain;
use berth_proto::FailureCode;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::process::Stdio;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub async fn attempt(
    rt: &NodeContext,
    plan: &TaskPlan,
    deadline: Option<Instant>,
    cancel: &CancellationToken,
) -> Finished {
    let fail = |code, message: String| Finished::NotStarted {
        code,
        message,
        details: vec![],
        container: None,
    };
    if plan.command.is_empty() {
        return fail(FailureCode::Unknown, "commandLine is empty".into());
    }
    let is_root = nix::unistd::Uid::effective().is_root();
    let owner = (is_root && !plan.user.admin).then_some((plan.user.uid, plan.user.gid));
    let (out, err) = match logs::open(&plan.task_dir, owner).await {
        Ok(f) => f,
        Err(e) => {
            return fail(
                super::exit::file_code(&e, FailureCode::ResourceDirectoryCreateFailed),
                format!("cannot create stdout.txt/stderr.txt: {}", Chain(&e)),
            )
        }
    };
    // Relative program paths resolve against the working directory, as in Batch.
    let program = &plan.command[0];
    let program = if program.contains('/') && !program.starts_with('/') {
        plan.wd.join(program).to_string_lossy().into_owned()
    } else {
        program.clone()
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&plan.command[1..])
        .current_dir(&plan.wd)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(out.into_std().await)
        .stderr(err.into_std().await)
        .process_group(0)
        .kill_on_drop(true);
    let wd = plan.wd.to_string_lossy().into_owned();
    let shared = rt.node.layout.shared().to_string_lossy().into_owned();
    cmd.env("PATH", format!("{HOST_PATH}:{shared}:{wd}"))
        .env("HOME", &wd)
        .env("PWD", &wd)
        .env("USER", &plan.user.name);
    let (mut env, _) = super::plan::final_env(plan, &[]);
    // A host task on a GPU node sees the GPUs it was given, as a container task does.
    if !rt.gpus.inventory.gpus.is_empty() {
        env.extend(
            crate::gpu::expose::visible_env(&plan.gpus)
                .into_iter()
                .map(|(k, v)| format!("{k}={v}")),
        );
    }
    for e in env {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    if is_root && !plan.user.admin {
        cmd.uid(plan.user.uid).gid(plan.user.gid);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return fail(
                FailureCode::Unknown,
                format!("cannot start {program:?}: {e}"),
            )
        }
    };
    let pgid = child.id().map(|p| Pid::from_raw(p as i32));
    let (stopped, exited) = tokio::select! {
        r = child.wait() => (None, Some(r)),
        stop = stop_requested(rt, deadline, cancel) => (Some(stop), None),
    };
    let status = match exited {
        Some(r) => r,
        None => {
            if let Some(pg) = pgid {
                if let Err(e) = killpg(pg, Signal::SIGTERM) {
                    tracing::debug!(error = %e, "SIGTERM");
                }
                if tokio::time::timeout(rt.stop_grace, child.wait())
                    .await
                    .is_err()
                {
                    if let Err(e) = killpg(pg, Signal::SIGKILL) {
                        tracing::debug!(error = %e, "SIGKILL");
                    }
                }
            }
            child.wait().await
        }
    };
    let code = status.ok().map(|s| {
        use std::os::unix::process::ExitStatusExt;
        s.code()
            .map(i64::from)
            .unwrap_or_else(|| 128 + i64::from(s.signal().unwrap_or(0)))
    });
    match stopped {
        Some(stop) => stop.finished(code, None),
        None => Finished::Exited {
            code: code.unwrap_or(-1),
            oom_kills: 0,
            engine_oom: false,
            container: None,
        },
    }
}
