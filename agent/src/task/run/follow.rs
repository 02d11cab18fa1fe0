//! FOLLOWING a container berth did not just start: one an earlier agent process left
//! (`adopt`), or its own after the engine dropped the wait and came back (`follow`), and
//! waiting for an engine that went away (`engine_back`, up to `ENGINE_OUTAGE`).

use super::*;
use crate::error_chain::Chain;

/// Takes over a container an earlier agent process created for this attempt (found by
/// its labels), running or already exited: the output files get what the engine's log
/// store holds beyond them, then the attempt ends as any other. The container is removed.
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
    let finished = follow(&container).await;
    if let Err(e) = rt.engine.remove(id).await {
        tracing::error!(container = %id, error = %Chain(&e), "could not remove the container");
    }
    finished
}

/// Follows a container berth did not just start (an earlier agent's, or one whose engine
/// came back): output from where the files end, then [`finish`], again for as long as
/// the engine drops the wait and the container outlives it.
pub(super) async fn follow(c: &Container<'_>) -> Finished {
    let (rt, plan, id) = (c.rt, c.plan, c.id);
    let dir = plan.task_dir.clone();
    for round in 0.. {
        if round > 0 {
            tracing::info!(
                container = id,
                "the container outlived the engine's restart; following it again"
            );
        }
        let writer = if c.no_log_store {
            // No log store: only what the container writes from now on can be had.
            match (rt.engine.attach(id).await, logs::open_append(&dir).await) {
                (Ok(stream), Ok((out, err))) => {
                    let limit = rt.output_limit;
                    Writer::spawn(|stop| logs::copy(stream, out, err, limit, stop))
                }
                (Err(e), _) => {
                    tracing::warn!(container = id, error = %Chain(&e), "cannot attach to the container");
                    Writer::spawn(|_| async { Ok(logs::Copied::default()) })
                }
                (_, Err(e)) => Writer::spawn(|_| async move { Err(e) }),
            }
        } else {
            let (engine, id) = (rt.engine.clone(), id.to_string());
            let dir = dir.clone();
            let limit = rt.output_limit;
            Writer::spawn(|stop| async move {
                logs::complete(|which| engine.logs_of(&id, true, which), &dir, limit, stop).await
            })
        };
        match finish(c, writer).await {
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
