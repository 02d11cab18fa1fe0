//! `berth agent`: the node daemon. API up first, and readiness (sd_notify) with it, so the
//! node's state can be read during pool start; then pool start and the scheduler, until
//! SIGTERM/SIGINT. SIGHUP re-reads the configuration file, applies `log_level` at once and
//! reports what else changed.

use super::common::{self, NodeArgs, PullArgs};
use super::{fail, CommandError, Exit};
use crate::config::AgentConfig;
use crate::schedule::queue::Scheduler;
use crate::store::{sqlite::SqliteStore, Store};
use crate::{api, job_schedule, pool};
use berth_proto::{load, validate, PoolSpec};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Configuration file (default /etc/berth/berth.toml when it exists).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Overrides `pool` in the configuration; with `--service`, the pool id to join
    /// (overrides `pool_id`).
    #[arg(long, value_name = "POOL.json|POOLID")]
    pub pool: Option<PathBuf>,
    /// Pool mode: the service's URLs (overrides `service`); the pool comes from it.
    #[arg(long, value_name = "URL[,URL...]")]
    pub service: Option<String>,
    /// Overrides `socket`.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Overrides `node_root`.
    #[arg(long, value_name = "DIR")]
    pub node_root: Option<PathBuf>,
    /// Overrides `node_id`.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Overrides `engine`.
    #[arg(long, value_name = "ADDR")]
    pub engine: Option<String>,
}

fn load_pool(path: &Option<PathBuf>) -> Result<PoolSpec, Vec<String>> {
    let mut errors = vec![];
    let p = super::run::one_file(path, load::pool, validate::pool, &mut errors);
    if errors.is_empty() {
        Ok(p.unwrap_or_else(PoolSpec::default_for_run))
    } else {
        Err(errors)
    }
}

