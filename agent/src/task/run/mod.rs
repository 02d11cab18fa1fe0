//! One container attempt: pull -> create -> attach -> start -> wait (under the wall clock
//! and cancellation) -> output saved -> inspect -> remove. Removal always happens once the
//! container exists, whatever went wrong.

mod follow;
mod user;

pub use follow::adopt;
use follow::{engine_back, follow, ENGINE_OUTAGE};

use super::crash::{self, Point};
use super::create::{self, ContainerIdentity};
use super::exit::Finished;
use super::oom::OomProbe;
use super::plan::TaskPlan;
use super::run_options::{self, PullPolicy};
use super::{logs, stop_requested, NodeContext};
use crate::backoff::Backoff;
use crate::engine::EngineError;
use crate::error_chain::{chain, Cause, Chain};
use crate::gpu::expose;
use berth_proto::{ContainerInfo, FailureCode, NameValuePair};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn not_started(
    code: FailureCode,
    message: impl Into<String>,
    details: Vec<NameValuePair>,
    container: Option<ContainerInfo>,
) -> Finished {
    Finished::NotStarted {
        code,
        message: message.into(),
        details,
        container,
    }
}

fn nv(name: &str, value: impl Into<String>) -> NameValuePair {
    NameValuePair {
        name: name.into(),
        value: value.into(),
    }
}

/// Engine failures at create/start: invalid settings, unless the engine itself is at fault.
fn engine_failure(stage: &str, e: &EngineError, image: &str) -> (FailureCode, String) {
    let msg = format!("{stage}: {}", e.message());
    let code = match e {
        EngineError::ImageNotFound(m) => {
            return (
                FailureCode::ContainerInvalidImage,
                format!("{stage}: {m} ({image})"),
            );
        }
        e if e.is_engine_down() => FailureCode::ContainerMiscError,
        _ => FailureCode::ContainerInvalidSettings,
    };
    (code, msg)
}

