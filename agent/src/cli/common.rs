//! What `berth run` and `berth pool start` share: the node's options, the pull limits, and
//! building the runtime (engine, image store, node status) from them.

use super::{CommandError, Exit};
use crate::engine::{Docker, Engine, EngineError, SharedEngine};
use crate::error_chain::Chain;
use crate::gpu::{self, ExposureSetting, Gpus};
use crate::image::progress::{BarObserver, LogObserver, PullObserver};
use crate::image::store::{ImageStore, PullSettings};
use crate::node::NodeLayout;
use crate::node::NodeStatus;
use crate::task::{plan::NodeFacts, NodeContext};
use berth_proto::PoolSpec;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// AZ_BATCH_NODE_ROOT_DIR: where task directories live.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/berth")]
    pub node_root: PathBuf,
    /// This node's id (default: the host name).
    #[arg(long)]
    pub node_id: Option<String>,
    /// Docker engine address (unix:///path or tcp://host:port); default DOCKER_HOST or the local socket.
    #[arg(long, value_name = "ADDR")]
    pub engine: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when a task is stopped.
    #[arg(long, default_value_t = 10)]
    pub stop_grace: u64,
    #[command(flatten)]
    pub pull: PullArgs,
    #[command(flatten)]
    pub gpu: GpuArgs,
    /// containerRunOptions this node refuses, comma-separated: privileged, cap-add,
    /// host-namespaces, devices, binds (outside the node root), unconfined, pids-limit
    /// (above --default-pids-limit, or none), or all.
    #[arg(long, value_name = "RULES", value_delimiter = ',', value_parser = str::parse::<crate::task::policy::Rule>)]
    pub forbid_run_options: Vec<crate::task::policy::Rule>,
    /// The most bytes kept of each of a container task's stdout.txt and stderr.txt
    /// (`512M`, `1G`, ...; `0`: no limit). Past it the rest is dropped, with a marker line.
    #[arg(long, value_name = "SIZE", default_value = crate::config::DEFAULT_OUTPUT_LIMIT, value_parser = crate::size::parse)]
    pub task_output_limit: u64,
    /// The most processes (and threads) each container may hold when its own
    /// containerRunOptions set no --pids-limit; 0: no limit.
    #[arg(long, value_name = "N", default_value_t = crate::config::DEFAULT_PIDS_LIMIT)]
    pub default_pids_limit: u64,
}

/// GPUs: how they reach containers and how many each task gets.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GpuArgs {
    /// How GPUs reach containers: auto (from what the engine offers), device-requests,
    /// runtime, manual (device nodes and driver files, no toolkit needed) or off.
    #[arg(long, default_value = "auto", value_parser = str::parse::<ExposureSetting>, value_name = "MODE")]
    pub gpu_exposure: ExposureSetting,
    /// Whole GPUs per task slot (default: an equal share; with one slot, all GPUs).
    #[arg(long, value_name = "N")]
    pub gpus_per_slot: Option<u32>,
}

/// Pull limits. Durations take a unit: `90s`, `5m`, `2h` (a bare number is seconds).
#[derive(Debug, Clone, clap::Args)]
pub struct PullArgs {
    /// How many images pool start pulls at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub prefetch_concurrency: usize,
    /// Retries of a pull after a transient failure (connection refused, 5xx, throttling, stall).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub pull_retries: u32,
    /// Give up an attempt when the engine reports nothing at all for this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub pull_first_progress_timeout: Duration,
    /// Give up an attempt when a started pull reports nothing for this long.
    #[arg(long, default_value = "2m", value_parser = parse_duration, value_name = "DURATION")]
    pub pull_inactivity_timeout: Duration,
    /// Give up a pull (all attempts) after this long.
    #[arg(long, default_value = "2h", value_parser = parse_duration, value_name = "DURATION")]
    pub pull_timeout: Duration,
    /// Docker config file for registries no pool or task entry covers
    /// (default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json).
    #[arg(long, value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
}