pub async fn run(args: AgentArgs) -> ExitCode {
    let mut cfg = match AgentConfig::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(&CommandError::plain(e), Exit::InvalidInput),
    };
    if let Some(s) = &args.service {
        cfg.service = crate::config::split_urls(s);
    }
    let pool_mode = !cfg.service.is_empty();
    if pool_mode {
        // The service gives the pool: a pool file as well is a mistake to say out loud.
        if cfg.pool.is_some() {
            let e = CommandError::plain("pool (a pool file) and service cannot both be set: the service gives the pool; use pool_id or --pool POOLID");
            return fail(&e, Exit::InvalidInput);
        }
        if let Some(p) = args.pool {
            cfg.pool_id = Some(p.to_string_lossy().into_owned());
        }
        if cfg.pool_id.is_none() {
            let e = CommandError::plain(
                "service is set but the pool to join is not (pool_id or --pool POOLID)",
            );
            return fail(&e, Exit::InvalidInput);
        }
    } else if let Some(p) = args.pool {
        cfg.pool = Some(p);
    }
    if let Some(s) = args.socket {
        cfg.socket = s;
    }
    if let Some(r) = args.node_root {
        cfg.node_root = r;
    }
    if args.node_id.is_some() {
        cfg.node_id = args.node_id;
    }
    if args.engine.is_some() {
        cfg.engine = args.engine;
    }
    if let Err(e) = crate::logging::set_level(&cfg.log_level) {
        return fail(&CommandError::plain(e), Exit::InvalidInput);
    }
    // No token nor account key, no TCP.
    let tcp = match tcp_settings(&cfg) {
        Ok(t) => t,
        Err(e) => return fail(&CommandError::plain(e), Exit::InvalidInput),
    };
    let read_only: Arc<[String]> = match &cfg.read_only_token_file {
        None => Arc::new([]),
        Some(f) => match crate::api::read_tokens(f) {
            Ok(t) => t.into(),
            Err(e) => return fail(&CommandError::plain(e), Exit::InvalidInput),
        },
    };
    let pool = match load_pool(&cfg.pool) {
        Ok(p) => p,
        Err(errors) => {
            errors.iter().for_each(|e| eprintln!("error: {e}"));
            return Exit::InvalidInput.into();
        }
    };
    let cancel = CancellationToken::new();
    // Pull options keep their command-line defaults; the daemon's only knob here is concurrency.
    let pull = PullArgs {
        prefetch_concurrency: cfg.prefetch_concurrency,
        ..PullArgs::default()
    };
    let node_args = NodeArgs {
        node_root: cfg.node_root.clone(),
        node_id: cfg.node_id.clone(),
        engine: cfg.engine.clone(),
        stop_grace: 10,
        pull,
        gpu: common::GpuArgs {
            gpu_exposure: cfg.gpu_exposure,
            gpus_per_slot: cfg.gpus_per_slot,
        },
        forbid_run_options: cfg.forbid_run_options.rules().to_vec(),
        task_output_limit: cfg.task_output_limit,
        default_pids_limit: cfg.default_pids_limit,
    };
    // The Docker client needs the engine's socket file to exist; until it does (dockerd
    // not started yet, and no socket unit holding it) there is nothing to serve either.
    let consequence = if pool_mode {
        "this node leaves the pool (its tasks are requeued) and its containers are stopped"
    } else {
        cfg.on_shutdown.consequence()
    };
    crate::shutdown::cancel_on_signals(cancel.clone(), consequence);
    if !wait_for_socket(node_args.engine.as_deref(), &cancel).await {
        return Exit::Ok.into();
    }
    // Pool mode: enrol first, since the pool comes from the service.
    let (pool, joined) = if pool_mode {
        let node_id = cfg.node_id.clone().unwrap_or_else(common::default_node_id);
        let pool_id = cfg.pool_id.clone().unwrap_or_default();
        // systemd waits for readiness while the service cannot be reached: say so, and
        // ask it to wait longer rather than kill a node whose service is away.
        let joining = crate::member::start::join(&cfg, &pool_id, &node_id, &cancel);
        tokio::pin!(joining);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
        let joined = loop {
            tokio::select! {
                r = &mut joining => break r,
                _ = tick.tick() => notify(&[
                    sd_notify::NotifyState::Status("enrolling with the pool's service"),
                    sd_notify::NotifyState::ExtendTimeoutUsec(30_000_000),
                ]),
            }
        };
        match joined {
            Ok(Some(j)) => (j.response.pool.clone(), Some(j)),
            Ok(None) => return Exit::Ok.into(),
            Err(e) => return fail(&CommandError::plain(e), Exit::Failed),
        }
    } else {
        (pool, None)
    };
    let rt = match common::runtime(&node_args, pool, true).await {
        Ok(rt) => rt,
        Err(e) => return common::engine_failed(&e).into(),
    };
    let db = rt.node.layout.root().join("berth").join("state.db");
    let store: Arc<dyn Store> = match SqliteStore::open(&db) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            return fail(
                &CommandError::new(db.display().to_string(), e),
                Exit::Failed,
            )
        }
    };
    // Pool mode: claimed tasks' starts and ends are journalled for the service.
    let (store, journal) = match joined.is_some() {
        false => (store, None),
        true => match crate::member::start::journal(&rt, store) {
            Ok((store, ledger, notes)) => (store, Some((ledger, notes))),
            Err(e) => return fail(&CommandError::new("pool reports", e), Exit::Failed),
        },
    };
    let (sched, queue) = Scheduler::new(rt.clone(), store.clone());
    let (member, notes) = match (joined, journal) {
        (Some(j), Some((ledger, notes))) => {
            let m = crate::member::start::member(
                j,
                rt.clone(),
                store.clone(),
                sched.clone(),
                ledger,
                cancel.clone(),
            );
            (Some(m), Some(notes))
        }
        _ => (None, None),
    };
    let proxy_token = member.as_ref().map(|m| m.proxy.clone()).unwrap_or_default();
    // Job schedules' jobs are only records until the scheduler runs: the timer starts at
    // once, so that schedule requests are answered during pool start too.
    let (schedules, timer) = job_schedule::Timer::new(rt.clone(), store.clone(), sched.clone());
    let timer = tokio::spawn(timer.run(cancel.child_token()));
    reload_on_hup(
        args.config.clone(),
        cfg.clone(),
        tcp.as_ref().map(Tcp::reloadable),
    );

    let state = api::AppState {
        rt: rt.clone(),
        store: store.clone(),
        sched: sched.clone(),
        schedules,
    };
    let app = api::router(state.clone());
    let api_stop = CancellationToken::new();
    let socket = cfg.socket.clone();
    if let Some(Tcp {
        addr,
        token,
        keys,
        tls,
    }) = tcp
    {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let listener = match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                return fail(
                    &CommandError::new(format!("tcp_address {addr}"), e),
                    Exit::Failed,
                )
            }
        };
        // Tasks that ask for a job token get one good at this address.
        let key = rt.node.layout.root().join("berth").join("job-token.key");
        match crate::node::job_token::JobTokens::open(&key) {
            Ok(tokens) => {
                let url = match listener.local_addr() {
                    Ok(a) => format!("{scheme}://{a}"),
                    Err(_) => format!("{scheme}://{addr}"),
                };
                let issuer = crate::node::job_token::Issuer {
                    tokens,
                    account_url: url,
                };
                rt.job_tokens.set(Arc::new(issuer)).ok();
            }
            Err(e) => {
                tracing::error!(error = %crate::error_chain::Chain(&e), "tasks cannot be given job tokens");
            }
        }
        if let Some(m) = &member {
            if let Ok(a) = listener.local_addr() {
                // Unless `file_address` (or a fixed port) said where already.
                m.file_address.set(format!("{scheme}://{a}")).ok();
            }
        }
        let ui = crate::ui::router(crate::ui::Ui {
            mode: crate::ui::Mode::Agent,
            check: {
                let (full, ro) = (token.clone(), read_only.clone());
                Arc::new(move |t: &str| {
                    if full
                        .as_ref()
                        .is_some_and(|f| api::constant_time_eq(t.as_bytes(), f.as_bytes()))
                    {
                        Some(crate::ui::Access::Full)
                    } else if crate::ui::session::one_of(&ro, t) {
                        Some(crate::ui::Access::ReadOnly)
                    } else {
                        None
                    }
                })
            },
            // Over TLS the session cookie is sent back over TLS only.
            secure_cookie: tls.is_some(),
        });
        let guard = api::TcpGuard {
            token,
            shared_key: keys,
            proxy_token: proxy_token.clone(),
            read_only,
            state: state.clone(),
        };
        let (app, stop) = (app.clone(), api_stop.clone());
        tokio::spawn(async move {
            if let Err(e) = api::serve_tcp(listener, app, ui, guard, tls, stop).await {
                tracing::error!(address = %addr, error = %e, "the TCP API stopped");
            }
        });
    }
    let listener = match api::bind_unix(&socket) {
        Ok(l) => l,
        Err(e) => {
            api_stop.cancel();
            let what = format!("socket {}", socket.display());
            return fail(&CommandError::new(what, e), Exit::Failed);
        }
    };
    let api_task = tokio::spawn({
        let stop = api_stop.clone();
        async move { api::serve_unix(listener, &socket, app, stop).await }
    });
    // Ready as soon as the API answers: pool start (prefetch, start task) may take far
    // longer than any start timeout, and the node's state tells who asks how far it got.
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("node starting: pool start (images, start task)"),
    ]);

    // An engine that is not up yet (boot order, a restart) is waited for, not fatal; the
    // node's errors say why it is still `starting`.
    if !pool::engine_health::wait_at_start(&rt, &cancel).await {
        api_stop.cancel();
        return Exit::Ok.into();
    }
    tokio::spawn({
        let (rt, sched, stop) = (rt.clone(), sched.clone(), cancel.child_token());
        async move { pool::engine_health::watch(&rt, || sched.wake(), stop).await }
    });
    match pool::start(
        rt.clone(),
        cancel.child_token(),
        cfg.prefetch_concurrency,
        true,
    )
    .await
    {
        Ok(started) => {
            if let Some(h) = started.background_start_task {
                drop(h); // runs on; its result lands in the node's startTaskInfo
            }
        }
        Err(e) => {
            api_stop.cancel();
            let what = format!(
                "cannot prepare the node root {}",
                rt.node.layout.root().display()
            );
            return fail(&CommandError::new(what, e), Exit::Failed);
        }
    }
    let node = rt.status.get();
    tracing::info!(state = %node.state, "pool start finished");
    notify(&[sd_notify::NotifyState::Status(&format!(
        "node {}",
        node.state
    ))]);

    let queue_ended = CancellationToken::new();
    let (queue_stop, leaving) = match (&member, notes) {
        (Some(m), Some(notes)) => {
            if !crate::member::start::begin(m, notes).await {
                api_stop.cancel();
                return Exit::Ok.into();
            }
            let queue_stop = CancellationToken::new();
            let leaving = crate::member::start::stop_gracefully(
                m.clone(),
                queue_stop.clone(),
                queue_ended.clone(),
            );
            (queue_stop, Some(leaving))
        }
        _ => (cancel.clone(), None),
    };
    // A member stops its containers: the service has requeued their tasks.
    let on_shutdown = match member {
        Some(_) => crate::config::OnShutdown::Stop,
        None => cfg.on_shutdown,
    };
    queue.run(queue_stop, on_shutdown).await;
    queue_ended.cancel();
    if let Some(leaving) = leaving {
        leaving.await.ok();
    }
    // Stopped by `cancel` too; between two store writes, never within one.
    if let Err(e) = timer.await {
        tracing::error!(error = %e, "the job schedule timer failed");
    }
    // `leave` dropped its runners, which end at once; only a start task still running on
    // the host could hold the exit, and it must not.
    let deadline = match on_shutdown {
        crate::config::OnShutdown::Leave => std::time::Duration::from_secs(1),
        _ => crate::shutdown::DRAIN,
    };
    crate::shutdown::drain(&rt.tasks, deadline).await;
    notify(&[sd_notify::NotifyState::Stopping]);
    api_stop.cancel();
    match api_task.await {
        Ok(Ok(())) => Exit::Ok.into(),
        Ok(Err(e)) => {
            let what = format!("API on {}", cfg.socket.display());
            fail(&CommandError::new(what, e), Exit::Failed)
        }
        Err(e) => fail(&CommandError::new("API task", e), Exit::Failed),
    }
}

