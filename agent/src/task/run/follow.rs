//! FOLLOWING a container berth did not just start: one an earlier agent process left
//! (`adopt`), or its own after the engine dropped the wait and came back (`follow`), and
//! waiting for an engine that went away (`engine_back`, up to `ENGINE_OUTAGE`). What the
//! container wrote while nobody read its stream is only in the engine's log store: it is
//! read from there, lined up with the files (`logs::from_store`), and a stream the store
//! cannot line up with is read from the container's own stream for the rest.

use super::*;
use crate::engine::SharedEngine;
use crate::error_chain::Chain;
use std::path::Path;

/// Takes over a container an earlier agent process created for this attempt (found by
/// its labels), running or already exited: the output files get what the engine's log
/// store holds beyond them (and say so where it cannot vouch for it), then the attempt
/// ends as any other. The container is removed.
pub async fn adopt(
    rt: &NodeContext,
    plan: &TaskPlan,
    id: &str,
    deadline: Option<Instant>,
    cancel: &CancellationToken,
) -> Finished {
    // An earlier process parsed these options before it created the container.
    let opts = plan
        .container
        .as_ref()
        .and_then(|c| run_options::parse(&c.run_options).ok());
    let container = Container {
        rt,
        plan,
        id,
        deadline,
        cancel,
        stop_timeout: opts.as_ref().and_then(|o| o.stop_timeout),
        no_log_store: opts.as_ref().is_some_and(no_log_store),
    };
    let mut gaps = logs::Gaps::default();
    let finished = follow(&container, &mut gaps).await;
    logs::mark(&plan.task_dir, &gaps);
    if let Err(e) = rt.engine.remove(id).await {
        tracing::error!(container = %id, error = %Chain(&e), "could not remove the container");
    }
    finished
}

/// Follows a container berth did not just start (an earlier agent's, or one whose engine
/// came back): output from where the files end, then [`finish`], again for as long as
/// the engine drops the wait and the container outlives it. Adds to `gaps` what it could
/// not vouch for.
pub(super) async fn follow(c: &Container<'_>, gaps: &mut logs::Gaps) -> Finished {
    let (rt, plan, id) = (c.rt, c.plan, c.id);
    for round in 0.. {
        if round > 0 {
            tracing::info!(
                container = id,
                "the container outlived the engine's restart; following it again"
            );
        }
        let (engine, id, dir) = (rt.engine.clone(), id.to_string(), plan.task_dir.clone());
        let limit = rt.output_limit;
        let (writer, source) = if c.no_log_store {
            // No log store: what the container wrote while nobody read it is gone.
            logs::merge(gaps, [Some(logs::Gap::NoStore); 2]);
            let w = Writer::spawn(|stop| async move {
                live_rest(&engine, &id, &dir, limit, [true, true], stop).await
            });
            (w, Source::LiveRest)
        } else {
            let w = Writer::spawn(|stop| async move {
                store_then_live(&engine, &id, &dir, limit, stop).await
            });
            (w, Source::Store)
        };
        match finish(c, writer, source, gaps).await {
            Ended::Done(f) => return f,
            // An engine that answers yet keeps dropping the wait must not spin.
            Ended::Again if round < MAX_REFOLLOWS => {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await
            }
            Ended::Again => break,
        }
    }
    Finished::EngineLost {
        code: None,
        message: format!("the engine dropped the container's wait {MAX_REFOLLOWS} times"),
        container: Some(ContainerInfo {
            container_id: Some(id.to_string()),
            state: None,
            error: None,
        }),
    }
}

/// The store from the first byte, following the container; a stream that does not line
/// up with its file (rotated, rewritten) is taken from the container's own stream from
/// then on, the other stays with the store.
async fn store_then_live(
    engine: &SharedEngine,
    id: &str,
    dir: &Path,
    limit: Option<u64>,
    stop: CancellationToken,
) -> std::io::Result<logs::Copied> {
    let logs = |which| engine.logs_of(id, true, which);
    let first = logs::from_store(logs, dir, limit, [true, true], true, stop.clone()).await?;
    let differs = first.gaps.map(|g| g == Some(logs::Gap::Differs));
    if differs == [false, false] || stop.is_cancelled() {
        return Ok(first);
    }
    let store = differs.map(|d| !d);
    let (stored, live) = tokio::join!(
        async {
            if store == [false, false] {
                return Ok(logs::Copied::default());
            }
            let logs = |which| engine.logs_of(id, true, which);
            logs::from_store(logs, dir, limit, store, false, stop.clone()).await
        },
        live_rest(engine, id, dir, limit, differs, stop.clone()),
    );
    Ok(first.and(stored?).and(live?))
}

/// The container's own stream from now on, appended to the files `keep` chooses; nothing
/// when it no longer runs (an attach would then wait for a start that never comes).
async fn live_rest(
    engine: &SharedEngine,
    id: &str,
    dir: &Path,
    limit: Option<u64>,
    keep: [bool; 2],
    stop: CancellationToken,
) -> std::io::Result<logs::Copied> {
    let running = engine.inspect(id).await.is_ok_and(|s| {
        matches!(
            s.status.as_deref(),
            Some("running" | "paused" | "restarting")
        )
    });
    if !running {
        return Ok(logs::Copied::default());
    }
    let stream = match engine.attach(id).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(container = id, error = %e, "cannot attach to the container");
            return Ok(logs::Copied::default());
        }
    };
    let files = logs::open_append(dir).await?;
    logs::copy(stream, files, limit, keep, stop).await
}

/// How often one attempt follows its container again after losing the engine.
pub(super) const MAX_REFOLLOWS: u32 = 20;

/// How long a task whose engine went away waits for it to answer again.
pub(super) const ENGINE_OUTAGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Waits (up to [`ENGINE_OUTAGE`]) for the engine to answer a ping again.
pub(super) async fn engine_back(rt: &NodeContext) -> Result<(), EngineError> {
    let began = Instant::now();
    let mut delay = Backoff::new(
        std::time::Duration::from_millis(250),
        std::time::Duration::from_secs(4),
    );
    loop {
        let listening = rt.engine.listening().await;
        match rt.engine.probe().await {
            Ok(()) if listening => return Ok(()),
            Ok(()) => {}
            Err(e) if began.elapsed() >= ENGINE_OUTAGE => return Err(e),
            Err(_) => {}
        }
        tokio::time::sleep(delay.next_delay()).await;
    }
}