impl Default for PullArgs {
    /// The same defaults as the flags.
    fn default() -> Self {
        PullArgs {
            prefetch_concurrency: 4,
            pull_retries: 4,
            pull_first_progress_timeout: Duration::from_secs(300),
            pull_inactivity_timeout: Duration::from_secs(120),
            pull_timeout: Duration::from_secs(7200),
            docker_config: None,
        }
    }
}

impl PullArgs {
    pub fn settings(&self) -> PullSettings {
        PullSettings {
            retries: self.pull_retries,
            first_progress: self.pull_first_progress_timeout,
            inactivity: self.pull_inactivity_timeout,
            total: self.pull_timeout,
            ..PullSettings::default()
        }
    }
}

/// `90`, `90s`, `1500ms`, `5m`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; use e.g. 90s, 5m or 2h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s, m or h")),
    };
    if d.is_zero() {
        return Err(format!("{s:?}: a limit must be more than zero"));
    }
    Ok(d)
}

/// The host name, or `node`.
pub(crate) fn default_node_id() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into())
}

/// Whether progress goes to bars (a terminal) or to the log.
pub fn progress_bars() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("BERTH_NO_PROGRESS").is_none()
}

/// What to do when the engine cannot be reached, printed after the error.
pub const ENGINE_HINT: &str = "berth: start Docker (e.g. `systemctl start docker`) or point --engine / DOCKER_HOST at a running engine";

/// Prints an engine that cannot be reached, and what to do about it.
pub fn engine_failed(e: &EngineError) -> Exit {
    super::fail(e, Exit::Failed);
    eprintln!("{ENGINE_HINT}");
    Exit::Failed
}

/// The runtime, a signal-driven cancellation root, and pool start done: what `berth run`
/// and `berth pool start` both begin with. Errors are printed; the exit code is returned.
pub async fn start_node(
    args: &NodeArgs,
    pool: PoolSpec,
) -> Result<(Arc<NodeContext>, CancellationToken, crate::pool::PoolStart), Exit> {
    let rt = runtime(args, pool, false)
        .await
        .map_err(|e| engine_failed(&e))?;
    // A signal is berth stopping (not a terminate): see `NodeContext::stopping`.
    let cancel = rt.stopping.clone();
    crate::shutdown::cancel_on_signals(
        cancel.clone(),
        "running containers are being stopped and removed",
    );
    match crate::pool::start(
        rt.clone(),
        cancel.child_token(),
        args.pull.prefetch_concurrency,
        false,
    )
    .await
    {
        Ok(started) => Ok((rt, cancel, started)),
        Err(e) => {
            let what = format!(
                "cannot prepare the node root {}",
                rt.node.layout.root().display()
            );
            super::fail(&CommandError::new(what, e), Exit::Failed);
            Err(Exit::Failed)
        }
    }
}