/// Waits (backoff 0.5 s doubling to 15 s) until the engine's Unix socket file exists;
/// false when SIGTERM/SIGINT came first. TCP engines and existing sockets return at once.
async fn wait_for_socket(engine: Option<&str>, stop: &CancellationToken) -> bool {
    let host = crate::engine::resolve_host(engine);
    let Some(path) = crate::engine::socket_path(&host).map(PathBuf::from) else {
        return true;
    };
    let mut delay = crate::backoff::Backoff::new(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(15),
    );
    let mut said = false;
    while !path.exists() {
        if !said {
            tracing::warn!(socket = %path.display(), "waiting for the Docker engine's socket");
            notify(&[sd_notify::NotifyState::Status(&format!(
                "waiting for the Docker engine's socket {}",
                path.display()
            ))]);
            said = true;
        }
        if !delay.sleep(stop).await {
            return false;
        }
    }
    true
}

/// Tells systemd (a no-op without NOTIFY_SOCKET).
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// What the TCP API reads from files: its address, the bearer token, the account keys and
/// the TLS certificate.
struct Tcp {
    addr: String,
    token: Option<Arc<str>>,
    keys: Option<Arc<api::shared_key::KeyRing>>,
    tls: Option<Arc<api::tls::ReloadableTls>>,
}