/// Runs one attempt of a container task. `deadline` is the wall-clock limit.
pub async fn attempt(
    rt: &NodeContext,
    plan: &TaskPlan,
    who: &ContainerIdentity,
    deadline: Option<Instant>,
    cancel: &CancellationToken,
) -> Finished {
    let Some(c) = plan.container.as_ref() else {
        return not_started(
            FailureCode::ContainerTaskSettingsNotFound,
            "the task has no containerSettings",
            vec![],
            None,
        );
    };
    let opts = match run_options::parse(&c.run_options).and_then(|o| {
        super::policy::check(&rt.policy, &o, rt.node.layout.root(), rt.pids_limit).map(|()| o)
    }) {
        Ok(o) => o,
        Err(e) => {
            return not_started(
                FailureCode::ContainerInvalidSettings,
                e.to_string(),
                vec![],
                None,
            )
        }
    };
    let gpus = expose::additions(
        &rt.gpus.inventory,
        rt.gpus.exposure,
        &plan.gpus,
        expose::task_chose_gpus(&opts.host),
    );
    let request =
        |image_env: &[String]| create::request(plan, &opts, who, rt.pids_limit, &gpus, image_env);
    let invalid = |e: create::CreateError| {
        not_started(
            FailureCode::ContainerInvalidSettings,
            e.to_string(),
            vec![],
            None,
        )
    };
    let early = (!gpus.needs_image_env()).then(|| request(&[]));
    if let Some(Err(e)) = early {
        return invalid(e);
    }
    let pull = rt.images.ensure(
        &c.image,
        c.registry.as_ref(),
        opts.pull.unwrap_or(PullPolicy::Missing),
        opts.platform.as_deref(),
    );
    let pulled = tokio::select! {
        r = pull => r,
        stop = stop_requested(rt, deadline, cancel) => return stop.finished(None, None),
    };
    if let Err(e) = pulled {
        return not_started(
            e.code(),
            chain(&e),
            vec![nv("ContainerImage", &c.image)],
            None,
        );
    }

    // Only GPUs that extend the image's library path need the image's Env, which needs
    // the image: the request is made once it is there; without them, before the pull, so
    // bad settings fail at once.
    let image_env = if gpus.needs_image_env() {
        rt.engine.image_env(&c.image).await.unwrap_or_else(|e| {
            tracing::warn!(error = %Chain(&e), "cannot read the image's environment");
            vec![]
        })
    } else {
        vec![]
    };
    let (body, notes) = match early.unwrap_or_else(|| request(&image_env)) {
        Ok(b) => b,
        Err(e) => return invalid(e),
    };
    for n in notes {
        tracing::info!("{n}");
    }

    let name = create::container_name(&plan.kind, who);
    crash::at(Point::BeforeCreate, plan);
    if crash::is_armed(Point::AfterCreateSent) {
        // As for a start below: the request leaves, the process dies without its answer.
        let (engine, name, body) = (rt.engine.clone(), name.clone(), body.clone());
        let platform = opts.platform.clone();
        tokio::spawn(async move { engine.create(&name, body, platform.as_deref()).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        crash::die(Point::AfterCreateSent, plan);
    }
    let id = match rt
        .engine
        .create(&name, body, opts.platform.as_deref())
        .await
    {
        Ok(id) => id,
        Err(e) => {
            let (code, msg) = engine_failure("create", &e, &c.image);
            return not_started(code, msg, vec![nv("ContainerImage", &c.image)], None);
        }
    };
    crash::at(Point::AfterCreate, plan);
    let container = Container {
        rt,
        plan,
        id: &id,
        deadline,
        cancel,
        stop_timeout: opts.stop_timeout,
        no_log_store: no_log_store(&opts),
    };
    // A `--user` is resolved in the container, which then owns the task's directories
    // and output files.
    let finished = match user::take_over(rt, plan, opts.user.as_deref(), &id).await {
        Ok(owner) => run_created(&container, owner).await,
        Err(not_started) => not_started,
    };
    crash::at(Point::AfterExit, plan);
    if let Err(e) = rt.engine.remove(&id).await {
        tracing::error!(container = %id, error = %Chain(&e), "could not remove the container");
    }
    crash::at(Point::AfterRemove, plan);
    finished
}

/// `--log-driver none`: the engine keeps no log to read the output from.
fn no_log_store(opts: &run_options::RunOptions) -> bool {
    opts.host.log_config.as_ref().and_then(|l| l.typ.as_deref()) == Some("none")
}

/// A created container and what its attempt needs to see it to its end.
#[derive(Clone, Copy)]
struct Container<'a> {
    rt: &'a NodeContext,
    plan: &'a TaskPlan,
    id: &'a str,
    deadline: Option<Instant>,
    cancel: &'a CancellationToken,
    /// `--stop-timeout`: the grace a stop gives it, instead of the node's.
    stop_timeout: Option<i64>,
    no_log_store: bool,
}

impl Container<'_> {
    /// The container part of the task's execution info.
    fn info(&self, state: Option<String>, error: Option<String>) -> Option<ContainerInfo> {
        Some(ContainerInfo {
            container_id: Some(self.id.to_string()),
            state,
            error,
        })
    }
}