/// Connects to the engine and assembles the runtime for `pool`. With `engine_may_wait`
/// (the daemon) an engine that does not answer yet is no error: the caller waits for it
/// (`pool::engine_health`). Fails only when the engine cannot be reached
/// ([`engine_failed`] prints it).
pub async fn runtime(
    args: &NodeArgs,
    pool: PoolSpec,
    engine_may_wait: bool,
) -> Result<Arc<NodeContext>, EngineError> {
    let engine = if engine_may_wait {
        let e = Docker::open(args.engine.as_deref(), crate::engine::DEFAULT_CALL_TIMEOUT)?;
        if let Err(why) = e.negotiate().await {
            tracing::warn!(error = %Chain(&why), "the Docker engine does not answer yet; GPU exposure is chosen without its runtimes");
        }
        e
    } else {
        Docker::connect(args.engine.as_deref()).await?
    };
    let engine: SharedEngine = Arc::new(engine);
    let node_root = if args.node_root.is_absolute() {
        args.node_root.clone()
    } else {
        std::env::current_dir()
            .map(|d| d.join(&args.node_root))
            .unwrap_or(args.node_root.clone())
    };
    let node = NodeFacts {
        node_id: args.node_id.clone().unwrap_or_else(default_node_id),
        pool_id: pool.id.clone(),
        account_name: "berth".into(),
        layout: NodeLayout::new(node_root),
    };
    let registries = pool
        .container_configuration()
        .map(|c| c.container_registries.clone())
        .unwrap_or_default();
    let shown: Arc<dyn PullObserver> = if progress_bars() {
        Arc::new(BarObserver::default())
    } else {
        Arc::new(LogObserver::default())
    };
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let pulls = Arc::new(crate::image::board::PullBoard::default());
    let shown = Arc::new(crate::image::board::Tee(vec![shown, pulls.clone()]));
    let observer: Arc<dyn PullObserver> = Arc::new(crate::metrics::CountingObserver::new(
        shown,
        metrics.clone(),
    ));
    let docker_config = args
        .pull
        .docker_config
        .clone()
        .or_else(crate::image::credentials::default_config_path);
    let images = ImageStore::new(engine.clone(), registries)
        .with_settings(args.pull.settings())
        .with_observer(observer)
        .with_docker_config(docker_config)
        .with_state_file(node.layout.volatile().join("berth").join("private-images"));
    let gpus = Arc::new(gpus(&args.gpu, engine.as_ref()).await);
    let status = NodeStatus::new(&node.node_id, &pool.id);
    status.update(|n| n.gpus = gpus.report());
    Ok(Arc::new(NodeContext {
        images: Arc::new(images),
        status,
        gpus,
        metrics,
        engine,
        node,
        pool,
        stop_grace: Duration::from_secs(args.stop_grace),
        policy: crate::task::policy::Policy::new(args.forbid_run_options.iter().copied()),
        output_limit: (args.task_output_limit > 0).then_some(args.task_output_limit),
        pids_limit: (args.default_pids_limit > 0)
            .then(|| i64::try_from(args.default_pids_limit).unwrap_or(i64::MAX)),
        stopping: CancellationToken::new(),
        tasks: Default::default(),
        removals: Default::default(),
        job_tokens: Default::default(),
        pulls,
    }))
}

/// Finds the node's GPUs and picks how containers get them.
async fn gpus(args: &GpuArgs, engine: &dyn Engine) -> Gpus {
    let inventory = tokio::task::spawn_blocking(|| {
        gpu::discover::discover(std::path::Path::new("/dev/infiniband"))
    })
    .await
    .unwrap_or_default();
    let support = if inventory.gpus.is_empty() {
        gpu::EngineGpuSupport::default()
    } else {
        let runtimes = engine.runtimes().await.unwrap_or_else(|e| {
            tracing::warn!(error = %Chain(&e), "cannot list the engine's runtimes");
            vec![]
        });
        gpu::EngineGpuSupport {
            nvidia_runtime: runtimes.iter().any(|r| r == "nvidia"),
            nvidia_hook: on_path("nvidia-container-runtime-hook"),
        }
    };
    let exposure = gpu::choose(args.gpu_exposure, &support, inventory.gpus.len());
    if !inventory.gpus.is_empty() {
        tracing::info!(exposure = exposure.as_str(), "GPU exposure");
    }
    Gpus::new(inventory, exposure, args.gpus_per_slot)
}

/// Whether `name` is an executable in `$PATH` (or /usr/bin, /usr/local/bin: the engine's
/// PATH usually has them even when ours does not).
fn on_path(name: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/bin", "/usr/local/bin"])
        .any(|d| std::path::Path::new(d).join(name).is_file());
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_defaults_match_the_flags() {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            p: PullArgs,
        }
        let parsed = <P as clap::Parser>::parse_from(["x"]).p;
        let d = PullArgs::default();
        assert_eq!(format!("{parsed:?}"), format!("{d:?}"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("5x").unwrap_err().contains("unit"));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