impl Tcp {
    fn reloadable(&self) -> Reloadable {
        Reloadable {
            keys: self.keys.clone(),
            tls: self.tls.clone(),
        }
    }
}

/// What SIGHUP re-reads besides the configuration: the account key files and the TLS
/// certificate and key.
#[derive(Default)]
struct Reloadable {
    keys: Option<Arc<api::shared_key::KeyRing>>,
    tls: Option<Arc<api::tls::ReloadableTls>>,
}

/// The TCP API's settings, read and checked: none without `tcp_address`; at least one of
/// a bearer token and account keys; TLS with both a certificate and a key, or neither.
fn tcp_settings(cfg: &AgentConfig) -> Result<Option<Tcp>, String> {
    let tls_files = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => return Err("tls_cert_file and tls_key_file go together: set both, or neither".into()),
    };
    let keys = match (&cfg.account_name, cfg.account_key_files.is_empty()) {
        (None, true) => None,
        (Some(name), false) => Some(api::shared_key::KeyRing::read(
            name,
            &cfg.account_key_files,
        )?),
        (None, false) => return Err("account_key_files is set but account_name is not".into()),
        (Some(_), true) => return Err("account_name is set but account_key_files is not".into()),
    };
    let Some(addr) = &cfg.tcp_address else {
        if tls_files.is_some() || keys.is_some() {
            return Err("TLS files or account keys are set but tcp_address is not: they are for the TCP API".into());
        }
        return Ok(None);
    };
    let token = cfg.token_file.as_deref().map(api::read_token).transpose()?;
    if token.is_none() && keys.is_none() {
        return Err("tcp_address is set but token_file is not (nor account_name and account_key_files); TCP is only served to a bearer token or Batch's SharedKey".into());
    }
    let tls = match tls_files {
        Some((cert, key)) => Some(api::tls::ReloadableTls::load(cert, key)?),
        None => {
            tracing::warn!(
                "the TCP API is plain HTTP: set tls_cert_file and tls_key_file for HTTPS"
            );
            None
        }
    };
    Ok(Some(Tcp {
        addr: addr.clone(),
        token,
        keys,
        tls,
    }))
}

