//! One container attempt: pull -> create -> attach -> start -> wait (under the wall clock
//! and cancellation) -> output saved -> inspect -> remove. Removal always happens once the
//! container exists, whatever went wrong, in the background (`removal`). The output is the container's own stream,
//! attached before start; the engine's log store stands in only for what that stream could
//! not give (see `task::logs`).

mod follow;
mod removal;
mod user;

pub use removal::Removals;

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
    let ensure = || async {
        let pull = rt.images.ensure(
            &c.image,
            c.registry.as_ref(),
            opts.pull.unwrap_or(PullPolicy::Missing),
            opts.platform.as_deref(),
        );
        let pulled = tokio::select! {
            r = pull => r,
            stop = stop_requested(rt, deadline, cancel) => return Err(stop.finished(None, None)),
        };
        pulled.map_err(|e| {
            not_started(
                e.code(),
                chain(&e),
                vec![nv("ContainerImage", &c.image)],
                None,
            )
        })
    };
    if let Err(f) = ensure().await {
        return f;
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
    let platform = opts.platform.as_deref();
    rt.removals.settled(&name).await;
    let created = match rt.engine.create(&name, body.clone(), platform).await {
        // Removed since berth last saw it (a prune): fetched again, once.
        Err(EngineError::ImageNotFound(m)) if rt.images.forget(&c.image, platform) => {
            tracing::info!(image = %c.image, "the image is gone from the node ({m}); fetching it again");
            if let Err(f) = ensure().await {
                return f;
            }
            rt.engine.create(&name, body, platform).await
        }
        r => r,
    };
    let id = match created {
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
    Removals::start(rt, plan, name, id);
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
    // The container's own stream, attached before start so that it has the first byte,
    // whatever the log driver keeps. The wait starts after start (see Engine::wait).
    let stream = match rt.engine.attach(id).await {
        Ok(s) => s,
        Err(e) => {
            let (code, msg) = engine_failure("attach", &e, "");
            return not_started(code, msg, vec![], c.info(Some("created".into()), None));
        }
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
    let limit = rt.output_limit;
    let writer = Writer::spawn(|stop| logs::copy(stream, (out, err), limit, [true, true], stop));
    let mut gaps = logs::Gaps::default();
    let finished = match finish(c, writer, Source::Live, &mut gaps).await {
        Ended::Done(f) => f,
        Ended::Again => follow(c, &mut gaps).await,
    };
    logs::mark(&plan.task_dir, &gaps);
    finished
}

/// Where a [`Writer`] takes the container's output from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Its own stream from the first byte: whole, unless it broke off or did not end.
    Live,
    /// Its log store, from the first byte (lined up with the files), read once more after
    /// exit to check and complete it.
    Store,
    /// Its own stream from now on, with no store for what came before (a gap already
    /// counted).
    LiveRest,
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
/// asked, let `writer` finish the output (from `source`), complete it from the log store
/// where the source fell short (adding to `gaps` what the store could not vouch for),
/// read the exit.
async fn finish(c: &Container<'_>, writer: Writer, source: Source, gaps: &mut logs::Gaps) -> Ended {
    let Container {
        rt,
        plan,
        id,
        deadline,
        cancel,
        stop_timeout,
        no_log_store,
    } = *c;
    let mut wait = tokio::spawn(rt.engine.wait(id));
    // The OOM probe needs the process's pid: asked beside the wait rather than before it,
    // so that a quick exit is not held up (its cgroup is gone by then anyway).
    let pid = rt.engine.inspect(id);
    tokio::pin!(pid);
    let mut probe = None;
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
            s = &mut pid, if probe.is_none() => {
                probe = Some(OomProbe::start(s.ok().and_then(|s| s.pid)));
            }
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
    if probe.is_none() && exited.is_none() {
        // Still running while berth stops it: an OOM kill in the grace counts too.
        probe = Some(OomProbe::start(pid.await.ok().and_then(|s| s.pid)));
    }
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
    let oom = match probe {
        Some(p) => p.finish().await,
        None => Default::default(),
    };
    // The container's stream closes once the engine has passed on its last bytes (it
    // gives them 2 s after exit); don't hang on a stuck one, but count it short. A store
    // read still behind (a fast writer's backlog) is stopped: the check below completes it.
    let mut stuck = false;
    let written = match written {
        Some(w) => Some(w),
        None => {
            let patience = std::time::Duration::from_secs(match source {
                Source::Store => 2,
                Source::Live | Source::LiveRest => 30,
            });
            let w = match tokio::time::timeout(patience, &mut writer).await {
                Ok(w) => w,
                Err(_) => {
                    stuck = true;
                    if source == Source::Store {
                        tracing::debug!("log store read still behind 2 s after exit; stopping it");
                    } else {
                        tracing::warn!(
                            "the container's stream did not end 30 s after exit; stopping it"
                        );
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
    // Whether the stream read may have missed bytes the process wrote.
    let mut short = stuck;
    let mut output_error = match written {
        Some(Ok(w)) => {
            tracing::debug!(
                stdout = w.stdout,
                stderr = w.stderr,
                dropped = w.dropped,
                "output streamed"
            );
            logs::merge(gaps, w.gaps);
            short |= w.broken.is_some();
            None
        }
        Some(Err(e)) => Some(e),
        None => {
            short = true;
            None
        }
    };
    // Files whose end berth cannot have: the stream fell short and the engine is gone.
    let unknown = |gaps: &mut logs::Gaps| {
        if short || source == Source::Store {
            logs::merge(gaps, [Some(logs::Gap::Unreadable); 2]);
        }
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
                unknown(gaps);
                return Ended::Done(stop.finished(code.ok(), c.info(None, Some(format!("the engine was away: {why}")))));
            }
        };
        if let Err(away) = back {
            unknown(gaps);
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
                unknown(gaps);
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
    // The log store stands in where the stream fell short, and is checked once more
    // after a read of it (a store read while it rotates can skip).
    let check = match source {
        Source::Live => short,
        Source::Store => true,
        Source::LiveRest => false,
    };
    if check && output_error.is_none() {
        if no_log_store {
            logs::merge(gaps, [Some(logs::Gap::NoStore); 2]);
        } else {
            match logs::from_store(
                |which| rt.engine.logs_of(id, false, which),
                &plan.task_dir,
                rt.output_limit,
                [true, true],
                false,
                CancellationToken::new(),
            )
            .await
            {
                Ok(w) => {
                    tracing::debug!(
                        stdout = w.stdout,
                        stderr = w.stderr,
                        gaps = ?w.gaps,
                        "output completed from the log store"
                    );
                    logs::merge(gaps, w.gaps);
                }
                Err(e) => output_error = Some(e),
            }
        }
    } else if output_error.is_none() && !no_log_store {
        // The files must still be the task's own output files, as the append of the log
        // store after every exit found them: a link or FIFO the task put in their place
        // fails it here (`TaskFileRefused`), not at its next attempt.
        if let Err(e) = logs::still_output_files(&plan.task_dir) {
            output_error = Some(e);
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