async fn run_created(c: &Container<'_>, owner: Option<(u32, u32)>) -> Finished {
    let (rt, plan, id) = (c.rt, c.plan, c.id);
    let (out, err) = match logs::open(&plan.task_dir, owner).await {
        Ok(f) => f,
        Err(e) => {
            return not_started(
                super::exit::file_code(&e, FailureCode::ResourceDirectoryCreateFailed),
                format!("cannot create stdout.txt/stderr.txt: {}", Chain(&e)),
                vec![],
                c.info(Some("created".into()), None),
            )
        }
    };
    // Output comes from the engine's log store (complete from the first byte); attach,
    // before start, only without one. The wait starts after start (see Engine::wait).
    let attached = if c.no_log_store {
        match rt.engine.attach(id).await {
            Ok(s) => Some(s),
            Err(e) => {
                let (code, msg) = engine_failure("attach", &e, "");
                return not_started(code, msg, vec![], c.info(Some("created".into()), None));
            }
        }
    } else {
        None
    };
    if crash::is_armed(Point::AfterStartSent) {
        // The request must have left when the process dies: send it beside, give it a
        // moment to be written, and die without its answer.
        let (engine, id) = (rt.engine.clone(), id.to_string());
        tokio::spawn(async move { engine.start(&id).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        crash::die(Point::AfterStartSent, plan);
    }
    if let Err(e) = rt.engine.start(id).await {
        let (code, msg) = engine_failure("start", &e, "");
        return not_started(
            code,
            msg,
            vec![],
            c.info(Some("created".into()), Some(e.message())),
        );
    }
    crash::at(Point::AfterStartReturned, plan);
    let stream = attached.unwrap_or_else(|| rt.engine.logs(id, true));
    let limit = rt.output_limit;
    let writer = Writer::spawn(|stop| logs::copy(stream, out, err, limit, stop));
    match finish(c, writer).await {
        Ended::Done(f) => f,
        Ended::Again => follow(c).await,
    }
}

/// The task writing a container's live output, and how to stop it between two writes.
struct Writer {
    task: tokio::task::JoinHandle<std::io::Result<logs::Copied>>,
    stop: CancellationToken,
}

impl Writer {
    fn spawn<F>(copy: impl FnOnce(CancellationToken) -> F) -> Writer
    where
        F: std::future::Future<Output = std::io::Result<logs::Copied>> + Send + 'static,
    {
        let stop = CancellationToken::new();
        Writer {
            task: tokio::spawn(copy(stop.clone())),
            stop,
        }
    }
}

/// How [`finish`] left a started container.
enum Ended {
    Done(Finished),
    /// The engine dropped the wait and came back with the container still running.
    Again,
}

/// A started container to its end: wait under the wall clock and cancellation, stop it if
/// asked, let `writer` finish the output, complete it from the log store, read the exit.
async fn finish(c: &Container<'_>, writer: Writer) -> Ended {
    let Container {
        rt,
        plan,
        id,
        deadline,
        cancel,
        stop_timeout,
        no_log_store,
    } = *c;
    let wait = tokio::spawn(rt.engine.wait(id));
    let pid = rt.engine.inspect(id).await.ok().and_then(|s| s.pid);
    let probe = OomProbe::start(pid);

    let mut wait = wait;
    let Writer {
        task: mut writer,
        stop: stop_writer,
    } = writer;
    // A write that failed (a full disk) loses the task's output: stop the container
    // rather than let it run on for a result nobody can read.
    let mut written: Option<std::io::Result<logs::Copied>> = None;
    let (stopped, exited) = loop {
        tokio::select! {
            r = &mut wait => break (None, Some(r.unwrap_or_else(|e| Err(EngineError::Other(Cause::new(e)))))),
            stop = stop_requested(rt, deadline, cancel) => break (Some(stop), None),
            w = &mut writer, if written.is_none() => {
                let w = w.unwrap_or_else(|e| Err(std::io::Error::other(e)));
                let failed = w.is_err();
                written = Some(w);
                if failed {
                    tracing::warn!(container = id, "the task's output cannot be written; stopping it");
                    break (None, None);
                }
            }
        }
    };
    let output_failed = exited.is_none() && stopped.is_none();
    let grace = stop_timeout
        .map(|s| std::time::Duration::from_secs(s.max(0) as u64))
        .unwrap_or(rt.stop_grace);
    let code = match exited {
        Some(r) => r,
        None => {
            if let Err(e) = rt.engine.stop(id, grace).await {
                tracing::warn!(container = id, error = %Chain(&e), "stop failed; killing");
                if let Err(e) = rt.engine.kill(id, "SIGKILL").await {
                    tracing::error!(container = id, error = %Chain(&e), "kill failed");
                }
            }
            wait.await
                .unwrap_or_else(|e| Err(EngineError::Other(Cause::new(e))))
        }
    };
    let oom = probe.finish().await;
    // The live stream closes after exit; don't hang on a stuck one. One still behind
    // (a fast writer's backlog) is stopped: the log store completes the files below,
    // reading only the streams not yet at the limit. Without a log store it is all there is.
    let written = match written {
        Some(w) => Some(w),
        None => {
            let patience = std::time::Duration::from_secs(if no_log_store { 30 } else { 2 });
            let w = match tokio::time::timeout(patience, &mut writer).await {
                Ok(w) => w,
                Err(_) => {
                    if no_log_store {
                        tracing::error!("output stream did not close 30 s after exit");
                    } else {
                        tracing::debug!("output stream still behind 2 s after exit; completing from the log store");
                    }
                    // Stopped between two writes, so the files end on whole chunks.
                    stop_writer.cancel();
                    match tokio::time::timeout(std::time::Duration::from_secs(30), &mut writer)
                        .await
                    {
                        Ok(w) => w,
                        Err(_) => {
                            writer.abort();
                            writer.await
                        }
                    }
                }
            };
            match w {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::error!(error = %Chain(&e), "output writer failed");
                    None
                }
            }
        }
    };
    let mut output_error = match written {
        Some(Ok(c)) => {
            tracing::debug!(
                stdout = c.stdout,
                stderr = c.stderr,
                dropped = c.dropped,
                "output streamed"
            );
            None
        }
        Some(Err(e)) => Some(e),
        None => None,
    };
    // The engine may be going away. A stopping dockerd closes its listener first, then
    // kills its containers: a wait already in flight still answers (137), and pooled
    // connections still get answers, but no new connection is taken. So a wait that broke
    // off, or a signal exit berth did not ask for while the listener is closed, means the
    // engine is away: wait for it, then ask it what became of the container.
    let asked = stopped.is_some() || output_failed;
    let broke = !asked
        && matches!(
            code,
            Err(EngineError::Unavailable(_) | EngineError::Stream(_))
        );
    let killed = !asked && matches!(code, Ok(137 | 143));
    let mut state = rt.engine.inspect(id).await;
    let mut lost = None;
    if broke
        || matches!(state, Err(EngineError::Unavailable(_)))
        || (killed && !rt.engine.listening().await)
    {
        let why = match (&code, &state) {
            (Err(e), _) | (_, Err(e)) => chain(e),
            _ => "the engine stopped listening as the container was killed".into(),
        };
        tracing::warn!(container = id, error = %why, "the engine went away; waiting for it to answer");
        let back = tokio::select! {
            r = engine_back(rt) => r,
            stop = stop_requested(rt, deadline, cancel) => {
                return Ended::Done(stop.finished(code.ok(), c.info(None, Some(format!("the engine was away: {why}")))));
            }
        };
        if let Err(away) = back {
            return Ended::Done(Finished::EngineLost {
                code: code.ok(),
                message: format!(
                    "the Docker engine went away ({why}) and did not answer for {} s: {}",
                    ENGINE_OUTAGE.as_secs(),
                    Chain(&away)
                ),
                container: c.info(None, None),
            });
        }
        state = rt.engine.inspect(id).await;
        match &state {
            Ok(s)
                if broke
                    && matches!(
                        s.status.as_deref(),
                        Some("running" | "paused" | "restarting")
                    ) =>
            {
                tracing::info!(
                    container = id,
                    "the engine is back and the container still runs"
                );
                return Ended::Again;
            }
            // An exit the task made itself, just as the engine stopped, stands.
            Ok(s) if code.as_ref().ok().copied().or(s.exit_code) == Some(0) => {}
            Ok(s) => {
                lost = Some(format!(
                    "the Docker engine stopped while the task ran, and its container ended with it (status {}, exit code {})",
                    s.status.as_deref().unwrap_or("unknown"),
                    s.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "unknown".into())
                ));
            }
            Err(gone) => {
                return Ended::Done(Finished::EngineLost {
                    code: code.ok(),
                    message: format!(
                        "the Docker engine stopped while the task ran, and its container is gone: {}",
                        Chain(gone)
                    ),
                    container: c.info(None, None),
                });
            }
        }
    }
    // The follow stream may have ended early: complete the files from the log store.
    if !no_log_store && output_error.is_none() {
        match logs::complete(
            |which| rt.engine.logs_of(id, false, which),
            &plan.task_dir,
            rt.output_limit,
            CancellationToken::new(),
        )
        .await
        {
            Ok(c) if c == logs::Copied::default() => {}
            Ok(c) => tracing::debug!(
                stdout = c.stdout,
                stderr = c.stderr,
                "output completed after exit"
            ),
            Err(e) => output_error = Some(e),
        }
    }
    let state = state.ok();
    let code = match (code, &state) {
        (Ok(c), _) => Some(c),
        (Err(_), Some(s)) => s.exit_code,
        (Err(_), None) => None,
    };
    let container = c.info(
        state.as_ref().and_then(|s| s.status.clone()),
        state.as_ref().and_then(|s| s.error.clone()),
    );
    if let Some(message) = lost {
        return Ended::Done(Finished::EngineLost {
            code,
            message,
            container,
        });
    }
    if let (Some(e), None) = (output_error, stopped) {
        tracing::error!(error = %Chain(&e), "the task's output could not be written");
        return Ended::Done(Finished::OutputLost {
            code,
            fault: super::exit::FileFault::of(&e),
            message: format!(
                "cannot write the task's output to {}: {}",
                plan.task_dir.display(),
                Chain(&e)
            ),
            container,
        });
    }
    Ended::Done(match stopped {
        Some(stop) => stop.finished(code, container),
        None => match code {
            Some(code) => Finished::Exited {
                code,
                oom_kills: oom.kills,
                engine_oom: state.map(|s| s.oom_killed).unwrap_or(false),
                container,
            },
            None => not_started(
                FailureCode::ContainerMiscError,
                "the container's exit code could not be read",
                vec![],
                container,
            ),
        },
    })
}