/// SIGHUP: re-read the configuration; `log_level` applies at once, the settings that shape
/// a running node (root, socket, pool, ...) at the next start, and the log says so. The
/// account key files and the TLS certificate and key are re-read (a rotated key, a renewed
/// certificate); one that fails to read keeps what is in use.
fn reload_on_hup(file: Option<PathBuf>, mut current: AgentConfig, files: Option<Reloadable>) {
    let files = files.unwrap_or_default();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            if let Some(k) = &files.keys {
                match k.reload() {
                    Ok(()) => tracing::info!("SIGHUP: account keys re-read"),
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP: account keys not re-read; the old ones stay")
                    }
                }
            }
            if let Some(t) = &files.tls {
                match t.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate re-read"),
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP: TLS certificate not re-read; the old one stays")
                    }
                }
            }
            match AgentConfig::load(file.as_deref()) {
                Ok(new) if new == current => tracing::info!("SIGHUP: configuration unchanged"),
                Ok(new) => {
                    if new.log_level != current.log_level {
                        match crate::logging::set_level(&new.log_level) {
                            Ok(()) => {
                                tracing::info!(log_level = %new.log_level, "SIGHUP: log level applied")
                            }
                            Err(e) => tracing::error!(error = %e, "SIGHUP: log level not applied"),
                        }
                    }
                    let mut rest = new.clone();
                    rest.log_level = current.log_level.clone();
                    if rest != current {
                        tracing::warn!(old = ?current, new = ?new, "SIGHUP: configuration changed; settings other than log_level take effect when the agent restarts");
                    }
                    current = new;
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: configuration not reloaded"),
            }
        }
    });
}
